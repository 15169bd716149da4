package main

// fleet_outage.go: the identity server down under load.

import (
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// runOutage: the identity server answers 500 to every token request for d while readers
// read creds; then it recovers and the readers go on for tail.
func runOutage(c *common, sc *scraper, idp *idpAdmin, mount string, creds []string, readers int, d, tail time.Duration, setRefreshAhead func(bool) error) (*outageResult, error) {
	o := &outageResult{Duration: d, After: tail, Creds: len(creds), Readers: readers, ReadsByStatus: map[int]int{}}
	if err := setRefreshAhead(true); err != nil {
		return nil, err
	}
	if err := idp.reset(); err != nil {
		return nil, err
	}
	// Every credential in use with a fresh token, then readers for a few seconds.
	w0 := time.Now()
	if _, _, err := parallel(8, creds, func(name string) error {
		_, err := c.api.Must(http.MethodGet, mount+"/creds/"+name, nil, http.StatusOK)
		return err
	}); err != nil {
		return nil, err
	}
	readRandom(c, mount, creds, readers, 5*time.Second)
	sc.phase("warm-up", w0, time.Now())
	fmt.Fprintf(os.Stderr, "load: fleet outage: 500 to every token request for %s, %d readers over %d credentials, then %s more\n", d, readers, len(creds), tail)

	const queued = 5000
	fault500 := map[string]any{"status": 500}
	if err := idp.queueFaults(fault500, queued); err != nil {
		return nil, err
	}
	s0, err := sc.mark()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	end := t0.Add(d)
	// Keep the queue topped up until the end, then clear it.
	topErr := make(chan error, 1)
	var dry atomic.Bool
	go func() {
		for time.Now().Before(end) {
			time.Sleep(min(250*time.Millisecond, time.Until(end)))
			st, err := idp.stats()
			if err != nil {
				topErr <- err
				return
			}
			if st.PendingFaults == 0 {
				dry.Store(true)
			}
			if st.PendingFaults < queued/2 && time.Now().Before(end) {
				if err := idp.queueFaults(fault500, queued); err != nil {
					topErr <- err
					return
				}
			}
		}
		topErr <- nil
	}()
	var endSnap metricSnap
	var endStats idpStats
	endErr := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(end))
		if err := <-topErr; err != nil {
			endErr <- err
			return
		}
		var err error
		if endStats, err = idp.stats(); err != nil {
			endErr <- err
			return
		}
		if err = idp.clearFaults(); err != nil {
			endErr <- err
			return
		}
		endSnap, err = sc.mark()
		endErr <- err
	}()
	recs, rstart := readRandom(c, mount, creds, readers, d+tail)
	if err := <-endErr; err != nil {
		return nil, err
	}
	t2 := time.Now()
	s2, err := sc.mark()
	if err != nil {
		return nil, err
	}
	after, err := idp.stats()
	if err != nil {
		return nil, err
	}
	t1 := t0.Add(d)
	sc.phase("outage", t0, t1)
	sc.phase("recovery", t1, t2)
	o.TokenRequests, o.PeakPerSecond = countIn(after.RequestTimes, t0, t1)
	o.AfterTokenReqs, _ = countIn(after.RequestTimes, t1, t2)
	o.FaultsApplied = endStats.FaultsApplied
	o.QueueRanDry = dry.Load()
	o.ReadsByResult = delta(s0.Reads, endSnap.Reads)
	o.ByOutcome = delta(s0.TokenByOutcome, endSnap.TokenByOutcome)
	o.AfterByResult = delta(endSnap.Reads, s2.Reads)
	o.StatesAtEnd = endSnap.StatesByConfig["fleet"]
	off := t1.Sub(rstart)
	var all, errs, oks dist
	for _, rr := range recs {
		if rr.at < off {
			all = append(all, rr.lat)
			if rr.code == http.StatusOK {
				oks = append(oks, rr.lat)
			} else {
				errs = append(errs, rr.lat)
			}
			if rr.lat > time.Second {
				o.SlowReads++
			}
			o.Reads++
			o.ReadsByStatus[rr.code]++
			if rr.code == http.StatusOK {
				o.ReadsOK++
			}
			continue
		}
		o.AfterReads++
		if rr.lat > time.Second {
			o.AfterSlowReads++
		}
		if rr.code != http.StatusOK {
			o.AfterErrors++
			o.LastErrorAfter = max(o.LastErrorAfter, rr.at+rr.lat-off)
		}
	}
	o.Lat = map[string]time.Duration{}
	for k, d := range map[string]dist{"all": all, "ok": oks, "error": errs} {
		d = d.sorted()
		o.Lat[k+"_p50"], o.Lat[k+"_p99"] = d.pct(50), d.pct(99)
		if len(d) > 0 {
			o.Lat[k+"_max"] = d[len(d)-1]
		}
	}
	fmt.Fprintf(os.Stderr, "load: fleet outage: %d reads (%d ok), %d token requests (%.1f per credential), after: %d reads, %d errors, %d token requests\n",
		o.Reads, o.ReadsOK, o.TokenRequests, float64(o.TokenRequests)/float64(len(creds)), o.AfterReads, o.AfterErrors, o.AfterTokenReqs)
	return o, nil
}
