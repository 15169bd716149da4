package main

// fleet_report.go: the fleet's Markdown section.

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

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
	row("**reads as slow as a token request** (readers' clock: at least the delay; the most that can have waited on one)", func(m *fleetMode) string {
		return fmt.Sprintf("**%d (%s)**", m.AsSlowAsToken, pctOf(m.AsSlowAsToken, m.Reads))
	})
	row("reads that waited on a token request (the plugin's own metrics: fetched + stale)", func(m *fleetMode) string {
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
