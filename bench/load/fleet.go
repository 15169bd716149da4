package main

// fleet: many hotels under one app. 1,000 authorized credentials under one
// authorization_code config, short token lives, random readers; refresh_ahead on and
// off against a pure cache-hit baseline in the same run; then an outage of the identity
// server under load. See docs/benchmarks.md ("Fleet").

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/oauth2"
)

// ---------------------------------------------------------------------------------------
// the dev identity server's admin API

type idpAdmin struct {
	url string
	hc  *http.Client
}

type fleetIdpStats struct {
	TokenRequests int     `json:"token_requests"`
	Issued        int     `json:"issued"`
	FaultsApplied int     `json:"faults_applied"`
	PendingFaults int     `json:"pending_faults"`
	RequestTimes  []int64 `json:"request_times_ms"`
}

func newIdpAdmin(base, caFile string, timeout time.Duration) (*idpAdmin, error) {
	u, err := url.Parse(base)
	if err != nil || u.Hostname() != "127.0.0.1" {
		return nil, fmt.Errorf("identity server %q: want https://127.0.0.1:PORT (loopback only)", base)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
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

func (a *idpAdmin) stats() (fleetIdpStats, error) {
	var s fleetIdpStats
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

// refreshToken gets a refresh token straight from the dev identity server, which
// consents on its own: the authorize URL (PKCE S256) without following its redirect,
// then the code exchange.
func (a *idpAdmin) refreshToken(ctx context.Context, cfg *oauth2.Config) (string, error) {
	verifier := oauth2.GenerateVerifier()
	state := randHex(16)
	noRedirect := &http.Client{Transport: a.hc.Transport, Timeout: a.hc.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode/100 != 3 {
		return "", fmt.Errorf("authorize: HTTP %d, no redirect", resp.StatusCode)
	}
	q := loc.Query()
	if q.Get("state") != state || q.Get("code") == "" {
		return "", fmt.Errorf("authorize: redirect without code or with another state (error %q)", q.Get("error"))
	}
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, a.hc), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("code exchange: %w", err)
	}
	if tok.RefreshToken == "" {
		return "", errors.New("code exchange: no refresh token")
	}
	return tok.RefreshToken, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------------------
// the plugin's metrics, scraped

type histBucket struct {
	LE    float64 `json:"le"`
	Count float64 `json:"count"`
}

// metricSnap is one scrape of <mount>/metrics, summed over configs and grant types.
type metricSnap struct {
	T              float64            `json:"t"` // seconds since the first scrape
	UnixMS         int64              `json:"unix_ms"`
	TokenByTrigger map[string]float64 `json:"token_requests_by_trigger"`
	TokenByOutcome map[string]float64 `json:"token_requests_by_outcome"`
	Reads          map[string]float64 `json:"reads_by_result"`
	Buckets        []histBucket       `json:"duration_buckets"`
	DurationSum    float64            `json:"duration_sum"`
	DurationCount  float64            `json:"duration_count"`
	States         map[string]float64 `json:"credentials_by_state"`
	// StatesByConfig: config -> state -> credentials.
	StatesByConfig map[string]map[string]float64 `json:"credentials_by_config_and_state"`
}

type phaseMark struct {
	Name  string  `json:"name"`
	Start float64 `json:"start"` // seconds since the first scrape
	End   float64 `json:"end"`
}

// fleetSeries is what -metrics-out holds: the input of bench/charts.
type fleetSeries struct {
	Mount   string       `json:"mount"`
	Started time.Time    `json:"started"`
	Scrapes []metricSnap `json:"scrapes"`
	Phases  []phaseMark  `json:"phases"`
	TTL     float64      `json:"token_ttl_s"`
	DelayMS float64      `json:"delay_ms"`
}

type scraper struct {
	c      *common
	mount  string
	start  time.Time
	mu     sync.Mutex
	series fleetSeries
	stop   chan struct{}
	done   chan struct{}
}

func (s *scraper) scrape() (metricSnap, error) {
	snap := metricSnap{TokenByTrigger: map[string]float64{}, TokenByOutcome: map[string]float64{},
		Reads: map[string]float64{}, States: map[string]float64{}, StatesByConfig: map[string]map[string]float64{}}
	now := time.Now()
	req, err := s.c.api.Request(http.MethodGet, s.mount+"/metrics", nil)
	if err != nil {
		return snap, err
	}
	resp, err := s.c.vault.Do(req)
	if err != nil {
		return snap, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return snap, fmt.Errorf("GET %s/metrics: HTTP %d", s.mount, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return snap, fmt.Errorf("%s/metrics: %w", s.mount, err)
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch name {
			case "vault_apaleo_token_requests_total":
				snap.TokenByTrigger[labels["trigger"]] += m.GetCounter().GetValue()
				snap.TokenByOutcome[labels["outcome"]] += m.GetCounter().GetValue()
			case "vault_apaleo_creds_reads_total":
				snap.Reads[labels["result"]] += m.GetCounter().GetValue()
			case "vault_apaleo_credentials":
				snap.States[labels["state"]] += m.GetGauge().GetValue()
				if snap.StatesByConfig[labels["config"]] == nil {
					snap.StatesByConfig[labels["config"]] = map[string]float64{}
				}
				snap.StatesByConfig[labels["config"]][labels["state"]] += m.GetGauge().GetValue()
			case "vault_apaleo_token_request_duration_seconds":
				h := m.GetHistogram()
				snap.DurationSum += h.GetSampleSum()
				snap.DurationCount += float64(h.GetSampleCount())
				for i, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue // JSON has no +Inf; the count is DurationCount
					}
					if i >= len(snap.Buckets) {
						snap.Buckets = append(snap.Buckets, histBucket{LE: b.GetUpperBound()})
					}
					snap.Buckets[i].Count += float64(b.GetCumulativeCount())
				}
			}
		}
	}
	snap.UnixMS = now.UnixMilli()
	snap.T = now.Sub(s.start).Seconds()
	return snap, nil
}

// mark scrapes now, keeps the snapshot in the series, and returns it.
func (s *scraper) mark() (metricSnap, error) {
	snap, err := s.scrape()
	if err != nil {
		return snap, err
	}
	s.mu.Lock()
	s.series.Scrapes = append(s.series.Scrapes, snap)
	s.mu.Unlock()
	return snap, nil
}

func (s *scraper) run(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.mark(); err != nil {
				fmt.Fprintln(os.Stderr, "load: scrape:", err)
			}
		}
	}
}

