package apaleo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// sim_vault_test.go is the simulator's faults of Vault's own (issue 33), beside apaleo's
// (sim_idp_test.go): storage behind logical.Storage that fails or stalls, a plugin restart
// while a refresh is on the wire, a lost answer followed by a connection-changing config
// write, config writes that repoint identity_url or client_id to another app, and token
// answers the plugin must refuse or cap. Its invariants are checked at the readers against
// the server's own record of every access token it issued: each token served was issued
// as Bearer, is served before the server's expiry of it, and says a lifetime no longer
// than the 24 h cap.
//
// The events come from a rng of their own (drawVaultFaults), so that a seed's apps,
// readers and earlier events stay what they were.

// simVault is what the server side of these faults keeps (simIDP.vault, under simIDP.mu).
type simVault struct {
	issued map[string]simIssued  // every access token the server answered, by value
	odd    map[string]simOdd     // token answers to make odd, by app
	forced map[string][]simFault // the faults the next sends of a credential's refresh token meet
	wire   chan int              // armed restart-wire: told the node whose refresh is on the wire
	dead   map[int]bool          // nodes a restart ended: they send nothing, and get no answer

	// storage faults (simVaultStorage)
	storageUntil time.Time
	storageMode  string    // fail or stall
	lastFault    time.Time // when the last faulted storage operation ended
}

// simIssued is the server's record of one access token.
type simIssued struct {
	tokenType string
	issued    time.Time
	expires   time.Time
}

type simOdd struct {
	until time.Time
	form  string // type (token_type not Bearer), zero (expires_in <= 0), long (over 24 h)
}

// drawVaultFaults draws this file's events into sc.
func drawVaultFaults(sc *simSchedule, r *rand.Rand) {
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	at := func() time.Duration { return between(time.Hour, sc.duration-time.Hour) }
	days := sc.duration.Hours() / 24
	var add []simEvent
	if r.IntN(2) == 0 {
		for range 1 + int(days/2) {
			add = append(add, simEvent{at: at(), kind: "storage", dur: between(time.Minute, 20*time.Minute),
				form: []string{"fail", "stall"}[r.IntN(2)]})
		}
	}
	if r.IntN(3) == 0 {
		for range 1 + r.IntN(2) {
			// Over by the schedule's end, where apaleo heals (finish).
			e := simEvent{at: at(), kind: "odd-answers", app: sc.apps[r.IntN(len(sc.apps))].name,
				dur: between(10*time.Minute, 3*time.Hour), form: []string{"type", "zero", "long"}[r.IntN(3)]}
			e.dur = min(e.dur, sc.duration-e.at)
			add = append(add, e)
		}
	}
	if r.IntN(4) == 0 {
		add = append(add, simEvent{at: at(), kind: "restart-wire"})
	}
	authorized := sc.authorized()
	if len(authorized) > 0 && r.IntN(4) == 0 {
		c := authorized[r.IntN(len(authorized))]
		add = append(add, simEvent{at: at(), kind: "lost-write", app: c.app, cred: c.name})
	}
	if r.IntN(4) == 0 {
		// Another app for a while: at another identity server (identity_url) or another
		// client at the same one. Nothing else of the app's happens meanwhile (its
		// secret, its 429 holds, a new authorization are the other app's then).
		e := simEvent{at: at(), kind: "repoint", app: sc.apps[r.IntN(len(sc.apps))].name,
			dur: between(5*time.Minute, 40*time.Minute), form: []string{"url", "client"}[r.IntN(2)]}
		clash := false
		for _, o := range append(sc.events, add...) {
			near := o.at >= e.at-4*time.Hour && o.at <= e.at+e.dur+5*time.Minute
			clash = clash || near && (o.app == e.app || o.kind == "reauthorize" || o.kind == "lost-write")
		}
		if !clash {
			add = append(add, e, simEvent{at: e.at + e.dur, kind: "repoint-back", app: e.app, form: e.form})
		}
	}
	sc.events = append(sc.events, add...)
}

