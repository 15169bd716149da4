package apaleo

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const secretAccessTokenType = "apaleo_access_token"

var secretAccessTokenFields = map[string]*framework.FieldSchema{
	"access_token": {Type: framework.TypeString, Description: "apaleo access token (a JWT)."},
	"token_type":   {Type: framework.TypeString, Description: "Token type, Bearer."},
	"expires_at":   {Type: framework.TypeString, Description: "When the token expires (RFC 3339)."},
	"scopes":       {Type: framework.TypeStringSlice, Description: "Scopes the identity server granted."},
	"account_code": {Type: framework.TypeString, Description: "apaleo account of the token, from its claims."},
	"client_id":    {Type: framework.TypeString, Description: "apaleo client id, from the token's claims."},
	"config":       {Type: framework.TypeString, Description: "Config the token was issued for."},
}

// secretAccessToken is the lease of a creds/ read. It is not renewable: its TTL is the
// token's remaining lifetime. apaleo's access tokens are self-contained JWTs with no
// revocation, so revoking the lease only ends it in Vault.
func secretAccessToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type:   secretAccessTokenType,
		Fields: secretAccessTokenFields,
		Revoke: b.secretAccessTokenRevoke,
	}
}

func (b *backend) secretAccessTokenRevoke(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return nil, nil
}

// accessTokenResponse is the answer to a read of creds/<name> from its token t: a lease
// of secret (this type) whose TTL is the token's remaining lifetime, not renewable.
func accessTokenResponse(secret *framework.Secret, name, config string, t *cachedToken, now time.Time) *logical.Response {
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
	resp := secret.Response(data, map[string]any{"name": name, "config": config})
	ttl := max(t.ExpiresAt.Sub(now), time.Second)
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	resp.Secret.Renewable = false
	return resp
}
