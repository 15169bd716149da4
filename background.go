package apaleo

import (
	"container/heap"
	"context"
	"errors"
	"hash/fnv"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// background.go runs the engine's background work: refresh-ahead, which gets a new token for
// every credential in use before its token stops being fresh, and keep-alive, which uses
// the refresh token of an authorized credential nobody reads before apaleo lets it lapse.
// Both go through the config's budget (budget.go): they book a moment of it at most a
// second ahead, and never wait on it or on failure memory, which say when to come back.

// refreshWindow is when refresh-ahead may refresh a token: a moment drawn at random in
// [start, end), so that tokens issued together are not refreshed together, and ending
// well before the token stops being fresh (half the window's length, 2.5 minutes for
// long tokens), so a slow apaleo or a spent budget still leaves readers a fresh token.
// For apaleo's hour-long tokens and the default min_ttl: from minute 40 to 42.5, about
// 1.4 token requests an hour for a credential in use.
func refreshWindow(t *cachedToken, cfg *apaleoConfig) (start, end time.Time) {
	freshEnd := t.freshUntil(cfg)
	lead := min(freshEnd.Sub(t.IssuedAt)/3, 5*time.Minute)
	return freshEnd.Add(-lead), freshEnd.Add(-lead / 2)
}

// scheduler holds the names refresh-ahead has planned, ordered by when they are due.
// One goroutine, owned by the backend, started with the first plan and stopped in Clean,
// works through them.
type scheduler struct {
	b *backend

	mu      sync.Mutex
	queue   dueQueue
	index   map[string]*dueItem
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	running bool
	stopped bool
	// manual keeps the goroutine from starting: tests drive runDue with their clock.
	manual bool
}

type dueItem struct {
	name string
	due  time.Time
	pos  int
}

type dueQueue []*dueItem

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i]; q[i].pos = i; q[j].pos = j }
func (q *dueQueue) Push(x any)        { it := x.(*dueItem); it.pos = len(*q); *q = append(*q, it) }
func (q *dueQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	it.pos = -1
	return it
}

func newScheduler(b *backend) *scheduler {
	return &scheduler{b: b, index: map[string]*dueItem{}, wake: make(chan struct{}, 1)}
}

// plan makes name due at due, unless it is planned earlier already (what runs then
// plans what comes after), and starts the goroutine if it is not running.
func (s *scheduler) plan(name string, due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if it, ok := s.index[name]; ok {
		if !due.Before(it.due) {
			return
		}
		it.due = due
		heap.Fix(&s.queue, it.pos)
	} else {
		it := &dueItem{name: name, due: due}
		heap.Push(&s.queue, it)
		s.index[name] = it
	}
	s.startLocked()
}

// kick wakes the goroutine (starting it if need be) to look at the outages' work.
func (s *scheduler) kick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.startLocked()
	}
}

func (s *scheduler) startLocked() {
	if !s.running && !s.manual {
		s.running = true
		s.stop = make(chan struct{})
		s.done = make(chan struct{})
		go s.loop(s.stop, s.done)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) forget(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.index[name]; ok {
		heap.Remove(&s.queue, it.pos)
		delete(s.index, name)
	}
}

func (s *scheduler) planned(name string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.index[name]; ok {
		return it.due, true
	}
	return time.Time{}, false
}

// nextDue returns the earliest plan's due time.
func (s *scheduler) nextDue() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return time.Time{}, false
	}
	return s.queue[0].due, true
}

// shutdown stops the goroutine and waits for it; plans are dropped.
func (s *scheduler) shutdown() {
	s.mu.Lock()
	s.stopped = true
	running, stop, done := s.running, s.stop, s.done
	s.running = false
	s.queue = nil
	clear(s.index)
	s.mu.Unlock()
	if running {
		close(stop)
		<-done
	}
}

// takeDue pops the names due at now, and says how long until the next one.
func (s *scheduler) takeDue(now time.Time) (names []string, next time.Duration, any bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 && !s.queue[0].due.After(now) {
		it := heap.Pop(&s.queue).(*dueItem)
		delete(s.index, it.name)
		names = append(names, it.name)
	}
	if len(s.queue) == 0 {
		return names, 0, false
	}
	return names, s.queue[0].due.Sub(now), true
}

