package main

// summary.go: `load summary`, the targets of the issue, judged from one run's JSON.

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func runSummary(args []string) error {
	fs := flag.NewFlagSet("summary", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory holding rw.json, cold.json, scale.json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	read := func(name string, v any) bool {
		b, err := os.ReadFile(filepath.Join(*dir, name))
		if err != nil {
			return false
		}
		return json.Unmarshal(b, v) == nil
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	fmt.Printf("### Targets (ratios and figures from this run)\n\n| target | measured | |\n|---|---|---|\n")
	var levels []*levelResult
	if read("rw.json", &levels) {
		for _, l := range levels {
			for _, r := range l.Ratios {
				if r.Name == "creds/floor" {
					// Judged by the median of the per-round ratios: a burst of load from
					// elsewhere on the machine falls on one turn of one target, and the
					// median of paired rounds is robust to it where the overall ratio is not.
					fmt.Printf("| cache-hit creds throughput >= 0.9x the floor plugin, %d readers | median of %d paired rounds **%.2fx** (range %.2f-%.2f); overall %.2fx | %s |\n",
						l.Readers, len(l.Targets[0].Rounds), r.RoundMedian, r.RoundMin, r.RoundMax, r.Overall, verdict(r.RoundMedian >= 0.9))
				}
			}
		}
		for _, l := range levels {
			fmt.Printf("| token requests: 1 per credential per token lifetime, %d readers | %d at the cold start (%d distinct tokens), %d during the rounds | %s |\n",
				l.Readers, l.HerdTokenRequests, l.HerdDistinctTokens, l.RoundTokenRequests, verdict(l.HerdTokenRequests == 1 && l.RoundTokenRequests == 0))
		}
	}
	var cold coldResult
	if read("cold.json", &cold) {
		fmt.Printf("| cold-path added cost <= 2 ms over the identity server's own time | %s ms over a cache-hit read (cold - direct - warm, p50); %s ms counting the ~%s ms every Vault read of an external plugin pays (cold - direct) | %s |\n",
			ms(cold.OverHitP50), ms(cold.AddedP50), ms(cold.WarmP50), verdict(cold.OverHitP50 <= 2*time.Millisecond))
	}
	var sc scaleResult
	if read("scale.json", &sc) {
		list := max(sc.ListConfig, sc.ListCreds)
		list = max(list, sc.ListDetailed)
		fmt.Printf("| %d credentials listed in under 1 s | config/ %s, creds/ %s, creds/ with key_info (`-detailed`) %s (%d token requests) | %s |\n", sc.N,
			sc.ListConfig.Round(time.Microsecond), sc.ListCreds.Round(time.Microsecond), sc.ListDetailed.Round(time.Microsecond), sc.ListDetailedTokenReqs,
			verdict(list < time.Second && sc.ListDetailedTokenReqs == 0))
		rss := 0
		for _, p := range sc.Proc {
			rss = max(rss, p.RSSKiB)
		}
		fmt.Printf("| plugin RSS under 100 MB with %d configs and credentials | %.1f MiB at most (%d open fds) | %s |\n",
			sc.N, float64(rss)/1024, sc.Proc[len(sc.Proc)-1].FDs, verdict(rss < 100*1024))
	}
	var fl fleetResult
	if read("fleet.json", &fl) {
		on, off, hit := firstMode(fl.Modes, "refresh_ahead on"), firstMode(fl.Modes, "refresh_ahead off"), firstMode(fl.Modes, "cache-hit")
		if on != nil && off != nil && hit != nil {
			waited := func(m *fleetMode) int { return int(m.ReadsByResult["fetched"] + m.ReadsByResult["stale"]) }
			fmt.Printf("| fleet (%d credentials, tokens of %s): readers of credentials in use do not wait on apaleo with refresh_ahead | reads that waited on a token request (metrics): on **%s**, off %s; over %s: on %s, off %s, cache-hit %s; p99 on %.2fx, off %.2fx the cache-hit run | %s |\n",
				fl.N, fl.TTL, pctOf(waited(on), on.Reads), pctOf(waited(off), off.Reads), fl.Delay/2,
				pctOf(on.Waited, on.Reads), pctOf(off.Waited, off.Reads), pctOf(hit.Waited, hit.Reads), on.P99Ratio, off.P99Ratio,
				verdict(waited(on) < waited(off) && on.Errors == 0))
			fmt.Printf("| fleet: token requests per credential per lifetime | on %.2f, off %.2f; most in one second: on %d, off %d | |\n",
				on.PerCredLife, off.PerCredLife, on.PeakPerSecond, off.PeakPerSecond)
		}
		if o := fl.Outage; o != nil {
			fmt.Printf("| outage of %s: a handful of token requests per credential, not one per read | %.1f per credential (%d for %d reads) | %s |\n",
				o.Duration, float64(o.TokenRequests)/float64(o.Creds), o.TokenRequests, o.Reads, verdict(float64(o.TokenRequests)/float64(o.Creds) <= 10))
		}
	}
	fmt.Println()
	return nil
}
