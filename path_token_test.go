package apaleo

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

func TestCreds_ClientCredentials(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)

	resp := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	d := resp.Data
	if tok, _ := d["access_token"].(string); strings.Count(tok, ".") != 2 {
		t.Fatalf("access_token is not a JWT: %q", tok)
	}
	if d["token_type"] != "bearer" && d["token_type"] != "Bearer" {
		t.Fatalf("token_type = %v", d["token_type"])
	}
	if d["account_code"] != "MUC" || d["client_id"] != mucID || d["config"] != "hotel-muc" {
		t.Fatalf("claims: %#v", d)
	}
	if !reflect.DeepEqual(d["scopes"], []string{"reservations.read", "setup.read"}) {
		t.Fatalf("scopes = %v", d["scopes"])
	}
	exp, err := time.Parse(time.RFC3339, d["expires_at"].(string))
	if err != nil || exp.Sub(e.clock.Now()) < 59*time.Minute || exp.Sub(e.clock.Now()) > time.Hour {
		t.Fatalf("expires_at = %v (%v)", d["expires_at"], err)
	}
	if resp.Secret == nil || resp.Secret.Renewable || resp.Secret.TTL < 59*time.Minute || resp.Secret.TTL > time.Hour {
		t.Fatalf("lease: %#v", resp.Secret)
	}
	if got := e.idp.Stats().ByGrant["client_credentials"]; got != 1 {
		t.Fatalf("client_credentials requests = %d", got)
	}

	// Reused from the cache: no new token request, TTL counts down.
	e.clock.Add(10 * time.Minute)
	again := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if again.Data["access_token"] != d["access_token"] || e.tokenRequests() != 1 {
		t.Fatalf("cache not reused: %d token requests", e.tokenRequests())
	}
	if again.Secret.TTL > 50*time.Minute {
		t.Fatalf("TTL %v does not count down", again.Secret.TTL)
	}

	// Revoking the lease succeeds without calling apaleo.
	revoke := &logical.Request{Operation: logical.RevokeOperation, Path: "creds/hotel-muc", Secret: again.Secret, Storage: e.storage}
	if _, err := e.b.HandleRequest(context.Background(), revoke); err != nil {
		t.Fatalf("lease revoke: %v", err)
	}
	if st := e.idp.Stats(); st.Revocations != 0 || st.TokenRequests != 1 {
		t.Fatalf("lease revoke called apaleo: %+v", st)
	}

	// Delete drops the cached token; the name stays readable.
	e.mustDo(logical.DeleteOperation, "creds/hotel-muc", nil)
	third := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if third.Data["access_token"] == d["access_token"] || e.tokenRequests() != 2 {
		t.Fatalf("delete did not drop the cached token (%d requests)", e.tokenRequests())
	}
	e.assertNoSecrets(mucSecret)
}

func TestCreds_NotFound(t *testing.T) {
	e := newTestEnv(t)
	if resp := e.mustDo(logical.ReadOperation, "creds/nope", nil); resp != nil {
		t.Fatalf("unknown name: %v", resp.Data)
	}
	e.mustDo(logical.CreateOperation, "config/connect", map[string]any{"client_id": connectID, "client_secret": connectSc,
		"grant_type": "authorization_code", "redirect_uri": "https://vault.example/v1/apaleo/callback"})
	e.badRequest(logical.ReadOperation, "creds/connect", nil, "authorize/<name> config=connect")
}

// TestCreds_MinTTL: a cached token is handed out only while it has more than min_ttl
// left, or more than half its lifetime where that is shorter.
func TestCreds_MinTTL(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", map[string]any{"min_ttl": "15m"})
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)

	e.clock.Add(44 * time.Minute) // 16 min left
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.tokenRequests() != 1 {
		t.Fatalf("token with 16m left was not reused")
	}
	e.clock.Add(90 * time.Second) // 14.5 min left
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.tokenRequests() != 2 {
		t.Fatalf("token with 14.5m left was reused")
	}

	// min_ttl longer than half the lifetime: half the lifetime rules.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"min_ttl": "50m"})
	e.clock.Add(29 * time.Minute) // 31 min left of 60
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.tokenRequests() != 2 {
		t.Fatalf("token with more than half its life left was not reused")
	}
	e.clock.Add(2 * time.Minute)
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.tokenRequests() != 3 {
		t.Fatalf("token with less than half its life left was reused")
	}
}

