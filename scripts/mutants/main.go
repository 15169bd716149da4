// Command mutants plants the bugs of mutants.txt in the engine, one at a time, and says
// which of them the simulator catches alone (make mutants; README.md beside this file).
//
//	go run ./scripts/mutants                   every mutant, the simulator's short run
//	go run ./scripts/mutants -unit             and the unit tests for the ones it missed
//	go run ./scripts/mutants -run 'budget'     the mutants whose name matches
//	go run ./scripts/mutants -check            only check that every mutant still applies
//
// Each mutant is a snippet of one file that must occur there exactly once and its
// replacement, so the list survives unrelated edits and says so when it no longer fits.
// The module is copied to a scratch directory per worker; the worktree is never changed.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.list, "list", "scripts/mutants/mutants.txt", "the mutant list, relative to the module root")
	flag.StringVar(&o.run, "run", "", "only the mutants whose name matches this regular expression")
	flag.IntVar(&o.workers, "j", 2, "mutants tested side by side, each in its own scratch copy")
	flag.IntVar(&o.simN, "sim.n", 300, "simulator schedules per mutant (make sim-short's count)")
	flag.Uint64Var(&o.simFirst, "sim.first", 1, "the first seed (1 also runs the seeds that once failed)")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Minute, "the longest one test run may take")
	flag.BoolVar(&o.unit, "unit", false, "run the unit tests (all but TestSim*) on the mutants the simulator missed")
	flag.BoolVar(&o.check, "check", false, "only check that every mutant applies and compiles nothing")
	flag.BoolVar(&o.failMissed, "fail-missed", false, "exit 1 when the simulator misses a mutant")
	flag.BoolVar(&o.markdown, "md", false, "print the table as Markdown")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		os.Exit(1)
	}
}

type options struct {
	list, run         string
	workers, simN     int
	simFirst          uint64
	timeout           time.Duration
	unit, check       bool
	failMissed        bool
	markdown          bool
	root              string // the module root; found from the working directory when empty
	simArgs, unitArgs []string
	buildCmd          []string // the compile step (tests replace it)
}

func run(o options, out io.Writer) error {
	if o.root == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		o.root = root
	}
	text, err := os.ReadFile(filepath.Join(o.root, o.list))
	if err != nil {
		return err
	}
	all, err := parseList(string(text))
	if err != nil {
		return fmt.Errorf("%s: %w", o.list, err)
	}
	sel, err := selectMutants(all, o.run)
	if err != nil {
		return err
	}
	// A mutant whose snippet no longer occurs exactly once is the list's failure: said
	// first, the rest still run, and the run fails.
	var stale []result
	var live []mutant
	for _, m := range sel {
		src, err := os.ReadFile(filepath.Join(o.root, m.file))
		if err == nil {
			_, err = m.apply(src)
		}
		if err != nil {
			stale = append(stale, result{m: m, outcome: outcomeStale, line: err.Error()})
			continue
		}
		live = append(live, m)
	}
	for _, r := range stale {
		fmt.Fprintf(out, "STALE %s: %s\n", r.m.name, r.line)
	}
	if o.check {
		fmt.Fprintf(out, "%d of %d mutants apply\n", len(live), len(sel))
		if len(stale) > 0 {
			return fmt.Errorf("%d mutants no longer apply: update %s", len(stale), o.list)
		}
		return nil
	}
	results, err := testAll(o, live, out)
	if err != nil {
		return err
	}
	results = append(results, stale...)
	printTable(out, results, o)
	return verdict(results, o)
}

