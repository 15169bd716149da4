package apaleo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// store.go is the engine's memory: typed storage helpers, the in-memory copies of
// storage entries, per-name locks, and what the engine knows of each credential that is
// not stored (when it was last read, its failure memory, a rotated refresh token that
// storage refused). Path handlers go through it and never juggle cache coherence.

// Storage prefixes: config/<name>, creds/<name>, pending/<sha256(state)>.
const (
	configPrefix  = "config/"
	credsPrefix   = "creds/"
	pendingPrefix = "pending/"
)

// entryCache holds in-memory copies of one kind of storage entry. Values are never
// mutated after they are cached: writers cache a new value.
type entryCache[T any] struct {
	mu    sync.RWMutex
	m     map[string]*T
	epoch *atomic.Uint64 // shared by all caches; moves on every change
}

func newEntryCache[T any](epoch *atomic.Uint64) *entryCache[T] {
	return &entryCache[T]{m: map[string]*T{}, epoch: epoch}
}

func (c *entryCache[T]) get(name string) (*T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[name]
	return v, ok
}

// each calls f with every entry in memory, on a snapshot taken under the lock.
func (c *entryCache[T]) each(f func(name string, v *T)) {
	type entry struct {
		name string
		v    *T
	}
	c.mu.RLock()
	snap := make([]entry, 0, len(c.m)) // a slice: a map copy of 20,000 entries was 1.3 MiB
	for name, v := range c.m {
		snap = append(snap, entry{name, v})
	}
	c.mu.RUnlock()
	for _, e := range snap {
		f(e.name, e.v)
	}
}

// set replaces (v != nil) or drops the copy of name. Every change moves the epoch, so a
// reader that loaded an entry from storage before the change does not cache its stale
// copy (see setIfUnchanged).
func (c *entryCache[T]) set(name string, v *T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch.Add(1)
	if v == nil {
		delete(c.m, name)
	} else {
		c.m[name] = v
	}
}

// setIfUnchanged caches an entry read from storage while the epoch was seen.
func (c *entryCache[T]) setIfUnchanged(seen uint64, name string, v *T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch.Load() == seen {
		c.m[name] = v
	}
}

// load returns name from memory, else from storage (caching it).
func (c *entryCache[T]) load(ctx context.Context, s logical.Storage, key, name string) (*T, error) {
	if v, ok := c.get(name); ok {
		return v, nil
	}
	seen := c.epoch.Load()
	v, err := readEntry[T](ctx, s, key+name)
	if err == nil && v != nil {
		c.setIfUnchanged(seen, name, v)
	}
	return v, err
}

func readEntry[T any](ctx context.Context, s logical.Storage, key string) (*T, error) {
	var v T
	ok, err := readJSON(ctx, s, key, &v)
	if !ok || err != nil {
		return nil, err
	}
	return &v, nil
}

func readJSON(ctx context.Context, s logical.Storage, key string, v any) (bool, error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return false, err
	}
	if err := entry.DecodeJSON(v); err != nil {
		return false, fmt.Errorf("decoding %s: %w", key, err)
	}
	return true, nil
}

func writeJSON(ctx context.Context, s logical.Storage, key string, v any) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

func readConfig(ctx context.Context, s logical.Storage, name string) (*apaleoConfig, error) {
	return readEntry[apaleoConfig](ctx, s, configPrefix+name)
}

func readCred(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	return readEntry[credential](ctx, s, credsPrefix+name)
}

// keyedLocks are locks per storage key, made when first wanted and dropped when no one
// holds or waits for them: a slow token request for one name never delays another.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

// keyedLock is a channel, not a sync.Mutex: a goroutine waiting for it is durably
// blocked, so the simulator's virtual clock (testing/synctest) moves on while a token
// request holds it.
type keyedLock struct {
	ch   chan struct{}
	refs int
}

// keyLocker locks one key of a keyedLocks.
type keyLocker struct {
	locks *keyedLocks
	key   string
	held  *keyedLock
}

func (l *keyLocker) Lock() {
	k := l.locks
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedLock{}
	}
	e := k.m[l.key]
	if e == nil {
		e = &keyedLock{ch: make(chan struct{}, 1)}
		k.m[l.key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.ch <- struct{}{}
	l.held = e
}

func (l *keyLocker) Unlock() {
	e := l.held
	l.held = nil
	<-e.ch
	k := l.locks
	k.mu.Lock()
	if e.refs--; e.refs == 0 {
		delete(k.m, l.key)
	}
	k.mu.Unlock()
}

// locksFor returns the locks of keys in a fixed order, each once, so that callers that
// lock several keys cannot deadlock each other. Names (creds/) come before configs: a
// name's lock may be held across its token request, so whoever waits for it holds no
// config lock meanwhile, and a config's lock is never held across a network call.
func (b *backend) locksFor(keys ...string) []sync.Locker {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(x, y string) int {
		if cx, cy := strings.HasPrefix(x, credsPrefix), strings.HasPrefix(y, credsPrefix); cx != cy {
			if cx {
				return -1
			}
			return 1
		}
		return strings.Compare(x, y)
	})
	keys = slices.Compact(keys)
	out := make([]sync.Locker, len(keys))
	for i, k := range keys {
		out[i] = &keyLocker{locks: &b.locks, key: k}
	}
	return out
}

