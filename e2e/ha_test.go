//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// haTTL is the access-token lifetime of the HA test's short identity server, and
// haMinTTL the min_ttl of its config: a token is refreshed haTTL-haMinTTL after issue.
const (
	haTTL    = 12 * time.Second
	haMinTTL = 3 * time.Second
)

// TestHA runs a 3-node Vault cluster with integrated storage (raft) on 127.0.0.1:
// config writes and creds reads through standbys (request forwarding), then the active
// node is killed (SIGKILL) during steady reads through the standbys. Reads go on at the
// new leader with the cached tokens, the authorized credential's stored refresh token
// and no double fetch or refresh; background work (the rollback manager, which calls the
// plugin's PeriodicFunc) runs only on the active node, and no node logs a write to
// read-only storage.
func TestHA(t *testing.T) {
	t.Parallel()
	start := time.Now()
	nodes := startRaftCluster(t, 3)
	t.Logf("cluster of %d raft nodes up in %s", len(nodes), time.Since(start).Round(100*time.Millisecond))
	active := nodes[0]
	standbys := nodes[1:]
	// step runs one named step of the test; the steps after a failed one cannot run.
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	step("one_leader", func(t *testing.T) {
		for _, n := range nodes {
			if li := n.leader(t); li.LeaderAddress != active.Addr || li.IsSelf != (n == active) {
				t.Fatalf("%s: sys/leader %+v, want leader %s", n.Addr, li, active.Addr)
			}
		}
	})

	secMuc, secApp := randomSecret(t, "muc"), randomSecret(t, "app")
	callback := standbys[0].Addr + "/v1/" + mount + "/callback"
	long := startIdentity(t, "identity-long", time.Hour, "hotel-muc:"+secMuc+":MUC:account.read")
	short := startIdentity(t, "identity-short", haTTL, "connect-app:"+secApp+":BER:reservations.read:"+callback)

	// Everything through the standbys: the plugin catalog and mounts are replicated, so
	// one registration serves every node (each has the binary in its plugin_directory).
	step("writes_through_standbys", func(t *testing.T) {
		standbys[0].enablePlugin(t)
		standbys[1].writeConfig(t, appConfig{name: "hotel-muc", clientID: "hotel-muc", secret: secMuc, idp: long, scopes: "account.read"})
		standbys[0].writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: secApp, idp: short,
			grant: "authorization_code", redirect: callback, scopes: "reservations.read", minTTL: haMinTTL.String()})
		// Forwarded, not redirected: the API answers at the standby itself.
		if status, body, err := standbys[0].api(http.MethodPost, mount+"/config/hotel-muc", map[string]any{"scopes": "account.read"}); err != nil || status != http.StatusNoContent {
			t.Errorf("config write through a standby's API: %d %s %v, want 204", status, body, err)
		}
		for _, n := range nodes {
			if got := n.list(t, mount+"/config/"); !slices.Equal(got, []string{"connect", "hotel-muc"}) {
				t.Errorf("%s: config/ list = %q", n.Addr, got)
			}
		}
		// The authorization code flow, with the callback at a standby.
		authURL, _ := standbys[1].authorize(t, "hotel-ber", "connect")
		b := short.browser(t, true)
		page := getPage(t, b.Client, authURL.String())
		if page.status != http.StatusOK || !strings.Contains(page.body, "hotel-ber") {
			t.Fatalf("callback at a standby: %d %s", page.status, page.body)
		}
		if s := standbys[1].read(t, mount+"/creds/hotel-muc"); s.str("access_token") == "" {
			t.Fatalf("creds/hotel-muc via a standby: %v", s.Data)
		}
		if s := standbys[0].read(t, mount+"/creds/hotel-ber"); s.str("account_code") != "BER" {
			t.Fatalf("creds/hotel-ber via a standby: %v", s.Data)
		}
		if r := readCreds(standbys[1], "hotel-ber"); !r.ok {
			t.Errorf("creds/hotel-ber through a standby's API: %s", r.errText)
		}
		st := short.stats(t)
		if st.ByGrant["authorization_code"] != 1 || st.TokenRequests != 1 {
			t.Errorf("identity-short stats %+v, want one code exchange", st)
		}
		if st := long.stats(t); st.ByGrant["client_credentials"] != 1 || st.TokenRequests != 1 {
			t.Errorf("identity-long stats %+v, want one client_credentials request", st)
		}
	})

	step("every_node_a_voter", func(t *testing.T) {
		waitVoters(t, nodes)
		t.Logf("every node a voter %s after the start", time.Since(start).Round(100*time.Millisecond))
	})

	// Steady reads through both standbys, one reader per (node, credential). The readers
	// belong to the whole test, not to a step.
	var rec readRecorder
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range standbys {
		for _, name := range []string{"hotel-muc", "hotel-ber"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec.run(n, name, stop)
			}()
		}
	}
	stopReaders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopReaders()

	// Kill the active node right after a refresh of hotel-ber (stored before the read
	// answered), so that no refresh is in flight on it: the next one is due haTTL-haMinTTL
	// later, on the new leader, with the refresh token the old leader stored.
	var (
		preKill  []readResult
		lastBer  readResult
		killedAt time.Time
	)
	step("kill_the_active_node_after_a_refresh", func(t *testing.T) {
		waitFor(t, "a refresh of hotel-ber during steady reads", haTTL+10*time.Second, 20*time.Millisecond, func() (bool, error) {
			return len(rec.tokens("hotel-ber")) >= 2, nil
		})
		preKill = rec.snapshot()
		lastBer = rec.last("hotel-ber")
		killedAt = time.Now()
		active.proc.kill()
		t.Logf("killed the active node %s (SIGKILL to vault and its plugin)", active.Addr)
	})

	// A new leader among the survivors.
	var (
		leader  *vault
		elected time.Duration
	)
	step("a_new_leader", func(t *testing.T) {
		waitFor(t, "a new active node", 60*time.Second, 50*time.Millisecond, func() (bool, error) {
			var errs []error
			for _, n := range standbys {
				li, err := n.leaderInfo()
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if li.IsSelf && n.healthStatus() == http.StatusOK {
					leader = n
					return true, nil
				}
			}
			return false, errors.Join(errs...)
		})
		elected = time.Since(killedAt)
		t.Logf("new active node %s after %s", leader.Addr, elected.Round(10*time.Millisecond))
	})

	// Reads go on: each reader succeeds again, and hotel-ber is refreshed once more on
	// the new leader within the steady reads.
	var reads []readResult
	step("reads_go_on_at_the_new_leader", func(t *testing.T) {
		waitFor(t, "reads to go on at the new leader, with a refresh there", 2*haTTL+30*time.Second, 50*time.Millisecond, func() (bool, error) {
			short := rec.successesAfter(killedAt.Add(elected), 10)
			if n := len(rec.tokens("hotel-ber")); n < 3 {
				short = errors.Join(short, fmt.Errorf("hotel-ber: %d access tokens seen, want 3", n))
			}
			return short == nil, short
		})
		stopReaders()
		reads = rec.snapshot()
	})

	t.Run("reads_during_failover", func(t *testing.T) {
		var failed, failedBefore, failedAfterElection, after int
		var firstErr, lastErr time.Time
		errSamples := map[string]int{}
		firstOK := map[string]time.Time{}
		for _, r := range reads {
			if r.at.Before(killedAt) {
				if !r.ok {
					failedBefore++
				}
				continue
			}
			after++
			if r.ok {
				key := r.node + " " + r.name
				if _, seen := firstOK[key]; !seen {
					firstOK[key] = r.at
				}
				continue
			}
			failed++
			if r.at.After(killedAt.Add(elected)) {
				failedAfterElection++
			}
			if firstErr.IsZero() {
				firstErr = r.at
			}
			lastErr = r.at
			errSamples[r.errText]++
		}
		if failedBefore != 0 {
			t.Errorf("%d reads failed before the kill", failedBefore)
		}
		var window, firstAfter time.Duration
		if failed > 0 {
			window, firstAfter = lastErr.Sub(firstErr), firstErr.Sub(killedAt)
		}
		t.Logf("reads: %d in all, %d before the kill (%d failed), %d after (%d failed); error window %s (first error %s after the kill); new leader after %s",
			len(reads), len(preKill), failedBefore, after, failed, window.Round(time.Millisecond),
			firstAfter.Round(time.Millisecond), elected.Round(time.Millisecond))
		t.Logf("%d of the failed reads were answered after the new leader was active (standbys catching up)", failedAfterElection)
		for k, at := range firstOK {
			t.Logf("first successful read after the kill: %s after %s", k, at.Sub(killedAt).Round(time.Millisecond))
		}
		for e, n := range errSamples {
			t.Logf("failed read (%dx): %s", n, e)
		}
		if window > 45*time.Second {
			t.Errorf("reads failed for %s after the kill", window)
		}
		for _, n := range standbys {
			for _, name := range []string{"hotel-muc", "hotel-ber"} {
				if _, ok := firstOK[n.Addr+" "+name]; !ok {
					t.Errorf("no successful read of %s through %s after the kill", name, n.Addr)
				}
			}
		}
	})

	t.Run("cached_tokens_intact", func(t *testing.T) {
		// Configs and the authorized credential at the new leader.
		if got := leader.list(t, mount+"/creds/"); !slices.Equal(got, []string{"hotel-ber", "hotel-muc"}) {
			t.Errorf("creds/ list at the new leader = %q", got)
		}
		if c := leader.read(t, mount+"/config/connect"); c.str("client_id") != "connect-app" || c.str("redirect_uri") != callback {
			t.Errorf("config/connect at the new leader = %v", c.Data)
		}
		// hotel-ber's refresh on the new leader, with the refresh token the old one stored.
		for _, r := range reads {
			if r.name == "hotel-ber" && r.ok && r.at.After(killedAt) && r.token != lastBer.token {
				t.Logf("hotel-ber refreshed on the new leader %s after the kill (read through %s)", r.at.Sub(killedAt).Round(time.Millisecond), r.node)
				break
			}
		}
		// One client-credentials token all along: the new leader read it from storage.
		if toks := rec.tokens("hotel-muc"); len(toks) != 1 {
			t.Errorf("creds/hotel-muc returned %d different access tokens, want 1 (the cached one)", len(toks))
		}
		if st := long.stats(t); st.ByGrant["client_credentials"] != 1 || st.TokenRequests != 1 {
			t.Errorf("identity-long stats %+v: want exactly one client_credentials request (no double fetch)", st)
		}
		// hotel-ber's first token at the new leader is the one the old leader stored,
		// unless it was due for a refresh by then.
		for _, r := range reads {
			if r.name != "hotel-ber" || !r.ok || r.at.Before(killedAt) {
				continue
			}
			t.Logf("first hotel-ber read after the kill (%s after it): the token stored by the old leader: %v",
				r.at.Sub(killedAt).Round(time.Millisecond), r.token == lastBer.token)
			if r.token != lastBer.token && r.at.Before(lastBer.expires.Add(-haMinTTL)) {
				t.Errorf("first hotel-ber read after the failover (%s after the kill) returned a new token while the stored one had %s left",
					r.at.Sub(killedAt).Round(time.Millisecond), lastBer.expires.Sub(r.at).Round(time.Millisecond))
			} else if r.token != lastBer.token {
				t.Logf("the stored hotel-ber token was due for a refresh when the new leader first answered")
			}
			break
		}
	})

	// The killed node comes back as a standby; the next refresh, read through it, uses
	// the refresh token the new leader stored.
	t.Run("refresh_token_intact", func(t *testing.T) {
		active.start(t)
		active.waitHealth(t, http.StatusServiceUnavailable) // sealed
		active.must(t, "operator", "unseal", active.unsealKey)
		active.waitHealth(t, http.StatusTooManyRequests) // standby
		waitFor(t, "the restarted node to know the leader", 30*time.Second, 50*time.Millisecond, func() (bool, error) {
			li, err := active.leaderInfo()
			return err == nil && !li.IsSelf && li.LeaderAddress != "", fmt.Errorf("%+v %v", li, err)
		})
		toks := rec.tokens("hotel-ber")
		newest := toks[len(toks)-1]
		// Read through the restarted standby until the token changes; a read may fail
		// while its request forwarding comes up.
		var forced string
		var failed []string
		waitFor(t, "the forced refresh through the restarted node", haTTL+20*time.Second, 250*time.Millisecond, func() (bool, error) {
			r := readCreds(active, "hotel-ber")
			if !r.ok {
				failed = append(failed, r.errText)
				return false, errors.New(r.errText)
			}
			forced = r.token
			return forced != newest, nil
		})
		if len(failed) > 0 {
			t.Logf("%d reads through the restarted node failed before it forwarded: %q", len(failed), failed)
		}
		st := short.stats(t)
		distinct := len(toks) + 1 // + forced
		if slices.Contains(toks, forced) {
			t.Errorf("the forced refresh returned an old token")
		}
		t.Logf("hotel-ber: %d access tokens (1 from the code, %d refreshed during steady reads, 1 forced afterwards); identity-short refresh_token requests %d, errors %v",
			distinct, len(toks)-1, st.ByGrant["refresh_token"], st.Errors)
		if st.ByGrant["refresh_token"] != distinct-1 {
			t.Errorf("%d refresh_token requests for %d refreshes (expiries): a double refresh or a lost one", st.ByGrant["refresh_token"], distinct-1)
		}
		if n := st.Errors["invalid_grant"]; n != 0 {
			t.Errorf("%d invalid_grant errors at the identity server", n)
		}
		if st.TokenRequests != st.ByGrant["refresh_token"]+st.ByGrant["authorization_code"] {
			t.Errorf("identity-short stats %+v: unexpected token requests", st)
		}
	})

	t.Run("background_only_where_writable", func(t *testing.T) {
		// Vault starts the rollback manager, which calls the plugin's PeriodicFunc, on the
		// active node only: never while a node is a standby. No node may log a write to
		// read-only storage (logical.ErrReadOnly: "cannot write to readonly storage") or
		// a failed rollback (a PeriodicFunc error).
		startsAfterKill := 0
		for _, n := range nodes {
			a := analyseHALog(t, n.log)
			for _, l := range a.readOnly {
				t.Errorf("%s: %s", n.Addr, l)
			}
			for _, l := range a.standbyRollbacks {
				t.Errorf("%s started the rollback manager while a standby: %s", n.Addr, l)
			}
			if n != active {
				startsAfterKill += a.rollbackStarts
			}
			t.Logf("%s: active %d times, standby %d times; rollback manager started %d times (%d while a standby); %d log lines about the plugin (%d while a standby); %d read-only errors",
				n.Addr, a.activations, a.standbys, a.rollbackStarts, len(a.standbyRollbacks), a.pluginLines, a.standbyPluginLines, len(a.readOnly))
		}
		if startsAfterKill == 0 {
			t.Error("no surviving node started the rollback manager")
		}
	})
	t.Logf("TestHA took %s", time.Since(start).Round(100*time.Millisecond))
}

