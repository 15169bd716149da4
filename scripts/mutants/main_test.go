package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseList(t *testing.T) {
	ms, err := parseList("# a comment\n\nmutant one\nfile: a.go\nrule: r1\n-\tx := 1\n+\tx := 2\n\nmutant two\nfile: b.go\nrule: r2\n-a\n-b\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d mutants, want 2", len(ms))
	}
	if m := ms[0]; m.name != "one" || m.file != "a.go" || m.rule != "r1" || m.find != "\tx := 1" || m.replace != "\tx := 2" {
		t.Errorf("first mutant: %+v", m)
	}
	if m := ms[1]; m.find != "a\nb" || m.replace != "" || m.line != 9 {
		t.Errorf("second mutant (a deletion): %+v", m)
	}
	for _, bad := range []string{
		"",
		"mutant one\nrule: r\n-a\n+b\n",         // no file
		"mutant one\nfile: a.go\n-a\n+b\n",      // no rule
		"mutant one\nfile: a.go\nrule: r\n+b\n", // no snippet
		"mutant one\nfile: a.go\nrule: r\n-a\n+a\n",                                    // changes nothing
		"mutant one\nfile: a.go\nrule: r\n+b\n-a\n",                                    // + before -
		"mutant one\nfile: a.go\nrule: r\n-a\n\nmutant one\nfile: b.go\nrule: r\n-b\n", // twice
		"stray text\n",
	} {
		if _, err := parseList(bad); err == nil {
			t.Errorf("parseList(%q) took it", bad)
		}
	}
}

func TestApply(t *testing.T) {
	m := mutant{name: "m", file: "a.go", find: "a := 1", replace: "a := 2"}
	got, err := m.apply([]byte("x\na := 1\ny\n"))
	if err != nil || string(got) != "x\na := 2\ny\n" {
		t.Errorf("apply: %q, %v", got, err)
	}
	if _, err := m.apply([]byte("x\n")); err == nil || !strings.Contains(err.Error(), "not there any more") {
		t.Errorf("a missing snippet: %v", err)
	}
	if _, err := m.apply([]byte("a := 1\na := 1\n")); err == nil || !strings.Contains(err.Error(), "occurs 2 times") {
		t.Errorf("a snippet twice: %v", err)
	}
}

// The mutant list of the repository reads, and each mutant names a file that exists.
// Whether its snippet still occurs is make mutants' check (go run ./scripts/mutants -check).
func TestRepositoryList(t *testing.T) {
	text, err := os.ReadFile("mutants.txt")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := parseList(string(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 20 {
		t.Errorf("%d mutants, want at least 20", len(ms))
	}
	for _, m := range ms {
		if _, err := os.Stat(filepath.Join("..", "..", m.file)); err != nil {
			t.Errorf("mutant %s: %v", m.name, err)
		}
	}
}

func TestFirstFailure(t *testing.T) {
	out := `--- FAIL: TestSim (1.80s)
    --- FAIL: TestSim/1 (1.76s)
        sim_test.go:355: seed 1 broke the engine's invariants (replay: go test -run 'TestSim$' -seed=1 -v):
            Jan 1 12:19:33.186 app app1: a token request (refresh_token) 5.987s after a 429
            Jan 1 12:19:38.756 app app1: another
FAIL
`
	if got, want := firstFailure(out, nil), "TestSim/1: app app1: a token request (refresh_token) 5.987s after a 429"; got != want {
		t.Errorf("firstFailure = %q, want %q", got, want)
	}
	panicked := "some output\npanic: deadlock: main bubble goroutine has exited but blocked goroutines remain\n\ngoroutine 1 [running]:\n"
	if got := firstFailure(panicked, nil); !strings.HasPrefix(got, "panic: deadlock") {
		t.Errorf("firstFailure of a panic = %q", got)
	}
	if got := firstCompileError("# pkg\n./token.go:12:3: undefined: foo\n", nil); got != "./token.go:12:3: undefined: foo" {
		t.Errorf("firstCompileError = %q", got)
	}
}

// TestRun runs the tool on a module of its own: one mutant its test catches, one it
// misses, one that does not compile and one whose snippet is gone; the worktree stays as
// it was.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a test binary")
	}
	root := t.TempDir()
	files := map[string]string{
		"go.mod":    "module example.com/m\n\ngo 1.22\n",
		"m.go":      "package m\n\nfunc Add(a, b int) int { return a + b }\n\nfunc Unused() int { return 1 }\n",
		"m_test.go": "package m\n\nimport \"testing\"\n\nfunc TestSim(t *testing.T) {\n\tif Add(2, 3) != 5 {\n\t\tt.Fatalf(\"Add(2, 3) = %d\", Add(2, 3))\n\t}\n}\n",
		"list.txt": "mutant add-minus\nfile: m.go\nrule: Add adds\n-return a + b\n+return a - b\n\n" +
			"mutant unused-two\nfile: m.go\nrule: Unused is 1\n-return 1 }\n+return 2 }\n\n" +
			"mutant broken\nfile: m.go\nrule: compiles\n-return a + b\n+return a +\n\n" +
			"mutant gone\nfile: m.go\nrule: stale\n-func Sub\n+func Sub2\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := exec.Command("git", "init", "-q")
	git.Dir = root
	if out, err := git.CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, out)
	}
	var out bytes.Buffer
	err := run(options{list: "list.txt", root: root, workers: 2, simN: 1, simFirst: 1, timeout: time.Minute,
		simArgs: []string{"-test.run", "^TestSim$"}}, &out)
	t.Log(out.String())
	if err == nil || !strings.Contains(err.Error(), "broken does not compile") || !strings.Contains(err.Error(), "gone stale") {
		t.Errorf("run's error = %v, want it to name the mutant that does not compile and the stale one", err)
	}
	for _, want := range []string{
		fmt.Sprintf("%-34s %s", "add-minus", "caught"),
		fmt.Sprintf("%-34s %s", "unused-two", "missed"),
		fmt.Sprintf("%-34s %s", "broken", "does not compile"),
		"STALE gone: m.go: the snippet of mutant gone (list line 19) is not there any more",
		"4 mutants: the simulator alone caught 1, missed 1; 1 did not compile, 1 no longer apply",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(root, "m.go")); string(got) != files["m.go"] {
		t.Errorf("m.go was changed in the worktree:\n%s", got)
	}
}
