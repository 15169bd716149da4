//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/vaultapi"
)

// fleet_test.go: many hotels under one connect app, against the real Vault and the dev
// identity server: refresh-ahead while apaleo is slow, failure memory, isolation of a
// hanging app, the request budget per app, a 429 holding the whole app, a lost answer,
// and the keep-alive of idle refresh tokens.

// TestFleet shares one Vault dev server among its cases; each has identity servers of
// its own, so their request counts are their own.
func TestFleet(t *testing.T) {
	t.Parallel()
	v := startDevVaultWith(t, "vault-fleet", "info", nil)
	v.enablePlugin(t)
	// The cases that measure reads run one after another; those that mostly wait on the
	// clock run beside them.
	t.Run("cases", func(t *testing.T) {
		t.Run("measured", func(t *testing.T) {
			t.Parallel()
			t.Run("refresh_ahead_with_slow_apaleo", func(t *testing.T) { testFleetRefreshAhead(t, v) })
			t.Run("failure_memory", func(t *testing.T) { testFleetFailureMemory(t, v) })
			t.Run("stale_window_outage", func(t *testing.T) { testFleetOutage(t, v) })
			t.Run("hanging_app_isolated", func(t *testing.T) { testFleetIsolation(t, v) })
			t.Run("budget", func(t *testing.T) { testFleetBudget(t, v) })
		})
		t.Run("lost_answer", func(t *testing.T) { t.Parallel(); testFleetLostAnswer(t, v) })
		t.Run("app_429_holds_config", func(t *testing.T) { t.Parallel(); testFleetAppHold(t, v) })
		t.Run("keep_alive", func(t *testing.T) { t.Parallel(); testFleetKeepAlive(t, v) })
	})
}

// authorizeAll authorizes each name for config through the browser flow (the identity
// server consents at once and redirects to Vault's callback), a few at a time.
func authorizeAll(t *testing.T, v *vault, idp *identity, config string, names []string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	errs := make(chan string, len(names))
	for _, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			status, body, err := v.api(http.MethodPut, mount+"/authorize/"+name, map[string]any{"config": config})
			var out struct {
				Data struct {
					AuthURL string `json:"auth_url"`
				} `json:"data"`
			}
			if err != nil || status != http.StatusOK || json.Unmarshal(body, &out) != nil {
				errs <- fmt.Sprintf("authorize/%s: %d %v %s", name, status, err, body)
				return
			}
			b := idp.browser(t, true)
			resp, err := b.Get(out.Data.AuthURL)
			if err != nil {
				errs <- fmt.Sprintf("%s: %v", name, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Sprintf("%s: callback page %d", name, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// readCred reads creds/<name> over the HTTP API: status, access token (or the errors),
// how long it took.
func (v *vault) readCred(name string) (int, string, time.Duration) {
	return v.readCredVia(apiClient, name)
}

// readCredVia is readCred over the HTTP client hc.
func (v *vault) readCredVia(hc *http.Client, name string) (int, string, time.Duration) {
	started := time.Now()
	status, body, err := v.apiVia(hc, v.Token, http.MethodGet, mount+"/creds/"+name, nil)
	took := time.Since(started)
	if err != nil {
		return 0, err.Error(), took
	}
	var out struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
		Warnings []string `json:"warnings"`
		Errors   []string `json:"errors"`
	}
	_ = json.Unmarshal(body, &out)
	if status != http.StatusOK {
		return status, strings.Join(out.Errors, "; "), took
	}
	return status, out.Data.AccessToken, took
}

// listDetailed is `vault list -detailed apaleo/creds` as key_info.
func (v *vault) listDetailed(t *testing.T) map[string]map[string]any {
	t.Helper()
	status, body, err := v.api("LIST", mount+"/creds/", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("LIST creds/: %d %v %s", status, err, body)
	}
	out, err := vaultapi.ParseList(body)
	if err != nil {
		t.Fatal(err)
	}
	return out.KeyInfo
}

func (i *identity) post(t *testing.T, what string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, i.URL+"/_admin/"+what, nil)
	resp, err := i.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST /_admin/%s: %d", what, resp.StatusCode)
	}
}

func (i *identity) clearFaults(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, i.URL+"/_admin/faults", nil)
	resp, err := i.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func repeated(n int, f map[string]any) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = f
	}
	return out
}

