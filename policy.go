package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// policy.go is the request policy: the one place that answers "may this token request
// go out now, and if not, when". Every token request of a config passes through it:
// reads (token.go), refresh-ahead and keep-alive (background.go), callbacks and exchanges
// (path_authcode.go) and imports (path_token.go). docs/engine.md draws it.
//
//	question                                  asked by                               answered from
//	blocking: may name ask apaleo at all?     reads, fetchToken, background, status  the binding (the config names the app that issued the refresh
//	                                                                                  token), failure memory (store.go; a refused refresh token is stored
//	                                                                                  with the credential), the app's 429 hold and refused client (budget.go)
//	mayRevoke: may the refresh token go to    delete, replace, a failed import       the binding
//	the config's revocation endpoint?
//	attemptGate.before: may this HTTP attempt every attempt (withRetries)            the app's budget (a slot), the 429 hold checked again at the
//	go out now?                                                                       moment of sending, the lost-answer rule (sendRule)
//	nextAttempt: when may name try again?     background work after any failure      failure memory's next attempt, else the hold's end
//
// Nothing else keeps rules of its own: callers ask, and remember what the policy says.

// blocking is what forbids a token request for name at now: a config that names another
// app than the one that issued the refresh token, its failure memory (a refused refresh
// token stored with the credential included), else its config's 429 hold or refused
// client (the app's, so every name of the config).
func (b *backend) blocking(name string, cred *credential, cfg *apaleoConfig, now time.Time) *failure {
	if f := b.standing(name, cred, cfg); f != nil && f.blocks(now) {
		return f
	}
	bu := b.budgets.peek(cred.Config)
	if bu == nil {
		return nil
	}
	if until, cause, held := bu.held(now); held {
		return &failure{config: cred.Config, kind: failRetryAfter, at: now, next: until,
			err: logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf("%v; apaleo rate-limits the app of config/%s, so none of its credentials sends a token request until then", cause, cred.Config))}
	}
	if err := bu.refusal(); err != nil {
		return &failure{config: cred.Config, kind: failUntilConfig, at: now, err: err}
	}
	return nil
}

// standing is what holds name's token requests back on its own account: its config
// naming another app than its refresh token's (asked each time, never remembered, so a
// config written back revives it at once), else its failure memory.
func (b *backend) standing(name string, cred *credential, cfg *apaleoConfig) *failure {
	if err := otherApp(name, cred, cfg); err != nil {
		return &failure{config: cred.Config, kind: failOtherApp, err: err}
	}
	return b.nameFailure(name, cred)
}

// mayRevoke says whether cred's refresh token may go to cfg's revocation endpoint: only
// to the app that issued it. A secret of another app would not revoke it anyway, and a
// server of another app would receive a live token.
func mayRevoke(cred *credential, cfg *apaleoConfig) error {
	if cred.issuedBy(cfg) {
		return nil
	}
	return fmt.Errorf("not revoked: config/%s names client_id %q at %s, but the refresh token was issued to client_id %q at %s, and it is sent to no other app; an apaleo account admin can remove the app's access",
		cred.Config, cfg.ClientID, cfg.IdentityURL, cred.ClientID, cred.IdentityURL)
}

// nameFailure is name's failure memory: what this node remembers, else a refusal of
// the refresh token stored with the credential (by any node, before any restart).
func (b *backend) nameFailure(name string, cred *credential) *failure {
	if f := b.failureOf(name); f != nil {
		return f
	}
	if r := cred.Refused; r != nil {
		return &failure{config: cred.Config, kind: failUntilAuthorize, at: r.At, attempts: 1,
			err: logical.CodedError(http.StatusBadRequest, r.Error)}
	}
	return nil
}

// holdOf returns the 429 hold of config in force at now, if any.
func (b *backend) holdOf(config string, now time.Time) (time.Time, error, bool) {
	if bu := b.budgets.peek(config); bu != nil {
		return bu.held(now)
	}
	return time.Time{}, nil, false
}

// nextAttempt is when name may ask apaleo again after a failure, for background work
// to come back then; ok is false where only a config write or a new authorization may.
func (b *backend) nextAttempt(name string, cred *credential, cfg *apaleoConfig, now time.Time) (time.Time, bool) {
	f := b.blocking(name, cred, cfg, now)
	switch {
	case f == nil:
		// Nothing remembered (the failure was not apaleo's): come back after a backoff.
		return now.Add(backoffBase), true
	case f.next.IsZero():
		return time.Time{}, false
	}
	return f.next, true
}

// budgetError answers a request that the config's budget or 429 hold did not let go out:
// nothing was sent.
type budgetError struct {
	config     string
	perSecond  float64
	at         time.Time // when a request may go
	wait       time.Duration
	held       error // the 429 that holds the config, if that is why
	background bool  // refused to background work, which does not wait: a read may
}

