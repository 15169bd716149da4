package apaleo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// outage.go: an outage of apaleo is the app's, like a 429. After outageAfter failures in
// a row of one config's token requests that say apaleo is not answering (a 5xx, a
// timeout, a refused or dropped connection, an unreadable answer; never a 4xx about one
// credential, never a 429), the config is down: none of its token requests goes out but
// one probe at a time, a real token request for the name in most need. The first
// answered probe ends it, and the names it held back are served in order of need while
// the budget ramps up (budget.go). The request policy (policy.go) asks it; the
// scheduler (background.go) sends the probes and the recovery.

// outageAfter failures in a row take a config down.
const outageAfter = 5

// probeDelays are the waits before the first probes of an outage, each after the one
// before (the first after the failure that took the config down); then every
// probeSteady, ±20 %.
var probeDelays = []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}

const probeSteady = 30 * time.Second

// outage is one config's view of apaleo's health. Its lock is never held across a
// network call.
type outage struct {
	mu       sync.Mutex
	failures int       // failures in a row that say apaleo is not answering
	first    time.Time // the first of them
	last     error     // the last of them
	down     bool
	since    time.Time // the first failure of the run that took the config down
	probes   int       // probes sent in this outage
	next     time.Time // when the next probe goes
	probing  string    // the name whose probe is under way
	count    int       // outages so far
	wants    map[string]want
	// After an outage: the names it held back, in order of need; queued holds each one's
	// place (popped counts those served), so a read of one knows how many are ahead.
	queue  []want
	queued map[string]int
	popped int
	back   time.Time // when apaleo answered again
	rate   float64   // the budget's, for the wait a read is told
}

// wantKind is what a name held back by an outage needs, most urgent first.
type wantKind int

const (
	wantReader wantKind = iota // its readers wait without a valid token
	wantCached                 // refresh-ahead of a cached token in use was held back
	wantIdle                   // keep-alive of an idle refresh token was held back
)

type want struct {
	name    string
	kind    wantKind
	since   time.Time // the first read held back
	read    time.Time // the last read held back
	expires time.Time // of the cached token
}

// trigger is the token request that serves a want, background work's own: one attempt,
// and nothing sent where the name no longer needs it.
func (w want) trigger() string {
	if w.kind == wantIdle {
		return triggerKeepAlive
	}
	return triggerRefreshAhead
}

// outageSign says what one attempt's outcome tells of apaleo's health: failed, it is
// not answering; answered, it is (a token, a 4xx about one credential, a 429); neither,
// nothing (nothing sent, a cancelled request, an untrusted certificate).
func outageSign(err error) (failed, answered bool) {
	if err == nil {
		return false, true
	}
	var ue *upstreamError
	if !errors.As(err, &ue) {
		return false, false
	}
	switch {
	case ue.Status == http.StatusTooManyRequests:
		return false, true
	case ue.Status >= 500, ue.Timeout, ue.Unreadable:
		return true, false
	case ue.Answered:
		return false, true
	}
	return ue.Temporary, false // a refused or dropped connection
}

// observe notes one attempt's outcome; it says whether the config went down or came
// back with it.
func (o *outage) observe(now time.Time, err error) (wentDown, cameBack bool) {
	failed, answered := outageSign(err)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case failed:
		if o.failures == 0 {
			o.first = now
		}
		o.failures++
		o.last = err
		if !o.down && o.failures >= outageAfter {
			o.down, o.since, o.probes, o.count = true, o.first, 0, o.count+1
			o.next = now.Add(probeDelays[0])
			o.queue = nil
			return true, false
		}
	case answered:
		o.failures = 0
		if o.down {
			o.down, o.back = false, now
			o.queue = o.needOrder()
			o.queued, o.popped = make(map[string]int, len(o.queue)), 0
			for i, w := range o.queue {
				o.queued[w.name] = i
			}
			o.wants = nil
			return false, true
		}
	}
	return false, false
}

// state is what config/<name> read shows: down, since when, and the next probe.
func (o *outage) state() (down bool, since, next time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.down, o.since, o.next
}

