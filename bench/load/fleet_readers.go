package main

// fleet_readers.go: the fleet's readers: random names for a while, or a paced pass.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
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
	var wg sync.WaitGroup
	recs := make([][]readRec, readers)
	start := time.Now()
	deadline := start.Add(d)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
			recs[i] = out
		}()
	}
	wg.Wait()
	var all []readRec
	for _, r := range recs {
		all = append(all, r...)
	}
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
