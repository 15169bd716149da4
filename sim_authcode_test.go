package apaleo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"
	"testing/synctest"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// sim_authcode_test.go runs the authorization-code flow in the simulator: a seed draws
// admins who authorize, consent (as the right account or another), decline or let the
// link expire, callbacks and exchanges, second callbacks of one state, re-authorizations,
// replace=true, a newer link that supersedes an older one, deletes while a link is
// pending or its code on the wire, and restarts between consent and callback, all under
// the per-request faults of TestSim and with readers refreshing the credentials made.
// The simulated identity server learns the authorization_code grant (codeGrant) and
// checks what must hold as requests arrive; the end checks storage against it.
//
//	go test -run TestSimAuthCode                        a few schedules (every go test)
//	go test -run TestSimAuthCode -simauth.n=2000        many
//	go test -run TestSimAuthCode -simauth.seed=N -v     replay one, printing its schedule
//	go test -run TestSimAuthCode -simauth.twice         each twice: the traces must agree

var (
	simAuthSeed  = flag.Uint64("simauth.seed", 0, "TestSimAuthCode: replay this one schedule")
	simAuthN     = flag.Int("simauth.n", 20, "TestSimAuthCode: how many schedules to run")
	simAuthFirst = flag.Uint64("simauth.first", 1, "TestSimAuthCode: the first seed of the run")
	simAuthFails = flag.Int("simauth.maxfail", 5, "TestSimAuthCode: stop after this many failing schedules")
	simAuthTwice = flag.Bool("simauth.twice", false, "TestSimAuthCode: run each schedule twice and fail where the two traces differ")
)

// simAuthRegressions are seeds that once failed: each runs in every go test.
var simAuthRegressions = []uint64{}

// simAuthOpen are seeds that fail on the code as it is, not yet understood or fixed: they
// run with -simauth.open (go test -run 'TestSimAuthCode$' -simauth.open -v).
//
//	1400  app0 sent 3 token requests in one second, budget 2
//	1713  after a restart between consent and callback, creds/h1 holds the replaced
//	      authorization again and the new one's refresh token is live and unstored (the
//	      old node, cleaned, finishing a slow refresh? it passes without the restart)
var simAuthOpen = []uint64{1400, 1713}

var simAuthRunOpen = flag.Bool("simauth.open", false, "TestSimAuthCode: run the open seeds (simAuthOpen)")

