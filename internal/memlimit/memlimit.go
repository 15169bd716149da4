// Package memlimit is the plugin process's memory policy: a soft memory limit that keeps
// the process small while its live heap is, and follows the live heap up when the fleet
// grows, so the garbage collector never runs against a fixed ceiling.
//
// The engine's memory is mostly long-lived (a cached token, config and state per
// credential), and its largest allocations are short-lived: a metrics scrape at 10,000
// configs passes about 30 MiB through the Vault SDK's encoding of the response, an import
// burst its token responses. With Go's defaults (GOGC=100, no limit) those peaks stay in
// the process's RSS: 128 MiB with 10,000 configs and 10,000 authorized credentials, 175
// MiB after three scrapes (docs/benchmarks.md). Under the limit, the collector and the
// scavenger give such memory back.
package memlimit

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// Floor is the smallest limit: the Go runtime's memory (heap, stacks, metadata; not
	// the binary's pages and what else the process maps, about 16-20 MiB more of RSS)
	// while the live heap is small.
	Floor = 72 << 20
	// Headroom over the live heap once that is past Floor/Headroom: the collector then
	// runs as with GOGC=50 instead of continuously, as it would against a fixed limit.
	Headroom = 1.5
	// Every is how often the live heap is looked at.
	Every = 10 * time.Second
)

// For is the limit for a live heap of live bytes.
func For(live uint64) int64 {
	return max(Floor, int64(float64(live)*Headroom))
}

// Start applies the policy for the process's life, unless the environment sets
// GOMEMLIMIT (an operator's limit, `vault plugin register -env=GOMEMLIMIT=...`) or
// GOGC=off. It reports whether it did.
func Start() bool {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set || os.Getenv("GOGC") == "off" {
		return false
	}
	debug.SetMemoryLimit(Floor)
	go follow(time.Tick(Every))
	return true
}

// follow sets the limit for the live heap at every tick, until ticks is closed.
func follow(ticks <-chan time.Time) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	for range ticks {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			debug.SetMemoryLimit(For(sample[0].Value.Uint64()))
		}
	}
}