func (s *scheduler) loop(stop, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, ok := s.runDue()
		wait := time.Hour
		if ok {
			// The clock may be a test's: never sleep long on its word.
			wait = min(max(next, 10*time.Millisecond), time.Minute)
		}
		timer.Reset(wait)
		select {
		case <-stop:
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// runDue starts refresh-ahead for every name that is due and what the outages call for
// (probes, recovery: outage.go), and says how long until the next is.
func (s *scheduler) runDue() (time.Duration, bool) {
	now := s.b.now()
	names, next, ok := s.takeDue(now)
	for _, n := range names {
		s.b.runBackground(n)
	}
	if at, due := s.b.outageWork(now); due && (!ok || at.Sub(now) < next) {
		next, ok = max(at.Sub(now), 0), true
	}
	return next, ok
}

// jitter returns a random duration in [0, d), from the backend's source of randomness
// (the simulator seeds it).
func (b *backend) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(b.random(int64(d)))
}

// backoffAfter is the wait after n consecutive failures: from backoffBase, doubling,
// capped at backoffMax, with up to a quarter more at random.
func (b *backend) backoffAfter(n int) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	return d + b.jitter(d/4)
}

// inUse reports whether the credential's current token was read during its life: a read
// answered it (the read that fetched it included), or came after it was issued.
func inUse(st *nameState, t *cachedToken) bool {
	issued := t.IssuedAt.UnixNano()
	return st.lastServed.Load() == issued || st.lastRead.Load() >= issued
}

// keepAliveDue is from when an authorized credential's refresh token, unused since its
// last token (or its authorization), is to be used so that a sliding lifetime at apaleo
// never lapses: the last tenth of idle_refresh_interval, over which a fleet authorized
// together is spread (keepAlivePlan). ok is false where keep-alive does not apply.
func keepAliveDue(cred *credential, cfg *apaleoConfig) (time.Time, bool) {
	if cred.Kind != kindAuthorized || cred.RefreshToken == "" || cfg.IdleRefreshInterval <= 0 {
		return time.Time{}, false
	}
	used := cred.CreatedAt
	if cred.Token != nil && cred.Token.IssuedAt.After(used) {
		used = cred.Token.IssuedAt
	}
	return used.Add(cfg.IdleRefreshInterval - cfg.IdleRefreshInterval/10), true
}

// keepAlivePlan is a moment in the last tenth of the interval, drawn once for name and
// due (a hash of both, the same on every node and after restarts) and so kept until it
// runs: a fleet authorized together stays spread over that tenth, however often it is
// planned again.
func keepAlivePlan(name string, due time.Time, cfg *apaleoConfig) time.Time {
	span := cfg.IdleRefreshInterval / 10
	if span <= 0 {
		return due
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte(due.UTC().Format(time.RFC3339Nano)))
	return due.Add(time.Duration(h.Sum64() % uint64(span)))
}

