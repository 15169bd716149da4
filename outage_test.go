package apaleo

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// outage_test.go: an outage of apaleo is the app's (outage.go), on the scripted fake and
// the injected clock: five failures in a row take the config down, reads answer at once,
// one probe at a time on the schedule, recovery in order of need on a ramping budget.

// outageEnv is a connect config with n authorized credentials whose tokens expired.
func outageEnv(t *testing.T, n int) *engineEnv {
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	for i := range n {
		e.authorized(fmt.Sprintf("hotel-%d", i), "connect", fmt.Sprintf("rt-%d", i))
	}
	e.clock.Add(2 * time.Hour)
	return e
}

func bad(n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = upstream(http.StatusBadGateway, "")
	}
	return out
}

// TestOutage_FiveFailuresTakeTheAppDown: after the fifth 502 in a row (any names of the
// config) nothing more is sent; reads answer at once, naming the outage, since when and
// the next probe; config/<name> and the list say so.
func TestOutage_FiveFailuresTakeTheAppDown(t *testing.T) {
	e := outageEnv(t, 6)
	e.idp.push(bad(100)...)
	start := e.clock.Now()
	for i := range 3 {
		e.readErr(fmt.Sprintf("hotel-%d", i)) // two sends each (a lost answer goes once more), the third's second refused
	}
	if n := e.idp.total(); n != outageAfter {
		t.Fatalf("%d token requests reached apaleo, want %d: the fifth failure takes the app down", n, outageAfter)
	}
	status, msg := e.readErr("hotel-4")
	if n := e.idp.total(); n != outageAfter {
		t.Fatalf("a read during the outage sent a token request (%d in all)", n)
	}
	_, since, next := e.b.outageOf("connect").state()
	if since != start || next.Before(start.Add(probeDelays[0])) || next.After(start.Add(probeDelays[0]+time.Second)) {
		t.Errorf("down since %s, next probe %s; want since %s and the probe 5 s after the fifth failure", since, next, start)
	}
	for _, s := range []string{"is down for config/connect since " + start.UTC().Format(time.RFC3339), "next probe at " + next.UTC().Format(time.RFC3339)} {
		if !strings.Contains(msg, s) {
			t.Errorf("read during the outage: %q does not say %q", msg, s)
		}
	}
	if status != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", status)
	}
	cfg := e.mustDo(logical.ReadOperation, "config/connect", nil).Data
	if cfg["upstream"] != "down" || cfg["down_since"] != start.UTC().Format(time.RFC3339) || cfg["next_probe_at"] == nil {
		t.Errorf("config read: upstream %v down_since %v next_probe_at %v", cfg["upstream"], cfg["down_since"], cfg["next_probe_at"])
	}
	if info := e.list()["hotel-5"]; !strings.Contains(fmt.Sprint(info["last_error"]), "is down for config/connect") || info["state"] != stateFailing {
		t.Errorf("list -detailed of a name never read: %v", info)
	}
	// The metrics count the outage and the requests it held back (the reads of hotel-3's
	// retry and hotel-4), by config only.
	body := string(e.mustDo(logical.ReadOperation, "metrics", nil).Data[logical.HTTPRawBody].([]byte))
	for _, s := range []string{`vault_apaleo_upstream_outages_total{config="connect"} 1`, `vault_apaleo_token_requests_held_total{config="connect"} 2`} {
		if !strings.Contains(body, s) {
			t.Errorf("metrics lack %s:\n%s", s, body)
		}
	}
	if strings.Contains(body, "hotel-") {
		t.Error("a metric names a credential")
	}
}

// TestOutage_NotForOneCredential: a 4xx about one credential and a 429 say apaleo answers:
// they break a run of failures, and never take the app down.
func TestOutage_NotForOneCredential(t *testing.T) {
	e := outageEnv(t, 8)
	e.idp.push(upstream(http.StatusBadGateway, ""), upstream(http.StatusBadGateway, ""), // hotel-0: lost twice
		upstream(http.StatusBadGateway, ""), upstream(http.StatusBadRequest, "invalid_grant"), // hotel-1: answered
		upstream(http.StatusBadGateway, ""), upstream(http.StatusBadGateway, ""), // hotel-2
		upstream(http.StatusBadGateway, ""), upstream(http.StatusBadGateway, "")) // hotel-3: 4 in a row since the 400
	for i := range 4 {
		e.readErr(fmt.Sprintf("hotel-%d", i))
	}
	if cfg := e.mustDo(logical.ReadOperation, "config/connect", nil).Data; cfg["upstream"] != "ok" {
		t.Fatalf("down after a run broken by an invalid_grant: %v", cfg)
	}
	e.idp.push(upstream(http.StatusTooManyRequests, "")) // hotel-4: a 429 breaks the run too
	e.readErr("hotel-4")
	e.clock.Add(time.Minute) // past the 429's hold
	e.idp.push(bad(4)...)
	e.readErr("hotel-5")
	e.readErr("hotel-6")
	if cfg := e.mustDo(logical.ReadOperation, "config/connect", nil).Data; cfg["upstream"] != "ok" {
		t.Fatalf("down after 4 failures since a 429: %v", cfg)
	}
}

