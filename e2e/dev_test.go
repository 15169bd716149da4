//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// shortTTL is the access-token lifetime of the "short" identity server: tokens that
// must be refreshed during the test. The plugin hands a cached token out while it has
// more than min(min_ttl, half its lifetime) left.
const shortTTL = 10 * time.Second

// devEnv is one Vault dev server with the plugin mounted at apaleo/, an audit log, and
// two dev identity servers: long (1 h tokens, as apaleo) and short (shortTTL tokens).
type devEnv struct {
	vault       *vault
	long, short *identity
	auditLog    string

	secMuc, secApp, secExt string
}

// TestDev runs the cases that share one Vault dev server, in order: later cases use
// configs and credentials made by earlier ones.
func TestDev(t *testing.T) {
	t.Parallel()
	e := &devEnv{vault: startDevVault(t)}
	e.secMuc, e.secApp, e.secExt = randomSecret(t, "muc"), randomSecret(t, "app"), randomSecret(t, "ext")
	callback := e.vault.Addr + "/v1/" + mount + "/callback"
	e.long = startIdentity(t, "identity-long", time.Hour,
		"hotel-muc:"+e.secMuc+":MUC:account.read,reservations.read",
		"connect-ext:"+e.secExt+":EXT:reservations.read,account.read:https://app.example/cb")
	e.short = startIdentity(t, "identity-short", shortTTL,
		"hotel-muc:"+e.secMuc+":MUC:account.read,reservations.read",
		"connect-app:"+e.secApp+":BER:reservations.read,account.read:"+callback)
	e.auditLog = filepath.Join(e.vault.dir, "audit.log")
	e.vault.enableFileAudit(t, e.auditLog)

	if !t.Run("plugin_registered", func(t *testing.T) { testPluginRegistered(t, e) }) {
		t.FailNow()
	}
	t.Run("client_credentials", func(t *testing.T) { testClientCredentials(t, e) })
	t.Run("authorization_code_callback", func(t *testing.T) { testAuthCodeCallback(t, e) })
	t.Run("authorization_code_exchange", func(t *testing.T) { testAuthCodeExchange(t, e) })
	t.Run("policies", func(t *testing.T) { testPolicies(t, e) })
	t.Run("agent", func(t *testing.T) { testAgent(t, e) })
	// The scan of responses and logs for secrets is TestSecretScan's (secrets_test.go):
	// the same flows and more, at trace level, with what only the identity server saw.
}

func testPluginRegistered(t *testing.T, e *devEnv) {
	v := e.vault
	v.enablePlugin(t)

	out := v.must(t, "plugin", "info", "-version="+pluginVersion, "secret", pluginName)
	if !tableHas(out, "version", pluginVersion) {
		t.Errorf("plugin info shows no version %s:\n%s", pluginVersion, out)
	}
	var pi map[string]any
	v.jsonOut(t, &pi, "plugin", "info", "-format=json", "-version="+pluginVersion, "secret", pluginName)
	if pi["version"] != pluginVersion {
		t.Errorf("plugin info -format=json version %v, want %s", pi["version"], pluginVersion)
	}
	if got, want := pi["sha256"], sha256File(t, bins.plugin); got != want {
		t.Errorf("plugin info sha256 %q, want %q", got, want)
	}

	var mounts map[string]struct {
		Type                  string `json:"type"`
		PluginVersion         string `json:"plugin_version"`
		RunningPluginVersion  string `json:"running_plugin_version"`
		RunningSha256         string `json:"running_sha256"`
		DeprecationStatusFlag string `json:"deprecation_status"`
	}
	v.jsonOut(t, &mounts, "secrets", "list", "-format=json", "-detailed")
	m, ok := mounts[mount+"/"]
	if !ok {
		t.Fatalf("secrets list has no %s/: %v", mount, mounts)
	}
	if m.Type != pluginName || m.PluginVersion != pluginVersion || m.RunningPluginVersion != pluginVersion {
		t.Errorf("mount %s/: type %q plugin_version %q running_plugin_version %q, want %s %s %s",
			mount, m.Type, m.PluginVersion, m.RunningPluginVersion, pluginName, pluginVersion, pluginVersion)
	}

	for _, p := range []string{"config/x", "config/", "creds/x", "creds/", "authorize/x", "callback", "exchange"} {
		r := v.run("path-help", mount+"/"+p)
		if r.Err != nil {
			t.Errorf("path-help %s/%s: %s", mount, p, r)
			continue
		}
		if !strings.Contains(r.Stdout, "## DESCRIPTION") && !strings.Contains(r.Stdout, "Matching Route") {
			t.Errorf("path-help %s/%s has no description:\n%s", mount, p, r.Stdout)
		}
	}
}

