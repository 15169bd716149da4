//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// engine_faults_test.go: issue 26's end-to-end "Done when", through a real Vault against
// the dev identity server, every count taken at the identity server (its timeline of
// token requests): a lost refresh answer goes at most once more; an app's 429 holds every
// request of the app, queued ones included; a refresh-ahead answered 429 is tried again
// after the hold, so the next read does not wait.

// TestEngineFaults runs its steps side by side, each with a Vault and an identity server
// of its own: they mostly wait on the clock (the 429 hold's minute the longest). Each
// t.Run is called from a goroutine of its own rather than with t.Parallel, which -parallel
// (GOMAXPROCS by default: 2 on a small machine) would run two at a time.
func TestEngineFaults(t *testing.T) {
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"app_429_holds_queued_requests", testHoldStopsQueued},
		{"refresh_ahead_429_tried_again", testRefreshAheadAfterHold},
		{"lost_answer_gateway_5xx", func(t *testing.T) { testLostAnswerBound(t, gatewayFaults(40), false) }},
		{"lost_answer_dropped_after_handle", func(t *testing.T) {
			testLostAnswerBound(t, repeated(40, map[string]any{"drop_after_handle": true}), true)
		}},
	}
	var wg sync.WaitGroup
	for _, s := range steps {
		wg.Go(func() { t.Run(s.name, s.run) })
	}
	wg.Wait()
}

// idpRequest mirrors one entry of the dev identity server's GET /_admin/timeline.
type idpRequest struct {
	Arrived      int64  `json:"arrived_ms"`
	Answered     int64  `json:"answered_ms"` // 0 while under way
	Grant        string `json:"grant"`
	Client       string `json:"client_id"`
	RefreshToken string `json:"refresh_token_id"` // a fingerprint of the refresh token presented
	Status       int    `json:"status"`           // 0: the connection was dropped
	Fault        string `json:"fault"`
}

func (r idpRequest) String() string {
	took := "under way"
	if r.Answered != 0 {
		took = fmt.Sprintf("%d ms", r.Answered-r.Arrived)
	}
	return fmt.Sprintf("{%s %s rt=%s status=%d fault=%q at %s, %s}", r.Client, r.Grant, r.RefreshToken, r.Status, r.Fault,
		time.UnixMilli(r.Arrived).UTC().Format("15:04:05.000"), took)
}

// requests are the token requests of client at the identity server that arrived in
// [from, to] (zero times: no bound).
func (i *identity) requests(t *testing.T, client string, from, to time.Time) []idpRequest {
	t.Helper()
	var all []idpRequest
	i.admin(t, "timeline", &all)
	return slices.DeleteFunc(all, func(r idpRequest) bool {
		return r.Client != client || (!from.IsZero() && r.Arrived < from.UnixMilli()) || (!to.IsZero() && r.Arrived > to.UnixMilli())
	})
}

// perRefreshToken counts the requests by the refresh token they presented.
func perRefreshToken(reqs []idpRequest) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		if r.RefreshToken != "" {
			out[r.RefreshToken]++
		}
	}
	return out
}

// shown is what a test log says of a read's answer: its errors, never a token.
func shown(status int, text string) string {
	if status == http.StatusOK {
		return "(a token)"
	}
	return text
}

// patientClient waits longer than a read may take (30 s), so that a read that takes too
// long is seen as such, not cut by the test.
var patientClient = &http.Client{Timeout: 90 * time.Second}

// gatewayFaults are n answers of a gateway in front of apaleo: 502, 503, 504 in turn,
// each with an HTML page, not an OAuth error.
func gatewayFaults(n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		status := []int{502, 503, 504}[i%3]
		text := fmt.Sprintf("%d %s", status, http.StatusText(status))
		out[i] = map[string]any{"status": status,
			"body": "<html><head><title>" + text + "</title></head><body><center><h1>" + text + "</h1></center><hr><center>nginx</center></body></html>"}
	}
	return out
}

// expiresAt is expires_at of name's cached token in list -detailed (cut to the second).
func expiresAt(t *testing.T, v *vault, name string) time.Time {
	t.Helper()
	info := v.listDetailed(t)[name]
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(info["expires_at"]))
	if err != nil {
		t.Fatalf("%s: expires_at %v: %v", name, info["expires_at"], err)
	}
	return exp
}