// TestOutage_ProbesThenRecovery: one probe at a time, 5 s, 10 s, 20 s after the one
// before, for the name whose reader waited longest; the first answered probe ends the
// outage and the names held back are served in order of need, at 1 request a second to
// begin with.
func TestOutage_ProbesThenRecovery(t *testing.T) {
	e := outageEnv(t, 6)
	e.idp.push(bad(5 + 3)...) // the outage's five, then three probes fail
	for i := range 3 {
		e.readErr(fmt.Sprintf("hotel-%d", i))
	}
	e.clock.Add(time.Second)
	e.readErr("hotel-4") // waits longest
	e.clock.Add(time.Second)
	e.readErr("hotel-5")
	e.clock.Add(time.Second)
	e.readErr("hotel-3") // read last
	down := e.clock.Now().Add(-3 * time.Second)
	probe := func() {
		e.b.refresher.runDue()
		e.b.waitFlights()
	}
	probe() // not due yet
	if n := e.idp.total(); n != outageAfter {
		t.Fatalf("a probe went before it was due (%d requests)", n)
	}
	at := down
	for k := range 3 {
		at = at.Add(probeDelays[k])
		e.clock.advanceTo(at.Add(-time.Millisecond))
		probe()
		if n := e.idp.total(); n != outageAfter+k {
			t.Fatalf("probe %d went %s early", k+1, time.Millisecond)
		}
		e.clock.advanceTo(at)
		probe()
		if n := e.idp.total(); n != outageAfter+k+1 {
			t.Fatalf("probe %d: %d requests in all, want %d", k+1, n, outageAfter+k+1)
		}
		probe() // one at a time: nothing more until the next is due
		if n := e.idp.total(); n != outageAfter+k+1 {
			t.Fatalf("after probe %d: %d requests in all", k+1, n)
		}
	}
	// The probes were for the reader who waited longest, hotel-4 (its own failure memory
	// then lets the next waiting name go).
	if f := e.b.failureOf("hotel-4"); f == nil {
		t.Fatal("hotel-4, the reader who waited longest, was not probed")
	}
	// Every 30 s ±20 % after the third; this one is answered: the outage ends.
	e.clock.Add(probeSteady - probeSteady/5 - time.Millisecond)
	probe()
	if n := e.idp.total(); n != outageAfter+3 {
		t.Fatalf("the fourth probe went less than 24 s after the third")
	}
	e.clock.Add(probeSteady/5*2 + time.Millisecond)
	probe()
	if cfg := e.mustDo(logical.ReadOperation, "config/connect", nil).Data; cfg["upstream"] != "ok" {
		t.Fatalf("an answered probe did not end the outage: %v", cfg)
	}
	// Recovery: the names held back, in order of need, at the ramp's 1, 2, 4 ... a second.
	before := e.idp.total()
	for range 10 {
		probe()
	}
	if n := e.idp.total() - before; n < 1 {
		t.Fatalf("the names held back were not served after the outage (%d requests)", n)
	}
	for _, name := range []string{"hotel-3", "hotel-5"} {
		if c := e.stored(name); !c.Token.valid(outageConfig(t, e), e.clock.Now()) {
			t.Errorf("%s, whose reader waited, holds no valid token after the recovery", name)
		}
	}
}

func outageConfig(t *testing.T, e *engineEnv) *apaleoConfig {
	cfg, err := readConfig(context.Background(), e.storage, "connect")
	if err != nil || cfg == nil {
		t.Fatal(err)
	}
	return cfg
}

// TestOutage_CachedTokenServed: a read holding a valid cached token is answered it during
// an outage, with a warning naming the outage.
func TestOutage_CachedTokenServed(t *testing.T) {
	e := outageEnv(t, 5)
	e.authorized("hotel-valid", "connect", "rt-v")
	e.clock.Add(50 * time.Minute) // valid, no longer fresh
	e.idp.push(bad(100)...)
	for i := range 3 {
		e.readErr(fmt.Sprintf("hotel-%d", i))
	}
	sent := e.idp.total()
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-valid", nil)
	if resp.Data["access_token"] != "at-hotel-valid" || !strings.Contains(strings.Join(resp.Warnings, " "), "is down for config/connect") {
		t.Fatalf("token %v warnings %v", resp.Data["access_token"], resp.Warnings)
	}
	if e.idp.total() != sent {
		t.Fatal("a read with a valid cached token sent a token request during the outage")
	}
}

// TestBudget_Ramp: after an outage the budget carries 1, 2, 4, 8 requests in its first
// seconds, then its rate; with no limit (0) it doubles without cap.
func TestBudget_Ramp(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, c := range []struct {
		perSecond float64
		want      []int
	}{{10, []int{1, 2, 4, 8, 10, 10}}, {0, []int{1, 2, 4, 8, 16, 32}}} {
		bu := &budget{perSecond: c.perSecond}
		bu.rampUp(t0)
		bu.take(t0, t0) // the probe that ended the outage
		per := make([]int, len(c.want))
		per[0] = 1
		for {
			slot, ok := bu.take(t0, t0.Add(time.Duration(len(c.want))*time.Second))
			if !ok || !slot.Before(t0.Add(time.Duration(len(c.want))*time.Second)) {
				break
			}
			per[int(slot.Sub(t0)/time.Second)]++
		}
		if fmt.Sprint(per) != fmt.Sprint(c.want) {
			t.Errorf("max %g: requests per second after the outage %v, want %v", c.perSecond, per, c.want)
		}
	}
}

// TestBudget_RampKeepsBookings: a ramp that starts while moments are booked ahead starts
// after them: it never moves the next free moment back (a second would carry more than
// the budget).
func TestBudget_RampKeepsBookings(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	bu := &budget{perSecond: 10}
	var slots []time.Time
	for range 30 { // a read's bookings, 3 s ahead
		s, _ := bu.take(t0, t0.Add(30*time.Second))
		slots = append(slots, s)
	}
	bu.rampUp(t0)
	for range 30 {
		s, ok := bu.take(t0, t0.Add(time.Minute))
		if !ok {
			t.Fatal("no moment within a minute")
		}
		slots = append(slots, s)
	}
	if n := mostInAnySecond(slots); n > 10 {
		t.Errorf("%d requests in one second after the ramp began, budget 10", n)
	}
}
