package apaleo

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Storage compatibility: every released version's storage entries stay readable.
//
// testdata/golden/<version>/ holds storage entries exactly as that version wrote them
// (key config/hotel-muc in config/hotel-muc.json), written by that release's own backend:
// testdata/golden/generate/generate.sh runs it from the commit RELEASES records (see
// testdata/golden/README.md), and the end-to-end TestGoldenGenerator fails when its output
// and the committed files differ. A release that changes an entry's shape adds a
// migration and a new directory of golden entries, and this test keeps reading the old
// ones. The cached access tokens are valid until 2086, so a read answers them from the
// cache without calling the identity server.

const goldenDir = "testdata/golden"

// goldenEntry is one stored entry of a released version.
type goldenEntry struct {
	key   string
	value []byte
}

func readGolden(t *testing.T, version string) []goldenEntry {
	t.Helper()
	root := filepath.Join(goldenDir, version)
	var entries []goldenEntry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		entries = append(entries, goldenEntry{key: strings.TrimSuffix(filepath.ToSlash(rel), ".json"), value: b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("no golden entries under %s", root)
	}
	return entries
}

// goldenVersions lists the versions that have golden entries: the releases, and commits
// of the history whose storage an upgrade meets (a7ba2b2: narrowed credentials made
// through creds/).
func goldenVersions(t *testing.T) []string {
	t.Helper()
	dirs, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, d := range dirs {
		if d.IsDir() && d.Name() != "generate" {
			vs = append(vs, d.Name())
		}
	}
	for _, want := range []string{"v0.1.0", "a7ba2b2", "v0.2.0"} {
		if !slices.Contains(vs, want) {
			t.Fatalf("%s has no %s entries", goldenDir, want)
		}
	}
	return vs
}

// entryType returns a new value of the type stored under key.
func entryType(t *testing.T, key string) any {
	t.Helper()
	switch {
	case strings.HasPrefix(key, configPrefix):
		return &apaleoConfig{}
	case strings.HasPrefix(key, credsPrefix):
		return &credential{}
	case strings.HasPrefix(key, pendingPrefix):
		return &pendingAuthorization{}
	case strings.HasPrefix(key, pendingNamePrefix):
		return &pendingOfName{}
	}
	t.Fatalf("golden entry %s: no storage type for this key", key)
	return nil
}

// TestStorageCompat_Decode decodes every golden entry into the current type and encodes
// it again: every field of the old entry must survive with its value. Fields the current
// type added may appear; none may be lost or changed.
func TestStorageCompat_Decode(t *testing.T) {
	for _, version := range goldenVersions(t) {
		for _, e := range readGolden(t, version) {
			t.Run(version+"/"+e.key, func(t *testing.T) {
				if strings.HasPrefix(e.key, pendingExpiryPrefix) {
					// The expiry index: the key is all it holds.
					if len(e.value) != 0 {
						t.Errorf("index entry %s holds %q, want nothing", e.key, e.value)
					}
					return
				}
				v := entryType(t, e.key)
				entry := &logical.StorageEntry{Key: e.key, Value: e.value}
				if err := entry.DecodeJSON(v); err != nil {
					t.Fatalf("decoding: %v", err)
				}
				again, err := logical.StorageEntryJSON(e.key, v)
				if err != nil {
					t.Fatal(err)
				}
				var old, now map[string]any
				if err := json.Unmarshal(e.value, &old); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(again.Value, &now); err != nil {
					t.Fatal(err)
				}
				for _, diff := range keptFields("", old, now) {
					t.Error(diff)
				}
			})
		}
	}
}

// keptFields lists the fields of old that now lacks or holds a different value, by path.
func keptFields(path string, old, now map[string]any) []string {
	var out []string
	for k, ov := range old {
		nv, ok := now[k]
		p := path + k
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("field %s (%v) is lost on re-encoding", p, ov))
		case isMap(ov) && isMap(nv):
			out = append(out, keptFields(p+".", ov.(map[string]any), nv.(map[string]any))...)
		case !reflect.DeepEqual(ov, nv):
			out = append(out, fmt.Sprintf("field %s changed on re-encoding: %v, was %v", p, nv, ov))
		}
	}
	slices.Sort(out)
	return out
}

func isMap(v any) bool {
	_, ok := v.(map[string]any)
	return ok
}

