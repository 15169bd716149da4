package apaleo

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/license"
	"github.com/hashicorp/vault/sdk/helper/pluginutil"
	"github.com/hashicorp/vault/sdk/helper/wrapping"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"
)

// TestHotPath_CachedReadAsksVaultNothing: a cached creds/ read costs the floor of any
// external plugin, the request itself. Each SystemView call is a gRPC round trip from
// the plugin process to Vault's core and each storage call another; 10,000 cached reads
// make none, on the active node and on a performance standby after the read of each
// token it forwards.
func TestHotPath_CachedReadAsksVaultNothing(t *testing.T) {
	const reads = 10_000
	for _, tc := range []struct {
		name string
		repl consts.ReplicationState
	}{
		{"active", 0},
		{"performance standby", consts.ReplicationPerformanceStandby},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngineEnv(t)
			e.simpleConfig("hotel-muc", nil)
			e.connectConfig("connect", nil)
			e.authorized("hotel-ber", "connect", "rt-0")
			for _, n := range []string{"hotel-muc", "hotel-ber"} { // tokens cached by the active node
				e.mustDo(logical.ReadOperation, "creds/"+n, nil)
			}
			sys := &countingSystemView{inner: &logical.StaticSystemView{ReplicationStateVal: tc.repl}}
			e.b = e.newBackend(sys)
			storage := &benchStorage{Storage: e.storage}
			read := func(name string) (*logical.Response, error) {
				return e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "creds/" + name, Storage: storage})
			}
			for _, n := range []string{"hotel-muc", "hotel-ber"} { // warm this node's memory
				if _, err := read(n); err != nil && !errors.Is(err, logical.ErrReadOnly) {
					t.Fatalf("first read of %s: %v", n, err)
				}
				if resp, err := read(n); err != nil || resp.IsError() {
					t.Fatalf("second read of %s: %v %v", n, err, respErr(resp))
				}
			}
			requests := e.idp.total()
			sys.calls.Store(0)
			before := storage.calls()
			for i := range reads {
				resp, err := read([]string{"hotel-muc", "hotel-ber"}[i%2])
				if err != nil || resp.IsError() || resp.Data["access_token"] == "" {
					t.Fatalf("cached read %d: %v %v", i, err, respErr(resp))
				}
			}
			if n := sys.calls.Load(); n != 0 {
				t.Errorf("%d cached reads made %d SystemView calls (gRPC round trips to Vault's core), want 0", reads, n)
			}
			if n := storage.calls() - before; n != 0 {
				t.Errorf("%d cached reads made %d storage calls, want 0", reads, n)
			}
			if n := e.idp.total() - requests; n != 0 {
				t.Errorf("%d cached reads sent %d token requests, want 0", reads, n)
			}
		})
	}
}

// TestHotPath_WritableLearnedAgain: what Setup learned holds until Vault sets the mount
// up again; Initialize, which Vault runs where the node became active, learns it anew.
func TestHotPath_WritableLearnedAgain(t *testing.T) {
	e := newEngineEnv(t)
	sys := &countingSystemView{inner: &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}}
	b := e.newBackend(sys)
	if b.canWrite() {
		t.Fatal("a performance standby may write")
	}
	sys.inner.ReplicationStateVal = 0 // promoted
	if b.canWrite() {
		t.Fatal("canWrite asked Vault again before Initialize")
	}
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	if !b.canWrite() {
		t.Fatal("Initialize did not learn that the node may write")
	}
}

// countingSystemView counts every SystemView call. It implements each method itself
// rather than embedding the interface, so a method the SDK adds fails to compile here
// instead of going uncounted.
type countingSystemView struct {
	inner *logical.StaticSystemView
	calls atomic.Int64
}

func (s *countingSystemView) count() *logical.StaticSystemView { s.calls.Add(1); return s.inner }

