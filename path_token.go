package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// credential is the storage entry creds/<name>: what creds/<name> reads. For a
// client-credentials config it shares the config's name and only caches its token; an
// authorized credential (authorization code flow) also holds the refresh token.
type credential struct {
	Config       string       `json:"config"`
	GrantType    string       `json:"grant_type"`
	RefreshToken string       `json:"refresh_token,omitempty"`
	Scopes       []string     `json:"scopes,omitempty"` // scopes consented to
	AccountCode  string       `json:"account_code,omitempty"`
	CreatedAt    time.Time    `json:"created_at,omitzero"`
	Token        *cachedToken `json:"token,omitempty"`

	// unsaved marks an in-memory copy holding a rotated refresh token that storage
	// refused: it wins over the stored entry until a later write succeeds.
	unsaved bool
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
	if !t.valid(cfg, now) {
		return false
	}
	threshold := min(cfg.MinTTL, t.ExpiresAt.Sub(t.IssuedAt)/2)
	return t.ExpiresAt.Sub(now) > threshold
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

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "creds/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "credentials",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of a client-credentials config or of an authorized credential.",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathCredsRead,
					Summary:  "Get an access token, reusing a cached one while it has enough time left.",
					Responses: map[int][]framework.Response{
						http.StatusOK: {{Description: "OK", Fields: secretAccessTokenFields}},
					},
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathCredsDelete,
					Summary:                     "Revoke and delete an authorized credential, or drop a client-credentials config's cached token.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathCredsHelpSyn,
			HelpDescription: pathCredsHelpDesc,
		},
		{
			Pattern: "creds/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "credentials",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathCredsList,
					Summary:  "List every name creds/ can read.",
				},
			},
			HelpSynopsis:    pathCredsListHelpSyn,
			HelpDescription: pathCredsListHelpDesc,
		},
	}
}

func (b *backend) pathCredsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, credsPrefix)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

// pathCredsRead is the hot path: a fresh cached token is answered from memory, with no
// storage round trip and no exclusive lock.
func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	cred, err := b.cred(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return b.credNotFound(ctx, req.Storage, name)
	}
	cfg, err := b.config(ctx, req.Storage, cred.Config)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, fmt.Errorf("credential %q refers to config %q, which does not exist", name, cred.Config)
	}
	if now := b.now(); cred.Token.fresh(cfg, now) {
		return b.tokenResponse(name, cred, now), nil
	}

	// A token request may rotate a refresh token, which must be stored: leave it to a
	// node that can write.
	if !b.canWrite() {
		return nil, logical.ErrReadOnly
	}
	// The shared request outlives any one caller's cancellation, so a rotated refresh
	// token is always stored; withRetries bounds its time.
	v, err, _ := b.flights.Do(name, func() (any, error) {
		return b.fetchToken(context.WithoutCancel(ctx), req.Storage, name)
	})
	if err != nil {
		return nil, err
	}
	out := v.(*fetchOutcome)
	resp := b.tokenResponse(name, out.cred, b.now())
	if out.warning != "" {
		resp.AddWarning(out.warning)
	}
	return resp, nil
}

