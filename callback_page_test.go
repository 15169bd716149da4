package apaleo

import (
	"crypto/sha256"
	"encoding/base64"
	"maps"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// callbackResponse runs callback with q and returns Vault's raw response.
func (e *testEnv) callbackResponse(q url.Values) *logical.Response {
	e.t.Helper()
	data := map[string]any{}
	for k := range q {
		data[k] = q.Get(k)
	}
	resp, err := e.do(logical.ReadOperation, "callback", data)
	if err != nil {
		e.t.Fatalf("callback: %v", err)
	}
	return resp
}

// TestCallbackPage_WhatTheAdminSees: each outcome of the callback has its own title and
// status, says what to do next, and the success page names the credential and account
// but shows neither the code nor a token.
func TestCallbackPage_WhatTheAdminSees(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)

	ok := e.authorize("hotel-ber", "connect")
	resp := e.callbackResponse(ok)
	page := checkPage(t, resp, http.StatusOK, "apaleo account BER is connected to Vault")
	for _, want := range []string{"creds/hotel-ber", "apaleo account BER", "What happens next", "You can close this window."} {
		if !strings.Contains(page, want) {
			t.Errorf("success page lacks %q:\n%s", want, page)
		}
	}
	stored, err := readCred(t.Context(), e.storage, "hotel-ber")
	if err != nil || stored == nil {
		t.Fatalf("creds/hotel-ber not stored: %v", err)
	}
	for what, secret := range map[string]string{"code": ok.Get("code"), "refresh token": stored.RefreshToken, "access token": stored.Token.AccessToken} {
		if secret == "" || strings.Contains(page, secret) {
			t.Errorf("success page shows the %s (or it is empty: %q)", what, secret)
		}
	}

	checkPage(t, e.callbackResponse(ok), http.StatusBadRequest, titleLinkUsed)

	late := e.authorize("hotel-late", "connect")
	e.clock.Add(pendingTTL + time.Second)
	checkPage(t, e.callbackResponse(late), http.StatusBadRequest, titleLinkExpired)

	denied := e.authorize("hotel-no", "connect")
	page = checkPage(t, e.callbackResponse(url.Values{"state": {denied.Get("state")}, "error": {"access_denied"}}), http.StatusBadRequest, titleAccessDenied)
	if !strings.Contains(page, "Ask your Vault operator for a new link") {
		t.Errorf("access_denied page does not say what to do:\n%s", page)
	}
	checkPage(t, e.callbackResponse(url.Values{"state": {"forged"}, "error": {"access_denied"}}), http.StatusBadRequest, titleFailed)
}

var (
	titleRegex = regexp.MustCompile(`<title>([^<]*)</title>`)
	styleRegex = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	// Anything that would make the browser fetch or run something besides the page.
	fetchRegex = regexp.MustCompile(`(?i)<script|<img|<link|<iframe|<object|<form|\ssrc=|\shref=|url\(|@import`)
)

// checkPage checks a callback response's status, title, language and headers and
// that it loads nothing else; it returns the page.
func checkPage(t *testing.T, resp *logical.Response, status int, title string) string {
	t.Helper()
	page := string(resp.Data[logical.HTTPRawBody].([]byte))
	if got := resp.Data[logical.HTTPStatusCode]; got != status {
		t.Errorf("%q: status %v, want %d", title, got, status)
	}
	if m := titleRegex.FindStringSubmatch(page); m == nil || m[1] != title || !strings.Contains(page, "<h1>"+title+"</h1>") {
		t.Errorf("title and heading %v, want %q:\n%s", m, title, page)
	}
	if !strings.HasPrefix(page, "<!doctype html>\n<html lang=\"en\">") {
		t.Errorf("%q: no doctype or lang:\n%s", title, page)
	}
	if fetchRegex.MatchString(page) {
		t.Errorf("%q: the page loads or runs something (%q):\n%s", title, fetchRegex.FindString(page), page)
	}
	if resp.Data[logical.HTTPContentType] != "text/html; charset=utf-8" || resp.Data[logical.HTTPCacheControlHeader] != "no-store" {
		t.Errorf("%q: content type %v, cache control %v", title, resp.Data[logical.HTTPContentType], resp.Data[logical.HTTPCacheControlHeader])
	}
	h := http.Header(resp.Headers)
	if h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("%q: headers %v", title, h)
	}
	// The CSP allows the page's style by hash: the hash must be of the style as served.
	m := styleRegex.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("%q: no <style>", title)
	}
	sum := sha256.Sum256([]byte(m[1]))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "style-src " + hash + ";", "frame-ancestors 'none'", "form-action 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%q: Content-Security-Policy %q lacks %q", title, csp, want)
		}
	}
	if !strings.Contains(page, `<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; style-src `+strings.ReplaceAll(hash, "'", "&#39;")) ||
		!strings.Contains(page, `<meta name="referrer" content="no-referrer">`) {
		t.Errorf("%q: the page's own CSP or referrer tag is missing:\n%s", title, page)
	}
	return page
}

// TestCallbackPage_READMEAllowsItsHeaders: Vault drops a plugin's response headers unless
// the mount allows them, so the README's tune commands must name every one the page sets;
// and as a tune's list replaces the mount's, the one that lets the metrics' gzip out must
// name the page's too.
func TestCallbackPage_READMEAllowsItsHeaders(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Each `vault secrets tune` command, its continuation lines joined.
	var tunes []string
	lines := strings.Split(string(readme), "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "vault secrets tune ") {
			continue
		}
		cmd := strings.TrimSpace(lines[i])
		for strings.HasSuffix(cmd, `\`) && i+1 < len(lines) {
			i++
			cmd = strings.TrimSuffix(cmd, `\`) + " " + strings.TrimSpace(lines[i])
		}
		if strings.Contains(cmd, "-allowed-response-headers=") {
			tunes = append(tunes, cmd)
		}
	}
	page := successPage("apaleo/", "x", "").response().Headers
	e := newTestEnv(t)
	metrics, err := readMetricsAccepting(e.b, e.storage, "gzip")
	if err != nil || len(metrics.Headers) == 0 {
		t.Fatalf("gzipped metrics: %v, headers %v", err, metrics)
	}
	gzipTunes := 0
	for _, cmd := range tunes {
		want := slices.Collect(maps.Keys(page))
		if strings.Contains(cmd, "-passthrough-request-headers=Accept-Encoding") {
			gzipTunes++
			want = append(want, slices.Collect(maps.Keys(metrics.Headers))...)
		}
		for _, h := range want {
			if !strings.Contains(cmd, "-allowed-response-headers="+h+" ") {
				t.Errorf("README's %q does not allow %s", cmd, h)
			}
		}
	}
	if len(tunes) != 2 || gzipTunes != 1 {
		t.Errorf("README has %d secrets tune commands that allow headers (%d for gzip), want the callback page's and the metrics': %q", len(tunes), gzipTunes, tunes)
	}
}
