//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// documentedAhead lists what docs/api.md documents (as SPEC.md describes the API) that
// the code of this tree does not have yet: "METHOD /path" for an endpoint, "METHOD /path
// field" for a parameter. The comparison is exact otherwise, in both directions; an entry
// that the code has meanwhile gained fails the test, so this list only ever shrinks.
var documentedAhead = []string{}

// awaitingCodeFix lists defects of the mount's OpenAPI document that are known and must be
// fixed in the engine's code (not in this test): "Schema.property: what". The test fails
// for any other defect, and for an entry that is fixed, so this list only ever shrinks.
var awaitingCodeFix = []string{}

// secretFields are request fields whose values are secrets: where the document has them,
// they must be marked sensitive (x-vault-displayAttrs), so that UIs and tools mask them.
var secretFields = []string{"client_secret", "refresh_token", "code"}

// TestOpenAPI checks the mount's OpenAPI document on a real Vault: it validates as
// OpenAPI 3 (kin-openapi), every operation has a unique id and a summary, every response
// a description, secret fields are marked; and docs/api.md documents exactly its paths
// and fields.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	v := startDevVault(t)
	v.enablePlugin(t)

	raw := mountOpenAPI(t, v)
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatalf("loading the mount's OpenAPI document: %v", err)
	}
	api := describeAPI(t, doc)

	t.Run("valid", func(t *testing.T) {
		if !strings.HasPrefix(doc.OpenAPI, "3.") {
			t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
		}
		// Defaults are checked below, one by one, so that a known defect masks no other.
		if err := doc.Validate(context.Background(), openapi3.DisableSchemaDefaultsValidation()); err != nil {
			t.Errorf("the mount's OpenAPI document is not valid OpenAPI 3: %v", err)
		}
		for _, d := range defaultDefects(doc) {
			if slices.Contains(awaitingCodeFix, d) {
				t.Logf("known defect, awaiting a fix in the engine's code: %s", d)
				continue
			}
			t.Errorf("the mount's OpenAPI document: %s", d)
		}
		var fixed []string
		for _, known := range awaitingCodeFix {
			if !slices.Contains(defaultDefects(doc), known) {
				fixed = append(fixed, known)
			}
		}
		if len(fixed) > 0 {
			t.Errorf("awaitingCodeFix lists %q, which is fixed: remove it", fixed)
		}
		if t.Failed() {
			return
		}
		// With every default right, the whole document validates as it stands.
		if len(awaitingCodeFix) == 0 {
			if err := doc.Validate(context.Background()); err != nil {
				t.Errorf("the mount's OpenAPI document is not valid OpenAPI 3: %v", err)
			}
		}
	})

	t.Run("operations", func(t *testing.T) {
		ids := map[string]string{}
		for _, ep := range api.endpoints() {
			op := api.ops[ep]
			switch {
			case op.OperationID == "":
				t.Errorf("%s has no operationId", ep)
			case ids[op.OperationID] != "":
				t.Errorf("%s and %s share the operationId %q", ids[op.OperationID], ep, op.OperationID)
			default:
				ids[op.OperationID] = ep
			}
			if strings.TrimSpace(op.Summary) == "" {
				t.Errorf("%s has no summary", ep)
			}
			if op.Responses == nil || op.Responses.Len() == 0 {
				t.Errorf("%s describes no response", ep)
				continue
			}
			for code, r := range op.Responses.Map() {
				if r.Value == nil || r.Value.Description == nil || strings.TrimSpace(*r.Value.Description) == "" {
					t.Errorf("%s: response %s has no description", ep, code)
				}
			}
		}
	})

	t.Run("secret_fields_marked", func(t *testing.T) {
		found := 0
		for _, ep := range api.endpoints() {
			for _, f := range api.fields[ep] {
				if !slices.Contains(secretFields, f.name) {
					continue
				}
				found++
				if f.query {
					t.Logf("%s: %s is a query parameter, which Vault's OpenAPI cannot mark sensitive", ep, f.name)
					continue
				}
				if !f.sensitive {
					t.Errorf("%s: secret field %s is not marked sensitive", ep, f.name)
				}
			}
		}
		if found == 0 {
			t.Errorf("no secret field (%q) in the document", secretFields)
		}
	})

	t.Run("sys_internal_specs", func(t *testing.T) {
		// Vault's own merged document lists the same paths under the mount.
		code, body, err := v.api("GET", "sys/internal/specs/openapi", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET sys/internal/specs/openapi: %d %v", code, err)
		}
		var all struct {
			Paths map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(body, &all); err != nil {
			t.Fatal(err)
		}
		var got []string
		for p := range all.Paths {
			if strings.HasPrefix(p, "/"+mount+"/") {
				got = append(got, docPath(p))
			}
		}
		sort.Strings(got)
		if want := api.paths(); !slices.Equal(got, want) {
			t.Errorf("sys/internal/specs/openapi lists %q under /%s/, the mount's document %q", got, mount, want)
		}
	})

	t.Run("docs_api_md", func(t *testing.T) {
		checkAPIDocs(t, api, filepath.Join("..", "docs", "api.md"))
	})
}

