package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// budget.go is what one config (one apaleo app) may send: its request budget, at most
// max_token_requests_per_second token requests in any one second with every HTTP attempt
// charged, and its 429 hold, since apaleo's rate limit is the app's and not a hotel's.
// Reads may wait for the next free moment; background work (refresh-ahead, keep-alive)
// books one at most backgroundHorizon ahead, else comes back when the budget has room, so
// a read never waits more than that behind it.

// budget is one config's: requests are spaced 1/perSecond apart (no burst), so any one
// second holds at most perSecond of them.
type budget struct {
	mu        sync.Mutex
	perSecond float64   // 0: no limit
	next      time.Time // the earliest moment the next request may go
	// The app's 429 hold: no request of the config before holdUntil.
	holdUntil time.Time
	holdErr   error
	holds     int // consecutive 429s, for the backoff when apaleo sends no Retry-After
}

func (bu *budget) interval() time.Duration {
	if bu.perSecond <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / bu.perSecond)
}

// take reserves the first free moment at or after now, if it is no later than latest;
// otherwise it reserves nothing and says when the first free moment is.
func (bu *budget) take(now, latest time.Time) (time.Time, bool) {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	if bu.perSecond <= 0 {
		return now, true
	}
	slot := now
	if bu.next.After(slot) {
		slot = bu.next
	}
	if slot.After(latest) {
		return slot, false
	}
	bu.next = slot.Add(bu.interval())
	return slot, true
}

// backgroundHorizon is how far ahead background work (refresh-ahead, keep-alive) may book
// a moment of the budget: at most this much of the budget is booked ahead of a read that
// comes later, so reads never wait long behind the fleet's background work.
const backgroundHorizon = time.Second

// held returns the hold in force at now, if any.
func (bu *budget) held(now time.Time) (time.Time, error, bool) {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	if now.Before(bu.holdUntil) {
		return bu.holdUntil, bu.holdErr, true
	}
	return time.Time{}, nil, false
}

// maxHold caps a hold, whatever Retry-After says.
const maxHold = time.Hour

// hold stops every request of the config after apaleo answered 429: until Retry-After,
// else failure memory's backoff, never longer than maxHold.
func (bu *budget) hold(now time.Time, retryAfter time.Duration, err error) time.Time {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	bu.holds++
	d := retryAfter
	if d <= 0 {
		d = backoffAfter(bu.holds)
	}
	until := now.Add(min(d, maxHold))
	if until.After(bu.holdUntil) {
		bu.holdUntil, bu.holdErr = until, err
	}
	return bu.holdUntil
}

// answered notes an answer that was not a 429: the app is not rate-limited any more.
func (bu *budget) answered() {
	bu.mu.Lock()
	bu.holds = 0
	bu.mu.Unlock()
}

// budgets are the budgets of the configs by name.
type budgets struct {
	mu sync.Mutex
	m  map[string]*budget
}

// of returns config's budget at the rate given, made on first use.
func (bs *budgets) of(config string, perSecond float64) *budget {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	bu, ok := bs.m[config]
	if !ok {
		if bs.m == nil {
			bs.m = map[string]*budget{}
		}
		bu = &budget{}
		bs.m[config] = bu
	}
	bu.mu.Lock()
	bu.perSecond = perSecond
	bu.mu.Unlock()
	return bu
}

// peek returns config's budget if it has one.
func (bs *budgets) peek(config string) *budget {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.m[config]
}

func (bs *budgets) drop(config string) {
	bs.mu.Lock()
	delete(bs.m, config)
	bs.mu.Unlock()
}

// holdOf returns the 429 hold of config in force at now, if any.
func (b *backend) holdOf(config string, now time.Time) (time.Time, error, bool) {
	if bu := b.budgets.peek(config); bu != nil {
		return bu.held(now)
	}
	return time.Time{}, nil, false
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
// told of its outcome: it charges the attempt to the config's budget, and turns a 429
// into the config's hold.
type attemptGate struct {
	b        *backend
	config   string
	bu       *budget
	wait     bool      // may wait for a free moment (reads, callbacks, imports)
	deadline time.Time // the latest moment worth waiting for
	booked   time.Time // a moment background work booked before it started the request
	// waited is the end of a hold this request's own 429 made with a Retry-After, which
	// withRetries waits out before it tries again.
	waited time.Time
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
		return slot.Add(-backgroundHorizon).Add(jitter(max(bu.interval(), 10*time.Millisecond))), false
	}
	return slot, true
}

func (g *attemptGate) before(ctx context.Context) error {
	now := g.b.now()
	if until, cause, ok := g.bu.held(now); ok && !until.Equal(g.waited) {
		return &budgetError{config: g.config, at: until, held: cause, background: !g.wait}
	}
	if at := g.booked; !at.IsZero() {
		g.booked = time.Time{}
		return g.b.sleepUntil(ctx, at)
	}
	latest := now
	if g.wait && g.deadline.After(now) {
		latest = g.deadline
	}
	slot, ok := g.bu.take(now, latest)
	if !ok {
		return &budgetError{config: g.config, perSecond: g.bu.perSecond, at: slot, wait: slot.Sub(now), background: !g.wait}
	}
	return g.b.sleepUntil(ctx, slot)
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
	until := g.bu.hold(g.b.now(), ue.RetryAfter, ue)
	if ue.RetryAfter > 0 {
		g.waited = until
	}
	g.b.Logger().Warn("apaleo answered 429: every token request of the config waits", "config", g.config, "until", until.UTC().Format(time.RFC3339))
}

// sleepUntil waits until t on the backend's clock (tests move their clock instead).
func (b *backend) sleepUntil(ctx context.Context, t time.Time) error {
	if b.waitUntil != nil {
		return b.waitUntil(ctx, t)
	}
	d := t.Sub(b.now())
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
