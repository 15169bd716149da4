//go:build e2e

package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// binding_test.go: a refresh token goes only to the app that issued it, through a real
// Vault and two dev identity servers. A config writer repoints identity_url (with a
// client_secret of their own, as the write must carry) at a second server: the reads,
// the keep-alive (due every 2 s) and the delete of the credential send it nothing,
// counted at that server (its stats and its own request log), and writing the config
// back revives the credential.

// connectRequests counts the /connect/ requests an identity server's own log recorded.
func (i *identity) connectRequests(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(i.Log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), " /connect/")
}

func TestBindingRepointedConfig(t *testing.T) {
	t.Parallel()
	v := startDevVaultWith(t, "vault-binding", "debug", nil)
	const redirect = "https://app.example/cb"
	const client = "connect-bind"
	secApp, secEvil := randomSecret(t, "app"), randomSecret(t, "evil")
	idp := startIdentity(t, "identity", time.Hour, client+":"+secApp+":BER:reservations.read:"+redirect)
	evil := startIdentity(t, "identity-evil", time.Hour, client+":"+secEvil+":EVIL:reservations.read:"+redirect)
	v.enablePlugin(t)
	for _, name := range []string{"connect", "control"} {
		v.writeConfig(t, appConfig{name: name, clientID: client, secret: secApp, idp: idp,
			grant: "authorization_code", redirect: redirect, scopes: "reservations.read"})
		v.must(t, "write", mount+"/config/"+name, "idle_refresh_interval=2s")
	}
	exchangeFlow(t, v, idp, "hotel-ber", "connect")
	exchangeFlow(t, v, idp, "hotel-ctl", "control") // the same app, never repointed
	if s := v.read(t, mount+"/creds/hotel-ber"); s.str("access_token") == "" {
		t.Fatalf("read before repointing: %v", s.Data)
	}

	// The config writer repoints config/connect at their own server.
	v.must(t, "write", mount+"/config/connect", "identity_url="+evil.URL, "ca_certificate=@"+evil.CAFile, "client_secret="+secEvil)
	before := idp.stats(t)
	for range 3 {
		status, body, err := v.api(http.MethodGet, mount+"/creds/hotel-ber", nil)
		if err != nil || status != http.StatusBadRequest || !strings.Contains(string(body), idp.URL) || !strings.Contains(string(body), evil.URL) {
			t.Fatalf("read while repointed: %d %v %s; want 400 naming both servers", status, err, body)
		}
		if strings.Contains(string(body), secEvil) || strings.Contains(string(body), secApp) {
			t.Fatal("a client secret shows in the read error")
		}
	}
	info := v.listDetailed(t)["hotel-ber"]
	if info["state"] != "needs_authorization" || !strings.Contains(info["last_error"].(string), evil.URL) {
		t.Errorf("list while repointed: %v", info)
	}
	// Keep-alive is due every 2 s: the control credential refreshes meanwhile, hotel-ber
	// must not.
	time.Sleep(7 * time.Second)
	after := idp.stats(t)
	if n := after.ByGrant["refresh_token"] - before.ByGrant["refresh_token"]; n < 2 {
		t.Errorf("the control credential's keep-alive refreshed %d times in 7 s: the window proves nothing", n)
	}
	es := evil.stats(t)
	if es.TokenRequests != 0 || evil.connectRequests(t) != 0 {
		t.Fatalf("the attacker's server received %d token requests (%d /connect/ requests in its log)", es.TokenRequests, evil.connectRequests(t))
	}

	// Written back, the credential reads again, at its own server.
	v.must(t, "write", mount+"/config/connect", "identity_url="+idp.URL, "ca_certificate=@"+idp.CAFile, "client_secret="+secApp)
	refreshes := idp.stats(t).ByClient[client]
	if s := v.read(t, mount+"/creds/hotel-ber"); s.str("access_token") == "" {
		t.Fatalf("read after writing the config back: %v", s.Data)
	}
	if idp.stats(t).ByClient[client] <= refreshes {
		t.Error("the read after writing back sent no token request to the app's server")
	}

	// Repointed again, delete: deleted in Vault, the token sent nowhere.
	v.must(t, "write", mount+"/config/connect", "identity_url="+evil.URL, "ca_certificate=@"+evil.CAFile, "client_secret="+secEvil)
	revokedBefore := idp.stats(t).Revocations
	status, body, err := v.api(http.MethodDelete, mount+"/creds/hotel-ber", nil)
	var resp struct {
		Warnings []string `json:"warnings"`
	}
	_ = json.Unmarshal(body, &resp)
	if err != nil || status/100 != 2 || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "not revoked") {
		t.Errorf("delete while repointed: %d %v %s; want a warning that the token was not revoked", status, err, body)
	}
	if status, _, _ := v.api(http.MethodGet, mount+"/creds/hotel-ber", nil); status != http.StatusNotFound {
		t.Errorf("read after delete: %d, want 404", status)
	}
	es = evil.stats(t)
	if es.TokenRequests != 0 || es.Revocations != 0 || evil.connectRequests(t) != 0 {
		t.Errorf("the attacker's server received %d token requests, %d revocations, %d /connect/ requests in all",
			es.TokenRequests, es.Revocations, evil.connectRequests(t))
	}
	if n := idp.stats(t).Revocations - revokedBefore; n != 0 {
		t.Errorf("the delete revoked %d tokens at the app's server with another app's config", n)
	}
	t.Logf("attacker's server: 0 token requests, 0 revocations, 0 /connect/ requests; control keep-alives in 7 s: %d",
		after.ByGrant["refresh_token"]-before.ByGrant["refresh_token"])
}
