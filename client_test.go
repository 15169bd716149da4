package apaleo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/vault/sdk/logical"
)

// client_test.go: client.go against httptest handlers, without Vault or an OAuth server:
// token response shapes, error classification, Retry-After, the retry policy, redirects
// and TLS trust. The backend's use of the client is tested elsewhere.

// stubRequest is what a stub identity server received.
type stubRequest struct {
	at         time.Time
	path       string
	form       url.Values
	user, pass string
	basic      bool
}

// stubIdentity is an identity server whose every answer is scripted: answer is called
// with the request and its number (1 for the first).
type stubIdentity struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []stubRequest
}

func newStubIdentity(t *testing.T, tlsServer bool, answer func(w http.ResponseWriter, r *http.Request, n int)) *stubIdentity {
	t.Helper()
	s := &stubIdentity{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		user, pass, basic := r.BasicAuth()
		s.mu.Lock()
		s.reqs = append(s.reqs, stubRequest{at: time.Now(), path: r.URL.Path, form: form, user: user, pass: pass, basic: basic})
		n := len(s.reqs)
		s.mu.Unlock()
		answer(w, r, n)
	})
	// Quiet: the TLS tests' refused handshakes would be logged.
	s.Server = newTestServer(h, tlsServer, log.New(io.Discard, "", 0))
	t.Cleanup(s.Close)
	return s
}

func (s *stubIdentity) requests() []stubRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

