package apaleo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
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
	triggerProbe        = "probe" // the one request of a config that is down (outage.go)
)

// Read results (label result).
const (
	readCached  = "cached"  // a fresh cached token
	readFetched = "fetched" // a new token fetched for this read
	readStale   = "stale"   // a still-valid cached token served because a new one could not be had
	readError   = "error"
)

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

// credentialStateNames are the values of the credentials gauge's state label, in the
// order a scrape writes them (ok first, the others by name); stateCounts is indexed alike.
var credentialStateNames = [...]string{stateOK, stateFailing, stateNeedsAuthorization, stateNoToken}

// stateCounts are one config's credentials by state.
type stateCounts [len(credentialStateNames)]int

// add counts one credential in state.
func (s *stateCounts) add(state string) {
	if i := slices.Index(credentialStateNames[:], state); i >= 0 {
		s[i]++
	}
}

// readResults are the values of creds_reads_total's result label, in the order a scrape
// writes them; configCounters.reads is indexed alike.
var readResults = [...]string{readCached, readFetched, readStale, readError}

// The series with a config label, written by writeText.
const (
	metricTokenRequests = metricsNamespace + "_token_requests_total"
	metricCredsReads    = metricsNamespace + "_creds_reads_total"
	metricCredentials   = metricsNamespace + "_credentials"
	metricOutages       = metricsNamespace + "_upstream_outages_total"
	metricHeld          = metricsNamespace + "_token_requests_held_total"

	helpTokenRequests = "Token requests this Vault node sent to the apaleo identity server (each retry counts), " +
		"by config, grant type, trigger and outcome (success or the error class)."
	helpCredsReads  = "Reads of creds/<name> this Vault node answered, by config and result (cached, fetched, stale, error)."
	helpCredentials = "Credentials (client-credentials configs and authorized credentials) by config and state " +
		"(ok, no_token, failing, needs_authorization), as this Vault node sees them at scrape time: " +
		"failure memory lives on the node that sends token requests (the active node), so a standby's states are its own, not the cluster's."
	helpOutages = "Outages of the apaleo identity server this Vault node saw, by config: each time 5 token requests of the app in a row " +
		"failed with a 5xx, a timeout, a refused or dropped connection or an unreadable answer, and the config went down."
	helpHeld = "Token requests this Vault node held back because apaleo was down for the config (reads answered at once, " +
		"background work put off until apaleo answers a probe), by config."
)

// metrics holds the mount's series. The per-config counters are kept compact, one small
// struct per config (configCounters: about 200 bytes with its map entry), and written as
// text at scrape time (writeText) without the client library: its CounterVec held about
// 700 bytes per series (label pairs, a created timestamp, hashes), 20 MiB at 10,000
// configs and 30,000 series, and building its metric structures at every scrape made
// most of a scrape's time and garbage. The duration histogram, by grant type only, stays
// on a client_golang registry.
type metrics struct {
	registry      *prometheus.Registry
	tokenDuration *prometheus.HistogramVec

	configs sync.Map // config name -> *configCounters

	mu     sync.Mutex
	states func() map[string]*stateCounts
	load   func()
	loaded sync.Once
}

// configCounters are one config's counters.
type configCounters struct {
	reads [len(readResults)]atomic.Uint64
	// outages the config went down for, and the token requests they held back.
	outages, held atomic.Uint64

	mu sync.Mutex
	// A config has a few token request series (one in the steady state: read or
	// refresh_ahead successes), so a slice, kept in the order a scrape writes them; a
	// map cost about 500 bytes per config.
	requests []*requestCount
}

// requestKey is a token_requests_total series of a config: its other labels.
type requestKey struct{ grantType, trigger, outcome string }

// compare orders keys as their series are written: by label name, as client_golang did
// (grant_type, outcome, trigger).
func (k requestKey) compare(o requestKey) int {
	return cmp.Or(cmp.Compare(k.grantType, o.grantType), cmp.Compare(k.outcome, o.outcome), cmp.Compare(k.trigger, o.trigger))
}

