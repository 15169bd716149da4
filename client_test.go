package apaleo

import (
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestTransportPool: configs with the same trust roots share one transport (and so its
// connections); other trust roots get their own.
func TestTransportPool(t *testing.T) {
	e := newTestEnv(t)
	for _, name := range []string{"a", "b", "c"} {
		e.writeSimpleConfig(name, nil)
		e.mustDo(logical.ReadOperation, "creds/"+name, nil)
	}
	e.mustDo(logical.CreateOperation, "config/public", map[string]any{"client_id": "x", "client_secret": "y"})
	transportOf := func(name string) http.RoundTripper {
		cfg, err := readConfig(t.Context(), e.storage, name)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := e.b.identity(name, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return srv.(*identityClient).httpClient.Transport
	}
	if transportOf("a") != transportOf("b") || transportOf("b") != transportOf("c") {
		t.Fatal("configs with the same ca_certificate do not share a transport")
	}
	if transportOf("a") == transportOf("public") {
		t.Fatal("configs with different trust roots share a transport")
	}
	if got := len(e.b.transports.byCA); got != 2 {
		t.Fatalf("%d transports for two sets of trust roots", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Sun, 22 Nov 2026 12:00:30 GMT": 30 * time.Second,
		"Sun, 22 Nov 2026 11:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}
