package apaleo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestOpenAPI_Golden: the mount's OpenAPI document is byte for byte the one in
// testdata/openapi.golden.json (the same at 77bcba1, before the house was rebuilt): a
// refactor of the paths changes no field, response or help text unnoticed. A
// deliberate API change rewrites the file (UPDATE_OPENAPI=1) and says so in CHANGELOG.
func TestOpenAPI_Golden(t *testing.T) {
	b := newBackend()
	conf := logical.TestBackendConfig()
	conf.System = &logical.StaticSystemView{PluginEnvironment: &logical.PluginEnvironment{VaultVersion: "1.0.0"}}
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Backend.HandleRequest(context.Background(), &logical.Request{Operation: logical.HelpOperation,
		Data: map[string]any{}, Storage: &logical.InmemStorage{}, MountPoint: "apaleo/"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(resp.Data["openapi"], "", " ")
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/openapi.golden.json"
	if os.Getenv("UPDATE_OPENAPI") == "1" {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the OpenAPI document differs from %s; if the change is meant, run UPDATE_OPENAPI=1 go test -run TestOpenAPI_Golden . and note it in CHANGELOG", golden)
	}
}
