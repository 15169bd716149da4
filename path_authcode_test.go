package apaleo

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

const connectRedirect = "https://vault.example/v1/apaleo/callback"

// browse opens auth_url like the admin's browser (cookies kept, redirects followed)
// until the identity server redirects to the redirect URI, and returns that URL.
func (e *testEnv) browse(authURL string) *url.URL {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	var landed *url.URL
	client := e.ts.Client()
	client.Jar = jar
	client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host != strings.TrimPrefix(e.ts.URL, "https://") {
			landed = req.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := client.Get(authURL)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if landed == nil {
		e.t.Fatalf("no redirect to the redirect URI; status %d", resp.StatusCode)
	}
	return landed
}

// authorize runs authorize/<name>, the browser, and callback; it returns the callback's
// query.
func (e *testEnv) authorize(name, config string) url.Values {
	e.t.Helper()
	resp := e.mustDo(logical.UpdateOperation, "authorize/"+name, map[string]any{"config": config})
	q := e.browse(resp.Data["auth_url"].(string)).Query()
	if q.Get("state") != resp.Data["state"] || q.Get("code") == "" {
		e.t.Fatalf("redirect query %v", q)
	}
	return q
}

func (e *testEnv) callback(q url.Values) (int, string) {
	e.t.Helper()
	resp := e.callbackResponse(q)
	return resp.Data[logical.HTTPStatusCode].(int), string(resp.Data[logical.HTTPRawBody].([]byte))
}

func TestAuthCode_Callback(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)

	resp := e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"})
	u, err := url.Parse(resp.Data["auth_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"response_type": "code", "client_id": connectID, "redirect_uri": connectRedirect,
		"scope": "reservations.read setup.read offline_access", "state": resp.Data["state"].(string),
		"code_challenge_method": "S256",
	} {
		if q.Get(k) != want {
			t.Errorf("auth_url %s = %q, want %q", k, q.Get(k), want)
		}
	}
	if u.Path != "/connect/authorize" || len(q.Get("code_challenge")) != 43 {
		t.Errorf("auth_url %s", u)
	}
	if exp, _ := time.Parse(time.RFC3339, resp.Data["expires_at"].(string)); exp.Sub(e.clock.Now()) > pendingTTL+time.Second || exp.Sub(e.clock.Now()) < pendingTTL-time.Second {
		t.Errorf("expires_at %v", resp.Data["expires_at"])
	}

	redirect := e.browse(u.String()).Query()
	code := redirect.Get("code")
	status, page := e.callback(redirect)
	if status != http.StatusOK || !strings.Contains(page, "creds/hotel-ber") || !strings.Contains(page, "BER") {
		t.Fatalf("callback %d: %s", status, page)
	}

	creds := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if creds.Data["account_code"] != "BER" || creds.Data["config"] != "connect" || creds.Secret == nil || !creds.Secret.Renewable {
		t.Fatalf("creds: %#v %#v", creds.Data, creds.Secret)
	}
	if !reflect.DeepEqual(creds.Data["scopes"], []string{"reservations.read", "setup.read", "offline_access"}) {
		t.Fatalf("scopes %v", creds.Data["scopes"])
	}
	// The first access token came with the code: no refresh yet.
	if got := e.idp.Stats().ByGrant["refresh_token"]; got != 0 {
		t.Fatalf("%d refreshes", got)
	}
	list := e.mustDo(logical.ListOperation, "creds/", nil)
	if !reflect.DeepEqual(list.Data["keys"], []string{"hotel-ber"}) {
		t.Fatalf("creds list %v", list.Data["keys"])
	}

	// Replayed state: refused, nothing changes.
	status, page = e.callback(redirect)
	if status != http.StatusBadRequest || !strings.Contains(page, "unknown or already used state") {
		t.Fatalf("replayed state: %d %s", status, page)
	}

	// A refresh after expiry rotates the refresh token and stores it.
	stored, _ := readCred(t.Context(), e.storage, "hotel-ber")
	e.clock.Add(50 * time.Minute)
	refreshed := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if refreshed.Data["access_token"] == creds.Data["access_token"] || e.idp.Stats().ByGrant["refresh_token"] != 1 {
		t.Fatal("no refresh after min_ttl")
	}
	rotated, _ := readCred(t.Context(), e.storage, "hotel-ber")
	if rotated.RefreshToken == stored.RefreshToken {
		t.Fatal("the rotated refresh token was not stored")
	}
	e.assertNoSecrets(connectSc, code, stored.RefreshToken, rotated.RefreshToken)
}

func TestAuthCode_Exchange(t *testing.T) {
	e := newTestEnv(t, withClient(devidp.Client{ID: "OWNAPP", Secret: "ownapp-secret", AccountCode: "HAM",
		Scopes: []string{"reservations.read"}, RedirectURIs: []string{"https://app.example/apaleo/cb"}}))
	e.mustDo(logical.CreateOperation, "config/own", map[string]any{"client_id": "OWNAPP", "client_secret": "ownapp-secret",
		"grant_type": "authorization_code", "redirect_uri": "https://app.example/apaleo/cb",
		"identity_url": e.ts.URL, "ca_certificate": e.caPEM, "scopes": "reservations.read"})
	resp := e.mustDo(logical.UpdateOperation, "authorize/hotel-ham", map[string]any{"config": "own"})
	q := e.browse(resp.Data["auth_url"].(string)).Query()

	out := e.mustDo(logical.UpdateOperation, "exchange", map[string]any{"state": q.Get("state"), "code": q.Get("code")})
	if out.Data["name"] != "hotel-ham" || out.Data["account_code"] != "HAM" || out.Data["expires_at"] == "" {
		t.Fatalf("exchange: %#v", out.Data)
	}
	if !reflect.DeepEqual(out.Data["scopes"], []string{"reservations.read", "offline_access"}) {
		t.Fatalf("scopes %v", out.Data["scopes"])
	}
	e.mustDo(logical.ReadOperation, "creds/hotel-ham", nil)

	// Replayed state and replayed code.
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": q.Get("state"), "code": q.Get("code")}, "unknown or already used state")
	again := e.mustDo(logical.UpdateOperation, "authorize/hotel-ham2", map[string]any{"config": "own"})
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": again.Data["state"], "code": q.Get("code")}, "invalid_grant")
	if resp := e.mustDo(logical.ReadOperation, "creds/hotel-ham2", nil); resp != nil {
		t.Fatal("a replayed code stored a credential")
	}
	e.assertNoSecrets("ownapp-secret", q.Get("code"))
}

func TestAuthCode_Refusals(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	e.writeSimpleConfig("hotel-muc", nil)

	e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{}, "config is required")
	e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{"config": "nope"}, `config "nope" does not exist`)
	e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{"config": "../config/x"}, "not a valid config name")
	e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{"config": "hotel-muc"}, "needs an authorization_code config")
	e.badRequest(logical.UpdateOperation, "authorize/hotel-muc", map[string]any{"config": "connect"}, "taken by client-credentials config/hotel-muc")
	e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{"config": "connect", "scopes": "reservations.read finance.manage"}, `"finance.manage" are not among`)
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": "forged", "code": "abc"}, "unknown or already used state")
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": "forged"}, "code is missing")
	if keys, _ := e.storage.List(t.Context(), pendingPrefix); len(keys) != 0 {
		t.Fatalf("refused authorize calls stored %d pending entries", len(keys))
	}

	// A narrower scope set is sent as asked.
	resp := e.mustDo(logical.UpdateOperation, "authorize/narrow", map[string]any{"config": "connect", "scopes": "setup.read"})
	if u, _ := url.Parse(resp.Data["auth_url"].(string)); u.Query().Get("scope") != "setup.read offline_access" {
		t.Fatalf("narrow scope: %s", u.Query().Get("scope"))
	}

	// An error from apaleo: HTML 4xx, state spent, nothing stored.
	q := e.authorize("denied", "connect")
	status, page := e.callback(url.Values{"state": {q.Get("state")}, "error": {"access_denied"}, "error_description": {"The user said no"}})
	if status != http.StatusBadRequest || !strings.Contains(page, "access_denied") || !strings.Contains(page, "authorize/denied") {
		t.Fatalf("error callback: %d %s", status, page)
	}
	if status, _ := e.callback(q); status != http.StatusBadRequest {
		t.Fatal("state still usable after an error callback")
	}

	// Expired state.
	q = e.authorize("late", "connect")
	e.clock.Add(pendingTTL + time.Second)
	if status, page := e.callback(q); status != http.StatusBadRequest || !strings.Contains(page, "expired") {
		t.Fatalf("expired state: %d %s", status, page)
	}
	// Missing code.
	q = e.authorize("nocode", "connect")
	if status, page := e.callback(url.Values{"state": {q.Get("state")}}); status != http.StatusBadRequest || !strings.Contains(page, "code is missing") {
		t.Fatalf("missing code: %d %s", status, page)
	}
	for _, name := range []string{"denied", "late", "nocode"} {
		if resp := e.mustDo(logical.ReadOperation, "creds/"+name, nil); resp != nil {
			t.Fatalf("creds/%s stored", name)
		}
	}

	// Wrong PKCE verifier: the server refuses the code, nothing is stored.
	resp = e.mustDo(logical.UpdateOperation, "authorize/pkce", map[string]any{"config": "connect"})
	q = e.browse(resp.Data["auth_url"].(string)).Query()
	var p pendingAuthorization
	if _, err := readJSON(t.Context(), e.storage, pendingKey(q.Get("state")), &p); err != nil {
		t.Fatal(err)
	}
	p.Verifier = strings.Repeat("x", 43)
	if err := writeJSON(t.Context(), e.storage, pendingKey(q.Get("state")), &p); err != nil {
		t.Fatal(err)
	}
	if status, page := e.callback(q); status != http.StatusBadRequest || !strings.Contains(page, "invalid_grant") {
		t.Fatalf("wrong verifier: %d %s", status, page)
	}
	if resp := e.mustDo(logical.ReadOperation, "creds/pkce", nil); resp != nil {
		t.Fatal("a wrong verifier stored a credential")
	}

	// A config in use cannot be deleted; a client-credentials config cannot take the name.
	e.callback(e.authorize("hotel-ber", "connect"))
	e.badRequest(logical.DeleteOperation, "config/connect", nil, "still used by authorized credentials hotel-ber")
	e.badRequest(logical.CreateOperation, "config/hotel-ber", map[string]any{"client_id": "a", "client_secret": "b"}, "taken by an authorized credential")
}

