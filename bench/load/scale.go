package main

// scale.go: `load scale`, N configs and credentials: write, list, read cold and warm,
// the plugin's RSS; with -authorized, that many authorized credentials imported under one
// authorization_code config and read too; then the metrics scraped.

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/vaultapi"
)

type scaleResult struct {
	N             int           `json:"n"`
	Writers       int           `json:"concurrency"`
	Write         time.Duration `json:"write_ns"`
	ListConfig    time.Duration `json:"list_config_ns"`
	ListCreds     time.Duration `json:"list_creds_ns"`
	ReadCold      time.Duration `json:"read_cold_ns"`
	ReadColdP50   time.Duration `json:"read_cold_p50_ns"`
	ReadColdP99   time.Duration `json:"read_cold_p99_ns"`
	ReadWarm      time.Duration `json:"read_warm_ns"`
	ReadWarmP50   time.Duration `json:"read_warm_p50_ns"`
	ReadWarmP99   time.Duration `json:"read_warm_p99_ns"`
	ReadConfigP50 time.Duration `json:"read_config_p50_ns"`
	ColdTokenReqs int           `json:"cold_token_requests"`
	// LIST creds/ with key_info (what `vault list -detailed` prints), after the reads:
	// best of 3, the token requests it caused, and the states it listed.
	ListDetailed          time.Duration  `json:"list_creds_detailed_ns"`
	ListDetailedTokenReqs int            `json:"list_creds_detailed_token_requests"`
	ListDetailedStates    map[string]int `json:"list_creds_detailed_states"`
	WarmTokenReqs         int            `json:"warm_token_requests"`
	// -authorized: credentials imported from refresh tokens the dev identity server
	// issued, under one authorization_code config, then each read once.
	Authorized          int           `json:"authorized"`
	ImportAuthorized    time.Duration `json:"import_authorized_ns"`
	ReadAuthorized      time.Duration `json:"read_authorized_ns"`
	AuthorizedTokenReqs int           `json:"read_authorized_token_requests"`
	Scrapes             []scrapeStat  `json:"scrapes"`
	Proc                []procStat    `json:"plugin_process"`
}

// scrapeStat is one GET of the mount's metrics, timed at the client.
type scrapeStat struct {
	Wall      time.Duration `json:"wall_ns"`
	Bytes     int           `json:"bytes"`  // of text
	Series    int           `json:"series"` // lines that are samples, not comments
	Gzip      bool          `json:"gzip"`
	WireBytes int           `json:"wire_bytes"`
}

