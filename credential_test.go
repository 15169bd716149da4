package apaleo

import (
	"encoding/json"
	"testing"
)

// TestCredential_KindOfOlderEntries: an entry written before kinds were stored gets its
// kind from its fields as it is read; a stored kind is kept.
func TestCredential_KindOfOlderEntries(t *testing.T) {
	for entry, want := range map[string]credKind{
		`{"config":"hotel-muc","grant_type":"client_credentials"}`:                                      kindClientCredentials,
		`{"config":"hotel-muc","grant_type":"client_credentials","scopes":["reservations.read"]}`:       kindNarrowed,
		`{"config":"connect","grant_type":"authorization_code","refresh_token":"rt","scopes":["a"]}`:    kindAuthorized,
		`{"kind":"narrowed","config":"hotel-muc","grant_type":"client_credentials","scopes":["a","b"]}`: kindNarrowed,
	} {
		var c credential
		if err := json.Unmarshal([]byte(entry), &c); err != nil {
			t.Fatal(err)
		}
		if c.Kind != want {
			t.Errorf("%s: kind %q, want %q", entry, c.Kind, want)
		}
		out, _ := json.Marshal(&c)
		var again credential
		if err := json.Unmarshal(out, &again); err != nil || again.Kind != want {
			t.Errorf("%s: written as %s, read back as %q (%v)", entry, out, again.Kind, err)
		}
	}
}