// verdict fails the run where the list is not true to the code, and on a miss where asked.
func verdict(results []result, o options) error {
	var problems []string
	for _, r := range results {
		switch {
		case r.outcome == outcomeStale || r.outcome == outcomeNoCompile:
			problems = append(problems, r.m.name+" "+r.outcome)
		case r.outcome == outcomeMissed && o.failMissed:
			problems = append(problems, r.m.name+" "+r.outcome)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s (%s)", strings.Join(problems, ", "), o.list)
	}
	return nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

func selectMutants(all []mutant, pattern string) ([]mutant, error) {
	if pattern == "" {
		return all, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	var sel []mutant
	for _, m := range all {
		if re.MatchString(m.name) {
			sel = append(sel, m)
		}
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("-run %q matches no mutant", pattern)
	}
	return sel, nil
}

// Outcomes of one mutant.
const (
	outcomeCaught    = "caught"
	outcomeMissed    = "missed"
	outcomeNoCompile = "does not compile"
	outcomeStale     = "stale"
)

type result struct {
	m       mutant
	outcome string
	line    string        // the failing output's first line (a compile error, the first violation)
	took    time.Duration // the simulator's run
	unit    string        // with -unit, for a missed one: what the unit tests said
}

// testAll sets up a scratch copy per worker, checks that the simulator passes on the
// unmutated code there, and tests the mutants.
func testAll(o options, ms []mutant, out io.Writer) ([]result, error) {
	workers := max(1, min(o.workers, len(ms)))
	scratch := make([]string, workers)
	for i := range scratch {
		dir, err := os.MkdirTemp("", "mutants-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := copyModule(o.root, dir); err != nil {
			return nil, err
		}
		scratch[i] = dir
	}
	o = withDefaults(o)
	fmt.Fprintf(out, "baseline: the simulator on the unmutated code (%d schedules from seed %d)\n", o.simN, o.simFirst)
	if line, err := buildTests(o, scratch[0]); err != nil {
		return nil, fmt.Errorf("the unmutated code does not compile: %s", line)
	}
	start := time.Now()
	if failed, line := runTests(o, scratch[0], o.simArgs); failed {
		return nil, fmt.Errorf("the simulator fails on the unmutated code, so no mutant can be judged: %s", line)
	}
	fmt.Fprintf(out, "baseline passed in %s; %d mutants, %d at a time\n", time.Since(start).Round(time.Second), len(ms), workers)

	results := make([]result, len(ms))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				r := testOne(o, scratch[w], ms[i])
				mu.Lock()
				results[i] = r
				fmt.Fprintf(out, "%-34s %-16s %6s  %s\n", r.m.name, r.outcome, r.took.Round(time.Second), r.line)
				mu.Unlock()
			}
		})
	}
	for i := range ms {
		next <- i
	}
	close(next)
	wg.Wait()
	return results, nil
}

func withDefaults(o options) options {
	if o.simArgs == nil {
		o.simArgs = []string{"-test.run", "^TestSim$", "-test.count=1", fmt.Sprintf("-sim.n=%d", o.simN),
			fmt.Sprintf("-sim.first=%d", o.simFirst), "-sim.maxfail=1"}
	}
	if o.unitArgs == nil {
		o.unitArgs = []string{"-test.skip", "^TestSim", "-test.count=1", "-test.failfast"}
	}
	if o.buildCmd == nil {
		o.buildCmd = []string{"go", "test", "-c", "-o", "mutant.test", "."}
	}
	return o
}

// testOne plants m in the scratch copy dir, tests it, and puts the file back.
func testOne(o options, dir string, m mutant) result {
	r := result{m: m}
	path := filepath.Join(dir, m.file)
	orig, err := os.ReadFile(path)
	if err != nil {
		r.outcome, r.line = outcomeStale, err.Error()
		return r
	}
	defer os.WriteFile(path, orig, 0o644)
	mutated, err := m.apply(orig)
	if err == nil {
		err = os.WriteFile(path, mutated, 0o644)
	}
	if err != nil {
		r.outcome, r.line = outcomeStale, err.Error()
		return r
	}
	if line, err := buildTests(o, dir); err != nil {
		r.outcome, r.line = outcomeNoCompile, line
		return r
	}
	start := time.Now()
	failed, line := runTests(o, dir, o.simArgs)
	r.took = time.Since(start)
	if failed {
		r.outcome, r.line = outcomeCaught, line
		return r
	}
	r.outcome = outcomeMissed
	if o.unit {
		if failed, line := runTests(o, dir, o.unitArgs); failed {
			r.unit = "caught: " + line
		} else {
			r.unit = "missed"
		}
		r.line = "unit tests " + r.unit
	}
	return r
}

