#!/usr/bin/env bash
# Runs the platform as three replicas behind HAProxy on this machine, on the shared services of
# scripts/services.sh (PostgreSQL store, Redis sessions and cache, Kafka events), until Ctrl-C.
#
#   scripts/replicas.sh                 # clients use http://127.0.0.1:8080
#   IAAS_LB_LISTEN=0.0.0.0:9000 scripts/replicas.sh
#
# The replicas listen on 127.0.0.1:8081-8083 (IAAS_REPLICA_1..3 to change them), share the key
# files in IAAS_SHARED_DIR (default ./iaas-replicas), and each keeps its own data directory
# there. Restart one with `kill -TERM <pid>` (printed at start) and start it again by hand: it
# drains for 3 s first, so clients behind HAProxy see no error. See docs/replicas.md.
#
#   scripts/replicas.sh --rolling-restart [IAAS-LOAD HTTP ARGS]
#
# runs the same three replicas on a database and a topic of their own, drives them through
# HAProxy with `iaas-load http --strict` (by default 32 users on 16 connections at 100 req/s
# for 60 s, mix refresh=16,list=8,login=2,create=1: instances made and deleted throughout),
# restarts each replica in turn while it runs (SIGTERM, wait for the exit, start again), then
# audits the outbox against the topic with `iaas-load outbox-audit` and checks that no
# container or owner network of the run is left on the engine. It fails when a request failed,
# an event was lost or duplicated, or something was left; when it passed the database is
# dropped, otherwise kept for a look. The topic stays on the broker either way.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rolling=false
if [ "${1:-}" = --rolling-restart ]; then
	rolling=true
	shift
fi

env_file="${IAAS_SERVICES_ENV_FILE:-/var/lib/iaas-test/services.env}"
if [ -z "${IAAS_DATABASE_URL:-}" ] && [ -r "$env_file" ]; then
	# shellcheck disable=SC1090
	source "$env_file"
	export IAAS_DATABASE_URL="${IAAS_DATABASE_URL:-$IAAS_TEST_POSTGRES_URL}"
	export IAAS_REDIS_URL="${IAAS_REDIS_URL:-$IAAS_TEST_REDIS_URL}"
	export IAAS_KAFKA_BROKERS="${IAAS_KAFKA_BROKERS:-$IAAS_TEST_KAFKA_BROKERS}"
fi
for var in IAAS_DATABASE_URL IAAS_REDIS_URL IAAS_KAFKA_BROKERS; do
	[ -n "${!var:-}" ] || {
		echo "replicas: $var is not set (run scripts/services.sh, or set it)" >&2
		exit 2
	}
done
command -v haproxy >/dev/null || {
	echo "replicas: haproxy is not installed (apt-get install haproxy)" >&2
	exit 2
}

export IAAS_LB_LISTEN="${IAAS_LB_LISTEN:-127.0.0.1:8080}"
export IAAS_REPLICA_1="${IAAS_REPLICA_1:-127.0.0.1:8081}"
export IAAS_REPLICA_2="${IAAS_REPLICA_2:-127.0.0.1:8082}"
export IAAS_REPLICA_3="${IAAS_REPLICA_3:-127.0.0.1:8083}"
shared="${IAAS_SHARED_DIR:-./iaas-replicas}"
mkdir -p "$shared"
export IAAS_AUTH_KEY_FILE="$shared/auth.key" IAAS_SECRETS_KEY_FILE="$shared/secrets.key"
export IAAS_DRAIN_SECS="${IAAS_DRAIN_SECS:-3}"

binary="${IAAS_PLATFORM_BIN:-}"
bin_dir="${CARGO_TARGET_DIR:-target}/release"
if [ -z "$binary" ]; then
	cargo build --release -p iaas-platform
	binary="$bin_dir/iaas-platform"
fi
if $rolling; then
	cargo build --release -p iaas-benches --bin iaas-load
fi