// TestStorageCompat_Read starts the current backend on each version's golden storage
// and reads everything through its API, as after an upgrade in place: the configs as
// written, the lists, and the cached access tokens, without a token request (the
// entries' identity_url points at a server that no longer exists).
func TestStorageCompat_Read(t *testing.T) {
	for _, version := range goldenVersions(t) {
		t.Run(version, func(t *testing.T) {
			ctx := context.Background()
			storage := &logical.InmemStorage{}
			var configs, creds []string
			golden := map[string]map[string]any{}
			for _, e := range readGolden(t, version) {
				if err := storage.Put(ctx, &logical.StorageEntry{Key: e.key, Value: e.value}); err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(e.key, pendingExpiryPrefix) {
					continue // an index key, no value
				}
				var m map[string]any
				if err := json.Unmarshal(e.value, &m); err != nil {
					t.Fatal(err)
				}
				golden[e.key] = m
				if name, ok := strings.CutPrefix(e.key, configPrefix); ok {
					configs = append(configs, name)
				}
				if name, ok := strings.CutPrefix(e.key, credsPrefix); ok {
					creds = append(creds, name)
				}
			}
			conf := logical.TestBackendConfig()
			conf.StorageView = storage
			b, err := Factory(ctx, conf)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Cleanup(ctx)
			do := func(op logical.Operation, path string) *logical.Response {
				t.Helper()
				resp, err := b.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Storage: storage})
				if err != nil || resp == nil || resp.IsError() {
					t.Fatalf("%s %s: %v %v", op, path, resp, err)
				}
				return resp
			}

			keys := func(resp *logical.Response) []string {
				k, _ := resp.Data["keys"].([]string)
				slices.Sort(k)
				return k
			}
			slices.Sort(configs)
			slices.Sort(creds)
			if got := keys(do(logical.ListOperation, "config/")); !slices.Equal(got, configs) {
				t.Errorf("LIST config/ = %q, want %q", got, configs)
			}
			if got := keys(do(logical.ListOperation, "creds/")); !slices.Equal(got, creds) {
				t.Errorf("LIST creds/ = %q, want %q", got, creds)
			}

			for _, name := range configs {
				g := golden[configPrefix+name]
				data := do(logical.ReadOperation, "config/"+name).Data
				for _, f := range []string{"client_id", "grant_type", "identity_url", "redirect_uri", "ca_certificate"} {
					want, _ := g[f].(string)
					if got, _ := data[f].(string); got != want {
						t.Errorf("config/%s %s = %q, want %q", name, f, got, want)
					}
				}
				if got, want := fmt.Sprint(data["scopes"]), fmt.Sprint(g["scopes"]); got != want {
					t.Errorf("config/%s scopes = %s, want %s", name, got, want)
				}
				minTTL := time.Duration(g["min_ttl"].(float64))
				if got := fmt.Sprint(data["min_ttl"]); got != fmt.Sprint(int64(minTTL.Seconds())) {
					t.Errorf("config/%s min_ttl = %s, want %d", name, got, int64(minTTL.Seconds()))
				}
				if _, ok := data["client_secret"]; ok {
					t.Errorf("config/%s answers client_secret", name)
				}
				// Fields added after v0.1.0 take their defaults on entries that lack them.
				if v, ok := data["refresh_ahead"]; ok && v != true {
					t.Errorf("config/%s refresh_ahead = %v, want the default true", name, v)
				}
				if v, ok := data["max_token_requests_per_second"]; ok && fmt.Sprint(v) != "10" {
					t.Errorf("config/%s max_token_requests_per_second = %v, want the default 10", name, v)
				}
			}

			for _, name := range creds {
				tok, _ := golden[credsPrefix+name]["token"].(map[string]any)
				if tok == nil {
					continue
				}
				data := do(logical.ReadOperation, "creds/"+name).Data
				if data["access_token"] != tok["access_token"] {
					t.Errorf("creds/%s did not answer the stored access token", name)
				}
				if got, want := data["config"], golden[credsPrefix+name]["config"]; got != want {
					t.Errorf("creds/%s config = %v, want %v", name, got, want)
				}
				if got, want := data["account_code"], tok["account_code"]; got != want {
					t.Errorf("creds/%s account_code = %v, want %v", name, got, want)
				}
			}
		})
	}
}

