package apaleo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// engine_consumers_test.go: the engine as its consumers read it (Vault Agent once per
// lease at 85-95 % of it, the Vault Secrets Operator at 67-77 %), the app's 429 hold, lost
// answers, keep-alive, and what goes with a delete. All on the scripted fake and the
// injected clock.

// runUntil moves the clock to t, running on the way every background plan that falls due.
func (e *engineEnv) runUntil(t time.Time) {
	e.t.Helper()
	for range 1000 {
		due, ok := e.b.refresher.nextDue()
		if !ok || due.After(t) {
			e.clock.advanceTo(t)
			return
		}
		e.clock.advanceTo(due)
		e.b.refresher.runDue()
		e.b.waitFlights()
	}
	e.t.Fatal("more than 1000 plans fell due: a plan loops")
}

// readLease reads creds/<name> and returns the token, its lease TTL and whether the read
// sent a token request of its own (counted at the fake).
func (e *engineEnv) readLease(name string) (string, time.Duration, bool) {
	e.t.Helper()
	before := e.idp.total()
	resp := e.mustDo(logical.ReadOperation, "creds/"+name, nil)
	if len(resp.Warnings) > 0 {
		e.t.Fatalf("read %s warned: %v", name, resp.Warnings)
	}
	return resp.Data["access_token"].(string), resp.Secret.TTL, e.idp.total() != before
}

// TestConsumers_Cadences: a consumer that reads once per lease, at the fraction of it
// its kind reads at, never waits for a token request after its first read: refresh-ahead
// got the next token before the one it holds stopped being fresh. For a client
// credentials config (whose first token a read fetches) and an authorized credential.
func TestConsumers_Cadences(t *testing.T) {
	for _, c := range []struct {
		consumer string
		from, to float64 // of the lease, when the consumer reads again
	}{
		{"vault agent", 0.85, 0.95},
		{"vault secrets operator", 0.67, 0.77},
		{"service every 10 s", 0, 0},
	} {
		for _, grant := range []string{grantClientCredentials, grantAuthorizationCode} {
			t.Run(c.consumer+"/"+grant, func(t *testing.T) {
				e := newEngineEnv(t)
				e.idp.lifetime = 120 * time.Second
				e.idp.latency = func() { e.clock.Add(1200 * time.Millisecond) }
				name := "muc"
				if grant == grantClientCredentials {
					e.simpleConfig(name, map[string]any{"min_ttl": 30})
				} else {
					e.connectConfig("connect", map[string]any{"min_ttl": 30})
					e.authorized(name, "connect", "rt-0")
					e.clock.Add(2 * time.Hour) // its token expired: the first read fetches
				}
				_, ttl, _ := e.readLease(name)
				tokens := map[string]bool{}
				for i := range 40 {
					wait := 10 * time.Second
					if c.to > 0 {
						wait = time.Duration((c.from + rand.Float64()*(c.to-c.from)) * float64(ttl))
					}
					e.runUntil(e.clock.Now().Add(wait))
					tok, next, fetched := e.readLease(name)
					if fetched {
						t.Fatalf("read %d (%v into a %v lease) waited for a token request", i+2, wait, ttl)
					}
					tokens[tok] = true
					ttl = next
				}
				if len(tokens) < 3 {
					t.Fatalf("the reads saw %d tokens: refresh-ahead did not run", len(tokens))
				}
				if refused := e.idp.invalidGrants(); refused != 0 {
					t.Fatalf("%d spent refresh tokens sent", refused)
				}
			})
		}
	}
}