// failure is what the outage answers a request of name at now, nil where it may go: the
// probe's own name goes.
func (o *outage) failure(config, name string, now time.Time) *failure {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down {
		return o.queuedFailure(config, name, now)
	}
	if name != "" && name == o.probing {
		return nil
	}
	next := o.next
	if !next.After(now) {
		next = now.Add(time.Second) // a probe is due: it goes, and its answer says more
	}
	return &failure{config: config, kind: failOutage, at: o.since, next: next, attempts: o.failures,
		err: logical.CodedError(http.StatusServiceUnavailable, fmt.Sprintf(
			"apaleo's identity server is down for config/%s since %s (%d token requests of the app failed in a row, the last: %v): none of the app's token requests goes out but one probe at a time",
			config, o.since.UTC().Format(time.RFC3339), o.failures, o.last))}
}

// queuedFailure answers a request of a name the last outage held back and the recovery
// has not served yet: it waits its turn in order of need, so that the readers who read
// later do not push it back; nil for any other name. The lock is held.
func (o *outage) queuedFailure(config, name string, now time.Time) *failure {
	i, ok := o.queued[name]
	if name == "" || !ok {
		return nil
	}
	ahead := i - o.popped
	rate := o.rate
	if rate <= 0 {
		rate = 1000
	}
	next := now.Add(time.Second + time.Duration(float64(ahead)/rate*float64(time.Second)))
	return &failure{config: config, kind: failOutage, at: o.back, next: next,
		err: logical.CodedError(http.StatusServiceUnavailable, fmt.Sprintf(
			"apaleo's identity server answers config/%s again since %s after an outage: the %d names it held back get their tokens in order of need (readers waiting without a valid token first), and %d are ahead of creds/%s",
			config, o.back.UTC().Format(time.RFC3339), len(o.queue)+o.popped, ahead, name))}
}

// admit is the outage's answer at the moment an attempt is sent: nil where it may go (the
// config is up, or this is the probe).
func (o *outage) admit(config string, now time.Time, probe, background bool) error {
	if probe {
		return nil
	}
	f := o.failure(config, "", now)
	if f == nil {
		return nil
	}
	return &budgetError{config: config, at: f.next, outage: f.err, background: background}
}

// hold notes a name the outage held back, with what it needs.
func (o *outage) hold(w want) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down {
		return
	}
	if o.wants == nil {
		o.wants = map[string]want{}
	}
	prev, ok := o.wants[w.name]
	switch {
	case !ok || w.kind < prev.kind:
	case w.kind == prev.kind && w.kind == wantReader:
		w.since = prev.since
	default:
		return
	}
	o.wants[w.name] = w
}

// probeCandidates are the names a probe may be for, most in need first: the readers who
// have waited longest, then the cached tokens that expire soonest, then idle ones.
func (o *outage) probeCandidates() []want {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]want, 0, len(o.wants))
	for _, w := range o.wants {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b want) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), a.since.Compare(b.since), a.expires.Compare(b.expires), cmp.Compare(a.name, b.name))
	})
	return out
}

// needOrder is the order of need after an outage: names whose readers wait without a
// valid token (the most recently read first), then cached tokens by expiry, idle names
// last. The probe's own name was served by it.
func (o *outage) needOrder() []want {
	out := make([]want, 0, len(o.wants))
	for _, w := range o.wants {
		if w.name != o.probing {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b want) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), b.read.Compare(a.read), a.expires.Compare(b.expires), cmp.Compare(a.name, b.name))
	})
	return out
}

// probeDue reports whether a probe may start at now: down, due, none under way.
func (o *outage) probeDue(now time.Time) (due bool, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down || o.probing != "" {
		return false, time.Time{}
	}
	return !now.Before(o.next), o.next
}

// startProbe marks name's probe under way, unless the outage ended or another began.
func (o *outage) startProbe(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down || o.probing != "" {
		return false
	}
	o.probing = name // it stays wanted: a failed probe leaves it in need
	return true
}

