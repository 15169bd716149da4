//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUpgrade upgrades the mounted plugin in place on a one-node Raft Vault, as an
// operator would: v0.1.0 registered and enabled, configs written, a client-credentials
// token cached and a connect credential authorized; then v0.2.0 registered, the mount
// tuned to it and reloaded. The cached token must be answered with no token request and
// the authorized credential must refresh, after the upgrade, after a Vault restart, and
// after a downgrade back to v0.1.0, which reads what v0.2.0 wrote.
func TestUpgrade(t *testing.T) {
	secMuc, secFra := randomSecret(t, "muc"), randomSecret(t, "fra")
	const redirect = "https://app.example/cb"
	long := startIdentity(t, "identity-long", time.Hour, "hotel-muc:"+secMuc+":MUC:account.read")
	short := startIdentity(t, "identity-short", shortTTL,
		"connect-fra:"+secFra+":FRA:reservations.read:"+redirect)
	v := startRaftVault(t)

	// Two builds of this tree that report different versions, side by side in the plugin
	// directory (the catalog keeps one command per version).
	versions := []string{"v0.1.0", "v0.2.0"}
	cmds := buildPluginVersions(t, v.pluginDir, versions...)
	register := func(t *testing.T, version string) {
		v.must(t, "plugin", "register", "-sha256="+sha256File(t, filepath.Join(v.pluginDir, cmds[version])),
			"-version="+version, "-command="+cmds[version], "secret", pluginName)
	}
	register(t, "v0.1.0")
	v.must(t, "secrets", "enable", "-path="+mount, "-plugin-version=v0.1.0", pluginName)
	checkRunning(t, v, "v0.1.0", cmds)

	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: long, scopes: "account.read"})
	v.writeConfig(t, appConfig{name: "connect-fra", clientID: "connect-fra", secret: secFra, idp: short,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read", minTTL: "5s"})
	exchangeFlow(t, v, short, "hotel-fra", "connect-fra")
	cached := v.read(t, mount+"/creds/hotel-muc").str("access_token")
	fra := v.read(t, mount+"/creds/hotel-fra").str("access_token")
	if cached == "" || fra == "" {
		t.Fatal("no access tokens before the upgrade")
	}
	refreshes := short.stats(t).ByGrant["refresh_token"]

	// check: the cached client-credentials token is answered without a token request,
	// the configs read back, and hotel-fra's stored refresh token still works.
	check := func(t *testing.T, version string) {
		t.Helper()
		checkRunning(t, v, version, cmds)
		before := long.stats(t).TokenRequests
		if got := v.read(t, mount+"/creds/hotel-muc").str("access_token"); got != cached {
			t.Errorf("%s: creds/hotel-muc answered a new access token, want the cached one", version)
		}
		if n := long.stats(t).TokenRequests - before; n != 0 {
			t.Errorf("%s: reading the cached token made %d token requests, want 0", version, n)
		}
		if c := v.read(t, mount+"/config/connect-fra"); c.str("grant_type") != "authorization_code" || c.str("redirect_uri") != redirect {
			t.Errorf("%s: config/connect-fra = %v", version, c.Data)
		}
		fra = waitNewToken(t, v, "hotel-fra", fra, shortTTL+15*time.Second)
		st := short.stats(t)
		if st.ByGrant["refresh_token"] <= refreshes {
			t.Errorf("%s: hotel-fra got a new token without a refresh_token request", version)
		}
		refreshes = st.ByGrant["refresh_token"]
		if n := st.Errors["invalid_grant"]; n != 0 {
			t.Errorf("%s: %d invalid_grant errors at the identity server: a refresh token was lost or reused", version, n)
		}
	}

	if !t.Run("upgrade", func(t *testing.T) {
		register(t, "v0.2.0")
		v.must(t, "secrets", "tune", "-plugin-version=v0.2.0", mount+"/")
		// `vault plugin reload -mounts` of Vault 1.21.1 sends no mounts in the root
		// namespace: the API does (see TestPersistence).
		v.must(t, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
		check(t, "v0.2.0")
		// Something only v0.2.0 wrote, for the downgrade to read.
		v.writeConfig(t, appConfig{name: "hotel-ham", clientID: "hotel-muc", secret: secMuc, idp: long, scopes: "account.read", minTTL: "20m"})
	}) {
		t.FailNow()
	}
	if !t.Run("vault_restart", func(t *testing.T) {
		v.restart(t)
		check(t, "v0.2.0")
	}) {
		t.FailNow()
	}
	t.Run("downgrade", func(t *testing.T) {
		v.must(t, "secrets", "tune", "-plugin-version=v0.1.0", mount+"/")
		v.must(t, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
		check(t, "v0.1.0")
		if c := v.read(t, mount+"/config/hotel-ham"); c.str("client_id") != "hotel-muc" || fmt.Sprint(c.Data["min_ttl"]) != "1200" {
			t.Errorf("v0.1.0 reads config/hotel-ham that v0.2.0 wrote as %v", c.Data)
		}
	})
	t.Logf("token requests for the cached client-credentials token: %d in all (the first read under v0.1.0)", long.stats(t).TokenRequests)
}

// buildPluginVersions builds the plugin from this tree once per version, each reporting
// its version, into dir as vault-plugin-secrets-apaleo_<version>; it returns the file
// names by version.
func buildPluginVersions(t *testing.T, dir string, versions ...string) map[string]string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	errs := make([]error, len(versions))
	var wg sync.WaitGroup
	for i, version := range versions {
		name := pluginName + "_" + strings.TrimPrefix(version, "v")
		names[version] = name
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X "+module+".Version="+version,
				"-o", filepath.Join(dir, name), "./cmd/"+pluginName)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", version, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// checkRunning checks with `vault secrets list -detailed` that the mount runs version,
// from that version's binary.
func checkRunning(t *testing.T, v *vault, version string, cmds map[string]string) {
	t.Helper()
	var mounts map[string]struct {
		Type                 string `json:"type"`
		PluginVersion        string `json:"plugin_version"`
		RunningPluginVersion string `json:"running_plugin_version"`
		RunningSha256        string `json:"running_sha256"`
	}
	v.jsonOut(t, &mounts, "secrets", "list", "-detailed", "-format=json")
	m, ok := mounts[mount+"/"]
	if !ok {
		t.Fatalf("vault secrets list has no %s/", mount)
	}
	wantSum := sha256File(t, filepath.Join(v.pluginDir, cmds[version]))
	if m.Type != pluginName || m.PluginVersion != version || m.RunningPluginVersion != version || m.RunningSha256 != wantSum {
		t.Errorf("vault secrets list -detailed: %s/ is %+v, want %s running %s (sha256 %s)", mount, m, pluginName, version, wantSum)
	}
}
