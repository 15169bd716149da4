package apaleo

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// path_metrics_test.go: the metrics path itself: how a scrape is served (raw body, content
// type, gzip where the request accepts it and the mount lets the header through).

// TestMetrics_Path: metrics is authenticated (a scraper needs a token with read on it)
// and read-only.
func TestMetrics_Path(t *testing.T) {
	e := newTestEnv(t)
	if slices.ContainsFunc(e.b.PathsSpecial.Unauthenticated, func(p string) bool { return strings.HasPrefix("metrics", strings.TrimSuffix(p, "*")) }) {
		t.Errorf("metrics is unauthenticated: %v", e.b.PathsSpecial.Unauthenticated)
	}
	if _, err := e.do(logical.UpdateOperation, "metrics", nil); !errors.Is(err, logical.ErrUnsupportedOperation) {
		t.Errorf("write to metrics: %v, want unsupported operation", err)
	}
	// A fresh mount has no series: it still answers 200 with an empty exposition, which
	// must reach Vault as an empty body, not as null.
	if got := e.scrape(); len(got) != 0 {
		t.Errorf("fresh mount: %d samples, want none", len(got))
	}
}

// TestMetrics_Gzip: a scrape whose Accept-Encoding Vault passes through and that takes
// gzip gets the same text gzipped, as bytes that survive the crossing to Vault, with
// Content-Encoding set; one that does not take gzip gets the plain text.
func TestMetrics_Gzip(t *testing.T) {
	e := newTestEnv(t)
	for i := range 50 {
		e.b.metrics.tokenRequest(fmt.Sprintf("hotel-%02d", i), grantClientCredentials, triggerRead, nil, time.Millisecond)
		e.b.metrics.credsRead(fmt.Sprintf("hotel-%02d", i), readFetched)
	}
	plain := string(e.mustDo(logical.ReadOperation, "metrics", nil).Data[logical.HTTPRawBody].([]byte))
	if !strings.Contains(plain, `vault_apaleo_token_requests_total{config="hotel-49"`) {
		t.Fatalf("plain scrape without the series:\n%s", plain)
	}
	scrape := func(acceptEncoding ...string) *logical.Response {
		t.Helper()
		resp, err := readMetricsAccepting(e.b, e.storage, acceptEncoding...)
		e.record(resp, err)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	resp := scrape("br;q=1.0, gzip;q=0.8, *;q=0.1")
	if got := resp.Headers["Content-Encoding"]; !slices.Equal(got, []string{"gzip"}) {
		t.Fatalf("Content-Encoding %v, want gzip", got)
	}
	if _, ok := resp.Data[logical.HTTPRawBody].([]byte); !ok {
		t.Fatalf("gzipped body is %T, want []byte (a string of binary crosses JSON mangled)", resp.Data[logical.HTTPRawBody])
	}
	_, ct, wire := overGRPC(t, resp)
	if ct != metricsContentType {
		t.Errorf("content type %v", ct)
	}
	zr, err := gzip.NewReader(bytes.NewReader(wire))
	if err != nil {
		t.Fatalf("the body that reaches Vault is not gzip: %v", err)
	}
	text, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(text) != plain {
		t.Errorf("gunzipped scrape differs from the plain one:\n%s\n---\n%s", text, plain)
	}
	if len(wire)*4 > len(plain) {
		t.Errorf("gzipped %d bytes of text to %d, want a quarter or less", len(plain), len(wire))
	}

	for _, ae := range [][]string{nil, {"identity"}, {"gzip;q=0"}, {"gzip;q=0, *"}, {"br"}, {"*;q=0"}} {
		resp := scrape(ae...)
		if body, _ := resp.Data[logical.HTTPRawBody].([]byte); resp.Headers != nil || string(body) != plain {
			t.Errorf("Accept-Encoding %q: headers %v, body %T; want the plain text", ae, resp.Headers, resp.Data[logical.HTTPRawBody])
		}
	}
}

// readMetricsAccepting reads metrics as Vault hands the plugin a request whose
// Accept-Encoding the mount passes through.
func readMetricsAccepting(b *backend, s logical.Storage, acceptEncoding ...string) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "metrics",
		Storage: s, Headers: map[string][]string{"Accept-Encoding": acceptEncoding}})
}

func TestAcceptsGzip(t *testing.T) {
	for _, c := range []struct {
		headers map[string][]string
		want    bool
	}{
		{nil, false},
		{map[string][]string{"Accept-Encoding": {"gzip"}}, true},
		{map[string][]string{"accept-encoding": {"GZIP"}}, true},            // names and codings are case-insensitive
		{map[string][]string{"Accept-Encoding": {"x-gzip"}}, true},          // RFC 9110 8.4.1.3
		{map[string][]string{"Accept-Encoding": {"deflate", "gzip"}}, true}, // two header lines
		{map[string][]string{"Accept-Encoding": {"gzip; q=0.5"}}, true},
		{map[string][]string{"Accept-Encoding": {"gzip;q=0"}}, false},
		{map[string][]string{"Accept-Encoding": {"gzip;q=0.0, *"}}, false}, // named refusal wins over *
		{map[string][]string{"Accept-Encoding": {"*"}}, true},
		{map[string][]string{"Accept-Encoding": {"*;q=0"}}, false},
		{map[string][]string{"Accept-Encoding": {"identity, deflate, br"}}, false},
		{map[string][]string{"Accept-Encoding": {""}}, false},
		{map[string][]string{"X-Accept-Encoding": {"gzip"}}, false},
	} {
		if got := acceptsGzip(c.headers); got != c.want {
			t.Errorf("acceptsGzip(%v) = %v, want %v", c.headers, got, c.want)
		}
	}
}