type requestCount struct {
	key requestKey
	n   atomic.Uint64
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		tokenDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "token_request_duration_seconds",
			Help:      "Duration of the token requests this Vault node sent to the apaleo identity server, by grant type.",
			Buckets:   tokenDurationBuckets,
			// Not by config: a histogram is 15 series, which per config (one per hotel
			// with simple clients) was most of the engine's memory and scrape size.
		}, []string{"grant_type"}),
	}
	m.registry.MustRegister(m.tokenDuration)
	return m
}

// counters returns config's counters, made on first use.
func (m *metrics) counters(config string) *configCounters {
	if c, ok := m.configs.Load(config); ok {
		return c.(*configCounters)
	}
	c, _ := m.configs.LoadOrStore(config, &configCounters{})
	return c.(*configCounters)
}

// tokenRequest counts one token request sent to the identity server (one HTTP request:
// each retry is one more) and its duration. err is nil on success; an *upstreamError
// (client.go) otherwise, whose class becomes the outcome label. grantType is the
// request's grant_type: client_credentials, refresh_token or authorization_code.
func (m *metrics) tokenRequest(config, grantType, trigger string, err error, d time.Duration) {
	c := m.counters(config)
	k := requestKey{grantType, trigger, outcomeOf(err)}
	c.mu.Lock()
	i, found := slices.BinarySearchFunc(c.requests, k, func(r *requestCount, k requestKey) int { return r.key.compare(k) })
	if !found {
		c.requests = slices.Insert(c.requests, i, &requestCount{key: k})
	}
	r := c.requests[i]
	c.mu.Unlock()
	r.n.Add(1)
	m.tokenDuration.WithLabelValues(grantType).Observe(max(d, 0).Seconds())
}

// forgetConfig drops the series of a deleted config, so a fleet's churn does not keep
// growing the counters (and every scrape).
func (m *metrics) forgetConfig(config string) {
	m.configs.Delete(config)
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
	i := slices.Index(readResults[:], result)
	if i < 0 {
		i = len(readResults) - 1 // readError: the constants are the only callers
	}
	m.counters(config).reads[i].Add(1)
}

// outageBegan counts an outage of config's app (outage.go).
func (m *metrics) outageBegan(config string) { m.counters(config).outages.Add(1) }

// outageHeld counts a token request an outage held back.
func (m *metrics) outageHeld(config string) { m.counters(config).held.Add(1) }

// credentialStates installs the source of the credentials-per-config-and-state gauge,
// called at scrape time: config -> state -> count. f runs on the scraping request's
// goroutine, concurrently with the engine, and must not block for long (it reads
// memory only). load, run once in the background at the first scrape, brings into
// memory what f cannot see yet (entries not touched since the plugin started).
func (m *metrics) credentialStates(f func() map[string]*stateCounts, load func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states, m.load = f, load
}

// textWriter is what a scrape writes to: a bytes.Buffer for the plain text, a
// bufio.Writer in front of gzip for a compressed answer (path_metrics.go).
type textWriter interface {
	io.Writer
	io.StringWriter
	io.ByteWriter
}

