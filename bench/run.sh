#!/usr/bin/env bash
# bench/run.sh: the `make bench` run (see bench.mk and docs/benchmarks.md).
#
# Starts the dev identity server and a Vault dev server (own HOME, free loopback port,
# plugin directory with copied binaries), registers the apaleo plugin and the no-op floor
# plugin with their sha256, and measures with bench/load:
#   1. read throughput of apaleo/creds/hotel-muc, floor/creds/hotel-muc and a KV v2 secret
#      of the same shape, alternating in rounds, at 1, 8 and 64 concurrent readers;
#   2. cold reads through Vault against the identity server's own time;
#   3. 10,000 configs: write, list (plain and with key_info, as `vault list -detailed`),
#      read cold and warm; 10,000 authorized credentials imported and read; the metrics
#      scraped; and the plugin process's RSS;
#   4. the fleet: 1,000 authorized credentials under one authorization_code config with
#      short token lives (a second identity server), refresh_ahead on vs off vs a pure
#      cache-hit run, then an outage of the identity server under 64 readers; the
#      plugin's metrics scraped every second and drawn as charts (bench/charts).
# It writes build/bench/results.md (and JSON beside it), prints it, and stops everything
# it started.
#
# Environment (defaults in brackets):
#   VAULT_BIN          vault binary [build/vault]
#   BENCH_OUT          output directory [build/bench]
#   BENCH_READERS      reader levels [1,8,64]
#   BENCH_ROUNDS       rounds per level [10]
#   BENCH_ROUND_TIME   one target's turn in a round [1.5s]
#   BENCH_COLD_N       cold reads [200]
#   BENCH_SCALE_N      configs of the scale run [10000]; 0 skips it
#   BENCH_SCALE_CA     1: every scale config carries ca_certificate [0]
#   BENCH_SCALE_SETTLE measure the plugin process again this long after the reads [0: no]
#   BENCH_SCALE_AUTHORIZED authorized credentials imported and read in the scale run
#                      [BENCH_SCALE_N]; BENCH_SCALE_ONLY=1 runs only the scale run
#   BENCH_FLEET        1: run the fleet (4.) [1; 0 with BENCH_PROFILE=1]; BENCH_FLEET_ONLY=1
#                      runs only the fleet
#   BENCH_FLEET_N      authorized credentials [1000]
#   BENCH_FLEET_TTL    token lifetime at the fleet's identity server [30s]
#   BENCH_FLEET_LIFETIMES  token lifetimes measured per mode [5]
#   BENCH_FLEET_READERS    concurrent readers [32]
#   BENCH_FLEET_DELAY  delay of every token request at the identity server [200ms]
#   BENCH_FLEET_BASELINE   length of the cache-hit run [30s]
#   BENCH_OUTAGE       outage length, 500 to every token request [60s]; 0 skips it
#   BENCH_OUTAGE_CREDS credentials read during the outage (by 64 readers) [100]
#   BENCH_CHARTS_DIR   where bench/charts writes the fleet's PNGs [$BENCH_OUT/charts]
#   BENCH_KEEP         1: keep the run directory (logs) [0]
#   BENCH_PROFILE      1: run bench/profplugin (the plugin with pprof and counters) instead
#                      of the release binary; write profile.md and profiles/ instead [0]
#   BENCH_PLUGIN_ENV   more environment for the plugin process, K=V separated by spaces
#                      (e.g. GOGC=100, GOMEMLIMIT=96MiB) [none]
#   BENCH_BASELINE_PLUGIN  a second build of the plugin (an earlier commit's bin/) mounted at
#                      apaleo-base with the same config, read as a fourth throughput target
#                      (`base`), so before and after are measured side by side [none]
#   PLUGIN_VERSION     version the plugin was built with [build/plugin-version, which
#                      make build writes]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAULT=${VAULT_BIN:-$ROOT/build/vault}
OUT=${BENCH_OUT:-$ROOT/build/bench}
PLUGIN_BIN=$ROOT/bin/vault-plugin-secrets-apaleo
IDP_BIN=$ROOT/bin/apaleo-dev-identity
LOAD=$OUT/bin/load
CHARTS=$OUT/bin/charts
FLOOR_BIN=$OUT/bin/floorplugin
PROFILE=${BENCH_PROFILE:-0}
RESULTS=$OUT/results.md
JSON_DIR=$OUT
if [[ $PROFILE == 1 ]]; then
	PLUGIN_BIN=$OUT/bin/profplugin
	RESULTS=$OUT/profile.md
	PROF_DIR=$OUT/profiles
	JSON_DIR=$PROF_DIR
	rm -rf "$PROF_DIR" && mkdir -p "$PROF_DIR"
