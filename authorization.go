package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
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
	if !a.cred.bound() && cfg != nil {
		// The flow's check made sure the config still names the app the token came from.
		a.cred.bindTo(cfg)
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
	if err := mayRevoke(cred, cfg); err != nil {
		return err
	}
	srv, err := b.identity(cfg)
	if err != nil {
		return err
	}
	policy := b.retry
	policy.Total = min(policy.Total, 10*time.Second)
	return srv.Revoke(ctx, cred.RefreshToken, policy)
}

// revokeRefusedAnswer revokes the refresh token that a refused token answer to a flow
// carried (its access token failed the checks, so the flow stores nothing: a refresh
// token left unstored must not stay valid at apaleo), and says so for the flow's message.
func (b *backend) revokeRefusedAnswer(ctx context.Context, srv identityServer, err error) string {
	var ue *upstreamError
	if !errors.As(err, &ue) || ue.rotated == "" {
		return ""
	}
	if rerr := b.revokeUnstored(ctx, srv, ue.rotated); rerr != nil {
		b.Logger().Warn("revoking the refresh token of a refused token answer failed", "error", rerr)
		return fmt.Sprintf(" Revoking the refresh token that answer carried failed (%v): an apaleo account admin can remove the app's access.", rerr)
	}
	return " The refresh token that answer carried was revoked at apaleo."
}

// bindPass is the upgrade of credentials stored before bindings were: done once all are
// bound, on a node that may write.
type bindPass struct {
	mu   sync.Mutex
	done atomic.Bool
}

// bindUnbound binds every authorized credential stored before bindings were to its
// config's app as it stands, once per start, where storage may be written: at the first
// periodic run, and before the first config write, so that no change of a config's app
// can come before it. The config as it stands is the best witness there is of the app
// that issued the token (the earlier version sent it nowhere else). A standby writes
// nothing: there an unbound entry counts as bound to its config as it stands (otherApp),
// and the active node's pass reaches it by invalidation.
func (b *backend) bindUnbound(ctx context.Context, s logical.Storage) error {
	if b.upgrade.done.Load() || !b.canWrite() {
		return nil
	}
	b.upgrade.mu.Lock()
	defer b.upgrade.mu.Unlock()
	if b.upgrade.done.Load() {
		return nil
	}
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return err
	}
	for _, n := range names {
		c, err := b.cred(ctx, s, n)
		if err != nil {
			return err
		}
		if c != nil && c.Kind == kindAuthorized && !c.bound() {
			if err := b.bindOne(ctx, s, n); err != nil {
				return err
			}
		}
	}
	b.upgrade.done.Store(true)
	return nil
}

// bindOne binds name, under its lock, to its config's app, if it is still unbound.
func (b *backend) bindOne(ctx context.Context, s logical.Storage, name string) error {
	defer b.lockName(name)()
	cred, err := b.credForUpdate(ctx, s, name)
	if err != nil || cred == nil || cred.Kind != kindAuthorized || cred.bound() {
		return err
	}
	cfg, err := b.config(ctx, s, cred.Config)
	if err != nil || cfg == nil {
		return err
	}
	next := *cred
	next.bindTo(cfg)
	if err := b.putCred(ctx, s, name, &next); err != nil {
		return err
	}
	b.Logger().Info("credential of an earlier version bound to its config's app", "name", name, "config", cred.Config, "client_id", cfg.ClientID, "identity_url", cfg.IdentityURL)
	return nil
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
