package apaleo

import (
	"context"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"maps"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// fuzz_test.go: bad input. The fuzz targets run their seed corpus (testdata/fuzz/<name>)
// under plain `go test`; fuzz one with
//
//	go test -run '^$' -fuzz '^FuzzConfigWrite$' -fuzztime 15s .
//
// Each target keeps one backend on in-memory storage for all its inputs, and no
// identity server: a tripwire stands in for it, since bad input must never reach apaleo.

// fuzzCA is a self-signed CA certificate (ECDSA P-256, valid 2025-2125) for ca_certificate.
const fuzzCA = `-----BEGIN CERTIFICATE-----
MIIBYjCCAQegAwIBAgIBATAKBggqhkjOPQQDAjAXMRUwEwYDVQQDEwxmdXp6IHRl
c3QgQ0EwIBcNMjUwMTAxMDAwMDAwWhgPMjEyNTAxMDEwMDAwMDBaMBcxFTATBgNV
BAMTDGZ1enogdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABPm5q5xq
c7UuUrYnAYYO5NwDJZR3NXlsaDlQq49jiljTRJ7oJS4PVAV/r1DFBq1CDplKniad
sHFhap5xoO5CTBOjQjBAMA4GA1UdDwEB/wQEAwICBDAPBgNVHRMBAf8EBTADAQH/
MB0GA1UdDgQWBBQktknGNx8M8Lc+1q/OUzj4nEHPPTAKBggqhkjOPQQDAgNJADBG
AiEAjC7LPLIV7ILhyibWEwPtbtfBFSVh05/HEndxoy2ixsUCIQD2iFfAMjPZfDty
krG0QU3grAEazzm+v90eoM/ye+zSmA==
-----END CERTIFICATE-----
`

// tripwireIdentity is an identityServer that only counts: a bad request that reaches it
// is a bug. AuthCodeURL is allowed (authorize/<name> builds the URL without a call).
type tripwireIdentity struct{ calls *atomic.Int64 }

var errTripwire = errors.New("tripwire: bad input reached the identity server")

func (s tripwireIdentity) ClientCredentials(context.Context, []string, retryPolicy) (*tokenResult, error) {
	s.calls.Add(1)
	return nil, errTripwire
}

func (s tripwireIdentity) Refresh(context.Context, string, retryPolicy) (*tokenResult, error) {
	s.calls.Add(1)
	return nil, errTripwire
}

func (s tripwireIdentity) Exchange(context.Context, string, string, []string, retryPolicy) (*tokenResult, error) {
	s.calls.Add(1)
	return nil, errTripwire
}

func (s tripwireIdentity) Revoke(context.Context, string, retryPolicy) error {
	s.calls.Add(1)
	return errTripwire
}

func (tripwireIdentity) AuthCodeURL(state, _ string, _ []string) string {
	return "https://identity.invalid/connect/authorize?state=" + url.QueryEscape(state)
}

type fuzzEnv struct {
	b        *backend
	storage  logical.Storage
	logs     *syncBuffer
	calls    atomic.Int64
	baseline map[string]string
}

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	fz := &fuzzEnv{storage: &logical.InmemStorage{}, logs: &syncBuffer{}}
	conf := logical.TestBackendConfig()
	conf.StorageView = fz.storage
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: fz.logs})
	fz.b = newBackend()
	clock := &fakeClock{now: time.Now()} // stands still: pending authorizations never expire
	fz.b.now = clock.Now
	fz.b.newClient = func(clientSettings, func() time.Time) (identityServer, error) {
		return tripwireIdentity{calls: &fz.calls}, nil
	}
	if err := fz.b.Setup(context.Background(), conf); err != nil {
		tb.Fatal(err)
	}
	return fz
}

func (fz *fuzzEnv) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	return fz.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: fz.storage})
}

func (fz *fuzzEnv) mustDo(tb testing.TB, op logical.Operation, path string, data map[string]any) *logical.Response {
	tb.Helper()
	resp, err := fz.do(op, path, data)
	if err != nil || (resp != nil && resp.IsError()) {
		tb.Fatalf("%s %s: %v %v", op, path, err, respErr(resp))
	}
	return resp
}

// settle records storage as the baseline every input must leave as it found it.
func (fz *fuzzEnv) settle(tb testing.TB) {
	fz.baseline = storageSnapshot(tb, fz.storage)
	fz.logs.take()
}

// checkUnchanged fails when storage differs from the baseline.
func (fz *fuzzEnv) checkUnchanged(t *testing.T, what string) {
	t.Helper()
	if after := storageSnapshot(t, fz.storage); !maps.Equal(after, fz.baseline) {
		t.Fatalf("%s changed storage:\nbefore %v\nafter  %v", what, slices.Sorted(maps.Keys(fz.baseline)), slices.Sorted(maps.Keys(after)))
	}
}

