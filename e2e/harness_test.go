//go:build e2e

// Package e2e drives the plugin end to end: a real Vault server and CLI (build/vault),
// the plugin binary registered in Vault's plugin catalog, and the dev identity server
// standing in for identity.apaleo.com. Run it with `make test-e2e`, or
// `go test -tags e2e ./e2e/` after `make build dev-identity vault`.
//
// Environment:
//
//	VAULT_BIN_PATH  the vault binary (default ../build/vault)
//	E2E_LOG_DIR     keep every process log under this directory (default: a temp dir,
//	                removed after the test; the tail of each log is printed on failure)
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	pluginName    = "vault-plugin-secrets-apaleo"
	pluginVersion = "v0.1.0"
	mount         = "apaleo"
	rootToken     = "root"
	module        = "github.com/apaleo-vault/vault-plugin-secrets-apaleo"

	cliTimeout = 60 * time.Second
)

// bins are the absolute paths of the binaries under test, found (or built) by TestMain.
var bins struct {
	vault, plugin, identity string
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		tmp, err := os.MkdirTemp("", "apaleo-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if err := findBinaries(tmp); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		return m.Run()
	}())
}

// findBinaries locates vault (VAULT_BIN_PATH or ../build/vault), the plugin and the dev
// identity server (../bin/, as `make build dev-identity` leaves them, else built into tmp).
func findBinaries(tmp string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	bins.vault = os.Getenv("VAULT_BIN_PATH")
	if bins.vault == "" {
		bins.vault = filepath.Join(root, "build", "vault")
	}
	if _, err := os.Stat(bins.vault); err != nil {
		return fmt.Errorf("no vault binary at %s (run `make vault`, or set VAULT_BIN_PATH): %w", bins.vault, err)
	}
	build := func(name, pkg string, ldflags string) (string, error) {
		if p := filepath.Join(root, "bin", name); fileExists(p) {
			return p, nil
		}
		out := filepath.Join(tmp, name)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return out, nil
	}
	if bins.plugin, err = build(pluginName, "./cmd/"+pluginName, "-X "+module+".Version="+pluginVersion); err != nil {
		return err
	}
	if bins.identity, err = build("apaleo-dev-identity", "./cmd/apaleo-dev-identity", ""); err != nil {
		return err
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

var logDirs sync.Map // *testing.T -> string

// logDir is where a test's process logs go, one directory per test: E2E_LOG_DIR/<test>
// when set, else a temp dir removed after the test.
func logDir(t *testing.T) string {
	t.Helper()
	if d, ok := logDirs.Load(t); ok {
		return d.(string)
	}
	var dir string
	if base := os.Getenv("E2E_LOG_DIR"); base != "" {
		dir = filepath.Join(base, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		dir = t.TempDir()
	}
	logDirs.Store(t, dir)
	t.Cleanup(func() { logDirs.Delete(t) })
	return dir
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// baseEnv is the test's environment without VAULT_* variables, with HOME replaced.
func baseEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

// ---------------------------------------------------------------------------------------
// processes

// proc is a long-running child process whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set when done is closed

	killGroup sync.Once
}

// startProc starts bin with args in its own process group; t.Cleanup stops it.
func startProc(t *testing.T, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	return startProcOwned(t, t, name, logPath, env, bin, args...)
}

// startProcOwned is startProc for a process that outlives the (sub)test t starting it:
// owner's cleanup stops it.
func startProcOwned(t, owner *testing.T, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	owner.Cleanup(func() {
		p.stop(owner)
		if owner.Failed() {
			owner.Logf("--- last lines of %s log (%s):\n%s", name, logPath, tail(logPath, 40))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to 15 s, then kills the process group. Idempotent.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Logf("%s did not stop within 15s after SIGTERM; killing it", p.name)
		}
	}
	<-p.done
	// Whatever is left in its process group (plugin processes of a killed Vault), once:
	// later the group id may be reused.
	p.killGroup.Do(func() { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) })
}

// kill sends SIGKILL to the process's whole group (Vault and its plugin processes, as
// a crashed machine would lose them) and waits for it to exit.
func (p *proc) kill() {
	p.killGroup.Do(func() { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) })
	<-p.done
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every interval until it returns true, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout, interval time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		time.Sleep(interval)
	}
}

// ---------------------------------------------------------------------------------------
// dev identity server

type identity struct {
	URL    string
	CAFile string
	Log    string
	http   *http.Client
	proc   *proc
}

// idpStats mirrors the dev identity server's GET /_admin/stats.
type idpStats struct {
	TokenRequests  int            `json:"token_requests"`
	ByGrant        map[string]int `json:"by_grant"`
	Issued         int            `json:"issued"`
	Errors         map[string]int `json:"errors"`
	Revocations    int            `json:"revocations"`
	Authorizations int            `json:"authorizations"`
	RequestTimes   []int64        `json:"request_times_ms"` // when each token request arrived
}

// startIdentity runs the dev identity server over TLS with the admin API, tokens valid
// for tokenTTL, and the given -client specs.
func startIdentity(t *testing.T, name string, tokenTTL time.Duration, clients ...string) *identity {
	t.Helper()
	dir := filepath.Join(logDir(t), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(dir, "url")
	args := []string{"-addr", "127.0.0.1:0", "-admin", "-tls-dir", dir, "-url-file", urlFile, "-token-ttl", tokenTTL.String()}
	for _, c := range clients {
		args = append(args, "-client", c)
	}
	logPath := filepath.Join(dir, "identity.log")
	p := startProc(t, name, logPath, baseEnv(dir), bins.identity, args...)
	var u string
	waitFor(t, name+" to listen", 15*time.Second, 20*time.Millisecond, func() (bool, error) {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", name, p.err, tail(logPath, 20))
		}
		b, err := os.ReadFile(urlFile)
		u = strings.TrimSpace(string(b))
		return err == nil && u != "", err
	})
	caFile := filepath.Join(dir, "ca.pem")
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate in %s", name, caFile)
	}
	return &identity{
		URL:    u,
		CAFile: caFile,
		Log:    logPath,
		proc:   p,
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		},
	}
}

