package apaleo

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// policy_test.go: the request policy's rules one at a time, on the scripted fake. The
// simulator (sim_test.go) throws them at each other; these name each rule and prove it
// alone.

// expiredCred makes an authorized credential of config whose token has expired.
func expiredCred(e *engineEnv, name, config, rt string) {
	e.authorized(name, config, rt)
	e.clock.Add(2 * time.Hour)
}

// TestPolicy_LostAnswerGoesOnceMore: a refresh whose answers are lost (a gateway's 5xx)
// sends its refresh token twice in one read, then only at failure memory's next attempt,
// once per attempt.
func TestPolicy_LostAnswerGoesOnceMore(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	expiredCred(e, "hotel-ber", "connect", "rt-0")
	for range 10 {
		e.idp.push(upstream(http.StatusBadGateway, ""))
	}
	status, msg := e.readErr("hotel-ber")
	if n := e.idp.count("refresh_token"); n != 2 {
		t.Fatalf("one read sent the refresh token %d times, want 2", n)
	}
	if status != http.StatusBadGateway || !strings.Contains(msg, "lost in transit") || !strings.Contains(msg, "next attempt at") {
		t.Fatalf("%d %s", status, msg)
	}
	e.readErr("hotel-ber") // before the next attempt: nothing sent
	if n := e.idp.count("refresh_token"); n != 2 {
		t.Fatalf("a read before the next attempt sent the refresh token (%d in all)", n)
	}
	e.clock.Add(10 * time.Second)
	e.readErr("hotel-ber")
	if n := e.idp.count("refresh_token"); n != 3 {
		t.Fatalf("the next attempt sent the refresh token %d times in all, want 3 (one more)", n)
	}
}

// TestPolicy_DroppedTwiceSaysLost: two sends whose connections die with no answer: the
// read says the answer was lost (the second send, the last the rule allows, too), and
// when apaleo refuses the token at the next attempt, the error says the first answer was.
func TestPolicy_DroppedTwiceSaysLost(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	expiredCred(e, "hotel-ber", "connect", "rt-0")
	eof := func() error { return &upstreamError{Temporary: true, cause: "EOF"} }
	e.idp.push(eof(), eof(), upstream(http.StatusBadRequest, "invalid_grant"))
	if _, msg := e.readErr("hotel-ber"); !strings.Contains(msg, "the answer to this refresh was lost in transit") {
		t.Fatal(msg)
	}
	if f := e.b.failureOf("hotel-ber"); f == nil || f.lost == "" {
		t.Fatalf("failure memory %+v does not say the answer was lost", f)
	}
	if n := e.idp.count("refresh_token"); n != 2 {
		t.Fatalf("%d sends, want 2", n)
	}
	e.clock.Add(10 * time.Second)
	if _, msg := e.readErr("hotel-ber"); !strings.Contains(msg, "invalid_grant") || !strings.Contains(msg, "earlier refresh was lost in transit") {
		t.Fatal(msg)
	}
}

// TestPolicy_BudgetCutRemembersTheFailure: a retry the budget cannot fit before the
// reader's deadline answers, and is remembered as, what failed before it (a refused
// connection), never a bare budget error; the next read sends nothing until it is due.
func TestPolicy_BudgetCutRemembersTheFailure(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"max_token_requests_per_second": 0.2})
	expiredCred(e, "hotel-ber", "connect", "rt-0")
	e.idp.push(&upstreamError{Temporary: true, notSent: true, cause: "connection refused"})
	status, msg := e.readErr("hotel-ber")
	if !strings.Contains(msg, "connection refused") || strings.Contains(msg, "max_token_requests_per_second") && !strings.Contains(msg, "no retry") {
		t.Fatalf("%d %s", status, msg)
	}
	if status == http.StatusTooManyRequests {
		t.Fatalf("answered as a budget error: %s", msg)
	}
	if f := e.b.failureOf("hotel-ber"); f == nil || f.next.IsZero() || !strings.Contains(f.err.Error(), "connection refused") {
		t.Fatalf("failure memory %+v, want the refused connection with a next attempt", f)
	}
	before := e.idp.total()
	if _, msg := e.readErr("hotel-ber"); !strings.Contains(msg, "connection refused") {
		t.Fatal(msg)
	}
	if e.idp.total() != before {
		t.Fatal("the next read sent a request before failure memory's next attempt")
	}
}

