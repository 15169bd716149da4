package apaleo

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// config.go is the domain of a config (one registered apaleo app): the storage entry
// config/<name>, its defaults, and the rules on its values (scopes, URLs, PEM, names) and
// on a change of it (which drops cached tokens, which may fix a failure). Below the path
// files: path_config.go parses requests into it and formats it.

const (
	grantClientCredentials = "client_credentials"
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token" // the grant of an authorized credential's token requests

	defaultIdentityURL = "https://identity.apaleo.com"
	defaultMinTTL      = 15 * time.Minute
	defaultBudget      = 10 // token requests per second and config
	// defaultIdleRefresh keeps a refresh token alive well inside IdentityServer's default
	// sliding lifetime (15 days).
	defaultIdleRefresh = 7 * 24 * time.Hour

	maxValueLen = 4 << 10  // any string field
	maxCALen    = 64 << 10 // ca_certificate
)

// apaleoConfig is the storage entry config/<name>: one registered apaleo app.
type apaleoConfig struct {
	ClientID      string        `json:"client_id"`
	ClientSecret  string        `json:"client_secret"`
	GrantType     string        `json:"grant_type"`
	Scopes        []string      `json:"scopes,omitempty"`
	RedirectURI   string        `json:"redirect_uri,omitempty"`
	IdentityURL   string        `json:"identity_url"`
	CACertificate string        `json:"ca_certificate,omitempty"`
	MinTTL        time.Duration `json:"min_ttl"`
	RefreshAhead  bool          `json:"refresh_ahead"`
	// MaxTokenRequestsPerSecond is the config's token request budget; 0 for no limit.
	MaxTokenRequestsPerSecond float64 `json:"max_token_requests_per_second"`
	// IdleRefreshInterval is keep-alive's: an authorized credential whose refresh token
	// was not used for this long is refreshed in the background; 0 for never.
	IdleRefreshInterval time.Duration `json:"idle_refresh_interval"`
	// Generation changes whenever a field that shapes the tokens changes; cached access
	// tokens of an older generation are never handed out.
	Generation uint64 `json:"generation"`
}

// UnmarshalJSON reads a stored config; fields that entries of older versions lack take
// their defaults.
func (c *apaleoConfig) UnmarshalJSON(data []byte) error {
	type stored apaleoConfig
	v := stored{RefreshAhead: true, MaxTokenRequestsPerSecond: defaultBudget, IdleRefreshInterval: defaultIdleRefresh}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*c = apaleoConfig(v)
	return nil
}

func (c *apaleoConfig) settings() clientSettings {
	return clientSettings{
		ClientID:      c.ClientID,
		ClientSecret:  c.ClientSecret,
		IdentityURL:   c.IdentityURL,
		CACertificate: c.CACertificate,
		RedirectURI:   c.RedirectURI,
	}
}

func connectionChanged(a, b *apaleoConfig) bool {
	return tokensChanged(a, b) || a.ClientSecret != b.ClientSecret || a.CACertificate != b.CACertificate
}

// tokensChanged reports a change that makes the config's cached access tokens another
// app's, server's or grant's: they are dropped (a new Generation). A new client_secret
// or ca_certificate alone keeps them: they stay valid at apaleo, and rotating an app's
// secret must not send every hotel to apaleo at once.
func tokensChanged(a, b *apaleoConfig) bool {
	return a.ClientID != b.ClientID || a.IdentityURL != b.IdentityURL || !slices.Equal(a.Scopes, b.Scopes)
}

// parseScopes splits on commas and white space, keeps case and order, drops duplicates,
// and checks RFC 6749's scope-token characters (%x21 / %x23-5B / %x5D-7E).
func parseScopes(in []string) ([]string, error) {
	var out []string
	for _, part := range in {
		for _, s := range strings.FieldsFunc(part, func(r rune) bool {
			return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
		}) {
			if len(s) > maxValueLen {
				return nil, fmt.Errorf("scope %.20q... is longer than %d bytes", s, maxValueLen)
			}
			for _, r := range s {
				if r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e {
					return nil, fmt.Errorf("scope %q has the character %q, which RFC 6749 does not allow in a scope", s, r)
				}
			}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	if n := len(strings.Join(out, " ")); n > maxValueLen {
		return nil, fmt.Errorf("scopes add up to %d bytes; the limit is %d", n, maxValueLen)
	}
	return out, nil
}

// checkNameLength bounds names, which become storage keys and appear in logs.
func checkNameLength(field, name string) error {
	if len(name) > maxValueLen {
		return fmt.Errorf("%s is %d bytes long; the limit is %d", field, len(name), maxValueLen)
	}
	return nil
}

// validateText refuses control characters, which no client id or secret contains.
func validateText(field, s string) error {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s contains a control character", field)
		}
	}
	return nil
}

// validateEndpointURL accepts an absolute https URL, or plain http for loopback hosts,
// without user info, query or fragment (query allowed when allowQuery).
func validateEndpointURL(field, raw string, allowQuery bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid URL: %v", field, errors.Unwrap(err))
	}
	if !u.IsAbs() || u.Host == "" {
		return nil, fmt.Errorf("%s must be an absolute URL such as https://host/path, got %q", field, raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%s must use https; plain http is allowed only for loopback hosts (127.0.0.1, ::1, localhost)", field)
		}
	default:
		return nil, fmt.Errorf("%s must use https, got scheme %q", field, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s must not contain user info", field)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("%s must not contain a #fragment", field)
	}
	if !allowQuery && (u.RawQuery != "" || strings.Contains(raw, "?")) {
		return nil, fmt.Errorf("%s must not contain a ?query", field)
	}
	return u, nil
}

func validateRedirectURI(raw string) error {
	_, err := validateEndpointURL("redirect_uri", raw, true)
	return err
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validatePEM(s string) error {
	rest := []byte(s)
	certs := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("ca_certificate holds a %q PEM block; only CERTIFICATE blocks are accepted", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("ca_certificate: certificate %d cannot be parsed: %v", certs+1, err)
		}
		certs++
	}
	if certs == 0 || strings.TrimSpace(string(rest)) != "" {
		return errors.New("ca_certificate must be one or more PEM-encoded CERTIFICATE blocks")
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