// probed ends the probe under way (or a turn with no name to probe) and, while still
// down, sets when the next goes: 5 s, 10 s, 20 s, then 30 s ±20 % after this one.
func (o *outage) probed(now time.Time, jitter func(time.Duration) time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.probing = ""
	if !o.down {
		return
	}
	o.probes++
	d := probeSteady - probeSteady/5 + jitter(2*probeSteady/5)
	if o.probes < len(probeDelays) {
		d = probeDelays[o.probes]
	}
	o.next = now.Add(d)
}

func (o *outage) setRate(r float64) {
	o.mu.Lock()
	o.rate = r
	o.mu.Unlock()
}

// nextInQueue returns the name next in need after an outage, if any.
func (o *outage) nextInQueue() (want, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down || len(o.queue) == 0 {
		return want{}, false
	}
	return o.queue[0], true
}

func (o *outage) popQueue() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) > 0 {
		delete(o.queued, o.queue[0].name)
		o.queue = o.queue[1:]
		o.popped++
	}
	if len(o.queue) == 0 {
		o.queue, o.queued = nil, nil
	}
}

// forget drops name from what the outage holds back (deleted, or moved to another config).
func (o *outage) forget(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.wants, name)
}

// The engine's side: the policy asks outageOf, the scheduler runs outageWork.

// outageOf returns config's outage state, if its budget exists (a request was made).
func (b *backend) outageOf(config string) *outage {
	if bu := b.budgets.peek(config); bu != nil {
		return &bu.outage
	}
	return nil
}

// outageFailure is the outage's answer to a request of name, nil where none holds.
func (b *backend) outageFailure(name, config string, now time.Time) *failure {
	if o := b.outageOf(config); o != nil {
		return o.failure(config, name, now)
	}
	return nil
}

// holdBack notes a token request the outage held back: counted, and remembered with what
// the name needs, for the probe's choice and the order of recovery.
func (b *backend) holdBack(config string, w want) {
	if o := b.outageOf(config); o != nil {
		o.hold(w)
		b.metrics.outageHeld(config)
	}
}

type probeKey struct{}

// withProbe marks the token request a probe: the one request of a config that is down
// that may go out, one attempt.
func withProbe(ctx context.Context) context.Context {
	return context.WithValue(ctx, probeKey{}, true)
}

func isProbe(ctx context.Context) bool {
	p, _ := ctx.Value(probeKey{}).(bool)
	return p
}

