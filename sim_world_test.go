package apaleo

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// sim_world_test.go is one running schedule of the simulator (sim_test.go): the Vault
// nodes on shared storage, the readers at their cadences and what they check, the
// operator's actions, and the end's checks.

// simWorld is one running schedule: the server, the Vault nodes, the readers.
type simWorld struct {
	t     *testing.T
	sc    *simSchedule
	idp   *simIDP
	store logical.Storage
	start time.Time
	rng   *rand.Rand

	mu       sync.Mutex
	active   *backend
	standby  *backend
	nodes    int
	restarts []time.Time
	dropped  map[string][]time.Time // token-dropping config writes (by app) and new authorizations (by credential)
	secrets  map[string]int
	scopes   map[string]int
	reads    int
	waited   int
	log      io.Writer // the plugin's log at trace level, where debugging asks for it
	// abort: an operator step failed (the schedule cannot go on); reported with the seed.
	abort bool
}

// failf reports a step of the schedule that failed with its seed and stops the schedule
// (never t.Fatal inside the bubble: the scheduler's goroutines would be left blocked and
// the whole run would die of it); the next seed runs.
func (w *simWorld) failf(format string, args ...any) {
	w.t.Helper()
	w.t.Errorf("seed %d: %s (replay: go test -run 'TestSim$' -seed=%d -v)", w.sc.seed, fmt.Sprintf(format, args...), w.sc.seed)
	w.mu.Lock()
	w.abort = true
	w.mu.Unlock()
}

func (w *simWorld) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.abort
}

// cleanNodes stops the nodes' background work (Vault's unmount).
func (w *simWorld) cleanNodes() {
	active, standby := w.nodesNow()
	for _, b := range []*backend{active, standby} {
		if b != nil {
			b.Clean(context.Background())
		}
	}
}

// simStorage tells the standby of every write the active node makes (Vault's
// invalidation of replicated keys).
type simStorage struct {
	logical.Storage
	w *simWorld
}

func (s simStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	err := s.Storage.Put(ctx, e)
	s.w.invalidate(e.Key)
	return err
}

func (s simStorage) Delete(ctx context.Context, key string) error {
	err := s.Storage.Delete(ctx, key)
	s.w.invalidate(key)
	return err
}

func (w *simWorld) invalidate(key string) {
	w.mu.Lock()
	sb := w.standby
	w.mu.Unlock()
	if sb != nil {
		sb.invalidate(context.Background(), key)
	}
}

func (w *simWorld) newNode(standby bool) *backend {
	w.nodes++
	node := w.nodes
	conf := logical.TestBackendConfig()
	conf.Logger = hclog.NewNullLogger()
	if w.log != nil {
		conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: w.log, Name: fmt.Sprint("node", node), TimeFormat: "15:04:05.000000000"})
	}
	if standby {
		conf.System = &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}
		conf.StorageView = w.store
		w.idp.mu.Lock()
		w.idp.standbys[node] = true
		w.idp.mu.Unlock()
	} else {
		conf.StorageView = simStorage{w.store, w}
	}
	b := newBackend()
	var rmu sync.Mutex
	rnd := rand.New(rand.NewPCG(w.sc.seed, uint64(node)))
	b.random = func(n int64) int64 { rmu.Lock(); defer rmu.Unlock(); return rnd.Int64N(n) }
	b.retry.random = b.random
	b.waitUntil = w.turnstile()
	rt := w.idp.transport(node)
	b.newClient = func(s clientSettings, now func() time.Time) (identityServer, error) {
		return &identityClient{settings: s, now: now, httpClient: &http.Client{Transport: rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
	}
	if err := b.Setup(context.Background(), conf); err != nil {
		w.failf("setup of node %d: %v", node, err)
		return nil
	}
	return b
}

// turnstile is the nodes' sleep until a moment (the request policy's waits for a budget
// slot or the end of a 429 hold). Timers of a synctest bubble that fire at one instant
// fire in an order the runtime draws anew each run (runtime/time.go), and a hold ends by
// construction at the very instant the retry timer of the request whose 429 made it
// fires. So each sleep wakes at the first nanosecond after its moment that no other
// sleep or answer of the simulator has taken (simIDP.claim): after every other timer of
// that instant, and in the order they asked, which the seed decides. The server judges
// the budget by the moment asked for, not the one woken at (simIDP.sentAt).
func (w *simWorld) turnstile() func(context.Context, time.Time) error {
	return func(ctx context.Context, t time.Time) error {
		now := time.Now()
		if t.Before(now) {
			return nil
		}
		wake := w.wakeOf(ctx, t) // sim_load_test.go
		timer := time.NewTimer(wake.Sub(now))
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *simWorld) do(b *backend, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	return w.doCtx(simOperator(context.Background()), b, op, path, data)
}

func (w *simWorld) doCtx(ctx context.Context, b *backend, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	s := w.store
	if active, _ := w.nodesNow(); b == active { // a restart swaps the nodes under w.mu
		s = simStorage{w.store, w}
	}
	return b.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Data: data, Storage: s})
}

