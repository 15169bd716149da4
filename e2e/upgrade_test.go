//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// currentVersion is what this tree reports in the upgrade tests: a pre-release of the
// next version, so the catalog holds it beside the released ones (RELEASES, releases).
const currentVersion = "v0.3.0-dev"

// TestUpgrade upgrades the mounted plugin in place on a one-node Raft Vault, as an
// operator would, from each release built from the project's history (RELEASES records
// each release's commit; scripts/build-released builds it with that commit's own
// Makefile) to the next release, and from the last release to this tree; each step
// restarts Vault and downgrades back.
//
// What each step proves, against the identity servers' own counts:
//   - tokens kept: hotel-muc (client credentials) and hotel-ber (authorized), both on
//     1-hour tokens, answer the access token cached before the upgrade in every phase,
//     and the upgrade, restart and downgrade cause 0 token requests;
//   - the config the older version wrote reads back with the fields added since at their
//     defaults;
//   - hotel-fra (authorized, 10 s tokens) refreshes on each side, and each side's rotated
//     refresh token is accepted when the other version sends it (0 invalid_grant).
func TestUpgrade(t *testing.T) {
	t.Parallel()
	rels := releases(t)
	for i, from := range rels {
		to, toBin := currentVersion, func(t *testing.T) string { return buildCurrent(t, currentVersion) }
		if i+1 < len(rels) {
			next := rels[i+1]
			to, toBin = next, func(t *testing.T) string { return buildReleased(t, next) }
		}
		// One step after the other: two steps build the release between them, in one
		// directory of build/released/.
		t.Run(from+"_to_"+to, func(t *testing.T) { upgradeStep(t, from, to, toBin) })
	}
}

// releases returns the versions RELEASES records, oldest first.
func releases(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "RELEASES"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "v") {
			out = append(out, f[0])
		}
	}
	if len(out) == 0 {
		t.Fatal("RELEASES records no version")
	}
	return out
}