// tableHas reports whether out (table output) has a line "key   value".
func tableHas(out, key, value string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key && f[1] == value {
			return true
		}
	}
	return false
}

func testClientCredentials(t *testing.T, e *devEnv) {
	v := e.vault
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: e.secMuc, idp: e.long,
		scopes: "account.read reservations.read,account.read"})

	raw := v.must(t, "read", "-format=json", mount+"/config/hotel-muc")
	if strings.Contains(raw, e.secMuc) || strings.Contains(raw, "client_secret") {
		t.Errorf("config read shows the client secret:\n%s", raw)
	}
	var cfg vaultSecret
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"client_id": "hotel-muc", "grant_type": "client_credentials", "identity_url": e.long.URL} {
		if got := cfg.str(k); got != want {
			t.Errorf("config %s = %q, want %q", k, got, want)
		}
	}
	if got := cfg.list("scopes"); !slices.Equal(got, []string{"account.read", "reservations.read"}) {
		t.Errorf("config scopes = %q, want [account.read reservations.read]", got)
	}
	if !strings.Contains(cfg.str("ca_certificate"), "BEGIN CERTIFICATE") {
		t.Errorf("config ca_certificate = %q", cfg.str("ca_certificate"))
	}
	if _, ok := cfg.Data["min_ttl"]; !ok {
		t.Errorf("config read has no min_ttl: %v", cfg.Data)
	}
	if keys := v.list(t, mount+"/config/"); !slices.Contains(keys, "hotel-muc") {
		t.Errorf("config/ list = %q, want hotel-muc in it", keys)
	}

	// First read: one client_credentials request.
	before := e.long.stats(t)
	s := v.read(t, mount+"/creds/hotel-muc")
	after := e.long.stats(t)
	if after.TokenRequests != before.TokenRequests+1 || after.ByGrant["client_credentials"] != before.ByGrant["client_credentials"]+1 {
		t.Errorf("first read: identity stats %+v -> %+v, want one client_credentials request", before, after)
	}
	checkToken(t, s, tokenWant{name: "hotel-muc", config: "hotel-muc", clientID: "hotel-muc", account: "MUC",
		scopes: []string{"account.read", "reservations.read"}, minLease: 3550, maxLease: 3600})
	if strings.Contains(fmt.Sprint(s), e.secMuc) {
		t.Error("creds response contains the client secret")
	}

	// Second read: the cached token, no request.
	s2 := v.read(t, mount+"/creds/hotel-muc")
	if got := e.long.stats(t); got.TokenRequests != after.TokenRequests {
		t.Errorf("second read made %d token requests, want 0 (cached)", got.TokenRequests-after.TokenRequests)
	}
	if s2.str("access_token") != s.str("access_token") {
		t.Error("second read returned another access token, want the cached one")
	}
	if s2.LeaseID == s.LeaseID || s2.LeaseDuration > s.LeaseDuration || s2.LeaseDuration < 3500 {
		t.Errorf("second read: lease %q %ds after %q %ds", s2.LeaseID, s2.LeaseDuration, s.LeaseID, s.LeaseDuration)
	}
	if keys := v.list(t, mount+"/creds/"); !slices.Contains(keys, "hotel-muc") {
		t.Errorf("creds/ list = %q, want hotel-muc in it", keys)
	}

	// Revoking the lease does not call apaleo.
	v.must(t, "lease", "revoke", s.LeaseID)
	if got := e.long.stats(t); got.Revocations != after.Revocations || got.TokenRequests != after.TokenRequests {
		t.Errorf("lease revoke called the identity server: %+v -> %+v", after, got)
	}

	// Deleting creds/ drops the cached token: the next read asks for a new one.
	v.must(t, "delete", mount+"/creds/hotel-muc")
	s3 := v.read(t, mount+"/creds/hotel-muc")
	if got := e.long.stats(t); got.TokenRequests != after.TokenRequests+1 {
		t.Errorf("read after delete made %d token requests, want 1", got.TokenRequests-after.TokenRequests)
	}
	if s3.str("access_token") == s.str("access_token") {
		t.Error("read after delete returned the dropped token")
	}

	// A wrong secret: invalid_client, naming the config, without the secret.
	wrong := randomSecret(t, "wrong")
	v.writeConfig(t, appConfig{name: "hotel-wrong", clientID: "hotel-muc", secret: wrong, idp: e.long})
	msg := v.mustFail(t, "read", mount+"/creds/hotel-wrong")
	if !strings.Contains(msg, "invalid_client") || !strings.Contains(msg, "config/hotel-wrong") {
		t.Errorf("read with a wrong secret: error should carry invalid_client and name config/hotel-wrong:\n%s", msg)
	}
	if strings.Contains(msg, wrong) {
		t.Error("the error shows the client secret")
	}
	v.must(t, "delete", mount+"/config/hotel-wrong")
	if r := v.run("read", mount+"/config/hotel-wrong"); r.Err == nil {
		t.Errorf("config/hotel-wrong still readable after delete: %s", r.Stdout)
	}
	if keys := v.list(t, mount+"/config/"); slices.Contains(keys, "hotel-wrong") {
		t.Errorf("config/ list after delete = %q", keys)
	}

	// Bad input: 400 with a message, nothing stored.
	for _, bad := range [][]string{
		{"identity_url=http://identity.example.com"},
		{"min_ttl=-5m"},
		{"scopes=account\"read"},
		{"grant_type=password"},
	} {
		args := append([]string{"write", mount + "/config/bad", "client_id=x", "client_secret=y"}, bad...)
		msg := v.mustFail(t, args...)
		if !strings.Contains(msg, "Code: 400") {
			t.Errorf("config %v: want a 400, got:\n%s", bad, msg)
		}
	}
	if r := v.run("read", mount+"/config/bad"); r.Err == nil {
		t.Errorf("a rejected config was stored: %s", r.Stdout)
	}
}