// TestCreds_ConcurrentColdReads: 100 concurrent reads of a cold name make one token
// request and all get its token.
func TestCreds_ConcurrentColdReads(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)

	const readers = 100
	var wg sync.WaitGroup
	tokens := make([]string, readers)
	errs := make([]error, readers)
	start := make(chan struct{})
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := e.do(logical.ReadOperation, "creds/hotel-muc", nil)
			if err != nil {
				errs[i] = err
				return
			}
			tokens[i], _ = resp.Data["access_token"].(string)
		}()
	}
	close(start)
	wg.Wait()
	for i := range readers {
		if errs[i] != nil || tokens[i] == "" || tokens[i] != tokens[0] {
			t.Fatalf("reader %d: err=%v token=%.10q", i, errs[i], tokens[i])
		}
	}
	got := e.tokenRequests()
	t.Logf("%d concurrent cold reads -> %d token request(s)", readers, got)
	if got != 1 {
		t.Fatalf("%d token requests, want 1", got)
	}
}

func TestCreds_GrantedScopesDiffer(t *testing.T) {
	e := newTestEnv(t, withClient(devidp.Client{ID: "FINE", Secret: "fine-secret", AccountCode: "FRA",
		Scopes: []string{"reservations.read"}, GrantedScopes: []string{"identity:permissions"}}))
	e.mustDo(logical.CreateOperation, "config/fine", map[string]any{"client_id": "FINE", "client_secret": "fine-secret",
		"identity_url": e.ts.URL, "ca_certificate": e.caPEM, "scopes": "reservations.read"})
	resp := e.mustDo(logical.ReadOperation, "creds/fine", nil)
	if !reflect.DeepEqual(resp.Data["scopes"], []string{"identity:permissions"}) {
		t.Fatalf("scopes = %v, want what the server granted", resp.Data["scopes"])
	}
}

func TestCreds_UpstreamErrors(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)

	// Wrong secret: invalid_client, pointing at the config. The change of secret also
	// drops nothing yet cached (there is none) and the error changes nothing.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"client_secret": "wrong-secret-value"})
	msg := e.badRequest(logical.ReadOperation, "creds/hotel-muc", nil, "invalid_client")
	if !strings.Contains(msg, "check client_id and client_secret of config/hotel-muc") {
		t.Fatalf("invalid_client message: %q", msg)
	}
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"client_secret": mucSecret})

	// Scopes the client may not have: invalid_scope, naming them.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"scopes": "reservations.read finance.manage"})
	msg = e.badRequest(logical.ReadOperation, "creds/hotel-muc", nil, "invalid_scope")
	if !strings.Contains(msg, "finance.manage") {
		t.Fatalf("invalid_scope message does not name the scopes: %q", msg)
	}
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"scopes": "reservations.read"})

	// 429 with Retry-After, then success: honoured inside the time bound.
	e.idp.InjectFaults(devidp.Fault{Status: http.StatusTooManyRequests, RetryAfter: "1"})
	started := time.Now()
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if waited := time.Since(started); waited < time.Second {
		t.Fatalf("Retry-After 1 not honoured: answered after %v", waited)
	}

	// 429 whose Retry-After is beyond the bound: the error says when to retry.
	e.mustDo(logical.DeleteOperation, "creds/hotel-muc", nil)
	e.idp.InjectFaults(devidp.Fault{Status: http.StatusTooManyRequests, RetryAfter: "120"})
	msg = e.badRequest(logical.ReadOperation, "creds/hotel-muc", nil, "retry after 2m0s")
	if !strings.Contains(msg, "429") {
		t.Fatalf("429 message: %q", msg)
	}

	// 500 and 503, then success: retried with backoff.
	e.idp.InjectFaults(devidp.Fault{Status: 500}, devidp.Fault{Status: 503})
	before := e.tokenRequests()
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if got := e.tokenRequests() - before; got != 3 {
		t.Fatalf("500, 503, success took %d requests, want 3", got)
	}

	// Free text in "error", as IdentityServer sends for a deactivated user: passed through.
	e.mustDo(logical.DeleteOperation, "creds/hotel-muc", nil)
	e.idp.InjectFaults(devidp.Fault{Status: 400, Body: `{"error":"User x@example.com has no access to MUC"}`})
	e.badRequest(logical.ReadOperation, "creds/hotel-muc", nil, "User x@example.com has no access to MUC")
	e.assertNoSecrets(mucSecret, "wrong-secret-value")
}