// backgroundWork says what name's background work is at now: a trigger to run now, or
// when to look again (zero: nothing planned; a read or a new authorization plans it).
func (b *backend) backgroundWork(name string, st *nameState, cred *credential, cfg *apaleoConfig, now time.Time) (string, time.Time) {
	var next time.Time
	if t := cred.Token; cfg.RefreshAhead && t.valid(cfg, now) && inUse(st, t) {
		start, end := refreshWindow(t, cfg)
		if !now.Before(start) {
			return triggerRefreshAhead, time.Time{}
		}
		next = start.Add(b.jitter(end.Sub(start)))
	}
	if due, ok := keepAliveDue(cred, cfg); ok {
		if !now.Before(due) {
			return triggerKeepAlive, time.Time{}
		}
		due = keepAlivePlan(name, due, cfg)
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return "", next
}

// runBackground runs when name's plan is due: refresh-ahead for a credential in use,
// keep-alive for one whose refresh token idles, else it plans when to look again. Only
// where storage may be written.
func (b *backend) runBackground(name string) {
	if !b.canWrite() || b.storage == nil {
		return
	}
	ctx := context.Background()
	cred, err := b.cred(ctx, b.storage, name)
	if err != nil || cred == nil {
		return
	}
	cfg, err := b.config(ctx, b.storage, cred.Config)
	if err != nil || cfg == nil {
		return
	}
	st := b.peekState(name)
	if st == nil {
		st = &nameState{} // nothing read it on this node: no state to make for it
	}
	now := b.now()
	trigger, next := b.backgroundWork(name, st, cred, cfg, now)
	if trigger == "" {
		if !next.IsZero() {
			b.refresher.plan(name, next)
		}
		return
	}
	if f := b.blocking(name, cred, cfg, now); f != nil {
		switch {
		case f.kind == failOutage:
			// The outage serves it in order of need when apaleo is back (outage.go).
			b.holdBack(cred.Config, backgroundWant(name, trigger, cred))
		case !f.next.IsZero():
			b.refresher.plan(name, f.next.Add(b.jitter(time.Second)))
		}
		return
	}
	at, ok := b.book(cred.Config, cfg, now)
	if !ok {
		b.refresher.plan(name, at)
		return
	}
	b.startBackground(name, cred, cfg, trigger, at)
}

// startBackground starts name's background token request at the budget's moment at.
func (b *backend) startBackground(name string, cred *credential, cfg *apaleoConfig, trigger string, at time.Time) {
	b.Logger().Trace("background token request", "name", name, "trigger", trigger, "at", at)
	b.backgroundRunning.Add(1)
	done := b.flights.DoChan(name, func() (any, error) {
		out, err := b.fetchToken(withBooked(context.Background(), at), b.storage, name, trigger)
		b.afterBackground(name, cred, cfg, out, err)
		return out, err
	})
	go func() {
		<-done
		b.backgroundRunning.Add(-1)
	}()
}

// backgroundWant is what background work held back by an outage needs.
func backgroundWant(name, trigger string, cred *credential) want {
	w := want{name: name, kind: wantIdle}
	if trigger == triggerRefreshAhead && cred.Token != nil {
		w.kind, w.expires = wantCached, cred.Token.ExpiresAt
	}
	return w
}

// afterBackground plans what comes after a background token request: after a success,
// the keep-alive of the new token; after any failure, the attempt the request policy
// names (the budget's moment, the app's hold, failure memory's next attempt).
func (b *backend) afterBackground(name string, cred *credential, cfg *apaleoConfig, out *fetchOutcome, err error) {
	var be *budgetError
	switch {
	case err == nil:
		b.planKeepAlive(name, out.cred, cfg)
	case errors.As(err, &be) && be.outage != nil:
		b.holdBack(cred.Config, backgroundWant(name, triggerRefreshAhead, cred))
	case errors.As(err, &be):
		b.refresher.plan(name, be.at.Add(b.jitter(time.Second)))
	default:
		// Whatever failed (429, 5xx, network), the policy names the next attempt.
		if next, ok := b.nextAttempt(name, cred, cfg, b.now()); ok {
			b.refresher.plan(name, next.Add(b.jitter(time.Second)))
		}
	}
}

// planRefresh makes refresh-ahead refresh cred's token, once per token, if its config
// wants it. Called on reads, so only credentials in use are planned.
func (b *backend) planRefresh(name string, st *nameState, cred *credential, cfg *apaleoConfig) {
	t := cred.Token
	if t == nil {
		return
	}
	issued := t.IssuedAt.UnixNano()
	st.lastServed.Store(issued)
	if !cfg.RefreshAhead || st.scheduledFor.Load() == issued || !b.canWrite() {
		return
	}
	st.scheduledFor.Store(issued)
	start, end := refreshWindow(t, cfg)
	due := start.Add(b.jitter(end.Sub(start)))
	b.refresher.plan(name, due)
	b.Logger().Trace("refresh-ahead planned", "name", name, "due", due, "expires_at", t.ExpiresAt)
}

// forwardUse reports whether a performance standby forwards this read to the active
// node (by answering logical.ErrReadOnly, which Vault forwards): the first read of each
// token on this node, so that the active node, where refresh-ahead runs, sees the token
// in use and plans its refresh. Later reads of the token are served here, where the
// node can hand the read's lease on (standbyLeases); where not (OpenBao), every read.
func (b *backend) forwardUse(st *nameState, cred *credential, cfg *apaleoConfig) bool {
	if b.canWrite() {
		return false
	}
	if !b.standbyLeases {
		return true
	}
	if !cfg.RefreshAhead {
		return false
	}
	issued := cred.Token.IssuedAt.UnixNano()
	return st.forwardedFor.Swap(issued) != issued
}

// planKeepAlive plans the keep-alive of an authorized credential just stored.
func (b *backend) planKeepAlive(name string, cred *credential, cfg *apaleoConfig) {
	if due, ok := keepAliveDue(cred, cfg); ok && b.canWrite() {
		b.refresher.plan(name, keepAlivePlan(name, due, cfg))
	}
}

// planKeepAlives plans the keep-alive of every authorized credential in storage.
func (b *backend) planKeepAlives(ctx context.Context, s logical.Storage) error {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return err
	}
	for _, n := range names {
		cred, err := b.cred(ctx, s, n)
		if err != nil {
			return err
		}
		if cred == nil || cred.Kind != kindAuthorized {
			continue
		}
		cfg, err := b.config(ctx, s, cred.Config)
		if err != nil {
			return err
		}
		if cfg != nil {
			b.planKeepAlive(n, cred, cfg)
		}
	}
	return nil
}
