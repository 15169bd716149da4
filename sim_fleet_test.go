package apaleo

import (
	"context"
	"flag"
	"fmt"
	"image/color"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/hashicorp/vault/sdk/logical"
)

// sim_fleet_test.go: fleet recovery in the simulator (make sim-fleet). 10,000 authorized
// hotels of one app read at real cadences, apaleo down for 2 hours, the default budget
// of 10 requests a second: how long until every credential in use is served again, the
// busiest first, none starving, and no second carrying more than the budget, each
// counted at the simulated identity server.

var (
	simFleet     = flag.Int("sim.fleet", 0, "TestSimFleetRecovery: hotels (0: skip)")
	simFleetPlot = flag.String("sim.fleet.plot", "", "TestSimFleetRecovery: write the plot (PNG) here")
)

// fleet reader classes, busiest first: a service in a loop, Vault Agent, VSO.
var fleetClasses = []struct {
	name  string
	share int // of 10
}{{"loop 1 min", 2}, {"Vault Agent", 4}, {"VSO", 4}}

func TestSimFleetRecovery(t *testing.T) {
	if *simFleet == 0 {
		t.Skip("make sim-fleet (-sim.fleet=10000)")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	synctest.Test(t, func(t *testing.T) { runFleet(t, *simFleet, false) })
}

// TestSimFleetFlaky: the same fleet behind a flaky gateway, 30 % of token requests
// answered 502 (before apaleo saw them) for an hour, otherwise healthy: readers of the
// credentials in use keep being answered a valid token, the token requests grow by at
// most 1.6x the healthy hour's, and the breaker never opens into starvation.
func TestSimFleetFlaky(t *testing.T) {
	if *simFleet == 0 {
		t.Skip("make sim-fleet (-sim.fleet=10000)")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	synctest.Test(t, func(t *testing.T) { runFleet(t, *simFleet, true) })
}

// flakyShare of the token requests a flaky gateway answers 502.
const flakyShare = 0.3

func runFleet(t *testing.T, hotels int, flaky bool) {
	warm, outage, after := 2*time.Hour, 2*time.Hour, 2*time.Hour
	if flaky {
		outage, after = time.Hour, time.Hour
	}
	sc := &simSchedule{seed: 1, apps: []simAppSpec{{name: "app", grant: grantAuthorizationCode, budget: 10, lifetime: time.Hour, idle: 168 * time.Hour}}}
	w := &simWorld{t: t, sc: sc, store: &logical.InmemStorage{}, start: time.Now(), rng: rand.New(rand.NewPCG(1, 1)),
		dropped: map[string][]time.Time{}, secrets: map[string]int{}, scopes: map[string]int{}}
	w.idp = newSimIDP(1, 15*24*time.Hour)
	w.idp.apps["app"] = &simApp{id: "app", secrets: map[string]bool{"secret-app-0": true}, budget: 10, lifetime: time.Hour}
	w.active = w.newNode(false)
	w.must(logical.CreateOperation, "config/app", w.configData(sc.apps[0]))

	// Steady state to start from: every hotel holds a token issued during the last hour
	// (written as an authorization stores it: no 10,000 imports through the budget).
	ctx := context.Background()
	cfg, _ := readConfig(ctx, w.store, "app")
	// The tokens were issued over one refresh-ahead period (41 min 15 s for hour-long
	// tokens: refresh-ahead runs from minute 40 to 42.5), so that it runs at an even rate
	// from the start. Issued over the hour instead, their refreshes crowd into cohorts
	// that keep their phase for hours (each period's jitter is 2.5 minutes), and any one
	// hour counts a different share of them: the healthy hour the flaky one is compared
	// with had 13,120 new tokens, the flaky hour's schedule about 15,400.
	sample := &cachedToken{IssuedAt: w.start, ExpiresAt: w.start.Add(time.Hour)}
	from, to := refreshWindow(sample, cfg)
	period := from.Add(to.Sub(from) / 2).Sub(w.start)
	class := make([]int, hotels)
	for i := range hotels {
		name := fmt.Sprintf("hotel-%05d", i)
		issued := w.start.Add(-time.Duration(i) * period / time.Duration(hotels))
		cred := &credential{Kind: kindAuthorized, Config: "app", GrantType: grantAuthorizationCode, RefreshToken: w.idp.issueRefresh("app", name), CreatedAt: issued,
			Token: &cachedToken{AccessToken: "at-" + name, TokenType: "Bearer", IssuedAt: issued, ExpiresAt: issued.Add(time.Hour), Generation: cfg.Generation}}
		if err := w.active.putCred(ctx, simStorage{w.store, w}, name, cred); err != nil {
			t.Fatal(err)
		}
		class[i] = fleetClass(i)
	}

	outageStart, outageEnd := w.start.Add(warm), w.start.Add(warm+outage)
	var reads, good int                   // reads during the fault, and those answered a valid token
	served := make([]time.Time, hotels)   // first good read after the outage
	around := make([][]fleetRead, hotels) // the reads from 2 minutes before apaleo's return until served
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { w.periodic(stopCtx(stop)) })
	for i := range hotels {
		wg.Go(func() {
			name := fmt.Sprintf("hotel-%05d", i)
			rng := rand.New(rand.NewPCG(1, uint64(i)+10))
			reader := &fleetReader{class: class[i]}
			// Readers start spread over their first period.
			next := time.Duration(rng.Int64N(int64(time.Minute)))
			for {
				select {
				case <-stop:
					return
				case <-time.After(next):
				}
				r := w.read(name, rng)
				if !r.at.Before(outageStart) && r.at.Before(outageEnd) {
					mu.Lock()
					reads++
					if r.err == nil && r.expires.After(r.at.Add(r.took)) {
						good++
					}
					mu.Unlock()
				}
				if r.at.After(outageEnd.Add(-2 * time.Minute)) {
					mu.Lock()
					if served[i].IsZero() {
						around[i] = append(around[i], fleetRead{r.at, r.err == nil})
					}
					mu.Unlock()
				}
				// Served again: a good answer that came after apaleo did (a read that began
				// in the outage's last seconds and waited for the new token included).
				if r.err == nil && !r.at.Add(r.took).Before(outageEnd) {
					mu.Lock()
					if served[i].IsZero() {
						served[i] = r.at.Add(r.took)
					}
					mu.Unlock()
				}
				next = reader.next(r, rng)
			}
		})
	}
	time.Sleep(time.Until(outageStart.Add(-time.Hour)))
	sentBefore := fleetRequests(w.active.metrics)
	time.Sleep(time.Until(outageStart))
	sentStart := fleetRequests(w.active.metrics)
	w.idp.mu.Lock()
	if flaky {
		w.idp.faultRate, w.idp.faultKinds = flakyShare, []simFault{fault503}
	} else {
		w.idp.outages[""] = simOutage{until: outageEnd, kind: fault503}
	}
	w.idp.mu.Unlock()
	time.Sleep(time.Until(outageEnd))
	sentEnd := fleetRequests(w.active.metrics)
	w.idp.mu.Lock()
	w.idp.faultRate = 0
	w.idp.mu.Unlock()
	time.Sleep(time.Until(outageEnd.Add(after)))
	close(stop)
	wg.Wait()
	w.active.Clean(ctx)

	// What the server saw: requests per second, and the most in any one second.
	w.idp.mu.Lock()
	arrivals := slices.Clone(w.idp.apps["app"].arrivals)
	sent := slices.Clone(w.idp.apps["app"].sent)
	violations := slices.Clone(w.idp.violations)
	w.idp.mu.Unlock()
	// The most in any one second, by the moments the plugin sent them at (simIDP.sentAt:
	// judged by the instants they woke at, slots 1/budget apart seem to crowd a second
	// by nanoseconds).
	busiest := 0
	for i := range sent {
		busiest = max(busiest, countSince(sent[:i+1], sent[i].Add(-time.Second)))
	}
	if len(violations) > 0 {
		t.Errorf("invariants broken:\n%s", strings.Join(violations[:min(len(violations), 10)], "\n"))
	}
	phase := func(from, to time.Time) int { return countSince(arrivals, from) - countSince(arrivals, to) }
	if flaky {
		healthy, during := phase(outageStart.Add(-time.Hour), outageStart), phase(outageStart, outageEnd)
		share := float64(good) / float64(max(reads, 1))
		t.Logf("%d hotels, budget 10/s, a gateway answering %.0f%% of token requests 502 for %s after %s: %d token requests in the healthy hour before, %d in the flaky hour (%.2fx); %d of %d reads (%.2f%%) answered a valid token; the app went down %d times (the plugin's count)",
			hotels, 100*flakyShare, outage, warm, healthy, during, float64(during)/float64(healthy), good, reads, 100*share, w.active.metrics.counters("app").outages.Load())
		t.Logf("the plugin's token requests by trigger and outcome, in the healthy hour and the flaky hour:\n%s", fleetRequestsDiff(sentBefore, sentStart, sentEnd))
		// The waste is in the requests per token obtained: 1/0.7 = 1.43 is what retrying
		// each failure once costs.
		gotHealthy, gotFlaky := fleetSuccesses(sentBefore, sentStart), fleetSuccesses(sentStart, sentEnd)
		t.Logf("new tokens: %d in the healthy hour (%.2f requests each), %d in the flaky hour (%.2f requests each)",
			gotHealthy, float64(healthy)/float64(max(gotHealthy, 1)), gotFlaky, float64(during)/float64(max(gotFlaky, 1)))
		if share < 0.99 {
			t.Errorf("%.2f%% of reads during the flaky hour answered a valid token, want at least 99%%", 100*share)
		}
		if float64(during) > 1.6*float64(healthy) {
			t.Errorf("%d token requests in the flaky hour, more than 1.6x the healthy hour's %d", during, healthy)
		}
		return
	}
	if bad := probeSchedule(arrivals, outageStart, outageEnd); len(bad) > 0 {
		t.Errorf("while apaleo was down for the whole app its token requests did not follow the probe schedule (%d breaches), e.g.:\n%s",
			len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	if bad := recoveryOrder(arrivals, around, served, outageEnd, 10); len(bad) > 0 {
		t.Errorf("after apaleo came back, %d names with waiting readers were served later than the ramp and the budget allow for the names ahead of them, e.g.:\n%s",
			len(bad), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}

	var report strings.Builder
	fmt.Fprintf(&report, "the plugin's token requests by trigger and outcome, in the hour before the outage and during it:\n%s", fleetRequestsDiff(sentBefore, sentStart, sentEnd))
	if n := countSince(arrivals, outageEnd.Add(-time.Nanosecond)); n > 0 {
		fmt.Fprintf(&report, "the first token request after apaleo came back reached it %s after its return\n",
			arrivals[len(arrivals)-n].Sub(outageEnd).Round(time.Millisecond))
	}
	fmt.Fprintf(&report, "%d hotels, budget 10/s, apaleo down %s after %s: %d token requests reached apaleo (%d before the outage, %d during it, %d after); at most %d in any one second\n",
		hotels, outage, warm, len(arrivals), phase(w.start.Add(-time.Nanosecond), outageStart), phase(outageStart, outageEnd), phase(outageEnd, outageEnd.Add(after)), busiest)
	fmt.Fprintf(&report, "%s", fleetWaiting(around, class, outageEnd))
	var curves []plotter.XYs
	for c, cl := range fleetClasses {
		var waits []time.Duration
		for i := range hotels {
			if class[i] != c {
				continue
			}
			if served[i].IsZero() {
				t.Errorf("hotel-%05d (%s) was never served after the outage: starved", i, cl.name)
				continue
			}
			waits = append(waits, served[i].Sub(outageEnd))
		}
		slices.Sort(waits)
		if len(waits) == 0 {
			continue
		}
		q := func(p float64) time.Duration { return waits[int(p*float64(len(waits)-1))].Round(time.Second) }
		fmt.Fprintf(&report, "  %-12s %5d hotels: served again after p50 %s, p90 %s, max %s\n", cl.name, len(waits), q(0.5), q(0.9), q(1))
		var xys plotter.XYs
		for k, d := range waits {
			xys = append(xys, plotter.XY{X: d.Minutes(), Y: 100 * float64(k+1) / float64(len(waits))})
		}
		curves = append(curves, xys)
	}
	t.Log(report.String())
	if busiest > 10 {
		t.Errorf("%d token requests in one second, budget 10", busiest)
	}
	if *simFleetPlot != "" {
		if err := fleetPlot(*simFleetPlot, curves, arrivals, outageEnd); err != nil {
			t.Fatal(err)
		}
	}
}

// The probe schedule of an app that is down (outage.go): 5 failures in a row take it
// down, then one probe at a time, 5 s, 10 s, 20 s, then every 30 s ±20 % after the one
// before.
func probeGap(k int) (lo, hi time.Duration) {
	if k < len(probeDelays) {
		return probeDelays[k], probeDelays[k]
	}
	return probeSteady - probeSteady/5, probeSteady + probeSteady/5
}

// probeSchedule checks, from the arrivals at apaleo alone, that while apaleo was down for
// the whole app (from to) its token requests followed the probe schedule: after the
// fifth (and the requests already on their way when its answer came, which takes at
// most simMaxLatency), each arrival at least the schedule's gap after the one before
// (measured from the arrival, which precedes the answer the schedule counts from), and
// at most the gap plus a second and an answer's latency later: probes keep coming.
func probeSchedule(arrivals []time.Time, from, to time.Time) []string {
	var a []time.Time
	for _, t := range arrivals {
		if !t.Before(from) && t.Before(to) {
			a = append(a, t)
		}
	}
	if len(a) <= outageAfter {
		return nil
	}
	var bad []string
	prev := a[outageAfter-1]
	free := prev.Add(simMaxLatency)
	k := 0
	for _, t := range a[outageAfter:] {
		if !t.After(free) {
			continue // sent before the fifth failure's answer came back
		}
		lo, hi := probeGap(k)
		if gap := t.Sub(prev); gap < lo {
			bad = append(bad, fmt.Sprintf("%s into the outage: a token request %s after the one before, the probe schedule's gap is %s",
				t.Sub(from).Round(time.Millisecond), gap.Round(time.Millisecond), lo))
		}
		if gap := t.Sub(prev); gap > hi+time.Second+simMaxLatency {
			bad = append(bad, fmt.Sprintf("%s into the outage: no probe for %s, the probe schedule's gap is at most %s",
				t.Sub(from).Round(time.Millisecond), gap.Round(time.Millisecond), hi))
		}
		prev, k = t, k+1
	}
	// Probes keep coming: the last gap before apaleo's return is no longer than the
	// schedule allows (plus a second and an answer's latency).
	if _, hi := probeGap(max(k, len(probeDelays))); to.Sub(prev) > hi+time.Second+simMaxLatency {
		bad = append(bad, fmt.Sprintf("no token request in the last %s of the outage: the probes stopped", to.Sub(prev).Round(time.Second)))
	}
	return bad
}

// simMaxLatency is the longest the simulated apaleo takes to answer (sim_idp_test.go).
const simMaxLatency = 210 * time.Millisecond

// rampCarries is how long the budget, ramping from 1 request a second and doubling
// every second up to perSecond, takes to carry n requests.
func rampCarries(n int, perSecond float64) time.Duration {
	var d time.Duration
	for rate := 1.0; n > 0; rate = min(rate*2, perSecond) {
		if float64(n) <= rate {
			return d + time.Duration(float64(n)/rate*float64(time.Second))
		}
		n -= int(rate)
		d += time.Second
		if rate >= perSecond {
			return d + time.Duration(float64(n)/perSecond*float64(time.Second))
		}
	}
	return d
}

type fleetRead struct {
	at time.Time
	ok bool
}

// recoveryOrder checks that after apaleo came back (end) every name whose reader was
// waiting without a token when the first request after end reached apaleo (back: its
// last read before then failed) is served in order of need: ranked most recently read
// first, the name of rank r has its token by back plus what the ramp takes to carry the
// r+1 names up to it, plus a second; so the first read of it that starts after that
// moment is answered a valid token. Nothing is assumed of the readers' cadence (Vault
// Agent may sleep 5 minutes between reads): a reader that reads later is served later.
func recoveryOrder(arrivals []time.Time, reads [][]fleetRead, served []time.Time, end time.Time, perSecond float64) []string {
	first := countSince(arrivals, end.Add(-time.Nanosecond))
	if first == 0 {
		return []string{"no token request reached apaleo after it came back"}
	}
	back := arrivals[len(arrivals)-first]
	waiting := make([]time.Time, len(reads))
	for i, rs := range reads {
		for _, r := range rs {
			if r.at.Before(back) {
				waiting[i] = r.at
				if r.ok {
					waiting[i] = time.Time{}
				}
			}
		}
	}
	var ranked []int
	for i, t := range waiting {
		if !t.IsZero() {
			ranked = append(ranked, i)
		}
	}
	slices.SortStableFunc(ranked, func(x, y int) int { return waiting[y].Compare(waiting[x]) })
	var bad []string
	for r, i := range ranked {
		bound := back.Add(rampCarries(r+1, perSecond) + time.Second)
		var next *fleetRead // the first read after the bound
		for k := range reads[i] {
			if !reads[i][k].at.Before(bound) {
				next = &reads[i][k]
				break
			}
		}
		switch {
		case !served[i].IsZero() && !served[i].After(bound):
		case next == nil && served[i].IsZero():
			bad = append(bad, fmt.Sprintf("hotel-%05d (rank %d, last read %s before the return): never served", i, r, end.Sub(waiting[i]).Round(time.Millisecond)))
		case next != nil && !next.ok:
			bad = append(bad, fmt.Sprintf("hotel-%05d (rank %d, last read %s before the return): a read %s after the return failed, its token was due by %s",
				i, r, end.Sub(waiting[i]).Round(time.Millisecond), next.at.Sub(end).Round(time.Second), bound.Sub(end).Round(time.Second)))
		}
	}
	return bad
}

// fleetWaiting says, by reader class, how often the names were read in the 2 minutes
// before apaleo returned (end) and how many were read in the last of them: what "most
// recently read first" has to tell them apart by.
func fleetWaiting(reads [][]fleetRead, class []int, end time.Time) string {
	var out strings.Builder
	for c, cl := range fleetClasses {
		var names, n, lastMinute int
		for i, rs := range reads {
			if class[i] != c {
				continue
			}
			names++
			recent := false
			for _, r := range rs {
				if r.at.Before(end) {
					n++
					recent = recent || !r.at.Before(end.Add(-time.Minute))
				}
			}
			if recent {
				lastMinute++
			}
		}
		fmt.Fprintf(&out, "  %-12s %5d hotels: %.2f reads a minute each in the 2 minutes before the return, %d read in the last minute\n",
			cl.name, names, float64(n)/2/float64(max(names, 1)), lastMinute)
	}
	return out.String()
}

// fleetRequests counts the app's token requests the plugin sent so far (every HTTP
// attempt), by trigger and outcome.
func fleetRequests(m *metrics) map[string]uint64 {
	c := m.counters("app")
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]uint64{}
	for _, r := range c.requests {
		out[r.key.trigger+" "+r.key.outcome] = r.n.Load()
	}
	return out
}

// fleetRequestsDiff lists the token requests of two phases (a to b, b to c) by trigger
// and outcome.
func fleetRequestsDiff(a, b, c map[string]uint64) string {
	var keys []string
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&out, "  %-32s %7d %7d\n", k, b[k]-a[k], c[k]-b[k])
	}
	return out.String()
}

// fleetSuccesses counts the token requests answered a token between two counts.
func fleetSuccesses(a, b map[string]uint64) uint64 {
	var n uint64
	for k, v := range b {
		if strings.HasSuffix(k, " success") {
			n += v - a[k]
		}
	}
	return n
}

func stopCtx(stop chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	return ctx
}

// fleetClass: 2 in 10 hotels read in a loop every minute, 4 through Vault Agent, 4
// through VSO.
func fleetClass(i int) int {
	switch k := i % 10; {
	case k < fleetClasses[0].share:
		return 0
	case k < fleetClasses[0].share+fleetClasses[1].share:
		return 1
	}
	return 2
}

// fleetReader is one hotel's reader and what it remembers of its failed reads: its next
// read after a failure is what the real clients do, not a fixed minute, since which
// names were read last when apaleo returns is what the order of need goes by.
//
//   - A service in a loop reads every minute, failed or not.
//   - Vault Agent renders the credential with its template engine, consul-template
//     (hashicorp/consul-template config/retry.go, watch/view.go; Vault's
//     command/agent/internal/ctmanager/runner_config.go and command/agent/template/
//     template.go): a failed read is retried 12 times (vault.retry num_retries, default
//     12), 250 ms doubling, the sleep capped at 1 minute (max_backoff) from the 9th retry
//     on: 13 reads over 5 min 4 s. When the retries run out the runner's error reaches the
//     template server, which with exit_on_retry_failure (default false) unset stops the
//     runner and starts a new one after its restart backoff (sdk/helper/backoff: 1 s
//     doubling to 5 minutes, each less up to 25 % at random, never reset while the Agent
//     runs); the new runner reads at once. A successful read resets the retries. With
//     exit_on_retry_failure the Agent exits instead and its supervisor restarts it (not
//     modelled). Vault's API client retries a 5xx twice more inside each read (about 1 s
//     apart): not modelled, it reads the same name within the same seconds.
//   - The Vault Secrets Operator (hashicorp/vault-secrets-operator main.go, controllers/
//     registry.go, cenkalti/backoff v4) requeues a failed sync after its per-object
//     exponential backoff: --backoff-initial-interval 5 s, --backoff-multiplier 1.5,
//     --backoff-randomization-factor 0.5 (each wait uniform in 0.5-1.5x the interval),
//     --backoff-max-interval 60 s, --backoff-max-elapsed-time 0 (retries for ever); a
//     successful sync drops the object's backoff.
//
// After a good read, Agent reads again at 80-90 % of the token's life and VSO at 67-77 %
// of the lease (the renewal points the engine's refresh-ahead is built for).
type fleetReader struct {
	class    int
	retries  int           // Agent: retries of the runner's read so far
	restart  time.Duration // Agent: the template server's restart backoff (0: not yet used)
	interval time.Duration // VSO: the backoff's current interval (0: none)
}

// next is when the reader reads again after r.
func (fr *fleetReader) next(r simRead, rng *rand.Rand) time.Duration {
	if fr.class == 0 {
		return time.Minute
	}
	if r.err != nil {
		if fr.class == 1 {
			return fr.agentRetry(rng)
		}
		return fr.vsoRetry(rng)
	}
	fr.retries, fr.interval = 0, 0
	lo, base, life := 0.80, r.expires.Add(-time.Hour), time.Hour
	if fr.class == 2 {
		lo, base, life = 0.67, r.at, r.expires.Sub(r.at)
	}
	return max(time.Until(base.Add(time.Duration((lo+0.1*rng.Float64())*float64(life)))), time.Second)
}

// Vault Agent's template retries (consul-template's defaults) and restart backoff.
const (
	agentRetries       = 12
	agentRetryBackoff  = 250 * time.Millisecond
	agentRetryMax      = time.Minute
	agentRestartMin    = time.Second
	agentRestartMax    = 5 * time.Minute
	agentRestartJitter = 0.25
)

func (fr *fleetReader) agentRetry(rng *rand.Rand) time.Duration {
	if fr.retries < agentRetries {
		sleep := agentRetryBackoff << fr.retries
		if fr.retries > int(math.Log2(float64(agentRetryMax)/float64(agentRetryBackoff))) {
			sleep = agentRetryMax
		}
		fr.retries++
		return sleep
	}
	// The runner gave up: the template server restarts it after its backoff.
	fr.retries = 0
	if fr.restart == 0 {
		fr.restart = agentRestartMin
	} else {
		fr.restart = min(2*fr.restart, agentRestartMax)
	}
	fr.restart = time.Duration(float64(fr.restart) * (1 - agentRestartJitter*rng.Float64()))
	return fr.restart
}

// VSO's backoff on secret source errors (its flags' defaults).
const (
	vsoInitial    = 5 * time.Second
	vsoMultiplier = 1.5
	vsoRandom     = 0.5
	vsoMax        = time.Minute
)

func (fr *fleetReader) vsoRetry(rng *rand.Rand) time.Duration {
	if fr.interval == 0 {
		fr.interval = vsoInitial
	}
	wait := time.Duration(float64(fr.interval) * (1 - vsoRandom + 2*vsoRandom*rng.Float64()))
	fr.interval = min(time.Duration(float64(fr.interval)*vsoMultiplier), vsoMax)
	return wait
}

// fleetPlot draws the share of each class served again against the minutes since the
// outage ended, above the token requests apaleo got per second.
func fleetPlot(file string, curves []plotter.XYs, arrivals []time.Time, end time.Time) error {
	p := plot.New()
	p.Title.Text = "Fleet recovery after a 2 h outage: 10,000 hotels, budget 10 requests/s (simulated)"
	p.X.Label.Text = "minutes since apaleo came back"
	p.Y.Label.Text = "% of hotels served again; token requests/s"
	colors := []color.Color{color.RGBA{R: 200, A: 255}, color.RGBA{G: 140, A: 255}, color.RGBA{B: 200, A: 255}}
	for c, xys := range curves {
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = colors[c]
		l.Width = vg.Points(2)
		p.Add(l)
		p.Legend.Add(fleetClasses[c].name+" (% served)", l)
	}
	perSecond := map[int]int{}
	for _, a := range arrivals {
		if s := int(math.Floor(a.Sub(end).Seconds())); s >= -60 && s < 60*60 {
			perSecond[s]++
		}
	}
	var rate plotter.XYs
	for s := -60; s < 60*60; s++ {
		rate = append(rate, plotter.XY{X: float64(s) / 60, Y: float64(perSecond[s])})
	}
	l, err := plotter.NewLine(rate)
	if err != nil {
		return err
	}
	l.Color = color.Gray{Y: 120}
	p.Add(l)
	p.Legend.Add("token requests at apaleo per second", l)
	p.Legend.Top, p.Legend.Left = false, false
	p.Y.Max = 105
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return p.Save(30*vg.Centimeter, 14*vg.Centimeter, file)
}

// TestFleetReaderRetries pins the fleet's failure model to the clients' documented
// defaults: Agent's 13 reads over 5 min 4 s then a restart within a second, VSO's waits
// from 2.5-7.5 s growing to 30-90 s.
func TestFleetReaderRetries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	failed := simRead{err: fmt.Errorf("503")}
	agent := &fleetReader{class: 1}
	var ladder time.Duration
	for range 12 {
		ladder += agent.next(failed, rng)
	}
	if want := 303750 * time.Millisecond; ladder != want {
		t.Errorf("Agent's 12 retries took %s, consul-template's defaults take %s", ladder, want)
	}
	if d := agent.next(failed, rng); d <= 750*time.Millisecond || d > time.Second {
		t.Errorf("Agent's first restart after %s, want 0.75-1 s", d)
	}
	if d := agent.next(failed, rng); d != 250*time.Millisecond {
		t.Errorf("the restarted runner's first retry after %s, want 250ms", d)
	}
	vso := &fleetReader{class: 2}
	if d := vso.next(failed, rng); d < 2500*time.Millisecond || d > 7500*time.Millisecond {
		t.Errorf("VSO's first retry after %s, want 2.5-7.5 s", d)
	}
	for range 20 {
		vso.next(failed, rng)
	}
	if d := vso.next(failed, rng); d < 30*time.Second || d > 90*time.Second {
		t.Errorf("VSO's retry after 20 failures after %s, want 30-90 s", d)
	}
	if d := (&fleetReader{class: 0}).next(failed, rng); d != time.Minute {
		t.Errorf("the loop reads again after %s, want a minute", d)
	}
}

