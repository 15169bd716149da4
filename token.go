package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"
)

// token.go is the token request of one credential, in named steps: load what it needs
// under the name's lock, decide whether a request is still wanted, respect failure memory
// and the app's budget, send it, and remember a failure or store the answer. Reads
// (path_token.go) and refresh-ahead (background.go) share it through one flight per name.

type fetchOutcome struct {
	cred    *credential
	warning string
	sent    bool // a token request was sent for this outcome
}

// fetchToken gets a new access token for name under its lock: the one token request of
// a flight, shared by reads and refresh-ahead. It re-reads storage first: another request
// may have fetched a token, or rotated the refresh token, meanwhile.
func (b *backend) fetchToken(ctx context.Context, s logical.Storage, name, trigger string) (*fetchOutcome, error) {
	defer b.lockName(name)()

	cred, cfg, err := b.loadForFetch(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if err := outsideConfig(name, cred, cfg); err != nil {
		return nil, err
	}
	now := b.now()
	if !b.needsToken(cred, cfg, trigger, now) {
		return &fetchOutcome{cred: cred}, nil
	}
	if f := b.blocking(name, cred, cfg, now); f != nil {
		return nil, f.answer(name)
	}

	b.inflight.add()
	defer b.inflight.done()
	res, err := b.requestToken(ctx, name, cred, cfg, trigger)
	if err != nil {
		cred = b.keepRotated(ctx, s, name, cred, err)
		return nil, b.rememberFailure(ctx, s, name, cred, cfg, err)
	}
	b.setFailure(name, nil)
	return b.storeToken(ctx, s, name, cred, cfg, res)
}

// loadForFetch reads the credential (storing a rotated refresh token memory still holds)
// and its config.
func (b *backend) loadForFetch(ctx context.Context, s logical.Storage, name string) (*credential, *apaleoConfig, error) {
	cred, err := b.credForUpdate(ctx, s, name)
	if err != nil {
		return nil, nil, err
	}
	if cred == nil {
		return nil, nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("creds/%s was deleted", name))
	}
	// The in-memory config is as current as storage: config writes update it, and
	// Invalidate drops it on nodes that did not write.
	cfg, err := b.config(ctx, s, cred.Config)
	if err != nil {
		return nil, nil, err
	}
	if cfg == nil {
		return nil, nil, fmt.Errorf("credential %q refers to config %q, which does not exist", name, cred.Config)
	}
	return cred, cfg, nil
}

// needsToken reports whether a token request is still wanted: for a read, the token is
// no longer fresh; for refresh-ahead, its refresh window has begun; for keep-alive, the
// refresh token has not been used for idle_refresh_interval.
func (b *backend) needsToken(cred *credential, cfg *apaleoConfig, trigger string, now time.Time) bool {
	if trigger == triggerProbe {
		return true // a probe is a real token request, whatever the name holds
	}
	if trigger == triggerKeepAlive {
		due, ok := keepAliveDue(cred, cfg)
		return ok && !now.Before(due)
	}
	if !cred.Token.fresh(cfg, now) {
		return true
	}
	if trigger != triggerRefreshAhead {
		return false
	}
	start, _ := refreshWindow(cred.Token, cfg)
	return !now.Before(start)
}

// budgetDeadline is how long a token request started at now may wait for its config's
// budget: what leaves one attempt inside the read bound.
func (b *backend) budgetDeadline(now time.Time) time.Time {
	return now.Add(max(b.retry.Total-flightMargin-b.retry.PerAttempt, 0))
}

// sendContext is the context a token request of config is sent with: counted in the
// metrics, and every attempt charged to the config's budget (background work's first
// attempt uses the moment it booked) and stopped by the app's 429 hold. Once sent, a
// request runs to its end whatever the caller does: apaleo spends a refresh token or a
// code on receipt.
func (b *backend) sendContext(ctx context.Context, config string, cfg *apaleoConfig, grant, trigger string) context.Context {
	background := trigger == triggerRefreshAhead || trigger == triggerKeepAlive
	ctx = withAttemptGuard(context.WithoutCancel(ctx), b.gate(ctx, config, cfg, background))
	return b.metrics.observeTokenRequests(ctx, config, grant, trigger)
}

