package apaleo

import (
	"container/heap"
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// refresh.go runs the engine's background work: refresh-ahead, which gets a new token for
// every credential in use before its token stops being fresh, and the request budget of
// each config (one apaleo app), which bounds how fast its token requests go out.

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

// plan makes name due at due (replacing an earlier plan) and starts the goroutine if
// it is not running.
func (s *scheduler) plan(name string, due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if it, ok := s.index[name]; ok {
		it.due = due
		heap.Fix(&s.queue, it.pos)
	} else {
		it := &dueItem{name: name, due: due}
		heap.Push(&s.queue, it)
		s.index[name] = it
	}
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

// runDue starts refresh-ahead for every name that is due, and says how long until the
// next one is.
func (s *scheduler) runDue() (time.Duration, bool) {
	names, next, ok := s.takeDue(s.b.now())
	for _, n := range names {
		s.b.refreshAhead(n)
	}
	return next, ok
}

// budgets are the token request budgets of configs: a token bucket per config with a
// burst of one second's worth.
type budgets struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// limiter returns config's token bucket, or nil for no limit. A changed rate makes a
// new bucket.
func (bs *budgets) limiter(config string, perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if lim, ok := bs.m[config]; ok && lim.Limit() == rate.Limit(perSecond) {
		return lim
	}
	if bs.m == nil {
		bs.m = map[string]*rate.Limiter{}
	}
	lim := rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
	bs.m[config] = lim
	return lim
}

// reserveForReads is what refresh-ahead leaves in the bucket: it yields to reads, so it
// only takes a token when one is there now with a fifth of the burst (at least one)
// still left for readers.
func reserveForReads(lim *rate.Limiter) float64 {
	return math.Ceil(float64(lim.Burst()) / 5)
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// backoffAfter is the wait after n consecutive failures: from backoffBase, doubling,
// capped at backoffMax, with up to a quarter more at random.
func backoffAfter(n int) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	return d + jitter(d/4)
}

// refreshAhead runs when name's plan is due: it refreshes the token of a credential that
// is in use, or lets an idle one be.
func (b *backend) refreshAhead(name string) {
	if !b.canWrite() || b.storage == nil {
		return
	}
	ctx := context.Background()
	cred, err := b.cred(ctx, b.storage, name)
	if err != nil || cred == nil || cred.Token == nil {
		return
	}
	cfg, err := b.config(ctx, b.storage, cred.Config)
	if err != nil || cfg == nil || !cfg.RefreshAhead {
		return
	}
	st := b.state(name)
	now := b.now()
	if !cred.Token.valid(cfg, now) || st.lastRead.Load() < cred.Token.IssuedAt.UnixNano() {
		// Idle (not read during this token's life) or already expired: the next read
		// plans it again.
		st.scheduledFor.Store(0)
		return
	}
	if f := b.failureOf(name); f != nil {
		if f.kind == failUntilConfig || f.kind == failUntilAuthorize {
			st.scheduledFor.Store(0)
			return
		}
		if now.Before(f.next) {
			b.refresher.plan(name, f.next)
			return
		}
	}
	if lim := b.budgets.limiter(cred.Config, cfg.MaxTokenRequestsPerSecond); lim != nil {
		if lim.TokensAt(now) < 1+reserveForReads(lim) {
			// Reads come first: try again once the bucket has refilled a little.
			wait := time.Duration(float64(time.Second) * (1 + reserveForReads(lim)) / cfg.MaxTokenRequestsPerSecond)
			b.refresher.plan(name, now.Add(wait+jitter(wait)))
			return
		}
	}
	b.Logger().Trace("refreshing ahead", "name", name, "expires_at", cred.Token.ExpiresAt)
	b.flights.DoChan(name, func() (any, error) {
		return b.fetchToken(ctx, b.storage, name, triggerRefreshAhead)
	})
}

// planRefresh makes refresh-ahead refresh cred's token, once per token, if its config
// wants it. Called on reads, so only credentials in use are planned.
func (b *backend) planRefresh(name string, st *nameState, cred *credential, cfg *apaleoConfig) {
	t := cred.Token
	if t == nil || !cfg.RefreshAhead {
		return
	}
	issued := t.IssuedAt.UnixNano()
	if st.scheduledFor.Load() == issued || !b.canWrite() {
		return
	}
	st.scheduledFor.Store(issued)
	start, end := refreshWindow(t, cfg)
	due := start.Add(jitter(end.Sub(start)))
	b.refresher.plan(name, due)
	b.Logger().Trace("refresh-ahead planned", "name", name, "due", due, "expires_at", t.ExpiresAt)
}