// hclogLine is how every line hclog writes starts: a timestamp, or the indent of a
// multi-line value ("  | ...").
var hclogLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|  )`)

// checkLogs fails on a log line that input forged (a value that broke out of its line)
// and on a secret in the log.
func checkLogs(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSuffix(logs, "\n"), "\n") {
		if line != "" && !hclogLine.MatchString(line) {
			t.Fatalf("input forged a log line: %q", line)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Fatalf("a secret (%.4q...) is in the log", s)
		}
	}
}

// checkable reports whether a fuzzed secret is distinctive enough to look for in
// output: long, with a character no message or log key uses, and not part of any other
// input, as is, quoted (messages and logs) or HTML-escaped (pages): those may be echoed
// legitimately.
func checkable(secret string, others ...string) bool {
	if len(secret) < 8 || !strings.ContainsAny(secret, "!#$*~^|") {
		return false
	}
	for _, o := range others {
		for _, form := range []string{o, strconv.Quote(o), pageEscape(o)} {
			if strings.Contains(form, secret) {
				return false
			}
		}
	}
	return true
}

// echoes reports whether text holds s as is or escaped as the callback page escapes it.
func echoes(text, s string) bool {
	return strings.Contains(text, s) || strings.Contains(text, pageEscape(s))
}

var textTemplate = htmltemplate.Must(htmltemplate.New("text").Parse(`<p>{{.}}</p>`))

// pageEscape escapes s as html/template does in the callback page's text.
func pageEscape(s string) string {
	var b strings.Builder
	_ = textTemplate.Execute(&b, s)
	return strings.TrimSuffix(strings.TrimPrefix(b.String(), "<p>"), "</p>")
}

// --- config ---

var fuzzBaselineConfigs = map[string]map[string]any{
	"existing": {"client_id": "MUC-SIMPLE", "client_secret": "baseline-secret!#1", "scopes": "reservations.read setup.read",
		"ca_certificate": fuzzCA, "min_ttl": "15m"},
	"connect": {"client_id": "CONNECT-APP", "client_secret": "baseline-secret!#2", "grant_type": "authorization_code",
		"redirect_uri": "https://vault.example/v1/apaleo/callback", "scopes": "reservations.read"},
}

// configFields are the fuzzed config fields, in the order of FuzzConfigWrite's
// arguments and of the bits of its present mask.
var configFields = []string{"client_id", "client_secret", "grant_type", "scopes", "redirect_uri", "identity_url", "ca_certificate", "min_ttl"}

// FuzzConfigWrite writes config/<name> with fuzzed fields (present says which are sent).
// It must never panic or answer 5xx; a refusal is a 4xx with a message and changes no
// storage; an acceptance reads back what was written (normalised as documented), never
// shows client_secret, and survives a no-op update.
func FuzzConfigWrite(f *testing.F) {
	fz := newFuzzEnv(f)
	for name, data := range fuzzBaselineConfigs {
		fz.mustDo(f, logical.CreateOperation, "config/"+name, data)
	}
	fz.settle(f)
	baselineViews := map[string]map[string]any{}
	for name := range fuzzBaselineConfigs {
		baselineViews[name] = fz.mustDo(f, logical.ReadOperation, "config/"+name, nil).Data
	}

	f.Add("hotel-muc", false, uint8(0xff), "MUC-SIMPLE", "s3cret!#value", "client_credentials", "reservations.read, setup.read",
		"", "https://identity.apaleo.com/", fuzzCA, "15m")
	f.Add("existing", true, uint8(1<<3|1<<7), "", "", "", "Reservations.Read setup.read,setup.read", "", "", "", "1h")

	f.Fuzz(func(t *testing.T, name string, update bool, present uint8,
		clientID, clientSecret, grantType, scopes, redirectURI, identityURL, caCert, minTTL string) {
		fz.logs.take()
		// Vault decodes request bodies from JSON, so handlers only ever see valid UTF-8.
		values := []string{clientID, clientSecret, grantType, scopes, redirectURI, identityURL, caCert, minTTL}
		data := map[string]any{}
		for i, key := range configFields {
			if present&(1<<i) != 0 {
				data[key] = strings.ToValidUTF8(values[i], "\uFFFD")
			}
		}
		name = strings.ToValidUTF8(name, "\uFFFD")
		op := logical.CreateOperation
		if update {
			op = logical.UpdateOperation
		}
		secret, _ := data["client_secret"].(string)
		secret = strings.TrimSpace(secret)
		others := []string{name, clientID, grantType, scopes, redirectURI, identityURL, caCert, minTTL}
		for _, d := range fuzzBaselineConfigs {
			for _, v := range d {
				others = append(others, v.(string))
			}
		}
		if !checkable(secret, others...) {
			secret = ""
		}

		resp, err := fz.do(op, "config/"+name, data)
		status := statusOf(op, resp, err)
		if status >= 500 {
			t.Fatalf("status %d: %v", status, errText(resp, err))
		}
		if err != nil || (resp != nil && resp.IsError()) {
			msg := errText(resp, err)
			if status < 400 || msg == "" {
				t.Fatalf("a refusal answered %d %q", status, msg)
			}
			if secret != "" && strings.Contains(msg, secret) {
				t.Fatalf("the refusal echoes client_secret: %q", msg)
			}
			fz.checkUnchanged(t, "a refused write")
			checkLogs(t, fz.logs.take(), secret)
			return
		}
		if resp != nil && secret != "" && strings.Contains(fmt.Sprint(resp.Data, resp.Warnings), secret) {
			t.Fatalf("the write's response echoes client_secret")
		}

		// Accepted: read it back (names are kept as written) and compare with what was
		// asked.
		want := expectedConfig(baselineViews[name], data)
		got := fz.mustDo(t, logical.ReadOperation, "config/"+name, nil).Data
		if _, ok := got["client_secret"]; ok {
			t.Fatal("read returns client_secret")
		}
		if secret != "" && strings.Contains(fmt.Sprint(got), secret) {
			t.Fatal("read shows client_secret")
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("read back differs from the write %v:\n got %#v\nwant %#v", data, got, want)
		}
		// The stored values pass their own validation: a no-op update is accepted and
		// changes nothing.
		fz.mustDo(t, logical.UpdateOperation, "config/"+name, map[string]any{})
		if again := fz.mustDo(t, logical.ReadOperation, "config/"+name, nil).Data; !reflect.DeepEqual(again, got) {
			t.Fatalf("a no-op update changed the config:\n%#v\n%#v", got, again)
		}
		if got["grant_type"] == grantClientCredentials {
			keys, _ := fz.mustDo(t, logical.ListOperation, "creds/", nil).Data["keys"].([]string)
			if !slices.Contains(keys, name) {
				t.Fatalf("creds/ list %v lacks client-credentials config %q", keys, name)
			}
		}
		checkLogs(t, fz.logs.take(), secret)

		// Back to the baseline for the next input.
		fz.mustDo(t, logical.DeleteOperation, "config/"+name, nil)
		if base, ok := fuzzBaselineConfigs[name]; ok {
			fz.mustDo(t, logical.CreateOperation, "config/"+name, base)
		}
		fz.checkUnchanged(t, "writing and deleting a config")
		if n := fz.calls.Load(); n != 0 {
			t.Fatalf("a config write called the identity server %d times", n)
		}
		fz.logs.take()
	})
}

// expectedConfig is what config/<name> reads back after a write of data over base
// (nil: a new config), by the documented rules.
func expectedConfig(base map[string]any, data map[string]any) map[string]any {
	want := map[string]any{
		"client_id": "", "grant_type": grantClientCredentials, "scopes": []string{}, "redirect_uri": "",
		"identity_url": defaultIdentityURL, "ca_certificate": "", "min_ttl": int64(defaultMinTTL.Seconds()),
		"refresh_ahead": true, "max_token_requests_per_second": float64(defaultBudget), "idle_refresh_interval": int64(defaultIdleRefresh.Seconds()),
		"upstream": "ok",
	}
	if base != nil {
		want = maps.Clone(base)
	}
	for _, key := range []string{"client_id", "grant_type", "redirect_uri"} {
		if v, ok := data[key].(string); ok {
			want[key] = strings.TrimSpace(v)
		}
	}
	if v, ok := data["ca_certificate"].(string); ok {
		want["ca_certificate"] = v
	}
	if v, ok := data["identity_url"].(string); ok {
		u, err := url.Parse(strings.TrimSpace(v))
		if err == nil {
			want["identity_url"] = strings.TrimRight(u.String(), "/")
		}
	}
	if v, ok := data["min_ttl"].(string); ok {
		want["min_ttl"] = expectedSeconds(v)
	}
	if v, ok := data["scopes"].(string); ok {
		var scopes []string
		for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
		want["scopes"] = nonNil(scopes)
	}
	if scopes := want["scopes"].([]string); want["grant_type"] == grantAuthorizationCode && !slices.Contains(scopes, "offline_access") {
		want["scopes"] = append(slices.Clone(scopes), "offline_access")
	}
	return want
}

// expectedSeconds reads a duration as Vault's TypeDurationSecond does: whole seconds,
// "<n>d" days, or a Go duration, truncated to seconds.
func expectedSeconds(v string) int64 {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, _ := strconv.ParseInt(days, 10, 64)
		return n * 24 * 60 * 60
	}
	d, _ := time.ParseDuration(v)
	return int64(d.Seconds())
}

// --- callback and exchange ---

// newAuthFuzzEnv holds an authorization_code config, a pending authorization whose state
// no input knows, and an authorized credential: a forged callback or exchange must leave
// all three as they are.
func newAuthFuzzEnv(tb testing.TB) *fuzzEnv {
	fz := newFuzzEnv(tb)
	fz.mustDo(tb, logical.CreateOperation, "config/connect", fuzzBaselineConfigs["connect"])
	fz.mustDo(tb, logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"})
	err := writeJSON(context.Background(), fz.storage, credsPrefix+"hotel-muc", &credential{
		Config: "connect", GrantType: grantAuthorizationCode, RefreshToken: "stored-refresh-token!#", Scopes: []string{"offline_access"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	fz.settle(tb)
	return fz
}

// pageShape counts the characters that make markup. Input is escaped, so every callback
// page has the same count as the template's own markup.
func pageShape(page string) [4]int {
	return [4]int{strings.Count(page, "<"), strings.Count(page, ">"), strings.Count(page, `"`), strings.Count(page, "'")}
}

