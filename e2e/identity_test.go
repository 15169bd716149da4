//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// identity_test.go: the dev identity server as a process, its admin API and a browser
// that logs in and consents at it.

type identity struct {
	URL    string
	CAFile string
	Log    string
	http   *http.Client
	proc   *proc
}

// idpStats mirrors the dev identity server's GET /_admin/stats.
type idpStats struct {
	TokenRequests  int            `json:"token_requests"`
	ByGrant        map[string]int `json:"by_grant"`
	ByClient       map[string]int `json:"by_client"` // token requests by the client id they name
	ByScope        map[string]int `json:"by_scope"`  // client credentials requests by the scopes asked, sorted
	Issued         int            `json:"issued"`
	Errors         map[string]int `json:"errors"`
	Revocations    int            `json:"revocations"`
	Authorizations int            `json:"authorizations"`
	PendingFaults  int            `json:"pending_faults"`
	RequestTimes   []int64        `json:"request_times_ms"` // when each token request arrived
	// RefreshTokenMostSent: the most times one refresh token value was sent.
	RefreshTokenMostSent int `json:"refresh_token_most_sent"`
}

// startIdentity runs the dev identity server over TLS with the admin API, tokens valid
// for tokenTTL, and the given -client specs.
func startIdentity(t *testing.T, name string, tokenTTL time.Duration, clients ...string) *identity {
	t.Helper()
	return startIdentityFlags(t, name, tokenTTL, nil, clients...)
}

// startIdentityWith is startIdentity with refresh tokens that die after refreshTTL
// unused (0: the server's default). Refresh tokens rotate on every use and each new one
// lives refreshTTL: a sliding lifetime, like IdentityServer's.
func startIdentityWith(t *testing.T, name string, tokenTTL, refreshTTL time.Duration, clients ...string) *identity {
	t.Helper()
	var flags []string
	if refreshTTL > 0 {
		flags = append(flags, "-refresh-ttl", refreshTTL.String())
	}
	return startIdentityFlags(t, name, tokenTTL, flags, clients...)
}

// startIdentityFlags is startIdentity with more command-line flags (-login, ...).
func startIdentityFlags(t *testing.T, name string, tokenTTL time.Duration, flags []string, clients ...string) *identity {
	t.Helper()
	dir := filepath.Join(logDir(t), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(dir, "url")
	args := []string{"-addr", "127.0.0.1:0", "-admin", "-tls-dir", dir, "-url-file", urlFile, "-token-ttl", tokenTTL.String()}
	args = append(args, flags...)
	for _, c := range clients {
		args = append(args, "-client", c)
	}
	logPath := filepath.Join(dir, "identity.log")
	p := startProc(t, name, logPath, baseEnv(dir), bins.identity, args...)
	var u string
	waitFor(t, name+" to listen", 15*time.Second, 20*time.Millisecond, func() (bool, error) {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", name, p.err, tail(logPath, 20))
		}
		b, err := os.ReadFile(urlFile)
		u = strings.TrimSpace(string(b))
		return err == nil && u != "", err
	})
	caFile := filepath.Join(dir, "ca.pem")
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate in %s", name, caFile)
	}
	return &identity{
		URL:    u,
		CAFile: caFile,
		Log:    logPath,
		proc:   p,
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
	}
}

func (i *identity) stats(t *testing.T) idpStats {
	t.Helper()
	var s idpStats
	i.admin(t, "stats", &s)
	return s
}

// admin decodes GET /_admin/<what> of the identity server into v.
func (i *identity) admin(t *testing.T, what string, v any) {
	t.Helper()
	resp, err := i.http.Get(i.URL + "/_admin/" + what)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("identity %s: status %d, %v", what, resp.StatusCode, err)
	}
}

// browser is an HTTP client for the authorize flow: it trusts the identity server's CA,
// keeps cookies and records every URL it is redirected to.
type browser struct {
	*http.Client
	visited []*url.URL
}

func (i *identity) browser(t *testing.T, follow bool) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{}
	b.Client = &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: i.http.Transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			b.visited = append(b.visited, req.URL)
			if !follow {
				return http.ErrUseLastResponse
			}
			if len(via) > 10 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
	return b
}
