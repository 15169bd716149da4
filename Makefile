# vault-plugin-secrets-apaleo: the targets (`make help` prints this list)
#
#   make build          plugin binary at bin/vault-plugin-secrets-apaleo, reporting a development
#                       version v0.0.0-dev+<commit>[-dirty] (VERSION=vX.Y.Z sets another)
#   make demo           Vault dev server + dev identity server + the plugin, handing out a token
#   make demo-stop      stop the demo
#   make test           lint, unit tests, the simulator's short run, fuzzing, the alert rules,
#                       then the end-to-end suite against a real Vault (and headless Chromium)
#   make lint           gofmt, go vet (with the e2e tag too) and staticcheck (pinned in tools/)
#   make test-unit      unit tests with -race and the plugin package's coverage (COVERAGE_MIN)
#   make sim-short      300 simulator schedules (SIM_SHORT); make sim: 2,000 (SIM_N, SIM_FIRST)
#   make sim-fleet      10,000 hotels of one app through a 2-hour outage, in the simulator
#   make fuzz           a short coverage-guided run of each fuzz target (FUZZTIME)
#   make alert-rules    docs/prometheus-alerts.yml against Prometheus's rule parser and the
#                       plugin's metrics (tools/promrules)
#   make test-e2e       the end-to-end suite alone (E2E_PARALLEL at a time)
#   make dev-identity   bin/apaleo-dev-identity, the dev identity server
#   make vault          build/vault, the Vault pinned in tools/vault (VAULT_BIN names another)
#   make chromium       install Debian's Chromium for the browser test, where it can
#   make release VERSION=vX.Y.Z   reproducible release zips and SHA256SUMS in dist/, built
#                                 from the commit RELEASES records for vX.Y.Z
#   make golden         regenerate testdata/golden/<GOLDEN_VERSION>/ with that release's own code
#   make bench          benchmarks against a real Vault (docs/benchmarks.md); bench-go: the Go
#                       benchmarks; bench-profile: CPU and memory profiles of the plugin
#   make fmt, vet       gofmt -w; go vet
#   make clean          remove bin/, dist/ and the build's small files (not the Vault build)
#   make help           this list

SHELL       := /bin/bash
# Without VERSION= a build is a development build of the checked-out commit, never a
# release's number: registering it must not overwrite a released version in Vault's
# catalog. -dirty when tracked files differ from the commit.
ifeq ($(origin VERSION),undefined)
VERSION     := v0.0.0-dev+$(or $(shell git rev-parse --short HEAD 2>/dev/null),nogit)$(if $(shell git status --porcelain --untracked-files=no 2>/dev/null | head -c1),-dirty)
endif
PLUGIN      := vault-plugin-secrets-apaleo
MODULE      := github.com/apaleo-vault/vault-plugin-secrets-apaleo
GO          ?= go
LDFLAGS     := -s -w -X $(MODULE).Version=$(VERSION)
BUILD_DIR   := build
DIST        ?= dist
# A prebuilt Vault may be handed in (make demo VAULT_BIN=/path/to/vault): only the
# default path has a rule that builds it. Recipes hand it on as an absolute VAULT_BIN,
# the one name the scripts and the end-to-end tests read.
VAULT_BIN   ?= $(BUILD_DIR)/vault
VAULT_ENV   := VAULT_BIN='$(abspath $(VAULT_BIN))'
GO_SOURCES  := $(shell find . -name '*.go' -not -path './tools/*' -not -path './$(BUILD_DIR)/*')

.PHONY: all build dev-identity vault chromium test test-unit test-e2e fuzz alert-rules lint demo demo-stop release golden bench fmt vet clean sim sim-short sim-replay sim-fleet mutants help FORCE

all: build

build: bin/$(PLUGIN)

# The binary depends on the version it reports: a build for another VERSION rebuilds.
bin/$(PLUGIN): $(GO_SOURCES) go.mod go.sum $(BUILD_DIR)/plugin-version
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$(PLUGIN)

# Rewritten only when VERSION differs from the last build's, so its time says when the
# version last changed. It names the version bin/ reports: scripts/demo.sh, bench/run.sh
# and the end-to-end tests register the plugin under it.
$(BUILD_DIR)/plugin-version: FORCE
	@mkdir -p $(BUILD_DIR)
	@if [ "$$(cat $@ 2>/dev/null)" != '$(VERSION)' ]; then echo '$(VERSION)' >$@; fi

