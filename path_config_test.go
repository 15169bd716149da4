package apaleo

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestConfig_CRUD(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", map[string]any{"scopes": "setup.read, reservations.read setup.read,Reservations.Read"})

	resp := e.mustDo(logical.ReadOperation, "config/hotel-muc", nil)
	want := map[string]any{
		"client_id":      mucID,
		"grant_type":     "client_credentials",
		"scopes":         []string{"setup.read", "reservations.read", "Reservations.Read"},
		"redirect_uri":   "",
		"identity_url":   e.ts.URL,
		"ca_certificate": e.caPEM,
		"min_ttl":        int64(900),
		"refresh_ahead":  true,

		"max_token_requests_per_second": float64(10), "idle_refresh_interval": int64(604800),
		"upstream": "ok",
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Fatalf("read:\n got %#v\nwant %#v", resp.Data, want)
	}

	// Partial update: only min_ttl changes.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"min_ttl": "5m"})
	resp = e.mustDo(logical.ReadOperation, "config/hotel-muc", nil)
	want["min_ttl"] = int64(300)
	if !reflect.DeepEqual(resp.Data, want) {
		t.Fatalf("after partial update:\n got %#v\nwant %#v", resp.Data, want)
	}

	e.writeSimpleConfig("hotel-ber", nil)
	list := e.mustDo(logical.ListOperation, "config/", nil)
	if got := list.Data["keys"]; !reflect.DeepEqual(got, []string{"hotel-ber", "hotel-muc"}) {
		t.Fatalf("list = %v", got)
	}
	creds := e.mustDo(logical.ListOperation, "creds/", nil)
	if got := creds.Data["keys"]; !reflect.DeepEqual(got, []string{"hotel-ber", "hotel-muc"}) {
		t.Fatalf("creds list = %v", got)
	}

	e.mustDo(logical.DeleteOperation, "config/hotel-ber", nil)
	if resp := e.mustDo(logical.ReadOperation, "config/hotel-ber", nil); resp != nil {
		t.Fatalf("deleted config still reads: %v", resp.Data)
	}
	creds = e.mustDo(logical.ListOperation, "creds/", nil)
	if got := creds.Data["keys"]; !reflect.DeepEqual(got, []string{"hotel-muc"}) {
		t.Fatalf("creds list after delete = %v", got)
	}
	e.assertNoSecrets(mucSecret)
}

func TestConfig_Defaults(t *testing.T) {
	e := newTestEnv(t)
	e.mustDo(logical.CreateOperation, "config/minimal", map[string]any{"client_id": "a", "client_secret": "b"})
	resp := e.mustDo(logical.ReadOperation, "config/minimal", nil)
	if resp.Data["identity_url"] != defaultIdentityURL || resp.Data["grant_type"] != grantClientCredentials ||
		resp.Data["min_ttl"] != int64(900) || len(resp.Data["scopes"].([]string)) != 0 {
		t.Fatalf("defaults: %#v", resp.Data)
	}

	e.mustDo(logical.CreateOperation, "config/connect", map[string]any{
		"client_id": "a", "client_secret": "b", "grant_type": "authorization_code",
		"redirect_uri": "https://vault.example/v1/apaleo/callback", "scopes": "reservations.read",
	})
	resp = e.mustDo(logical.ReadOperation, "config/connect", nil)
	if got := resp.Data["scopes"]; !reflect.DeepEqual(got, []string{"reservations.read", "offline_access"}) {
		t.Fatalf("authorization_code scopes = %v, want offline_access added", got)
	}
}