func (s *scraper) phase(name string, start, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.series.Phases = append(s.series.Phases, phaseMark{Name: name, Start: start.Sub(s.start).Seconds(), End: end.Sub(s.start).Seconds()})
}

func delta(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range b {
		if d := v - a[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------
// readers

type readRec struct {
	at   time.Duration // start, since the readers began
	lat  time.Duration
	code int // HTTP status, 0 for a transport error
}

// readRandom runs readers goroutines reading random names of mount/creds/ for d.
func readRandom(c *common, mount string, names []string, readers int, d time.Duration) ([]readRec, time.Time) {
	var wg sync.WaitGroup
	recs := make([][]readRec, readers)
	start := time.Now()
	deadline := start.Add(d)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(i), uint64(start.UnixNano())))
			out := make([]readRec, 0, 8192)
			for time.Now().Before(deadline) {
				name := names[rng.IntN(len(names))]
				t0 := time.Now()
				r := readRec{at: t0.Sub(start)}
				r.code, _ = c.api.Discard(http.MethodGet, mount+"/creds/"+name) // 0: no answer
				r.lat = time.Since(t0)
				out = append(out, r)
			}
			recs[i] = out
		}()
	}
	wg.Wait()
	var all []readRec
	for _, r := range recs {
		all = append(all, r...)
	}
	return all, start
}

// pacedPass reads every name once, name i at start + i*d/len(names), so that the tokens
// it fetches are issued evenly over d (as hotels coming online at different times).
// Meanwhile readers goroutines read random names among those already passed, so every
// credential is in use from its first token on, as in the measured window.
func pacedPass(c *common, mount string, names []string, d time.Duration, readers int) error {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 64)
		errs   atomic.Int64
		first  atomic.Value
		passed atomic.Int64
		done   = make(chan struct{})
		rwg    sync.WaitGroup
	)
	start := time.Now()
	for i := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for {
				select {
				case <-done:
					return
				default:
				}
				k := int(passed.Load())
				if k == 0 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _, _ = c.api.Do(http.MethodGet, mount+"/creds/"+names[rng.IntN(k)], nil)
			}
		}()
	}
	for i, name := range names {
		time.Sleep(time.Until(start.Add(time.Duration(i) * d / time.Duration(len(names)))))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := c.api.Must(http.MethodGet, mount+"/creds/"+name, nil, http.StatusOK); err != nil {
				errs.Add(1)
				first.CompareAndSwap(nil, err)
			}
			passed.Add(1)
		}()
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	if n := errs.Load(); n > 0 {
		return fmt.Errorf("paced pass: %d failed reads, first: %v", n, first.Load())
	}
	return nil
}

// ---------------------------------------------------------------------------------------
// results

type fleetMode struct {
	Mode          string             `json:"mode"`
	Window        time.Duration      `json:"window_ns"`
	Reads         int                `json:"reads"`
	Errors        int                `json:"errors"`
	Waited        int                `json:"waited"` // took longer than delay/2
	P50           time.Duration      `json:"p50_ns"`
	P99           time.Duration      `json:"p99_ns"`
	Max           time.Duration      `json:"max_ns"`
	P50Ratio      float64            `json:"p50_ratio_to_cache_hit"`
	P99Ratio      float64            `json:"p99_ratio_to_cache_hit"`
	TokenRequests int                `json:"token_requests"`
	PerCredLife   float64            `json:"token_requests_per_credential_per_lifetime"`
	PeakPerSecond int                `json:"most_token_requests_in_one_second"`
	Undelayed     bool               `json:"some_token_requests_undelayed"`
	ByTrigger     map[string]float64 `json:"metrics_token_requests_by_trigger"`
	ByOutcome     map[string]float64 `json:"metrics_token_requests_by_outcome"`
	ReadsByResult map[string]float64 `json:"metrics_reads_by_result"`
	MeanTokenMS   float64            `json:"metrics_token_request_mean_ms"`
	Proc          procStat           `json:"plugin_process"`
}

