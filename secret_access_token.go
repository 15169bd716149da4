package apaleo

import (
	"context"
	"errors"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/lease"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// secretAccessToken is the lease of a creds/ read. Its TTL is the token's remaining
// lifetime, and it is renewable up to the token's own expiry and never beyond: Vault
// Proxy's and Agent's lease caches keep only renewable leases, so a consumer reading
// through them gets one lease per token instead of one per read. A renewal answers the
// same token; consumers read again when the lease can no longer be extended. apaleo's
// access tokens are self-contained JWTs with no revocation, so revoking the lease only
// ends it in Vault and never calls apaleo.
func secretAccessToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type:   lease.Type,
		Fields: lease.Fields,
		Renew:  b.secretAccessTokenRenew,
		Revoke: b.secretAccessTokenRevoke,
	}
}

// errTokenExpired answers the renewal of a lease whose token has expired (or whose
// lease predates renewable leases and carries no expiry).
var errTokenExpired = errors.New("the lease's access token has expired or its expiry is unknown: read creds/<name> again")

// secretAccessTokenRenew extends the lease by the requested increment (by default, the
// token's remaining life), capped by the token's expiry and the mount's max TTL from
// the lease's issue. It reads no storage and calls no identity server: the token the
// lease holds is unchanged.
func (b *backend) secretAccessTokenRenew(_ context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	exp, ok := lease.Expiry(req.Secret.InternalData)
	if !ok {
		return nil, errTokenExpired
	}
	remaining := exp.Sub(b.now())
	if remaining < time.Second {
		return nil, errTokenExpired
	}
	ttl := remaining
	if inc := req.Secret.Increment; inc > 0 && inc < ttl {
		ttl = inc
	}
	if sys := b.System(); sys != nil {
		// The mount's max TTL counts from the lease's issue, as Vault counts it.
		if maxTTL := sys.MaxLeaseTTL(); maxTTL > 0 && !req.Secret.IssueTime.IsZero() {
			ttl = min(ttl, req.Secret.IssueTime.Add(maxTTL).Sub(b.now()))
		}
	}
	if ttl < time.Second {
		return nil, errors.New("the lease has reached the mount's max TTL: read creds/<name> again")
	}
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl.Truncate(time.Second)
	// Vault caps the renewed TTL at MaxTTL counted from the lease's issue time
	// (framework.CalculateTTL in its expiration manager): the token's expiry is that far
	// from the issue. The remaining life alone would end the lease early, and fail a
	// renewal past the middle of the lease ("past the max TTL").
	resp.Secret.MaxTTL = remaining
	if !req.Secret.IssueTime.IsZero() {
		resp.Secret.MaxTTL = exp.Sub(req.Secret.IssueTime)
	}
	return resp, nil
}

func (b *backend) secretAccessTokenRevoke(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return nil, nil
}

// accessTokenResponse is the answer to a read of creds/<name> from its token t
// (internal/lease, which the benchmark's floor plugin answers with too).
func accessTokenResponse(secret *framework.Secret, name, config string, t *cachedToken, now time.Time) *logical.Response {
	return lease.Response(secret, name, config, lease.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, ExpiresAt: t.ExpiresAt,
		Scopes: t.Scopes, AccountCode: t.AccountCode, ClientID: t.ClientID}, now)
}