// vaultRequestTimeout is Vault's default max_request_duration: every request's context.
const vaultRequestTimeout = 90 * time.Second

// readerContext is the context a consumer's read of name comes with: Vault's request
// timeout, and now and then (a choice of the seed, the name and the moment, so replays
// match) a client that hangs up, before Vault routes the read or within 3 s of it.
func (w *simWorld) readerContext(name string) (context.Context, context.CancelFunc) {
	now := time.Now()
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s|%d", w.sc.seed, name, now.UnixNano())
	d := vaultRequestTimeout
	switch x := h.Sum64(); x % 20 {
	case 0:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, cancel
	case 1:
		d = time.Duration(1+x/20%3000) * time.Millisecond
	}
	// The deadline's timer takes an instant of its own (simIDP.claim), as every timer of
	// the simulator does: replays match.
	return context.WithDeadline(context.Background(), w.idp.claim(now.Add(d)))
}

func (w *simWorld) must(op logical.Operation, path string, data map[string]any) *logical.Response {
	resp, err := w.do(w.active, op, path, data)
	if err != nil || resp != nil && resp.IsError() {
		w.failf("%s %s: %v %v", op, path, err, respErr(resp))
		return nil
	}
	return resp
}

func (w *simWorld) configData(a simAppSpec) map[string]any {
	d := map[string]any{"client_id": a.name, "client_secret": fmt.Sprintf("secret-%s-%d", a.name, w.secrets[a.name]),
		"grant_type": a.grant, "identity_url": "https://identity.sim", "max_token_requests_per_second": a.budget,
		"idle_refresh_interval": a.idle.String(), "scopes": fmt.Sprintf("reservations.read,s%d", w.scopes[a.name])}
	if a.grant == grantAuthorizationCode {
		d["redirect_uri"] = "https://vault.sim/v1/apaleo/callback"
	}
	return d
}

// setup registers the apps at the server and in Vault, and imports the authorized
// credentials (the server made their refresh tokens), with no faults yet. false: a step
// failed (reported).
func (w *simWorld) setup() bool {
	for _, a := range w.sc.apps {
		w.idp.apps[a.name] = &simApp{id: a.name, secrets: map[string]bool{fmt.Sprintf("secret-%s-0", a.name): true},
			limit: a.limit, budget: a.budget, lifetime: a.lifetime}
		w.must(logical.CreateOperation, "config/"+a.name, w.configData(a))
	}
	for _, c := range w.sc.creds {
		a := w.sc.app(c.app)
		switch {
		case a.grant == grantAuthorizationCode:
			w.must(logical.CreateOperation, "creds/"+c.name, map[string]any{"config": a.name, "refresh_token": w.idp.issueRefresh(a.name, c.name)})
		case c.name != a.name:
			w.must(logical.CreateOperation, "config/"+a.name+"/narrowed/"+c.name, map[string]any{"scopes": "reservations.read"})
		}
	}
	return !w.failed()
}

func (w *simWorld) nodesNow() (*backend, *backend) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active, w.standby
}

// after is time.After at an instant of its own (simIDP.claim): a 429's HTTP date ends a
// hold at a whole second, where the periodic run and readers' cadences fall too, and
// synctest fires the timers of one instant in an order it draws anew each run.
func (w *simWorld) after(d time.Duration) <-chan time.Time {
	now := time.Now()
	return time.After(w.idp.claim(now.Add(d)).Sub(now))
}

// periodic is Vault's rollback manager: the periodic function about once a minute.
func (w *simWorld) periodic(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.after(time.Minute):
		}
		a, _ := w.nodesNow()
		_ = a.periodic(ctx, &logical.Request{Storage: simStorage{w.store, w}})
	}
}

// simRead is what a reader saw.
type simRead struct {
	at, issued, expires time.Time
	took                time.Duration
	err                 error
	gaveUp              bool // the reader's context ended (a hang-up or Vault's timeout)
}

// read reads creds/<name> as Vault routes it: on a standby when there is one (half the
// time), forwarded to the active node when the standby says it cannot serve it.
func (w *simWorld) read(name string, rng *rand.Rand) simRead {
	return w.readCtx(context.Background(), name, rng)
}

