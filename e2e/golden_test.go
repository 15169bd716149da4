//go:build e2e

package e2e

import (
	"bytes"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestGoldenGenerator runs the golden generator (testdata/golden/generate/generate.sh,
// which runs the released version's own backend from its recorded commit) and fails when
// its output and the committed testdata/golden/<version>/ differ by a file or a byte: the
// entries storage_compat_test.go reads are what that release writes, not a hand edit.
// a7ba2b2 is the commit before narrowing moved to config/<config>/narrowed/, with a
// narrowed credential made through creds/.
func TestGoldenGenerator(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	type golden struct {
		version string
		args    []string
	}
	gs := []golden{{"a7ba2b2", []string{"-golden-narrowed"}}}
	for _, v := range releases(t) {
		gs = append(gs, golden{v, nil})
	}
	for _, g := range gs {
		t.Run(g.version, func(t *testing.T) {
			t.Parallel()
			checkGolden(t, root, g.version, g.args)
		})
	}
}

func checkGolden(t *testing.T, root, version string, args []string) {
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "testdata", "golden", "generate", "generate.sh"), append([]string{version, out}, args...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh %s: %v\n%s", version, err, b)
	}
	committed := readTree(t, filepath.Join(root, "testdata", "golden", version))
	generated := readTree(t, out)
	if len(generated) == 0 {
		t.Fatal("the generator wrote no entries")
	}
	names := slices.Sorted(maps.Keys(committed))
	for name := range generated {
		if _, ok := committed[name]; !ok {
			names = append(names, name)
		}
	}
	for _, name := range names {
		c, inCommitted := committed[name]
		g, inGenerated := generated[name]
		switch {
		case !inGenerated:
			t.Errorf("testdata/golden/%s/%s is committed but the generator does not write it", version, name)
		case !inCommitted:
			t.Errorf("the generator writes %s, which testdata/golden/%s lacks", name, version)
		case !bytes.Equal(c, g):
			t.Errorf("testdata/golden/%s/%s differs from the generator's output:\ncommitted: %s\ngenerated: %s", version, name, c, g)
		}
	}
}

// readTree reads every file under dir by its slash-separated relative path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
