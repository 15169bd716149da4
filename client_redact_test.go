package apaleo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// client_redact_test.go: point 2 of the hardening issue. A proxy or debug page in front of
// the identity server may echo the request; whatever comes back must not carry the
// request's secrets into an error.

const (
	echoClientID     = "app-ID+1"
	echoClientSecret = "cl/ient+secret&value=1"
	echoRefresh      = "rt-9f8e7d6c5b4a+/="
	echoCode         = "code-0a1b2c3d4e5f"
	echoVerifier     = "Q7zyxwvutsrqponmlkjihgfedcba0123456789-verifier"
)

// echoServer answers every request with status and an echo of the request: the form
// body and the Authorization header, in an OAuth error description (asJSON) or as a raw
// body.
func echoServer(t *testing.T, status int, asJSON bool, pad int) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		echo := strings.Repeat("x", pad)
		if user, pass, ok := r.BasicAuth(); ok {
			echo += user + ":" + pass + " "
		}
		if form, err := url.ParseQuery(string(body)); err == nil {
			echo += strings.Join([]string{form.Get("client_secret"), form.Get("refresh_token"), form.Get("code"), form.Get("code_verifier"), form.Get("token")}, ",")
		}
		echo += " body=" + string(body) + " auth=" + r.Header.Get("Authorization")
		if asJSON {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request", "error_description": echo})
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "<html>"+echo+"</html>")
	}))
	t.Cleanup(ts.Close)
	return ts, &hits
}

func echoClient(t *testing.T, ts *httptest.Server) *identityClient {
	c, err := newIdentityClient(clientSettings{ClientID: echoClientID, ClientSecret: echoClientSecret, IdentityURL: ts.URL,
		RedirectURI: "https://vault.example/v1/apaleo/callback"}, time.Now, &transportPool{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secretForms is every form in which a test secret could leak: as is, URL-encoded, and the
// Basic header's base64.
func secretForms() []string {
	var out []string
	for _, s := range []string{echoClientSecret, echoRefresh, echoCode, echoVerifier} {
		out = append(out, s, url.QueryEscape(s))
	}
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(echoClientID) + ":" + url.QueryEscape(echoClientSecret)))
	return append(out, basic, basic[:12], echoClientSecret[:5], echoRefresh[:5], echoCode[:5], echoVerifier[:5])
}

func TestClient_UpstreamTextRedacted(t *testing.T) {
	p := retryPolicy{Total: 2 * time.Second, PerAttempt: time.Second, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, Attempts: 1}
	calls := map[string]func(c *identityClient) error{
		"client credentials": func(c *identityClient) error {
			_, err := c.ClientCredentials(context.Background(), []string{"a"}, p)
			return err
		},
		"refresh": func(c *identityClient) error {
			_, err := c.Refresh(context.Background(), echoRefresh, p)
			return err
		},
		"exchange": func(c *identityClient) error {
			_, err := c.Exchange(context.Background(), echoCode, echoVerifier, []string{"a"}, p)
			return err
		},
		"revoke": func(c *identityClient) error { return c.Revoke(context.Background(), echoRefresh, p) },
	}
	for _, shape := range []struct {
		name   string
		status int
		json   bool
		pad    int
	}{
		{"OAuth error description", 400, true, 0},
		{"proxy page", 502, false, 0},
		// A secret starts a few bytes before the 200-byte snippet is cut: no part of it may show.
		{"proxy page cut inside a secret", 502, false, 178},
	} {
		for name, call := range calls {
			t.Run(shape.name+"/"+name, func(t *testing.T) {
				ts, _ := echoServer(t, shape.status, shape.json, shape.pad)
				err := call(echoClient(t, ts))
				var ue *upstreamError
				if !errors.As(err, &ue) {
					t.Fatalf("want an upstreamError, got %v", err)
				}
				msg := err.Error()
				for _, f := range secretForms() {
					if strings.Contains(msg, f) || strings.Contains(ue.Description, f) {
						t.Errorf("%q leaks %q", msg, f)
					}
				}
				// The echo did arrive (so the test shows something), minus the secrets.
				if name != "revoke" && !strings.Contains(msg, redactedMark[:4]) {
					t.Errorf("nothing was redacted, so the echo never arrived: %q", msg)
				}
				if !utf8.ValidString(msg) {
					t.Errorf("not valid UTF-8: %q", msg)
				}
			})
		}
	}
}

// TestClient_SnippetCutOnRuneBoundary: a body snippet is cut to 200 bytes on a UTF-8
// boundary, never inside a character.
func TestClient_SnippetCutOnRuneBoundary(t *testing.T) {
	body := strings.Repeat("a", 199) + "é and more"
	got := snippet(body)
	if !utf8.ValidString(got) {
		t.Fatalf("snippet is not valid UTF-8: %q", got)
	}
	if !strings.HasSuffix(got, strings.Repeat("a", 10)+"...") {
		t.Fatalf("snippet %q", got)
	}
	if got := truncate(strings.Repeat("€", 100), 200); !utf8.ValidString(got) || len(got) > 203 {
		t.Fatalf("cut %q", got)
	}
}
