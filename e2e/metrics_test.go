//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/promtext"
)

// promSample is one series of a scrape; histograms are flattened to _bucket, _sum, _count.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

type scrape []promSample

// seriesNotIn lists the series (name and labels) of s that other lacks.
func (s scrape) seriesNotIn(other scrape) []string {
	have := map[string]bool{}
	for _, x := range other {
		have[fmt.Sprint(x.name, x.labels)] = true
	}
	var out []string
	for _, x := range s {
		if k := fmt.Sprint(x.name, x.labels); !have[k] {
			out = append(out, k)
		}
	}
	return out
}

// sum adds the samples of name whose labels include want (nil: all of them).
func (s scrape) sum(name string, want map[string]string) float64 {
	var total float64
	for _, x := range s {
		if x.name != name {
			continue
		}
		match := true
		for k, v := range want {
			match = match && x.labels[k] == v
		}
		if match {
			total += x.value
		}
	}
	return total
}

// by sums name per value of label.
func (s scrape) by(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, x := range s {
		if x.name == name {
			out[x.labels[label]] += x.value
		}
	}
	return out
}

// metricsAnswer is one GET /v1/apaleo/metrics.
type metricsAnswer struct {
	status          int
	contentType     string
	contentEncoding string // as it came on the wire
	wire            int    // bytes on the wire
	body            []byte // decompressed where it came gzipped
}

func getMetrics(t *testing.T, v *vault, token string) metricsAnswer {
	t.Helper()
	return getMetricsEncoded(t, v, token, "")
}

// getMetricsEncoded is getMetrics with an Accept-Encoding header of its own: then Go's
// transport neither adds one nor decompresses, and a gzip answer is gunzipped here.
func getMetricsEncoded(t *testing.T, v *vault, token, acceptEncoding string) metricsAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, v.Addr+"/v1/"+mount+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token) // as Prometheus sends it
	}
	// What Prometheus 3 asks for; the plugin answers the text format it accepts too.
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1")
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := metricsAnswer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"),
		contentEncoding: resp.Header.Get("Content-Encoding"), wire: len(body), body: body}
	if a.contentEncoding == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("Content-Encoding gzip, but the body is not: %v", err)
		}
		if a.body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// parseScrape parses the text exposition as Prometheus does.
func parseScrape(t *testing.T, body []byte) scrape {
	t.Helper()
	ss, err := promtext.Parse(body)
	if err != nil {
		t.Fatalf("parsing metrics: %v\n%s", err, body)
	}
	out := make(scrape, len(ss))
	for i, s := range ss {
		out[i] = promSample{s.Name, s.Labels, s.Value}
	}
	return out
}

// fullStats is the dev identity server's /_admin/stats with the fault count.
type fullStats struct {
	idpStats
	FaultsApplied int `json:"faults_applied"`
}

func (i *identity) injectFault(t *testing.T, fault string) {
	t.Helper()
	resp, err := i.http.Post(i.URL+"/_admin/faults", "application/json", strings.NewReader(fault))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("identity faults %s: status %d", fault, resp.StatusCode)
	}
}

const (
	requestsTotal = "vault_apaleo_token_requests_total"
	readsTotal    = "vault_apaleo_creds_reads_total"
)

