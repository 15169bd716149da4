package apaleo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// engine_test.go: the token engine's own rules (failure memory, refresh-ahead, per-name
// isolation, the budget, refresh tokens never abandoned) against the scripted fake of the
// identity server in fake_identity_test.go. The flows against a real OAuth server are in
// the other tests.

func TestEngine_FailureMemory(t *testing.T) {
	t.Run("5xx backs off, doubling", func(t *testing.T) {
		e := newEngineEnv(t)
		e.simpleConfig("muc", nil)
		e.idp.push(upstream(503, "server_error"), upstream(503, "server_error"))
		e.b.retry.Attempts = 1 // one request a read: the backoff is failure memory's
		status, msg := e.readErr("muc")
		if status != http.StatusBadGateway || !strings.Contains(msg, "next attempt at") {
			t.Fatalf("first failure: %d %s", status, msg)
		}
		for range 20 {
			if status2, msg2 := e.readErr("muc"); status2 != status || !strings.Contains(msg2, "HTTP 503") {
				t.Fatalf("remembered: %d %s", status2, msg2)
			}
		}
		if n := e.idp.total(); n != 1 {
			t.Fatalf("%d requests during the backoff, want 1", n)
		}
		e.clock.Add(backoffBase*5/4 + time.Second) // past the first step (5 s + jitter)
		e.readErr("muc")
		if n := e.idp.total(); n != 2 {
			t.Fatalf("%d requests after the first step, want 2", n)
		}
		e.clock.Add(backoffBase*5/4 + time.Second) // not past the second step (10 s)
		e.readErr("muc")
		if n := e.idp.total(); n != 2 {
			t.Fatalf("%d requests inside the second step, want 2", n)
		}
		e.clock.Add(backoffBase * 2)
		resp := e.mustDo(logical.ReadOperation, "creds/muc", nil) // the script ran out: success
		if resp.Data["access_token"] == "" || e.idp.total() != 3 {
			t.Fatalf("recovery: %v, %d requests", resp.Data, e.idp.total())
		}
		if f := e.b.failureOf("muc"); f != nil {
			t.Fatalf("failure memory kept after a success: %v", f.err)
		}
	})

	t.Run("429 Retry-After 60: 30 reads, 1 request", func(t *testing.T) {
		e := newEngineEnv(t)
		e.simpleConfig("muc", nil)
		e.idp.push(&upstreamError{Status: 429, Code: "rate_limited", Answered: true, Temporary: true, RetryAfter: time.Minute})
		e.b.retry.Attempts = 1
		for range 30 {
			if status, msg := e.readErr("muc"); status != http.StatusTooManyRequests || !strings.Contains(msg, "next attempt at") {
				t.Fatalf("%d %s", status, msg)
			}
		}
		if n := e.idp.total(); n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
		e.clock.Add(61 * time.Second)
		e.mustDo(logical.ReadOperation, "creds/muc", nil)
		if n := e.idp.total(); n != 2 {
			t.Fatalf("%d requests after Retry-After, want 2", n)
		}
	})

	t.Run("invalid_client waits for a config write", func(t *testing.T) {
		e := newEngineEnv(t)
		e.simpleConfig("muc", nil)
		e.idp.push(upstream(400, "invalid_client"))
		for range 5 {
			if _, msg := e.readErr("muc"); !strings.Contains(msg, "until config/muc is written again") || !strings.Contains(msg, "check client_id") {
				t.Fatal(msg)
			}
			e.clock.Add(time.Hour)
		}
		if n := e.idp.total(); n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
		e.mustDo(logical.UpdateOperation, "config/muc", map[string]any{"client_secret": "fixed"})
		e.mustDo(logical.ReadOperation, "creds/muc", nil)
		if n := e.idp.total(); n != 2 {
			t.Fatalf("%d requests after the config write, want 2", n)
		}
	})

	t.Run("revoked refresh token: 50 reads, 1 request, until authorized again", func(t *testing.T) {
		e := newEngineEnv(t)
		e.connectConfig("connect", nil)
		e.authorized("hotel-ber", "connect", "rt-0")
		e.clock.Add(61 * time.Minute)
		e.idp.push(upstream(400, "invalid_grant"))
		for range 50 {
			if status, msg := e.readErr("hotel-ber"); status != 400 || !strings.Contains(msg, "run authorize/hotel-ber") {
				t.Fatalf("%d %s", status, msg)
			}
		}
		if n := e.idp.count("refresh_token"); n != 1 {
			t.Fatalf("%d refresh requests, want 1", n)
		}
		info := e.list()["hotel-ber"]
		if info["state"] != stateNeedsAuthorization || !strings.Contains(fmt.Sprint(info["last_error"]), "invalid_grant") {
			t.Fatalf("list: %v", info)
		}
		e.authorized("hotel-ber", "connect", "rt-new") // a new authorization stores the credential
		if info := e.list()["hotel-ber"]; info["state"] != stateOK || info["last_error"] != nil {
			t.Fatalf("list after authorizing again: %v", info)
		}
		e.clock.Add(61 * time.Minute)
		e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
		if n := e.idp.count("refresh_token"); n != 2 {
			t.Fatalf("%d refresh requests after authorizing again, want 2", n)
		}
	})

	t.Run("a stale-window read serves the cached token while the failure holds", func(t *testing.T) {
		e := newEngineEnv(t)
		e.simpleConfig("muc", nil)
		cached := e.mustDo(logical.ReadOperation, "creds/muc", nil).Data["access_token"]
		e.clock.Add(50 * time.Minute) // 10 minutes left: below min_ttl, still valid
		e.idp.push(upstream(500, "server_error"), upstream(500, "server_error"))
		for i := range 25 {
			resp := e.mustDo(logical.ReadOperation, "creds/muc", nil)
			if resp.Data["access_token"] != cached || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "next attempt at") {
				t.Fatalf("read %d: %v %v", i, resp.Data["access_token"], resp.Warnings)
			}
		}
		if n := e.idp.total(); n != 2 {
			t.Fatalf("%d requests, want 2 (the cold read and one attempt)", n)
		}
	})
}

