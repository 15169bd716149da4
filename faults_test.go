package apaleo

import (
	"context"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// faults_test.go: the identity server misbehaves. For a client-credentials config and an
// authorized credential, cold (no usable cached token) and stale (a cached token past
// min_ttl but still valid), a read answers a clear error within the bounded time, a new
// token, or the cached token with a warning; storage never loses a config or a refresh
// token, and a read after the fault clears works again. docs/faults.md lists what a run
// observes (go test -run TestFaults -v . | grep 'fault row').

// faultPolicy bounds one logical token request in the fault tests: short, so that the
// bound shows in 2 s instead of 30 s. The per-attempt timeout leaves room for a busy
// -race run: an attempt that times out while the server still rotates the refresh
// token spends it, as a lost answer does.
var faultPolicy = retryPolicy{Total: 2 * time.Second, PerAttempt: 750 * time.Millisecond,
	BaseDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}

// faultPolicy429 leaves room for a Retry-After of up to 2 s.
var faultPolicy429 = retryPolicy{Total: 3 * time.Second, PerAttempt: 750 * time.Millisecond,
	BaseDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}

// roomyPolicy is for set-up and recovery reads, which must not trip over a busy machine.
var roomyPolicy = retryPolicy{Total: 20 * time.Second, PerAttempt: 10 * time.Second,
	BaseDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}

const (
	kindCC    = "client-credentials" // creds/hotel-muc: a client-credentials config
	kindAuth  = "refresh-token"      // creds/hotel-ber: an authorized credential
	modeCold  = "cold"               // no usable cached token: the full retry policy applies
	modeStale = "stale"              // cached token past min_ttl, still valid: one attempt, else it is served
)

type faultOutcome int

const (
	gotNew   faultOutcome = iota // a new token, no warning
	gotStale                     // the cached token, with a warning
	gotError                     // an error
)

func (o faultOutcome) String() string {
	return [...]string{"new token", "cached token + warning", "error"}[o]
}

// noRequest in faultWant.requests: the fault must stop the read before the server sees it.
const noRequest = -1

type faultWant struct {
	outcome  faultOutcome
	status   int      // gotError: the HTTP status Vault answers
	contains []string // in the error message or the warning
	anyOf    []string // one of these is in it
	min      time.Duration
	requests int           // token requests the read makes; 0: not checked
	ttl      time.Duration // gotNew: the lease TTL; 0: not checked
	// cutOff: the read may instead end with the bound cutting its last attempt short
	// (504, "no answer in time"): where no earlier attempt got an HTTP status to report
	// instead (refused connections; unusable bodies, see TestFaults_LastAttemptCutByTheBound).
	cutOff bool
	// lost: the server spent the refresh token but its answer never arrived, so the
	// stored one is refused afterwards and only authorize/<name> recovers.
	lost bool
	// refused: apaleo refused the refresh token, which is stored with the credential
	// (needs_authorization): creds/<name> changes by that alone.
	refused bool
}

type faultCase struct {
	name   string
	policy *retryPolicy
	arm    func(fe *faultEnv) // sets the fault up, right before the read
	want   map[string]faultWant
}

// faultEnv is a testEnv with one readable name, set up for a kind and a mode.
type faultEnv struct {
	*testEnv
	kind, mode   string
	name, config string
	cached       string // access token cached before the fault; "" when none
	undo         []func()
	closed       bool // the server's port is closed for good
}

func newFaultEnv(t *testing.T, kind, mode string, p retryPolicy) *faultEnv {
	t.Helper()
	e := newTestEnv(t)
	e.b.retry = roomyPolicy // for the set-up; the fault gets p
	defer func() { e.b.retry = p }()
	// A refresh runs to a bound of its own, beyond the reader's (faultPolicy.Total).
	e.b.refreshTimeout = faultPolicy.Total + time.Second
	fe := &faultEnv{testEnv: e, kind: kind, mode: mode}
	switch kind {
	case kindCC:
		fe.name, fe.config = "hotel-muc", "hotel-muc"
		e.writeSimpleConfig(fe.name, nil)
		if mode == modeStale {
			fe.cached = e.mustDo(logical.ReadOperation, "creds/"+fe.name, nil).Data["access_token"].(string)
		}
	case kindAuth:
		fe.name, fe.config = "hotel-ber", "connect"
		e.writeConnectConfig(fe.config, nil)
		if status, page := e.callback(e.authorize(fe.name, fe.config)); status != http.StatusOK {
			t.Fatalf("set-up: callback %d %s", status, pageText(page))
		}
		fe.cached = fe.storedCred().Token.AccessToken
	}
	switch {
	case mode == modeStale:
		e.clock.Add(50 * time.Minute) // 10 of 60 minutes left: below min_ttl, still valid
	case kind == kindAuth:
		e.clock.Add(61 * time.Minute) // the first token has expired
	}
	return fe
}

func (fe *faultEnv) storedCred() *credential {
	fe.t.Helper()
	c, err := readCred(context.Background(), fe.storage, fe.name)
	if err != nil || c == nil {
		fe.t.Fatalf("creds/%s in storage: %v, %v", fe.name, c, err)
	}
	return c
}

func (fe *faultEnv) inject(f ...devidp.Fault) { fe.idp.InjectFaults(f...) }

// closeServer closes the identity server's port, so connections are refused. Until the
// case ends no other test's new server may take the port over (closePort), and the case
// skips the recovery read.
func (fe *faultEnv) closeServer() {
	closePort(fe.t, fe.ts)
	fe.closed = true
}

// distrust drops the config's ca_certificate: the server's certificate is then signed by
// no root the config trusts.
// A change of ca_certificate carries the client secret.
func (fe *faultEnv) distrust() {
	secret := map[string]string{"hotel-muc": mucSecret, "connect": connectSc}[fe.config]
	fe.mustDo(logical.UpdateOperation, "config/"+fe.config, map[string]any{"ca_certificate": "", "client_secret": secret})
	fe.undo = append(fe.undo, func() {
		fe.mustDo(logical.UpdateOperation, "config/"+fe.config, map[string]any{"ca_certificate": fe.caPEM, "client_secret": secret})
	})
}

// runConcurrently runs fn for each name as a subtest, many at once: most fault cases
// spend their time waiting for timers, which -parallel (GOMAXPROCS) would serialise.
// A case that closes its server's port holds the other cases' new servers back
// meanwhile (closePort).
func runConcurrently(t *testing.T, names []string, fn func(t *testing.T, name string)) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t.Run(name, func(t *testing.T) { fn(t, name) })
		}()
	}
	wg.Wait()
}