// mountOpenAPI returns the mount's own OpenAPI document (GET /v1/apaleo/?help=1 answers it
// self-contained, its component schemas included).
func mountOpenAPI(t *testing.T, v *vault) []byte {
	t.Helper()
	code, body, err := v.api("GET", mount+"/?help=1", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s/?help=1: %d %v\n%s", mount, code, err, body)
	}
	var help struct {
		OpenAPI json.RawMessage `json:"openapi"`
	}
	if err := json.Unmarshal(body, &help); err != nil || len(help.OpenAPI) == 0 {
		t.Fatalf("GET %s/?help=1: no openapi document (%v)", mount, err)
	}
	if dir := os.Getenv("E2E_LOG_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "openapi.json"), help.OpenAPI, 0o644)
	}
	return help.OpenAPI
}

// apiModel is the OpenAPI document as docs/api.md shows it: endpoints "METHOD /apaleo/path"
// (":name" for path parameters, LIST for list operations) with their request fields and
// response fields.
type apiModel struct {
	ops      map[string]*openapi3.Operation
	fields   map[string][]apiField // request fields: path, query and body parameters
	response map[string][]string   // response fields
}

type apiField struct {
	name      string
	sensitive bool
	query     bool // a query parameter: Vault's OpenAPI has no display attributes for those
}

func (m *apiModel) endpoints() []string {
	eps := make([]string, 0, len(m.ops))
	for ep := range m.ops {
		eps = append(eps, ep)
	}
	sort.Strings(eps)
	return eps
}

// pathHasField reports whether an endpoint of path takes field.
func (m *apiModel) pathHasField(path, field string) bool {
	for ep, fields := range m.fields {
		if _, p, _ := strings.Cut(ep, " "); p != path {
			continue
		}
		for _, f := range fields {
			if f.name == field {
				return true
			}
		}
	}
	return false
}

func (m *apiModel) paths() []string {
	var ps []string
	for ep := range m.ops {
		_, p, _ := strings.Cut(ep, " ")
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	return ps
}

// docPath turns an OpenAPI path ("/apaleo/config/{name}" or "/config/{name}") into the
// form docs/api.md uses: "/apaleo/config/:name", "/apaleo/config" for "/config/".
func docPath(p string) string {
	if !strings.HasPrefix(p, "/"+mount+"/") {
		p = "/" + mount + p
	}
	return strings.TrimSuffix(regexp.MustCompile(`\{([^}]+)\}`).ReplaceAllString(p, ":$1"), "/")
}

func describeAPI(t *testing.T, doc *openapi3.T) *apiModel {
	t.Helper()
	m := &apiModel{ops: map[string]*openapi3.Operation{}, fields: map[string][]apiField{}, response: map[string][]string{}}
	for p, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			isList := false
			var fields []apiField
			params := append(slices.Clone(item.Parameters), op.Parameters...)
			for _, pr := range params {
				if pr.Value == nil {
					continue
				}
				if pr.Value.In == "query" && pr.Value.Name == "list" {
					isList = true
					continue
				}
				fields = append(fields, apiField{name: pr.Value.Name, sensitive: sensitive(pr.Value.Extensions), query: pr.Value.In == "query"})
			}
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for _, mt := range op.RequestBody.Value.Content {
					if mt.Schema == nil || mt.Schema.Value == nil {
						continue
					}
					for name, s := range mt.Schema.Value.Properties {
						fields = append(fields, apiField{name: name, sensitive: s.Value != nil && sensitive(s.Value.Extensions)})
					}
				}
			}
			var resp []string
			if op.Responses != nil {
				for _, r := range op.Responses.Map() {
					if r.Value == nil {
						continue
					}
					for _, mt := range r.Value.Content {
						if mt.Schema != nil && mt.Schema.Value != nil {
							for name := range mt.Schema.Value.Properties {
								resp = append(resp, name)
							}
						}
					}
				}
			}
			if isList {
				method = "LIST"
				resp = slices.DeleteFunc(resp, func(s string) bool { return s == "keys" }) // StandardListResponse
			}
			ep := method + " " + docPath(p)
			m.ops[ep] = op
			sort.Slice(fields, func(i, j int) bool { return fields[i].name < fields[j].name })
			m.fields[ep] = fields
			sort.Strings(resp)
			m.response[ep] = slices.Compact(resp)
		}
	}
	if len(m.ops) == 0 {
		t.Fatal("the mount's OpenAPI document has no operations")
	}
	return m
}

// defaultDefects lists the component schemas' properties whose default does not match
// their schema, as "Schema.property: what" (kin-openapi's schema defaults validation, one
// property at a time).
func defaultDefects(doc *openapi3.T) []string {
	var out []string
	for name, s := range doc.Components.Schemas {
		if s.Value == nil {
			continue
		}
		for prop, ps := range s.Value.Properties {
			if ps.Value == nil || ps.Value.Default == nil {
				continue
			}
			if err := ps.Value.VisitJSON(ps.Value.Default); err != nil {
				what := "is not valid"
				if ps.Value.Type != nil && len(ps.Value.Type.Slice()) == 1 {
					what = "is not a " + ps.Value.Type.Slice()[0]
				}
				out = append(out, fmt.Sprintf("%s.%s: default %v %s", name, prop, ps.Value.Default, what))
			}
		}
	}
	sort.Strings(out)
	return out
}