// refreshTimeout bounds a refresh-token request: generous, because a refresh cut short
// may have spent the refresh token at apaleo all the same.
const refreshTimeout = 60 * time.Second

// flightMargin ends a flight's retries a little before the readers waiting for it give
// up, so that they are answered its error rather than a bare time-out.
const flightMargin = 250 * time.Millisecond

// requestToken sends the token request of name's grant, with retries for 5xx and
// network errors within the read bound. With a still-valid token in hand, or after an
// earlier failure, it makes one attempt (failure memory plans the next).
func (b *backend) requestToken(ctx context.Context, name string, cred *credential, cfg *apaleoConfig, trigger string) (*tokenResult, error) {
	srv, err := b.identity(cfg)
	if err != nil {
		return nil, err
	}
	policy := b.retry
	policy.Total = max(policy.Total-flightMargin, policy.PerAttempt)
	if cred.Token.valid(cfg, b.now()) || b.nameFailure(name, cred) != nil || trigger != triggerRead {
		// A cached token to fall back on, apaleo failed before, or nobody waits: one
		// attempt, and failure memory's backoff is the retry, so readers do not pile up
		// behind a 30 s retry loop while apaleo is down.
		policy.Attempts = 1
	}
	if cred.Kind != kindAuthorized {
		return srv.ClientCredentials(b.sendContext(ctx, cred.Config, cfg, grantClientCredentials, trigger), tokenScopes(cred, cfg), policy)
	}
	return b.refresh(b.sendContext(ctx, cred.Config, cfg, grantRefreshToken, trigger), srv, cred.RefreshToken, policy)
}

// refresh runs the refresh grant. Once a refresh is on the wire, nothing cuts it short
// but its own generous timeout (refreshTimeout): apaleo may rotate the refresh token
// whether or not we wait for the answer. p bounds when new attempts may start; one that
// timed out is not retried, since the token may be spent.
//
// The request policy's lost-answer rule (sendRule) decides what may follow a failed send:
// the same refresh token goes at most twice in one request, the second time only after a
// send with no usable answer; if apaleo refuses that one, the error says the first answer
// was lost, since apaleo most likely spent the token then. A retry the budget or the
// app's hold does not let go ends the request with the failure before it.
func (b *backend) refresh(ctx context.Context, srv identityServer, refreshToken string, p retryPolicy) (*tokenResult, error) {
	one := retryPolicy{Total: b.refreshTimeout, PerAttempt: b.refreshTimeout, Attempts: 1}
	p.PerAttempt = b.refreshTimeout
	var rule sendRule
	return withRetries(withoutAttemptObserver(ctx), p, func(actx context.Context) (*tokenResult, error) {
		res, err := srv.Refresh(context.WithoutCancel(ctx), refreshToken, one)
		var ue *upstreamError
		switch {
		case err == nil:
			return res, nil
		case !errors.As(err, &ue):
			return nil, rule.refused(err)
		}
		return nil, rule.mark(ue)
	})
}

// rememberFailure records a failed token request in failure memory and returns the
// error a read answers. A refusal by the budget or the app's 429 hold sent nothing and is
// not the name's failure; a 429 holds the whole config (attemptGate) rather than a name.
func (b *backend) rememberFailure(ctx context.Context, s logical.Storage, name string, cred *credential, cfg *apaleoConfig, err error) error {
	var be *budgetError
	if errors.As(err, &be) {
		if f := b.blocking(name, cred, cfg, b.now()); (be.held != nil || be.outage != nil) && f != nil {
			return f.answer(name) // the app's hold, said the way every read of it says it
		}
		return be
	}
	var ue *upstreamError
	if !errors.As(err, &ue) {
		b.Logger().Error("token request failed", "name", name, "config", cred.Config, "error", err)
		return err
	}
	now := b.now()
	explained := explainUpstream(name, cred, cfg, err)
	if ue.Status == http.StatusTooManyRequests {
		b.Logger().Error("token request failed", "name", name, "config", cred.Config, "error", explained)
		if f := b.blocking(name, cred, cfg, now); f != nil {
			return f.answer(name)
		}
		return explained
	}
	f := b.newFailure(name, cred, cfg, ue, explained, b.failureOf(name), now)
	b.setFailure(name, f)
	if ue.Code == "invalid_client" || ue.Code == "unauthorized_client" {
		// The app's client is refused: every name of the config would be too.
		b.budgets.of(cred.Config, cfg.MaxTokenRequestsPerSecond).refuse(explained)
	}
	if f.kind == failUntilAuthorize {
		b.storeRefusal(ctx, s, name, cred, f)
	}
	if !f.next.IsZero() {
		// Failure memory's next attempt is refresh-ahead's too, while the credential is
		// in use or kept alive (background decides when it comes).
		b.refresher.plan(name, f.next)
	}
	b.Logger().Error("token request failed", "name", name, "config", cred.Config, "error", f.err, "next_attempt", f.nextAttemptText(name))
	return f.answer(name)
}

