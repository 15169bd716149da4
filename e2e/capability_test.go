//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// capability_test.go: the capability matrix of docs/security.md, walked through a real
// Vault. Each row gets a policy granting only that capability on that path (concrete
// names), a token with only that policy (no default policy), and the attempts an
// attacker holding it would make. The proof is counted where the plugin cannot speak for
// itself: the apps' own dev identity server and a second one of the attacker's, whose
// token and revocation requests are counted at it, and the answers Vault gave the token,
// scanned for every secret the identity servers issued or received and for any access
// token the row may not reach. The table in docs/security.md and the rows here must
// agree, and every path the mount's OpenAPI document lists must have its rows.

const (
	redirectApp = "https://app.example/cb"
	// matrixDoc is the section of docs/security.md that holds the table.
	matrixDoc = "## Capability matrix"
)

// matrixCaps are the capabilities every served path has a row for.
var matrixCaps = []string{"read", "create", "update", "delete", "list"}

// matrixRow is one row of the table: a path as the doc writes it, the capabilities the
// policy grants, the concrete paths it grants them on (below the mount, or sys/...), and
// what a token with it tries. A nil probe: the row reaches nothing.
type matrixRow struct {
	path  string
	caps  []string
	grant []string
	probe func(c *cell)
	// nothing marks a row with a probe of its own that reaches nothing all the same.
	nothing bool
}

func (r matrixRow) key() string { return r.path + " " + strings.Join(r.caps, "+") }

func (r matrixRow) reachesNothing() bool { return r.probe == nil || r.nothing }

// placeholder matches a path parameter as the table (<name>) or OpenAPI ({name}) writes it.
var placeholder = regexp.MustCompile(`<[^>]+>|\{[^}]+\}`)

// normKey is a row's key with its parameters unnamed, so that the table, the test and the
// OpenAPI document compare whatever each calls them.
func normKey(key string) string { return placeholder.ReplaceAllString(key, "<>") }

// matrixRows is the table. Rows that reach nothing try their one operation on the
// concrete path (nothingTarget) and must be refused with nothing changed.
func matrixRows() []matrixRow {
	rows := []matrixRow{
		{path: "config/<name>", caps: []string{"read"}, grant: []string{"config/hotel-muc"}, probe: probeConfigRead},
		{path: "config/<name>", caps: []string{"create"}, grant: []string{"config/hotel-muc", "config/muc-reports", "config/new-app"}, probe: probeConfigCreate},
		{path: "config/<name>", caps: []string{"update"}, grant: []string{"config/hotel-muc", "config/connect"}, probe: probeConfigUpdate},
		{path: "config/<name>", caps: []string{"delete"}, grant: []string{"config/hotel-muc", "config/connect", "config/spare"}, probe: probeConfigDelete},
		{path: "config/", caps: []string{"list"}, grant: []string{"config/"}, probe: probeConfigList},
		{path: "config/<config>/narrowed/<name>", caps: []string{"create"}, probe: probeNarrowCreate,
			grant: []string{"config/hotel-muc/narrowed/team-x", "config/hotel-nsc/narrowed/team-x", "config/hotel-muc/narrowed/team-a", "config/connect/narrowed/team-x"}},
		{path: "config/<config>/narrowed/<name>", caps: []string{"read"}, grant: []string{"config/hotel-muc/narrowed/muc-reports"}, probe: probeNarrowRead},
		{path: "config/<config>/narrowed/<name>", caps: []string{"delete"}, grant: []string{"config/hotel-muc/narrowed/spare-n"}, probe: probeNarrowDelete},
		{path: "config/<config>/narrowed/", caps: []string{"list"}, grant: []string{"config/hotel-muc/narrowed/"}, probe: probeNarrowList},
		{path: "creds/<name>", caps: []string{"read"}, grant: []string{"creds/team-a"}, probe: probeCredsRead},
		{path: "creds/<name>", caps: []string{"create"}, grant: []string{"creds/team-x", "creds/team-a"}, probe: probeCredsCreate},
		{path: "creds/<name>", caps: []string{"update"}, grant: []string{"creds/team-x", "creds/team-a"}, probe: probeCredsUpdate, nothing: true},
		{path: "creds/<name>", caps: []string{"delete"}, grant: []string{"creds/victim-del", "creds/hotel-ber", "creds/spare-nd"}, probe: probeCredsDelete},
		{path: "creds/", caps: []string{"list"}, grant: []string{"creds/"}, probe: probeCredsList},
		{path: "authorize/<name>", caps: []string{"update"}, grant: []string{"authorize/team-x"}, probe: probeAuthorize},
		{path: "callback", caps: []string{"unauthenticated"}, probe: probeCallback},
		{path: "exchange", caps: []string{"update"}, grant: []string{"exchange"}, probe: probeExchange},
		{path: "metrics", caps: []string{"read"}, grant: []string{"metrics"}, probe: probeMetrics},
		{path: "sys/leases/lookup", caps: []string{"update"}, grant: []string{"sys/leases/lookup"}, probe: probeLeaseLookup},
		{path: "sys/leases/renew", caps: []string{"update"}, grant: []string{"sys/leases/renew"}, probe: probeLeaseRenew},
		{path: "sys/leases/revoke", caps: []string{"update"}, grant: []string{"sys/leases/revoke"}, probe: probeLeaseRevoke},
		{path: "sys/leases/lookup/apaleo/creds/<name>/", caps: []string{"list", "sudo"}, grant: []string{"sys/leases/lookup/apaleo/creds/team-a/"}, probe: probeLeaseList},
		{path: "sys/leases/revoke-prefix/apaleo/creds/<name>", caps: []string{"update", "sudo"}, grant: []string{"sys/leases/revoke-prefix/apaleo/creds/team-a"}, probe: probeLeaseRevokePrefix},
	}
	// Every other capability of the mount's paths reaches nothing.
	for path, target := range nothingTarget {
		for _, capability := range matrixCaps {
			if !slices.ContainsFunc(rows, func(r matrixRow) bool { return r.path == path && slices.Equal(r.caps, []string{capability}) }) {
				rows = append(rows, matrixRow{path: path, caps: []string{capability}, grant: []string{target}})
			}
		}
	}
	slices.SortFunc(rows, func(a, b matrixRow) int { return strings.Compare(a.key(), b.key()) })
	return rows
}