// TestAuthCode_ConcurrentRefresh: 50 readers after expiry make exactly one refresh and
// none sees invalid_grant, with a server that rotates and refuses reuse.
// TestAuthCode_ConcurrentRefresh: concurrent reads of an authorized credential past
// min_ttl share one refresh, so the refresh token is sent once (single flight, against
// the fake identity server, which refuses a spent refresh token).
func TestAuthCode_ConcurrentRefresh(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.clock.Add(55 * time.Minute)

	const readers = 50
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.do(logical.ReadOperation, "creds/hotel-ber", nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("reader: %v", err)
	}
	refreshes, refused := e.idp.count("refresh_token"), e.idp.invalidGrants()
	t.Logf("%d concurrent reads after expiry -> %d refresh request(s), %d invalid_grant", readers, refreshes, refused)
	if refreshes != 1 || refused != 0 {
		t.Fatalf("refreshes %d, invalid_grant %d", refreshes, refused)
	}
}

func TestAuthCode_RevokedAndDeleted(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	e.callback(e.authorize("hotel-ber", "connect"))
	stored, _ := readCred(t.Context(), e.storage, "hotel-ber")

	// Revoked at apaleo: the read says to authorize again, and the credential is kept.
	e.idp.RevokeRefreshTokens(connectID)
	e.clock.Add(61 * time.Minute) // past expiry: no cached token to fall back on
	msg := e.badRequest(logical.ReadOperation, "creds/hotel-ber", nil, "invalid_grant")
	if !strings.Contains(msg, "run authorize/hotel-ber config=connect again") {
		t.Fatalf("message %q", msg)
	}
	if kept, _ := readCred(t.Context(), e.storage, "hotel-ber"); kept == nil || kept.RefreshToken != stored.RefreshToken {
		t.Fatal("a refused refresh lost the stored credential")
	}

	// Authorize again, then delete: the refresh token is revoked at apaleo.
	e.callback(e.authorize("hotel-ber", "connect"))
	before := e.idp.Stats().Revocations
	resp := e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
	if resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("warnings %v", resp.Warnings)
	}
	if e.idp.Stats().Revocations != before+1 {
		t.Fatal("delete did not revoke the refresh token")
	}
	if got := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil); got != nil {
		t.Fatal("deleted credential still reads")
	}
	e.mustDo(logical.DeleteOperation, "config/connect", nil)
	e.assertNoSecrets(connectSc, stored.RefreshToken)
}

