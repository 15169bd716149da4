package apaleo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// credential.go is the domain of a credential: the storage entry creds/<name> (a
// client-credentials config's own, an authorized or a narrowed credential), its cached
// access token and when that may be handed out, a refused refresh token, and the scopes
// its token requests ask for. Below the path files and the engine, beside store.go.

// credential is the storage entry creds/<name>: what creds/<name> reads. For a
// client-credentials config it shares the config's name and only caches its token; an
// authorized credential (authorization code flow) also holds the refresh token.
//
// A narrowed credential is a client_credentials one of another name than its config,
// with Scopes: a subset of the config's, which its token requests ask for.
type credential struct {
	Kind         credKind     `json:"kind,omitempty"`
	Config       string       `json:"config"`
	GrantType    string       `json:"grant_type"`
	RefreshToken string       `json:"refresh_token,omitempty"`
	Scopes       []string     `json:"scopes,omitempty"` // scopes consented to
	AccountCode  string       `json:"account_code,omitempty"`
	CreatedAt    time.Time    `json:"created_at,omitzero"`
	Token        *cachedToken `json:"token,omitempty"`
	// Refused: apaleo refused the refresh token (needs_authorization); stored, so that no
	// node sends it again. A new authorization or import writes a credential without it.
	Refused *refusal `json:"refused,omitempty"`
	// ClientID and IdentityURL bind an authorized credential to the app that issued its
	// refresh token (the config's as the callback, exchange or import stored it): the
	// token is sent to that app at that server only. Empty in entries stored before
	// bindings were: those are bound to their config as it stands until the first
	// chance to store it (bindUnbound), which comes before any change of the config.
	ClientID    string `json:"client_id,omitempty"`
	IdentityURL string `json:"identity_url,omitempty"`
}

// refusal is a refused refresh token: when, and the error a read answers.
type refusal struct {
	At    time.Time `json:"at"`
	Error string    `json:"error"`
}

// configCred is the credential of a client_credentials config at its own name, with no
// token yet.
func configCred(config string) *credential {
	return &credential{Kind: kindClientCredentials, Config: config, GrantType: grantClientCredentials}
}

// credKind is what a credential is; behaviour that differs switches on it.
type credKind string

const (
	kindClientCredentials credKind = "client_credentials" // a client_credentials config's own, at its name
	kindAuthorized        credKind = "authorized"         // a refresh token of a connect app, for one hotel account
	kindNarrowed          credKind = "narrowed"           // a client_credentials config's grant with a subset of its scopes
)

// UnmarshalJSON reads a stored credential; an entry written before kinds were stored
// gets its kind from its fields, once, as it is read.
func (c *credential) UnmarshalJSON(data []byte) error {
	type stored credential
	var v stored
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*c = credential(v)
	if c.Kind == "" {
		switch {
		case c.GrantType == grantAuthorizationCode:
			c.Kind = kindAuthorized
		case len(c.Scopes) > 0:
			c.Kind = kindNarrowed
		default:
			c.Kind = kindClientCredentials
		}
	}
	return nil
}

// cachedToken is an access token kept until it nears expiry.
type cachedToken struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Scopes      []string  `json:"scopes"`
	AccountCode string    `json:"account_code,omitempty"`
	ClientID    string    `json:"client_id,omitempty"`
	Generation  uint64    `json:"generation"` // of the config it was issued under
}

// expirySkew keeps a token from being handed out in its last seconds.
const expirySkew = 5 * time.Second

// fresh reports whether the token may be handed out without asking for a new one: it
// has more than min_ttl left, or more than half its lifetime where that is shorter.
func (t *cachedToken) fresh(cfg *apaleoConfig, now time.Time) bool {
	return t.valid(cfg, now) && now.Before(t.freshUntil(cfg))
}

// freshUntil is when the token stops being fresh: min_ttl (or half its lifetime, where
// that is shorter) before it expires, and never later than it stops being valid.
func (t *cachedToken) freshUntil(cfg *apaleoConfig) time.Time {
	threshold := min(cfg.MinTTL, t.ExpiresAt.Sub(t.IssuedAt)/2)
	return t.ExpiresAt.Add(-max(threshold, expirySkew))
}

