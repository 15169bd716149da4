package apaleo

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// path_narrowed.go serves config/<config>/narrowed/: narrowed credentials of one
// client-credentials config, made, read, deleted and listed at the config's own path, so
// that a Vault policy on apaleo/config/<config>/narrowed/* decides who may narrow which
// app. Their tokens are read at creds/<name> (path_token.go); the entry is a creds/<name>
// of kind narrowed (credential.go), where earlier versions stored it too.

func pathNarrowed(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "config/" + framework.GenericNameRegex("config") + "/narrowed/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "narrowed-credential",
			},
			Fields:          narrowedSchema,
			ExistenceCheck:  b.pathNarrowedExists,
			Operations:      b.narrowedOperations(),
			HelpSynopsis:    pathNarrowedHelpSyn,
			HelpDescription: pathNarrowedHelpDesc,
		},
		{
			Pattern: "config/" + framework.GenericNameRegex("config") + "/narrowed/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "narrowed-credentials",
			},
			Fields: map[string]*framework.FieldSchema{"config": narrowedSchema["config"]},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathNarrowedList,
					Summary:  "List the narrowed credentials of a client-credentials config.",
					Responses: map[int][]framework.Response{
						http.StatusOK: {{Description: "OK", Fields: map[string]*framework.FieldSchema{
							"keys": {Type: framework.TypeStringSlice, Description: "Names of the config's narrowed credentials, read at creds/<name>."},
						}}},
					},
				},
			},
			HelpSynopsis:    pathNarrowedListHelpSyn,
			HelpDescription: pathNarrowedListHelpDesc,
		},
	}
}

// narrowedOf returns creds/<name> if it is a narrowed credential of config cfgName, else
// nil: a path under one config never reaches another config's credentials.
func (b *backend) narrowedOf(ctx context.Context, s logical.Storage, cfgName, name string) (*credential, error) {
	cred, err := readCred(ctx, s, name)
	if err != nil || cred == nil || cred.Kind != kindNarrowed || cred.Config != cfgName {
		return nil, err
	}
	return cred, nil
}

// pathNarrowedExists makes a write to an existing narrowed credential an update, which is
// refused: create only, so a policy can grant create without the power to overwrite.
func (b *backend) pathNarrowedExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	cred, err := b.narrowedOf(ctx, req.Storage, d.Get("config").(string), d.Get("name").(string))
	return cred != nil, err
}

func (b *backend) pathNarrowedRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfgName := d.Get("config").(string)
	cred, err := b.narrowedOf(ctx, req.Storage, cfgName, d.Get("name").(string))
	if err != nil || cred == nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{"config": cfgName, "scopes": nonNil(cred.Scopes)}}, nil
}

func (b *backend) pathNarrowedUpdate(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfgName, name := d.Get("config").(string), d.Get("name").(string)
	return logical.ErrorResponse("config/%s/narrowed/%s exists; a narrowed credential is only created: delete it first, or choose another name", cfgName, name), nil
}

// pathNarrowedWrite creates a narrowed credential: the client credentials grant of the
// config with a subset of its scopes, read at creds/<name>. Nothing is sent to apaleo
// (its first read is), and nothing of the config is copied but its name.
func (b *backend) pathNarrowedWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfgName, name := d.Get("config").(string), d.Get("name").(string)
	if err := checkNameLength("name", name); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err := checkNameLength("config", cfgName); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	scopes, err := parseScopes(d.Get("scopes").([]string))
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if !b.canWrite() {
		return nil, logical.ErrReadOnly
	}
	for _, l := range b.locksFor(configPrefix+cfgName, credsPrefix+name) {
		l.Lock()
		defer l.Unlock()
	}
	if resp, err := b.narrowTarget(ctx, req.Storage, name, cfgName, scopes); resp != nil || err != nil {
		return resp, err
	}
	cred := &credential{Kind: kindNarrowed, Config: cfgName, GrantType: grantClientCredentials, Scopes: scopes, CreatedAt: b.now().UTC()}
	if err := b.putCred(ctx, req.Storage, name, cred); err != nil {
		return nil, err
	}
	b.clearFailure(name)
	b.Logger().Info("narrowed credential created", "name", name, "config", cfgName, "scopes", strings.Join(scopes, " "))
	return &logical.Response{Data: map[string]any{"name": name, "config": cfgName, "scopes": scopes}}, nil
}

// narrowTarget checks, under the locks of config and name, that name may become a
// narrowed credential of config cfgName with scopes: a client_credentials config exists
// and lists scopes, all of scopes among them, and name is no config's or credential's.
func (b *backend) narrowTarget(ctx context.Context, s logical.Storage, name, cfgName string, scopes []string) (*logical.Response, error) {
	cfg, err := readConfig(ctx, s, cfgName)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg == nil:
		return logical.ErrorResponse("config %q does not exist; a narrowed credential narrows a client_credentials config", cfgName), nil
	case cfg.GrantType != grantClientCredentials:
		return logical.ErrorResponse("config %q has grant_type %q; only a client_credentials config can be narrowed (an authorization_code config narrows with authorize/%s scopes=...)", cfgName, cfg.GrantType, name), nil
	case len(cfg.Scopes) == 0:
		return logical.ErrorResponse("config/%s lists no scopes, so there is nothing to narrow: list the app's scopes with config/%s scopes=..., then narrow to a subset", cfgName, cfgName), nil
	case len(scopes) == 0:
		return logical.ErrorResponse("scopes is required: the subset of config/%s's scopes %q the credential's tokens carry", cfgName, strings.Join(cfg.Scopes, " ")), nil
	}
	if wider := notIn(scopes, cfg.Scopes); len(wider) > 0 {
		return logical.ErrorResponse("scopes %q are not among config/%s's scopes %q; ask for a subset", strings.Join(wider, " "), cfgName, strings.Join(cfg.Scopes, " ")), nil
	}
	if existing, err := readCred(ctx, s, name); err != nil {
		return nil, err
	} else if existing != nil {
		return logical.ErrorResponse("name %q is taken (creds/%s exists); names are unique across client-credentials configs, authorized and narrowed credentials: choose another name", name, name), nil
	}
	if other, err := readConfig(ctx, s, name); err != nil {
		return nil, err
	} else if other != nil {
		return logical.ErrorResponse("name %q is taken by config/%s; choose another name", name, name), nil
	}
	return nil, nil
}

