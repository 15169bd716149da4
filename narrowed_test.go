package apaleo

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// narrowedEnv is an engineEnv with client-credentials config hotel-muc (three scopes)
// and two narrowed credentials of it: muc-reports and muc-audit.
func narrowedEnv(t *testing.T, extra map[string]any) *engineEnv {
	t.Helper()
	e := newEngineEnv(t)
	cfg := map[string]any{"scopes": "reservations.read reservations.manage availability.read"}
	for k, v := range extra {
		cfg[k] = v
	}
	e.simpleConfig("hotel-muc", cfg)
	e.mustDo(logical.CreateOperation, "config/hotel-muc/narrowed/muc-reports", map[string]any{"scopes": "reservations.read"})
	e.mustDo(logical.CreateOperation, "config/hotel-muc/narrowed/muc-audit", map[string]any{"scopes": "reservations.read,reservations.manage"})
	return e
}

// TestNarrowed_Read: each narrowed credential asks apaleo for its own scopes only, and
// keeps a token of its own; the config keeps its full-scope token.
func TestNarrowed_Read(t *testing.T) {
	e := narrowedEnv(t, nil)
	if n := e.idp.total(); n != 0 {
		t.Fatalf("creating narrowed credentials sent %d token requests", n)
	}
	tokens := map[string]string{}
	for range 3 {
		for _, name := range []string{"muc-reports", "muc-audit", "hotel-muc"} {
			resp := e.mustDo(logical.ReadOperation, "creds/"+name, nil)
			tok := resp.Data["access_token"].(string)
			if prev, ok := tokens[name]; ok && prev != tok {
				t.Fatalf("%s: a new token %s while %s was fresh", name, tok, prev)
			}
			tokens[name] = tok
		}
	}
	if n := e.idp.count(grantClientCredentials); n != 3 {
		t.Fatalf("%d token requests for 9 reads of 3 names, want 3", n)
	}
	want := [][]string{{"reservations.read"}, {"reservations.read", "reservations.manage"}, {"reservations.read", "reservations.manage", "availability.read"}}
	if !slices.EqualFunc(e.idp.asked, want, slices.Equal) {
		t.Fatalf("scopes asked %q, want %q", e.idp.asked, want)
	}
	if tokens["muc-reports"] == tokens["muc-audit"] || tokens["muc-reports"] == tokens["hotel-muc"] {
		t.Fatalf("narrowed credentials share a token: %v", tokens)
	}
	if c := e.stored("muc-reports"); c.Config != "hotel-muc" || c.GrantType != grantClientCredentials || c.Token == nil {
		t.Fatalf("stored: %+v", c)
	}
	for _, name := range []string{"muc-reports", "muc-audit"} {
		raw, _ := e.storage.Get(t.Context(), credsPrefix+name)
		if strings.Contains(string(raw.Value), "secret-hotel-muc") {
			t.Fatalf("creds/%s holds the config's secret", name)
		}
	}
}

