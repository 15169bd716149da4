package apaleo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "config/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "config",
			},
			Fields:         configSchema,
			ExistenceCheck: b.pathConfigExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathConfigWrite,
					Summary:                     "Register an apaleo app.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathConfigWrite,
					Summary:                     "Update an apaleo app; omitted fields keep their value.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathConfigRead,
					Summary:  "Read an apaleo app's config (never its client_secret).",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathConfigDelete,
					Summary:                     "Delete an apaleo app's config.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathConfigHelpSyn,
			HelpDescription: pathConfigHelpDesc,
		},
		{
			Pattern: "config/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "configs",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathConfigList,
					Summary:  "List apaleo app configs.",
				},
			},
			HelpSynopsis:    pathConfigListHelpSyn,
			HelpDescription: pathConfigListHelpDesc,
		},
	}
}

func (b *backend) pathConfigExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	cfg, err := readConfig(ctx, req.Storage, d.Get("name").(string))
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.config(ctx, req.Storage, d.Get("name").(string))
	if err != nil || cfg == nil {
		return nil, err
	}
	data := map[string]any{
		"client_id":      cfg.ClientID,
		"grant_type":     cfg.GrantType,
		"scopes":         nonNil(cfg.Scopes),
		"redirect_uri":   cfg.RedirectURI,
		"identity_url":   cfg.IdentityURL,
		"ca_certificate": cfg.CACertificate,
		"min_ttl":        int64(cfg.MinTTL.Seconds()),
		"refresh_ahead":  cfg.RefreshAhead,

		"max_token_requests_per_second": cfg.MaxTokenRequestsPerSecond,
		"idle_refresh_interval":         int64(cfg.IdleRefreshInterval.Seconds()),
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathConfigList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, configPrefix)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := checkNameLength("name", name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	// Credentials stored by earlier versions learn their app before any write can change it.
	if err := b.bindUnbound(ctx, req.Storage); err != nil {
		return nil, err
	}
	for _, l := range b.locksFor(configPrefix+name, credsPrefix+name) {
		l.Lock()
		defer l.Unlock()
	}

	old, err := readConfig(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	cfg, err := configFromRequest(old, d, req.Operation == logical.CreateOperation || old == nil)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}

	var cred *credential
	if cfg.GrantType == grantClientCredentials {
		if cred, err = readCred(ctx, req.Storage, name); err != nil {
			return nil, err
		}
		switch {
		case cred == nil:
		case cred.Kind == kindAuthorized:
			return logical.ErrorResponse("name %q is taken by an authorized credential (creds/%s); choose another config name", name, name), nil
		case cred.Kind == kindNarrowed || cred.Config != name:
			return logical.ErrorResponse("name %q is taken by a narrowed credential of config/%s (creds/%s); choose another config name", name, cred.Config, name), nil
		}
	}

	if old == nil {
		cfg.Generation = 1
	} else if tokensChanged(old, cfg) {
		cfg.Generation = old.Generation + 1
	}
	if err := b.putConfig(ctx, req.Storage, name, cfg); err != nil {
		return nil, err
	}
	// The write may have fixed what failed: its credentials may ask apaleo again.
	newConnection := old != nil && connectionChanged(old, cfg)
	b.clearFailures(name, newConnection)
	if newConnection && (cfg.ClientID != old.ClientID || cfg.IdentityURL != old.IdentityURL) {
		b.budgets.drop(name) // another app: the old one's 429 hold is not its own
	}

	// A client-credentials config is readable at creds/<name> from the start; a new
	// generation drops the cached token.
	if cfg.GrantType == grantClientCredentials && (cred == nil || cred.Token != nil && cred.Token.Generation != cfg.Generation) {
		if err := b.putCred(ctx, req.Storage, name, configCred(name)); err != nil {
			return nil, err
		}
	}
	b.Logger().Info("config written", "config", name, "grant_type", cfg.GrantType, "client_id", cfg.ClientID,
		"identity_url", cfg.IdentityURL, "tokens_dropped", old != nil && cfg.Generation != old.Generation)
	return nil, nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	for _, l := range b.locksFor(configPrefix+name, credsPrefix+name) {
		l.Lock()
		defer l.Unlock()
	}
	cfg, err := readConfig(ctx, req.Storage, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	users, err := b.credsUsing(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(users) > 0 {
		kind := "authorized"
		if cfg.GrantType == grantClientCredentials {
			kind = "narrowed"
		}
		return logical.ErrorResponse("config %q is still used by %s credentials %s; delete those creds/ first",
			name, kind, strings.Join(users, ", ")), nil
	}
	if cfg.GrantType == grantClientCredentials {
		if err := b.deleteCred(ctx, req.Storage, name); err != nil {
			return nil, err
		}
	}
	if err := req.Storage.Delete(ctx, configPrefix+name); err != nil {
		return nil, err
	}
	b.forgetConfig(name)
	b.budgets.drop(name)
	b.metrics.forgetConfig(name)
	b.Logger().Info("config deleted", "config", name)
	return nil, nil
}

// configFromRequest applies the request's fields to a copy of old (nil on create) and
// validates the result. Nothing is stored here.
func configFromRequest(old *apaleoConfig, d *framework.FieldData, create bool) (*apaleoConfig, error) {
	cfg := baseConfig(old)
	if err := applyTextFields(cfg, d); err != nil {
		return nil, err
	}
	if err := applySettings(cfg, d); err != nil {
		return nil, err
	}
	if err := checkClient(old, cfg, create); err != nil {
		return nil, err
	}
	if err := checkGrant(cfg); err != nil {
		return nil, err
	}
	if err := checkEndpoint(old, cfg, d); err != nil {
		return nil, err
	}
	return cfg, nil
}

// baseConfig is a copy of old, or a new config's defaults.
func baseConfig(old *apaleoConfig) *apaleoConfig {
	cfg := &apaleoConfig{GrantType: grantClientCredentials, IdentityURL: defaultIdentityURL, MinTTL: defaultMinTTL,
		RefreshAhead: true, MaxTokenRequestsPerSecond: defaultBudget, IdleRefreshInterval: defaultIdleRefresh}
	if old != nil {
		*cfg = *old
		cfg.Scopes = slices.Clone(old.Scopes)
	}
	return cfg
}

// applyTextFields applies the string fields given, trimmed (but the PEM) and bounded.
func applyTextFields(cfg *apaleoConfig, d *framework.FieldData) error {
	for _, f := range []struct {
		key string
		dst *string
		max int
	}{
		{"client_id", &cfg.ClientID, maxValueLen},
		{"client_secret", &cfg.ClientSecret, maxValueLen},
		{"grant_type", &cfg.GrantType, maxValueLen},
		{"redirect_uri", &cfg.RedirectURI, maxValueLen},
		{"identity_url", &cfg.IdentityURL, maxValueLen},
		{"ca_certificate", &cfg.CACertificate, maxCALen},
	} {
		v, ok, err := d.GetOkErr(f.key)
		if err != nil {
			return fmt.Errorf("%s: %v", f.key, err)
		}
		if !ok {
			continue
		}
		s := v.(string)
		if f.key != "ca_certificate" {
			s = strings.TrimSpace(s)
		}
		if len(s) > f.max {
			return fmt.Errorf("%s is %d bytes long; the limit is %d", f.key, len(s), f.max)
		}
		*f.dst = s
	}
	return nil
}

// applySettings applies scopes, the durations, refresh_ahead and the budget given.
func applySettings(cfg *apaleoConfig, d *framework.FieldData) error {
	if v, ok, err := d.GetOkErr("scopes"); err != nil {
		return fmt.Errorf("scopes: %v", err)
	} else if ok {
		scopes, err := parseScopes(v.([]string))
		if err != nil {
			return err
		}
		cfg.Scopes = scopes
	}
	if err := applySeconds(d, "min_ttl", &cfg.MinTTL, "use a duration such as 15m or a number of seconds", "min_ttl must not be negative"); err != nil {
		return err
	}
	if err := applySeconds(d, "idle_refresh_interval", &cfg.IdleRefreshInterval, "use a duration such as 168h or a number of seconds, or 0 for never",
		"idle_refresh_interval must not be negative; use 0 to turn keep-alive off"); err != nil {
		return err
	}
	if v, ok, err := d.GetOkErr("refresh_ahead"); err != nil {
		return fmt.Errorf("refresh_ahead: %v; use true or false", err)
	} else if ok {
		cfg.RefreshAhead = v.(bool)
	}
	if v, ok, err := d.GetOkErr("max_token_requests_per_second"); err != nil {
		return fmt.Errorf("max_token_requests_per_second: %v; use a number such as 10, or 0 for no limit", err)
	} else if ok {
		n := v.(float64)
		if n < 0 || math.IsNaN(n) || math.IsInf(n, 0) || n > 1e6 {
			return errors.New("max_token_requests_per_second must be a number from 0 (no limit) to 1000000")
		}
		cfg.MaxTokenRequestsPerSecond = n
	}
	return nil
}

// applySeconds applies a duration field given in seconds, refusing a negative one.
func applySeconds(d *framework.FieldData, key string, dst *time.Duration, how, negative string) error {
	v, ok, err := d.GetOkErr(key)
	if err != nil {
		return fmt.Errorf("%s: %v; %s", key, err, how)
	}
	if !ok {
		return nil
	}
	secs := v.(int)
	if secs < 0 {
		return errors.New(negative)
	}
	*dst = time.Duration(secs) * time.Second
	return nil
}

// checkClient checks the grant type did not change and the client id and secret.
func checkClient(old, cfg *apaleoConfig, create bool) error {
	if old != nil && old.GrantType != cfg.GrantType {
		return fmt.Errorf("grant_type cannot change from %q to %q; delete the config and create it anew", old.GrantType, cfg.GrantType)
	}
	if create {
		if cfg.ClientID == "" {
			return errors.New("client_id is required")
		}
		if cfg.ClientSecret == "" {
			return errors.New("client_secret is required")
		}
	} else if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return errors.New("client_id and client_secret must not be empty")
	}
	if err := validateText("client_id", cfg.ClientID); err != nil {
		return err
	}
	return validateText("client_secret", cfg.ClientSecret)
}

// checkGrant checks what the grant type needs: a redirect_uri and offline_access for
// authorization_code.
func checkGrant(cfg *apaleoConfig) error {
	switch cfg.GrantType {
	case grantClientCredentials:
		if cfg.RedirectURI != "" {
			return validateRedirectURI(cfg.RedirectURI)
		}
	case grantAuthorizationCode:
		if cfg.RedirectURI == "" {
			return errors.New("redirect_uri is required for grant_type authorization_code: the https URL apaleo redirects the admin to, usually https://<vault>/v1/<mount>/callback")
		}
		if err := validateRedirectURI(cfg.RedirectURI); err != nil {
			return err
		}
		if !slices.Contains(cfg.Scopes, "offline_access") {
			cfg.Scopes = append(cfg.Scopes, "offline_access")
		}
	default:
		return fmt.Errorf("grant_type %q is not supported; use %q or %q", cfg.GrantType, grantClientCredentials, grantAuthorizationCode)
	}
	return nil
}

// checkEndpoint checks identity_url and ca_certificate, and that a change of either
// carries the secret.
func checkEndpoint(old, cfg *apaleoConfig, d *framework.FieldData) error {
	u, err := validateEndpointURL("identity_url", cfg.IdentityURL, false)
	if err != nil {
		return err
	}
	cfg.IdentityURL = strings.TrimRight(u.String(), "/")

	if cfg.CACertificate != "" {
		if err := validatePEM(cfg.CACertificate); err != nil {
			return err
		}
	}
	// Whoever may update a config must not be able to send its stored secret (and every
	// refresh token made with it) to a host of their choosing.
	if old != nil && (cfg.IdentityURL != old.IdentityURL || cfg.CACertificate != old.CACertificate) {
		if _, ok := d.GetOk("client_secret"); !ok {
			return errors.New("a change of identity_url or ca_certificate must carry client_secret too: the stored secret is never sent to a host it was not written for")
		}
	}
	return nil
}

const (
	pathConfigHelpSyn  = "Register an apaleo OAuth 2.0 app."
	pathConfigHelpDesc = `
Stores an apaleo app's client credentials. grant_type client_credentials is an
apaleo "simple client" (one per hotel account): read its tokens from creds/<name>.
grant_type authorization_code is a "connect client": authorize credentials for
hotel accounts with authorize/<name>. client_secret is write-only. Updates are
partial. Changing client_id, identity_url or scopes drops the cached access
tokens of this config and its credentials; changing only client_secret or
ca_certificate keeps them (they stay valid at apaleo). A change of identity_url
or ca_certificate must carry client_secret. An authorized credential keeps the
client_id and identity_url it was authorized under: while the config names
others it needs authorization, and writing them back revives it. Read shows
upstream (ok, or down with down_since and next_probe_at).
`
	pathConfigListHelpSyn  = "List apaleo app configs."
	pathConfigListHelpDesc = "Lists the names of all configs."
)

// configSchema are the fields of config/<name>.
var configSchema = map[string]*framework.FieldSchema{
	"name": {
		Type:        framework.TypeString,
		Description: "Name of the config.",
		Required:    true,
	},
	"client_id": {
		Type:        framework.TypeString,
		Description: "apaleo client id. Required on create.",
	},
	"client_secret": {
		Type:         framework.TypeString,
		Description:  "apaleo client secret. Required on create; write-only.",
		DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
	},
	"grant_type": {
		Type:          framework.TypeString,
		Description:   `"client_credentials" (apaleo simple client) or "authorization_code" (apaleo connect client).`,
		Default:       grantClientCredentials,
		AllowedValues: []any{grantClientCredentials, grantAuthorizationCode},
	},
	"scopes": {
		Type:        framework.TypeCommaStringSlice,
		Description: "Scopes to request, separated by commas and/or spaces. offline_access is added for authorization_code.",
	},
	"redirect_uri": {
		Type:        framework.TypeString,
		Description: "Redirect URI registered with apaleo; required for authorization_code. Usually https://<vault>/v1/<mount>/callback.",
	},
	"identity_url": {
		Type:        framework.TypeString,
		Description: "Base URL of the identity server's /connect/* endpoints.",
		Default:     defaultIdentityURL,
	},
	"ca_certificate": {
		Type:        framework.TypeString,
		Description: "PEM certificates trusted for identity_url, in addition to the system roots.",
	},
	"min_ttl": {
		Type:        framework.TypeDurationSecond,
		Description: "A cached access token is handed out only while it has more than min_ttl left (or more than half its lifetime, where that is shorter).",
		Default:     defaultMinTTL.String(),
	},
	"refresh_ahead": {
		Type:        framework.TypeBool,
		Description: "Refresh the tokens of credentials in use before they stop being fresh, so readers never wait on apaleo.",
		Default:     true,
	},
	"max_token_requests_per_second": {
		Type:        framework.TypeFloat,
		Description: "The most token requests this config (one apaleo app) sends per second; 0 for no limit.",
		Default:     defaultBudget,
	},
	"idle_refresh_interval": {
		Type:        framework.TypeDurationSecond,
		Description: "Keep-alive: an authorized credential whose refresh token has not been used for this long is refreshed in the background, so a sliding refresh-token lifetime at apaleo never lapses; 0 for never.",
		Default:     defaultIdleRefresh.String(),
	},
}
