// Package floor is the benchmark's no-op secrets engine: the floor every external Vault
// plugin pays. Its creds/<name> read answers a fixed response of the same shape and size
// as the apaleo plugin's creds/<name> (the same fields, an access token of the same
// length) as a lease with the same TTL handling, and does nothing else: no storage, no
// lock, no upstream call. `make bench` runs it side by side with the apaleo plugin and a
// KV v2 read, so the apaleo plugin's own cost shows as the ratio creds/floor.
//
// The lease type and the response code are the apaleo plugin's own, handed in as a
// Plugin (Apaleo: internal/lease, the plugin's own lease code; see
// bench/floorplugin): the floor cannot drift from what it is the floor of. (It does not
// import the plugin package itself, whose in-process benchmarks run the floor too.)
//
// The response is set once with an update of fixed (see Fields); until then a default
// with a 1000-byte token expiring in an hour is served.
package floor

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/lease"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Plugin is the apaleo plugin's lease type and its creds/<name> response code.
type Plugin struct {
	Secret *framework.Secret
	// Response returns the answer to reads of creds/<name> from a cached token with
	// these fields (Apaleo: internal/lease).
	Response func(accessToken, tokenType string, expiresAt time.Time, scopes []string, accountCode, clientID, config string) Respond
}

// Respond answers a read of creds/<name> at now, as a lease of secret.
type Respond = func(secret *framework.Secret, name string, now time.Time) *logical.Response

// Backend is the floor plugin's backend.
type Backend struct {
	*framework.Backend
	plugin Plugin
	fixed  atomic.Pointer[Respond] // replaced whole by a write of fixed
}

// Factory returns the factory of floor backends answering with p.
func Factory(p Plugin) logical.Factory {
	return func(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
		b := New(p)
		if err := b.Setup(ctx, conf); err != nil {
			return nil, err
		}
		return b, nil
	}
}

// New returns the floor backend answering with p, not set up.
func New(p Plugin) *Backend {
	b := &Backend{plugin: p}
	respond := p.Response(strings.Repeat("x", 1000), "Bearer", time.Now().Add(time.Hour), []string{}, "", "", "floor")
	b.fixed.Store(&respond)
	b.Backend = &framework.Backend{
		Help:        "No-op secrets engine: the benchmark floor of an external plugin.",
		BackendType: logical.TypeLogical,
		Paths: []*framework.Path{
			{
				Pattern: "creds/" + framework.GenericNameRegex("name"),
				Fields: map[string]*framework.FieldSchema{
					"name": {Type: framework.TypeLowerCaseString, Description: "Any name.", Required: true},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.ReadOperation: &framework.PathOperation{
						Callback: b.read,
						Responses: map[int][]framework.Response{
							http.StatusOK: {{Description: "OK", Fields: p.Secret.Fields}},
						},
					},
				},
			},
			{
				Pattern: "fixed",
				Fields: map[string]*framework.FieldSchema{
					"access_token_length": {Type: framework.TypeInt, Description: "Length of the fixed access token.", Default: 1000},
					"token_type":          {Type: framework.TypeString, Default: "Bearer"},
					"expires_at":          {Type: framework.TypeString, Description: "RFC 3339; default an hour from now."},
					"scopes":              {Type: framework.TypeCommaStringSlice},
					"account_code":        {Type: framework.TypeString},
					"client_id":           {Type: framework.TypeString},
					"config":              {Type: framework.TypeString, Default: "floor"},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.writeFixed},
				},
			},
		},
		Secrets: []*framework.Secret{p.Secret},
	}
	return b
}

func (b *Backend) writeFixed(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	n := d.Get("access_token_length").(int)
	if n < 1 || n > 64<<10 {
		return logical.ErrorResponse("access_token_length must be 1..65536"), nil
	}
	expires := time.Now().Add(time.Hour)
	if s := d.Get("expires_at").(string); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return logical.ErrorResponse("expires_at: %v", err), nil
		}
		expires = t
	}
	scopes := d.Get("scopes").([]string)
	if scopes == nil {
		scopes = []string{}
	}
	respond := b.plugin.Response(strings.Repeat("x", n), d.Get("token_type").(string), expires, scopes,
		d.Get("account_code").(string), d.Get("client_id").(string), d.Get("config").(string))
	b.fixed.Store(&respond)
	return nil, nil
}

// read answers with the apaleo plugin's own response code, as its cache hit does: a
// fresh data map, a lease whose TTL is the token's remaining lifetime, renewable up to it.
func (b *Backend) read(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return (*b.fixed.Load())(b.Secret(b.plugin.Secret.Type), d.Get("name").(string), time.Now()), nil
}

// Apaleo is the apaleo plugin's lease type and creds/<name> response (internal/lease):
// the floor answers exactly what the plugin answers a cached read with.
func Apaleo() Plugin {
	return Plugin{
		Secret: &framework.Secret{
			Type:   lease.Type,
			Fields: lease.Fields,
			Renew: func(_ context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
				return &logical.Response{Secret: req.Secret}, nil
			},
			Revoke: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
				return nil, nil
			},
		},
		Response: func(accessToken, tokenType string, expiresAt time.Time, scopes []string, accountCode, clientID, config string) Respond {
			t := lease.Token{AccessToken: accessToken, TokenType: tokenType, ExpiresAt: expiresAt, Scopes: scopes, AccountCode: accountCode, ClientID: clientID}
			return func(secret *framework.Secret, name string, now time.Time) *logical.Response {
				return lease.Response(secret, name, config, t, now)
			}
		},
	}
}