// TestPolicy_HoldCheckedAtTheMomentOfSending: a 429 that comes while a request waits for
// its budget slot holds it: a read waits the hold out where it may, background work and
// a read whose deadline comes first are refused, nothing sent.
func TestPolicy_HoldCheckedAtTheMomentOfSending(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil) // 10 requests a second
	cfg, _ := readConfig(context.Background(), e.storage, "connect")
	ctx := context.Background()
	bu := e.b.budgets.of("connect", 10)
	var waits []time.Time
	// arm: the request's slot is 100 ms ahead, and a 429 comes (from another request
	// of the app) as the request waits for it.
	arm := func(holdFor time.Duration) {
		waits = nil
		bu.take(e.clock.Now(), e.clock.Now())
		e.b.waitUntil = func(_ context.Context, t time.Time) error {
			e.clock.advanceTo(t)
			if len(waits) == 0 {
				bu.hold(e.clock.Now(), holdFor, upstream(http.StatusTooManyRequests, "slow_down"), e.b.backoffAfter)
			}
			waits = append(waits, t)
			return nil
		}
	}

	arm(500 * time.Millisecond)
	start := e.clock.Now()
	if err := e.b.gate(ctx, "connect", cfg, false).before(ctx); err != nil {
		t.Fatalf("a read refused a hold it could wait out: %v", err)
	}
	if until, _, held := e.b.holdOf("connect", start); !held || e.clock.Now().Before(until) {
		t.Fatalf("the read went at %v, before the hold's end %v", e.clock.Now().Sub(start), until.Sub(start))
	}

	e.clock.Add(10 * time.Second)
	arm(time.Minute) // beyond the read's deadline
	err := e.b.gate(ctx, "connect", cfg, false).before(ctx)
	var be *budgetError
	if !errors.As(err, &be) || be.held == nil {
		t.Fatalf("a read whose deadline comes before the hold's end: %v, want the hold", err)
	}

	e.clock.Add(2 * time.Minute)
	arm(30 * time.Second)
	at, ok := e.b.book("connect", cfg, e.clock.Now())
	if !ok {
		t.Fatal("no moment booked")
	}
	err = e.b.gate(withBooked(ctx, at), "connect", cfg, true).before(ctx)
	if !errors.As(err, &be) || be.held == nil || !be.background {
		t.Fatalf("background work at a held moment: %v, want the hold", err)
	}
}

// TestPolicy_RefreshAhead429IsPlannedAgain: refresh-ahead answered 429 Retry-After 3 is
// planned again at the hold's end, goes then, and the next read does not wait.
func TestPolicy_RefreshAhead429IsPlannedAgain(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	due, ok := e.b.refresher.planned("hotel-ber")
	if !ok {
		t.Fatal("refresh-ahead not planned")
	}
	e.clock.advanceTo(due)
	e.idp.push(&upstreamError{Status: http.StatusTooManyRequests, Code: "slow_down", RetryAfter: 3 * time.Second, Answered: true, Temporary: true})
	e.b.refresher.runDue()
	e.settle("hotel-ber")
	again, ok := e.b.refresher.planned("hotel-ber")
	if !ok {
		t.Fatal("a refresh-ahead answered 429 was not planned again")
	}
	if wait := again.Sub(e.clock.Now()); wait < 3*time.Second || wait > 4*time.Second {
		t.Fatalf("planned again in %v, want at the hold's end (3 s, plus up to 1 s)", wait)
	}
	e.clock.advanceTo(again)
	e.b.refresher.runDue()
	e.settle("hotel-ber")
	if n := e.idp.count("refresh_token"); n != 2 {
		t.Fatalf("%d refreshes, want the 429 and its retry", n)
	}
	before := e.idp.total()
	e.clock.Add(10 * time.Minute) // past the old token's freshness
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if e.idp.total() != before || resp.Data["access_token"] == "at-hotel-ber" {
		t.Fatalf("the read after the retried refresh-ahead sent %d requests, token %v", e.idp.total()-before, resp.Data["access_token"])
	}
}