// mostInOneSecond is the most timestamps (Unix ms) that fall in any one-second window.
func mostInOneSecond(times []int64) int {
	times = slices.Clone(times)
	slices.Sort(times)
	most, j := 0, 0
	for i := range times {
		for times[i]-times[j] >= 1000 {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

// testFleetRefreshAhead: every token request takes a second at apaleo; 40 credentials
// authorized within seconds of each other are read continuously for five token lives at
// the default budget (10/s): no read fails, none after the first of each waits (500 ms,
// for a 1 s apaleo), every refresh token survives, and idle credentials (an app of
// their own at the identity server) cause no token request.
func testFleetRefreshAhead(t *testing.T, v *vault) {
	// Fresh for 13 s (valid until 5 s before it expires): refresh-ahead's window ends
	// 2 s before that, room for apaleo's 1 s.
	const ttl = 18 * time.Second
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, "fleet")
	idp := startIdentity(t, "identity-fleet", ttl, "fleet-app:"+secret+":FLT:reservations.read:"+callback,
		"fleet-idle:"+secret+":FLT:reservations.read:"+callback)
	v.writeConfig(t, appConfig{name: "fleet", clientID: "fleet-app", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read", minTTL: "1s"})
	v.writeConfig(t, appConfig{name: "fleet-idle", clientID: "fleet-idle", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read", minTTL: "1s"})
	busy, idle := names("fleet", 40), names("idle", 5)
	authorizeAll(t, v, idp, "fleet", busy)
	authorizeAll(t, v, idp, "fleet-idle", idle)
	idleBefore := v.listDetailed(t)
	idp.injectFaults(t, repeated(5000, map[string]any{"delay": "1s"})...)
	before := idp.stats(t)

	type readStat struct {
		failed, slow, total atomic.Int64
		slowest             atomic.Int64
	}
	var st readStat
	seen := sync.Map{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures, slowReads []string
	begun := time.Now()
	for r := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				name := busy[rng.IntN(len(busy))]
				status, text, took := v.readCred(name)
				st.total.Add(1)
				if status != http.StatusOK {
					st.failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %d %s", name, status, text))
					mu.Unlock()
				}
				if _, again := seen.LoadOrStore(name, true); again && took > 500*time.Millisecond {
					st.slow.Add(1)
					mu.Lock()
					slowReads = append(slowReads, fmt.Sprintf("%s at +%v took %v", name, time.Since(begun).Round(100*time.Millisecond), took.Round(time.Millisecond)))
					mu.Unlock()
				}
				if ms := took.Milliseconds(); ms > st.slowest.Load() {
					st.slowest.Store(ms)
				}
				time.Sleep(40 * time.Millisecond)
			}
		})
	}
	run := 5 * ttl
	time.Sleep(run)
	close(stop)
	wg.Wait()
	after := idp.stats(t)
	refreshes := after.ByGrant["refresh_token"] - before.ByGrant["refresh_token"]
	t.Logf("fleet: %d reads, %d failed, %d slower than 500 ms after the first (slowest %d ms); %d refresh requests for %d credentials over %v (token life %v); invalid_grant %d",
		st.total.Load(), st.failed.Load(), st.slow.Load(), st.slowest.Load(), refreshes, len(busy), run, ttl, after.Errors["invalid_grant"])
	if st.total.Load() == 0 {
		t.Error("no reads ran")
	}
	if st.failed.Load() != 0 {
		t.Errorf("%d reads failed, e.g. %v", st.failed.Load(), failures[:min(3, len(failures))])
	}
	if st.slow.Load() != 0 {
		t.Errorf("%d reads after the first of their credential took over 500 ms: %v", st.slow.Load(), slowReads)
	}
	if n := after.Errors["invalid_grant"]; n != 0 {
		t.Errorf("%d refresh tokens were refused: refresh tokens were lost", n)
	}
	// One refresh per token, inside refresh-ahead's window (from 2/3 to 5/6 of the 13 s a
	// token is fresh): none skipped, none doubled.
	fresh := ttl - 5*time.Second
	lo, hi := len(busy)*(int(run/(fresh*5/6))-1), len(busy)*(int(run/(fresh*2/3))+1)
	if refreshes < lo || refreshes > hi {
		t.Errorf("%d refreshes, want %d to %d (one per token, refreshed ahead)", refreshes, lo, hi)
	}
	idp.clearFaults(t)
	// Idle credentials were never refreshed (the identity server saw nothing of their
	// app, and the plugin says the same); every busy one still refreshes.
	if n := after.ByClient["fleet-idle"] - before.ByClient["fleet-idle"]; n != 0 {
		t.Errorf("the idle credentials' app sent %d token requests", n)
	}
	now := v.listDetailed(t)
	for _, n := range idle {
		if now[n]["last_refreshed_at"] == nil || idleBefore[n]["last_refreshed_at"] == nil {
			t.Errorf("idle %s: list -detailed has no last_refreshed_at: %v", n, now[n])
		} else if now[n]["last_refreshed_at"] != idleBefore[n]["last_refreshed_at"] {
			t.Errorf("idle %s was refreshed: %v -> %v", n, idleBefore[n]["last_refreshed_at"], now[n]["last_refreshed_at"])
		}
	}
	for _, n := range busy {
		if now[n]["state"] != "ok" {
			t.Errorf("%s: state %v (%v)", n, now[n]["state"], now[n]["last_error"])
		}
	}
}

// testFleetFailureMemory: a revoked refresh token read 50 times costs one refresh
// request; a 429 with Retry-After: 60 read 30 times costs one request.
func testFleetFailureMemory(t *testing.T, v *vault) {
	callback := v.Addr + "/v1/" + mount + "/callback"
	secApp, secCC := randomSecret(t, "mem-app"), randomSecret(t, "mem-cc")
	idp := startIdentity(t, "identity-memory", time.Hour,
		"mem-app:"+secApp+":MEM:reservations.read,account.read:"+callback,
		"mem-cc:"+secCC+":MEM:reservations.read")
	v.writeConfig(t, appConfig{name: "mem-app", clientID: "mem-app", secret: secApp, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	authorizeAll(t, v, idp, "mem-app", []string{"hotel-revoked"})

	idp.post(t, "revoke?client_id=mem-app")
	// A scope change drops the cached token: the next read must refresh.
	v.must(t, "write", mount+"/config/mem-app", "scopes=reservations.read,account.read")
	before := idp.stats(t)
	for i := range 50 {
		status, text, _ := v.readCred("hotel-revoked")
		if status != http.StatusBadRequest || !strings.Contains(text, "authorize/hotel-revoked") {
			t.Fatalf("read %d: %d %s", i, status, text)
		}
	}
	revoked := idp.stats(t).ByGrant["refresh_token"] - before.ByGrant["refresh_token"]
	info := v.listDetailed(t)["hotel-revoked"]
	t.Logf("revoked refresh token, 50 reads: %d refresh request(s); state %v", revoked, info["state"])
	if revoked != 1 {
		t.Errorf("%d refresh requests for 50 reads, want 1", revoked)
	}
	if info["state"] != "needs_authorization" || !strings.Contains(fmt.Sprint(info["last_error"]), "invalid_grant") {
		t.Errorf("list -detailed: %v", info)
	}

	v.writeConfig(t, appConfig{name: "mem-cc", clientID: "mem-cc", secret: secCC, idp: idp, scopes: "reservations.read"})
	idp.injectFaults(t, map[string]any{"status": 429, "retry_after": "60"})
	before = idp.stats(t)
	for i := range 30 {
		status, text, _ := v.readCred("mem-cc")
		if status != http.StatusTooManyRequests || !strings.Contains(text, "next attempt at") {
			t.Fatalf("read %d: %d %s", i, status, text)
		}
	}
	limited := idp.stats(t).TokenRequests - before.TokenRequests
	t.Logf("429 Retry-After 60, 30 reads: %d token request(s)", limited)
	if limited != 1 {
		t.Errorf("%d token requests for 30 reads, want 1", limited)
	}
	if info := v.listDetailed(t)["mem-cc"]; info["state"] != "failing" || info["next_attempt_at"] == nil {
		t.Errorf("list -detailed: %v", info)
	}
}

// testFleetOutage: apaleo answers 500 while four readers hammer a credential in its stale
// window: every read gets the cached token, and at most one request goes out per
// backoff step (from 5 s).
func testFleetOutage(t *testing.T, v *vault) {
	const ttl = 20 * time.Second
	secret := randomSecret(t, "outage")
	idp := startIdentity(t, "identity-outage", ttl, "outage-cc:"+secret+":OUT:reservations.read")
	v.writeConfig(t, appConfig{name: "outage-cc", clientID: "outage-cc", secret: secret, idp: idp, scopes: "reservations.read"})
	v.must(t, "write", mount+"/config/outage-cc", "refresh_ahead=false")
	first := v.read(t, mount+"/creds/outage-cc")
	cached := first.str("access_token")
	expires, err := time.Parse(time.RFC3339, first.str("expires_at"))
	if err != nil {
		t.Fatalf("expires_at %q: %v", first.str("expires_at"), err)
	}
	// Fresh for half its life (10 s), then stale until 5 s before it expires.
	time.Sleep(time.Until(expires.Add(-ttl/2 + 500*time.Millisecond)))
	idp.injectFaults(t, repeated(200, map[string]any{"status": 500})...)
	before := idp.stats(t)
	hammer := time.Until(expires.Add(-6 * time.Second))
	var reads, other atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(hammer)
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				status, tok, _ := v.readCred("outage-cc")
				reads.Add(1)
				if status != http.StatusOK || tok != cached {
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	requests := idp.stats(t).TokenRequests - before.TokenRequests
	steps := 1 + int(hammer/(5*time.Second))
	t.Logf("500 outage in the stale window: %d reads over %v, %d not the cached token; %d token request(s) (backoff steps: %d)",
		reads.Load(), hammer.Round(100*time.Millisecond), other.Load(), requests, steps)
	if reads.Load() == 0 {
		t.Error("no reads ran in the stale window")
	}
	if other.Load() != 0 {
		t.Errorf("%d reads did not get the cached token", other.Load())
	}
	if requests < 1 || requests > steps {
		t.Errorf("%d token requests, want 1 to %d", requests, steps)
	}
	idp.clearFaults(t)
}

// testFleetIsolation: a token request hanging at one app's identity server leaves every
// other config's reads as fast as before: none waits behind the hang (3 s; the hang
// lasts 10 s).
func testFleetIsolation(t *testing.T, v *vault) {
	secHang, secFast := randomSecret(t, "hang"), randomSecret(t, "fast")
	hangIdp := startIdentity(t, "identity-hang", time.Hour, "hang-cc:"+secHang+":HNG:reservations.read")
	fastIdp := startIdentity(t, "identity-fast", time.Hour, "fast-cc:"+secFast+":FST:reservations.read")
	v.writeConfig(t, appConfig{name: "hang-cc", clientID: "hang-cc", secret: secHang, idp: hangIdp})
	v.writeConfig(t, appConfig{name: "fast-cc", clientID: "fast-cc", secret: secFast, idp: fastIdp})
	v.writeConfig(t, appConfig{name: "fast-cached", clientID: "fast-cc", secret: secFast, idp: fastIdp})
	cold := func() []time.Duration {
		var out []time.Duration
		for range 10 {
			v.must(t, "delete", mount+"/creds/fast-cc") // drops the cached token: the read fetches
			status, text, took := v.readCred("fast-cc")
			if status != http.StatusOK {
				t.Fatalf("fast-cc: %d %s", status, text)
			}
			out = append(out, took)
			if status, text, took := v.readCred("fast-cached"); status != http.StatusOK {
				t.Fatalf("fast-cached: %d %s", status, text)
			} else {
				out = append(out, took)
			}
		}
		return out
	}
	baseline := cold()
	// One attempt hangs until the plugin's per-attempt timeout (10 s); the measurements
	// below take a few seconds.
	hangIdp.injectFaults(t, map[string]any{"hang": true})
	go v.readCred("hang-cc")
	time.Sleep(300 * time.Millisecond)
	during := cold()
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	slowest := slices.Max(during)
	t.Logf("reads of other configs: median %v before, %v while hang-cc hangs (slowest %v)", median(baseline), median(during), slowest)
	if hangIdp.stats(t).TokenRequests != 1 {
		t.Errorf("the hanging request was not under way during the measurement")
	}
	if len(during) == 0 {
		t.Error("no reads ran during the hang")
	}
	if slowest > 3*time.Second {
		t.Errorf("a read of another config took %v while hang-cc hung", slowest)
	}
	hangIdp.clearFaults(t)
}

// testFleetBudget: 60 credentials of one app whose cached tokens a config write drops,
// read at once with max_token_requests_per_second=5: the identity server never sees more
// than 5 token requests in any second (+1 at a calendar second's edge), and every read
// succeeds.
func testFleetBudget(t *testing.T, v *vault) {
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, "budget")
	idp := startIdentity(t, "identity-budget", time.Hour, "budget-app:"+secret+":BDG:reservations.read,account.read:"+callback)
	v.writeConfig(t, appConfig{name: "budget", clientID: "budget-app", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	v.must(t, "write", mount+"/config/budget", "max_token_requests_per_second=5")
	hotels := names("budget", 60)
	authorizeAll(t, v, idp, "budget", hotels) // the code exchanges count against the budget too
	exchanges := idp.stats(t).RequestTimes

	v.must(t, "write", mount+"/config/budget", "scopes=reservations.read,account.read") // drops every cached token
	before := len(idp.stats(t).RequestTimes)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var slowest atomic.Int64
	for _, n := range hotels {
		wg.Go(func() {
			status, text, took := v.readCred(n)
			if status != http.StatusOK {
				failed.Add(1)
				t.Logf("%s: %d %s", n, status, text)
			}
			if ms := took.Milliseconds(); ms > slowest.Load() {
				slowest.Store(ms)
			}
		})
	}
	wg.Wait()
	times := idp.stats(t).RequestTimes
	reads := times[before:]
	t.Logf("budget 5/s: %d code exchanges, most in one second %d; %d cold reads, %d token requests, most in one second %d, slowest read %d ms, %d failed",
		len(exchanges), mostInOneSecond(exchanges), len(hotels), len(reads), mostInOneSecond(reads), slowest.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d reads failed", failed.Load())
	}
	if m := mostInOneSecond(times); m > 5+1 {
		t.Errorf("%d token requests in one second, want at most 5 (+1)", m)
	}
	if len(reads) != len(hotels) {
		t.Errorf("%d token requests for %d cold credentials", len(reads), len(hotels))
	}
}

// testFleetAppHold: ten hotels of one app hold stale (still valid) tokens; apaleo answers
// the first refresh with 429 and Retry-After: 60. For that minute the identity server
// sees no other request of the app, every read answers its cached token, and
// list -detailed shows every name of the config failing with its next attempt.
func testFleetAppHold(t *testing.T, v *vault) {
	// Fresh for half its life (75 s), then stale and still handed out until 5 s before it
	// expires: 70 s, room for the minute of Retry-After.
	const ttl = 150 * time.Second
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, "hold")
	idp := startIdentity(t, "identity-hold", ttl, "hold-app:"+secret+":HLD:reservations.read:"+callback)
	v.writeConfig(t, appConfig{name: "hold-app", clientID: "hold-app", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	hotels := names("hold", 10)
	authorizeAll(t, v, idp, "hold-app", hotels)
	cached := v.listDetailed(t)
	expires, err := time.Parse(time.RFC3339, fmt.Sprint(cached[hotels[0]]["expires_at"]))
	if err != nil {
		t.Fatalf("%s expires_at %v: %v", hotels[0], cached[hotels[0]]["expires_at"], err)
	}
	time.Sleep(time.Until(expires.Add(-ttl/2 + 2*time.Second)))

	idp.injectFaults(t, map[string]any{"status": 429, "retry_after": "60"})
	before := idp.stats(t)
	held := time.Now()
	var reads, other int
	for round := 0; time.Since(held) < 55*time.Second; round++ {
		for _, n := range hotels {
			status, text, _ := v.readCred(n)
			reads++
			if status != http.StatusOK {
				other++
				t.Logf("%s: %d %s", n, status, text)
			}
		}
		if round == 0 {
			list := v.listDetailed(t)
			for _, n := range hotels {
				info := list[n]
				if info["state"] != "failing" || info["next_attempt_at"] == nil {
					t.Errorf("after the app's 429, list -detailed %s: state %v, next_attempt_at %v", n, info["state"], info["next_attempt_at"])
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	requests := idp.stats(t).ByClient["hold-app"] - before.ByClient["hold-app"]
	t.Logf("429 Retry-After 60 for one of %d stale hotels: %d reads in %v, %d not answered; %d token request(s) of the app",
		len(hotels), reads, time.Since(held).Round(time.Second), other, requests)
	if reads == 0 {
		t.Error("no reads ran")
	}
	if other != 0 {
		t.Errorf("%d reads did not answer the cached token", other)
	}
	if requests != 1 {
		t.Errorf("the identity server saw %d token requests of the app within the minute, want 1", requests)
	}
	now := v.listDetailed(t)
	for _, n := range hotels {
		if now[n]["expires_at"] != cached[n]["expires_at"] {
			t.Errorf("%s: token changed during the hold: %v -> %v", n, cached[n]["expires_at"], now[n]["expires_at"])
		}
	}
}

// testFleetLostAnswer: apaleo rotates the refresh token and the connection dies before
// the answer arrives. The plugin sends the same refresh token once more, apaleo refuses
// it, and the credential needs a new authorization with a message that says the first
// answer was lost, not that apaleo refused the token. Counted at the identity server:
// within one read a refresh token goes out at most twice (SPEC), here exactly twice (lost,
// then refused), and a refused one never again (a second read, and a while after it).
func testFleetLostAnswer(t *testing.T, v *vault) {
	const quiet = 5 * time.Second // watched after the second read for a background send
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, "lost")
	idp := startIdentity(t, "identity-lost", time.Hour, "lost-app:"+secret+":LST:reservations.read,account.read:"+callback)
	v.writeConfig(t, appConfig{name: "lost-app", clientID: "lost-app", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	authorizeAll(t, v, idp, "lost-app", []string{"hotel-lost"})
	// A scope change drops the cached token: the next read must refresh.
	v.must(t, "write", mount+"/config/lost-app", "scopes=reservations.read,account.read")
	idp.injectFaults(t, map[string]any{"drop_after_handle": true})
	before := idp.stats(t)
	status, text, _ := v.readCred("hotel-lost")
	after := idp.stats(t)
	info := v.listDetailed(t)["hotel-lost"]
	sent := after.ByGrant["refresh_token"] - before.ByGrant["refresh_token"]
	t.Logf("answer lost: read %d %q; %d refresh requests (%d handled, %d invalid_grant), one refresh token sent at most %d times; state %v: %v",
		status, text, sent, after.Issued-before.Issued, after.Errors["invalid_grant"]-before.Errors["invalid_grant"],
		after.RefreshTokenMostSent, info["state"], info["last_error"])
	if status == http.StatusOK {
		t.Errorf("the read got a token, though apaleo spent the refresh token")
	}
	if before.RefreshTokenMostSent != 0 {
		t.Fatalf("a refresh token was sent %d times before the read", before.RefreshTokenMostSent)
	}
	if after.RefreshTokenMostSent != 2 {
		t.Errorf("the identity server saw one refresh token %d times in one read, want 2 (lost, then once more; SPEC: at most twice)", after.RefreshTokenMostSent)
	}
	if sent != 2 || after.Issued-before.Issued != 1 || after.Errors["invalid_grant"]-before.Errors["invalid_grant"] != 1 {
		t.Errorf("want the refresh token sent twice: handled once (answer lost), refused once")
	}
	if info["state"] != "needs_authorization" || !strings.Contains(strings.ToLower(fmt.Sprint(info["last_error"])), "lost") {
		t.Errorf("list -detailed: state %v, last_error %v; want needs_authorization saying the answer was lost", info["state"], info["last_error"])
	}
	// Refused: the next read answers from failure memory, and nothing sends it again.
	if status, text, _ := v.readCred("hotel-lost"); status == http.StatusOK {
		t.Errorf("a second read got a token: %q", text)
	}
	time.Sleep(quiet)
	if later := idp.stats(t); later.TokenRequests != after.TokenRequests || later.RefreshTokenMostSent != after.RefreshTokenMostSent {
		t.Errorf("after the refusal, a second read and %v: %d more token requests, one refresh token sent %d times", quiet,
			later.TokenRequests-after.TokenRequests, later.RefreshTokenMostSent)
	}
}

// testFleetKeepAlive: refresh tokens die after 40 s unused at the identity server.
// With idle_refresh_interval=15s a credential nobody reads for 100 s still reads; one of
// a config with keep-alive off (same identity server, an app of its own) needs a new
// authorization by then. The keep-alive refreshes once per interval, at a moment in the
// interval's last tenth after the refresh token's last use: never sooner than 13.5 s
// apart, so the identity server's count is bounded from above too.
func testFleetKeepAlive(t *testing.T, v *vault) {
	const (
		idle     = 100 * time.Second
		interval = 15 * time.Second
	)
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, "alive")
	idp := startIdentityWith(t, "identity-alive", 20*time.Second, 40*time.Second,
		"alive-app:"+secret+":ALV:reservations.read:"+callback,
		"lapse-app:"+secret+":ALV:reservations.read:"+callback)
	for _, app := range []string{"alive-app", "lapse-app"} {
		v.writeConfig(t, appConfig{name: app, clientID: app, secret: secret, idp: idp,
			grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	}
	v.must(t, "write", mount+"/config/alive-app", "idle_refresh_interval="+interval.String())
	v.must(t, "write", mount+"/config/lapse-app", "idle_refresh_interval=0")
	authorized := time.Now() // hotel-alive's refresh token is first used after this
	authorizeAll(t, v, idp, "alive-app", []string{"hotel-alive"})
	authorizeAll(t, v, idp, "lapse-app", []string{"hotel-lapse"})
	before := idp.stats(t)
	time.Sleep(idle)
	during := idp.stats(t)
	// Keep-alives at least 0.9 intervals apart, the first 0.9 intervals after the code's
	// exchange: no more than this many fit between the authorization and now.
	most := int(time.Since(authorized) / (interval * 9 / 10))
	keepAlives := during.ByClient["alive-app"] - before.ByClient["alive-app"]
	info := v.listDetailed(t)
	status, text, _ := v.readCred("hotel-alive")
	lapseStatus, lapseText, _ := v.readCred("hotel-lapse")
	t.Logf("after %v unread: %d keep-alive refreshes of alive-app, %d requests of lapse-app; hotel-alive read %d, hotel-lapse read %d %q",
		idle, keepAlives, during.ByClient["lapse-app"]-before.ByClient["lapse-app"], status, lapseStatus, lapseText)
	if status != http.StatusOK {
		t.Errorf("hotel-alive after %v unread: %d %s", idle, status, text)
	}
	// A refresh token lives 40 s unused: 100 s need at least two keep-alives.
	if keepAlives < 2 || keepAlives > most {
		t.Errorf("the identity server saw %d keep-alive refreshes in %v, want 2 to %d (one per %v interval, in its last tenth)", keepAlives, idle, most, interval)
	}
	if n := during.ByClient["lapse-app"] - before.ByClient["lapse-app"]; n != 0 {
		t.Errorf("with keep-alive off, lapse-app sent %d token requests", n)
	}
	if lapseStatus == http.StatusOK {
		t.Errorf("hotel-lapse read after %v with keep-alive off: the refresh token did not lapse, so this test proves nothing", idle)
	}
	for _, n := range []string{"hotel-alive", "hotel-lapse"} {
		if info[n]["authorized_at"] == nil || info[n]["last_refreshed_at"] == nil {
			t.Errorf("list -detailed %s lacks authorized_at or last_refreshed_at: %v", n, info[n])
		}
	}
}