func (i *identity) stats(t *testing.T) idpStats {
	t.Helper()
	var s idpStats
	i.admin(t, "stats", &s)
	return s
}

// admin decodes GET /_admin/<what> of the identity server into v.
func (i *identity) admin(t *testing.T, what string, v any) {
	t.Helper()
	resp, err := i.http.Get(i.URL + "/_admin/" + what)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("identity %s: status %d, %v", what, resp.StatusCode, err)
	}
}

// browser is an HTTP client for the authorize flow: it trusts the identity server's CA,
// keeps cookies and records every URL it is redirected to.
type browser struct {
	*http.Client
	visited []*url.URL
}

func (i *identity) browser(t *testing.T, follow bool) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{}
	b.Client = &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: i.http.Transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			b.visited = append(b.visited, req.URL)
			if !follow {
				return http.ErrUseLastResponse
			}
			if len(via) > 10 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
	return b
}

// ---------------------------------------------------------------------------------------
// Vault

type vault struct {
	Addr      string
	Token     string
	dir       string
	home      string
	pluginDir string
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
	v := newVaultDirs(t, name)
	v.transcript = tr
	port := freePort(t)
	v.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	v.Token = rootToken
	cfg := writeFile(t, filepath.Join(v.dir, "config.hcl"), fmt.Sprintf("plugin_directory = %q\ndisable_mlock = true\n", v.pluginDir))
	v.args = []string{"server", "-dev", "-dev-root-token-id=" + rootToken, "-dev-no-store-token",
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port), "-config=" + cfg, "-log-level=" + logLevel}
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
	cfg := writeFile(t, filepath.Join(v.dir, "config.hcl"), fmt.Sprintf(`
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
	v.args = []string{"server", "-config=" + cfg}
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

func (v *vault) apiAs(token, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	v.transcript.add(method+" /v1/"+path, fmt.Sprintf("%d %s\n%s", resp.StatusCode, headerText(resp.Header), b))
	return resp.StatusCode, b, err
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
// apaleo/ pinned to that version.
func (v *vault) enablePlugin(t *testing.T) {
	t.Helper()
	v.must(t, "plugin", "register", "-sha256="+sha256File(t, filepath.Join(v.pluginDir, pluginName)),
		"-version="+pluginVersion, "secret", pluginName)
	v.must(t, "secrets", "enable", "-path="+mount, "-plugin-version="+pluginVersion, pluginName)
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

// ---------------------------------------------------------------------------------------
// flows

// appConfig is what writeConfig writes to config/<name>.
type appConfig struct {
	name, clientID, secret string
	idp                    *identity
	grant, redirect        string
	scopes                 string
	minTTL                 string
}

// writeConfig writes config/<name>.
func (v *vault) writeConfig(t *testing.T, c appConfig) {
	t.Helper()
	args := []string{"config/" + c.name, "client_id=" + c.clientID, "client_secret=" + c.secret,
		"identity_url=" + c.idp.URL, "ca_certificate=@" + c.idp.CAFile}
	if c.grant != "" {
		args = append(args, "grant_type="+c.grant)
	}
	if c.redirect != "" {
		args = append(args, "redirect_uri="+c.redirect)
	}
	if c.scopes != "" {
		args = append(args, "scopes="+c.scopes)
	}
	if c.minTTL != "" {
		args = append(args, "min_ttl="+c.minTTL)
	}
	v.must(t, append([]string{"write", mount + "/" + args[0]}, args[1:]...)...)
}

// authorize starts authorize/<name> and checks the auth_url it returns.
func (v *vault) authorize(t *testing.T, name, config string, extra ...string) (authURL *url.URL, state string) {
	t.Helper()
	s := v.write(t, mount+"/authorize/"+name, append([]string{"config=" + config}, extra...)...)
	u, err := url.Parse(s.str("auth_url"))
	if err != nil || s.str("auth_url") == "" {
		t.Fatalf("authorize/%s: auth_url %q: %v (data %v)", name, s.str("auth_url"), err, s.Data)
	}
	state = s.str("state")
	q := u.Query()
	for k, want := range map[string]string{"response_type": "code", "state": state, "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Errorf("auth_url %s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"client_id", "redirect_uri", "scope", "code_challenge"} {
		if q.Get(k) == "" {
			t.Errorf("auth_url has no %s: %s", k, u)
		}
	}
	if !strings.HasSuffix(u.Path, "/connect/authorize") {
		t.Errorf("auth_url path %q, want .../connect/authorize", u.Path)
	}
	if state == "" {
		t.Errorf("authorize/%s returned no state", name)
	}
	if exp, err := time.Parse(time.RFC3339, s.str("expires_at")); err != nil || time.Until(exp) < 9*time.Minute || time.Until(exp) > 11*time.Minute {
		t.Errorf("authorize/%s expires_at %q, want about 10 minutes from now (%v)", name, s.str("expires_at"), err)
	}
	return u, state
}

// redirectFromIdentity opens authURL at the identity server without following its
// redirect, and returns the Location it redirects to.
func redirectFromIdentity(t *testing.T, idp *identity, authURL *url.URL) *url.URL {
	t.Helper()
	b := idp.browser(t, false)
	resp, err := b.Get(authURL.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 3 {
		t.Fatalf("GET auth_url: status %d, want a redirect; body: %s", resp.StatusCode, body)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// htmlPage is what Vault's callback answered.
type htmlPage struct {
	status      int
	contentType string
	body        string
}

func getPage(t *testing.T, c *http.Client, u string) htmlPage {
	t.Helper()
	p, _ := getPageHeader(t, c, u)
	return p
}

// getPageHeader GETs u with c and returns the page and its response headers.
func getPageHeader(t *testing.T, c *http.Client, u string) (htmlPage, http.Header) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return htmlPage{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: string(body)}, resp.Header
}

// jwtClaims decodes (without verifying) the claims of a JWT.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWT: %d parts", len(parts))
	}
	raw, err := base64URLDecode(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func base64URLDecode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// ---------------------------------------------------------------------------------------
// secrets in logs

// secretWatch collects values that must never appear in clear in a log.
type secretWatch struct {
	mu     sync.Mutex
	values map[string]watched
}

type watched struct {
	what      string
	inURIOkay bool // may appear in audit request_uri fields (see requestURIRe)
}

func (w *secretWatch) add(what, value string) { w.put(value, watched{what: what}) }

// addCallbackCode watches a code that apaleo redirected to Vault's callback.
func (w *secretWatch) addCallbackCode(what, value string) {
	w.put(value, watched{what: what, inURIOkay: true})
}

func (w *secretWatch) put(value string, v watched) {
	if value == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.values == nil {
		w.values = map[string]watched{}
	}
	w.values[value] = v
}

// requestURIRe matches the request_uri field of Vault's audit entries: Vault logs the
// raw HTTP request URI, query included, without HMAC. For the unauthenticated callback
// that is apaleo's redirect, ?code=...&state=..., which the plugin cannot hide: the
// code is single-use, already redeemed and bound to a PKCE verifier only Vault held.
var requestURIRe = regexp.MustCompile(`"request_uri":"(?:[^"\\]|\\.)*"`)

