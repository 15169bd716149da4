//go:build e2e

package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// secretwatch_test.go: the values that must never show in clear in a log or transcript,
// and the scan that looks for them in every form.

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