func (w *simWorld) readCtx(ctx context.Context, name string, rng *rand.Rand) simRead {
	active, standby := w.nodesNow()
	node := active
	if standby != nil && rng.IntN(2) == 0 {
		node = standby
	}
	r := simRead{at: time.Now()}
	defer w.idp.load.noteRead(name, &r)() // sim_load_test.go
	resp, err := w.doCtx(ctx, node, logical.ReadOperation, "creds/"+name, nil)
	if errors.Is(err, logical.ErrReadOnly) {
		resp, err = w.doCtx(ctx, active, logical.ReadOperation, "creds/"+name, nil)
	}
	r.took = time.Since(r.at)
	r.gaveUp = ctx.Err() != nil
	switch {
	case err != nil:
		r.err = err
	case resp == nil:
		r.err = errors.New("no response")
	case resp.IsError():
		r.err = resp.Error()
	default:
		exp, perr := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
		if perr != nil {
			r.err = perr
		}
		r.expires = exp
		r.issued = w.checkServed(name, resp, exp)
	}
	return r
}

func (w *simWorld) rngIntN(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.IntN(n)
}

// reader reads one credential at its consumer's cadence and checks that a consumer that
// keeps it in use is served without waiting whenever apaleo was healthy.
func (w *simWorld) reader(ctx context.Context, c simCredSpec) {
	app := w.sc.app(c.app)
	h := fnv.New64a()
	h.Write([]byte(c.name))
	rng := rand.New(rand.NewPCG(w.sc.seed, h.Sum64())) // the reader's own: replays match
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-w.after(max(d, time.Second)):
			return true
		}
	}
	if !sleep(c.start) {
		return
	}
	var prev *simRead
	for {
		rctx, cancel := w.readerContext(c.name)
		r := w.readCtx(rctx, c.name, rng)
		cancel()
		if !r.expires.IsZero() && r.issued.IsZero() {
			r.issued = r.expires.Add(-app.lifetime)
		}
		w.checkRead(c, app, prev, &r)
		if r.err == nil && !r.gaveUp {
			prev = &r
		}
		var next time.Duration
		switch c.reader {
		case "loop", "eso", "human":
			next = c.every
		case "agent", "vso":
			lo, hi := 0.80, 0.90
			if c.reader == "vso" {
				lo, hi = 0.67, 0.77
			}
			next = time.Minute
			if r.err == nil {
				// Agent renews the lease, then reads again at 80-90 % of the token's life;
				// VSO re-reads at 67-77 % of the lease it got.
				base, life := r.issued, r.expires.Sub(r.issued) // the app's lifetime, or the plugin's cap of a longer one
				if c.reader == "vso" {
					base, life = r.at, r.expires.Sub(r.at)
				}
				next = time.Until(base.Add(time.Duration((lo + (hi-lo)*rng.Float64()) * float64(life))))
			}
		}
		if !sleep(next) {
			return
		}
	}
}