// haLog is what analyseHALog found in a Vault node's log.
type haLog struct {
	activations, standbys int      // "acquired lock, enabling active operation", "entering standby mode"
	rollbackStarts        int      // "starting rollback manager"
	standbyRollbacks      []string // rollback manager starts while a standby
	pluginLines           int      // lines naming the plugin
	standbyPluginLines    int      // ... while a standby
	readOnly              []string // writes to read-only storage, failed rollbacks
}

// analyseHALog follows a node's log through its states: standby from "entering standby
// mode" or "leadership lost" until "acquired lock, enabling active operation" (at
// operator init the first node sets up and runs as the only node before that).
func analyseHALog(t *testing.T, path string) haLog {
	t.Helper()
	var a haLog
	standby := false
	grepLog(t, path, 0, -1, func(l string) bool {
		low := strings.ToLower(l)
		switch {
		case strings.Contains(l, "core: entering standby mode"), strings.Contains(l, "core: leadership lost"):
			standby = true
			if strings.Contains(l, "entering standby mode") {
				a.standbys++
			}
		case strings.Contains(l, "core: acquired lock, enabling active operation"):
			standby = false
			a.activations++
		case strings.Contains(l, "starting rollback manager"):
			a.rollbackStarts++
			// OpenBao's standbys serve reads: their read-only unseal starts a rollback
			// manager by design, and the plugin's background work must hold still there.
			if standby && server.flavour != flavourOpenBao {
				a.standbyRollbacks = append(a.standbyRollbacks, l)
			}
		case strings.Contains(l, "error rolling back"):
			a.readOnly = append(a.readOnly, l)
		case strings.Contains(low, "read-only"), strings.Contains(low, "readonly"), strings.Contains(low, "read only"):
			// OpenBao's core logs its own refused writes on a standby (a mount enabled
			// through it, which it then forwards): only the plugin's count there.
			if server.flavour != flavourOpenBao || strings.Contains(l, pluginName) {
				a.readOnly = append(a.readOnly, l)
			}
		}
		if strings.Contains(l, pluginName) {
			a.pluginLines++
			if standby {
				a.standbyPluginLines++
			}
		}
		return false
	})
	return a
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// grepLog returns the lines of path between byte offsets from and to (-1: the end)
// that match.
func grepLog(t *testing.T, path string, from, to int64, match func(string) bool) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		t.Fatal(err)
	}
	var r io.Reader = f
	if to >= 0 {
		r = io.LimitReader(f, to-from)
	}
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if match(sc.Text()) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------
// the cluster