type tokenWant struct {
	name, config, clientID, account string
	scopes                          []string // each must be granted
	minLease, maxLease              int
}

// checkToken checks a creds/<name> response against SPEC.
func checkToken(t *testing.T, s vaultSecret, want tokenWant) {
	t.Helper()
	if !strings.HasPrefix(s.LeaseID, mount+"/creds/"+want.name+"/") {
		t.Errorf("lease_id %q, want %s/creds/%s/...", s.LeaseID, mount, want.name)
	}
	if s.LeaseDuration < want.minLease || s.LeaseDuration > want.maxLease {
		t.Errorf("lease_duration %d, want %d..%d", s.LeaseDuration, want.minLease, want.maxLease)
	}
	if !s.Renewable {
		t.Error("lease is not renewable, want renewable up to the token's expiry")
	}
	tok := s.str("access_token")
	if tok == "" {
		t.Fatalf("no access_token in %v", s.Data)
	}
	if !strings.EqualFold(s.str("token_type"), "bearer") {
		t.Errorf("token_type %q, want Bearer", s.str("token_type"))
	}
	exp, err := time.Parse(time.RFC3339, s.str("expires_at"))
	if err != nil {
		t.Errorf("expires_at %q: %v", s.str("expires_at"), err)
	} else if left := time.Until(exp); left < time.Duration(want.minLease-5)*time.Second || left > time.Duration(want.maxLease+5)*time.Second {
		t.Errorf("expires_at %s is %s away, want about the lease duration %ds", s.str("expires_at"), left.Round(time.Second), s.LeaseDuration)
	}
	for k, w := range map[string]string{"account_code": want.account, "client_id": want.clientID, "config": want.config} {
		if got := s.str(k); got != w {
			t.Errorf("%s = %q, want %q", k, got, w)
		}
	}
	got := s.list("scopes")
	for _, sc := range want.scopes {
		if !slices.Contains(got, sc) {
			t.Errorf("scopes = %q, want %q among them", got, sc)
		}
	}
	for _, k := range []string{"refresh_token", "client_secret", "code", "code_verifier"} {
		if _, ok := s.Data[k]; ok {
			t.Errorf("creds response has a %s field", k)
		}
	}
	claims := jwtClaims(t, tok)
	if claims["account_code"] != want.account || claims["client_id"] != want.clientID {
		t.Errorf("token claims account_code %v client_id %v, want %s %s", claims["account_code"], claims["client_id"], want.account, want.clientID)
	}
}

