package apaleo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// Test clients of the in-process identity server (a real fosite OAuth 2.0 server).
const (
	mucID     = "MUC-SIMPLE"
	mucSecret = "muc-secret-5f1c2a9e" // must never show up in a response or log
	connectID = "CONNECT-APP"
	connectSc = "connect-secret-a81be44d"
)

// fakeClock is the plugin's clock in tests; the identity server keeps real time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// take returns what was written since the last take and starts afresh.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.buf.String()
	s.buf.Reset()
	return out
}

type testEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	idp     *devidp.Server
	ts      *httptest.Server
	caPEM   string
	clock   *fakeClock
	logs    *syncBuffer
	// seen collects every response, to check no secret ever leaves.
	seenMu sync.Mutex
	seen   []string
}

type envOption func(*devidp.Options)

func withTokenTTL(d time.Duration) envOption {
	return func(o *devidp.Options) { o.AccessTokenLifespan = d }
}

func withClient(c devidp.Client) envOption {
	return func(o *devidp.Options) { o.Clients = append(o.Clients, c) }
}

// signingKey is shared by the tests' identity servers: RSA key generation is slow under -race.
var signingKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// TestMain lets the parallel tests (t.Parallel) all run at once unless -parallel says
// otherwise: they are the slow ones, and they spend their time waiting for timers and
// the identity server, not on the CPU that -parallel's default (GOMAXPROCS) is sized for.
// Fuzzing keeps the default: there -parallel counts the fuzzing processes.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" || f.Name == "test.fuzz" })
	if !set {
		if err := flag.Set("test.parallel", "16"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// listeners keeps the tests' new servers off the ports that closed servers left behind
// while a test counts on connections to such a port being refused (closePort). Servers
// start together, and tests holding closed ports run together, but never both at once.
var listeners = newPortGuard()

type portGuard struct {
	mu                          sync.Mutex
	cond                        *sync.Cond
	starting, holding, toBeHeld int
}

func newPortGuard() *portGuard {
	g := &portGuard{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// starts runs start, which takes a port, while no closed port is held.
func (g *portGuard) starts(start func()) {
	g.mu.Lock()
	for g.holding > 0 || g.toBeHeld > 0 {
		g.cond.Wait()
	}
	g.starting++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.starting--
		g.cond.Broadcast()
		g.mu.Unlock()
	}()
	start()
}

// hold waits until no server is starting, then holds the closed ports off until release.
func (g *portGuard) hold() (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.toBeHeld++
	for g.starting > 0 {
		g.cond.Wait()
	}
	g.toBeHeld--
	g.holding++
	return func() {
		g.mu.Lock()
		g.holding--
		g.cond.Broadcast()
		g.mu.Unlock()
	}
}

// newTestServer starts an httptest server (with TLS, or plain) under the listeners guard;
// errorLog, if not nil, takes the server's own error log.
func newTestServer(h http.Handler, withTLS bool, errorLog *log.Logger) *httptest.Server {
	var ts *httptest.Server
	listeners.starts(func() {
		ts = httptest.NewUnstartedServer(h)
		ts.Config.ErrorLog = errorLog
		if withTLS {
			ts.StartTLS()
		} else {
			ts.Start()
		}
	})
	return ts
}

// closePort closes ts and keeps its port free of other tests' new servers until t ends.
func closePort(t *testing.T, ts *httptest.Server) {
	t.Cleanup(listeners.hold())
	ts.Close()
}

func newTestEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	o := devidp.Options{SigningKey: signingKey(), Clients: []devidp.Client{
		{ID: mucID, Secret: mucSecret, AccountCode: "MUC", Scopes: []string{"reservations.read", "setup.read"}},
		{ID: connectID, Secret: connectSc, AccountCode: "BER", Scopes: []string{"reservations.read", "setup.read"},
			RedirectURIs: []string{"https://vault.example/v1/apaleo/callback"}},
	}}
	for _, opt := range opts {
		opt(&o)
	}
	idp, err := devidp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(idp, true, nil)
	t.Cleanup(func() {
		idp.Close()
		ts.Close()
	})
	env := &testEnv{
		t:       t,
		storage: &logical.InmemStorage{},
		idp:     idp,
		ts:      ts,
		caPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})),
		clock:   &fakeClock{now: time.Now()},
		logs:    &syncBuffer{},
	}
	env.b = env.newBackend()
	return env
}

