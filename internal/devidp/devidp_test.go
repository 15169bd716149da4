package devidp_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

func TestClientCredentials(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		tok, err := f.cc(ccID, ccSecret, style, "account.read").Token(f.ctx)
		if err != nil {
			t.Fatalf("style %d: %v", style, err)
		}
		if tok.TokenType != "Bearer" || tok.RefreshToken != "" {
			t.Errorf("token_type %q, refresh %q", tok.TokenType, tok.RefreshToken)
		}
		if d := time.Until(tok.Expiry); d < 59*time.Minute || d > 61*time.Minute {
			t.Errorf("expiry in %v, want ~1h", d)
		}
		if ei := tok.Extra("expires_in"); ei != float64(3600) {
			t.Errorf("expires_in %v, want 3600", ei)
		}
		if got := tok.Extra("scope"); got != "account.read" {
			t.Errorf("scope %v", got)
		}
		c := claims(t, tok.AccessToken, f.idp.PublicKey())
		for k, want := range map[string]any{
			"client_id": ccID, "account_code": "MUC", "scope": "account.read", "sub": ccID, "iss": f.ts.URL,
		} {
			if c[k] != want {
				t.Errorf("claim %s = %#v, want %#v", k, c[k], want)
			}
		}
		exp, _ := c["exp"].(float64)
		iat, _ := c["iat"].(float64)
		if exp-iat < 3590 || exp-iat > 3610 {
			t.Errorf("exp-iat = %v", exp-iat)
		}
	}

	// No scope parameter: all of the client's scopes (Duende behaviour).
	tok, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := claims(t, tok.AccessToken, nil)["scope"]; got != "account.read reservations.read" {
		t.Errorf("default scope claim %v", got)
	}

	// Fine-grained client: granted identity:permissions whatever it asks.
	tok, err = f.cc(fineID, fineSecret, oauth2.AuthStyleInHeader, "reservations.read").Token(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("scope") != "identity:permissions" || claims(t, tok.AccessToken, nil)["scope"] != "identity:permissions" {
		t.Errorf("fine-grained scope %v", tok.Extra("scope"))
	}

	st := f.idp.Stats()
	if st.TokenRequests != 4 || st.Issued != 4 || st.ByGrant["client_credentials"] != 4 {
		t.Errorf("stats %+v", st)
	}
	if want := map[string]int{"account.read": 2, "": 1, "reservations.read": 1}; !maps.Equal(st.ByScope, want) {
		t.Errorf("by_scope %v, want %v", st.ByScope, want)
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	_, err := f.cc(ccID, "wrong", oauth2.AuthStyleInHeader).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", http.StatusUnauthorized)
	_, err = f.cc(ccID, "wrong", oauth2.AuthStyleInParams).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", http.StatusUnauthorized)
	_, err = f.cc("nobody", ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", http.StatusUnauthorized)
	_, err = f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader, "account.read", "nope").Token(f.ctx)
	re := wantOAuthError(t, err, "invalid_scope", http.StatusBadRequest)
	if !strings.Contains(re.ErrorDescription, "nope") {
		t.Errorf("description does not name the scope: %q", re.ErrorDescription)
	}
	// Exact scope matching: a prefix of an allowed scope is not allowed.
	_, err = f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader, "account").Token(f.ctx)
	wantOAuthError(t, err, "invalid_scope", http.StatusBadRequest)
	// A client-credentials client may not use the code grant.
	ccAsCode := f.connect(ccID, oauth2.AuthStyleInParams)
	ccAsCode.ClientSecret = ccSecret
	_, err = ccAsCode.Exchange(f.ctx, "abc", oauth2.VerifierOption(oauth2.GenerateVerifier()))
	wantOAuthError(t, err, "unauthorized_client", http.StatusBadRequest)

	resp, err := f.ts.Client().PostForm(f.ts.URL+devidp.PathToken, url.Values{"grant_type": {"password"}, "client_id": {ccID}, "client_secret": {ccSecret}})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 400 || body["error"] != "unsupported_grant_type" {
		t.Errorf("password grant: %d %v", resp.StatusCode, body)
	}

	st := f.idp.Stats()
	if st.Errors["invalid_client"] != 3 || st.Errors["invalid_scope"] != 2 || st.Errors["unauthorized_client"] != 1 || st.Issued != 0 {
		t.Errorf("stats %+v", st)
	}
	for _, v := range []string{ccSecret, "wrong"} {
		if strings.Contains(re.ErrorDescription, v) {
			t.Errorf("error description leaks %q", v)
		}
	}
}

