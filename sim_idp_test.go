package apaleo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing/synctest"
	"time"
)

// sim_idp_test.go is the simulator's apaleo: an in-memory identity server behind an
// http.RoundTripper, in virtual time (testing/synctest). It keeps what apaleo keeps
// (refresh tokens that rotate on use with a sliding lifetime, per-app rate limits with
// 429 Retry-After, revocation), answers with the faults its schedule says, and checks the
// engine's invariants where they can be seen from outside: at the server, as requests
// arrive. Nothing here reads the plugin's own state.

// simApp is one apaleo app as the server knows it.
type simApp struct {
	id      string
	secrets map[string]bool
	// limit is the server's own rate limit (requests a second, 0: none); budget is what
	// the config in Vault says the app may send (max_token_requests_per_second).
	limit, budget float64
	lifetime      time.Duration // access tokens
	arrivals      []time.Time   // token requests, in order
	// sent are the moments the plugin sent them at (simIDP.sentAt), in order: what its
	// budget spaced.
	sent []time.Time
	// holds are the 429s delivered, by the node they were delivered to.
	holds []simHold
	// refusedClient: an invalid_client delivered to a node, until the config is written.
	refusedClient map[int]time.Time
}

type simHold struct {
	node      int
	delivered time.Time
	until     time.Time
}

// simRefresh is one refresh token.
type simRefresh struct {
	cred     string
	app      string
	created  time.Time
	lastUsed time.Time
	spent    bool // rotated: a new one was issued for it
	revoked  bool
	answered bool // an answer that used or refused it was delivered
	// lost: the answer of the request that spent it never reached the plugin (a fault
	// after apaleo handled it, or a client that gave up): a refusal of it is apaleo's.
	lost bool
	// outstanding: until when an answer to a send of it is still on its way.
	outstanding time.Time
	// arrivals by node, for the lost-answer rule.
	arrivals map[int][]time.Time
	history  []string // what became of each presentation, for the report
}

// simFault is what the server does with one request instead of (or besides) answering.
type simFault int

const (
	faultNone         simFault = iota
	faultGatewayFirst          // a proxy's 502 before apaleo saw the request
	faultGatewayAfter          // apaleo handled it, a proxy answered 502
	faultDropFirst             // the connection died before apaleo saw it
	faultDropAfter             // apaleo handled it, the answer was lost
	faultRefused               // no connection (nothing sent)
	faultSlow                  // handled, answered late
	faultUnreadable            // handled, answered 200 with garbage
	fault429                   // rate limited, Retry-After
	fault503                   // apaleo down, nothing handled
	faultMAC                   // handled (a refresh token rotated), answered 200 with token_type mac
)

var simFaultNames = map[simFault]string{faultNone: "none", faultGatewayFirst: "gateway-502-before", faultGatewayAfter: "gateway-502-after",
	faultDropFirst: "drop-before", faultDropAfter: "drop-after", faultRefused: "connection-refused", faultSlow: "slow",
	faultUnreadable: "unreadable-200", fault429: "429", fault503: "503", faultMAC: "mac-200"}

// simTrouble is a span in which an app's server misbehaved (any fault), for the
// invariant on readers that should not wait.
type simTrouble struct {
	from, to time.Time
	what     string
}

