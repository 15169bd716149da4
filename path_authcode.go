package apaleo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/oauth2"
)

// nameRegex is framework.GenericNameRegex as a whole-string match.
var nameRegex = regexp.MustCompile("^" + framework.GenericNameRegex("name") + "$")

// pendingTTL is how long an authorize/<name> state stays redeemable.
const pendingTTL = 10 * time.Minute

// accountCodeRegex bounds account_code: apaleo account codes are short and alphanumeric.
var accountCodeRegex = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func pathAuthCode(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "authorize/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationVerb:   "authorize",
			},
			Fields: authorizeSchema,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathAuthorizeWrite,
					Summary:                     "Start the authorization code flow for a credential: returns the URL the account admin opens.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
					Responses: map[int][]framework.Response{
						http.StatusOK: {{Description: "OK", Fields: authorizeResponseSchema}},
					},
				},
			},
			HelpSynopsis:    pathAuthorizeHelpSyn,
			HelpDescription: pathAuthorizeHelpDesc,
		},
		{
			Pattern: "callback",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "callback",
			},
			Fields:          callbackSchema,
			Operations:      b.callbackOperations(),
			HelpSynopsis:    pathCallbackHelpSyn,
			HelpDescription: pathCallbackHelpDesc,
		},
		{
			Pattern: "exchange",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationVerb:   "exchange",
			},
			Fields: exchangeSchema,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathExchangeWrite,
					Summary:                     "Redeem an authorization code that was redirected to your own app.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathExchangeHelpSyn,
			HelpDescription: pathExchangeHelpDesc,
		},
	}
}

// pathAuthorizeWrite starts the authorization code flow for credential <name>: it checks
// the request, stores a pending authorization and answers the URL the admin opens.
func (b *backend) pathAuthorizeWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, cfgName := d.Get("name").(string), d.Get("config").(string)
	account, replace := d.Get("account_code").(string), d.Get("replace").(bool)
	if err := authorizeFields(name, cfgName, account); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	cfg, resp, err := b.authorizeTarget(ctx, req.Storage, name, cfgName, account, replace)
	if resp != nil || err != nil {
		return resp, err
	}
	scopes, err := authorizeScopes(cfgName, cfg, d)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	p := &pendingAuthorization{
		Name:        name,
		Config:      cfgName,
		Verifier:    oauth2.GenerateVerifier(),
		Scopes:      scopes,
		RedirectURI: cfg.RedirectURI,
		ExpiresAt:   b.now().Add(pendingTTL).UTC(),
		AccountCode: account,
		Replace:     replace,
	}
	return b.startAuthorization(ctx, req.Storage, cfg, p)
}

// authorizeFields checks the request's name, config and account_code.
func authorizeFields(name, cfgName, account string) error {
	if err := checkNameLength("name", name); err != nil {
		return err
	}
	if cfgName == "" {
		return errors.New("config is required: the name of an authorization_code config")
	}
	if err := checkNameLength("config", cfgName); err != nil {
		return err
	}
	if !nameRegex.MatchString(cfgName) {
		return fmt.Errorf("config %q is not a valid config name", truncate(cfgName, 64))
	}
	if account != "" && !accountCodeRegex.MatchString(account) {
		return fmt.Errorf("account_code %q is not an apaleo account code: up to 64 letters, digits, '.', '_' or '-'", truncate(account, 70))
	}
	return nil
}

// authorizeTarget checks that cfgName is an authorization_code config, that name is free
// for it, and that an existing credential of name is kept for its account unless replace.
func (b *backend) authorizeTarget(ctx context.Context, s logical.Storage, name, cfgName, account string, replace bool) (*apaleoConfig, *logical.Response, error) {
	cfg, err := readConfig(ctx, s, cfgName)
	if err != nil {
		return nil, nil, err
	}
	if cfg == nil {
		return nil, logical.ErrorResponse("config %q does not exist; create it with config/%s grant_type=authorization_code", cfgName, cfgName), nil
	}
	if cfg.GrantType != grantAuthorizationCode {
		return nil, logical.ErrorResponse("config %q has grant_type %q; authorize needs an authorization_code config", cfgName, cfg.GrantType), nil
	}
	if resp, err := b.checkCredName(ctx, s, name); resp != nil || err != nil {
		return nil, resp, err
	}
	if old, err := readCred(ctx, s, name); err != nil {
		return nil, nil, err
	} else if old != nil && !replace && account != "" && old.AccountCode != "" && !strings.EqualFold(old.AccountCode, account) {
		return nil, nil, logical.CodedError(http.StatusConflict, fmt.Sprintf(
			"creds/%s holds account %s, not %s; to replace it with a credential for account %s, run authorize/%s with replace=true",
			name, old.AccountCode, account, account, name))
	}
	return cfg, nil, nil
}