func TestSimAuthCode(t *testing.T) {
	var seeds []uint64
	switch {
	case *simAuthSeed != 0:
		seeds = []uint64{*simAuthSeed}
	case *simAuthRunOpen:
		seeds = simAuthOpen
	default:
		for i := range *simAuthN {
			seeds = append(seeds, *simAuthFirst+uint64(i))
		}
		if *simAuthFirst == 1 {
			seeds = append(seeds, simAuthRegressions...)
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	failed := 0
	for _, seed := range seeds {
		ok := t.Run(fmt.Sprint(seed), func(t *testing.T) {
			var digests []uint64
			for range 1 + btoi(*simAuthTwice) {
				synctest.Test(t, func(t *testing.T) {
					if d, ok := runAuthSim(t, seed, *simAuthSeed != 0); ok {
						digests = append(digests, d)
					}
				})
			}
			if len(digests) == 2 && digests[0] != digests[1] {
				t.Errorf("seed %d: two runs gave different traces (%x, %x)", seed, digests[0], digests[1])
			}
		})
		if !ok {
			if failed++; failed >= *simAuthFails && *simAuthSeed == 0 {
				t.Fatalf("stopping after %d failing schedules", failed)
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// authSchedule is what a seed draws.
type authSchedule struct {
	seed       uint64
	duration   time.Duration
	apps       []simAppSpec
	ownApp     map[string]bool // apps whose redirect_uri is the operator's own (exchange)
	hotels     int
	standby    bool
	faultRate  float64
	faultKinds []simFault
	flows      []authFlow
	readEvery  time.Duration
}

// authFlow is one admin's authorization of creds/<name>.
type authFlow struct {
	at   time.Duration
	kind string // authorize, supersede, delete-pending, delete-inflight
	app  string
	name string
	// other: the admin signs in as another account than the one expected; replace: to
	// move the name to that account (authorize replace=true account_code=it).
	other, replace bool
	pin            bool   // authorize names account_code
	narrow         bool   // a narrower set of scopes
	decline        bool   // the admin declines at apaleo
	expire         bool   // the admin comes back after the link expired
	restart        bool   // the plugin restarts between consent and callback
	second         string // "", "replay" (the same callback again) or "again" (a second consent of the same link)
}

func (f authFlow) String() string {
	s := fmt.Sprintf("%8s %-15s creds/%s via %s", f.at.Round(time.Second), f.kind, f.name, f.app)
	for _, o := range []struct {
		on   bool
		what string
	}{{f.other, "other-account"}, {f.replace, "replace"}, {f.pin, "account_code"}, {f.narrow, "narrow"},
		{f.decline, "decline"}, {f.expire, "expire"}, {f.restart, "restart"}, {f.second != "", "second=" + f.second}} {
		if o.on {
			s += " " + o.what
		}
	}
	return s
}

func (sc *authSchedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %s, %d hotels, standby=%v, per-request faults %.2f %v, reads every %s\n",
		sc.seed, sc.duration, sc.hotels, sc.standby, sc.faultRate, faultNames(sc.faultKinds), sc.readEvery)
	for _, a := range sc.apps {
		fmt.Fprintf(&b, "  app %s budget=%g/s server-limit=%g/s own-redirect=%v\n", a.name, a.budget, a.limit, sc.ownApp[a.name])
	}
	for _, f := range sc.flows {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	return b.String()
}

func drawAuthSchedule(seed uint64) *authSchedule {
	r := rand.New(rand.NewPCG(seed, 0xa07))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	sc := &authSchedule{seed: seed, duration: between(3*time.Hour, 8*time.Hour), ownApp: map[string]bool{},
		hotels: 2 + r.IntN(4), standby: r.IntN(2) == 0, readEvery: between(5*time.Minute, 40*time.Minute)}
	sc.faultRate = []float64{0, 0.05, 0.15, 0.3}[r.IntN(4)]
	all := []simFault{faultGatewayFirst, faultGatewayAfter, faultDropFirst, faultDropAfter, faultRefused, faultSlow, faultUnreadable, fault429, faultMAC}
	for _, f := range all {
		if r.IntN(3) == 0 {
			sc.faultKinds = append(sc.faultKinds, f)
		}
	}
	if len(sc.faultKinds) == 0 {
		sc.faultKinds = []simFault{all[r.IntN(len(all))]}
	}
	for i := range 1 + r.IntN(2) {
		a := simAppSpec{name: fmt.Sprintf("app%d", i), grant: grantAuthorizationCode, budget: []float64{10, 5, 2}[r.IntN(3)],
			lifetime: []time.Duration{time.Hour, 20 * time.Minute}[r.IntN(2)], idle: 168 * time.Hour}
		if r.IntN(4) == 0 {
			a.limit = max(1, a.budget/2)
		}
		sc.ownApp[a.name] = i == 1
		sc.apps = append(sc.apps, a)
	}
	for range 6 + r.IntN(14) {
		sc.flows = append(sc.flows, drawFlow(r, sc, between(time.Minute, sc.duration-time.Hour)))
	}
	sort.SliceStable(sc.flows, func(i, j int) bool { return sc.flows[i].at < sc.flows[j].at })
	return sc
}

func drawFlow(r *rand.Rand, sc *authSchedule, at time.Duration) authFlow {
	chance := func(n int) bool { return r.IntN(n) == 0 }
	f := authFlow{at: at, kind: "authorize", app: sc.apps[r.IntN(len(sc.apps))].name, name: fmt.Sprintf("h%d", r.IntN(sc.hotels))}
	switch r.IntN(10) {
	case 0:
		f.kind = "supersede"
	case 1:
		f.kind = "delete-pending"
	case 2:
		f.kind = "delete-inflight"
	}
	f.pin, f.narrow, f.restart = chance(3), chance(4), chance(6)
	switch r.IntN(8) {
	case 0:
		f.other = true
	case 1:
		f.other, f.replace = true, true
	case 2:
		f.decline = true
	case 3:
		f.expire = true
	}
	if chance(3) {
		f.second = []string{"replay", "again"}[r.IntN(2)]
	}
	return f
}

// simCode is one authorization code the server issued at consent.
type simCode struct {
	code, app, redirect, challenge, account, tag, scope string
	// forbidden: the plugin must never send it (a second consent of a used link, the
	// link of a superseded, ended or expired authorization): why, for the report.
	forbidden string
	redeemed  bool // apaleo spent it: a refresh token was minted for it
	answered  bool // apaleo's own answer to it was delivered
	inflight  int  // sends of it whose answer is still on its way
	troubled  bool // a send of it met a fault (or was sent again after one)
	hold      time.Duration
}

// authSim is one running schedule of the code flow, on a simWorld.
type authSim struct {
	w    *simWorld
	sc   *authSchedule
	rng  *rand.Rand
	seq  int
	logs bytes.Buffer
	// what the server issued and learnt, under w.idp.mu
	codes     map[string]*simCode
	verifiers []string
	delivered map[string]bool // refresh tokens an answer carried to the plugin
	access    []string        // access tokens issued in a code answer
	codeSends int             // authorization_code requests the plugin sent
	// lastAuthURL is the auth_url authorize answered last (driver only).
	lastAuthURL string
	// what the driver knows, on its own goroutine
	home    map[string]string // the account each name holds (or will)
	expect  map[string]string // the lineage creds/<name> must hold ("": none)
	texts   []string          // responses and errors the plugin gave: no secret may be in them
	flowTxt []string          // of authorize, callback and exchange: no token either
	textsMu sync.Mutex
}

func runAuthSim(t *testing.T, seed uint64, verbose bool) (uint64, bool) {
	// States and PKCE verifiers from the seed, so that replays match. Not under -race:
	// the global it sets is read by any TLS connection still closing from an earlier
	// test, a data race of the test's own making, and replays are not exact under the
	// race detector anyway (TestSimReplay).
	if !raceEnabled {
		cryptotest.SetGlobalRandom(t, seed)
	}
	sc := drawAuthSchedule(seed)
	if verbose {
		t.Logf("schedule:\n%s", sc)
	}
	base := &simSchedule{seed: seed, duration: sc.duration, sliding: 15 * 24 * time.Hour, apps: sc.apps}
	w := &simWorld{t: t, sc: base, store: &logical.InmemStorage{}, start: time.Now(), rng: rand.New(rand.NewPCG(seed, 1)),
		dropped: map[string][]time.Time{}, secrets: map[string]int{}, scopes: map[string]int{}}
	w.idp = newSimIDP(seed, base.sliding)
	x := &authSim{w: w, sc: sc, rng: rand.New(rand.NewPCG(seed, 3)), codes: map[string]*simCode{}, delivered: map[string]bool{},
		home: map[string]string{}, expect: map[string]string{}}
	w.log = &syncWriter{w: &x.logs}
	w.idp.codeGrant = x.codeGrant
	stopSequencer := w.idp.startSequencer()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		if p := recover(); p != nil {
			w.failf("panic: %v\n%s", p, debug.Stack())
		}
		stop()
		wg.Wait()
		w.cleanNodes()
		stopSequencer()
	}()
	if !x.setup() {
		return 0, false
	}
	wg.Go(func() { w.periodic(ctx) })
	for i := range sc.hotels {
		wg.Go(func() { x.reader(ctx, fmt.Sprintf("h%d", i)) })
	}
	w.idp.mu.Lock()
	w.idp.faultRate, w.idp.faultKinds = sc.faultRate, sc.faultKinds
	w.idp.mu.Unlock()
	for _, f := range sc.flows {
		time.Sleep(time.Until(w.start.Add(f.at)))
		if x.flow(f); w.failed() {
			return 0, false
		}
	}
	time.Sleep(time.Until(w.start.Add(sc.duration)))
	stop()
	wg.Wait()
	if x.finish(); w.failed() {
		return 0, false
	}
	if v := w.idp.violations; len(v) > 0 {
		if len(v) > 15 {
			v = append(v[:15], fmt.Sprintf("... and %d more", len(v)-15))
		}
		t.Errorf("seed %d broke the code flow's invariants (replay: go test -run 'TestSimAuthCode$' -simauth.seed=%d -v):\n%s\nschedule:\n%s",
			seed, seed, strings.Join(v, "\n"), sc)
	}
	if verbose {
		t.Logf("%d token requests reached apaleo, %d of them code exchanges (trace %x)", w.idp.requests, x.codeSends, w.idp.trace.Sum64())
	}
	return w.idp.trace.Sum64(), true
}

// setup registers the apps at the server and in Vault and starts the nodes.
func (x *authSim) setup() bool {
	w := x.w
	if w.active = x.node(false); w.active == nil {
		return false
	}
	if x.sc.standby {
		if w.standby = x.node(true); w.standby == nil {
			return false
		}
	}
	for _, a := range x.sc.apps {
		w.idp.apps[a.name] = &simApp{id: a.name, secrets: map[string]bool{"secret-" + a.name: true}, limit: a.limit, budget: a.budget, lifetime: a.lifetime}
		w.must(logical.CreateOperation, "config/"+a.name, map[string]any{"client_id": a.name, "client_secret": "secret-" + a.name,
			"grant_type": grantAuthorizationCode, "identity_url": "https://identity.sim", "max_token_requests_per_second": a.budget,
			"scopes": "reservations.read,reservations.manage", "redirect_uri": x.redirect(a.name)})
	}
	for i := range x.sc.hotels {
		x.home[fmt.Sprintf("h%d", i)] = fmt.Sprintf("ACC%d", i)
	}
	return !w.failed()
}

func (x *authSim) redirect(app string) string {
	if x.sc.ownApp[app] {
		return "https://pms.hotel.sim/apaleo/return"
	}
	return "https://vault.sim/v1/apaleo/callback"
}

// node starts a Vault node whose requests pass authTransport on their way to the server.
func (x *authSim) node(standby bool) *backend {
	b := x.w.newNode(standby)
	if b == nil {
		return nil
	}
	rt := authTransport{inner: x.w.idp.transport(x.w.nodes), x: x}
	b.newClient = func(s clientSettings, now func() time.Time) (identityServer, error) {
		return &identityClient{settings: s, now: now, httpClient: &http.Client{Transport: rt,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
	}
	return b
}

// restart is Vault restarting the plugin: new nodes on the same storage.
func (x *authSim) restart() {
	w := x.w
	old, oldStandby := w.nodesNow()
	old.Clean(context.Background())
	if oldStandby != nil {
		oldStandby.Clean(context.Background())
	}
	a := x.node(false)
	var sb *backend
	if oldStandby != nil {
		sb = x.node(true)
	}
	if a == nil || oldStandby != nil && sb == nil {
		return
	}
	w.mu.Lock()
	w.active, w.standby = a, sb
	w.mu.Unlock()
}

func (x *authSim) violate(format string, args ...any) {
	x.w.idp.mu.Lock()
	defer x.w.idp.mu.Unlock()
	x.w.idp.violate(format, args...)
}

// authTransport is the wire just before the server: it sees every code exchange leave
// and its answer come back (a code is never sent while an earlier send of it is still
// unanswered), and which refresh tokens an answer carried to the plugin.
type authTransport struct {
	inner http.RoundTripper
	x     *authSim
}

func (t authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	s := t.x.w.idp
	var c *simCode
	if form.Get("grant_type") == "authorization_code" {
		s.mu.Lock()
		t.x.codeSends++
		if c = t.x.codes[form.Get("code")]; c != nil {
			if c.inflight > 0 {
				s.violate("%s: an authorization code was sent while an earlier send of it was still unanswered", c.tag)
			}
			c.inflight++
		}
		s.mu.Unlock()
	}
	resp, err := t.inner.RoundTrip(req)
	var answer []byte
	if err == nil {
		answer, _ = io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(answer))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c != nil {
		c.inflight--
		c.troubled = c.troubled || err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(answer, []byte(`"token_type":"Bearer"`))
	}
	var v struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err == nil && resp.StatusCode == http.StatusOK && json.Unmarshal(answer, &v) == nil && v.RefreshToken != "" {
		t.x.delivered[v.RefreshToken] = true
	}
	return resp, err
}

// consent is the admin opening auth_url and signing in to account: the server checks
// the URL as apaleo's authorize endpoint would and issues a code for the redirect.
func (x *authSim) consent(authURL, account, tag string) *simCode {
	s := x.w.idp
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := url.Parse(authURL)
	if err != nil || u.Scheme != "https" || u.Host != "identity.sim" || u.Path != authorizePath {
		s.violate("%s: auth_url %q is not apaleo's authorize endpoint", tag, authURL)
		return nil
	}
	q := u.Query()
	app := q.Get("client_id")
	switch {
	case s.apps[app] == nil:
		s.violate("%s: auth_url names client_id %q, no app of apaleo", tag, app)
		return nil
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "":
		s.violate("%s: auth_url lacks response_type=code, state or an S256 code_challenge: %s", tag, u.RawQuery)
		return nil
	case q.Get("redirect_uri") != x.redirect(app):
		s.violate("%s: auth_url's redirect_uri %q is not app %s's", tag, q.Get("redirect_uri"), app)
		return nil
	case !slices.Contains(strings.Fields(q.Get("scope")), "offline_access"):
		s.violate("%s: auth_url asks no offline_access: %q", tag, q.Get("scope"))
	}
	x.seq++
	c := &simCode{code: fmt.Sprintf("ac-%d-%d", x.seq, x.rng.Uint32()), app: app, redirect: q.Get("redirect_uri"),
		challenge: q.Get("code_challenge"), account: account, tag: tag, scope: q.Get("scope")}
	x.codes[c.code] = c
	return c
}

// codeGrant is apaleo's authorization_code grant, under the server's lock: it checks the
// exchange (the code's client, redirect_uri and PKCE verifier; a code apaleo answered is
// never presented again; one the plugin must not send is not sent), spends the code and
// mints a refresh token of the flow's own lineage.
func (x *authSim) codeGrant(node int, app *simApp, secret string, form url.Values, now time.Time) simAnswer {
	s := x.w.idp
	refuse := func(c *simCode) simAnswer {
		return simAnswer{status: 400, body: `{"error":"invalid_grant"}`, delay: s.latency(), onDeliver: func() {
			if c != nil {
				c.answered = true
			}
		}}
	}
	if !app.secrets[secret] {
		return simAnswer{status: 400, body: `{"error":"invalid_client"}`, delay: s.latency()}
	}
	c := x.codes[form.Get("code")]
	verifier := form.Get("code_verifier")
	x.verifiers = append(x.verifiers, verifier)
	sum := sha256.Sum256([]byte(verifier))
	switch {
	case c == nil:
		s.violate("app %s: an authorization code apaleo never issued was presented", app.id)
		return refuse(nil)
	case c.forbidden != "":
		s.violate("%s: the code of %s was sent to apaleo", c.tag, c.forbidden)
	case c.answered:
		s.violate("%s: an authorization code apaleo had answered was presented again", c.tag)
	}
	switch {
	case c.app != app.id:
		s.violate("%s: the code of app %s was sent with the client of app %s", c.tag, c.app, app.id)
		return refuse(c)
	case form.Get("redirect_uri") != c.redirect:
		s.violate("%s: the exchange's redirect_uri %q is not the authorization's %q", c.tag, form.Get("redirect_uri"), c.redirect)
		return refuse(c)
	case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
		s.violate("%s: the exchange's code_verifier does not match the authorization's code_challenge", c.tag)
		return refuse(c)
	case c.redeemed:
		return refuse(c) // spent: sent again after a lost answer
	}
	c.redeemed = true
	a := x.codeAnswer(app, c, s.newRefreshLocked(app.id, c.tag))
	a.delay += c.hold
	a.onDeliver = func() { c.answered = true }
	return a
}

// codeAnswer is a token answer whose access token is a JWT naming the account.
func (x *authSim) codeAnswer(app *simApp, c *simCode, refresh string) simAnswer {
	s := x.w.idp
	s.seq++
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	at := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." +
		enc(map[string]any{"account_code": c.account, "client_id": app.id, "sub": fmt.Sprintf("admin-%d", s.seq), "jti": s.seq}) + "." +
		base64.RawURLEncoding.EncodeToString([]byte("signature"))
	x.access = append(x.access, at)
	b, _ := json.Marshal(map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(app.lifetime / time.Second),
		"refresh_token": refresh, "scope": c.scope})
	return simAnswer{status: 200, body: string(b), delay: s.latency()}
}

// lineage is the flow whose authorization creds/<name> holds in storage ("": none): the
// server's tag of its refresh token (refreshes keep it).
func (x *authSim) lineage(name string) (string, *credential) {
	cred, err := readCred(context.Background(), x.w.store, name)
	if err != nil || cred == nil {
		return "", nil
	}
	s := x.w.idp
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt := s.tokens[cred.RefreshToken]; rt != nil {
		return rt.cred, cred
	}
	s.violate("creds/%s holds a refresh token apaleo never issued", name)
	return "?", cred
}

// keep notes what the plugin answered, for the end's scan for secrets.
func (x *authSim) keep(flow bool, resp *logical.Response, err error) {
	var b strings.Builder
	if err != nil {
		b.WriteString(err.Error())
	}
	if resp != nil {
		fmt.Fprintf(&b, " %v %v %v", resp.Data, resp.Warnings, resp.Headers)
		if raw, ok := resp.Data[logical.HTTPRawBody].([]byte); ok {
			b.Write(raw)
		}
	}
	x.textsMu.Lock()
	defer x.textsMu.Unlock()
	x.texts = append(x.texts, b.String())
	if flow {
		x.flowTxt = append(x.flowTxt, b.String())
	}
}

// reader reads creds/<name> at the schedule's cadence (refresh-ahead, rotation, a
// credential that is not there yet) on the standby or the active node.
func (x *authSim) reader(ctx context.Context, name string) {
	w := x.w
	rng := rand.New(rand.NewPCG(x.sc.seed, uint64(len(name))*7919+uint64(name[len(name)-1])))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(x.sc.readEvery/2 + time.Duration(rng.Int64N(int64(x.sc.readEvery)))):
		}
		active, standby := w.nodesNow()
		node := active
		if standby != nil && rng.IntN(2) == 0 {
			node = standby
		}
		resp, err := w.do(node, logical.ReadOperation, "creds/"+name, nil)
		if errors.Is(err, logical.ErrReadOnly) {
			resp, err = w.do(active, logical.ReadOperation, "creds/"+name, nil)
		}
		x.keep(false, resp, err)
	}
}

// flowRun is one flow as the driver sees it.
type flowRun struct {
	authFlow
	tag       string
	as        string      // the account the admin signs in to
	before    string      // the lineage creds/<name> held before
	old       *credential // the credential it held before
	state     string
	code      *simCode
	mustFail  string // why the flow may store nothing ("": it may succeed)
	sendsFrom int
}

// flow runs one admin's authorization and checks what it did.
func (x *authSim) flow(f authFlow) {
	x.seq++
	r := &flowRun{authFlow: f, tag: fmt.Sprintf("%s/f%d", f.name, x.seq), as: x.home[f.name]}
	r.before, r.old = x.lineage(f.name)
	if r.before != x.expect[f.name] {
		x.violate("creds/%s holds the authorization of %q, the last that succeeded was %q", f.name, r.before, x.expect[f.name])
	}
	if f.other {
		for r.as == x.home[f.name] || r.old != nil && strings.EqualFold(r.as, r.old.AccountCode) {
			r.as = fmt.Sprintf("ACC%d", 10+x.rng.IntN(90))
		}
	}
	data := map[string]any{"config": f.app}
	switch {
	case f.replace:
		data["replace"], data["account_code"] = true, r.as
	case f.pin:
		data["account_code"] = x.home[f.name]
	}
	if f.narrow {
		data["scopes"] = "reservations.read"
	}
	r.mustFail = r.why()
	if f.kind == "supersede" && !x.superseded(r, data) {
		return
	}
	if r.state = x.authorize(r, data); r.state == "" {
		return
	}
	if f.decline {
		x.declined(r)
		return
	}
	auth := x.lastAuthURL
	if r.code = x.consent(auth, r.as, r.tag); r.code == nil {
		return
	}
	x.beforeCallback(r)
	x.complete(r)
	x.second(r, auth)
}

// why says why a flow must not store a credential, if it must not.
func (r *flowRun) why() string {
	switch {
	case r.decline:
		return "was declined"
	case r.expire:
		return "expired"
	case r.kind == "delete-pending" || r.kind == "delete-inflight":
		return "was ended by a delete of its credential"
	case r.other && r.pin && !r.replace:
		return "was for another account than account_code"
	case r.other && !r.replace && r.old != nil && r.old.AccountCode != "":
		return "was for another account than the credential's, without replace"
	}
	return ""
}

// authorize calls authorize/<name> and returns the state ("": it failed, reported).
func (x *authSim) authorize(r *flowRun, data map[string]any) string {
	resp, err := x.w.do(x.w.active, logical.UpdateOperation, "authorize/"+r.name, data)
	x.keep(true, resp, err)
	if err != nil || resp == nil || resp.IsError() {
		x.violate("%s: authorize/%s failed: %v %v", r.tag, r.name, err, respErr(resp))
		return ""
	}
	x.lastAuthURL, _ = resp.Data["auth_url"].(string)
	state, _ := resp.Data["state"].(string)
	return state
}

// superseded starts a first link, then a newer one: the first link's callback must
// answer 409, send nothing and store nothing.
func (x *authSim) superseded(r *flowRun, data map[string]any) bool {
	state := x.authorize(r, data)
	if state == "" {
		return false
	}
	c := x.consent(x.lastAuthURL, r.as, r.tag+"-superseded")
	if c == nil {
		return false
	}
	if x.authorize(r, data) == "" {
		return false
	}
	x.setForbidden(c, "a superseded authorization")
	ok, status := x.callNoSend(r, state, c.code, "the link of a superseded authorization")
	if !ok && status != http.StatusConflict {
		x.violate("%s: the superseded link answered %d, not 409", r.tag, status)
	}
	return true
}

func (x *authSim) setForbidden(c *simCode, why string) {
	x.w.idp.mu.Lock()
	c.forbidden = why
	x.w.idp.mu.Unlock()
}

func (x *authSim) sendsNow() int {
	x.w.idp.mu.Lock()
	defer x.w.idp.mu.Unlock()
	return x.codeSends
}

// callNoSend redeems state and code where the plugin must store nothing and send
// nothing (a used, superseded, ended or expired link); it returns what was answered.
func (x *authSim) callNoSend(r *flowRun, state, code, what string) (bool, int) {
	before, _ := x.lineage(r.name)
	sends := x.sendsNow()
	ok, status := x.redeem(r.app, state, code)
	after, _ := x.lineage(r.name)
	if n := x.sendsNow() - sends; n > 0 {
		x.violate("%s: %s sent %d code exchange(s) to apaleo", r.tag, what, n)
	}
	if ok || after != before {
		x.violate("%s: %s answered success=%v and changed creds/%s from %q to %q", r.tag, what, ok, r.name, before, after)
	}
	return ok, status
}

// declined is the admin declining at apaleo: apaleo redirects with error=access_denied.
func (x *authSim) declined(r *flowRun) {
	x.callNoSend(r, r.state, "", "a declined authorization's callback")
	if r.second != "" {
		x.callNoSend(r, r.state, "", "a second callback of a declined authorization")
	}
}

// redeem is apaleo's redirect reaching Vault: the callback, or the operator's app calling
// exchange. With code "", the redirect carries error=access_denied.
func (x *authSim) redeem(app, state, code string) (bool, int) {
	w := x.w
	active, _ := w.nodesNow()
	if !x.sc.ownApp[app] || code == "" {
		data := map[string]any{"state": state, "code": code}
		if code == "" {
			data = map[string]any{"state": state, "error": "access_denied", "error_description": "The user declined"}
		}
		resp, err := w.do(active, logical.ReadOperation, "callback", data)
		x.keep(true, resp, err)
		if err != nil || resp == nil {
			return false, 500
		}
		status, _ := resp.Data[logical.HTTPStatusCode].(int)
		return status == http.StatusOK, status
	}
	resp, err := w.do(active, logical.UpdateOperation, "exchange", map[string]any{"state": state, "code": code})
	x.keep(true, resp, err)
	var ce logical.HTTPCodedError
	switch {
	case errors.As(err, &ce):
		return false, ce.Code()
	case err != nil:
		return false, 500
	case resp == nil:
		return false, 0
	case resp.IsError():
		return false, http.StatusBadRequest
	}
	return true, http.StatusOK
}

// beforeCallback is what happens between consent and apaleo's redirect: the link
// expires, the plugin restarts, the credential is deleted.
func (x *authSim) beforeCallback(r *flowRun) {
	if r.expire {
		time.Sleep(pendingTTL + time.Second)
		x.setForbidden(r.code, "an expired authorization")
	}
	if r.restart {
		x.restart()
	}
	switch r.kind {
	case "delete-pending":
		x.setForbidden(r.code, "an authorization its credential's delete ended")
		x.deleteCred(r)
	case "delete-inflight":
		x.w.idp.mu.Lock()
		r.code.hold = 5 * time.Second // the exchange is on the wire when the delete comes
		x.w.idp.mu.Unlock()
	}
}

func (x *authSim) deleteCred(r *flowRun) {
	resp, err := x.w.do(x.w.active, logical.DeleteOperation, "creds/"+r.name, nil)
	x.keep(false, resp, err)
	if err != nil || resp != nil && resp.IsError() {
		x.violate("%s: delete creds/%s failed: %v %v", r.tag, r.name, err, respErr(resp))
	}
	x.expect[r.name] = ""
}

// complete redeems the flow's code and checks what it stored.
func (x *authSim) complete(r *flowRun) {
	r.sendsFrom = x.sendsNow()
	var ok bool
	var status int
	if r.kind == "delete-inflight" {
		done := make(chan struct{})
		go func() { defer close(done); ok, status = x.redeem(r.app, r.state, r.code.code) }()
		time.Sleep(time.Second)
		x.deleteCred(r)
		<-done
	} else {
		ok, status = x.redeem(r.app, r.state, r.code.code)
	}
	after, cred := x.lineage(r.name)
	x.w.idp.mu.Lock()
	troubled := r.code.troubled
	x.w.idp.mu.Unlock()
	if r.expire || r.kind == "delete-pending" {
		if n := x.sendsNow() - r.sendsFrom; n > 0 {
			x.violate("%s: the flow %s, yet its callback sent %d code exchange(s)", r.tag, r.mustFail, n)
		}
	}
	switch {
	case ok && r.mustFail != "":
		x.violate("%s: the flow %s, yet its callback answered success (creds/%s holds %q)", r.tag, r.mustFail, r.name, after)
	case ok:
		x.succeeded(r, after, cred)
	default:
		want := r.before
		if r.kind == "delete-pending" || r.kind == "delete-inflight" {
			want = ""
		}
		if after != want {
			x.violate("%s: the flow failed (HTTP %d) but creds/%s holds %q, not %q", r.tag, status, r.name, after, want)
		}
		if r.mustFail == "" && !troubled && status != http.StatusTooManyRequests {
			x.violate("%s: the flow failed (HTTP %d) though apaleo answered its exchange at once and cleanly", r.tag, status)
		}
	}
}

// succeeded checks a flow that answered success: its own authorization is stored, for
// the account it had to be for.
func (x *authSim) succeeded(r *flowRun, after string, cred *credential) {
	if after != r.tag || cred == nil {
		x.violate("%s: the flow answered success but creds/%s holds %q", r.tag, r.name, after)
		return
	}
	switch {
	case r.replace || r.pin:
		pinned := x.home[r.name] // account_code: the account the name holds, or the new one with replace
		if r.replace {
			pinned = r.as
		}
		if !strings.EqualFold(cred.AccountCode, pinned) {
			x.violate("%s: creds/%s was stored for account %s, not the account_code given", r.tag, r.name, cred.AccountCode)
		}
	case r.old != nil && r.old.AccountCode != "" && !strings.EqualFold(cred.AccountCode, r.old.AccountCode):
		x.violate("%s: re-authorizing creds/%s without replace moved it from account %s to %s", r.tag, r.name, r.old.AccountCode, cred.AccountCode)
	}
	x.expect[r.name] = r.tag
	x.home[r.name] = cred.AccountCode
}

// second is a second redirect with the same state: the same callback again (a reload),
// or a second consent of the same link. It stores nothing new and sends nothing.
func (x *authSim) second(r *flowRun, auth string) {
	code := r.code
	switch r.second {
	case "":
		return
	case "again":
		if code = x.consent(auth, r.as, r.tag+"-again"); code == nil {
			return
		}
		x.setForbidden(code, "a second consent of a used link")
	default:
		x.setForbidden(code, "a second callback of a used state")
	}
	x.callNoSend(r, r.state, code.code, "a second callback with the same state")
}

// finish lets apaleo heal and checks storage against the server: each name holds the
// authorization that last succeeded, live and readable; every refresh token the plugin
// received that is still live at apaleo is the one stored for its credential (a
// replaced, deleted or unstored one was revoked); no secret is in any answer or log line.
func (x *authSim) finish() {
	w, s := x.w, x.w.idp
	s.mu.Lock()
	s.faultRate = 0
	for _, a := range s.apps {
		a.limit = 0
	}
	s.mu.Unlock()
	time.Sleep(time.Hour + 10*time.Minute)
	stored := map[string]string{}
	for i := range x.sc.hotels {
		name := fmt.Sprintf("h%d", i)
		tag, cred := x.lineage(name)
		if tag != x.expect[name] {
			x.violate("creds/%s ends holding the authorization of %q, the last that succeeded was %q", name, tag, x.expect[name])
		}
		if cred == nil {
			continue
		}
		stored[name] = cred.RefreshToken
		s.mu.Lock()
		revoked := s.tokens[cred.RefreshToken] != nil && s.tokens[cred.RefreshToken].revoked
		s.mu.Unlock()
		if revoked {
			x.violate("creds/%s keeps a refresh token the plugin revoked", name)
		}
		resp, err := w.do(w.active, logical.ReadOperation, "creds/"+name, nil)
		x.keep(false, resp, err)
		s.mu.Lock()
		refused := s.refused[tag]
		s.mu.Unlock()
		if (err != nil || resp == nil || resp.IsError()) && !refused {
			x.violate("creds/%s is not readable at the end, apaleo healthy: %v %v", name, err, respErr(resp))
		}
	}
	x.liveUnstored(stored)
	x.scanSecrets()
}

// liveUnstored: a refresh token the plugin received stays live at apaleo only as the one
// its credential stores (creds read again above may have rotated it: stored is re-read).
func (x *authSim) liveUnstored(stored map[string]string) {
	s := x.w.idp
	for name := range stored {
		if cred, _ := readCred(context.Background(), x.w.store, name); cred != nil {
			stored[name] = cred.RefreshToken
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []string
	for tok := range x.delivered {
		if rt := s.tokens[tok]; rt != nil && !rt.spent && !rt.revoked {
			if name, _, _ := strings.Cut(rt.cred, "/"); stored[name] != tok {
				live = append(live, rt.cred)
			}
		}
	}
	sort.Strings(live)
	for _, tag := range live {
		s.violate("%s: a refresh token the plugin received is live at apaleo, stored nowhere and never revoked", tag)
	}
}

// scanSecrets: no client secret, refresh token, code or verifier in any answer, error or
// log line; no access token in what authorize, callback and exchange answered.
func (x *authSim) scanSecrets() {
	s := x.w.idp
	s.mu.Lock()
	var secrets []string
	for _, a := range x.sc.apps {
		secrets = append(secrets, "secret-"+a.name)
	}
	for tok := range s.tokens {
		secrets = append(secrets, tok)
	}
	for code := range x.codes {
		secrets = append(secrets, code)
	}
	secrets = append(secrets, x.verifiers...)
	access := slices.Clone(x.access)
	s.mu.Unlock()
	sort.Strings(secrets)
	x.textsMu.Lock()
	texts, flowTxt := x.texts, x.flowTxt
	x.textsMu.Unlock()
	logs := x.logs.String()
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		if strings.Contains(logs, sec) {
			x.violate("a secret (%.12s...) is in the plugin's log", sec)
		}
		for _, t := range texts {
			if strings.Contains(t, sec) {
				x.violate("a secret (%.12s...) is in an answer of the plugin: %.200s", sec, t)
				break
			}
		}
	}
	for _, at := range access {
		for _, t := range flowTxt {
			if strings.Contains(t, at) {
				x.violate("an access token is in what authorize, callback or exchange answered: %.200s", t)
				break
			}
		}
	}
}