type simIDP struct {
	mu   sync.Mutex
	seed uint64
	rng  *rand.Rand // this request's: drawn from the seed, the request and its moment
	apps map[string]*simApp
	// tokens are the refresh tokens by value.
	tokens map[string]*simRefresh
	// refused: credentials a refresh token of which the server refused or revoked.
	refused map[string]bool
	// failed: when a token request of each authorized credential last met a fault.
	failed  map[string]time.Time
	seq     int
	sliding time.Duration // refresh tokens die unused for this long
	// faults of the schedule in force: per-request random ones and spans.
	faultRate  float64
	faultKinds []simFault
	outages    map[string]simOutage // by app ("" for all)
	bursts     map[string]simBurst
	trouble    map[string][]simTrouble
	standbys   map[int]bool // nodes that must not send
	violations []string
	requests   int
	// trace is a digest of every request in the order and at the moment it came, with
	// what befell it: two runs of one seed that agree on it saw the same run.
	trace     hash.Hash64
	lines     []string // the trace's records, kept when keepLines (a replay's diff)
	keepLines bool
	// sequenced: requests wait in pending for the sequencer (sequence), kicked on arrival.
	sequenced bool
	pending   []simArrival
	kick      chan struct{}
	taken     map[time.Time]bool // instants claimed by a timer (claim)
	// slept: the moment a policy sleep asked for, by the instant it woke at (wake).
	slept map[time.Time]time.Time
	// load is sim_load_test.go's: its faults and invariants (nil: none).
	load *simLoad
	// codeGrant, where a test taught the server the authorization_code grant
	// (sim_authcode_test.go), answers it; called under mu.
	codeGrant func(node int, app *simApp, secret string, form url.Values, now time.Time) simAnswer
	vault     simVault // Vault's own faults (sim_vault_test.go)
}

type simOutage struct {
	until time.Time
	kind  simFault // fault503 or faultRefused
}

type simBurst struct {
	until      time.Time
	retryAfter time.Duration
	delay      time.Duration // before the 429 is answered
	form       string        // how Retry-After says it (retryAfterForms)
}

// retryAfterForms are the ways apaleo's 429 may say how long to wait: seconds (the
// usual), no header at all (the plugin backs off from backoffBase), seconds over the
// plugin's cap of maxHold, and with -sim.dates an HTTP date. Dates are off by default:
// every hold they make ends at one whole second, where the refresh-ahead of many names
// comes due together, and the goroutines the plugin's scheduler (background.go) starts at
// one instant run in an order the seed does not decide: replays part there (seed 9).
func retryAfterForms() []string {
	if *simDates {
		return []string{"seconds", "seconds", "none", "date", "long"}
	}
	return []string{"seconds", "seconds", "none", "long"}
}

// holdOf is the hold a 429 delivered at t with Retry-After ra in form must make at
// least: a date says its second, a missing header failure memory's first backoff, and
// no hold outlasts maxHold.
func holdOf(t time.Time, ra time.Duration, form string) time.Time {
	switch form {
	case "none":
		return t.Add(backoffBase)
	case "date":
		return t.Add(ra).Truncate(time.Second)
	}
	return t.Add(min(ra, maxHold))
}

func newSimIDP(seed uint64, sliding time.Duration) *simIDP {
	return &simIDP{seed: seed, rng: rand.New(rand.NewPCG(seed, 2)), apps: map[string]*simApp{}, tokens: map[string]*simRefresh{}, refused: map[string]bool{}, failed: map[string]time.Time{},
		trace: fnv.New64a(), sliding: sliding, outages: map[string]simOutage{}, bursts: map[string]simBurst{}, trouble: map[string][]simTrouble{}, standbys: map[int]bool{}}
}

// record adds one record to the trace.
func (s *simIDP) record(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	s.trace.Write([]byte(line))
	if s.keepLines {
		s.lines = append(s.lines, line)
	}
}

