package apaleo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/lease"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// path_token.go serves creds/: reading a token (creds/<name>), importing a refresh token
// (write), revoking and deleting (delete), and listing with each credential's status
// (creds/). Narrowed credentials are made at config/<config>/narrowed/ (path_narrowed.go).
// The entry types live in credential.go, the status in creds_status.go, the token
// request itself in token.go.

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "creds/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "credentials",
			},
			Fields:          credsSchema,
			ExistenceCheck:  b.pathCredsExists,
			Operations:      b.credsOperations(),
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
					Summary:  "List every name creds/ can read, with each credential's status.",
					// Failure memory lives where token requests are sent: the active node.
					ForwardPerformanceStandby: true,
					Responses: map[int][]framework.Response{
						http.StatusOK: {{Description: "OK", Fields: credsListSchema}},
					},
				},
			},
			HelpSynopsis:    pathCredsListHelpSyn,
			HelpDescription: pathCredsListHelpDesc,
		},
	}
}

func (b *backend) pathCredsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, statuses, err := b.statuses(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	info := make(map[string]any, len(statuses))
	for n, s := range statuses {
		info[n] = s.keyInfo()
	}
	return logical.ListResponseWithInfo(names, info), nil
}

// pathCredsRead answers a read of creds/<name> (read.go).
func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return b.readCreds(ctx, req.Storage, d.Get("name").(string))
}

// pathCredsExists makes a write to an existing name an update, which is refused: import
// only creates, so a policy can grant create without the power to overwrite.
func (b *backend) pathCredsExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	cred, err := readCred(ctx, req.Storage, name)
	if err != nil || cred != nil {
		return cred != nil, err
	}
	cfg, err := readConfig(ctx, req.Storage, name)
	return cfg != nil && cfg.GrantType == grantClientCredentials, err
}

func (b *backend) pathCredsUpdate(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	return logical.ErrorResponse("creds/%s exists; a write to creds/ only creates: delete creds/%s first, or choose another name", name, name), nil
}

// pathCredsCreate is a write of a new creds/<name>: an import into an authorization_code
// config, nothing else. A narrowed credential is made at its config's own path, so that
// a write under creds/ never chooses an app (config/<config>/narrowed/<name>).
func (b *backend) pathCredsCreate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfgName := d.Get("config").(string)
	switch {
	case cfgName == "":
		return logical.ErrorResponse("config is required: the authorization_code config to import a refresh token into"), nil
	case len(cfgName) > maxValueLen || !nameRegex.MatchString(cfgName):
		return logical.ErrorResponse("config is not a valid config name"), nil
	}
	cfg, err := readConfig(ctx, req.Storage, cfgName)
	if err != nil {
		return nil, err
	}
	if cfg != nil && cfg.GrantType == grantClientCredentials {
		return logical.ErrorResponse("config %q is a client_credentials config: a write to creds/ only imports refresh tokens into an authorization_code config. To narrow config/%s's scopes for a credential of its own, write config/%s/narrowed/%s scopes=...; nothing was stored",
			cfgName, cfgName, cfgName, d.Get("name").(string)), nil
	}
	return b.pathCredsImport(ctx, req, d)
}

// pathCredsImport redeems an existing refresh token at once and stores the rotated one
// and the first access token as an authorized credential.
func (b *backend) pathCredsImport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, cfgName := d.Get("name").(string), d.Get("config").(string)
	refreshToken, scopes, err := importFields(d)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if !b.canWrite() {
		return nil, logical.ErrReadOnly
	}
	// Checked before the refresh token is spent, and again under the locks before the
	// new one is stored: no lock is held while apaleo answers.
	cfg, resp, err := b.importTarget(ctx, req.Storage, name, cfgName)
	if resp != nil || err != nil {
		return resp, err
	}
	res, resp, err := b.redeemImport(ctx, name, cfgName, cfg, refreshToken)
	if resp != nil || err != nil {
		return resp, err
	}
	cred := b.importedCred(cfgName, cfg, res, refreshToken, scopes)
	if err := b.storeAuthorization(ctx, req.Storage, b.imported(ctx, req.Storage, name, cfg, cred)); err != nil {
		return nil, err
	}
	b.Logger().Info("credential imported", "name", name, "config", cfgName, "account_code", cred.AccountCode)
	return &logical.Response{Data: authorizedData(name, cred)}, nil
}

