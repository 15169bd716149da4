package apaleo

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// branches_test.go: branches of the engine no other test reaches, each on the scripted
// fake identity server (engineEnv), which counts what was really sent.

// hangGuard bounds a wait that a correct run ends at once: far above any machine's
// scheduling noise, so only a hang trips it.
const hangGuard = 20 * time.Second

// waitQueuedAtLock waits until some goroutine is blocked taking a per-name lock inside
// fetchToken: the reader is past every check made without the lock.
func waitQueuedAtLock(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			// lockName is on the stack only while it waits for the lock.
			if strings.Contains(g, "(*backend).lockName") && strings.Contains(g, "(*backend).fetchToken") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reader queued at the name's lock within %s", hangGuard)
		}
		runtime.Gosched()
	}
}

// TestBranches_FailureRecheckedUnderLock: a reader that passed the failure check made
// without the lock and then queued behind a request that failed must not call apaleo
// again: fetchToken checks failure memory again once it holds the lock.
func TestBranches_FailureRecheckedUnderLock(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel", nil)
	// Stands in for the failing request: it holds the name's lock until its failure is
	// remembered, as fetchToken does.
	unlock := e.b.lockName("hotel")
	type answer struct {
		resp *logical.Response
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := e.do(logical.ReadOperation, "creds/hotel", nil)
		done <- answer{resp, err}
	}()
	waitQueuedAtLock(t)
	cfg, err := readConfig(context.Background(), e.storage, "hotel")
	if err != nil || cfg == nil {
		t.Fatalf("config/hotel: %v %v", cfg, err)
	}
	cred := e.stored("hotel")
	_ = e.b.rememberFailure(context.Background(), e.storage, "hotel", cred, cfg, upstream(http.StatusServiceUnavailable, ""))
	unlock()

	var a answer
	select {
	case a = <-done:
	case <-time.After(hangGuard):
		t.Fatalf("the queued reader did not return within %s", hangGuard)
	}
	if a.err == nil && (a.resp == nil || !a.resp.IsError()) {
		t.Fatalf("the queued reader got a token: %v", a.resp.Data)
	}
	if msg := errText(a.resp, a.err); !strings.Contains(msg, "next attempt at") {
		t.Errorf("the queued reader's error %q does not say when the next attempt is", msg)
	}
	if n := e.idp.total(); n != 0 {
		t.Errorf("the identity server got %d token requests while failure memory held, want 0", n)
	}
}

// TestBranches_ImportUpstreamFault: an import whose refresh meets 5xx answers until the
// retries run out, or a timeout, stores nothing and says the refresh token may be spent.
// A timeout is sent once (apaleo may have spent the token); a 5xx is retried within the
// policy (two attempts here, so the script runs out of neither).
func TestBranches_ImportUpstreamFault(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault error
		sends int
	}{
		{"5xx", upstream(http.StatusBadGateway, ""), 2},
		{"timeout", &upstreamError{Timeout: true, Temporary: true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngineEnv(t)
			e.b.retry.Attempts = 2
			e.connectConfig("connect", nil)
			e.idp.push(tc.fault, tc.fault, tc.fault)
			resp, err := e.do(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-imported"})
			status, msg := statusOf(logical.CreateOperation, resp, err), errText(resp, err)
			if status < 500 || !strings.Contains(msg, "Nothing was stored") || !strings.Contains(msg, "may be spent") {
				t.Errorf("import: %d %q, want a 5xx saying nothing was stored and the token may be spent", status, msg)
			}
			if strings.Contains(msg, "rt-imported") {
				t.Errorf("the error shows the refresh token: %q", msg)
			}
			if c, err := readCred(context.Background(), e.storage, "hotel-ber"); err != nil || c != nil {
				t.Errorf("creds/hotel-ber after a failed import: %v %v, want nothing stored", c, err)
			}
			if n := e.idp.count("refresh_token"); n != tc.sends {
				t.Errorf("the refresh token was sent %d times, want %d", n, tc.sends)
			}
		})
	}
}

// TestBranches_CredsExistence: Vault asks the existence check whether a write to
// creds/<name> is a create (the import, needing create capability) or an update (refused:
// an import never overwrites).
func TestBranches_CredsExistence(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel-muc", nil)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-1")
	for _, tc := range []struct {
		name   string
		exists bool
	}{
		{"hotel-new", false}, // nothing by that name: an import creates it
		{"connect", false},   // an authorization_code config is not readable at creds/
		{"hotel-ber", true},  // an authorized credential
		{"hotel-muc", true},  // a client-credentials config is readable at creds/
	} {
		req := &logical.Request{Operation: logical.CreateOperation, Path: "creds/" + tc.name, Storage: e.storage}
		found, exists, err := e.b.HandleExistenceCheck(context.Background(), req)
		if err != nil || !found || exists != tc.exists {
			t.Errorf("existence of creds/%s: found %v, exists %v, err %v; want exists %v", tc.name, found, exists, err, tc.exists)
		}
	}
	resp, err := e.do(logical.UpdateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-other"})
	if msg := errText(resp, err); !strings.Contains(msg, "exists") || e.idp.total() != 0 {
		t.Errorf("update of creds/hotel-ber: %q after %d token requests, want a refusal and none", msg, e.idp.total())
	}
}