// TestConsumers_FailedRefreshAheadPlannedAgain: a refresh-ahead that fails is planned at
// failure memory's next attempt, and then the reader still never waits.
func TestConsumers_FailedRefreshAheadPlannedAgain(t *testing.T) {
	e := newEngineEnv(t)
	e.idp.lifetime = 120 * time.Second
	e.simpleConfig("muc", map[string]any{"min_ttl": 30})
	e.readLease("muc")
	due, _ := e.b.refresher.nextDue()
	e.idp.push(upstream(503, "server_error"))
	e.runUntil(due)
	f := e.b.failureOf("muc")
	if f == nil || f.next.IsZero() {
		t.Fatalf("failure memory after a failed refresh-ahead: %+v", f)
	}
	if again, ok := e.b.refresher.planned("muc"); !ok || !again.Equal(f.next) {
		t.Fatalf("planned %v %v, want failure memory's next attempt %v", again, ok, f.next)
	}
	e.runUntil(f.next)
	if n := e.idp.total(); n != 3 {
		t.Fatalf("%d requests, want 3 (first, failed, again)", n)
	}
	if _, _, fetched := e.readLease("muc"); fetched {
		t.Fatal("the reader waited after refresh-ahead recovered")
	}
}

// TestConsumers_RefreshAheadAtSlowBudgets: at 1 token request a second and below,
// refresh-ahead still runs, and a plan wakes the scheduler once per due time.
func TestConsumers_RefreshAheadAtSlowBudgets(t *testing.T) {
	for _, perSecond := range []float64{1, 0.5, 0.1} {
		e := newEngineEnv(t)
		e.simpleConfig("muc", map[string]any{"max_token_requests_per_second": perSecond})
		e.readLease("muc")
		wakes := 0
		for end := e.clock.Now().Add(2 * time.Hour); ; wakes++ {
			due, ok := e.b.refresher.nextDue()
			if !ok || due.After(end) {
				break
			}
			e.runUntil(due)
			if wakes > 10 {
				t.Fatalf("%g/s: %d wake-ups for one token", perSecond, wakes)
			}
		}
		if n := e.idp.total(); n != 2 || wakes != 1 {
			t.Fatalf("%g/s: %d requests (want 2: the read's, refresh-ahead's), %d wake-ups (want 1)", perSecond, n, wakes)
		}
	}
}

// TestConsumers_ManyDueTogether: 40 credentials of one app due in the same tick, at
// 5/s: refresh-ahead takes one moment at a time, never queues ahead of a reader, and
// every one of them is refreshed in the end.
func TestConsumers_ManyDueTogether(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"max_token_requests_per_second": 5, "idle_refresh_interval": 0})
	for i := range 40 {
		e.authorized(fmt.Sprintf("hotel-%d", i), "connect", fmt.Sprintf("rt-h%d", i))
		e.mustDo(logical.ReadOperation, fmt.Sprintf("creds/hotel-%d", i), nil)
	}
	cfg, _ := e.b.config(context.Background(), e.storage, "connect")
	start, end := refreshWindow(e.stored("hotel-0").Token, cfg)
	e.runUntil(start.Add(end.Sub(start) / 2))
	// A cold reader comes now: it is answered within its bound, not behind 40 plans.
	e.authorized("hotel-cold", "connect", "rt-cold")
	c := e.stored("hotel-cold")
	c.Token = nil
	if err := e.b.putCred(context.Background(), e.storage, "hotel-cold", c); err != nil {
		t.Fatal(err)
	}
	e.mustDo(logical.ReadOperation, "creds/hotel-cold", nil)
	e.runUntil(end.Add(time.Minute))
	for i := range 40 {
		if rt := e.stored(fmt.Sprintf("hotel-%d", i)).RefreshToken; rt == fmt.Sprintf("rt-h%d", i) {
			t.Fatalf("hotel-%d was not refreshed ahead", i)
		}
	}
	e.idp.mu.Lock()
	times := append([]time.Time(nil), e.idp.clockTimes...)
	e.idp.mu.Unlock()
	if most := mostInAnySecond(times); most > 5 {
		t.Fatalf("%d token requests in one second at 5/s", most)
	}
}