func (s *stubIdentity) client(t *testing.T, caPEM string) *identityClient {
	t.Helper()
	c, err := newIdentityClient(clientSettings{ClientID: "APP-1", ClientSecret: "s3cret", IdentityURL: s.URL + "/",
		CACertificate: caPEM, RedirectURI: "https://vault.example/v1/apaleo/callback"}, time.Now, &transportPool{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *stubIdentity) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
}

// answerJSON writes v as JSON with status and header pairs.
func answerJSON(w http.ResponseWriter, status int, v any, header ...string) {
	for i := 0; i+1 < len(header); i += 2 {
		w.Header().Set(header[i], header[i+1])
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oneAttempt tries once, with a roomy bound.
var oneAttempt = retryPolicy{Total: 5 * time.Second, PerAttempt: 5 * time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, Attempts: 1}

// signedJWT is an ES256 JWT with claims; the client reads claims without checking the signature.
func signedJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestClient_TokenResponses(t *testing.T) {
	jwtTok := signedJWT(t, map[string]any{"account_code": "MUC", "client_id": "APP-1", "sub": "x"})
	cases := []struct {
		name        string
		refresh     bool // a refresh grant, else client credentials
		body        map[string]any
		wantToken   string
		wantType    string
		wantLife    time.Duration
		wantScopes  []string
		wantRT      string
		wantAccount string
		wantClient  string
	}{
		{name: "full answer", body: map[string]any{"access_token": "at-1", "token_type": "Bearer", "expires_in": 1800, "scope": "a.read b.write"},
			wantToken: "at-1", wantType: "Bearer", wantLife: 30 * time.Minute, wantScopes: []string{"a.read", "b.write"}},
		{name: "no expires_in: an hour", body: map[string]any{"access_token": "at-2", "token_type": "Bearer"},
			wantToken: "at-2", wantType: "Bearer", wantLife: time.Hour, wantScopes: []string{"req.read"}},
		{name: "blank scope: the requested ones", body: map[string]any{"access_token": "at-3", "token_type": "Bearer", "expires_in": 60, "scope": "  "},
			wantToken: "at-3", wantType: "Bearer", wantLife: time.Minute, wantScopes: []string{"req.read"}},
		{name: "lowercase bearer", body: map[string]any{"access_token": "at-4", "token_type": "bearer", "expires_in": 60},
			wantToken: "at-4", wantType: "Bearer", wantLife: time.Minute, wantScopes: []string{"req.read"}},
		{name: "JWT claims read", body: map[string]any{"access_token": jwtTok, "token_type": "Bearer", "expires_in": 3600},
			wantToken: jwtTok, wantType: "Bearer", wantLife: time.Hour, wantScopes: []string{"req.read"}, wantAccount: "MUC", wantClient: "APP-1"},
		{name: "not a JWT: no claims", body: map[string]any{"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 3600},
			wantToken: "a.b.c", wantType: "Bearer", wantLife: time.Hour, wantScopes: []string{"req.read"}},
		{name: "refresh rotated", refresh: true, body: map[string]any{"access_token": "at-5", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-2"},
			wantToken: "at-5", wantType: "Bearer", wantLife: time.Hour, wantRT: "rt-2"},
		{name: "refresh not rotated", refresh: true, body: map[string]any{"access_token": "at-6", "token_type": "Bearer", "expires_in": 3600},
			wantToken: "at-6", wantType: "Bearer", wantLife: time.Hour, wantRT: "rt-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) { answerJSON(w, 200, c.body) })
			cl := s.client(t, "")
			var res *tokenResult
			var err error
			before := time.Now()
			if c.refresh {
				res, err = cl.Refresh(t.Context(), "rt-1", oneAttempt)
			} else {
				res, err = cl.ClientCredentials(t.Context(), []string{"req.read"}, oneAttempt)
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.AccessToken != c.wantToken || res.TokenType != c.wantType || res.RefreshToken != c.wantRT {
				t.Errorf("token %q type %q refresh %q", res.AccessToken, res.TokenType, res.RefreshToken)
			}
			if life := res.Expiry.Sub(res.IssuedAt); life < c.wantLife-2*time.Second || life > c.wantLife {
				t.Errorf("lifetime %s, want %s", life, c.wantLife)
			}
			if res.IssuedAt.Before(before) {
				t.Errorf("issued at %s, before the request", res.IssuedAt)
			}
			if !slices.Equal(res.Scopes, c.wantScopes) {
				t.Errorf("scopes %q, want %q", res.Scopes, c.wantScopes)
			}
			if res.AccountCode != c.wantAccount || res.ClientID != c.wantClient {
				t.Errorf("claims %q %q", res.AccountCode, res.ClientID)
			}
		})
	}
}

// TestClient_Requests: what each call sends, and where.
func TestClient_Requests(t *testing.T) {
	s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == revocationPath {
			w.WriteHeader(http.StatusOK)
			return
		}
		answerJSON(w, 200, map[string]any{"access_token": "at", "token_type": "Bearer"})
	})
	cl := s.client(t, "")
	if _, err := cl.ClientCredentials(t.Context(), []string{"a", "b"}, oneAttempt); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Refresh(t.Context(), "rt-1", oneAttempt); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Exchange(t.Context(), "code-1", "verifier-1", []string{"a"}, oneAttempt); err != nil {
		t.Fatal(err)
	}
	if err := cl.Revoke(t.Context(), "rt-2", oneAttempt); err != nil {
		t.Fatal(err)
	}
	reqs := s.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	want := []struct {
		path  string
		basic bool // client authentication in the Basic header, else in the form
		form  map[string]string
	}{
		{tokenPath, true, map[string]string{"grant_type": "client_credentials", "scope": "a b"}},
		{tokenPath, false, map[string]string{"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "APP-1", "client_secret": "s3cret"}},
		{tokenPath, false, map[string]string{"grant_type": "authorization_code", "code": "code-1", "code_verifier": "verifier-1",
			"redirect_uri": "https://vault.example/v1/apaleo/callback", "client_id": "APP-1", "client_secret": "s3cret"}},
		{revocationPath, true, map[string]string{"token": "rt-2", "token_type_hint": "refresh_token"}},
	}
	for i, w := range want {
		r := reqs[i]
		if r.path != w.path || r.basic != w.basic || (w.basic && (r.user != "APP-1" || r.pass != "s3cret")) {
			t.Errorf("request %d: %s basic=%v %q", i, r.path, r.basic, r.user)
		}
		for k, v := range w.form {
			if got := r.form.Get(k); got != v {
				t.Errorf("request %d: %s=%q, want %q", i, k, got, v)
			}
		}
	}
	u, err := url.Parse(cl.AuthCodeURL("state-1", "verifier-1", []string{"a", "offline_access"}))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Path != authorizePath || q.Get("state") != "state-1" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" ||
		q.Get("scope") != "a offline_access" || q.Get("client_id") != "APP-1" || q.Get("response_type") != "code" || q.Has("client_secret") {
		t.Errorf("auth URL %s", u)
	}
}

// TestClient_Errors: how each answer is classified. One attempt each, so the class shows
// and not the retry policy.
func TestClient_Errors(t *testing.T) {
	cases := []struct {
		name      string
		refresh   bool
		answer    func(w http.ResponseWriter, r *http.Request)
		status    int
		code      string
		temporary bool
		spent     bool
		retryIn   time.Duration
		contains  []string
	}{
		{name: "invalid_client", status: 401, code: "invalid_client",
			answer: func(w http.ResponseWriter, r *http.Request) {
				answerJSON(w, 401, map[string]string{"error": "invalid_client", "error_description": "unknown client"})
			}, contains: []string{"answered HTTP 401: invalid_client (unknown client)"}},
		{name: "invalid_grant on a refresh", refresh: true, status: 400, code: "invalid_grant",
			answer: func(w http.ResponseWriter, r *http.Request) {
				answerJSON(w, 400, map[string]string{"error": "invalid_grant"})
			},
			contains: []string{"HTTP 400: invalid_grant"}},
		{name: "invalid_scope", status: 400, code: "invalid_scope",
			answer: func(w http.ResponseWriter, r *http.Request) {
				answerJSON(w, 400, map[string]string{"error": "invalid_scope"})
			}},
		{name: "server_error 503", status: 503, code: "server_error", temporary: true,
			answer: func(w http.ResponseWriter, r *http.Request) {
				answerJSON(w, 503, map[string]string{"error": "server_error"})
			}},
		{name: "HTML 502 from a proxy", status: 502, temporary: true,
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(502)
				_, _ = io.WriteString(w, "<html>\x00bad\tgateway</html>")
			}, contains: []string{"HTTP 502: body: <html> bad gateway</html>"}},
		{name: "empty 500", status: 500, temporary: true,
			answer:   func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) },
			contains: []string{"HTTP 500: empty body"}},
		{name: "429 without Retry-After", status: 429, code: "rate_limited", temporary: true,
			answer: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(429) }},
		{name: "429 Retry-After seconds", status: 429, code: "rate_limited", temporary: true, retryIn: 120 * time.Second,
			answer: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "120")
				w.WriteHeader(429)
			}, contains: []string{"retry after 2m0s"}},
		{name: "429 Retry-After date", status: 429, code: "too_many", temporary: true, retryIn: 10 * time.Minute,
			answer: func(w http.ResponseWriter, r *http.Request) {
				answerJSON(w, 429, map[string]string{"error": "too_many"}, "Retry-After", time.Now().Add(10*time.Minute).UTC().Format(http.TimeFormat))
			}},
		{name: "2xx without a token, client credentials", status: 0, temporary: true,
			answer: func(w http.ResponseWriter, r *http.Request) {
				answerJSON(w, 200, map[string]string{"token_type": "Bearer"})
			},
			contains: []string{"unusable token response"}},
		{name: "2xx without a token, refresh: spent", refresh: true, status: 0, spent: true,
			answer:   func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "not json") },
			contains: []string{"unusable token response", "refresh token sent with it may be spent"}},
		{name: "redirect", status: 302,
			answer: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://elsewhere.example/connect/token", http.StatusFound)
			}, contains: []string{"redirected to https://elsewhere.example; redirects are not followed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) { c.answer(w, r) })
			cl := s.client(t, "")
			var err error
			if c.refresh {
				_, err = cl.Refresh(t.Context(), "rt-1", oneAttempt)
			} else {
				_, err = cl.ClientCredentials(t.Context(), nil, oneAttempt)
			}
			var ue *upstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T), want an *upstreamError", err, err)
			}
			if ue.Status != c.status || ue.Code != c.code || ue.Temporary != c.temporary || ue.Spent != c.spent || !ue.Answered {
				t.Errorf("status %d code %q temporary %v spent %v answered %v", ue.Status, ue.Code, ue.Temporary, ue.Spent, ue.Answered)
			}
			if ue.RetryAfter < c.retryIn-2*time.Second || ue.RetryAfter > c.retryIn {
				t.Errorf("retry after %s, want %s", ue.RetryAfter, c.retryIn)
			}
			for _, want := range c.contains {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "rt-1") {
				t.Errorf("a secret in %q", err)
			}
			if n := len(s.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

// TestClient_RedirectsRefused: the client secret never follows a redirect, from a token
// request or a revocation.
func TestClient_RedirectsRefused(t *testing.T) {
	elsewhere := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
		answerJSON(w, 200, map[string]any{"access_token": "at", "token_type": "Bearer"})
	})
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
			http.Redirect(w, r, elsewhere.URL+r.URL.Path, status)
		})
		cl := s.client(t, "")
		_, err := cl.ClientCredentials(t.Context(), nil, oneAttempt)
		if err == nil || !strings.Contains(err.Error(), "redirected to "+elsewhere.URL) {
			t.Errorf("%d: token request: %v", status, err)
		}
		if err := cl.Revoke(t.Context(), "rt", oneAttempt); err == nil || !strings.Contains(err.Error(), "redirects are not followed") {
			t.Errorf("%d: revocation: %v", status, err)
		}
	}
	if n := len(elsewhere.requests()); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}