func (e *budgetError) Error() string {
	if e.held != nil {
		return fmt.Sprintf("%v; apaleo rate-limits the app of config/%s, so no token request of any of its credentials goes out until %s",
			e.held, e.config, e.at.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("config/%s may send %g token requests per second (max_token_requests_per_second) and that budget is spent; retry after %s",
		e.config, e.perSecond, max(e.wait, time.Second).Round(time.Second))
}

func (e *budgetError) Code() int { return http.StatusTooManyRequests }

// attemptGate is asked before every HTTP attempt of one token request (withRetries) and
// told of its outcome: it charges the attempt to the config's budget, waits out (or
// refuses at) the app's 429 hold at the moment of sending, and turns a 429 into the
// config's hold.
type attemptGate struct {
	b        *backend
	config   string
	bu       *budget
	wait     bool      // may wait for a free moment (reads, callbacks, imports)
	deadline time.Time // the latest moment worth waiting for
	booked   time.Time // a moment background work booked before it started the request
}

// gate returns the attempt gate of a request of config: reads and the flows wait for the
// budget up to the read bound; background work goes at the moment it booked (book) and
// waits for nothing more.
func (b *backend) gate(ctx context.Context, config string, cfg *apaleoConfig, background bool) *attemptGate {
	booked, _ := ctx.Value(bookedKey{}).(time.Time)
	return &attemptGate{b: b, config: config, bu: b.budgets.of(config, cfg.MaxTokenRequestsPerSecond),
		wait: !background, deadline: b.budgetDeadline(b.now()), booked: booked}
}

type bookedKey struct{}

// withBooked carries a moment of the budget that background work booked (book) into
// the token request it starts: its first attempt goes then, charged already.
func withBooked(ctx context.Context, at time.Time) context.Context {
	return context.WithValue(ctx, bookedKey{}, at)
}

// book reserves a moment for background work of config, at most backgroundHorizon
// ahead; else it says when to come back (when the budget is booked less far ahead).
func (b *backend) book(config string, cfg *apaleoConfig, now time.Time) (time.Time, bool) {
	bu := b.budgets.of(config, cfg.MaxTokenRequestsPerSecond)
	slot, ok := bu.take(now, now.Add(backgroundHorizon))
	if !ok {
		return slot.Add(-backgroundHorizon).Add(b.jitter(max(bu.interval(), 10*time.Millisecond))), false
	}
	return slot, true
}

// before lets one attempt go out: at a free moment of the budget, and only if no 429
// hold is in force at that moment, the one this request's own 429 made included (a
// later 429 with a shorter Retry-After does not shorten the app's hold). A hold is
// waited out where the request may wait that long, else refused.
func (g *attemptGate) before(ctx context.Context) error {
	for {
		now := g.b.now()
		if until, cause, ok := g.bu.held(now); ok {
			if !g.wait || until.After(g.deadline) {
				return &budgetError{config: g.config, at: until, held: cause, background: !g.wait}
			}
			if err := g.b.sleepUntil(ctx, until); err != nil {
				return err
			}
			continue
		}
		slot := g.booked
		if !slot.IsZero() {
			g.booked = time.Time{}
		} else {
			latest := now
			if g.wait && g.deadline.After(now) {
				latest = g.deadline
			}
			var ok bool
			if slot, ok = g.bu.take(now, latest); !ok {
				return &budgetError{config: g.config, perSecond: g.bu.rate(), at: slot, wait: slot.Sub(now), background: !g.wait}
			}
		}
		if err := g.b.sleepUntil(ctx, slot); err != nil {
			return err
		}
		// The moment of sending: a 429 may have come while this request waited.
		if _, _, ok := g.bu.held(g.b.now()); !ok {
			return nil
		}
	}
}

func (g *attemptGate) after(err error) {
	var ue *upstreamError
	if !errors.As(err, &ue) || !ue.Answered {
		return
	}
	if ue.Status != http.StatusTooManyRequests {
		g.bu.answered()
		return
	}
	until := g.bu.hold(g.b.now(), ue.RetryAfter, ue, g.b.backoffAfter)
	g.b.Logger().Warn("apaleo answered 429: every token request of the config waits", "config", g.config, "until", until.UTC().Format(time.RFC3339))
}

// maxRefreshSends: within one read or one background attempt a refresh token goes out
// at most twice, the second time only after the first got no usable answer (lost, or a
// 429); after that only at failure memory's next attempt.
const maxRefreshSends = 2

// sendRule is the lost-answer rule of one refresh: it counts the sends that may have
// reached apaleo and marks each failure with what the sends before it tell.
type sendRule struct {
	sends int
	lost  *upstreamError // an earlier send whose answer was lost
	last  *upstreamError // the last failure, as marked
}

// mark notes a failed send and returns the error to answer: a refusal after a lost
// answer says so; a timeout, or the last send the rule allows, is not retried.
func (r *sendRule) mark(ue *upstreamError) *upstreamError {
	if !ue.notSent {
		r.sends++
	}
	marked := *ue
	switch {
	case r.lost != nil && marked.refusedGrant():
		marked.lostBefore = r.lost.lostWhat()
	case marked.lostAnswer():
		r.lost = ue
		marked.lostBefore = ""
	}
	if marked.Timeout {
		marked.Temporary = false
	}
	marked.final = r.sends >= maxRefreshSends
	r.last = &marked
	return &marked
}

// refused answers an attempt the policy did not let go (the budget, the app's hold)
// after earlier sends failed: what failed before is the answer, never a bare budget
// error, and it ends the request.
func (r *sendRule) refused(err error) error {
	if r.last == nil {
		return err
	}
	last := *r.last
	last.final = true
	return fmt.Errorf("%w (no retry: %v)", &last, err)
}
