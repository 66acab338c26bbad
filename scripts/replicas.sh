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
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
if [ -z "$binary" ]; then
	cargo build --release -p iaas-platform
	binary="${CARGO_TARGET_DIR:-target}/release/iaas-platform"
fi

pids=()
stop() {
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait
}
trap stop EXIT INT TERM

# The first replica starts alone: it creates the schema and the events topic.
for n in 1 2 3; do
	listen_var="IAAS_REPLICA_$n"
	IAAS_LISTEN="${!listen_var}" IAAS_DATA_DIR="$shared/replica-$n" \
		IAAS_MONITORING_GROUP="monitoring-replica-$n" "$binary" &
	pids+=("$!")
	echo "replicas: replica-$n on ${!listen_var}, pid $!"
	[ "$n" = 1 ] && sleep 3
done
haproxy -db -f deploy/replicas/haproxy.cfg &
pids+=("$!")
echo "replicas: HAProxy on $IAAS_LB_LISTEN, pid $!"
wait -n
