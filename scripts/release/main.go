// Command release builds the plugin's release archives the way HashiCorp ships its own:
// one zip per platform holding the binary, and a SHA256SUMS file over the zips.
//
//	go run ./scripts/release -version v0.2.0 -out dist   (make release VERSION=v0.2.0)
//
// writes
//
//	dist/vault-plugin-secrets-apaleo_0.2.0_linux_amd64.zip   (and every other platform)
//	dist/vault-plugin-secrets-apaleo_0.2.0_SHA256SUMS
//
// A release is what its name says: a version vX.Y.Z is built only from the commit the
// RELEASES file records for it, and must have its own section in CHANGELOG.md
// ("## [0.2.0] - 2026-11-27"). A pre-release version (vX.Y.Z-something) is built from
// HEAD and needs neither; CI checks reproducibility with one. Either way the source is
// that commit's `git archive`, never the working tree, so uncommitted changes cannot
// slip into a release.
//
// The output is reproducible: two runs for the same commit with the same Go toolchain give
// byte-identical files. The binaries are built without cgo, with -trimpath, no VCS stamp
// and an empty build id; each zip holds one entry with a fixed mode and a fixed time (the
// commit's, or SOURCE_DATE_EPOCH).
package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	plugin = "vault-plugin-secrets-apaleo"
	module = "github.com/apaleo-vault/vault-plugin-secrets-apaleo"
)

// platforms are the release targets: every GOOS/GOARCH pair of linux, darwin, windows and
// freebsd on amd64 and arm64 (Go supports all eight).
var platforms = []string{
	"darwin/amd64", "darwin/arm64",
	"freebsd/amd64", "freebsd/arm64",
	"linux/amd64", "linux/arm64",
	"windows/amd64", "windows/arm64",
}

var versionRe = regexp.MustCompile(`^v(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)$`)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		version   = flag.String("version", "", "the release version, vX.Y.Z (required)")
		out       = flag.String("out", "dist", "output directory")
		changelog = flag.String("changelog", "CHANGELOG.md", "the changelog that must list the version")
		releases  = flag.String("releases", "RELEASES", "the record of released versions' commits")
		only      = flag.String("platforms", strings.Join(platforms, ","), "comma-separated GOOS/GOARCH pairs")
	)
	flag.Parse()
	var err error
	m := versionRe.FindStringSubmatch(*version)
	if m == nil {
		return fmt.Errorf("-version %q: want vMAJOR.MINOR.PATCH, e.g. VERSION=v0.2.0", *version)
	}
	bare := m[1] // file names carry the version without its "v", like HashiCorp's
	commit := "HEAD"
	if !strings.Contains(bare, "-") {
		if commit, err = recordedCommit(*releases, *version); err != nil {
			return err
		}
		if err := checkChangelog(*changelog, bare); err != nil {
			return err
		}
	}
	src, err := os.MkdirTemp("", "apaleo-release-src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if commit, err = extract(commit, src); err != nil {
		return err
	}
	fmt.Printf("==> %s from commit %s\n", *version, commit)
	modTime, err := sourceDate(commit)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	// Drop what an earlier run of this version left, so SHA256SUMS lists this run only.
	old, _ := filepath.Glob(filepath.Join(*out, fmt.Sprintf("%s_%s_*", plugin, bare)))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "apaleo-release-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	targets := strings.Split(*only, ",")
	slices.Sort(targets)
	var zips []string
	for _, p := range targets {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			return fmt.Errorf("-platforms: %q is not GOOS/GOARCH", p)
		}
		start := time.Now()
		bin, err := build(src, tmp, *version, goos, goarch)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("%s_%s_%s_%s.zip", plugin, bare, goos, goarch)
		if err := writeZip(filepath.Join(*out, name), bin, filepath.Base(bin), modTime); err != nil {
			return err
		}
		fmt.Printf("==> %s/%s (%.1fs)\n", *out, name, time.Since(start).Seconds())
		zips = append(zips, name)
	}

	sums := filepath.Join(*out, fmt.Sprintf("%s_%s_SHA256SUMS", plugin, bare))
	var buf bytes.Buffer
	for _, name := range zips { // sorted: targets are
		sum, err := sha256File(filepath.Join(*out, name))
		if err != nil {
			return err
		}
		fmt.Fprintf(&buf, "%s  %s\n", sum, name)
	}
	if err := os.WriteFile(sums, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("==> %s\n%s", sums, buf.String())
	return nil
}

// checkChangelog refuses a version that has no "## [X.Y.Z]" section in the changelog.
func checkChangelog(path, bare string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	heading := regexp.MustCompile(`^##\s+\[v?` + regexp.QuoteMeta(bare) + `\]`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if heading.MatchString(sc.Text()) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%s has no section for %s: add \"## [%s] - YYYY-MM-DD\" (moving the Unreleased entries into it) before releasing", path, bare, bare)
}

// sourceDate is the time stamped on the files inside the zips: SOURCE_DATE_EPOCH when set
// (https://reproducible-builds.org/specs/source-date-epoch/), else the commit's time.
func sourceDate(commit string) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		out, err := exec.Command("git", "log", "-1", "--format=%ct", commit).Output()
		if err != nil {
			return time.Time{}, fmt.Errorf("git log %s: %w", commit, err)
		}
		s = strings.TrimSpace(string(out))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("source date %q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// recordedCommit is the commit the releases file records for version ("vX.Y.Z <commit>"
// lines, # comments).
func recordedCommit(path, version string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == version {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s records no commit for %s: a release is built only from its recorded commit; add the line \"%s <commit>\" (or build a pre-release, e.g. %s-rc.1, from HEAD)", path, version, version, version)
}

// extract writes commit's tree into dir with `git archive` and answers the full commit id.
func extract(commit, dir string) (string, error) {
	out, err := exec.Command("git", "rev-parse", "--verify", commit+"^{commit}").Output()
	if err != nil {
		return "", fmt.Errorf("commit %s is not in this clone (a shallow clone? fetch its history): %w", commit, err)
	}
	id := strings.TrimSpace(string(out))
	archive := exec.Command("git", "archive", id)
	untar := exec.Command("tar", "-x", "-C", dir)
	if untar.Stdin, err = archive.StdoutPipe(); err != nil {
		return "", err
	}
	archive.Stderr, untar.Stderr = os.Stderr, os.Stderr
	if err := untar.Start(); err != nil {
		return "", err
	}
	if err := archive.Run(); err != nil {
		return "", fmt.Errorf("git archive %s: %w", id, err)
	}
	if err := untar.Wait(); err != nil {
		return "", fmt.Errorf("extracting %s: %w", id, err)
	}
	return id, nil
}

// build cross-compiles the plugin in src for goos/goarch into its own directory under tmp.
func build(src, tmp, version, goos, goarch string) (string, error) {
	dir := filepath.Join(tmp, goos+"_"+goarch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, plugin)
	if goos == "windows" {
		bin += ".exe"
	}
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X "+module+".Version="+version,
		"-o", bin, "./cmd/"+plugin)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build for %s/%s: %w", goos, goarch, err)
	}
	return bin, nil
}

// writeZip writes a zip holding one file, name, with bin's content, mode 0755 and time
// modTime: nothing in it depends on the machine, the clock or the file system.
func writeZip(path, bin, name string, modTime time.Time) error {
	src, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(f)
	hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: modTime}
	hdr.SetMode(0o755)
	w, err := zw.CreateHeader(hdr)
	if err == nil {
		_, err = io.Copy(w, src)
	}
	if err == nil {
		err = zw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
