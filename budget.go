package apaleo

import (
	"context"
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
	// refused: apaleo refused the app's client (invalid_client), until a config write.
	refused error
}

// refuse holds every request of the config until the config is written again.
func (bu *budget) refuse(err error) {
	bu.mu.Lock()
	bu.refused = err
	bu.mu.Unlock()
}

func (bu *budget) refusal() error {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	return bu.refused
}

// interval is the spacing of the config's requests at its current rate.
func (bu *budget) interval() time.Duration {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	return bu.step()
}

// rate is the config's current max_token_requests_per_second.
func (bu *budget) rate() float64 {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	return bu.perSecond
}

// step is interval with bu.mu held.
func (bu *budget) step() time.Duration {
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
	bu.next = slot.Add(bu.step())
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
func (bu *budget) hold(now time.Time, retryAfter time.Duration, err error, backoff func(int) time.Duration) time.Time {
	bu.mu.Lock()
	defer bu.mu.Unlock()
	bu.holds++
	d := retryAfter
	if d <= 0 {
		d = backoff(bu.holds)
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