// importFields reads and checks the request's name, refresh_token and scopes.
func importFields(d *framework.FieldData) (string, []string, error) {
	refreshToken := strings.TrimSpace(d.Get("refresh_token").(string))
	switch {
	case refreshToken == "":
		return "", nil, errors.New("refresh_token is required")
	case len(refreshToken) > maxValueLen:
		return "", nil, fmt.Errorf("refresh_token is %d bytes long; the limit is %d", len(refreshToken), maxValueLen)
	}
	if err := checkNameLength("name", d.Get("name").(string)); err != nil {
		return "", nil, err
	}
	if err := validateText("refresh_token", refreshToken); err != nil {
		return "", nil, err
	}
	raw, ok := d.GetOk("scopes")
	if !ok {
		return refreshToken, nil, nil
	}
	scopes, err := parseScopes(raw.([]string))
	return refreshToken, scopes, err
}

// redeemImport sends the refresh token to apaleo, and turns a failure into an answer
// that says whether the token may be spent.
func (b *backend) redeemImport(ctx context.Context, name, cfgName string, cfg *apaleoConfig, refreshToken string) (*tokenResult, *logical.Response, error) {
	srv, err := b.identity(cfg)
	if err != nil {
		return nil, nil, err
	}
	// Once sent, the refresh runs to its end whatever the caller does: apaleo spends the
	// token on receipt.
	sendCtx := b.sendContext(ctx, cfgName, cfg, grantRefreshToken, triggerImport)
	res, err := b.refresh(sendCtx, srv, refreshToken, b.retry)
	if err == nil {
		return res, nil, nil
	}
	var ue *upstreamError
	switch what, status := redeemFailure(err); what {
	case redeemNotSent:
		return nil, nil, logical.CodedError(status, fmt.Sprintf("%v. The refresh token was not sent and nothing was stored", err))
	case redeemRefusedLost:
		errors.As(err, &ue)
		return nil, logical.ErrorResponse("apaleo refused the refresh token after the answer to the first send was lost in transit (%s): apaleo most likely used the token up then. Nothing was stored; authorize the hotel with authorize/%s config=%s instead", ue.lostBefore, name, cfgName), nil
	case redeemRefused:
		return nil, logical.ErrorResponse("apaleo refused the refresh token: %v. Nothing was stored", err), nil
	default:
		return nil, nil, logical.CodedError(status, fmt.Sprintf("redeeming the refresh token failed: %v. Nothing was stored; the refresh token may be spent.%s", err, b.revokeRefusedAnswer(ctx, srv, err)))
	}
}

// importedCred is the credential an import stores: the scopes apaleo says it granted,
// else those the request names, else the config's.
func (b *backend) importedCred(cfgName string, cfg *apaleoConfig, res *tokenResult, refreshToken string, scopes []string) *credential {
	cred := &credential{
		Kind:         kindAuthorized,
		Config:       cfgName,
		GrantType:    grantAuthorizationCode,
		RefreshToken: cmp.Or(res.RefreshToken, refreshToken),
		Scopes:       res.Scopes,
		AccountCode:  res.AccountCode,
		CreatedAt:    b.now().UTC(),
		Token:        newCachedToken(res, cfg.Generation),
	}
	cred.bindTo(cfg) // the app that redeemed it: a failed store revokes it there only
	if len(cred.Scopes) == 0 {
		cred.Scopes = scopes
		if len(scopes) == 0 {
			cred.Scopes = cfg.Scopes
		}
		cred.Token.Scopes = cred.Scopes
	}
	return cred
}