// checkRead: a reader that read the credential's previous token re-reads before that
// token expires; if apaleo was healthy meanwhile (transient trouble aside: at most two
// short faults, over a minute before the token stopped being fresh), nothing restarted,
// no config write dropped the tokens and apaleo never refused the credential, the read is
// served at once.
func (w *simWorld) checkRead(c simCredSpec, app simAppSpec, prev, r *simRead) {
	if r.err != nil && strings.Contains(r.err.Error(), "max_token_requests_per_second") {
		// A request the budget cut after apaleo failed it answers that failure.
		w.idp.mu.Lock()
		if at, ok := w.idp.failed[c.name]; ok && !at.Before(r.at) && !at.After(r.at.Add(r.took)) {
			w.idp.violate("creds/%s: a read answered a bare budget error after apaleo failed its request: %v", c.name, r.err)
		}
		w.idp.mu.Unlock()
	}
	if r.gaveUp {
		return // the consumer left; what the plugin sent for it, the server checks
	}
	w.mu.Lock()
	w.reads++
	if r.took > 0 {
		w.waited++
	}
	restarted := false
	if prev != nil {
		for _, at := range w.restarts {
			restarted = restarted || !at.Before(prev.at) && !at.After(r.at)
		}
		for _, at := range append(w.dropped[app.name], w.dropped["creds/"+c.name]...) {
			restarted = restarted || !at.Before(prev.issued) && !at.After(r.at)
		}
	}
	w.mu.Unlock()
	if prev == nil {
		return
	}
	// What refresh-ahead guarantees: the token after prev's is fetched from the start of
	// prev's refresh window on, and is fresh for as long as prev was.
	fresh := app.lifetime - min(15*time.Minute, app.lifetime/2)
	covered := prev.issued.Add(2*fresh - min(fresh/3, 5*time.Minute))
	if restarted || c.reader == "human" || !r.at.Before(prev.expires.Add(-expirySkew)) || !r.at.Before(covered) {
		return
	}
	if r.took == 0 && r.err == nil {
		return
	}
	w.idp.mu.Lock()
	refused := w.idp.refused[c.name]
	var spans []simTrouble
	for _, tr := range w.idp.trouble[app.name] {
		if !tr.to.Before(prev.issued) && !tr.from.After(r.at) {
			spans = append(spans, tr)
		}
	}
	w.idp.mu.Unlock()
	if refused {
		return
	}
	cutoff := prev.expires.Add(-min(15*time.Minute, app.lifetime/2)) // the token stops being fresh
	if r.at.Before(cutoff) {
		cutoff = r.at
	}
	var total time.Duration
	for _, tr := range spans {
		total += tr.to.Sub(tr.from)
		if tr.to.After(cutoff.Add(-time.Minute)) {
			return
		}
	}
	if len(spans) > 2 || total > 30*time.Second {
		return
	}
	w.idp.mu.Lock()
	var what []string
	for _, tr := range spans {
		what = append(what, tr.what)
	}
	w.idp.violate("creds/%s (%s reader): a read waited %s (error: %v) though its previous token (issued %s, read %s) was in use and apaleo healthy (short faults: %v)",
		c.name, c.reader, r.took.Round(time.Millisecond), r.err, prev.issued.Sub(w.start).Round(time.Second), prev.at.Sub(w.start).Round(time.Second), what)
	w.idp.mu.Unlock()
}

