package apaleo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// fake_identity_test.go: a scripted fake of the identity server that answers and counts in
// memory, and engineEnv, a backend on in-memory storage that talks only to it. Tests of the
// engine's own logic (caching, min_ttl, single flight, locks, rotation bookkeeping, failure
// memory, the budget) use it: no TLS, no OAuth framework, no network. The flows, the fault
// matrix and the end-to-end tests use the fosite server (testEnv in backend_test.go).

// fakeIdentity is a scripted identity server. Each call takes the next scripted answer
// (nil: a good token); refreshes rotate and refuse a spent refresh token, so a refresh
// token sent twice shows.
type fakeIdentity struct {
	now func() time.Time

	mu     sync.Mutex
	script []error
	calls  map[string]int // by grant
	times  []time.Time    // real time of each call
	// clockTimes: the injected clock's time of each call
	clockTimes []time.Time
	revoked    []string   // refresh tokens revoked, in order
	asked      [][]string // scopes of each client credentials request, in order
	latency    func()     // called as each request is handled, to move a test's clock
	spent      map[string]bool
	refused    int // refresh tokens refused as spent (invalid_grant)
	issued     int
	lifetime   time.Duration
	noRotate   bool
	// gate, when set, holds every call until it is closed (or a value is sent).
	gate chan struct{}
	// holdFor holds only the refreshes of this refresh token prefix at gate.
	started chan string
	// revokeGate, when set, holds every revocation until it is closed; revoking is
	// signalled as one starts.
	revokeGate chan struct{}
	revoking   chan struct{}
}

func newFakeIdentity(now func() time.Time) *fakeIdentity {
	return &fakeIdentity{now: now, calls: map[string]int{}, spent: map[string]bool{}, lifetime: time.Hour}
}

// answer is one attempt: charged to the backend's budget (the attempt guard, as
// withRetries does for the real client), then scripted.
func (f *fakeIdentity) answer(ctx context.Context, grant, refreshToken string) (res *tokenResult, err error) {
	if g, ok := ctx.Value(attemptGuardKey{}).(attemptGuard); ok && g != nil {
		if err := g.before(ctx); err != nil {
			return nil, err
		}
		defer func() { g.after(err) }()
	}
	return f.scripted(grant, refreshToken)
}