# Runs SQL $2 on the PostgreSQL of URL $1 with psql, the password handed over in psql's
# environment, not on a command line other users can read.
psql_at() {
	PG_URL="$1" PG_SQL="$2" python3 - <<'PY'
import os, subprocess, urllib.parse as up
url = up.urlsplit(os.environ["PG_URL"])
env = dict(os.environ, PGHOST=url.hostname or "localhost", PGPORT=str(url.port or 5432),
           PGUSER=up.unquote(url.username or ""), PGPASSWORD=up.unquote(url.password or ""),
           PGDATABASE=url.path.lstrip("/") or "postgres")
for key, value in up.parse_qsl(url.query):
    if key == "sslmode":
        env["PGSSLMODE"] = value
subprocess.run(["psql", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", os.environ["PG_SQL"]],
               env=env, check=True)
PY
}

# URL $1 naming database $2 instead (its query kept).
url_with_database() {
	PG_URL="$1" PG_DATABASE="$2" python3 -c '
import os, urllib.parse as up
url = up.urlsplit(os.environ["PG_URL"])
print(up.urlunsplit(url._replace(path="/" + os.environ["PG_DATABASE"])))'
}

pids=()
load=
run=
stop() {
	[ -z "$load" ] || kill -TERM "$load" 2>/dev/null || true
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait
	if [ -n "$run" ]; then
		echo "replicas: database $run, topic ${IAAS_KAFKA_TOPIC:-} and directory $shared kept for a look" >&2
	fi
}
trap stop EXIT
trap 'stop; trap - EXIT; exit 130' INT
trap 'stop; trap - EXIT; exit 143' TERM

group_prefix=monitoring
if $rolling; then
	# A database, a topic, groups and cache keys of this run only, so the audit sees its
	# events and nothing else.
	admin_url="$IAAS_DATABASE_URL"
	name="rolling_$(date +%s)_$$"
	psql_at "$admin_url" "CREATE DATABASE $name"
	run="$name"
	IAAS_DATABASE_URL="$(url_with_database "$admin_url" "$run")"
	export IAAS_DATABASE_URL IAAS_KAFKA_TOPIC="iaas-$run" IAAS_CACHE_PREFIX="iaas-$run:"
	export IAAS_CACHE_INVALIDATION_GROUP="$run-cache"
	group_prefix="$run-monitoring"
	if [ -z "${IAAS_SHARED_DIR:-}" ]; then
		shared="$(mktemp -d -t iaas-rolling-XXXXXX)"
		export IAAS_AUTH_KEY_FILE="$shared/auth.key" IAAS_SECRETS_KEY_FILE="$shared/secrets.key"
	fi
	# Every client comes from HAProxy's address.
	export IAAS_REGISTRATIONS_PER_CLIENT="${IAAS_REGISTRATIONS_PER_CLIENT:-100000}"
	export RUST_LOG="${RUST_LOG:-warn}"
	echo "replicas: database $run, topic $IAAS_KAFKA_TOPIC"
fi

# Starts replica $1 in the background (its pid in pids[$1 - 1]).
start_replica() {
	local n="$1" listen_var="IAAS_REPLICA_$1"
	IAAS_LISTEN="${!listen_var}" IAAS_DATA_DIR="$shared/replica-$n" \
		IAAS_MONITORING_GROUP="$group_prefix-replica-$n" "$binary" &
	pids[n - 1]="$!"
	echo "replicas: replica-$n on ${!listen_var}, pid $!"
}

# The first replica starts alone: it creates the schema and the events topic.
for n in 1 2 3; do
	start_replica "$n"
	[ "$n" = 1 ] && sleep 3
done
haproxy -db -f deploy/replicas/haproxy.cfg &
pids[3]="$!"
echo "replicas: HAProxy on $IAAS_LB_LISTEN, pid $!"

if ! $rolling; then
	wait -n
	exit
fi

lb="http://$IAAS_LB_LISTEN"
for _ in $(seq 1 100); do
	curl -fsS "$lb/readyz" >/dev/null 2>&1 && break
	sleep 0.3
done
# Each replica passed HAProxy's health check.
sleep 3
[ $# -gt 0 ] || set -- --users 32 --connections 16 --rate 100 --duration 60 \
	--mix refresh=16,list=8,login=2,create=1
"$bin_dir/iaas-load" http --url "$lb" --strict "$@" &
load=$!
started=$SECONDS
for n in 1 2 3; do
	sleep 12
	kill -0 "$load" 2>/dev/null || {
		echo "replicas: the load run ended before replica-$n was restarted; give it a longer --duration" >&2
		exit 1
	}
	stopping=$SECONDS
	kill -TERM "${pids[n - 1]}"
	wait "${pids[n - 1]}" || {
		echo "replicas: replica-$n exited with status $? on SIGTERM" >&2
		exit 1
	}
	echo "replicas: replica-$n stopped in $((SECONDS - stopping)) s (at $((SECONDS - started)) s)"
	start_replica "$n"
done
kill -0 "$load" 2>/dev/null || {
	echo "replicas: the load run ended before the last replica was back; give it a longer --duration" >&2
	exit 1
}
status=0
wait "$load" || status=$?
load=
[ "$status" = 0 ] || {
	echo "replicas: the load run failed (status $status)" >&2
	exit "$status"
}
# The store's URL (with its password) reaches the tool through its environment.
"$bin_dir/iaas-load" outbox-audit --brokers "$IAAS_KAFKA_BROKERS" --topic "$IAAS_KAFKA_TOPIC"

# Nothing of the run's instances is left on the engine: a container whose create the engine
# finished after its delete ran goes at the next reconciliation (every 60 s), and its owner's
# network with it.
instances="$(psql_at "$IAAS_DATABASE_URL" "SELECT id FROM instances")"
owners="$(psql_at "$IAAS_DATABASE_URL" "SELECT DISTINCT owner FROM instances")"
left=
for _ in $(seq 1 90); do
	# Read first, so a failing docker fails the script instead of reading as "nothing left".
	containers="$(docker ps -a --filter label=iaas.managed=true --format '{{.Label "iaas.instance"}}')"
	networks="$(docker network ls --format '{{.Name}}')"
	left="$(
		grep -Fx -f <(printf '%s\n' "$instances") <<<"$containers" || true
		grep -Fx -f <(printf 'iaas-user-%s\n' $owners) <<<"$networks" || true
	)"
	[ -z "$left" ] && break
	sleep 1
done
[ -z "$left" ] || {
	echo "replicas: left on the engine 90 s after the run (containers of its instances, owner networks):" $left >&2
	exit 1
}
echo "replicas: no container or network of the run's $(wc -l <<<"$instances") instances left"

trap - EXIT INT TERM
kept_run="$run"
run=
stop
psql_at "$admin_url" "DROP DATABASE $kept_run"
[ -n "${IAAS_SHARED_DIR:-}" ] || rm -rf "$shared"
echo "replicas: rolling restart passed; database $kept_run dropped (the topic stays on the broker)"
