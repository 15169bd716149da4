//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `make demo` and `make demo-stop` as a new user would: in a fresh clone of
// this repository, with an empty HOME, nothing built but Vault (handed in prebuilt with
// VAULT_BIN, so the test does not build Vault for minutes). Vault's port is chosen free
// (DEMO_VAULT_PORT), so the demo cannot collide with other tests' servers.
func TestDemo(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	clone := filepath.Join(dir, "clone")
	if out, err := exec.Command("git", "clone", "-q", root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	// An empty HOME, but Go's module and build caches as they are: a cold cache would
	// only measure the network.
	env := baseEnv(home)
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		env = append(env, k+"="+strings.TrimSpace(string(out)))
	}
	port := freePortPair(t)
	env = append(env, fmt.Sprintf("DEMO_VAULT_PORT=%d", port))

	runMake := func(t *testing.T, timeout time.Duration, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", append(args, "VAULT_BIN="+bins.vault)...)
		cmd.Dir = clone
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		t.Logf("make %s: %.1fs", strings.Join(args, " "), time.Since(start).Seconds())
		if err != nil {
			t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	demoDir := filepath.Join(clone, ".demo")
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd := exec.Command("make", "demo-stop", "VAULT_BIN="+bins.vault)
			cmd.Dir, cmd.Env = clone, env
			_ = cmd.Run()
		}
		if t.Failed() {
			for _, f := range []string{"vault.log", "identity.log"} {
				t.Logf("--- last lines of .demo/%s:\n%s", f, tail(filepath.Join(demoDir, f), 30))
			}
		}
	})

	out := runMake(t, 10*time.Minute, "demo")
	for _, want := range []string{"access_token", "The demo is running", fmt.Sprintf("VAULT_ADDR=http://127.0.0.1:%d", port)} {
		if !strings.Contains(out, want) {
			t.Errorf("make demo printed no %q:\n%s", want, out)
		}
	}
	vaultPID, idpPID := readPID(t, filepath.Join(demoDir, "vault.pid")), readPID(t, filepath.Join(demoDir, "identity.pid"))
	for what, pid := range map[string]int{"vault": vaultPID, "the dev identity server": idpPID} {
		if !running(pid) {
			t.Errorf("%s (pid %d) does not run after make demo", what, pid)
		}
	}

	// The demo's Vault answers a token, as the printed instructions say.
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	read := exec.CommandContext(ctx, bins.vault, "read", "-field=config", "apaleo/creds/hotel-muc")
	read.Env = append(baseEnv(home), fmt.Sprintf("VAULT_ADDR=http://127.0.0.1:%d", port), "VAULT_TOKEN=root")
	if b, err := read.CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "hotel-muc" {
		t.Errorf("vault read apaleo/creds/hotel-muc from the demo: %v\n%s", err, b)
	}

	out = runMake(t, time.Minute, "demo-stop")
	stopped = true
	if !strings.Contains(out, "stopped vault") || !strings.Contains(out, "stopped the dev identity server") {
		t.Errorf("make demo-stop printed:\n%s", out)
	}
	for what, pid := range map[string]int{"vault": vaultPID, "the dev identity server": idpPID} {
		if running(pid) {
			t.Errorf("%s (pid %d) still runs after make demo-stop", what, pid)
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after make demo-stop", port)
	}
}

// freePortPair returns a port that is free together with the next one (a Vault dev
// server's cluster port).
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		p := freePort(t)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no two adjacent free ports")
	return 0
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// running reports whether pid runs; a zombie (exited, not yet reaped by its new parent)
// does not count.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		_, noProc := os.Stat("/proc/self/stat")
		return noProc != nil // without /proc, kill -0 is all there is
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}