// pathNarrowedDelete deletes the narrowed credential, if it is one of this config's:
// nothing to revoke, its tokens expire at apaleo on their own.
func (b *backend) pathNarrowedDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfgName, name := d.Get("config").(string), d.Get("name").(string)
	defer b.lockName(name)()
	cred, err := b.narrowedOf(ctx, req.Storage, cfgName, name)
	if err != nil || cred == nil {
		return nil, err
	}
	b.Logger().Info("narrowed credential deleted", "name", name, "config", cfgName)
	return nil, b.deleteCred(ctx, req.Storage, name)
}

// pathNarrowedList lists the narrowed credentials of the config, from creds/.
func (b *backend) pathNarrowedList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfgName := d.Get("config").(string)
	names, err := req.Storage.List(ctx, credsPrefix)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		c, err := b.cred(ctx, req.Storage, n)
		if err != nil {
			return nil, err
		}
		if c != nil && c.Kind == kindNarrowed && c.Config == cfgName {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return logical.ListResponse(out), nil
}

// narrowedOperations are what config/<config>/narrowed/<name> does: create, read, refuse
// an update, delete.
func (b *backend) narrowedOperations() map[logical.Operation]framework.OperationHandler {
	return map[logical.Operation]framework.OperationHandler{
		logical.CreateOperation: &framework.PathOperation{
			Callback:                    b.pathNarrowedWrite,
			Summary:                     "Create a narrowed credential: the config's client credentials grant with a subset of its scopes, read at creds/<name>.",
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
			Responses: map[int][]framework.Response{
				http.StatusOK: {{Description: "OK", Fields: narrowedCreatedFields}},
			},
		},
		logical.UpdateOperation: &framework.PathOperation{
			Callback: b.pathNarrowedUpdate,
			Summary:  "Refused: an existing narrowed credential is not overwritten.",
			Responses: map[int][]framework.Response{
				http.StatusBadRequest: {{Description: "The narrowed credential exists."}},
			},
		},
		logical.ReadOperation: &framework.PathOperation{
			Callback: b.pathNarrowedRead,
			Summary:  "Read a narrowed credential: its config and scopes.",
			Responses: map[int][]framework.Response{
				http.StatusOK: {{Description: "OK", Fields: narrowedReadFields}},
			},
		},
		logical.DeleteOperation: &framework.PathOperation{
			Callback:                    b.pathNarrowedDelete,
			Summary:                     "Delete a narrowed credential (nothing to revoke).",
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
			Responses: map[int][]framework.Response{
				http.StatusNoContent: {{Description: "Deleted."}},
			},
		},
	}
}

const (
	pathNarrowedHelpSyn  = "Narrow a client-credentials config's scopes for a credential of its own."
	pathNarrowedHelpDesc = `
Writing config/<config>/narrowed/<name> scopes=<subset> (create only) makes a
narrowed credential of client-credentials config <config>: creds/<name> then
returns tokens asked with only those scopes, through the config's client (whose
secret is not copied), budget and 429 hold, cached for <name> on their own. The
scopes must be a non-empty subset of the scopes the config lists; a config that
lists none cannot be narrowed. A policy on apaleo/config/<config>/narrowed/*
decides who may narrow that app, and creds/<name> who may read the tokens.

Reading it answers config and scopes; deleting it drops it (nothing to revoke).
A config is not deleted while narrowed credentials use it.
`
	pathNarrowedListHelpSyn  = "List the narrowed credentials of a client-credentials config."
	pathNarrowedListHelpDesc = `
Lists the names of the narrowed credentials of <config>, whose tokens are read at
creds/<name>.
`
)

// narrowedSchema are the fields of config/<config>/narrowed/<name>.
var narrowedSchema = map[string]*framework.FieldSchema{
	"config": {
		Type:        framework.TypeString,
		Description: "Name of the client_credentials config to narrow.",
		Required:    true,
	},
	"name": {
		Type:        framework.TypeString,
		Description: "Name of the narrowed credential; its tokens are read at creds/<name>.",
		Required:    true,
	},
	"scopes": {
		Type:        framework.TypeCommaStringSlice,
		Description: "The subset of the config's scopes the credential's tokens carry (required).",
	},
}

// narrowedCreatedFields and narrowedReadFields describe what a create and a read answer.
var (
	narrowedCreatedFields = map[string]*framework.FieldSchema{
		"name":   {Type: framework.TypeString, Description: "The narrowed credential's name: its tokens are read at creds/<name>."},
		"config": narrowedReadFields["config"],
		"scopes": narrowedReadFields["scopes"],
	}
	narrowedReadFields = map[string]*framework.FieldSchema{
		"config": {Type: framework.TypeString, Description: "The client_credentials config it reads through."},
		"scopes": {Type: framework.TypeStringSlice, Description: "The scopes the credential's tokens are asked with."},
	}
)
