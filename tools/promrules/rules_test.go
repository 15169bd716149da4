package promrules

import (
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	promql "github.com/prometheus/prometheus/promql/parser"
)

// The rules file and the plugin's source, from this module's directory.
const (
	rulesFile = "../../docs/prometheus-alerts.yml"
	pluginDir = "../.."
)

// awaitingMetrics are metrics a rule uses that the plugin does not serve yet (another
// branch adds them). The test fails for any other unknown name, and for an entry the
// plugin has meanwhile gained, so this list only ever shrinks.
var awaitingMetrics = []string{"vault_apaleo_upstream_outages_total", "vault_apaleo_token_requests_held_total"}

// prometheusOwn are series Prometheus writes itself for every scrape.
var prometheusOwn = []string{"up"}

// labelPrefixes name, per label a rule may match on, the prefix of the plugin's
// constants that hold its values (metrics.go, creds_status.go, config.go).
var labelPrefixes = map[string]string{
	"outcome":    "outcome",
	"trigger":    "trigger",
	"result":     "read",
	"state":      "state",
	"grant_type": "grant",
}

// TestAlertRules: the shipped rules file is valid for Prometheus (its own parser, the
// one `promtool check rules` runs, PromQL and templates included), and every metric and
// label value its rules name is one the plugin's source defines.
func TestAlertRules(t *testing.T) {
	p := promql.NewParser(promql.Options{})
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", rulesFile, err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	src := readPlugin(t)
	if len(src.metrics) < 4 {
		t.Fatalf("found %d metric names in the plugin's source, want at least 4: %v", len(src.metrics), src.metrics)
	}
	used := map[string]bool{}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule %q; the file holds alerts only", g.Name, r.Record)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: wants a severity label, a summary and a description", r.Alert)
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
				continue
			}
			for _, vs := range selectors(expr) {
				used[checkSelector(t, r.Alert, vs, src)] = true
			}
		}
	}
	if n == 0 {
		t.Fatal("the rules file holds no rules")
	}
	for _, a := range awaitingMetrics {
		if src.serves(a) {
			t.Errorf("awaitingMetrics lists %s, which the plugin now serves: remove it from the list", a)
		} else if !used[a] {
			t.Errorf("awaitingMetrics lists %s, which no rule uses: remove it from the list", a)
		}
	}
}

// checkSelector checks one vector selector of rule's expression and returns its metric.
func checkSelector(t *testing.T, rule string, vs *promql.VectorSelector, src pluginSource) string {
	t.Helper()
	name := vs.Name
	switch {
	case name == "":
		t.Errorf("%s: a selector without a metric name: %s", rule, vs)
	case slices.Contains(prometheusOwn, name):
		return name
	case slices.Contains(awaitingMetrics, name):
	case !src.serves(name):
		t.Errorf("%s: %s is no metric of the plugin's (it serves %v)", rule, name, src.metrics)
	}
	for _, m := range vs.LabelMatchers {
		prefix, ok := labelPrefixes[m.Name]
		if !ok {
			continue
		}
		for _, v := range matcherValues(m) {
			if !slices.Contains(src.values[prefix], v) {
				t.Errorf("%s: %s=%q is no value of label %s in the plugin's source (%v)", rule, m.Name, v, m.Name, src.values[prefix])
			}
		}
	}
	return name
}

// selectors are the vector selectors of expr.
func selectors(expr promql.Expr) []*promql.VectorSelector {
	var out []*promql.VectorSelector
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		if vs, ok := n.(*promql.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// matcherValues are the label values a matcher names: its value, or a regexp's
// alternatives (a|b|c). A negative or open-ended regexp names none to check.
func matcherValues(m *labels.Matcher) []string {
	switch m.Type {
	case labels.MatchEqual:
		return []string{m.Value}
	case labels.MatchRegexp:
		if strings.ContainsAny(m.Value, `.*+?()[]{}\^$`) {
			return nil
		}
		return strings.Split(m.Value, "|")
	}
	return nil
}

// pluginSource is what the plugin's Go source defines: metric names and label values.
type pluginSource struct {
	metrics    []string            // full names, vault_apaleo_...; histograms' too
	histograms []string            // names whose _bucket, _sum and _count series exist
	values     map[string][]string // constant prefix -> the values of its constants
}

func (s pluginSource) serves(name string) bool {
	if slices.Contains(s.metrics, name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(s.histograms, base) {
			return true
		}
	}
	return false
}

// readPlugin parses the plugin package (the non-test .go files at the repository's root)
// and evaluates its string constants: metric names are the constants that begin with
// vault_apaleo_ and the client_golang Opts literals (Namespace, Subsystem, Name).
func readPlugin(t *testing.T) pluginSource {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(pluginDir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, af)
	}
	consts := constants(parsed)
	src := pluginSource{values: map[string][]string{}}
	for name, v := range consts {
		if strings.HasPrefix(v, "vault_apaleo_") {
			src.metrics = append(src.metrics, v)
		}
		for _, prefix := range labelPrefixes {
			if rest, ok := strings.CutPrefix(name, prefix); ok && rest != "" && rest[0] >= 'A' && rest[0] <= 'Z' {
				src.values[prefix] = append(src.values[prefix], v)
			}
		}
	}
	for _, f := range parsed {
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			var parts []string
			hist := sel.Sel.Name == "HistogramOpts"
			for _, field := range []string{"Namespace", "Subsystem", "Name"} {
				if v := fieldValue(lit, field, consts); v != "" {
					parts = append(parts, v)
				}
			}
			if full := strings.Join(parts, "_"); strings.HasPrefix(full, "vault_apaleo_") {
				src.metrics = append(src.metrics, full)
				if hist {
					src.histograms = append(src.histograms, full)
				}
			}
			return true
		})
	}
	slices.Sort(src.metrics)
	for _, vs := range src.values {
		slices.Sort(vs)
	}
	return src
}

// constants evaluates the package's string constants: literals and + of literals and
// other constants.
func constants(files []*ast.File) map[string]string {
	exprs := map[string]ast.Expr{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						exprs[n.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	out := map[string]string{}
	var eval func(e ast.Expr, depth int) (string, bool)
	eval = func(e ast.Expr, depth int) (string, bool) {
		if depth > 20 {
			return "", false
		}
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		case *ast.Ident:
			if x, ok := exprs[e.Name]; ok {
				return eval(x, depth+1)
			}
		case *ast.ParenExpr:
			return eval(e.X, depth+1)
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				a, ok1 := eval(e.X, depth+1)
				b, ok2 := eval(e.Y, depth+1)
				return a + b, ok1 && ok2
			}
		}
		return "", false
	}
	for name, e := range exprs {
		if v, ok := eval(e, 0); ok {
			out[name] = v
		}
	}
	return out
}

// fieldValue is the string value of field in a composite literal, where it is a
// constant expression.
func fieldValue(lit *ast.CompositeLit, field string, consts map[string]string) string {
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		if k, ok := kv.Key.(*ast.Ident); !ok || k.Name != field {
			continue
		}
		switch v := kv.Value.(type) {
		case *ast.BasicLit:
			s, _ := strconv.Unquote(v.Value)
			return s
		case *ast.Ident:
			return consts[v.Name]
		}
	}
	return ""
}

// The test reads files outside this module: fail clearly where they are missing.
func TestMain(m *testing.M) {
	if _, err := os.Stat(rulesFile); err != nil {
		println("tools/promrules: run from tools/promrules in a checkout of the plugin:", err.Error())
		os.Exit(1)
	}
	os.Exit(m.Run())
}