func (b *backend) credNotFound(ctx context.Context, s logical.Storage, name string) (*logical.Response, error) {
	cfg, err := b.config(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.GrantType == grantAuthorizationCode {
		return logical.ErrorResponse("config %q is an authorization_code config: authorize a credential for a hotel account with authorize/<name> config=%s, then read creds/<name>", name, name), nil
	}
	return nil, nil
}

type fetchOutcome struct {
	cred    *credential
	warning string
}

// fetchToken gets a new access token for name under its lock. It re-reads storage
// first: another request may have fetched one, or rotated the refresh token, meanwhile.
func (b *backend) fetchToken(ctx context.Context, s logical.Storage, name string) (*fetchOutcome, error) {
	l := b.locksFor(credsPrefix + name)[0]
	l.Lock()
	defer l.Unlock()

	cred, err := b.credForUpdate(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("creds/%s was deleted", name))
	}
	// The in-memory config is as current as storage: config writes update it, and
	// Invalidate drops it on nodes that did not write.
	cfg, err := b.config(ctx, s, cred.Config)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, fmt.Errorf("credential %q refers to config %q, which does not exist", name, cred.Config)
	}
	now := b.now()
	if cred.Token.fresh(cfg, now) {
		b.remember(&b.creds, name, cred)
		return &fetchOutcome{cred: cred}, nil
	}

	srv, err := b.identity(cred.Config, cfg)
	if err != nil {
		return nil, err
	}
	policy := b.retry
	stale := cred.Token.valid(cfg, now)
	if stale {
		// A still-valid token is the answer if this one attempt fails: no retries.
		policy.Attempts = 1
		policy.Total = min(policy.PerAttempt, cred.Token.ExpiresAt.Sub(now)-expirySkew)
	}

	var res *tokenResult
	switch cred.GrantType {
	case grantClientCredentials:
		res, err = srv.ClientCredentials(ctx, cfg.Scopes, policy)
	default:
		res, err = srv.Refresh(ctx, cred.RefreshToken, policy)
	}
	if err != nil {
		err = explainUpstream(name, cred, cfg, err)
		if stale {
			b.Logger().Warn("token request failed; serving the cached token", "name", name, "expires_at", cred.Token.ExpiresAt, "error", err)
			b.remember(&b.creds, name, cred)
			return &fetchOutcome{cred: cred, warning: fmt.Sprintf("could not get a new token, so this cached one is served: %v", err)}, nil
		}
		b.Logger().Error("token request failed", "name", name, "config", cred.Config, "error", err)
		return nil, err
	}

	next := *cred
	next.Token = newCachedToken(res, cfg.Generation)
	if len(next.Token.Scopes) == 0 {
		// The server did not say what it granted: a refresh keeps the consented scopes.
		next.Token.Scopes = tokenScopes(cred, cfg)
	}
	if res.RefreshToken != "" {
		next.RefreshToken = res.RefreshToken
	}
	if next.AccountCode == "" {
		next.AccountCode = res.AccountCode
	}
	if err := b.putCred(ctx, s, name, &next); err != nil {
		// The token is good; only storing it failed. A rotated refresh token must not be
		// lost: hold it in memory, where it wins over storage, and store it later.
		next.unsaved = next.RefreshToken != cred.RefreshToken
		b.remember(&b.creds, name, &next)
		if !next.unsaved {
			b.Logger().Warn("storing the new access token failed; it is cached in memory only", "name", name, "error", err)
			return &fetchOutcome{cred: &next}, nil
		}
		b.Logger().Error("storing the rotated refresh token failed; it is held in memory and stored at the next refresh or periodic pass", "name", name, "error", err)
		return &fetchOutcome{cred: &next, warning: fmt.Sprintf(
			"storing the rotated refresh token failed (%v): this Vault node holds it in memory and stores it at the next chance; if the node restarts first, run authorize/%s again", err, name)}, nil
	}
	b.Logger().Debug("new access token", "name", name, "config", cred.Config, "expires_at", next.Token.ExpiresAt, "rotated", next.RefreshToken != cred.RefreshToken)
	return &fetchOutcome{cred: &next}, nil
}

// explainUpstream turns an identity-server error into one that says what to do.
func explainUpstream(name string, cred *credential, cfg *apaleoConfig, err error) error {
	var ue *upstreamError
	if !errors.As(err, &ue) {
		return err
	}
	msg := err.Error()
	switch {
	case ue.Code == "invalid_client" || ue.Code == "unauthorized_client":
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("%s: check client_id and client_secret of config/%s", msg, cred.Config))
	case ue.Code == "invalid_scope":
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("%s: the scopes requested were %q; request only scopes the apaleo app may have (config/%s scopes)",
			msg, strings.Join(tokenScopes(cred, cfg), " "), cred.Config))
	case cred.GrantType == grantAuthorizationCode && (ue.Code == "invalid_grant" || ue.Code == "invalid_request"):
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("%s: the refresh token of creds/%s was refused (revoked, expired, or the app's scopes changed); run authorize/%s config=%s again",
			msg, name, name, cred.Config))
	case ue.Status == http.StatusTooManyRequests:
		return logical.CodedError(http.StatusTooManyRequests, msg)
	case ue.Timeout:
		return logical.CodedError(http.StatusGatewayTimeout, msg)
	case ue.Temporary:
		return logical.CodedError(http.StatusBadGateway, msg)
	case ue.Status >= 400 && ue.Status < 500:
		return logical.CodedError(http.StatusBadRequest, msg)
	}
	return logical.CodedError(http.StatusBadGateway, msg)
}

func tokenScopes(cred *credential, cfg *apaleoConfig) []string {
	if cred.GrantType == grantAuthorizationCode && len(cred.Scopes) > 0 {
		return cred.Scopes
	}
	return cfg.Scopes
}

func (b *backend) tokenResponse(name string, cred *credential, now time.Time) *logical.Response {
	t := cred.Token
	data := map[string]any{
		"access_token": t.AccessToken,
		"token_type":   t.TokenType,
		"expires_at":   t.ExpiresAt.UTC().Format(time.RFC3339),
		"scopes":       nonNil(t.Scopes),
		"config":       cred.Config,
	}
	if t.AccountCode != "" {
		data["account_code"] = t.AccountCode
	}
	if t.ClientID != "" {
		data["client_id"] = t.ClientID
	}
	resp := b.Secret(secretAccessTokenType).Response(data, map[string]any{"name": name, "config": cred.Config})
	ttl := max(t.ExpiresAt.Sub(now), time.Second)
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	resp.Secret.Renewable = false
	return resp
}

