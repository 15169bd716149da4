package apaleo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// sim_load_test.go is the simulator's contention and apaleo's range (issue 33): what the
// schedules of sim_test.go add on top, drawn from an rng of their own (drawLoad), so
// that a seed's apps, readers and events stay what they were.
//
// Faults and operator actions:
//   - bursts of 3-8 concurrent readers of one name, some retrying a few seconds after an
//     error (so the reads of one name meet its flight, its lock and its budget);
//   - in 1 schedule in 25 a crowd app of 200-400 credentials at a budget of 2 or 5 a
//     second, read cold at once with bursts on a few of its names: the budget refuses;
//   - cold reads of an app with a 429 burst whose Retry-After falls with every request
//     (overlapping 429s, a later one shorter than the one before);
//   - timeout-after: apaleo handles the request, the answer never comes and the
//     connection times out 2-20 s later (the plugin gives up; the refresh token is
//     spent at apaleo);
//   - flaky names: every token request of one credential answered 502 for 5-20 min;
//   - a credential in use whose token a scope change drops, read again by a client
//     that hangs up at once: its next token is fetched and never read.
//
// Invariants at the server, per refresh token and per name (authorized credentials: the
// refresh token names the credential):
//   - a refresh token whose send timed out at the plugin is not sent again within
//     failure memory's first backoff (5 s);
//   - after failures, one attempt per backoff step: the k-th send of a failing refresh
//     token (k >= 3: the first two may be one request's) comes at least 5 s * 2^(k-3)
//     (capped at 5 min) after the failure before it;
//   - no refresh token idles longer than idle_refresh_interval while apaleo is healthy;
//   - (at the readers) no read is answered a token past its expiry;
//   - every token request of a credential is explained: by a read of it (under way, or
//     begun within a request's bound), by refresh-ahead of a token a read was served or
//     that was read since it was issued, by keep-alive, or by an outage's probes and
//     recovery.

// faultTimeoutAfter: apaleo handled the request, and the connection timed out before
// its answer came (a proxy's or the connection's read deadline).
const faultTimeoutAfter simFault = 100

func init() { simFaultNames[faultTimeoutAfter] = "timeout-after" }

// The crowd app's size and its share of the schedules.
const (
	crowdShare          = 25
	crowdMin, crowdMax  = 200, 400
	readBound           = 32 * time.Second // a read's flight sends within the retry policy's 30 s of the read (and a second after a background refusal)
	recoveryBound       = 15 * time.Minute // after apaleo answers a down config again, the names it held back are served
	downAfter           = outageAfter - 1  // failures in a row the server counts as the config going down (one fewer than the plugin: lenient)
	keepAliveTolerance  = time.Minute
	reauthorizeExplains = 2 * time.Minute
)

// drawLoad adds the load's apps, credentials and events to sc.
func drawLoad(sc *simSchedule, r *rand.Rand) {
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	at := func() time.Duration { return between(time.Hour, sc.duration-time.Hour) }
	authorized := sc.authorized() // before the crowd's: its names get no bursts of their own
	if r.IntN(crowdShare) == 0 {
		a := simAppSpec{name: "crowd", grant: grantAuthorizationCode, budget: []float64{2, 5}[r.IntN(2)],
			lifetime: time.Hour, idle: sc.apps[0].idle}
		sc.apps = append(sc.apps, a)
		n := crowdMin + r.IntN(crowdMax-crowdMin+1)
		for j := range n {
			c := simCredSpec{name: fmt.Sprintf("crowd-h%d", j), app: a.name, reader: "idle", start: between(0, time.Hour)}
			if j%50 == 0 {
				c.reader = "agent"
			}
			sc.creds = append(sc.creds, c)
		}
		sc.events = append(sc.events, simEvent{at: at(), kind: "load-crowd", app: a.name})
	}
	if len(authorized) == 0 {
		return
	}
	pickAuth := func() simCredSpec { return authorized[r.IntN(len(authorized))] }
	for range r.IntN(4) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "load-burst", cred: pickAuth().name})
	}
	if r.IntN(3) == 0 {
		c := pickAuth()
		sc.events = append(sc.events, simEvent{at: at(), kind: "load-falling", app: c.app,
			dur: between(20*time.Second, 2*time.Minute), ra: time.Duration(8+r.IntN(11)) * time.Second})
	}
	if r.IntN(3) == 0 && sc.faultRate > 0 {
		sc.faultKinds = append(sc.faultKinds, faultTimeoutAfter)
	}
	for range r.IntN(3) {
		sc.events = append(sc.events, simEvent{at: at(), kind: "load-flaky", cred: pickAuth().name, dur: between(5*time.Minute, 20*time.Minute)})
	}
	if r.IntN(2) == 0 {
		sc.events = append(sc.events, simEvent{at: at(), kind: "load-unread", cred: pickAuth().name})
	}
}