// TestRecoveryOrderCheck: the fleet's recovery check flags a name whose reader read after
// the moment its rank says it must have its token and was refused, and one never served;
// it passes a reader that comes back late and is served then.
func TestRecoveryOrderCheck(t *testing.T) {
	end := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	back := end.Add(time.Second)
	arrivals := []time.Time{end.Add(-time.Minute), back}
	s := func(d time.Duration) time.Time { return end.Add(d) }
	reads := [][]fleetRead{
		{{s(-10 * time.Second), false}, {s(5 * time.Second), true}},                          // rank 0, served at once
		{{s(-20 * time.Second), false}, {s(4 * time.Minute), true}},                          // rank 1, back late, served
		{{s(-30 * time.Second), false}, {s(time.Minute), false}, {s(2 * time.Minute), true}}, // rank 2, refused after its bound
		{{s(-40 * time.Second), false}},                                                      // rank 3, never served
		{{s(-50 * time.Second), true}},                                                       // not waiting
	}
	served := []time.Time{s(5 * time.Second), s(4 * time.Minute), s(2 * time.Minute), {}, {}}
	bad := recoveryOrder(arrivals, reads, served, end, 10)
	if len(bad) != 2 || !strings.Contains(bad[0], "hotel-00002") || !strings.Contains(bad[1], "hotel-00003") {
		t.Errorf("recoveryOrder found %q, want hotel-00002 refused after its bound and hotel-00003 never served", bad)
	}
}
