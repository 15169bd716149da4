//go:build e2e

package e2e

import (
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestPersistence runs one Vault node with integrated storage (raft): configs, authorized
// credentials and cached tokens survive a plugin reload and a Vault restart.
func TestPersistence(t *testing.T) {
	t.Parallel()
	var watch secretWatch
	secMuc, secApp, secFra := randomSecret(t, "muc"), randomSecret(t, "app"), randomSecret(t, "fra")
	watch.add("client secret of hotel-muc", secMuc)
	watch.add("client secret of connect-app", secApp)
	watch.add("client secret of connect-fra", secFra)
	const redirect = "https://app.example/cb"
	long := startIdentity(t, "identity-long", time.Hour,
		"hotel-muc:"+secMuc+":MUC:account.read",
		"connect-app:"+secApp+":BER:reservations.read:"+redirect)
	short := startIdentity(t, "identity-short", shortTTL,
		"connect-fra:"+secFra+":FRA:reservations.read:"+redirect)
	v := startRaftVault(t)
	v.enablePlugin(t)
	auditLog := filepath.Join(v.dir, "audit.log")
	v.enableFileAudit(t, auditLog)

	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: long, scopes: "account.read"})
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: secApp, idp: long,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read"})
	v.writeConfig(t, appConfig{name: "connect-fra", clientID: "connect-fra", secret: secFra, idp: short,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read", minTTL: "5s"})
	watch.add("the authorization code of hotel-ber", exchangeFlow(t, v, long, "hotel-ber", "connect"))
	watch.add("the authorization code of hotel-fra", exchangeFlow(t, v, short, "hotel-fra", "connect-fra"))

	tokens := map[string]string{}
	for _, name := range []string{"hotel-muc", "hotel-ber", "hotel-fra"} {
		tokens[name] = v.read(t, mount+"/creds/"+name).str("access_token")
	}
	shortBase := short.stats(t)

	// check reads everything back; with refreshes > 0 it also waits for hotel-fra's
	// refresh, the refreshes-th one since the start.
	check := func(t *testing.T, refreshes int) {
		if got, want := v.list(t, mount+"/config/"), []string{"connect", "connect-fra", "hotel-muc"}; !slices.Equal(got, want) {
			t.Errorf("config/ list = %q, want %q", got, want)
		}
		if got, want := v.list(t, mount+"/creds/"), []string{"hotel-ber", "hotel-fra", "hotel-muc"}; !slices.Equal(got, want) {
			t.Errorf("creds/ list = %q, want %q", got, want)
		}
		if c := v.read(t, mount+"/config/connect"); c.str("client_id") != "connect-app" || c.str("redirect_uri") != redirect || c.str("grant_type") != "authorization_code" {
			t.Errorf("config/connect = %v", c.Data)
		}
		// Cached tokens: no request to the identity server.
		before := long.stats(t)
		for _, name := range []string{"hotel-muc", "hotel-ber"} {
			if got := v.read(t, mount+"/creds/"+name).str("access_token"); got != tokens[name] {
				t.Errorf("creds/%s returned a new access token, want the cached one", name)
			}
		}
		if after := long.stats(t); after.TokenRequests != before.TokenRequests {
			t.Errorf("reading cached tokens made %d token requests", after.TokenRequests-before.TokenRequests)
		}
		if refreshes == 0 {
			return
		}
		// The stored refresh token still works, and its rotation is stored.
		tokens["hotel-fra"] = waitNewToken(t, v, "hotel-fra", tokens["hotel-fra"], shortTTL+10*time.Second)
		got := short.stats(t)
		if n := got.ByGrant["refresh_token"] - shortBase.ByGrant["refresh_token"]; n != refreshes {
			t.Errorf("%d refresh_token requests so far, want %d", n, refreshes)
		}
		if n := got.Errors["invalid_grant"]; n != 0 {
			t.Errorf("%d invalid_grant errors at the identity server", n)
		}
	}

	if !t.Run("plugin_reload", func(t *testing.T) {
		v.reloadPlugin(t)
		check(t, 1)
		// `vault plugin reload -mounts` of Vault 1.21.1 sends no mounts in the root
		// namespace (it asks for /sys/plugins/reload/unknown): use the API.
		v.must(t, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
		check(t, 0)
	}) {
		t.FailNow()
	}
	t.Run("vault_restart", func(t *testing.T) {
		v.restart(t)
		check(t, 2)
	})
	t.Run("no_secrets_in_logs", func(t *testing.T) {
		watch.check(t, v.log, auditLog)
	})
}