func TestDuendeErrorStatusAndLifespan(t *testing.T) {
	f := newFixture(t, devidp.Options{DuendeErrorStatus: true, AccessTokenLifespan: 2 * time.Minute})
	_, err := f.cc(ccID, "wrong", oauth2.AuthStyleInHeader).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", http.StatusBadRequest)
	tok, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expiry); d < 110*time.Second || d > 121*time.Second {
		t.Errorf("expiry in %v, want ~2m", d)
	}
	// The global error value must not have been changed.
	g := newFixture(t, devidp.Options{})
	_, err = g.cc(ccID, "wrong", oauth2.AuthStyleInHeader).Token(g.ctx)
	wantOAuthError(t, err, "invalid_client", http.StatusUnauthorized)
}

func TestAuthorizationCodeFlow(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		cfg := f.connect(connectID, style, "reservations.read", "offline_access")
		verifier := oauth2.GenerateVerifier()
		code := f.code(t, cfg, verifier)
		tok, err := cfg.Exchange(f.ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("style %d: %v", style, err)
		}
		if tok.RefreshToken == "" || strings.Count(tok.RefreshToken, ".") == 2 {
			t.Errorf("refresh token should be opaque and present: %q", tok.RefreshToken)
		}
		if tok.Extra("scope") != "reservations.read offline_access" {
			t.Errorf("scope %v", tok.Extra("scope"))
		}
		c := claims(t, tok.AccessToken, f.idp.PublicKey())
		for k, want := range map[string]any{
			"client_id": connectID, "account_code": devidp.DefaultAccountCode, "sub": devidp.TestUser,
			"scope": "reservations.read offline_access", "iss": f.ts.URL,
		} {
			if c[k] != want {
				t.Errorf("claim %s = %#v, want %#v", k, c[k], want)
			}
		}
		// Codes are single use.
		_, err = cfg.Exchange(f.ctx, code, oauth2.VerifierOption(verifier))
		wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
	}

	// Without offline_access: no refresh token.
	cfg := f.connect(connectID, oauth2.AuthStyleInParams, "reservations.read")
	verifier := oauth2.GenerateVerifier()
	tok, err := cfg.Exchange(f.ctx, f.code(t, cfg, verifier), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "" {
		t.Error("refresh token without offline_access")
	}

	// Fine-grained connect client.
	cfg = f.connect(connectFineID, oauth2.AuthStyleInParams, "reservations.read", "offline_access")
	tok, err = cfg.Exchange(f.ctx, f.code(t, cfg, verifier), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("scope") != "identity:permissions offline_access" || tok.RefreshToken == "" {
		t.Errorf("fine-grained: scope %v, refresh %v", tok.Extra("scope"), tok.RefreshToken != "")
	}
	if c := claims(t, tok.AccessToken, nil); c["account_code"] != "HAM" {
		t.Errorf("account_code %v", c["account_code"])
	}
	tok2, err := cfg.TokenSource(f.ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok2.Extra("scope") != "identity:permissions offline_access" {
		t.Errorf("refreshed fine-grained scope %v", tok2.Extra("scope"))
	}

	st := f.idp.Stats()
	if st.Authorizations != 4 || st.ByGrant["authorization_code"] != 6 || st.ByGrant["refresh_token"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestAuthorizeErrors(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	base := url.Values{
		"response_type": {"code"}, "client_id": {connectID}, "redirect_uri": {redirectURI},
		"scope": {"reservations.read offline_access"}, "state": {"state-12345678"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"},
	}
	with := func(k, v string) string {
		q := url.Values{}
		for kk, vv := range base {
			q[kk] = vv
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return f.ts.URL + devidp.PathAuthorize + "?" + q.Encode()
	}

	// Sanity: the base request works.
	if u, _, body := f.authorize(t, with("", "")); u == nil || u.Query().Get("code") == "" {
		t.Fatalf("base authorize failed: %v %s", u, body)
	}

	// Errors redirected to the client, with state.
	for name, tc := range map[string]struct{ k, v, want string }{
		"unknown scope":  {"scope", "reservations.read nope", "invalid_scope"},
		"missing scope":  {"scope", "", "invalid_scope"},
		"no PKCE":        {"code_challenge", "", "invalid_request"},
		"plain PKCE":     {"code_challenge_method", "plain", "invalid_request"},
		"response_type":  {"response_type", "token", "unsupported_response_type"},
		"no PKCE method": {"code_challenge_method", "", "invalid_request"},
	} {
		u, status, body := f.authorize(t, with(tc.k, tc.v))
		if u == nil {
			t.Errorf("%s: no redirect (%d %s)", name, status, body)
			continue
		}
		if u.Host != "vault.example:8200" || u.Query().Get("error") != tc.want || u.Query().Get("state") != "state-12345678" || u.Query().Get("code") != "" {
			t.Errorf("%s: redirect %s", name, u)
		}
	}

	// Errors shown, not redirected: unknown client, unregistered redirect URI.
	for name, tc := range map[string]struct {
		k, v, want string
		status     int
	}{
		"unknown client": {"client_id", "nobody", "invalid_client", http.StatusUnauthorized},
		"bad redirect":   {"redirect_uri", "https://evil.example/cb", "invalid_request", http.StatusBadRequest},
		"cc client":      {"client_id", ccID, "invalid_request", http.StatusBadRequest},
	} {
		u, status, body := f.authorize(t, with(tc.k, tc.v))
		if u != nil {
			t.Errorf("%s: redirected to %s", name, u)
			continue
		}
		var e map[string]string
		_ = json.Unmarshal([]byte(body), &e)
		if status != tc.status || e["error"] != tc.want {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
}

func TestPKCEAtTokenEndpoint(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	cfg := f.connect(connectID, oauth2.AuthStyleInParams, "reservations.read", "offline_access")
	verifier := oauth2.GenerateVerifier()

	_, err := cfg.Exchange(f.ctx, f.code(t, cfg, verifier)) // no verifier
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
	_, err = cfg.Exchange(f.ctx, f.code(t, cfg, verifier), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)

	// redirect_uri must match the authorize request.
	other := *cfg
	other.RedirectURL = "https://vault.example:8200/other"
	_, err = other.Exchange(f.ctx, f.code(t, cfg, verifier), oauth2.VerifierOption(verifier))
	_ = retrieveError(t, err)

	// Another client cannot redeem the code.
	code := f.code(t, cfg, verifier)
	thief := f.connect(connectFineID, oauth2.AuthStyleInParams)
	_, err = thief.Exchange(f.ctx, code, oauth2.VerifierOption(verifier))
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
}

// authorized returns a fresh token with a refresh token for connectID.
func (f *fixture) authorized(t *testing.T, style oauth2.AuthStyle) (*oauth2.Config, *oauth2.Token) {
	t.Helper()
	cfg := f.connect(connectID, style, "reservations.read", "offline_access")
	verifier := oauth2.GenerateVerifier()
	tok, err := cfg.Exchange(f.ctx, f.code(t, cfg, verifier), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	return cfg, tok
}

func refresh(ctx context.Context, cfg *oauth2.Config, rt string) (*oauth2.Token, error) {
	return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
}

func TestRefreshRotation(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		cfg, tok := f.authorized(t, style)
		time.Sleep(1100 * time.Millisecond * time.Duration(style-1)) // once: iat must move on
		tok2, err := refresh(f.ctx, cfg, tok.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken {
			t.Fatalf("refresh token not rotated")
		}
		c1, c2 := claims(t, tok.AccessToken, nil), claims(t, tok2.AccessToken, f.idp.PublicKey())
		if c2["account_code"] != "DEMO" || c2["sub"] != devidp.TestUser || c2["client_id"] != connectID || c2["scope"] != "reservations.read offline_access" {
			t.Errorf("refreshed claims %v", c2)
		}
		if style == oauth2.AuthStyleInHeader && c2["iat"].(float64) <= c1["iat"].(float64) {
			t.Errorf("iat not renewed: %v -> %v", c1["iat"], c2["iat"])
		}
		if c1["jti"] == c2["jti"] {
			t.Error("same jti")
		}
		tok3, err := refresh(f.ctx, cfg, tok2.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		// Reusing an old refresh token: invalid_grant ...
		_, err = refresh(f.ctx, cfg, tok.RefreshToken)
		wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
		// ... and (fosite) the grant is revoked: the newest one is dead too.
		_, err = refresh(f.ctx, cfg, tok3.RefreshToken)
		wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
	}
	_, err := refresh(f.ctx, f.connect(connectID, oauth2.AuthStyleInParams), "garbage")
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
	// Each style sent its first refresh token twice, every other one once.
	if n := f.idp.Stats().RefreshTokenMostSent; n != 2 {
		t.Errorf("RefreshTokenMostSent = %d, want 2", n)
	}
}

func revoke(t *testing.T, f *fixture, id, secret, token, hint string) (int, string) {
	t.Helper()
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	req, _ := http.NewRequest(http.MethodPost, f.ts.URL+devidp.PathRevocation, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRevocation(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	cfg, tok := f.authorized(t, oauth2.AuthStyleInParams)

	if status, body := revoke(t, f, connectID, "wrong", tok.RefreshToken, "refresh_token"); status != http.StatusUnauthorized || !strings.Contains(body, "invalid_client") {
		t.Errorf("wrong secret: %d %s", status, body)
	}
	if status, _ := revoke(t, f, connectID, connectSecret, "unknown-token", ""); status != http.StatusOK {
		t.Errorf("unknown token: %d", status)
	}
	if status, body := revoke(t, f, connectID, connectSecret, tok.RefreshToken, "refresh_token"); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	_, err := refresh(f.ctx, cfg, tok.RefreshToken)
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)

	// Access tokens (form-body client authentication this time).
	cctok, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.ts.Client().PostForm(f.ts.URL+devidp.PathRevocation, url.Values{
		"token": {cctok.AccessToken}, "token_type_hint": {"access_token"}, "client_id": {ccID}, "client_secret": {ccSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("revoke access token: %d", resp.StatusCode)
	}

	// Server-side revocation of all refresh tokens of a client.
	cfg, tok = f.authorized(t, oauth2.AuthStyleInParams)
	_, tokB := f.authorized(t, oauth2.AuthStyleInParams)
	f.idp.RevokeRefreshTokens(connectID)
	_, err = refresh(f.ctx, cfg, tok.RefreshToken)
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
	_, err = refresh(f.ctx, cfg, tokB.RefreshToken)
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)

	st := f.idp.Stats()
	if st.Revocations != 3 || st.RefreshRevoked != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestDiscoveryJWKSHealth(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	get := func(path string, v any) {
		t.Helper()
		resp, err := f.ts.Client().Get(f.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if v != nil {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	get(devidp.PathHealth, nil)
	var disc map[string]any
	get(devidp.PathDiscovery, &disc)
	for k, want := range map[string]string{
		"issuer":                 f.ts.URL,
		"token_endpoint":         f.ts.URL + "/connect/token",
		"authorization_endpoint": f.ts.URL + "/connect/authorize",
		"revocation_endpoint":    f.ts.URL + "/connect/revocation",
		"jwks_uri":               f.ts.URL + devidp.PathJWKS,
	} {
		if disc[k] != want {
			t.Errorf("%s = %v", k, disc[k])
		}
	}
	var set jose.JSONWebKeySet
	get(devidp.PathJWKS, &set)
	if len(set.Keys) != 1 || set.Keys[0].KeyID != f.idp.KeyID() {
		t.Fatalf("jwks %+v", set)
	}
	tok, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Headers[0].KeyID != f.idp.KeyID() {
		t.Errorf("kid %q", parsed.Headers[0].KeyID)
	}
	var std jwt.Claims
	if err := parsed.Claims(set.Keys[0].Key, &std); err != nil {
		t.Fatal(err)
	}
	if err := std.Validate(jwt.Expected{Issuer: f.ts.URL, Time: time.Now()}); err != nil {
		t.Error(err)
	}

	resp, err := f.ts.Client().Get(f.ts.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown path: %d", resp.StatusCode)
	}
}

func TestAddClientAndValidation(t *testing.T) {
	f := newFixture(t, devidp.Options{Clients: []devidp.Client{}})
	if _, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx); err == nil {
		t.Fatal("unknown client accepted")
	}
	if err := f.idp.AddClient(testClients()[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx); err != nil {
		t.Fatal(err)
	}
	// Replace: new secret.
	c := testClients()[0]
	c.Secret = "rotated"
	if err := f.idp.AddClient(c); err != nil {
		t.Fatal(err)
	}
	_, err := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader).Token(f.ctx)
	wantOAuthError(t, err, "invalid_client", 0)
	if _, err := f.cc(ccID, "rotated", oauth2.AuthStyleInHeader).Token(f.ctx); err != nil {
		t.Fatal(err)
	}

	for name, bad := range map[string]devidp.Client{
		"no id":        {Secret: "x"},
		"no secret":    {ID: "x"},
		"bad grant":    {ID: "x", Secret: "x", GrantTypes: []string{"password"}},
		"code no uri":  {ID: "x", Secret: "x", GrantTypes: []string{"authorization_code"}},
		"relative uri": {ID: "x", Secret: "x", RedirectURIs: []string{"/cb"}},
		"fragment":     {ID: "x", Secret: "x", RedirectURIs: []string{"https://a.example/cb#x"}},
		"space scope":  {ID: "x", Secret: "x", Scopes: []string{"a b"}},
	} {
		if err := f.idp.AddClient(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := devidp.New(devidp.Options{SigningKey: testKey(), Clients: []devidp.Client{{ID: "x"}}}); err == nil {
		t.Error("New accepted a bad client")
	}
}

func TestParseClientSpec(t *testing.T) {
	c, err := devidp.ParseClientSpec("hotel:s3cret")
	if err != nil || c.ID != "hotel" || c.Secret != "s3cret" || !slices.Equal(c.GrantTypes, []string{"client_credentials"}) {
		t.Errorf("%+v %v", c, err)
	}
	c, err = devidp.ParseClientSpec("hotel:s3cret:MUC:a.read, b.write")
	if err != nil || c.AccountCode != "MUC" || !slices.Equal(c.Scopes, []string{"a.read", "b.write"}) {
		t.Errorf("%+v %v", c, err)
	}
	c, err = devidp.ParseClientSpec("app:s3cret::a.read:https://127.0.0.1:8200/v1/apaleo/callback")
	if err != nil || c.AccountCode != "" || !slices.Equal(c.RedirectURIs, []string{"https://127.0.0.1:8200/v1/apaleo/callback"}) ||
		!slices.Equal(c.GrantTypes, []string{"authorization_code", "refresh_token"}) {
		t.Errorf("%+v %v", c, err)
	}
	for _, bad := range []string{"", "hotel", "hotel:", ":s", "app:s:A:x:not a url"} {
		if _, err := devidp.ParseClientSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := devidp.ParseClientSpec("hotel:topsecret:A:x y"); err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error %v", err)
	}
}
