package apaleo

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// flakyStorage refuses writes under creds/ while failPuts is set.
type flakyStorage struct {
	logical.Storage
	failPuts atomic.Bool
}

func (f *flakyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if f.failPuts.Load() && strings.HasPrefix(e.Key, credsPrefix) {
		return errors.New("storage unavailable (injected)")
	}
	return f.Storage.Put(ctx, e)
}

// TestRotation_StorageWriteFails: a refresh succeeds and rotates, then storing fails.
// The rotated refresh token is held in memory, served, and stored at the next chance;
// the old one is never used again.
// Against the fake identity server, which refuses a spent refresh token.
func TestRotation_StorageWriteFails(t *testing.T) {
	e := newEngineEnv(t)
	flaky := &flakyStorage{Storage: e.storage}
	e.storage = flaky
	e.b = e.newBackend(nil)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")
	stored, _ := readCred(t.Context(), flaky.Storage, "hotel-ber")

	e.clock.Add(50 * time.Minute)
	flaky.failPuts.Store(true)
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "run authorize/hotel-ber again") {
		t.Fatalf("warnings %v", resp.Warnings)
	}
	if got, _ := readCred(t.Context(), flaky.Storage, "hotel-ber"); got.RefreshToken != stored.RefreshToken {
		t.Fatal("storage changed although writes fail")
	}

	// The next refresh, once storage works again, stores the held token first and then
	// refreshes with it: no invalid_grant.
	e.clock.Add(50 * time.Minute)
	flaky.failPuts.Store(false)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if refreshes, refused := e.idp.count("refresh_token"), e.idp.invalidGrants(); refreshes != 2 || refused != 0 {
		t.Fatalf("refreshes %d, invalid_grant %d", refreshes, refused)
	}
	if got, _ := readCred(t.Context(), flaky.Storage, "hotel-ber"); got.RefreshToken == stored.RefreshToken {
		t.Fatal("the rotated refresh token never reached storage")
	}

	// The periodic pass stores a held token too, without a read.
	e.clock.Add(50 * time.Minute)
	flaky.failPuts.Store(true)
	e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	held := e.b.unsavedOf("hotel-ber")
	flaky.failPuts.Store(false)
	if err := e.b.periodic(t.Context(), &logical.Request{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	if got, _ := readCred(t.Context(), flaky.Storage, "hotel-ber"); held == nil || got.RefreshToken != held.RefreshToken {
		t.Fatal("the periodic pass did not store the held refresh token")
	}
}

// TestRotation_Stress: 200 concurrent readers across 100 forced rotations: every
// rotation is one refresh request and no reader ever sees invalid_grant. Against the
// fake identity server, which rotates and refuses a spent refresh token.
func TestRotation_Stress(t *testing.T) {
	const readers, rotations = 200, 100
	e := newEngineEnv(t)
	e.connectConfig("connect", nil)
	e.authorized("hotel-ber", "connect", "rt-0")

	var failures atomic.Int64
	for range rotations {
		e.clock.Add(50 * time.Minute) // the cached token no longer qualifies
		var wg sync.WaitGroup
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
					Operation: logical.ReadOperation, Path: "creds/hotel-ber", Storage: e.storage})
				if err != nil || resp == nil || resp.IsError() || len(resp.Warnings) > 0 {
					failures.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	refreshes, refused := e.idp.count("refresh_token"), e.idp.invalidGrants()
	t.Logf("%d readers x %d rotations: %d refresh requests, %d invalid_grant, %d failed reads",
		readers, rotations, refreshes, refused, failures.Load())
	if refreshes != rotations || refused != 0 || failures.Load() != 0 {
		t.Fatalf("refreshes %d (want %d), invalid_grant %d, failed reads %d",
			refreshes, rotations, refused, failures.Load())
	}
}

// scopelessRefresh wraps an identity client; its refreshes answer without "scope".
type scopelessRefresh struct{ identityServer }

func (s scopelessRefresh) Refresh(ctx context.Context, rt string, p retryPolicy) (*tokenResult, error) {
	res, err := s.identityServer.Refresh(ctx, rt, p)
	if res != nil {
		res.Scopes = nil
	}
	return res, err
}

// TestRotation_RefreshWithoutScope: a refresh answer that does not say what was granted
// keeps the consented scopes.
func TestRotation_RefreshWithoutScope(t *testing.T) {
	e := newTestEnv(t)
	real := e.b.newClient
	e.b.newClient = func(s clientSettings, now func() time.Time) (identityServer, error) {
		srv, err := real(s, now)
		return scopelessRefresh{srv}, err
	}
	e.writeConnectConfig("connect", nil)
	e.callback(e.authorize("hotel-ber", "connect"))
	e.clock.Add(50 * time.Minute)
	resp := e.mustDo(logical.ReadOperation, "creds/hotel-ber", nil)
	if e.idp.Stats().ByGrant["refresh_token"] != 1 {
		t.Fatal("no refresh")
	}
	if got := strings.Join(resp.Data["scopes"].([]string), " "); got != "reservations.read setup.read offline_access" {
		t.Fatalf("scopes after a scopeless refresh: %q", got)
	}
}
