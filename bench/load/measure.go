package main

// measure.go: what every subcommand measures with: latency distributions, a worker pool
// over names, the plugin process's figures from /proc, and the JSON output.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type dist []time.Duration

func (d dist) sorted() dist {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

// pct of a sorted dist, nearest rank.
func (d dist) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*p/100+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

type procStat struct {
	PID     int    `json:"pid"`
	RSSKiB  int    `json:"vm_rss_kib"`
	HWMKiB  int    `json:"vm_hwm_kib"`
	Threads int    `json:"threads"`
	FDs     int    `json:"fds"`
	Label   string `json:"label"`
}

// parallel runs f for every name on workers goroutines and returns the wall time and
// each call's latency. It stops at the first error.
func parallel(workers int, names []string, f func(string) error) (time.Duration, dist, error) {
	var (
		next    atomic.Int64
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	lats := fanOut(workers, func(int) dist {
		var lat dist
		for ctx.Err() == nil {
			i := int(next.Add(1)) - 1
			if i >= len(names) {
				break
			}
			t0 := time.Now()
			if err := f(names[i]); err != nil {
				errOnce.Do(func() { first = err })
				cancel()
				break
			}
			lat = append(lat, time.Since(t0))
		}
		return lat
	})
	d := time.Since(start)
	return d, slices.Concat(lats...), first
}

// fanOut runs f(i) for i = 0..n-1 on n goroutines, waits for them all, and returns what
// each recorded, by i: the shape of every reader loop here.
func fanOut[T any](n int, f func(i int) T) []T {
	var wg sync.WaitGroup
	out := make([]T, n)
	for i := range n {
		wg.Go(func() { out[i] = f(i) })
	}
	wg.Wait()
	return out
}

// pluginProc finds the process running the binary at path (Vault starts it from its
// plugin directory) and reads its memory figures from /proc.
func pluginProc(path string) (procStat, error) {
	var found []int
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return procStat{}, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if string(argv0) == path {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return procStat{}, fmt.Errorf("want one process running %s, found %v", path, found)
	}
	p := procStat{PID: found[0]}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		num, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			p.RSSKiB = num
		case "VmHWM":
			p.HWMKiB = num
		case "Threads":
			p.Threads = num
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID)); err == nil {
		p.FDs = len(fds)
	}
	return p, nil
}
