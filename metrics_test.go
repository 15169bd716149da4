package apaleo

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin/pb"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/promtext"
)

// sample is one series of a scrape: a counter's or gauge's value, or a histogram's
// _bucket, _sum or _count.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition parses Prometheus text as a scraper would and flattens it.
func parseExposition(t *testing.T, body []byte) []sample {
	t.Helper()
	ss, err := promtext.Parse(body)
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, body)
	}
	out := make([]sample, len(ss))
	for i, s := range ss {
		out[i] = sample{s.Name, s.Labels, s.Value}
	}
	return out
}

// sum adds the samples of name whose labels include want.
func sum(samples []sample, name string, want map[string]string) float64 {
	var total float64
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			total += s.value
		}
	}
	return total
}

// countsOf is the credentials gauge's counts of config -> state -> count.
func countsOf(byConfig map[string]map[string]int) map[string]*stateCounts {
	out := map[string]*stateCounts{}
	for config, byState := range byConfig {
		c := new(stateCounts)
		for state, n := range byState {
			i := slices.Index(credentialStateNames[:], state)
			if i < 0 {
				panic("no credential state " + state)
			}
			c[i] = n
		}
		out[config] = c
	}
	return out
}

// of is the count of state.
func (s *stateCounts) of(state string) int {
	return s[slices.Index(credentialStateNames[:], state)]
}

// overGRPC sends resp the way an external plugin's response reaches Vault (as JSON, in
// the SDK's protobuf translation) and decodes its raw body the way Vault's respondRaw
// does: a string is base64, else taken as is; a []byte as is; anything else is a 500.
func overGRPC(t *testing.T, resp *logical.Response) (status any, contentType any, body []byte) {
	t.Helper()
	pr, err := pb.LogicalResponseToProtoResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pb.ProtoResponseToLogicalResponse(pr)
	if err != nil {
		t.Fatal(err)
	}
	switch raw := got.Data[logical.HTTPRawBody].(type) {
	case string:
		if body, err = base64.StdEncoding.DecodeString(raw); err != nil {
			body = []byte(raw)
		}
	case []byte:
		body = raw
	default:
		t.Fatalf("raw body arrives at Vault as %T: Vault answers 500 (cannot decode body)", raw)
	}
	return got.Data[logical.HTTPStatusCode], got.Data[logical.HTTPContentType], body
}

// scrape reads metrics through the backend, checks the raw response and parses it.
func (e *testEnv) scrape() []sample {
	e.t.Helper()
	resp := e.mustDo(logical.ReadOperation, "metrics", nil)
	status, ct, wire := overGRPC(e.t, resp)
	text, ok := resp.Data[logical.HTTPRawBody].([]byte)
	if !ok {
		e.t.Fatalf("raw body is %T, want []byte (bytes cross gRPC as base64, which Vault decodes)", resp.Data[logical.HTTPRawBody])
	}
	if fmt.Sprint(status) != "200" || ct != resp.Data[logical.HTTPContentType] || !bytes.Equal(wire, text) {
		e.t.Errorf("over gRPC: status %v, content type %v, body %d bytes; want what the plugin sent", status, ct, len(wire))
	}
	if got := resp.Data[logical.HTTPContentType]; got != "text/plain; version=0.0.4" {
		e.t.Errorf("content type %v", got)
	}
	if got := resp.Data[logical.HTTPStatusCode]; got != http.StatusOK {
		e.t.Errorf("status %v", got)
	}
	if resp.Secret != nil || resp.Auth != nil {
		e.t.Error("a raw response must carry neither a secret nor auth: Vault refuses it")
	}
	if resp.Headers != nil {
		e.t.Errorf("headers %v on a scrape that did not ask for gzip", resp.Headers)
	}
	return parseExposition(e.t, wire)
}