// simLoad is the load's state at the server: what the plugin got and when, per node,
// refresh token and credential. Guarded by simIDP.mu.
type simLoad struct {
	w *simWorld
	// tok: the last token the plugin got for each authorized credential.
	tok map[string]simGot
	// reads of each credential: the last start, those under way, the tokens served.
	reads map[string]*simReads
	// timedOut: when a send of a refresh token timed out at the plugin, by node.
	timedOut map[simNodeRT]time.Time
	runs     map[simNodeRT]*simRun
	down     map[simNodeApp]*simDown
	flaky    map[string]time.Time // credential: its requests fail until then
	windows  []*simWindow
	falling  map[string]*simFalling
}

type simNodeRT struct {
	node int
	rt   *simRefresh
}

type simNodeApp struct {
	node int
	app  string
}

type simGot struct{ at, expires time.Time }

type simReads struct {
	last    time.Time
	open    int
	served  []time.Time // expires_at of tokens reads were answered
	started []time.Time
}

// simRun is a refresh token's failing sends from one node: how many, when the plugin
// got the last failure, and under which client secret and scope generation.
type simRun struct {
	sends    int
	lastFail time.Time
	secret   string
	drops    int
	excused  bool // the config was down meanwhile: the probes' pace, not the backoff
}

type simDown struct {
	fails int
	down  bool
	back  time.Time
}

// simWindow is a read's bound after a burst of readers of one name began: what each
// node sent for the name meanwhile.
type simWindow struct {
	cred  string
	from  time.Time
	sends map[int]int
}

type simFalling struct {
	ra, step time.Duration
}

func newSimLoad(w *simWorld) *simLoad {
	return &simLoad{w: w, tok: map[string]simGot{}, reads: map[string]*simReads{}, timedOut: map[simNodeRT]time.Time{},
		runs: map[simNodeRT]*simRun{}, down: map[simNodeApp]*simDown{}, flaky: map[string]time.Time{}, falling: map[string]*simFalling{}}
}

func (l *simLoad) readsOf(name string) *simReads {
	r := l.reads[name]
	if r == nil {
		r = &simReads{}
		l.reads[name] = r
	}
	return r
}

// noteRead notes a read of name starting now; the function it returns notes what it was
// answered.
func (l *simLoad) noteRead(name string, r *simRead) func() {
	if l == nil {
		return func() {}
	}
	s := l.w.idp
	s.mu.Lock()
	rs := l.readsOf(name)
	rs.last = time.Now()
	rs.open++
	rs.started = append(rs.started, rs.last)
	for len(rs.started) > 0 && rs.last.Sub(rs.started[0]) > 2*readBound {
		rs.started = rs.started[1:]
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		rs.open--
		// At the reader: a read is never answered a token past its expiry (expires_at
		// says whole seconds: a second's grace).
		if end := r.at.Add(r.took); !r.expires.IsZero() && r.err == nil && r.expires.Add(time.Second).Before(end) {
			s.violate("creds/%s: a read was answered a token that expired %s before the answer", name, end.Sub(r.expires).Round(time.Millisecond))
		}
		if !r.expires.IsZero() {
			rs.served = append(rs.served, r.expires)
			if len(rs.served) > 8 {
				rs.served = rs.served[1:]
			}
		}
	}
}

// drops is how many token-dropping config writes app has had (scope changes).
func (l *simLoad) drops(app string) (int, time.Time) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	d := l.w.dropped[app]
	if len(d) == 0 {
		return 0, time.Time{}
	}
	return len(d), d[len(d)-1]
}

func (l *simLoad) lastReauthorized(cred string) time.Time {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	d := l.w.dropped["creds/"+cred]
	if len(d) == 0 {
		return time.Time{}
	}
	return d[len(d)-1]
}

func (l *simLoad) appSpec(name string) simAppSpec { return l.w.sc.app(name) }