// TestMetrics: token requests of every trigger the flows make (reads with a retried 503,
// a refused client secret, a callback, an exchange, refreshes) and creds reads, then
// apaleo/metrics read over Vault's HTTP API with a token whose policy allows only that:
// the token requests it counts are those the identity server counted, per outcome and
// grant; the reads add up; the body is Prometheus text; other tokens get 403.
func TestMetrics(t *testing.T) {
	// Not parallel: it runs first, alone. Its 10 s tokens are refreshed ahead in the
	// background while it queues faults at one identity server, and on a machine busy
	// with the other tests a background refresh took the fault meant for a read.
	v := startDevVault(t)
	secMuc, secApp, secExt := randomSecret(t, "muc"), randomSecret(t, "app"), randomSecret(t, "ext")
	callback := v.Addr + "/v1/" + mount + "/callback"
	const extRedirect = "https://app.example/cb"
	idp := startIdentity(t, "identity", shortTTL,
		"hotel-muc:"+secMuc+":MUC:account.read,reservations.read",
		"connect-app:"+secApp+":BER:reservations.read,account.read:"+callback,
		"connect-ext:"+secExt+":EXT:reservations.read,account.read:"+extRedirect)
	v.enablePlugin(t)
	// A fresh mount has no series yet: an empty exposition, not an error.
	if a := getMetrics(t, v, v.Token); a.status != http.StatusOK || len(parseScrape(t, a.body)) != 0 {
		t.Fatalf("GET apaleo/metrics on a fresh mount: %d %q", a.status, a.body)
	}
	plain := &http.Client{Timeout: 30 * time.Second}
	reads := 0
	read := func(name string) (ok bool) {
		reads++
		return v.run("read", "-format=json", mount+"/creds/"+name).Err == nil
	}

	// Authorized credentials first: their shortTTL tokens must age before the refresh reads.
	v.writeConfig(t, appConfig{name: "connect-app", clientID: "connect-app", secret: secApp, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	authURL, _ := v.authorize(t, "hotel-ber", "connect-app")
	if p := getPage(t, plain, redirectFromIdentity(t, idp, authURL).String()); p.status != http.StatusOK {
		t.Fatalf("callback: %d %s", p.status, p.body)
	}
	v.writeConfig(t, appConfig{name: "connect-ext", clientID: "connect-ext", secret: secExt, idp: idp,
		grant: "authorization_code", redirect: extRedirect, scopes: "reservations.read"})
	exchangeFlow(t, v, idp, "hotel-ext", "connect-ext")
	issued := time.Now()
	for _, name := range []string{"hotel-ber", "hotel-ext"} {
		if !read(name) {
			t.Fatalf("read creds/%s after authorization failed", name)
		}
	}

	// Client credentials: a 503 then a token (two requests), then cached reads.
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: idp, scopes: "reservations.read"})
	idp.injectFault(t, `{"status": 503}`)
	for range 3 {
		if !read("hotel-muc") {
			t.Fatal("read creds/hotel-muc failed")
		}
	}
	// A wrong client secret: invalid_client.
	v.writeConfig(t, appConfig{name: "hotel-wrong", clientID: "hotel-muc", secret: randomSecret(t, "wrong"), idp: idp})
	if read("hotel-wrong") {
		t.Fatal("read creds/hotel-wrong with a wrong secret succeeded")
	}

	// Refresh reads: the authorized tokens are no longer fresh after half their lifetime.
	time.Sleep(time.Until(issued.Add(shortTTL/2 + time.Second)))
	for _, name := range []string{"hotel-ber", "hotel-ext"} {
		if !read(name) {
			t.Fatalf("refresh read creds/%s failed", name)
		}
	}

	// Policies: only a token allowed to read apaleo/metrics gets it.
	policy := writeFile(t, filepath.Join(v.dir, "apaleo-metrics.hcl"), `path "`+mount+`/metrics" { capabilities = ["read"] }`+"\n")
	v.must(t, "policy", "write", "apaleo-metrics", policy)
	token := func(policy string) string {
		var tok vaultSecret
		v.jsonOut(t, &tok, "token", "create", "-format=json", "-policy="+policy, "-ttl=1h")
		if tok.Auth == nil || tok.Auth.ClientToken == "" {
			t.Fatal("token create returned no token")
		}
		return tok.Auth.ClientToken
	}
	scraper, other := token("apaleo-metrics"), token("default")
	if a := getMetrics(t, v, other); a.status != http.StatusForbidden {
		t.Errorf("GET apaleo/metrics with a default-policy token: %d, want 403", a.status)
	}
	if a := getMetrics(t, v, ""); a.status != http.StatusForbidden {
		t.Errorf("GET apaleo/metrics without a token: %d, want 403", a.status)
	}
	if status, _, err := v.apiAs(scraper, http.MethodGet, mount+"/creds/hotel-muc", nil); err != nil || status != http.StatusForbidden {
		t.Errorf("GET creds/hotel-muc with the metrics token: %d %v, want 403", status, err)
	}

	// The scrape: taken when two scrapes and the identity server agree, as a refresh-ahead
	// request may be on its way meanwhile.
	var got scrape
	var st fullStats
	var last metricsAnswer
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = getMetrics(t, v, scraper)
		if last.status != http.StatusOK {
			t.Fatalf("GET apaleo/metrics with the metrics policy: %d %s", last.status, last.body)
		}
		got = parseScrape(t, last.body)
		idp.admin(t, "stats", &st)
		again := parseScrape(t, getMetrics(t, v, scraper).body)
		total := got.sum(requestsTotal, nil)
		if (total == again.sum(requestsTotal, nil) && total == float64(st.TokenRequests)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	if mt, params, err := mime.ParseMediaType(last.contentType); err != nil || mt != "text/plain" || params["version"] != "0.0.4" {
		t.Errorf("content type %q, want text/plain; version=0.0.4", last.contentType)
	}

	// Token requests: the plugin's counts are the identity server's.
	outcomes, grants, triggers := got.by(requestsTotal, "outcome"), got.by(requestsTotal, "grant_type"), got.by(requestsTotal, "trigger")
	t.Logf("metrics: %v token requests; by outcome %v; by grant %v; by trigger %v", got.sum(requestsTotal, nil), outcomes, grants, triggers)
	t.Logf("identity server: %d token requests; issued %d; errors %v; by grant %v; faults applied %d",
		st.TokenRequests, st.Issued, st.Errors, st.ByGrant, st.FaultsApplied)
	if total := got.sum(requestsTotal, nil); total != float64(st.TokenRequests) {
		t.Errorf("metrics count %v token requests, the identity server %d", total, st.TokenRequests)
	}
	wantOutcomes := map[string]float64{"success": float64(st.Issued), "server_error": float64(st.FaultsApplied)}
	for code, n := range st.Errors {
		wantOutcomes[code] += float64(n)
	}
	for _, o := range sortedKeys(outcomes, wantOutcomes) {
		if outcomes[o] != wantOutcomes[o] {
			t.Errorf("outcome %s: metrics %v, identity server %v", o, outcomes[o], wantOutcomes[o])
		}
	}
	for _, g := range sortedKeys(grants, intsToFloats(st.ByGrant)) {
		if grants[g] != float64(st.ByGrant[g]) {
			t.Errorf("grant_type %s: metrics %v, identity server %d", g, grants[g], st.ByGrant[g])
		}
	}
	if outcomes["invalid_client"] < 1 || outcomes["server_error"] != 1 {
		t.Errorf("want at least one invalid_client and exactly one server_error (the injected 503): %v", outcomes)
	}
	// The two refreshes are the reads' own, or refresh-ahead's if it came first.
	if triggers["callback"] != 1 || triggers["exchange"] != 1 || triggers["read"] < 3 || triggers["read"]+triggers["refresh_ahead"] < 5 {
		t.Errorf("triggers %v: want callback 1, exchange 1, read at least 3 (2 for hotel-muc, 1 hotel-wrong) and 2 refreshes by read or refresh_ahead", triggers)
	}
	if n := got.sum("vault_apaleo_token_request_duration_seconds_count", nil); n != got.sum(requestsTotal, nil) {
		t.Errorf("duration histogram counts %v requests, the counter %v", n, got.sum(requestsTotal, nil))
	}
	if n := got.sum("vault_apaleo_token_request_duration_seconds_bucket", map[string]string{"le": "+Inf"}); n != got.sum(requestsTotal, nil) {
		t.Errorf("histogram +Inf buckets hold %v, want %v", n, got.sum(requestsTotal, nil))
	}

	// Reads: every read counted once, by result.
	results := got.by(readsTotal, "result")
	t.Logf("metrics: creds reads by result %v; by config %v (the test made %d)", results, got.by(readsTotal, "config"), reads)
	if total := got.sum(readsTotal, nil); total != float64(reads) {
		t.Errorf("metrics count %v creds reads, the test made %d", total, reads)
	}
	muc := func(result string) float64 {
		return got.sum(readsTotal, map[string]string{"config": "hotel-muc", "result": result})
	}
	if muc("fetched") < 1 || muc("cached") < 1 || muc("fetched")+muc("cached") != 3 {
		t.Errorf("hotel-muc reads: fetched %v, cached %v; want 3 in all, the first fetched", muc("fetched"), muc("cached"))
	}
	if n := got.sum(readsTotal, map[string]string{"config": "hotel-wrong", "result": "error"}); n != 1 || results["error"] != 1 {
		t.Errorf("error reads: hotel-wrong %v, all %v; want 1", n, results["error"])
	}
	if n := got.sum(readsTotal, map[string]string{"config": "connect-app"}) + got.sum(readsTotal, map[string]string{"config": "connect-ext"}); n != 4 {
		t.Errorf("reads of the authorized credentials, by their configs: %v, want 4", n)
	}
	// hotel-muc's token, refreshed ahead once and not read since, lives 10 s: by the
	// scrape, on a busy machine, it may have expired (no_token) rather than be ok; either
	// way the gauge counts the credential once, and not as failing (the 503 was followed
	// by a token).
	state := func(s string) float64 {
		return got.sum("vault_apaleo_credentials", map[string]string{"config": "hotel-muc", "state": s})
	}
	if ok, none, all := state("ok"), state("no_token"), got.sum("vault_apaleo_credentials", map[string]string{"config": "hotel-muc"}); ok+none != 1 || all != 1 {
		t.Errorf("credentials{config=hotel-muc}: ok %v, no_token %v, %v in all; want one credential, ok or no_token", ok, none, all)
	}

	// Labels carry config names only: no credential name, secret or token.
	for _, s := range []string{"hotel-ber", "hotel-ext", secMuc, secApp, secExt} {
		if bytes.Contains(last.body, []byte(s)) {
			t.Errorf("the metrics text holds %q", s)
		}
	}
	var lines []string
	for _, l := range strings.Split(string(last.body), "\n") {
		if !strings.Contains(l, "_bucket{") {
			lines = append(lines, l)
		}
	}
	t.Logf("metrics text, without the histogram's buckets:\n%s", strings.Join(lines, "\n"))

	// Compression, as README says to set it up for Prometheus: before the tune, Vault
	// passes no Accept-Encoding and the text comes plain; after it, gzipped to a
	// scraper that asks, and plain to one that does not.
	if a := getMetricsEncoded(t, v, scraper, "gzip"); a.contentEncoding != "" || !bytes.HasPrefix(a.body, []byte("# HELP ")) {
		t.Errorf("gzip asked of an untuned mount: Content-Encoding %q, body %.20q; want the plain text", a.contentEncoding, a.body)
	}
	v.must(t, "secrets", "tune", "-passthrough-request-headers=Accept-Encoding", "-allowed-response-headers=Content-Encoding", mount)
	zipped := getMetricsEncoded(t, v, scraper, "gzip")
	if zipped.status != http.StatusOK || zipped.contentEncoding != "gzip" {
		t.Fatalf("gzip asked of the tuned mount: %d, Content-Encoding %q", zipped.status, zipped.contentEncoding)
	}
	unzipped := parseScrape(t, zipped.body)
	idp.admin(t, "stats", &st)
	if n := unzipped.sum(requestsTotal, nil); n != float64(st.TokenRequests) || len(unzipped) != len(got) {
		t.Errorf("gzipped scrape: %d samples, %v token requests; want %d samples and the identity server's %d; series only in the gzipped one %v, only in the plain one %v",
			len(unzipped), n, len(got), st.TokenRequests, unzipped.seriesNotIn(got), got.seriesNotIn(unzipped))
	}
	if ct := zipped.contentType; ct != last.contentType {
		t.Errorf("gzipped scrape's content type %q, want %q", ct, last.contentType)
	}
	t.Logf("gzip: %d bytes on the wire for %d of text", zipped.wire, len(zipped.body))
	for _, ae := range []string{"identity", "br"} {
		if a := getMetricsEncoded(t, v, scraper, ae); a.contentEncoding != "" || !bytes.Equal(a.body[:min(len(a.body), 7)], []byte("# HELP ")) {
			t.Errorf("Accept-Encoding %s of the tuned mount: Content-Encoding %q; want the plain text", ae, a.contentEncoding)
		}
	}
}

func intsToFloats(m map[string]int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		out[k] = float64(v)
	}
	return out
}

func sortedKeys(ms ...map[string]float64) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}