func TestEngine_ListStatus(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("ok", nil)
	e.simpleConfig("idle", nil)
	e.simpleConfig("down", nil)
	e.connectConfig("connect", nil)
	e.authorized("revoked", "connect", "rt-0")
	e.mustDo(logical.ReadOperation, "creds/ok", nil)
	e.b.retry.Attempts = 1
	e.idp.push(upstream(503, "server_error"))
	e.readErr("down")
	e.clock.Add(61 * time.Minute)
	e.idp.push(upstream(400, "invalid_grant"))
	e.readErr("revoked")
	e.mustDo(logical.ReadOperation, "creds/ok", nil)
	requests := e.idp.total()

	got := e.list()
	if n := e.idp.total(); n != requests {
		t.Fatalf("listing sent %d token requests", n-requests)
	}
	want := map[string]string{"ok": stateOK, "idle": stateNoToken, "down": stateFailing, "revoked": stateNeedsAuthorization}
	for name, state := range want {
		info := got[name]
		if info["state"] != state {
			t.Errorf("%s: state %v, want %s (%v)", name, info["state"], state, info)
		}
	}
	if len(got) != len(want) {
		t.Errorf("listed %d names, want %d: %v", len(got), len(want), got)
	}
	ok := got["ok"]
	if ok["config"] != "ok" || ok["grant_type"] != grantClientCredentials || ok["expires_at"] == nil || ok["last_refreshed_at"] == nil || ok["account_code"] != "BER" {
		t.Errorf("ok: %v", ok)
	}
	down := got["down"]
	if down["next_attempt_at"] == nil || !strings.Contains(fmt.Sprint(down["last_error"]), "HTTP 503") {
		t.Errorf("down: %v", down)
	}
	if r := got["revoked"]; r["grant_type"] != grantAuthorizationCode || r["config"] != "connect" || r["next_attempt_at"] != nil {
		t.Errorf("revoked: %v", r)
	}
	for name, info := range got {
		for _, secret := range []string{"rt-0", "secret-", "connect-secret"} {
			if strings.Contains(fmt.Sprint(info), secret) {
				t.Errorf("%s's key_info holds a secret: %v", name, info)
			}
		}
	}
}