// TestPolicy_RefusalIsStored: a refused refresh token is stored with the credential: a
// restarted node (or a new leader) never sends it again; a new authorization ends it.
func TestPolicy_RefusalIsStored(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	expiredCred(e, "hotel-ber", "connect", "rt-0")
	e.idp.push(upstream(http.StatusBadRequest, "invalid_grant"))
	e.readErr("hotel-ber")
	if r := e.stored("hotel-ber").Refused; r == nil || !strings.Contains(r.Error, "run authorize/hotel-ber") {
		t.Fatalf("refusal stored: %+v", r)
	}
	e.b = e.newBackend(nil) // a restart: memory is gone, storage stays
	status, msg := e.readErr("hotel-ber")
	if status != http.StatusBadRequest || !strings.Contains(msg, "invalid_grant") {
		t.Fatalf("%d %s", status, msg)
	}
	if n := e.idp.count("refresh_token"); n != 1 {
		t.Fatalf("the refused refresh token was sent %d times, want once", n)
	}
	if st := e.list()["hotel-ber"]["state"]; st != stateNeedsAuthorization {
		t.Fatalf("state %v after a restart", st)
	}
	e.authorized("hotel-ber", "connect", "rt-new")
	e.clock.Add(2 * time.Hour)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
}

// TestPolicy_RefusedClientHoldsTheConfig: invalid_client is the app's: no name of the
// config asks apaleo again until the config is written.
func TestPolicy_RefusedClientHoldsTheConfig(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-b")
	e.authorized("hotel-muc", "connect", "rt-m")
	e.clock.Add(2 * time.Hour)
	e.idp.push(upstream(http.StatusBadRequest, "invalid_client"))
	e.readErr("hotel-ber")
	if _, msg := e.readErr("hotel-muc"); !strings.Contains(msg, "check client_id and client_secret of config/connect") || !strings.Contains(msg, "until config/connect is written again") {
		t.Fatal(msg)
	}
	if n := e.idp.total(); n != 1 {
		t.Fatalf("%d requests after invalid_client, want 1", n)
	}
	e.mustDo(logical.UpdateOperation, "config/connect", map[string]any{"client_secret": "fixed"})
	e.mustDo(logical.ReadOperation, "creds/hotel-muc", nil)
}

