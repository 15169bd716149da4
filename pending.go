package apaleo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// pending.go is the domain and storage of pending authorizations: the entry
// authorize/<name> writes under a hash of its state, for callback or exchange to consume
// once, and the two indexes that bound them (one live per name, at most maxPending per
// mount) and let expired ones be removed from a listing alone.

// pendingAuthorization is the storage entry pending/<sha256(state)>: one authorize/<name>
// waiting for its callback. It is stored, not kept in memory, so a callback that lands
// after a restart or on another node still finds it; only a hash of state names it.
// Entries stored before account_code and replace existed read as neither: the
// authorization must then yield the account an existing credential holds.
type pendingAuthorization struct {
	Name        string    `json:"name"`
	Config      string    `json:"config"`
	Verifier    string    `json:"verifier,omitempty"`
	Scopes      []string  `json:"scopes"`
	RedirectURI string    `json:"redirect_uri"`
	ExpiresAt   time.Time `json:"expires_at"`
	// AccountCode, when set, is the only apaleo account the authorization may yield.
	AccountCode string `json:"account_code,omitempty"`
	// Replace allows the authorization to replace an existing credential of another account.
	Replace bool `json:"replace,omitempty"`
	// Superseded: a newer authorize/<name> replaced this one. Kept (without its verifier)
	// until it expires, so that its link says why it no longer works.
	Superseded bool `json:"superseded,omitempty"`

	// exchange, once taken: its code exchange under way, which a delete of the credential ends.
	exchange *exchangeTicket
}

// Storage of the indexes: pending-expiry/<expiry, unix ns, 19 digits>-<hash>[-<name>], one
// per pending entry (with the name while it is live, without once superseded), so the
// cleanup and the mount's count read only a listing; pending-name/<name>, the name's
// live one.
const (
	pendingExpiryPrefix = "pending-expiry/"
	pendingNamePrefix   = "pending-name/"
)

// maxPending is the most live pending authorizations a mount holds.
const maxPending = 10_000

// pendingOfName is the storage entry pending-name/<name>: the name's live pending
// authorization.
type pendingOfName struct {
	Hash      string    `json:"hash"`
	ExpiresAt time.Time `json:"expires_at"`
}

func pendingHash(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

func pendingKey(state string) string { return pendingPrefix + pendingHash(state) }

// expiryKey is the index key of pending entry hash; name is empty for a superseded one.
func expiryKey(hash string, expires time.Time, name string) string {
	k := fmt.Sprintf("%s%019d-%s", pendingExpiryPrefix, expires.UnixNano(), hash)
	if name != "" {
		k += "-" + name
	}
	return k
}

// parseExpiryKey reads an index key (without its prefix) back.
func parseExpiryKey(k string) (expires time.Time, hash, name string, ok bool) {
	if len(k) < 19+1+64 || k[19] != '-' {
		return time.Time{}, "", "", false
	}
	ns, err := strconv.ParseInt(k[:19], 10, 64)
	if err != nil {
		return time.Time{}, "", "", false
	}
	hash, name = k[20:20+64], strings.TrimPrefix(k[20+64:], "-")
	return time.Unix(0, ns), hash, name, true
}

// pendingCount is the mount's number of live pending authorizations, in memory: counted
// from the index's listing when first needed (after a start or a failover) and at every
// cleanup, kept between them by the writes of this node.
type pendingCount struct {
	mu    sync.Mutex
	n     int
	known bool
	limit int // maxPending; tests lower it
}

// exchangesUnderway are the code exchanges on the wire, by credential name: a delete of
// creds/<name> ends them, so that one answered after the delete stores nothing.
type exchangesUnderway struct {
	mu sync.Mutex
	m  map[string]map[*exchangeTicket]bool
}

type exchangeTicket struct{ over atomic.Bool }

// ended reports whether a delete of the credential ended the exchange.
func (t *exchangeTicket) ended() bool { return t != nil && t.over.Load() }

func (x *exchangesUnderway) begin(name string) *exchangeTicket {
	t := &exchangeTicket{}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = map[string]map[*exchangeTicket]bool{}
	}
	if x.m[name] == nil {
		x.m[name] = map[*exchangeTicket]bool{}
	}
	x.m[name][t] = true
	return t
}