var failurePageShape = sync.OnceValue(func() [4]int {
	resp := failurePage(badAuth("plain text")).response()
	return pageShape(string(resp.Data[logical.HTTPRawBody].([]byte)))
})

// FuzzCallback calls the unauthenticated callback with forged state, code, error and
// error_description: always a 4xx HTML page whose markup input cannot change, no code
// in the page or the log, no forged log line, nothing stored, no call to apaleo.
func FuzzCallback(f *testing.F) {
	fz := newAuthFuzzEnv(f)
	f.Add("forged-state", "forged-code!#1", "", "", "")
	f.Add("forged-state", "", "access_denied", "<script>alert(1)</script>", "")

	f.Fuzz(func(t *testing.T, state, code, oauthErr, desc, sessionState string) {
		fz.logs.take()
		data := map[string]any{"state": state, "code": code, "error": oauthErr, "error_description": desc, "session_state": sessionState}
		resp, err := fz.do(logical.ReadOperation, "callback", data)
		if err != nil {
			t.Fatalf("callback: %v", err)
		}
		status, _ := resp.Data[logical.HTTPStatusCode].(int)
		if status < 400 || status >= 500 {
			t.Fatalf("status %d, want 4xx: %v", status, resp.Data)
		}
		if ct := resp.Data[logical.HTTPContentType]; ct != "text/html; charset=utf-8" {
			t.Fatalf("content type %v", ct)
		}
		page := string(resp.Data[logical.HTTPRawBody].([]byte))
		if shape := pageShape(page); shape != failurePageShape() {
			t.Fatalf("input changed the page's markup (<, >, \", ' counts %v, want %v):\n%s", shape, failurePageShape(), page)
		}
		if strings.Contains(strings.ToLower(page), "<script") {
			t.Fatalf("a <script in the page:\n%s", page)
		}
		if !checkable(code, state, oauthErr, desc, sessionState) {
			code = ""
		}
		if code != "" && echoes(page, code) {
			t.Fatalf("the page shows the code")
		}
		checkLogs(t, fz.logs.take(), code)
		fz.checkUnchanged(t, "a forged callback")
		if n := fz.calls.Load(); n != 0 {
			t.Fatalf("a forged callback called the identity server %d times", n)
		}
	})
}

// FuzzExchange calls exchange with forged state and code: always a 4xx whose message
// does not show the code, nothing stored, no call to apaleo.
func FuzzExchange(f *testing.F) {
	fz := newAuthFuzzEnv(f)
	f.Add("forged-state", "forged-code!#1")
	f.Add("", "")

	f.Fuzz(func(t *testing.T, state, code string) {
		fz.logs.take()
		resp, err := fz.do(logical.UpdateOperation, "exchange", map[string]any{"state": state, "code": code})
		status := statusOf(logical.UpdateOperation, resp, err)
		msg := errText(resp, err)
		if status < 400 || status >= 500 || msg == "" {
			t.Fatalf("status %d %q, want a 4xx with a message", status, msg)
		}
		if !checkable(code, state) {
			code = ""
		}
		if code != "" && strings.Contains(msg, code) {
			t.Fatalf("the error shows the code: %q", msg)
		}
		checkLogs(t, fz.logs.take(), code)
		fz.checkUnchanged(t, "a forged exchange")
		if n := fz.calls.Load(); n != 0 {
			t.Fatalf("a forged exchange called the identity server %d times", n)
		}
	})
}