// upgradeStep is one step of TestUpgrade: from, a release built from history, to to
// (toBin builds it), and back.
func upgradeStep(t *testing.T, from, to string, toBin func(*testing.T) string) {
	secMuc, secBer, secFra := randomSecret(t, "muc"), randomSecret(t, "ber"), randomSecret(t, "fra")
	const redirect = "https://app.example/cb"
	long := startIdentity(t, "identity-long", time.Hour,
		"hotel-muc:"+secMuc+":MUC:account.read",
		"connect-ber:"+secBer+":BER:reservations.read:"+redirect)
	short := startIdentity(t, "identity-short", shortTTL,
		"connect-fra:"+secFra+":FRA:reservations.read:"+redirect)
	v := startRaftVault(t)

	cmds := map[string]string{
		from: installPlugin(t, v, from, buildReleased(t, from)),
		to:   installPlugin(t, v, to, toBin(t)),
	}
	for _, version := range []string{from, to} {
		v.must(t, "plugin", "register", "-sha256="+sha256File(t, filepath.Join(v.pluginDir, cmds[version])),
			"-version="+version, "-command="+cmds[version], "secret", pluginName)
	}
	v.must(t, "secrets", "enable", "-path="+mount, "-plugin-version="+from, pluginName)
	checkRunning(t, v, from, cmds)

	// Everything the older version writes: a config without the fields added later (min_ttl left at
	// its default), two connect configs, two authorized credentials, three cached tokens.
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: long, scopes: "account.read"})
	v.writeConfig(t, appConfig{name: "connect-ber", clientID: "connect-ber", secret: secBer, idp: long,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read"})
	v.writeConfig(t, appConfig{name: "connect-fra", clientID: "connect-fra", secret: secFra, idp: short,
		grant: "authorization_code", redirect: redirect, scopes: "reservations.read", minTTL: "5s"})
	exchangeFlow(t, v, long, "hotel-ber", "connect-ber")
	exchangeFlow(t, v, short, "hotel-fra", "connect-fra")
	kept := map[string]string{}
	for _, name := range []string{"hotel-muc", "hotel-ber"} {
		if kept[name] = v.read(t, mount+"/creds/"+name).str("access_token"); kept[name] == "" {
			t.Fatalf("creds/%s: no access token under %s", name, from)
		}
	}
	fra := v.read(t, mount+"/creds/hotel-fra").str("access_token")

	// rotate waits for hotel-fra's next token, which needs a refresh_token request with the
	// refresh token the previous phase's version stored; the identity server rotates it.
	rotate := func(t *testing.T, version string) {
		t.Helper()
		before := short.stats(t)
		fra = waitNewToken(t, v, "hotel-fra", fra, shortTTL+15*time.Second)
		after := short.stats(t)
		if n := after.ByGrant["refresh_token"] - before.ByGrant["refresh_token"]; n < 1 {
			t.Errorf("%s: hotel-fra got a new token with %d refresh_token requests, want at least 1", version, n)
		}
		if n := after.Errors["invalid_grant"]; n != 0 {
			t.Errorf("%s: %d invalid_grant errors at the identity server: a rotated refresh token was lost or reused", version, n)
		}
	}
	// swap runs one phase's change (tune and reload, or a restart) and checks that it
	// caused no token request and that the cached tokens are still answered.
	swap := func(t *testing.T, version string, change func(t *testing.T)) {
		t.Helper()
		longBefore, shortBefore := long.stats(t).TokenRequests, short.stats(t).TokenRequests
		change(t)
		checkRunning(t, v, version, cmds)
		// Read before anything else so a request the new process sent on loading shows.
		for name, tok := range kept {
			if got := v.read(t, mount+"/creds/"+name).str("access_token"); got != tok {
				t.Errorf("%s: creds/%s answered a new access token, want the one cached under %s", version, name, from)
			}
		}
		nLong, nShort := long.stats(t).TokenRequests-longBefore, short.stats(t).TokenRequests-shortBefore
		t.Logf("%s: token requests caused by the change and the cached reads: %d (1-hour identity server), %d (10 s one, before hotel-fra is read)", version, nLong, nShort)
		if nLong != 0 || nShort != 0 {
			t.Errorf("%s: the change made %d + %d token requests, want 0", version, nLong, nShort)
		}
		rotate(t, version)
	}
	tuneTo := func(version string) func(t *testing.T) {
		return func(t *testing.T) {
			v.must(t, "secrets", "tune", "-plugin-version="+version, mount+"/")
			// `vault plugin reload -mounts` of Vault 1.21.1 sends no mounts in the root
			// namespace: the API does (see TestPersistence).
			v.must(t, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
		}
	}

	if !t.Run("released", func(t *testing.T) { rotate(t, from) }) {
		t.FailNow()
	}
	if !t.Run("upgrade", func(t *testing.T) {
		swap(t, to, tuneTo(to))
		// The config the older version wrote, with the fields added since at their defaults.
		c := v.read(t, mount+"/config/hotel-muc")
		for field, want := range map[string]string{"client_id": "hotel-muc", "min_ttl": "900", "refresh_ahead": "true", "max_token_requests_per_second": "10", "idle_refresh_interval": "604800"} {
			if got := fmt.Sprint(c.Data[field]); got != want {
				t.Errorf("config/hotel-muc written by %s reads %s = %s, want %s", from, field, got, want)
			}
		}
		// From here on hotel-fra is refreshed only when read: a refresh-ahead due while the
		// next phase swaps versions would count as the swap's token request.
		v.must(t, "write", mount+"/config/connect-fra", "refresh_ahead=false")
		// Something only the current version wrote, for the downgrade to read.
		v.writeConfig(t, appConfig{name: "hotel-ham", clientID: "hotel-muc", secret: secMuc, idp: long, scopes: "account.read", minTTL: "20m"})
		v.must(t, "write", mount+"/config/hotel-ham", "max_token_requests_per_second=3")
	}) {
		t.FailNow()
	}
	if !t.Run("vault_restart", func(t *testing.T) { swap(t, to, v.restart) }) {
		t.FailNow()
	}
	t.Run("downgrade", func(t *testing.T) {
		swap(t, from, tuneTo(from))
		if c := v.read(t, mount+"/config/hotel-ham"); c.str("client_id") != "hotel-muc" || fmt.Sprint(c.Data["min_ttl"]) != "1200" {
			t.Errorf("%s reads config/hotel-ham that %s wrote as %v", from, to, c.Data)
		}
	})
	st := short.stats(t)
	t.Logf("in all: %d token requests at the 1-hour identity server (the first read of hotel-muc and hotel-ber's code exchange, all under %s); %d at the 10 s one (%d refresh_token)",
		long.stats(t).TokenRequests, from, st.TokenRequests, st.ByGrant["refresh_token"])
}

// buildReleased builds version from the commit RELEASES records for it, with that commit's
// own Makefile (scripts/build-released; the build is cached under build/released/).
func buildReleased(t *testing.T, version string) string {
	t.Helper()
	return buildHistory(t, version)
}

// buildHistory is buildReleased with more environment (BUILD_COMMIT=<commit> builds that
// commit, reporting version).
func buildHistory(t *testing.T, version string, env ...string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join(root, "scripts", "build-released"), version)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/build-released %s: %v\n%s", version, err, stderr.String())
	}
	commit, err := os.ReadFile(filepath.Join(root, "build", "released", version, ".commit"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s built from commit %s in %s", version, strings.TrimSpace(string(commit)), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(string(out))
}

// buildCurrent builds the plugin from this tree, reporting version.
func buildCurrent(t *testing.T, version string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), pluginName)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X "+module+".Version="+version,
		"-o", bin, "./cmd/"+pluginName)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, out)
	}
	return bin
}