// TestNarrowed_Refused: a 400 that says what to fix, and nothing stored.
func TestNarrowed_Refused(t *testing.T) {
	e := narrowedEnv(t, nil)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.simpleConfig("hotel-ham", nil)
	cases := []struct {
		path, scopes, want string
	}{
		{"hotel-muc/narrowed/wider", "reservations.read rateplans.manage", `scopes "rateplans.manage" are not among config/hotel-muc's scopes`},
		{"hotel-muc/narrowed/empty", " , ", "scopes is required"},
		{"hotel-muc/narrowed/none", "", "scopes is required"},
		{"hotel-muc/narrowed/hotel-ham", "reservations.read", `name "hotel-ham" is taken (creds/hotel-ham exists)`},
		{"hotel-muc/narrowed/muc-reports", "reservations.read", `name "muc-reports" is taken (creds/muc-reports exists)`},
		{"hotel-muc/narrowed/hotel-ber", "reservations.read", `name "hotel-ber" is taken (creds/hotel-ber exists)`},
		{"hotel-muc/narrowed/connect", "reservations.read", `name "connect" is taken by config/connect`},
		// A config without scopes has nothing to narrow: its tokens would carry every scope.
		{"hotel-ham/narrowed/ham-any", "rateplans.read", "config/hotel-ham lists no scopes, so there is nothing to narrow: list the app's scopes with config/hotel-ham scopes="},
		{"connect/narrowed/connect-any", "reservations.read", `config "connect" has grant_type "authorization_code"; only a client_credentials config can be narrowed`},
		{"missing/narrowed/missing-any", "reservations.read", `config "missing" does not exist`},
	}
	for _, c := range cases {
		data := map[string]any{}
		if c.scopes != "" {
			data["scopes"] = c.scopes
		}
		resp, err := e.do(logical.CreateOperation, "config/"+c.path, data)
		if status := statusOf(logical.CreateOperation, resp, err); status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", c.path, status)
		}
		if msg := errText(resp, err); !strings.Contains(msg, c.want) {
			t.Errorf("%s: %q, want %q", c.path, msg, c.want)
		}
	}
	// Vault makes a write to an existing narrowed credential an update: refused.
	resp, err := e.do(logical.UpdateOperation, "config/hotel-muc/narrowed/muc-reports", map[string]any{"scopes": "reservations.manage"})
	if msg := errText(resp, err); !strings.Contains(msg, "config/hotel-muc/narrowed/muc-reports exists; a narrowed credential is only created") {
		t.Errorf("update: %q", msg)
	}
	for _, name := range []string{"wider", "empty", "none", "ham-any", "connect-any", "missing-any"} {
		if c, _ := readCred(t.Context(), e.storage, name); c != nil {
			t.Errorf("creds/%s stored after a refusal: %+v", name, c)
		}
	}
	for name, cfg := range map[string]string{"hotel-ham": "hotel-ham", "hotel-ber": "connect"} {
		if c := e.stored(name); c.Config != cfg || c.Kind == kindNarrowed {
			t.Errorf("creds/%s changed by a refused narrowing: %+v", name, c)
		}
	}
	// The name of a narrowed credential is taken for configs and authorizations too.
	resp, err = e.do(logical.CreateOperation, "config/muc-reports", map[string]any{"client_id": "x", "client_secret": "y"})
	if msg := errText(resp, err); !strings.Contains(msg, "taken by a narrowed credential of config/hotel-muc") {
		t.Errorf("config over a narrowed credential: %q", msg)
	}
	resp, err = e.do(logical.UpdateOperation, "authorize/muc-reports", map[string]any{"config": "connect"})
	if msg := errText(resp, err); !strings.Contains(msg, "taken by a narrowed credential") {
		t.Errorf("authorize over a narrowed credential: %q", msg)
	}
	if c := e.stored("muc-reports"); c.Config != "hotel-muc" || !slices.Equal(c.Scopes, []string{"reservations.read"}) {
		t.Errorf("muc-reports changed: %+v", c)
	}
}

// TestNarrowed_NotThroughCreds: a write under creds/ never chooses a client-credentials
// app: creds/<name> config=<simple client> is refused, naming the config's own path,
// with or without scopes or a refresh token, and sends nothing.
func TestNarrowed_NotThroughCreds(t *testing.T) {
	e := narrowedEnv(t, nil)
	e.simpleConfig("hotel-ham", nil)
	for _, data := range []map[string]any{
		{"config": "hotel-muc", "scopes": "reservations.read"},
		{"config": "hotel-muc"},
		{"config": "hotel-muc", "scopes": "reservations.read", "refresh_token": "rt-x"},
		{"config": "hotel-ham", "scopes": "rateplans.read"},
	} {
		resp, err := e.do(logical.CreateOperation, "creds/team-x", data)
		if status := statusOf(logical.CreateOperation, resp, err); status != http.StatusBadRequest {
			t.Errorf("%v: status %d, want 400", data, status)
		}
		want := fmt.Sprintf("write config/%s/narrowed/team-x scopes=...; nothing was stored", data["config"])
		if msg := errText(resp, err); !strings.Contains(msg, want) || !strings.Contains(msg, "client_credentials config") {
			t.Errorf("%v: %q, want %q", data, msg, want)
		}
	}
	if c, _ := readCred(t.Context(), e.storage, "team-x"); c != nil {
		t.Fatalf("creds/team-x stored: %+v", c)
	}
	if n := e.idp.total(); n != 0 {
		t.Fatalf("%d token requests for refused writes", n)
	}
}

