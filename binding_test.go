package apaleo

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// binding_test.go: a refresh token is sent only to the app that issued it. A config
// writer who repoints identity_url (with a client_secret of their own) or client_id gets
// no refresh token: reads, refresh-ahead, keep-alive and delete send nothing, counted at
// a second, attacker's fake identity server; writing the config back revives the
// credential; entries of v0.1.0 learn their app before any config write can change it.

const evilURL = "https://evil.example"

// withAttacker routes b's identity clients by identity_url: evilURL to the returned
// attacker's fake, anything else to e.idp. Both count every request that reaches them.
func withAttacker(e *engineEnv, b *backend, attacker *fakeIdentity) *fakeIdentity {
	if attacker == nil {
		attacker = newFakeIdentity(e.clock.Now)
	}
	b.newClient = func(s clientSettings, _ func() time.Time) (identityServer, error) {
		if s.IdentityURL == evilURL {
			return attacker, nil
		}
		return e.idp, nil
	}
	return attacker
}

// repoint writes config/connect as a config writer without the app's secret would.
func (e *engineEnv) repoint(fields map[string]any) {
	e.t.Helper()
	e.mustDo(logical.UpdateOperation, "config/connect", fields)
}

var backToApp = map[string]any{"client_id": "CONNECT", "identity_url": "https://identity.example", "client_secret": "connect-secret"}

func TestBinding_RepointedConfigSendsNothing(t *testing.T) {
	e := newEngineEnv(t)
	evil := withAttacker(e, e.b, nil)
	e.connectConfig("connect", map[string]any{"idle_refresh_interval": "24h"})
	e.mustDo(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-imported"})
	got := e.stored("hotel-ber")
	if got.ClientID != "CONNECT" || got.IdentityURL != "https://identity.example" {
		t.Fatalf("an import is bound to %q at %q, want the config's app", got.ClientID, got.IdentityURL)
	}
	live := got.RefreshToken

	for _, c := range []struct {
		name   string
		fields map[string]any
		names  []string
	}{
		{"identity_url and secret", map[string]any{"identity_url": evilURL, "client_secret": "evil-secret"},
			[]string{`client_id "CONNECT" at https://identity.example`, `client_id "CONNECT" at ` + evilURL}},
		{"client_id", map[string]any{"client_id": "EVIL-APP", "client_secret": "evil-secret"},
			[]string{`client_id "CONNECT" at https://identity.example`, `client_id "EVIL-APP" at https://identity.example`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sentBefore := e.idp.total()
			e.repoint(c.fields)
			e.clock.Add(25 * time.Hour) // the token expired, the keep-alive is due

			status, msg := e.readErr("hotel-ber")
			if status != http.StatusBadRequest {
				t.Errorf("read: status %d, want 400", status)
			}
			for _, s := range c.names {
				if !strings.Contains(msg, s) {
					t.Errorf("read error %q does not name %s", msg, s)
				}
			}
			info := e.list()["hotel-ber"]
			if info["state"] != stateNeedsAuthorization || !strings.Contains(info["last_error"].(string), c.names[0]) {
				t.Errorf("list: %v, want needs_authorization naming both apps", info)
			}
			// Refresh-ahead and keep-alive, asked directly and through the scheduler's pass.
			for _, trigger := range []string{triggerRefreshAhead, triggerKeepAlive} {
				if _, err := e.b.fetchToken(t.Context(), e.storage, "hotel-ber", trigger); err == nil {
					t.Errorf("%s: a token request went out", trigger)
				}
			}
			e.b.runBackground("hotel-ber")
			e.b.waitFlights()

			if n := evil.total(); n != 0 {
				t.Fatalf("the attacker's server received %d token requests", n)
			}
			if n := e.idp.total() - sentBefore; n != 0 {
				t.Errorf("the app's server received %d token requests while the config named another", n)
			}
			if rt := e.stored("hotel-ber").RefreshToken; rt != live {
				t.Fatalf("the stored refresh token changed to %q", rt)
			}
			for _, secret := range []string{"evil-secret", "connect-secret", live} {
				if strings.Contains(msg, secret) || strings.Contains(e.logs.String(), secret) {
					t.Errorf("a secret shows in the error or the logs")
				}
			}

			// Written back, the credential reads again: its refresh token goes to its app.
			e.repoint(backToApp)
			resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
			if resp.Data["access_token"] == nil || e.idp.total()-sentBefore != 1 || e.idp.invalidGrants() != 0 {
				t.Fatalf("after writing the config back: %v, %d requests at the app, %d refused", resp.Data, e.idp.total()-sentBefore, e.idp.invalidGrants())
			}
			live = e.stored("hotel-ber").RefreshToken
			if info := e.list()["hotel-ber"]; info["state"] != stateOK {
				t.Errorf("after writing the config back the state is %v", info["state"])
			}
		})
	}

	// Delete while the config names another app: deleted in Vault, revoked nowhere.
	e.repoint(map[string]any{"identity_url": evilURL, "client_secret": "evil-secret"})
	resp := e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "not revoked") || !strings.Contains(resp.Warnings[0], evilURL) {
		t.Errorf("delete: warnings %v, want one saying the token was not revoked at the other app", resp)
	}
	if n, m := evil.count("revoke"), e.idp.count("revoke"); n != 0 || m != 0 {
		t.Errorf("revocations: %d at the attacker's server, %d at the app's; want none", n, m)
	}
	if c, _ := readCred(t.Context(), e.storage, "hotel-ber"); c != nil {
		t.Error("the credential is still stored")
	}
	if n := evil.total(); n != 0 {
		t.Errorf("the attacker's server received %d requests", n)
	}
}