// buildTests compiles the package's tests in dir into mutant.test.
func buildTests(o options, dir string) (string, error) {
	cmd := exec.Command(o.buildCmd[0], o.buildCmd[1:]...)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return firstCompileError(buf.String(), err), err
	}
	return "", nil
}

// runTests runs the compiled tests in dir with args; failed is any failure, a time-out
// and a panic included.
func runTests(o options, dir string, args []string) (failed bool, line string) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "mutant.test"), append([]string{"-test.timeout=" + o.timeout.String()}, args...)...)
	cmd.Dir = dir
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return true, firstFailure(buf.String(), err)
	}
	return false, ""
}

var (
	failRE      = regexp.MustCompile(`^--- FAIL: (\S+)`)
	testLineRE  = regexp.MustCompile(`^\s+\S+_test\.go:\d+: (.*)$`)
	timestampRE = regexp.MustCompile(`^[A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d\.\d{3} `)
	compileRE   = regexp.MustCompile(`^\S+\.go:\d+:\d+: `)
)

// firstFailure is the failing output's first line: the innermost failing test (the last
// --- FAIL line above the message) and its first message (for the simulator's
// invariants, the first violation), else a panic.
func firstFailure(output string, err error) string {
	lines := strings.Split(output, "\n")
	test := ""
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if m := failRE.FindStringSubmatch(trimmed); m != nil {
			test = m[1]
			continue
		}
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return short(trimmed)
		}
		m := testLineRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		msg := m[1]
		if strings.HasSuffix(msg, ":") && i+1 < len(lines) {
			msg = strings.TrimSpace(lines[i+1])
		}
		msg = timestampRE.ReplaceAllString(msg, "")
		if test != "" {
			msg = test + ": " + msg
		}
		return short(msg)
	}
	if test != "" {
		return short(test + " failed")
	}
	return short(fmt.Sprintf("%v: %s", err, strings.TrimSpace(lastLine(output))))
}

func firstCompileError(output string, err error) string {
	for _, l := range strings.Split(output, "\n") {
		if compileRE.MatchString(strings.TrimPrefix(l, "./")) {
			return short(strings.TrimSpace(l))
		}
	}
	return short(fmt.Sprintf("%v: %s", err, strings.TrimSpace(lastLine(output))))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func short(s string) string {
	const most = 180
	if len(s) > most {
		return s[:most-3] + "..."
	}
	return s
}

// copyModule copies the module's files (tracked and untracked but not ignored, as
// git sees the worktree now) from root to dir.
func copyModule(root, dir string) error {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	listing, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(listing), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		info, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the worktree, not yet in the index
		}
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

func printTable(out io.Writer, results []result, o options) {
	counts := map[string]int{}
	unitCaught := 0
	for _, r := range results {
		counts[r.outcome]++
		if strings.HasPrefix(r.unit, "caught") {
			unitCaught++
		}
	}
	if o.markdown {
		fmt.Fprintf(out, "\n| mutant | rule | simulator alone | first failing line |\n| --- | --- | --- | --- |\n")
		for _, r := range results {
			fmt.Fprintf(out, "| `%s` | %s | %s | %s |\n", r.m.name, r.m.rule, r.outcome, strings.ReplaceAll(r.line, "|", `\|`))
		}
	} else {
		fmt.Fprintf(out, "\n%-34s %-16s %s\n", "MUTANT", "SIMULATOR ALONE", "RULE")
		for _, r := range results {
			fmt.Fprintf(out, "%-34s %-16s %s\n", r.m.name, r.outcome, r.m.rule)
		}
	}
	fmt.Fprintf(out, "\n%d mutants: the simulator alone caught %d, missed %d", len(results), counts[outcomeCaught], counts[outcomeMissed])
	if o.unit {
		fmt.Fprintf(out, " (the unit tests caught %d of those)", unitCaught)
	}
	fmt.Fprintf(out, "; %d did not compile, %d no longer apply (%d schedules from seed %d each)\n",
		counts[outcomeNoCompile], counts[outcomeStale], o.simN, o.simFirst)
}