type outageResult struct {
	Duration      time.Duration      `json:"duration_ns"`
	After         time.Duration      `json:"after_ns"`
	Creds         int                `json:"credentials"`
	Readers       int                `json:"readers"`
	Reads         int                `json:"reads"`
	ReadsOK       int                `json:"reads_ok"`
	ReadsByStatus map[int]int        `json:"reads_by_status"`
	TokenRequests int                `json:"token_requests"`
	PeakPerSecond int                `json:"most_token_requests_in_one_second"`
	FaultsApplied int                `json:"faults_applied"`
	QueueRanDry   bool               `json:"fault_queue_ran_dry"`
	ReadsByResult map[string]float64 `json:"metrics_reads_by_result"`
	ByOutcome     map[string]float64 `json:"metrics_token_requests_by_outcome"`
	// After the outage (faults cleared): reads, errors and token requests.
	AfterReads     int                `json:"after_reads"`
	AfterErrors    int                `json:"after_errors"`
	AfterTokenReqs int                `json:"after_token_requests"`
	AfterByResult  map[string]float64 `json:"after_metrics_reads_by_result"`
	LastErrorAfter time.Duration      `json:"last_error_after_end_ns"`
	// Read latency during the outage: all reads, those answered 200, those answered an error.
	Lat            map[string]time.Duration `json:"latency_ns"`
	SlowReads      int                      `json:"reads_over_1s"`
	AfterSlowReads int                      `json:"after_reads_over_1s"`
	StatesAtEnd    map[string]float64       `json:"credentials_by_state_at_outage_end"`
}

type fleetResult struct {
	N          int           `json:"credentials"`
	Readers    int           `json:"readers"`
	TTL        time.Duration `json:"token_ttl_ns"`
	MinTTL     int           `json:"min_ttl_s"`
	Lifetimes  int           `json:"lifetimes"`
	LeaseTTL   time.Duration `json:"max_lease_ttl_ns"`
	Delay      time.Duration `json:"delay_ns"`
	ImportTime time.Duration `json:"import_ns"`
	HitImport  time.Duration `json:"hit_import_ns"`
	Modes      []*fleetMode  `json:"modes"`
	Outage     *outageResult `json:"outage,omitempty"`
}

// ---------------------------------------------------------------------------------------
// the fleet run

