// Command profplugin is vault-plugin-secrets-apaleo instrumented for `make bench-profile`:
// the same backend (apaleo.Factory), served the same way, plus
//
//   - net/http/pprof and expvar on $BENCH_PPROF_ADDR (a 127.0.0.1 address; nothing
//     without it), so the plugin can be profiled while Vault runs it;
//   - expvar "apaleo_bench": per request class ("read creds", ...) the count and the
//     time spent in the plugin's HandleRequest and, within it, the count and time of its
//     storage calls ("read creds: storage get"); and the count and time of all
//     ReplicationState calls: the round trips back to Vault.
//
// It is a benchmark tool, never a release binary.
package main

import (
	"context"
	"expvar"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"

	apaleo "github.com/apaleo-vault/vault-plugin-secrets-apaleo"
	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/memlimit"
)

var stats = expvar.NewMap("apaleo_bench")

func record(key string, start time.Time) {
	stats.Add(key+" count", 1)
	stats.Add(key+" ns", int64(time.Since(start)))
}

func main() {
	memlimit.Start() // as the release binary does
	logger := hclog.New(&hclog.LoggerOptions{})
	if addr := os.Getenv("BENCH_PPROF_ADDR"); addr != "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" {
			logger.Error("BENCH_PPROF_ADDR must be 127.0.0.1:PORT", "addr", addr)
			os.Exit(1)
		}
		go func() {
			srv := &http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second}
			logger.Error("pprof server stopped", "error", srv.ListenAndServe())
		}()
	}
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{BackendFactoryFunc: factory}); err != nil {
		logger.Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}

func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	if conf.System != nil {
		conf.System = timedSystem{conf.System}
	}
	b, err := apaleo.Factory(ctx, conf)
	if err != nil {
		return nil, err
	}
	return timedBackend{b}, nil
}

type timedBackend struct{ logical.Backend }

func (t timedBackend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	class := string(req.Operation) + " " + strings.SplitN(req.Path, "/", 2)[0]
	defer record(class, time.Now())
	if req.Storage != nil {
		req.Storage = timedStorage{req.Storage, class}
	}
	return t.Backend.HandleRequest(ctx, req)
}

// timedStorage records storage calls under the request class that made them.
type timedStorage struct {
	logical.Storage
	class string
}

func (s timedStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	defer record(s.class+": storage get", time.Now())
	return s.Storage.Get(ctx, key)
}

func (s timedStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	defer record(s.class+": storage put", time.Now())
	return s.Storage.Put(ctx, e)
}

func (s timedStorage) List(ctx context.Context, prefix string) ([]string, error) {
	defer record(s.class+": storage list", time.Now())
	return s.Storage.List(ctx, prefix)
}

func (s timedStorage) Delete(ctx context.Context, key string) error {
	defer record(s.class+": storage delete", time.Now())
	return s.Storage.Delete(ctx, key)
}

type timedSystem struct{ logical.SystemView }

func (s timedSystem) ReplicationState() consts.ReplicationState {
	defer record("system replication_state", time.Now())
	return s.SystemView.ReplicationState()
}

// PluginVersion keeps the plugin's RunningVersion visible through the wrapper.
func (t timedBackend) PluginVersion() logical.PluginVersion {
	if v, ok := t.Backend.(logical.PluginVersioner); ok {
		return v.PluginVersion()
	}
	return logical.EmptyPluginVersion
}
