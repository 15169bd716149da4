package main

// scale.go: `load scale`, N configs and credentials: write, list, read cold and warm,
// the plugin's RSS.

import (
	"errors"
	"fmt"
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
	Proc                  []procStat     `json:"plugin_process"`
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
	if *settle > 0 {
		time.Sleep(*settle)
		if err := measure(fmt.Sprintf("%s later", *settle)); err != nil {
			return err
		}
	}
	printScale(&r, ca != "")
	return writeJSON(c.jsonOut, r)
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
	fmt.Printf("\nThe plugin process (`/proc/<pid>/status`):\n\n| when | VmRSS MiB | VmHWM MiB | threads | open fds |\n|---|---:|---:|---:|---:|\n")
	for _, p := range r.Proc {
		fmt.Printf("| %s | **%.1f** | %.1f | %d | %d |\n", p.Label, float64(p.RSSKiB)/1024, float64(p.HWMKiB)/1024, p.Threads, p.FDs)
	}
	fmt.Println()
}