// vs is the server's simVault, its maps made (under s.mu).
func (s *simIDP) vs() *simVault {
	v := &s.vault
	if v.issued == nil {
		v.issued, v.odd, v.forced, v.dead = map[string]simIssued{}, map[string]simOdd{}, map[string][]simFault{}, map[int]bool{}
	}
	return v
}

// simSecondIdentity is the host of the second identity server a config may be repointed
// to; its apps are the server's under "host/client_id".
const simSecondIdentity = "identity2.sim"

// appKey is the server's name for the app a request's client is at.
func (s *simIDP) appKey(req *http.Request, id string) string {
	if req.URL.Host == simSecondIdentity {
		return simSecondIdentity + "/" + id
	}
	return id
}

// vaultFault is what befalls a token request of node besides f (faultFor's): a dead node
// reaches nothing, a forced fault, and an armed restart-wire fires on a refresh that
// apaleo will answer (under s.mu).
func (s *simIDP) vaultFault(node int, app *simApp, rt *simRefresh, f simFault) simFault {
	v := s.vs()
	if v.dead[node] {
		return faultRefused
	}
	if rt == nil {
		return f
	}
	if q := v.forced[rt.cred]; len(q) > 0 {
		v.forced[rt.cred] = q[1:]
		s.addTrouble(app.id, simFaultNames[q[0]], time.Now(), time.Now())
		return q[0]
	}
	if v.wire != nil && f == faultNone {
		// The restart comes between this send and its answer: the node is gone when the
		// answer would reach it.
		v.wire <- node
		v.wire = nil
		v.dead[node] = true
	}
	return f
}

// lostToRestart: the answer a reaches a node a restart ended; nothing of it arrives (a
// spend is lost to the plugin).
func (s *simIDP) lostToRestart(node int, a simAnswer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.vs().dead[node] {
		return false
	}
	if a.spends != nil {
		a.spends.lost = true
	}
	if a.rt != nil && a.rt.outstanding.Equal(a.deliverAt) {
		a.rt.outstanding = time.Now()
	}
	return true
}

// vaultAnswer makes a token answer odd where the schedule says so, and records the access
// token it carries as the server issued it (under s.mu).
func (s *simIDP) vaultAnswer(app *simApp, rt *simRefresh, a simAnswer, now time.Time) simAnswer {
	if a.status != http.StatusOK || !strings.Contains(a.body, `"access_token"`) {
		return a
	}
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(a.body))
	d.UseNumber()
	if d.Decode(&m) != nil {
		return a
	}
	v := s.vs()
	if o, ok := v.odd[app.id]; ok && now.Before(o.until) && s.rng.IntN(3) == 0 {
		switch o.form {
		case "type":
			m["token_type"] = []string{"mac", "pop", "N_A"}[s.rng.IntN(3)]
		case "zero":
			m["expires_in"] = []int{0, 0, -60}[s.rng.IntN(3)]
		case "long":
			m["expires_in"] = int((25*time.Hour + time.Duration(s.rng.IntN(30*24))*time.Hour) / time.Second)
		}
		b, _ := json.Marshal(m)
		a.body = string(b)
		s.addTrouble(app.id, "odd-"+o.form, now, now)
		if rt != nil {
			s.failed[rt.cred] = now
		}
	}
	at, _ := m["access_token"].(string)
	typ, _ := m["token_type"].(string)
	var secs int64
	switch n := m["expires_in"].(type) {
	case json.Number:
		secs, _ = n.Int64()
	case int:
		secs = int64(n)
	}
	v.issued[at] = simIssued{tokenType: typ, issued: now, expires: now.Add(time.Duration(secs) * time.Second)}
	return a
}

