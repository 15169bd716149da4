package vaultapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.URL.Path+" "+r.Header.Get("X-Vault-Token")+" "+string(body))
		switch r.URL.Path {
		case "/v1/secret/list":
			_, _ = io.WriteString(w, `{"data":{"keys":["a","b"],"key_info":{"a":{"state":"ok"}}}}`)
		case "/v1/missing":
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errors":[]}`)
		default:
			_, _ = io.WriteString(w, `{"data":{"x":"y"}}`)
		}
	}))
	defer srv.Close()
	c := New(srv.URL, "root", srv.Client())

	r, err := c.Send("other", http.MethodPost, "a/b", map[string]any{"k": 1})
	if err != nil || r.Status != http.StatusOK || r.Header.Get("X-Seen") != `POST /v1/a/b other {"k":1}` {
		t.Fatalf("Send: %+v %v (%q)", r, err, r.Header.Get("X-Seen"))
	}
	r, err = c.Send("", http.MethodGet, "a", nil)
	if err != nil || r.Header.Get("X-Seen") != "GET /v1/a" {
		t.Fatalf("Send without a token: %q %v", r.Header.Get("X-Seen"), err)
	}
	b, err := c.Must(http.MethodGet, "a", nil, http.StatusOK)
	var d struct{ X string }
	if err != nil || Data(b, &d) != nil || d.X != "y" {
		t.Fatalf("Must: %s %v %+v", b, err, d)
	}
	if _, err := c.Must(http.MethodGet, "missing", nil, http.StatusOK); err == nil || !strings.Contains(err.Error(), "GET missing: HTTP 404") {
		t.Fatalf("Must of a 404: %v", err)
	}
	if code, err := c.Discard(http.MethodGet, "missing"); code != http.StatusNotFound || err != nil {
		t.Fatalf("Discard: %d %v", code, err)
	}
	_, b, err = c.Do("LIST", "secret/list", nil)
	l, perr := ParseList(b)
	if err != nil || perr != nil || len(l.Keys) != 2 || l.KeyInfo["a"]["state"] != "ok" {
		t.Fatalf("LIST: %+v %v %v", l, err, perr)
	}
}