// newFailure is the failure memory of a failed token request of name: what it waits for
// (a backoff, a config write, a new authorization) and what a read answers meanwhile,
// saying where an answer was lost.
func (b *backend) newFailure(name string, cred *credential, cfg *apaleoConfig, ue *upstreamError, explained error, prev *failure, now time.Time) *failure {
	f := &failure{config: cred.Config, err: explained, at: now, attempts: 1}
	if prev != nil {
		f.attempts = prev.attempts + 1
	}
	refresh := cred.Kind == kindAuthorized
	switch {
	case ue.Code == "invalid_client" || ue.Code == "unauthorized_client" || ue.Code == "invalid_scope":
		f.kind = failUntilConfig
	case refresh && ue.refusedGrant():
		f.kind = failUntilAuthorize
		lostWhat := ue.lostBefore
		if lostWhat == "" && prev != nil {
			lostWhat = prev.lost
		}
		if lostWhat != "" {
			f.err = logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
				"%v: apaleo refused the refresh token of creds/%s after the answer to an earlier refresh was lost in transit (%s), so apaleo most likely used the token up then and the answer never arrived; run authorize/%s config=%s again",
				ue, name, lostWhat, name, cred.Config))
		}
	default:
		f.next = now.Add(b.backoffAfter(f.attempts))
	}
	if refresh && ue.lostAnswer() {
		f.lost = ue.lostWhat()
		f.err = logical.CodedError(errStatus(explained), fmt.Sprintf(
			"%v; the answer to this refresh was lost in transit, so apaleo may have used up the refresh token: the next attempt sends it once more, and if apaleo refuses it, run authorize/%s config=%s again",
			explained, name, cred.Config))
	}
	return f
}

// storeRefusal stores a refused refresh token with the credential, so that no node,
// after a restart or a leader change, sends it again. Where storage refuses the write,
// the refusal is held in memory as unsaved (as a rotated refresh token is) and stored at
// the next chance: the periodic pass, or the next change of the credential.
func (b *backend) storeRefusal(ctx context.Context, s logical.Storage, name string, cred *credential, f *failure) {
	next := *cred
	next.Refused = &refusal{At: f.at.UTC(), Error: f.err.Error()}
	if err := b.putCred(ctx, s, name, &next); err != nil {
		b.setUnsaved(name, &next)
		b.Logger().Error("storing that the refresh token was refused failed; it is held in memory and stored at the next chance", "name", name, "error", err)
	}
}

// keepRotated stores the refresh token that a refused token answer carried (a token_type
// or expires_in the checks refuse): apaleo answered, so the refresh token sent may be
// spent and the one in the answer is the credential's now. The cached access token is
// kept; only the answer's was refused.
func (b *backend) keepRotated(ctx context.Context, s logical.Storage, name string, cred *credential, err error) *credential {
	var ue *upstreamError
	if cred.Kind != kindAuthorized || !errors.As(err, &ue) || ue.rotated == "" || ue.rotated == cred.RefreshToken {
		return cred
	}
	next := *cred
	next.RefreshToken = ue.rotated
	if perr := b.putCred(ctx, s, name, &next); perr != nil {
		b.setUnsaved(name, &next)
		b.Logger().Error("storing the rotated refresh token of a refused token answer failed; it is held in memory and stored at the next chance", "name", name, "error", perr)
		return &next
	}
	b.Logger().Warn("token answer refused; the rotated refresh token it carried is stored", "name", name, "config", cred.Config, "error", err)
	return &next
}