func runScale(args []string) error {
	fs, c := newFlagSet("scale")
	var (
		n          = fs.Int("n", 10_000, "configs to create")
		workers    = fs.Int("c", 8, "concurrent requests")
		mount      = fs.String("mount", "apaleo", "mount of the plugin")
		prefix     = fs.String("prefix", "scale-", "config name prefix")
		clientID   = fs.String("client-id", "", "client_id of every config")
		secret     = fs.String("client-secret", "", "client_secret of every config")
		identity   = fs.String("identity-url", "", "identity_url of every config")
		caFile     = fs.String("ca-file", "", "ca_certificate of every config, from this file (default: none; the plugin's system roots)")
		pluginPath = fs.String("plugin-path", "", "absolute path of the plugin binary Vault runs (to find its process)")
		settle     = fs.Duration("settle", 0, "wait this long after the reads and measure the process again (0: skip)")
		authorized = fs.Int("authorized", 0, "also import this many authorized credentials (refresh tokens from the dev identity server, -idp) under one authorization_code config, and read each")
		scrapes    = fs.Int("scrapes", 3, "GETs of <mount>/metrics at the end, each timed")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > 100_000 || *workers < 1 || *workers > 256 || *clientID == "" || *secret == "" || *identity == "" || *pluginPath == "" {
		return errors.New("scale: need -n 1..100000, -c 1..256, -client-id, -client-secret, -identity-url, -plugin-path")
	}
	if *settle > 5*time.Minute {
		return errors.New("-settle at most 5m")
	}
	if *authorized < 0 || *authorized > 100_000 || *scrapes < 0 || *scrapes > 100 {
		return errors.New("scale: need -authorized 0..100000, -scrapes 0..100")
	}
	if *authorized > 0 && c.idpURL == "" {
		return errors.New("scale: -authorized needs -idp (the dev identity server issues the refresh tokens)")
	}
	if err := c.setup(*workers); err != nil {
		return err
	}
	ca := ""
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		ca = string(b)
	}
	r := scaleResult{N: *n, Writers: *workers}
	measure := func(label string) error {
		p, err := pluginProc(*pluginPath)
		if err != nil {
			return err
		}
		p.Label = label
		if c.pprof != "" {
			slug := strings.Map(func(r rune) rune {
				if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
					return r
				}
				return '-'
			}, label)
			if err := c.saveProfile("heap", "scale-heap-"+slug+".pprof"); err != nil {
				return err
			}
		}
		r.Proc = append(r.Proc, p)
		fmt.Fprintf(os.Stderr, "load: plugin process %s: VmRSS %d KiB, VmHWM %d KiB, %d threads, %d fds\n", label, p.RSSKiB, p.HWMKiB, p.Threads, p.FDs)
		return nil
	}
	names := make([]string, *n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%05d", *prefix, i)
	}
	if err := measure("before"); err != nil {
		return err
	}

	// Write the configs.
	cfg := map[string]any{"client_id": *clientID, "client_secret": *secret, "identity_url": *identity,
		"scopes": "reservations.read setup.read"}
	if ca != "" {
		cfg["ca_certificate"] = ca
	}
	var err error
	if r.Write, _, err = parallel(*workers, names, func(name string) error {
		_, err := c.api.Must(http.MethodPost, *mount+"/config/"+name, cfg, http.StatusOK, http.StatusNoContent)
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "load: wrote %d configs in %s\n", *n, r.Write)
	if err := measure(fmt.Sprintf("after writing %d configs", *n)); err != nil {
		return err
	}

	// List: the best of 3 (the first may pay for a cold cache).
	list := func(path string) (time.Duration, error) {
		best := time.Duration(0)
		for range 3 {
			t0 := time.Now()
			code, b, err := c.api.Do("LIST", path, nil)
			d := time.Since(t0)
			if err != nil || code != http.StatusOK {
				return 0, fmt.Errorf("LIST %s: %v HTTP %d", path, err, code)
			}
			lr, err := vaultapi.ParseList(b)
			if err != nil {
				return 0, err
			}
			got := 0
			for _, k := range lr.Keys {
				if strings.HasPrefix(k, *prefix) {
					got++
				}
			}
			if got != *n {
				return 0, fmt.Errorf("LIST %s: %d of %d names", path, got, *n)
			}
			if best == 0 || d < best {
				best = d
			}
		}
		return best, nil
	}
	if r.ListConfig, err = list(*mount + "/config"); err != nil {
		return err
	}
	if r.ListCreds, err = list(*mount + "/creds"); err != nil {
		return err
	}

	// Read each config once (answered from the plugin's memory after the write).
	_, cfgLat, err := parallel(*workers, names, func(name string) error {
		_, err := c.api.Must(http.MethodGet, *mount+"/config/"+name, nil, http.StatusOK)
		return err
	})
	if err != nil {
		return err
	}
	r.ReadConfigP50 = cfgLat.sorted().pct(50)

	// Read every credential: cold (one token request each), then warm (none).
	readAll := func() (time.Duration, dist, int, error) {
		before, err := c.idpStatsOrZero()
		if err != nil {
			return 0, nil, 0, err
		}
		d, lat, err := parallel(*workers, names, func(name string) error {
			_, err := c.api.Must(http.MethodGet, *mount+"/creds/"+name, nil, http.StatusOK)
			return err
		})
		if err != nil {
			return 0, nil, 0, err
		}
		after, err := c.idpStatsOrZero()
		return d, lat.sorted(), after.TokenRequests - before.TokenRequests, err
	}
	var lat dist
	if r.ReadCold, lat, r.ColdTokenReqs, err = readAll(); err != nil {
		return err
	}
	r.ReadColdP50, r.ReadColdP99 = lat.pct(50), lat.pct(99)
	fmt.Fprintf(os.Stderr, "load: read %d creds cold in %s\n", *n, r.ReadCold)
	if err := measure(fmt.Sprintf("after reading %d creds cold", *n)); err != nil {
		return err
	}
	if r.ReadWarm, lat, r.WarmTokenReqs, err = readAll(); err != nil {
		return err
	}
	r.ReadWarmP50, r.ReadWarmP99 = lat.pct(50), lat.pct(99)
	if err := measure(fmt.Sprintf("after reading %d creds warm", *n)); err != nil {
		return err
	}
	if err := listDetailed(c, *mount+"/creds", *prefix, *n, &r); err != nil {
		return err
	}
	if *authorized > 0 {
		if err := scaleAuthorized(c, *mount, *prefix, *authorized, *workers, &r); err != nil {
			return err
		}
		if err := measure(fmt.Sprintf("after importing and reading %d authorized credentials", *authorized)); err != nil {
			return err
		}
	}
	if *scrapes > 0 {
		for range *scrapes {
			st, err := scrapeOnce(c, *mount, false)
			if err != nil {
				return err
			}
			r.Scrapes = append(r.Scrapes, st)
		}
		fmt.Fprintf(os.Stderr, "load: %d scrapes of %s/metrics: %v\n", *scrapes, *mount, r.Scrapes)
		if err := measure(fmt.Sprintf("after %d metrics scrapes", *scrapes)); err != nil {
			return err
		}
		// Then as README (Metrics) says to set the mount up for Prometheus: its
		// Accept-Encoding passed through, Content-Encoding let out.
		if _, err := c.api.Must(http.MethodPost, "sys/mounts/"+*mount+"/tune", map[string]any{
			"passthrough_request_headers": []string{"Accept-Encoding"},
			"allowed_response_headers":    []string{"Content-Encoding"},
		}, http.StatusOK, http.StatusNoContent); err != nil {
			return err
		}
		for range *scrapes {
			st, err := scrapeOnce(c, *mount, true)
			if err != nil {
				return err
			}
			r.Scrapes = append(r.Scrapes, st)
		}
		fmt.Fprintf(os.Stderr, "load: %d gzip scrapes of %s/metrics: %v\n", *scrapes, *mount, r.Scrapes[*scrapes:])
		if err := measure(fmt.Sprintf("after %d gzip scrapes", *scrapes)); err != nil {
			return err
		}
	}
	if *settle > 0 {
		time.Sleep(*settle)
		if err := measure(fmt.Sprintf("%s later", *settle)); err != nil {
			return err
		}
	}
	printScale(&r, ca != "")
	return writeJSON(c.jsonOut, r)
}

