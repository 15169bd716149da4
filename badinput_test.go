package apaleo

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// badinput_test.go: bad input, one case at a time: forged, expired and replayed states
// and codes, oversized values. The fuzz targets (fuzz_test.go) try the same at random.

// TestBadInput_ForgedState: states an attacker could derive or guess are refused by
// callback and exchange, change nothing, and leave the real state usable.
func TestBadInput_ForgedState(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	resp := e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"})
	real := e.browse(resp.Data["auth_url"].(string)).Query()
	state, code := real.Get("state"), real.Get("code")
	key := pendingKey(state)
	before := storageSnapshot(t, e.storage)

	forged := map[string]string{
		"storage key (sha256 of state)": strings.TrimPrefix(key, pendingPrefix),
		"full storage key":              key,
		"state with a trailing space":   state + " ",
		"state with a trailing newline": state + "\n",
		"upper-cased state":             strings.ToUpper(state),
		"state minus its last char":     state[:len(state)-1],
		"state plus a char":             state + "A",
		"state percent-encoded":         url.QueryEscape(state + "="),
		"random state":                  "dGhpcyBpcyBub3QgYSBzdGF0ZSBhdCBhbGwsIGp1c3QgNDMgYnl0ZXM",
	}
	for what, s := range forged {
		status, page := e.callback(url.Values{"state": {s}, "code": {code}})
		if status != http.StatusBadRequest || !strings.Contains(page, "unknown or already used state") {
			t.Errorf("callback with %s: %d %s", what, status, pageText(page))
		}
		e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": s, "code": code}, "unknown or already used state")
		// An error callback with a forged state spends nothing either.
		if status, _ := e.callback(url.Values{"state": {s}, "error": {"access_denied"}}); status != http.StatusBadRequest {
			t.Errorf("error callback with %s: %d", what, status)
		}
	}
	if status, page := e.callback(url.Values{"code": {code}}); status != http.StatusBadRequest || !strings.Contains(page, "state is missing") {
		t.Errorf("callback without state: %d %s", status, pageText(page))
	}
	if after := storageSnapshot(t, e.storage); !maps.Equal(before, after) {
		t.Fatalf("forged states changed storage: %v -> %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	if got := e.idp.Stats().ByGrant["authorization_code"]; got != 0 {
		t.Fatalf("forged states made %d code exchanges", got)
	}
	if status, page := e.callback(real); status != http.StatusOK {
		t.Fatalf("the real state no longer works after the forgeries: %d %s", status, pageText(page))
	}
	e.assertNoSecrets(connectSc, code)
}

// TestBadInput_ExpiredState: a state is redeemable for 10 minutes, not a second more; an
// expired one is spent by the attempt and swept by the periodic pass.
func TestBadInput_ExpiredState(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)

	// Exactly at expires_at: expired, through exchange as through callback.
	q := e.authorize("late", "connect")
	e.clock.Add(pendingTTL)
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": q.Get("state"), "code": q.Get("code")}, "expired")
	if keys, _ := e.storage.List(t.Context(), pendingPrefix); len(keys) != 0 {
		t.Fatal("the expired state was not spent")
	}
	// Turning the clock back does not revive it.
	e.clock.Add(-pendingTTL)
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": q.Get("state"), "code": q.Get("code")}, "unknown or already used state")
	if got, _ := readCred(t.Context(), e.storage, "late"); got != nil {
		t.Fatal("an expired state stored a credential")
	}
	if got := e.idp.Stats().ByGrant["authorization_code"]; got != 0 {
		t.Fatalf("an expired state made %d code exchanges", got)
	}

	// A second before expires_at: still good.
	q = e.authorize("in-time", "connect")
	e.clock.Add(pendingTTL - time.Second)
	if status, page := e.callback(q); status != http.StatusOK {
		t.Fatalf("a state one second before expiry: %d %s", status, pageText(page))
	}

	// Never redeemed: the periodic pass deletes it once expired, and not before.
	e.mustDo(logical.UpdateOperation, "authorize/abandoned", map[string]any{"config": "connect"})
	e.clock.Add(pendingTTL - time.Second)
	if err := e.b.periodic(t.Context(), &logical.Request{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.storage.List(t.Context(), pendingPrefix); len(keys) != 1 {
		t.Fatalf("the periodic pass deleted a live pending authorization (%d left)", len(keys))
	}
	e.clock.Add(time.Second)
	if err := e.b.periodic(t.Context(), &logical.Request{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.storage.List(t.Context(), pendingPrefix); len(keys) != 0 {
		t.Fatalf("the periodic pass left %d expired pending authorizations", len(keys))
	}
}

// TestBadInput_ReplayedStateAndCode: a state works once across callback and exchange;
// a code works once, and only with the authorization (PKCE verifier) it was issued to.
func TestBadInput_ReplayedStateAndCode(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)

	a := e.authorize("hotel-a", "connect")
	if status, _ := e.callback(a); status != http.StatusOK {
		t.Fatal("first use of the state failed")
	}
	stored, _ := readCred(t.Context(), e.storage, "hotel-a")
	// The state, replayed through exchange.
	e.badRequest(logical.UpdateOperation, "exchange", map[string]any{"state": a.Get("state"), "code": a.Get("code")}, "unknown or already used state")

	// A's code, replayed with a fresh state: apaleo refuses it, nothing is stored, the
	// fresh state is spent, and creds/hotel-a is untouched.
	b := e.authorize("hotel-b", "connect")
	status, page := e.callback(url.Values{"state": {b.Get("state")}, "code": {a.Get("code")}})
	if status != http.StatusBadRequest || !strings.Contains(page, "invalid_grant") || !strings.Contains(page, "Nothing was stored") {
		t.Fatalf("replayed code: %d %s", status, pageText(page))
	}
	if got, _ := readCred(t.Context(), e.storage, "hotel-b"); got != nil {
		t.Fatal("a replayed code stored a credential")
	}
	if status, _ := e.callback(b); status != http.StatusBadRequest {
		t.Fatal("the state used with a replayed code is still usable")
	}
	if got, _ := readCred(t.Context(), e.storage, "hotel-a"); got == nil || got.RefreshToken != stored.RefreshToken {
		t.Fatal("a replayed code changed creds/hotel-a")
	}

	// A fresh code of authorization C, redeemed with D's state: C's code is bound to C's
	// PKCE challenge, so D's verifier does not fit.
	c := e.authorize("hotel-c", "connect")
	d := e.authorize("hotel-d", "connect")
	status, page = e.callback(url.Values{"state": {d.Get("state")}, "code": {c.Get("code")}})
	if status != http.StatusBadRequest || !strings.Contains(page, "invalid_grant") {
		t.Fatalf("a code with another authorization's state: %d %s", status, pageText(page))
	}
	for _, name := range []string{"hotel-c", "hotel-d"} {
		if got, _ := readCred(t.Context(), e.storage, name); got != nil {
			t.Fatalf("creds/%s stored from a swapped code", name)
		}
	}
	e.assertNoSecrets(connectSc, a.Get("code"), c.Get("code"), stored.RefreshToken)
}

// TestBadInput_OversizedValues: values over 4 KiB (64 KiB for ca_certificate) are a 4xx
// that says so and change nothing; values at the limit are accepted.
func TestBadInput_OversizedValues(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	q := e.authorize("hotel-ber", "connect")
	over := strings.Repeat("a", maxValueLen+1)
	base := func(k string, v any) map[string]any {
		d := map[string]any{"client_id": "id", "client_secret": "secret"}
		d[k] = v
		return d
	}
	before := storageSnapshot(t, e.storage)
	for _, c := range []struct {
		name, path string
		op         logical.Operation
		data       map[string]any
		want       string
	}{
		{"client_id", "config/big", logical.CreateOperation, base("client_id", over), "limit is 4096"},
		{"client_secret", "config/big", logical.CreateOperation, base("client_secret", over), "limit is 4096"},
		{"grant_type", "config/big", logical.CreateOperation, base("grant_type", over), "limit is 4096"},
		{"redirect_uri", "config/big", logical.CreateOperation, base("redirect_uri", "https://vault.example/"+over), "limit is 4096"},
		{"identity_url", "config/big", logical.CreateOperation, base("identity_url", "https://identity.example/"+over), "limit is 4096"},
		{"one scope", "config/big", logical.CreateOperation, base("scopes", over), "longer than 4096"},
		{"ca_certificate", "config/big", logical.CreateOperation, base("ca_certificate", fuzzCA+strings.Repeat("\n", maxCALen)), "limit is 65536"},
		{"client_secret on update", "config/connect", logical.UpdateOperation, map[string]any{"client_secret": over}, "limit is 4096"},
		{"authorize scope", "authorize/x", logical.UpdateOperation, map[string]any{"config": "connect", "scopes": over}, "longer than 4096"},
		{"exchange state", "exchange", logical.UpdateOperation, map[string]any{"state": over, "code": "c"}, "longer than 4096"},
		{"exchange code", "exchange", logical.UpdateOperation, map[string]any{"state": q.Get("state"), "code": over}, "longer than 4096"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.badRequest(c.op, c.path, c.data, c.want)
		})
	}
	e.t = t
	for name, v := range map[string]url.Values{
		"callback state": {"state": {over}, "code": {"c"}},
		"callback code":  {"state": {q.Get("state")}, "code": {over}},
	} {
		if status, page := e.callback(v); status != http.StatusBadRequest || !strings.Contains(page, "longer than 4096") {
			t.Errorf("%s: %d %s", name, status, excerpt(pageText(page), 200))
		}
	}
	if after := storageSnapshot(t, e.storage); !maps.Equal(before, after) {
		t.Fatalf("oversized values changed storage: %v -> %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	// The oversized code did not spend the state.
	if status, _ := e.callback(q); status != http.StatusOK {
		t.Fatal("the state did not survive an oversized code")
	}

	// At the limit: accepted.
	at := strings.Repeat("b", maxValueLen)
	e.mustDo(logical.CreateOperation, "config/at-limit", map[string]any{"client_id": at, "client_secret": at,
		"ca_certificate": fuzzCA + strings.Repeat("\n", maxCALen-len(fuzzCA))})
	got := e.mustDo(logical.ReadOperation, "config/at-limit", nil).Data
	if got["client_id"] != at || len(got["ca_certificate"].(string)) != maxCALen {
		t.Fatalf("values at the limit not kept: client_id %d bytes, ca_certificate %d bytes", len(got["client_id"].(string)), len(got["ca_certificate"].(string)))
	}
}

// TestBadInput_OversizedNameAndScopeList: the 4 KiB limit holds for every value, the
// name in the path and the scopes list as a whole included. A name is a storage key and
// shows up in every log line about it; a scope list is sent on every token request.
func TestBadInput_OversizedNameAndScopeList(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	var many []string
	for i := 0; len(strings.Join(many, " ")) <= maxValueLen; i++ {
		many = append(many, fmt.Sprintf("scope.%d", i))
	}
	longName := strings.Repeat("n", maxValueLen+1)
	before := storageSnapshot(t, e.storage)
	for _, c := range []struct {
		name, path string
		data       map[string]any
	}{
		{"config name", "config/" + longName, map[string]any{"client_id": "id", "client_secret": "secret"}},
		{"authorize name", "authorize/" + strings.Repeat("m", maxValueLen+1), map[string]any{"config": "connect"}},
		{"scopes list", "config/many-scopes", map[string]any{"client_id": "id", "client_secret": "secret", "scopes": strings.Join(many, " ")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := e.do(logical.UpdateOperation, c.path, c.data)
			if status := statusOf(logical.UpdateOperation, resp, err); status < 400 || status >= 500 {
				t.Errorf("%s over 4 KiB: accepted (status %d); want a 4xx saying the limit is 4096", c.name, status)
			}
		})
	}
	if after := storageSnapshot(t, e.storage); !maps.Equal(before, after) {
		t.Errorf("oversized values changed storage: %d -> %d entries", len(before), len(after))
	}
}

// TestBadInput_CallbackOversizedError: the callback is unauthenticated, so anyone can
// send it error and error_description. Over 4 KiB they must be refused or cut like
// state and code are, not copied whole into the page and into Vault's log.
func TestBadInput_CallbackOversizedError(t *testing.T) {
	e := newTestEnv(t)
	big := strings.Repeat("E", 64<<10)
	status, page := e.callback(url.Values{"state": {"forged"}, "error": {big}, "error_description": {big}})
	if status != http.StatusBadRequest {
		t.Fatalf("status %d", status)
	}
	if strings.Contains(page, big) {
		t.Errorf("the page copies a %d-byte error whole (%d bytes)", len(big), len(page))
	}
	if strings.Contains(e.logs.String(), big) {
		t.Errorf("the log copies a %d-byte error from an unauthenticated request whole", len(big))
	}
}