// secretHit is one line (of a file or a transcript entry) where a watched value shows.
type secretHit struct {
	what  string // the watched value's description
	where string // file base name, or the transcript entry
	line  int
	// exempt: a callback code inside an audit entry's request_uri only (see requestURIRe).
	exempt bool
}

func (h secretHit) String() string {
	return fmt.Sprintf("%s appears in clear in %s, line %d", h.what, h.where, h.line)
}

// scan looks for every watched value in the files and in the transcript entries.
func (w *secretWatch) scan(t *testing.T, entries []transcriptEntry, files ...string) []secretHit {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.values) == 0 {
		t.Fatal("no secrets to look for")
	}
	var hits []secretHit
	lines := func(where string, sc *bufio.Scanner, audit bool) {
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		n := 0
		for sc.Scan() {
			n++
			raw := sc.Text()
			text := raw
			if audit {
				text = requestURIRe.ReplaceAllString(raw, `"request_uri":""`)
			}
			for v, wv := range w.values {
				if !strings.Contains(raw, v) {
					continue
				}
				exempt := audit && wv.inURIOkay && !strings.Contains(text, v)
				hits = append(hits, secretHit{what: wv.what, where: where, line: n, exempt: exempt})
			}
		}
		if err := sc.Err(); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Error(err)
			continue
		}
		lines(filepath.Base(f), bufio.NewScanner(fh), true)
		fh.Close()
	}
	for i, e := range entries {
		lines(fmt.Sprintf("response %d (%s)", i+1, e.what), bufio.NewScanner(strings.NewReader(e.text)), false)
	}
	return hits
}