func runFleet(args []string) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	var c common
	c.flags(fs)
	var (
		mount      = fs.String("mount", "apaleo-fleet", "mount of the plugin")
		hitIdp     = fs.String("hit-idp", "", "a second dev identity server with long token lives, for the cache-hit baseline (https://127.0.0.1:PORT, -admin)")
		hitIdpCA   = fs.String("hit-idp-ca", "", "its ca.pem")
		n          = fs.Int("n", 1000, "authorized credentials")
		ttl        = fs.Duration("ttl", 30*time.Second, "token lifetime: the -token-ttl of the identity server at -idp")
		minTTL     = fs.Int("min-ttl", -1, "min_ttl of the fleet config, seconds (-1: a quarter of -ttl, as apaleo's hour-long tokens with the default 15m)")
		lifetimes  = fs.Int("lifetimes", 5, "token lifetimes measured per mode")
		baseline   = fs.Duration("baseline", 30*time.Second, "length of the cache-hit run")
		readers    = fs.Int("readers", 32, "concurrent readers")
		delay      = fs.Duration("delay", 200*time.Millisecond, "delay of every token request at the identity server (queued delay faults)")
		workers    = fs.Int("c", 8, "concurrent imports")
		modes      = fs.String("modes", "hit,on,off,outage", "what to run, in this order")
		outage     = fs.Duration("outage", 60*time.Second, "outage length (500 to every token request)")
		outageN    = fs.Int("outage-creds", 100, "credentials read during the outage")
		outageR    = fs.Int("outage-readers", 64, "readers during the outage")
		outageTail = fs.Duration("outage-after", 15*time.Second, "keep reading this long after the outage")
		pluginPath = fs.String("plugin-path", "", "absolute path of the plugin binary serving -mount (to find its process)")
		metricsOut = fs.String("metrics-out", "", "write the scraped metrics series (JSON, for bench/charts) here")
		vaultAddr  = fs.String("redirect-base", "", "base of the redirect URI registered for the app [-addr]")
		leaseTTL   = fs.Duration("lease-ttl", 10*time.Second, "max_lease_ttl of the mount, so that every mode's leases expire alike (0: leave it)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := strings.Split(*modes, ",")
	if *n < 1 || *n > 100_000 || *readers < 1 || *readers > 1024 || *lifetimes < 1 || *lifetimes > 100 ||
		*ttl < 10*time.Second || *ttl > 10*time.Minute || *delay <= 0 || *delay > 5*time.Second ||
		*workers < 1 || *workers > 64 || *outage > 10*time.Minute || *outageTail > 5*time.Minute || *baseline > 10*time.Minute {
		return errors.New("fleet: need -n 1..100000, -readers 1..1024, -lifetimes 1..100, -ttl 10s..10m, -delay up to 5s, -c 1..64, -outage up to 10m")
	}
	if c.idpURL == "" || *pluginPath == "" || (slices.Contains(want, "hit") && *hitIdp == "") {
		return errors.New("fleet: need -idp, -plugin-path, and -hit-idp for the cache-hit run")
	}
	if *minTTL < 0 {
		*minTTL = int((*ttl / 4).Seconds())
	}
	if *vaultAddr == "" {
		*vaultAddr = c.addr
	}
	if c.requestDeadline < 40*time.Second {
		c.requestDeadline = 40 * time.Second // reads without a token wait up to 30 s in an outage
	}
	if err := c.setup(max(*readers, *outageR) + 8); err != nil {
		return err
	}
	idp, err := newIdpAdmin(c.idpURL, c.idpCA, 30*time.Second)
	if err != nil {
		return err
	}
	var hit *idpAdmin
	if *hitIdp != "" {
		if hit, err = newIdpAdmin(*hitIdp, *hitIdpCA, 30*time.Second); err != nil {
			return err
		}
	}
	if *leaseTTL > 0 {
		// Every read is a lease, which Vault revokes when it expires. Tokens of 30 s make
		// leases of at most 30 s; the cache-hit run's 1 h tokens would make leases that
		// outlive the run, sparing it the revocations the other modes pay. A common cap
		// makes every mode pay them alike (as every read does in production once its
		// lease's hour is up).
		if _, err := c.api.Must(http.MethodPost, "sys/mounts/"+*mount+"/tune", map[string]any{"max_lease_ttl": leaseTTL.String()}, http.StatusOK, http.StatusNoContent); err != nil {
			return err
		}
	}
	r := &fleetResult{N: *n, LeaseTTL: *leaseTTL, Readers: *readers, TTL: *ttl, MinTTL: *minTTL, Lifetimes: *lifetimes, Delay: *delay}
	redirect := strings.TrimRight(*vaultAddr, "/") + "/v1/" + *mount + "/callback"

	// --- set up: an app per identity server, a config per app, n credentials per config
	var firstImport, firstExpiry time.Time
	setupApp := func(a *idpAdmin, caFile, cfgName, prefix string, minTTL int) ([]string, time.Duration, error) {
		secret := randHex(16)
		clientID := cfgName + "-app"
		if _, err := a.call(http.MethodPost, "/_admin/clients", map[string]any{
			"id": clientID, "secret": secret, "account_code": "FLEET",
			"scopes": []string{"reservations.read"}, "redirect_uris": []string{redirect},
		}, http.StatusNoContent); err != nil {
			return nil, 0, err
		}
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return nil, 0, err
		}
		cfg := map[string]any{"client_id": clientID, "client_secret": secret, "grant_type": "authorization_code",
			"redirect_uri": redirect, "identity_url": a.url, "ca_certificate": string(ca), "scopes": "reservations.read",
			"max_token_requests_per_second": 0, "refresh_ahead": true}
		if minTTL > 0 {
			cfg["min_ttl"] = minTTL
		}
		if _, err := c.api.Must(http.MethodPost, *mount+"/config/"+cfgName, cfg, http.StatusOK, http.StatusNoContent); err != nil {
			return nil, 0, err
		}
		oc := &oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: redirect,
			Scopes:   []string{"reservations.read", "offline_access"},
			Endpoint: oauth2.Endpoint{AuthURL: a.url + "/connect/authorize", TokenURL: a.url + "/connect/token", AuthStyle: oauth2.AuthStyleInParams}}
		names := make([]string, *n)
		for i := range names {
			names[i] = fmt.Sprintf("%s%05d", prefix, i)
		}
		d, _, err := parallel(*workers, names, func(name string) error {
			rt, err := a.refreshToken(context.Background(), oc)
			if err != nil {
				return err
			}
			t0 := time.Now()
			b, err := c.api.Must(http.MethodPost, *mount+"/creds/"+name, map[string]any{"config": cfgName, "refresh_token": rt}, http.StatusOK, http.StatusNoContent)
			if err == nil && name == names[0] && firstImport.IsZero() {
				var resp struct {
					Data struct {
						ExpiresAt time.Time `json:"expires_at"`
					} `json:"data"`
				}
				if err := json.Unmarshal(b, &resp); err != nil {
					return fmt.Errorf("import %s: %w", name, err)
				}
				firstImport, firstExpiry = t0, resp.Data.ExpiresAt
			}
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		fmt.Fprintf(os.Stderr, "load: fleet: %d credentials imported under config/%s in %s\n", *n, cfgName, d.Round(time.Millisecond))
		return names, d, nil
	}
	names, d, err := setupApp(idp, c.idpCA, "fleet", "hotel-", *minTTL)
	if err != nil {
		return err
	}
	r.ImportTime = d
	// The identity server's token lifetime must be the one given.
	if left := firstExpiry.Sub(firstImport); left > *ttl+2*time.Second || left < *ttl-5*time.Second {
		return fmt.Errorf("fleet: the first imported token lives %s; -ttl says %s: start the identity server with -token-ttl %s", left.Round(time.Second), *ttl, *ttl)
	}
	var hitNames []string
	if slices.Contains(want, "hit") {
		if hitNames, r.HitImport, err = setupApp(hit, *hitIdpCA, "fleet-hit", "hit-", 0); err != nil {
			return err
		}
	}

	sc := &scraper{c: &c, mount: *mount, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	sc.series = fleetSeries{Mount: *mount, Started: sc.start, TTL: ttl.Seconds(), DelayMS: float64(*delay) / 1e6}
	if _, err := sc.mark(); err != nil {
		return err
	}
	go sc.run(time.Second)
	stopScraper := func() {
		if sc.stop != nil {
			close(sc.stop)
			<-sc.done
			sc.stop = nil
		}
	}
	defer stopScraper()

	setRefreshAhead := func(on bool) error {
		_, err := c.api.Must(http.MethodPost, *mount+"/config/fleet", map[string]any{"refresh_ahead": on}, http.StatusOK, http.StatusNoContent)
		return err
	}
	threshold := *delay / 2
	summarize := func(m *fleetMode, recs []readRec) {
		var lat dist
		for _, rr := range recs {
			if rr.code != http.StatusOK {
				m.Errors++
				continue
			}
			lat = append(lat, rr.lat)
			if rr.lat > threshold {
				m.Waited++
			}
		}
		m.Reads = len(recs)
		s := lat.sorted()
		m.P50, m.P99 = s.pct(50), s.pct(99)
		if len(s) > 0 {
			m.Max = s[len(s)-1]
		}
	}
	measure := func(m *fleetMode, a *idpAdmin, credsN int, phase string, do func() []readRec) error {
		s0, err := sc.mark()
		if err != nil {
			return err
		}
		t0 := time.Now()
		before, err := a.stats()
		if err != nil {
			return err
		}
		recs := do()
		t1 := time.Now()
		s1, err := sc.mark()
		if err != nil {
			return err
		}
		after, err := a.stats()
		if err != nil {
			return err
		}
		sc.phase(phase, t0, t1)
		m.Window = t1.Sub(t0)
		summarize(m, recs)
		m.TokenRequests, m.PeakPerSecond = countIn(after.RequestTimes, t0, t1)
		if len(after.RequestTimes) >= 100_000 {
			m.TokenRequests = after.TokenRequests - before.TokenRequests // request_times is full
		}
		m.PerCredLife = float64(m.TokenRequests) / float64(credsN) / (m.Window.Seconds() / ttl.Seconds())
		m.ByTrigger = delta(s0.TokenByTrigger, s1.TokenByTrigger)
		m.ByOutcome = delta(s0.TokenByOutcome, s1.TokenByOutcome)
		m.ReadsByResult = delta(s0.Reads, s1.Reads)
		if dc := s1.DurationCount - s0.DurationCount; dc > 0 {
			m.MeanTokenMS = (s1.DurationSum - s0.DurationSum) / dc * 1000
		}
		if p, err := pluginProc(*pluginPath); err == nil {
			m.Proc = p
		} else {
			return err
		}
		fmt.Fprintf(os.Stderr, "load: fleet %s: %d reads, %d waited, %d errors, p50 %s ms, p99 %s ms, %d token requests (peak %d/s), RSS %.1f MiB\n",
			m.Mode, m.Reads, m.Waited, m.Errors, ms(m.P50), ms(m.P99), m.TokenRequests, m.PeakPerSecond, float64(m.Proc.RSSKiB)/1024)
		return nil
	}
	window := time.Duration(*lifetimes) * *ttl
	// Delay faults: enough for every token request of a mode (at most a few per credential
	// per lifetime); the stats at the end say whether any went undelayed.
	faultsPerMode := *n*(*lifetimes+2)*4 + 1000
	delayFault := map[string]any{"delay": delay.String()}

	for _, mode := range want {
		switch mode {
		case "hit":
			m := &fleetMode{Mode: "cache-hit"}
			fmt.Fprintf(os.Stderr, "load: fleet cache-hit: %d readers over %d credentials with long-lived tokens for %s\n", *readers, *n, *baseline)
			// Warm-up: long enough for the first leases to expire, so the run pays lease
			// revocations like the others.
			w0 := time.Now()
			readRandom(&c, *mount, hitNames, *readers, max(2*time.Second, *leaseTTL+2*time.Second))
			sc.phase("warm-up", w0, time.Now())
			if err := measure(m, hit, *n, "cache-hit", func() []readRec {
				recs, _ := readRandom(&c, *mount, hitNames, *readers, *baseline)
				return recs
			}); err != nil {
				return err
			}
			m.P50Ratio, m.P99Ratio = 1, 1
			if m.TokenRequests != 0 {
				fmt.Fprintf(os.Stderr, "load: fleet cache-hit: %d token requests: not a pure cache-hit run\n", m.TokenRequests)
			}
			r.Modes = append(r.Modes, m)
		case "on", "off":
			m := &fleetMode{Mode: "refresh_ahead " + mode}
			if err := setRefreshAhead(mode == "on"); err != nil {
				return err
			}
			if err := idp.reset(); err != nil {
				return err
			}
			if err := idp.queueFaults(delayFault, faultsPerMode); err != nil {
				return err
			}
			w0 := time.Now()
			if len(r.Modes) == 0 || r.Modes[len(r.Modes)-1].Mode == "cache-hit" {
				// The first fleet mode: tokens from the import may have expired all at
				// once; a paced pass spreads their issue over one lifetime.
				fmt.Fprintf(os.Stderr, "load: fleet %s: warm-up: a paced pass over %d credentials in %s, %d readers over those passed\n", m.Mode, *n, *ttl, *readers)
				if err := pacedPass(&c, *mount, names, *ttl, *readers); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(os.Stderr, "load: fleet %s: warm-up: %d readers for %s\n", m.Mode, *readers, *ttl)
				readRandom(&c, *mount, names, *readers, *ttl)
			}
			sc.phase("warm-up", w0, time.Now())
			fmt.Fprintf(os.Stderr, "load: fleet %s: %d readers over %d credentials for %s\n", m.Mode, *readers, *n, window)
			if err := measure(m, idp, *n, m.Mode, func() []readRec {
				recs, _ := readRandom(&c, *mount, names, *readers, window)
				return recs
			}); err != nil {
				return err
			}
			st, err := idp.stats()
			if err != nil {
				return err
			}
			m.Undelayed = st.PendingFaults == 0
			if err := idp.clearFaults(); err != nil {
				return err
			}
			if hm := firstMode(r.Modes, "cache-hit"); hm != nil && hm.P50 > 0 {
				m.P50Ratio = float64(m.P50) / float64(hm.P50)
				m.P99Ratio = float64(m.P99) / float64(hm.P99)
			}
			r.Modes = append(r.Modes, m)
		case "outage":
			o, err := runOutage(&c, sc, idp, *mount, names[:min(*outageN, len(names))], *outageR, *outage, *outageTail, setRefreshAhead)
			if err != nil {
				return err
			}
			r.Outage = o
		default:
			return fmt.Errorf("-modes: unknown mode %q", mode)
		}
	}
	stopScraper()
	if *metricsOut != "" {
		if err := writeJSON(*metricsOut, sc.series); err != nil {
			return err
		}
	}
	printFleet(r)
	return writeJSON(c.jsonOut, r)
}

func firstMode(ms []*fleetMode, name string) *fleetMode {
	for _, m := range ms {
		if m.Mode == name {
			return m
		}
	}
	return nil
}

// runOutage: the identity server answers 500 to every token request for d while readers
// read creds; then it recovers and the readers go on for tail.
func runOutage(c *common, sc *scraper, idp *idpAdmin, mount string, creds []string, readers int, d, tail time.Duration, setRefreshAhead func(bool) error) (*outageResult, error) {
	o := &outageResult{Duration: d, After: tail, Creds: len(creds), Readers: readers, ReadsByStatus: map[int]int{}}
	if err := setRefreshAhead(true); err != nil {
		return nil, err
	}
	if err := idp.reset(); err != nil {
		return nil, err
	}
	// Every credential in use with a fresh token, then readers for a few seconds.
	w0 := time.Now()
	if _, _, err := parallel(8, creds, func(name string) error {
		_, err := c.api.Must(http.MethodGet, mount+"/creds/"+name, nil, http.StatusOK)
		return err
	}); err != nil {
		return nil, err
	}
	readRandom(c, mount, creds, readers, 5*time.Second)
	sc.phase("warm-up", w0, time.Now())
	fmt.Fprintf(os.Stderr, "load: fleet outage: 500 to every token request for %s, %d readers over %d credentials, then %s more\n", d, readers, len(creds), tail)

	const queued = 5000
	fault500 := map[string]any{"status": 500}
	if err := idp.queueFaults(fault500, queued); err != nil {
		return nil, err
	}
	s0, err := sc.mark()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	end := t0.Add(d)
	// Keep the queue topped up until the end, then clear it.
	topErr := make(chan error, 1)
	var dry atomic.Bool
	go func() {
		for time.Now().Before(end) {
			time.Sleep(min(250*time.Millisecond, time.Until(end)))
			st, err := idp.stats()
			if err != nil {
				topErr <- err
				return
			}
			if st.PendingFaults == 0 {
				dry.Store(true)
			}
			if st.PendingFaults < queued/2 && time.Now().Before(end) {
				if err := idp.queueFaults(fault500, queued); err != nil {
					topErr <- err
					return
				}
			}
		}
		topErr <- nil
	}()
	var endSnap metricSnap
	var endStats fleetIdpStats
	endErr := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(end))
		if err := <-topErr; err != nil {
			endErr <- err
			return
		}
		var err error
		if endStats, err = idp.stats(); err != nil {
			endErr <- err
			return
		}
		if err = idp.clearFaults(); err != nil {
			endErr <- err
			return
		}
		endSnap, err = sc.mark()
		endErr <- err
	}()
	recs, rstart := readRandom(c, mount, creds, readers, d+tail)
	if err := <-endErr; err != nil {
		return nil, err
	}
	t2 := time.Now()
	s2, err := sc.mark()
	if err != nil {
		return nil, err
	}
	after, err := idp.stats()
	if err != nil {
		return nil, err
	}
	t1 := t0.Add(d)
	sc.phase("outage", t0, t1)
	sc.phase("recovery", t1, t2)
	o.TokenRequests, o.PeakPerSecond = countIn(after.RequestTimes, t0, t1)
	o.AfterTokenReqs, _ = countIn(after.RequestTimes, t1, t2)
	o.FaultsApplied = endStats.FaultsApplied
	o.QueueRanDry = dry.Load()
	o.ReadsByResult = delta(s0.Reads, endSnap.Reads)
	o.ByOutcome = delta(s0.TokenByOutcome, endSnap.TokenByOutcome)
	o.AfterByResult = delta(endSnap.Reads, s2.Reads)
	o.StatesAtEnd = endSnap.StatesByConfig["fleet"]
	off := t1.Sub(rstart)
	var all, errs, oks dist
	for _, rr := range recs {
		if rr.at < off {
			all = append(all, rr.lat)
			if rr.code == http.StatusOK {
				oks = append(oks, rr.lat)
			} else {
				errs = append(errs, rr.lat)
			}
			if rr.lat > time.Second {
				o.SlowReads++
			}
			o.Reads++
			o.ReadsByStatus[rr.code]++
			if rr.code == http.StatusOK {
				o.ReadsOK++
			}
			continue
		}
		o.AfterReads++
		if rr.lat > time.Second {
			o.AfterSlowReads++
		}
		if rr.code != http.StatusOK {
			o.AfterErrors++
			o.LastErrorAfter = max(o.LastErrorAfter, rr.at+rr.lat-off)
		}
	}
	o.Lat = map[string]time.Duration{}
	for k, d := range map[string]dist{"all": all, "ok": oks, "error": errs} {
		d = d.sorted()
		o.Lat[k+"_p50"], o.Lat[k+"_p99"] = d.pct(50), d.pct(99)
		if len(d) > 0 {
			o.Lat[k+"_max"] = d[len(d)-1]
		}
	}
	fmt.Fprintf(os.Stderr, "load: fleet outage: %d reads (%d ok), %d token requests (%.1f per credential), after: %d reads, %d errors, %d token requests\n",
		o.Reads, o.ReadsOK, o.TokenRequests, float64(o.TokenRequests)/float64(len(creds)), o.AfterReads, o.AfterErrors, o.AfterTokenReqs)
	return o, nil
}