// TestNarrowed_PathOfItsConfig: config/<config>/narrowed/ reaches only that config's
// narrowed credentials: another config's are not read, listed or deleted through it,
// and config/<name> does not swallow the narrowed paths.
func TestNarrowed_PathOfItsConfig(t *testing.T) {
	e := narrowedEnv(t, nil)
	e.simpleConfig("hotel-ham", map[string]any{"scopes": "rateplans.read availability.read"})
	created := e.mustDo(logical.CreateOperation, "config/hotel-ham/narrowed/ham-rates", map[string]any{"scopes": "rateplans.read"}).Data
	if created["name"] != "ham-rates" || created["config"] != "hotel-ham" || !slices.Equal(created["scopes"].([]string), []string{"rateplans.read"}) {
		t.Fatalf("create answered %v", created)
	}
	got := e.mustDo(logical.ReadOperation, "config/hotel-muc/narrowed/muc-audit", nil).Data
	if len(got) != 2 || got["config"] != "hotel-muc" || !slices.Equal(got["scopes"].([]string), []string{"reservations.read", "reservations.manage"}) {
		t.Fatalf("read answered %v", got)
	}
	for _, path := range []string{"config/hotel-ham/narrowed/muc-audit", "config/hotel-muc/narrowed/ham-rates", "config/hotel-muc/narrowed/hotel-muc"} {
		if resp, err := e.do(logical.ReadOperation, path, nil); err != nil || resp != nil {
			t.Errorf("READ %s: %v %v, want nothing", path, resp, err)
		}
	}
	lists := map[string][]string{"hotel-muc": {"muc-audit", "muc-reports"}, "hotel-ham": {"ham-rates"}, "missing": nil}
	for cfg, want := range lists {
		keys, _ := e.mustDo(logical.ListOperation, "config/"+cfg+"/narrowed/", nil).Data["keys"].([]string)
		if !slices.Equal(keys, want) {
			t.Errorf("LIST config/%s/narrowed/ = %q, want %q", cfg, keys, want)
		}
	}
	// A delete through another config's path leaves the credential alone.
	e.mustDo(logical.DeleteOperation, "config/hotel-ham/narrowed/muc-audit", nil)
	if c := e.stored("muc-audit"); c == nil || c.Config != "hotel-muc" {
		t.Fatalf("muc-audit deleted through config/hotel-ham: %+v", c)
	}
	if resp := e.mustDo(logical.ReadOperation, "config/hotel-muc", nil); resp.Data["client_id"] == nil {
		t.Fatalf("config/hotel-muc read: %v", resp.Data)
	}
	e.mustDo(logical.DeleteOperation, "config/hotel-muc/narrowed/muc-audit", nil)
	if c, _ := readCred(t.Context(), e.storage, "muc-audit"); c != nil {
		t.Fatalf("muc-audit left after its delete: %+v", c)
	}
	if n := e.idp.count("revoke"); n != 0 {
		t.Fatalf("%d revocations for narrowed credentials", n)
	}
}

// TestNarrowed_Lifecycle: list -detailed, delete, and config delete refused while used.
func TestNarrowed_Lifecycle(t *testing.T) {
	e := narrowedEnv(t, nil)
	e.mustDo(logical.ReadOperation, "creds/muc-reports", nil)
	got := e.list()
	r := got["muc-reports"]
	if r["grant_type"] != grantClientCredentials || r["config"] != "hotel-muc" || r["state"] != stateOK ||
		!slices.Equal(r["scopes"].([]string), []string{"reservations.read"}) {
		t.Fatalf("muc-reports: %v", r)
	}
	if a := got["muc-audit"]; a["state"] != stateNoToken || a["config"] != "hotel-muc" {
		t.Fatalf("muc-audit: %v", a)
	}
	if _, ok := got["hotel-muc"]["scopes"]; ok {
		t.Fatalf("the config's own entry lists scopes: %v", got["hotel-muc"])
	}
	counts := e.b.credentialCounts()
	if c := counts["hotel-muc"]; c == nil || c.of(stateOK) != 1 || c.of(stateNoToken) != 2 || len(counts) != 1 {
		t.Fatalf("credentials gauge: %v", counts)
	}

	resp, err := e.do(logical.DeleteOperation, "config/hotel-muc", nil)
	if msg := errText(resp, err); !strings.Contains(msg, "still used by narrowed credentials muc-audit, muc-reports") {
		t.Fatalf("config delete: %q", msg)
	}
	e.mustDo(logical.DeleteOperation, "creds/muc-reports", nil)
	e.mustDo(logical.DeleteOperation, "creds/muc-audit", nil)
	if n := e.idp.count("revoke"); n != 0 {
		t.Fatalf("%d revocations for narrowed credentials", n)
	}
	if c, _ := readCred(t.Context(), e.storage, "muc-reports"); c != nil {
		t.Fatalf("creds/muc-reports left after delete: %+v", c)
	}
	if resp, err := e.do(logical.ReadOperation, "creds/muc-reports", nil); err != nil || resp != nil {
		t.Fatalf("read after delete: %v %v", resp, err)
	}
	e.mustDo(logical.DeleteOperation, "config/hotel-muc", nil)
}

