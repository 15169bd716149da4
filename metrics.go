package apaleo

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics.go: the engine's Prometheus metrics, on a registry of the mount's own (external
// plugins cannot write into Vault's telemetry). Served raw by path_metrics.go.
//
// Every series is per Vault node: each node counts the requests it handled itself (standbys
// forward theirs to the active node, which then counts them). Labels carry config names
// only: never a credential name (one per hotel account, unbounded) and never a secret.

// Token request triggers (label trigger).
const (
	triggerRead         = "read"
	triggerRefreshAhead = "refresh_ahead"
	triggerCallback     = "callback"
	triggerExchange     = "exchange"
	triggerImport       = "import"
	triggerKeepAlive    = "keep_alive"
)

// Read results (label result).
const (
	readCached  = "cached"  // a fresh cached token
	readFetched = "fetched" // a new token fetched for this read
	readStale   = "stale"   // a still-valid cached token served because a new one could not be had
	readError   = "error"
)

// credentialStateNames are the states of creds/ list -detailed (label state), each
// reported for every config, zero or not.
var credentialStateNames = []string{"ok", "no_token", "failing", "needs_authorization"}

// Outcomes of a token request (label outcome): success, or the class of its error. The
// set is fixed so that an identity server's error codes cannot grow the label's values.
const (
	outcomeSuccess            = "success"
	outcomeInvalidClient      = "invalid_client"
	outcomeUnauthorizedClient = "unauthorized_client"
	outcomeInvalidGrant       = "invalid_grant"
	outcomeInvalidRequest     = "invalid_request"
	outcomeInvalidScope       = "invalid_scope"
	outcomeUnsupportedGrant   = "unsupported_grant_type"
	outcomeOAuthError         = "oauth_error" // any other OAuth error code
	outcomeRateLimited        = "rate_limited"
	outcomeServerError        = "server_error" // 5xx
	outcomeTimeout            = "timeout"
	outcomeNetwork            = "network"    // no answer: connection refused, reset, DNS
	outcomeTLS                = "tls"        // certificate not trusted, handshake failed
	outcomeUnreadable         = "unreadable" // a 2xx answer that could not be used
	outcomeCancelled          = "cancelled"
	outcomeOther              = "other" // e.g. a redirect, a 4xx without an OAuth error code
)

const metricsNamespace = "vault_apaleo"

// tokenDurationBuckets spans a fast identity server (10 ms) to a read's whole budget (30 s).
var tokenDurationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30}

type metrics struct {
	registry      *prometheus.Registry
	tokenRequests *prometheus.CounterVec
	tokenDuration *prometheus.HistogramVec
	credsReads    *prometheus.CounterVec
	credentials   *credentialsCollector
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		tokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "token_requests_total",
			Help: "Token requests this Vault node sent to the apaleo identity server (each retry counts), " +
				"by config, grant type, trigger and outcome (success or the error class).",
		}, []string{"config", "grant_type", "trigger", "outcome"}),
		tokenDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "token_request_duration_seconds",
			Help:      "Duration of the token requests this Vault node sent to the apaleo identity server, by config and grant type.",
			Buckets:   tokenDurationBuckets,
		}, []string{"config", "grant_type"}),
		credsReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "creds_reads_total",
			Help:      "Reads of creds/<name> this Vault node answered, by config and result (cached, fetched, stale, error).",
		}, []string{"config", "result"}),
		credentials: &credentialsCollector{desc: prometheus.NewDesc(
			prometheus.BuildFQName(metricsNamespace, "", "credentials"),
			"Credentials (client-credentials configs and authorized credentials) by config and state "+
				"(ok, no_token, failing, needs_authorization), as this Vault node sees them at scrape time.",
			[]string{"config", "state"}, nil,
		)},
	}
	m.registry.MustRegister(m.tokenRequests, m.tokenDuration, m.credsReads, m.credentials)
	return m
}

// tokenRequest counts one token request sent to the identity server (one HTTP request:
// each retry is one more) and its duration. err is nil on success; an *upstreamError
// (client.go) otherwise, whose class becomes the outcome label. grantType is the
// request's grant_type: client_credentials, refresh_token or authorization_code.
func (m *metrics) tokenRequest(config, grantType, trigger string, err error, d time.Duration) {
	m.tokenRequests.WithLabelValues(config, grantType, trigger, outcomeOf(err)).Inc()
	m.tokenDuration.WithLabelValues(config, grantType).Observe(max(d, 0).Seconds())
}

// observeTokenRequests returns ctx carrying an attempt observer (client.go) that counts
// every HTTP attempt of the token request made with it. Use it only for token requests:
// a revocation made with the same context would be counted too.
func (m *metrics) observeTokenRequests(ctx context.Context, config, grantType, trigger string) context.Context {
	return withAttemptObserver(ctx, func(err error, d time.Duration) {
		m.tokenRequest(config, grantType, trigger, err, d)
	})
}

// credsRead counts one read of creds/<name> by its result.
func (m *metrics) credsRead(config, result string) {
	m.credsReads.WithLabelValues(config, result).Inc()
}

// credentialStates installs the source of the credentials-per-config-and-state gauge,
// called at scrape time: config -> state -> count. f runs on the scraping request's
// goroutine, concurrently with the engine, and must not block for long.
func (m *metrics) credentialStates(f func() map[string]map[string]int) {
	m.credentials.mu.Lock()
	defer m.credentials.mu.Unlock()
	m.credentials.states = f
}

// credentialsCollector asks the engine for its credential states at every scrape, so the
// gauge is exact rather than kept in step with every write, delete and failure.
type credentialsCollector struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	states func() map[string]map[string]int
}

func (c *credentialsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect reports every known state of every config, zeros included, so that a state
// emptying shows as 0 rather than as a series that vanishes.
func (c *credentialsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	f := c.states
	c.mu.Unlock()
	if f == nil {
		return
	}
	for config, byState := range f() {
		for _, state := range credentialStateNames {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(byState[state]), config, state)
		}
		for state, n := range byState {
			if !slices.Contains(credentialStateNames, state) {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), config, state)
			}
		}
	}
}

// outcomeOf is the outcome label of a token request's error: success, an OAuth error
// code of RFC 6749 (others bucketed as oauth_error), or what went wrong on the way.
func outcomeOf(err error) string {
	if err == nil {
		return outcomeSuccess
	}
	var ue *upstreamError
	if !errors.As(err, &ue) {
		switch {
		case errors.Is(err, context.Canceled):
			return outcomeCancelled
		case errors.Is(err, context.DeadlineExceeded):
			return outcomeTimeout
		}
		return outcomeOther
	}
	switch {
	case ue.Status == http.StatusTooManyRequests:
		return outcomeRateLimited
	case ue.Status >= 500:
		return outcomeServerError
	case ue.Code != "":
		switch ue.Code {
		case outcomeInvalidClient, outcomeUnauthorizedClient, outcomeInvalidGrant,
			outcomeInvalidRequest, outcomeInvalidScope, outcomeUnsupportedGrant:
			return ue.Code
		}
		return outcomeOAuthError
	case ue.Status >= 200 && ue.Status < 300, ue.Status == 0 && ue.Answered:
		return outcomeUnreadable
	case ue.Status != 0:
		return outcomeOther
	case ue.Timeout:
		return outcomeTimeout
	case strings.HasPrefix(ue.cause, "TLS ") || strings.Contains(ue.cause, "tls: "):
		return outcomeTLS
	case ue.cause == "request cancelled":
		return outcomeCancelled
	}
	return outcomeNetwork
}
