//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// agent_consumers_test.go: Vault Agent as the consumer the product is for. Agent reads a leased
// token again at 85-95 % of its lease; refresh-ahead must have the next token ready by
// then, so that no read after a name's first waits on apaleo. Measured from Vault's
// audit log, not from the plugin.

// TestAgentConsumers: a real `vault agent` renders an authorized credential and a
// client-credentials config (at max_token_requests_per_second=1) for over 2.5 token
// lives: 60 s tokens, min_ttl 15 s, every token request answered after 1.2 s, one 500
// half-way. No read of creds/ after each name's first takes 600 ms or more in Vault's
// audit log.
func TestAgentConsumers(t *testing.T) {
	t.Parallel()
	const (
		ttl    = 60 * time.Second
		run    = 2*ttl + 40*time.Second
		minTTL = ttl / 4
		apaleo = 1200 * time.Millisecond
		waited = 600 * time.Millisecond
	)
	v := startDevVaultWith(t, "vault-agent", "info", nil)
	v.enablePlugin(t)
	auditLog := filepath.Join(v.dir, "audit.log")
	v.enableFileAudit(t, auditLog)
	callback := v.Addr + "/v1/" + mount + "/callback"
	secApp, secCC := randomSecret(t, "agent-app"), randomSecret(t, "agent-cc")
	idp := startIdentity(t, "identity-agent", ttl,
		"agent-app:"+secApp+":AGT:reservations.read:"+callback,
		"agent-cc:"+secCC+":AGC:reservations.read")
	v.writeConfig(t, appConfig{name: "agent-app", clientID: "agent-app", secret: secApp, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read", minTTL: minTTL.String()})
	v.writeConfig(t, appConfig{name: "agent-cc", clientID: "agent-cc", secret: secCC, idp: idp,
		scopes: "reservations.read", minTTL: minTTL.String()})
	v.must(t, "write", mount+"/config/agent-cc", "max_token_requests_per_second=1")
	authorizeAll(t, v, idp, "agent-app", []string{"agent-hotel"})

	slow := map[string]any{"delay": apaleo.String()}
	idp.injectFaults(t, repeated(200, slow)...)
	paths := []string{mount + "/creds/agent-hotel", mount + "/creds/agent-cc"}
	a := startAgent(t, v, "agent-consumers", paths...)
	started := time.Now()
	first := map[string]string{}
	injected := false
	for time.Since(started) < run {
		if a.exited() {
			t.Fatalf("vault agent exited: %v\n%s", a.err, tail(a.logPath, 30))
		}
		for _, p := range paths {
			if first[p] == "" {
				first[p] = a.rendered(p)
			}
		}
		if time.Since(started) >= run/2 && !injected {
			// One 500 half-way, then slow answers again.
			idp.clearFaults(t)
			idp.injectFaults(t, append([]map[string]any{{"delay": apaleo.String(), "status": 500}}, repeated(200, slow)...)...)
			t.Logf("%v: the next token request gets a 500", time.Since(started).Round(time.Second))
			injected = true
		}
		time.Sleep(time.Second)
	}
	a.stop(t)
	after := idp.stats(t)

	reads := map[string]int{}
	var slowReads []string
	for _, c := range auditCalls(t, auditLog) {
		name, ok := strings.CutPrefix(c.Path, mount+"/creds/")
		if !ok || c.Operation != "read" {
			continue
		}
		reads[name]++
		line := fmt.Sprintf("%s read %d at +%v took %v", name, reads[name], c.Start.Sub(started).Round(100*time.Millisecond), c.Took.Round(time.Millisecond))
		t.Log(line)
		if reads[name] > 1 && c.Took >= waited {
			slowReads = append(slowReads, line)
		}
	}
	for _, p := range paths {
		name := strings.TrimPrefix(p, mount+"/creds/")
		if reads[name] < 2 {
			t.Errorf("%s: %d reads in Vault's audit log, want 2 or more (Agent reads again at 85-95 %% of the lease)", name, reads[name])
		}
		if last := a.rendered(p); first[p] == "" || last == first[p] {
			t.Errorf("%s: Agent rendered no new token in %v", name, run)
		}
	}
	t.Logf("identity server: %d token requests by agent-app, %d by agent-cc", after.ByClient["agent-app"], after.ByClient["agent-cc"])
	t.Logf("Agent reads after each name's first that took %v or more (audit log): %d", waited, len(slowReads))
	if len(slowReads) != 0 {
		t.Errorf("%d reads after the first waited on apaleo:\n%s", len(slowReads), strings.Join(slowReads, "\n"))
	}
	if after.PendingFaults > 200 {
		t.Errorf("the 500 was never sent (%d faults still queued)", after.PendingFaults)
	}
}