// TestNarrowed_ConfigChanges: a scope change that leaves a narrowed credential outside
// its config puts it in state failing, naming the scopes, with no token request; a
// credential change drops its token like the config's own.
func TestNarrowed_ConfigChanges(t *testing.T) {
	e := narrowedEnv(t, nil)
	first := e.mustDo(logical.ReadOperation, "creds/muc-audit", nil).Data["access_token"]
	e.mustDo(logical.ReadOperation, "creds/muc-reports", nil)

	// A secret rotation keeps the tokens (they stay valid at apaleo); a client change
	// drops them.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"client_secret": "rotated"})
	before := e.idp.total()
	again := e.mustDo(logical.ReadOperation, "creds/muc-audit", nil).Data["access_token"]
	if again != first || e.idp.total() != before {
		t.Fatalf("after a secret change: token %v (was %v), %d requests", again, first, e.idp.total()-before)
	}
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"client_id": "ID-rotated"})
	again = e.mustDo(logical.ReadOperation, "creds/muc-audit", nil).Data["access_token"]
	if again == first || e.idp.total() != before+1 {
		t.Fatalf("after a client_id change: token %v (was %v), %d requests", again, first, e.idp.total()-before)
	}

	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"scopes": "reservations.read availability.read"})
	before = e.idp.total()
	status, msg := e.readErr("muc-audit")
	if status != http.StatusBadRequest || !strings.Contains(msg, `no longer lists "reservations.manage"`) {
		t.Fatalf("%d %s", status, msg)
	}
	if e.idp.total() != before {
		t.Fatal("a token request went out for scopes the config no longer lists")
	}
	a := e.list()["muc-audit"]
	if a["state"] != stateFailing || !strings.Contains(fmt.Sprint(a["last_error"]), "reservations.manage") {
		t.Fatalf("muc-audit: %v", a)
	}
	// Its sibling inside the config's scopes reads on.
	e.mustDo(logical.ReadOperation, "creds/muc-reports", nil)
	if s := e.list()["muc-reports"]["state"]; s != stateOK {
		t.Fatalf("muc-reports: %v", s)
	}
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"scopes": "reservations.read reservations.manage"})
	e.mustDo(logical.ReadOperation, "creds/muc-audit", nil)
}

// TestNarrowed_SharesTheApp: the config's budget and 429 hold are the app's, shared by
// its narrowed credentials.
func TestNarrowed_SharesTheApp(t *testing.T) {
	e := narrowedEnv(t, map[string]any{"max_token_requests_per_second": 1})
	e.b.retry.Total = 10 * time.Second
	start := e.clock.Now()
	for _, name := range []string{"muc-reports", "muc-audit", "hotel-muc"} {
		e.mustDo(logical.ReadOperation, "creds/"+name, nil)
	}
	if moved := e.clock.Now().Sub(start); moved < 2*time.Second {
		t.Fatalf("3 requests at 1/s of one config went out within %v", moved)
	}

	e.clock.Add(2 * time.Hour)
	e.b.retry.Attempts = 1
	e.idp.push(&upstreamError{Status: 429, Code: "rate_limited", Answered: true, Temporary: true, RetryAfter: time.Minute})
	e.readErr("muc-reports")
	before := e.idp.total()
	for _, name := range []string{"muc-audit", "hotel-muc"} {
		if status, msg := e.readErr(name); status != http.StatusTooManyRequests || !strings.Contains(msg, "config/hotel-muc") {
			t.Fatalf("%s: %d %s", name, status, msg)
		}
	}
	if e.idp.total() != before {
		t.Fatal("a token request went out during the app's 429 hold")
	}
}