// failingStorage fails every Put under prefix while fail is set.
type failingStorage struct {
	logical.Storage
	prefix string
	mu     sync.Mutex
	fail   bool
}

func (f *failingStorage) set(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *failingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	f.mu.Lock()
	fail := f.fail && strings.HasPrefix(e.Key, f.prefix)
	f.mu.Unlock()
	if fail {
		return errors.New("storage unavailable (injected)")
	}
	return f.Storage.Put(ctx, e)
}

// withFailingStorage gives e a backend on storage whose Puts under prefix fail on demand.
func withFailingStorage(e *engineEnv, prefix string) *failingStorage {
	fs := &failingStorage{Storage: e.storage, prefix: prefix}
	e.storage = fs
	e.b = e.newBackend(nil)
	return fs
}

// TestBranches_ConfigWriteStoreFails: when storing a config fails, the write fails and
// nothing of it stays: reads answer the stored config, the cached token stays (its
// generation did not move), and a create leaves no name behind.
func TestBranches_ConfigWriteStoreFails(t *testing.T) {
	e := newEngineEnv(t)
	fs := withFailingStorage(e, configPrefix)
	e.simpleConfig("hotel", map[string]any{"min_ttl": "10m"})
	tok := e.mustDo(logical.ReadOperation, "creds/hotel", nil).Data["access_token"]

	fs.set(true)
	if _, err := e.do(logical.UpdateOperation, "config/hotel", map[string]any{"client_secret": "new-secret", "min_ttl": "20m"}); err == nil {
		t.Fatal("the config write succeeded although storage refused it")
	}
	if _, err := e.do(logical.CreateOperation, "config/hotel-new", map[string]any{"client_id": "X", "client_secret": "s", "identity_url": "https://identity.example"}); err == nil {
		t.Fatal("the config create succeeded although storage refused it")
	}
	fs.set(false)

	if got := e.mustDo(logical.ReadOperation, "config/hotel", nil).Data["min_ttl"]; got != int64(600) {
		t.Errorf("config/hotel min_ttl = %v after a failed write, want the stored 600", got)
	}
	if got := e.mustDo(logical.ReadOperation, "creds/hotel", nil).Data["access_token"]; got != tok {
		t.Errorf("creds/hotel answered %v after a failed config write, want the cached %v", got, tok)
	}
	if n := e.idp.total(); n != 1 {
		t.Errorf("%d token requests, want 1 (the first read)", n)
	}
	keys := e.mustDo(logical.ListOperation, "config/", nil).Data["keys"]
	if strings.Contains(strings.Join(keys.([]string), " "), "hotel-new") {
		t.Errorf("config/ lists hotel-new, whose create failed: %v", keys)
	}
}

// TestBranches_TokenStoreFailsWithoutRotation: a client-credentials token whose store
// fails is still answered, and kept in memory so the next read sends no new request;
// nothing is marked unsaved, since no refresh token was rotated.
func TestBranches_TokenStoreFailsWithoutRotation(t *testing.T) {
	e := newEngineEnv(t)
	fs := withFailingStorage(e, credsPrefix)
	e.simpleConfig("hotel", nil)
	fs.set(true)
	first := e.mustDo(logical.ReadOperation, "creds/hotel", nil)
	second := e.mustDo(logical.ReadOperation, "creds/hotel", nil)
	if first.Data["access_token"] == nil || second.Data["access_token"] != first.Data["access_token"] {
		t.Errorf("reads answered %v then %v, want one token twice", first.Data["access_token"], second.Data["access_token"])
	}
	if n := e.idp.total(); n != 1 {
		t.Errorf("%d token requests, want 1: the token is kept in memory", n)
	}
	if len(first.Warnings) != 0 {
		t.Errorf("warnings %q: nothing of the operator's is at risk without a rotated refresh token", first.Warnings)
	}
	if c := e.stored("hotel"); c.Token != nil {
		t.Errorf("storage holds a token although every store failed: %+v", c.Token)
	}
	if e.b.unsavedOf("hotel") != nil {
		t.Error("marked unsaved, though no refresh token was rotated")
	}
	if !strings.Contains(e.logs.String(), "cached in memory only") {
		t.Error("no log line says the token is cached in memory only")
	}
}
