package devidp_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// faults_test.go: injected faults, a hang released by Close, and many clients at once.

func TestFaults(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	cc := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader)

	t.Run("status", func(t *testing.T) {
		f.idp.InjectFaults(
			devidp.Fault{Status: 503},
			devidp.Fault{Status: 429, RetryAfter: "7"},
			devidp.Fault{Status: 400, Body: `{"error":"invalid_grant","error_description":"forced"}`},
			devidp.Fault{Status: 502, Body: "<html>bad gateway</html>"},
		)
		_, err := cc.Token(f.ctx)
		wantOAuthError(t, err, "server_error", 503)
		_, err = cc.Token(f.ctx)
		re := wantOAuthError(t, err, "slow_down", 429)
		if re.Response.Header.Get("Retry-After") != "7" {
			t.Errorf("Retry-After %q", re.Response.Header.Get("Retry-After"))
		}
		_, err = cc.Token(f.ctx)
		wantOAuthError(t, err, "invalid_grant", 400)
		_, err = cc.Token(f.ctx)
		re = retrieveError(t, err)
		if re.Response.StatusCode != 502 || string(re.Body) != "<html>bad gateway</html>" {
			t.Errorf("502: %d %s", re.Response.StatusCode, re.Body)
		}
		if _, err := cc.Token(f.ctx); err != nil {
			t.Errorf("queue not drained: %v", err)
		}
	})

	t.Run("delay", func(t *testing.T) {
		f.idp.InjectFaults(devidp.Fault{Delay: 300 * time.Millisecond})
		start := time.Now()
		if _, err := cc.Token(f.ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("answered after %v", d)
		}
		f.idp.InjectFaults(devidp.Fault{Delay: 200 * time.Millisecond, Status: 500})
		start = time.Now()
		_, err := cc.Token(f.ctx)
		wantOAuthError(t, err, "server_error", 500)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("answered after %v", d)
		}
	})

	t.Run("hang", func(t *testing.T) {
		f.idp.InjectFaults(devidp.Fault{Hang: true})
		ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
		defer cancel()
		_, err := cc.Token(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("want deadline exceeded, got %v", err)
		}
		if _, err := cc.Token(f.ctx); err != nil {
			t.Errorf("after hang: %v", err)
		}
	})

	t.Run("drop", func(t *testing.T) {
		f.idp.InjectFaults(devidp.Fault{Drop: true})
		_, err := cc.Token(f.ctx)
		var re *oauth2.RetrieveError
		if err == nil || errors.As(err, &re) {
			t.Errorf("want a transport error, got %v", err)
		}
	})

	t.Run("truncate", func(t *testing.T) {
		f.idp.InjectFaults(devidp.Fault{Truncate: true})
		_, err := cc.Token(f.ctx)
		if err == nil || !strings.Contains(err.Error(), "json") {
			t.Errorf("want a JSON error, got %v", err)
		}
	})

	t.Run("no expires_in", func(t *testing.T) {
		f.idp.InjectFaults(devidp.Fault{NoExpiresIn: true})
		tok, err := cc.Token(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !tok.Expiry.IsZero() || tok.Extra("expires_in") != nil || tok.AccessToken == "" {
			t.Errorf("expiry %v, expires_in %v", tok.Expiry, tok.Extra("expires_in"))
		}
	})

	t.Run("drop after handle", func(t *testing.T) {
		cfg, tok := f.authorized(t, oauth2.AuthStyleInParams)
		f.idp.InjectFaults(devidp.Fault{DropAfterHandle: true})
		before := f.idp.Stats().Issued
		_, err := refresh(f.ctx, cfg, tok.RefreshToken)
		var re *oauth2.RetrieveError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("want a transport error, got %v", err)
		}
		if f.idp.Stats().Issued != before+1 {
			t.Error("the refresh was not handled server-side")
		}
		// The refresh token was rotated although the client never saw the answer.
		_, err = refresh(f.ctx, cfg, tok.RefreshToken)
		wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)
	})

	t.Run("clear", func(t *testing.T) {
		f.idp.InjectFaults(devidp.Fault{Status: 500}, devidp.Fault{Drop: true})
		if f.idp.Stats().PendingFaults != 2 {
			t.Error("pending faults")
		}
		f.idp.ClearFaults()
		if _, err := cc.Token(f.ctx); err != nil {
			t.Error(err)
		}
	})

	st := f.idp.Stats()
	if st.FaultsApplied != 11 || st.PendingFaults != 0 || st.TokenRequests < st.FaultsApplied {
		t.Errorf("stats %+v", st)
	}
	if st.Errors["server_error"] != 0 {
		t.Errorf("injected faults counted as errors: %v", st.Errors)
	}
}

func TestCloseReleasesHang(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	f.idp.InjectFaults(devidp.Fault{Hang: true}, devidp.Fault{Delay: time.Hour})
	cc := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader)
	errc := make(chan error, 2)
	for range 2 {
		go func() { _, err := cc.Token(f.ctx); errc <- err }()
	}
	time.Sleep(200 * time.Millisecond)
	if st := f.idp.Stats(); st.TokenRequests != 2 {
		t.Fatalf("stats %+v", st)
	}
	f.idp.Close()
	var failed, ok int
	for range 2 {
		select {
		case err := <-errc:
			if err != nil {
				failed++
			} else {
				ok++
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not release the requests")
		}
	}
	if failed != 1 || ok != 1 { // the hang gets no answer, the delay is cut short
		t.Errorf("failed %d ok %d", failed, ok)
	}
}

