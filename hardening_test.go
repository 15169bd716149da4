package apaleo

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

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
			!strings.Contains(msg, "unusable token response") || !strings.Contains(msg, "run authorize") {
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
		if status != http.StatusBadGateway || !strings.Contains(page, "authorization code sent with it may be spent") {
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

// hookedIdentity wraps the real identity client: afterExchange runs once the code has
// been exchanged (the moment another request may change storage), and account, if set,
// replaces the account the token names (as if the admin had picked another account).
type hookedIdentity struct {
	identityServer
	afterExchange func()
	account       string
	issued        *string // the refresh token the exchange returned
}

func (h *hookedIdentity) Exchange(ctx context.Context, code, verifier string, scopes []string, p retryPolicy) (*tokenResult, error) {
	res, err := h.identityServer.Exchange(ctx, code, verifier, scopes, p)
	if err == nil {
		*h.issued = res.RefreshToken
		if h.account != "" {
			res.AccountCode = h.account
		}
	}
	if h.afterExchange != nil {
		h.afterExchange()
	}
	return res, err
}

func (e *testEnv) hookIdentity(h *hookedIdentity) {
	real := e.b.newClient
	if h.issued == nil {
		h.issued = new(string)
	}
	e.b.newClient = func(s clientSettings, now func() time.Time) (identityServer, error) {
		srv, err := real(s, now)
		if err != nil {
			return nil, err
		}
		h.identityServer = srv
		return h, nil
	}
}

// assertRevoked checks at the identity server that a refresh token no longer works.
func (e *testEnv) assertRevoked(rt string) {
	e.t.Helper()
	if rt == "" {
		e.t.Fatal("no refresh token was issued")
	}
	c, err := newIdentityClient(clientSettings{ClientID: connectID, ClientSecret: connectSc, IdentityURL: e.ts.URL, CACertificate: e.caPEM}, time.Now, &transportPool{})
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = c.Refresh(context.Background(), rt, retryPolicy{Total: 5 * time.Second, PerAttempt: 5 * time.Second, Attempts: 1})
	var ue *upstreamError
	if !errors.As(err, &ue) || ue.Code != "invalid_grant" {
		e.t.Errorf("the refresh token of the failed authorization still works: %v", err)
	}
}

// TestHardening_FailureAfterExchange (point 5): whatever fails after the code was
// exchanged, nothing is stored and the new refresh token is revoked; conflicts are 409.
func TestHardening_FailureAfterExchange(t *testing.T) {
	cases := []struct {
		name   string
		during func(e *testEnv)
		status int
		want   string
	}{
		{"config deleted during the exchange", func(e *testEnv) {
			e.mustDo(logical.DeleteOperation, "config/connect", nil)
		}, http.StatusConflict, `config "connect" was deleted`},
		{"name taken by a client-credentials config meanwhile", func(e *testEnv) {
			e.writeSimpleConfig("hotel-ber", nil)
		}, http.StatusConflict, `name "hotel-ber" is taken by client-credentials config/hotel-ber`},
		{"config switched to another app meanwhile", func(e *testEnv) {
			e.mustDo(logical.UpdateOperation, "config/connect", map[string]any{"client_id": "other-app", "client_secret": "other-secret"})
		}, http.StatusConflict, "changed its client_id"},
		{"storage refuses the credential", func(e *testEnv) {
			e.storage.(*logical.InmemStorage).FailPut(true)
		}, http.StatusInternalServerError, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeConnectConfig("connect", nil)
			q := e.authorize("hotel-ber", "connect")
			h := &hookedIdentity{afterExchange: func() { c.during(e) }}
			e.hookIdentity(h)

			for _, endpoint := range []string{"exchange"} {
				resp, err := e.do(logical.UpdateOperation, endpoint, map[string]any{"state": q.Get("state"), "code": q.Get("code")})
				msg := errText(resp, err)
				if status := statusOf(logical.UpdateOperation, resp, err); status != c.status {
					t.Errorf("status %d, want %d: %s", status, c.status, msg)
				}
				if !strings.Contains(msg, c.want) || (c.want != "" && !strings.Contains(msg, "refresh token was revoked")) {
					t.Errorf("%q does not contain %q and say the token was revoked", msg, c.want)
				}
			}
			e.storage.(*logical.InmemStorage).FailPut(false)
			if cred, _ := readCred(t.Context(), e.storage, "hotel-ber"); cred != nil && cred.GrantType == grantAuthorizationCode {
				t.Errorf("an authorized credential was stored: %+v", cred.Config)
			}
			e.assertRevoked(*h.issued)
			e.assertNoSecrets(*h.issued, q.Get("code"), connectSc)
		})
	}
}

// TestHardening_AccountChecks (point 6): account_code on authorize, and re-authorizing an
// existing credential, refuse a token for another account: it is revoked, nothing
// changes, and the page names the account expected. replace=true allows the change.
func TestHardening_AccountChecks(t *testing.T) {
	t.Run("account_code not matched", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeConnectConfig("connect", nil)
		resp := e.mustDo(logical.UpdateOperation, "authorize/hotel-muc", map[string]any{"config": "connect", "account_code": "MUC"})
		q := e.browse(resp.Data["auth_url"].(string)).Query()
		h := &hookedIdentity{}
		e.hookIdentity(h)
		status, page := e.callback(q)
		if status != http.StatusConflict || !strings.Contains(page, "expected an authorization for apaleo account MUC") || !strings.Contains(page, "for account BER") {
			t.Errorf("%d %s", status, pageText(page))
		}
		if cred, _ := readCred(t.Context(), e.storage, "hotel-muc"); cred != nil {
			t.Error("a credential was stored")
		}
		e.assertRevoked(*h.issued)
	})
	t.Run("account_code matched", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeConnectConfig("connect", nil)
		resp := e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect", "account_code": "BER"})
		if status, page := e.callback(e.browse(resp.Data["auth_url"].(string)).Query()); status != http.StatusOK {
			t.Fatalf("%d %s", status, pageText(page))
		}
	})
	t.Run("re-authorization yields another account", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeConnectConfig("connect", nil)
		if status, page := e.callback(e.authorize("hotel-ber", "connect")); status != http.StatusOK {
			t.Fatalf("%d %s", status, pageText(page))
		}
		held := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil).Data["access_token"]
		before, _ := readCred(t.Context(), e.storage, "hotel-ber")

		// Another admin opens the link and picks account FRA.
		q := e.authorize("hotel-ber", "connect")
		h := &hookedIdentity{account: "FRA"}
		e.hookIdentity(h)
		status, page := e.callback(q)
		if status != http.StatusConflict || !strings.Contains(page, "expected an authorization for apaleo account BER") ||
			!strings.Contains(page, "replace=true") || !strings.Contains(page, "for account FRA") {
			t.Errorf("%d %s", status, pageText(page))
		}
		after, _ := readCred(t.Context(), e.storage, "hotel-ber")
		if after == nil || after.RefreshToken != before.RefreshToken || after.AccountCode != "BER" {
			t.Error("the existing credential changed")
		}
		if got := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil).Data["access_token"]; got != held {
			t.Error("the existing credential's token changed")
		}
		e.assertRevoked(*h.issued)

		// Asking for another account up front, without replace: refused at once.
		resp, err := e.do(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect", "account_code": "FRA"})
		if status := statusOf(logical.UpdateOperation, resp, err); status != http.StatusConflict || !strings.Contains(errText(resp, err), "replace=true") {
			t.Errorf("authorize for another account: %d %s", status, errText(resp, err))
		}

		// With replace=true the account may change; the old refresh token is revoked.
		resp = e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect", "replace": true})
		if status, page := e.callback(e.browse(resp.Data["auth_url"].(string)).Query()); status != http.StatusOK || !strings.Contains(page, "FRA") {
			t.Fatalf("replace=true: %d %s", status, pageText(page))
		}
		e.assertRevoked(before.RefreshToken)
		e.assertNoSecrets(before.RefreshToken, *h.issued, connectSc)
	})
	t.Run("pending entry stored before account_code existed", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeConnectConfig("connect", nil)
		q := e.authorize("hotel-ber", "connect")
		key := pendingKey(q.Get("state"))
		entry, _ := e.storage.Get(t.Context(), key)
		var old map[string]any
		if err := json.Unmarshal(entry.Value, &old); err != nil {
			t.Fatal(err)
		}
		delete(old, "account_code")
		delete(old, "replace")
		raw, _ := json.Marshal(old)
		if err := e.storage.Put(t.Context(), &logical.StorageEntry{Key: key, Value: raw, SealWrap: entry.SealWrap}); err != nil {
			t.Fatal(err)
		}
		if status, page := e.callback(q); status != http.StatusOK {
			t.Fatalf("%d %s", status, pageText(page))
		}
	})
	t.Run("bad account_code", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeConnectConfig("connect", nil)
		e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{"config": "connect", "account_code": "<script>"}, "is not an apaleo account code")
		msg := e.badRequest(logical.UpdateOperation, "authorize/x", map[string]any{"config": "connect", "account_code": strings.Repeat("A", 5000)}, "is not an apaleo account code")
		if len(msg) > 300 {
			t.Errorf("the message echoes %d bytes", len(msg))
		}
	})
}

