package main

// fleet_metrics.go: the plugin's metrics, scraped every second during the fleet run
// (the input of bench/charts).

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type histBucket struct {
	LE    float64 `json:"le"`
	Count float64 `json:"count"`
}

// metricSnap is one scrape of <mount>/metrics, summed over configs and grant types.
type metricSnap struct {
	T              float64            `json:"t"` // seconds since the first scrape
	UnixMS         int64              `json:"unix_ms"`
	TokenByTrigger map[string]float64 `json:"token_requests_by_trigger"`
	TokenByOutcome map[string]float64 `json:"token_requests_by_outcome"`
	Reads          map[string]float64 `json:"reads_by_result"`
	Buckets        []histBucket       `json:"duration_buckets"`
	DurationSum    float64            `json:"duration_sum"`
	DurationCount  float64            `json:"duration_count"`
	States         map[string]float64 `json:"credentials_by_state"`
	// StatesByConfig: config -> state -> credentials.
	StatesByConfig map[string]map[string]float64 `json:"credentials_by_config_and_state"`
}

type phaseMark struct {
	Name  string  `json:"name"`
	Start float64 `json:"start"` // seconds since the first scrape
	End   float64 `json:"end"`
}

// fleetSeries is what -metrics-out holds: the input of bench/charts.
type fleetSeries struct {
	Mount   string       `json:"mount"`
	Started time.Time    `json:"started"`
	Scrapes []metricSnap `json:"scrapes"`
	Phases  []phaseMark  `json:"phases"`
	TTL     float64      `json:"token_ttl_s"`
	DelayMS float64      `json:"delay_ms"`
}

type scraper struct {
	c      *common
	mount  string
	start  time.Time
	mu     sync.Mutex
	series fleetSeries
	stop   chan struct{}
	done   chan struct{}
}

func (s *scraper) scrape() (metricSnap, error) {
	snap := metricSnap{TokenByTrigger: map[string]float64{}, TokenByOutcome: map[string]float64{},
		Reads: map[string]float64{}, States: map[string]float64{}, StatesByConfig: map[string]map[string]float64{}}
	now := time.Now()
	req, err := s.c.api.Request(http.MethodGet, s.mount+"/metrics", nil)
	if err != nil {
		return snap, err
	}
	resp, err := s.c.vault.Do(req)
	if err != nil {
		return snap, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return snap, fmt.Errorf("GET %s/metrics: HTTP %d", s.mount, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return snap, fmt.Errorf("%s/metrics: %w", s.mount, err)
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch name {
			case "vault_apaleo_token_requests_total":
				snap.TokenByTrigger[labels["trigger"]] += m.GetCounter().GetValue()
				snap.TokenByOutcome[labels["outcome"]] += m.GetCounter().GetValue()
			case "vault_apaleo_creds_reads_total":
				snap.Reads[labels["result"]] += m.GetCounter().GetValue()
			case "vault_apaleo_credentials":
				snap.States[labels["state"]] += m.GetGauge().GetValue()
				if snap.StatesByConfig[labels["config"]] == nil {
					snap.StatesByConfig[labels["config"]] = map[string]float64{}
				}
				snap.StatesByConfig[labels["config"]][labels["state"]] += m.GetGauge().GetValue()
			case "vault_apaleo_token_request_duration_seconds":
				h := m.GetHistogram()
				snap.DurationSum += h.GetSampleSum()
				snap.DurationCount += float64(h.GetSampleCount())
				for i, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue // JSON has no +Inf; the count is DurationCount
					}
					if i >= len(snap.Buckets) {
						snap.Buckets = append(snap.Buckets, histBucket{LE: b.GetUpperBound()})
					}
					snap.Buckets[i].Count += float64(b.GetCumulativeCount())
				}
			}
		}
	}
	snap.UnixMS = now.UnixMilli()
	snap.T = now.Sub(s.start).Seconds()
	return snap, nil
}

// mark scrapes now, keeps the snapshot in the series, and returns it.
func (s *scraper) mark() (metricSnap, error) {
	snap, err := s.scrape()
	if err != nil {
		return snap, err
	}
	s.mu.Lock()
	s.series.Scrapes = append(s.series.Scrapes, snap)
	s.mu.Unlock()
	return snap, nil
}

func (s *scraper) run(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.mark(); err != nil {
				fmt.Fprintln(os.Stderr, "load: scrape:", err)
			}
		}
	}
}

func (s *scraper) phase(name string, start, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.series.Phases = append(s.series.Phases, phaseMark{Name: name, Start: start.Sub(s.start).Seconds(), End: end.Sub(s.start).Seconds()})
}

func delta(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range b {
		if d := v - a[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
