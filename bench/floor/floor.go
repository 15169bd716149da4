// Package floor is the benchmark's no-op secrets engine: the floor every external Vault
// plugin pays. Its creds/<name> read answers a fixed response of the same shape and size
// as the apaleo plugin's creds/<name> (the same fields, an access token of the same
// length) as a lease with the same TTL handling, and does nothing else: no storage, no
// lock, no upstream call. `make bench` runs it side by side with the apaleo plugin and a
// KV v2 read, so the apaleo plugin's own cost shows as the ratio creds/floor.
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

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const secretType = "floor_access_token"

// response is the fixed answer. It is never mutated after it is stored.
type response struct {
	accessToken string
	tokenType   string
	expiresAt   time.Time
	scopes      []string
	accountCode string
	clientID    string
	config      string
}

// Backend is the floor plugin's backend.
type Backend struct {
	*framework.Backend
	fixed atomic.Pointer[response]
}

// Factory returns a configured instance of the floor backend.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := New()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// New returns the floor backend, not set up.
func New() *Backend {
	b := &Backend{}
	b.fixed.Store(&response{
		accessToken: strings.Repeat("x", 1000),
		tokenType:   "Bearer",
		expiresAt:   time.Now().Add(time.Hour),
		scopes:      []string{},
		config:      "floor",
	})
	fields := map[string]*framework.FieldSchema{
		"access_token": {Type: framework.TypeString, Description: "Access token."},
		"token_type":   {Type: framework.TypeString, Description: "Token type."},
		"expires_at":   {Type: framework.TypeString, Description: "Expiry (RFC 3339)."},
		"scopes":       {Type: framework.TypeStringSlice, Description: "Scopes."},
		"account_code": {Type: framework.TypeString, Description: "Account code."},
		"client_id":    {Type: framework.TypeString, Description: "Client id."},
		"config":       {Type: framework.TypeString, Description: "Config name."},
	}
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
							http.StatusOK: {{Description: "OK", Fields: fields}},
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
		Secrets: []*framework.Secret{{
			Type:   secretType,
			Fields: fields,
			Revoke: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
				return nil, nil
			},
		}},
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
	b.fixed.Store(&response{
		accessToken: strings.Repeat("x", n),
		tokenType:   d.Get("token_type").(string),
		expiresAt:   expires,
		scopes:      scopes,
		accountCode: d.Get("account_code").(string),
		clientID:    d.Get("client_id").(string),
		config:      d.Get("config").(string),
	})
	return nil, nil
}

// read builds the response the way the apaleo plugin's cache hit does: a fresh data map,
// a lease whose TTL is the token's remaining lifetime, not renewable.
func (b *Backend) read(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	r := b.fixed.Load()
	data := map[string]any{
		"access_token": r.accessToken,
		"token_type":   r.tokenType,
		"expires_at":   r.expiresAt.UTC().Format(time.RFC3339),
		"scopes":       r.scopes,
		"config":       r.config,
	}
	if r.accountCode != "" {
		data["account_code"] = r.accountCode
	}
	if r.clientID != "" {
		data["client_id"] = r.clientID
	}
	resp := b.Secret(secretType).Response(data, map[string]any{"name": name, "config": r.config})
	ttl := max(time.Until(r.expiresAt), time.Second)
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	resp.Secret.Renewable = false
	return resp, nil
}