// valid reports whether the token still works: served when a refresh fails.
func (t *cachedToken) valid(cfg *apaleoConfig, now time.Time) bool {
	return t != nil && t.Generation == cfg.Generation && t.ExpiresAt.Sub(now) > expirySkew
}

func newCachedToken(res *tokenResult, generation uint64) *cachedToken {
	return &cachedToken{
		AccessToken: res.AccessToken,
		TokenType:   res.TokenType,
		IssuedAt:    res.IssuedAt,
		ExpiresAt:   res.Expiry,
		Scopes:      res.Scopes,
		AccountCode: res.AccountCode,
		ClientID:    res.ClientID,
		Generation:  generation,
	}
}

// bound reports whether c stores the app its refresh token was issued by.
func (c *credential) bound() bool { return c.ClientID != "" }

// bindTo binds c to cfg's app: an authorization, or an entry stored before bindings were.
func (c *credential) bindTo(cfg *apaleoConfig) {
	c.ClientID, c.IdentityURL = cfg.ClientID, cfg.IdentityURL
}

// issuedBy reports whether cfg names the app that issued c's refresh token, the only one
// it is sent to. A credential without a refresh token, or stored before bindings were,
// has no other app than its config's.
func (c *credential) issuedBy(cfg *apaleoConfig) bool {
	return c.Kind != kindAuthorized || !c.bound() || c.ClientID == cfg.ClientID && c.IdentityURL == cfg.IdentityURL
}

// otherApp is the error of an authorized credential whose config names another app than
// the one that issued its refresh token (a config writer repointed client_id or
// identity_url): nothing is sent for it, not even a revocation, until the config names
// that app again or the credential is authorized under the new one. It names both apps
// and never a secret.
func otherApp(name string, cred *credential, cfg *apaleoConfig) error {
	if cfg == nil || cred.issuedBy(cfg) {
		return nil
	}
	return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
		"the refresh token of creds/%s was issued to client_id %q at %s, but config/%s now names client_id %q at %s: a refresh token is sent only to the app that issued it, so nothing was sent and it stays stored; write config/%s back to client_id=%s identity_url=%s (with that app's client_secret) to use it again, or run authorize/%s config=%s to authorize it under the new app",
		name, cred.ClientID, cred.IdentityURL, cred.Config, cfg.ClientID, cfg.IdentityURL, cred.Config, cred.ClientID, cred.IdentityURL, name, cred.Config))
}

// outsideConfig is the error of a narrowed credential whose scopes its config no
// longer lists: no token request goes out for it until one of the two changes.
func outsideConfig(name string, cred *credential, cfg *apaleoConfig) error {
	if cfg == nil || cred.Kind != kindNarrowed || len(cfg.Scopes) == 0 {
		return nil
	}
	wider := notIn(cred.Scopes, cfg.Scopes)
	if len(wider) == 0 {
		return nil
	}
	return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
		"creds/%s is narrowed to scopes %q, but config/%s no longer lists %q (its scopes are %q): add them to config/%s, or delete creds/%s and create it with a subset",
		name, strings.Join(cred.Scopes, " "), cred.Config, strings.Join(wider, " "), strings.Join(cfg.Scopes, " "), cred.Config, name))
}

// notIn lists the scopes of asked that have does not.
func notIn(asked, have []string) []string {
	var out []string
	for _, s := range asked {
		if !slices.Contains(have, s) {
			out = append(out, s)
		}
	}
	return out
}

// tokenScopes are the scopes name's token requests ask for: those consented to or
// narrowed to, else the config's.
func tokenScopes(cred *credential, cfg *apaleoConfig) []string {
	switch cred.Kind {
	case kindAuthorized, kindNarrowed:
		if len(cred.Scopes) > 0 {
			return cred.Scopes
		}
	}
	return cfg.Scopes
}