// TestCreds_HangingServer: a server that never answers gives a timeout error within the
// bounded time.
func TestCreds_HangingServer(t *testing.T) {
	e := newTestEnv(t)
	e.b.retry = retryPolicy{Total: 1500 * time.Millisecond, PerAttempt: 500 * time.Millisecond, BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
	e.writeSimpleConfig("hotel-muc", nil)
	e.idp.InjectFaults(devidp.Fault{Hang: true}, devidp.Fault{Hang: true}, devidp.Fault{Hang: true}, devidp.Fault{Hang: true})
	started := time.Now()
	_, err := e.do(logical.ReadOperation, "creds/hotel-muc", nil)
	took := time.Since(started)
	if err == nil || !strings.Contains(err.Error(), "no answer in time") {
		t.Fatalf("want a timeout error, got %v", err)
	}
	if code := statusOf(logical.ReadOperation, nil, err); code != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", code)
	}
	if took > 3*time.Second {
		t.Fatalf("gave up after %v, past the 1.5 s bound", took)
	}
}

// TestCreds_StaleServe: when a refresh fails and the cached token is still valid, the
// cached token is the answer at once, without waiting out the retries.
func TestCreds_StaleServe(t *testing.T) {
	e := newTestEnv(t)
	e.b.retry = retryPolicy{Total: 20 * time.Second, PerAttempt: 2 * time.Second, BaseDelay: time.Second, MaxDelay: 4 * time.Second}
	e.writeSimpleConfig("hotel-muc", nil)
	first := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)

	e.clock.Add(50 * time.Minute) // below min_ttl, still valid
	e.idp.InjectFaults(devidp.Fault{Status: 503}, devidp.Fault{Status: 503}, devidp.Fault{Status: 503})
	started := time.Now()
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if took := time.Since(started); took > time.Second {
		t.Fatalf("stale serve took %v: it waited for retries", took)
	}
	if resp.Data["access_token"] != first.Data["access_token"] {
		t.Fatal("the cached token was not served")
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "HTTP 503") {
		t.Fatalf("warnings = %v", resp.Warnings)
	}
	if resp.Secret.TTL > 11*time.Minute {
		t.Fatalf("stale token TTL %v", resp.Secret.TTL)
	}

	// Once the server is back, the next read gets a new token.
	e.idp.ClearFaults()
	next := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if next.Data["access_token"] == first.Data["access_token"] || len(next.Warnings) != 0 {
		t.Fatal("no new token after recovery")
	}
}

func TestCreds_TokenWithoutExpiresIn(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)
	e.idp.InjectFaults(devidp.Fault{NoExpiresIn: true})
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if ttl := resp.Secret.TTL; ttl != defaultTokenLifetime {
		t.Fatalf("TTL %v, want the default lifetime %v", ttl, defaultTokenLifetime)
	}
}

func TestCreds_UntrustedCertificate(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"ca_certificate": ""})
	_, err := e.do(logical.ReadOperation, "creds/hotel-muc", nil)
	if err == nil || !strings.Contains(err.Error(), "set ca_certificate") {
		t.Fatalf("want a TLS trust error, got %v", err)
	}
	if e.tokenRequests() != 0 {
		t.Fatal("a request reached the server over an untrusted connection")
	}
}

// TestCreds_ServerLifetime: the lease and the cache follow the lifetime the server
// gives, not an assumed hour.
func TestCreds_ServerLifetime(t *testing.T) {
	e := newTestEnv(t, withTokenTTL(10*time.Minute))
	e.writeSimpleConfig("hotel-muc", nil)
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if ttl := resp.Secret.TTL; ttl < 9*time.Minute || ttl > 10*time.Minute {
		t.Fatalf("lease TTL %v for a 10m token", ttl)
	}
	e.clock.Add(5*time.Minute + time.Second) // less than half the lifetime left
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.tokenRequests() != 2 {
		t.Fatalf("%d token requests: the cache ignored the server's lifetime", e.tokenRequests())
	}
}