// TestConsumers_AppHold: a 429 with Retry-After for one hotel holds every hotel of the
// app: no request of the config until then (capped at an hour), reads answer their
// cached tokens, and the list shows every name failing with the next attempt.
func TestConsumers_AppHold(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.simpleConfig("other-app", nil)
	for i := range 10 {
		e.authorized(fmt.Sprintf("hotel-%d", i), "connect", fmt.Sprintf("rt-h%d", i))
	}
	e.clock.Add(50 * time.Minute) // every token stale, still valid
	e.idp.push(&upstreamError{Status: 429, Code: "rate_limited", Answered: true, Temporary: true, RetryAfter: time.Minute})
	for i := range 10 {
		resp := e.mustDo(logical.ReadOperation, fmt.Sprintf("creds/hotel-%d", i), nil)
		if resp.Data["access_token"] != fmt.Sprintf("at-hotel-%d", i) || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "next attempt at") {
			t.Fatalf("hotel-%d: %v %v", i, resp.Data["access_token"], resp.Warnings)
		}
	}
	if n := e.idp.total(); n != 1 {
		t.Fatalf("%d requests of the app within its hold, want 1", n)
	}
	e.mustDo(logical.ReadOperation, "creds/other-app", nil) // another app is not held
	for name, info := range e.list() {
		if strings.HasPrefix(name, "hotel-") && (info["state"] != stateFailing || info["next_attempt_at"] == nil) {
			t.Fatalf("%s listed %v", name, info)
		}
	}
	e.runUntil(e.clock.Now().Add(61 * time.Second))
	e.mustDo(logical.ReadOperation, "creds/hotel-3", nil)
	if n := e.idp.count("refresh_token"); n != 2 {
		t.Fatalf("%d refreshes after the hold, want 2", n)
	}

	// A Retry-After of a year holds an hour at most.
	e.idp.push(&upstreamError{Status: 429, Code: "rate_limited", Answered: true, Temporary: true, RetryAfter: 365 * 24 * time.Hour})
	e.mustDo(logical.ReadOperation, "creds/hotel-4", nil)
	until, _, held := e.b.holdOf("connect", e.clock.Now())
	if !held || until.After(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("hold until %v (%v)", until, held)
	}
}

// TestConsumers_LostAnswer: a refresh handled by apaleo whose answer never arrived is
// sent once more; when apaleo refuses that, the credential needs a new authorization and
// says the first answer was lost. A config write does not clear that; a new
// authorization does.
func TestConsumers_LostAnswer(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.clock.Add(2 * time.Hour)
	e.idp.push(errDropAfterHandle)
	status, msg := e.readErr("hotel-ber")
	if status != http.StatusBadRequest || !strings.Contains(msg, "lost in transit") || !strings.Contains(msg, "run authorize/hotel-ber") {
		t.Fatalf("%d %s", status, msg)
	}
	if n := e.idp.count("refresh_token"); n != 2 {
		t.Fatalf("%d sends of the refresh token, want 2 (the lost one, once more)", n)
	}
	if info := e.list()["hotel-ber"]; info["state"] != stateNeedsAuthorization || !strings.Contains(fmt.Sprint(info["last_error"]), "lost") {
		t.Fatalf("listed %v", info)
	}
	e.mustDo(logical.UpdateOperation, "config/connect", map[string]any{"min_ttl": "10m"})
	e.readErr("hotel-ber")
	if n := e.idp.count("refresh_token"); n != 2 || e.list()["hotel-ber"]["state"] != stateNeedsAuthorization {
		t.Fatalf("a config write ended needs_authorization: %d sends", n)
	}
	e.authorized("hotel-ber", "connect", "rt-new")
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
}

