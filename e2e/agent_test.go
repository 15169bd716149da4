//go:build e2e

package e2e

import (
	"path/filepath"
	"testing"
	"time"
)

// agent_test.go: Vault Agent templates on renewable creds/ leases.

// TestAgentRenewable120s: with 120 s tokens, a Vault Agent template renews its
// renewable lease (same token) and re-renders with a new token before the old one
// expires. The token's exp claim, set by the identity server, is the deadline. The test
// waits out most of a token's life (about 100 s), so it runs beside the others.
func TestAgentRenewable120s(t *testing.T) {
	t.Parallel()
	const tokenTTL = 120 * time.Second
	v := startDevVaultWith(t, "vault-agent120", "info", nil)
	auditLog := filepath.Join(v.dir, "audit.log")
	v.enableFileAudit(t, auditLog)
	sec := randomSecret(t, "muc")
	idp := startIdentity(t, "identity-120", tokenTTL, "hotel-muc:"+sec+":MUC:account.read")
	v.enablePlugin(t)
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: sec, idp: idp, scopes: "account.read"})
	path := mount + "/creds/hotel-muc"
	agent := startAgent(t, v, "apaleo-agent", path)
	read := func() string { return agent.rendered(path) }
	alive := func() {
		if agent.exited() {
			t.Fatalf("vault agent exited: %v\n%s", agent.err, tail(agent.logPath, 30))
		}
	}
	var first string
	waitFor(t, "Vault Agent to render the template", 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		alive()
		first = read()
		return first != "", nil
	})
	firstExp := time.Unix(int64(jwtClaims(t, first)["exp"].(float64)), 0)

	var second string
	waitFor(t, "Vault Agent to render a new token", tokenTTL+20*time.Second, 200*time.Millisecond, func() (bool, error) {
		alive()
		second = read()
		return second != "" && second != first, nil
	})
	renderedAt := time.Now()
	jwtClaims(t, second)
	renewals, failed := auditedRenewals(t, auditLog, time.Time{})
	t.Logf("agent figures | %s tokens | new token rendered %s before the old one expired | %d lease renewals (audit log), %d failed | %d leases issued | %d tokens issued",
		tokenTTL, firstExp.Sub(renderedAt).Round(time.Second), renewals, failed, auditedLeases(t, auditLog, mount+"/creds/hotel-muc"), idp.stats(t).Issued)
	if !renderedAt.Before(firstExp) {
		t.Errorf("the new token was rendered at %s, after the old one expired at %s", renderedAt.Format(time.TimeOnly), firstExp.Format(time.TimeOnly))
	}
	if renewals == 0 {
		t.Error("Agent never renewed the lease: the test did not exercise renewable leases")
	}
	// A renewal up to the token's expiry is Vault's to grant: a failed one (the plugin's
	// max TTL counted wrongly, say) would end the lease early.
	if failed > 0 {
		t.Errorf("%d of Agent's %d lease renewals failed (audit log), want none", failed, renewals)
	}
	agent.stop(t)
}
