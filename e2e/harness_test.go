//go:build e2e

// Package e2e drives the plugin end to end: a real Vault server and CLI (build/vault),
// the plugin binary registered in Vault's plugin catalog, and the dev identity server
// standing in for identity.apaleo.com. Run it with `make test-e2e`, or
// `go test -tags e2e ./e2e/` after `make build dev-identity vault`. The server may be
// any Vault-compatible binary: OpenBao's bao runs the same tests (see serverFlavour).
//
// The harness, by concern: harness_test.go (TestMain, the binaries, log directories,
// ports), proc_test.go (child processes), identity_test.go (the dev identity server),
// vault_test.go (Vault servers, CLI and API), flows_test.go (config, authorize, exchange)
// and secretwatch_test.go (secrets that must never show in a log). Every other file is
// the tests of one feature.
//
// Environment:
//
//	VAULT_BIN         the server and CLI binary (default ../build/vault): Vault's vault or
//	                  OpenBao's bao, told apart by its `version` output
//	E2E_LOG_DIR       keep every process log under this directory (default: a temp dir,
//	                  removed after the test; the tail of each log is printed on failure)
//	E2E_SKIP_BROWSER  1: skip the browser test (TestBrowser_AdminConnectsHotel) where no
//	                  Chromium is installed; without it a missing browser fails the test
package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	pluginName = "vault-plugin-secrets-apaleo"
	mount      = "apaleo"
	rootToken  = "root"
	module     = "github.com/apaleo-vault/vault-plugin-secrets-apaleo"

	cliTimeout = 60 * time.Second
)

// bins are the absolute paths of the binaries under test, found (or built) by TestMain.
var bins struct {
	vault, plugin, identity string
}

// serverFlavour says which server bins.vault is. The tests drive both the same way
// except where OpenBao refuses what Vault allows (see vault.enableFileAudit).
type serverFlavour string

const (
	flavourVault   serverFlavour = "Vault"
	flavourOpenBao serverFlavour = "OpenBao"
)

// server is what `bins.vault version` said, read once by TestMain.
var server struct {
	flavour serverFlavour
	version string // the whole first line, "Vault v1.21.1 (...)" or "OpenBao v2.6.2 (...)"
}

// pluginVersion is the version bins.plugin reports, under which the tests register it:
// what `make build` wrote to build/plugin-version for bin/, else e2eVersion.
var pluginVersion string

// e2eVersion is what a plugin the tests build themselves reports.
const e2eVersion = "v0.0.0-dev+e2e"

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

// findBinaries locates vault (VAULT_BIN or ../build/vault), the plugin and the dev
// identity server (../bin/, as `make build dev-identity` leaves them, else built into tmp).
func findBinaries(tmp string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	bins.vault = os.Getenv("VAULT_BIN")
	if bins.vault == "" {
		bins.vault = filepath.Join(root, "build", "vault")
	}
	if _, err := os.Stat(bins.vault); err != nil {
		return fmt.Errorf("no vault binary at %s (run `make vault`, or set VAULT_BIN): %w", bins.vault, err)
	}
	if err := detectServer(); err != nil {
		return err
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
	pluginVersion = e2eVersion
	if fileExists(filepath.Join(root, "bin", pluginName)) {
		b, err := os.ReadFile(filepath.Join(root, "build", "plugin-version"))
		if err != nil {
			return fmt.Errorf("bin/%s has no build/plugin-version beside it to say its version (run `make build`): %w", pluginName, err)
		}
		pluginVersion = strings.TrimSpace(string(b))
	}
	if bins.plugin, err = build(pluginName, "./cmd/"+pluginName, "-X "+module+".Version="+pluginVersion); err != nil {
		return err
	}
	if bins.identity, err = build("apaleo-dev-identity", "./cmd/apaleo-dev-identity", ""); err != nil {
		return err
	}
	return nil
}

// detectServer runs `bins.vault version` and sets server from its first line, which
// each server starts with its own name. An unknown server is an error rather than a
// guess: its differences would show as failures far from the cause.
func detectServer() error {
	out, err := exec.Command(bins.vault, "version").Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", bins.vault, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	server.version = line
	switch {
	case strings.HasPrefix(line, "Vault "):
		server.flavour = flavourVault
	case strings.HasPrefix(line, "OpenBao "):
		server.flavour = flavourOpenBao
	default:
		return fmt.Errorf("%s version says %q: neither Vault nor OpenBao", bins.vault, line)
	}
	fmt.Fprintf(os.Stderr, "e2e: server %s (%s)\n", line, bins.vault)
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

// baseEnv is the test's environment without VAULT_* and BAO_* variables, with HOME
// replaced. OpenBao reads VAULT_ADDR and the like when the BAO_ name is unset, so the
// VAULT_* variables the tests set reach either server; a BAO_ADDR of the caller's
// would win over them.
func baseEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "BAO_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}
