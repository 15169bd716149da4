//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hardening_test.go: the hardening issue's points where Vault's own behaviour is
// involved: what Vault does with request data before the plugin sees it (point 1), the
// callback page served from Vault's origin (point 8), and leases (point 9).

// injectFaults queues faults at the dev identity server's token endpoint (its JSON form,
// see internal/devidp Fault).
func (i *identity) injectFaults(t *testing.T, faults ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(faults)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := i.http.Post(i.URL+"/_admin/faults", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("identity faults: status %d", resp.StatusCode)
	}
}

// TestHardeningNonStringSecrets (point 1, and point 8's callback text): through a real
// Vault and the plugin's gRPC server, a secret field sent as a JSON array or object, or
// as a repeated query parameter, gets a 400 naming the field, and its value appears in
// no response and no line of Vault's server log (trace level). Before the fix, Vault
// answered `error converting input for field "client_secret": ... value: '[...]'` and
// logged the existence check's error with the value.
func TestHardeningNonStringSecrets(t *testing.T) {
	t.Parallel()
	tr := &transcript{}
	v := startDevVaultWith(t, "vault-hardening", "trace", tr)
	const redirect = "https://app.example/cb"
	secApp := randomSecret(t, "app")
	idp := startIdentity(t, "identity", time.Hour, "connect-ext:"+secApp+":EXT:reservations.read:"+redirect)
	v.enablePlugin(t)
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-ext", secret: secApp, idp: idp,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read"})
	authURL, state := v.authorize(t, "hotel-ext", "connect")

	var watch secretWatch
	secret := func(label string) string {
		s := randomSecret(t, label)
		watch.add("a value sent in a secret field", s)
		return s
	}
	plain := &http.Client{Timeout: 30 * time.Second}
	callback := v.Addr + "/v1/" + mount + "/callback"

	cases := []struct {
		what   string
		do     func() (int, string)
		fields string
	}{
		{"create config/x with client_secret as a list", func() (int, string) {
			status, body, _ := v.api(http.MethodPost, mount+"/config/x", map[string]any{"client_id": "x", "client_secret": []string{secret("list")}})
			return status, string(body)
		}, "client_secret"},
		{"update config/connect with client_secret as an object", func() (int, string) {
			status, body, _ := v.api(http.MethodPut, mount+"/config/connect", map[string]any{"client_secret": map[string]string{"v": secret("object")}})
			return status, string(body)
		}, "client_secret"},
		{"exchange with code as a list", func() (int, string) {
			status, body, _ := v.api(http.MethodPost, mount+"/exchange", map[string]any{"state": state, "code": []string{secret("code")}})
			return status, string(body)
		}, "code"},
		{"exchange with state as an object", func() (int, string) {
			status, body, _ := v.api(http.MethodPost, mount+"/exchange", map[string]any{"state": map[string]string{"s": secret("state")}, "code": "x"})
			return status, string(body)
		}, "state"},
		{"callback?code=a&code=b", func() (int, string) {
			p := fetchPage(t, tr, plain, "callback with two codes", callback+"?"+url.Values{"state": {state}, "code": {secret("code-a"), secret("code-b")}}.Encode())
			return p.status, p.body
		}, "code"},
		{"callback?state=a&state=b", func() (int, string) {
			p := fetchPage(t, tr, plain, "callback with two states", callback+"?"+url.Values{"state": {secret("state-a"), secret("state-b")}, "code": {"x"}}.Encode())
			return p.status, p.body
		}, "state"},
	}
	for _, c := range cases {
		status, body := c.do()
		if status != http.StatusBadRequest || !strings.Contains(body, c.fields+" must be a single string") {
			t.Errorf("%s: %d %s", c.what, status, body)
		}
		if strings.Contains(body, "error converting") {
			t.Errorf("%s: the SDK's conversion error came through: %s", c.what, body)
		}
	}
	// Nothing changed: config/connect still works, the state is still redeemable.
	loc := redirectFromIdentity(t, idp, authURL)
	x := v.write(t, mount+"/exchange", "state="+state, "code="+loc.Query().Get("code"))
	if x.str("name") != "hotel-ext" {
		t.Errorf("exchange after the refused requests: %v", x.Data)
	}

	// Point 8: text in the query of a callback that matches no authorization is not shown.
	forged := fetchPage(t, tr, plain, "forged error callback", callback+"?state=forged&error=access_denied&error_description=Call+evil.example+support+now")
	if forged.status != http.StatusBadRequest || strings.Contains(forged.body, "evil.example") || !strings.Contains(forged.contentType, "text/html") {
		t.Errorf("forged error callback: %d %s", forged.status, forged.body)
	}
	// Echoed fields are bounded: a 100 KiB config name is not sent back.
	status, body, _ := v.api(http.MethodPost, mount+"/authorize/hotel-x", map[string]any{"config": strings.Repeat("x", 100<<10)})
	if status != http.StatusBadRequest || len(body) > 1000 {
		t.Errorf("authorize with a 100 KiB config: %d, %d bytes", status, len(body))
	}

	logData, err := os.ReadFile(v.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logData), "secrets."+pluginName) {
		t.Error("the Vault log has no line of the plugin: the scan would prove nothing")
	}
	if strings.Contains(string(logData), "evil.example") {
		t.Error("the forged callback text reached Vault's log")
	}
	for _, h := range watch.scan(t, tr.all(), v.log) {
		t.Error(h)
	}
	t.Logf("%d refused requests; %d values watched in %d responses and the Vault log (%d bytes): no hits",
		len(cases), len(watch.values), len(tr.all()), len(logData))
}

