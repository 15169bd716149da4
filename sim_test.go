package apaleo

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// sim_test.go is a deterministic simulation of apaleo and the plugin's consumers, after
// FoundationDB's and TigerBeetle's: a seed draws a schedule (apps, credentials, readers
// at every real cadence, faults, config writes, restarts, a performance standby), the
// whole run goes in virtual time (testing/synctest: a simulated week in well under a
// second), and the invariants are checked at the simulated identity server
// (sim_idp_test.go) and at the readers, never from the plugin's own counts.
//
//	go test -run TestSim                       a few schedules (every go test)
//	go test -run TestSim -sim.n=2000           many (make sim)
//	go test -run TestSim -seed=N -v            replay one, printing its schedule
//	go test -run TestSim -sim.n=2000 -sim.twice each twice: the traces must agree (make sim-replay)

var (
	simSeed  = flag.Uint64("seed", 0, "TestSim: replay this one schedule")
	simN     = flag.Int("sim.n", 20, "TestSim: how many schedules to run")
	simFirst = flag.Uint64("sim.first", 1, "TestSim: the first seed of the run")
	simFails = flag.Int("sim.maxfail", 5, "TestSim: stop after this many failing schedules")

	simDates       = flag.Bool("sim.dates", false, "TestSim: apaleo's 429s may say Retry-After as an HTTP date (replays are not exact then: retryAfterForms)")
	simTwice       = flag.Bool("sim.twice", false, "TestSim: run each schedule twice and fail where the two traces differ")
	simReplayN     = flag.Int("sim.replay", 16, "TestSimReplay: how many seeds to run twice (8 with -short; make sim-replay: every schedule of make sim)")
	simReplayRuns  = flag.Int("sim.replay.runs", 2, "TestSimReplay: debugging: log this many runs' digests")
	simReplayLog   = flag.String("sim.replay.log", "", "TestSimReplay: debugging: write each run's plugin log to this path + digest")
	simReplayFirst = flag.Uint64("sim.replay.first", 1, "TestSimReplay: the first of them")
)

// simRegressions are seeds that once failed: each runs in every go test.
//
//	1170, 1296, 1796    a reader of a re-authorized credential (the simulator's own rule)
//	10208, 10831, 11358 a 429 with a shorter Retry-After let its request through another's hold
//	10855, 11954        a scope write cleared a lost answer's failure memory: sent at once again
//	1718, 790           a refusal storage would not take was forgotten: sent again after a restart
//	                    (1718 found it; 790 reaches it in the schedules since the load's events)
var simRegressions = []uint64{1170, 1296, 1796, 10208, 10831, 11358, 10855, 11954, 1718, 790}

func TestSim(t *testing.T) {
	seeds := []uint64{}
	if *simSeed != 0 {
		seeds = append(seeds, *simSeed)
	} else {
		for i := range *simN {
			seeds = append(seeds, *simFirst+uint64(i))
		}
		if *simFirst == 1 {
			seeds = append(seeds, simRegressions...)
		}
	}
	// One P: goroutines that wake at the same virtual instant run in the same order in
	// every replay.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	failed := 0
	for _, seed := range seeds {
		ok := t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if *simTwice {
				replaysExactly(t, seed)
				return
			}
			synctest.Test(t, func(t *testing.T) { runSim(t, seed, simOptions{verbose: *simSeed != 0}) })
		})
		if !ok {
			if failed++; failed >= *simFails && *simSeed == 0 {
				t.Fatalf("stopping after %d failing schedules", failed)
			}
		}
	}
}

// simSchedule is what a seed draws.
type simSchedule struct {
	seed     uint64
	duration time.Duration
	sliding  time.Duration
	apps     []simAppSpec
	creds    []simCredSpec
	events   []simEvent
	standby  bool
	// per-request faults
	faultRate  float64
	faultKinds []simFault
}

type simAppSpec struct {
	name, grant   string
	budget, limit float64
	lifetime      time.Duration
	idle          time.Duration
}

type simCredSpec struct {
	name, app string
	reader    string // loop, agent, vso, eso, human, idle
	every     time.Duration
	start     time.Duration
}

type simEvent struct {
	at   time.Duration
	kind string // outage, burst, revoke, rotate, rotate-abrupt, scopes, restart
	app  string
	cred string
	dur  time.Duration
	ra   time.Duration
	mode simFault
	form string // a burst's Retry-After: retryAfterForms
}

func (e simEvent) String() string {
	s := fmt.Sprintf("%8s %-13s", e.at.Round(time.Second), e.kind)
	if e.app != "" {
		s += " app=" + e.app
	}
	if e.cred != "" {
		s += " cred=" + e.cred
	}
	if e.dur > 0 {
		s += " for=" + e.dur.Round(time.Second).String()
	}
	if e.ra > 0 {
		s += " retry_after=" + e.ra.String()
	}
	if e.form != "" && e.form != "seconds" {
		s += " retry_after_as=" + e.form
	}
	if e.mode != faultNone {
		s += " as=" + simFaultNames[e.mode]
	}
	return s
}