dev-identity: bin/apaleo-dev-identity

bin/apaleo-dev-identity: $(GO_SOURCES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/apaleo-dev-identity

# The Vault server and CLI, built once from its Go module (tools/vault pins the version)
# and rebuilt only when that pin changes. A cold build takes minutes; a warm one seconds.
vault: $(VAULT_BIN)

$(BUILD_DIR)/vault: tools/vault/go.mod tools/vault/go.sum tools/vault/main.go
	@mkdir -p $(BUILD_DIR)
	cd tools/vault && CGO_ENABLED=0 $(GO) build -tags minimal -trimpath -ldflags '-s -w' -o ../../$(BUILD_DIR)/vault .
	@./$(BUILD_DIR)/vault version

# Debian's Chromium, for the browser test (e2e/browser_test.go), installed when missing,
# like the Vault build. Where it cannot be (not root, no apt-get) one line says so: the
# test then fails, unless E2E_SKIP_BROWSER=1 opts out of it (never under CI=true).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM_BIN := $(CHROMIUM)

chromium:
	@if [ ! -x '$(CHROMIUM)' ] && [ "$$E2E_SKIP_BROWSER" != 1 ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium (apt-get)"; \
			export DEBIAN_FRONTEND=noninteractive; \
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || { echo "make chromium: apt-get install chromium failed"; exit 1; }; \
		else \
			echo "make chromium: no Chromium at $(CHROMIUM) and no way to install it here (needs root and apt-get: apt-get install chromium); the browser test will fail (E2E_SKIP_BROWSER=1 skips it)"; \
		fi; \
	fi

FUZZ_TARGETS := FuzzConfigWrite FuzzCallback FuzzExchange
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report
# "context deadline exceeded" at the deadline with no failing input (go.dev/issue/75804,
# fixed in Go 1.27). 20,000 inputs is about what 20 s ran on this machine.
FUZZTIME     ?= 20000x

test: lint test-unit sim-short fuzz alert-rules test-e2e

# The coverage printed and held is the plugin package's (the root package), the one the
# unit tests are for; the other packages' lines are filtered out of the profile. Below
# COVERAGE_MIN percent the target fails, so coverage lost by a change is seen in review.
COVERAGE_MIN ?= 89

test-unit:
	@mkdir -p $(BUILD_DIR)
	FAULT_MATRIX=all $(GO) test -race -count=1 -coverprofile=$(BUILD_DIR)/cover.all.out ./...
	@grep -E '^(mode:|$(MODULE)/[^/]+:)' $(BUILD_DIR)/cover.all.out >$(BUILD_DIR)/cover.out
	@pct=$$($(GO) tool cover -func=$(BUILD_DIR)/cover.out | tail -1 | awk '{print $$NF}'); \
	echo "coverage of the plugin package ($(MODULE)): $$pct (at least $(COVERAGE_MIN)% required)"; \
	awk -v p="$${pct%\%}" -v min='$(COVERAGE_MIN)' 'BEGIN { exit !(p + 0 >= min + 0) }' || \
		{ echo "coverage $$pct is below $(COVERAGE_MIN)%: add tests for what the change left untested" >&2; exit 1; }

# staticcheck is pinned in tools/staticcheck/go.mod and built once into build/, like Vault.
STATICCHECK := $(BUILD_DIR)/staticcheck

lint: $(STATICCHECK)
	@out=$$(gofmt -l $(GO_SOURCES) tools); if [ -n "$$out" ]; then echo "gofmt -l: not formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./e2e/

$(STATICCHECK): tools/staticcheck/go.mod tools/staticcheck/go.sum
	@mkdir -p $(BUILD_DIR)
	cd tools/staticcheck && $(GO) build -trimpath -o ../../$(STATICCHECK) honnef.co/go/tools/cmd/staticcheck

# A short coverage-guided run of each fuzz target; `go test` alone replays the committed
# seed corpus in testdata/fuzz.
fuzz:
	@for f in $(FUZZ_TARGETS); do \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x . || exit 1; \
	done

# The alert rules shipped beside the dashboard, parsed by Prometheus's own rule parser and
# held to the metrics and label values the plugin's source defines. tools/promrules is a
# module of its own, so the plugin's go.mod never takes Prometheus's dependency tree.
alert-rules:
	cd tools/promrules && $(GO) test -count=1 .

# The comment block at the top of this file.
help:
	@sed -n '3,/^$$/{s/^# \{0,1\}//;p;}' Makefile

# Every end-to-end test starts its own Vault and identity servers on free ports and
# mostly waits on the clock, so they run side by side, E2E_PARALLEL at a time.
E2E_PARALLEL ?= 8

test-e2e: build dev-identity vault chromium
	$(VAULT_ENV) $(GO) test -count=1 -tags e2e -timeout 30m -parallel $(E2E_PARALLEL) -v ./e2e/ 2>&1 | tee $(BUILD_DIR)/e2e.log | grep -E '^\s*(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} -eq 0

demo: build dev-identity vault
	@$(VAULT_ENV) VERSION='$(VERSION)' scripts/demo.sh start

demo-stop:
	@$(VAULT_ENV) scripts/demo.sh stop

# Reproducible: two runs for one commit give byte-identical zips (scripts/release). A
# version vX.Y.Z is built from the commit RELEASES records for it (and needs a section in
# CHANGELOG.md); a pre-release vX.Y.Z-xyz is built from HEAD. Never the working tree.
release:
ifeq ($(origin VERSION),file)
	$(error make release needs a version: make release VERSION=vX.Y.Z)
endif
	$(GO) run ./scripts/release -version '$(VERSION)' -out '$(DIST)' $(if $(RELEASE_PLATFORMS),-platforms '$(RELEASE_PLATFORMS)')

# The golden storage entries of a released version, written by that version's own code
# (testdata/golden/README.md); the end-to-end TestGoldenGenerator checks they match.
GOLDEN_VERSION ?= v0.1.0

golden:
	testdata/golden/generate/generate.sh '$(GOLDEN_VERSION)'

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/

clean:
	rm -rf bin $(DIST) $(BUILD_DIR)/e2e.log $(BUILD_DIR)/plugin-version $(BUILD_DIR)/cover.out $(BUILD_DIR)/cover.all.out

# make bench, bench-go, bench-profile: docs/benchmarks.md
include bench.mk

# The deterministic simulation of apaleo and its consumers (sim_test.go): SIM_N schedules
# from seed SIM_FIRST on, split over two processes (each runs its schedules one at a time
# on one P, so that a seed replays exactly: go test -run 'TestSim$$' -seed=N -v).
SIM_N     ?= 2000
SIM_FIRST ?= 1

sim:
	@mkdir -p $(BUILD_DIR)
	$(GO) test -c -o $(BUILD_DIR)/sim.test .
	@half=$$(( $(SIM_N) / 2 )); start=$$(date +%s); \
	$(BUILD_DIR)/sim.test -test.run '^TestSim$$' -sim.n=$$half -sim.first=$(SIM_FIRST) $(SIM_ARGS) & one=$$!; \
	$(BUILD_DIR)/sim.test -test.run '^TestSim$$' -sim.n=$$(( $(SIM_N) - half )) -sim.first=$$(( $(SIM_FIRST) + half )) $(SIM_ARGS) & two=$$!; \
	wait $$one; a=$$?; wait $$two; b=$$?; \
	echo "make sim: $(SIM_N) schedules from seed $(SIM_FIRST) in $$(( $$(date +%s) - start )) s"; \
	test $$a -eq 0 -a $$b -eq 0

# Fleet recovery in the simulator: 10,000 hotels of one app, apaleo down for 2 hours;
# the figures and docs/img/sim-fleet-recovery.png go into docs/benchmarks.md. A few
# minutes on 2 cores.
# make test's share of the simulator: SIM_SHORT schedules after the unit tests' 20 (and
# the seeds that once failed), about 15 s on 2 cores.
SIM_SHORT ?= 300

sim-short:
	@$(MAKE) --no-print-directory sim SIM_N=$(SIM_SHORT) SIM_FIRST=21

# Exact replay: SIM_N schedules from SIM_FIRST, each run twice in one process; any two
# traces that differ fail, with the first record they part at.
sim-replay:
	@$(MAKE) --no-print-directory sim SIM_ARGS=-sim.twice

sim-fleet:
	$(GO) test -count=1 -run '^TestSimFleetRecovery$$' -timeout 30m -v -sim.fleet=10000 -sim.fleet.plot=$(abspath docs/img/sim-fleet-recovery.png) .
