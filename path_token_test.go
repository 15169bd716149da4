package apaleo

import (
	"context"
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
	if resp.Secret == nil || !resp.Secret.Renewable || resp.Secret.TTL < 59*time.Minute || resp.Secret.TTL > time.Hour {
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
// TestCreds_MinTTL: a cached token is reused while it has more than min_ttl left, or more
// than half its lifetime where that is shorter. Against the fake identity server, whose
// tokens live an hour.
func TestCreds_MinTTL(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel-muc", map[string]any{"min_ttl": "15m"})
	tokenRequests := func() int { return e.idp.count(grantClientCredentials) }
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)

	e.clock.Add(44 * time.Minute) // 16 min left
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if tokenRequests() != 1 {
		t.Fatalf("token with 16m left was not reused")
	}
	e.clock.Add(90 * time.Second) // 14.5 min left
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if tokenRequests() != 2 {
		t.Fatalf("token with 14.5m left was reused")
	}

	// min_ttl longer than half the lifetime: half the lifetime rules.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"min_ttl": "50m"})
	e.clock.Add(29 * time.Minute) // 31 min left of 60
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if tokenRequests() != 2 {
		t.Fatalf("token with more than half its life left was not reused")
	}
	e.clock.Add(2 * time.Minute)
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if tokenRequests() != 3 {
		t.Fatalf("token with less than half its life left was reused")
	}
}

// TestCreds_ConcurrentColdReads: 100 concurrent reads of a cold name make one token
// request and all get its token (single flight, against the fake identity server).
func TestCreds_ConcurrentColdReads(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel-muc", nil)

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
	got := e.idp.total()
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

	// Free text in "error", as IdentityServer sends for a deactivated user: passed through.
	e.mustDo(logical.DeleteOperation, "creds/hotel-muc", nil)
	e.idp.InjectFaults(devidp.Fault{Status: 400, Body: `{"error":"User x@example.com has no access to MUC"}`})
	e.badRequest(logical.ReadOperation, "creds/hotel-muc", nil, "User x@example.com has no access to MUC")
	e.assertNoSecrets(mucSecret, "wrong-secret-value")
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