// TestEngine_RefreshNeverAbandoned: a refresh that outlives the reader's patience runs
// to its end and its rotated refresh token is stored; the reader is answered at once.
func TestEngine_RefreshNeverAbandoned(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.clock.Add(61 * time.Minute)
	e.b.retry.Total = 300 * time.Millisecond
	e.idp.gate = make(chan struct{})

	started := time.Now()
	status, msg := e.readErr("hotel-ber")
	if status != http.StatusGatewayTimeout || !strings.Contains(msg, "goes on in the background") {
		t.Fatalf("%d %s", status, msg)
	}
	// The gated request never ends: waiting for it is a hang, whatever the machine.
	if took := time.Since(started); took > hangGuard {
		t.Fatalf("the reader waited %v", took)
	}
	// A reader whose own request ends stops waiting too.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "creds/hotel-ber", Storage: e.storage})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("a cancelled reader kept waiting for the token request")
	}

	close(e.idp.gate) // apaleo answers late
	e.settle("hotel-ber")
	if got := e.stored("hotel-ber"); got.RefreshToken != "rt-1" || got.Token.AccessToken != "at-1" {
		t.Fatalf("the late answer was not stored: refresh token %q, token %q", got.RefreshToken, got.Token.AccessToken)
	}
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if resp.Data["access_token"] != "at-1" || e.idp.count("refresh_token") != 1 {
		t.Fatalf("after: %v, %d refreshes", resp.Data["access_token"], e.idp.count("refresh_token"))
	}
}

// TestEngine_TimedOutRefreshIsNotRetried: a refresh with no answer in time may have spent
// the token: it is not sent again in the same read, and the state says so.
func TestEngine_TimedOutRefreshIsNotRetried(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.clock.Add(61 * time.Minute)
	e.idp.push(&upstreamError{Temporary: true, Timeout: true, cause: "no answer in time"})
	status, msg := e.readErr("hotel-ber")
	if status != http.StatusGatewayTimeout || !strings.Contains(msg, "may have used up the refresh token") {
		t.Fatalf("%d %s", status, msg)
	}
	if n := e.idp.count("refresh_token"); n != 1 {
		t.Fatalf("%d refresh requests, want 1", n)
	}
	if info := e.list()["hotel-ber"]; !strings.Contains(fmt.Sprint(info["last_error"]), "may have used up") {
		t.Fatalf("list: %v", info)
	}
}

// TestEngine_PerNameIsolation: a token request that hangs for one name delays no read,
// write or token request of another.
func TestEngine_PerNameIsolation(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"max_token_requests_per_second": 0})
	for i := range 300 {
		e.authorized(fmt.Sprintf("hotel-%d", i), "connect", fmt.Sprintf("rt-h%d", i))
	}
	e.clock.Add(61 * time.Minute)
	e.idp.gate = make(chan struct{})
	e.idp.started = make(chan string, 1)
	go e.do(logical.ReadOperation, "creds/hotel-0", nil)
	<-e.idp.started // hotel-0's refresh hangs at apaleo
	e.idp.mu.Lock()
	gate := e.idp.gate
	e.idp.gate, e.idp.started = nil, nil
	e.idp.mu.Unlock()
	t.Cleanup(func() { close(gate) }) // before Clean, which would wait out the hang

	started := time.Now()
	for i := 1; i < 300; i++ {
		e.mustDo(logical.ReadOperation, fmt.Sprintf("creds/hotel-%d", i), nil)
	}
	e.simpleConfig("other", nil)
	e.mustDo(logical.ReadOperation, "creds/other", nil)
	e.mustDo(logical.DeleteOperation, "creds/hotel-1", nil)
	// The gated request never ends: waiting for it is a hang, whatever the machine.
	if took := time.Since(started); took > hangGuard {
		t.Fatalf("299 reads beside a hanging one took %v", took)
	}
	if n := e.idp.count("refresh_token"); n != 300 {
		t.Fatalf("%d refreshes, want 300", n)
	}
}