// authorizeScopes are the scopes to ask consent for: the config's, or the narrower set
// the request names, with offline_access.
func authorizeScopes(cfgName string, cfg *apaleoConfig, d *framework.FieldData) ([]string, error) {
	raw, ok := d.GetOk("scopes")
	if !ok {
		return cfg.Scopes, nil
	}
	asked, err := parseScopes(raw.([]string))
	if err != nil {
		return nil, err
	}
	if wider := notIn(asked, cfg.Scopes); len(wider) > 0 {
		return nil, fmt.Errorf("scopes %q are not among config %q's scopes %q; ask for a subset", strings.Join(wider, " "), cfgName, strings.Join(cfg.Scopes, " "))
	}
	if !slices.Contains(asked, "offline_access") {
		asked = append(asked, "offline_access")
	}
	return asked, nil
}

// startAuthorization stores p under a new state and answers the URL the admin opens.
func (b *backend) startAuthorization(ctx context.Context, s logical.Storage, cfg *apaleoConfig, p *pendingAuthorization) (*logical.Response, error) {
	state, err := randomString(32)
	if err != nil {
		return nil, err
	}
	srv, err := b.identity(cfg)
	if err != nil {
		return nil, err
	}
	if err := b.putPending(ctx, s, pendingHash(state), p); err != nil {
		return nil, err
	}
	b.Logger().Info("authorization started", "name", p.Name, "config", p.Config, "account_code", p.AccountCode, "replace", p.Replace, "expires_at", p.ExpiresAt)
	return &logical.Response{Data: map[string]any{
		"auth_url":   srv.AuthCodeURL(state, p.Verifier, p.Scopes),
		"state":      state,
		"expires_at": p.ExpiresAt.Format(time.RFC3339),
	}}, nil
}

// checkCredName refuses a credential name that a client-credentials config or a
// narrowed credential holds.
func (b *backend) checkCredName(ctx context.Context, s logical.Storage, name string) (*logical.Response, error) {
	if other, err := readConfig(ctx, s, name); err != nil {
		return nil, err
	} else if other != nil && other.GrantType == grantClientCredentials {
		return logical.ErrorResponse("name %q is taken by client-credentials config/%s; names are unique across client-credentials configs, authorized and narrowed credentials", name, name), nil
	}
	if cred, err := readCred(ctx, s, name); err != nil {
		return nil, err
	} else if cred != nil && cred.Kind == kindNarrowed {
		return logical.ErrorResponse("name %q is taken by a narrowed credential of config/%s; names are unique across client-credentials configs, authorized and narrowed credentials", name, cred.Config), nil
	}
	return nil, nil
}

// authError is a failed callback or exchange: a message for the admin and a status.
type authError struct {
	status int
	msg    string
	title  string // the callback page's title, when the failure has a kind of its own
}

func (e *authError) Error() string { return e.msg }