func TestClient_TLSTrust(t *testing.T) {
	s := newStubIdentity(t, true, func(w http.ResponseWriter, r *http.Request, n int) {
		answerJSON(w, 200, map[string]any{"access_token": "at", "token_type": "Bearer"})
	})
	for _, c := range []struct {
		name, ca string
		ok       bool
	}{
		{"system roots only", "", false},
		{"another CA", fuzzCA, false},
		{"the server's CA", s.caPEM(), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.client(t, c.ca).ClientCredentials(t.Context(), nil, oneAttempt)
			if c.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *upstreamError
			if !errors.As(err, &ue) || ue.Temporary || ue.Answered || !strings.Contains(err.Error(), "TLS certificate not trusted (set ca_certificate") {
				t.Fatalf("%v", err)
			}
		})
	}
	if _, err := (&transportPool{}).get("not a certificate"); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a CA without PEM: %v", err)
	}
}

// TestClient_RetryPolicy: attempts, bounds, backoff and cancellation of one token request.
func TestClient_RetryPolicy(t *testing.T) {
	t.Parallel()
	fail503 := func(w http.ResponseWriter, r *http.Request, n int) {
		answerJSON(w, 503, map[string]string{"error": "server_error"})
	}
	good := func(w http.ResponseWriter) {
		answerJSON(w, 200, map[string]any{"access_token": "at", "token_type": "Bearer"})
	}
	cases := []struct {
		name    string
		policy  retryPolicy
		answer  func(w http.ResponseWriter, r *http.Request, n int)
		ok      bool
		minReqs int // attempts, each a request the server sees...
		maxReqs int
		cutOff  bool // ...unless a timeout may cut one before the server saw it
		check   func(t *testing.T, err error, reqs []stubRequest)
	}{
		{name: "attempts cap", policy: retryPolicy{Total: 5 * time.Second, PerAttempt: time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, Attempts: 3},
			answer: fail503, minReqs: 3, maxReqs: 3},
		{name: "retried until it works", policy: retryPolicy{Total: 5 * time.Second, PerAttempt: time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
			answer: func(w http.ResponseWriter, r *http.Request, n int) {
				if n < 3 {
					fail503(w, r, n)
					return
				}
				good(w)
			}, ok: true, minReqs: 3, maxReqs: 3},
		{name: "not retried: a 400", policy: retryPolicy{Total: 5 * time.Second, PerAttempt: time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
			answer: func(w http.ResponseWriter, r *http.Request, n int) {
				answerJSON(w, 400, map[string]string{"error": "invalid_client"})
			}, minReqs: 1, maxReqs: 1},
		{name: "backoff doubles to its cap within the total",
			// A total wide enough for 3 attempts on a loaded machine under -race; the
			// waits (40, 80, 160, 200, ... ms) allow at most 16 in it.
			policy: retryPolicy{Total: 3 * time.Second, PerAttempt: time.Second, BaseDelay: 40 * time.Millisecond, MaxDelay: 200 * time.Millisecond},
			// The total may cut the last attempt short before the server sees it (seen
			// once in CI: 13 attempts, 12 requests); every other attempt reaches it.
			answer: fail503, minReqs: 3, maxReqs: 16, cutOff: true,
			check: func(t *testing.T, err error, reqs []stubRequest) {
				if !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "attempt(s) in 3s") {
					t.Errorf("%v", err)
				}
				if len(reqs) < 3 {
					t.Errorf("the server saw %d requests, want at least 3", len(reqs))
				}
				// Waits of delay plus up to half of it in jitter: 40, 80, 160, 200, ... ms.
				for i := 1; i < len(reqs); i++ {
					gap := reqs[i].at.Sub(reqs[i-1].at)
					want := min(40*time.Millisecond<<(i-1), 200*time.Millisecond)
					if gap < want {
						t.Errorf("wait %d: %s, want at least %s", i, gap, want)
					}
				}
			}},
		{name: "Retry-After honoured when it fits",
			policy: retryPolicy{Total: 5 * time.Second, PerAttempt: time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
			answer: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(429)
					return
				}
				good(w)
			}, ok: true, minReqs: 2, maxReqs: 2,
			check: func(t *testing.T, err error, reqs []stubRequest) {
				if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
					t.Errorf("retried %s after a Retry-After of 1 s", gap)
				}
			}},
		{name: "Retry-After beyond the bound: not waited for",
			policy: retryPolicy{Total: 2 * time.Second, PerAttempt: time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
			answer: func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
				w.WriteHeader(429)
			}, minReqs: 1, maxReqs: 1,
			check: func(t *testing.T, err error, reqs []stubRequest) {
				if !strings.Contains(err.Error(), "retry after 59m") && !strings.Contains(err.Error(), "retry after 1h0m0s") {
					t.Errorf("%v", err)
				}
			}},
		{name: "per-attempt timeout, then the total",
			policy:  retryPolicy{Total: 400 * time.Millisecond, PerAttempt: 100 * time.Millisecond, BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond},
			answer:  func(w http.ResponseWriter, r *http.Request, n int) { <-r.Context().Done() },
			minReqs: 2, maxReqs: 5, cutOff: true,
			check: func(t *testing.T, err error, reqs []stubRequest) {
				var ue *upstreamError
				if !errors.As(err, &ue) || !ue.Timeout || ue.Answered || !strings.Contains(err.Error(), "no answer in time") {
					t.Errorf("%v", err)
				}
			}},
		{name: "a timeout cut by the total reports the last answer",
			policy: retryPolicy{Total: 400 * time.Millisecond, PerAttempt: time.Second, BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond},
			answer: func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					fail503(w, r, n)
					return
				}
				<-r.Context().Done()
			}, minReqs: 2, maxReqs: 2, cutOff: true,
			check: func(t *testing.T, err error, reqs []stubRequest) {
				if !strings.Contains(err.Error(), "HTTP 503") {
					t.Errorf("%v", err)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newStubIdentity(t, false, c.answer)
			var observed int
			ctx := withAttemptObserver(t.Context(), func(error, time.Duration) { observed++ })
			start := time.Now()
			_, err := s.client(t, "").ClientCredentials(ctx, nil, c.policy)
			took := time.Since(start)
			if (err == nil) != c.ok {
				t.Fatalf("error %v, want ok=%v", err, c.ok)
			}
			reqs := s.requests()
			if observed < c.minReqs || observed > c.maxReqs || len(reqs) > observed || (!c.cutOff && len(reqs) != observed) || len(reqs) < observed-1 {
				t.Errorf("%d attempts, %d requests seen by the server, want %d to %d", observed, len(reqs), c.minReqs, c.maxReqs)
			}
			// The attempt counts above carry the claim; time only guards against a hang.
			if took > hangGuard {
				t.Errorf("took %s: a hang", took)
			}
			if c.check != nil {
				c.check(t, err, reqs)
			}
		})
	}
}