// newBackend starts a backend on the env's storage, as a plugin restart would.
func (e *testEnv) newBackend() *backend {
	e.t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = e.storage
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: e.logs})
	b := newBackend()
	b.now = e.clock.Now
	b.retry = retryPolicy{Total: 3 * time.Second, PerAttempt: time.Second, BaseDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
	b.refreshTimeout = 3 * time.Second
	b.refresher.manual = true // tests run refresh-ahead with their clock: runDue
	// Waiting for the budget moves the plugin's clock: the identity server keeps real
	// time, and the plugin's clock stands still unless a test moves it.
	b.waitUntil = func(_ context.Context, t time.Time) error { e.clock.advanceTo(t); return nil }
	if err := b.Setup(context.Background(), conf); err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *testEnv) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.record(resp, err)
	return resp, err
}

func (e *testEnv) record(resp *logical.Response, err error) {
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	if resp != nil {
		e.seen = append(e.seen, fmt.Sprintf("%#v %v %v", resp.Data, resp.Warnings, resp.Secret))
	}
	if err != nil {
		e.seen = append(e.seen, err.Error())
	}
}

// mustDo fails the test on an error or an error response.
func (e *testEnv) mustDo(op logical.Operation, path string, data map[string]any) *logical.Response {
	e.t.Helper()
	resp, err := e.do(op, path, data)
	if err != nil || (resp != nil && resp.IsError()) {
		e.t.Fatalf("%s %s: err=%v resp=%v", op, path, err, respErr(resp))
	}
	return resp
}

// badRequest asserts a 4xx answer whose message contains want, and returns it.
func (e *testEnv) badRequest(op logical.Operation, path string, data map[string]any, want string) string {
	e.t.Helper()
	resp, err := e.do(op, path, data)
	msg := ""
	switch {
	case err != nil:
		code := statusOf(op, resp, err)
		if code < 400 || code >= 500 {
			e.t.Fatalf("%s %s: want 4xx, got %d: %v", op, path, code, err)
		}
		msg = err.Error()
	case resp != nil && resp.IsError():
		msg = resp.Error().Error()
	default:
		e.t.Fatalf("%s %s: want an error containing %q, got success %v", op, path, want, resp)
	}
	if !strings.Contains(msg, want) {
		e.t.Fatalf("%s %s: error %q does not contain %q", op, path, msg, want)
	}
	return msg
}

// statusOf is the HTTP status Vault would answer.
func statusOf(op logical.Operation, resp *logical.Response, err error) int {
	code, err := logical.RespondErrorCommon(&logical.Request{Operation: op}, resp, err)
	if err != nil {
		logical.AdjustErrorStatusCode(&code, err)
	}
	return code
}

func respErr(resp *logical.Response) any {
	if resp == nil {
		return nil
	}
	if resp.IsError() {
		return resp.Error()
	}
	return resp.Data
}

// writeSimpleConfig registers the simple client as config/<name>.
func (e *testEnv) writeSimpleConfig(name string, extra map[string]any) {
	e.t.Helper()
	e.writeConfig(name, map[string]any{"client_id": mucID, "client_secret": mucSecret}, extra)
}

// writeConnectConfig registers the connect app as config/<name>.
func (e *testEnv) writeConnectConfig(name string, extra map[string]any) {
	e.t.Helper()
	e.writeConfig(name, map[string]any{"client_id": connectID, "client_secret": connectSc,
		"grant_type": "authorization_code", "redirect_uri": connectRedirect}, extra)
}

// writeConfig creates config/<name> against the test identity server from fields,
// then extra on top.
func (e *testEnv) writeConfig(name string, fields, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{
		"identity_url":   e.ts.URL,
		"ca_certificate": e.caPEM,
		"scopes":         "reservations.read setup.read",
	}
	maps.Copy(data, fields)
	maps.Copy(data, extra)
	e.mustDo(logical.CreateOperation, "config/"+name, data)
}

func (e *testEnv) tokenRequests() int { return e.idp.Stats().TokenRequests }

// assertNoSecrets checks every response, error and log line for the given secrets.
func (e *testEnv) assertNoSecrets(secrets ...string) {
	e.t.Helper()
	e.seenMu.Lock()
	all := strings.Join(e.seen, "\n")
	e.seenMu.Unlock()
	logs := e.logs.String()
	if logs == "" {
		e.t.Fatal("no logs captured: the secret scan would prove nothing")
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(all, s) {
			e.t.Errorf("secret %.6q... appears in a response or error", s)
		}
		if strings.Contains(logs, s) {
			e.t.Errorf("secret %.6q... appears in the trace log", s)
		}
	}
}