// storeToken stores the new token and a rotated refresh token before it is served.
func (b *backend) storeToken(ctx context.Context, s logical.Storage, name string, cred *credential, cfg *apaleoConfig, res *tokenResult) (*fetchOutcome, error) {
	next := *cred
	next.Token = newCachedToken(res, cfg.Generation)
	if len(next.Token.Scopes) == 0 {
		// The server did not say what it granted: a refresh keeps the consented scopes.
		next.Token.Scopes = tokenScopes(cred, cfg)
	}
	if res.RefreshToken != "" {
		next.RefreshToken = res.RefreshToken
	}
	if next.AccountCode == "" {
		next.AccountCode = res.AccountCode
	}
	if next.Kind == kindAuthorized && !next.bound() {
		next.bindTo(cfg) // an entry of an earlier version: the app that just answered
	}
	rotated := next.RefreshToken != cred.RefreshToken
	if err := b.putCred(ctx, s, name, &next); err != nil {
		// The token is good; only storing it failed. A rotated refresh token must not be
		// lost: hold it in memory, where it wins over storage, until a store succeeds.
		// A mark set before stays set: only a successful store clears it.
		if !rotated && b.unsavedOf(name) == nil {
			b.creds.set(name, &next)
			b.Logger().Warn("storing the new access token failed; it is cached in memory only", "name", name, "error", err)
			return &fetchOutcome{cred: &next, sent: true}, nil
		}
		b.setUnsaved(name, &next)
		b.Logger().Error("storing the rotated refresh token failed; it is held in memory and stored at the next refresh or periodic pass", "name", name, "error", err)
		return &fetchOutcome{cred: &next, sent: true, warning: fmt.Sprintf(
			"storing the rotated refresh token failed (%v): this Vault node holds it in memory and stores it at the next chance; if the node restarts first, run authorize/%s again", err, name)}, nil
	}
	b.Logger().Debug("new access token", "name", name, "config", cred.Config, "expires_at", next.Token.ExpiresAt, "rotated", rotated)
	return &fetchOutcome{cred: &next, sent: true}, nil
}

// explainUpstream turns an identity-server error into one that says what to do.
func explainUpstream(name string, cred *credential, cfg *apaleoConfig, err error) error {
	var ue *upstreamError
	if !errors.As(err, &ue) {
		return err
	}
	msg := err.Error()
	switch {
	case ue.Code == "invalid_client" || ue.Code == "unauthorized_client":
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("%s: check client_id and client_secret of config/%s", msg, cred.Config))
	case ue.Code == "invalid_scope":
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("%s: the scopes requested were %q; request only scopes the apaleo app may have (config/%s scopes)",
			msg, strings.Join(tokenScopes(cred, cfg), " "), cred.Config))
	case cred.Kind == kindAuthorized && (ue.Code == "invalid_grant" || ue.Code == "invalid_request"):
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("%s: the refresh token of creds/%s was refused (revoked, expired, or the app's scopes changed); run authorize/%s config=%s again",
			msg, name, name, cred.Config))
	case ue.Status == http.StatusTooManyRequests:
		return logical.CodedError(http.StatusTooManyRequests, msg)
	case ue.Timeout:
		return logical.CodedError(http.StatusGatewayTimeout, msg)
	case ue.Temporary:
		return logical.CodedError(http.StatusBadGateway, msg)
	case ue.Status >= 400 && ue.Status < 500:
		return logical.CodedError(http.StatusBadRequest, msg)
	}
	return logical.CodedError(http.StatusBadGateway, msg)
}

// readFlight joins name's token request under way, or starts one. The request is shared
// by every reader of name and outlives them all: once sent, its answer (a rotated refresh
// token above all) is stored whoever still waits. A reader that joined background work
// the budget turned away (background never waits for it) starts a read's own request.
func (b *backend) readFlight(ctx context.Context, s logical.Storage, name string) <-chan singleflight.Result {
	start := func() <-chan singleflight.Result {
		return b.flights.DoChan(name, func() (any, error) {
			return b.fetchToken(context.WithoutCancel(ctx), s, name, triggerRead)
		})
	}
	out := make(chan singleflight.Result, 1)
	go func() {
		r := <-start()
		var be *budgetError
		if errors.As(r.Err, &be) && be.background && be.held == nil && be.outage == nil {
			r = <-start()
		}
		out <- r
	}()
	return out
}
