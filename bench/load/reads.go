package main

// reads.go: `load rw`, the read throughput of creds vs floor vs KV v2, alternating.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type target struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

type targetResult struct {
	Target  string        `json:"target"`
	Reads   int           `json:"reads"`
	Errors  int           `json:"errors"`
	Elapsed time.Duration `json:"elapsed_ns"`
	PerSec  float64       `json:"reads_per_s"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	Rounds  []float64     `json:"round_reads_per_s"`
	lat     dist
}

type levelResult struct {
	Readers int             `json:"readers"`
	Targets []*targetResult `json:"targets"`
	// Ratios: reads/s of a over b over the whole level, and the median, min and max of
	// the ratio of each round pair.
	Ratios []ratio `json:"ratios"`
	// Token requests the identity server saw: in the cold start of the level (all readers
	// read the credential at once with no token cached), and in its timed rounds.
	HerdTokenRequests  int `json:"herd_token_requests"`
	RoundTokenRequests int `json:"round_token_requests"`
	HerdDistinctTokens int `json:"herd_distinct_tokens"`
	// With -pprof: the instrumented plugin's counters over the timed rounds.
	PluginCounters counters `json:"plugin_counters,omitempty"`
}

type ratio struct {
	Name        string  `json:"name"`
	Overall     float64 `json:"overall"`
	RoundMedian float64 `json:"round_median"`
	RoundMin    float64 `json:"round_min"`
	RoundMax    float64 `json:"round_max"`
}

func runReads(args []string) error {
	fs, c := newFlagSet("rw")
	var (
		targetsFlag = fs.String("targets", "creds=apaleo/creds/hotel-muc,floor=floor/creds/hotel-muc,kv=secret/data/bench", "name=path,... read alternately (first is the plugin under test)")
		readersFlag = fs.String("readers", "1,8,64", "concurrent readers, one level each")
		rounds      = fs.Int("rounds", 6, "rounds per level; each round reads every target once, in rotating order")
		roundTime   = fs.Duration("round-time", 2*time.Second, "duration of one target's turn in a round")
		warmup      = fs.Duration("warmup", 500*time.Millisecond, "warm-up per target and level (not counted)")
		maxReads    = fs.Int("max-reads", 2_000_000, "cap on reads of one target's turn")
		herdPath    = fs.String("herd", "apaleo/creds/hotel-muc", "credential whose cached token is dropped before each level, then read by all readers at once (empty: skip)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var targets []target
	for _, t := range strings.Split(*targetsFlag, ",") {
		name, path, ok := strings.Cut(t, "=")
		if !ok {
			return fmt.Errorf("-targets: %q is not name=path", t)
		}
		targets = append(targets, target{name, path})
	}
	var levels []int
	for _, s := range strings.Split(*readersFlag, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1024 {
			return fmt.Errorf("-readers: %q", s)
		}
		levels = append(levels, n)
	}
	if *rounds < 1 || *rounds > 100 || *roundTime <= 0 || *roundTime > time.Minute {
		return errors.New("-rounds 1..100, -round-time up to 1m")
	}
	if err := c.setup(slices.Max(levels)); err != nil {
		return err
	}
	// Each target answers, with a body of comparable size.
	fmt.Fprintln(os.Stderr, "load: response sizes:")
	for _, t := range targets {
		b, err := c.api.Must(http.MethodGet, t.Path, nil, http.StatusOK)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "  %-6s %-28s %5d bytes, access_token %d bytes\n", t.Name, t.Path, len(b), len(accessToken(b)))
	}

	var results []*levelResult
	for _, n := range levels {
		lr, err := readLevel(c, targets, n, *rounds, *roundTime, *warmup, *maxReads, *herdPath)
		if err != nil {
			return err
		}
		results = append(results, lr)
	}
	printReads(targets, results, *rounds, *roundTime)
	return writeJSON(c.jsonOut, results)
}

// accessToken digs the access token out of a creds or KV v2 response.
func accessToken(body []byte) string {
	var r struct {
		Data map[string]any `json:"data"`
	}
	_ = json.Unmarshal(body, &r)
	if s, ok := r.Data["access_token"].(string); ok {
		return s
	}
	if d, ok := r.Data["data"].(map[string]any); ok {
		s, _ := d["access_token"].(string)
		return s
	}
	return ""
}

func readLevel(c *common, targets []target, readers, rounds int, roundTime, warmup time.Duration, maxReads int, herdPath string) (*levelResult, error) {
	lr := &levelResult{Readers: readers}
	fmt.Fprintf(os.Stderr, "load: %d readers\n", readers)

	if herdPath != "" && c.idp != nil {
		before, err := c.idpStats()
		if err != nil {
			return nil, err
		}
		if _, err := c.api.Must(http.MethodDelete, herdPath, nil, http.StatusOK, http.StatusNoContent); err != nil {
			return nil, err
		}
		tokens, err := herd(c, herdPath, readers)
		if err != nil {
			return nil, err
		}
		after, err := c.idpStats()
		if err != nil {
			return nil, err
		}
		lr.HerdTokenRequests = after.TokenRequests - before.TokenRequests
		lr.HerdDistinctTokens = tokens
	}
	before, err := c.idpStatsOrZero()
	if err != nil {
		return nil, err
	}
	for _, t := range targets {
		if _, err := turn(c, t, readers, warmup, maxReads); err != nil {
			return nil, err
		}
	}
	var v0 counters
	if c.pprof != "" {
		if v0, err = c.vars(); err != nil {
			return nil, err
		}
	}
	byName := map[string]*targetResult{}
	for _, t := range targets {
		tr := &targetResult{Target: t.Name}
		byName[t.Name] = tr
		lr.Targets = append(lr.Targets, tr)
	}
	for r := range rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)] // rotate the order: no target always runs first
			res, err := turn(c, t, readers, roundTime, maxReads)
			if err != nil {
				return nil, err
			}
			tr := byName[t.Name]
			tr.Reads += len(res.lat)
			tr.Errors += res.errors
			tr.Elapsed += res.elapsed
			tr.lat = append(tr.lat, res.lat...)
			tr.Rounds = append(tr.Rounds, float64(len(res.lat))/res.elapsed.Seconds())
		}
	}
	after, err := c.idpStatsOrZero()
	if err != nil {
		return nil, err
	}
	lr.RoundTokenRequests = after.TokenRequests - before.TokenRequests
	if c.pprof != "" {
		v1, err := c.vars()
		if err != nil {
			return nil, err
		}
		lr.PluginCounters = counters{}
		lr.PluginCounters.add(v1, v0)
	}
	for _, tr := range lr.Targets {
		tr.PerSec = float64(tr.Reads) / tr.Elapsed.Seconds()
		s := tr.lat.sorted()
		tr.P50, tr.P99 = s.pct(50), s.pct(99)
		tr.lat = nil
		if tr.Errors > 0 {
			return nil, fmt.Errorf("%s: %d failed reads at %d readers", tr.Target, tr.Errors, readers)
		}
	}
	// A fourth target is a baseline build of the plugin (BENCH_BASELINE_PLUGIN): the plugin
	// against it, and it against the floor and KV v2, measured under the same noise.
	pairs := [][2]int{{0, 1}, {0, 2}, {1, 2}, {0, 3}, {3, 1}, {3, 2}}
	for _, p := range pairs {
		if p[1] >= len(lr.Targets) {
			continue
		}
		a, b := lr.Targets[p[0]], lr.Targets[p[1]]
		var per []float64
		for i := range a.Rounds {
			per = append(per, a.Rounds[i]/b.Rounds[i])
		}
		lr.Ratios = append(lr.Ratios, ratio{
			Name: a.Target + "/" + b.Target, Overall: a.PerSec / b.PerSec,
			RoundMedian: median(per), RoundMin: slices.Min(per), RoundMax: slices.Max(per),
		})
	}
	return lr, nil
}

// herd starts readers goroutines that read path at the same moment, and returns how
// many distinct access tokens they got.
func herd(c *common, path string, readers int) (int, error) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	tokens := make([]string, readers)
	errs := make([]error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, b, err := c.api.Do(http.MethodGet, path, nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("GET %s: HTTP %d: %s", path, code, b)
			}
			errs[i], tokens[i] = err, accessToken(b)
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	slices.Sort(tokens)
	return len(slices.Compact(tokens)), nil
}

type turnResult struct {
	lat     dist
	errors  int
	elapsed time.Duration
}

// turn runs readers goroutines reading t.Path until d has passed (or maxReads reads).
func turn(c *common, t target, readers int, d time.Duration, maxReads int) (turnResult, error) {
	var (
		count    atomic.Int64
		errCount atomic.Int64
		firstErr atomic.Value
	)
	start := time.Now()
	deadline := start.Add(d)
	lats := fanOut(readers, func(int) dist {
		lat := make(dist, 0, 4096)
		for time.Now().Before(deadline) && count.Add(1) <= int64(maxReads) {
			t0 := time.Now()
			code, err := c.api.Discard(http.MethodGet, t.Path)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("GET %s: HTTP %d", t.Path, code)
			}
			if err != nil {
				errCount.Add(1)
				firstErr.CompareAndSwap(nil, err)
				continue
			}
			lat = append(lat, time.Since(t0))
		}
		return lat
	})
	res := turnResult{elapsed: time.Since(start), errors: int(errCount.Load()), lat: slices.Concat(lats...)}
	if err, ok := firstErr.Load().(error); ok {
		fmt.Fprintf(os.Stderr, "load: %s: %d errors, first: %v\n", t.Name, res.errors, err)
	}
	return res, nil
}

func printReads(targets []target, levels []*levelResult, rounds int, roundTime time.Duration) {
	fmt.Printf("### Read throughput through Vault\n\n")
	fmt.Printf("Targets, read alternately in %d rounds of %s each per level (order rotated per round):\n\n", rounds, roundTime)
	for _, t := range targets {
		fmt.Printf("- `%s`: `GET /v1/%s`\n", t.Name, t.Path)
	}
	fmt.Printf("\n| readers | target | reads/s | p50 ms | p99 ms | reads |\n|---:|---|---:|---:|---:|---:|\n")
	for _, l := range levels {
		for _, t := range l.Targets {
			fmt.Printf("| %d | %s | %.0f | %s | %s | %d |\n", l.Readers, t.Target, t.PerSec, ms(t.P50), ms(t.P99), t.Reads)
		}
	}
	fmt.Printf("\nRatios of reads/s (overall; median and range of the per-round ratios):\n\n| readers |")
	for _, r := range levels[0].Ratios {
		fmt.Printf(" %s |", r.Name)
	}
	fmt.Printf(" token requests: cold start (distinct tokens) | token requests: rounds |\n|---:|")
	for range levels[0].Ratios {
		fmt.Printf("---|")
	}
	fmt.Printf("---:|---:|\n")
	for _, l := range levels {
		fmt.Printf("| %d |", l.Readers)
		for _, r := range l.Ratios {
			fmt.Printf(" **%.2f** (%.2f; %.2f-%.2f) |", r.Overall, r.RoundMedian, r.RoundMin, r.RoundMax)
		}
		fmt.Printf(" %d (%d) | %d |\n", l.HerdTokenRequests, l.HerdDistinctTokens, l.RoundTokenRequests)
	}
	fmt.Println()
	for _, l := range levels {
		if l.PluginCounters == nil {
			continue
		}
		fmt.Printf("Inside the plugin at %d readers (bench/profplugin counters), per `%s` read, means:\n\n| | calls | ms |\n|---|---:|---:|\n%s\n",
			l.Readers, l.Targets[0].Target, l.PluginCounters.breakdown("read creds", l.Targets[0].Reads))
	}
}
