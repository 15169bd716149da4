package apaleo

import (
	"context"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// hardening_test.go: the hardening issue's points, one test (or more) each.

// TestHardening_NonStringSecretFields (point 1): a secret field sent as a JSON array or
// object, or as a repeated query parameter, is refused with a 400 naming the field. The
// SDK's own conversion error prints the value; it must never be reached.
func TestHardening_NonStringSecretFields(t *testing.T) {
	const secret = "s3cret-never-shown"
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	q := e.authorize("hotel-ber", "connect")
	before := storageSnapshot(t, e.storage)

	cases := []struct {
		op    logical.Operation
		path  string
		data  map[string]any
		field string
	}{
		{logical.CreateOperation, "config/x", map[string]any{"client_id": "x", "client_secret": []any{secret}}, "client_secret"},
		{logical.UpdateOperation, "config/connect", map[string]any{"client_secret": map[string]any{"v": secret}}, "client_secret"},
		{logical.UpdateOperation, "config/connect", map[string]any{"client_secret": []string{secret, secret}}, "client_secret"},
		{logical.UpdateOperation, "exchange", map[string]any{"state": q.Get("state"), "code": []any{secret}}, "code"},
		{logical.UpdateOperation, "exchange", map[string]any{"state": map[string]any{"s": secret}, "code": "c"}, "state"},
		// Vault's HTTP layer passes a repeated query parameter as a list.
		{logical.ReadOperation, "callback", map[string]any{"state": q.Get("state"), "code": []string{secret, "b"}}, "code"},
		{logical.ReadOperation, "callback", map[string]any{"state": []string{secret, "b"}, "code": "a"}, "state"},
	}
	for _, c := range cases {
		resp, err := e.do(c.op, c.path, c.data)
		if status := statusOf(c.op, resp, err); status != http.StatusBadRequest {
			t.Errorf("%s %s: status %d, want 400", c.op, c.path, status)
		}
		msg := errText(resp, err)
		if !strings.Contains(msg, c.field+" must be a single string") {
			t.Errorf("%s %s: %q does not name %s", c.op, c.path, msg, c.field)
		}
		if strings.Contains(msg, secret) || strings.Contains(msg, "error converting") {
			t.Errorf("%s %s: the value is echoed: %q", c.op, c.path, msg)
		}

		// The existence check (create vs update on config/<name>) converts the data too.
		if c.op == logical.CreateOperation || c.op == logical.UpdateOperation {
			req := &logical.Request{Operation: c.op, Path: c.path, Data: c.data, Storage: e.storage}
			_, _, err := e.b.HandleExistenceCheck(context.Background(), req)
			var ue errutil.UserError
			if c.path != "exchange" && (err == nil || !errorsAsUser(err, &ue) || strings.Contains(err.Error(), secret)) {
				t.Errorf("existence check %s: %v, want a user error without the value", c.path, err)
			}
		}
	}
	if after := storageSnapshot(t, e.storage); !maps.Equal(before, after) {
		t.Error("a refused request changed storage")
	}
	// The state was not spent: the callback still works with the real code.
	if status, page := e.callback(q); status != http.StatusOK {
		t.Fatalf("callback after the refused ones: %d %s", status, pageText(page))
	}
	e.assertNoSecrets(secret)

	// Through Factory, as the plugin's gRPC server calls it (logical.Backend).
	lb, err := Factory(context.Background(), logical.TestBackendConfig())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := lb.HandleRequest(context.Background(), &logical.Request{Operation: logical.CreateOperation, Path: "config/y",
		Storage: &logical.InmemStorage{}, Data: map[string]any{"client_id": "y", "client_secret": []any{secret}}})
	if msg := errText(resp, err); !strings.Contains(msg, "client_secret must be a single string") || strings.Contains(msg, secret) {
		t.Errorf("via Factory: %q", msg)
	}
}

func errorsAsUser(err error, target *errutil.UserError) bool {
	ue, ok := err.(errutil.UserError)
	if ok {
		*target = ue
	}
	return ok
}

// TestHardening_SensitiveFieldsCovered (point 1): a field marked DisplayAttrs.Sensitive
// on any path is guarded without being listed by name.
func TestHardening_SensitiveFieldsCovered(t *testing.T) {
	b := newBackend()
	b.Paths = append([]*framework.Path{{
		Pattern: "test-sensitive",
		Fields: map[string]*framework.FieldSchema{
			"api_key": {Type: framework.TypeString, DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{Callback: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
				return nil, nil
			}},
		},
	}}, b.Paths...)
	if err := b.Setup(context.Background(), logical.TestBackendConfig()); err != nil {
		t.Fatal(err)
	}
	do := func(v any) (*logical.Response, error) {
		return b.HandleRequest(context.Background(), &logical.Request{Operation: logical.UpdateOperation, Path: "test-sensitive",
			Storage: &logical.InmemStorage{}, Data: map[string]any{"api_key": v}})
	}
	resp, err := do([]any{"k3y-value"})
	if msg := errText(resp, err); !strings.Contains(msg, "api_key must be a single string") || strings.Contains(msg, "k3y-value") {
		t.Fatalf("%q", msg)
	}
	// Non-secret fields are left to the SDK; string secrets pass.
	if resp, err := do("fine"); err != nil || resp.IsError() {
		t.Fatal(err, respErr(resp))
	}
}

// TestHardening_UnreadableAnswerNotRetried (point 3): a 2xx token answer that cannot be
// read is not retried for a refresh or a code exchange, whose one-time secret the server
// has spent (before: 2 requests, the second re-sending the spent refresh token and
// getting invalid_grant); client credentials still retry.
func TestHardening_UnreadableAnswerNotRetried(t *testing.T) {
	t.Run("refresh", func(t *testing.T) {
		fe := newFaultEnv(t, kindAuth, modeCold, faultPolicy)
		rt := fe.storedCred().RefreshToken
		fe.inject(devidp.Fault{Truncate: true})
		before := fe.idp.Stats()
		resp, err := fe.do(logical.ReadOperation, "creds/hotel-ber", nil)
		after := fe.idp.Stats()
		if n := after.TokenRequests - before.TokenRequests; n != 1 {
			t.Errorf("%d token requests, want 1: the spent refresh token was sent again", n)
		}
		if n := after.Errors["invalid_grant"] - before.Errors["invalid_grant"]; n != 0 {
			t.Errorf("%d invalid_grant", n)
		}
		msg := errText(resp, err)
		if status := statusOf(logical.ReadOperation, resp, err); status != http.StatusBadGateway ||
			!strings.Contains(msg, "unusable token response") || !strings.Contains(msg, "may need a new authorization") {
			t.Errorf("%d %q", status, msg)
		}
		fe.assertNoSecrets(rt, connectSc)
	})
	t.Run("exchange", func(t *testing.T) {
		e := newTestEnv(t)
		e.b.retry = faultPolicy
		e.writeConnectConfig("connect", nil)
		q := e.authorize("hotel-ber", "connect")
		e.idp.InjectFaults(devidp.Fault{Status: 200, Body: "<html>maintenance</html>"})
		before := e.tokenRequests()
		status, page := e.callback(q)
		if n := e.tokenRequests() - before; n != 1 {
			t.Errorf("%d token requests, want 1: the code was sent again", n)
		}
		if status != http.StatusBadGateway || !strings.Contains(page, "authorization code sent with it is most likely spent") {
			t.Errorf("%d %s", status, pageText(page))
		}
		e.assertNoSecrets(q.Get("code"), connectSc)
	})
	t.Run("client credentials retry", func(t *testing.T) {
		e := newTestEnv(t)
		e.b.retry = faultPolicy
		e.writeSimpleConfig("hotel-muc", nil)
		e.idp.InjectFaults(devidp.Fault{Truncate: true})
		e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
		if n := e.tokenRequests(); n != 2 {
			t.Errorf("%d token requests, want 2", n)
		}
	})
}