func fmtCounts(m map[string]float64, keys ...string) string {
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	for k, v := range m {
		if !slices.Contains(keys, k) {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

func pctOf(a, b int) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(a)/float64(b))
}

func printFleet(r *fleetResult) {
	fmt.Printf("### Fleet: %d authorized credentials under one app\n\n", r.N)
	fmt.Printf("One `authorization_code` config (`max_token_requests_per_second=0`: no budget, so it cannot shape the comparison; `min_ttl=%ds`), "+
		"%d credentials imported from refresh tokens in %s; tokens live %s at the identity server, which delays every token request by %s. "+
		"%d readers read random credentials for %d token lifetimes per mode (after a warm-up of one lifetime); the cache-hit run reads "+
		"%d credentials of a second app whose tokens live 1 h, so every read is a cache hit. "+
		"A read *waited* when it took longer than %s (half the delay). The mount's max_lease_ttl is %s, so every mode's leases expire (and are revoked by Vault) alike.\n\n",
		r.MinTTL, r.N, r.ImportTime.Round(100*time.Millisecond), r.TTL, r.Delay, r.Readers, r.Lifetimes, r.N, r.Delay/2, r.LeaseTTL)
	fmt.Printf("| | ")
	for _, m := range r.Modes {
		fmt.Printf("%s | ", m.Mode)
	}
	fmt.Printf("\n|---|")
	for range r.Modes {
		fmt.Printf("---:|")
	}
	fmt.Println()
	row := func(label string, f func(m *fleetMode) string) {
		fmt.Printf("| %s |", label)
		for _, m := range r.Modes {
			fmt.Printf(" %s |", f(m))
		}
		fmt.Println()
	}
	row("measured", func(m *fleetMode) string { return m.Window.Round(100 * time.Millisecond).String() })
	row("reads (reads/s)", func(m *fleetMode) string {
		return fmt.Sprintf("%d (%.0f)", m.Reads, float64(m.Reads)/m.Window.Seconds())
	})
	row("**answered without waiting on apaleo**", func(m *fleetMode) string {
		return "**" + pctOf(m.Reads-m.Waited-m.Errors, m.Reads) + "**"
	})
	row("waited (> delay/2)", func(m *fleetMode) string { return fmt.Sprintf("%d (%s)", m.Waited, pctOf(m.Waited, m.Reads)) })
	row("reads that waited on a token request (metrics: fetched + stale)", func(m *fleetMode) string {
		w := int(m.ReadsByResult["fetched"] + m.ReadsByResult["stale"])
		return fmt.Sprintf("%d (%s)", w, pctOf(w, m.Reads))
	})
	row("errors", func(m *fleetMode) string { return fmt.Sprint(m.Errors) })
	row("p50 ms (x cache-hit)", func(m *fleetMode) string { return fmt.Sprintf("%s (**%.2fx**)", ms(m.P50), m.P50Ratio) })
	row("p99 ms (x cache-hit)", func(m *fleetMode) string { return fmt.Sprintf("%s (**%.2fx**)", ms(m.P99), m.P99Ratio) })
	row("slowest read ms", func(m *fleetMode) string { return ms(m.Max) })
	row("token requests (identity server)", func(m *fleetMode) string { return fmt.Sprint(m.TokenRequests) })
	row("**token requests per credential per lifetime**", func(m *fleetMode) string { return fmt.Sprintf("**%.2f**", m.PerCredLife) })
	row("most token requests in one second", func(m *fleetMode) string { return fmt.Sprint(m.PeakPerSecond) })
	row("token requests by trigger (metrics)", func(m *fleetMode) string { return fmtCounts(m.ByTrigger, "read", "refresh_ahead") })
	row("reads by result (metrics)", func(m *fleetMode) string {
		return fmtCounts(m.ReadsByResult, "cached", "fetched", "stale", "error")
	})
	row("token request mean ms (metrics)", func(m *fleetMode) string {
		if m.MeanTokenMS == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", m.MeanTokenMS)
	})
	row("plugin RSS MiB at the end (VmHWM)", func(m *fleetMode) string {
		return fmt.Sprintf("%.1f (%.1f)", float64(m.Proc.RSSKiB)/1024, float64(m.Proc.HWMKiB)/1024)
	})
	fmt.Println()
	for _, m := range r.Modes {
		if m.Undelayed {
			fmt.Printf("- %s: the queue of delay faults ran dry: some token requests were not delayed.\n", m.Mode)
		}
	}
	if o := r.Outage; o != nil {
		fmt.Printf("\n### Outage: the identity server answers 500 for %s\n\n", o.Duration)
		fmt.Printf("%d readers over %d credentials of the fleet (refresh_ahead on, tokens of %s), every token request answered 500 "+
			"(queued faults, topped up: the queue ran dry: %v), then %s more with the identity server back.\n\n",
			o.Readers, o.Creds, r.TTL, o.QueueRanDry, o.After)
		fmt.Printf("| | during the outage | after it (%s) |\n|---|---:|---:|\n", o.After)
		fmt.Printf("| reads | %d | %d |\n", o.Reads, o.AfterReads)
		fmt.Printf("| **token requests sent** | **%d** | %d |\n", o.TokenRequests, o.AfterTokenReqs)
		fmt.Printf("| **token requests per credential** | **%.1f** | %.1f |\n", float64(o.TokenRequests)/float64(o.Creds), float64(o.AfterTokenReqs)/float64(o.Creds))
		fmt.Printf("| token requests per read | %.4f | |\n", float64(o.TokenRequests)/float64(max(o.Reads, 1)))
		fmt.Printf("| most token requests in one second | %d | |\n", o.PeakPerSecond)
		fmt.Printf("| reads answered 200 | %d (%s) | %d |\n", o.ReadsOK, pctOf(o.ReadsOK, o.Reads), o.AfterReads-o.AfterErrors)
		var codes []string
		for code, k := range o.ReadsByStatus {
			if code != http.StatusOK {
				codes = append(codes, fmt.Sprintf("%d: %d", code, k))
			}
		}
		slices.Sort(codes)
		fmt.Printf("| reads answered an error (by status) | %d (%s) | %d |\n", o.Reads-o.ReadsOK, strings.Join(codes, ", "), o.AfterErrors)
		fmt.Printf("| read latency p50 / p99 / max ms: all reads | %s / %s / %s | |\n", ms(o.Lat["all_p50"]), ms(o.Lat["all_p99"]), ms(o.Lat["all_max"]))
		fmt.Printf("| read latency p50 / p99 / max ms: reads answered 200 | %s / %s / %s | |\n", ms(o.Lat["ok_p50"]), ms(o.Lat["ok_p99"]), ms(o.Lat["ok_max"]))
		fmt.Printf("| read latency p50 / p99 / max ms: reads answered an error | %s / %s / %s | |\n", ms(o.Lat["error_p50"]), ms(o.Lat["error_p99"]), ms(o.Lat["error_max"]))
		fmt.Printf("| reads that took over 1 s | %d | %d |\n", o.SlowReads, o.AfterSlowReads)
		fmt.Printf("| reads by result (metrics) | %s | %s |\n", fmtCounts(o.ReadsByResult, "cached", "stale", "error", "fetched"), fmtCounts(o.AfterByResult, "cached", "stale", "error", "fetched"))
		fmt.Printf("| token requests by outcome (metrics) | %s | |\n", fmtCounts(o.ByOutcome, "server_error"))
		fmt.Printf("| credentials of config/fleet by state at the end of the outage (%d of them idle) | %s | |\n", r.N-o.Creds, fmtCounts(o.StatesAtEnd, "ok", "failing", "no_token"))
		fmt.Printf("| last error answered, after the end | | %s |\n", o.LastErrorAfter.Round(100*time.Millisecond))
		fmt.Println()
	}
}