// TestConsumers_ImportLostAnswer: an import whose first answer was lost says so.
func TestConsumers_ImportLostAnswer(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.idp.push(errDropAfterHandle)
	resp, err := e.do(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-x"})
	if statusOf(logical.CreateOperation, resp, err) != 400 || !strings.Contains(errText(resp, err), "lost in transit") {
		t.Fatalf("%s", errText(resp, err))
	}
}

// TestConsumers_KeepAlive: an authorized credential nobody reads has its refresh token
// used in the last tenth of idle_refresh_interval, then again; not with 0, not on a
// standby; list says when it was authorized.
func TestConsumers_KeepAlive(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"idle_refresh_interval": "1h"})
	e.connectConfig("off", map[string]any{"idle_refresh_interval": 0})
	e.authorized("hotel-ber", "connect", "rt-0")
	e.authorized("hotel-off", "off", "rt-off")
	authorizedAt := e.clock.Now()
	if err := e.b.planKeepAlives(context.Background(), e.storage); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.b.refresher.planned("hotel-off"); ok {
		t.Fatal("idle_refresh_interval=0 planned a keep-alive")
	}
	due, ok := e.b.refresher.planned("hotel-ber")
	if !ok || due.Before(authorizedAt.Add(54*time.Minute)) || due.After(authorizedAt.Add(time.Hour)) {
		t.Fatalf("keep-alive planned %v (%v), want in the last tenth of the hour", due, ok)
	}
	e.runUntil(authorizedAt.Add(3*time.Hour + time.Second))
	if n := e.idp.count("refresh_token"); n != 3 {
		t.Fatalf("%d keep-alive refreshes in 3 idle hours, want 3", n)
	}
	if e.stored("hotel-off").RefreshToken != "rt-off" {
		t.Fatal("a credential with keep-alive off was refreshed")
	}
	if at := e.list()["hotel-ber"]["authorized_at"]; at != authorizedAt.UTC().Format(time.RFC3339) {
		t.Fatalf("authorized_at %v", at)
	}

	standby := e.newBackend(&logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby})
	standby.planKeepAlive("hotel-ber", e.stored("hotel-ber"), &apaleoConfig{IdleRefreshInterval: time.Hour})
	if _, ok := standby.refresher.planned("hotel-ber"); ok {
		t.Fatal("a performance standby planned a keep-alive")
	}
}

// TestConsumers_ReplaceRevokesTheLiveToken: re-authorizing a credential whose rotated
// refresh token storage refused revokes that live one, not the stale stored one.
func TestConsumers_ReplaceRevokesTheLiveToken(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-stale")
	live := *e.stored("hotel-ber")
	live.RefreshToken = "rt-live"
	e.b.setUnsaved("hotel-ber", &live)
	cfg, _ := readConfig(context.Background(), e.storage, "connect")
	p := &pendingAuthorization{Name: "hotel-ber", Config: "connect", RedirectURI: cfg.RedirectURI}
	res := &tokenResult{AccessToken: "at-new", RefreshToken: "rt-new", IssuedAt: e.clock.Now(), Expiry: e.clock.Now().Add(time.Hour), AccountCode: "BER"}
	if err := e.b.storeAuthorization(context.Background(), e.storage, e.b.exchanged(context.Background(), e.storage, e.idp, p, cfg, res)); err != nil {
		t.Fatal(err)
	}
	if got := e.idp.revoked; len(got) != 1 || got[0] != "rt-live" {
		t.Fatalf("revoked %v, want the live rt-live", got)
	}
	if e.stored("hotel-ber").RefreshToken != "rt-new" || e.b.unsavedOf("hotel-ber") != nil {
		t.Fatal("the new authorization was not stored")
	}
}

// TestConsumers_CleanStoresUnsaved: Clean stores a rotated refresh token that storage
// refused before.
func TestConsumers_CleanStoresUnsaved(t *testing.T) {
	e, flaky := newFlakyEngineEnv(t)
	e.clock.Add(2 * time.Hour)
	flaky.failPuts.Store(true)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	flaky.failPuts.Store(false)
	e.b.Clean(context.Background())
	if got, _ := readCred(context.Background(), flaky.Storage, "hotel-ber"); got.RefreshToken != "rt-1" {
		t.Fatalf("after Clean storage holds %q", got.RefreshToken)
	}
}

