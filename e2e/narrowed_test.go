//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// narrowedLoad is how long the readers of TestNarrowed read.
const narrowedLoad = 10 * time.Second

// TestNarrowed: two narrowed credentials of one client-credentials config, read under
// load through a real Vault from the dev identity server. What proves it is counted at
// the identity server: the token requests per scope set asked (one per credential, for
// 1 h tokens), the scopes it granted, and the spacing of the requests under the config's
// budget of one a second, which the config's own token and both narrowed ones share.
func TestNarrowed(t *testing.T) {
	t.Parallel()
	v := startDevVault(t)
	v.enablePlugin(t)
	secret := randomSecret(t, "muc")
	idp := startIdentity(t, "identity", time.Hour, "hotel-muc:"+secret+":MUC:account.read,reservations.read,reservations.manage")
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secret, idp: idp,
		scopes: "account.read reservations.read reservations.manage"})
	v.must(t, "write", mount+"/config/hotel-muc", "max_token_requests_per_second=1")

	reports := v.write(t, mount+"/config/hotel-muc/narrowed/muc-reports", "scopes=reservations.read")
	v.write(t, mount+"/config/hotel-muc/narrowed/muc-audit", "scopes=reservations.read,reservations.manage")
	if got := reports.list("scopes"); !slices.Equal(got, []string{"reservations.read"}) || reports.str("config") != "hotel-muc" {
		t.Errorf("creating creds/muc-reports answered %v", reports.Data)
	}
	if st := idp.stats(t); st.TokenRequests != 0 {
		t.Fatalf("creating narrowed credentials sent %d token requests", st.TokenRequests)
	}

	t.Run("refused", func(t *testing.T) {
		for _, args := range [][]string{
			{mount + "/config/hotel-muc/narrowed/muc-wide", "scopes=reservations.read,rateplans.manage"},
			{mount + "/config/hotel-muc/narrowed/muc-empty", "scopes=,"},
			{mount + "/config/hotel-muc/narrowed/hotel-muc", "scopes=reservations.read"},
			{mount + "/config/hotel-muc/narrowed/muc-reports", "scopes=account.read"},
			// creds/ no longer narrows: it names the config's path instead.
			{mount + "/creds/muc-old-way", "config=hotel-muc", "scopes=reservations.read"},
		} {
			if msg := v.mustFail(t, append([]string{"write"}, args...)...); !strings.Contains(msg, "Code: 400") {
				t.Errorf("write %v: want a 400, got:\n%s", args, msg)
			}
		}
		if keys := v.list(t, mount+"/creds/"); !slices.Equal(keys, []string{"hotel-muc", "muc-audit", "muc-reports"}) {
			t.Errorf("creds/ after refusals: %q", keys)
		}
	})

	t.Run("load", func(t *testing.T) { testNarrowedLoad(t, v, idp) })
	t.Run("policy", func(t *testing.T) { testNarrowedPolicy(t, v) })
	t.Run("narrow_policy", func(t *testing.T) { testNarrowPolicy(t, v, idp) })
	t.Run("lifecycle", func(t *testing.T) { testNarrowedLifecycle(t, v, idp) })
}