func TestAuthCode_RevocationFailureIsAWarning(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	e.callback(e.authorize("hotel-ber", "connect"))
	e.ts.Close() // apaleo unreachable
	// Any bound shows the warning; a short one spares the test 3 s of retries.
	e.b.retry.Total = 300 * time.Millisecond
	resp := e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "could not be revoked") {
		t.Fatalf("want a warning, got %v", resp)
	}
	if got, _ := readCred(t.Context(), e.storage, "hotel-ber"); got != nil {
		t.Fatal("credential not deleted")
	}
}

// TestPending_Superseded: one live pending authorization per name. A second
// authorize/hotel-ber supersedes the first: the first link, at the callback or at
// exchange, answers 409 saying a newer authorization replaced it, and its code is never
// sent (the identity server counts no exchange); the newest link completes.
func TestPending_Superseded(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	first := e.authorize("hotel-ber", "connect")
	second := e.authorize("hotel-ber", "connect")
	before := e.idp.Stats().ByGrant["authorization_code"]

	status, page := e.callback(first)
	if status != http.StatusConflict || !strings.Contains(page, titleLinkReplaced) || !strings.Contains(page, "a newer authorization of &#34;hotel-ber&#34; replaced this one") {
		t.Fatalf("superseded link at the callback: %d %s", status, page)
	}
	resp, err := e.do(logical.UpdateOperation, "exchange", map[string]any{"state": first.Get("state"), "code": first.Get("code")})
	if statusOf(logical.UpdateOperation, resp, err) != http.StatusConflict || !strings.Contains(errText(resp, err), `a newer authorization of "hotel-ber" replaced this one`) {
		t.Fatalf("superseded link at exchange: %v %v", resp, err)
	}
	if got := e.idp.Stats().ByGrant["authorization_code"]; got != before {
		t.Fatalf("a superseded link's code was exchanged (%d exchanges)", got-before)
	}
	if c, _ := readCred(t.Context(), e.storage, "hotel-ber"); c != nil {
		t.Fatal("a superseded link stored a credential")
	}
	if status, page := e.callback(second); status != http.StatusOK {
		t.Fatalf("the newest link: %d %s", status, page)
	}
	e.assertNoSecrets(connectSc, first.Get("code"), second.Get("code"))
}