func badAuth(format string, args ...any) *authError {
	return &authError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func (b *backend) pathCallbackRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	state := d.Get("state").(string)
	if oauthErr := d.Get("error").(string); oauthErr != "" {
		// The admin declined or apaleo refused: the state is spent either way.
		// Anyone can call the callback, and the page is served from Vault's origin: text
		// from the query is shown only for a state that matched a pending authorization,
		// and cut short even then.
		name := b.dropPending(ctx, req.Storage, state)
		if name == "" {
			b.Logger().Info("callback with an error and no pending authorization", "state_given", state != "")
			return unmatchedPage().response(), nil
		}
		oauthErr = printableText(truncate(oauthErr, 200))
		desc := printableText(truncate(d.Get("error_description").(string), 500))
		b.Logger().Info("authorization refused by apaleo", "name", name, "error", oauthErr)
		detail := oauthErr
		if desc != "" {
			detail += " (" + desc + ")"
		}
		return oauthErrorPage(name, oauthErr, detail).response(), nil
	}
	name, cred, err := b.completeAuthorization(ctx, req.Storage, state, d.Get("code").(string), triggerCallback)
	if err != nil {
		var ae *authError
		if errors.As(err, &ae) {
			return failurePage(ae).response(), nil
		}
		return nil, err
	}
	return successPage(req.MountPoint, name, cred.AccountCode).response(), nil
}

func (b *backend) pathExchangeWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, cred, err := b.completeAuthorization(ctx, req.Storage, d.Get("state").(string), d.Get("code").(string), triggerExchange)
	if err != nil {
		var ae *authError
		if errors.As(err, &ae) {
			if ae.status == http.StatusBadRequest {
				return logical.ErrorResponse(ae.msg), nil
			}
			return nil, logical.CodedError(ae.status, ae.msg)
		}
		return nil, err
	}
	return &logical.Response{Data: authorizedData(name, cred)}, nil
}

// completeAuthorization redeems state and code: the pending authorization is consumed
// first (so a state works once, whatever happens next), the code is exchanged with its
// PKCE verifier, and the refresh token and first access token are stored as creds/<name>.
func (b *backend) completeAuthorization(ctx context.Context, s logical.Storage, state, code, trigger string) (string, *credential, error) {
	if err := checkCallbackInput(state, code); err != nil {
		return "", nil, err
	}
	if !b.canWrite() {
		return "", nil, logical.ErrReadOnly
	}
	p, err := b.takePending(ctx, s, state)
	if err != nil {
		return "", nil, err
	}
	defer b.exchanges.done(p.Name, p.exchange)
	cfg, srv, err := b.exchangeTarget(ctx, s, p)
	if err != nil {
		return "", nil, err
	}
	res, err := b.exchange(ctx, srv, p, cfg, code, trigger)
	if err != nil {
		return "", nil, err
	}
	a := b.exchanged(ctx, s, srv, p, cfg, res)
	if err := b.storeAuthorization(ctx, s, a); err != nil {
		return "", nil, err
	}
	name, cred := p.Name, a.cred
	return name, cred, nil
}

// checkCallbackInput checks the state and code of a callback or exchange.
func checkCallbackInput(state, code string) error {
	switch {
	case state == "":
		return badAuth("state is missing; open the auth_url from authorize/<name> again")
	case code == "":
		return badAuth("code is missing: apaleo's redirect carries it as ?code=")
	case len(state) > maxValueLen || len(code) > maxValueLen:
		return badAuth("state or code is longer than %d bytes", maxValueLen)
	}
	return nil
}

// exchangeTarget is the config of a pending authorization, as it still is, and its client.
func (b *backend) exchangeTarget(ctx context.Context, s logical.Storage, p *pendingAuthorization) (*apaleoConfig, identityServer, error) {
	cfg, err := readConfig(ctx, s, p.Config)
	if err != nil {
		return nil, nil, err
	}
	if cfg == nil || cfg.GrantType != grantAuthorizationCode {
		return nil, nil, badAuth("config %q no longer exists as an authorization_code config; nothing was stored", p.Config)
	}
	if cfg.RedirectURI != p.RedirectURI {
		return nil, nil, badAuth("config %q's redirect_uri changed since authorize/%s; start again with authorize/%s", p.Config, p.Name, p.Name)
	}
	srv, err := b.identity(cfg)
	return cfg, srv, err
}