fi
READERS=${BENCH_READERS:-1,8,64}
ROUNDS=${BENCH_ROUNDS:-10}
ROUND_TIME=${BENCH_ROUND_TIME:-1.5s}
COLD_N=${BENCH_COLD_N:-200}
SCALE_N=${BENCH_SCALE_N:-10000}
SCALE_AUTHORIZED=${BENCH_SCALE_AUTHORIZED:-$SCALE_N}
SCALE_ONLY=${BENCH_SCALE_ONLY:-0}
# The fleet is left out of profile runs unless asked for.
if [[ $PROFILE == 1 ]]; then FLEET=${BENCH_FLEET:-0}; else FLEET=${BENCH_FLEET:-1}; fi
FLEET_ONLY=${BENCH_FLEET_ONLY:-0}
[[ $FLEET_ONLY == 1 ]] && FLEET=1
[[ $SCALE_ONLY == 1 ]] && FLEET=0
FLEET_TTL=${BENCH_FLEET_TTL:-30s}
OUTAGE=${BENCH_OUTAGE:-60s}
CHARTS_DIR=${BENCH_CHARTS_DIR:-$OUT/charts}
PLUGIN_VERSION=${PLUGIN_VERSION:-$(cat "$ROOT/build/plugin-version" 2>/dev/null || true)}
[[ -n $PLUGIN_VERSION ]] || { echo "bench: no PLUGIN_VERSION and no build/plugin-version: run 'make bench'" >&2; exit 1; }

for f in "$VAULT" "$PLUGIN_BIN" "$IDP_BIN" "$LOAD" "$FLOOR_BIN" "$CHARTS"; do
	[[ -x $f ]] || { echo "bench: $f missing: run 'make bench'" >&2; exit 1; }
done

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/run.XXXXXX")
mkdir -p "$WORK/home" "$WORK/plugins" "$WORK/idp"
CLIENT_ID=bench-muc
CLIENT_SECRET=bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

IDP_PID= VAULT_PID= FLEET_IDP_PID=
log() { echo "bench: $*" >&2; }

