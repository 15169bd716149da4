package apaleo

// This file is copied into a `git archive` of a released commit (see generate.sh) and run
// there with `go test`: the storage entries it writes are that release's own, made by
// its backend through its API. Only the identity server is scripted (a fake
// identityServer, v0.1.0's seam for tests) and the clock and the randomness are fixed,
// so two runs write the same bytes.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

var (
	goldenOut = flag.String("golden-out", "", "directory to write the storage entries into")
	// goldenNarrowed also writes a narrowed credential through creds/ (the code of commit
	// a7ba2b2, before narrowing moved to config/<config>/narrowed/<name>; v0.1.0 had none).
	goldenNarrowed = flag.Bool("golden-narrowed", false, "also narrow config/hotel-muc through a creds/ create and read its token")
)

// goldenNow is the release's commit time; the cached tokens expire in 2086 so that a
// later version reading them answers them from its cache, without an identity server.
var (
	goldenNow    = time.Date(2026, 11, 22, 13, 16, 44, 0, time.UTC)
	goldenExpiry = time.Date(2086, 11, 22, 13, 16, 44, 0, time.UTC)
)

// goldenIdentity answers every token request with a fixed token for the client.
type goldenIdentity struct {
	clientID, account string
}

func (g goldenIdentity) token(scopes []string, refresh string) *tokenResult {
	claims, _ := json.Marshal(map[string]any{"account_code": g.account, "client_id": g.clientID, "exp": goldenExpiry.Unix(), "iat": goldenNow.Unix()})
	enc := base64.RawURLEncoding.EncodeToString
	return &tokenResult{
		AccessToken:  enc([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + enc(claims) + ".",
		TokenType:    "Bearer",
		RefreshToken: refresh,
		IssuedAt:     goldenNow,
		Expiry:       goldenExpiry,
		Scopes:       scopes,
		AccountCode:  g.account,
		ClientID:     g.clientID,
	}
}

func (g goldenIdentity) ClientCredentials(_ context.Context, scopes []string, _ retryPolicy) (*tokenResult, error) {
	return g.token(scopes, ""), nil
}

func (g goldenIdentity) Refresh(_ context.Context, _ string, _ retryPolicy) (*tokenResult, error) {
	return g.token(nil, "golden-refresh-token-2"), nil
}

func (g goldenIdentity) Exchange(_ context.Context, _, _ string, scopes []string, _ retryPolicy) (*tokenResult, error) {
	return g.token(scopes, "golden-refresh-token-1"), nil
}

func (g goldenIdentity) Revoke(context.Context, string, retryPolicy) error { return nil }

func (g goldenIdentity) AuthCodeURL(state, _ string, _ []string) string {
	return "https://identity.example/connect/authorize?state=" + url.QueryEscape(state)
}

func TestWriteGolden(t *testing.T) {
	if *goldenOut == "" {
		t.Skip("no -golden-out")
	}
	cryptotest.SetGlobalRandom(t, 1) // the state and PKCE verifier of the pending entry
	ctx := context.Background()
	storage := &logical.InmemStorage{}
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	b := newBackend()
	if err := b.Setup(ctx, conf); err != nil {
		t.Fatal(err)
	}
	b.now = func() time.Time { return goldenNow }
	accounts := map[string]string{"MUC-SIMPLE": "MUC", "CONNECT-APP": "BER"}
	b.newClient = func(s clientSettings, _ func() time.Time) (identityServer, error) {
		return goldenIdentity{clientID: s.ClientID, account: accounts[s.ClientID]}, nil
	}
	// httptest's certificate is a fixed one: a CA every version must keep reading.
	ca := httptest.NewTLSServer(nil)
	ca.Close()
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}))
	do := func(op logical.Operation, path string, data map[string]any) *logical.Response {
		t.Helper()
		resp, err := b.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Data: data, Storage: storage})
		if err != nil || resp != nil && resp.IsError() {
			t.Fatalf("%s %s: %v %v", op, path, resp, err)
		}
		return resp
	}

	do(logical.CreateOperation, "config/hotel-muc", map[string]any{
		"client_id": "MUC-SIMPLE", "client_secret": "muc-secret-5f1c2a9e", "scopes": "reservations.read setup.read",
		"identity_url": "https://127.0.0.1:38517", "ca_certificate": caPEM, "min_ttl": "10m",
	})
	do(logical.CreateOperation, "config/connect", map[string]any{
		"client_id": "CONNECT-APP", "client_secret": "connect-secret-a81be44d", "grant_type": "authorization_code",
		"scopes": "reservations.read,setup.read", "redirect_uri": "https://vault.example/v1/apaleo/callback",
		"identity_url": "https://127.0.0.1:38517", "ca_certificate": caPEM,
	})
	do(logical.ReadOperation, "creds/hotel-muc", nil)
	state := do(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"}).Data["state"]
	do(logical.UpdateOperation, "exchange", map[string]any{"state": state, "code": "golden-code"})
	if *goldenNarrowed {
		do(logical.CreateOperation, "creds/muc-reports", map[string]any{"config": "hotel-muc", "scopes": "reservations.read"})
		do(logical.ReadOperation, "creds/muc-reports", nil)
	}
	// Left pending: an authorization started and not completed.
	do(logical.UpdateOperation, "authorize/hotel-ham", map[string]any{"config": "connect", "scopes": "reservations.read"})

	keys, err := logical.CollectKeys(ctx, storage)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		e, err := storage.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(*goldenOut, filepath.FromSlash(key)+".json")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, e.Value, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