// exchange redeems code with p's verifier. A code exchange spends the app's budget like
// any token request. Once sent, it runs to its end whatever the caller does: apaleo
// spends the code on receipt and the refresh token it mints must not be lost.
func (b *backend) exchange(ctx context.Context, srv identityServer, p *pendingAuthorization, cfg *apaleoConfig, code, trigger string) (*tokenResult, error) {
	sendCtx := b.sendContext(ctx, p.Config, cfg, grantAuthorizationCode, trigger)
	res, err := srv.Exchange(sendCtx, code, p.Verifier, p.Scopes, b.retry)
	if err != nil {
		switch what, status := redeemFailure(err); what {
		case redeemNotSent:
			return nil, &authError{status: status, msg: fmt.Sprintf("%v. The code was not sent and nothing was stored; start again with authorize/%s", err, p.Name)}
		case redeemRefused, redeemRefusedLost:
			return nil, badAuth("apaleo refused the authorization code: %v. Nothing was stored; start again with authorize/%s", err, p.Name)
		default:
			return nil, &authError{status: status, msg: fmt.Sprintf("exchanging the code failed: %v. Nothing was stored; start again with authorize/%s.%s", err, p.Name, b.revokeRefusedAnswer(ctx, srv, err))}
		}
	}
	if res.RefreshToken == "" {
		return nil, badAuth("apaleo returned no refresh token: the app needs the offline_access scope and offline access enabled by apaleo. Nothing was stored")
	}
	return res, nil
}

// revokeNotStored revokes the refresh token of an authorization that storing refused
// (apaleo's refresh tokens do not expire: one that is not stored must not stay valid),
// and returns err saying so.
func (b *backend) revokeNotStored(ctx context.Context, srv identityServer, p *pendingAuthorization, res *tokenResult, err error) error {
	outcome := " The new refresh token was revoked at apaleo."
	if rerr := b.revokeUnstored(ctx, srv, res.RefreshToken); rerr != nil {
		b.Logger().Warn("revoking the refresh token of a failed authorization failed", "name", p.Name, "config", p.Config, "error", rerr)
		outcome = fmt.Sprintf(" Revoking the new refresh token at apaleo failed (%v): an apaleo account admin can remove the app's access.", rerr)
	} else {
		b.Logger().Info("authorization not stored; its refresh token was revoked", "name", p.Name, "config", p.Config, "error", err)
	}
	var ae *authError
	if errors.As(err, &ae) {
		ae.msg = strings.TrimSuffix(ae.msg, ".") + "." + outcome
	}
	return err
}

// exchanged is the authorization a code exchange makes of p: stored if the config is
// still the one the code was exchanged with and the token is for the expected account.
func (b *backend) exchanged(ctx context.Context, s logical.Storage, srv identityServer, p *pendingAuthorization, exchangedWith *apaleoConfig, res *tokenResult) authorization {
	cred := &credential{
		Kind:         kindAuthorized,
		Config:       p.Config,
		GrantType:    grantAuthorizationCode,
		RefreshToken: res.RefreshToken,
		Scopes:       res.Scopes,
		AccountCode:  res.AccountCode,
		CreatedAt:    b.now().UTC(),
		Token:        newCachedToken(res, exchangedWith.Generation),
	}
	return authorization{name: p.Name, cred: cred,
		check: func(cfg *apaleoConfig, old *credential) error {
			if p.exchange.ended() {
				return conflictAuth("creds/%s was deleted while the code was exchanged, which ended its pending authorization. Nothing was stored; start again with authorize/%s", p.Name, p.Name)
			}
			if cfg == nil || cfg.GrantType != grantAuthorizationCode {
				return conflictAuth("config %q was deleted or changed its grant_type while the code was exchanged. Nothing was stored", p.Config)
			}
			if cfg.ClientID != exchangedWith.ClientID || cfg.IdentityURL != exchangedWith.IdentityURL {
				return conflictAuth("config %q changed its client_id or identity_url while the code was exchanged. Nothing was stored; start again with authorize/%s", p.Config, p.Name)
			}
			if resp, err := b.checkCredName(ctx, s, p.Name); err != nil {
				return err
			} else if resp != nil {
				return conflictAuth("%s. Nothing was stored", resp.Error())
			}
			return checkAccount(p, old, res.AccountCode)
		},
		unstored: func(err error) error { return b.revokeNotStored(ctx, srv, p, res, err) },
	}
}