func (x *exchangesUnderway) done(name string, t *exchangeTicket) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if delete(x.m[name], t); len(x.m[name]) == 0 {
		delete(x.m, name)
	}
}

// end marks every exchange under way for name as ended.
func (x *exchangesUnderway) end(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for t := range x.m[name] {
		t.over.Store(true)
	}
}

// lockPendingName locks the pending authorizations of name and returns its unlock.
func (b *backend) lockPendingName(name string) func() {
	l := b.locksFor(pendingNamePrefix + name)[0]
	l.Lock()
	return l.Unlock
}

// countPending counts the live pending authorizations from the index's listing, with no
// read of an entry.
func (b *backend) countPending(ctx context.Context, s logical.Storage) (int, error) {
	keys, err := s.List(ctx, pendingExpiryPrefix)
	if err != nil {
		return 0, err
	}
	now, n := b.now(), 0
	for _, k := range keys {
		if exp, _, name, ok := parseExpiryKey(k); ok && name != "" && now.Before(exp) {
			n++
		}
	}
	return n, nil
}

// reservePending takes one of the mount's slots for a new live pending authorization, or
// answers 429 when all are taken.
func (b *backend) reservePending(ctx context.Context, s logical.Storage) error {
	c := &b.pendingCount
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		n, err := b.countPending(ctx, s)
		if err != nil {
			return err
		}
		c.n, c.known = n, true
	}
	if limit := cmpOr(c.limit, maxPending); c.n >= limit {
		return logical.CodedError(http.StatusTooManyRequests, fmt.Sprintf(
			"the mount holds %d pending authorizations, its most: complete or let some expire (each lasts %v), or start no more until then", c.n, pendingTTL))
	}
	c.n++
	return nil
}

// releasePending gives a slot back: a live pending authorization was consumed or ended.
func (b *backend) releasePending() {
	c := &b.pendingCount
	c.mu.Lock()
	if c.n > 0 {
		c.n--
	}
	c.mu.Unlock()
}

func cmpOr(v, fallback int) int {
	if v > 0 {
		return v
	}
	return fallback
}

// putPending stores p under hash as name's one live pending authorization: an earlier
// live one of the name is superseded (first, so that a failure here leaves no two live),
// else the mount's bound is checked.
func (b *backend) putPending(ctx context.Context, s logical.Storage, hash string, p *pendingAuthorization) error {
	defer b.lockPendingName(p.Name)()
	old, err := readEntry[pendingOfName](ctx, s, pendingNamePrefix+p.Name)
	if err != nil {
		return err
	}
	superseding := old != nil && b.now().Before(old.ExpiresAt)
	if superseding {
		err = b.supersede(ctx, s, p.Name, old)
	} else {
		err = b.reservePending(ctx, s)
	}
	if err != nil {
		return err
	}
	// A failed write gives its slot back; a superseding one took none (the old one's
	// slot is gone with it, which the next cleanup's count settles).
	if err = b.writePending(ctx, s, hash, p); err != nil && !superseding {
		b.releasePending()
	}
	return err
}

// writePending writes the index first, so that the cleanup finds every entry written.
func (b *backend) writePending(ctx context.Context, s logical.Storage, hash string, p *pendingAuthorization) error {
	if err := s.Put(ctx, &logical.StorageEntry{Key: expiryKey(hash, p.ExpiresAt, p.Name)}); err != nil {
		return err
	}
	if err := writeJSON(ctx, s, pendingPrefix+hash, p); err != nil {
		return err
	}
	return writeJSON(ctx, s, pendingNamePrefix+p.Name, &pendingOfName{Hash: hash, ExpiresAt: p.ExpiresAt})
}