// nameFault: a flaky name's every request is answered 502 (before apaleo saw it).
func (l *simLoad) nameFault(app *simApp, rt *simRefresh, fault simFault, now time.Time) simFault {
	if l == nil || rt == nil || fault != faultNone {
		return fault
	}
	if until, ok := l.flaky[rt.cred]; ok && now.Before(until) {
		l.w.idp.addTrouble(app.id, "flaky-name", now, now)
		return faultGatewayFirst
	}
	return fault
}

// retryAfter is a 429's Retry-After: during a falling burst each one shorter than the
// one before, down to a second.
func (l *simLoad) retryAfter(app *simApp, ra time.Duration) time.Duration {
	if l == nil {
		return ra
	}
	f := l.falling[app.id]
	if f == nil {
		return ra
	}
	if b, ok := l.w.idp.bursts[app.id]; !ok || !time.Now().Before(b.until) {
		delete(l.falling, app.id)
		return ra
	}
	ra = f.ra
	f.ra = max(time.Second, f.ra-f.step)
	return ra
}

// timeoutAfter is the answer of a request apaleo handled whose connection then timed
// out: an i/o timeout 2-20 s later.
func (l *simLoad) timeoutAfter(app *simApp, now time.Time) simAnswer {
	s := l.w.idp
	d := time.Duration(2+s.rng.IntN(19)) * time.Second
	s.addTrouble(app.id, "timeout-after", now, now.Add(d))
	return simAnswer{err: &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, delay: d}
}

// acceptedToken says whether the plugin keeps the token answer a carries (a Bearer token
// whose expires_in is above 0, as client.go checks: sim_vault_test.go's odd answers send
// others) and for how long it caches it (capped at a day).
func acceptedToken(a *simAnswer) (time.Duration, bool) {
	if a.err != nil || a.status != 200 {
		return 0, false
	}
	var m struct {
		Type    string       `json:"token_type"`
		Expires *json.Number `json:"expires_in"`
	}
	if json.Unmarshal([]byte(a.body), &m) != nil || !strings.EqualFold(m.Type, "bearer") {
		return 0, false
	}
	if m.Expires == nil {
		return defaultTokenLifetime, true
	}
	secs, err := m.Expires.Float64()
	if err != nil || secs <= 0 {
		return 0, false
	}
	return min(time.Duration(secs*float64(time.Second)), maxTokenLifetime), true
}

// seen notes what a request's sender got, at the moment it got it (the answer, an error,
// or its own time-out): the plugin's view, from outside.
func (l *simLoad) seen(node int, req *http.Request, a *simAnswer) {
	if l == nil || req.URL.Path != tokenPath {
		return
	}
	s := l.w.idp
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vs().dead[node] {
		return // a node a restart ended (sim_vault_test.go): nothing reaches a plugin there
	}
	now := time.Now()
	gaveUp := (a.err == nil || a.delay > 0) && now.Before(a.deliverAt)
	timeout := gaveUp && errors.Is(req.Context().Err(), context.DeadlineExceeded)
	var ne net.Error
	if !gaveUp && errors.As(a.err, &ne) && ne.Timeout() {
		timeout = true
	}
	life, bearer := acceptedToken(a)
	bearer = bearer && !gaveUp
	// The config's health as the plugin's outage rule counts it (outageSign).
	failed := timeout || gaveUp || a.err != nil || a.status >= 500 || a.status == 200 && !bearer && !strings.Contains(a.body, `"token_type"`)
	rt := a.rt
	if rt == nil {
		return
	}
	key := simNodeApp{node, rt.app}
	d := l.down[key]
	if d == nil {
		d = &simDown{}
		l.down[key] = d
	}
	if failed {
		if d.fails++; d.fails >= downAfter {
			d.down = true
		}
	} else {
		d.fails = 0 // answered
		if d.down {
			d.down, d.back = false, now
		}
	}
	k := simNodeRT{node, rt}
	if timeout {
		l.timedOut[k] = now
	}
	if bearer {
		// The plugin dates a token from its request's start (newTokenResult): the
		// moment it reached the server, every answer taking a delay and a millisecond.
		sent := a.deliverAt.Add(-a.delay - time.Millisecond)
		l.tok[rt.cred] = simGot{at: sent, expires: sent.Add(life)}
		delete(l.runs, k)
		return
	}
	run := l.runs[k]
	switch {
	case run == nil:
	case a.status == 429:
		// A 429 ends the request with it, and failure memory keeps what it had before
		// that request: the run's count starts again (lenient).
		delete(l.runs, k)
	case a.status >= 400 && a.status < 500:
		delete(l.runs, k) // refused: nothing more is sent
	case failed || a.status == 200:
		run.lastFail = now
		if d.down {
			run.excused = true
		}
	}
}