// scaleAuthorized imports n authorized credentials under one authorization_code config
// (<prefix>app, credentials <prefix>auth-00000 on), each from a refresh token the dev
// identity server issued, then reads each once and counts the token requests the reads
// caused (the import fetched each one's token, so none are expected).
func scaleAuthorized(c *common, mount, prefix string, n, workers int, r *scaleResult) error {
	idp, err := newIdpAdmin(c.idpURL, c.idpCA, 30*time.Second, workers+2)
	if err != nil {
		return err
	}
	imp := &fleetImport{c: c, mount: mount, redirect: strings.TrimRight(c.addr, "/") + "/v1/" + mount + "/callback", n: n, workers: workers}
	names, d, err := imp.app(idp, c.idpCA, prefix+"app", prefix+"auth-", 0)
	if err != nil {
		return err
	}
	r.Authorized, r.ImportAuthorized = n, d
	before, err := c.idpStatsOrZero()
	if err != nil {
		return err
	}
	if r.ReadAuthorized, _, err = parallel(workers, names, func(name string) error {
		_, err := c.api.Must(http.MethodGet, mount+"/creds/"+name, nil, http.StatusOK)
		return err
	}); err != nil {
		return err
	}
	after, err := c.idpStatsOrZero()
	r.AuthorizedTokenReqs = after.TokenRequests - before.TokenRequests
	fmt.Fprintf(os.Stderr, "load: %d authorized credentials imported in %s, read in %s (%d token requests)\n",
		n, d.Round(time.Millisecond), r.ReadAuthorized.Round(time.Millisecond), r.AuthorizedTokenReqs)
	return err
}