# stop PID NAME: SIGTERM, up to 15 s, then SIGKILL.
stop() {
	local pid=$1 name=$2
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	log "$name ($pid) did not stop within 15 s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	stop "$VAULT_PID" vault
	# Plugin processes of this run's Vault (started from $WORK/plugins), should it have
	# left any behind.
	for p in /proc/[0-9]*; do
		exe=$({ tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null | head -1) || continue
		[[ $exe == "$WORK/plugins/"* ]] && kill -KILL "${p#/proc/}" 2>/dev/null || true
	done
	stop "$IDP_PID" identity
	stop "$FLEET_IDP_PID" "fleet identity"
	if [[ $rc -ne 0 ]]; then
		log "failed (exit $rc); logs in $WORK"
		tail -n 30 "$WORK/vault.log" "$WORK/idp.log" >&2 2>/dev/null || true
	elif [[ ${BENCH_KEEP:-0} != 1 ]]; then
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for WHAT CMD...: up to 30 s.
wait_for() {
	local what=$1; shift
	for _ in $(seq 300); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	log "$what did not come up within 30 s"
	return 1
}

# --- the dev identity server
"$IDP_BIN" -addr 127.0.0.1:0 -tls-dir "$WORK/idp" -admin -quiet -token-ttl 1h \
	-url-file "$WORK/idp/url" \
	-client "$CLIENT_ID:$CLIENT_SECRET:MUC:reservations.read,setup.read" \
	>"$WORK/idp.log" 2>&1 &
IDP_PID=$!
wait_for "identity server" test -s "$WORK/idp/url"
IDP_URL=$(cat "$WORK/idp/url")
CA=$WORK/idp/ca.pem

# --- a second identity server for the fleet: short token lives (clients added by the
# load tool through its admin API)
if [[ $FLEET == 1 ]]; then
	mkdir -p "$WORK/idp-fleet"
	"$IDP_BIN" -addr 127.0.0.1:0 -tls-dir "$WORK/idp-fleet" -admin -quiet -token-ttl "$FLEET_TTL" \
		-url-file "$WORK/idp-fleet/url" >"$WORK/idp-fleet.log" 2>&1 &
	FLEET_IDP_PID=$!
	wait_for "fleet identity server" test -s "$WORK/idp-fleet/url"
	FLEET_IDP_URL=$(cat "$WORK/idp-fleet/url")
fi

# --- Vault dev server, plugin binaries copied (Vault refuses symlinks)
cp "$PLUGIN_BIN" "$WORK/plugins/vault-plugin-secrets-apaleo"
cp "$FLOOR_BIN" "$WORK/plugins/floorplugin"
PORT=$("$LOAD" freeport)
PLUGIN_ENV=(-env=SSL_CERT_FILE="$CA")
for kv in ${BENCH_PLUGIN_ENV:-}; do
	PLUGIN_ENV+=(-env="$kv")
done
if [[ $PROFILE == 1 ]]; then
	PPROF=http://127.0.0.1:$("$LOAD" freeport)
	PLUGIN_ENV+=(-env=BENCH_PPROF_ADDR="${PPROF#http://}")
fi
printf 'plugin_directory = "%s"\ndisable_mlock = true\n' "$WORK/plugins" >"$WORK/vault.hcl"
env -u VAULT_ADDR -u VAULT_TOKEN HOME="$WORK/home" "$VAULT" server -dev -dev-root-token-id=root \
	-dev-no-store-token -dev-listen-address="127.0.0.1:$PORT" -config="$WORK/vault.hcl" \
	-log-level=warn >"$WORK/vault.log" 2>&1 &
VAULT_PID=$!
export VAULT_ADDR=http://127.0.0.1:$PORT VAULT_TOKEN=root
vault() { HOME="$WORK/home" "$VAULT" "$@"; }
wait_for vault vault status

sha() { sha256sum "$1" | cut -d' ' -f1; }
vault plugin register -sha256="$(sha "$WORK/plugins/vault-plugin-secrets-apaleo")" -version="$PLUGIN_VERSION" \
	"${PLUGIN_ENV[@]}" secret vault-plugin-secrets-apaleo >/dev/null
vault plugin register -sha256="$(sha "$WORK/plugins/floorplugin")" secret floorplugin >/dev/null
vault secrets enable -path=apaleo vault-plugin-secrets-apaleo >/dev/null
vault secrets enable -path=floor floorplugin >/dev/null
BASELINE=${BENCH_BASELINE_PLUGIN:-}
if [[ -n $BASELINE ]]; then
	cp "$BASELINE" "$WORK/plugins/vault-plugin-secrets-apaleo-base"
	vault plugin register -sha256="$(sha "$WORK/plugins/vault-plugin-secrets-apaleo-base")" \
		-env=SSL_CERT_FILE="$CA" secret vault-plugin-secrets-apaleo-base >/dev/null
	vault secrets enable -path=apaleo-base vault-plugin-secrets-apaleo-base >/dev/null
fi
if [[ $FLEET == 1 ]]; then
	# The same binary under a second name: Vault runs it as a process of its own, so the
	# fleet's RSS is the fleet's alone.
	cp "$PLUGIN_BIN" "$WORK/plugins/vault-plugin-secrets-apaleo-fleet"
	vault plugin register -sha256="$(sha "$WORK/plugins/vault-plugin-secrets-apaleo-fleet")" -version="$PLUGIN_VERSION" \
		-env=SSL_CERT_FILE="$CA" secret vault-plugin-secrets-apaleo-fleet >/dev/null
	vault secrets enable -path=apaleo-fleet vault-plugin-secrets-apaleo-fleet >/dev/null
fi
vault write apaleo/config/hotel-muc client_id="$CLIENT_ID" client_secret="$CLIENT_SECRET" \
	identity_url="$IDP_URL" ca_certificate=@"$CA" scopes="reservations.read setup.read" \
	max_token_requests_per_second=0 >/dev/null
RW_TARGETS=creds=apaleo/creds/hotel-muc,floor=floor/creds/hotel-muc,kv=secret/data/bench
if [[ -n $BASELINE ]]; then
	vault write apaleo-base/config/hotel-muc client_id="$CLIENT_ID" client_secret="$CLIENT_SECRET" \
		identity_url="$IDP_URL" ca_certificate=@"$CA" scopes="reservations.read setup.read" \
		max_token_requests_per_second=0 >/dev/null
	RW_TARGETS+=,base=apaleo-base/creds/hotel-muc
fi
# No budget: the cold reads send a token request each, faster than the default 10 per
# second, and would measure the budget's waits (about 90 ms a read) instead of the path.
COMMON=(-addr "$VAULT_ADDR" -token root -idp "$IDP_URL" -idp-ca "$CA")
"$LOAD" prepare "${COMMON[@]}"
if [[ $PROFILE == 1 ]]; then
	COMMON+=(-pprof "$PPROF" -profile-dir "$PROF_DIR")
fi

# --- the machine
{
	echo "## \`make bench\` results"
	echo
	echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- $(vault version | head -1) (dev server, in-memory storage, log level warn); plugin $PLUGIN_VERSION; $(go version 2>/dev/null | cut -d' ' -f3-4)"
	echo "- identity server: bin/apaleo-dev-identity over TLS on loopback, tokens valid 1 h$([[ $FLEET == 1 ]] && echo "; the fleet's: a second one, tokens valid $FLEET_TTL")"
	echo
	if [[ $PROFILE == 1 ]]; then
		echo "- **profile run**: the plugin is bench/profplugin (the same backend, instrumented), not the release binary: its figures carry the instrumentation's cost"
		echo
	fi
} >"$WORK/header.md"
SECTIONS=$WORK/sections.md
: >"$SECTIONS"
rm -f "$JSON_DIR/rw.json" "$JSON_DIR/cold.json" "$JSON_DIR/scale.json" "$JSON_DIR/fleet.json" "$JSON_DIR/fleet-metrics.json"

if [[ $FLEET_ONLY != 1 ]]; then
if [[ $SCALE_ONLY != 1 ]]; then
# --- 1. throughput
log "read throughput: readers $READERS, $ROUNDS rounds of $ROUND_TIME per target"
"$LOAD" rw "${COMMON[@]}" -readers "$READERS" -rounds "$ROUNDS" -round-time "$ROUND_TIME" \
	-targets "$RW_TARGETS" -json "$JSON_DIR/rw.json" >>"$SECTIONS"

if [[ $PROFILE == 1 ]]; then
	log "CPU profile of the plugin: 64 readers on creds for 10 s"
	curl -sf -o "$PROF_DIR/cpu-hot-64.pprof" "$PPROF/debug/pprof/profile?seconds=10" &
	CURL_PID=$!
	"$LOAD" rw "${COMMON[@]}" -readers 64 -rounds 1 -round-time 10s -warmup 200ms -herd "" \
		-targets creds=apaleo/creds/hotel-muc >/dev/null
	wait "$CURL_PID"
fi

# --- 2. cold reads
log "cold reads: $COLD_N"
"$LOAD" cold "${COMMON[@]}" -n "$COLD_N" -client-id "$CLIENT_ID" -client-secret "$CLIENT_SECRET" \
	-json "$JSON_DIR/cold.json" >>"$SECTIONS"
fi

# --- 3. scale
if [[ $SCALE_N -gt 0 ]]; then
	log "scale: $SCALE_N configs"
	SCALE_ARGS=(-settle "${BENCH_SCALE_SETTLE:-0}" -authorized "$SCALE_AUTHORIZED")
	if [[ ${BENCH_SCALE_CA:-0} == 1 ]]; then
		SCALE_ARGS+=(-ca-file "$CA")
	fi
	"$LOAD" scale "${COMMON[@]}" -n "$SCALE_N" -c 8 -client-id "$CLIENT_ID" -client-secret "$CLIENT_SECRET" \
		-identity-url "$IDP_URL" -plugin-path "$WORK/plugins/vault-plugin-secrets-apaleo" \
		"${SCALE_ARGS[@]}" -json "$JSON_DIR/scale.json" >>"$SECTIONS"
	# The CLI's own `vault list -detailed` (key_info printed as a table), once.
	t0=$(date +%s%N)
	rows=$(vault list -detailed apaleo/creds | wc -l)
	t1=$(date +%s%N)
	printf -- '- `vault list -detailed apaleo/creds` (the CLI, %d lines of table printed): %d ms\n\n' "$rows" $(((t1 - t0) / 1000000)) >>"$SECTIONS"
fi
fi

# --- 4. the fleet
if [[ $FLEET == 1 ]]; then
	log "fleet: ${BENCH_FLEET_N:-1000} credentials, tokens of $FLEET_TTL, outage $OUTAGE"
	"$LOAD" fleet -addr "$VAULT_ADDR" -token root -idp "$FLEET_IDP_URL" -idp-ca "$WORK/idp-fleet/ca.pem" \
		-hit-idp "$IDP_URL" -hit-idp-ca "$CA" -mount apaleo-fleet \
		-n "${BENCH_FLEET_N:-1000}" -ttl "$FLEET_TTL" -lifetimes "${BENCH_FLEET_LIFETIMES:-5}" \
		-readers "${BENCH_FLEET_READERS:-32}" -delay "${BENCH_FLEET_DELAY:-200ms}" -baseline "${BENCH_FLEET_BASELINE:-30s}" \
		-outage "$OUTAGE" -outage-creds "${BENCH_OUTAGE_CREDS:-100}" -outage-readers 64 \
		-modes "hit,on,off$([[ $OUTAGE != 0 && $OUTAGE != 0s ]] && echo ,outage)" \
		-plugin-path "$WORK/plugins/vault-plugin-secrets-apaleo-fleet" \
		-metrics-out "$JSON_DIR/fleet-metrics.json" -json "$JSON_DIR/fleet.json" >>"$SECTIONS"
	mkdir -p "$CHARTS_DIR"
	"$CHARTS" -in "$JSON_DIR/fleet-metrics.json" -out "$CHARTS_DIR" >&2
	printf -- '- charts of the fleet run (from the plugin'"'"'s metrics, scraped every second): %s\n\n' "$CHARTS_DIR" >>"$SECTIONS"
fi

echo "- load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$SECTIONS"
if [[ $PROFILE == 1 ]]; then
	{
		echo
		echo "### Profiles (in $PROF_DIR)"
		for f in "$PROF_DIR"/*.pprof; do
			echo
			echo "\`go tool pprof -top $(basename "$f")\`:"
			echo
			echo '```'
			go tool pprof -top -nodecount=25 "$f" 2>/dev/null | sed -n '1,35p'
			echo '```'
		done
	} >>"$SECTIONS"
fi
{
	cat "$WORK/header.md"
	"$LOAD" summary -dir "$JSON_DIR"
	cat "$SECTIONS"
} >"$RESULTS"
cat "$RESULTS"
log "results in $RESULTS"