// nothingTarget is the concrete path a row that reaches nothing tries, per served path.
var nothingTarget = map[string]string{
	"config/<name>":                   "config/hotel-muc",
	"config/":                         "config/",
	"config/<config>/narrowed/<name>": "config/hotel-muc/narrowed/muc-reports",
	"config/<config>/narrowed/":       "config/hotel-muc/narrowed/",
	"creds/<name>":                    "creds/team-a",
	"creds/":                          "creds/",
	"authorize/<name>":                "authorize/team-x",
	"exchange":                        "exchange",
	"metrics":                         "metrics",
}

// matrix is the fixture every row runs against: one Vault, the apps' identity server and
// an attacker's.
type matrix struct {
	t           *testing.T
	v           *vault
	idp, evil   *identity
	idpCA, evCA string // PEM
	sec         map[string]string
	baseline    string
}

// TestCapabilityMatrix walks the table of docs/security.md (see the file comment).
func TestCapabilityMatrix(t *testing.T) {
	t.Parallel()
	m := newMatrix(t)
	rows := matrixRows()
	t.Run("doc_agrees", func(t *testing.T) { checkMatrixDoc(t, m, rows) })
	for _, r := range rows {
		t.Run(r.key(), func(t *testing.T) { m.runRow(t, r) })
	}
	t.Run("attacker_creds_team_x", func(t *testing.T) { m.attackerCreds(t) })
}

func newMatrix(t *testing.T) *matrix {
	m := &matrix{t: t, sec: map[string]string{}}
	for _, k := range []string{"muc", "ber", "nsc", "app", "other", "evil", "nothing"} {
		m.sec[k] = randomSecret(t, k)
	}
	m.v = startDevVaultWith(t, "vault-matrix", "info", nil)
	m.idp = startIdentity(t, "identity", time.Hour,
		"hotel-muc:"+m.sec["muc"]+":MUC:account.read,reservations.read",
		"hotel-ber:"+m.sec["ber"]+":BER:account.read",
		"hotel-nsc:"+m.sec["nsc"]+":NSC:account.read",
		"connect-app:"+m.sec["app"]+":EXT:reservations.read:"+redirectApp,
		"other-app:"+m.sec["other"]+":OTH:reservations.read:"+redirectApp)
	// The attacker's own server knows the connect app's client id, with their own secret.
	m.evil = startIdentity(t, "identity-attacker", time.Hour, "connect-app:"+m.sec["evil"]+":EVL:reservations.read:"+redirectApp)
	m.idpCA, m.evCA = readPEM(t, m.idp.CAFile), readPEM(t, m.evil.CAFile)
	v := m.v
	v.enablePlugin(t)
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: m.sec["muc"], idp: m.idp, scopes: "account.read reservations.read"})
	v.writeConfig(t, appConfig{name: "hotel-ber", clientID: "hotel-ber", secret: m.sec["ber"], idp: m.idp, scopes: "account.read"})
	v.writeConfig(t, appConfig{name: "hotel-nsc", clientID: "hotel-nsc", secret: m.sec["nsc"], idp: m.idp})
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: m.sec["app"], idp: m.idp,
		grant: "authorization_code", redirect: redirectApp, scopes: "reservations.read"})
	if st, body := m.root(http.MethodPost, "config/hotel-muc/narrowed/muc-reports", map[string]any{"scopes": "reservations.read"}); st/100 != 2 {
		// Code before config/<config>/narrowed/ narrowed at creds/: the fixture still needs one.
		t.Errorf("narrowing at config/hotel-muc/narrowed/muc-reports: %d %s", st, body)
		m.root(http.MethodPost, "creds/muc-reports", map[string]any{"config": "hotel-muc", "scopes": "reservations.read"})
	}
	exchangeFlow(t, v, m.idp, "team-a", "connect")
	exchangeFlow(t, v, m.idp, "team-b", "connect")
	for _, n := range []string{"team-a", "team-b", "hotel-muc", "hotel-ber", "muc-reports"} {
		if st, body := m.root(http.MethodGet, "creds/"+n, nil); st != http.StatusOK {
			t.Fatalf("fixture: root read of creds/%s: %d %s", n, st, body)
		}
	}
	m.baseline = m.fingerprint(t)
	t.Logf("fixture: %s", m.baseline)
	return m
}

