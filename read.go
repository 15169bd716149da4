package apaleo

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/lease"
	"github.com/hashicorp/vault/sdk/logical"
)

// read.go serves a read of creds/<name>: a fresh cached token from memory (no lock, no
// storage, no network), else what the request policy allows, else the name's token
// request (token.go), shared by every reader of the name.

// readCreds is the hot path: a fresh cached token is answered from memory, with no
// storage round trip and no exclusive lock.
func (b *backend) readCreds(ctx context.Context, s logical.Storage, name string) (*logical.Response, error) {
	cred, err := b.cred(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return b.credNotFound(ctx, s, name)
	}
	cfg, err := b.config(ctx, s, cred.Config)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, fmt.Errorf("credential %q refers to config %q, which does not exist", name, cred.Config)
	}
	now := b.now()
	st := b.state(name)
	st.lastRead.Store(now.UnixNano())
	if cred.Token.fresh(cfg, now) {
		if b.forwardUse(st, cred, cfg) {
			return nil, logical.ErrReadOnly
		}
		b.planRefresh(name, st, cred, cfg)
		b.metrics.credsRead(cred.Config, readCached)
		return b.tokenResponse(name, cred, now), nil
	}

	// A token request may rotate a refresh token, which must be stored: leave it to a
	// node that can write.
	if !b.canWrite() {
		return nil, logical.ErrReadOnly
	}
	if f := b.blocking(name, cred, cfg, now); f != nil {
		return b.answerFailure(name, cred, f, cred.Token.valid(cfg, now), now)
	}
	return b.awaitToken(ctx, s, name, st, cred, cfg, now)
}

// awaitToken waits for name's token request (joined or started). A reader without a
// usable token waits for apaleo within the retry policy's bound; one holding a
// still-valid token about one attempt, then it is answered that token.
func (b *backend) awaitToken(ctx context.Context, s logical.Storage, name string, st *nameState, cred *credential, cfg *apaleoConfig, now time.Time) (*logical.Response, error) {
	valid := cred.Token.valid(cfg, now)
	wait := b.retry.Total
	if valid {
		wait = min(b.retry.PerAttempt+500*time.Millisecond, cred.Token.ExpiresAt.Sub(now)-expirySkew)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-b.readFlight(ctx, s, name):
		if r.Err != nil {
			return b.answerError(ctx, s, name, cred, cfg, r.Err)
		}
		out := r.Val.(*fetchOutcome)
		result := readCached
		if out.sent {
			result = readFetched
		}
		b.metrics.credsRead(out.cred.Config, result)
		b.planRefresh(name, st, out.cred, cfg)
		resp := b.tokenResponse(name, out.cred, b.now())
		if out.warning != "" {
			resp.AddWarning(out.warning)
		}
		return resp, nil
	case <-ctx.Done():
	case <-timer.C:
	}
	if valid {
		b.metrics.credsRead(cred.Config, readStale)
		resp := b.tokenResponse(name, cred, b.now())
		resp.AddWarning("apaleo has not answered the token request yet, so this cached token is served; the request goes on and its answer is kept")
		return resp, nil
	}
	b.metrics.credsRead(cred.Config, readError)
	return nil, logical.CodedError(http.StatusGatewayTimeout, fmt.Sprintf(
		"apaleo has not answered the token request for creds/%s within %s; the request goes on in the background and its answer is kept: read again shortly", name, wait.Round(time.Second)))
}

// answerFailure answers a read while failure memory forbids a token request: the cached
// token while it is valid, else the remembered error; both say when the next attempt is.
func (b *backend) answerFailure(name string, cred *credential, f *failure, valid bool, now time.Time) (*logical.Response, error) {
	if valid {
		b.metrics.credsRead(cred.Config, readStale)
		resp := b.tokenResponse(name, cred, now)
		resp.AddWarning(fmt.Sprintf("could not get a new token, so this cached one is served: %v", f.answer(name)))
		return resp, nil
	}
	b.metrics.credsRead(cred.Config, readError)
	return nil, f.answer(name)
}

// answerError answers a read whose token request failed: a still-valid cached token
// with a warning, else the error.
func (b *backend) answerError(ctx context.Context, s logical.Storage, name string, cred *credential, cfg *apaleoConfig, err error) (*logical.Response, error) {
	if latest, lerr := b.cred(ctx, s, name); lerr == nil && latest != nil {
		cred = latest
	}
	now := b.now()
	if cred.Token.valid(cfg, now) {
		msg := err.Error() // says when the next attempt is, where failure memory holds one
		b.Logger().Warn("token request failed; serving the cached token", "name", name, "expires_at", cred.Token.ExpiresAt, "error", err)
		b.metrics.credsRead(cred.Config, readStale)
		resp := b.tokenResponse(name, cred, now)
		resp.AddWarning(fmt.Sprintf("could not get a new token, so this cached one is served: %s", msg))
		return resp, nil
	}
	b.metrics.credsRead(cred.Config, readError)
	return nil, err
}

func (b *backend) credNotFound(ctx context.Context, s logical.Storage, name string) (*logical.Response, error) {
	cfg, err := b.config(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.GrantType == grantAuthorizationCode {
		return logical.ErrorResponse("config %q is an authorization_code config: authorize a credential for a hotel account with authorize/<name> config=%s, then read creds/<name>", name, name), nil
	}
	return nil, nil
}

func (b *backend) tokenResponse(name string, cred *credential, now time.Time) *logical.Response {
	return accessTokenResponse(b.Secret(lease.Type), name, cred.Config, cred.Token, now)
}