// TestBinding_ReauthorizeBindsAnew: an authorization under the config's new app binds
// the credential to that app; the replaced token, bound to the old one, goes nowhere.
func TestBinding_ReauthorizeBindsAnew(t *testing.T) {
	e := newEngineEnv(t)
	other := withAttacker(e, e.b, nil) // here the operator's new app, at another server
	other.issued = 100                 // its tokens differ from the first server's
	e.connectConfig("connect", nil)
	e.mustDo(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-imported"})
	old := e.stored("hotel-ber").RefreshToken

	e.repoint(map[string]any{"client_id": "NEW-APP", "identity_url": evilURL, "client_secret": "new-secret"})
	state := e.mustDo(logical.UpdateOperation, "authorize/hotel-ber", map[string]any{"config": "connect"}).Data["state"]
	e.mustDo(logical.UpdateOperation, "exchange", map[string]any{"state": state, "code": "code-1"})

	got := e.stored("hotel-ber")
	if got.ClientID != "NEW-APP" || got.IdentityURL != evilURL || got.RefreshToken == old {
		t.Fatalf("re-authorized credential bound to %q at %q (token replaced: %v)", got.ClientID, got.IdentityURL, got.RefreshToken != old)
	}
	if n, m := other.count("revoke"), e.idp.count("revoke"); n != 0 || m != 0 {
		t.Errorf("the replaced token, bound to the old app, was sent for revocation: %d at the new server, %d at the old", n, m)
	}
	if !strings.Contains(e.logs.String(), "not revoked") {
		t.Error("nothing logged that the replaced token was not revoked")
	}
	e.clock.Add(2 * time.Hour)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if n := other.count(grantRefreshToken); n != 1 {
		t.Errorf("the new app's server received %d refreshes, want 1", n)
	}
}

// goldenStorage is storage holding v0.1.0's entries as that release wrote them.
func goldenStorage(t *testing.T) logical.Storage {
	t.Helper()
	s := &logical.InmemStorage{}
	for _, g := range readGolden(t, "v0.1.0") {
		if err := s.Put(t.Context(), &logical.StorageEntry{Key: g.key, Value: g.value}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

const goldenIdentity = "https://127.0.0.1:38517" // config/connect's in v0.1.0's entries

// TestBinding_UpgradeLearnsBinding: an authorized credential stored by v0.1.0 learns the
// app of its config as it stands: stored by the first periodic run where storage may be
// written, in memory only on a standby, and before the first config write, so that a
// repointing write cannot teach it the new app.
func TestBinding_UpgradeLearnsBinding(t *testing.T) {
	t.Run("periodic, standby first", func(t *testing.T) {
		e := newEngineEnv(t)
		e.storage = goldenStorage(t)
		orig, _ := e.storage.Get(t.Context(), "creds/hotel-ber")

		standby := e.newBackend(&logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby})
		withAttacker(e, standby, nil)
		if err := standby.periodic(t.Context(), &logical.Request{Storage: e.storage}); err != nil {
			t.Fatal(err)
		}
		if now, _ := e.storage.Get(t.Context(), "creds/hotel-ber"); !bytes.Equal(now.Value, orig.Value) {
			t.Fatal("a standby wrote the credential")
		}
		st := standby.status("hotel-ber", mustCred(t, standby, e.storage), mustConfig(t, standby, e.storage), e.clock.Now())
		if st.state != stateOK {
			t.Errorf("on the standby the unbound credential is %s (%s), want ok", st.state, st.lastError)
		}

		e.b = e.newBackend(nil)
		evil := withAttacker(e, e.b, nil)
		if err := e.b.periodic(t.Context(), &logical.Request{Storage: e.storage}); err != nil {
			t.Fatal(err)
		}
		if c := e.stored("hotel-ber"); c.ClientID != "CONNECT-APP" || c.IdentityURL != goldenIdentity || c.RefreshToken != "golden-refresh-token-1" {
			t.Fatalf("after the upgrade pass: bound to %q at %q, refresh token kept: %v", c.ClientID, c.IdentityURL, c.RefreshToken == "golden-refresh-token-1")
		}
		e.repoint(map[string]any{"identity_url": evilURL, "client_secret": "evil-secret"})
		if status, msg := e.readErr("hotel-ber"); status != http.StatusBadRequest || !strings.Contains(msg, goldenIdentity) {
			t.Errorf("read after repointing: %d %s", status, msg)
		}
		if n := evil.total(); n != 0 {
			t.Errorf("the attacker's server received %d token requests", n)
		}
	})

	t.Run("a repointing config write first", func(t *testing.T) {
		e := newEngineEnv(t)
		e.storage = goldenStorage(t)
		e.b = e.newBackend(nil)
		evil := withAttacker(e, e.b, nil)
		e.repoint(map[string]any{"identity_url": evilURL, "client_secret": "evil-secret"})
		if c := e.stored("hotel-ber"); c.ClientID != "CONNECT-APP" || c.IdentityURL != goldenIdentity {
			t.Fatalf("the config write taught the credential %q at %q", c.ClientID, c.IdentityURL)
		}
		e.readErr("hotel-ber")
		e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
		if n := evil.total() + evil.count("revoke"); n != 0 {
			t.Errorf("the attacker's server received %d requests", n)
		}
	})
}

func mustCred(t *testing.T, b *backend, s logical.Storage) *credential {
	t.Helper()
	c, err := b.cred(t.Context(), s, "hotel-ber")
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	return c
}

func mustConfig(t *testing.T, b *backend, s logical.Storage) *apaleoConfig {
	t.Helper()
	c, err := b.config(context.Background(), s, "connect")
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	return c
}

// TestEngine_RefusedAnswerKeepsRotatedToken: apaleo answers a refresh with a token the
// checks refuse (token_type mac) and a rotated refresh token. The read answers 502
// naming the field; the rotated refresh token is stored, and the spent one never goes
// again.
func TestEngine_RefusedAnswerKeepsRotatedToken(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.clock.Add(61 * time.Minute)
	refused := refusedAnswer(`token_type "mac" is not Bearer`)
	refused.rotated = "rt-rotated"
	e.idp.push(refused)
	e.idp.spent["rt-0"] = true // apaleo spent it when it answered

	status, msg := e.readErr("hotel-ber")
	if status != http.StatusBadGateway || !strings.Contains(msg, "token_type") {
		t.Errorf("read: %d %s, want 502 naming token_type", status, msg)
	}
	if rt := e.stored("hotel-ber").RefreshToken; rt != "rt-rotated" {
		t.Fatalf("stored refresh token %q, want the rotated one the refused answer carried", rt)
	}
	if strings.Contains(msg, "rt-rotated") || strings.Contains(e.logs.String(), "rt-rotated") {
		t.Error("the rotated refresh token shows in the error or the logs")
	}
	e.clock.Add(time.Minute) // past the backoff
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if n := e.idp.invalidGrants(); n != 0 {
		t.Errorf("the spent refresh token was sent again (%d refused)", n)
	}
}