// TestFaults_Matrix is the fault matrix: every fault at the token endpoint, for both
// kinds of credential, cold and stale.
func TestFaults_Matrix(t *testing.T) {
	t.Parallel()
	type run struct {
		c   faultCase
		key string
		w   faultWant
	}
	runs := map[string]run{}
	var names []string
	// go test runs half the matrix (every fault, each kind in one situation); make test
	// runs it whole (FAULT_MATRIX=all), as does any run that asks for it.
	keys := []string{ccStale, authCold}
	if os.Getenv("FAULT_MATRIX") == "all" {
		keys = []string{ccCold, ccStale, authCold, authStale}
	}
	for _, c := range faultCases() {
		for _, key := range keys {
			if w, ok := c.want[key]; ok {
				name := c.name + "/" + key
				runs[name] = run{c, key, w}
				names = append(names, name)
			}
		}
	}
	runConcurrently(t, names, func(t *testing.T, name string) {
		r := runs[name]
		runFaultCase(t, r.c, r.key, r.w)
	})
}

func runFaultCase(t *testing.T, c faultCase, key string, w faultWant) {
	kind, mode, _ := strings.Cut(key, "/")
	p := faultPolicy
	if c.policy != nil {
		p = *c.policy
	}
	if mode == modeStale {
		// With a cached token to fall back on, a read makes one attempt: a long bound
		// shows that it does not wait out the retries.
		p.Total = 20 * time.Second
	}
	fe := newFaultEnv(t, kind, mode, p)
	secrets := []string{mucSecret, connectSc}
	var rtBefore string
	if kind == kindAuth {
		rtBefore = fe.storedCred().RefreshToken
		secrets = append(secrets, rtBefore)
	}
	c.arm(fe)

	before := storageSnapshot(t, fe.storage)
	requests := fe.tokenRequests()
	started := time.Now()
	resp, err := fe.do(logical.ReadOperation, "creds/"+fe.name, nil)
	took := time.Since(started)
	requests = fe.tokenRequests() - requests
	status := statusOf(logical.ReadOperation, resp, err)
	after := storageSnapshot(t, fe.storage)

	var text, token string
	var ttl time.Duration
	if resp != nil && !resp.IsError() {
		token, _ = resp.Data["access_token"].(string)
		text = strings.Join(resp.Warnings, "; ")
		if resp.Secret != nil {
			ttl = resp.Secret.TTL
		}
	} else {
		text = errText(resp, err)
	}

	cut := w.cutOff && status == http.StatusGatewayTimeout && strings.Contains(text, "no answer in time")
	if cut {
		t.Logf("the bound cut the last attempt short: %s", text)
		w.status, w.contains = http.StatusGatewayTimeout, []string{"no answer in time", "gave up after"}
	}
	switch w.outcome {
	case gotError:
		if err == nil && (resp == nil || !resp.IsError()) {
			t.Fatalf("want an error, got a token (warnings %v)", resp.Warnings)
		}
		if status != w.status {
			t.Errorf("status %d, want %d: %s", status, w.status, text)
		}
	case gotStale:
		if token == "" {
			t.Fatalf("want the cached token, got status %d: %s", status, text)
		}
		if token != fe.cached {
			t.Errorf("a new token was served, want the cached one")
		}
		if len(resp.Warnings) != 1 {
			t.Errorf("warnings %v, want one", resp.Warnings)
		}
		if ttl > 10*time.Minute+time.Second {
			t.Errorf("stale token's lease TTL %v is more than its remaining life", ttl)
		}
	case gotNew:
		if token == "" {
			t.Fatalf("want a new token, got status %d: %s", status, text)
		}
		if token == fe.cached {
			t.Errorf("the cached token was served, want a new one")
		}
		if len(resp.Warnings) != 0 {
			t.Errorf("warnings %v", resp.Warnings)
		}
		if w.ttl != 0 && ttl != w.ttl {
			t.Errorf("lease TTL %v, want %v", ttl, w.ttl)
		}
	}
	for _, s := range w.contains {
		if !strings.Contains(text, s) {
			t.Errorf("%q does not contain %q", text, s)
		}
	}
	if len(w.anyOf) > 0 && !slices.ContainsFunc(w.anyOf, func(s string) bool { return strings.Contains(text, s) }) {
		t.Errorf("%q contains none of %q", text, w.anyOf)
	}
	// The request counts below carry "at once" and "one attempt"; time only proves a wait
	// that must happen (min, which a slow machine cannot fail) and guards against a hang.
	if took < w.min || took > hangGuard {
		t.Errorf("answered after %v, want between %v and %v", took.Round(time.Millisecond), w.min, hangGuard)
	}
	switch {
	case w.requests == noRequest && requests != 0:
		t.Errorf("%d token requests reached the server, want none", requests)
	case w.requests > 0 && requests != w.requests:
		t.Errorf("%d token requests, want %d", requests, w.requests)
	}

	// Storage: a failure or a stale answer changes nothing; a new token changes only
	// creds/<name>, and a rotated refresh token is stored before the read answers.
	if w.outcome == gotNew {
		for k, v := range before {
			if !strings.HasPrefix(k, credsPrefix) && after[k] != v {
				t.Errorf("%s changed", k)
			}
		}
		stored := fe.storedCred()
		if stored.Token == nil || stored.Token.AccessToken != token {
			t.Errorf("the new token was not stored")
		}
		if kind == kindAuth && (stored.RefreshToken == "" || stored.RefreshToken == rtBefore) {
			t.Errorf("the rotated refresh token was not stored")
		}
	} else if w.refused {
		for k, v := range before {
			if k != credsPrefix+fe.name && after[k] != v {
				t.Errorf("%s changed", k)
			}
		}
		if stored := fe.storedCred(); stored.Refused == nil || stored.RefreshToken != rtBefore {
			t.Errorf("the refusal was not stored with the credential, or its refresh token changed: %+v", stored.Refused)
		}
	} else if !maps.Equal(before, after) {
		t.Errorf("storage changed:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	if kind == kindAuth {
		secrets = append(secrets, fe.storedCred().RefreshToken)
	}
	t.Logf("fault row | %s | %s | %s | %s | HTTP %d | %v | %d request(s) | %s", c.name, key, w.outcome, storageVerdict(w, before, after), status,
		took.Round(10*time.Millisecond), requests, excerpt(text, 160))

	// Recovery: with the fault gone, a read past the token's expiry works again with
	// what storage holds, or, where the server spent the refresh token, says to
	// authorize again and keeps the credential until authorize/<name> replaces it.
	fe.b.waitFlight(fe.name) // a token request still under way ends first
	fe.idp.ClearFaults()
	for _, undo := range slices.Backward(fe.undo) {
		undo()
	}
	if fe.closed {
		fe.assertNoSecrets(secrets...)
		return
	}
	// A roomy policy: a recovery attempt that timed out on a busy machine while the
	// server rotated would spend the refresh token.
	fe.b.retry = roomyPolicy
	fe.clock.Add(61 * time.Minute)
	// A fault on every attempt opens the app's outage (5 failures in a row); the
	// scheduler's probe, due by now, ends it: run that turn here.
	fe.b.outageWork(fe.clock.Now())
	fe.b.waitFlight(fe.name)
	invalidGrants := fe.idp.Stats().Errors["invalid_grant"]
	if w.lost {
		fe.badRequest(logical.ReadOperation, "creds/"+fe.name, nil, "run authorize/"+fe.name)
		if fe.storedCred().RefreshToken == "" {
			t.Error("the refused credential was not kept")
		}
		if status, page := fe.callback(fe.authorize(fe.name, fe.config)); status != http.StatusOK {
			t.Fatalf("authorizing again: %d %s", status, pageText(page))
		}
		fe.mustDo(logical.ReadOperation, "creds/"+fe.name, nil)
	} else {
		resp := fe.mustDo(logical.ReadOperation, "creds/"+fe.name, nil)
		if resp.Data["access_token"] == token || len(resp.Warnings) != 0 {
			t.Errorf("no clean new token after the fault cleared: warnings %v", resp.Warnings)
		}
		if got := fe.idp.Stats().Errors["invalid_grant"]; got != invalidGrants {
			t.Errorf("the stored refresh token was refused after the fault: %d invalid_grant", got-invalidGrants)
		}
	}
	fe.assertNoSecrets(secrets...)
}

func storageVerdict(w faultWant, before, after map[string]string) string {
	switch {
	case maps.Equal(before, after):
		return "storage unchanged"
	case w.outcome == gotNew:
		return "new token stored"
	case w.refused:
		return "refusal stored"
	}
	return "storage changed"
}

// TestFaults_CodeExchange: faults while callback redeems the authorization code. The
// state is spent whatever happens; the credential is stored only on success.
func TestFaults_CodeExchange(t *testing.T) {
	t.Parallel()
	type exchangeCase struct {
		name     string
		arm      func(fe *faultEnv)
		status   int
		contains []string
		ttl      time.Duration
		min      time.Duration
	}
	cases := []exchangeCase{
		{"503, 502, then success", injecting(devidp.Fault{Status: 503}, devidp.Fault{Status: 502}), 200,
			[]string{"creds/hotel-ber"}, 0, 0},
		{"429 Retry-After 1, then success", injecting(devidp.Fault{Status: 429, RetryAfter: "1"}), 200,
			[]string{"creds/hotel-ber"}, 0, time.Second},
		{"token response without expires_in", injecting(devidp.Fault{NoExpiresIn: true}), 200,
			[]string{"creds/hotel-ber"}, defaultTokenLifetime, 0},
		{"non-JSON 200 body, once", injecting(devidp.Fault{Status: 200, Body: "<html>maintenance</html>"}), 502,
			[]string{"unusable token response", "not retried", "Nothing was stored", "authorize/hotel-ber"}, 0, 0},
		{"503 on every attempt", injecting(repeatFault(100, devidp.Fault{Status: 503})...), 502,
			[]string{"exchanging the code failed", "HTTP 503", "Nothing was stored", "authorize/hotel-ber"}, 0, 0},
		{"no answer at all (hang)", injecting(repeatFault(100, devidp.Fault{Hang: true})...), 504,
			[]string{"exchanging the code failed", "no answer in time", "Nothing was stored"}, 0, 0},
		{"connection refused", (*faultEnv).closeServer, 502,
			[]string{"exchanging the code failed", "connection refused", "Nothing was stored"}, 0, 0},
		{"answer lost after the code was redeemed", injecting(devidp.Fault{DropAfterHandle: true}), 400,
			[]string{"invalid_grant", "Nothing was stored", "authorize/hotel-ber"}, 0, 0},
		{"truncated JSON body", injecting(devidp.Fault{Truncate: true}), 502,
			[]string{"unusable token response", "authorization code sent with it may be spent", "Nothing was stored"}, 0, 0},
		{"certificate the config does not trust", (*faultEnv).distrust, 502,
			[]string{"TLS certificate not trusted", "Nothing was stored"}, 0, 0},
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	runConcurrently(t, names, func(t *testing.T, name string) {
		c := cases[slices.IndexFunc(cases, func(c exchangeCase) bool { return c.name == name })]
		e := newTestEnv(t)
		e.b.retry = faultPolicy
		fe := &faultEnv{testEnv: e, name: "hotel-ber", config: "connect"}
		e.writeConnectConfig("connect", nil)
		q := e.authorize("hotel-ber", "connect")
		c.arm(fe)
		before := storageSnapshot(t, e.storage)

		started := time.Now()
		status, page := e.callback(q)
		took := time.Since(started)
		t.Logf("fault row | code exchange: %s | HTTP %d | %v | %s", c.name, status, took.Round(10*time.Millisecond), excerpt(pageText(page), 200))
		if status != c.status {
			t.Errorf("status %d, want %d: %s", status, c.status, page)
		}
		for _, s := range c.contains {
			if !strings.Contains(page, s) {
				t.Errorf("page does not contain %q: %s", s, page)
			}
		}
		if took < c.min || took > hangGuard {
			t.Errorf("answered after %v, want between %v and %v", took, c.min, hangGuard)
		}
		if keys, _ := e.storage.List(t.Context(), pendingPrefix); len(keys) != 0 {
			t.Error("the state was not spent")
		}
		cred, _ := readCred(t.Context(), e.storage, "hotel-ber")
		if (cred != nil) != (status == 200) {
			t.Fatalf("status %d but creds/hotel-ber stored: %v", status, cred != nil)
		}
		if cred == nil {
			after := storageSnapshot(t, e.storage)
			// The spent state goes with its index entries (pending-expiry/, pending-name/).
			maps.DeleteFunc(before, func(k, _ string) bool { return strings.HasPrefix(k, "pending") })
			if !maps.Equal(before, after) {
				t.Errorf("a failed exchange changed storage: %v -> %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
			}
		} else if c.ttl != 0 && cred.Token.ExpiresAt.Sub(cred.Token.IssuedAt) != c.ttl {
			t.Errorf("token lifetime %v, want %v", cred.Token.ExpiresAt.Sub(cred.Token.IssuedAt), c.ttl)
		}
		e.assertNoSecrets(connectSc, q.Get("code"))
	})
}

// TestFaults_LastAttemptCutByTheBound: the server answers after 400 ms on every attempt;
// the third attempt starts with about 100 ms of the 1 s bound left and is cut short. The
// read must still say what the server answered, not 504 "no answer in time": the server
// did answer, every time. An unusable 200 body is an answer too.
func TestFaults_LastAttemptCutByTheBound(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault devidp.Fault
		want  []string
	}{
		{"503 server_error", devidp.Fault{Status: 503, Delay: 400 * time.Millisecond}, []string{"HTTP 503", "server_error"}},
		{"200 with a non-JSON body", devidp.Fault{Status: 200, Body: "<html>maintenance</html>", Delay: 400 * time.Millisecond},
			[]string{"unusable token response"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.b.retry = retryPolicy{Total: time.Second, PerAttempt: 750 * time.Millisecond, BaseDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
			e.writeSimpleConfig("hotel-muc", nil)
			e.idp.InjectFaults(repeatFault(10, c.fault)...)
			_, err := e.do(logical.ReadOperation, "creds/hotel-muc", nil)
			if err == nil {
				t.Fatal("want an error")
			}
			status := statusOf(logical.ReadOperation, nil, err)
			if status != http.StatusBadGateway || !slices.ContainsFunc(c.want, func(s string) bool { return strings.Contains(err.Error(), s) }) {
				t.Errorf("got %d %q; want 502 naming the server's answer, %q", status, err, c.want)
			}
		})
	}
}

// TestFaults_RedirectNotFollowed: the token endpoint answers 307 to another server.
// Following it re-sends the form, with client_secret and refresh_token, to wherever the
// Location points, past the https and ca_certificate rules that identity_url obeys.
// An OAuth token endpoint has no business redirecting: the answer must be an error,
// and the other server must see nothing. (A refresh token is not sent there at all: it
// is bound to the server that issued it. The simple client's secret is what would go.)
func TestFaults_RedirectNotFollowed(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)

	var mu sync.Mutex
	var leaked []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		leaked = append(leaked, r.Method+" "+r.URL.Path+" "+string(body))
		mu.Unlock()
		http.Error(w, "not here", http.StatusNotFound)
	}))
	defer elsewhere.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1) + r.URL.Path
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"identity_url": redirector.URL, "client_secret": mucSecret})
	_, err := e.do(logical.ReadOperation, "creds/hotel-muc", nil)
	if err == nil {
		t.Fatal("a redirected refresh succeeded")
	}
	if !strings.Contains(err.Error(), "redirect") {
		t.Errorf("the error does not say the server redirected: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) > 0 {
		t.Errorf("the token request followed a 307 to another server, which received %d request(s); the first: %s",
			len(leaked), redact(leaked[0], mucSecret))
	}
}