func TestConcurrency(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			style := oauth2.AuthStyleInHeader
			if i%2 == 1 {
				style = oauth2.AuthStyleInParams
			}
			tok, err := f.cc(ccID, ccSecret, style, "reservations.read").Token(f.ctx)
			if err == nil && tok.AccessToken == "" {
				err = errors.New("empty token")
			}
			errs <- err
		}()
	}
	// Meanwhile: concurrent redemption of one refresh token succeeds once.
	cfg, tok := f.authorized(t, oauth2.AuthStyleInParams)
	const m = 20
	var mu sync.Mutex
	codes := map[string]int{}
	for range m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := refresh(f.ctx, cfg, tok.RefreshToken)
			key := "ok"
			if err != nil {
				var re *oauth2.RetrieveError
				if errors.As(err, &re) {
					key = re.ErrorCode
				} else {
					key = err.Error()
				}
			}
			mu.Lock()
			codes[key]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if codes["ok"] != 1 || codes["invalid_grant"] != m-1 {
		t.Errorf("concurrent refreshes: %v", codes)
	}
	// Authorizations side by side: storing a code sweeps the stored ones while fosite
	// writes the session of a code being redeemed (the bench's 10,000 imports once
	// crashed the server on that map, seen under -race here).
	const a = 8
	t.Run("authorizations", func(t *testing.T) {
		for i := range a {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				for range 30 {
					f.authorized(t, oauth2.AuthStyleInParams)
				}
			})
		}
	})
	st := f.idp.Stats()
	if st.ByGrant["client_credentials"] != n || st.Issued != n+2+a*30 {
		t.Errorf("stats %+v", st)
	}
}

// TestTimeline: every token request is in the Timeline with when it arrived and was
// answered, its grant and client, how it was answered (0: dropped), the fault it met,
// and which refresh token it presented (a fingerprint: the same token twice, the same id).
func TestTimeline(t *testing.T) {
	f := newFixture(t, devidp.Options{})
	cfg, tok := f.authorized(t, oauth2.AuthStyleInParams)
	f.idp.ResetStats()
	cc := f.cc(ccID, ccSecret, oauth2.AuthStyleInHeader)

	f.idp.InjectFaults(devidp.Fault{Delay: 200 * time.Millisecond, Status: 429, RetryAfter: "3"}, devidp.Fault{DropAfterHandle: true})
	_, err := cc.Token(f.ctx)
	wantOAuthError(t, err, "slow_down", http.StatusTooManyRequests)
	if _, err := refresh(f.ctx, cfg, tok.RefreshToken); err == nil {
		t.Fatal("drop_after_handle: want a transport error")
	}
	_, err = refresh(f.ctx, cfg, tok.RefreshToken) // spent by the dropped request
	wantOAuthError(t, err, "invalid_grant", http.StatusBadRequest)

	// A dropped connection reaches the client before its handler has returned and
	// completed the entry: wait for every entry to be answered.
	tl := f.idp.Timeline()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); tl = f.idp.Timeline() {
		if !slices.ContainsFunc(tl, func(e devidp.TokenRequest) bool { return e.Answered == 0 }) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(tl) != 3 {
		t.Fatalf("timeline has %d entries, want 3: %+v", len(tl), tl)
	}
	limited, dropped, refused := tl[0], tl[1], tl[2]
	if limited.Grant != "client_credentials" || limited.Client != ccID || limited.Status != 429 || limited.Fault != "delay=200ms,status=429" || limited.RefreshToken != "" {
		t.Errorf("429: %+v", limited)
	}
	if d := limited.Answered - limited.Arrived; d < 200 || d > 2000 {
		t.Errorf("429 answered %d ms after it arrived, want the 200 ms delay", d)
	}
	if dropped.Grant != "refresh_token" || dropped.Client != connectID || dropped.Status != 0 || dropped.Fault != "drop_after_handle" || len(dropped.RefreshToken) != 16 {
		t.Errorf("dropped: %+v", dropped)
	}
	if refused.Status != http.StatusBadRequest || refused.Fault != "" || refused.RefreshToken != dropped.RefreshToken {
		t.Errorf("refused: %+v, want the same refresh token id as %q", refused, dropped.RefreshToken)
	}
	if strings.Contains(refused.RefreshToken, tok.RefreshToken) {
		t.Error("the timeline names the refresh token itself")
	}
	for i, e := range tl {
		if e.Arrived == 0 || e.Answered < e.Arrived || (i > 0 && e.Arrived < tl[i-1].Arrived) {
			t.Errorf("entry %d: arrived %d, answered %d", i, e.Arrived, e.Answered)
		}
	}
	f.idp.ResetStats()
	if n := len(f.idp.Timeline()); n != 0 {
		t.Errorf("after ResetStats the timeline has %d entries", n)
	}
}
