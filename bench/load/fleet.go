package main

// fleet: many hotels under one app. 1,000 authorized credentials under one
// authorization_code config, short token lives, random readers; refresh_ahead on and
// off against a pure cache-hit baseline in the same run; then an outage of the identity
// server under load. See docs/benchmarks.md ("Fleet").

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

type fleetMode struct {
	Mode   string        `json:"mode"`
	Window time.Duration `json:"window_ns"`
	Reads  int           `json:"reads"`
	Errors int           `json:"errors"`
	Waited int           `json:"waited"` // took longer than delay/2
	// AsSlowAsToken: reads that took at least the identity server's delay by the reader's
	// own clock. A read that waited on a token request took that long at least, so this
	// bounds the reads that waited from above, with no word from the plugin.
	AsSlowAsToken int                `json:"reads_at_least_the_delay"`
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

func runFleet(args []string) error {
	fs, c := newFlagSet("fleet")
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
	idp, err := newIdpAdmin(c.idpURL, c.idpCA, 30*time.Second, 16)
	if err != nil {
		return err
	}
	var hit *idpAdmin
	if *hitIdp != "" {
		if hit, err = newIdpAdmin(*hitIdp, *hitIdpCA, 30*time.Second, 16); err != nil {
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
	imp := &fleetImport{c: c, mount: *mount, redirect: redirect, n: *n, workers: *workers}
	names, d, err := imp.app(idp, c.idpCA, "fleet", "hotel-", *minTTL)
	if err != nil {
		return err
	}
	r.ImportTime = d
	// The identity server's token lifetime must be the one given.
	if left := imp.firstExpiry.Sub(imp.firstImport); left > *ttl+2*time.Second || left < *ttl-5*time.Second {
		return fmt.Errorf("fleet: the first imported token lives %s; -ttl says %s: start the identity server with -token-ttl %s", left.Round(time.Second), *ttl, *ttl)
	}
	var hitNames []string
	if slices.Contains(want, "hit") {
		if hitNames, r.HitImport, err = imp.app(hit, *hitIdpCA, "fleet-hit", "hit-", 0); err != nil {
			return err
		}
	}

	sc := &scraper{c: c, mount: *mount, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
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
	fm := &fleetMeasure{sc: sc, threshold: *delay / 2, delay: *delay, ttl: *ttl, pluginPath: *pluginPath}
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
			readRandom(c, *mount, hitNames, *readers, max(2*time.Second, *leaseTTL+2*time.Second))
			sc.phase("warm-up", w0, time.Now())
			if err := fm.measure(m, hit, *n, "cache-hit", func() []readRec {
				recs, _ := readRandom(c, *mount, hitNames, *readers, *baseline)
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
				if err := pacedPass(c, *mount, names, *ttl, *readers); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(os.Stderr, "load: fleet %s: warm-up: %d readers for %s\n", m.Mode, *readers, *ttl)
				readRandom(c, *mount, names, *readers, *ttl)
			}
			sc.phase("warm-up", w0, time.Now())
			fmt.Fprintf(os.Stderr, "load: fleet %s: %d readers over %d credentials for %s\n", m.Mode, *readers, *n, window)
			if err := fm.measure(m, idp, *n, m.Mode, func() []readRec {
				recs, _ := readRandom(c, *mount, names, *readers, window)
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
			o, err := runOutage(c, sc, idp, *mount, names[:min(*outageN, len(names))], *outageR, *outage, *outageTail, setRefreshAhead)
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
