package devidp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// adminFixture serves the IdP with the admin API mounted, as the binary does.
func adminFixture(t *testing.T) (*fixture, func(method, path, body string) (int, string)) {
	t.Helper()
	idp, err := devidp.New(devidp.Options{SigningKey: testKey(), Clients: testClients()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(devidp.AdminPrefix, idp.AdminHandler())
	mux.Handle("/", idp)
	ts := httptest.NewTLSServer(mux)
	t.Cleanup(ts.Close)
	t.Cleanup(idp.Close)
	f := &fixture{idp: idp, ts: ts, ctx: context.WithValue(context.Background(), oauth2.HTTPClient, ts.Client())}
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	return f, call
}

func TestAdminAPI(t *testing.T) {
	f, call := adminFixture(t)
	cc := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader)
	if _, err := cc.Token(f.ctx); err != nil {
		t.Fatal(err)
	}

	status, body := call("GET", "/_admin/stats", "")
	var st devidp.Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil || status != 200 {
		t.Fatalf("stats: %d %s", status, body)
	}
	if st.TokenRequests != 1 || st.Issued != 1 || st.ByGrant["client_credentials"] != 1 || st.ByClient[ccID] != 1 {
		t.Errorf("stats %+v", st)
	}
	for _, k := range []string{`"token_requests"`, `"by_grant"`, `"by_client"`, `"issued"`, `"errors"`, `"revocations"`, `"authorizations"`} {
		if !strings.Contains(body, k) {
			t.Errorf("stats JSON lacks %s: %s", k, body)
		}
	}

	status, body = call("GET", "/_admin/timeline", "")
	var tl []devidp.TokenRequest
	if err := json.Unmarshal([]byte(body), &tl); err != nil || status != 200 || len(tl) != 1 || tl[0].Client != ccID || tl[0].Status != 200 {
		t.Errorf("timeline: %d %s", status, body)
	}
	for _, k := range []string{`"arrived_ms"`, `"answered_ms"`, `"grant"`, `"client_id"`, `"status"`} {
		if !strings.Contains(body, k) {
			t.Errorf("timeline JSON lacks %s: %s", k, body)
		}
	}

	status, body = call("POST", "/_admin/faults", `[{"status":503,"retry_after":"1"},{"delay":"50ms","no_expires_in":true},{"delay":0.05,"truncate":true}]`)
	if status != http.StatusNoContent {
		t.Fatalf("faults: %d %s", status, body)
	}
	_, err := cc.Token(f.ctx)
	wantOAuthError(t, err, "server_error", 503)
	tok, err := cc.Token(f.ctx)
	if err != nil || !tok.Expiry.IsZero() {
		t.Errorf("no_expires_in: %v %v", tok, err)
	}
	if _, err := cc.Token(f.ctx); err == nil {
		t.Error("truncate: no error")
	}

	// A single object is accepted too; unknown keys and bad values are not.
	if status, body = call("POST", "/_admin/faults", `{"drop":true}`); status != http.StatusNoContent {
		t.Errorf("single fault: %d %s", status, body)
	}
	for _, bad := range []string{`[{"statsu":500}]`, `[{"delay":"soon"}]`, `[{"status":1000}]`, `[{"delay":-1}]`, ``, `nope`} {
		if status, _ := call("POST", "/_admin/faults", bad); status != http.StatusBadRequest {
			t.Errorf("%q: %d", bad, status)
		}
	}
	if status, _ = call("DELETE", "/_admin/faults", ""); status != http.StatusNoContent {
		t.Errorf("delete faults: %d", status)
	}
	if _, err := cc.Token(f.ctx); err != nil {
		t.Errorf("faults not cleared: %v", err)
	}

	// Revoke.
	cfg, rt := f.authorized(t, oauth2.AuthStyleInParams)
	if status, _ = call("POST", "/_admin/revoke", ""); status != http.StatusBadRequest {
		t.Errorf("revoke without client_id: %d", status)
	}
	if status, _ = call("POST", "/_admin/revoke?client_id="+connectID, ""); status != http.StatusNoContent {
		t.Errorf("revoke: %d", status)
	}
	_, err = refresh(f.ctx, cfg, rt.RefreshToken)
	wantOAuthError(t, err, "invalid_grant", 400)

	// Clients.
	if status, body = call("POST", "/_admin/clients", `{"id":"new","secret":"pw","account_code":"NEW","scopes":["a.read"]}`); status != http.StatusNoContent {
		t.Fatalf("add client: %d %s", status, body)
	}
	tok, err = f.cc("new", "pw", oauth2.AuthStyleInParams).Token(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := claims(t, tok.AccessToken, nil); c["account_code"] != "NEW" || c["scope"] != "a.read" {
		t.Errorf("claims %v", c)
	}
	if status, _ = call("POST", "/_admin/clients", `[{"id":"ok","secret":"x"},{"id":"bad"}]`); status != http.StatusBadRequest {
		t.Errorf("bad client list: %d", status)
	}
	if _, err := f.cc("ok", "x", oauth2.AuthStyleInParams).Token(f.ctx); err == nil {
		t.Error("partially applied client list")
	}

	// Reset.
	f.idp.InjectFaults(devidp.Fault{Status: 500})
	if status, _ = call("POST", "/_admin/reset", ""); status != http.StatusNoContent {
		t.Errorf("reset: %d", status)
	}
	_, body = call("GET", "/_admin/stats", "")
	_ = json.Unmarshal([]byte(body), &st)
	if st.TokenRequests != 0 || st.PendingFaults != 0 {
		t.Errorf("after reset: %+v", st)
	}
	if status, _ = call("GET", "/_admin/reset", ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET reset: %d", status)
	}
	if status, _ = call("GET", "/_admin/nope", ""); status != http.StatusNotFound {
		t.Errorf("unknown admin path: %d", status)
	}
}

func TestFaultJSONRoundTrip(t *testing.T) {
	in := []devidp.Fault{
		{Status: 429, RetryAfter: "Wed, 21 Oct 2015 07:28:00 GMT", Body: `{"error":"x"}`, Delay: 1500 * time.Millisecond},
		{Hang: true}, {Drop: true}, {Truncate: true, NoExpiresIn: true}, {DropAfterHandle: true},
		{Set: map[string]json.RawMessage{"token_type": json.RawMessage(`"mac"`), "expires_in": json.RawMessage(`0`)}},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"delay":"1.5s"`) || !strings.Contains(string(b), `"drop_after_handle":true`) {
		t.Errorf("JSON %s", b)
	}
	var out []devidp.Fault
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatal(out)
	}
	for i := range in {
		if !reflect.DeepEqual(in[i], out[i]) {
			t.Errorf("%d: %+v != %+v", i, in[i], out[i])
		}
	}
}

func TestLoadClientsFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "clients.json")
	os.WriteFile(p, []byte(`[
		{"id":"a","secret":"s","account_code":"MUC","scopes":["x.read"]},
		{"id":"b","secret":"s","scopes":["x.read"],"granted_scopes":["identity:permissions"],"redirect_uris":["https://127.0.0.1:8200/cb"]}
	]`), 0o600)
	list, err := devidp.LoadClientsFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].GrantTypes[0] != "client_credentials" || len(list[1].GrantTypes) != 2 || list[1].GrantedScopes[0] != "identity:permissions" {
		t.Errorf("%+v", list)
	}
	os.WriteFile(p, []byte(`[{"id":"a","secret":"s","scope":["x"]}]`), 0o600)
	if _, err := devidp.LoadClientsFile(p); err == nil {
		t.Error("unknown key accepted")
	}
}

func TestGenerateDevTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	cfg, caPEM, err := devidp.GenerateDevTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, devidp.CAFileName))
	if err != nil || !bytes.Equal(onDisk, caPEM) {
		t.Fatalf("ca.pem: %v", err)
	}
	idp, err := devidp.New(devidp.Options{SigningKey: testKey(), Clients: testClients()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(idp)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake below
	ts.TLS = cfg
	ts.StartTLS()
	defer ts.Close()

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(onDisk) {
		t.Fatal("bad PEM")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	port := ts.URL[strings.LastIndex(ts.URL, ":"):]
	for _, host := range []string{"127.0.0.1", "localhost"} {
		resp, err := client.Get("https://" + host + port + devidp.PathHealth)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", host, resp.StatusCode)
		}
	}
	// Not trusted without the CA.
	if _, err := (&http.Client{}).Get(ts.URL + devidp.PathHealth); err == nil {
		t.Error("served a publicly trusted certificate?")
	}
}

// lockedBuffer is an io.Writer safe for concurrent log writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLogHasNoSecrets(t *testing.T) {
	var buf lockedBuffer
	f := newFixture(t, devidp.Options{Logger: log.New(&buf, "", 0)})
	cfg := f.connect(connectID, oauth2.AuthStyleInParams, "reservations.read", "offline_access")
	verifier := oauth2.GenerateVerifier()
	code := f.code(t, cfg, verifier)
	tok, err := cfg.Exchange(f.ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := refresh(f.ctx, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	revoke(t, f, connectID, connectSecret, tok2.RefreshToken, "")
	cctok, _ := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	f.idp.InjectFaults(devidp.Fault{Status: 503})
	_, _ = f.cc(ccID, ccSecret, oauth2.AuthStyleInParams).Token(f.ctx)

	out := buf.String()
	if !strings.Contains(out, "POST /connect/token 200 grant=authorization_code client_id="+connectID) ||
		!strings.Contains(out, "fault=status=503") || !strings.Contains(out, "GET /connect/authorize 303") {
		t.Errorf("log:\n%s", out)
	}
	for name, v := range map[string]string{
		"client secret": connectSecret, "cc secret": ccSecret, "code": code, "verifier": verifier,
		"access token": tok.AccessToken[:40], "refresh token": tok.RefreshToken, "refresh token 2": tok2.RefreshToken,
		"cc token": cctok.AccessToken[:40], "challenge": oauth2.S256ChallengeFromVerifier(verifier),
	} {
		if strings.Contains(out, v) {
			t.Errorf("log contains the %s", name)
		}
	}
}

func TestAdminSecrets(t *testing.T) {
	f, call := adminFixture(t)
	get := func() devidp.Secrets {
		t.Helper()
		status, body := call("GET", "/_admin/secrets", "")
		var s devidp.Secrets
		if err := json.Unmarshal([]byte(body), &s); err != nil || status != http.StatusOK {
			t.Fatalf("secrets: %d %s (%v)", status, body, err)
		}
		for _, k := range []string{`"client_secrets":[`, `"authorization_codes":[`, `"code_verifiers":[`, `"refresh_tokens":[`, `"truncated":false`} {
			if !strings.Contains(body, k) {
				t.Errorf("secrets JSON lacks %s: %s", k, body)
			}
		}
		return s
	}

	// Before any flow: only the registered client secrets.
	s := get()
	for _, sec := range []string{ccSecret, fineSecret, connectSecret} {
		if !slices.Contains(s.ClientSecrets, sec) {
			t.Errorf("client_secrets %q lack a registered secret", s.ClientSecrets)
		}
	}
	if len(s.AuthorizationCodes)+len(s.CodeVerifiers)+len(s.RefreshTokens) != 0 {
		t.Errorf("secrets before any flow: %+v", s)
	}

	// Code (with PKCE), a refresh, a revocation and a wrong client secret.
	cfg := f.connect(connectID, oauth2.AuthStyleInHeader, "reservations.read", "offline_access")
	verifier := oauth2.GenerateVerifier()
	code := f.code(t, cfg, verifier)
	tok, err := cfg.Exchange(f.ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := refresh(f.ctx, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := revoke(t, f, connectID, connectSecret, tok2.RefreshToken, ""); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if status, _ := revoke(t, f, connectID, connectSecret, tok2.AccessToken, ""); status != http.StatusOK {
		t.Fatalf("revoke access token: %d", status)
	}
	const wrong = "wrong/secret+1"
	_, err = f.cc(ccID, wrong, oauth2.AuthStyleInHeader).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", 0)
	const wrongPost = "wrong-in-the-form"
	_, err = f.cc(ccID, wrongPost, oauth2.AuthStyleInParams).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", 0)

	s = get()
	want := map[string]struct {
		list []string
		vals []string
	}{
		"client_secrets":      {s.ClientSecrets, []string{ccSecret, connectSecret, wrong, wrongPost}},
		"authorization_codes": {s.AuthorizationCodes, []string{code}},
		"code_verifiers":      {s.CodeVerifiers, []string{verifier}},
		"refresh_tokens":      {s.RefreshTokens, []string{tok.RefreshToken, tok2.RefreshToken}},
	}
	for k, w := range want {
		for _, v := range w.vals {
			if !slices.Contains(w.list, v) {
				t.Errorf("%s lacks a value it should have recorded: %q", k, w.list)
			}
		}
	}
	if len(s.AuthorizationCodes) != 1 || len(s.CodeVerifiers) != 1 || len(s.RefreshTokens) != 2 {
		t.Errorf("duplicates or extra values: %d codes, %d verifiers, %d refresh tokens", len(s.AuthorizationCodes), len(s.CodeVerifiers), len(s.RefreshTokens))
	}
	if slices.Contains(s.RefreshTokens, tok2.AccessToken) {
		t.Error("an access token presented for revocation was recorded as a refresh token")
	}
	if s.Truncated {
		t.Error("truncated")
	}
	if s2 := f.idp.Secrets(); !slices.Equal(s2.RefreshTokens, s.RefreshTokens) || !slices.Equal(s2.ClientSecrets, s.ClientSecrets) {
		t.Errorf("Secrets() %+v != GET %+v", s2, s)
	}
	// Reset clears stats, not the recorded secrets.
	call("POST", "/_admin/reset", "")
	if s2 := get(); len(s2.RefreshTokens) != 2 {
		t.Errorf("after reset: %+v", s2)
	}
	if status, _ := call("HEAD", "/_admin/secrets", ""); status != http.StatusOK {
		t.Errorf("HEAD secrets: %d", status)
	}
	if status, _ := call("POST", "/_admin/secrets", ""); status != http.StatusMethodNotAllowed {
		t.Errorf("POST secrets: %d", status)
	}
}

// Without the admin API nothing is recorded.
func TestSecretsNotRecordedWithoutAdmin(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	_, tok := f.authorized(t, oauth2.AuthStyleInParams)
	if _, err := f.cc(ccID, "wrong", oauth2.AuthStyleInHeader).Token(f.ctx); err == nil {
		t.Fatal("wrong secret accepted")
	}
	s := f.idp.Secrets()
	if len(s.AuthorizationCodes)+len(s.CodeVerifiers)+len(s.RefreshTokens) != 0 || slices.Contains(s.ClientSecrets, "wrong") || slices.Contains(s.RefreshTokens, tok.RefreshToken) {
		t.Errorf("recorded without the admin API: %+v", s)
	}
	if !slices.Contains(s.ClientSecrets, ccSecret) {
		t.Errorf("registered secrets missing: %q", s.ClientSecrets)
	}
}