func TestMetrics_Read(t *testing.T) {
	e := newTestEnv(t)
	m := e.b.metrics
	invalidClient := &upstreamError{Status: 401, Code: "invalid_client", Answered: true}
	m.tokenRequest("hotel-muc", "client_credentials", triggerRead, nil, 40*time.Millisecond)
	m.tokenRequest("hotel-muc", "client_credentials", triggerRead, nil, 3*time.Second)
	m.tokenRequest("hotel-muc", "client_credentials", triggerRead, invalidClient, 20*time.Millisecond)
	m.tokenRequest("connect", "refresh_token", triggerRefreshAhead, nil, 70*time.Millisecond)
	m.tokenRequest("connect", "authorization_code", triggerCallback, nil, 90*time.Millisecond)
	for range 5 {
		m.credsRead("hotel-muc", readCached)
	}
	m.credsRead("hotel-muc", readFetched)
	m.credsRead("hotel-muc", readError)
	m.credsRead("connect", readStale)
	// Credential names (hotel-ber-0815) live only in the engine; the gauge gets counts per config.
	m.credentialStates(func() map[string]*stateCounts {
		return countsOf(map[string]map[string]int{"hotel-muc": {"ok": 1}, "connect": {"ok": 2, "needs_authorization": 1}})
	}, nil)

	got := e.scrape()
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vault_apaleo_token_requests_total", map[string]string{"config": "hotel-muc", "grant_type": "client_credentials", "trigger": "read", "outcome": "success"}, 2},
		{"vault_apaleo_token_requests_total", map[string]string{"config": "hotel-muc", "outcome": "invalid_client"}, 1},
		{"vault_apaleo_token_requests_total", map[string]string{"config": "connect", "grant_type": "refresh_token", "trigger": "refresh_ahead"}, 1},
		{"vault_apaleo_token_requests_total", map[string]string{"config": "connect", "grant_type": "authorization_code", "trigger": "callback"}, 1},
		{"vault_apaleo_token_requests_total", nil, 5},
		{"vault_apaleo_token_request_duration_seconds_count", map[string]string{"grant_type": "client_credentials"}, 3},
		{"vault_apaleo_token_request_duration_seconds_sum", map[string]string{"grant_type": "client_credentials"}, 3.06},
		{"vault_apaleo_token_request_duration_seconds_bucket", map[string]string{"grant_type": "client_credentials", "le": "0.05"}, 2},
		{"vault_apaleo_token_request_duration_seconds_bucket", map[string]string{"grant_type": "client_credentials", "le": "5"}, 3},
		{"vault_apaleo_token_request_duration_seconds_bucket", map[string]string{"grant_type": "client_credentials", "le": "+Inf"}, 3},
		{"vault_apaleo_creds_reads_total", map[string]string{"config": "hotel-muc", "result": "cached"}, 5},
		{"vault_apaleo_creds_reads_total", map[string]string{"config": "hotel-muc", "result": "fetched"}, 1},
		{"vault_apaleo_creds_reads_total", map[string]string{"config": "hotel-muc", "result": "error"}, 1},
		{"vault_apaleo_creds_reads_total", map[string]string{"config": "connect", "result": "stale"}, 1},
		{"vault_apaleo_credentials", map[string]string{"config": "connect", "state": "ok"}, 2},
		{"vault_apaleo_credentials", map[string]string{"config": "connect", "state": "needs_authorization"}, 1},
		{"vault_apaleo_credentials", map[string]string{"config": "hotel-muc", "state": "failing"}, 0},
	}
	for _, c := range checks {
		if v := sum(got, c.name, c.labels); fmt.Sprintf("%.3f", v) != fmt.Sprintf("%.3f", c.want) {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}

	// Every label is one of the fixed set, and every value a config name or a known enum.
	allowed := map[string][]string{
		"config":     {"hotel-muc", "connect"},
		"grant_type": {"client_credentials", "refresh_token", "authorization_code"},
		"trigger":    {"read", "refresh_ahead", "callback", "exchange", "import"},
		"result":     {"cached", "fetched", "stale", "error"},
		"state":      {"ok", "no_token", "failing", "needs_authorization"},
	}
	for _, s := range got {
		for k, v := range s.labels {
			switch k {
			case "le":
			case "outcome":
				if v != "success" && outcomeOf(&upstreamError{Code: v, Status: 400}) != v {
					t.Errorf("%s: outcome %q is not an outcome class", s.name, v)
				}
			default:
				if !slices.Contains(allowed[k], v) {
					t.Errorf("%s: label %s=%q not allowed", s.name, k, v)
				}
			}
		}
	}
	body := []byte(e.mustDo(logical.ReadOperation, "metrics", nil).Data[logical.HTTPRawBody].([]byte))
	for _, secret := range []string{"hotel-ber-0815", mucSecret, connectSc} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("the metrics text holds %q", secret)
		}
	}
	// Help texts say the counts are the node's own.
	for _, name := range []string{"vault_apaleo_token_requests_total", "vault_apaleo_creds_reads_total", "vault_apaleo_token_request_duration_seconds"} {
		if !regexp.MustCompile(`(?m)^# HELP ` + name + ` .*this Vault node`).Match(body) {
			t.Errorf("HELP of %s does not say it is per Vault node", name)
		}
	}
}

