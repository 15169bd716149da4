// Package promtext reads the Prometheus text exposition as a scraper does and flattens
// it into samples: how the tests and the benchmarks look at the plugin's metrics.
package promtext

import (
	"bytes"
	"fmt"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series: a counter's or gauge's value, or a histogram's _bucket (with its
// "le" label), _sum or _count.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Parse parses body, the text exposition format.
func Parse(body []byte) ([]Sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var out []Sample
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				out = append(out, Sample{name, labels, m.GetCounter().GetValue()})
			case m.GetGauge() != nil:
				out = append(out, Sample{name, labels, m.GetGauge().GetValue()})
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				out = append(out, Sample{name + "_count", labels, float64(h.GetSampleCount())},
					Sample{name + "_sum", labels, h.GetSampleSum()})
				for _, b := range h.GetBucket() {
					bl := map[string]string{"le": fmt.Sprint(b.GetUpperBound())}
					for k, v := range labels {
						bl[k] = v
					}
					out = append(out, Sample{name + "_bucket", bl, float64(b.GetCumulativeCount())})
				}
			}
		}
	}
	return out, nil
}