func (sc *simSchedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %s, standby=%v, per-request faults %.2f %v, sliding refresh-token life %s\n",
		sc.seed, sc.duration, sc.standby, sc.faultRate, faultNames(sc.faultKinds), sc.sliding)
	for _, a := range sc.apps {
		fmt.Fprintf(&b, "  app %s %s budget=%g/s server-limit=%g/s token-life=%s idle_refresh_interval=%s\n", a.name, a.grant, a.budget, a.limit, a.lifetime, a.idle)
	}
	for _, c := range sc.creds {
		fmt.Fprintf(&b, "  creds/%s of %s: %s every=%s from=%s\n", c.name, c.app, c.reader, c.every, c.start.Round(time.Second))
	}
	for _, e := range sc.events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	return b.String()
}

func faultNames(fs []simFault) []string {
	var out []string
	for _, f := range fs {
		out = append(out, simFaultNames[f])
	}
	return out
}

// drawSchedule draws a schedule from seed.
func drawSchedule(seed uint64) *simSchedule {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	sc := &simSchedule{seed: seed, standby: r.IntN(2) == 0}
	long := r.IntN(5) == 0
	if long {
		sc.duration = between(3*24*time.Hour, 7*24*time.Hour)
	} else {
		sc.duration = between(4*time.Hour, 24*time.Hour)
	}
	idle := 168 * time.Hour
	if long {
		idle = []time.Duration{24 * time.Hour, 48 * time.Hour}[r.IntN(2)]
	}
	sc.sliding = idle + idle/2
	if !long {
		sc.sliding = 15 * 24 * time.Hour
	}
	switch r.IntN(4) {
	case 1:
		sc.faultRate = 0.02
	case 2:
		sc.faultRate = 0.1
	case 3:
		sc.faultRate = 0.3
	}
	all := []simFault{faultGatewayFirst, faultGatewayAfter, faultDropFirst, faultDropAfter, faultRefused, faultSlow, faultUnreadable, fault429, faultMAC}
	for _, f := range all {
		if r.IntN(3) == 0 {
			sc.faultKinds = append(sc.faultKinds, f)
		}
	}
	if len(sc.faultKinds) == 0 {
		sc.faultKinds = []simFault{all[r.IntN(len(all))]}
	}

	napps := 1 + r.IntN(3)
	for i := range napps {
		a := simAppSpec{name: fmt.Sprintf("app%d", i), grant: grantAuthorizationCode,
			budget: []float64{10, 10, 5, 2}[r.IntN(4)], lifetime: time.Hour, idle: idle}
		if i == 2 || (napps == 1 && r.IntN(4) == 0) {
			a.grant = grantClientCredentials
		}
		if r.IntN(3) == 0 {
			a.lifetime = 20 * time.Minute
		}
		if r.IntN(4) == 0 {
			a.limit = max(1, a.budget/2)
		}
		sc.apps = append(sc.apps, a)
		n := 2 + r.IntN(7)
		if a.grant == grantClientCredentials {
			n = 1 + r.IntN(3)
		}
		for j := range n {
			c := simCredSpec{name: fmt.Sprintf("%s-h%d", a.name, j), app: a.name}
			if a.grant == grantClientCredentials && j == 0 {
				c.name = a.name // the config's own
			}
			if long {
				c.reader = pick("agent", "human", "idle", "idle")
			} else {
				c.reader = pick("loop", "agent", "agent", "vso", "eso", "human", "idle")
			}
			switch c.reader {
			case "loop":
				c.every = between(2*time.Minute, 15*time.Minute)
			case "eso":
				c.every = between(5*time.Minute, a.lifetime*2/3)
			case "human":
				c.every = between(2*time.Hour, 12*time.Hour)
			}
			c.start = between(0, time.Hour)
			sc.creds = append(sc.creds, c)
		}
	}

	days := sc.duration.Hours() / 24
	count := func(perDay float64) int { return int(perDay*days) + r.IntN(2) }
	at := func() time.Duration { return between(time.Hour, sc.duration-time.Hour) }
	for range count(1) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "outage", app: sc.apps[r.IntN(napps)].name,
			dur: between(time.Minute, 3*time.Hour), mode: []simFault{fault503, faultRefused}[r.IntN(2)]})
	}
	for range count(0.3) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "outage", dur: between(time.Minute, 2*time.Hour), mode: fault503})
	}
	for range count(2) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "burst", app: sc.apps[r.IntN(napps)].name,
			dur: between(5*time.Second, 10*time.Minute), ra: time.Duration(1+r.IntN(120)) * time.Second})
	}
	for range count(0.3) {
		c := sc.creds[r.IntN(len(sc.creds))]
		if app := sc.app(c.app); app.grant == grantAuthorizationCode {
			sc.events = append(sc.events, simEvent{at: at(), kind: "revoke", cred: c.name})
		}
	}
	for range count(0.3) {
		c := sc.creds[r.IntN(len(sc.creds))]
		if app := sc.app(c.app); app.grant == grantAuthorizationCode {
			sc.events = append(sc.events, simEvent{at: at(), kind: "reauthorize", cred: c.name})
		}
	}
	for range count(0.7) {
		sc.events = append(sc.events, simEvent{at: at(), kind: pick("rotate", "rotate", "rotate-abrupt"), app: sc.apps[r.IntN(napps)].name,
			dur: between(time.Minute, 30*time.Minute)})
	}
	for range count(0.1) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "scopes", app: sc.apps[r.IntN(napps)].name})
	}
	for range count(0.5) {
		// Every credential of an app read at once with no token (a scope change dropped
		// them), and maybe apaleo answering the first request late with a 429.
		e := simEvent{at: at(), kind: "stampede", app: sc.apps[r.IntN(napps)].name}
		if r.IntN(2) == 0 {
			e.dur, e.ra = between(time.Second, time.Minute), time.Duration(10+r.IntN(60))*time.Second
		}
		sc.events = append(sc.events, e)
	}
	for range count(0.3) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "restart"})
	}
	drawFaults(sc, rand.New(rand.NewPCG(seed, 0xfa17)))
	drawVaultFaults(sc, rand.New(rand.NewPCG(seed, 0x5704)))
	drawLoad(sc, rand.New(rand.NewPCG(seed, 0x10ad))) // sim_load_test.go
	sort.Slice(sc.events, func(i, j int) bool { return sc.events[i].at < sc.events[j].at })
	return sc
}