func (s *simIDP) violate(format string, args ...any) {
	s.violations = append(s.violations, time.Now().UTC().Format("Jan 2 15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

func (s *simIDP) addTrouble(app, what string, from, to time.Time) {
	s.trouble[app] = append(s.trouble[app], simTrouble{from, to, what})
}

// issueRefresh makes a refresh token for cred (an authorization or import).
func (s *simIDP) issueRefresh(app, cred string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newRefreshLocked(app, cred)
}

func (s *simIDP) newRefreshLocked(app, cred string) string {
	s.seq++
	tok := fmt.Sprintf("rt-%s-%d", cred, s.seq)
	now := time.Now()
	s.tokens[tok] = &simRefresh{cred: cred, app: app, created: now, lastUsed: now, arrivals: map[int][]time.Time{}}
	return tok
}

// revokeCred revokes every live refresh token of cred at the server (an admin's doing).
func (s *simIDP) revokeCred(cred string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rt := range s.tokens {
		if rt.cred == cred && !rt.spent {
			rt.revoked = true
		}
	}
	s.refused[cred] = true
}

// transport is the network of node n: every request it sends arrives here.
func (s *simIDP) transport(node int) http.RoundTripper {
	return simTransport{s: s, node: node}
}

type simTransport struct {
	s    *simIDP
	node int
}

// simAnswer is what the server decided, to deliver after latency.
type simAnswer struct {
	status     int
	body       string
	retryAfter time.Duration
	// retryAfterRaw, where set, is the Retry-After header as sent (an HTTP date, say).
	retryAfterRaw  string
	retryAfterForm string        // "none": no header; "date": an HTTP date retryAfter ahead of delivery
	err            error         // a transport error instead of an answer
	delay          time.Duration // before the answer (or the error) reaches the client
	onDeliver      func()        // what delivery means at the server (a refresh token answered)
	deliverAt      time.Time     // the instant it reaches the client (claim)
	rt             *simRefresh   // the refresh token the request presented
	spends         *simRefresh   // the refresh token this answer's success spent
}

func (t simTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(body))
	a := t.s.arrive(simArrival{node: t.node, req: req, form: form, key: form.Encode()})
	defer t.s.load.seen(t.node, req, &a) // sim_load_test.go: what the plugin got, and when
	if a.err == nil || a.delay > 0 {
		timer := time.NewTimer(time.Until(a.deliverAt))
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
			t.s.mu.Lock()
			if a.spends != nil {
				a.spends.lost = true // the plugin gave up on the answer
			}
			if a.rt != nil && a.rt.outstanding.Equal(a.deliverAt) {
				// The plugin hung up: no answer of this send can reach it any more.
				a.rt.outstanding = time.Now()
			}
			t.s.mu.Unlock()
			return nil, req.Context().Err()
		}
	}
	if t.s.lostToRestart(t.node, a) {
		return nil, errors.New("the plugin restarted")
	}
	if a.err != nil {
		return nil, a.err
	}
	if a.onDeliver != nil {
		t.s.mu.Lock()
		a.onDeliver()
		t.s.mu.Unlock()
	}
	h := http.Header{"Content-Type": {"application/json"}}
	switch {
	case a.retryAfterForm == "none":
	case a.retryAfterForm == "date":
		h.Set("Retry-After", time.Now().Add(a.retryAfter).UTC().Format(http.TimeFormat))
	case a.retryAfter > 0:
		h.Set("Retry-After", fmt.Sprint(int(a.retryAfter/time.Second)))
	}
	if a.retryAfterRaw != "" {
		h.Set("Retry-After", a.retryAfterRaw)
	}
	return &http.Response{StatusCode: a.status, Header: h, Body: io.NopCloser(strings.NewReader(a.body)), Request: req,
		ContentLength: int64(len(a.body))}, nil
}

// simArrival is one request as it reached the server, waiting for its turn.
type simArrival struct {
	node  int
	req   *http.Request
	form  url.Values
	key   string         // what orders it among the requests of one moment
	reply chan simAnswer // the sequencer's decision
}

// arrive hands a request to the server. With the sequencer running, the requests that
// reach it at one virtual moment are handled in an order drawn from the seed and the
// requests themselves, never in the order the Go scheduler happened to run their
// goroutines: that order (and with it the server's state, its token names and the trace)
// is the same in every replay.
func (s *simIDP) arrive(a simArrival) simAnswer {
	s.mu.Lock()
	if !s.sequenced {
		s.mu.Unlock()
		return s.handleArrival(a)
	}
	a.reply = make(chan simAnswer, 1)
	s.pending = append(s.pending, a)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return <-a.reply
}

// sequence runs the server's queue until ctx ends: after each arrival it waits until
// every goroutine of the bubble is blocked (so every request of this moment has
// arrived: the clock cannot move meanwhile), then handles them all in the seeded order.
func (s *simIDP) sequence(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		synctest.Wait()
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		order := func(a simArrival) uint64 {
			h := fnv.New64a()
			fmt.Fprintf(h, "%d|%d|%s|%s", s.seed, a.node, a.req.URL.Path, a.key)
			return h.Sum64()
		}
		sort.SliceStable(batch, func(i, j int) bool { return order(batch[i]) < order(batch[j]) })
		for _, a := range batch {
			a.reply <- s.handleArrival(a)
		}
	}
}

