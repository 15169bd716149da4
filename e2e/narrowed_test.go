//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
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

	reports := v.write(t, mount+"/creds/muc-reports", "config=hotel-muc", "scopes=reservations.read")
	v.write(t, mount+"/creds/muc-audit", "config=hotel-muc", "scopes=reservations.read,reservations.manage")
	if got := reports.list("scopes"); !slices.Equal(got, []string{"reservations.read"}) || reports.str("config") != "hotel-muc" {
		t.Errorf("creating creds/muc-reports answered %v", reports.Data)
	}
	if st := idp.stats(t); st.TokenRequests != 0 {
		t.Fatalf("creating narrowed credentials sent %d token requests", st.TokenRequests)
	}

	t.Run("refused", func(t *testing.T) {
		for _, args := range [][]string{
			{mount + "/creds/muc-wide", "config=hotel-muc", "scopes=reservations.read,rateplans.manage"},
			{mount + "/creds/muc-empty", "config=hotel-muc", "scopes=,"},
			{mount + "/creds/hotel-muc", "config=hotel-muc", "scopes=reservations.read"},
			{mount + "/creds/muc-reports", "config=hotel-muc", "scopes=account.read"},
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
	v.must(t, "delete", mount+"/creds/muc-audit")
	if after := idp.stats(t); after.Revocations != before.Revocations || after.TokenRequests != before.TokenRequests {
		t.Errorf("deleting narrowed credentials called the identity server: %+v -> %+v", before, after)
	}
	if r := v.run("read", mount+"/creds/muc-reports"); r.Err == nil {
		t.Errorf("creds/muc-reports readable after delete: %s", r.Stdout)
	}
	v.must(t, "delete", mount+"/config/hotel-muc")
}
