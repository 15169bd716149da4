//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// idpSecrets mirrors the dev identity server's GET /_admin/secrets: every client
// secret, authorization code, PKCE verifier and refresh token it issued or received.
type idpSecrets struct {
	ClientSecrets      []string `json:"client_secrets"`
	AuthorizationCodes []string `json:"authorization_codes"`
	CodeVerifiers      []string `json:"code_verifiers"`
	RefreshTokens      []string `json:"refresh_tokens"`
	Truncated          bool     `json:"truncated"`
}

func (i *identity) secrets(t *testing.T) idpSecrets {
	t.Helper()
	var s idpSecrets
	i.admin(t, "secrets", &s)
	return s
}

// adminRevoke revokes every refresh token of clientID at the identity server, as an
// apaleo admin withdrawing the app's access would.
func (i *identity) adminRevoke(t *testing.T, clientID string) {
	t.Helper()
	resp, err := i.http.Post(i.URL+"/_admin/revoke?client_id="+url.QueryEscape(clientID), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("identity revoke %s: status %d", clientID, resp.StatusCode)
	}
}

// fetchPage GETs u with c and records Vault's answer (status, headers, body) in tr.
func fetchPage(t *testing.T, tr *transcript, c *http.Client, what, u string) htmlPage {
	t.Helper()
	p, h := getPageHeader(t, c, u)
	tr.add(what, fmt.Sprintf("%d %s\n%s", p.status, headerText(h), p.body))
	return p
}