// TestEngine_Budget: 20 cold credentials of a config limited to 5 token requests a
// second, read at once: every read succeeds, each request waited for its own moment
// (the clock moved by at least 19 intervals), and a read that cannot get the budget
// within its bound is answered 429 with when.
func TestEngine_Budget(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"max_token_requests_per_second": 5})
	for i := range 20 {
		e.authorized(fmt.Sprintf("hotel-%d", i), "connect", fmt.Sprintf("rt-h%d", i))
	}
	e.clock.Add(2 * time.Hour) // every token expired
	e.b.retry.Total = 10 * time.Second
	start := e.clock.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 20 {
		wg.Go(func() {
			if resp, err := e.do(logical.ReadOperation, fmt.Sprintf("creds/hotel-%d", i), nil); err != nil || resp.IsError() {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || e.idp.total() != 20 {
		t.Fatalf("%d reads failed, %d requests", failed.Load(), e.idp.total())
	}
	if moved := e.clock.Now().Sub(start); moved < 19*200*time.Millisecond {
		t.Fatalf("20 requests at 5/s went out within %v", moved)
	}

	// A read that cannot get the budget within its bound is answered 429 with when.
	e.b.retry.Total = 100 * time.Millisecond
	bu := e.b.budgets.of("connect", 5)
	bu.take(e.clock.Now(), e.clock.Now().Add(time.Hour))
	bu.next = e.clock.Now().Add(time.Minute)
	c := e.stored("hotel-0")
	c.Token = nil
	if err := e.b.putCred(context.Background(), e.storage, "hotel-0", c); err != nil {
		t.Fatal(err)
	}
	before := e.idp.total()
	if status, msg := e.readErr("hotel-0"); status != http.StatusTooManyRequests || !strings.Contains(msg, "retry after 1m0s") {
		t.Fatalf("%d %s", status, msg)
	}
	if e.idp.total() != before {
		t.Fatal("a request went out past the budget")
	}
}

// TestBudget_AtMostNInAnySecond: whoever asks, and however many at once, the moments a
// budget hands out hold at most N in any one second, at rates above and below 1/s.
func TestBudget_AtMostNInAnySecond(t *testing.T) {
	for _, perSecond := range []float64{0.5, 1, 5, 10} {
		bu := &budget{perSecond: perSecond}
		now := time.Unix(1000, 0)
		var slots []time.Time
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				// Asked at scattered moments over a few seconds, all willing to wait.
				at := now.Add(time.Duration(i%7) * 300 * time.Millisecond)
				if slot, ok := bu.take(at, at.Add(time.Hour)); ok {
					mu.Lock()
					slots = append(slots, slot)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(slots) != 50 {
			t.Fatalf("%g/s: %d of 50 got a moment", perSecond, len(slots))
		}
		if most := mostInAnySecond(slots); float64(most) > math.Max(perSecond, 1) {
			t.Fatalf("%g/s: %d requests in one second", perSecond, most)
		}
		// Background work never waits: it gets a moment only when one is free now.
		if _, ok := bu.take(now, now); ok {
			t.Fatalf("%g/s: a spent budget gave background work a moment", perSecond)
		}
	}
}

// mostInAnySecond is the most moments in any half-open second [t, t+1s).
func mostInAnySecond(times []time.Time) int {
	most := 0
	for _, a := range times {
		n := 0
		for _, b := range times {
			if d := b.Sub(a); d >= 0 && d < time.Second {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// TestEngine_RefreshAhead: a credential in use gets its new token before the old one
// stops being fresh, at a moment inside the window; an idle one is left alone; standbys
// and configs with refresh_ahead=false never refresh ahead.
func TestEngine_RefreshAhead(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"idle_refresh_interval": 0}) // keep-alive: TestEngine_KeepAlive
	e.authorized("hotel-ber", "connect", "rt-0")
	cfg, _ := e.b.config(context.Background(), e.storage, "connect")

	first := e.stored("hotel-ber").Token
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil) // in use
	due, ok := e.b.refresher.planned("hotel-ber")
	start, end := refreshWindow(first, cfg)
	if !ok || due.Before(start) || !due.Before(end) {
		t.Fatalf("planned %v (%v), want in [%v, %v)", due, ok, start, end)
	}
	freshEnd := first.ExpiresAt.Add(-cfg.MinTTL)
	if !end.Before(freshEnd) || !end.Before(first.freshUntil(cfg)) {
		t.Fatalf("window ends %v, after the token stops being fresh at %v", end, freshEnd)
	}
	e.clock.Add(due.Sub(e.clock.Now()))
	e.b.refresher.runDue()
	e.settle("hotel-ber")
	if n := e.idp.count("refresh_token"); n != 1 {
		t.Fatalf("%d refreshes at the due time, want 1", n)
	}
	second := e.stored("hotel-ber")
	if second.RefreshToken != "rt-1" || second.Token.AccessToken == first.AccessToken {
		t.Fatalf("not refreshed ahead: %+v", second)
	}
	// The reader gets the new token with no request of its own.
	if resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil); resp.Data["access_token"] != second.Token.AccessToken || e.idp.total() != 1 {
		t.Fatalf("read after refresh-ahead: %v, %d requests", resp.Data["access_token"], e.idp.total())
	}

	// Nobody reads the third token: the plan made by the read above runs, the fourth is
	// never planned.
	due, _ = e.b.refresher.planned("hotel-ber")
	e.clock.Add(due.Sub(e.clock.Now()))
	e.b.refresher.runDue()
	e.settle("hotel-ber")
	e.clock.Add(2 * time.Hour)
	e.b.refresher.runDue()
	if _, ok := e.b.refresher.planned("hotel-ber"); ok || e.idp.total() != 2 {
		t.Fatalf("an idle credential was refreshed: %d requests, planned %v", e.idp.total(), ok)
	}

	// refresh_ahead=false: reads plan nothing.
	e.connectConfig("quiet", map[string]any{"refresh_ahead": false})
	e.authorized("hotel-quiet", "quiet", "rt-q")
	e.mustDo(logical.ReadOperation, "creds/hotel-quiet", nil)
	if _, ok := e.b.refresher.planned("hotel-quiet"); ok {
		t.Fatal("refresh_ahead=false planned a refresh")
	}
}

func TestEngine_RefreshAheadNotOnStandbys(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.b = e.newBackend(&logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby})
	// The first read of a token goes to the active node (Vault forwards ErrReadOnly),
	// where refresh-ahead plans it; later reads are served here.
	if _, err := e.do(logical.ReadOperation, "creds/hotel-ber", nil); !errors.Is(err, logical.ErrReadOnly) {
		t.Fatalf("first read on a standby: %v, want it forwarded", err)
	}
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if _, ok := e.b.refresher.planned("hotel-ber"); ok {
		t.Fatal("a performance standby planned a refresh")
	}
	e.b.runBackground("hotel-ber") // even when asked directly
	e.clock.Add(59 * time.Minute)
	e.b.runBackground("hotel-ber")
	if n := e.idp.total(); n != 0 {
		t.Fatalf("a performance standby sent %d token requests", n)
	}
}

// TestEngine_OpenBaoStandbyForwardsEveryRead: an OpenBao standby says it is a
// performance standby but cannot register a read's lease, so every read of creds/ on it
// goes to the active node, cached tokens' included; a config read is served there.
func TestEngine_OpenBaoStandbyForwardsEveryRead(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil) // a token cached in storage
	sent := e.idp.total()
	e.b = e.newBackend(&logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby})
	e.b.standbyLeases = false
	for i := range 3 {
		if _, err := e.do(logical.ReadOperation, "creds/hotel-ber", nil); !errors.Is(err, logical.ErrReadOnly) {
			t.Fatalf("read %d on an OpenBao standby: %v, want it forwarded", i+1, err)
		}
	}
	e.mustDo(logical.ReadOperation, "config/connect", nil)
	if n := e.idp.total() - sent; n != 0 {
		t.Fatalf("the standby sent %d token requests", n)
	}
}

// TestEngine_RefreshAheadYieldsToReads: with the budget booked by reads further ahead
// than background work may book, refresh-ahead takes nothing and plans itself again for
// when there is room; then it runs.
func TestEngine_RefreshAheadYieldsToReads(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"max_token_requests_per_second": 5})
	e.authorized("hotel-ber", "connect", "rt-0")
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	due, _ := e.b.refresher.planned("hotel-ber")
	e.clock.Add(due.Sub(e.clock.Now()))
	bu := e.b.budgets.of("connect", 5)
	bu.take(e.clock.Now(), e.clock.Now().Add(time.Hour))
	bu.next = e.clock.Now().Add(5 * time.Second) // reads booked the next 5 s
	e.b.refresher.runDue()
	e.b.waitFlights()
	if n := e.idp.total(); n != 0 {
		t.Fatalf("refresh-ahead booked ahead of reads: %d requests", n)
	}
	again, ok := e.b.refresher.planned("hotel-ber")
	if !ok || again.Before(e.clock.Now().Add(5*time.Second-backgroundHorizon)) {
		t.Fatalf("refresh-ahead did not plan itself for when there is room: %v %v", again, ok)
	}
	e.clock.Add(again.Sub(e.clock.Now()))
	e.b.refresher.runDue()
	e.b.waitFlights()
	if n := e.idp.total(); n != 1 {
		t.Fatalf("%d requests once the budget had room, want 1", n)
	}
}