// checkAccount refuses a token for another account than the authorization expects: the
// account_code given to authorize/<name>, else the account an existing credential holds
// (unless replace=true).
func checkAccount(p *pendingAuthorization, old *credential, got string) error {
	expected, why := p.AccountCode, fmt.Sprintf("authorize/%s was called with account_code=%s", p.Name, p.AccountCode)
	if expected == "" && !p.Replace && old != nil && old.Kind == kindAuthorized && old.AccountCode != "" {
		expected, why = old.AccountCode, fmt.Sprintf("creds/%s holds account %s, and re-authorizing keeps the account unless authorize/%s is called with replace=true", p.Name, old.AccountCode, p.Name)
	}
	switch {
	case expected == "" || strings.EqualFold(expected, got):
		return nil
	case got == "":
		return conflictAuth("expected an authorization for apaleo account %s (%s), but the token names no account, so it cannot be checked. Nothing was stored", expected, why)
	}
	return conflictAuth("expected an authorization for apaleo account %s (%s), but it was for account %s: sign in to apaleo as an admin of account %s and start again with authorize/%s. Nothing was stored",
		expected, why, got, expected, p.Name)
}

func conflictAuth(format string, args ...any) *authError {
	return &authError{status: http.StatusConflict, msg: fmt.Sprintf(format, args...)}
}

// revokeUnstored revokes a refresh token that was issued but not stored.
func (b *backend) revokeUnstored(ctx context.Context, srv identityServer, refreshToken string) error {
	policy := b.retry
	policy.Total = min(policy.Total, 10*time.Second)
	return srv.Revoke(context.WithoutCancel(ctx), refreshToken, policy)
}

// takePending consumes the pending authorization of state, and notes its exchange under
// way: a delete of creds/<name> before it is stored ends it.
func (b *backend) takePending(ctx context.Context, s logical.Storage, state string) (*pendingAuthorization, error) {
	hash := pendingHash(state)
	p, err := readEntry[pendingAuthorization](ctx, s, pendingPrefix+hash)
	if err != nil || p == nil {
		return nil, unknownState(err)
	}
	// Again under the name's lock: a newer authorization or a delete may have come first.
	defer b.lockPendingName(p.Name)()
	if p, err = readEntry[pendingAuthorization](ctx, s, pendingPrefix+hash); err != nil || p == nil {
		return nil, unknownState(err)
	}
	if p.Superseded {
		ae := &authError{status: http.StatusConflict, title: titleLinkReplaced, msg: fmt.Sprintf(
			"a newer authorization of %q replaced this one (authorize/%s was called again): open the newest link", p.Name, p.Name)}
		return nil, ae
	}
	if err := b.dropLivePending(ctx, s, p.Name, hash, p.ExpiresAt); err != nil {
		return nil, err
	}
	b.releasePending()
	if !b.now().Before(p.ExpiresAt) {
		ae := badAuth("the authorization for %q expired at %s; start again with authorize/%s", p.Name, p.ExpiresAt.Format(time.RFC3339), p.Name)
		ae.title = titleLinkExpired
		return nil, ae
	}
	p.exchange = b.exchanges.begin(p.Name)
	return p, nil
}

// unknownState is the answer to a state no pending authorization has (err: storage failed).
func unknownState(err error) error {
	if err != nil {
		return err
	}
	ae := badAuth("unknown or already used state: start again with authorize/<name>")
	ae.title = titleLinkUsed
	return ae
}

// dropPending consumes state, if it is known, and returns its credential name.
func (b *backend) dropPending(ctx context.Context, s logical.Storage, state string) string {
	if state == "" || len(state) > maxValueLen || !b.canWrite() {
		return ""
	}
	p, err := b.takePending(ctx, s, state)
	if err != nil || p == nil {
		return ""
	}
	b.exchanges.done(p.Name, p.exchange)
	return p.Name
}