func (s *countingSystemView) DefaultLeaseTTL() time.Duration { return s.count().DefaultLeaseTTL() }
func (s *countingSystemView) MaxLeaseTTL() time.Duration     { return s.count().MaxLeaseTTL() }
func (s *countingSystemView) Tainted() bool                  { return s.count().Tainted() }
func (s *countingSystemView) CachingDisabled() bool          { return s.count().CachingDisabled() }
func (s *countingSystemView) LocalMount() bool               { return s.count().LocalMount() }
func (s *countingSystemView) ReplicationState() consts.ReplicationState {
	return s.count().ReplicationState()
}
func (s *countingSystemView) HasFeature(f license.Features) bool { return s.count().HasFeature(f) }
func (s *countingSystemView) ResponseWrapData(ctx context.Context, d map[string]any, ttl time.Duration, jwt bool) (*wrapping.ResponseWrapInfo, error) {
	return s.count().ResponseWrapData(ctx, d, ttl, jwt)
}
func (s *countingSystemView) LookupPlugin(ctx context.Context, n string, t consts.PluginType) (*pluginutil.PluginRunner, error) {
	return s.count().LookupPlugin(ctx, n, t)
}
func (s *countingSystemView) LookupPluginVersion(ctx context.Context, n string, t consts.PluginType, v string) (*pluginutil.PluginRunner, error) {
	return s.count().LookupPluginVersion(ctx, n, t, v)
}
func (s *countingSystemView) ListVersionedPlugins(ctx context.Context, t consts.PluginType) ([]pluginutil.VersionedPlugin, error) {
	return s.count().ListVersionedPlugins(ctx, t)
}
func (s *countingSystemView) NewPluginClient(ctx context.Context, c pluginutil.PluginClientConfig) (pluginutil.PluginClient, error) {
	return s.count().NewPluginClient(ctx, c)
}
func (s *countingSystemView) MlockEnabled() bool { return s.count().MlockEnabled() }
func (s *countingSystemView) EntityInfo(id string) (*logical.Entity, error) {
	return s.count().EntityInfo(id)
}
func (s *countingSystemView) GroupsForEntity(id string) ([]*logical.Group, error) {
	return s.count().GroupsForEntity(id)
}
func (s *countingSystemView) PluginEnv(ctx context.Context) (*logical.PluginEnvironment, error) {
	return s.count().PluginEnv(ctx)
}
func (s *countingSystemView) VaultVersion(ctx context.Context) (string, error) {
	return s.count().VaultVersion(ctx)
}
func (s *countingSystemView) GeneratePasswordFromPolicy(ctx context.Context, p string) (string, error) {
	return s.count().GeneratePasswordFromPolicy(ctx, p)
}
func (s *countingSystemView) ClusterID(ctx context.Context) (string, error) {
	return s.count().ClusterID(ctx)
}
func (s *countingSystemView) GenerateIdentityToken(ctx context.Context, r *pluginutil.IdentityTokenRequest) (*pluginutil.IdentityTokenResponse, error) {
	return s.count().GenerateIdentityToken(ctx, r)
}
func (s *countingSystemView) GetRotationInformation(ctx context.Context, r *rotation.RotationInfoRequest) (*rotation.RotationInfoResponse, error) {
	return s.count().GetRotationInformation(ctx, r)
}
func (s *countingSystemView) RegisterRotationJob(ctx context.Context, r *rotation.RotationJobConfigureRequest) (string, error) {
	return s.count().RegisterRotationJob(ctx, r)
}
func (s *countingSystemView) RegisterRotationJobWithResponse(ctx context.Context, r *rotation.RotationJobConfigureRequest) (*rotation.RotationInfo, error) {
	return s.count().RegisterRotationJobWithResponse(ctx, r)
}
func (s *countingSystemView) DeregisterRotationJob(ctx context.Context, r *rotation.RotationJobDeregisterRequest) error {
	return s.count().DeregisterRotationJob(ctx, r)
}
func (s *countingSystemView) GetConsumptionBillingManager() logical.ConsumptionBillingManager {
	return s.count().GetConsumptionBillingManager()
}
func (s *countingSystemView) DownloadExtractVerifyPlugin(ctx context.Context, p *pluginutil.PluginRunner) error {
	return s.count().DownloadExtractVerifyPlugin(ctx, p)
}