// TestMetrics_CredentialsGauge: the gauge is the callback's answer at scrape time: ok
// for every config (zero too), other states only where they hold credentials, and
// nothing left from before.
func TestMetrics_CredentialsGauge(t *testing.T) {
	e := newTestEnv(t)
	states := map[string]map[string]int{"hotel-muc": {"ok": 0, "no_token": 1}, "connect": {"ok": 3, "failing": 1, "needs_authorization": 2}}
	calls := 0
	e.b.metrics.credentialStates(func() map[string]*stateCounts { calls++; return countsOf(states) }, nil)

	got := e.scrape()
	if calls != 1 {
		t.Errorf("callback called %d times for one scrape", calls)
	}
	for config, byState := range states {
		for _, state := range []string{"ok", "no_token", "failing", "needs_authorization"} {
			present := slices.ContainsFunc(got, func(s sample) bool {
				return s.name == "vault_apaleo_credentials" && s.labels["config"] == config && s.labels["state"] == state
			})
			if want := state == "ok" || byState[state] > 0; present != want {
				t.Errorf("credentials{config=%s,state=%s} present %v, want %v", config, state, present, want)
			}
			if v := sum(got, "vault_apaleo_credentials", map[string]string{"config": config, "state": state}); v != float64(byState[state]) {
				t.Errorf("credentials{config=%s,state=%s} = %v, want %d", config, state, v, byState[state])
			}
		}
	}
	states = map[string]map[string]int{"connect": {"ok": 6}}
	got = e.scrape()
	if v := sum(got, "vault_apaleo_credentials", map[string]string{"config": "hotel-muc"}); v != 0 || slices.ContainsFunc(got, func(s sample) bool { return s.labels["config"] == "hotel-muc" }) {
		t.Error("a config gone from the callback's answer is still reported")
	}
	if v := sum(got, "vault_apaleo_credentials", map[string]string{"config": "connect", "state": "ok"}); v != 6 {
		t.Errorf("credentials{connect,ok} = %v after the change, want 6", v)
	}
}