// haPerfMultiplier: raft timeouts of 2 s and a leader lease of 1 s. With 1 (500 ms), a
// loaded 2-core machine running three Vaults saw the leader step down spuriously.
const haPerfMultiplier = 2

// startRaftCluster starts n Vault nodes with integrated storage on 127.0.0.1, each with
// its own API and cluster port, data and plugin directory. Node 1 is initialised (one
// key share) and unsealed; the others join it (vault operator raft join) and are
// unsealed. Node 1 is the active node on return; waitVoters waits until autopilot has
// made every node a voter.
func startRaftCluster(t *testing.T, n int) []*vault {
	t.Helper()
	nodes := make([]*vault, n)
	for i := range nodes {
		v := newVaultDirs(t, fmt.Sprintf("vault-ha%d", i+1))
		v.configureRaft(t, fmt.Sprintf("node%d", i+1), freePort(t), freePort(t), haPerfMultiplier)
		v.start(t)
		nodes[i] = v
	}
	first := nodes[0]
	first.waitHealth(t, http.StatusNotImplemented)
	first.initRaft(t)
	first.unseal(t)
	// Joined nodes become voters once autopilot deems them stable.
	first.must(t, "operator", "raft", "autopilot", "set-config", "-server-stabilization-time=1s")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, v := range nodes[1:] {
		v.Token, v.unsealKey = first.Token, first.unsealKey
		v.waitHealth(t, http.StatusNotImplemented)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The join fetches node 1's challenge; the unseal key answers it.
			for _, args := range [][]string{{"operator", "raft", "join", first.Addr}, {"operator", "unseal", v.unsealKey}} {
				if r := v.run(args...); r.Err != nil {
					errs[i+1] = fmt.Errorf("%s: vault %s: %s", v.Addr, args[1], r)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range nodes[1:] {
		v.waitHealth(t, http.StatusTooManyRequests) // unsealed standby
	}
	return nodes
}

// waitVoters waits until every node of the cluster is a raft voter.
func waitVoters(t *testing.T, nodes []*vault) {
	t.Helper()
	waitFor(t, "every node to be a raft voter", 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		var peers struct {
			Data struct {
				Config struct {
					Servers []struct {
						NodeID string `json:"node_id"`
						Voter  bool   `json:"voter"`
					} `json:"servers"`
				} `json:"config"`
			} `json:"data"`
		}
		status, body, err := nodes[0].api(http.MethodGet, "sys/storage/raft/configuration", nil)
		if err != nil || status != http.StatusOK {
			return false, fmt.Errorf("%d %s %v", status, body, err)
		}
		if err := json.Unmarshal(body, &peers); err != nil {
			return false, err
		}
		voters := 0
		for _, s := range peers.Data.Config.Servers {
			if s.Voter {
				voters++
			}
		}
		return voters == len(nodes), fmt.Errorf("%d of %d voters: %+v", voters, len(nodes), peers.Data.Config.Servers)
	})
}

// leaderInfo is GET sys/leader.
type leaderInfo struct {
	HAEnabled     bool   `json:"ha_enabled"`
	IsSelf        bool   `json:"is_self"`
	LeaderAddress string `json:"leader_address"`
}

func (v *vault) leaderInfo() (leaderInfo, error) {
	var li leaderInfo
	status, body, err := v.api(http.MethodGet, "sys/leader", nil)
	if err != nil {
		return li, err
	}
	if status != http.StatusOK {
		return li, fmt.Errorf("sys/leader: %d %s", status, body)
	}
	return li, json.Unmarshal(body, &li)
}

func (v *vault) leader(t *testing.T) leaderInfo {
	t.Helper()
	li, err := v.leaderInfo()
	if err != nil {
		t.Fatal(err)
	}
	return li
}

// healthStatus is the status of GET sys/health (0 when unreachable).
func (v *vault) healthStatus() int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(v.Addr + "/v1/sys/health")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// ---------------------------------------------------------------------------------------
// steady reads

// readResult is one creds read by a steady reader.
type readResult struct {
	at         time.Time // when the read was answered
	node, name string
	ok         bool
	token      string
	expires    time.Time
	errText    string
}

// readRecorder collects the reads of concurrent steady readers.
type readRecorder struct {
	mu    sync.Mutex
	reads []readResult
}

const (
	readInterval  = 200 * time.Millisecond
	readerMaxTime = 3 * time.Minute
	readerMaxRead = 3000
)

// readClient does not follow redirects: a standby that cannot forward answers 307 to
// the active node, and the reader records that as a failed read.
var readClient = &http.Client{
	Timeout:       5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// run reads creds/<name> through v every readInterval until stop is closed (at most
// readerMaxTime and readerMaxRead reads).
func (rec *readRecorder) run(v *vault, name string, stop <-chan struct{}) {
	deadline := time.Now().Add(readerMaxTime)
	for i := 0; i < readerMaxRead && time.Now().Before(deadline); i++ {
		r := readCreds(v, name)
		rec.mu.Lock()
		rec.reads = append(rec.reads, r)
		rec.mu.Unlock()
		select {
		case <-stop:
			return
		case <-time.After(readInterval):
		}
	}
}

// readCreds reads creds/<name> through v's API without following redirects.
func readCreds(v *vault, name string) (r readResult) {
	r = readResult{node: v.Addr, name: name}
	defer func() { r.at = time.Now() }() // when the read was answered
	req, _ := http.NewRequest(http.MethodGet, v.Addr+"/v1/"+mount+"/creds/"+name, nil)
	req.Header.Set("X-Vault-Token", v.Token)
	resp, err := readClient.Do(req)
	if err != nil {
		r.errText = err.Error()
		return r
	}
	var body struct {
		Data struct {
			AccessToken string `json:"access_token"`
			ExpiresAt   string `json:"expires_at"`
		} `json:"data"`
		Errors []string `json:"errors"`
	}
	derr := json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 3:
		r.errText = fmt.Sprintf("%d redirect to %s", resp.StatusCode, resp.Header.Get("Location"))
	case resp.StatusCode != http.StatusOK:
		r.errText = fmt.Sprintf("%d %s", resp.StatusCode, strings.Join(body.Errors, "; "))
	case derr != nil || body.Data.AccessToken == "":
		r.errText = fmt.Sprintf("200 without an access token (%v)", derr)
	default:
		r.ok, r.token = true, body.Data.AccessToken
		r.expires, _ = time.Parse(time.RFC3339, body.Data.ExpiresAt)
	}
	return r
}

func (rec *readRecorder) snapshot() []readResult {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := slices.Clone(rec.reads)
	slices.SortFunc(out, func(a, b readResult) int { return a.at.Compare(b.at) })
	return out
}

// tokens are the distinct access tokens returned for name, in the order first seen.
func (rec *readRecorder) tokens(name string) []string {
	var out []string
	for _, r := range rec.snapshot() {
		if r.name == name && r.ok && !slices.Contains(out, r.token) {
			out = append(out, r.token)
		}
	}
	return out
}

// last is the latest successful read of name.
func (rec *readRecorder) last(name string) readResult {
	reads := rec.snapshot()
	for i := len(reads) - 1; i >= 0; i-- {
		if reads[i].name == name && reads[i].ok {
			return reads[i]
		}
	}
	return readResult{}
}

// successesAfter reports the readers (node, name) without n successful reads answered
// after t, each with its count and its latest error (nil: every reader has them).
func (rec *readRecorder) successesAfter(t time.Time, n int) error {
	count := map[string]int{}
	lastErr := map[string]string{}
	var readers []string
	for _, r := range rec.snapshot() {
		key := r.node + " " + r.name
		if !slices.Contains(readers, key) {
			readers = append(readers, key)
		}
		if r.at.After(t) {
			if r.ok {
				count[key]++
			} else {
				lastErr[key] = r.errText
			}
		}
	}
	if len(readers) == 0 {
		return errors.New("no reads yet")
	}
	var errs []error
	for _, k := range readers {
		if count[k] < n {
			errs = append(errs, fmt.Errorf("%s: %d successful reads, want %d; latest error %q", k, count[k], n, lastErr[k]))
		}
	}
	return errors.Join(errs...)
}