// imported is the authorization an import makes: stored if name is still free and the
// config unchanged since the refresh token was redeemed with it; a token that is not
// stored is revoked (apaleo may keep it valid for ever).
func (b *backend) imported(ctx context.Context, s logical.Storage, name string, redeemedWith *apaleoConfig, cred *credential) authorization {
	return authorization{name: name, cred: cred,
		check: func(*apaleoConfig, *credential) error {
			latest, resp, err := b.importTarget(ctx, s, name, cred.Config)
			switch {
			case err != nil:
				return err
			case resp != nil:
				return logical.CodedError(http.StatusConflict, resp.Error().Error()+" (changed while apaleo redeemed the refresh token)")
			case latest.Generation != redeemedWith.Generation:
				return logical.CodedError(http.StatusConflict, fmt.Sprintf("config/%s changed while apaleo redeemed the refresh token; import again", cred.Config))
			}
			return nil
		},
		unstored: func(err error) error {
			why := err.Error()
			var coded logical.HTTPCodedError
			if !errors.As(err, &coded) {
				why = "storing the imported credential failed: " + why
			}
			if rerr := b.revoke(ctx, s, cred); rerr != nil {
				b.Logger().Warn("revoking the imported refresh token failed", "name", name, "error", rerr)
				why += "; revoking the new refresh token at apaleo failed too: " + rerr.Error()
			} else {
				why += "; the new refresh token was revoked at apaleo"
			}
			if coded == nil {
				return fmt.Errorf("%s", why)
			}
			return logical.CodedError(coded.Code(), why)
		},
	}
}

// importTarget checks that name may be imported for config cfgName: an
// authorization_code config exists, and name is neither a credential nor a
// client-credentials config.
func (b *backend) importTarget(ctx context.Context, s logical.Storage, name, cfgName string) (*apaleoConfig, *logical.Response, error) {
	cfg, err := readConfig(ctx, s, cfgName)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case cfg == nil:
		return nil, logical.ErrorResponse("config %q does not exist; create it with config/%s grant_type=authorization_code", cfgName, cfgName), nil
	case cfg.GrantType != grantAuthorizationCode:
		return nil, logical.ErrorResponse("config %q has grant_type %q; an import needs an authorization_code config (a client_credentials config is narrowed at config/%s/narrowed/%s)", cfgName, cfg.GrantType, cfgName, name), nil
	}
	if existing, err := readCred(ctx, s, name); err != nil {
		return nil, nil, err
	} else if existing != nil {
		return nil, logical.ErrorResponse("creds/%s exists; an import only creates: delete creds/%s first, or choose another name", name, name), nil
	}
	if resp, err := b.checkCredName(ctx, s, name); resp != nil || err != nil {
		return nil, resp, err
	}
	return cfg, nil, nil
}

// authorizedFields and authorizedData describe a newly authorized or imported credential.
var authorizedFields = map[string]*framework.FieldSchema{
	"name":         {Type: framework.TypeString, Description: "The credential's name."},
	"account_code": {Type: framework.TypeString, Description: "The apaleo account the credential is for."},
	"scopes":       {Type: framework.TypeStringSlice, Description: "Scopes granted."},
	"expires_at":   {Type: framework.TypeString, Description: "When the first access token expires (RFC 3339)."},
}

func authorizedData(name string, cred *credential) map[string]any {
	return map[string]any{
		"name":         name,
		"account_code": cred.AccountCode,
		"scopes":       nonNil(cred.Scopes),
		"expires_at":   cred.Token.ExpiresAt.UTC().Format(time.RFC3339),
	}
}