// TestClient_Cancellation: a caller that goes away ends the request and the retries at
// once, and the error says so without counting as temporary.
func TestClient_Cancellation(t *testing.T) {
	t.Parallel()
	// Attempts and backoff far longer than hangGuard: a run that waits for them fails.
	p := retryPolicy{Total: 3 * hangGuard, PerAttempt: 2 * hangGuard, BaseDelay: 2 * hangGuard, MaxDelay: 2 * hangGuard}
	t.Run("during a request", func(t *testing.T) {
		t.Parallel()
		s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) { <-r.Context().Done() })
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := s.client(t, "").ClientCredentials(ctx, nil, p)
		var ue *upstreamError
		if !errors.As(err, &ue) || !ue.Timeout {
			t.Fatalf("%v", err)
		}
		if took := time.Since(start); took > hangGuard {
			t.Errorf("took %s, want the 100 ms deadline to end the attempt", took)
		}
	})
	t.Run("cancelled while waiting to retry", func(t *testing.T) {
		t.Parallel()
		s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(503) })
		ctx, cancel := context.WithCancel(t.Context())
		// Cancelled once the first attempt has its answer, during the backoff.
		ctx = withAttemptObserver(ctx, func(error, time.Duration) { time.AfterFunc(50*time.Millisecond, cancel) })
		start := time.Now()
		_, err := s.client(t, "").ClientCredentials(ctx, nil, p)
		if err == nil || !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "gave up after 1 attempt(s)") {
			t.Fatalf("%v", err)
		}
		if took := time.Since(start); took > hangGuard {
			t.Errorf("took %s, want the cancellation to end the backoff", took)
		}
	})
	t.Run("cancelled before", func(t *testing.T) {
		t.Parallel()
		s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(503) })
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.client(t, "").ClientCredentials(ctx, nil, p)
		var ue *upstreamError
		if !errors.As(err, &ue) || ue.Temporary || !strings.Contains(err.Error(), "request cancelled") {
			t.Fatalf("%v", err)
		}
		if n := len(s.requests()); n != 0 {
			t.Errorf("%d requests sent for a cancelled caller", n)
		}
	})
}