// scrapeOnce GETs <mount>/metrics, as Prometheus would, and times it at the client,
// reading (and with gzip, decompressing) the whole body. gzip: ask for it, and require
// it.
func scrapeOnce(c *common, mount string, gzipped bool) (scrapeStat, error) {
	req, err := c.api.Request(http.MethodGet, mount+"/metrics", nil)
	if err != nil {
		return scrapeStat{}, err
	}
	// Set explicitly, so that Go's transport neither asks for gzip by itself nor
	// decompresses out of sight.
	req.Header.Set("Accept-Encoding", map[bool]string{false: "identity", true: "gzip"}[gzipped])
	t0 := time.Now()
	resp, err := c.vault.Do(req)
	if err != nil {
		return scrapeStat{}, err
	}
	defer resp.Body.Close()
	wire, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return scrapeStat{}, fmt.Errorf("GET %s/metrics: HTTP %d %v", mount, resp.StatusCode, err)
	}
	b := wire
	if enc := resp.Header.Get("Content-Encoding"); gzipped != (enc == "gzip") {
		return scrapeStat{}, fmt.Errorf("GET %s/metrics with gzip %v: Content-Encoding %q", mount, gzipped, enc)
	}
	if gzipped {
		zr, err := gzip.NewReader(bytes.NewReader(wire))
		if err != nil {
			return scrapeStat{}, err
		}
		if b, err = io.ReadAll(zr); err != nil {
			return scrapeStat{}, err
		}
	}
	wall := time.Since(t0)
	st := scrapeStat{Wall: wall, Bytes: len(b), Gzip: gzipped, WireBytes: len(wire)}
	for line := range strings.Lines(string(b)) {
		if line != "" && !strings.HasPrefix(line, "#") {
			st.Series++
		}
	}
	return st, nil
}

// listDetailed times LIST path with key_info, as `vault list -detailed` sends it (best of
// 3), checks that every name comes with its key_info, and counts the token requests the
// identity server saw meanwhile (there should be none).
func listDetailed(c *common, path, prefix string, n int, r *scaleResult) error {
	before, err := c.idpStatsOrZero()
	if err != nil {
		return err
	}
	for range 3 {
		t0 := time.Now()
		code, b, err := c.api.Do("LIST", path, nil)
		d := time.Since(t0)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("LIST %s: %v HTTP %d", path, err, code)
		}
		lr, err := vaultapi.ParseList(b)
		if err != nil {
			return err
		}
		states := map[string]int{}
		for _, k := range lr.Keys {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			info, ok := lr.KeyInfo[k]
			if !ok {
				return fmt.Errorf("LIST %s: no key_info for %s", path, k)
			}
			st, _ := info["state"].(string)
			states[st]++
		}
		got := 0
		for _, v := range states {
			got += v
		}
		if got != n {
			return fmt.Errorf("LIST %s: %d of %d names with key_info", path, got, n)
		}
		if r.ListDetailed == 0 || d < r.ListDetailed {
			r.ListDetailed = d
		}
		r.ListDetailedStates = states
	}
	after, err := c.idpStatsOrZero()
	if err != nil {
		return err
	}
	r.ListDetailedTokenReqs = after.TokenRequests - before.TokenRequests
	fmt.Fprintf(os.Stderr, "load: LIST %s with key_info: %s (best of 3), %d token requests\n", path, r.ListDetailed, r.ListDetailedTokenReqs)
	return nil
}