// check fails the test for each watched value found in one of the files (callback codes:
// outside audit request_uri fields, see requestURIRe).
func (w *secretWatch) check(t *testing.T, files ...string) {
	t.Helper()
	for _, h := range w.scan(t, nil, files...) {
		if !h.exempt {
			t.Error(h)
		}
	}
}

var secretRe = regexp.MustCompile(`[^A-Za-z0-9]`)

// randomSecret returns a distinctive client secret that is easy to find in a log.
func randomSecret(t *testing.T, label string) string {
	t.Helper()
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "sec-" + secretRe.ReplaceAllString(label, "") + "-" + hex.EncodeToString(b[:])
}

// exchangeFlow authorizes credential name with config (whose redirect_uri is an app
// of the operator's own): it opens auth_url at the identity server, takes code and
// state from the redirect and redeems them at exchange. It returns the code.
func exchangeFlow(t *testing.T, v *vault, idp *identity, name, config string) (code string) {
	t.Helper()
	authURL, state := v.authorize(t, name, config)
	loc := redirectFromIdentity(t, idp, authURL)
	code = loc.Query().Get("code")
	if loc.Query().Get("state") != state || code == "" {
		t.Fatalf("redirect %s: want state %s and a code", loc, state)
	}
	x := v.write(t, mount+"/exchange", "state="+state, "code="+code)
	if x.str("name") != name {
		t.Fatalf("exchange for %s returned %v", name, x.Data)
	}
	return code
}