func testAuthCodeCallback(t *testing.T, e *devEnv) {
	v := e.vault
	callback := v.Addr + "/v1/" + mount + "/callback"
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: e.secApp, idp: e.short,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read account.read", minTTL: "5s"})

	authURL, state := v.authorize(t, "hotel-ber", "connect")
	q := authURL.Query()
	if q.Get("client_id") != "connect-app" || q.Get("redirect_uri") != callback {
		t.Errorf("auth_url client_id %q redirect_uri %q, want connect-app %s", q.Get("client_id"), q.Get("redirect_uri"), callback)
	}
	if sc := strings.Fields(q.Get("scope")); !slices.Contains(sc, "offline_access") || !slices.Contains(sc, "reservations.read") {
		t.Errorf("auth_url scope %q, want reservations.read and offline_access", q.Get("scope"))
	}
	if !strings.HasPrefix(authURL.String(), e.short.URL+"/connect/authorize?") {
		t.Errorf("auth_url %s is not at the identity server %s", authURL, e.short.URL)
	}

	// The admin's browser: identity server (auto consent) -> Vault's callback.
	before := e.short.stats(t)
	b := e.short.browser(t, true)
	page := getPage(t, b.Client, authURL.String())
	callbackAt := time.Now()           // the code exchange was done by then
	const aheadOpens = 3 * time.Second // refresh-ahead's window opens 3.3 s after the exchange
	var cb *url.URL
	for _, u := range b.visited {
		if strings.HasPrefix(u.String(), callback+"?") {
			cb = u
		}
	}
	if cb == nil {
		t.Fatalf("never redirected to %s; visited %v; page %d %s", callback, b.visited, page.status, page.body)
	}
	code := cb.Query().Get("code")
	if cb.Query().Get("state") != state || code == "" {
		t.Errorf("callback URL %s: want state %s and a code", cb, state)
	}
	if page.status != http.StatusOK || !strings.HasPrefix(page.contentType, "text/html") || !strings.Contains(page.body, "hotel-ber") {
		t.Fatalf("callback page: %d %s, want 200 HTML naming hotel-ber:\n%s", page.status, page.contentType, page.body)
	}
	if strings.Contains(page.body, code) || strings.Contains(page.body, "eyJ") {
		t.Errorf("callback page shows the code or a token:\n%s", page.body)
	}
	after := e.short.stats(t)
	if after.Authorizations != before.Authorizations+1 || after.ByGrant["authorization_code"] != before.ByGrant["authorization_code"]+1 {
		t.Errorf("identity stats %+v -> %+v, want one authorization and one code exchange", before, after)
	}

	// The first access token came with the code: reading it makes no request. The read
	// puts the token in use, so refresh-ahead gets the next one once its window opens
	// (refreshWindow: 3.3 s into a 10 s token with min_ttl 5 s); on a loaded machine the
	// read and the count may come after that, and then one refresh is refresh-ahead's.
	s := v.read(t, mount+"/creds/hotel-ber")
	checkToken(t, s, tokenWant{name: "hotel-ber", config: "connect", clientID: "connect-app", account: "BER",
		scopes: []string{"reservations.read", "account.read"}, minLease: 1, maxLease: int(shortTTL.Seconds())})
	if n := e.short.stats(t).TokenRequests - after.TokenRequests; n != 0 && (time.Since(callbackAt) < aheadOpens || n > 1) {
		t.Errorf("first creds read: %d token requests %s after the code exchange, want 0 (1 from refresh-ahead after %s)",
			n, time.Since(callbackAt).Round(time.Millisecond), aheadOpens)
	}
	if keys := v.list(t, mount+"/creds/"); !slices.Contains(keys, "hotel-ber") {
		t.Errorf("creds/ list = %q, want hotel-ber", keys)
	}

	// The state works once; unknown states and apaleo errors get a 4xx page, nothing stored.
	plain := &http.Client{Timeout: 30 * time.Second}
	if p := getPage(t, plain, cb.String()); p.status < 400 || p.status >= 500 || !strings.HasPrefix(p.contentType, "text/html") {
		t.Errorf("replayed callback: %d %s, want a 4xx HTML page:\n%s", p.status, p.contentType, p.body)
	}
	if p := getPage(t, plain, callback+"?state=no-such-state&code=abc"); p.status < 400 || p.status >= 500 {
		t.Errorf("callback with an unknown state: %d, want 4xx:\n%s", p.status, p.body)
	}
	_, errState := v.authorize(t, "hotel-denied", "connect")
	p := getPage(t, plain, callback+"?"+url.Values{"error": {"access_denied"}, "error_description": {"The user denied access"}, "state": {errState}}.Encode())
	if p.status < 400 || p.status >= 500 || !strings.Contains(p.body, "access_denied") {
		t.Errorf("callback with error=access_denied: %d, want a 4xx page saying access_denied:\n%s", p.status, p.body)
	}
	if r := v.run("read", mount+"/creds/hotel-denied"); r.Err == nil {
		t.Errorf("creds/hotel-denied exists after a refused authorization: %s", r.Stdout)
	}
	// The replayed callback exchanged nothing, and creds/hotel-ber is as it was (its access
	// token may be refresh-ahead's by now: the window opens 3.3 s into the token).
	if got := e.short.stats(t); got.ByGrant["authorization_code"] != after.ByGrant["authorization_code"] {
		t.Errorf("the replayed and refused callbacks made %d code exchanges, want 0",
			got.ByGrant["authorization_code"]-after.ByGrant["authorization_code"])
	}
	checkToken(t, v.read(t, mount+"/creds/hotel-ber"), tokenWant{name: "hotel-ber", config: "connect", clientID: "connect-app",
		account: "BER", scopes: []string{"reservations.read", "account.read"}, minLease: 1, maxLease: int(shortTTL.Seconds())})

	// Later reads refresh (refresh token grant); the rotated refresh token is stored, so
	// the next refresh works too. Each new token is refresh-ahead's or the read's; between
	// the read that sees it and the count, refresh-ahead may already have fetched the next
	// (its window opens 3.3 s into each token, and a loaded machine takes that long for a
	// vault read and a count): one more, never two.
	tok := s.str("access_token")
	for i := 1; i <= 2; i++ {
		tok = waitNewToken(t, v, "hotel-ber", tok, shortTTL+10*time.Second)
		got := e.short.stats(t)
		if n := got.ByGrant["refresh_token"] - after.ByGrant["refresh_token"]; n < i || n > i+1 {
			t.Errorf("after refresh %d: %d refresh_token requests, want %d (%d with refresh-ahead's next)", i, n, i, i+1)
		}
		if n := got.Errors["invalid_grant"]; n != 0 {
			t.Errorf("after refresh %d: %d invalid_grant errors at the identity server", i, n)
		}
	}
}