// outageWork sends what the outages of the configs call for at now: a probe where one is
// due, else, after an outage, the next names in order of need at the ramped budget. It
// says when to look again.
func (b *backend) outageWork(now time.Time) (time.Time, bool) {
	if !b.canWrite() || b.storage == nil {
		return time.Time{}, false
	}
	var next time.Time
	for config, bu := range b.budgets.all() {
		o := &bu.outage
		at, ok := b.probeTurn(config, o, now)
		if !ok {
			at, ok = b.recoveryTurn(config, o, now)
		}
		if ok && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next, !next.IsZero()
}

// probeTurn starts a probe of config if one is due, for the name in most need that its
// own failure memory lets go; it says when the next is due.
func (b *backend) probeTurn(config string, o *outage, now time.Time) (time.Time, bool) {
	due, at := o.probeDue(now)
	if !due {
		return at, !at.IsZero()
	}
	ctx := context.Background()
	name, ok := "", false
	for _, w := range o.probeCandidates() {
		cred, err := b.cred(ctx, b.storage, w.name)
		if err != nil || cred == nil || cred.Config != config {
			o.forget(w.name)
			continue
		}
		if f := b.nameFailure(w.name, cred); f == nil || !f.blocks(now) {
			name, ok = w.name, true
			break
		}
	}
	if !ok {
		name, ok = b.soonestExpiring(config, now)
	}
	if !ok || !o.startProbe(name) {
		// Nothing of the config to probe with: the turn passes.
		o.probed(now, b.jitter)
		_, at = o.probeDue(now)
		return at, !at.IsZero()
	}
	b.Logger().Info("apaleo is down for the config: probing", "config", config, "name", name)
	b.backgroundRunning.Add(1)
	done := b.flights.DoChan(name, func() (any, error) {
		out, err := b.fetchToken(withProbe(ctx), b.storage, name, triggerProbe)
		b.probeFailed(name)
		return out, err
	})
	go func() {
		<-done
		b.backgroundRunning.Add(-1)
		o.probed(b.now(), b.jitter)
		b.refresher.kick()
	}()
	return time.Time{}, false
}

// soonestExpiring is the name of config in memory whose cached token expires soonest
// (none first) and whose own failure memory lets it ask: the probe when no reader waits,
// so that an outage of an app nobody reads ends too.
func (b *backend) soonestExpiring(config string, now time.Time) (string, bool) {
	var best string
	var bestExp time.Time
	found := false
	b.creds.each(func(name string, cred *credential) {
		if cred.Config != config {
			return
		}
		if f := b.nameFailure(name, cred); f != nil && f.blocks(now) {
			return
		}
		var exp time.Time
		if cred.Token != nil {
			exp = cred.Token.ExpiresAt
		}
		if !found || exp.Before(bestExp) || (exp.Equal(bestExp) && name < best) {
			best, bestExp, found = name, exp, true
		}
	})
	return best, found
}

// probeFailed keeps a failed probe's failure memory at the first backoff: the failure is
// the app's, which the probes' schedule paces, not the name's, and the name in most need
// may then be probed again (its refresh token at most once a probe, never faster than
// failure memory's next attempt) and served as soon as apaleo is back.
func (b *backend) probeFailed(name string) {
	f := b.failureOf(name)
	if f == nil || f.kind != failBackoff || f.attempts <= 1 {
		return
	}
	capped := *f
	capped.attempts = 1
	if first := f.at.Add(b.backoffAfter(1)); first.Before(f.next) {
		capped.next = first
	}
	b.setFailure(name, &capped)
}

// recoveryTurn serves the names an outage held back, in order of need, each at a moment
// the ramping budget books for it (background work's booking: reads go first); it says
// when to come back.
func (b *backend) recoveryTurn(config string, o *outage, now time.Time) (time.Time, bool) {
	ctx := context.Background()
	for {
		w, ok := o.nextInQueue()
		if !ok {
			return time.Time{}, false
		}
		cred, err := b.cred(ctx, b.storage, w.name)
		if err != nil || cred == nil || cred.Config != config {
			o.popQueue()
			continue
		}
		cfg, err := b.config(ctx, b.storage, config)
		if err != nil || cfg == nil {
			return time.Time{}, false
		}
		if !b.needsToken(cred, cfg, w.trigger(), now) || b.blockingName(w.name, cred, cfg, now) != nil {
			o.popQueue() // served meanwhile, or its own failure memory plans it
			continue
		}
		at, ok := b.book(config, cfg, now)
		if !ok {
			return at, true
		}
		o.popQueue()
		b.startBackground(w.name, cred, cfg, w.trigger(), at)
	}
}

// observeOutage tells config's outage of one attempt's outcome (the attempt gate does):
// going down wakes the scheduler for the probes; coming back starts the budget's ramp
// and the recovery in order of need.
func (b *backend) observeOutage(config string, bu *budget, err error) {
	now := b.now()
	down, back := bu.outage.observe(now, err)
	switch {
	case down:
		b.metrics.outageBegan(config)
		b.Logger().Warn("apaleo is down for the config: none of its token requests goes out but one probe at a time", "config", config, "error", err)
		b.refresher.kick()
	case back:
		bu.rampUp(now)
		bu.outage.setRate(bu.rate())
		b.Logger().Info("apaleo answers the config again: the names the outage held back are served in order of need", "config", config)
		b.refresher.kick()
	}
}

// upstreamFields adds what config/<name> read says of apaleo's health for the app, as
// this node sees it: upstream ok, or down with down_since and next_probe_at.
func (b *backend) upstreamFields(config string, data map[string]any) {
	data["upstream"] = "ok"
	o := b.outageOf(config)
	if o == nil {
		return
	}
	if down, since, next := o.state(); down {
		data["upstream"] = "down"
		data["down_since"] = since.UTC().Format(time.RFC3339)
		data["next_probe_at"] = next.UTC().Format(time.RFC3339)
	}
}