// drawFaults draws the faults added after the schedules above were first drawn, from an
// rng of their own (so that a seed's apps, readers and events stay what they were): the
// forms of apaleo's Retry-After.
func drawFaults(sc *simSchedule, r *rand.Rand) {
	for i, e := range sc.events {
		if e.kind != "burst" {
			continue
		}
		forms := retryAfterForms()
		sc.events[i].form = forms[r.IntN(len(forms))]
		if sc.events[i].form == "long" {
			// Over the plugin's cap of an hour (maxHold): it holds for that, then asks again.
			sc.events[i].ra = time.Hour + time.Duration(1+r.IntN(7200))*time.Second
		}
	}
}

func (sc *simSchedule) app(name string) simAppSpec {
	for _, a := range sc.apps {
		if a.name == name {
			return a
		}
	}
	panic(name)
}

// authorized is sc's credentials of authorization_code apps, in schedule order.
func (sc *simSchedule) authorized() []simCredSpec {
	var out []simCredSpec
	for _, c := range sc.creds {
		if sc.app(c.app).grant == grantAuthorizationCode {
			out = append(out, c)
		}
	}
	return out
}

// credNames is the names of app's credentials, in schedule order.
func (sc *simSchedule) credNames(app string) []string {
	var out []string
	for _, c := range sc.creds {
		if c.app == app {
			out = append(out, c.name)
		}
	}
	return out
}

// TestSimReplay: a seed replays exactly: two runs of it send the same requests in the
// same order at the same virtual moments, with the same faults and answers. make
// sim-replay checks every schedule so (-sim.twice); Retry-After as an HTTP date
// (-sim.dates, off by default) does not replay exactly yet (docs/engine.md).
func TestSimReplay(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector randomizes the order of goroutines that wake together: replays are exact without -race (go test, make sim)")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	n := *simReplayN
	if testing.Short() {
		n = min(n, 8)
	}
	differ := 0
	for i := range n {
		seed := *simReplayFirst + uint64(i)
		if !replaysExactly(t, seed) {
			differ++
		}
	}
	if differ > 0 {
		t.Errorf("%d of %d seeds gave two different traces", differ, n)
	}
}