// TestConfig_Validation: every bad value is a 4xx that says what to fix, and nothing
// is stored.
func TestConfig_Validation(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("existing", nil)
	before := e.mustDo(logical.ReadOperation, "config/existing", nil).Data

	base := func(extra map[string]any) map[string]any {
		d := map[string]any{"client_id": "id", "client_secret": "secret"}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	big := strings.Repeat("a", maxValueLen+1)
	cases := []struct {
		name string
		data map[string]any
		want string
	}{
		{"missing client_id", map[string]any{"client_secret": "s"}, "client_id is required"},
		{"missing client_secret", map[string]any{"client_id": "i"}, "client_secret is required"},
		{"unknown grant_type", base(map[string]any{"grant_type": "password"}), `grant_type "password" is not supported`},
		{"http identity_url", base(map[string]any{"identity_url": "http://identity.apaleo.com"}), "must use https"},
		{"ftp identity_url", base(map[string]any{"identity_url": "ftp://identity.apaleo.com"}), "must use https"},
		{"relative identity_url", base(map[string]any{"identity_url": "identity.apaleo.com"}), "absolute URL"},
		{"unparsable identity_url", base(map[string]any{"identity_url": "https://[::1"}), "not a valid URL"},
		{"identity_url with fragment", base(map[string]any{"identity_url": "https://identity.apaleo.com/#x"}), "#fragment"},
		{"identity_url with user", base(map[string]any{"identity_url": "https://u:p@identity.apaleo.com"}), "user info"},
		{"bad PEM", base(map[string]any{"ca_certificate": "not a pem"}), "PEM-encoded CERTIFICATE"},
		{"PEM key", base(map[string]any{"ca_certificate": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}), `"PRIVATE KEY" PEM block`},
		{"PEM garbage cert", base(map[string]any{"ca_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}), "cannot be parsed"},
		{"bad duration", base(map[string]any{"min_ttl": "soon"}), "min_ttl"},
		{"negative duration", base(map[string]any{"min_ttl": "-5m"}), "negative"},
		{"scope with quote", base(map[string]any{"scopes": `reservations.read "x"`}), "RFC 6749"},
		{"scope with backslash", base(map[string]any{"scopes": `a\b`}), "RFC 6749"},
		{"scope non-ascii", base(map[string]any{"scopes": "résa"}), "RFC 6749"},
		{"oversized client_id", base(map[string]any{"client_id": big}), "limit is 4096"},
		{"oversized ca", base(map[string]any{"ca_certificate": strings.Repeat("a", maxCALen+1)}), "limit is 65536"},
		{"control char secret", base(map[string]any{"client_secret": "a\x00b"}), "control character"},
		{"authorization_code without redirect_uri", base(map[string]any{"grant_type": "authorization_code"}), "redirect_uri is required"},
		{"redirect_uri http", base(map[string]any{"grant_type": "authorization_code", "redirect_uri": "http://vault.example/cb"}), "must use https"},
		{"redirect_uri fragment", base(map[string]any{"grant_type": "authorization_code", "redirect_uri": "https://vault.example/cb#frag"}), "#fragment"},
		{"redirect_uri relative", base(map[string]any{"grant_type": "authorization_code", "redirect_uri": "/v1/apaleo/callback"}), "absolute URL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.badRequest(logical.CreateOperation, "config/new", c.data, c.want)
			if resp := e.mustDo(logical.ReadOperation, "config/new", nil); resp != nil {
				t.Fatalf("a refused create stored a config: %v", resp.Data)
			}
			// The same value on an update leaves the existing config as it was.
			_, grant := c.data["grant_type"]
			if _, ok := c.data["client_id"]; ok && !grant && c.name != "missing client_secret" {
				e.badRequest(logical.UpdateOperation, "config/existing", c.data, c.want)
				if after := e.mustDo(logical.ReadOperation, "config/existing", nil).Data; !reflect.DeepEqual(after, before) {
					t.Fatalf("a refused update changed the config:\n%v\n%v", before, after)
				}
			}
		})
	}
	e.t = t

	// Loopback hosts may use plain http.
	for _, u := range []string{"http://127.0.0.1:8200", "http://localhost:1234/", "http://[::1]:99"} {
		e.mustDo(logical.CreateOperation, "config/loop", map[string]any{"client_id": "i", "client_secret": "s", "identity_url": u})
	}
	e.mustDo(logical.CreateOperation, "config/loopcb", map[string]any{"client_id": "i", "client_secret": "s",
		"grant_type": "authorization_code", "redirect_uri": "http://127.0.0.1:8200/v1/apaleo/callback"})

	// The name must match framework.GenericNameRegex.
	if resp, err := e.do(logical.CreateOperation, "config/bad name!", base(nil)); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a name outside GenericNameRegex was accepted")
	}

	// grant_type cannot change under existing credentials.
	e.badRequest(logical.UpdateOperation, "config/existing", map[string]any{"grant_type": "authorization_code", "redirect_uri": "https://v.example/cb"}, "grant_type cannot change")
}

func TestConfig_ChangeDropsCachedTokens(t *testing.T) {
	e := newTestEnv(t)
	e.writeSimpleConfig("hotel-muc", nil)
	first := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)

	// A change that does not shape tokens keeps the cached one.
	e.mustDo(logical.UpdateOperation, "config/hotel-muc", map[string]any{"min_ttl": "10m"})
	before := e.tokenRequests()
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if e.tokenRequests() != before {
		t.Fatal("a min_ttl change dropped the cached token")
	}

	for _, change := range []map[string]any{
		{"client_secret": mucSecret},                                   // same value: no change
		{"identity_url": e.ts.URL + "/"},                               // normalised to the same URL
		{"scopes": "reservations.read"},                                // a change
		{"ca_certificate": e.caPEM + "\n", "client_secret": mucSecret}, // trust roots alone: tokens kept
		{"client_secret": "rotated-secret"},                            // a secret rotation: tokens kept
	} {
		before := e.tokenRequests()
		e.mustDo(logical.UpdateOperation, "config/hotel-muc", change)
		resp := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
		_, scopes := change["scopes"]
		if got := e.tokenRequests() - before; (got == 1) != scopes {
			t.Fatalf("update %v: %d token requests", change, got)
		}
		if scopes {
			if !reflect.DeepEqual(resp.Data["scopes"], []string{"reservations.read"}) {
				t.Fatalf("scopes after change = %v", resp.Data["scopes"])
			}
			if resp.Data["access_token"] == first.Data["access_token"] {
				t.Fatal("the old token was served after a scope change")
			}
		}
	}
}