func TestBackend_Factory(t *testing.T) {
	b, err := Factory(context.Background(), logical.TestBackendConfig())
	if err != nil {
		t.Fatal(err)
	}
	fb := b.(*backend)
	if fb.RunningVersion != Version {
		t.Fatalf("RunningVersion %q, want %q", fb.RunningVersion, Version)
	}
	sp := fb.SpecialPaths()
	for _, p := range []string{configPrefix, credsPrefix} {
		if !strings.Contains(strings.Join(sp.SealWrapStorage, " "), p) {
			t.Errorf("SealWrapStorage %v lacks %s", sp.SealWrapStorage, p)
		}
	}
	if len(sp.Unauthenticated) != 1 || sp.Unauthenticated[0] != "callback" {
		t.Errorf("Unauthenticated = %v, want [callback]", sp.Unauthenticated)
	}
}

// TestBackend_Invalidate: a replicated write elsewhere drops the in-memory copies, so a
// standby never serves a stale config.
// TestBackend_Invalidate: a change another node makes to storage reaches this node's
// in-memory cache through Invalidate (against the fake identity server).
func TestBackend_Invalidate(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel-muc", nil)
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)

	// Another node changes the stored config behind this backend's back.
	cfg, err := readConfig(context.Background(), e.storage, "hotel-muc")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MinTTL = 2 * time.Hour
	if err := writeJSON(context.Background(), e.storage, configPrefix+"hotel-muc", cfg); err != nil {
		t.Fatal(err)
	}
	resp := e.mustDo(logical.ReadOperation, "config/hotel-muc", nil)
	if got := resp.Data["min_ttl"]; got != int64(900) {
		t.Fatalf("before Invalidate the cached copy is expected, got min_ttl %v", got)
	}
	e.b.InvalidateKey(context.Background(), configPrefix+"hotel-muc")
	resp = e.mustDo(logical.ReadOperation, "config/hotel-muc", nil)
	if got := resp.Data["min_ttl"]; got != int64(7200) {
		t.Fatalf("after Invalidate min_ttl = %v, want 7200", got)
	}

	// A replicated credential change is seen too: the cached token dropped elsewhere.
	if err := writeJSON(context.Background(), e.storage, credsPrefix+"hotel-muc", &credential{Config: "hotel-muc", GrantType: grantClientCredentials}); err != nil {
		t.Fatal(err)
	}
	e.b.InvalidateKey(context.Background(), credsPrefix+"hotel-muc")
	before := e.idp.total()
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if got := e.idp.total() - before; got != 1 {
		t.Fatalf("after a replicated token drop, %d token requests, want 1", got)
	}
}

// TestBackend_Restart: configs and cached tokens survive a plugin restart (against the
// fake identity server).
func TestBackend_Restart(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel-muc", nil)
	first := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	before := e.idp.total()

	e.b = e.newBackend(nil)
	second := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.idp.total() != before {
		t.Fatalf("restart caused %d token requests", e.idp.total()-before)
	}
	if first.Data["access_token"] != second.Data["access_token"] {
		t.Fatal("restart did not reuse the stored token")
	}
}

// TestFlightCount: Clean's wait for the token requests under way returns the moment the
// last one ends, waits again for one that started meanwhile, and gives up at its bound.
func TestFlightCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c flightCount
		if !c.wait(time.Second) {
			t.Fatal("wait with none under way: false")
		}
		c.add()
		c.add()
		start := time.Now()
		go func() {
			time.Sleep(303 * time.Millisecond)
			c.done()
			c.add() // another starts as one ends
			c.done()
			time.Sleep(404 * time.Millisecond)
			c.done()
		}()
		if !c.wait(5*time.Second) || time.Since(start) != 707*time.Millisecond {
			t.Fatalf("wait returned after %v, want the moment the last ended (707ms)", time.Since(start))
		}
		c.add()
		start = time.Now()
		if c.wait(2*time.Second) || time.Since(start) != 2*time.Second || c.Load() != 1 {
			t.Fatalf("wait with one stuck: returned after %v (want false after 2s), %d under way", time.Since(start), c.Load())
		}
		c.done()
	})
}