// apply carries out one event of the schedule.
func (w *simWorld) apply(e simEvent) {
	if w.applyVault(e) {
		return
	}
	now := time.Now()
	s := w.idp
	switch e.kind {
	case "outage":
		s.mu.Lock()
		s.outages[e.app] = simOutage{until: now.Add(e.dur), kind: e.mode}
		if e.app == "" {
			for _, a := range w.sc.apps {
				s.addTrouble(a.name, "outage", now, now.Add(e.dur))
			}
		} else {
			s.addTrouble(e.app, "outage", now, now.Add(e.dur))
		}
		s.mu.Unlock()
	case "burst":
		s.mu.Lock()
		s.bursts[e.app] = simBurst{until: now.Add(e.dur), retryAfter: e.ra, delay: time.Duration(w.rngIntN(1000)) * time.Millisecond, form: e.form}
		s.addTrouble(e.app, "429", now, now.Add(e.dur+e.ra))
		s.mu.Unlock()
	case "revoke":
		s.revokeCred(e.cred)
	case "reauthorize":
		// The operator deletes the credential (its refresh token is revoked) and imports
		// a new authorization of the hotel under the same name.
		var app string
		for _, c := range w.sc.creds {
			if c.name == e.cred {
				app = c.app
			}
		}
		if w.must(logical.DeleteOperation, "creds/"+e.cred, nil); w.failed() {
			return
		}
		// Its first token is nobody's yet: a reader of the old one may wait for the next.
		w.mu.Lock()
		w.dropped["creds/"+e.cred] = append(w.dropped["creds/"+e.cred], now)
		w.mu.Unlock()
		rt := s.issueRefresh(app, e.cred)
		s.mu.Lock()
		s.refused[e.cred] = false // a new authorization
		s.mu.Unlock()
		if resp, err := w.do(w.active, logical.CreateOperation, "creds/"+e.cred, map[string]any{"config": app, "refresh_token": rt}); err != nil || resp != nil && resp.IsError() {
			// apaleo may fail the import (an outage, a 429): the credential is gone then.
			s.mu.Lock()
			s.refused[e.cred] = true
			s.mu.Unlock()
		}
	case "rotate", "rotate-abrupt":
		// A client-secret rotation: apaleo issues a new secret; the operator writes it to
		// Vault, and apaleo drops the old one (at once, when abrupt, before Vault has it).
		a := w.sc.app(e.app)
		old := fmt.Sprintf("secret-%s-%d", a.name, w.secrets[a.name])
		w.secrets[a.name]++
		s.mu.Lock()
		s.apps[a.name].secrets[fmt.Sprintf("secret-%s-%d", a.name, w.secrets[a.name])] = true
		if e.kind == "rotate-abrupt" {
			delete(s.apps[a.name].secrets, old)
			s.addTrouble(a.name, "invalid_client", now, now.Add(e.dur))
		}
		s.mu.Unlock()
		if e.kind == "rotate-abrupt" {
			time.Sleep(e.dur)
		}
		w.must(logical.UpdateOperation, "config/"+a.name, map[string]any{"client_secret": fmt.Sprintf("secret-%s-%d", a.name, w.secrets[a.name])})
		s.configWritten(a.name)
		s.mu.Lock()
		delete(s.apps[a.name].secrets, old)
		s.mu.Unlock()
	case "stampede":
		w.apply(simEvent{kind: "scopes", app: e.app})
		if e.ra > 0 {
			s.mu.Lock()
			s.bursts[e.app] = simBurst{until: now.Add(e.dur), retryAfter: e.ra, delay: 500 * time.Millisecond}
			s.addTrouble(e.app, "429", now, now.Add(e.dur+e.ra))
			s.mu.Unlock()
		}
		// The reads come in a seeded order a nanosecond apart: at once for the plugin (its
		// budget, locks and flights see them together), but each starts after the one
		// before has run as far as it can, so their order is the seed's, not the Go
		// scheduler's.
		var wg sync.WaitGroup
		var names []int
		for i, c := range w.sc.creds {
			if c.app == e.app {
				names = append(names, i)
			}
		}
		w.mu.Lock()
		w.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		w.mu.Unlock()
		for _, i := range names {
			rng := rand.New(rand.NewPCG(w.sc.seed, uint64(i)))
			wg.Go(func() {
				ctx, cancel := w.readerContext(w.sc.creds[i].name)
				defer cancel()
				w.readCtx(ctx, w.sc.creds[i].name, rng)
			})
			time.Sleep(time.Nanosecond)
		}
		wg.Wait()
	case "scopes":
		// A change of scopes drops the app's cached tokens (a new grant).
		a := w.sc.app(e.app)
		w.scopes[a.name]++
		w.mu.Lock()
		w.dropped[a.name] = append(w.dropped[a.name], now)
		w.mu.Unlock()
		w.must(logical.UpdateOperation, "config/"+a.name, map[string]any{"scopes": fmt.Sprintf("reservations.read,s%d", w.scopes[a.name])})
		s.configWritten(a.name)
	case "restart":
		// Vault restarts the plugin: a new backend on the same storage, and the standby's too.
		w.vaultQuiesce()
		w.mu.Lock()
		old, oldStandby := w.active, w.standby
		w.restarts = append(w.restarts, now)
		w.mu.Unlock()
		old.Clean(context.Background())
		if oldStandby != nil {
			oldStandby.Clean(context.Background())
		}
		a := w.newNode(false)
		var sb *backend
		if oldStandby != nil {
			sb = w.newNode(true)
		}
		if a == nil || oldStandby != nil && sb == nil {
			return // reported
		}
		w.mu.Lock()
		w.active, w.standby = a, sb
		w.restarts = append(w.restarts, time.Now())
		w.mu.Unlock()
	default:
		w.applyLoad(e) // sim_load_test.go
	}
}

// finish lets apaleo heal, then checks every credential: none that apaleo never refused
// is in needs_authorization, and each such one is readable, idle ones included (the
// keep-alive kept their refresh tokens alive).
func (w *simWorld) finish() {
	s := w.idp
	s.mu.Lock()
	s.faultRate = 0
	clear(s.outages)
	clear(s.bursts)
	for _, a := range s.apps {
		a.limit = 0
	}
	s.mu.Unlock()
	time.Sleep(time.Hour + 10*time.Minute) // holds and backoffs end
	resp := w.must(logical.ListOperation, "creds/", nil)
	if resp == nil {
		return
	}
	infos, _ := resp.Data["key_info"].(map[string]any)
	for _, c := range w.sc.creds {
		s.mu.Lock()
		refused := s.refused[c.name]
		s.mu.Unlock()
		if refused {
			continue
		}
		info, _ := infos[c.name].(map[string]any)
		if info["state"] == stateNeedsAuthorization {
			s.mu.Lock()
			s.violate("creds/%s ends in needs_authorization though apaleo never refused it: %v", c.name, info["last_error"])
			s.mu.Unlock()
			continue
		}
		r := w.read(c.name, w.rng)
		s.mu.Lock()
		refused = s.refused[c.name] // the read itself may have found the token spent by a lost answer
		s.mu.Unlock()
		if r.err != nil && !refused {
			s.mu.Lock()
			s.violate("creds/%s (%s reader) is not readable at the end, apaleo healthy: %v", c.name, c.reader, r.err)
			s.mu.Unlock()
		}
	}
}