// TestHardeningLeasePileUp (point 9): every read of creds/<name> is a Vault lease that
// lives as long as the token (an hour at apaleo). Four readers on one credential for a
// bounded time leave one lease per read alive, and Vault's memory grows with them:
// services must read through Vault Agent or cache the token, not read per request.
// E2E_LEASE_SECONDS sets the time (default 15).
func TestHardeningLeasePileUp(t *testing.T) {
	t.Parallel()
	seconds := 15
	if s, err := strconv.Atoi(os.Getenv("E2E_LEASE_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	v := startDevVaultWith(t, "vault-leases", "info", nil)
	secMuc := randomSecret(t, "muc")
	idp := startIdentity(t, "identity", time.Hour, "hotel-muc:"+secMuc+":MUC:account.read")
	v.enablePlugin(t)
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: idp, scopes: "account.read"})
	v.read(t, mount+"/creds/hotel-muc")
	time.Sleep(2 * time.Second) // let Vault settle after mounting and the first read
	rssBefore := rssMiB(t, v.proc.cmd.Process.Pid)
	leasesBefore := countLeases(t, v)

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var reads, failures atomic.Int64
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequest(http.MethodGet, v.Addr+"/v1/"+mount+"/creds/hotel-muc", nil)
				req.Header.Set("X-Vault-Token", v.Token)
				resp, err := client.Do(req)
				if err != nil {
					failures.Add(1)
					continue
				}
				var s struct {
					LeaseID string `json:"lease_id"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&s)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && s.LeaseID != "" {
					reads.Add(1)
				} else {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	leases := countLeases(t, v) - leasesBefore
	rssAfter := rssMiB(t, v.proc.cmd.Process.Pid)
	tokenRequests := idp.stats(t).TokenRequests

	t.Logf("lease figures | %d s, 4 readers | %d reads (%.0f/s), %d failed | %d leases alive afterwards, each for the token's remaining hour | Vault RSS %.0f MiB -> %.0f MiB | %d token request(s) at the identity server",
		seconds, reads.Load(), float64(reads.Load())/float64(seconds), failures.Load(), leases, rssBefore, rssAfter, tokenRequests)
	if failures.Load() > 0 {
		t.Errorf("%d reads failed", failures.Load())
	}
	// Every read left its lease: none expires before the token does.
	if reads.Load() < 200 || int64(leases) < reads.Load()*9/10 {
		t.Errorf("%d reads left %d leases; want at least 200 reads and a lease alive for (nearly) each", reads.Load(), leases)
	}
	// The cache held: all those reads cost one token request (the first read's).
	if tokenRequests != 1 {
		t.Errorf("%d token requests, want 1", tokenRequests)
	}
}

// countLeases counts the leases alive under creds/hotel-muc.
func countLeases(t *testing.T, v *vault) int { return countLeasesOf(t, v, "hotel-muc") }

// rssMiB is the resident set size of a process (Linux /proc), or -1 where unknown.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

func excerpt(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// TestHardeningTokenAnswerChecked: the dev identity server handles a refresh (so it
// rotates the refresh token) and answers token_type "mac", then expires_in 0: each read
// answers 502 naming the field, the rotated refresh token is kept, and the spent one never
// goes again (the server's own count of the most sends of one refresh token stays 1). An
// expires_in of 9300000000 is cached as 24 h.
func TestHardeningTokenAnswerChecked(t *testing.T) {
	t.Parallel()
	v := startDevVaultWith(t, "vault-answers", "debug", nil)
	const redirect = "https://app.example/cb"
	sec := randomSecret(t, "app")
	// Tokens of 3 s are never fresh (min_ttl's floor is 5 s): every read refreshes.
	idp := startIdentity(t, "identity", 3*time.Second, "connect-ans:"+sec+":BER:reservations.read:"+redirect)
	v.enablePlugin(t)
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-ans", secret: sec, idp: idp,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read"})
	v.must(t, "write", mount+"/config/connect", "refresh_ahead=false", "idle_refresh_interval=0")
	exchangeFlow(t, v, idp, "hotel-ber", "connect")

	for _, c := range []struct{ set, field string }{
		{`{"token_type":"mac"}`, "token_type"},
		{`{"expires_in":0}`, "expires_in 0"},
	} {
		idp.injectFault(t, `{"set":`+c.set+`}`)
		status, body, err := v.api(http.MethodGet, mount+"/creds/hotel-ber", nil)
		if err != nil || status != http.StatusBadGateway || !strings.Contains(string(body), c.field) {
			t.Errorf("answer %s: %d %v %s; want 502 naming %s", c.set, status, err, body, c.field)
		}
		time.Sleep(backoffWait) // failure memory's first backoff
		if s := v.read(t, mount+"/creds/hotel-ber"); s.str("access_token") == "" {
			t.Fatalf("read after the refused answer %s: %v", c.set, s.Data)
		}
	}
	if st := idp.stats(t); st.RefreshTokenMostSent != 1 || st.Errors["invalid_grant"] != 0 {
		t.Errorf("a refresh token was sent %d times (%d invalid_grant): the rotated one of a refused answer was not kept",
			st.RefreshTokenMostSent, st.Errors["invalid_grant"])
	}

	idp.injectFault(t, `{"set":{"expires_in":9300000000}}`)
	s := v.read(t, mount+"/creds/hotel-ber")
	exp, err := time.Parse(time.RFC3339, s.str("expires_at"))
	if err != nil || time.Until(exp) > 24*time.Hour || time.Until(exp) < 23*time.Hour {
		t.Errorf("expires_in 9300000000: expires_at %q, want 24 h from now", s.str("expires_at"))
	}
}

// backoffWait outlasts failure memory's first backoff (5 s, plus up to a quarter of jitter).
const backoffWait = 6500 * time.Millisecond