// TestTransportPool: configs with the same trust roots share one transport (and so its
// connections); other trust roots get their own.
func TestTransportPool(t *testing.T) {
	e := newTestEnv(t)
	for _, name := range []string{"a", "b", "c"} {
		e.writeSimpleConfig(name, nil)
		e.mustDo(logical.ReadOperation, "creds/"+name, nil)
	}
	e.mustDo(logical.CreateOperation, "config/public", map[string]any{"client_id": "x", "client_secret": "y"})
	transportOf := func(name string) http.RoundTripper {
		cfg, err := readConfig(t.Context(), e.storage, name)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := e.b.identity(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return srv.(*identityClient).httpClient.Transport
	}
	if transportOf("a") != transportOf("b") || transportOf("b") != transportOf("c") {
		t.Fatal("configs with the same ca_certificate do not share a transport")
	}
	if transportOf("a") == transportOf("public") {
		t.Fatal("configs with different trust roots share a transport")
	}
	if got := len(e.b.transports.byCA); got != 2 {
		t.Fatalf("%d transports for two sets of trust roots", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                                0,
		"7":                               7 * time.Second,
		" 7 ":                             7 * time.Second,
		"0":                               0,
		"-3":                              0,
		"1.5":                             0,
		"soon":                            0,
		"Sun, 22 Nov 2026 12:00:30 GMT":   30 * time.Second, // IMF-fixdate
		"Sunday, 22-Nov-26 12:01:00 GMT":  time.Minute,      // RFC 850
		"Sun Nov 22 12:00:05 2026":        5 * time.Second,  // asctime
		"Sun, 22 Nov 2026 11:00:00 GMT":   0,                // past
		"Sun, 22 Nov 2026 12:00:00 GMT":   0,                // now
		"Sun, 22 Nov 2026 12:00:30 +0100": 0,                // not an HTTP date
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestClient_TokenAnswerChecks: a token answer is checked before anything caches it.
// token_type other than Bearer and expires_in of 0 or less are refused (apaleo's error,
// naming the field, with a rotated refresh token kept aside, never in the text); a
// lifetime over 24 h is 24 h, in JSON and form-encoded answers alike.
func TestClient_TokenAnswerChecks(t *testing.T) {
	cases := []struct {
		name     string
		form     string         // a form-encoded answer, else json
		json     map[string]any //
		refused  string         // the field the refusal names; "" for accepted
		wantLife time.Duration
	}{
		{name: "mac", json: map[string]any{"access_token": "at", "token_type": "mac", "expires_in": 3600, "refresh_token": "rt-new"}, refused: `token_type "mac" is not Bearer`},
		{name: "MAC form", form: "access_token=at&token_type=MAC&expires_in=3600&refresh_token=rt-new", refused: "token_type"},
		{name: "BEARER any case", json: map[string]any{"access_token": "at", "token_type": "BeArEr", "expires_in": 60}, wantLife: time.Minute},
		{name: "expires_in 0", json: map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 0, "refresh_token": "rt-new"}, refused: "expires_in 0"},
		{name: "expires_in negative", json: map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": -30, "refresh_token": "rt-new"}, refused: "expires_in -30"},
		{name: "expires_in 0 form", form: "access_token=at&token_type=bearer&expires_in=0&refresh_token=rt-new", refused: "expires_in 0"},
		{name: "expires_in negative form", form: "access_token=at&token_type=bearer&expires_in=-1&refresh_token=rt-new", refused: "expires_in -1"},
		{name: "expires_in not a number form", form: "access_token=at&token_type=bearer&expires_in=soon&refresh_token=rt-new", refused: `expires_in "soon" is not a number`},
		{name: "expires_in Inf form", form: "access_token=at&token_type=bearer&expires_in=Inf&refresh_token=rt-new", refused: `expires_in "Inf" is not a number`},
		{name: "a day and a second: a day", json: map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 86401}, wantLife: 24 * time.Hour},
		{name: "9300000000 s JSON: a day", json: map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 9300000000}, wantLife: 24 * time.Hour},
		{name: "9300000000 s form: a day, no overflow", form: "access_token=at&token_type=bearer&expires_in=9300000000", wantLife: 24 * time.Hour},
		{name: "beyond int64 form: a day", form: "access_token=at&token_type=bearer&expires_in=99999999999999999999999", wantLife: 24 * time.Hour},
		{name: "JSON string seconds", json: map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": "120"}, wantLife: 2 * time.Minute},
		{name: "form seconds", form: "access_token=at&token_type=bearer&expires_in=1800", wantLife: 30 * time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStubIdentity(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
				if c.form != "" {
					w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
					_, _ = io.WriteString(w, c.form)
					return
				}
				answerJSON(w, 200, c.json)
			})
			before := time.Now()
			res, err := s.client(t, "").Refresh(t.Context(), "rt-old", oneAttempt)
			if c.refused == "" {
				if err != nil {
					t.Fatal(err)
				}
				if life := res.Expiry.Sub(res.IssuedAt); life != c.wantLife {
					t.Errorf("lifetime %s, want %s", life, c.wantLife)
				}
				if res.Expiry.Before(before) || res.Expiry.After(time.Now().Add(24*time.Hour)) {
					t.Errorf("expiry %s is outside [now, now+24h]", res.Expiry)
				}
				return
			}
			var ue *upstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("want a refusal, got %v %v", res, err)
			}
			if !strings.Contains(ue.Error(), c.refused) || ue.Temporary || ue.lostAnswer() || ue.Spent {
				t.Errorf("refusal %q (temporary %v, lost %v): want it naming %q, final, not lost", ue, ue.Temporary, ue.lostAnswer(), c.refused)
			}
			if code := errStatus(explainUpstream("x", &credential{Kind: kindAuthorized, Config: "c"}, &apaleoConfig{}, ue)); code != http.StatusBadGateway {
				t.Errorf("status %d, want 502", code)
			}
			if ue.rotated != "rt-new" || strings.Contains(ue.Error(), "rt-new") {
				t.Errorf("rotated refresh token %q kept aside; message %q must not carry it", ue.rotated, ue)
			}
		})
	}
}