// lockName locks creds/<name> and returns its unlock.
func (b *backend) lockName(name string) func() {
	l := b.locksFor(credsPrefix + name)[0]
	l.Lock()
	return l.Unlock
}

// Failure memory: after a failed token request, no read calls apaleo for that name until
// the next attempt is due.

type failureKind int

const (
	failBackoff        failureKind = iota // 5xx, network, timeouts: exponential backoff
	failRetryAfter                        // 429: the server's Retry-After
	failUntilConfig                       // refused client or scopes: until config/<name> is written
	failUntilAuthorize                    // refused refresh token: until authorize/<name>
	failOtherApp                          // the config names another app than the token's: never stored, asked each time
)

const (
	backoffBase = 5 * time.Second
	backoffMax  = 5 * time.Minute
)

// failure is what the engine remembers of a name's last failed token request.
type failure struct {
	config   string // of the credential: a write of it clears the failure
	err      error  // as a read answers it (a logical.CodedError)
	kind     failureKind
	at       time.Time
	next     time.Time // when a request may be sent again; zero for failUntil*
	attempts int       // consecutive failures
	// lost: how the answer to the last refresh was lost (upstreamError.lostWhat); apaleo
	// may have rotated the refresh token all the same, so the next refresh may be refused.
	lost string
}

// blocks reports whether the failure still forbids a token request at now.
func (f *failure) blocks(now time.Time) bool {
	switch f.kind {
	case failUntilConfig, failUntilAuthorize, failOtherApp:
		return true
	}
	return now.Before(f.next)
}

// nextAttemptText says when the next token request for name may go out.
func (f *failure) nextAttemptText(name string) string {
	switch f.kind {
	case failUntilConfig:
		return fmt.Sprintf("no new token request until config/%s is written again", f.config)
	case failUntilAuthorize:
		return fmt.Sprintf("no new token request until the credential is authorized again with authorize/%s", name)
	case failOtherApp:
		return fmt.Sprintf("no token request until config/%s names the app that issued the refresh token, or authorize/%s binds it to the new one", f.config, name)
	}
	return "next attempt at " + f.next.UTC().Format(time.RFC3339)
}

// answer is the error a read of name gets while the failure holds: what failed and when
// the next attempt may go out, with the status of what failed.
func (f *failure) answer(name string) error {
	return logical.CodedError(errStatus(f.err), fmt.Sprintf("%v; %s", f.err, f.nextAttemptText(name)))
}

// nameState is what the engine knows of one credential in memory only.
type nameState struct {
	lastRead     atomic.Int64 // unix nanos of the last read
	lastServed   atomic.Int64 // IssuedAt (unix nanos) of the last token a read was answered
	scheduledFor atomic.Int64 // IssuedAt (unix nanos) of the token refresh-ahead is planned for
	forwardedFor atomic.Int64 // on a standby: IssuedAt of the token whose first read went to the active node

	mu      sync.Mutex
	failure *failure
	// unsaved is a credential holding a rotated refresh token that storage refused: it
	// wins over the stored entry until a store of it succeeds.
	unsaved *credential
}

// state returns the in-memory state of name, made on first use.
func (b *backend) state(name string) *nameState {
	b.statesMu.RLock()
	st := b.states[name]
	b.statesMu.RUnlock()
	if st != nil {
		return st
	}
	b.statesMu.Lock()
	defer b.statesMu.Unlock()
	if st = b.states[name]; st == nil {
		st = &nameState{}
		b.states[name] = st
	}
	return st
}

// peekState returns the in-memory state of name, or nil.
func (b *backend) peekState(name string) *nameState {
	b.statesMu.RLock()
	defer b.statesMu.RUnlock()
	return b.states[name]
}

func (b *backend) dropState(name string) {
	b.statesMu.Lock()
	delete(b.states, name)
	b.statesMu.Unlock()
}

func (b *backend) failureOf(name string) *failure {
	st := b.peekState(name)
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.failure
}

func (b *backend) setFailure(name string, f *failure) {
	st := b.state(name)
	st.mu.Lock()
	st.failure = f
	st.mu.Unlock()
}

