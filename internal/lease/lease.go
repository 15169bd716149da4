// Package lease is the plugin's lease of a creds/ read: its type, its fields and the
// answer built from a token. The plugin's backend and the benchmark's no-op floor plugin
// (bench/floor) both answer with it, so the baseline cannot drift from what it measures.
package lease

import (
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const Type = "apaleo_access_token"

var Fields = map[string]*framework.FieldSchema{
	"access_token": {Type: framework.TypeString, Description: "apaleo access token (a JWT)."},
	"token_type":   {Type: framework.TypeString, Description: "Token type, Bearer."},
	"expires_at":   {Type: framework.TypeString, Description: "When the token expires (RFC 3339)."},
	"scopes":       {Type: framework.TypeStringSlice, Description: "Scopes the identity server granted."},
	"account_code": {Type: framework.TypeString, Description: "apaleo account of the token, from its claims."},
	"client_id":    {Type: framework.TypeString, Description: "apaleo client id, from the token's claims."},
	"config":       {Type: framework.TypeString, Description: "Config the token was issued for."},
}

// internalExpiresAt is the lease's internal field holding its token's expiry, the limit
// of every renewal.
const internalExpiresAt = "expires_at"

// Token is what a lease answers of an access token.
type Token struct {
	AccessToken, TokenType string
	ExpiresAt              time.Time
	Scopes                 []string
	AccountCode, ClientID  string
}

// Expiry is the token expiry a lease was issued with.
func Expiry(internal map[string]any) (time.Time, bool) {
	s, _ := internal[internalExpiresAt].(string)
	exp, err := time.Parse(time.RFC3339Nano, s)
	return exp, err == nil
}

// Response is the answer to a read of creds/<name> from its token t: a lease
// of secret (this type) whose TTL is the token's remaining lifetime, renewable up to it.
func Response(secret *framework.Secret, name, config string, t Token, now time.Time) *logical.Response {
	data := map[string]any{
		"access_token": t.AccessToken,
		"token_type":   t.TokenType,
		"expires_at":   t.ExpiresAt.UTC().Format(time.RFC3339),
		"scopes":       nonNil(t.Scopes),
		"config":       config,
	}
	if t.AccountCode != "" {
		data["account_code"] = t.AccountCode
	}
	if t.ClientID != "" {
		data["client_id"] = t.ClientID
	}
	resp := secret.Response(data, map[string]any{
		"name":            name,
		"config":          config,
		internalExpiresAt: t.ExpiresAt.UTC().Format(time.RFC3339Nano),
	})
	ttl := max(t.ExpiresAt.Sub(now), time.Second)
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	resp.Secret.Renewable = true
	return resp
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
