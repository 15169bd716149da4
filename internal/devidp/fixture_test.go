package devidp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// fixture_test.go: the test clients, a server over httptest with TLS, and the OAuth 2.0
// client side (golang.org/x/oauth2, a browser with cookies) the tests drive it with.

const (
	ccID, ccSecret           = "hotel-muc", "cc-secret"
	fineID, fineSecret       = "fine-grained", "fine-secret"
	connectID, connectSecret = "connect-app", "connect:secret/with&special=chars"
	connectFineID            = "connect-fine"
	redirectURI              = "https://vault.example:8200/v1/apaleo/callback"
)

var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func testClients() []devidp.Client {
	return []devidp.Client{
		{ID: ccID, Secret: ccSecret, AccountCode: "MUC", Scopes: []string{"account.read", "reservations.read"}},
		{ID: fineID, Secret: fineSecret, AccountCode: "BER", Scopes: []string{"reservations.read"}, GrantedScopes: []string{"identity:permissions"}},
		{ID: connectID, Secret: connectSecret, Scopes: []string{"reservations.read", "account.read"}, RedirectURIs: []string{redirectURI}},
		{ID: connectFineID, Secret: connectSecret, AccountCode: "HAM", Scopes: []string{"reservations.read"}, GrantedScopes: []string{"identity:permissions"}, RedirectURIs: []string{redirectURI}},
	}
}

type fixture struct {
	idp *devidp.Server
	ts  *httptest.Server
	ctx context.Context
}

func newFixture(t *testing.T, opts devidp.Options) *fixture {
	t.Helper()
	if opts.SigningKey == nil {
		opts.SigningKey = testKey()
	}
	if opts.Clients == nil {
		opts.Clients = testClients()
	}
	idp, err := devidp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(idp)
	t.Cleanup(ts.Close)
	t.Cleanup(idp.Close) // runs first: releases hanging requests
	return &fixture{idp: idp, ts: ts, ctx: context.WithValue(context.Background(), oauth2.HTTPClient, ts.Client())}
}

func (f *fixture) cc(id, secret string, style oauth2.AuthStyle, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID: id, ClientSecret: secret, TokenURL: f.ts.URL + devidp.PathToken,
		Scopes: scopes, AuthStyle: style,
	}
}

func (f *fixture) connect(id string, style oauth2.AuthStyle, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: id, ClientSecret: connectSecret, RedirectURL: redirectURI, Scopes: scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL: f.ts.URL + devidp.PathAuthorize, TokenURL: f.ts.URL + devidp.PathToken, AuthStyle: style,
		},
	}
}

// browser follows redirects like a browser but stops at the redirect URI,
// returning the final response (whose Location is the redirect).
func (f *fixture) browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := *f.ts.Client()
	c.Jar = jar
	host := strings.TrimPrefix(f.ts.URL, "https://")
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != host {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &c
}

// authorize visits authURL with a browser and returns the redirect target
// (nil if there was none) and the last response's status.
func (f *fixture) authorize(t *testing.T, authURL string) (*url.URL, int, string) {
	t.Helper()
	resp, err := f.browser(t).Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, resp.StatusCode, string(body)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u, resp.StatusCode, string(body)
}

// code runs the authorization flow and returns the code.
func (f *fixture) code(t *testing.T, cfg *oauth2.Config, verifier string) string {
	t.Helper()
	state := oauth2.GenerateVerifier()
	u, status, body := f.authorize(t, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	if u == nil {
		t.Fatalf("authorize: no redirect, status %d: %s", status, body)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != redirectURI {
		t.Fatalf("redirected to %s", got)
	}
	q := u.Query()
	if q.Get("error") != "" {
		t.Fatalf("authorize error %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != state {
		t.Fatalf("state %q, want %q", q.Get("state"), state)
	}
	if q.Get("code") == "" {
		t.Fatalf("no code in %s", u)
	}
	return q.Get("code")
}

func retrieveError(t *testing.T, err error) *oauth2.RetrieveError {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("want *oauth2.RetrieveError, got %T: %v", err, err)
	}
	return re
}

func wantOAuthError(t *testing.T, err error, code string, status int) *oauth2.RetrieveError {
	t.Helper()
	if err == nil {
		t.Fatalf("want error %s, got success", code)
	}
	re := retrieveError(t, err)
	if re.ErrorCode != code || (status != 0 && re.Response.StatusCode != status) {
		t.Fatalf("want %s/%d, got %s/%d: %s", code, status, re.ErrorCode, re.Response.StatusCode, re.Body)
	}
	return re
}

func claims(t *testing.T, raw string, key *rsa.PublicKey) map[string]any {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&m); err != nil {
		t.Fatal(err)
	}
	if key != nil {
		var verified map[string]any
		if err := tok.Claims(key, &verified); err != nil {
			t.Fatalf("signature: %v", err)
		}
	}
	return m
}