// TestSecretScan runs the whole end-to-end flow on a Vault dev server with trace
// logging (the plugin's log lines go to the Vault server log) and a file audit device:
// client credentials, a wrong client secret, authorize + callback (and a replayed, an
// unknown and a refused callback), exchange (and a replayed one and a bogus code),
// refreshes, a revoked refresh token (invalid_grant), deletes with revocation; and the
// hardening cases: secret fields sent as a list (config and callback), a forged error
// callback, an identity server behind a proxy that echoes the client secret, a
// truncated answer to a code exchange, an authorization for another account than
// account_code (refused, its refresh token revoked). It
// records every response Vault gave, then asks the identity server for every client
// secret, refresh token, authorization code and PKCE verifier it issued or received, and
// scans the responses, the Vault server log, the audit log and the identity server's
// log for them: 0 hits. (Callback codes in the audit entries' request_uri are exempt
// and counted apart, see requestURIRe.)
func TestSecretScan(t *testing.T) {
	// Not parallel: it runs first, alone. Its 10 s tokens are refreshed ahead in the
	// background while it queues faults at one identity server, and on a machine busy
	// with the other tests a background refresh took the fault meant for a read.
	start := time.Now()
	tr := &transcript{}
	v := startDevVaultWith(t, "vault-trace", "trace", tr)
	secMuc, secApp, secExt := randomSecret(t, "muc"), randomSecret(t, "app"), randomSecret(t, "ext")
	callback := v.Addr + "/v1/" + mount + "/callback"
	const extRedirect = "https://app.example/cb"
	idp := startIdentity(t, "identity", shortTTL,
		"hotel-muc:"+secMuc+":MUC:account.read,reservations.read",
		"connect-app:"+secApp+":BER:reservations.read,account.read:"+callback,
		"connect-ext:"+secExt+":EXT:reservations.read:"+extRedirect)
	auditLog := v.dir + "/audit.log"
	v.enableFileAudit(t, auditLog)
	v.enablePlugin(t)

	var watch secretWatch
	var callbackCodes []string
	plain := &http.Client{Timeout: 30 * time.Second}

	// Client credentials: config, reads (CLI and API), list, a lease revoke, delete.
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: idp, scopes: "account.read reservations.read"})
	v.read(t, mount+"/config/hotel-muc")
	v.must(t, "read", mount+"/config/hotel-muc")
	s := v.read(t, mount+"/creds/hotel-muc")
	v.must(t, "read", mount+"/creds/hotel-muc")
	if status, body, err := v.api(http.MethodGet, mount+"/creds/hotel-muc", nil); err != nil || status != http.StatusOK {
		t.Fatalf("GET creds/hotel-muc: %d %s %v", status, body, err)
	}
	v.list(t, mount+"/creds/")
	v.list(t, mount+"/config/")
	v.must(t, "lease", "revoke", s.LeaseID)
	v.must(t, "delete", mount+"/creds/hotel-muc")
	v.read(t, mount+"/creds/hotel-muc")

	// A wrong client secret: invalid_client.
	wrong := randomSecret(t, "wrong")
	v.writeConfig(t, appConfig{name: "hotel-wrong", clientID: "hotel-muc", secret: wrong, idp: idp})
	if msg := v.mustFail(t, "read", mount+"/creds/hotel-wrong"); !strings.Contains(msg, "invalid_client") {
		t.Errorf("read with a wrong secret: %s", msg)
	}
	if status, _, _ := v.api(http.MethodGet, mount+"/creds/hotel-wrong", nil); status != http.StatusBadRequest {
		t.Errorf("GET creds/hotel-wrong: status %d, want 400", status)
	}
	v.must(t, "delete", mount+"/config/hotel-wrong")
	// Bad input is refused (and echoes nothing secret).
	v.mustFail(t, "write", mount+"/config/bad", "client_id=x", "client_secret="+wrong, "identity_url=http://identity.example.com")
	// A secret field that is not a string: 400 naming the field, never its value.
	notString := randomSecret(t, "notstring")
	if status, body, _ := v.api(http.MethodPost, mount+"/config/bad", map[string]any{"client_id": "x", "client_secret": []string{notString}}); status != http.StatusBadRequest || !strings.Contains(string(body), "client_secret must be a single string") {
		t.Errorf("client_secret as a list: %d %s", status, body)
	}
	// A proxy in front of the identity server echoes the request: the client secret, as
	// sent and inside the Basic header, is redacted from the error.
	basic := base64.StdEncoding.EncodeToString([]byte("hotel-muc:" + secMuc))
	v.writeConfig(t, appConfig{name: "hotel-echo", clientID: "hotel-muc", secret: secMuc, idp: idp, scopes: "account.read"})
	idp.injectFaults(t, map[string]any{"status": 400, "body": "<html>proxy echo: client_secret=" + secMuc + " Authorization: Basic " + basic + "</html>"})
	if msg := v.mustFail(t, "read", mount+"/creds/hotel-echo"); !strings.Contains(msg, "[redacted]") {
		t.Errorf("read through an echoing proxy: %s", msg)
	}
	v.must(t, "delete", mount+"/config/hotel-echo")

	// Exchange (the operator's own redirect URI), a replay and a bogus code.
	v.writeConfig(t, appConfig{name: "connect-ext", clientID: "connect-ext", secret: secExt, idp: idp,
		grant: "authorization_code", redirect: extRedirect, scopes: "reservations.read", minTTL: "5s"})
	authURL, state := v.authorize(t, "hotel-ext", "connect-ext")
	loc := redirectFromIdentity(t, idp, authURL)
	code := loc.Query().Get("code")
	v.write(t, mount+"/exchange", "state="+state, "code="+code)
	extIssued := time.Now()
	if msg := v.mustFail(t, "write", mount+"/exchange", "state="+state, "code="+code); !strings.Contains(msg, "Code: 4") {
		t.Errorf("replayed exchange: %s", msg)
	}
	_, state2 := v.authorize(t, "hotel-bogus", "connect-ext")
	bogus := "bogus-code-" + randomSecret(t, "code")
	if msg := v.mustFail(t, "write", mount+"/exchange", "state="+state2, "code="+bogus); !strings.Contains(msg, "Code: 4") {
		t.Errorf("exchange with a bogus code: %s", msg)
	}
	// An unreadable 2xx answer to a code exchange: not retried (the code is spent), 502.
	authURL, stateTrunc := v.authorize(t, "hotel-trunc", "connect-ext")
	codeTrunc := redirectFromIdentity(t, idp, authURL).Query().Get("code")
	requestsBefore := idp.stats(t).TokenRequests
	idp.injectFaults(t, map[string]any{"truncate": true})
	if msg := v.mustFail(t, "write", mount+"/exchange", "state="+stateTrunc, "code="+codeTrunc); !strings.Contains(msg, "Code: 502") || !strings.Contains(msg, "not retried") {
		t.Errorf("exchange answered with a truncated body: %s", msg)
	}
	if n := idp.stats(t).TokenRequests - requestsBefore; n != 1 {
		t.Errorf("the truncated exchange made %d token requests, want 1", n)
	}
	watch.add("an authorization code", codeTrunc)
	v.read(t, mount+"/creds/hotel-ext")
	// apaleo withdraws the app's refresh tokens: hotel-ext's next refresh is refused.
	idp.adminRevoke(t, "connect-ext")

	// Authorize + callback, a replayed, an unknown and a refused callback.
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: secApp, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read account.read", minTTL: "5s"})
	authURL, _ = v.authorize(t, "hotel-ber", "connect")
	b := idp.browser(t, true)
	page := fetchPage(t, tr, b.Client, "callback (browser)", authURL.String())
	var cb *url.URL
	for _, u := range b.visited {
		if strings.HasPrefix(u.String(), callback+"?") {
			cb = u
		}
	}
	if cb == nil || page.status != http.StatusOK {
		t.Fatalf("callback: visited %v, page %d %s", b.visited, page.status, page.body)
	}
	callbackCodes = append(callbackCodes, cb.Query().Get("code"))
	if p := fetchPage(t, tr, plain, "replayed callback", cb.String()); p.status/100 != 4 {
		t.Errorf("replayed callback: %d", p.status)
	}
	fetchPage(t, tr, plain, "callback with an unknown state", callback+"?state=no-such-state&code=not-a-code")
	_, deniedState := v.authorize(t, "hotel-denied", "connect")
	fetchPage(t, tr, plain, "refused callback", callback+"?"+url.Values{"error": {"access_denied"}, "state": {deniedState}}.Encode())
	// Two codes in one callback, and a forged error with text for the page.
	twoCodes := randomSecret(t, "twocodes")
	callbackCodes = append(callbackCodes, twoCodes) // in the audit log's request_uri, as every callback code
	if p := fetchPage(t, tr, plain, "callback with two codes", callback+"?"+url.Values{"state": {"x"}, "code": {twoCodes, "b"}}.Encode()); p.status != http.StatusBadRequest {
		t.Errorf("callback with two codes: %d", p.status)
	}
	if p := fetchPage(t, tr, plain, "forged error callback", callback+"?state=forged&error=access_denied&error_description=Call+evil.example+support+now"); strings.Contains(p.body, "evil.example") {
		t.Errorf("forged error callback shows its text: %s", p.body)
	}
	// An authorization for another account than account_code: refused, its refresh token revoked.
	revocationsBefore := idp.stats(t).Revocations
	authURL, _ = v.authorize(t, "hotel-other", "connect", "account_code=ZZZ")
	other := idp.browser(t, true)
	if p := fetchPage(t, tr, other.Client, "callback for another account", authURL.String()); p.status != http.StatusConflict || !strings.Contains(p.body, "account ZZZ") {
		t.Errorf("callback for another account: %d %s", p.status, p.body)
	}
	for _, u := range other.visited {
		if strings.HasPrefix(u.String(), callback+"?") {
			callbackCodes = append(callbackCodes, u.Query().Get("code"))
		}
	}
	if n := idp.stats(t).Revocations - revocationsBefore; n != 1 {
		t.Errorf("the refused authorization made %d revocations, want 1", n)
	}

	// Refreshes: two rotations of hotel-ber's refresh token.
	tok := v.read(t, mount+"/creds/hotel-ber").str("access_token")
	for range 2 {
		tok = waitNewToken(t, v, "hotel-ber", tok, shortTTL+10*time.Second)
	}
	if st := idp.stats(t); st.ByGrant["refresh_token"] < 2 {
		t.Errorf("identity stats %+v, want 2 refreshes", st)
	}

	// The revoked refresh token: invalid_grant, telling to authorize again (once the
	// cached token is due, min_ttl 5s of 10s, so no longer served instead).
	time.Sleep(time.Until(extIssued.Add(shortTTL/2 + time.Second)))
	if msg := v.mustFail(t, "read", mount+"/creds/hotel-ext"); !strings.Contains(msg, "invalid_grant") || !strings.Contains(msg, "authorize/hotel-ext") {
		t.Errorf("read of a revoked credential: %s", msg)
	}
	if status, _, _ := v.api(http.MethodGet, mount+"/creds/hotel-ext", nil); status != http.StatusBadRequest {
		t.Errorf("GET creds/hotel-ext: status %d, want 400", status)
	}

	// Deletes: refresh tokens revoked at the identity server.
	before := idp.stats(t)
	for _, name := range []string{"hotel-ber", "hotel-ext"} {
		v.run("delete", mount+"/creds/"+name)
	}
	if st := idp.stats(t); st.Revocations < before.Revocations+1 {
		t.Errorf("deletes made %d revocations, want 1 or more", st.Revocations-before.Revocations)
	}
	if status, _, _ := v.api(http.MethodDelete, mount+"/creds/hotel-muc", nil); status/100 != 2 {
		t.Errorf("DELETE creds/hotel-muc: %d", status)
	}
	for _, name := range []string{"connect", "connect-ext", "hotel-muc"} {
		v.must(t, "delete", mount+"/config/"+name)
	}
	flowTime := time.Since(start)

	// Every secret the identity server saw, and those only the test knows.
	sec := idp.secrets(t)
	if sec.Truncated {
		t.Error("the identity server's secret list is truncated")
	}
	for _, x := range sec.ClientSecrets {
		watch.add("a client secret", x)
	}
	for _, x := range sec.AuthorizationCodes {
		watch.add("an authorization code", x)
	}
	for _, x := range sec.CodeVerifiers {
		watch.add("a PKCE code verifier", x)
	}
	for _, x := range sec.RefreshTokens {
		watch.add("a refresh token", x)
	}
	for _, x := range []string{secMuc, secApp, secExt, wrong, notString} {
		watch.add("a client secret", x)
	}
	watch.add("a client secret inside a Basic header", basic)
	watch.add("an authorization code", code)
	watch.add("an authorization code", bogus)
	for _, c := range callbackCodes {
		watch.addCallbackCode("an authorization code redirected to the callback", c)
	}
	for what, n := range map[string][2]int{
		"client secrets":      {len(sec.ClientSecrets), 4}, // 3 registered + the wrong one
		"authorization codes": {len(sec.AuthorizationCodes), 3},
		"PKCE verifiers":      {len(sec.CodeVerifiers), 2},
		"refresh tokens":      {len(sec.RefreshTokens), 4}, // hotel-ext's, hotel-ber's and 2 rotations
	} {
		if n[0] < n[1] {
			t.Errorf("the identity server saw %d %s, want %d or more: the flow did not run as planned", n[0], what, n[1])
		}
	}

	audit, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"creds/hotel-muc", "creds/hotel-ber", "callback", "exchange", "config/hotel-muc", "authorize/hotel-ber"} {
		if !strings.Contains(string(audit), `"path":"`+mount+"/"+p+`"`) {
			t.Errorf("the audit log has no request to %s/%s", mount, p)
		}
	}
	logData, err := os.ReadFile(v.log)
	if err != nil {
		t.Fatal(err)
	}
	tracePlugin := 0
	for _, l := range strings.Split(string(logData), "\n") {
		if strings.Contains(l, "[TRACE]") && strings.Contains(l, "secrets."+pluginName) {
			tracePlugin++
		}
	}
	if !strings.Contains(string(logData), "secrets."+pluginName) {
		t.Error("the Vault log has no line of the plugin")
	}

	entries := tr.all()
	// Controls: the scan finds what is there (the last access token of hotel-ber in the
	// responses, and callback codes in the audit log's request_uri below).
	var control secretWatch
	control.add("hotel-ber's access token", tok)
	if len(control.scan(t, entries)) == 0 {
		t.Error("control: the scan did not find an access token in the responses")
	}
	hits := watch.scan(t, entries, v.log, auditLog, idp.Log)
	exempt := 0
	for _, h := range hits {
		if h.exempt {
			exempt++
			continue
		}
		t.Error(h)
	}
	switch {
	case server.flavour == flavourOpenBao:
		// OpenBao's audit entries have no request_uri (its format predates Vault's), so
		// no callback code is there to find: the control is that none is.
		if bytes.Contains(audit, []byte(`"request_uri"`)) {
			t.Error("OpenBao's audit log has a request_uri field: make the control below apply to it")
		}
	case exempt == 0:
		t.Error("control: the scan found no callback code in the audit log's request_uri")
	}
	var respBytes int
	for _, e := range entries {
		respBytes += len(e.text)
	}
	t.Logf("watched %d values: %d client secrets, %d authorization codes, %d PKCE verifiers, %d refresh tokens",
		len(watch.values), len(sec.ClientSecrets), len(sec.AuthorizationCodes), len(sec.CodeVerifiers), len(sec.RefreshTokens))
	t.Logf("scanned %d responses (%d bytes), the Vault log (%d bytes, %d TRACE lines of the plugin), the audit log (%d bytes), the identity log (%d bytes)",
		len(entries), respBytes, len(logData), tracePlugin, len(audit), fileSize(idp.Log))
	t.Logf("secret hits: %d; callback codes in audit request_uri (exempt, Vault logs the raw URI): %d", len(hits)-exempt, exempt)
	t.Logf("TestSecretScan took %s (flow %s)", time.Since(start).Round(100*time.Millisecond), flowTime.Round(100*time.Millisecond))
}