func readPEM(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// root calls the API as root; path is below the mount unless it starts with sys/.
func (m *matrix) root(method, path string, body any) (int, []byte) {
	st, b, err := m.v.api(method, apiPath(path), body)
	if err != nil {
		m.t.Logf("root %s %s: %v", method, path, err)
	}
	return st, b
}

func apiPath(p string) string {
	if strings.HasPrefix(p, "sys/") || strings.HasPrefix(p, "auth/") {
		return p
	}
	return mount + "/" + p
}

// fingerprint is what must be the same before and after every row: the configs, the
// credentials with their config, grant type, account and scopes (not their tokens or
// state, which reads change), and each config's identity_url and client_id.
func (m *matrix) fingerprint(t *testing.T) string {
	t.Helper()
	var out []string
	st, body := m.root("LIST", "config/", nil)
	var cl struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if st != http.StatusOK || json.Unmarshal(body, &cl) != nil {
		t.Fatalf("LIST config/: %d %s", st, body)
	}
	for _, k := range cl.Data.Keys {
		_, b := m.root(http.MethodGet, "config/"+k, nil)
		d := dataOf(b)
		out = append(out, fmt.Sprintf("config/%s{%v %v %v}", k, d["client_id"], d["identity_url"], d["scopes"]))
	}
	info := m.v.listDetailed(t)
	for _, n := range slices.Sorted(maps.Keys(info)) {
		i := info[n]
		out = append(out, fmt.Sprintf("creds/%s{%v %v %v %v}", n, i["config"], i["grant_type"], i["account_code"], i["scopes"]))
	}
	return strings.Join(out, " ")
}

// dataOf is the "data" object of a Vault answer (nil if none).
func dataOf(body []byte) map[string]any {
	var r struct {
		Data map[string]any `json:"data"`
	}
	_ = json.Unmarshal(body, &r)
	return r.Data
}

// cell is one row under test: its token and every answer it got.
type cell struct {
	*testing.T
	m       *matrix
	token   string
	answers []string
	// allow says whether an access token in an answer is one this row may reach.
	allow func(jwt string) bool
}

// do calls Vault as the row's token and keeps the answer.
func (c *cell) do(method, path string, body any) (int, []byte) {
	c.Helper()
	st, b, err := c.m.v.apiAs(c.token, method, apiPath(path), body)
	if err != nil {
		c.Errorf("%s %s: %v", method, path, err)
	}
	c.answers = append(c.answers, fmt.Sprintf("%s %s -> %d %s", method, path, st, b))
	return st, b
}

const (
	ok2xx  = -2
	any4xx = -4
)

// want is do that fails unless the status is want (ok2xx, any4xx, or a status).
func (c *cell) want(want int, method, path string, body any) []byte {
	c.Helper()
	st, b := c.do(method, path, body)
	good := st == want || want == ok2xx && st/100 == 2 || want == any4xx && st/100 == 4
	if !good {
		c.Errorf("%s %s: %d, want %s: %s", method, path, st, statusText(want), excerpt(string(b), 400))
	}
	return b
}

func statusText(w int) string {
	switch w {
	case ok2xx:
		return "2xx"
	case any4xx:
		return "4xx"
	}
	return fmt.Sprint(w)
}

// quiet fails the row if the apps' identity server got a request since before.
func (c *cell) quiet(before counts, what string) {
	c.Helper()
	if now := c.m.idp.counts(c.T); now.connect != before.connect {
		c.Errorf("%s made %d requests at the identity server", what, now.connect-before.connect)
	}
}

// counts are an identity server's own counts, the requests in its log included.
type counts struct {
	idpStats
	connect int // lines of its request log for /connect/ endpoints
}

func (i *identity) counts(t *testing.T) counts {
	t.Helper()
	b, _ := os.ReadFile(i.Log)
	return counts{idpStats: i.stats(t), connect: strings.Count(string(b), " /connect/")}
}

// runRow gives the row its policy and token, runs its attempts and checks what every row
// must hold: the attacker's server got nothing, no answer carried a secret or an access
// token the row may not reach, and the fixture is as it was.
func (m *matrix) runRow(t *testing.T, r matrixRow) {
	c := &cell{T: t, m: m, allow: func(string) bool { return false }}
	if r.path != "callback" {
		c.token = m.policyToken(t, r)
	}
	evilBefore, idpBefore := m.evil.counts(t), m.idp.counts(t)
	if r.probe != nil {
		r.probe(c)
	} else {
		probeNothing(c, r)
	}
	if ev := m.evil.counts(t); ev.connect != evilBefore.connect || ev.TokenRequests != evilBefore.TokenRequests {
		t.Errorf("the attacker's identity server got %d requests (%d token requests, %d revocations)",
			ev.connect-evilBefore.connect, ev.TokenRequests-evilBefore.TokenRequests, ev.Revocations-evilBefore.Revocations)
	}
	if r.reachesNothing() {
		if now := m.idp.counts(t); now.connect != idpBefore.connect {
			t.Errorf("a row that reaches nothing made %d requests at the identity server", now.connect-idpBefore.connect)
		}
	}
	m.scan(c)
	if fp := m.fingerprint(t); fp != m.baseline {
		t.Errorf("the row changed the fixture:\n before %s\n after  %s", m.baseline, fp)
	}
}

// policyToken writes a policy granting r.caps on r.grant and nothing else, and returns
// a token holding only it (not even Vault's default policy).
func (m *matrix) policyToken(t *testing.T, r matrixRow) string {
	t.Helper()
	name := "matrix-" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(r.key(), "-")
	var hcl strings.Builder
	caps, _ := json.Marshal(r.caps)
	for _, p := range r.grant {
		fmt.Fprintf(&hcl, "path %q { capabilities = %s }\n", apiPath(p), caps)
	}
	if st, b := m.root(http.MethodPut, "sys/policies/acl/"+name, map[string]any{"policy": hcl.String()}); st/100 != 2 {
		t.Fatalf("policy %s: %d %s", name, st, b)
	}
	st, b := m.root(http.MethodPost, "auth/token/create", map[string]any{"policies": []string{name}, "no_default_policy": true, "ttl": "1h"})
	var tok vaultSecret
	if st != http.StatusOK || json.Unmarshal(b, &tok) != nil || tok.Auth == nil || tok.Auth.ClientToken == "" {
		t.Fatalf("token for %s: %d %s", name, st, b)
	}
	return tok.Auth.ClientToken
}

var jwtRe = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

// scan fails the row for every secret either identity server issued or received (client
// secrets, codes, PKCE verifiers, refresh tokens), every fixture secret, and every access
// token the row may not reach, found in an answer the row's token got.
func (m *matrix) scan(c *cell) {
	c.Helper()
	var secrets []string
	for _, i := range []*identity{m.idp, m.evil} {
		s := i.secrets(c.T)
		secrets = slices.Concat(secrets, s.ClientSecrets, s.AuthorizationCodes, s.CodeVerifiers, s.RefreshTokens)
	}
	for _, s := range m.sec {
		secrets = append(secrets, s)
	}
	for _, a := range c.answers {
		for _, s := range secrets {
			if len(s) >= 8 && strings.Contains(a, s) {
				c.Errorf("an answer carries a secret (%.6s...): %s", s, excerpt(a, 200))
			}
		}
		for _, j := range jwtRe.FindAllString(a, -1) {
			if !c.allow(j) {
				c.Errorf("an answer carries an access token this row may not reach: %s", excerpt(a, 200))
			}
		}
	}
}

// probeNothing tries the row's one operation on its path: Vault must refuse it.
func probeNothing(c *cell, r matrixRow) {
	method := map[string]string{"read": http.MethodGet, "create": http.MethodPost, "update": http.MethodPut,
		"delete": http.MethodDelete, "list": "LIST"}[r.caps[0]]
	body := map[string]any{"config": "hotel-muc", "scopes": "reservations.read", "client_id": "x", "client_secret": c.m.sec["nothing"]}
	if method == http.MethodGet || method == http.MethodDelete || method == "LIST" {
		body = nil
	}
	c.want(any4xx, method, r.grant[0], body)
}

// --- config/

func probeConfigRead(c *cell) {
	d := dataOf(c.want(http.StatusOK, http.MethodGet, "config/hotel-muc", nil))
	if _, has := d["client_secret"]; has || d["client_id"] != "hotel-muc" {
		c.Errorf("config/hotel-muc read: %v", d)
	}
	c.want(http.StatusForbidden, http.MethodGet, "config/hotel-ber", nil)
	c.want(http.StatusForbidden, http.MethodGet, "creds/hotel-muc", nil)
}

// evilConnect is a config of the attacker's: the connect app's client id at their server.
func (m *matrix) evilConnect() map[string]any {
	return map[string]any{"client_id": "connect-app", "client_secret": m.sec["evil"], "grant_type": "authorization_code",
		"redirect_uri": redirectApp, "scopes": "reservations.read", "identity_url": m.evil.URL, "ca_certificate": m.evCA}
}

func probeConfigCreate(c *cell) {
	m := c.m
	c.want(http.StatusForbidden, http.MethodPost, "config/hotel-muc", m.evilConnect()) // it exists: that is update
	cc := m.evilConnect()
	delete(cc, "grant_type")
	delete(cc, "redirect_uri")
	c.want(any4xx, http.MethodPost, "config/muc-reports", cc) // the name of a narrowed credential
	c.want(ok2xx, http.MethodPost, "config/new-app", m.evilConnect())
	c.want(http.StatusForbidden, http.MethodGet, "config/new-app", nil)
	if d := dataOf(second(m.root(http.MethodGet, "config/hotel-muc", nil))); d["identity_url"] != m.idp.URL {
		c.Errorf("config/hotel-muc after the create attempts: %v", d)
	}
	m.root(http.MethodDelete, "config/new-app", nil)
}

func second[A, B any](_ A, b B) B { return b }

// probeConfigUpdate is the attacker (b): a config writer points identity_url at
// a server of their own with a secret of their own. A read that must refresh and a
// delete that revokes follow; the attacker's server must get neither, and writing the
// config back revives the credential.
func probeConfigUpdate(c *cell) {
	m, t := c.m, c.T
	exchangeFlow(t, m.v, m.idp, "victim-r", "connect")
	exchangeFlow(t, m.v, m.idp, "victim-d", "connect")
	m.root(http.MethodGet, "creds/victim-r", nil)

	c.want(any4xx, http.MethodPut, "config/hotel-muc", map[string]any{"identity_url": m.evil.URL, "ca_certificate": m.evCA})
	c.want(ok2xx, http.MethodPut, "config/connect", map[string]any{"identity_url": m.evil.URL, "ca_certificate": m.evCA, "client_secret": m.sec["evil"]})
	st, body := m.root(http.MethodGet, "creds/victim-r", nil)
	t.Logf("read of creds/victim-r under the attacker's identity_url: %d %s", st, excerpt(string(body), 300))
	if st == http.StatusOK {
		t.Errorf("creds/victim-r read under the attacker's identity_url answered a token")
	}
	st, body = m.root(http.MethodDelete, "creds/victim-d", nil)
	t.Logf("delete of creds/victim-d under the attacker's identity_url: %d %s", st, excerpt(string(body), 300))
	ev := m.evil.counts(t)
	t.Logf("the attacker's identity server: %d token requests, %d revocations, %d /connect/ requests, %d refresh tokens received",
		ev.TokenRequests, ev.Revocations, ev.connect, len(m.evil.secrets(t).RefreshTokens))
	if n := len(m.evil.secrets(t).RefreshTokens); n != 0 {
		t.Errorf("the attacker's identity server received %d refresh tokens", n)
	}

	// Another app at the real server: the refresh token is not sent with its client id.
	c.want(ok2xx, http.MethodPut, "config/connect", map[string]any{"client_id": "other-app", "client_secret": m.sec["other"],
		"identity_url": m.idp.URL, "ca_certificate": m.idpCA})
	if st, _ := m.root(http.MethodGet, "creds/victim-r", nil); st == http.StatusOK {
		t.Errorf("creds/victim-r read under client_id other-app answered a token")
	}
	if n := m.idp.stats(t).ByClient["other-app"]; n != 0 {
		t.Errorf("the identity server got %d token requests naming other-app", n)
	}

	// The operator writes the config back: the credential works again.
	m.root(http.MethodPut, "config/connect", map[string]any{"client_id": "connect-app", "client_secret": m.sec["app"],
		"identity_url": m.idp.URL, "ca_certificate": m.idpCA})
	st, body = m.root(http.MethodGet, "creds/victim-r", nil)
	if st != http.StatusOK {
		t.Errorf("creds/victim-r after the config was written back: %d %s", st, excerpt(string(body), 300))
	}
	m.root(http.MethodDelete, "creds/victim-r", nil)
	m.root(http.MethodDelete, "creds/victim-d", nil)
}

func probeConfigDelete(c *cell) {
	m := c.m
	m.v.writeConfig(c.T, appConfig{name: "spare", clientID: "hotel-ber", secret: m.sec["ber"], idp: m.idp, scopes: "account.read"})
	before := m.idp.counts(c.T)
	c.want(any4xx, http.MethodDelete, "config/hotel-muc", nil) // its narrowed credential uses it
	c.want(any4xx, http.MethodDelete, "config/connect", nil)   // authorized credentials use it
	c.want(ok2xx, http.MethodDelete, "config/spare", nil)
	if st, _ := m.root(http.MethodGet, "config/spare", nil); st == http.StatusOK {
		c.Errorf("config/spare still there after its delete")
	}
	c.quiet(before, "config deletes")
}

func probeConfigList(c *cell) {
	keys := dataOf(c.want(http.StatusOK, "LIST", "config/", nil))["keys"]
	if s := fmt.Sprint(keys); !strings.Contains(s, "hotel-muc") || !strings.Contains(s, "connect") {
		c.Errorf("LIST config/: %v", keys)
	}
}

// --- config/<config>/narrowed/

func probeNarrowCreate(c *cell) {
	m := c.m
	before := m.idp.counts(c.T)
	c.want(http.StatusForbidden, http.MethodPost, "config/hotel-ber/narrowed/team-x", map[string]any{"scopes": "account.read"})
	c.want(http.StatusForbidden, http.MethodPost, "config/hotel-muc/narrowed/team-y", map[string]any{"scopes": "reservations.read"})
	c.want(http.StatusForbidden, http.MethodPost, "creds/team-x", map[string]any{"config": "hotel-ber", "scopes": "account.read"})
	c.want(any4xx, http.MethodPost, "config/hotel-muc/narrowed/team-x", map[string]any{"scopes": "reservations.read rateplans.manage"})
	c.want(any4xx, http.MethodPost, "config/hotel-nsc/narrowed/team-x", map[string]any{"scopes": "account.read"}) // lists no scopes
	c.want(any4xx, http.MethodPost, "config/hotel-muc/narrowed/team-a", map[string]any{"scopes": "reservations.read"})
	c.want(any4xx, http.MethodPost, "config/connect/narrowed/team-x", map[string]any{"scopes": "reservations.read"}) // not client credentials
	c.want(ok2xx, http.MethodPost, "config/hotel-muc/narrowed/team-x", map[string]any{"scopes": "reservations.read"})
	c.want(http.StatusForbidden, http.MethodGet, "creds/team-x", nil)
	c.quiet(before, "narrowing")
	// What it made is hotel-muc's app with the scopes asked, nothing more.
	st, b := m.root(http.MethodGet, "creds/team-x", nil)
	if d := dataOf(b); st != http.StatusOK || d["client_id"] != "hotel-muc" || fmt.Sprint(d["scopes"]) != "[reservations.read]" {
		c.Errorf("root read of the narrowed creds/team-x: %d %v", st, d)
	}
	m.root(http.MethodDelete, "config/hotel-muc/narrowed/team-x", nil)
	m.root(http.MethodDelete, "creds/team-x", nil)
}

func probeNarrowRead(c *cell) {
	d := dataOf(c.want(http.StatusOK, http.MethodGet, "config/hotel-muc/narrowed/muc-reports", nil))
	if d["config"] != "hotel-muc" || fmt.Sprint(d["scopes"]) != "[reservations.read]" {
		c.Errorf("read of the narrowed credential: %v", d)
	}
	c.want(http.StatusForbidden, http.MethodGet, "creds/muc-reports", nil)
}

func probeNarrowDelete(c *cell) {
	m := c.m
	if st, b := m.root(http.MethodPost, "config/hotel-muc/narrowed/spare-n", map[string]any{"scopes": "reservations.read"}); st/100 != 2 {
		c.Fatalf("root narrowing spare-n: %d %s", st, b)
	}
	m.root(http.MethodGet, "creds/spare-n", nil)
	before := m.idp.counts(c.T)
	c.want(http.StatusForbidden, http.MethodDelete, "config/hotel-muc/narrowed/muc-reports", nil)
	c.want(ok2xx, http.MethodDelete, "config/hotel-muc/narrowed/spare-n", nil)
	if st, _ := m.root(http.MethodGet, "creds/spare-n", nil); st == http.StatusOK {
		c.Errorf("creds/spare-n readable after its narrowed delete")
	}
	c.quiet(before, "deleting a narrowed credential")
}

func probeNarrowList(c *cell) {
	if keys := fmt.Sprint(dataOf(c.want(http.StatusOK, "LIST", "config/hotel-muc/narrowed/", nil))["keys"]); keys != "[muc-reports]" {
		c.Errorf("LIST config/hotel-muc/narrowed/: %s", keys)
	}
	c.want(http.StatusForbidden, "LIST", "config/hotel-ber/narrowed/", nil)
}

// --- creds/

func probeCredsRead(c *cell) {
	m := c.m
	var s vaultSecret
	_ = json.Unmarshal(c.want(http.StatusOK, http.MethodGet, "creds/team-a", nil), &s)
	tok := s.str("access_token")
	_, rb := m.root(http.MethodGet, "creds/team-a", nil)
	var root vaultSecret
	_ = json.Unmarshal(rb, &root)
	c.allow = func(j string) bool { return j == tok && j == root.str("access_token") }
	if tok == "" || !strings.HasPrefix(s.LeaseID, mount+"/creds/team-a/") || jwtClaims(c.T, tok)["client_id"] != "connect-app" {
		c.Errorf("creds/team-a read: lease %q, token for %v", s.LeaseID, s.Data["client_id"])
	}
	for _, other := range []string{"team-b", "hotel-muc", "muc-reports"} {
		c.want(http.StatusForbidden, http.MethodGet, "creds/"+other, nil)
	}
}

func probeCredsCreate(c *cell) {
	m := c.m
	before := m.idp.counts(c.T)
	b := c.want(http.StatusBadRequest, http.MethodPost, "creds/team-x", map[string]any{"config": "hotel-muc", "scopes": "reservations.read"})
	if !strings.Contains(string(b), "config/hotel-muc/narrowed/team-x") {
		c.Errorf("a creds/ create naming a client-credentials config does not name config/hotel-muc/narrowed/team-x: %s", b)
	}
	c.want(http.StatusBadRequest, http.MethodPost, "creds/team-x", map[string]any{"config": "hotel-nsc"})
	c.want(http.StatusForbidden, http.MethodPost, "creds/team-a", map[string]any{"config": "connect", "refresh_token": randomSecret(c.T, "bogus")})
	c.quiet(before, "refused creds/ creates")
	// An import of a refresh token the writer does not hold for the app: refused.
	c.want(any4xx, http.MethodPost, "creds/team-x", map[string]any{"config": "connect", "refresh_token": randomSecret(c.T, "bogus")})
	if st, _ := m.root(http.MethodGet, "creds/team-x", nil); st == http.StatusOK {
		c.Errorf("creds/team-x exists after refused creates")
		m.root(http.MethodDelete, "creds/team-x", nil)
	}
}

func probeCredsUpdate(c *cell) {
	m := c.m
	before := m.idp.counts(c.T)
	c.want(http.StatusBadRequest, http.MethodPut, "creds/team-a", map[string]any{"config": "connect", "refresh_token": randomSecret(c.T, "bogus")})
	c.want(http.StatusForbidden, http.MethodPut, "creds/team-x", map[string]any{"config": "hotel-muc", "scopes": "reservations.read"})
	c.quiet(before, "refused creds/ updates")
}

func probeCredsDelete(c *cell) {
	m, t := c.m, c.T
	exchangeFlow(t, m.v, m.idp, "victim-del", "connect")
	before := m.idp.counts(t)
	c.want(ok2xx, http.MethodDelete, "creds/victim-del", nil)
	if now := m.idp.counts(t); now.Revocations != before.Revocations+1 || now.TokenRequests != before.TokenRequests {
		t.Errorf("delete of an authorized credential: %d revocations, %d token requests at its identity server, want 1 and 0",
			now.Revocations-before.Revocations, now.TokenRequests-before.TokenRequests)
	}
	if st, _ := m.root(http.MethodGet, "creds/victim-del", nil); st == http.StatusOK {
		t.Errorf("creds/victim-del readable after its delete")
	}
	// A client-credentials name: only its cached token goes; the config stays readable.
	c.want(ok2xx, http.MethodDelete, "creds/hotel-ber", nil)
	c.want(http.StatusForbidden, http.MethodDelete, "creds/team-a", nil)
	if st, b := m.root(http.MethodGet, "creds/hotel-ber", nil); st != http.StatusOK {
		t.Errorf("creds/hotel-ber after its delete: %d %s", st, excerpt(string(b), 300))
	}
	// A narrowed name: it goes, and nothing is sent anywhere.
	if st, b := m.root(http.MethodPost, "config/hotel-muc/narrowed/spare-nd", map[string]any{"scopes": "reservations.read"}); st/100 != 2 {
		t.Errorf("root narrowing spare-nd: %d %s", st, b)
	}
	before = m.idp.counts(t)
	c.want(ok2xx, http.MethodDelete, "creds/spare-nd", nil)
	c.quiet(before, "deleting a narrowed name at creds/")
	if st, _ := m.root(http.MethodGet, "config/hotel-muc/narrowed/spare-nd", nil); st == http.StatusOK {
		t.Errorf("config/hotel-muc/narrowed/spare-nd still there after creds/spare-nd was deleted")
	}
}

func probeCredsList(c *cell) {
	keys := fmt.Sprint(dataOf(c.want(http.StatusOK, "LIST", "creds/", nil))["keys"])
	for _, n := range []string{"team-a", "team-b", "hotel-muc", "muc-reports"} {
		if !strings.Contains(keys, n) {
			c.Errorf("LIST creds/ lacks %s: %s", n, keys)
		}
	}
}

// --- authorize/, callback, exchange

// probeAuthorize is the case (c): authorize/<name> called again and again leaves
// one live pending authorization of the name. Every earlier link's code, redeemed at
// callback or exchange, is refused without an exchange at the identity server; the
// last one's is exchanged, once.
func probeAuthorize(c *cell) {
	m, t := c.m, c.T
	c.want(http.StatusBadRequest, http.MethodPost, "authorize/team-x", map[string]any{"config": "hotel-muc"})
	c.want(http.StatusForbidden, http.MethodPost, "authorize/team-a", map[string]any{"config": "connect"})
	const calls = 4
	var links []*url.URL
	var states []string
	for range calls {
		var s vaultSecret
		_ = json.Unmarshal(c.want(http.StatusOK, http.MethodPost, "authorize/team-x", map[string]any{"config": "connect"}), &s)
		u, err := url.Parse(s.str("auth_url"))
		if err != nil || s.str("state") == "" {
			t.Fatalf("authorize/team-x: %v %v", err, s.Data)
		}
		links, states = append(links, u), append(states, s.str("state"))
	}
	before := m.idp.stats(t).ByGrant["authorization_code"]
	for i := range calls - 1 {
		code := redirectFromIdentity(t, m.idp, links[i]).Query().Get("code")
		if i == 0 {
			p := getPage(t, plainClient, m.v.Addr+"/v1/"+mount+"/callback?"+url.Values{"state": {states[i]}, "code": {code}}.Encode())
			c.answers = append(c.answers, p.body)
			if p.status/100 != 4 || !strings.Contains(p.body, "team-x") {
				t.Errorf("callback with a superseded state: %d %s", p.status, excerpt(p.body, 400))
			}
			continue
		}
		if st, b := m.root(http.MethodPost, "exchange", map[string]any{"state": states[i], "code": code}); st/100 != 4 {
			t.Errorf("exchange of superseded authorization %d: %d %s", i+1, st, excerpt(string(b), 300))
		}
	}
	if n := m.idp.stats(t).ByGrant["authorization_code"] - before; n != 0 {
		t.Errorf("%d superseded authorizations of team-x exchanged their code at the identity server, want 0", n)
	}
	code := redirectFromIdentity(t, m.idp, links[calls-1]).Query().Get("code")
	if st, b := m.root(http.MethodPost, "exchange", map[string]any{"state": states[calls-1], "code": code}); st != http.StatusOK {
		t.Errorf("exchange of the live authorization: %d %s", st, excerpt(string(b), 300))
	}
	if n := m.idp.stats(t).ByGrant["authorization_code"] - before; n != 1 {
		t.Errorf("%d code exchanges at the identity server after %d authorize/team-x calls, want 1", n, calls)
	}
	m.root(http.MethodDelete, "creds/team-x", nil)
}

var plainClient = &http.Client{Timeout: 30 * time.Second}

func probeCallback(c *cell) {
	m := c.m
	before := m.idp.counts(c.T)
	base := m.v.Addr + "/v1/" + mount + "/callback?"
	for _, q := range []url.Values{
		{"state": {"forged"}, "code": {"x"}},
		{"state": {"forged"}, "error": {"access_denied"}, "error_description": {"call evil.example"}},
		{"code": {"x"}},
	} {
		p := getPage(c.T, plainClient, base+q.Encode())
		c.answers = append(c.answers, p.body)
		if p.status/100 != 4 || strings.Contains(p.body, "evil.example") {
			c.Errorf("callback?%s: %d %s", q.Encode(), p.status, excerpt(p.body, 300))
		}
	}
	c.quiet(before, "callbacks without a live state")
}

func probeExchange(c *cell) {
	m, t := c.m, c.T
	authURL, state := m.v.authorize(t, "victim-x", "connect")
	code := redirectFromIdentity(t, m.idp, authURL).Query().Get("code")
	before := m.idp.counts(t)
	c.want(http.StatusBadRequest, http.MethodPost, "exchange", map[string]any{"state": "forged-" + state[:8], "code": code})
	c.quiet(before, "an exchange with a forged state")
	d := dataOf(c.want(http.StatusOK, http.MethodPost, "exchange", map[string]any{"state": state, "code": code}))
	if _, has := d["access_token"]; has || d["name"] != "victim-x" {
		t.Errorf("exchange answered %v", d)
	}
	c.want(http.StatusForbidden, http.MethodGet, "creds/victim-x", nil)
	m.root(http.MethodDelete, "creds/victim-x", nil)
}

func probeMetrics(c *cell) {
	b := string(c.want(http.StatusOK, http.MethodGet, "metrics", nil))
	if !strings.Contains(b, "vault_apaleo_") {
		c.Errorf("metrics: no vault_apaleo_ series: %s", excerpt(b, 300))
	}
	for _, name := range []string{"team-a", "team-b", "muc-reports"} {
		if strings.Contains(b, name) {
			c.Errorf("metrics carry the credential name %s", name)
		}
	}
}

// --- sys/leases

// rootLease is the lease id of a new root read of creds/team-a, and its token.
func (m *matrix) rootLease(t *testing.T) (string, string) {
	t.Helper()
	st, b := m.root(http.MethodGet, "creds/team-a", nil)
	var s vaultSecret
	if st != http.StatusOK || json.Unmarshal(b, &s) != nil || s.LeaseID == "" {
		t.Fatalf("root read of creds/team-a: %d %s", st, excerpt(string(b), 300))
	}
	return s.LeaseID, s.str("access_token")
}

func probeLeaseLookup(c *cell) {
	lease, _ := c.m.rootLease(c.T)
	if d := dataOf(c.want(http.StatusOK, http.MethodPut, "sys/leases/lookup", map[string]any{"lease_id": lease})); d["id"] != lease {
		c.Errorf("lease lookup: %v", d)
	}
}

func probeLeaseRenew(c *cell) {
	lease, _ := c.m.rootLease(c.T)
	var s vaultSecret
	_ = json.Unmarshal(c.want(http.StatusOK, http.MethodPut, "sys/leases/renew", map[string]any{"lease_id": lease}), &s)
	if s.LeaseID != lease || len(s.Data) != 0 {
		c.Errorf("renewal answered lease %q, data %v", s.LeaseID, s.Data)
	}
}

func probeLeaseRevoke(c *cell) {
	m := c.m
	lease, tok := m.rootLease(c.T)
	before := m.idp.counts(c.T)
	c.want(ok2xx, http.MethodPut, "sys/leases/revoke", map[string]any{"lease_id": lease})
	if st, _ := m.root(http.MethodPut, "sys/leases/lookup", map[string]any{"lease_id": lease}); st == http.StatusOK {
		c.Errorf("the lease is still there after its revoke")
	}
	if _, again := m.rootLease(c.T); again != tok {
		c.Errorf("a lease revoke changed the cached token")
	}
	c.quiet(before, "a lease revoke")
}

func probeLeaseList(c *cell) {
	lease, _ := c.m.rootLease(c.T)
	keys := fmt.Sprint(dataOf(c.want(http.StatusOK, "LIST", "sys/leases/lookup/"+mount+"/creds/team-a/", nil))["keys"])
	if !strings.Contains(keys, strings.TrimPrefix(lease, mount+"/creds/team-a/")) {
		c.Errorf("lease list of creds/team-a lacks %s: %s", lease, keys)
	}
	c.want(http.StatusForbidden, "LIST", "sys/leases/lookup/"+mount+"/creds/team-b/", nil)
}

func probeLeaseRevokePrefix(c *cell) {
	m := c.m
	m.rootLease(c.T)
	before := m.idp.counts(c.T)
	c.want(ok2xx, http.MethodPut, "sys/leases/revoke-prefix/"+mount+"/creds/team-a", nil)
	c.want(http.StatusForbidden, http.MethodPut, "sys/leases/revoke-prefix/"+mount+"/creds/team-b", nil)
	if n := countLeasesOf(c.T, m.v, "team-a"); n != 0 {
		c.Errorf("%d leases of creds/team-a left after revoke-prefix", n)
	}
	c.quiet(before, "revoke-prefix")
}

// attackerCreds is the attacker (a): create, read and update on creds/team-x
// only. Writing creds/team-x config=hotel-muc is refused, and no answer carries any
// app's token; the identity server gets no request naming hotel-muc's client.
func (m *matrix) attackerCreds(t *testing.T) {
	r := matrixRow{path: "creds/<name>", caps: []string{"create", "read", "update"}, grant: []string{"creds/team-x"}}
	c := &cell{T: t, m: m, allow: func(string) bool { return false }, token: m.policyToken(t, r)}
	before := m.idp.counts(t)
	for _, cfg := range []string{"hotel-muc", "hotel-ber", "hotel-nsc"} {
		c.want(http.StatusBadRequest, http.MethodPost, "creds/team-x", map[string]any{"config": cfg, "scopes": "reservations.read"})
		c.want(any4xx, http.MethodGet, "creds/team-x", nil)
		c.want(any4xx, http.MethodPut, "creds/team-x", map[string]any{"config": cfg})
		c.want(any4xx, http.MethodGet, "creds/team-x", nil)
	}
	now := m.idp.counts(t)
	for _, client := range []string{"hotel-muc", "hotel-ber", "hotel-nsc"} {
		if n := now.ByClient[client] - before.ByClient[client]; n != 0 {
			t.Errorf("the identity server got %d token requests of %s from a creds/team-x writer", n, client)
		}
	}
	m.scan(c)
	if st, _ := m.root(http.MethodGet, "creds/team-x", nil); st == http.StatusOK {
		t.Errorf("creds/team-x exists after the attacker's writes")
		m.root(http.MethodDelete, "creds/team-x", nil)
	}
	if fp := m.fingerprint(t); fp != m.baseline {
		t.Errorf("the attacker changed the fixture:\n before %s\n after  %s", m.baseline, fp)
	}
}

// --- the table and the API

// docRow is one row of the table in docs/security.md.
type docRow struct{ path, caps, reaches string }

func (r docRow) key() string { return normKey(r.path + " " + r.caps) }

// readMatrixDoc parses the capability matrix table of docs/security.md.
func readMatrixDoc(t *testing.T) []docRow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, found := strings.Cut(string(b), "\n"+matrixDoc+"\n")
	if !found {
		t.Fatalf("docs/security.md has no %q section", matrixDoc)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	tick := regexp.MustCompile("`([^`]+)`")
	var rows []docRow
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if !strings.HasPrefix(line, "| `") || len(cells) != 4 {
			continue
		}
		var caps []string
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			caps = append(caps, m[1])
		}
		rows = append(rows, docRow{path: strings.Trim(cells[0], "`"), caps: strings.Join(caps, "+"), reaches: cells[2]})
	}
	if len(rows) == 0 {
		t.Fatal("docs/security.md: the capability matrix has no rows")
	}
	return rows
}