// printableText drops control characters from text shown on the page or logged.
func printableText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func randomString(n int) (string, error) {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

const (
	pathAuthorizeHelpSyn  = "Start the authorization code flow for an apaleo connect app."
	pathAuthorizeHelpDesc = `
Creates a pending authorization for credential <name> from an authorization_code
config and returns auth_url: the hotel account admin opens it, consents, and apaleo
redirects to the config's redirect_uri (callback, or your own app that calls
exchange). The authorization uses state and PKCE (S256), expires after 10 minutes
and can be used once; a new authorize/<name> supersedes the earlier one, and the
mount holds at most 10,000. Afterwards creds/<name> returns access tokens.

With account_code, the authorization must be for that apaleo account. Without it,
re-authorizing an existing credential must yield the account it already holds,
unless replace=true. A token for another account is revoked and nothing is stored.
`
	pathCallbackHelpSyn  = "Redirect target for apaleo's authorization code flow (unauthenticated)."
	pathCallbackHelpDesc = `
Register https://<vault>/v1/<mount>/callback as the redirect URI of the apaleo app.
With a valid state it exchanges the code, stores the credential and answers a
small HTML page; unknown, expired or reused state gets an error page. apaleo's
error_description is shown only for a state that matched a pending authorization.
`
	pathExchangeHelpSyn  = "Redeem an authorization code received by your own redirect URI."
	pathExchangeHelpDesc = `
For apps whose redirect_uri is the operator's own: pass the state and code from
apaleo's redirect. Same effect as callback; returns name, account_code, scopes
and expires_at.
`
)

// authorizeSchema are the fields of authorize/<name>.
var authorizeSchema = map[string]*framework.FieldSchema{
	"name": {
		Type:        framework.TypeString,
		Description: "Name of the credential to create, e.g. the hotel account.",
		Required:    true,
	},
	"config": {
		Type:        framework.TypeString,
		Description: "An authorization_code config.",
		Required:    true,
	},
	"scopes": {
		Type:        framework.TypeCommaStringSlice,
		Description: "Optional narrower set of the config's scopes.",
	},
	"account_code": {
		Type:        framework.TypeString,
		Description: "Optional apaleo account code: the completed authorization must be for this account.",
	},
	"replace": {
		Type:        framework.TypeBool,
		Default:     false,
		Description: "Allow replacing an existing credential with one for another account. Without it, re-authorizing an existing credential must yield the account it holds.",
	},
}

// authorizeResponseSchema describe what authorize/<name> answers.
var authorizeResponseSchema = map[string]*framework.FieldSchema{
	"auth_url":   {Type: framework.TypeString, Description: "URL the account admin opens to consent."},
	"state":      {Type: framework.TypeString, Description: "State of this authorization."},
	"expires_at": {Type: framework.TypeString, Description: "When the authorization expires (RFC 3339)."},
}

// callbackSchema are the query of callback: apaleo's redirect.
var callbackSchema = map[string]*framework.FieldSchema{
	"code":              {Type: framework.TypeString, Query: true, Description: "Authorization code.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	"state":             {Type: framework.TypeString, Query: true, Description: "State from authorize/<name>."},
	"error":             {Type: framework.TypeString, Query: true, Description: "OAuth error from apaleo."},
	"error_description": {Type: framework.TypeString, Query: true, Description: "OAuth error description from apaleo."},
	"session_state":     {Type: framework.TypeString, Query: true, Description: "Ignored."},
	"scope":             {Type: framework.TypeString, Query: true, Description: "Ignored."},
	"iss":               {Type: framework.TypeString, Query: true, Description: "Ignored."},
}

// exchangeSchema are the fields of exchange.
var exchangeSchema = map[string]*framework.FieldSchema{
	"code":  {Type: framework.TypeString, Description: "Authorization code from the redirect.", Required: true, DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
	"state": {Type: framework.TypeString, Description: "State from the redirect.", Required: true},
}

// callbackOperations: callback answers apaleo's redirect (a read, unauthenticated).
func (b *backend) callbackOperations() map[logical.Operation]framework.OperationHandler {
	return map[logical.Operation]framework.OperationHandler{
		logical.ReadOperation: &framework.PathOperation{
			Callback:                    b.pathCallbackRead,
			Summary:                     "Redirect target of apaleo's authorize endpoint (unauthenticated).",
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
		},
	}
}
