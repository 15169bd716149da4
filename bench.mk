# bench.mk: performance benchmarks, included by the Makefile (docs/benchmarks.md).
#
#   make bench      Vault dev server + the plugin + a no-op floor plugin + KV v2, side by
#                   side: reads/s, p50/p99 and ratios at 1, 8 and 64 readers; cold reads;
#                   10,000 configs and 10,000 authorized credentials, scraped; the fleet
#                   (1,000 authorized credentials, short token lives: refresh_ahead on vs
#                   off vs cache hits, an outage) and its charts. Writes
#                   build/bench/results.md. About 15-18 minutes. BENCH_SCALE_ONLY=1: the
#                   10,000 alone (about 5 minutes).
#                   BENCH_FLEET_ONLY=1: the fleet alone (about 8 minutes); BENCH_FLEET=0:
#                   without it. Sizes: see bench/run.sh.
#   make bench-go   the Go benchmarks (go test -bench) of the read path, in process
#   make bench-profile  `make bench` with the plugin instrumented (pprof, counters)

BENCH_OUT       ?= $(BUILD_DIR)/bench
BENCH_BENCHTIME ?= 2000x

.PHONY: bench bench-go bench-tools bench-profile

# VAULT_BIN=/path/to/vault uses that binary; without it `make vault` builds build/vault.
bench: build dev-identity vault bench-tools
	$(VAULT_ENV) PLUGIN_VERSION='$(VERSION)' BENCH_OUT=$(abspath $(BENCH_OUT)) bench/run.sh

bench-tools: $(BENCH_OUT)/bin/load $(BENCH_OUT)/bin/floorplugin $(BENCH_OUT)/bin/charts

$(BENCH_OUT)/bin/load: $(GO_SOURCES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./bench/load

$(BENCH_OUT)/bin/charts: $(GO_SOURCES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./bench/charts

# Built like the plugin (see the Makefile's build rule), so the two compare fairly.
$(BENCH_OUT)/bin/floorplugin: $(GO_SOURCES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $@ ./bench/floorplugin

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCH_BENCHTIME) .

# The same run with bench/profplugin (the plugin instrumented with pprof and counters of
# its round trips to Vault) in place of the release binary: build/bench/profile.md and
# build/bench/profiles/*.pprof.
bench-profile: build dev-identity vault bench-tools $(BENCH_OUT)/bin/profplugin
	$(VAULT_ENV) BENCH_PROFILE=1 PLUGIN_VERSION='$(VERSION)' BENCH_OUT=$(abspath $(BENCH_OUT)) bench/run.sh

$(BENCH_OUT)/bin/profplugin: $(GO_SOURCES) go.mod go.sum $(BUILD_DIR)/plugin-version
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X $(MODULE).Version=$(VERSION)' -o $@ ./bench/profplugin