func (b *backend) pathCredsDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	defer b.lockName(name)()
	// Its authorizations end with it, one whose code is being exchanged included.
	if err := b.endPending(ctx, req.Storage, name); err != nil {
		return nil, err
	}

	cred, err := b.credForUpdate(ctx, req.Storage, name)
	if err != nil || cred == nil {
		return nil, err
	}
	b.refresher.forget(name)
	switch cred.Kind {
	case kindNarrowed:
		// Nothing to revoke: its tokens expire at apaleo on their own.
		return nil, b.deleteCred(ctx, req.Storage, name)
	case kindClientCredentials:
		b.clearFailure(name)
		return nil, b.putCred(ctx, req.Storage, name, configCred(cred.Config))
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

const (
	pathCredsHelpSyn  = "Get an apaleo access token."
	pathCredsHelpDesc = `
Reading creds/<name> returns an access token for a client-credentials config
<name> (client credentials grant) or for an authorized credential <name> (refresh
token grant). A cached token is reused while it has more than the config's
min_ttl left to live (or more than half its lifetime, where that is shorter).
The response is a lease whose TTL is the token's remaining lifetime, renewable up
to the token's expiry and never beyond (a renewal keeps the same token). Deleting an authorized credential revokes its refresh token at apaleo;
deleting a client-credentials name drops its cached token.

Writing creds/<name> (create only) imports an existing refresh token of an
authorization_code config: config=<name> refresh_token=... [scopes=...]. It is
redeemed at once; the rotated refresh token and first access token are stored.
A write naming a client_credentials config is refused: a narrowed credential is
made at config/<config>/narrowed/<name>, and its tokens are read here. Deleting a
narrowed credential drops it.
`
	pathCredsListHelpSyn  = "List the names creds/ can read."
	pathCredsListHelpDesc = `
Lists client-credentials configs, authorized and narrowed credentials. With
-detailed, each name's key_info says its config, grant_type, account_code, scopes
(of a narrowed credential), the cached token's
expires_at, state (ok, no_token, failing, needs_authorization), last_error,
next_attempt_at, last_refreshed_at and (authorized credentials) authorized_at.
`
)

// credsSchema are the fields of creds/<name>.
var credsSchema = map[string]*framework.FieldSchema{
	"name": {
		Type:        framework.TypeString,
		Description: "Name of a client-credentials config, an authorized credential or a narrowed credential.",
		Required:    true,
	},
	"config": {
		Type:        framework.TypeString,
		Description: "Create: the authorization_code config to import refresh_token into.",
	},
	"refresh_token": {
		Type:         framework.TypeString,
		Description:  "Import: an existing refresh token of that app for one hotel account; write-only.",
		DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
	},
	"scopes": {
		Type:        framework.TypeCommaStringSlice,
		Description: "Import: the scopes consented to, recorded when the token response does not say.",
	},
}

// credsListSchema describe what a list of creds/ answers.
var credsListSchema = map[string]*framework.FieldSchema{
	"keys":     {Type: framework.TypeStringSlice, Description: "Names creds/ can read."},
	"key_info": {Type: framework.TypeMap, Description: "Per name: config, grant_type, account_code, scopes (of a narrowed credential), expires_at, state, last_error, next_attempt_at, last_refreshed_at, authorized_at."},
}

// credsOperations are what creds/<name> does: read a token, create (import), refuse an update, delete.
func (b *backend) credsOperations() map[logical.Operation]framework.OperationHandler {
	return map[logical.Operation]framework.OperationHandler{
		logical.ReadOperation: &framework.PathOperation{
			Callback: b.pathCredsRead,
			Summary:  "Get an access token, reusing a cached one while it has enough time left.",
			Responses: map[int][]framework.Response{
				http.StatusOK: {{Description: "OK", Fields: lease.Fields}},
			},
		},
		logical.CreateOperation: &framework.PathOperation{
			Callback:                    b.pathCredsCreate,
			Summary:                     "Import an existing refresh token as an authorized credential.",
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
			Responses: map[int][]framework.Response{
				http.StatusOK: {{Description: "OK", Fields: authorizedFields}},
			},
		},
		logical.UpdateOperation: &framework.PathOperation{
			Callback: b.pathCredsUpdate,
			Summary:  "Refused: an existing credential is not overwritten.",
			Responses: map[int][]framework.Response{
				http.StatusBadRequest: {{Description: "The credential exists."}},
			},
		},
		logical.DeleteOperation: &framework.PathOperation{
			Callback:                    b.pathCredsDelete,
			Summary:                     "Revoke and delete an authorized credential, delete a narrowed one, or drop a client-credentials config's cached token.",
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
			Responses: map[int][]framework.Response{
				http.StatusNoContent: {{Description: "Deleted."}},
			},
		},
	}
}
