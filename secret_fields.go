package apaleo

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// The SDK converts request data to the schema's types before a handler runs, and a value
// it cannot convert (client_secret sent as a JSON array, ?code=a&code=b) ends up, printed
// in full, in the error answered and in Vault's server log. These methods shadow the
// embedded framework.Backend's and refuse such a value first, naming the field only.

// secretFieldNames hold a secret on whichever path declares them; fields marked
// DisplayAttrs.Sensitive are secret too, so a field added later is covered by its schema.
var secretFieldNames = []string{"client_secret", "code", "code_verifier", "refresh_token", "state"}

// HandleRequest refuses a secret field that is not a string, then hands the request to
// the framework.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if req != nil && req.Operation != logical.HelpOperation {
		if fields := b.nonStringSecrets(req); len(fields) > 0 {
			return logical.ErrorResponse(nonStringSecretMessage(fields)), nil
		}
	}
	return b.Backend.HandleRequest(ctx, req)
}

// HandleExistenceCheck does the same for existence checks, which convert the request
// data as well and whose errors Vault logs.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	if req != nil {
		if fields := b.nonStringSecrets(req); len(fields) > 0 {
			return true, false, errutil.UserError{Err: nonStringSecretMessage(fields)}
		}
	}
	return b.Backend.HandleExistenceCheck(ctx, req)
}

func nonStringSecretMessage(fields []string) string {
	return fmt.Sprintf("%s must be a single string; the value sent is not shown because the field holds a secret", strings.Join(fields, ", "))
}

// nonStringSecrets returns the secret fields of the request's path whose value is set but
// not a string, sorted. The path is the one the framework routes the request to.
func (b *backend) nonStringSecrets(req *logical.Request) []string {
	if len(req.Data) == 0 {
		return nil
	}
	p := b.Route(req.Path)
	if p == nil {
		return nil
	}
	var bad []string
	for name, schema := range p.Fields {
		v, ok := req.Data[name]
		if !ok || v == nil || !isSecretField(name, schema) {
			continue
		}
		if _, isString := v.(string); !isString {
			bad = append(bad, name)
		}
	}
	slices.Sort(bad)
	return bad
}

func isSecretField(name string, schema *framework.FieldSchema) bool {
	return slices.Contains(secretFieldNames, name) || (schema != nil && schema.DisplayAttrs != nil && schema.DisplayAttrs.Sensitive)
}