// supersede turns name's live pending authorization old into a superseded one: its link
// then says a newer authorization replaced it. Under name's pending lock.
func (b *backend) supersede(ctx context.Context, s logical.Storage, name string, old *pendingOfName) error {
	gone := &pendingAuthorization{Name: name, ExpiresAt: old.ExpiresAt, Superseded: true}
	if err := s.Put(ctx, &logical.StorageEntry{Key: expiryKey(old.Hash, old.ExpiresAt, "")}); err != nil {
		return err
	}
	if err := writeJSON(ctx, s, pendingPrefix+old.Hash, gone); err != nil {
		return err
	}
	return s.Delete(ctx, expiryKey(old.Hash, old.ExpiresAt, name))
}

// dropLivePending deletes the live pending authorization hash of name and its indexes.
// Under name's pending lock.
func (b *backend) dropLivePending(ctx context.Context, s logical.Storage, name, hash string, expires time.Time) error {
	for _, k := range []string{pendingPrefix + hash, pendingNamePrefix + name, expiryKey(hash, expires, name)} {
		if err := s.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// endPending ends name's pending authorization, and marks its exchanges under way ended:
// creds/<name> is being deleted. Under the name's creds/ lock.
func (b *backend) endPending(ctx context.Context, s logical.Storage, name string) error {
	b.exchanges.end(name)
	defer b.lockPendingName(name)()
	live, err := readEntry[pendingOfName](ctx, s, pendingNamePrefix+name)
	if err != nil || live == nil {
		return err
	}
	if err := b.dropLivePending(ctx, s, name, live.Hash, live.ExpiresAt); err != nil {
		return err
	}
	b.releasePending()
	b.Logger().Info("pending authorization ended by the delete of its credential", "name", name)
	return nil
}

// cleanPending deletes expired pending authorizations from the index's listing, reading
// no entry, and counts the live ones again.
func (b *backend) cleanPending(ctx context.Context, s logical.Storage) error {
	if err := b.migratePending(ctx, s); err != nil {
		return err
	}
	keys, err := s.List(ctx, pendingExpiryPrefix)
	if err != nil {
		return err
	}
	now := b.now()
	for _, k := range keys {
		exp, hash, name, ok := parseExpiryKey(k)
		if !ok || now.Before(exp) {
			continue
		}
		if err := b.cleanExpired(ctx, s, k, hash, name); err != nil {
			return err
		}
	}
	c := &b.pendingCount
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := b.countPending(ctx, s)
	c.n, c.known = n, err == nil
	return err
}

func (b *backend) cleanExpired(ctx context.Context, s logical.Storage, key, hash, name string) error {
	if name == "" {
		if err := s.Delete(ctx, pendingPrefix+hash); err != nil {
			return err
		}
		return s.Delete(ctx, pendingExpiryPrefix+key)
	}
	defer b.lockPendingName(name)()
	for _, k := range []string{pendingPrefix + hash, pendingNamePrefix + name, pendingExpiryPrefix + key} {
		if err := s.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// migratePending indexes, once per start, pending entries that earlier versions stored
// without an index: each is read once, deleted if expired, else indexed as superseded
// (it still works once, but neither counts nor is replaced by a newer authorization).
func (b *backend) migratePending(ctx context.Context, s logical.Storage) error {
	if b.pendingMigrated.Load() {
		return nil
	}
	entries, err := s.List(ctx, pendingPrefix)
	if err != nil {
		return err
	}
	index, err := s.List(ctx, pendingExpiryPrefix)
	if err != nil {
		return err
	}
	indexed := make(map[string]bool, len(index))
	for _, k := range index {
		if _, hash, _, ok := parseExpiryKey(k); ok {
			indexed[hash] = true
		}
	}
	for _, hash := range entries {
		if indexed[hash] {
			continue
		}
		p, err := readEntry[pendingAuthorization](ctx, s, pendingPrefix+hash)
		switch {
		case err != nil:
			return err
		case p == nil:
		case !b.now().Before(p.ExpiresAt):
			err = s.Delete(ctx, pendingPrefix+hash)
		default:
			err = s.Put(ctx, &logical.StorageEntry{Key: expiryKey(hash, p.ExpiresAt, "")})
		}
		if err != nil {
			return err
		}
	}
	b.pendingMigrated.Store(true)
	return nil
}
