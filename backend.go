// Package apaleo is a HashiCorp Vault secrets engine that holds apaleo OAuth 2.0 app
// credentials and hands out short-lived access tokens: client credentials for apaleo
// "simple clients", and refresh-token credentials authorized through the authorization
// code flow for "connect clients".
package apaleo

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"
)

// Version is the plugin's version, set at build time with
// -ldflags "-X github.com/apaleo-vault/vault-plugin-secrets-apaleo.Version=v1.2.3".
var Version = "v0.0.0-dev"

type backend struct {
	*framework.Backend

	// storage is the mount's storage, for background work (refresh-ahead).
	storage logical.Storage

	locks keyedLocks
	// flights makes the reads and refresh-ahead of one credential share one token request.
	flights singleflight.Group

	// In-memory copies of storage entries so a cache hit needs no storage round trip and
	// no exclusive lock (store.go). Invalidate (replicated writes on standbys) and local
	// writes keep them coherent; epoch guards against caching an entry read before a
	// concurrent write.
	configs *entryCache[apaleoConfig]
	creds   *entryCache[credential]
	epoch   atomic.Uint64

	// What the engine knows of each credential in memory only (store.go).
	statesMu sync.RWMutex
	states   map[string]*nameState

	refresher *scheduler
	budgets   budgets
	// inflight counts token requests under way, for Clean to wait for;
	// backgroundRunning the background work under way (the request and its aftermath).
	inflight          flightCount
	backgroundRunning atomic.Int64
	// swept is when periodic last planned the keep-alive of every authorized credential.
	swept time.Time
	// upgrade binds credentials stored before bindings were (authorization.go).
	upgrade bindPass

	// Pending authorizations (pending.go): the mount's count of live ones, the code
	// exchanges on the wire, and whether entries of earlier versions were indexed.
	pendingCount    pendingCount
	exchanges       exchangesUnderway
	pendingMigrated atomic.Bool

	transports transportPool

	// learned is the node's SystemView with what the node may do learned once (Setup,
	// Initialize) rather than asked per request.
	learned *learnedSystemView
	// standbyLeases: a lease of a read answered on a node that cannot write is
	// registered. Vault Enterprise's performance standbys hand it to the active node.
	// OpenBao's standbys serve reads too (with Raft storage, by default) and say they are
	// performance standbys, but cannot: OpenBao answers such a read 500 ("failed to
	// register lease") and does not forward it. The plugin knows OpenBao by the variable
	// its plugin runner sets in the plugin's environment, BAO_VERSION.
	standbyLeases bool

	metrics *metrics

	// Seams for tests.
	now            func() time.Time
	retry          retryPolicy
	refreshTimeout time.Duration
	newClient      func(clientSettings, func() time.Time) (identityServer, error)
	// waitUntil, when set, replaces sleeping until a moment of now's clock.
	waitUntil func(ctx context.Context, t time.Time) error
	// random draws in [0, n): every jitter and backoff (the simulator seeds it).
	random func(n int64) int64
}

// Factory returns a configured instance of the backend.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// Setup sets the framework backend up and keeps the mount's storage for background work.
// The framework and the engine see Vault's SystemView through learnedSystemView.
func (b *backend) Setup(ctx context.Context, conf *logical.BackendConfig) error {
	if conf.System != nil {
		b.learned = &learnedSystemView{SystemView: conf.System}
		b.learned.learn()
		c := *conf
		c.System = b.learned
		conf = &c
	}
	if err := b.Backend.Setup(ctx, conf); err != nil {
		return err
	}
	b.storage = conf.StorageView
	return nil
}

// initialize runs where Vault made this mount's node active (the primary's active node,
// a performance secondary's): what the node may do is learned again there.
func (b *backend) initialize(context.Context, *logical.InitializationRequest) error {
	if b.learned != nil {
		b.learned.learn()
	}
	return nil
}

// learnedSystemView answers what this node may do (its replication state, whether the
// mount is local) from what it learned, not by asking Vault: each question is a gRPC
// round trip from the plugin process to Vault's core, and the framework asks one on
// every request, canWrite two. They change only where Vault sets the mount up again (a
// standby promoted: Setup, then Initialize). Everything else goes to Vault.
type learnedSystemView struct {
	logical.SystemView
	repl  atomic.Uint32
	local atomic.Bool
}

func (v *learnedSystemView) learn() {
	v.repl.Store(uint32(v.SystemView.ReplicationState()))
	v.local.Store(v.SystemView.LocalMount())
}

func (v *learnedSystemView) ReplicationState() consts.ReplicationState {
	return consts.ReplicationState(v.repl.Load())
}

func (v *learnedSystemView) LocalMount() bool { return v.local.Load() }

