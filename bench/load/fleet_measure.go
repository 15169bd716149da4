package main

// fleet_measure.go: the fleet's readers (random names for a while, or a paced pass) and
// the measure of one mode: reads, token requests, metrics, the plugin process.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type readRec struct {
	at   time.Duration // start, since the readers began
	lat  time.Duration
	code int // HTTP status, 0 for a transport error
}

// readRandom runs readers goroutines reading random names of mount/creds/ for d.
func readRandom(c *common, mount string, names []string, readers int, d time.Duration) ([]readRec, time.Time) {
	start := time.Now()
	deadline := start.Add(d)
	recs := fanOut(readers, func(i int) []readRec {
		rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
		out := make([]readRec, 0, 8192)
		for time.Now().Before(deadline) {
			name := names[rng.IntN(len(names))]
			t0 := time.Now()
			r := readRec{at: t0.Sub(start)}
			r.code, _ = c.api.Discard(http.MethodGet, mount+"/creds/"+name) // 0: no answer
			r.lat = time.Since(t0)
			out = append(out, r)
		}
		return out
	})
	all := slices.Concat(recs...)
	return all, start
}

// pacedPass reads every name once, name i at start + i*d/len(names), so that the tokens
// it fetches are issued evenly over d (as hotels coming online at different times).
// Meanwhile readers goroutines read random names among those already passed, so every
// credential is in use from its first token on, as in the measured window.
func pacedPass(c *common, mount string, names []string, d time.Duration, readers int) error {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 64)
		errs   atomic.Int64
		first  atomic.Value
		passed atomic.Int64
		done   = make(chan struct{})
		rwg    sync.WaitGroup
	)
	start := time.Now()
	for i := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for {
				select {
				case <-done:
					return
				default:
				}
				k := int(passed.Load())
				if k == 0 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _, _ = c.api.Do(http.MethodGet, mount+"/creds/"+names[rng.IntN(k)], nil)
			}
		}()
	}
	for i, name := range names {
		time.Sleep(time.Until(start.Add(time.Duration(i) * d / time.Duration(len(names)))))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := c.api.Must(http.MethodGet, mount+"/creds/"+name, nil, http.StatusOK); err != nil {
				errs.Add(1)
				first.CompareAndSwap(nil, err)
			}
			passed.Add(1)
		}()
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	if n := errs.Load(); n > 0 {
		return fmt.Errorf("paced pass: %d failed reads, first: %v", n, first.Load())
	}
	return nil
}

// fleetMeasure measures one mode of the fleet: its reads, the token requests the identity
// server saw, the plugin's metrics and its process.
type fleetMeasure struct {
	sc         *scraper
	threshold  time.Duration // a read that took longer waited on a token request
	delay      time.Duration // the identity server's delay of every token request
	ttl        time.Duration
	pluginPath string
}

// summarize fills m's read figures from recs.
func (f *fleetMeasure) summarize(m *fleetMode, recs []readRec) {
	var lat dist
	for _, rr := range recs {
		if rr.code != http.StatusOK {
			m.Errors++
			continue
		}
		lat = append(lat, rr.lat)
		if rr.lat > f.threshold {
			m.Waited++
		}
		if rr.lat >= f.delay {
			m.AsSlowAsToken++
		}
	}
	m.Reads = len(recs)
	s := lat.sorted()
	m.P50, m.P99 = s.pct(50), s.pct(99)
	if len(s) > 0 {
		m.Max = s[len(s)-1]
	}
}

// measure runs do (the mode's readers) and fills m from its reads, the identity server
// a's stats and the metrics scraped before and after; the window is marked phase.
func (f *fleetMeasure) measure(m *fleetMode, a *idpAdmin, credsN int, phase string, do func() []readRec) error {
	s0, err := f.sc.mark()
	if err != nil {
		return err
	}
	t0 := time.Now()
	before, err := a.stats()
	if err != nil {
		return err
	}
	recs := do()
	t1 := time.Now()
	s1, err := f.sc.mark()
	if err != nil {
		return err
	}
	after, err := a.stats()
	if err != nil {
		return err
	}
	f.sc.phase(phase, t0, t1)
	m.Window = t1.Sub(t0)
	f.summarize(m, recs)
	m.TokenRequests, m.PeakPerSecond = countIn(after.RequestTimes, t0, t1)
	if len(after.RequestTimes) >= 100_000 {
		m.TokenRequests = after.TokenRequests - before.TokenRequests // request_times is full
	}
	m.PerCredLife = float64(m.TokenRequests) / float64(credsN) / (m.Window.Seconds() / f.ttl.Seconds())
	m.ByTrigger = delta(s0.TokenByTrigger, s1.TokenByTrigger)
	m.ByOutcome = delta(s0.TokenByOutcome, s1.TokenByOutcome)
	m.ReadsByResult = delta(s0.Reads, s1.Reads)
	if dc := s1.DurationCount - s0.DurationCount; dc > 0 {
		m.MeanTokenMS = (s1.DurationSum - s0.DurationSum) / dc * 1000
	}
	if p, err := pluginProc(f.pluginPath); err == nil {
		m.Proc = p
	} else {
		return err
	}
	fmt.Fprintf(os.Stderr, "load: fleet %s: %d reads, %d waited, %d errors, p50 %s ms, p99 %s ms, %d token requests (peak %d/s), RSS %.1f MiB\n",
		m.Mode, m.Reads, m.Waited, m.Errors, ms(m.P50), ms(m.P99), m.TokenRequests, m.PeakPerSecond, float64(m.Proc.RSSKiB)/1024)
	return nil
}