func printScale(r *scaleResult, withCA bool) {
	fmt.Printf("### Scale: %d configs and credentials\n\n", r.N)
	ca := "without `ca_certificate` (the plugin trusts the identity server through its system roots, as with identity.apaleo.com)"
	if withCA {
		ca = "each with `ca_certificate` (the dev identity server's CA)"
	}
	fmt.Printf("%d client-credentials configs, %s, written and read with %d concurrent requests.\n\n", r.N, ca, r.Writers)
	fmt.Printf("| step | wall time | per op p50 ms | p99 ms | token requests |\n|---|---:|---:|---:|---:|\n")
	fmt.Printf("| write %d configs | %s | | | |\n", r.N, r.Write.Round(time.Millisecond))
	fmt.Printf("| **list `config/`** (%d keys, best of 3) | **%s** | | | |\n", r.N, r.ListConfig.Round(time.Microsecond))
	fmt.Printf("| **list `creds/`** (%d keys, best of 3) | **%s** | | | |\n", r.N, r.ListCreds.Round(time.Microsecond))
	fmt.Printf("| read each `config/<name>` | | %s | | |\n", ms(r.ReadConfigP50))
	fmt.Printf("| read each `creds/<name>`, cold | %s | %s | %s | %d |\n", r.ReadCold.Round(time.Millisecond), ms(r.ReadColdP50), ms(r.ReadColdP99), r.ColdTokenReqs)
	fmt.Printf("| read each `creds/<name>`, warm | %s | %s | %s | %d |\n", r.ReadWarm.Round(time.Millisecond), ms(r.ReadWarmP50), ms(r.ReadWarmP99), r.WarmTokenReqs)
	if r.ListDetailed > 0 {
		var states []string
		for k, v := range r.ListDetailedStates {
			states = append(states, fmt.Sprintf("%s %d", k, v))
		}
		slices.Sort(states)
		fmt.Printf("| **list `creds/` with key_info** (`vault list -detailed`, %d keys, after the reads, best of 3; states: %s) | **%s** | | | %d |\n",
			r.N, strings.Join(states, ", "), r.ListDetailed.Round(time.Microsecond), r.ListDetailedTokenReqs)
	}
	if r.Authorized > 0 {
		fmt.Printf("| import %d authorized credentials (one `authorization_code` config; refresh tokens from the identity server) | %s | | | |\n", r.Authorized, r.ImportAuthorized.Round(time.Millisecond))
		fmt.Printf("| read each authorized credential | %s | | | %d |\n", r.ReadAuthorized.Round(time.Millisecond), r.AuthorizedTokenReqs)
	}
	for i, sc := range r.Scrapes {
		how := "plain text"
		if sc.Gzip {
			how = fmt.Sprintf("gzip, %.2f MiB on the wire", float64(sc.WireBytes)/(1<<20))
		}
		fmt.Printf("| metrics scrape %d (`GET %s/metrics`, %s: %.2f MiB of text, %d series) | **%s** | | | |\n", i+1, "<mount>", how, float64(sc.Bytes)/(1<<20), sc.Series, sc.Wall.Round(time.Millisecond))
	}
	fmt.Printf("\nThe plugin process (`/proc/<pid>/status`):\n\n| when | VmRSS MiB | VmHWM MiB | threads | open fds |\n|---|---:|---:|---:|---:|\n")
	for _, p := range r.Proc {
		fmt.Printf("| %s | **%.1f** | %.1f | %d | %d |\n", p.Label, float64(p.RSSKiB)/1024, float64(p.HWMKiB)/1024, p.Threads, p.FDs)
	}
	fmt.Println()
}
