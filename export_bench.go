package apaleo

import (
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Exported for bench/floor only: the benchmark's no-op floor plugin answers creds/<name>
// with this plugin's own lease type and response code, so the baseline cannot drift
// from what it measures. The plugin itself does not call these.

// BenchSecretAccessToken returns the lease type of creds/ reads: its type name, fields and
// revoke (which does nothing, so a zero backend serves).
func BenchSecretAccessToken() *framework.Secret {
	return secretAccessToken(&backend{})
}

// BenchCredsResponse returns the plugin's answer to a read of creds/<name> served from a
// cached token with these fields, issued for config: secret is BenchSecretAccessToken's
// as the backend holds it, now the time of the read.
func BenchCredsResponse(accessToken, tokenType string, expiresAt time.Time, scopes []string, accountCode, clientID, config string) func(secret *framework.Secret, name string, now time.Time) *logical.Response {
	t := &cachedToken{AccessToken: accessToken, TokenType: tokenType, ExpiresAt: expiresAt,
		Scopes: scopes, AccountCode: accountCode, ClientID: clientID}
	return func(secret *framework.Secret, name string, now time.Time) *logical.Response {
		return accessTokenResponse(secret, name, config, t, now)
	}
}
