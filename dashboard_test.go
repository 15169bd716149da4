package apaleo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// dashboard_test.go: the Grafana dashboard shipped in docs/ queries only metrics the
// plugin serves, in valid PromQL.

// dashboardQueries returns every PromQL expression of a Grafana dashboard: panel targets
// (rows' nested panels too) and templating queries, each with where it was found.
func dashboardQueries(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	type target struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want a current one (39)", d.SchemaVersion)
	}
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				out[tg.Expr] = fmt.Sprintf("panel %q", p.Title)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		var s string
		if err := json.Unmarshal(v.Query, &s); err != nil {
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			s = q.Query
		}
		out[s] = "variable " + v.Name
	}
	return out
}

// promMetricNames finds the metric names a PromQL expression (or a Grafana
// label_values(...) query) selects: identifiers that are not functions, keywords, label
// names or parts of strings, ranges or Grafana variables.
func promMetricNames(expr string) []string {
	if m := labelValuesRe.FindStringSubmatch(expr); m != nil {
		// label_values(selector, label) or label_values(label): only a selector names metrics.
		expr = ""
		if i := strings.LastIndex(m[1], ","); i >= 0 {
			expr = m[1][:i]
		}
	}
	expr = promStringRe.ReplaceAllString(expr, `""`)
	expr = promMatcherRe.ReplaceAllString(expr, " ")
	expr = promRangeRe.ReplaceAllString(expr, " ")
	expr = promGroupingRe.ReplaceAllString(expr, " ")
	expr = promVariableRe.ReplaceAllString(expr, " ")
	var names []string
	for _, m := range promIdentRe.FindAllStringSubmatch(expr, -1) {
		if m[1] != "" { // a function call
			continue
		}
		if name := m[0]; !slices.Contains(promKeywords, name) && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func TestPromMetricNames(t *testing.T) {
	cases := map[string][]string{
		`sum by (config, outcome) (rate(vault_apaleo_token_requests_total{config=~"$config", outcome!="success"}[$__rate_interval]))`:             {"vault_apaleo_token_requests_total"},
		`histogram_quantile(0.99, sum by (le, config) (rate(vault_apaleo_token_request_duration_seconds_bucket{config=~"${config:regex}"}[5m])))`: {"vault_apaleo_token_request_duration_seconds_bucket"},
		`sum(rate(a_sum[5m])) / sum(rate(a_count[5m])) > bool 0`:                                                                                  {"a_count", "a_sum"},
		`max by (config, state) (vault_apaleo_credentials) or on (config) vault_apaleo_nope`:                                                      {"vault_apaleo_credentials", "vault_apaleo_nope"},
		`label_values(vault_apaleo_credentials, config)`:                                                                                          {"vault_apaleo_credentials"},
		`label_values(vault_apaleo_creds_reads_total{result="error"},config)`:                                                                     {"vault_apaleo_creds_reads_total"},
		`label_values(config)`: nil,
		`up`:                   {"up"},
	}
	for expr, want := range cases {
		if got := promMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("promMetricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// servedMetricNames are the series names a scrape can hold: the families written, each
// with a sample, histograms as their _bucket, _sum and _count.
func servedMetricNames(t *testing.T) []string {
	t.Helper()
	m := newMetrics()
	m.tokenRequest("c", "client_credentials", triggerRead, nil, time.Millisecond)
	m.credsRead("c", readCached)
	m.outageBegan("c")
	m.outageHeld("c")
	m.credentialStates(func() map[string]*stateCounts { return countsOf(map[string]map[string]int{"c": {"ok": 1}}) }, nil)
	var body bytes.Buffer
	if err := m.writeText(&body); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(&body)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range families {
		if len(mf.GetMetric()) == 0 {
			t.Errorf("%s has no sample", mf.GetName())
		}
		if mf.GetType().String() == "HISTOGRAM" {
			names = append(names, mf.GetName()+"_bucket", mf.GetName()+"_sum", mf.GetName()+"_count")
		} else {
			names = append(names, mf.GetName())
		}
	}
	slices.Sort(names)
	if len(families) != 6 {
		t.Errorf("%d metric families, want 6: %v", len(families), names)
	}
	return names
}

// TestGrafanaDashboard: every metric the shipped dashboard queries is one the plugin
// serves, and it queries each of them.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	served := servedMetricNames(t)
	used := map[string]bool{}
	queries := dashboardQueries(t, raw)
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	for expr, where := range queries {
		names := promMetricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !slices.Contains(served, n) {
				t.Errorf("%s queries %s, which the plugin does not serve (it serves %v): %s", where, n, served, expr)
			}
		}
	}
	for _, n := range served {
		if !used[n] {
			t.Errorf("the dashboard never queries %s", n)
		}
	}
	if !bytes.Contains(raw, []byte(`"${datasource}"`)) {
		t.Error("panels should use the ${datasource} variable")
	}
}
