//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// flows_test.go: the operator's flows through Vault: config writes, authorize, the
// identity server's redirect, the exchange, and the pages and tokens they yield.

// appConfig is what writeConfig writes to config/<name>.
type appConfig struct {
	name, clientID, secret string
	idp                    *identity
	grant, redirect        string
	scopes                 string
	minTTL                 string
}

// writeConfig writes config/<name>.
func (v *vault) writeConfig(t *testing.T, c appConfig) {
	t.Helper()
	args := []string{"config/" + c.name, "client_id=" + c.clientID, "client_secret=" + c.secret,
		"identity_url=" + c.idp.URL, "ca_certificate=@" + c.idp.CAFile}
	if c.grant != "" {
		args = append(args, "grant_type="+c.grant)
	}
	if c.redirect != "" {
		args = append(args, "redirect_uri="+c.redirect)
	}
	if c.scopes != "" {
		args = append(args, "scopes="+c.scopes)
	}
	if c.minTTL != "" {
		args = append(args, "min_ttl="+c.minTTL)
	}
	v.must(t, append([]string{"write", mount + "/" + args[0]}, args[1:]...)...)
}

// authorize starts authorize/<name> and checks the auth_url it returns.
func (v *vault) authorize(t *testing.T, name, config string, extra ...string) (authURL *url.URL, state string) {
	t.Helper()
	s := v.write(t, mount+"/authorize/"+name, append([]string{"config=" + config}, extra...)...)
	u, err := url.Parse(s.str("auth_url"))
	if err != nil || s.str("auth_url") == "" {
		t.Fatalf("authorize/%s: auth_url %q: %v (data %v)", name, s.str("auth_url"), err, s.Data)
	}
	state = s.str("state")
	q := u.Query()
	for k, want := range map[string]string{"response_type": "code", "state": state, "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Errorf("auth_url %s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"client_id", "redirect_uri", "scope", "code_challenge"} {
		if q.Get(k) == "" {
			t.Errorf("auth_url has no %s: %s", k, u)
		}
	}
	if !strings.HasSuffix(u.Path, "/connect/authorize") {
		t.Errorf("auth_url path %q, want .../connect/authorize", u.Path)
	}
	if state == "" {
		t.Errorf("authorize/%s returned no state", name)
	}
	if exp, err := time.Parse(time.RFC3339, s.str("expires_at")); err != nil || time.Until(exp) < 9*time.Minute || time.Until(exp) > 11*time.Minute {
		t.Errorf("authorize/%s expires_at %q, want about 10 minutes from now (%v)", name, s.str("expires_at"), err)
	}
	return u, state
}

// redirectFromIdentity opens authURL at the identity server without following its
// redirect, and returns the Location it redirects to.
func redirectFromIdentity(t *testing.T, idp *identity, authURL *url.URL) *url.URL {
	t.Helper()
	b := idp.browser(t, false)
	resp, err := b.Get(authURL.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 3 {
		t.Fatalf("GET auth_url: status %d, want a redirect; body: %s", resp.StatusCode, body)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// htmlPage is what Vault's callback answered.
type htmlPage struct {
	status      int
	contentType string
	body        string
}

func getPage(t *testing.T, c *http.Client, u string) htmlPage {
	t.Helper()
	p, _ := getPageHeader(t, c, u)
	return p
}

// getPageHeader GETs u with c and returns the page and its response headers.
func getPageHeader(t *testing.T, c *http.Client, u string) (htmlPage, http.Header) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return htmlPage{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: string(body)}, resp.Header
}

// jwtClaims decodes (without verifying) the claims of a JWT.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWT: %d parts", len(parts))
	}
	raw, err := base64URLDecode(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func base64URLDecode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// exchangeFlow authorizes credential name with config (whose redirect_uri is an app
// of the operator's own): it opens auth_url at the identity server, takes code and
// state from the redirect and redeems them at exchange. It returns the code.
func exchangeFlow(t *testing.T, v *vault, idp *identity, name, config string) (code string) {
	t.Helper()
	authURL, state := v.authorize(t, name, config)
	loc := redirectFromIdentity(t, idp, authURL)
	code = loc.Query().Get("code")
	if loc.Query().Get("state") != state || code == "" {
		t.Fatalf("redirect %s: want state %s and a code", loc, state)
	}
	x := v.write(t, mount+"/exchange", "state="+state, "code="+code)
	if x.str("name") != name {
		t.Fatalf("exchange for %s returned %v", name, x.Data)
	}
	return code
}

// TestFlows_SupersededLink: a name has one live pending authorization. The account admin
// opens the first of two links made for hotel-ber: apaleo redirects to Vault's callback,
// which answers a 409 page saying a newer authorization replaced it, and the identity
// server counts no code exchange for it; the newest link connects the hotel. Deleting
// creds/hotel-ber ends a third link: its callback exchanges nothing either.
func TestFlows_SupersededLink(t *testing.T) {
	t.Parallel()
	v := startDevVault(t)
	v.enablePlugin(t)
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, "app")
	idp := startIdentity(t, "identity", time.Hour, "connect-app:"+secret+":BER:reservations.read:"+callback)
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})

	first, _ := v.authorize(t, "hotel-ber", "connect")
	second, _ := v.authorize(t, "hotel-ber", "connect")
	plain := &http.Client{Timeout: 30 * time.Second}
	before := idp.stats(t)
	firstCallback := redirectFromIdentity(t, idp, first)
	p := getPage(t, plain, firstCallback.String())
	if p.status != http.StatusConflict || !strings.Contains(p.body, "A newer link replaced this one") || !strings.Contains(p.body, "a newer authorization of &#34;hotel-ber&#34; replaced this one") {
		t.Errorf("the superseded link's callback: %d, want a 409 page saying a newer authorization replaced it:\n%s", p.status, p.body)
	}
	if got := idp.stats(t).ByGrant["authorization_code"]; got != before.ByGrant["authorization_code"] {
		t.Errorf("the superseded link's code was exchanged: %d exchanges", got-before.ByGrant["authorization_code"])
	}
	if r := v.run("read", mount+"/creds/hotel-ber"); r.Err == nil {
		t.Errorf("the superseded link stored creds/hotel-ber: %s", r.Stdout)
	}
	if p := getPage(t, plain, redirectFromIdentity(t, idp, second).String()); p.status != http.StatusOK || !strings.Contains(p.body, "hotel-ber") {
		t.Fatalf("the newest link's callback: %d\n%s", p.status, p.body)
	}
	if got := idp.stats(t).ByGrant["authorization_code"]; got != before.ByGrant["authorization_code"]+1 {
		t.Errorf("%d code exchanges for the newest link, want 1", got-before.ByGrant["authorization_code"])
	}

	third, _ := v.authorize(t, "hotel-ber", "connect")
	v.must(t, "delete", mount+"/creds/hotel-ber")
	mid := idp.stats(t)
	if p := getPage(t, plain, redirectFromIdentity(t, idp, third).String()); p.status < 400 || p.status >= 500 {
		t.Errorf("a link of a deleted credential: %d, want a 4xx page:\n%s", p.status, p.body)
	}
	if got := idp.stats(t).ByGrant["authorization_code"]; got != mid.ByGrant["authorization_code"] {
		t.Errorf("a link of a deleted credential exchanged its code")
	}
	if r := v.run("read", mount+"/creds/hotel-ber"); r.Err == nil {
		t.Errorf("a link of a deleted credential stored creds/hotel-ber: %s", r.Stdout)
	}
}
