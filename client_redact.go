package apaleo

import (
	"encoding/base64"
	"encoding/json"
	"html"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// client_redact.go keeps secrets out of what the identity server (or a proxy or debug page
// in front of it) sends back: every text of an upstream error is redacted and bounded here
// before anything else sees it.

// snippet is a short printable prefix of a non-OAuth error body, already redacted.
func snippet(body string) string {
	s := strings.TrimSpace(printable(body))
	if s == "" {
		return "empty body"
	}
	return "body: " + truncate(s, maxSnippet)
}

// Bounds on upstream text carried in an error.
const (
	maxSnippet     = 200
	maxDescription = 500
	maxCode        = 100
)

// printable replaces control characters and invalid UTF-8, which would garble a log line.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, " "))
}

// truncate cuts s to at most n bytes on a rune boundary, marking a cut with "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// redactedMark replaces a request's secrets in upstream text.
const redactedMark = "[redacted]"

// redactor removes one request's secrets from what the server (or a proxy or debug page
// in front of it, which may echo the request) answered, before any of it is used.
type redactor struct {
	forms []string // every form a secret may take in an echo, longest first
}

// redactor knows the client secret (as sent in the form and inside the Basic header) and
// the request's own secrets: a refresh token, a code, a PKCE verifier.
func (c *identityClient) redactor(secrets ...string) *redactor {
	r := &redactor{}
	add := func(s string) {
		if s == "" {
			return
		}
		js, _ := json.Marshal(s)
		for _, f := range []string{s, url.QueryEscape(s), url.PathEscape(s), strings.Trim(string(js), `"`), html.EscapeString(s)} {
			if !slices.Contains(r.forms, f) {
				r.forms = append(r.forms, f)
			}
		}
	}
	for _, s := range append([]string{c.settings.ClientSecret}, secrets...) {
		add(s)
	}
	if c.settings.ClientSecret != "" {
		// HTTP Basic as oauth2 and Revoke send it, and as RFC 7617 would without escaping.
		for _, pair := range []string{
			url.QueryEscape(c.settings.ClientID) + ":" + url.QueryEscape(c.settings.ClientSecret),
			c.settings.ClientID + ":" + c.settings.ClientSecret,
		} {
			add(base64.StdEncoding.EncodeToString([]byte(pair)))
			add(base64.RawStdEncoding.EncodeToString([]byte(pair)))
		}
	}
	slices.SortFunc(r.forms, func(a, b string) int { return len(b) - len(a) })
	return r
}

// redact replaces every secret in s, and a secret's beginning where s was cut off in it.
func (r *redactor) redact(s string) string {
	for _, f := range r.forms {
		s = strings.ReplaceAll(s, f, redactedMark)
	}
	for _, f := range r.forms {
		for k := len(f) - 1; k >= minRedactedPrefix; k-- {
			if strings.HasSuffix(s, f[:k]) {
				s = s[:len(s)-k] + redactedMark
				break
			}
		}
	}
	return s
}

// minRedactedPrefix: a text that ends in this much of a secret's start was cut off in it.
const minRedactedPrefix = 6

// clean redacts every text of ue that came from upstream and bounds it, so an
// *upstreamError leaving client.go holds no secret of its request.
func (r *redactor) clean(ue *upstreamError) *upstreamError {
	ue.Code = truncate(printable(r.redact(ue.Code)), maxCode)
	ue.Description = truncate(printable(r.redact(ue.Description)), maxDescription)
	if ue.body != nil {
		ue.cause = snippet(r.redact(string(ue.body)))
		ue.body = nil
	}
	ue.cause = truncate(printable(r.redact(ue.cause)), maxDescription)
	return ue
}