// downOrRecovering: node's config of app is down by the plugin's outage rule, or came
// back within recoveryBound (probes and the recovery send what no reader asks for).
func (l *simLoad) downOrRecovering(node int, app string, now time.Time) bool {
	d := l.down[simNodeApp{node, app}]
	return d != nil && (d.down || d.fails >= downAfter-1 || !d.back.IsZero() && now.Sub(d.back) < recoveryBound)
}

// checkArrival checks a token request of an authorized credential as it reaches apaleo.
func (l *simLoad) checkArrival(node int, app *simApp, secret string, rt *simRefresh, now time.Time) {
	if l == nil || rt == nil || l.w.idp.faultKinds == nil {
		return // the setup's imports
	}
	s := l.w.idp
	k := simNodeRT{node, rt}

	// A refresh that timed out may have been spent: not sent again at once.
	if at, ok := l.timedOut[k]; ok && now.Sub(at) < backoffBase {
		s.violate("creds/%s: a refresh token was sent again %s after its send timed out (apaleo may have spent it: failure memory's backoff of %s first)",
			rt.cred, now.Sub(at).Round(time.Millisecond), backoffBase)
	}

	// One attempt per backoff step.
	drops, _ := l.drops(app.id)
	run := l.runs[k]
	if run != nil && (run.secret != secret || run.drops != drops) {
		run = nil // a config write with a new connection clears failure memory (clearFailures)
	}
	if run == nil {
		run = &simRun{secret: secret, drops: drops}
		l.runs[k] = run
	}
	if run.excused || l.downOrRecovering(node, app.id, now) {
		run.excused = true
	} else if run.sends >= 2 && !run.lastFail.IsZero() {
		step := run.sends - 1 // the first two sends may be one request's
		want := backoffBase
		for i := 1; i < step && want < backoffMax; i++ {
			want *= 2
		}
		want = min(want, backoffMax)
		if gap := now.Sub(run.lastFail); gap < want {
			s.violate("creds/%s: send %d of a failing refresh token %s after the failure before it, before failure memory's backoff of %s (5 s doubling to 5 min)",
				rt.cred, run.sends+1, gap.Round(time.Millisecond), want)
		}
	}
	run.sends++

	spec := l.appSpec(app.id)
	if s.refused[rt.cred] {
		return
	}
	got, ok := l.tok[rt.cred]
	if !ok {
		return
	}
	// Keep-alive: no refresh token idles longer than idle_refresh_interval while apaleo
	// is healthy. Excused where apaleo's trouble (a fault, an outage, a 429, a refused
	// client) fell in the keep-alive's last tenth or after it, since failure memory and
	// the hold move the attempt then.
	// The refresh token's idle time runs from the token it brought, or from its making
	// (an import's, before its first token).
	used := got.at
	if rt.created.After(used) {
		used = rt.created
	}
	if idle := now.Sub(used); spec.idle > 0 && idle > spec.idle+keepAliveTolerance {
		from := used.Add(spec.idle - spec.idle/10 - backoffMax)
		troubled := false
		for _, tr := range s.trouble[app.id] {
			troubled = troubled || !tr.to.Before(from)
		}
		if !troubled && !l.downOrRecovering(node, app.id, now) {
			s.violate("creds/%s: its refresh token idled %s, longer than idle_refresh_interval %s, with apaleo healthy",
				rt.cred, idle.Round(time.Second), spec.idle)
		}
	}

	// A burst's readers join one flight (of the name's token dropped: no background work
	// of it), which sends at most twice: a reader queued behind it makes no request of
	// its own. Excused where another read of the name began within a read's bound of
	// the burst, and in an outage.
	rs := l.readsOf(rt.cred)
	for _, win := range l.windows {
		if win.cred != rt.cred || now.Sub(win.from) > readBound || now.Before(win.from) {
			continue
		}
		win.sends[node]++
		others := 0
		for _, at := range rs.started {
			if at.After(win.from.Add(-readBound)) && at.Before(win.from) || at.After(win.from.Add(time.Millisecond)) {
				others++ // not one of the burst's readers (they begin a nanosecond apart)
			}
		}
		if win.sends[node] > maxRefreshSends && others == 0 && !l.downOrRecovering(node, app.id, now) {
			s.violate("creds/%s: %d token requests within %s of a burst of readers of it that one flight serves (at most %d sends): a reader queued behind the flight sent its own",
				rt.cred, win.sends[node], now.Sub(win.from).Round(time.Millisecond), maxRefreshSends)
		}
	}

	// Every request is explained.
	if rs.open > 0 || !rs.last.IsZero() && now.Sub(rs.last) < readBound {
		return // a read's (joined or its own)
	}
	if v := s.vs(); !rs.last.IsZero() && v.lastFault.After(rs.last) && now.Sub(v.lastFault) < readBound {
		// A read's flight outlives its reader (the flight does not take the read's
		// cancellation), and storage that stalled or failed since the read began
		// (sim_vault_test.go) moved its sends by as much: a read's bound after the last.
		return
	}
	_, dropped := l.drops(app.id)
	// (2 s more: background work decides while the token is valid and sends at its
	// booked moment, up to a second later)
	valid := now.Before(got.expires.Add(-expirySkew+2*time.Second)) && dropped.Before(got.at)
	served := !rs.last.Before(got.at.Add(-time.Microsecond)) // a read came after it was issued (inUse)
	for _, e := range rs.served {
		served = served || e.Sub(got.expires).Abs() < 1500*time.Millisecond
	}
	switch {
	case valid && served: // refresh-ahead (or its next attempt) of a token in use
	case spec.idle > 0 && now.Sub(got.at) >= spec.idle-spec.idle/10-keepAliveTolerance: // keep-alive
	case l.downOrRecovering(node, app.id, now): // a probe, or the recovery after the outage
	case now.Sub(l.lastReauthorized(rt.cred)) < reauthorizeExplains: // the import of a new authorization
	default:
		what := "expired or dropped"
		if valid {
			what = "valid, never read"
		}
		s.violate("creds/%s: a token request no read (the last: %s), refresh-ahead of a token in use, keep-alive or outage explains (its token %s, got %s ago)",
			rt.cred, ago(now, rs.last), what, now.Sub(got.at).Round(time.Second))
	}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// loadRNG is the rng of one load event: the seed's, the event's kind and moment.
func (w *simWorld) loadRNG(e simEvent) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|%s|%d", e.kind, e.app, e.cred, e.at)
	return rand.New(rand.NewPCG(w.sc.seed, h.Sum64()))
}