// redact hides secrets in a test failure message.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if i := strings.Index(s, sec); i >= 0 {
			s = s[:i+min(len(sec), 14)] + "[...]"
		}
	}
	return s
}

// storageSnapshot copies every storage entry, to prove that a request changed nothing.
func storageSnapshot(t testing.TB, s logical.Storage) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := logical.CollectKeys(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		entry, err := s.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if entry != nil {
			out[k] = string(entry.Value)
		}
	}
	return out
}

// errText is the message of an error or error response.
func errText(resp *logical.Response, err error) string {
	switch {
	case err != nil && resp != nil && resp.IsError():
		return resp.Error().Error() + ": " + err.Error()
	case err != nil:
		return err.Error()
	case resp != nil && resp.IsError():
		return resp.Error().Error()
	}
	return ""
}

func excerpt(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// pageText is what a callback page says in short: its heading, then the detail for the
// operator where there is one, else its lead sentence.
func pageText(page string) string {
	part := func(re *regexp.Regexp) string {
		if m := re.FindStringSubmatch(page); m != nil {
			return strings.Join(strings.Fields(html.UnescapeString(m[1])), " ")
		}
		return ""
	}
	said := part(detailRegex)
	if said == "" {
		said = part(leadRegex)
	}
	if said == "" {
		return page
	}
	return part(headingRegex) + ": " + strings.TrimPrefix(said, "For your Vault operator: ")
}

var (
	headingRegex = regexp.MustCompile(`(?s)<h1>(.*?)</h1>`)
	leadRegex    = regexp.MustCompile(`(?s)<p class="lead">(.*?)</p>`)
	detailRegex  = regexp.MustCompile(`(?s)<p class="detail">(.*?)</p>`)
)