func (f *fakeIdentity) scripted(grant, refreshToken string) (*tokenResult, error) {
	f.mu.Lock()
	f.calls[grant]++
	f.times = append(f.times, time.Now())
	f.clockTimes = append(f.clockTimes, f.now())
	gate, started := f.gate, f.started
	var err error
	if len(f.script) > 0 {
		err, f.script = f.script[0], f.script[1:]
	}
	f.mu.Unlock()
	if started != nil {
		started <- refreshToken
	}
	if gate != nil {
		<-gate
	}
	if f.latency != nil {
		f.latency() // apaleo takes its time: the plugin's clock moves meanwhile
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil && err != errDropAfterHandle {
		return nil, err
	}
	if refreshToken != "" {
		if f.spent[refreshToken] {
			f.refused++
			return nil, &upstreamError{Status: 400, Code: "invalid_grant", Answered: true}
		}
		if !f.noRotate {
			f.spent[refreshToken] = true
		}
	}
	f.issued++
	now := f.now()
	res := &tokenResult{AccessToken: fmt.Sprintf("at-%d", f.issued), TokenType: "Bearer", IssuedAt: now,
		Expiry: now.Add(f.lifetime), Scopes: []string{"reservations.read"}, AccountCode: "BER"}
	if refreshToken != "" && !f.noRotate {
		res.RefreshToken = fmt.Sprintf("rt-%d", f.issued)
	}
	if err == errDropAfterHandle {
		// Handled (the refresh token is spent, a new one minted), but the answer never
		// arrives: the connection died on the way back.
		return nil, &upstreamError{Temporary: true, cause: "connection reset by peer"}
	}
	return res, nil
}

// errDropAfterHandle, scripted, handles the request and then loses its answer.
var errDropAfterHandle = errors.New("drop after handle")

func (f *fakeIdentity) ClientCredentials(ctx context.Context, scopes []string, _ retryPolicy) (*tokenResult, error) {
	f.mu.Lock()
	f.asked = append(f.asked, scopes)
	f.mu.Unlock()
	return f.answer(ctx, grantClientCredentials, "")
}

func (f *fakeIdentity) Refresh(ctx context.Context, rt string, _ retryPolicy) (*tokenResult, error) {
	return f.answer(ctx, "refresh_token", rt)
}

func (f *fakeIdentity) Exchange(ctx context.Context, _, _ string, _ []string, _ retryPolicy) (*tokenResult, error) {
	return f.answer(ctx, grantAuthorizationCode, "code")
}

func (f *fakeIdentity) Revoke(_ context.Context, rt string, _ retryPolicy) error {
	f.mu.Lock()
	gate := f.revokeGate
	if gate != nil && f.revoking == nil {
		f.revoking = make(chan struct{})
	}
	revoking := f.revoking
	f.mu.Unlock()
	if gate != nil {
		close(revoking)
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["revoke"]++
	f.revoked = append(f.revoked, rt)
	return nil
}

func (f *fakeIdentity) AuthCodeURL(state, _ string, _ []string) string {
	return "https://identity.example/connect/authorize?state=" + state
}

// waitRevoking waits until a revocation is held at revokeGate.
func (f *fakeIdentity) waitRevoking(t *testing.T) {
	t.Helper()
	deadline := time.After(hangGuard)
	for {
		f.mu.Lock()
		ch := f.revoking
		f.mu.Unlock()
		if ch != nil {
			select {
			case <-ch:
				return
			case <-deadline:
				t.Fatal("no revocation started")
			}
		}
		select {
		case <-deadline:
			t.Fatal("no revocation started")
		case <-time.After(time.Millisecond):
		}
	}
}

func (f *fakeIdentity) push(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, errs...)
}

func (f *fakeIdentity) count(grant string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[grant]
}

// invalidGrants is how many spent refresh tokens were sent, and refused.
func (f *fakeIdentity) invalidGrants() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

func (f *fakeIdentity) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.times)
}

// engineEnv is a backend on in-memory storage with the fake identity server.
type engineEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	idp     *fakeIdentity
	clock   *fakeClock
	logs    *syncBuffer
}

func newEngineEnv(t *testing.T) *engineEnv {
	t.Helper()
	e := &engineEnv{t: t, storage: &logical.InmemStorage{}, clock: &fakeClock{now: time.Now()}, logs: &syncBuffer{}}
	e.idp = newFakeIdentity(e.clock.Now)
	e.b = e.newBackend(nil)
	return e
}

func (e *engineEnv) newBackend(sys logical.SystemView) *backend {
	e.t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = e.storage
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: e.logs})
	if sys != nil {
		conf.System = sys
	}
	b := newBackend()
	b.now = e.clock.Now
	b.retry = retryPolicy{Total: 3 * time.Second, PerAttempt: time.Second, BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
	b.refreshTimeout = 3 * time.Second
	b.refresher.manual = true
	// Waiting for the budget moves the test's clock instead of sleeping.
	b.waitUntil = func(_ context.Context, t time.Time) error { e.clock.advanceTo(t); return nil }
	b.newClient = func(clientSettings, func() time.Time) (identityServer, error) { return e.idp, nil }
	if err := b.Setup(context.Background(), conf); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { b.Clean(context.Background()) })
	return b
}

func (e *engineEnv) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	return e.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage})
}

func (e *engineEnv) mustDo(op logical.Operation, path string, data map[string]any) *logical.Response {
	e.t.Helper()
	resp, err := e.do(op, path, data)
	if err != nil || (resp != nil && resp.IsError()) {
		e.t.Fatalf("%s %s: err=%v resp=%v", op, path, err, respErr(resp))
	}
	return resp
}

