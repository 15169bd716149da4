package apaleo

import "time"

// metrics.go: the engine's Prometheus metrics, on a registry of the mount's own (external
// plugins cannot write into Vault's telemetry). Served raw by path_metrics.go.
//
// Skeleton: the recording calls below are the interface the engine uses; their bodies
// are filled in with github.com/prometheus/client_golang.

// Token request triggers (label trigger).
const (
	triggerRead         = "read"
	triggerRefreshAhead = "refresh_ahead"
	triggerCallback     = "callback"
	triggerExchange     = "exchange"
	triggerImport       = "import"
)

// Read results (label result).
const (
	readCached  = "cached"  // a fresh cached token
	readFetched = "fetched" // a new token fetched for this read
	readStale   = "stale"   // a still-valid cached token served because a new one could not be had
	readError   = "error"
)

type metrics struct{}

func newMetrics() *metrics { return &metrics{} }

// tokenRequest counts one token request sent to the identity server (one HTTP request:
// each retry is one more) and its duration. err is nil on success; an *upstreamError
// (client.go) otherwise, whose class becomes the outcome label.
func (m *metrics) tokenRequest(config, grantType, trigger string, err error, d time.Duration) {}

// credsRead counts one read of creds/<name> by its result.
func (m *metrics) credsRead(config, result string) {}

// credentialStates installs the source of the credentials-per-config-and-state gauge,
// called at scrape time: config -> state -> count.
func (m *metrics) credentialStates(f func() map[string]map[string]int) {}