// installPlugin copies bin into Vault's plugin directory as
// vault-plugin-secrets-apaleo_<version> (the catalog keeps one command per version) and
// returns that file name.
func installPlugin(t *testing.T, v *vault, version, bin string) string {
	t.Helper()
	name := pluginName + "_" + strings.TrimPrefix(version, "v")
	copyFile(t, bin, filepath.Join(v.pluginDir, name), 0o755)
	return name
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

// preNarrowedCommit is main before narrowing moved to config/<config>/narrowed/<name>:
// its narrowed credentials were made through creds/<name>.
const (
	preNarrowedCommit  = "a7ba2b2"
	preNarrowedVersion = "v0.2.0-pre.a7ba2b2"
)

// TestUpgrade_Narrowed upgrades in place from commit a7ba2b2, built from history, on a
// storage where that code made a narrowed credential through creds/: after the upgrade
// the credential answers the access token cached before it (0 token requests at the
// identity server), shows at config/hotel-muc/narrowed/, keeps config/hotel-muc from
// being deleted, and is deleted at the new path.
func TestUpgrade_Narrowed(t *testing.T) {
	t.Parallel()
	secMuc := randomSecret(t, "muc")
	idp := startIdentity(t, "identity", time.Hour, "hotel-muc:"+secMuc+":MUC:account.read,reservations.read")
	v := startRaftVault(t)
	cmds := map[string]string{
		preNarrowedVersion: installPlugin(t, v, preNarrowedVersion, buildHistory(t, preNarrowedVersion, "BUILD_COMMIT="+preNarrowedCommit)),
		currentVersion:     installPlugin(t, v, currentVersion, buildCurrent(t, currentVersion)),
	}
	for version, cmd := range cmds {
		v.must(t, "plugin", "register", "-sha256="+sha256File(t, filepath.Join(v.pluginDir, cmd)),
			"-version="+version, "-command="+cmd, "secret", pluginName)
	}
	v.must(t, "secrets", "enable", "-path="+mount, "-plugin-version="+preNarrowedVersion, pluginName)
	checkRunning(t, v, preNarrowedVersion, cmds)
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: idp, scopes: "account.read reservations.read"})
	v.write(t, mount+"/creds/muc-reports", "config=hotel-muc", "scopes=reservations.read")
	kept := v.read(t, mount+"/creds/muc-reports").str("access_token")
	before := idp.stats(t).TokenRequests

	v.must(t, "secrets", "tune", "-plugin-version="+currentVersion, mount+"/")
	v.must(t, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
	checkRunning(t, v, currentVersion, cmds)
	if got := v.read(t, mount+"/creds/muc-reports"); got.str("access_token") != kept || got.str("config") != "hotel-muc" {
		t.Errorf("creds/muc-reports after the upgrade: %v, want the token cached under %s", got.Data, preNarrowedVersion)
	}
	if n := idp.stats(t).TokenRequests - before; n != 0 {
		t.Errorf("the upgrade and the cached read made %d token requests, want 0", n)
	}
	if got := v.read(t, mount+"/config/hotel-muc/narrowed/muc-reports"); got.str("config") != "hotel-muc" || fmt.Sprint(got.Data["scopes"]) != "[reservations.read]" {
		t.Errorf("config/hotel-muc/narrowed/muc-reports after the upgrade: %v", got.Data)
	}
	if keys := v.list(t, mount+"/config/hotel-muc/narrowed/"); len(keys) != 1 || keys[0] != "muc-reports" {
		t.Errorf("config/hotel-muc/narrowed/ after the upgrade: %q", keys)
	}
	if msg := v.mustFail(t, "delete", mount+"/config/hotel-muc"); !strings.Contains(msg, "muc-reports") {
		t.Errorf("config/hotel-muc deleted while the narrowed credential uses it: %s", msg)
	}
	v.must(t, "delete", mount+"/config/hotel-muc/narrowed/muc-reports")
	if r := v.run("read", mount+"/creds/muc-reports"); r.Err == nil {
		t.Errorf("creds/muc-reports readable after its delete: %s", r.Stdout)
	}
	v.must(t, "delete", mount+"/config/hotel-muc")
}