// readErr reads creds/<name> and returns the status and text of its error.
func (e *engineEnv) readErr(name string) (int, string) {
	e.t.Helper()
	resp, err := e.do(logical.ReadOperation, "creds/"+name, nil)
	if err == nil && (resp == nil || !resp.IsError()) {
		e.t.Fatalf("read %s: want an error, got %v", name, resp.Data)
	}
	return statusOf(logical.ReadOperation, resp, err), errText(resp, err)
}

func (e *engineEnv) simpleConfig(name string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{"client_id": "ID-" + name, "client_secret": "secret-" + name, "identity_url": "https://identity.example"}
	for k, v := range extra {
		data[k] = v
	}
	e.mustDo(logical.CreateOperation, "config/"+name, data)
}

func (e *engineEnv) connectConfig(name string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{"client_id": "CONNECT", "client_secret": "connect-secret", "grant_type": grantAuthorizationCode,
		"identity_url": "https://identity.example", "redirect_uri": "https://vault.example/v1/apaleo/callback"}
	for k, v := range extra {
		data[k] = v
	}
	e.mustDo(logical.CreateOperation, "config/"+name, data)
}

// authorized stores an authorized credential with the refresh token rt and, unless
// expired, a token issued now.
func (e *engineEnv) authorized(name, config, rt string) {
	e.t.Helper()
	now := e.clock.Now()
	c := &credential{Kind: kindAuthorized, Config: config, GrantType: grantAuthorizationCode, RefreshToken: rt, AccountCode: "BER", CreatedAt: now,
		Token: &cachedToken{AccessToken: "at-" + name, TokenType: "Bearer", IssuedAt: now, ExpiresAt: now.Add(time.Hour), Generation: 1}}
	if err := e.b.putCred(context.Background(), e.storage, name, c); err != nil {
		e.t.Fatal(err)
	}
	e.b.clearFailure(name) // as a new authorization does
}

func (e *engineEnv) stored(name string) *credential {
	e.t.Helper()
	c, err := readCred(context.Background(), e.storage, name)
	if err != nil || c == nil {
		e.t.Fatalf("creds/%s: %v %v", name, c, err)
	}
	return c
}

// settle waits until no token request of name is under way.
func (e *engineEnv) settle(name string) { e.b.waitFlight(name) }

// waitFlight waits for the token request of name under way, if any.
func (b *backend) waitFlight(name string) {
	_, _, _ = b.flights.Do(name, func() (any, error) { return nil, nil })
}

func upstream(status int, code string) *upstreamError {
	return &upstreamError{Status: status, Code: code, Answered: true, Temporary: status >= 500 || status == 429}
}

func (e *engineEnv) list() map[string]map[string]any {
	e.t.Helper()
	resp := e.mustDo(logical.ListOperation, "creds/", nil)
	out := map[string]map[string]any{}
	infos, _ := resp.Data["key_info"].(map[string]any)
	for k, v := range infos {
		out[k] = v.(map[string]any)
	}
	return out
}

// advanceTo moves the clock to t, if it is earlier.
func (c *fakeClock) advanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

// waitFlights waits until no background work and no token request is under way.
func (b *backend) waitFlights() {
	for deadline := time.Now().Add(10 * time.Second); b.backgroundRunning.Load() > 0 || b.inflight.Load() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			panic("background work still running after 10 s")
		}
	}
}

// newFlakyEngineEnv is an engineEnv whose storage fails writes on demand, with a connect
// config and one authorized credential, hotel-ber, holding rt-0.
func newFlakyEngineEnv(t *testing.T) (*engineEnv, *flakyStorage) {
	e := newEngineEnv(t)
	flaky := &flakyStorage{Storage: e.storage}
	e.storage = flaky
	e.b = e.newBackend(nil)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	return e, flaky
}