// TestHardening_CallbackTextFromAnyone (point 8): a callback whose state matches no pending
// authorization shows a fixed text, not what its query says; with a matching state,
// apaleo's error_description is shown. Every echoed field is bounded.
func TestHardening_CallbackTextFromAnyone(t *testing.T) {
	e := newTestEnv(t)
	e.writeConnectConfig("connect", nil)
	for _, state := range []string{"forged", ""} {
		status, page := e.callback(url.Values{"state": {state}, "error": {"access_denied"}, "error_description": {"Call evil.example support now"}})
		if status != http.StatusBadRequest || strings.Contains(page, "evil.example") || strings.Contains(page, "access_denied") ||
			!strings.Contains(page, "does not belong to an authorization Vault is waiting for") {
			t.Errorf("state %q: %d %s", state, status, pageText(page))
		}
	}
	if strings.Contains(e.logs.String(), "evil.example") {
		t.Error("the forged text reached the log")
	}

	resp := e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"})
	status, page := e.callback(url.Values{"state": {resp.Data["state"].(string)}, "error": {"access_denied"}, "error_description": {"The user denied access"}})
	if status != http.StatusBadRequest || !strings.Contains(page, "access_denied") || !strings.Contains(page, "The user denied access") || !strings.Contains(page, "authorize/hotel-ber") {
		t.Errorf("matched state: %d %s", status, pageText(page))
	}

	// config on authorize was echoed at any length.
	msg := e.badRequest(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": strings.Repeat("x", 100<<10) + "!"}, "config")
	if len(msg) > 300 {
		t.Errorf("authorize echoes %d bytes of config", len(msg))
	}
}