// TestMetrics_OutcomeOf: every kind of upstreamError client.go makes has its class.
func TestMetrics_OutcomeOf(t *testing.T) {
	status := func(code int, fields ...string) error {
		return upstreamFromStatus(&http.Response{StatusCode: code, Header: http.Header{}}, fields...)
	}
	gaveUp := func(err error) error { return fmt.Errorf("%w (gave up after 3 attempt(s) in 30s)", err) }
	tlsErr := &url.Error{Op: "Post", URL: "https://identity.example/connect/token", Err: x509.UnknownAuthorityError{}}
	cases := []struct {
		err  error
		want string
	}{
		{nil, "success"},
		{status(401, "invalid_client", "bad secret"), "invalid_client"},
		{status(400, "invalid_client"), "invalid_client"},
		{status(400, "unauthorized_client"), "unauthorized_client"},
		{status(400, "invalid_grant", "refresh token revoked"), "invalid_grant"},
		{status(400, "invalid_request"), "invalid_request"},
		{status(400, "invalid_scope"), "invalid_scope"},
		{status(400, "unsupported_grant_type"), "unsupported_grant_type"},
		{status(400, "access_denied"), "oauth_error"},
		{status(400, "some_vendor_code_"+strings.Repeat("x", 40)), "oauth_error"},
		{status(400, "", "", "body: <html>"), "other"},
		{status(404, "", "", "empty body"), "other"},
		{status(302), "other"},
		{status(429), "rate_limited"},
		{status(429, "slow_down"), "rate_limited"},
		{status(500), "server_error"},
		{status(503, "temporarily_unavailable"), "server_error"},
		{gaveUp(status(502)), "server_error"},
		{classifyOAuthError(errors.New("oauth2: cannot parse json: unexpected end of JSON input")), "unreadable"},
		{classifyOAuthError(errors.New("oauth2: server response missing access_token")), "unreadable"},
		{classifyTransportError(context.DeadlineExceeded), "timeout"},
		{classifyTransportError(&url.Error{Op: "Post", URL: "https://x", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}), "network"},
		{classifyTransportError(&url.Error{Op: "Post", URL: "https://x", Err: errors.New("EOF")}), "network"},
		{classifyTransportError(&url.Error{Op: "Post", URL: "https://x", Err: errors.New("remote error: tls: handshake failure")}), "tls"},
		{classifyTransportError(tlsErr), "tls"},
		{classifyTransportError(context.Canceled), "cancelled"},
		{gaveUp(classifyTransportError(context.DeadlineExceeded)), "timeout"},
		{context.Canceled, "cancelled"},
		{context.DeadlineExceeded, "timeout"},
		{errors.New("config is gone"), "other"},
	}
	for _, c := range cases {
		if got := outcomeOf(c.err); got != c.want {
			t.Errorf("outcomeOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// TestMetrics_EachAttemptCounted: through the real client and the attempt observer, each
// HTTP request is one count with its class, and the counts match what the identity
// server saw.
func TestMetrics_EachAttemptCounted(t *testing.T) {
	e := newTestEnv(t)
	m := e.b.metrics
	pool := &transportPool{}
	client := func(secret, ca string) *identityClient {
		c, err := newIdentityClient(clientSettings{ClientID: mucID, ClientSecret: secret, IdentityURL: e.ts.URL, CACertificate: ca}, time.Now, pool)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good, wrong := client(mucSecret, e.caPEM), client("not-the-secret", e.caPEM)
	policy := retryPolicy{Total: 10 * time.Second, PerAttempt: 2 * time.Second, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	ctx := m.observeTokenRequests(context.Background(), "hotel-muc", "client_credentials", triggerRead)
	scopes := []string{"reservations.read"}

	// Two 503s, then a token: three requests.
	e.idp.InjectFaults(devidp.Fault{Status: 503}, devidp.Fault{Status: 503})
	if _, err := good.ClientCredentials(ctx, scopes, policy); err != nil {
		t.Fatal(err)
	}
	// A 429 without Retry-After, then a token.
	e.idp.InjectFaults(devidp.Fault{Status: 429})
	if _, err := good.ClientCredentials(ctx, scopes, policy); err != nil {
		t.Fatal(err)
	}
	// A truncated 2xx answer, retried for the client credentials grant.
	e.idp.InjectFaults(devidp.Fault{Truncate: true})
	if _, err := good.ClientCredentials(ctx, scopes, policy); err != nil {
		t.Fatal(err)
	}
	// A wrong secret: one request, not retried.
	if _, err := wrong.ClientCredentials(ctx, scopes, policy); err == nil {
		t.Fatal("a wrong secret got a token")
	}
	// A server nobody trusts: no request reaches the token endpoint.
	if _, err := client(mucSecret, "").ClientCredentials(ctx, scopes, policy); err == nil {
		t.Fatal("an untrusted server gave a token")
	}

	got := e.scrape()
	want := map[string]float64{"success": 3, "server_error": 2, "rate_limited": 1, "unreadable": 1, "invalid_client": 1, "tls": 1}
	for outcome, n := range want {
		if v := sum(got, "vault_apaleo_token_requests_total", map[string]string{"outcome": outcome}); v != n {
			t.Errorf("outcome %s: %v, want %v", outcome, v, n)
		}
	}
	st := e.idp.Stats()
	total := sum(got, "vault_apaleo_token_requests_total", nil)
	if total-1 != float64(st.TokenRequests) { // the TLS failure never reached the server
		t.Errorf("metrics count %v token requests (1 refused by TLS), the identity server %d", total, st.TokenRequests)
	}
	if v := sum(got, "vault_apaleo_token_request_duration_seconds_count", nil); v != total {
		t.Errorf("histogram count %v, counter total %v", v, total)
	}
	if v := sum(got, "vault_apaleo_token_requests_total", map[string]string{"outcome": "invalid_client"}); v != float64(st.Errors["invalid_client"]) {
		t.Errorf("invalid_client: metrics %v, identity server %d", v, st.Errors["invalid_client"])
	}
}

var (
	promStringRe   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatcherRe  = regexp.MustCompile(`\{[^}]*\}`)
	promRangeRe    = regexp.MustCompile(`\[[^\]]*\]`)
	promGroupingRe = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promVariableRe = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	promIdentRe    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	labelValuesRe  = regexp.MustCompile(`^\s*label_values\s*\((.*)\)\s*$`)
	promKeywords   = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN"}
)

// TestMetrics_ScrapeAtScale: with many client-credentials configs, each read once, a
// scrape reads no storage, counts every credential, and stays within the size budget of
// issue 18 (5 MiB at 10,000 configs: 524 bytes a config, the text growing by a config's
// series each); gzipped it is a tenth or less. After a restart the gauge fills in from
// storage once, in the background. What a scrape costs in time is measured by
// BenchmarkMetricsScrape (bench_test.go), at 10,000 configs. METRICS_SCALE_N sets the
// number of configs (default 2,000). Not parallel: its CPU would slow the timing-bound
// fault and client tests beside it (TestClient_RetryPolicy failed so under -race).
func TestMetrics_ScrapeAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 configs")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("METRICS_SCALE_N")); err == nil && v > 0 {
		n = v
	}
	e := newEngineEnv(t)
	store := &benchStorage{Storage: e.storage}
	e.storage = store
	e.b = e.newBackend(nil)
	for i := range n {
		name := fmt.Sprintf("hotel-%05d", i)
		e.simpleConfig(name, nil)
		e.mustDo(logical.ReadOperation, "creds/"+name, nil)
	}
	scrape := func() []byte {
		return []byte(e.mustDo(logical.ReadOperation, "metrics", nil).Data[logical.HTTPRawBody].([]byte))
	}
	// The one background load the first scrape starts, seen ending.
	loaded := make(chan struct{})
	e.b.metrics.credentialStates(e.b.credentialCounts, func() { e.b.loadCredentials(); close(loaded) })
	scrape() // starts the load; memory already holds everything
	select {
	case <-loaded:
	case <-time.After(hangGuard):
		t.Fatal("the background load did not end")
	}

	before := store.calls()
	body := scrape()
	if got := store.calls() - before; got != 0 {
		t.Errorf("a scrape made %d storage calls, want 0", got)
	}
	ok := sum(parseExposition(t, body), "vault_apaleo_credentials", map[string]string{"state": "ok"})
	t.Logf("scrape figures | %d configs | %.2f MiB | %d bytes a config", n, float64(len(body))/(1<<20), len(body)/n)
	if ok != float64(n) {
		t.Errorf("credentials{state=ok} = %v, want %d", ok, n)
	}
	if len(body)*10000 > n*(5<<20) {
		t.Errorf("a scrape at %d configs is %d bytes, %d a config: over 5 MiB at 10,000", n, len(body), len(body)/n)
	}
	// Gzipped, as a tuned mount answers Prometheus.
	resp, err := readMetricsAccepting(e.b, e.storage, "gzip")
	if err != nil {
		t.Fatal(err)
	}
	zipped := resp.Data[logical.HTTPRawBody].([]byte)
	t.Logf("scrape figures | %d configs, gzip | %.2f MiB", n, float64(len(zipped))/(1<<20))
	if len(zipped)*10 > len(body) {
		t.Errorf("gzipped %d bytes to %d, want a tenth or less", len(body), len(zipped))
	}

	// A restarted plugin knows nothing in memory: the first scrape starts loading.
	e.b = e.newBackend(nil)
	scrape()
	waitUntil(t, func() bool {
		return sum(parseExposition(t, scrape()), "vault_apaleo_credentials", nil) == float64(n)
	})
}

// TestMetrics_DeletedConfigSeriesGo: deleting a config drops its series.
func TestMetrics_DeletedConfigSeriesGo(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("hotel-muc", nil)
	e.simpleConfig("hotel-ber", nil)
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	has := func(config string) bool {
		body := []byte(e.mustDo(logical.ReadOperation, "metrics", nil).Data[logical.HTTPRawBody].([]byte))
		return bytes.Contains(body, []byte(`config="`+config+`"`))
	}
	if !has("hotel-muc") || !has("hotel-ber") {
		t.Fatal("no series of the configs before the delete: the test would prove nothing")
	}
	e.mustDo(logical.DeleteOperation, "config/hotel-muc", nil)
	if has("hotel-muc") {
		t.Error("series of the deleted config hotel-muc are still served")
	}
	if !has("hotel-ber") {
		t.Error("the series of hotel-ber went with hotel-muc's")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetrics_TextFormat: what writeText writes is what Prometheus's own parser reads:
// every count under its labels, label values escaped, a deleted config's series gone.
func TestMetrics_TextFormat(t *testing.T) {
	m := newMetrics()
	odd := "odd\"name\\with\nbreaks" // not a valid config name; the escaping must hold anyway
	for range 3 {
		m.credsRead("hotel-b", readCached)
	}
	m.credsRead("hotel-a", readFetched)
	m.credsRead(odd, readStale)
	m.tokenRequest("hotel-a", grantClientCredentials, triggerRead, nil, time.Millisecond)
	m.tokenRequest("hotel-a", grantClientCredentials, triggerRefreshAhead, &upstreamError{Status: http.StatusTooManyRequests}, time.Millisecond)
	m.tokenRequest("hotel-a", grantClientCredentials, triggerRefreshAhead, &upstreamError{Status: http.StatusTooManyRequests}, time.Millisecond)
	m.credentialStates(func() map[string]*stateCounts {
		return countsOf(map[string]map[string]int{"hotel-a": {stateOK: 1}, "hotel-b": {stateFailing: 2}})
	}, nil)

	parse := func() map[string]float64 {
		t.Helper()
		var body bytes.Buffer
		if err := m.writeText(&body); err != nil {
			t.Fatal(err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(body.Bytes()))
		if err != nil {
			t.Fatalf("Prometheus's parser: %v\n%s", err, body.String())
		}
		got := map[string]float64{}
		for name, mf := range families {
			for _, s := range mf.GetMetric() {
				var labels []string
				for _, lp := range s.GetLabel() {
					labels = append(labels, lp.GetName()+"="+lp.GetValue())
				}
				key := name + "{" + strings.Join(labels, ",") + "}"
				switch {
				case s.GetCounter() != nil:
					got[key] = s.GetCounter().GetValue()
				case s.GetGauge() != nil:
					got[key] = s.GetGauge().GetValue()
				case s.GetHistogram() != nil:
					got[key] = float64(s.GetHistogram().GetSampleCount())
				}
			}
		}
		return got
	}
	got := parse()
	want := map[string]float64{
		metricCredsReads + "{config=hotel-a,result=fetched}":                                                              1,
		metricCredsReads + "{config=hotel-b,result=cached}":                                                               3,
		metricCredsReads + "{config=" + odd + ",result=stale}":                                                            1,
		metricTokenRequests + "{config=hotel-a,grant_type=client_credentials,outcome=success,trigger=read}":               1,
		metricTokenRequests + "{config=hotel-a,grant_type=client_credentials,outcome=rate_limited,trigger=refresh_ahead}": 2,
		metricCredentials + "{config=hotel-a,state=ok}":                                                                   1,
		metricCredentials + "{config=hotel-b,state=ok}":                                                                   0,
		metricCredentials + "{config=hotel-b,state=failing}":                                                              2,
		metricsNamespace + "_token_request_duration_seconds{grant_type=client_credentials}":                               3,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d series, want %d: %v", len(got), len(want), got)
	}

	m.forgetConfig("hotel-a")
	for k := range parse() {
		if strings.Contains(k, "config=hotel-a") && !strings.HasPrefix(k, metricCredentials) {
			t.Errorf("after deleting hotel-a: %s still served", k)
		}
	}
}
