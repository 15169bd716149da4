#!/usr/bin/env bash
# Demo of the apaleo secrets engine: a Vault dev server with the plugin registered and
# mounted at apaleo/, a client-credentials config "hotel-muc", and a token read from it.
#
#   scripts/demo.sh start   (make demo: builds bin/ and build/vault first)
#   scripts/demo.sh stop    (make demo-stop: stops both servers; safe to repeat)
#
# By default tokens come from the local dev identity server (bin/apaleo-dev-identity,
# HTTPS with its own throw-away test CA), which also knows a connect app for trying the
# authorization code flow. With APALEO_CLIENT_ID and APALEO_CLIENT_SECRET set (an apaleo
# "simple client"), config/hotel-muc uses https://identity.apaleo.com instead and no local
# identity server runs; APALEO_SCOPES (optional, comma or space separated) sets its scopes.
#
# Everything lives in .demo/ (git-ignored): logs, pid files, Vault's HOME (Vault keeps
# ~/.vault-token there) and the plugin directory with a copy of the plugin binary.
#
# Environment: VAULT_BIN (the vault binary, default build/vault), VERSION (the plugin
# version to register, default the one make build wrote to build/plugin-version, which
# bin/ reports), DEMO_VAULT_PORT (Vault's port; its cluster
# port is the next one; default: the first free port from 8200 on). The dev identity
# server always takes a free port of its own.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=$ROOT/.demo
VAULT=${VAULT_BIN:-$ROOT/build/vault}
PLUGIN=vault-plugin-secrets-apaleo
PLUGIN_BIN=$ROOT/bin/$PLUGIN
IDP_BIN=$ROOT/bin/apaleo-dev-identity
VERSION=${VERSION:-$(cat "$ROOT/build/plugin-version" 2>/dev/null || true)}
MOUNT=apaleo
NAME=hotel-muc
ROOT_TOKEN=root
SCOPES=account.read,reservations.read

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# running PID: the process runs (a zombie does not count).
running() {
	kill -0 "$1" 2>/dev/null || return 1
	if [[ -r /proc/$1/stat ]]; then
		local stat
		stat=$(<"/proc/$1/stat") || return 1
		stat=${stat##*) }
		[[ ${stat%% *} != Z ]]
	fi
}

# alive PIDFILE PATTERN: the pid in PIDFILE runs and its command line contains PATTERN.
# Only for servers of an earlier run of this script (demo-stop, a second start): the
# pattern guards against a reused pid. Right after a start, the child may not have exec'd
# yet and still show this script's command line, so a start checks `running` instead and
# waits for the server's own signal of readiness.
alive() {
	local pid
	[[ -f $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	if [[ -r /proc/$pid/cmdline ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
	else
		ps -p "$pid" -o args= 2>/dev/null | grep -qF -- "$2"
	fi
}

# stop_one PIDFILE PATTERN WHAT: SIGTERM, wait up to 15 s, then SIGKILL; removes PIDFILE.
stop_one() {
	if alive "$1" "$2"; then
		stop_pid "$(<"$1")"
		say "stopped $3 (pid $(<"$1"))"
	fi
	rm -f "$1"
}

# stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
	local i
	kill "$1" 2>/dev/null || return 0
	for ((i = 0; i < 150; i++)); do
		running "$1" || return 0
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
}

# The servers this run of the script started, stopped by pid if the start fails (they
# may not have exec'd yet, so alive's command-line check would miss them).
STARTED=()

stop_started() {
	local pid
	for pid in "${STARTED[@]}"; do
		stop_pid "$pid"
	done
	rm -f "$DEMO/vault.pid" "$DEMO/identity.pid"
}

sha256() {
	if command -v sha256sum >/dev/null; then
		sha256sum "$1" | cut -d' ' -f1
	else
		shasum -a 256 "$1" | cut -d' ' -f1
	fi
}

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: DEMO_VAULT_PORT if set, else the first port from 8200 (Vault's usual one) on
# that is free together with the next one (Vault's cluster port).
free_port() {
	local p
	if [[ -n ${DEMO_VAULT_PORT:-} ]]; then
		[[ $DEMO_VAULT_PORT =~ ^[0-9]+$ ]] || die "DEMO_VAULT_PORT=$DEMO_VAULT_PORT is not a port number"
		for p in "$DEMO_VAULT_PORT" "$((DEMO_VAULT_PORT + 1))"; do
			! port_in_use "$p" || die "port $p (DEMO_VAULT_PORT=$DEMO_VAULT_PORT, or its cluster port) is in use"
		done
		echo "$DEMO_VAULT_PORT"
		return 0
	fi
	for ((p = 8200; p < 8300; p++)); do
		if ! port_in_use "$p" && ! port_in_use "$((p + 1))"; then
			echo "$p"
			return 0
		fi
	done
	die "no free port in 8200-8299 (set DEMO_VAULT_PORT)"
}

random_secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

print_env() {
	local addr
	addr=$(<"$DEMO/vault.addr")
	echo
	echo "The demo is running. To use it:"
	echo
	echo "  export VAULT_ADDR=$addr VAULT_TOKEN=$ROOT_TOKEN"
	echo "  $VAULT read $MOUNT/creds/$NAME"
	if [[ -f $DEMO/identity.pid ]]; then
		echo
		echo "  # authorization code flow: open auth_url (the dev identity server consents at once)"
		echo "  $VAULT write $MOUNT/authorize/hotel-demo config=connect"
		echo "  $VAULT read $MOUNT/creds/hotel-demo"
		echo
		echo "Logs: $DEMO/vault.log $DEMO/identity.log"
	else
		echo
		echo "Log: $DEMO/vault.log"
	fi
	echo "Stop: make demo-stop (or scripts/demo.sh stop)"
}

start() {
	if alive "$DEMO/vault.pid" "$(vault_of_demo)"; then
		say "the demo is already running"
		print_env
		return 0
	fi
	local b
	for b in "$VAULT" "$PLUGIN_BIN"; do
		[[ -x $b ]] || die "$b is missing: run 'make demo' (it builds bin/ and build/vault first)"
	done
	[[ -n $VERSION ]] || die "no VERSION and no build/plugin-version: run 'make demo' (make build writes it)"
	local real=""
	if [[ -n ${APALEO_CLIENT_ID:-} || -n ${APALEO_CLIENT_SECRET:-} ]]; then
		[[ -n ${APALEO_CLIENT_ID:-} && -n ${APALEO_CLIENT_SECRET:-} ]] ||
			die "set both APALEO_CLIENT_ID and APALEO_CLIENT_SECRET (or neither, for the local dev identity server)"
		real=1
	else
		[[ -x $IDP_BIN ]] || die "$IDP_BIN is missing: run 'make demo' (it builds bin/ and build/vault first)"
	fi

	# A fresh state directory; leftovers of a crashed demo are stopped first.
	stop_quiet
	# Whatever fails from here on stops what was started; the logs stay in .demo/.
	trap 'rc=$?; if ((rc != 0)); then stop_started; echo "demo: start failed; logs are in $DEMO" >&2; fi' EXIT
	rm -rf "$DEMO"
	mkdir -p "$DEMO/home" "$DEMO/plugins" "$DEMO/identity"
	chmod 700 "$DEMO"
	# Vault refuses symlinks in its plugin directory: copy the binary.
	cp "$PLUGIN_BIN" "$DEMO/plugins/$PLUGIN"
	chmod 755 "$DEMO/plugins/$PLUGIN"

	local port addr callback i pid
	port=$(free_port)
	addr=http://127.0.0.1:$port
	callback=$addr/v1/$MOUNT/callback
	echo "$addr" >"$DEMO/vault.addr"

	local client_id client_secret scopes identity_url="" connect_secret=""
	if [[ -n $real ]]; then
		client_id=$APALEO_CLIENT_ID
		client_secret=$APALEO_CLIENT_SECRET
		scopes=${APALEO_SCOPES:-}
		say "using apaleo's identity server https://identity.apaleo.com with client $client_id"
	else
		client_id=$NAME
		client_secret=$(random_secret)
		connect_secret=$(random_secret)
		scopes=$SCOPES
		say "starting the dev identity server (a test stand-in for identity.apaleo.com)"
		"$IDP_BIN" -addr 127.0.0.1:0 -tls-dir "$DEMO/identity" -url-file "$DEMO/identity/url" \
			-client "$NAME:$client_secret:MUC:$SCOPES" \
			-client "connect-app:$connect_secret:DEMO:$SCOPES:$callback" \
			>"$DEMO/identity.log" 2>&1 </dev/null &
		pid=$!
		STARTED+=("$pid")
		echo "$pid" >"$DEMO/identity.pid"
		# Ready once it has written its URL (atomically, after it listens).
		for ((i = 0; i < 300; i++)); do
			[[ -s $DEMO/identity/url ]] && break
			if ! running "$pid"; then
				cat "$DEMO/identity.log" >&2
				die "the dev identity server exited at start (log above: $DEMO/identity.log)"
			fi
			sleep 0.1
		done
		[[ -s $DEMO/identity/url ]] || die "the dev identity server did not start within 30s (see $DEMO/identity.log)"
		identity_url=$(<"$DEMO/identity/url")
		say "dev identity server at $identity_url (its test CA: $DEMO/identity/ca.pem)"
	fi

	cat >"$DEMO/vault.hcl" <<EOF
plugin_directory = "$DEMO/plugins"
disable_mlock    = true
EOF
	say "starting vault server -dev at $addr"
	(
		export HOME=$DEMO/home
		unset VAULT_ADDR VAULT_TOKEN
		exec "$VAULT" server -dev -dev-root-token-id="$ROOT_TOKEN" \
			-dev-listen-address="127.0.0.1:$port" -config="$DEMO/vault.hcl" \
			>"$DEMO/vault.log" 2>&1 </dev/null
	) &
	pid=$!
	STARTED+=("$pid")
	echo "$pid" >"$DEMO/vault.pid"
	echo "$VAULT" >"$DEMO/vault.bin"

	export HOME=$DEMO/home VAULT_ADDR=$addr VAULT_TOKEN=$ROOT_TOKEN
	unset VAULT_NAMESPACE VAULT_CACERT VAULT_CAPATH VAULT_FORMAT VAULT_CLIENT_CERT VAULT_CLIENT_KEY
	# Ready once it answers, unsealed, on its address.
	for ((i = 0; i < 300; i++)); do
		"$VAULT" status >/dev/null 2>&1 && break
		if ! running "$pid"; then
			tail -20 "$DEMO/vault.log" >&2
			die "vault exited at start (log above: $DEMO/vault.log)"
		fi
		sleep 0.1
	done
	"$VAULT" status >/dev/null 2>&1 || die "vault did not come up within 30s (see $DEMO/vault.log)"

	say "registering $PLUGIN $VERSION and mounting it at $MOUNT/"
	"$VAULT" plugin register -sha256="$(sha256 "$DEMO/plugins/$PLUGIN")" -version="$VERSION" secret "$PLUGIN" >/dev/null
	"$VAULT" secrets enable -path="$MOUNT" -plugin-version="$VERSION" "$PLUGIN" >/dev/null

	# Secrets go through stdin (value "-"), not the command line.
	say "writing $MOUNT/config/$NAME"
	local args=("$MOUNT/config/$NAME" "client_id=$client_id" "client_secret=-")
	if [[ -n $identity_url ]]; then
		args+=("identity_url=$identity_url" "ca_certificate=@$DEMO/identity/ca.pem")
	fi
	if [[ -n $scopes ]]; then
		args+=("scopes=$scopes")
	fi
	printf '%s' "$client_secret" | "$VAULT" write "${args[@]}" >/dev/null
	if [[ -z $real ]]; then
		say "writing $MOUNT/config/connect (authorization_code, redirect_uri $callback)"
		printf '%s' "$connect_secret" | "$VAULT" write "$MOUNT/config/connect" client_id=connect-app \
			client_secret=- grant_type=authorization_code redirect_uri="$callback" scopes="$SCOPES" \
			identity_url="$identity_url" ca_certificate=@"$DEMO/identity/ca.pem" >/dev/null
	fi

	say "vault read $MOUNT/creds/$NAME"
	"$VAULT" read "$MOUNT/creds/$NAME"
	trap - EXIT
	print_env
}

# vault_of_demo: the vault binary the running demo was started with (make demo
# VAULT_BIN=... and a plain make demo-stop may differ).
vault_of_demo() {
	if [[ -s $DEMO/vault.bin ]]; then
		cat "$DEMO/vault.bin"
	else
		echo "$VAULT"
	fi
}

stop_quiet() {
	stop_one "$DEMO/vault.pid" "$(vault_of_demo)" "vault" >/dev/null
	stop_one "$DEMO/identity.pid" "$IDP_BIN" "the dev identity server" >/dev/null
}

stop() {
	if [[ ! -f $DEMO/vault.pid && ! -f $DEMO/identity.pid ]]; then
		say "the demo is not running"
		return 0
	fi
	stop_one "$DEMO/vault.pid" "$(vault_of_demo)" "vault"
	stop_one "$DEMO/identity.pid" "$IDP_BIN" "the dev identity server"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
