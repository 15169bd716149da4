//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/vaultapi"
)

// vault_test.go: Vault servers (dev and Raft), the CLI and the HTTP API, run as a token,
// and the plugin registered and enabled.

type vault struct {
	Addr      string
	Token     string
	dir       string
	home      string
	pluginDir string
	config    string // the server's config file
	args      []string
	log       string
	raft      bool
	unsealKey string
	proc      *proc
	t         *testing.T

	// transcript, when set, records every CLI output and API response body.
	transcript *transcript
}

// transcript collects every response a test got from Vault, to be scanned for secrets.
type transcript struct {
	mu      sync.Mutex
	entries []transcriptEntry
}

type transcriptEntry struct{ what, text string }

func (tr *transcript) add(what, text string) {
	if tr == nil || text == "" {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.entries = append(tr.entries, transcriptEntry{what, text})
}

func (tr *transcript) all() []transcriptEntry {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.entries)
}

// newVaultDirs lays out a Vault's directories: its HOME, and a plugin directory holding
// a copy of the plugin binary (Vault refuses symlinks in plugin_directory).
func newVaultDirs(t *testing.T, name string) *vault {
	t.Helper()
	dir := filepath.Join(logDir(t), name)
	v := &vault{dir: dir, home: filepath.Join(dir, "home"), pluginDir: filepath.Join(dir, "plugins"), log: filepath.Join(dir, "vault.log"), t: t}
	for _, d := range []string{v.home, v.pluginDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, bins.plugin, filepath.Join(v.pluginDir, pluginName), 0o755)
	return v
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startDevVault starts `vault server -dev` on a free port with root token "root", the
// plugin directory set by a config file, and debug logging.
func startDevVault(t *testing.T) *vault {
	t.Helper()
	return startDevVaultWith(t, "vault-dev", "debug", nil)
}

// startDevVaultWith is startDevVault with a log level ("trace", "debug", ...) and, if
// tr is set, a transcript of every response (set before the first request).
func startDevVaultWith(t *testing.T, name, logLevel string, tr *transcript) *vault {
	t.Helper()
	return startDevVaultHCL(t, name, logLevel, "", tr)
}

// startDevVaultHCL is startDevVaultWith with more lines for the server's config file.
func startDevVaultHCL(t *testing.T, name, logLevel, moreHCL string, tr *transcript) *vault {
	t.Helper()
	v := newVaultDirs(t, name)
	v.transcript = tr
	port := freePort(t)
	v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	v.Token = rootToken
	v.config = writeFile(t, filepath.Join(v.dir, "config.hcl"), fmt.Sprintf("plugin_directory = %q\ndisable_mlock = true\n", v.pluginDir)+moreHCL)
	v.args = []string{"server", "-dev", "-dev-root-token-id=" + rootToken, "-dev-no-store-token",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-config=" + v.config, "-log-level=" + logLevel}
	v.start(t)
	v.waitHealth(t, http.StatusOK)
	return v
}

// startRaftVault starts a one-node Vault with integrated storage (raft), initialises it
// with one key share and unseals it.
func startRaftVault(t *testing.T) *vault {
	t.Helper()
	v := newVaultDirs(t, "vault-raft")
	v.raft = true
	v.configureRaft(t, "node1", freePort(t), freePort(t), 1)
	v.start(t)
	v.waitHealth(t, http.StatusNotImplemented) // not initialised
	v.initRaft(t)
	v.unseal(t)
	return v
}

// configureRaft writes the configuration of a Vault node with integrated storage
// (raft) listening on 127.0.0.1:port (cluster port cport) and sets v.Addr and v.args.
// perfMultiplier scales raft's timeouts: 1 s heartbeat and election timeouts and a
// 500 ms leader lease per unit (Vault's default is 5).
func (v *vault) configureRaft(t *testing.T, nodeID string, port, cport, perfMultiplier int) {
	t.Helper()
	v.raft = true
	v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	data := filepath.Join(v.dir, "raft")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	v.config = writeFile(t, filepath.Join(v.dir, "config.hcl"), fmt.Sprintf(`
storage "raft" {
  path                   = %q
  node_id                = %q
  performance_multiplier = %d
  # autopilot promotes joined nodes to voters within seconds, not 10-20 s
  autopilot_update_interval    = "500ms"
  autopilot_reconcile_interval = "1s"
}
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr         = %q
cluster_addr     = "https://127.0.0.1:%d"
plugin_directory = %q
disable_mlock    = true
log_level        = "debug"
`, data, nodeID, perfMultiplier, port, cport, v.Addr, cport, v.pluginDir))
	v.args = []string{"server", "-config=" + v.config}
}

// initRaft initialises a raft node with one key share and keeps its unseal key and
// root token.
func (v *vault) initRaft(t *testing.T) {
	t.Helper()
	var init struct {
		Keys      []string `json:"unseal_keys_b64"`
		RootToken string   `json:"root_token"`
	}
	v.jsonOut(t, &init, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	if len(init.Keys) != 1 || init.RootToken == "" {
		t.Fatalf("operator init: %+v", init)
	}
	v.unsealKey, v.Token = init.Keys[0], init.RootToken
}

// start starts the server process; the test that created v stops it at its end.
func (v *vault) start(t *testing.T) {
	t.Helper()
	v.proc = startProcOwned(t, v.t, "vault", v.log, baseEnv(v.home), bins.vault, v.args...)
}

func (v *vault) unseal(t *testing.T) {
	t.Helper()
	v.must(t, "operator", "unseal", v.unsealKey)
	v.waitHealth(t, http.StatusOK)
}

// restart stops Vault gracefully and starts it again with the same configuration;
// a raft server is unsealed again.
func (v *vault) restart(t *testing.T) {
	t.Helper()
	v.proc.stop(t)
	if v.proc.err != nil {
		t.Logf("vault exited with %v", v.proc.err)
	}
	v.start(t)
	if v.raft {
		v.waitHealth(t, http.StatusServiceUnavailable) // sealed
		v.unseal(t)
	} else {
		v.waitHealth(t, http.StatusOK)
	}
}

// waitHealth waits until GET /v1/sys/health answers want: 200 active, 501 not
// initialised, 503 sealed.
func (v *vault) waitHealth(t *testing.T, want int) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	waitFor(t, fmt.Sprintf("vault health %d", want), 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		if v.proc.exited() {
			t.Fatalf("vault exited: %v\n%s", v.proc.err, tail(v.log, 30))
		}
		resp, err := c.Get(v.Addr + "/v1/sys/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == want, fmt.Errorf("status %d", resp.StatusCode)
	})
}

// cliResult is one run of the vault CLI.
type cliResult struct {
	Stdout, Stderr string
	Err            error
}

func (r cliResult) String() string {
	return fmt.Sprintf("err=%v\nstdout: %s\nstderr: %s", r.Err, r.Stdout, r.Stderr)
}

// runAs runs the vault CLI against this server with the given token (none if empty).
// An argument "-" takes stdin.
func (v *vault) runAs(token, stdin string, args ...string) cliResult {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.vault, args...)
	cmd.Env = append(baseEnv(v.home), "VAULT_ADDR="+v.Addr, "VAULT_FORMAT=table")
	if token != "" {
		cmd.Env = append(cmd.Env, "VAULT_TOKEN="+token)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	what := cliLabel(args)
	v.transcript.add(what+" (stdout)", out.String())
	v.transcript.add(what+" (stderr)", errb.String())
	return cliResult{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// cliLabel names a CLI run by its first two words, without flags or key=value
// arguments (which may be secret): "vault write apaleo/exchange".
func cliLabel(args []string) string {
	label, words := "vault", 0
	for _, a := range args {
		if strings.Contains(a, "=") || strings.HasPrefix(a, "-") {
			continue
		}
		label += " " + a
		if words++; words == 2 {
			break
		}
	}
	return label
}

// apiClient does not follow redirects, so that a standby's 307 to the active node shows
// (the vault CLI follows them; a standby that forwards answers itself).
var apiClient = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// api calls Vault's HTTP API as root: method, path below /v1/, and a JSON body (nil
// for none). It returns the status and body; the body goes to the transcript.
func (v *vault) api(method, path string, body any) (int, []byte, error) {
	return v.apiAs(v.Token, method, path, body)
}

// apiAs is api as token (none if empty), through the shared client of internal/vaultapi.
func (v *vault) apiAs(token, method, path string, body any) (int, []byte, error) {
	return v.apiVia(apiClient, token, method, path, body)
}

// apiVia is apiAs over the HTTP client hc (one with a longer timeout, say).
func (v *vault) apiVia(hc *http.Client, token, method, path string, body any) (int, []byte, error) {
	c := vaultapi.Client{Addr: v.Addr, HTTP: hc}
	r, err := c.Send(token, method, path, body)
	if r.Header != nil {
		v.transcript.add(method+" /v1/"+path, fmt.Sprintf("%d %s\n%s", r.Status, headerText(r.Header), r.Body))
	}
	return r.Status, r.Body, err
}

// headerText is h as text, one "Key: value" a line, sorted.
func headerText(h http.Header) string {
	var lines []string
	for k, vs := range h {
		for _, v := range vs {
			lines = append(lines, k+": "+v)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (v *vault) run(args ...string) cliResult { return v.runAs(v.Token, "", args...) }

// must runs the CLI as root and fails the test unless it succeeds; returns stdout.
func (v *vault) must(t *testing.T, args ...string) string {
	t.Helper()
	r := v.run(args...)
	if r.Err != nil {
		t.Fatalf("vault %s: %s", strings.Join(redactArgs(args), " "), r)
	}
	return r.Stdout
}

// mustFail runs the CLI as root, expects it to fail and returns stderr.
func (v *vault) mustFail(t *testing.T, args ...string) string {
	t.Helper()
	r := v.run(args...)
	if r.Err == nil {
		t.Fatalf("vault %s succeeded, want an error; stdout:\n%s", strings.Join(redactArgs(args), " "), r.Stdout)
	}
	return r.Stderr
}

// jsonOut runs the CLI as root (add -format=json yourself) and decodes stdout.
func (v *vault) jsonOut(t *testing.T, out any, args ...string) {
	t.Helper()
	s := v.must(t, args...)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("vault %s: decoding %q: %v", strings.Join(redactArgs(args), " "), s, err)
	}
}

// redactArgs hides values of client_secret=... in failure messages.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if strings.HasPrefix(a, "client_secret=") {
			out[i] = "client_secret=<redacted>"
		}
	}
	return out
}

// vaultSecret is the JSON form of `vault read/write -format=json`.
type vaultSecret struct {
	RequestID     string         `json:"request_id"`
	LeaseID       string         `json:"lease_id"`
	LeaseDuration int            `json:"lease_duration"`
	Renewable     bool           `json:"renewable"`
	Data          map[string]any `json:"data"`
	Warnings      []string       `json:"warnings"`
	Auth          *struct {
		ClientToken string `json:"client_token"`
	} `json:"auth"`
}

func (s vaultSecret) str(key string) string {
	v, _ := s.Data[key].(string)
	return v
}

func (s vaultSecret) list(key string) []string {
	raw, _ := s.Data[key].([]any)
	var out []string
	for _, x := range raw {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// read runs `vault read -format=json path` as root.
func (v *vault) read(t *testing.T, path string) vaultSecret {
	t.Helper()
	var s vaultSecret
	v.jsonOut(t, &s, "read", "-format=json", path)
	return s
}

// write runs `vault write -format=json path kv...` as root.
func (v *vault) write(t *testing.T, path string, kv ...string) vaultSecret {
	t.Helper()
	var s vaultSecret
	out := v.must(t, append([]string{"write", "-format=json", path}, kv...)...)
	if strings.TrimSpace(out) == "" {
		return s
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("vault write %s: decoding %q: %v", path, out, err)
	}
	return s
}

// list runs `vault list -format=json path` as root.
func (v *vault) list(t *testing.T, path string) []string {
	t.Helper()
	var keys []string
	v.jsonOut(t, &keys, "list", "-format=json", path)
	return keys
}

// enablePlugin registers the plugin binary with its sha256 and version and mounts it at
// apaleo/ pinned to that version. env (K=V) is the plugin process's environment, passed
// with `vault plugin register -env`; bao's register command has no -env flag, so against
// OpenBao a plugin with an environment is registered through the catalog API, which
// takes the same "env" field.
func (v *vault) enablePlugin(t *testing.T, env ...string) {
	t.Helper()
	sum := sha256File(t, filepath.Join(v.pluginDir, pluginName))
	if len(env) > 0 && server.flavour == flavourOpenBao {
		status, body, err := v.api(http.MethodPut, "sys/plugins/catalog/secret/"+pluginName,
			map[string]any{"sha256": sum, "version": pluginVersion, "command": pluginName, "env": env})
		if err != nil || status != http.StatusNoContent {
			t.Fatalf("register %s with env: %d %s %v", pluginName, status, body, err)
		}
	} else {
		args := []string{"plugin", "register", "-sha256=" + sum, "-version=" + pluginVersion}
		for _, kv := range env {
			args = append(args, "-env="+kv)
		}
		v.must(t, append(args, "secret", pluginName)...)
	}
	v.must(t, "secrets", "enable", "-path="+mount, "-plugin-version="+pluginVersion, pluginName)
}

// reloadPlugin restarts the plugin's processes on every mount of it, by plugin name.
// Vault 1.21 wants the plugin type with the name; bao's reload command has no -type flag
// (a name is unique across types there).
func (v *vault) reloadPlugin(t *testing.T) {
	t.Helper()
	if server.flavour == flavourOpenBao {
		v.must(t, "plugin", "reload", "-plugin="+pluginName)
		return
	}
	v.must(t, "plugin", "reload", "-type=secret", "-plugin="+pluginName)
}

// enableFileAudit enables a file audit device at file/ writing to path, as
// `vault audit enable file` does. OpenBao 2.x refuses audit devices created through the
// API; it takes them from an audit stanza of the server's config file, read at start and
// on SIGHUP. So against OpenBao the stanza goes into v.config (where a restart finds it
// again, as Vault finds an API-made device in its storage) and the server is reloaded;
// either way this returns once sys/audit lists the device.
func (v *vault) enableFileAudit(t *testing.T, path string) {
	t.Helper()
	if server.flavour != flavourOpenBao {
		v.must(t, "audit", "enable", "file", "file_path="+path)
		return
	}
	f, err := os.OpenFile(v.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "\naudit \"file\" \"file\" {\n  options {\n    file_path = %q\n  }\n}\n", path)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := v.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file audit device from "+v.config, 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		status, body, err := v.api(http.MethodGet, "sys/audit", nil)
		if err != nil || status != http.StatusOK {
			return false, fmt.Errorf("sys/audit: %d %s %v", status, body, err)
		}
		var devices struct {
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(body, &devices); err != nil {
			return false, err
		}
		_, ok := devices.Data["file/"]
		return ok, fmt.Errorf("sys/audit lists no file/: %s", body)
	})
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// agent is a running `vault agent` with one template per secret path, each rendering
// that secret's access_token to a file of its own.
type agent struct {
	*proc
	files map[string]string // secret path -> rendered file
}

// startAgent runs `vault agent` against v, authenticated with a token whose policy
// (named name) reads only paths, one template per path.
func startAgent(t *testing.T, v *vault, name string, paths ...string) *agent {
	t.Helper()
	dir := filepath.Join(v.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var policy, templates strings.Builder
	a := &agent{files: map[string]string{}}
	for i, p := range paths {
		fmt.Fprintf(&policy, "path %q { capabilities = [\"read\"] }\n", p)
		a.files[p] = filepath.Join(dir, fmt.Sprintf("rendered-%d", i))
		fmt.Fprintf(&templates, "template {\n  contents    = %q\n  destination = %q\n}\n",
			`{{ with secret "`+p+`" }}{{ .Data.access_token }}{{ end }}`, a.files[p])
	}
	v.must(t, "policy", "write", name, writeFile(t, filepath.Join(dir, "policy.hcl"), policy.String()))
	var tok vaultSecret
	v.jsonOut(t, &tok, "token", "create", "-format=json", "-policy="+name, "-ttl=1h")
	tokenFile := writeFile(t, filepath.Join(dir, "token"), tok.Auth.ClientToken)
	cfg := writeFile(t, filepath.Join(dir, "agent.hcl"), fmt.Sprintf(`
vault {
  address = %q
}
auto_auth {
  method "token_file" {
    config = {
      token_file_path = %q
    }
  }
}
%s`, v.Addr, tokenFile, templates.String()))
	a.proc = startProc(t, name, filepath.Join(dir, "agent.log"), baseEnv(v.home), bins.vault, "agent", "-config="+cfg, "-log-level=debug")
	return a
}

// rendered is what the template of path last rendered ("" before the first render).
func (a *agent) rendered(path string) string {
	b, _ := os.ReadFile(a.files[path])
	return strings.TrimSpace(string(b))
}

// auditCall is one request as Vault's file audit device logged it: when its request
// entry and its response entry were written.
type auditCall struct {
	Path, Operation string
	Start           time.Time
	Took            time.Duration
}

// auditCalls reads a file audit log and pairs each request entry with the response
// entry of the same request id, in the order the requests were logged. Requests with no
// response entry (yet) are left out.
func auditCalls(t *testing.T, path string) []auditCall {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type entry struct {
		Time    time.Time `json:"time"`
		Type    string    `json:"type"`
		Request struct {
			ID        string `json:"id"`
			Operation string `json:"operation"`
			Path      string `json:"path"`
		} `json:"request"`
	}
	var calls []auditCall
	started := map[string]int{} // request id -> index in calls
	dec := json.NewDecoder(f)
	for {
		var e entry
		if err := dec.Decode(&e); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) { // a line being written
				t.Fatalf("audit log %s: %v", path, err)
			}
			break
		}
		switch e.Type {
		case "request":
			started[e.Request.ID] = len(calls)
			calls = append(calls, auditCall{Path: e.Request.Path, Operation: e.Request.Operation, Start: e.Time, Took: -1})
		case "response":
			if i, ok := started[e.Request.ID]; ok {
				calls[i].Took = e.Time.Sub(calls[i].Start)
			}
		}
	}
	return slices.DeleteFunc(calls, func(c auditCall) bool { return c.Took < 0 })
}