// TestEngine_SchedulerStopsInClean: the scheduler goroutine starts with the first plan
// and is gone after Clean.
func TestEngine_SchedulerStopsInClean(t *testing.T) {
	e := newEngineEnv(t)
	e.b.refresher.manual = false
	e.b.refresher.plan("x", e.clock.Now().Add(time.Hour))
	e.b.refresher.mu.Lock()
	running, done := e.b.refresher.running, e.b.refresher.done
	e.b.refresher.mu.Unlock()
	if !running {
		t.Fatal("the scheduler did not start")
	}
	e.b.Clean(context.Background())
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the scheduler goroutine outlived Clean")
	}
	e.b.refresher.plan("y", e.clock.Now())
	if _, ok := e.b.refresher.planned("y"); ok {
		t.Fatal("a stopped scheduler took a plan")
	}
}

// TestEngine_UnsavedMarkKept: a rotated refresh token that storage refused stays marked
// until a store of it succeeds, even when a later refresh does not rotate and fails to
// store too.
func TestEngine_UnsavedMarkKept(t *testing.T) {
	e, flaky := newFlakyEngineEnv(t)

	e.clock.Add(61 * time.Minute)
	flaky.failPuts.Store(true)
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil) // rotates to rt-1, store fails
	if len(resp.Warnings) != 1 || e.b.unsavedOf("hotel-ber") == nil {
		t.Fatalf("warnings %v, unsaved %v", resp.Warnings, e.b.unsavedOf("hotel-ber"))
	}
	e.idp.noRotate = true // apaleo stops rotating; the next store fails again
	e.clock.Add(61 * time.Minute)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	held := e.b.unsavedOf("hotel-ber")
	if held == nil || held.RefreshToken != "rt-1" {
		t.Fatalf("the unsaved rotated refresh token was forgotten: %+v", held)
	}
	if got, _ := readCred(context.Background(), flaky.Storage, "hotel-ber"); got.RefreshToken != "rt-0" {
		t.Fatalf("storage holds %q", got.RefreshToken)
	}
	flaky.failPuts.Store(false)
	e.b.saveUnsaved(context.Background(), e.storage)
	if got, _ := readCred(context.Background(), flaky.Storage, "hotel-ber"); got.RefreshToken != "rt-1" || e.b.unsavedOf("hotel-ber") != nil {
		t.Fatalf("after a good store: storage %q, unsaved %v", got.RefreshToken, e.b.unsavedOf("hotel-ber"))
	}
}