// TestStorageCompat_Narrowed starts the current backend on the storage commit a7ba2b2
// wrote (testdata/golden/a7ba2b2, by that commit's own code: a narrowed credential
// created through creds/, the way it was made before config/<config>/narrowed/): the
// credential reads its cached token at creds/, shows at the config's narrowed path, keeps
// the config from being deleted, and is deleted by either path.
func TestStorageCompat_Narrowed(t *testing.T) {
	golden := readGolden(t, "a7ba2b2")
	var stored map[string]any
	for _, e := range golden {
		if e.key == credsPrefix+"muc-reports" {
			if err := json.Unmarshal(e.value, &stored); err != nil {
				t.Fatal(err)
			}
		}
	}
	if stored == nil || stored["kind"] != "narrowed" {
		t.Fatalf("the a7ba2b2 golden entries hold no narrowed creds/muc-reports: %v", stored)
	}
	for _, deleteAt := range []string{"creds/muc-reports", "config/hotel-muc/narrowed/muc-reports"} {
		t.Run(deleteAt, func(t *testing.T) {
			e := newEngineEnv(t)
			for _, g := range golden {
				if err := e.storage.Put(t.Context(), &logical.StorageEntry{Key: g.key, Value: g.value}); err != nil {
					t.Fatal(err)
				}
			}
			tok := e.mustDo(logical.ReadOperation, "creds/muc-reports", nil).Data
			if want := stored["token"].(map[string]any)["access_token"]; tok["access_token"] != want || tok["config"] != "hotel-muc" {
				t.Fatalf("creds/muc-reports answered %v, want the stored token of config hotel-muc", tok)
			}
			if n := e.idp.total(); n != 0 {
				t.Fatalf("reading the stored narrowed credential sent %d token requests", n)
			}
			got := e.mustDo(logical.ReadOperation, "config/hotel-muc/narrowed/muc-reports", nil).Data
			if got["config"] != "hotel-muc" || !slices.Equal(got["scopes"].([]string), []string{"reservations.read"}) {
				t.Fatalf("config/hotel-muc/narrowed/muc-reports = %v", got)
			}
			if keys := e.mustDo(logical.ListOperation, "config/hotel-muc/narrowed/", nil).Data["keys"]; !slices.Equal(keys.([]string), []string{"muc-reports"}) {
				t.Fatalf("LIST config/hotel-muc/narrowed/ = %v", keys)
			}
			if keys := e.mustDo(logical.ListOperation, "creds/", nil).Data["keys"]; !slices.Contains(keys.([]string), "muc-reports") {
				t.Fatalf("LIST creds/ = %v", keys)
			}
			if resp, err := e.do(logical.DeleteOperation, "config/hotel-muc", nil); !strings.Contains(errText(resp, err), "muc-reports") {
				t.Fatalf("config/hotel-muc deleted while the narrowed credential uses it: %v %v", resp, err)
			}
			e.mustDo(logical.DeleteOperation, deleteAt, nil)
			if c, _ := readCred(t.Context(), e.storage, "muc-reports"); c != nil {
				t.Fatalf("DELETE %s left creds/muc-reports: %+v", deleteAt, c)
			}
			if resp, _ := e.do(logical.ReadOperation, "config/hotel-muc/narrowed/muc-reports", nil); resp != nil {
				t.Fatalf("the deleted narrowed credential still reads: %v", resp.Data)
			}
			e.mustDo(logical.DeleteOperation, "config/hotel-muc", nil)
		})
	}
}

// TestStorageCompat_PendingIndexed: pending entries stored before the index existed
// (v0.1.0's golden one, and a live one written the same way) are indexed once by the
// first cleanup: the expired one is deleted, the live one still completes once, and
// after its expiry the cleanup removes it from the listing alone.
func TestStorageCompat_PendingIndexed(t *testing.T) {
	e := newEngineEnv(t)
	var legacy string
	for _, g := range readGolden(t, "v0.1.0") {
		if err := e.storage.Put(t.Context(), &logical.StorageEntry{Key: g.key, Value: g.value}); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(g.key, pendingPrefix) {
			legacy = g.key
		}
	}
	live := &pendingAuthorization{Name: "hotel-live", Config: "connect", Verifier: "v", RedirectURI: "https://vault.example/v1/apaleo/callback", ExpiresAt: e.clock.Now().Add(pendingTTL)}
	if err := writeJSON(t.Context(), e.storage, pendingKey("old-state"), live); err != nil {
		t.Fatal(err)
	}
	if err := e.b.cleanPending(t.Context(), e.storage); err != nil {
		t.Fatal(err)
	}
	if entry, _ := e.storage.Get(t.Context(), legacy); entry != nil {
		t.Fatalf("the expired v0.1.0 pending entry %s was kept", legacy)
	}
	p, err := e.b.takePending(t.Context(), e.storage, "old-state")
	if err != nil || p.Name != "hotel-live" {
		t.Fatalf("the live entry stored without an index: %v %v", p, err)
	}
	e.b.exchanges.done(p.Name, p.exchange)
	e.clock.Add(pendingTTL + time.Second)
	reads := &getCounter{Storage: e.storage}
	if err := e.b.cleanPending(t.Context(), reads); err != nil {
		t.Fatal(err)
	}
	if keys, _ := logical.CollectKeys(t.Context(), e.storage); countPrefix(keys, "pending") != 0 || reads.gets(pendingPrefix) != 0 {
		t.Fatalf("after the cleanup: %q, %d pending entries read", keys, reads.gets(pendingPrefix))
	}
}