// TestConsumers_NothingOutlivesItsName: a delete takes the name's plans, state and (for
// a config) budget along; Invalidate makes no state.
func TestConsumers_NothingOutlivesItsName(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.simpleConfig("muc", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	e.mustDo(logical.ReadOperation, "creds/muc", nil)
	e.mustDo(logical.DeleteOperation, "creds/hotel-ber", nil)
	e.mustDo(logical.DeleteOperation, "config/muc", nil)
	for _, n := range []string{"hotel-ber", "muc"} {
		if _, ok := e.b.refresher.planned(n); ok || e.b.peekState(n) != nil {
			t.Fatalf("%s outlived its delete", n)
		}
	}
	if e.b.budgets.peek("muc") != nil {
		t.Fatal("the budget of a deleted config stayed")
	}
	e.b.invalidate(context.Background(), credsPrefix+"never-seen")
	if e.b.peekState("never-seen") != nil {
		t.Fatal("Invalidate made state")
	}
}

// TestConsumers_ListForwardedFromStandbys: creds/ LIST is answered by the active node,
// where failure memory lives.
func TestConsumers_ListForwardedFromStandbys(t *testing.T) {
	e := newEngineEnv(t)
	p := e.b.Route("creds/")
	op, ok := p.Operations[logical.ListOperation].(*framework.PathOperation)
	if !ok || !op.ForwardPerformanceStandby {
		t.Fatal("creds/ LIST is answered on performance standbys")
	}
}

// TestConsumers_RefusedConnectionIsNotALostAnswer: a request that never left (the
// connection was refused) lost no answer, so it spends nothing of the one re-send.
func TestConsumers_RefusedConnectionIsNotALostAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = http.Get("http://" + addr + "/connect/token")
	ue := classifyOAuthError(err)
	if !ue.Temporary || ue.lostAnswer() {
		t.Fatalf("refused connection: temporary %v, lost %v (%s)", ue.Temporary, ue.lostAnswer(), ue.cause)
	}
	if dropped := (&upstreamError{Temporary: true, cause: "EOF"}); !dropped.lostAnswer() {
		t.Fatal("a dropped connection is not a lost answer")
	}
}

// TestConsumers_RequestsPerHour: what a credential costs apaleo's rate limit with
// apaleo's hour-long tokens and the defaults. In use (read every 10 s for a day): one
// request per refresh window, 60/42.5 to 60/40 an hour. Idle and authorized for 30 days:
// the keep-alive only, once every 151.2-168 hours.
func TestConsumers_RequestsPerHour(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("muc", nil)
	start := e.clock.Now()
	for e.clock.Now().Before(start.Add(24 * time.Hour)) {
		if _, _, fetched := e.readLease("muc"); fetched && e.idp.total() > 1 {
			t.Fatalf("a read waited for a token request at %v", e.clock.Now().Sub(start))
		}
		e.runUntil(e.clock.Now().Add(10 * time.Second))
	}
	perHour := float64(e.idp.total()) / 24
	t.Logf("in use: %d token requests in 24 h, %.2f an hour", e.idp.total(), perHour)
	if perHour < 60/42.5-0.05 || perHour > 60/40.0+0.05 {
		t.Fatalf("%.2f token requests an hour for a credential in use", perHour)
	}

	idle := newEngineEnv(t)
	idle.connectConfig("connect", nil)
	idle.authorized("hotel-ber", "connect", "rt-0")
	if err := idle.b.planKeepAlives(context.Background(), idle.storage); err != nil {
		t.Fatal(err)
	}
	idle.runUntil(idle.clock.Now().Add(30 * 24 * time.Hour))
	n := idle.idp.total()
	t.Logf("idle and authorized: %d token requests in 30 days", n)
	if n < 4 || n > 5 {
		t.Fatalf("%d keep-alive refreshes in 30 days, want 4 or 5 (every 151.2-168 h)", n)
	}
}
