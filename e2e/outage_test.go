//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// outage_test.go: an outage of apaleo is the app's, end to end. A real Vault, the dev
// identity server answering 500 to the app's every token request for 3 minutes, 40
// authorized credentials of one app (60 s tokens), half of them read in loops every 2 s:
// while it is down only probes reach it (counted at the identity server, its timeline);
// after it, every looping reader is served within a minute; no refresh token is lost.

func TestOutage(t *testing.T) {
	t.Parallel()
	const (
		app     = "outage-app"
		ttl     = 60 * time.Second
		outage  = 3 * time.Minute
		maxDown = 25 // token requests at the identity server while it answers 500
		within  = time.Minute
	)
	v := startDevVaultWith(t, "vault-outage", "info", nil)
	v.enablePlugin(t)
	hotels := names("hotel-out", 40)
	idp := connectApp(t, v, app, ttl, hotels)
	loopers := hotels[:20]

	var mu sync.Mutex
	var start, end time.Time // of the outage
	served := map[string]time.Time{}
	lastErr := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, name := range loopers {
		wg.Go(func() {
			for {
				status, text, _ := v.readCredVia(patientClient, name)
				at := time.Now()
				mu.Lock()
				if status == http.StatusOK && !end.IsZero() && at.After(end) && served[name].IsZero() {
					served[name] = at
				}
				if status != http.StatusOK {
					lastErr[name] = text
				}
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Second):
				}
			}
		})
	}
	time.Sleep(10 * time.Second) // the loops read their tokens: in use, refreshed ahead

	mu.Lock()
	start = time.Now()
	mu.Unlock()
	idp.injectFaults(t, repeated(2000, map[string]any{"status": 500})...)
	time.Sleep(outage / 2)
	if cfg := v.read(t, mount+"/config/"+app); cfg.str("upstream") != "down" || cfg.str("down_since") == "" || cfg.str("next_probe_at") == "" {
		t.Errorf("config/%s during the outage: upstream %q down_since %q next_probe_at %q", app, cfg.str("upstream"), cfg.str("down_since"), cfg.str("next_probe_at"))
	}
	mu.Lock()
	sample := lastErr[loopers[0]]
	mu.Unlock()
	if !strings.Contains(sample, "is down for config/"+app) || !strings.Contains(sample, "next probe at") {
		t.Errorf("a looping reader's error during the outage does not name it and the next probe: %q", sample)
	}
	time.Sleep(time.Until(start.Add(outage)))
	idp.clearFaults(t)
	mu.Lock()
	end = time.Now()
	mu.Unlock()

	during := idp.requests(t, app, start, end)
	t.Logf("%d token requests reached the identity server in the %s it answered 500", len(during), outage)
	if len(during) > maxDown {
		t.Errorf("%d token requests during the outage, want at most %d (5 failures, then one probe at a time):\n%v", len(during), maxDown, during)
	}

	time.Sleep(within + 5*time.Second)
	close(stop)
	wg.Wait()
	var late []string
	var slowest time.Duration
	for _, name := range loopers {
		if served[name].IsZero() || served[name].Sub(end) > within {
			late = append(late, fmt.Sprintf("%s (%v)", name, lastErr[name]))
			continue
		}
		slowest = max(slowest, served[name].Sub(end))
	}
	t.Logf("every looping reader served again within %s of the identity server's recovery", slowest.Round(time.Second))
	if len(late) > 0 {
		t.Errorf("%d of %d looping readers not served within %s of the recovery: %s", len(late), len(loopers), within, strings.Join(late, "; "))
	}

	// No refresh token lost: every credential reads (the idle ones too), none needs a new
	// authorization.
	for name, info := range v.listDetailed(t) {
		if info["state"] == "needs_authorization" {
			t.Errorf("%s needs a new authorization after the outage: %v", name, info["last_error"])
		}
	}
	for _, name := range hotels {
		if status, text, _ := v.readCredVia(patientClient, name); status != http.StatusOK {
			t.Errorf("%s after the outage: %d %s", name, status, text)
		}
	}
	if cfg := v.read(t, mount+"/config/"+app); cfg.str("upstream") != "ok" {
		t.Errorf("config/%s after the outage: upstream %q", app, cfg.str("upstream"))
	}
}