// waitNewToken reads creds/<name> until it returns an access token other than old.
func waitNewToken(t *testing.T, v *vault, name, old string, timeout time.Duration) string {
	t.Helper()
	var tok string
	waitFor(t, "a new access token from creds/"+name, timeout, 500*time.Millisecond, func() (bool, error) {
		r := v.run("read", "-format=json", mount+"/creds/"+name)
		if r.Err != nil {
			t.Fatalf("read creds/%s: %s", name, r)
		}
		var s vaultSecret
		if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
			t.Fatal(err)
		}
		tok = s.str("access_token")
		return tok != "" && tok != old, nil
	})
	return tok
}

func testAuthCodeExchange(t *testing.T, e *devEnv) {
	v := e.vault
	const redirect = "https://app.example/cb"
	v.writeConfig(t, appConfig{name: "connect-ext", clientID: "connect-ext", secret: e.secExt, idp: e.long,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read,account.read"})

	// Names are unique across client-credentials configs and authorized credentials.
	if msg := v.mustFail(t, "write", mount+"/authorize/hotel-muc", "config=connect-ext"); !strings.Contains(msg, "hotel-muc") {
		t.Errorf("authorize/hotel-muc (a client-credentials config): error should name it:\n%s", msg)
	}

	before := e.long.stats(t)
	authURL, state := v.authorize(t, "hotel-ext", "connect-ext")
	loc := redirectFromIdentity(t, e.long, authURL)
	if loc.Scheme+"://"+loc.Host+loc.Path != redirect {
		t.Fatalf("identity server redirected to %s, want %s", loc, redirect)
	}
	code := loc.Query().Get("code")
	if loc.Query().Get("state") != state || code == "" {
		t.Fatalf("redirect %s: want state %s and a code", loc, state)
	}

	raw := v.must(t, "write", "-format=json", mount+"/exchange", "state="+state, "code="+code)
	if strings.Contains(raw, code) || strings.Contains(raw, "eyJ") {
		t.Errorf("exchange response shows the code or a token:\n%s", raw)
	}
	var x vaultSecret
	if err := json.Unmarshal([]byte(raw), &x); err != nil {
		t.Fatal(err)
	}
	if x.str("name") != "hotel-ext" || x.str("account_code") != "EXT" || !slices.Contains(x.list("scopes"), "reservations.read") {
		t.Errorf("exchange returned %v, want name hotel-ext, account_code EXT, scopes with reservations.read", x.Data)
	}
	if exp, err := time.Parse(time.RFC3339, x.str("expires_at")); err != nil || time.Until(exp) < 55*time.Minute {
		t.Errorf("exchange expires_at %q (%v), want about an hour from now", x.str("expires_at"), err)
	}
	after := e.long.stats(t)
	if after.ByGrant["authorization_code"] != before.ByGrant["authorization_code"]+1 || after.TokenRequests != before.TokenRequests+1 {
		t.Errorf("identity stats %+v -> %+v, want one code exchange", before, after)
	}

	s := v.read(t, mount+"/creds/hotel-ext")
	checkToken(t, s, tokenWant{name: "hotel-ext", config: "connect-ext", clientID: "connect-ext", account: "EXT",
		scopes: []string{"reservations.read"}, minLease: 3550, maxLease: 3600})
	if got := e.long.stats(t); got.TokenRequests != after.TokenRequests {
		t.Errorf("creds read after exchange made %d token requests, want 0", got.TokenRequests-after.TokenRequests)
	}

	// The state was consumed.
	if msg := v.mustFail(t, "write", mount+"/exchange", "state="+state, "code="+code); !strings.Contains(msg, "Code: 4") || strings.Contains(msg, code) {
		t.Errorf("replayed exchange: want a 4xx without the code:\n%s", msg)
	}

	// The config cannot go while a credential uses it; deleting the credential revokes
	// its refresh token at apaleo.
	if msg := v.mustFail(t, "delete", mount+"/config/connect-ext"); !strings.Contains(msg, "hotel-ext") {
		t.Errorf("deleting a config in use: error should name hotel-ext:\n%s", msg)
	}
	v.must(t, "delete", mount+"/creds/hotel-ext")
	if got := e.long.stats(t); got.Revocations != after.Revocations+1 {
		t.Errorf("delete creds/hotel-ext: %d revocations at the identity server, want 1", got.Revocations-after.Revocations)
	}
	if keys := v.list(t, mount+"/creds/"); slices.Contains(keys, "hotel-ext") {
		t.Errorf("creds/ list after delete = %q", keys)
	}
	if r := v.run("read", mount+"/creds/hotel-ext"); r.Err == nil {
		t.Errorf("creds/hotel-ext readable after delete: %s", r.Stdout)
	}
	v.must(t, "delete", mount+"/config/connect-ext")
}

func testPolicies(t *testing.T, e *devEnv) {
	v := e.vault
	token := v.readerToken(t, "apaleo-muc", "hotel-muc")

	r := v.runAs(token, "", "read", "-format=json", mount+"/creds/hotel-muc")
	if r.Err != nil {
		t.Fatalf("read creds/hotel-muc with the policy: %s", r)
	}
	var s vaultSecret
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil || s.str("access_token") == "" {
		t.Errorf("read creds/hotel-muc with the policy: %v %s", err, r.Stdout)
	}
	for _, args := range [][]string{
		{"read", mount + "/creds/hotel-ber"},
		{"read", mount + "/config/hotel-muc"},
		{"write", mount + "/authorize/x", "config=connect"},
		{"write", mount + "/config/hotel-muc", "min_ttl=1m"},
		{"list", mount + "/creds/"},
		{"delete", mount + "/creds/hotel-muc"},
	} {
		r := v.runAs(token, "", args...)
		if r.Err == nil || !strings.Contains(r.Stderr, "Code: 403") {
			t.Errorf("vault %s with the creds/hotel-muc policy: want 403, got %s", strings.Join(args, " "), r)
		}
	}
}

// readerToken writes policy, which may read creds/<name> and nothing else, and returns a
// token that has only it.
func (v *vault) readerToken(t *testing.T, policy, name string) string {
	t.Helper()
	hcl := writeFile(t, filepath.Join(v.dir, policy+".hcl"), `path "`+mount+`/creds/`+name+`" { capabilities = ["read"] }`+"\n")
	v.must(t, "policy", "write", policy, hcl)
	var tok vaultSecret
	v.jsonOut(t, &tok, "token", "create", "-format=json", "-policy="+policy, "-ttl=1h")
	if tok.Auth == nil || tok.Auth.ClientToken == "" {
		t.Fatal("token create returned no token")
	}
	return tok.Auth.ClientToken
}

func testAgent(t *testing.T, e *devEnv) {
	v := e.vault
	// hotel-muc moves to the short-lived identity server: its cached token goes. A move
	// to another host must carry the client secret.
	before := e.short.stats(t)
	if msg := v.mustFail(t, "write", mount+"/config/hotel-muc", "identity_url="+e.short.URL, "ca_certificate=@"+e.short.CAFile); !strings.Contains(msg, "must carry client_secret") {
		t.Errorf("moving identity_url without client_secret: %s", msg)
	}
	v.must(t, "write", mount+"/config/hotel-muc", "identity_url="+e.short.URL, "ca_certificate=@"+e.short.CAFile, "client_secret="+e.secMuc)
	// Its lease follows the token's life (Agent reads again when the lease ends).
	s := v.read(t, mount+"/creds/hotel-muc")
	checkToken(t, s, tokenWant{name: "hotel-muc", config: "hotel-muc", clientID: "hotel-muc", account: "MUC",
		scopes: []string{"account.read"}, minLease: 1, maxLease: int(shortTTL.Seconds())})
	if iss := jwtClaims(t, s.str("access_token"))["iss"]; iss != e.short.URL {
		t.Errorf("token after the identity_url change was issued by %v, want %s", iss, e.short.URL)
	}
	if t.Failed() {
		t.FailNow()
	}

	path := mount + "/creds/hotel-muc"
	agent := startAgent(t, v, "apaleo-agent", path)
	read := func() string { return agent.rendered(path) }
	var first string
	waitFor(t, "Vault Agent to render the template", 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		if agent.exited() {
			t.Fatalf("vault agent exited: %v\n%s", agent.err, tail(agent.logPath, 30))
		}
		first = read()
		return first != "", nil
	})
	claims := jwtClaims(t, first)
	if claims["account_code"] != "MUC" || claims["iss"] != e.short.URL {
		t.Errorf("rendered token: account_code %v iss %v, want MUC from %s", claims["account_code"], claims["iss"], e.short.URL)
	}
	// Agent renews the lease up to the token's expiry, then reads again and gets a new one.
	var second string
	waitFor(t, "Vault Agent to render a new token", 90*time.Second, 200*time.Millisecond, func() (bool, error) {
		if agent.exited() {
			t.Fatalf("vault agent exited: %v\n%s", agent.err, tail(agent.logPath, 30))
		}
		second = read()
		return second != "" && second != first, nil
	})
	jwtClaims(t, second)
	if got := e.short.stats(t); got.ByGrant["client_credentials"]-before.ByGrant["client_credentials"] < 2 {
		t.Errorf("identity server saw %d client_credentials requests, want 2 or more", got.ByGrant["client_credentials"]-before.ByGrant["client_credentials"])
	}
	agent.stop(t)
}
