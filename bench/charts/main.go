// Command charts draws the fleet run's charts (PNG) from the plugin's metrics that
// `load fleet -metrics-out FILE` scraped every second from <mount>/metrics:
//
//	bench-fleet-token-requests.png   token requests per second, by trigger
//	bench-fleet-reads.png            reads per second, by result (log scale)
//	bench-fleet-token-latency.png    token request duration: mean and p99 per 5 s
//
// Usage: charts -in build/bench/fleet-metrics.json -out docs/img
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// The input: what bench/load writes (see fleetSeries in bench/load/fleet_metrics.go).
type histBucket struct {
	LE    float64 `json:"le"`
	Count float64 `json:"count"`
}

type snap struct {
	T              float64            `json:"t"`
	TokenByTrigger map[string]float64 `json:"token_requests_by_trigger"`
	Reads          map[string]float64 `json:"reads_by_result"`
	Buckets        []histBucket       `json:"duration_buckets"`
	DurationSum    float64            `json:"duration_sum"`
	DurationCount  float64            `json:"duration_count"`
}

type phase struct {
	Name  string  `json:"name"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

type series struct {
	Mount   string  `json:"mount"`
	Scrapes []snap  `json:"scrapes"`
	Phases  []phase `json:"phases"`
	TTL     float64 `json:"token_ttl_s"`
	DelayMS float64 `json:"delay_ms"`
}

var palette = map[string]color.Color{
	"read":          color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"refresh_ahead": color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"cached":        color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"fetched":       color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"stale":         color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	"error":         color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"mean":          color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"p99":           color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"p50":           color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

func main() {
	in := flag.String("in", "", "fleet-metrics.json written by `load fleet -metrics-out`")
	out := flag.String("out", "", "directory for the PNGs")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "charts:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	if in == "" || out == "" {
		return errors.New("need -in and -out")
	}
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var s series
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	sort.SliceStable(s.Scrapes, func(i, j int) bool { return s.Scrapes[i].T < s.Scrapes[j].T })
	// Drop scrapes closer than 0.5 s to the previous one (the boundary scrapes): rates
	// over a few milliseconds are noise.
	var sc []snap
	for _, x := range s.Scrapes {
		if len(sc) == 0 || x.T-sc[len(sc)-1].T >= 0.5 {
			sc = append(sc, x)
		}
	}
	if len(sc) < 3 {
		return errors.New("fewer than 3 scrapes")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	rate := func(get func(snap) float64) plotter.XYs {
		var xys plotter.XYs
		for i := 1; i < len(sc); i++ {
			dt := sc[i].T - sc[i-1].T
			xys = append(xys, plotter.XY{X: sc[i].T, Y: math.Max(get(sc[i])-get(sc[i-1]), 0) / dt})
		}
		return xys
	}

	// 1. token requests per second by trigger
	p := newPlot("Token requests per second, by trigger", "token requests / s", s)
	var top float64
	for _, trig := range []string{"read", "refresh_ahead"} {
		xys := rate(func(x snap) float64 { return x.TokenByTrigger[trig] })
		top = math.Max(top, maxY(xys))
		if err := addLine(p, trig, xys, palette[trig]); err != nil {
			return err
		}
	}
	// Headroom above the data for the phase labels and the legend.
	p.Y.Min, p.Y.Max = 0, top*1.4
	p.Y.Tick.Marker = stepTicks(top * 1.4)
	markPhases(p, s.Phases, 0, top*1.36)
	if err := save(p, filepath.Join(out, "bench-fleet-token-requests.png")); err != nil {
		return err
	}

	// 2. reads per second by result, log scale (cached reads outnumber the others)
	p = newPlot("Reads of creds/ per second, by result (log scale)", "reads / s", s)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	top = 1
	for _, res := range []string{"cached", "fetched", "stale", "error"} {
		xys := rate(func(x snap) float64 { return x.Reads[res] })
		top = math.Max(top, maxY(xys))
		if err := addPositiveRuns(p, res, xys, palette[res]); err != nil {
			return err
		}
	}
	p.Y.Min, p.Y.Max = 0.5, top*12
	markPhases(p, s.Phases, 0.5, top*10)
	if err := save(p, filepath.Join(out, "bench-fleet-reads.png")); err != nil {
		return err
	}

	// 3. token request duration, per 5 s window: mean (sum/count), p50 and p99
	// (interpolated within the histogram's buckets)
	p = newPlot("Token request duration (5 s windows)", "ms", s)
	var mean, p50, p99 plotter.XYs
	const win = 5.0
	for i := 0; i < len(sc); {
		j := i + 1
		for j < len(sc) && sc[j].T-sc[i].T < win {
			j++
		}
		if j >= len(sc) {
			break
		}
		a, z := sc[i], sc[j]
		if n := z.DurationCount - a.DurationCount; n > 0 {
			x := (a.T + z.T) / 2
			mean = append(mean, plotter.XY{X: x, Y: (z.DurationSum - a.DurationSum) / n * 1000})
			p50 = append(p50, plotter.XY{X: x, Y: quantile(a.Buckets, z.Buckets, n, 0.5) * 1000})
			p99 = append(p99, plotter.XY{X: x, Y: quantile(a.Buckets, z.Buckets, n, 0.99) * 1000})
		}
		i = j
	}
	top = math.Max(maxY(p99), maxY(mean))
	for _, l := range []struct {
		name string
		xys  plotter.XYs
	}{{"mean", mean}, {"p50 (from buckets)", p50}, {"p99 (from buckets)", p99}} {
		key := l.name[:3]
		if key == "mea" {
			key = "mean"
		}
		if err := addPoints(p, l.name, l.xys, palette[key]); err != nil {
			return err
		}
	}
	p.Y.Min, p.Y.Max = 0, top*1.4
	p.Y.Tick.Marker = stepTicks(top * 1.4)
	markPhases(p, s.Phases, 0, top*1.36)
	if err := save(p, filepath.Join(out, "bench-fleet-token-latency.png")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "charts: 3 PNGs in %s from %d scrapes\n", out, len(sc))
	return nil
}

// stepTicks labels 0..max in 5-8 round steps.
func stepTicks(max float64) plot.ConstantTicks {
	step := math.Pow(10, math.Floor(math.Log10(max/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if max/(step*m) <= 8 {
			step *= m
			break
		}
	}
	var ticks plot.ConstantTicks
	for v := 0.0; v <= max; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: fmt.Sprintf("%g", v)})
	}
	return ticks
}

func newPlot(title, ylabel string, s series) *plot.Plot {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: %s (tokens live %.0f s, every token request delayed %.0f ms)", s.Mount, title, s.TTL, s.DelayMS)
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.X.Label.Text = "seconds since the first scrape"
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(4)
	p.Legend.YOffs = -vg.Points(16) // below the phase labels
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())
	return p
}

func save(p *plot.Plot, file string) error {
	return p.Save(30*vg.Centimeter, 12*vg.Centimeter, file)
}

func maxY(xys plotter.XYs) float64 {
	m := 0.0
	for _, xy := range xys {
		m = math.Max(m, xy.Y)
	}
	return m
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// addPositiveRuns draws xys on a log scale: one line per run of positive values.
func addPositiveRuns(p *plot.Plot, name string, xys plotter.XYs, c color.Color) error {
	var run plotter.XYs
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		var err error
		if len(run) == 1 {
			err = addPoints(p, "", run, c)
		} else {
			var l *plotter.Line
			if l, err = plotter.NewLine(run); err == nil {
				l.Color = c
				l.Width = vg.Points(1)
				p.Add(l)
			}
		}
		run = nil
		return err
	}
	for _, xy := range xys {
		if xy.Y > 0 {
			run = append(run, xy)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	// A legend entry even when the series has no positive value (the line is not drawn).
	l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 1}})
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(2)
	p.Legend.Add(name, l)
	return nil
}

func addPoints(p *plot.Plot, name string, xys plotter.XYs, c color.Color) error {
	if len(xys) == 0 {
		return nil
	}
	sc, err := plotter.NewScatter(xys)
	if err != nil {
		return err
	}
	sc.GlyphStyle.Color = c
	sc.GlyphStyle.Radius = vg.Points(1.8)
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	p.Add(sc)
	if name != "" {
		p.Legend.Add(name, sc)
	}
	return nil
}

// markPhases draws a dashed line where each measured phase starts and ends, labelled.
func markPhases(p *plot.Plot, phases []phase, lo, hi float64) {
	grey := color.Gray{Y: 0x70}
	var xys plotter.XYs
	var labels []string
	seen := map[float64]bool{}
	for _, ph := range phases {
		if ph.Name == "warm-up" {
			continue
		}
		for _, x := range []float64{ph.Start, ph.End} {
			if seen[math.Round(x)] {
				continue
			}
			seen[math.Round(x)] = true
			l, err := plotter.NewLine(plotter.XYs{{X: x, Y: lo}, {X: x, Y: hi}})
			if err != nil {
				continue
			}
			l.Color = grey
			l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
			p.Add(l)
		}
		xys = append(xys, plotter.XY{X: ph.Start, Y: hi})
		labels = append(labels, " "+ph.Name)
	}
	if len(xys) > 0 {
		if lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels}); err == nil {
			for i := range lb.TextStyle {
				lb.TextStyle[i].Color = grey
				lb.TextStyle[i].Font.Size = vg.Points(8)
			}
			p.Add(lb)
		}
	}
}

// quantile estimates the q-quantile of the observations between two cumulative
// histograms a and z (n observations), interpolating linearly within a bucket as
// Prometheus's histogram_quantile does.
func quantile(a, z []histBucket, n, q float64) float64 {
	rank := q * n
	prevLE, prevCount := 0.0, 0.0
	for i, b := range z {
		c := b.Count
		if i < len(a) {
			c -= a[i].Count
		}
		if c >= rank {
			if math.IsInf(b.LE, 1) {
				return prevLE
			}
			if c == prevCount {
				return b.LE
			}
			return prevLE + (b.LE-prevLE)*(rank-prevCount)/(c-prevCount)
		}
		prevLE, prevCount = b.LE, c
	}
	if len(z) == 0 {
		return 0
	}
	return z[len(z)-1].LE // beyond the last finite bucket
}
