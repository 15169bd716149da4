package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// authorization.go is the one way a new authorization becomes a credential: a callback,
// an exchange (both after a code exchange) and an import (after redeeming a refresh
// token) all end in storeAuthorization.

// authorization is a credential a flow is about to store under name.
type authorization struct {
	name string
	cred *credential
	// check holds the flow's own conditions, under the locks, on the config as it is now
	// and the credential the name holds (the live one; nil: none). An error stores nothing.
	check func(cfg *apaleoConfig, old *credential) error
	// unstored revokes the new refresh token that could not be stored and returns err
	// saying so, in the flow's words.
	unstored func(err error) error
}

// storeAuthorization stores a's credential, then, with no lock held, revokes the refresh
// token it replaced (best effort), or the new one if it could not be stored: a live
// refresh token is never dropped unrevoked.
func (b *backend) storeAuthorization(ctx context.Context, s logical.Storage, a authorization) error {
	replaced, err := b.commitAuthorization(ctx, s, a)
	if err != nil {
		return a.unstored(err)
	}
	b.Logger().Info("credential authorized", "name", a.name, "config", a.cred.Config, "account_code", a.cred.AccountCode)
	if replaced != nil {
		// The replaced refresh token would stay valid at apaleo: revoke it, after the
		// locks (a slow apaleo delays no other hotel's authorization).
		if err := b.revoke(ctx, s, replaced); err != nil {
			b.Logger().Warn("revoking the replaced refresh token failed", "name", a.name, "error", err)
		}
	}
	return nil
}

// commitAuthorization stores the credential under the locks of its name and config,
// after the flow's check, and returns the authorized credential it replaced, if any.
// A new authorization is a new start: failure memory ends, the keep-alive is planned.
func (b *backend) commitAuthorization(ctx context.Context, s logical.Storage, a authorization) (*credential, error) {
	for _, l := range b.locksFor(configPrefix+a.cred.Config, credsPrefix+a.name) {
		l.Lock()
		defer l.Unlock()
	}
	cfg, err := readConfig(ctx, s, a.cred.Config)
	if err != nil {
		return nil, err
	}
	// The live credential: a rotated refresh token held in memory wins over storage.
	old, err := b.credForUpdate(ctx, s, a.name)
	if err != nil {
		return nil, err
	}
	if err := a.check(cfg, old); err != nil {
		return nil, err
	}
	if err := b.putCred(ctx, s, a.name, a.cred); err != nil {
		return nil, err
	}
	b.clearFailure(a.name)
	b.planKeepAlive(a.name, a.cred, cfg)
	if old != nil && old.Kind == kindAuthorized && old.RefreshToken != "" && old.RefreshToken != a.cred.RefreshToken {
		return old, nil
	}
	return nil, nil
}

func (b *backend) revoke(ctx context.Context, s logical.Storage, cred *credential) error {
	cfg, err := readConfig(ctx, s, cred.Config)
	if err != nil {
		return err
	}
	if cfg == nil {
		return fmt.Errorf("config %q is gone", cred.Config)
	}
	srv, err := b.identity(cfg)
	if err != nil {
		return err
	}
	policy := b.retry
	policy.Total = min(policy.Total, 10*time.Second)
	return srv.Revoke(ctx, cred.RefreshToken, policy)
}

// redeemed is what became of a failed redemption of a one-time secret (an authorization
// code, or a refresh token being imported): the one mapper from upstream errors to the
// answers of callback, exchange and import.
type redeemed int

const (
	redeemNotSent     redeemed = iota // the budget or the app's hold let nothing go
	redeemRefused                     // apaleo refused the secret
	redeemRefusedLost                 // apaleo refused it after the answer to a first send was lost
	redeemFailed                      // no usable answer: the secret may be spent
)

// redeemFailure classifies err and gives the HTTP status the flows answer with.
func redeemFailure(err error) (redeemed, int) {
	var ue *upstreamError
	var be *budgetError
	switch {
	case errors.As(err, &be) && !errors.As(err, &ue):
		return redeemNotSent, http.StatusTooManyRequests
	case errors.As(err, &ue) && ue.lostBefore != "":
		return redeemRefusedLost, http.StatusBadRequest
	case errors.As(err, &ue) && ue.Status >= 400 && ue.Status < 500 && ue.Status != http.StatusTooManyRequests:
		return redeemRefused, http.StatusBadRequest
	case errors.As(err, &ue) && ue.Status == http.StatusTooManyRequests:
		return redeemFailed, http.StatusTooManyRequests
	case errors.As(err, &ue) && ue.Timeout:
		return redeemFailed, http.StatusGatewayTimeout
	}
	return redeemFailed, http.StatusBadGateway
}