// TestPolicy_KeepAliveMomentIsKept: a keep-alive moment is drawn once (from the name and
// the moment it falls due) and kept, however often it is planned again; a fleet
// authorized together stays spread over the last tenth of the interval.
func TestPolicy_KeepAliveMomentIsKept(t *testing.T) {
	cfg := &apaleoConfig{IdleRefreshInterval: 168 * time.Hour}
	due := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	first := keepAlivePlan("hotel-0", due, cfg)
	for range 100 {
		if keepAlivePlan("hotel-0", due, cfg) != first {
			t.Fatal("the keep-alive moment moved when planned again")
		}
	}
	lo, hi := due.Add(cfg.IdleRefreshInterval), due
	for i := range 200 {
		at := keepAlivePlan("hotel-"+string(rune('a'+i%26))+time.Duration(i).String(), due, cfg)
		if at.Before(due) || !at.Before(due.Add(cfg.IdleRefreshInterval/10)) {
			t.Fatalf("moment %v outside the last tenth", at.Sub(due))
		}
		lo, hi = minTime(lo, at), maxTime(hi, at)
	}
	if spread := hi.Sub(lo); spread < cfg.IdleRefreshInterval/10*9/10 {
		t.Fatalf("200 credentials spread over %v of %v", spread, cfg.IdleRefreshInterval/10)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestPolicy_InvalidateDropsTheNameState: a credential written or deleted on the active
// node leaves nothing behind on a standby: no failure, no reads, no plans.
func TestPolicy_InvalidateDropsTheNameState(t *testing.T) {
	e := newEngineEnv(t)
	st := e.b.state("hotel-ber")
	st.lastRead.Store(1)
	e.b.setFailure("hotel-ber", &failure{kind: failBackoff, next: e.clock.Now().Add(time.Hour), err: errors.New("x")})
	e.b.refresher.plan("hotel-ber", e.clock.Now().Add(time.Hour))
	e.b.invalidate(context.Background(), credsPrefix+"hotel-ber")
	if e.b.peekState("hotel-ber") != nil {
		t.Fatal("the name's state survived an invalidation")
	}
	if _, ok := e.b.refresher.planned("hotel-ber"); ok {
		t.Fatal("the name's plan survived an invalidation")
	}
}

// TestPolicy_NoConfigLockAcrossTheNetwork: a re-authorization whose revocation of the
// replaced refresh token hangs at apaleo delays no other hotel's import of the same app.
func TestPolicy_NoConfigLockAcrossTheNetwork(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-old")
	release := make(chan struct{})
	e.idp.revokeGate = release
	cfg, _ := readConfig(context.Background(), e.storage, "connect")
	p := &pendingAuthorization{Name: "hotel-ber", Config: "connect", RedirectURI: cfg.RedirectURI, Replace: true}
	res := &tokenResult{AccessToken: "at-new", RefreshToken: "rt-new", IssuedAt: e.clock.Now(), Expiry: e.clock.Now().Add(time.Hour), AccountCode: "BER"}
	reauthorized := make(chan error, 1)
	go func() {
		err := e.b.storeAuthorization(context.Background(), e.storage, e.b.exchanged(context.Background(), e.storage, e.idp, p, cfg, res))
		reauthorized <- err
	}()
	e.idp.waitRevoking(t)

	imported := make(chan error, 1)
	go func() {
		_, err := e.do(logical.CreateOperation, "creds/hotel-muc", map[string]any{"config": "connect", "refresh_token": "rt-muc"})
		imported <- err
	}()
	select {
	case err := <-imported:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangGuard):
		t.Fatal("an import waited for another hotel's revocation")
	}
	close(release)
	if err := <-reauthorized; err != nil {
		t.Fatal(err)
	}
	if got := e.idp.revoked; len(got) != 1 || got[0] != "rt-old" {
		t.Fatalf("revoked %v, want rt-old", got)
	}
}

// TestPolicy_LocksNameBeforeConfig: whoever locks a name and its config locks the name
// first, so no config lock is held while a name's token request runs.
func TestPolicy_LocksNameBeforeConfig(t *testing.T) {
	e := newEngineEnv(t)
	ls := e.b.locksFor(configPrefix+"a", credsPrefix+"z", configPrefix+"a")
	if len(ls) != 2 || ls[0].(*keyLocker).key != credsPrefix+"z" || ls[1].(*keyLocker).key != configPrefix+"a" {
		t.Fatalf("lock order %v", ls)
	}
}

// TestPolicy_BindingAskedFirstNeverRemembered: the binding is asked before failure
// memory and the app's hold, and answered afresh each time: a config written back leaves
// the failure memory that held before, and background work plans nothing while the
// config names another app (only a config write or a new authorization ends that).
func TestPolicy_BindingAskedFirstNeverRemembered(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	expiredCred(e, "hotel-ber", "connect", "rt-0")
	bound := *e.stored("hotel-ber")
	bound.bindTo(mustConfig(t, e.b, e.storage))
	if err := e.b.putCred(t.Context(), e.storage, "hotel-ber", &bound); err != nil {
		t.Fatal(err)
	}
	e.idp.push(upstream(http.StatusServiceUnavailable, ""), upstream(http.StatusServiceUnavailable, "")) // failure memory: a backoff
	e.readErr("hotel-ber")

	cfg := *mustConfig(t, e.b, e.storage)
	cfg.IdentityURL = evilURL
	now := e.clock.Now()
	f := e.b.blocking("hotel-ber", &bound, &cfg, now)
	if f == nil || f.kind != failOtherApp || !strings.Contains(f.err.Error(), evilURL) {
		t.Fatalf("blocking with another app's config: %+v", f)
	}
	if _, ok := e.b.nextAttempt("hotel-ber", &bound, &cfg, now); ok {
		t.Error("background work would come back while the config names another app")
	}
	if err := mayRevoke(&bound, &cfg); err == nil || !strings.Contains(err.Error(), "not revoked") {
		t.Errorf("mayRevoke with another app's config: %v", err)
	}
	own := mustConfig(t, e.b, e.storage)
	if f := e.b.blocking("hotel-ber", &bound, own, now); f == nil || f.kind != failBackoff {
		t.Errorf("with the bound config the failure memory holds again: %+v", f)
	}
	if err := mayRevoke(&bound, own); err != nil {
		t.Errorf("mayRevoke with the bound config: %v", err)
	}
}