func testNarrowedLoad(t *testing.T, v *vault, idp *identity) {
	names := []string{"muc-reports", "muc-audit", "hotel-muc"}
	var reads, failed atomic.Int64
	var mu sync.Mutex
	tokens := map[string]map[string]bool{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(narrowedLoad)
	for i := range 4 {
		wg.Go(func() {
			for n := i; time.Now().Before(deadline); n++ {
				name := names[n%len(names)]
				status, body, err := v.api(http.MethodGet, mount+"/creds/"+name, nil)
				var s vaultSecret
				if err != nil || status != http.StatusOK || json.Unmarshal(body, &s) != nil {
					failed.Add(1)
					continue
				}
				reads.Add(1)
				mu.Lock()
				if tokens[name] == nil {
					tokens[name] = map[string]bool{}
				}
				tokens[name][s.str("access_token")] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := idp.stats(t)
	t.Logf("%d reads in %v by 4 readers, %d failed; identity server: %d token requests, by scopes asked %v",
		reads.Load(), narrowedLoad, failed.Load(), st.TokenRequests, st.ByScope)
	if failed.Load() != 0 {
		t.Errorf("%d reads failed", failed.Load())
	}
	want := map[string]int{"reservations.read": 1, "reservations.manage reservations.read": 1, "account.read reservations.manage reservations.read": 1}
	for scopes, n := range want {
		if st.ByScope[scopes] != n {
			t.Errorf("token requests asking %q: %d, want %d", scopes, st.ByScope[scopes], n)
		}
	}
	if st.TokenRequests != 3 {
		t.Errorf("%d token requests, want 3 (one per name)", st.TokenRequests)
	}
	for _, name := range names {
		if len(tokens[name]) != 1 {
			t.Errorf("creds/%s: %d distinct tokens, want 1", name, len(tokens[name]))
		}
	}
	// The budget is the config's: one request a second across all three names.
	times := slices.Sorted(slices.Values(st.RequestTimes))
	for i := 1; i < len(times); i++ {
		if gap := time.Duration(times[i]-times[i-1]) * time.Millisecond; gap < 900*time.Millisecond {
			t.Errorf("token requests %d and %d of one config %v apart under a budget of 1/s", i, i+1, gap)
		}
	}
	t.Logf("token request times (ms after the first): %v", gapsFrom(times))

	// What the identity server granted is what each asked: the token's scope claim.
	for name, want := range map[string]string{"muc-reports": "reservations.read", "muc-audit": "reservations.read reservations.manage",
		"hotel-muc": "account.read reservations.read reservations.manage"} {
		s := v.read(t, mount+"/creds/"+name)
		claims := jwtClaims(t, s.str("access_token"))
		got := strings.Join(s.list("scopes"), " ")
		t.Logf("creds/%s: granted scopes %q (token claim %q)", name, got, claims["scope"])
		if !sameWords(got, want) || !sameWords(fmt.Sprint(claims["scope"]), want) {
			t.Errorf("creds/%s: scopes %q, claim %q, want %q", name, got, claims["scope"], want)
		}
	}
}

func sameWords(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func gapsFrom(times []int64) []int64 {
	out := make([]int64, len(times))
	for i, t := range times {
		out[i] = t - times[0]
	}
	return out
}

// testNarrowedPolicy: an ops policy that grants creds/muc-reports reads it, and gets
// 403 on the config's full-scope token and on the other narrowed credential.
func testNarrowedPolicy(t *testing.T, v *vault) {
	token := v.readerToken(t, "ops-reports", "muc-reports")
	if status, body, err := v.apiAs(token, http.MethodGet, mount+"/creds/muc-reports", nil); err != nil || status != http.StatusOK {
		t.Errorf("ops policy reading creds/muc-reports: %d %v %s", status, err, body)
	}
	for _, name := range []string{"hotel-muc", "muc-audit"} {
		status, _, err := v.apiAs(token, http.MethodGet, mount+"/creds/"+name, nil)
		t.Logf("ops policy reading creds/%s: %d", name, status)
		if err != nil || status != http.StatusForbidden {
			t.Errorf("ops policy reading creds/%s: %d %v, want 403", name, status, err)
		}
	}
}

// testNarrowPolicy: who may narrow an app is decided by a policy on the config's own
// path. A token allowed create, read and update on creds/team-x (an import right) gets a
// 400 naming config/hotel-muc/narrowed/team-x and reads no token of hotel-muc's app; a
// token allowed config/hotel-muc/narrowed/* narrows hotel-muc, and gets 403 on another
// config's narrowed path and on config/hotel-muc itself. The identity server counts no
// token request for any of it.
func testNarrowPolicy(t *testing.T, v *vault, idp *identity) {
	importer := v.policyTokenHCL(t, "team-x-import", `path "`+mount+`/creds/team-x" { capabilities = ["create", "read", "update"] }`)
	narrower := v.policyTokenHCL(t, "muc-narrow", `path "`+mount+`/config/hotel-muc/narrowed/*" { capabilities = ["create", "read", "delete", "list"] }`+"\n"+
		`path "`+mount+`/config/hotel-muc/narrowed" { capabilities = ["list"] }`)
	before := idp.stats(t).TokenRequests
	status, body, err := v.apiAs(importer, http.MethodPost, mount+"/creds/team-x", map[string]any{"config": "hotel-muc", "scopes": "reservations.read"})
	if err != nil || status != http.StatusBadRequest || !strings.Contains(string(body), "config/hotel-muc/narrowed/team-x") {
		t.Errorf("creds/team-x config=hotel-muc with an import policy: %d %v %s, want a 400 naming config/hotel-muc/narrowed/team-x", status, err, body)
	}
	if status, body, _ := v.apiAs(importer, http.MethodGet, mount+"/creds/team-x", nil); status == http.StatusOK {
		t.Errorf("the import policy read a token at creds/team-x: %s", body)
	}
	status, body, err = v.apiAs(narrower, http.MethodPost, mount+"/config/hotel-muc/narrowed/team-y", map[string]any{"scopes": "reservations.read"})
	if err != nil || status != http.StatusOK {
		t.Errorf("narrowing hotel-muc with its narrow policy: %d %v %s", status, err, body)
	}
	status, body, _ = v.apiAs(narrower, http.MethodGet, mount+"/config/hotel-muc/narrowed/team-y", nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"reservations.read"`) {
		t.Errorf("reading config/hotel-muc/narrowed/team-y: %d %s", status, body)
	}
	status, body, _ = v.apiAs(narrower, "LIST", mount+"/config/hotel-muc/narrowed", nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"team-y"`) || !strings.Contains(string(body), `"muc-reports"`) {
		t.Errorf("listing config/hotel-muc/narrowed: %d %s", status, body)
	}
	for _, path := range []string{"/config/other/narrowed/team-z", "/config/hotel-muc"} {
		if status, _, _ := v.apiAs(narrower, http.MethodPost, mount+path, map[string]any{"scopes": "reservations.read"}); status != http.StatusForbidden {
			t.Errorf("the narrow policy of hotel-muc writing %s: %d, want 403", path, status)
		}
	}
	if status, _, _ := v.apiAs(narrower, http.MethodGet, mount+"/creds/team-y", nil); status != http.StatusForbidden {
		t.Errorf("the narrow policy read creds/team-y: %d, want 403 (reading is creds/'s policy)", status)
	}
	if status, _, _ := v.apiAs(narrower, http.MethodDelete, mount+"/config/hotel-muc/narrowed/team-y", nil); status != http.StatusNoContent {
		t.Errorf("deleting config/hotel-muc/narrowed/team-y: %d", status)
	}
	if keys := v.list(t, mount+"/creds/"); slices.Contains(keys, "team-y") || slices.Contains(keys, "team-x") {
		t.Errorf("creds/ after the policy checks: %q", keys)
	}
	if after := idp.stats(t).TokenRequests; after != before {
		t.Errorf("the policy checks sent %d token requests", after-before)
	}
}

// policyTokenHCL writes policy name with hcl and returns a token holding only it.
func (v *vault) policyTokenHCL(t *testing.T, name, hcl string) string {
	t.Helper()
	v.must(t, "policy", "write", name, writeFile(t, filepath.Join(v.dir, name+".hcl"), hcl+"\n"))
	var tok vaultSecret
	v.jsonOut(t, &tok, "token", "create", "-format=json", "-policy="+name, "-ttl=1h")
	if tok.Auth == nil || tok.Auth.ClientToken == "" {
		t.Fatal("token create returned no token")
	}
	return tok.Auth.ClientToken
}

// testNarrowedLifecycle: list -detailed, config delete refused while used, delete with
// nothing revoked at the identity server.
func testNarrowedLifecycle(t *testing.T, v *vault, idp *identity) {
	var list struct {
		Data struct {
			KeyInfo map[string]map[string]any `json:"key_info"`
		} `json:"data"`
	}
	v.jsonOut(t, &list, "list", "-detailed", "-format=json", mount+"/creds/")
	info := list.Data.KeyInfo["muc-audit"]
	if info["grant_type"] != "client_credentials" || info["config"] != "hotel-muc" || info["state"] != "ok" ||
		fmt.Sprint(info["scopes"]) != "[reservations.read reservations.manage]" {
		t.Errorf("list -detailed muc-audit: %v", info)
	}
	msg := v.mustFail(t, "delete", mount+"/config/hotel-muc")
	if !strings.Contains(msg, "still used by narrowed credentials muc-audit, muc-reports") {
		t.Errorf("config delete while used: %s", msg)
	}
	before := idp.stats(t)
	v.must(t, "delete", mount+"/creds/muc-reports")
	v.must(t, "delete", mount+"/config/hotel-muc/narrowed/muc-audit")
	if after := idp.stats(t); after.Revocations != before.Revocations || after.TokenRequests != before.TokenRequests {
		t.Errorf("deleting narrowed credentials called the identity server: %+v -> %+v", before, after)
	}
	if r := v.run("read", mount+"/creds/muc-reports"); r.Err == nil {
		t.Errorf("creds/muc-reports readable after delete: %s", r.Stdout)
	}
	v.must(t, "delete", mount+"/config/hotel-muc")
}