// clearFailures forgets what a write of config may have fixed in the failure memory of
// the names made from it: a refused client or scopes, and with new connection settings
// (another client, secret or server) the backoff too. A refused refresh token is the
// credential's own: only a new authorization or import ends it.
func (b *backend) clearFailures(config string, connectionChanged bool) {
	if bu := b.budgets.peek(config); bu != nil {
		bu.refuse(nil) // a refused client: the write may have fixed it
	}
	b.statesMu.RLock()
	defer b.statesMu.RUnlock()
	for _, st := range b.states {
		st.mu.Lock()
		// A refresh token whose answer was lost keeps its next attempt: it goes again
		// only then, whatever the write changed.
		if f := st.failure; f != nil && f.config == config &&
			(f.kind == failUntilConfig || connectionChanged && f.kind != failUntilAuthorize && f.lost == "") {
			st.failure = nil
		}
		st.mu.Unlock()
	}
}

// clearFailure forgets name's failure memory, if it has any, creating nothing.
func (b *backend) clearFailure(name string) {
	if st := b.peekState(name); st != nil {
		st.mu.Lock()
		st.failure = nil
		st.mu.Unlock()
	}
}

func (b *backend) unsavedOf(name string) *credential {
	st := b.peekState(name)
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.unsaved
}

func (b *backend) setUnsaved(name string, c *credential) {
	st := b.state(name)
	st.mu.Lock()
	st.unsaved = c
	st.mu.Unlock()
}

// Storage helpers over the caches.

// config returns config <name>, from memory when it can.
func (b *backend) config(ctx context.Context, s logical.Storage, name string) (*apaleoConfig, error) {
	return b.configs.load(ctx, s, configPrefix, name)
}

// cred returns creds/<name>, from memory when it can. A rotated refresh token that
// storage refused wins over the stored entry.
func (b *backend) cred(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	if u := b.unsavedOf(name); u != nil {
		return u, nil
	}
	return b.creds.load(ctx, s, credsPrefix, name)
}

func (b *backend) putConfig(ctx context.Context, s logical.Storage, name string, cfg *apaleoConfig) error {
	if err := writeJSON(ctx, s, configPrefix+name, cfg); err != nil {
		b.forgetConfig(name)
		return err
	}
	b.configs.set(name, cfg)
	return nil
}

// putCred stores creds/<name>. A successful store clears an unsaved rotated refresh
// token (c carries the newest one: callers build it from what cred returned). Failure
// memory is the callers' to clear: only they know what the write fixed.
func (b *backend) putCred(ctx context.Context, s logical.Storage, name string, c *credential) error {
	if err := writeJSON(ctx, s, credsPrefix+name, c); err != nil {
		b.creds.set(name, nil)
		return err
	}
	b.creds.set(name, c)
	if st := b.peekState(name); st != nil {
		st.mu.Lock()
		st.unsaved = nil
		st.mu.Unlock()
	}
	return nil
}

// deleteCred deletes creds/<name> and everything the engine knew of it.
func (b *backend) deleteCred(ctx context.Context, s logical.Storage, name string) error {
	defer b.forgetCred(name)
	defer b.dropState(name)
	defer b.refresher.forget(name)
	return s.Delete(ctx, credsPrefix+name)
}

func (b *backend) forgetConfig(name string) {
	b.configs.set(name, nil)
}

func (b *backend) forgetCred(name string) {
	b.creds.set(name, nil)
}

// credForUpdate reads creds/<name> for a change under its lock: the stored entry, unless
// memory holds an unsaved rotated refresh token, which is stored now if storage allows.
func (b *backend) credForUpdate(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	stored, err := readCred(ctx, s, name)
	mem := b.unsavedOf(name)
	if mem == nil {
		return stored, err
	}
	if err == nil && stored == nil {
		b.setUnsaved(name, nil)
		return nil, nil // deleted meanwhile
	}
	if err := b.putCred(ctx, s, name, mem); err != nil {
		return mem, nil
	}
	b.Logger().Info("rotated refresh token stored after an earlier failure", "name", name)
	return mem, nil
}

// saveUnsaved retries storing rotated refresh tokens that storage refused before.
func (b *backend) saveUnsaved(ctx context.Context, s logical.Storage) {
	b.statesMu.RLock()
	var names []string
	for n, st := range b.states {
		st.mu.Lock()
		if st.unsaved != nil {
			names = append(names, n)
		}
		st.mu.Unlock()
	}
	b.statesMu.RUnlock()
	for _, name := range names {
		unlock := b.lockName(name)
		_, _ = b.credForUpdate(ctx, s, name)
		unlock()
	}
}

// credsUsing lists the authorized and narrowed credentials made from config name (not
// a client-credentials config's own entry).
func (b *backend) credsUsing(ctx context.Context, s logical.Storage, config string) ([]string, error) {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, n := range names {
		c, err := b.cred(ctx, s, n)
		if err != nil {
			return nil, err
		}
		if c != nil && c.Config == config && c.Kind != kindClientCredentials {
			users = append(users, n)
		}
	}
	slices.Sort(users)
	return users, nil
}

// errStatus is the HTTP status of an error a read answers.
func errStatus(err error) int {
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) {
		return coded.Code()
	}
	return http.StatusInternalServerError
}
