package devidp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/ory/fosite"
)

// Grant types and scopes with a meaning to the server.
const (
	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"

	// ScopeOfflineAccess must be granted for a refresh token to be issued.
	ScopeOfflineAccess = "offline_access"

	// DefaultAccountCode is the account of the built-in test user, used as
	// account_code of authorization-code clients that do not set one.
	DefaultAccountCode = "DEMO"

	// TestUser is the subject ("sub") of tokens issued through the
	// authorization code flow: the built-in user who consents automatically.
	TestUser = "dev-test-user"
)

// Client is an OAuth client registered with the server. The JSON form (used
// by -clients-file and POST /_admin/clients) uses the snake_case names below.
type Client struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
	// AccountCode goes into the access-token claim "account_code". For
	// client-credentials clients the claim is left out when empty; for
	// authorization-code clients it is the account of the consenting test
	// user and defaults to DefaultAccountCode.
	AccountCode string `json:"account_code,omitempty"`
	// Scopes the client may request. A client-credentials request without a
	// scope parameter is granted all of them (as Duende does). Clients with
	// the refresh_token grant may also request offline_access.
	Scopes []string `json:"scopes,omitempty"`
	// GrantedScopes, if set, are granted instead of the requested scopes
	// (apaleo "fine-grained" clients get "identity:permissions"). An
	// authorization-code request that asks for offline_access keeps it.
	GrantedScopes []string `json:"granted_scopes,omitempty"`
	// RedirectURIs for authorization_code clients (exact match).
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// GrantTypes: "client_credentials", or "authorization_code" and
	// "refresh_token". Default: authorization_code+refresh_token when
	// RedirectURIs are set, client_credentials otherwise.
	GrantTypes []string `json:"grant_types,omitempty"`
}

func (c Client) has(grant string) bool { return slices.Contains(c.GrantTypes, grant) }

// accountCode is the account_code claim for tokens of this client's grant.
func (c Client) accountCode(grant string) string {
	if c.AccountCode == "" && grant == GrantAuthorizationCode {
		return DefaultAccountCode
	}
	return c.AccountCode
}

// normalize validates c and fills in defaults.
func (c Client) normalize() (Client, error) {
	if c.ID == "" {
		return c, errors.New("client: id is required")
	}
	if c.Secret == "" {
		return c, fmt.Errorf("client %q: secret is required", c.ID)
	}
	c.Scopes = slices.Clone(c.Scopes)
	c.GrantedScopes = slices.Clone(c.GrantedScopes)
	c.RedirectURIs = slices.Clone(c.RedirectURIs)
	c.GrantTypes = slices.Clone(c.GrantTypes)
	if len(c.GrantTypes) == 0 {
		if len(c.RedirectURIs) > 0 {
			c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
		} else {
			c.GrantTypes = []string{GrantClientCredentials}
		}
	}
	for _, g := range c.GrantTypes {
		switch g {
		case GrantClientCredentials, GrantAuthorizationCode, GrantRefreshToken:
		default:
			return c, fmt.Errorf("client %q: unsupported grant type %q", c.ID, g)
		}
	}
	for _, list := range [][]string{c.Scopes, c.GrantedScopes} {
		for _, s := range list {
			if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
				return c, fmt.Errorf("client %q: invalid scope %q", c.ID, s)
			}
		}
	}
	if c.has(GrantAuthorizationCode) && len(c.RedirectURIs) == 0 {
		return c, fmt.Errorf("client %q: the authorization_code grant needs a redirect URI", c.ID)
	}
	for _, u := range c.RedirectURIs {
		p, err := url.Parse(u)
		if err != nil || !p.IsAbs() || p.Host == "" || p.Fragment != "" {
			return c, fmt.Errorf("client %q: redirect URI %q must be absolute, with a host and without fragment", c.ID, u)
		}
	}
	return c, nil
}

func newRegisteredClient(c Client) (*registeredClient, error) {
	c, err := c.normalize()
	if err != nil {
		return nil, err
	}
	allowed := slices.Clone(c.Scopes)
	for _, s := range c.GrantedScopes {
		if !slices.Contains(allowed, s) {
			allowed = append(allowed, s)
		}
	}
	if c.has(GrantRefreshToken) && !slices.Contains(allowed, ScopeOfflineAccess) {
		allowed = append(allowed, ScopeOfflineAccess)
	}
	hash, _ := secretHasher{}.Hash(context.Background(), []byte(c.Secret))
	return &registeredClient{
		cfg: c,
		fosite: &fosite.DefaultClient{
			ID:            c.ID,
			Secret:        hash,
			RedirectURIs:  slices.Clone(c.RedirectURIs),
			GrantTypes:    slices.Clone(c.GrantTypes),
			ResponseTypes: []string{"code"},
			Scopes:        allowed,
			Audience:      []string{},
		},
	}, nil
}

// secretHasher replaces fosite's bcrypt: client secrets are compared as
// SHA-256 digests in constant time. Token requests stay cheap (benchmarks
// measure the server's own time) and secrets of any length work (bcrypt
// refuses more than 72 bytes).
type secretHasher struct{}

func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return []byte(hex.EncodeToString(sum[:])), nil
}

func (h secretHasher) Compare(ctx context.Context, hash, data []byte) error {
	want, _ := h.Hash(ctx, data)
	if subtle.ConstantTimeCompare(hash, want) != 1 {
		return errors.New("client secret mismatch")
	}
	return nil
}

// ParseClientSpec parses the -client flag syntax
//
//	id:secret[:account_code[:scopes[:redirect_uri]]]
//
// scopes are comma separated. A client with a redirect URI gets the
// authorization_code and refresh_token grants, otherwise client_credentials.
// The redirect URI may contain colons; id and secret may not.
func ParseClientSpec(spec string) (Client, error) {
	parts := strings.SplitN(spec, ":", 5)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return Client{}, fmt.Errorf("client spec %q: want id:secret[:account_code[:scopes[:redirect_uri]]]", redactSpec(spec))
	}
	c := Client{ID: parts[0], Secret: parts[1]}
	if len(parts) > 2 {
		c.AccountCode = parts[2]
	}
	if len(parts) > 3 {
		for _, s := range strings.Split(parts[3], ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.Scopes = append(c.Scopes, s)
			}
		}
	}
	if len(parts) > 4 && parts[4] != "" {
		c.RedirectURIs = []string{parts[4]}
	}
	n, err := c.normalize()
	if err != nil {
		return Client{}, err
	}
	return n, nil
}

// redactSpec hides the secret of a client spec in error messages.
func redactSpec(spec string) string {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) >= 2 {
		parts[1] = "***"
	}
	return strings.Join(parts, ":")
}

// LoadClientsFile reads a JSON list of Client (snake_case keys, see Client).
// Unknown keys are an error.
func LoadClientsFile(path string) ([]Client, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var list []Client
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i := range list {
		if list[i], err = list[i].normalize(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return list, nil
}