// TestPending_MountBound: at most limit live pending authorizations per mount (429
// beyond, saying so, nothing stored); a superseding one takes no slot; the count is
// derived from storage after a restart; the cleanup removes expired ones from the index's
// listing, with no read of a pending entry, and frees their slots.
func TestPending_MountBound(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.b.pendingCount.limit = 3
	for _, name := range []string{"hotel-a", "hotel-b", "hotel-c", "hotel-a"} {
		e.mustDo(logical.UpdateOperation, "authorize/"+name, map[string]any{"config": "connect"})
	}
	full := func(b *backend) {
		t.Helper()
		resp, err := b.HandleRequest(t.Context(), &logical.Request{Operation: logical.UpdateOperation, Path: "authorize/hotel-d", Data: map[string]any{"config": "connect"}, Storage: e.storage})
		if statusOf(logical.UpdateOperation, resp, err) != http.StatusTooManyRequests || !strings.Contains(errText(resp, err), "the mount holds 3 pending authorizations, its most") {
			t.Fatalf("a 4th pending authorization: %v %v", resp, err)
		}
	}
	full(e.b)
	keys, _ := logical.CollectKeys(t.Context(), e.storage)
	if entries := countPrefix(keys, pendingPrefix); entries != 4 || slices.Contains(keys, pendingNamePrefix+"hotel-d") {
		t.Fatalf("pending entries after the refusal: %q", keys) // 3 live, 1 superseded
	}

	// A restart counts from storage.
	again := e.newBackend(nil)
	again.pendingCount.limit = 3
	full(again)

	e.clock.Add(pendingTTL + time.Second)
	reads := &getCounter{Storage: e.storage}
	if err := again.cleanPending(t.Context(), reads); err != nil {
		t.Fatal(err)
	}
	if n := reads.gets(pendingPrefix); n != 0 {
		t.Fatalf("the cleanup read %d pending entries", n)
	}
	if keys, _ := logical.CollectKeys(t.Context(), e.storage); countPrefix(keys, "pending") != 0 {
		t.Fatalf("left after the cleanup: %q", keys)
	}
	resp, err := again.HandleRequest(t.Context(), &logical.Request{Operation: logical.UpdateOperation, Path: "authorize/hotel-d", Data: map[string]any{"config": "connect"}, Storage: e.storage})
	if err != nil || resp.IsError() {
		t.Fatalf("after the cleanup: %v %v", resp, err)
	}
}