func sensitive(ext map[string]any) bool {
	attrs, _ := ext["x-vault-displayAttrs"].(map[string]any)
	s, _ := attrs["sensitive"].(bool)
	return s
}

// apiDoc is what docs/api.md says: per endpoint ("METHOD /apaleo/path", from its
// "| `METHOD` | `/apaleo/path` |" table rows), the parameters of its "### Parameters"
// list ("- `field` `(type: default)` - ...") and its whole section text.
type apiDoc struct {
	params  map[string][]string
	section map[string]string
}

var (
	docEndpointRe = regexp.MustCompile("^\\|\\s*`(GET|POST|LIST|DELETE|PUT|PATCH)`\\s*\\|\\s*`(/[^`]*)`\\s*\\|")
	docParamRe    = regexp.MustCompile("^- `([a-z_]+)` `\\(")
)

// readAPIDoc parses docs/api.md. A "## " heading starts a section; the endpoints of its
// table share the section's parameters.
func readAPIDoc(t *testing.T, path string) apiDoc {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := apiDoc{params: map[string][]string{}, section: map[string]string{}}
	var eps []string
	var text strings.Builder
	inParams := false
	flush := func() {
		for _, ep := range eps {
			d.section[ep] += text.String()
		}
		eps = nil
		text.Reset()
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			flush()
			inParams = false
		}
		text.WriteString(line + "\n")
		if m := docEndpointRe.FindStringSubmatch(line); m != nil {
			ep := m[1] + " " + m[2]
			if _, dup := d.section[ep]; dup || slices.Contains(eps, ep) {
				t.Errorf("docs/api.md documents %s twice", ep)
			}
			d.section[ep] = ""
			eps = append(eps, ep)
			continue
		}
		if strings.HasPrefix(line, "### ") {
			inParams = strings.TrimSpace(strings.TrimPrefix(line, "### ")) == "Parameters"
			continue
		}
		if m := docParamRe.FindStringSubmatch(line); m != nil && inParams {
			for _, ep := range eps {
				d.params[ep] = append(d.params[ep], m[1])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
	return d
}

// checkAPIDocs compares docs/api.md with the document: the same endpoints, each with the
// same request fields, and each response field named in the endpoint's section; except
// for documentedAhead.
func checkAPIDocs(t *testing.T, api *apiModel, path string) {
	d := readAPIDoc(t, path)
	ahead := map[string]bool{}
	for _, a := range documentedAhead {
		ahead[a] = true
	}
	stillAhead := map[string]bool{}
	for ep := range d.section {
		if _, ok := api.ops[ep]; !ok {
			if ahead[ep] {
				stillAhead[ep] = true
				continue
			}
			t.Errorf("docs/api.md documents %s, which the mount does not have", ep)
		}
	}
	for _, ep := range api.endpoints() {
		docParams := d.params[ep]
		if _, documented := d.section[ep]; !documented {
			t.Errorf("docs/api.md does not document %s (%q)", ep, api.ops[ep].Summary)
			continue
		}
		var codeParams []string
		for _, f := range api.fields[ep] {
			codeParams = append(codeParams, f.name)
			if !slices.Contains(docParams, f.name) {
				t.Errorf("docs/api.md: %s does not list the parameter %s", ep, f.name)
			}
		}
		for _, p := range docParams {
			if slices.Contains(codeParams, p) {
				continue
			}
			if key := ep + " " + p; ahead[key] {
				stillAhead[key] = true
				continue
			}
			t.Errorf("docs/api.md: %s lists the parameter %s, which the mount does not have", ep, p)
		}
		for _, r := range api.response[ep] {
			if !strings.Contains(d.section[ep], `"`+r+`"`) {
				t.Errorf("docs/api.md: the section of %s does not show the response field %q", ep, r)
			}
		}
	}
	// The parameters of endpoints that are documented ahead as a whole.
	var aheadEndpoints []string
	for ep := range stillAhead {
		aheadEndpoints = append(aheadEndpoints, ep)
	}
	for _, ep := range aheadEndpoints {
		_, path, _ := strings.Cut(ep, " ")
		for _, p := range d.params[ep] {
			if key := ep + " " + p; ahead[key] {
				stillAhead[key] = true
			} else if !api.pathHasField(path, p) { // e.g. the path's own :name
				t.Errorf("docs/api.md: %s lists %s, which is in neither the mount nor documentedAhead", ep, p)
			}
		}
	}
	for _, a := range documentedAhead {
		if !stillAhead[a] {
			t.Errorf("documentedAhead lists %q, which the code now has (or docs/api.md no longer documents): remove it from documentedAhead", a)
		}
	}
	if t.Failed() {
		t.Logf("the mount's endpoints: %s", fmt.Sprint(api.endpoints()))
	}
}