// startSequencer makes the server order the requests of each moment (sequence); the
// returned function stops it, answering any request still queued.
func (s *simIDP) startSequencer() func() {
	ctx, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	s.sequenced, s.kick = true, make(chan struct{}, 1)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { defer close(done); s.sequence(ctx) }()
	return func() {
		stop()
		<-done
		s.mu.Lock()
		s.sequenced = false
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		for _, a := range batch {
			a.reply <- s.handleArrival(a)
		}
	}
}

func (s *simIDP) handleArrival(a simArrival) simAnswer {
	var ans simAnswer
	switch a.req.URL.Path {
	case tokenPath:
		ans = s.token(a.node, a.req, a.form)
	case revocationPath:
		ans = s.revocation(a.req, a.form)
	default:
		ans = simAnswer{status: 404, body: "{}"}
	}
	s.mu.Lock()
	ans.deliverAt = s.claimLocked(time.Now().Add(ans.delay + time.Millisecond)) // every answer takes a moment
	if ans.rt != nil && (ans.err == nil || ans.delay > 0) {
		ans.rt.outstanding = ans.deliverAt
	}
	s.mu.Unlock()
	return ans
}

// claim returns the first nanosecond from t on that no answer or policy sleep has taken,
// and takes it. Timers of a synctest bubble that fire at one instant fire in an order
// the runtime draws anew each run (runtime/time.go); the simulator's own never share one.
func (s *simIDP) claim(t time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claimLocked(t)
}

func (s *simIDP) claimLocked(t time.Time) time.Time {
	if s.taken == nil {
		s.taken = map[time.Time]bool{}
	}
	if now := time.Now(); len(s.taken) > 4096 {
		for at := range s.taken {
			if at.Before(now) {
				delete(s.taken, at)
				delete(s.slept, at)
			}
		}
	}
	for s.taken[t] {
		t = t.Add(time.Nanosecond)
	}
	s.taken[t] = true
	return t
}

// wake claims the instant a policy sleep until t wakes at (after t, so after the
// instant's other timers) and remembers t for it (sentAt).
func (s *simIDP) wake(t time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.claimLocked(t.Add(time.Nanosecond))
	if s.slept == nil {
		s.slept = map[time.Time]time.Time{}
	}
	s.slept[w] = t
	return w
}

// sentAt is the moment the plugin meant a request arriving now to go at: every send
// follows a policy sleep until its budget slot, which wakes a few nanoseconds after it
// (wake), and by a different few for each sleeper. Judged by the instants they woke
// at, slots exactly 1/budget apart would seem to crowd one second by those nanoseconds.
func (s *simIDP) sentAt(now time.Time) time.Time {
	if t, ok := s.slept[now]; ok {
		return t
	}
	return now
}

func (s *simIDP) revocation(req *http.Request, form url.Values) simAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt := s.tokens[form.Get("token")]; rt != nil {
		rt.revoked = true
	}
	return simAnswer{status: 200, body: ""}
}

func clientOf(req *http.Request, form url.Values) (string, string) {
	if id, secret, ok := req.BasicAuth(); ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		return id, secret
	}
	return form.Get("client_id"), form.Get("client_secret")
}