func (b *backend) pathCredsDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	l := b.locksFor(credsPrefix + name)[0]
	l.Lock()
	defer l.Unlock()

	cred, err := b.credForUpdate(ctx, req.Storage, name)
	if err != nil || cred == nil {
		return nil, err
	}
	if cred.GrantType == grantClientCredentials {
		return nil, b.putCred(ctx, req.Storage, name, &credential{Config: cred.Config, GrantType: grantClientCredentials})
	}

	var resp *logical.Response
	if err := b.revoke(ctx, req.Storage, cred); err != nil {
		b.Logger().Warn("revoking the refresh token failed; deleting the credential anyway", "name", name, "error", err)
		resp = &logical.Response{}
		resp.AddWarning(fmt.Sprintf("the refresh token could not be revoked at apaleo, the credential is deleted from Vault all the same: %v", err))
	}
	if err := b.deleteCred(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	return resp, nil
}

func (b *backend) revoke(ctx context.Context, s logical.Storage, cred *credential) error {
	cfg, err := readConfig(ctx, s, cred.Config)
	if err != nil {
		return err
	}
	if cfg == nil {
		return fmt.Errorf("config %q is gone", cred.Config)
	}
	srv, err := b.identity(cred.Config, cfg)
	if err != nil {
		return err
	}
	policy := b.retry
	policy.Total = min(policy.Total, 10*time.Second)
	return srv.Revoke(ctx, cred.RefreshToken, policy)
}

// Storage helpers.

func readCred(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	var c credential
	ok, err := readJSON(ctx, s, credsPrefix+name, &c)
	if !ok || err != nil {
		return nil, err
	}
	return &c, nil
}

// credForUpdate reads creds/<name> for a change under its lock: the stored entry, unless
// memory holds an unsaved rotated refresh token, which is stored now if storage allows.
func (b *backend) credForUpdate(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	stored, err := readCred(ctx, s, name)
	v, ok := b.creds.Load(name)
	if !ok || !v.(*credential).unsaved {
		return stored, err
	}
	mem := v.(*credential)
	if err == nil && stored == nil {
		return nil, nil // deleted meanwhile
	}
	saved := *mem
	saved.unsaved = false
	if err := b.putCred(ctx, s, name, &saved); err != nil {
		b.remember(&b.creds, name, mem)
		return mem, nil
	}
	b.Logger().Info("rotated refresh token stored after an earlier failure", "name", name)
	return &saved, nil
}

// saveUnsaved retries storing rotated refresh tokens that storage refused before.
func (b *backend) saveUnsaved(ctx context.Context, s logical.Storage) {
	b.creds.Range(func(k, v any) bool {
		if v.(*credential).unsaved {
			name := k.(string)
			l := b.locksFor(credsPrefix + name)[0]
			l.Lock()
			_, _ = b.credForUpdate(ctx, s, name)
			l.Unlock()
		}
		return true
	})
}

// cred returns creds/<name>, from memory when it can.
func (b *backend) cred(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	if v, ok := b.creds.Load(name); ok {
		return v.(*credential), nil
	}
	seen := b.epoch.Load()
	c, err := readCred(ctx, s, name)
	if err == nil && c != nil {
		b.cacheIfUnchanged(seen, &b.creds, name, c)
	}
	return c, err
}

func (b *backend) putCred(ctx context.Context, s logical.Storage, name string, c *credential) error {
	if err := writeJSON(ctx, s, credsPrefix+name, c); err != nil {
		b.forgetCred(name)
		return err
	}
	b.remember(&b.creds, name, c)
	return nil
}

func (b *backend) deleteCred(ctx context.Context, s logical.Storage, name string) error {
	defer b.forgetCred(name)
	return s.Delete(ctx, credsPrefix+name)
}

// credsUsing lists the authorized credentials made from config name.
func (b *backend) credsUsing(ctx context.Context, s logical.Storage, config string) ([]string, error) {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, n := range names {
		c, err := b.cred(ctx, s, n)
		if err != nil {
			return nil, err
		}
		if c != nil && c.GrantType == grantAuthorizationCode && c.Config == config {
			users = append(users, n)
		}
	}
	slices.Sort(users)
	return users, nil
}

const (
	pathCredsHelpSyn  = "Get an apaleo access token."
	pathCredsHelpDesc = `
Reading creds/<name> returns an access token for a client-credentials config
<name> (client credentials grant) or for an authorized credential <name> (refresh
token grant). A cached token is reused while it has more than the config's
min_ttl left to live (or more than half its lifetime, where that is shorter).
The response is a lease that is not renewable; its TTL is the token's remaining
lifetime. Deleting an authorized credential revokes its refresh token at apaleo;
deleting a client-credentials name drops its cached token.
`
	pathCredsListHelpSyn  = "List the names creds/ can read."
	pathCredsListHelpDesc = "Lists client-credentials configs and authorized credentials."
)