// checkServed checks a token a read of name was answered against the server's record of
// it: issued by the server as Bearer, not expired by the server's clock when served, and
// its expires_at no later than the server's and within the 24 h cap of its issue. It
// returns when the server issued a token apaleo said lives longer than the cap (the
// reader's cadence would take it for one of the app's lifetime), else zero.
func (w *simWorld) checkServed(name string, resp *logical.Response, expires time.Time) time.Time {
	at, _ := resp.Data["access_token"].(string)
	now := time.Now()
	s := w.idp
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.vs().issued[at]
	// TestSim's worlds (on simVaultStorage) hold only tokens the server issued; the fleet's
	// (sim_fleet_test.go) start with tokens written to storage.
	_, everyToken := w.store.(simVaultStorage)
	switch {
	case !ok && everyToken:
		s.violate("creds/%s: a read was answered an access token the server never issued", name)
	case !ok:
	case !strings.EqualFold(rec.tokenType, "bearer"):
		s.violate("creds/%s: a read was answered an access token apaleo answered as token_type %q", name, rec.tokenType)
	case !now.Before(rec.expires):
		s.violate("creds/%s: a read was answered an access token %s after apaleo's expiry of it (issued %s, expires_in %s)",
			name, now.Sub(rec.expires).Round(time.Millisecond), rec.issued.Sub(w.start).Round(time.Second), rec.expires.Sub(rec.issued))
	case expires.After(rec.expires.Add(time.Second)):
		s.violate("creds/%s: a read said the token expires %s after apaleo's expiry of it", name, expires.Sub(rec.expires))
	case expires.Sub(rec.issued) > maxTokenLifetime+time.Second:
		s.violate("creds/%s: a read said the token lives %s, over the cap of %s (apaleo said %s)",
			name, expires.Sub(rec.issued).Round(time.Second), maxTokenLifetime, rec.expires.Sub(rec.issued))
	}
	if ok && rec.expires.Sub(rec.issued) > maxTokenLifetime {
		return rec.issued
	}
	return time.Time{}
}

// applyVault carries out one of this file's events; false: not one of them.
func (w *simWorld) applyVault(e simEvent) bool {
	now := time.Now()
	s := w.idp
	switch e.kind {
	case "storage":
		s.mu.Lock()
		v := s.vs()
		v.storageUntil, v.storageMode = now.Add(e.dur), e.form
		for _, a := range w.sc.apps {
			s.addTrouble(a.name, "storage-"+e.form, now, now.Add(e.dur+time.Minute))
		}
		s.mu.Unlock()
	case "odd-answers":
		s.mu.Lock()
		s.vs().odd[e.app] = simOdd{until: now.Add(e.dur), form: e.form}
		s.addTrouble(e.app, "odd-"+e.form, now, now.Add(e.dur))
		s.mu.Unlock()
	case "restart-wire":
		w.restartOnWire()
	case "lost-write":
		w.lostThenWrite(e)
	case "repoint", "repoint-back":
		w.repoint(e)
	default:
		return false
	}
	return true
}

// restartOnWire restarts the plugin between a refresh's send and its answer: the answer
// never reaches a plugin (apaleo may have spent the refresh token).
func (w *simWorld) restartOnWire() {
	w.vaultQuiesce()
	s := w.idp
	ch := make(chan int, 1)
	s.mu.Lock()
	s.vs().wire = ch
	s.mu.Unlock()
	select {
	case <-ch:
	case <-w.after(50 * time.Minute):
		s.mu.Lock()
		armed := s.vault.wire != nil
		s.vault.wire = nil
		s.mu.Unlock()
		if armed {
			return // no refresh went out meanwhile
		}
	}
	w.apply(simEvent{kind: "restart"})
}

// lostThenWrite: the answers to two sends of a credential's refresh token are lost (the
// connection died: apaleo may or may not have spent it), a connection-changing config
// write follows at once (the app's secret rotated), then a read: it must not send the
// token a third time before failure memory's next attempt.
func (w *simWorld) lostThenWrite(e simEvent) {
	s := w.idp
	now := time.Now()
	s.mu.Lock()
	s.vs().forced[e.cred] = []simFault{faultDropFirst, faultDropFirst, faultDropFirst}
	s.addTrouble(e.app, "lost-write", now, now.Add(time.Minute))
	s.mu.Unlock()
	rng := rand.New(rand.NewPCG(w.sc.seed, 0x1057))
	if w.apply(simEvent{kind: "scopes", app: e.app}); w.failed() {
		return // the write dropped the tokens: the read sends
	}
	w.read(e.cred, rng)
	if w.apply(simEvent{kind: "rotate", app: e.app}); w.failed() {
		return
	}
	w.read(e.cred, rng)
	s.mu.Lock()
	delete(s.vault.forced, e.cred)
	s.mu.Unlock()
}