// token handles a token request as it arrives: checks the invariants, then decides.
func (s *simIDP) token(node int, req *http.Request, form url.Values) simAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.tokenLocked(node, req, form)
	a.rt = s.tokens[form.Get("refresh_token")]
	return a
}

func (s *simIDP) tokenLocked(node int, req *http.Request, form url.Values) simAnswer {
	now := time.Now()
	s.requests++
	id, secret := clientOf(req, form)
	// What befalls a request depends on the seed, the request and its moment, not on
	// which of the requests of one instant the scheduler ran first: replays match.
	h := fnv.New64a()
	h.Write([]byte(id + "|" + form.Encode()))
	s.rng = rand.New(rand.NewPCG(s.seed^h.Sum64(), uint64(now.UnixNano())))
	app := s.apps[s.appKey(req, id)]
	if app == nil {
		return simAnswer{status: 400, body: `{"error":"invalid_client"}`}
	}
	grant := form.Get("grant_type")
	rt := s.tokens[form.Get("refresh_token")]
	fault := s.vaultFault(node, app, rt, s.load.nameFault(app, rt, s.faultFor(app, now), now)) // sim_vault_test.go, sim_load_test.go
	s.record("%d|%d|%s|%s|%d\n", now.UnixNano(), node, id, form.Encode(), fault)
	if fault == faultRefused {
		// No connection: nothing reached apaleo.
		return simAnswer{err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	}
	s.checkArrival(node, app, grant, rt, now)
	s.load.checkArrival(node, app, secret, rt, now) // sim_load_test.go
	app.arrivals = append(app.arrivals, now)
	sent := s.sentAt(now)
	app.sent = slices.Insert(app.sent, sort.Search(len(app.sent), func(i int) bool { return app.sent[i].After(sent) }), sent)
	if fault == faultNone && app.limit > 0 && countSince(app.arrivals, now.Add(-time.Second)) > int(app.limit) {
		fault = fault429 // apaleo's own rate limit
	}
	if rt != nil && fault != fault429 {
		// A 429 spends nothing: the hold's rule (checkArrival) covers what follows it.
		rt.arrivals[node] = append(rt.arrivals[node], now)
	}
	if rt != nil && fault != faultNone {
		s.failed[rt.cred] = now
	}
	if rt != nil {
		rt.history = append(rt.history, fmt.Sprintf("%s node %d: %s", now.UTC().Format("15:04:05.000"), node, simFaultNames[fault]))
	}
	switch fault {
	case faultDropFirst:
		return simAnswer{err: io.ErrUnexpectedEOF, delay: s.latency()}
	case faultGatewayFirst, fault503:
		return simAnswer{status: 502, body: "<html>bad gateway</html>", delay: s.latency()}
	case fault429:
		b := s.bursts[app.id]
		ra, form := b.retryAfter, b.form
		if ra == 0 {
			ra = time.Duration(1+s.rng.IntN(5)) * time.Second
			if s.faultKinds != nil { // the run's, not the setup's: its imports need their answers
				forms := retryAfterForms()
				form = forms[s.rng.IntN(len(forms)-1)] // a random 429 is never long
			}
		}
		ra = s.load.retryAfter(app, ra) // sim_load_test.go: falling Retry-After
		d := b.delay + s.latency()
		return simAnswer{status: 429, body: `{"error":"slow_down"}`, retryAfter: ra, retryAfterForm: form, delay: d, onDeliver: func() {
			t := time.Now()
			until := holdOf(t, ra, form)
			app.holds = append(app.holds, simHold{node: node, delivered: t, until: until})
			if form == "none" {
				until = t.Add(backoffMax) // how long the plugin backs off past backoffBase is its own
			}
			s.addTrouble(app.id, "429", t, until)
		}}
	}

	var a simAnswer
	if grant == "authorization_code" && s.codeGrant != nil {
		a = s.codeGrant(node, app, secret, form, now)
	} else {
		a = s.handle(node, app, grant, secret, rt, now)
	}
	lose := func(b simAnswer) simAnswer {
		if a.spends != nil {
			a.spends.lost = true
		}
		return b
	}
	switch fault {
	case faultGatewayAfter:
		return lose(simAnswer{status: 502, body: "<html>bad gateway</html>", delay: s.latency()})
	case faultDropAfter:
		return lose(simAnswer{err: io.ErrUnexpectedEOF, delay: s.latency()})
	case faultUnreadable:
		if a.status == 200 {
			return lose(simAnswer{status: 200, body: `{"access_token":`, delay: s.latency()})
		}
	case faultMAC:
		// Read but refused by the plugin: its rotated refresh token must be kept.
		a.body = strings.Replace(a.body, `"token_type":"Bearer"`, `"token_type":"mac"`, 1)
	case faultTimeoutAfter: // sim_load_test.go
		return lose(s.load.timeoutAfter(app, now))
	case faultSlow:
		a.delay += time.Duration(1+s.rng.IntN(40)) * time.Second
		if s.rng.IntN(4) == 0 {
			// Slower than the plugin waits for a refresh (refreshTimeout, a minute): it gives
			// up on the answer, which the transport then notes as lost (spends.lost).
			a.delay = time.Minute + time.Duration(1+s.rng.IntN(60))*time.Second
		}
		s.addTrouble(app.id, "slow", now, now.Add(a.delay))
	}
	return s.vaultAnswer(app, rt, a, now)
}

func (s *simIDP) latency() time.Duration {
	return time.Duration(5+s.rng.IntN(200)) * time.Millisecond
}

// faultFor draws what goes wrong with a request of app at now, and notes it as trouble.
func (s *simIDP) faultFor(app *simApp, now time.Time) simFault {
	f := faultNone
	for _, key := range []string{"", app.id} {
		if o, ok := s.outages[key]; ok && now.Before(o.until) {
			f = o.kind
		}
	}
	if b, ok := s.bursts[app.id]; f == faultNone && ok && now.Before(b.until) {
		f = fault429
	}
	if f == faultNone && s.faultRate > 0 && s.rng.Float64() < s.faultRate {
		f = s.faultKinds[s.rng.IntN(len(s.faultKinds))]
	}
	if f != faultNone && f != fault429 && f != faultSlow {
		s.addTrouble(app.id, simFaultNames[f], now, now)
	}
	return f
}

// countSince counts the arrivals after t (arrivals are in order).
func countSince(arrivals []time.Time, t time.Time) int {
	i := sort.Search(len(arrivals), func(i int) bool { return arrivals[i].After(t) })
	return len(arrivals) - i
}

// checkArrival checks what must hold of every token request that reaches apaleo.
func (s *simIDP) checkArrival(node int, app *simApp, grant string, rt *simRefresh, now time.Time) {
	if s.standbys[node] {
		s.violate("node %d, a performance standby, sent a token request of %s", node, app.id)
	}
	if sent := s.sentAt(now); app.budget > 0 {
		if n := countSince(app.sent, sent.Add(-time.Second)) - countSince(app.sent, sent) + 1; n > int(app.budget) {
			s.violate("app %s: %d token requests in one second, budget %g", app.id, n, app.budget)
		}
	}
	for _, h := range app.holds {
		if h.node == node && now.After(h.delivered) && now.Before(h.until) {
			s.violate("app %s: a token request (%s) %s after a 429 was answered to node %d with Retry-After %s",
				app.id, grant, now.Sub(h.delivered).Round(time.Millisecond), node, h.until.Sub(h.delivered))
		}
	}
	if at, ok := app.refusedClient[node]; ok {
		s.violate("app %s: a token request %s after invalid_client, with no config write since", app.id, now.Sub(at))
	}
	if rt == nil {
		return
	}
	if rt.answered {
		s.violate("creds/%s: a refresh token apaleo had answered was presented again (%s)", rt.cred, strings.Join(rt.history, "; "))
	}
	if now.Before(rt.outstanding) {
		s.violate("creds/%s: a refresh token was sent while an earlier send of it was still unanswered (its answer due in %s)", rt.cred, rt.outstanding.Sub(now).Round(time.Millisecond))
	}
	// Within one read or background attempt a refresh token goes out at most twice; after
	// that only at failure memory's next attempt (backoff from 5 s): never three times
	// in 5 s from one node.
	if prev := rt.arrivals[node]; len(prev) >= 2 && now.Sub(prev[len(prev)-2]) < backoffBase {
		s.violate("creds/%s: one refresh token presented %d times, 3 of them within %s (before: %s)", rt.cred, len(prev)+1, now.Sub(prev[len(prev)-2]).Round(time.Millisecond), strings.Join(rt.history, "; "))
	}
}

// refuse notes apaleo's refusal of rt by its cause. Only a revocation, a sliding
// lifetime that lapsed, or a spend whose answer a fault (or the plugin's own timeout)
// lost make the credential apaleo's to refuse (needs_authorization is right then); a
// refresh token the plugin spent itself and got the answer of, or sent to another
// app, is the plugin's bug.
func (s *simIDP) refuse(rt *simRefresh, app *simApp, now time.Time) {
	switch {
	case rt.revoked, !rt.spent && now.Sub(rt.lastUsed) > s.sliding, rt.spent && rt.lost:
		s.refused[rt.cred] = true
	case rt.app != app.id:
		s.violate("creds/%s: its refresh token was sent with the client of app %s, not its own %s", rt.cred, app.id, rt.app)
	default:
		s.violate("creds/%s: a refresh token the plugin had spent itself, its answer not lost, was presented again (%s)", rt.cred, strings.Join(rt.history, "; "))
	}
}

// handle does what apaleo does with a request that reaches it.
func (s *simIDP) handle(node int, app *simApp, grant, secret string, rt *simRefresh, now time.Time) simAnswer {
	if !app.secrets[secret] {
		return simAnswer{status: 400, body: `{"error":"invalid_client"}`, delay: s.latency(), onDeliver: func() {
			if app.refusedClient == nil {
				app.refusedClient = map[int]time.Time{}
			}
			app.refusedClient[node] = time.Now()
		}}
	}
	switch grant {
	case "client_credentials":
		return s.tokenAnswer(app, "", "")
	case "refresh_token":
		if rt == nil || rt.spent || rt.revoked || now.Sub(rt.lastUsed) > s.sliding || rt.app != app.id {
			if rt == nil {
				s.violate("app %s: a refresh token apaleo never issued was presented", app.id)
				return simAnswer{status: 400, body: `{"error":"invalid_grant"}`, delay: s.latency()}
			}
			s.refuse(rt, app, now)
			return simAnswer{status: 400, body: `{"error":"invalid_grant"}`, delay: s.latency(), onDeliver: func() { rt.answered = true }}
		}
		rt.spent = true
		rt.lastUsed = now
		next := s.newRefreshLocked(app.id, rt.cred)
		a := s.tokenAnswer(app, next, rt.cred)
		a.onDeliver = func() { rt.answered = true }
		a.spends = rt
		return a
	}
	return simAnswer{status: 400, body: `{"error":"unsupported_grant_type"}`}
}

func (s *simIDP) tokenAnswer(app *simApp, refresh, cred string) simAnswer {
	s.seq++
	v := map[string]any{"access_token": fmt.Sprintf("at-%s-%d", app.id, s.seq), "token_type": "Bearer",
		"expires_in": int(app.lifetime / time.Second), "scope": "reservations.read"}
	if refresh != "" {
		v["refresh_token"] = refresh
	}
	b, _ := json.Marshal(v)
	return simAnswer{status: 200, body: string(b), delay: s.latency()}
}

// configWritten notes a write of app's config in Vault: a refused client may ask again.
func (s *simIDP) configWritten(app string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[app].refusedClient = nil
}

var _ = context.Background
