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
// The output is reproducible: two runs on the same commit with the same Go toolchain give
// byte-identical files. The binaries are built without cgo, with -trimpath, no VCS stamp
// and an empty build id; each zip holds one entry with a fixed mode and a fixed time (the
// commit's, or SOURCE_DATE_EPOCH).
//
// A version must have its own section in CHANGELOG.md ("## [0.2.0] - 2026-11-27").
package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
		only      = flag.String("platforms", strings.Join(platforms, ","), "comma-separated GOOS/GOARCH pairs")
	)
	flag.Parse()
	m := versionRe.FindStringSubmatch(*version)
	if m == nil {
		return fmt.Errorf("-version %q: want vMAJOR.MINOR.PATCH, e.g. VERSION=v0.2.0", *version)
	}
	bare := m[1] // file names carry the version without its "v", like HashiCorp's
	if err := checkChangelog(*changelog, bare); err != nil {
		return err
	}
	modTime, err := sourceDate()
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
		bin, err := build(tmp, *version, goos, goarch)
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
func sourceDate() (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
	if err != nil {
		return time.Time{}, errors.New("not a git checkout: set SOURCE_DATE_EPOCH to the release's time (seconds since 1970)")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("git log: %w", err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// build cross-compiles the plugin for goos/goarch into its own directory under tmp.
func build(tmp, version, goos, goarch string) (string, error) {
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