// connectApp starts an identity server whose tokens live ttl with one connect app,
// writes config/<app> for it (extra fields after) and authorizes the names.
func connectApp(t *testing.T, v *vault, app string, ttl time.Duration, hotels []string, extra ...string) *identity {
	t.Helper()
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := randomSecret(t, app)
	idp := startIdentity(t, "identity", ttl, app+":"+secret+":EFT:reservations.read:"+callback)
	v.writeConfig(t, appConfig{name: app, clientID: app, secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read"})
	if len(extra) > 0 {
		v.must(t, append([]string{"write", mount + "/config/" + app}, extra...)...)
	}
	authorizeAll(t, v, idp, app, hotels)
	return idp
}

// waitExpired waits until the tokens the names hold are no longer handed out: a token
// is served only while more than 5 s of it are left (expires_at is cut to the second).
func waitExpired(t *testing.T, v *vault, hotels []string) {
	t.Helper()
	var last time.Time
	list := v.listDetailed(t)
	for _, n := range hotels {
		if list[n]["expires_at"] == nil { // its token is gone already
			continue
		}
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(list[n]["expires_at"]))
		if err != nil {
			t.Fatalf("%s: expires_at %v: %v", n, list[n]["expires_at"], err)
		}
		if exp.After(last) {
			last = exp
		}
	}
	time.Sleep(time.Until(last.Add(-4*time.Second + 100*time.Millisecond)))
}

// testLostAnswerBound: an expired authorized credential whose refresh answers are lost
// (faults: a gateway's 5xx, or the connection dropped after apaleo handled the refresh).
// One read sends the refresh token at least once and at most twice, and answers an error
// saying the answer was lost; until failure memory's next attempt no read sends it, and
// each later attempt sends it at most once. When the identity server is healthy again,
// the next attempt sends it once: the gateway's credential reads again (apaleo never saw
// its token); the dropped one's token was spent, so it needs a new authorization, and
// says the first answer was lost.
func testLostAnswerBound(t *testing.T, faults []map[string]any, spent bool) {
	const app, name = "lost-app", "hotel-lost"
	v := startDevVaultWith(t, "vault", "debug", nil)
	v.enablePlugin(t)
	// Tokens live 6 s: handed out for the first second only (not with 5 s or less left).
	idp := connectApp(t, v, app, 6*time.Second, []string{name})
	waitExpired(t, v, []string{name})
	idp.injectFaults(t, faults...)

	began := time.Now()
	status, text, took := v.readCredVia(patientClient, name)
	readDone := time.Now()
	first := idp.requests(t, app, began, readDone)
	t.Logf("one read: %d %q after %v; refresh requests at the identity server: %d %v", status, shown(status, text), took.Round(time.Millisecond), len(first), first)
	if len(first) < 1 || len(first) > 2 {
		t.Errorf("one read sent %d refresh requests, want 1 or 2 (a lost answer goes once more, no more)", len(first))
	}
	for rt, n := range perRefreshToken(first) {
		if n > 2 {
			t.Errorf("one read presented refresh token %s %d times, want at most 2", rt, n)
		}
	}
	if status == http.StatusOK || !strings.Contains(strings.ToLower(text), "lost") {
		t.Errorf("the read answered %d %q, want an error saying the answer was lost", status, shown(status, text))
	}

	// Reads until failure memory's next attempt has come: no send from since until it, one
	// at most at it, whatever the identity server does. It returns the last read and what
	// was sent.
	later := func(phase string, since time.Time) (int, string, []idpRequest, time.Time) {
		t.Helper()
		info := v.listDetailed(t)[name]
		due, err := time.Parse(time.RFC3339, fmt.Sprint(info["next_attempt_at"]))
		if err != nil {
			t.Fatalf("%s: state %v, next_attempt_at %v (%v): want failure memory's next attempt", phase, info["state"], info["next_attempt_at"], err)
		}
		if wait := time.Until(due); wait > 40*time.Second {
			t.Fatalf("%s: next attempt in %v: past this test's patience", phase, wait.Round(time.Second))
		}
		end := due.Add(1200 * time.Millisecond) // next_attempt_at is cut to the second
		var status int
		var text string
		for reads := 0; ; reads++ {
			status, text, _ = v.readCredVia(patientClient, name)
			if status == http.StatusOK || time.Now().After(end) {
				done := time.Now()
				sent := idp.requests(t, app, since, done)
				t.Logf("%s: next attempt at %s; %d reads over %v, the last %d %q; refresh requests: %d %v",
					phase, due.Format("15:04:05"), reads+1, done.Sub(since).Round(time.Millisecond), status, shown(status, text), len(sent), sent)
				if len(sent) > 1 {
					t.Errorf("%s: %d refresh requests for one attempt of failure memory, want at most 1", phase, len(sent))
				}
				for _, r := range sent {
					if r.Arrived < due.UnixMilli() {
						t.Errorf("%s: a refresh request arrived at %s, before the next attempt was due (%s)", phase,
							time.UnixMilli(r.Arrived).UTC().Format("15:04:05.000"), due.Format("15:04:05"))
					}
				}
				return status, text, sent, done
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	// Lost again at the next attempt.
	_, _, _, done := later("the next attempt, answers lost again", readDone)

	idp.clearFaults(t)
	status, text, sent, _ := later("the attempt after, identity server healthy", done)
	info := v.listDetailed(t)[name]
	all := idp.requests(t, app, began, time.Now())
	t.Logf("in all: %d refresh requests, per refresh token %v; state %v: %v", len(all), perRefreshToken(all), info["state"], info["last_error"])
	if len(sent) != 1 {
		t.Errorf("with the identity server healthy, the next attempt sent %d refresh requests, want 1", len(sent))
	}
	if !spent {
		if status != http.StatusOK || info["state"] != "ok" {
			t.Errorf("apaleo never saw the refresh token, yet the credential does not read again: %d %q, state %v", status, shown(status, text), info["state"])
		}
		return
	}
	if status != http.StatusBadRequest || info["state"] != "needs_authorization" || !strings.Contains(strings.ToLower(fmt.Sprint(info["last_error"])), "lost") {
		t.Errorf("apaleo spent the refresh token at the first request: read %d %q, state %v, last_error %v; want needs_authorization saying the first answer was lost",
			status, shown(status, text), info["state"], info["last_error"])
	}
	before := len(idp.requests(t, app, time.Time{}, time.Time{}))
	if status, _, _ := v.readCred(name); status == http.StatusOK {
		t.Errorf("a credential that needs authorization read %d", status)
	}
	if n := len(idp.requests(t, app, time.Time{}, time.Time{})) - before; n != 0 {
		t.Errorf("a read of a credential that needs authorization sent %d refresh requests", n)
	}
}

// testHoldStopsQueued: 30 expired credentials of one connect app are read at once at the
// default budget (max_token_requests_per_second=10), and apaleo answers the first token
// request after 500 ms with 429 Retry-After: 60. From 100 ms after that answer (requests
// already on the wire) until the minute ends, the identity server sees nothing of the
// app: requests queued for a budget slot wait out the hold too.
func testHoldStopsQueued(t *testing.T) {
	const app = "hold-app"
	const margin = 100 * time.Millisecond
	v := startDevVaultWith(t, "vault", "info", nil)
	v.enablePlugin(t)
	hotels := names("hold", 30)
	idp := connectApp(t, v, app, 6*time.Second, hotels)
	waitExpired(t, v, hotels)
	idp.injectFaults(t, map[string]any{"delay": "500ms", "status": 429, "retry_after": "60"})

	type answer struct {
		status int
		text   string
		took   time.Duration
	}
	answers := make([]answer, len(hotels))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range hotels {
		wg.Go(func() {
			<-start
			status, text, took := v.readCredVia(patientClient, n)
			answers[i] = answer{status, text, took}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	readsDone := time.Now()

	var limited idpRequest
	for _, r := range idp.requests(t, app, began, time.Time{}) {
		if strings.Contains(r.Fault, "status=429") {
			limited = r
		}
	}
	if limited.Answered == 0 {
		t.Fatalf("the identity server did not answer the 429: %v", limited)
	}
	answered := time.UnixMilli(limited.Answered)
	minuteEnds := answered.Add(60 * time.Second)
	time.Sleep(time.Until(minuteEnds.Add(200 * time.Millisecond)))

	reqs := idp.requests(t, app, began, time.Time{})
	var onWire, held, after []idpRequest
	for _, r := range reqs {
		switch at := time.UnixMilli(r.Arrived); {
		case !at.After(answered.Add(margin)):
			onWire = append(onWire, r)
		case at.Before(minuteEnds):
			held = append(held, r)
		default:
			after = append(after, r)
		}
	}
	outcomes := map[string]int{}
	var slowest time.Duration
	for _, a := range answers {
		key := fmt.Sprint(a.status)
		if a.status != http.StatusOK {
			key += " " + strings.Join(strings.Fields(a.text), " ")
		}
		outcomes[key]++
		slowest = max(slowest, a.took)
	}
	t.Logf("%d reads answered within %v (slowest %v): %v", len(hotels), readsDone.Sub(began).Round(time.Millisecond), slowest.Round(time.Millisecond), outcomes)
	t.Logf("429 answered at %s (request arrived %d ms after the reads began); token requests of the app: %d up to 100 ms after it, %d during the rest of the minute, %d after; most in one second %d",
		answered.UTC().Format("15:04:05.000"), limited.Arrived-began.UnixMilli(), len(onWire), len(held), len(after), mostInOneSecond(arrivals(reqs)))
	if len(held) != 0 {
		t.Errorf("the identity server saw %d token requests of the app while its 429 held (from %v after the answer until the minute ended), e.g. %v",
			len(held), margin, held[:min(5, len(held))])
	}
	if n := mostInOneSecond(arrivals(idp.requests(t, app, time.Time{}, time.Time{}))); n > 10+1 {
		t.Errorf("%d token requests of the app in one second, want at most 10 (+1)", n)
	}
}

func arrivals(reqs []idpRequest) []int64 {
	out := make([]int64, len(reqs))
	for i, r := range reqs {
		out[i] = r.Arrived
	}
	return out
}

// testRefreshAheadAfterHold: a credential in use whose refresh-ahead apaleo answers 429
// Retry-After: 3. Refresh-ahead tries again no sooner than 3 s after the 429 and before
// the token stops being fresh, and the next read does not wait: it is answered well
// under 500 ms, though apaleo now takes a second a request, with the new token.
func testRefreshAheadAfterHold(t *testing.T) {
	const app, name = "ahead-app", "hotel-ahead"
	// With min_ttl=1s a token is fresh until 5 s before it expires (the expiry skew): 42 s
	// of 47. Refresh-ahead's window is the third before that, from 28 s to 35 s of its
	// life; a retry 3 s after a 429 at the window's end, with a second of jitter and a
	// second at apaleo, is answered by 40 s.
	const ttl = 47 * time.Second
	v := startDevVaultWith(t, "vault", "debug", nil)
	v.enablePlugin(t)
	idp := connectApp(t, v, app, ttl, []string{name}, "min_ttl=1s")
	status, first, took := v.readCred(name) // the credential is in use
	if status != http.StatusOK {
		t.Fatalf("first read: %d %s", status, first)
	}
	exp := expiresAt(t, v, name)
	freshUntil := exp.Add(-5 * time.Second) // at the earliest: expires_at is cut to the second
	t.Logf("first read after %v; token expires %s, fresh until %s", took.Round(time.Millisecond), exp.Format("15:04:05"), freshUntil.Format("15:04:05"))
	idp.injectFaults(t, append([]map[string]any{{"status": 429, "retry_after": "3"}}, repeated(10, map[string]any{"delay": "1s"})...)...)

	// The next token request of the app is refresh-ahead's: nobody reads meanwhile.
	var limited, retry *idpRequest
	waitFor(t, "refresh-ahead's request, answered 429", time.Until(freshUntil.Add(time.Second)), 100*time.Millisecond, func() (bool, error) {
		for _, r := range idp.requests(t, app, time.Time{}, time.Time{}) {
			if r.Grant == "refresh_token" && strings.Contains(r.Fault, "status=429") && r.Answered != 0 {
				limited = &r
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("refresh-ahead answered 429 at %s, %v before the token stops being fresh", time.UnixMilli(limited.Answered).UTC().Format("15:04:05.000"),
		freshUntil.Sub(time.UnixMilli(limited.Answered)).Round(time.Millisecond))
	for time.Now().Before(freshUntil.Add(time.Second)) && retry == nil {
		reqs := idp.requests(t, app, time.Time{}, time.Time{}) // in the order they arrived
		if i := slices.Index(reqs, *limited); i >= 0 && i+1 < len(reqs) {
			retry = &reqs[i+1]
		}
		time.Sleep(100 * time.Millisecond)
	}
	if retry == nil {
		t.Errorf("refresh-ahead was not tried again after the 429 before the token stopped being fresh (%s)", freshUntil.Format("15:04:05"))
	} else {
		after := time.Duration(retry.Arrived-limited.Answered) * time.Millisecond
		t.Logf("tried again %v after the 429: %v", after, retry)
		if retry.Grant != "refresh_token" {
			t.Errorf("the request after the 429 was a %s grant, want refresh-ahead's refresh", retry.Grant)
		}
		if after < 3*time.Second {
			t.Errorf("refresh-ahead was tried again %v after the 429 with Retry-After: 3", after)
		}
		if time.UnixMilli(retry.Arrived).After(freshUntil) {
			t.Errorf("refresh-ahead was tried again at %s, after the token stopped being fresh (%s)",
				time.UnixMilli(retry.Arrived).UTC().Format("15:04:05.000"), freshUntil.Format("15:04:05"))
		}
		// The new token is stored once its answer is in.
		waitFor(t, "the new token", 10*time.Second, 50*time.Millisecond, func() (bool, error) {
			return !expiresAt(t, v, name).Equal(exp), nil
		})
	}
	status, tok, took := v.readCred(name)
	t.Logf("next read: %d after %v, new token %v", status, took.Round(time.Millisecond), tok != first)
	if status != http.StatusOK || tok == first {
		t.Errorf("the next read answered %d, new token %v; want the token refresh-ahead fetched", status, tok != first)
	}
	if took > 500*time.Millisecond {
		t.Errorf("the next read took %v: it waited on apaleo (a second a request)", took.Round(time.Millisecond))
	}
}
