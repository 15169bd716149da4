package apaleo

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// TestSecret_RenewUpToTokenExpiry: a creds/ lease renews to the token's remaining life,
// capped by the increment and the mount's max TTL, never past the token's expiry, and
// neither renewal nor revocation asks the identity server for anything. Each answer is
// also put through what Vault's expiration manager does with it (framework.CalculateTTL,
// the max TTL counted from the lease's issue time): the lease Vault grants is the one
// the plugin meant.
func TestSecret_RenewUpToTokenExpiry(t *testing.T) {
	e := newEngineEnv(t)
	sys := &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 50 * time.Minute}
	e.b = e.newBackend(sys)
	e.simpleConfig("hotel-muc", nil)
	read := e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
	if read.Secret == nil || !read.Secret.Renewable {
		t.Fatalf("lease: %#v, want renewable", read.Secret)
	}
	expires, _ := time.Parse(time.RFC3339, read.Data["expires_at"].(string))
	issued := e.clock.Now()
	calls := e.idp.total()

	renew := func(increment time.Duration) (*logical.Response, error) {
		s := *read.Secret
		s.IssueTime, s.Increment = issued, increment
		return e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.RenewOperation, Path: "creds/hotel-muc", Storage: e.storage, Secret: &s,
		})
	}
	near := func(got, want time.Duration) bool { return got >= want-2*time.Second && got <= want+time.Second }
	// granted is the TTL Vault grants for resp, as its expiration manager computes it
	// (vault/expiration.go, Renew): CalculateTTL runs on the wall clock, so the lease's
	// issue time is placed as far before it as the test clock has moved since the read.
	granted := func(resp *logical.Response, increment time.Duration) (time.Duration, error) {
		ttl, _, err := framework.CalculateTTL(sys, increment, resp.Secret.TTL, 0, resp.Secret.MaxTTL, 0,
			time.Now().Add(-e.clock.Now().Sub(issued)))
		return ttl, err
	}

	e.clock.Add(10 * time.Minute)
	cases := []struct {
		name      string
		increment time.Duration
		want      time.Duration
	}{
		{"no increment: up to the mount's max TTL from issue", 0, 40 * time.Minute},
		{"a short increment", 5 * time.Minute, 5 * time.Minute},
		{"an increment past the token's expiry", 3 * time.Hour, 40 * time.Minute},
	}
	for _, c := range cases {
		resp, err := renew(c.increment)
		if err != nil || resp == nil || resp.Secret == nil {
			t.Fatalf("%s: renew: %v %v", c.name, resp, err)
		}
		if !near(resp.Secret.TTL, c.want) {
			t.Errorf("%s: TTL %v, want %v", c.name, resp.Secret.TTL, c.want)
		}
		if got, err := granted(resp, c.increment); err != nil || !near(got, c.want) {
			t.Errorf("%s: Vault grants %v (%v), want %v", c.name, got, err, c.want)
		}
	}

	// Past the mount's cap, the token's expiry is the limit: 55 minutes in, 5 are left.
	sys = &logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour}
	e.b = e.newBackend(sys)
	e.clock.Add(45 * time.Minute)
	resp, err := renew(0)
	if err != nil || resp == nil || resp.Secret == nil {
		t.Fatalf("renew near expiry: %v %v", resp, err)
	}
	left := expires.Sub(e.clock.Now())
	if !near(resp.Secret.TTL, left) || resp.Secret.TTL > left+time.Second { // expires_at is to the second
		t.Errorf("renew near expiry: TTL %v, want the token's remaining %v", resp.Secret.TTL, left)
	}
	// Vault caps it at the max TTL from the lease's issue: the token's expiry, not the
	// token's remaining life counted from the issue (which would end it 55 minutes ago).
	if got, err := granted(resp, 0); err != nil || !near(got, left) || got > left+time.Second {
		t.Errorf("renew near expiry: Vault grants %v (%v), want the token's remaining %v", got, err, left)
	}
	if got, err := granted(resp, time.Hour); err != nil || !near(got, left) || got > left+time.Second {
		t.Errorf("renew near expiry with a 1 h increment: Vault grants %v (%v), want the token's remaining %v", got, err, left)
	}

	e.clock.Add(10 * time.Minute)
	if resp, err := renew(0); err == nil && (resp == nil || !resp.IsError()) {
		t.Errorf("renewing a lease whose token expired: %v, want an error", resp.Secret)
	}

	if _, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Path: "creds/hotel-muc", Storage: e.storage, Secret: read.Secret,
	}); err != nil {
		t.Errorf("revoke: %v", err)
	}
	if got := e.idp.total(); got != calls {
		t.Errorf("renewals and revocation made %d identity-server calls, want 0", got-calls)
	}
}