// repoint writes e.app's config to name another app (repoint) or its own again
// (repoint-back): at the second identity server (form url), or another client at the
// same one (form client), with the same secrets.
func (w *simWorld) repoint(e simEvent) {
	s := w.idp
	a := w.sc.app(e.app)
	key, data := a.name+"-b", map[string]any{"client_id": a.name + "-b"}
	if e.form == "url" {
		key, data = simSecondIdentity+"/"+a.name, map[string]any{"identity_url": "https://" + simSecondIdentity}
	}
	if e.kind == "repoint-back" {
		data = map[string]any{"client_id": a.name, "identity_url": "https://identity.sim"}
	}
	data["client_secret"] = fmt.Sprintf("secret-%s-%d", a.name, w.secrets[a.name])
	now := time.Now()
	s.mu.Lock()
	if s.apps[key] == nil {
		own := s.apps[a.name]
		s.apps[key] = &simApp{id: key, secrets: own.secrets, limit: own.limit, budget: own.budget, lifetime: own.lifetime}
	}
	s.mu.Unlock()
	w.mu.Lock()
	w.dropped[a.name] = append(w.dropped[a.name], now)
	w.mu.Unlock()
	w.must(logical.UpdateOperation, "config/"+a.name, data)
	s.configWritten(a.name)
	s.configWritten(key)
}

// vaultQuiesce ends storage faults before a restart and waits until what they left
// unsaved in memory is stored (two periodic passes after the last one ended): a restart
// that loses a rotated refresh token storage refused is the loss the plugin warns of,
// not a bug.
func (w *simWorld) vaultQuiesce() {
	s := w.idp
	now := time.Now()
	s.mu.Lock()
	v := s.vs()
	if v.storageUntil.After(now) {
		v.storageUntil = now
	}
	until := v.lastFault.Add(150 * time.Second)
	s.mu.Unlock()
	if until.After(now) {
		<-w.after(until.Sub(now))
	}
}

// simOperatorKey marks an operator's request: storage faults spare it (a failed operator
// step would end the schedule).
type simOperatorKey struct{}

func simOperator(ctx context.Context) context.Context {
	return context.WithValue(ctx, simOperatorKey{}, true)
}

// simVaultStorage is Vault's storage as the plugin sees it, with the schedule's faults:
// in a storage span, a get or put fails now and then (a put before or after it was
// written), or stalls for seconds of virtual time (a timer: it always ends). What befalls
// an operation depends on the seed, the operation, its key and its moment: replays match.
type simVaultStorage struct {
	logical.Storage
	w *simWorld
}

var errSimStorage = errors.New("simulated storage failure")

// fault decides what befalls op on key now: an error (before or after the write), or a
// stall to wait first.
func (st simVaultStorage) fault(ctx context.Context, op, key string) (stall time.Duration, after bool, err error) {
	if ctx.Value(simOperatorKey{}) != nil {
		return 0, false, nil
	}
	s := st.w.idp
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vs()
	if !now.Before(v.storageUntil) {
		return 0, false, nil
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s|%s|%d", s.seed, op, key, now.UnixNano())
	x := h.Sum64()
	if x%10 >= 4 {
		return 0, false, nil
	}
	v.lastFault = now
	if v.storageMode == "stall" {
		stall = time.Duration(1+x/10%30) * time.Second
		v.lastFault = now.Add(stall)
		return stall, false, nil
	}
	return 0, x/10%2 == 0, fmt.Errorf("%s %s: %w", op, key, errSimStorage)
}

func (st simVaultStorage) wait(d time.Duration) {
	if d > 0 {
		<-st.w.after(d)
	}
}

func (st simVaultStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	stall, _, err := st.fault(ctx, "get", key)
	st.wait(stall)
	if err != nil {
		return nil, err
	}
	return st.Storage.Get(ctx, key)
}

func (st simVaultStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	stall, after, err := st.fault(ctx, "put", e.Key)
	st.wait(stall)
	if err != nil && !after {
		return err
	}
	if perr := st.Storage.Put(ctx, e); perr != nil {
		return perr
	}
	return err
}
