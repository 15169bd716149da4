package devidp_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// TestInteractiveLoginAndConsent walks the pages of Options.Interactive as a form-posting
// browser: login (a wrong password refused), consent naming the client, account and
// scopes, then Deny (error=access_denied, no code) and Allow (a code that redeems).
func TestInteractiveLoginAndConsent(t *testing.T) {
	f := newFixture(t, devidp.Options{Interactive: true})
	cfg := f.connect(connectFineID, oauth2.AuthStyleInParams, "reservations.read", "offline_access")
	b := f.browser(t)
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-one-long", oauth2.S256ChallengeOption(verifier))

	page := getHTML(t, b, authURL, http.StatusOK, "Log in")
	form := hiddenForm(t, page)
	form.Set("username", devidp.TestUser)
	form.Set("password", "wrong")
	postHTML(t, b, f.ts.URL+devidp.PathAuthorize, form, http.StatusUnauthorized, "wrong password")

	// The right password: a session cookie and the consent page, reached by a redirect.
	form.Set("password", devidp.TestPassword)
	page = postHTML(t, b, f.ts.URL+devidp.PathAuthorize, form, http.StatusOK, "Allow access")
	for _, want := range []string{connectFineID, "apaleo account <strong>HAM</strong>", "<code>reservations.read</code>", "<code>offline_access</code>"} {
		if !strings.Contains(page, want) {
			t.Errorf("consent page lacks %q:\n%s", want, page)
		}
	}
	if got := f.idp.Stats().Authorizations; got != 0 {
		t.Fatalf("%d codes issued before consent", got)
	}

	consent := hiddenForm(t, page)
	consent.Set("consent", "deny")
	loc := postRedirect(t, b, f.ts.URL+devidp.PathAuthorize, consent)
	if q := loc.Query(); q.Get("error") != "access_denied" || q.Get("state") != "state-one-long" || q.Get("code") != "" {
		t.Fatalf("deny redirected to %s", loc)
	}

	// Logged in already: the next authorization goes straight to consent.
	authURL = cfg.AuthCodeURL("state-two-long", oauth2.S256ChallengeOption(verifier))
	consent = hiddenForm(t, getHTML(t, b, authURL, http.StatusOK, "Allow access"))
	consent.Set("consent", "allow")
	loc = postRedirect(t, b, f.ts.URL+devidp.PathAuthorize, consent)
	if loc.Query().Get("state") != "state-two-long" || loc.Query().Get("code") == "" {
		t.Fatalf("allow redirected to %s", loc)
	}
	tok, err := cfg.Exchange(f.ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("exchange: %v", err)
	}
}

func getHTML(t *testing.T, b *http.Client, u string, status int, want string) string {
	t.Helper()
	resp, err := b.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return readHTML(t, resp, status, want)
}

func postHTML(t *testing.T, b *http.Client, u string, form url.Values, status int, want string) string {
	t.Helper()
	resp, err := b.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	return readHTML(t, resp, status, want)
}

// readHTML checks a page's status, that it contains want and carries its policy headers.
func readHTML(t *testing.T, resp *http.Response, status int, want string) string {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	page := string(body)
	if resp.StatusCode != status || !strings.Contains(page, want) || !strings.HasPrefix(page, "<!doctype html>\n<html lang=\"en\">") {
		t.Fatalf("status %d (want %d, location %q), want %q in:\n%s", resp.StatusCode, status, resp.Header.Get("Location"), want, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; style-src 'sha256-") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", resp.Header)
	}
	return page
}

// postRedirect posts form and returns where the server redirects off its own host.
func postRedirect(t *testing.T, b *http.Client, u string, form url.Values) *url.URL {
	t.Helper()
	resp, err := b.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI+"?") {
		t.Fatalf("status %d, location %v (%v)", resp.StatusCode, loc, err)
	}
	return loc
}

// hiddenForm reads the hidden fields of a page's form (the authorize request's parameters).
func hiddenForm(t *testing.T, page string) url.Values {
	t.Helper()
	v := url.Values{}
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, `<input type="hidden" name="`) {
			continue
		}
		rest := strings.TrimPrefix(line, `<input type="hidden" name="`)
		name, rest, _ := strings.Cut(rest, `" value="`)
		value, _, _ := strings.Cut(rest, `">`)
		v.Add(name, htmlUnescape(value))
	}
	if v.Get("client_id") == "" || v.Get("devidp_step") == "" {
		t.Fatalf("no authorize parameters in the form:\n%s", page)
	}
	return v
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}