// applyLoad carries out one of the load's events.
func (w *simWorld) applyLoad(e simEvent) {
	r := w.loadRNG(e)
	s := w.idp
	now := time.Now()
	switch e.kind {
	case "load-burst":
		w.readBursts(r, []string{e.cred}, nil, true)
	case "load-crowd":
		w.apply(simEvent{kind: "scopes", app: e.app})
		all, bursts := w.sc.credNames(e.app), []string(nil)
		for range 3 + r.IntN(4) {
			bursts = append(bursts, all[r.IntN(len(all))])
		}
		// The cold reads at once, with apaleo answering 429 for a while (a Retry-After of a
		// few seconds), and bursts on a few names, a few seconds apart while the budget
		// drains: each burst's readers join one flight, which sends a refresh token at
		// most twice (maxRefreshSends) within a read's bound.
		s.mu.Lock()
		ra, d := time.Duration(2+r.IntN(7))*time.Second, time.Duration(20+r.IntN(41))*time.Second
		s.bursts[e.app] = simBurst{until: now.Add(d), retryAfter: ra, delay: 200 * time.Millisecond}
		s.addTrouble(e.app, "429", now, now.Add(d+ra))
		s.mu.Unlock()
		var wg sync.WaitGroup
		ra0, rb := rand.New(rand.NewPCG(w.sc.seed, r.Uint64())), rand.New(rand.NewPCG(w.sc.seed, r.Uint64()))
		wg.Go(func() { w.readBursts(ra0, nil, all, false) })
		<-w.after(time.Nanosecond)
		for _, n := range bursts {
			<-w.after(time.Duration(3000+rb.IntN(12000)) * time.Millisecond)
			s.mu.Lock()
			s.load.windows = append(s.load.windows, &simWindow{cred: n, from: time.Now(), sends: map[int]int{}})
			s.mu.Unlock()
			w.readBursts(rb, []string{n}, nil, false)
		}
		wg.Wait()
	case "load-falling":
		// Cold reads of the app meet a 429 burst whose every answer says a shorter
		// Retry-After than the one before.
		w.apply(simEvent{kind: "scopes", app: e.app})
		s.mu.Lock()
		s.bursts[e.app] = simBurst{until: now.Add(e.dur), retryAfter: e.ra, delay: time.Duration(200+r.IntN(600)) * time.Millisecond}
		s.load.falling[e.app] = &simFalling{ra: e.ra, step: time.Duration(1+r.IntN(3)) * time.Second}
		s.addTrouble(e.app, "429", now, now.Add(e.dur+e.ra))
		s.mu.Unlock()
		w.readBursts(r, nil, w.sc.credNames(e.app), false)
	case "load-flaky":
		s.mu.Lock()
		s.load.flaky[e.cred] = now.Add(e.dur)
		s.addTrouble(w.credApp(e.cred), "flaky-name", now, now.Add(e.dur))
		s.mu.Unlock()
	case "load-unread":
		// A credential read once (its token in use, refresh-ahead planned), then a scope
		// change drops its token and a client that hangs up at once reads it: the next
		// token is fetched and nobody reads it.
		app := w.sc.app(w.credApp(e.cred))
		w.readOnce(e.cred, 0, r)
		fresh := app.lifetime - min(15*time.Minute, app.lifetime/2)
		<-w.after(time.Duration(float64(fresh-min(fresh/3, 5*time.Minute)) * (0.1 + 0.4*r.Float64())))
		w.apply(simEvent{kind: "scopes", app: app.name})
		w.readOnce(e.cred, time.Duration(1+r.IntN(8))*time.Millisecond, r)
	}
}