func newBackend() *backend {
	b := &backend{
		states:         map[string]*nameState{},
		now:            time.Now,
		retry:          defaultRetryPolicy,
		refreshTimeout: refreshTimeout,
		metrics:        newMetrics(),
		random:         rand.Int64N,
		standbyLeases:  os.Getenv("BAO_VERSION") == "",
	}
	b.configs = newEntryCache[apaleoConfig](&b.epoch)
	b.creds = newEntryCache[credential](&b.epoch)
	b.refresher = newScheduler(b)
	b.metrics.credentialStates(b.credentialCounts, b.loadCredentials)
	b.newClient = func(s clientSettings, now func() time.Time) (identityServer, error) {
		return newIdentityClient(s, now, &b.transports)
	}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configPrefix, credsPrefix, pendingPrefix},
			Unauthenticated: []string{"callback"},
		},
		Paths: framework.PathAppend(
			pathConfig(b),
			pathNarrowed(b),
			pathCreds(b),
			pathAuthCode(b),
			pathMetrics(b),
		),
		Secrets:        []*framework.Secret{secretAccessToken(b)},
		Invalidate:     b.invalidate,
		InitializeFunc: b.initialize,
		PeriodicFunc:   b.periodic,
		Clean:          b.clean,
		RunningVersion: Version,
	}
	return b
}

// invalidate drops in-memory copies of entries another node changed.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case strings.HasPrefix(key, configPrefix):
		b.forgetConfig(strings.TrimPrefix(key, configPrefix))
	case strings.HasPrefix(key, credsPrefix):
		// Another node wrote or deleted the credential (a new authorization, say): what
		// this node knew of it (failures, reads, plans) no longer holds.
		name := strings.TrimPrefix(key, credsPrefix)
		b.forgetCred(name)
		b.dropState(name)
		b.refresher.forget(name)
	}
}

// periodic runs about once a minute, on nodes that may write storage only.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.canWrite() {
		return nil
	}
	b.saveUnsaved(ctx, req.Storage)
	if err := b.bindUnbound(ctx, req.Storage); err != nil {
		b.Logger().Warn("binding credentials stored by an earlier version to their app failed; retried at the next run", "error", err)
	}
	if now := b.now(); now.Sub(b.swept) >= sweepEvery {
		if err := b.planKeepAlives(ctx, req.Storage); err != nil {
			b.Logger().Warn("planning the keep-alive of authorized credentials failed", "error", err)
		} else {
			b.swept = now
		}
	}
	return b.cleanPending(ctx, req.Storage)
}

// sweepEvery is how often periodic plans the keep-alive of every authorized credential:
// at the first run (after a start or a failover) and now and then, for credentials whose
// plan a failure or a config write ended.
const sweepEvery = 10 * time.Minute

// cleanWait bounds how long Clean waits for token requests under way, whose answers
// (rotated refresh tokens above all) it would rather store than lose.
const cleanWait = 5 * time.Second

func (b *backend) clean(ctx context.Context) {
	b.refresher.shutdown()
	if !b.inflight.wait(cleanWait) {
		b.Logger().Warn("token requests still under way at shutdown; their answers may be lost", "waited", cleanWait)
	}
	if b.storage != nil && b.canWrite() {
		b.saveUnsaved(ctx, b.storage)
	}
	b.transports.closeIdle()
}

// flightCount counts token requests under way. Clean waits until none is, and returns
// the moment the last one ends (not at the next tick of a poll).
type flightCount struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; made when it leaves 0
}

func (c *flightCount) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		c.zero = make(chan struct{})
	}
	c.n++
}

func (c *flightCount) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		close(c.zero)
	}
}

// Load is how many are under way.
func (c *flightCount) Load() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.n)
}

// wait waits until none is under way, at most d; it reports whether none is.
func (c *flightCount) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		n, zero := c.n, c.zero
		c.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-zero: // and look again: another may have started since
		case <-timer.C:
			return false
		}
	}
}

// identity returns an identity-server client for a config's settings. It is made for each
// token request: connections are kept by the transports it shares with every config of
// the same trust roots (client.go), and a client kept per config cost about 500 bytes
// each, 5 MiB at 10,000 configs.
func (b *backend) identity(cfg *apaleoConfig) (identityServer, error) {
	return b.newClient(cfg.settings(), b.now)
}

// canWrite reports whether this node may write storage. Elsewhere (performance standbys
// and secondaries) a handler that must write answers logical.ErrReadOnly, and Vault
// forwards the request to the active node.
func (b *backend) canWrite() bool {
	if b.System() == nil {
		return true
	}
	return b.WriteSafeReplicationState()
}

const backendHelp = `
The apaleo secrets engine holds apaleo OAuth 2.0 app credentials and hands out
short-lived access tokens, cached until they near expiry.

Register an app with config/<name>. For apaleo "simple clients"
(grant_type=client_credentials), read tokens from creds/<name>. For "connect
clients" (grant_type=authorization_code), start authorize/<name>, let the hotel
account admin open the returned auth_url, and read creds/<name> afterwards.
Client secrets and refresh tokens never leave Vault.
`