// replaysExactly runs seed twice and says whether both runs saw the same trace; where
// not, it reports the first record in which they part.
func replaysExactly(t *testing.T, seed uint64) bool {
	if *simReplayRuns > 2 {
		for range *simReplayRuns {
			var r *simResult
			synctest.Test(t, func(t *testing.T) { r = runSim(t, seed, simOptions{log: *simReplayLog != ""}) })
			runtime.GC()
			t.Logf("seed %d: %x", seed, r.digest)
			if *simReplayLog != "" {
				os.WriteFile(fmt.Sprintf("%s.%x", *simReplayLog, r.digest), []byte(r.log), 0o644)
			}
		}
	}
	var runs [2]*simResult
	for i := range runs {
		synctest.Test(t, func(t *testing.T) { runs[i] = runSim(t, seed, simOptions{keepLines: true}) })
		runtime.GC()
	}
	if runs[0] == nil || runs[1] == nil || runs[0].digest == runs[1].digest {
		return true
	}
	a, b := runs[0].lines, runs[1].lines
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	at := func(l []string) string {
		if i < len(l) {
			return strings.TrimSpace(l[i])
		}
		return "(end)"
	}
	if testing.Verbose() {
		for j := max(0, i-8); j < i; j++ {
			t.Logf("both: %s", strings.TrimSpace(a[j]))
		}
		for j := i; j < min(i+4, len(a), len(b)); j++ {
			t.Logf("run 1: %s\nrun 2: %s", strings.TrimSpace(a[j]), strings.TrimSpace(b[j]))
		}
	}
	t.Errorf("seed %d: two runs differ at record %d of %d/%d:\n  %s\n  %s\n(go test -run 'TestSimReplay$' -sim.replay=1 -sim.replay.first=%d -v)",
		seed, i, len(a), len(b), at(a), at(b), seed)
	return false
}

// simOptions say what a run keeps beyond its verdict.
type simOptions struct {
	verbose   bool // log the schedule and the counts
	keepLines bool // keep the trace's records
	log       bool // keep the plugin's log
}

// simResult is what a run of one schedule saw.
type simResult struct {
	digest uint64   // of every record of the trace
	lines  []string // the records, with keepLines
	log    string   // the plugin's log, with log
}

// runSim runs the schedule of seed and returns what reached the server, or nil where the
// run could not go on (its error is reported, with the seed, and the next seed runs).
func runSim(t *testing.T, seed uint64, o simOptions) *simResult {
	sc := drawSchedule(seed)
	if o.verbose {
		t.Logf("schedule:\n%s", sc)
	}
	w := &simWorld{t: t, sc: sc, store: &logical.InmemStorage{}, start: time.Now(), rng: rand.New(rand.NewPCG(seed, 1)),
		dropped: map[string][]time.Time{}, secrets: map[string]int{}, scopes: map[string]int{}}
	w.idp = newSimIDP(seed, sc.sliding)
	w.store = simVaultStorage{w.store, w}
	w.idp.keepLines = o.keepLines
	w.idp.load = newSimLoad(w) // sim_load_test.go
	var logBuf strings.Builder
	if o.log {
		w.log = &syncWriter{w: &logBuf}
	}
	stopSequencer := w.idp.startSequencer()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		// Whatever stopped the schedule (a failed operator step, a panic in the plugin),
		// the bubble's goroutines end so that the next seed runs.
		if p := recover(); p != nil {
			w.failf("panic: %v\n%s", p, debug.Stack())
		}
		stop()
		wg.Wait()
		w.cleanNodes()
		stopSequencer()
	}()
	if w.active = w.newNode(false); w.active == nil {
		return nil
	}
	if sc.standby {
		if w.standby = w.newNode(true); w.standby == nil {
			return nil
		}
	}
	if !w.setup() {
		return nil
	}
	wg.Go(func() { w.periodic(ctx) })
	for _, c := range sc.creds {
		if c.reader != "idle" {
			wg.Go(func() { w.reader(ctx, c) })
		}
	}
	w.idp.mu.Lock()
	w.idp.faultRate, w.idp.faultKinds = sc.faultRate, sc.faultKinds
	w.idp.mu.Unlock()
	for _, e := range sc.events {
		time.Sleep(time.Until(w.start.Add(e.at)))
		if w.apply(e); w.failed() {
			return nil
		}
	}
	time.Sleep(time.Until(w.start.Add(sc.duration)))
	stop()
	wg.Wait()
	if w.finish(); w.failed() {
		return nil
	}

	if v := w.idp.violations; len(v) > 0 {
		if len(v) > 15 {
			v = append(v[:15], fmt.Sprintf("... and %d more", len(v)-15))
		}
		t.Errorf("seed %d broke the engine's invariants (replay: go test -run 'TestSim$' -seed=%d -v):\n%s\nschedule:\n%s",
			seed, seed, strings.Join(v, "\n"), sc)
	}
	res := &simResult{digest: w.idp.trace.Sum64(), lines: w.idp.lines, log: logBuf.String()}
	if o.verbose {
		t.Logf("%d token requests reached apaleo (trace %x); %d reads, %d of them waited", w.idp.requests, res.digest, w.reads, w.waited)
	}
	return res
}

// syncWriter serializes writes of the nodes' loggers.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