func (w *simWorld) credApp(name string) string {
	for _, c := range w.sc.creds {
		if c.name == name {
			return c.app
		}
	}
	panic(name)
}

// readOnce reads name once, as a client whose own deadline is d (0: Vault's).
func (w *simWorld) readOnce(name string, d time.Duration, rng *rand.Rand) simRead {
	ctx, cancel := w.readerContext(name)
	defer cancel()
	if d > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, w.idp.claim(time.Now().Add(d)))
		defer c2()
	}
	return w.readCtx(ctx, name, rng)
}

// readBursts reads every name of all once and each name of bursts with 3-8 readers,
// all at once (a nanosecond apart, in a seeded order); with retry, a burst's reader that
// gets an error reads again 1-5 s later, up to three times.
func (w *simWorld) readBursts(r *rand.Rand, bursts, all []string, retry bool) {
	type reader struct {
		name  string
		retry bool
	}
	var rs []reader
	for _, n := range all {
		rs = append(rs, reader{name: n})
	}
	for _, n := range bursts {
		for range 3 + r.IntN(6) {
			rs = append(rs, reader{name: n, retry: retry})
		}
	}
	r.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	var wg sync.WaitGroup
	for _, rd := range rs {
		rng := rand.New(rand.NewPCG(w.sc.seed, r.Uint64()))
		wg.Go(func() {
			for try := 0; ; try++ {
				res := w.readOnce(rd.name, 0, rng)
				if res.err == nil || res.gaveUp || !rd.retry || try == 3 {
					return
				}
				<-w.after(time.Duration(1000+rng.IntN(4000)) * time.Millisecond)
			}
		})
		// At an instant of its own (claim): a nanosecond's sleep may meet a policy
		// sleep's wake, and synctest fires the timers of one instant in an order of its
		// own.
		<-w.after(time.Nanosecond)
	}
	wg.Wait()
}

// wakeOf is the instant a policy sleep until t wakes at (simIDP.wake), shifted by up to
// a microsecond by a hash of the seed and the sleep's config: where the scheduler
// (background.go) starts the work of several configs at one instant (two apps
// recovering at once), their sleeps until one moment ask for their instants in the Go
// scheduler's order, and the first to ask would wake first (claim); shifted, each
// config's wake is the seed's wherever it asks. The server still judges the budget by
// the moment asked for (sentAt).
func (w *simWorld) wakeOf(ctx context.Context, t time.Time) time.Time {
	g, ok := ctx.Value(attemptGuardKey{}).(*attemptGate)
	if !ok {
		return w.idp.wake(t)
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s", w.sc.seed, g.config)
	wake := w.idp.wake(t.Add(time.Duration(h.Sum64() % 1000)))
	w.idp.mu.Lock()
	w.idp.slept[wake] = t
	w.idp.mu.Unlock()
	return wake
}