func TestEngine_Import(t *testing.T) {
	e := newEngineEnv(t)
	e.connectConfig("connect", map[string]any{"scopes": "reservations.read"})
	e.simpleConfig("muc", nil)
	before := storageSnapshot(t, e.storage)
	for _, c := range []struct {
		name string
		data map[string]any
		want string
	}{
		{"hotel-ber", map[string]any{"refresh_token": "rt-x"}, "config is required"},
		{"hotel-ber", map[string]any{"config": "connect"}, "refresh_token is required"},
		{"hotel-ber", map[string]any{"config": "muc", "refresh_token": "rt-x"}, "only imports refresh tokens into an authorization_code config"},
		{"hotel-ber", map[string]any{"config": "nope", "refresh_token": "rt-x"}, "does not exist"},
		{"hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt\x01x"}, "control character"},
		{"hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-x", "scopes": "bad\"scope"}, "RFC 6749"},
		{"muc", map[string]any{"config": "connect", "refresh_token": "rt-x"}, "exists"},
	} {
		resp, err := e.do(logical.CreateOperation, "creds/"+c.name, c.data)
		if code := statusOf(logical.CreateOperation, resp, err); code != 400 || !strings.Contains(errText(resp, err), c.want) {
			t.Errorf("%v: %d %s, want 400 with %q", c.data, code, errText(resp, err), c.want)
		}
		if strings.Contains(errText(resp, err), "rt-x") {
			t.Errorf("the refresh token was echoed: %s", errText(resp, err))
		}
	}
	e.idp.push(upstream(400, "invalid_grant"))
	if resp, err := e.do(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-x"}); statusOf(logical.CreateOperation, resp, err) != 400 ||
		!strings.Contains(errText(resp, err), "apaleo refused the refresh token") {
		t.Fatalf("refused: %s", errText(resp, err))
	}
	if after := storageSnapshot(t, e.storage); len(after) != len(before) {
		t.Fatalf("a refused import changed storage")
	}

	resp := e.mustDo(logical.CreateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-y"})
	if resp.Data["name"] != "hotel-ber" || resp.Data["account_code"] != "BER" || resp.Data["expires_at"] == "" {
		t.Fatalf("import answered %v", resp.Data)
	}
	if strings.Contains(fmt.Sprint(resp.Data), "rt-") {
		t.Fatalf("the refresh token was answered: %v", resp.Data)
	}
	got := e.stored("hotel-ber")
	if got.RefreshToken == "rt-y" || got.RefreshToken == "" || got.Config != "connect" || got.GrantType != grantAuthorizationCode {
		t.Fatalf("stored %+v", got)
	}
	if !e.idp.spent["rt-y"] {
		t.Fatal("the imported refresh token was not redeemed")
	}
	// An existing name is an update: refused, nothing changes.
	resp2, err := e.do(logical.UpdateOperation, "creds/hotel-ber", map[string]any{"config": "connect", "refresh_token": "rt-z"})
	if statusOf(logical.UpdateOperation, resp2, err) != 400 || e.stored("hotel-ber").RefreshToken != got.RefreshToken {
		t.Fatalf("overwrite: %s", errText(resp2, err))
	}
}

// TestEngine_OneAttemptAfterAFailure: once apaleo failed for a name, the next attempt due
// is one request, not a new retry loop that readers would wait out.
func TestEngine_OneAttemptAfterAFailure(t *testing.T) {
	e := newEngineEnv(t)
	e.simpleConfig("muc", nil)
	e.b.retry.Attempts = 1
	e.idp.push(upstream(503, "server_error"))
	e.readErr("muc")
	e.b.retry.Attempts = 0 // reads may retry again; failure memory must still make it one
	e.clock.Add(backoffMax + time.Minute)
	spy := &attemptSpy{identityServer: e.idp}
	e.b.newClient = func(clientSettings, func() time.Time) (identityServer, error) { return spy, nil }
	e.idp.push(upstream(503, "server_error"))
	e.readErr("muc")
	if spy.attempts.Load() != 1 {
		t.Fatalf("the attempt after a failure was called with attempts=%d, want 1", spy.attempts.Load())
	}
}

// attemptSpy records the Attempts of the retry policy each client credentials call gets.
type attemptSpy struct {
	identityServer
	attempts atomic.Int64
}

func (s *attemptSpy) ClientCredentials(ctx context.Context, scopes []string, p retryPolicy) (*tokenResult, error) {
	s.attempts.Store(int64(p.Attempts))
	return s.identityServer.ClientCredentials(ctx, scopes, p)
}

// TestEngine_RefusalHeldWhenStorageFails: apaleo refuses the refresh token and storing
// the refusal fails. The refusal is held in memory as unsaved and stored at the next
// chance, so that after a restart the refused token is not sent again (the simulator's
// storage faults found it: seed 1718).
func TestEngine_RefusalHeldWhenStorageFails(t *testing.T) {
	e, flaky := newFlakyEngineEnv(t)

	e.clock.Add(61 * time.Minute)
	flaky.failPuts.Store(true)
	e.idp.push(upstream(400, "invalid_grant"))
	if status, msg := e.readErr("hotel-ber"); status != 400 || !strings.Contains(msg, "run authorize/hotel-ber") {
		t.Fatalf("%d %s", status, msg)
	}
	if held := e.b.unsavedOf("hotel-ber"); held == nil || held.Refused == nil {
		t.Fatalf("the refusal is not held in memory: %+v", held)
	}
	if got, _ := readCred(t.Context(), flaky.Storage, "hotel-ber"); got.Refused != nil {
		t.Fatal("storage holds the refusal although writes fail")
	}
	flaky.failPuts.Store(false)
	e.b.saveUnsaved(t.Context(), e.storage)
	if got, _ := readCred(t.Context(), flaky.Storage, "hotel-ber"); got.Refused == nil || e.b.unsavedOf("hotel-ber") != nil {
		t.Fatalf("after a good store: stored refusal %v, unsaved %v", got.Refused, e.b.unsavedOf("hotel-ber"))
	}

	e.b = e.newBackend(nil) // a restart
	if status, _ := e.readErr("hotel-ber"); status != 400 {
		t.Fatalf("after the restart: %d", status)
	}
	if n := e.idp.count("refresh_token"); n != 1 {
		t.Fatalf("%d refresh requests, want 1: the refused token was sent again", n)
	}
}
