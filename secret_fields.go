package apaleo

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

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

// secretRoute is one path's pattern and the secret fields it declares.
type secretRoute struct {
	re     *regexp.Regexp
	fields []string
}

// secretRoutesByPaths caches the compiled routes, keyed by the paths' patterns: every
// backend instance builds the same paths, and compiling them per request would cost.
var secretRoutesByPaths sync.Map // patterns joined by "\n" -> []secretRoute

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
// not a string, sorted.
func (b *backend) nonStringSecrets(req *logical.Request) []string {
	if len(req.Data) == 0 {
		return nil
	}
	for _, r := range b.secretRoutes() {
		if !r.re.MatchString(req.Path) {
			continue
		}
		var bad []string
		for _, f := range r.fields {
			if v, ok := req.Data[f]; ok && v != nil {
				if _, isString := v.(string); !isString {
					bad = append(bad, f)
				}
			}
		}
		return bad // the first matching path is the one the framework routes to
	}
	return nil
}

func (b *backend) secretRoutes() []secretRoute {
	patterns := make([]string, len(b.Paths))
	for i, p := range b.Paths {
		patterns[i] = strings.TrimSuffix(strings.TrimPrefix(p.Pattern, "^"), "$")
	}
	key := strings.Join(patterns, "\n")
	if v, ok := secretRoutesByPaths.Load(key); ok {
		return v.([]secretRoute)
	}
	routes := make([]secretRoute, 0, len(b.Paths))
	for i, p := range b.Paths {
		// Anchored as the framework anchors it (it may have done so already).
		pattern := "^" + patterns[i] + "$"
		var fields []string
		for name, schema := range p.Fields {
			if slices.Contains(secretFieldNames, name) || (schema.DisplayAttrs != nil && schema.DisplayAttrs.Sensitive) {
				fields = append(fields, name)
			}
		}
		slices.Sort(fields)
		routes = append(routes, secretRoute{re: regexp.MustCompile(pattern), fields: fields})
	}
	v, _ := secretRoutesByPaths.LoadOrStore(key, routes)
	return v.([]secretRoute)
}
