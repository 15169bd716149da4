package main

// idp.go: the dev identity server (bin/apaleo-dev-identity -admin): its stats, a token
// request sent to it directly, and its admin API (clients, faults).

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// idpAdmin is a client of one dev identity server over TLS, trusting its CA.
type idpAdmin struct {
	url string
	hc  *http.Client
}

// newIdpAdmin returns a client of the identity server at base (loopback only), trusting
// caFile (if set), keeping up to conns connections alive.
func newIdpAdmin(base, caFile string, timeout time.Duration, conns int) (*idpAdmin, error) {
	u, err := url.Parse(base)
	if err != nil || u.Hostname() != "127.0.0.1" {
		return nil, fmt.Errorf("identity server %q: want https://127.0.0.1:PORT (loopback only)", base)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &idpAdmin{url: strings.TrimRight(base, "/"), hc: &http.Client{Timeout: timeout, Transport: tr}}, nil
}

// idpStats is GET /_admin/stats.
type idpStats struct {
	TokenRequests int            `json:"token_requests"`
	ByGrant       map[string]int `json:"by_grant"`
	Issued        int            `json:"issued"`
	FaultsApplied int            `json:"faults_applied"`
	PendingFaults int            `json:"pending_faults"`
	RequestTimes  []int64        `json:"request_times_ms"`
}

func (c *common) idpStats() (idpStats, error) {
	if c.idp == nil {
		return idpStats{}, errors.New("no -idp")
	}
	return c.idp.stats()
}

// idpStatsOrZero is idpStats, or zero stats without -idp.
func (c *common) idpStatsOrZero() (idpStats, error) {
	if c.idp == nil {
		return idpStats{}, nil
	}
	return c.idpStats()
}

// directToken is one client credentials token request to the identity server, made the
// way the plugin makes it (HTTP Basic, form body), over a kept-alive TLS connection.
func (a *idpAdmin) directToken(id, secret, scopes string) error {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scopes}}
	req, err := http.NewRequest(http.MethodPost, a.url+"/connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"access_token"`)) {
		return fmt.Errorf("direct token request: HTTP %d", resp.StatusCode)
	}
	return nil
}

// call sends method to the admin API's path with body as JSON and wants status want.
func (a *idpAdmin) call(method, path string, body any, want int) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != want {
		err = fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, err
}

func (a *idpAdmin) stats() (idpStats, error) {
	var s idpStats
	b, err := a.call(http.MethodGet, "/_admin/stats", nil, http.StatusOK)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// reset zeroes the stats and clears queued faults.
func (a *idpAdmin) reset() error {
	_, err := a.call(http.MethodPost, "/_admin/reset", nil, http.StatusNoContent)
	return err
}

func (a *idpAdmin) clearFaults() error {
	_, err := a.call(http.MethodDelete, "/_admin/faults", nil, http.StatusNoContent)
	return err
}

// queueFaults appends n copies of fault, in bodies well under the admin API's 1 MiB.
func (a *idpAdmin) queueFaults(fault map[string]any, n int) error {
	for n > 0 {
		k := min(n, 10_000)
		list := make([]map[string]any, k)
		for i := range list {
			list[i] = fault
		}
		if _, err := a.call(http.MethodPost, "/_admin/faults", list, http.StatusNoContent); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// countIn returns the token requests that arrived in [from, to) and the most in any one
// second of it (seconds counted from from).
func countIn(times []int64, from, to time.Time) (n, peak int) {
	f, t := from.UnixMilli(), to.UnixMilli()
	per := map[int64]int{}
	for _, ms := range times {
		if ms >= f && ms < t {
			n++
			per[(ms-f)/1000]++
		}
	}
	for _, v := range per {
		peak = max(peak, v)
	}
	return n, peak
}