// TestPending_EndedByDelete: deleting creds/<name> ends its pending authorization (its
// link then sends nothing), and an exchange already on the wire for it stores nothing
// and revokes the refresh token it got.
func TestPending_EndedByDelete(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	state := e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"}).Data["state"]
	e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
	resp, err := e.do(logical.UpdateOperation, "exchange", map[string]any{"state": state, "code": "code-1"})
	if statusOf(logical.UpdateOperation, resp, err) != http.StatusBadRequest || !strings.Contains(errText(resp, err), "unknown or already used state") {
		t.Fatalf("exchange after the delete: %v %v", resp, err)
	}
	if n := e.idp.count(grantAuthorizationCode); n != 0 {
		t.Fatalf("%d code exchanges after the delete", n)
	}

	// On the wire: the exchange is held at the identity server while creds/ is deleted.
	state = e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"}).Data["state"]
	e.idp.gate, e.idp.started = make(chan struct{}), make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		resp, err := e.do(logical.UpdateOperation, "exchange", map[string]any{"state": state, "code": "code-2"})
		if err == nil && resp.IsError() {
			err = resp.Error()
		}
		done <- err
	}()
	<-e.idp.started
	e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
	close(e.idp.gate)
	err = <-done
	if err == nil || errStatus(err) != http.StatusConflict || !strings.Contains(err.Error(), "creds/hotel-ber was deleted while the code was exchanged") || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the exchange on the wire: %v", err)
	}
	if c, _ := readCred(t.Context(), e.storage, "hotel-ber"); c != nil {
		t.Fatalf("stored after the delete: %+v", c)
	}
	if got := e.idp.revoked; len(got) != 1 || got[0] == "" {
		t.Fatalf("revoked %q, want the exchanged refresh token", got)
	}
}

func countPrefix(keys []string, prefix string) int {
	n := 0
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// getCounter counts the storage reads by key prefix.
type getCounter struct {
	logical.Storage
	mu   sync.Mutex
	keys []string
}

func (g *getCounter) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	g.mu.Lock()
	g.keys = append(g.keys, key)
	g.mu.Unlock()
	return g.Storage.Get(ctx, key)
}

func (g *getCounter) gets(prefix string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return countPrefix(g.keys, prefix)
}