// writeText writes every series in the Prometheus text format (version 0.0.4): the
// credentials gauge, creds_reads_total, the duration histogram and token_requests_total,
// configs in name order. A family without samples is left out, as client_golang does.
func (m *metrics) writeText(w textWriter) error {
	type configEntry struct {
		name string
		c    *configCounters
	}
	var entries []configEntry
	size := 8192
	// The entries as they are now: a config deleted meanwhile is not made again.
	m.configs.Range(func(k, v any) bool {
		e := configEntry{k.(string), v.(*configCounters)}
		entries = append(entries, e)
		e.c.mu.Lock()
		// A credentials line, mostly two reads series, its token requests: about 80
		// bytes each besides the config's name.
		size += (3 + len(e.c.requests)) * (len(e.name) + 80)
		e.c.mu.Unlock()
		return true
	})
	slices.SortFunc(entries, func(a, b configEntry) int { return cmp.Compare(a.name, b.name) })
	// One allocation of about the body's size: growing a buffer of megabytes by doubling
	// allocates twice its size and copies it.
	if g, ok := w.(interface{ Grow(int) }); ok {
		g.Grow(size)
	}

	m.writeCredentials(w)

	fam := family{w: w, name: metricCredsReads, help: helpCredsReads, typ: "counter"}
	for _, e := range entries {
		for r, result := range readResults {
			if n := e.c.reads[r].Load(); n > 0 {
				fam.sample(n, "config", e.name, "result", result)
			}
		}
	}

	for _, f := range []struct {
		name, help string
		n          func(*configCounters) uint64
	}{
		{metricOutages, helpOutages, func(c *configCounters) uint64 { return c.outages.Load() }},
		{metricHeld, helpHeld, func(c *configCounters) uint64 { return c.held.Load() }},
	} {
		fam = family{w: w, name: f.name, help: f.help, typ: "counter"}
		for _, e := range entries {
			if n := f.n(e.c); n > 0 {
				fam.sample(n, "config", e.name)
			}
		}
	}

	families, err := m.registry.Gather()
	if err != nil {
		return fmt.Errorf("gathering metrics: %w", err)
	}
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return fmt.Errorf("encoding metrics: %w", err)
		}
	}

	fam = family{w: w, name: metricTokenRequests, help: helpTokenRequests, typ: "counter"}
	for _, e := range entries {
		e.c.mu.Lock()
		for _, r := range e.c.requests {
			fam.sample(r.n.Load(), "config", e.name, "grant_type", r.key.grantType, "outcome", r.key.outcome, "trigger", r.key.trigger)
		}
		e.c.mu.Unlock()
	}
	return nil
}

// writeCredentials writes the credentials gauge from the engine's memory: per config,
// its ok count (zero too, so a config whose tokens all lapse shows 0) and every other
// state that holds a credential. Zero counts of the other states are left out: at 10,000
// configs they were 30,000 series of zeros; an alert on failing > 0 resolves when its
// series goes. The first scrape starts the background load of what memory lacks.
func (m *metrics) writeCredentials(w textWriter) {
	m.mu.Lock()
	f, load := m.states, m.load
	m.mu.Unlock()
	if f == nil {
		return
	}
	if load != nil {
		m.loaded.Do(func() { go load() })
	}
	byConfig := f()
	fam := family{w: w, name: metricCredentials, help: helpCredentials, typ: "gauge"}
	for _, config := range slices.Sorted(maps.Keys(byConfig)) {
		for i, n := range byConfig[config] {
			if i == 0 || n > 0 { // ok, then the states that hold credentials
				fam.sample(uint64(n), "config", config, "state", credentialStateNames[i])
			}
		}
	}
}

// family writes one metric family's samples, its HELP and TYPE lines before the first.
// The writers a scrape uses cannot fail on the way (a bytes.Buffer has no errors; a
// bufio.Writer keeps its first and returns it at Flush, which the caller checks), so
// sample does not check each write.
type family struct {
	w               textWriter
	name, help, typ string
	started         bool
	num             [20]byte // the value's digits
}

// sample writes name{label="value",...} n. labels are name, value pairs.
func (f *family) sample(n uint64, labels ...string) {
	w := f.w
	if !f.started {
		f.started = true
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, helpEscaper.Replace(f.help), f.name, f.typ)
	}
	w.WriteString(f.name)
	w.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(labels[i])
		w.WriteString(`="`)
		labelEscaper.WriteString(w, labels[i+1])
		w.WriteByte('"')
	}
	w.WriteString("} ")
	w.Write(strconv.AppendUint(f.num[:0], n, 10))
	w.WriteByte('\n')
}

// The text format's escapes: in label values backslash, double quote and line feed; in
// HELP backslash and line feed.
var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

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