// checkMatrixDoc: the doc's rows and the test's are the same (a row that reaches nothing
// in one says so in the other), and every path of the mount's OpenAPI document has a
// row per capability, whose "nothing" matches whether the path serves the operation.
func checkMatrixDoc(t *testing.T, m *matrix, rows []matrixRow) {
	doc := map[string]docRow{}
	for _, r := range readMatrixDoc(t) {
		if _, dup := doc[r.key()]; dup {
			t.Errorf("docs/security.md: two rows for %s", r.key())
		}
		doc[r.key()] = r
	}
	tested := map[string]bool{}
	for _, r := range rows {
		k := normKey(r.key())
		tested[k] = true
		d, ok := doc[k]
		switch {
		case !ok:
			t.Errorf("the test has a row %q that docs/security.md lacks", r.key())
		case strings.HasPrefix(d.reaches, "nothing") != r.reachesNothing():
			t.Errorf("%s: docs/security.md says %q, the test's row reaches nothing: %v", r.key(), excerpt(d.reaches, 60), r.reachesNothing())
		}
	}
	for k := range doc {
		if !tested[k] {
			t.Errorf("docs/security.md has a row %q that the test does not walk", k)
		}
	}
	served := servedOps(t, m.v)
	for path, ops := range served {
		if ops["unauthenticated"] {
			if _, ok := doc[path+" unauthenticated"]; !ok {
				t.Errorf("the unauthenticated path %s has no row", path)
			}
			continue
		}
		for _, capability := range matrixCaps {
			d, ok := doc[path+" "+capability]
			if !ok {
				t.Errorf("the mount serves %s, and docs/security.md has no row for its %s", path, capability)
				continue
			}
			want := ops[capability]
			if capability == "create" || capability == "update" {
				// One OpenAPI operation (post) serves both; the path's existence check
				// decides which: one of the two rows reaches something.
				other := doc[path+" "+map[string]string{"create": "update", "update": "create"}[capability]]
				if reaches := !strings.HasPrefix(d.reaches, "nothing") || !strings.HasPrefix(other.reaches, "nothing"); reaches != want {
					t.Errorf("%s: the mount serves a write: %v, docs/security.md's create/update rows reach something: %v", path, want, reaches)
				}
				continue
			}
			if reaches := !strings.HasPrefix(d.reaches, "nothing"); reaches != want {
				t.Errorf("%s %s: the mount serves it: %v, docs/security.md says it reaches something: %v", path, capability, want, reaches)
			}
		}
	}
	for k, d := range doc {
		if !strings.HasPrefix(d.path, "sys/") && served[normKey(d.path)] == nil {
			t.Errorf("docs/security.md has a row %q for a path the mount does not serve", k)
		}
	}
	t.Logf("%d rows in docs/security.md, %d walked, %d paths in the mount's OpenAPI document", len(doc), len(rows), len(served))
}

// servedOps are the mount's paths, keyed by normKey ("config/<>/narrowed/"), from its
// OpenAPI document, each with the capabilities it serves: read, list, create and update
// (a write), delete, or unauthenticated.
func servedOps(t *testing.T, v *vault) map[string]map[string]bool {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(mountOpenAPI(t, v), &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for p, item := range doc.Paths {
		path := normKey(strings.TrimPrefix(p, "/"))
		ops := map[string]bool{}
		if string(item["x-vault-unauthenticated"]) == "true" {
			ops["unauthenticated"] = true
		}
		if get, ok := item["get"]; ok {
			var op struct {
				Parameters []struct{ Name, In string } `json:"parameters"`
			}
			_ = json.Unmarshal(get, &op)
			if slices.ContainsFunc(op.Parameters, func(p struct{ Name, In string }) bool { return p.Name == "list" && p.In == "query" }) {
				ops["list"] = true
			} else {
				ops["read"] = true
			}
		}
		if _, ok := item["post"]; ok {
			ops["create"], ops["update"] = true, true
		}
		if _, ok := item["delete"]; ok {
			ops["delete"] = true
		}
		out[path] = ops
	}
	return out
}
