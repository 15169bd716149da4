//go:build e2e

package e2e

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// quota_test.go: a runaway reader is Vault's to stop, with a rate-limit quota on the
// mount's creds/ path.

// TestQuotaRunawayReader: with `sys/quotas/rate-limit` on apaleo/creds/* (20 reads a
// second), a reader looping without pause gets Vault's 429s; meanwhile a reader of
// apaleo/config/ and a reader of another mount's creds/ get none; and the leases the
// runaway made stay within the quota's rate.
func TestQuotaRunawayReader(t *testing.T) {
	t.Parallel()
	const (
		rate    = 20
		seconds = 10
	)
	v := startDevVaultWith(t, "vault-quota", "info", nil)
	sec := randomSecret(t, "muc")
	idp := startIdentity(t, "identity", time.Hour, "hotel-muc:"+sec+":MUC:account.read")
	v.enablePlugin(t)
	const other = "apaleo-other"
	v.must(t, "secrets", "enable", "-path="+other, "-plugin-version="+pluginVersion, pluginName)
	v.writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: sec, idp: idp, scopes: "account.read"})
	v.must(t, "write", other+"/config/hotel-muc", "client_id=hotel-muc", "client_secret="+sec,
		"identity_url="+idp.URL, "ca_certificate=@"+idp.CAFile, "scopes=account.read")
	v.must(t, "write", "sys/quotas/rate-limit/apaleo-creds", "path="+mount+"/creds/*", "rate=20", "interval=1s")

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	get := func(path string) int {
		req, _ := http.NewRequest(http.MethodGet, v.Addr+"/v1/"+path, nil)
		req.Header.Set("X-Vault-Token", v.Token)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	type tally struct{ ok, limited, other atomic.Int64 }
	count := func(c *tally, status int) {
		switch status {
		case http.StatusOK:
			c.ok.Add(1)
		case http.StatusTooManyRequests:
			c.limited.Add(1)
		default:
			c.other.Add(1)
		}
	}
	var runaway, config, otherMount tally
	stop := time.Now().Add(seconds * time.Second)
	var wg sync.WaitGroup
	for range 2 { // the runaway: two loops without pause
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				count(&runaway, get(mount+"/creds/hotel-muc"))
			}
		}()
	}
	for _, r := range []struct {
		c    *tally
		path string
	}{{&config, mount + "/config/hotel-muc"}, {&otherMount, other + "/creds/hotel-muc"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				count(r.c, get(r.path))
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	leases := countLeasesOf(t, v, "hotel-muc")
	t.Logf("quota figures | %d s, rate %d/s on %s/creds/* | runaway: %d answered, %d got 429, %d other | %s/config/: %d answered, %d got 429 | %s/creds/: %d answered, %d got 429 | %d leases alive on %s/creds/hotel-muc | %d token requests",
		seconds, rate, mount, runaway.ok.Load(), runaway.limited.Load(), runaway.other.Load(),
		mount, config.ok.Load(), config.limited.Load(), other, otherMount.ok.Load(), otherMount.limited.Load(),
		leases, mount, idp.stats(t).TokenRequests)
	if runaway.limited.Load() == 0 {
		t.Error("the runaway reader got no 429 from Vault")
	}
	// Vault's limiter allows a burst of the rate on top: a wide margin.
	if limit := int64(rate*(seconds+2) + rate); runaway.ok.Load() > limit {
		t.Errorf("the runaway reader got %d answers in %d s, want at most %d at %d/s", runaway.ok.Load(), seconds, limit, rate)
	}
	if int64(leases) > runaway.ok.Load()+1 {
		t.Errorf("%d leases alive, more than the %d answered reads", leases, runaway.ok.Load())
	}
	for name, c := range map[string]*tally{"config/": &config, other + "/creds/": &otherMount} {
		if c.limited.Load() > 0 || c.other.Load() > 0 || c.ok.Load() < seconds*5 {
			t.Errorf("reader of %s: %d answered, %d got 429, %d other; want every read answered", name, c.ok.Load(), c.limited.Load(), c.other.Load())
		}
	}
}
