#!/usr/bin/env bash
# Runs an iaas-load subcommand (release build) and prints its report.
#
#   scripts/load.sh [http] [ARGS]   HTTP mix against a freshly started platform binary; `http` is
#                                   the default when the first argument is not a subcommand
#   scripts/load.sh pipeline [ARGS] events through outbox -> bus -> indexer, assembled in the
#                                   tool's process (no platform is started)
#   scripts/load.sh SUBCOMMAND [ARGS]
#                                   any other subcommand runs against a fresh platform, which it
#                                   finds through IAAS_LOAD_URL
#
#   IAAS_REDIS_URL=redis://127.0.0.1:6379 scripts/load.sh http
#                                   sessions and cache on that Redis; a unique cache prefix keeps
#                                   this run's keys apart from everyone else's on a shared server
#
# Extra arguments go to the subcommand (`target/release/iaas-load SUBCOMMAND --help`; http
# defaults: 64 users, 32 connections, 20 s, mix refresh=8,list=4,login=1). The platform gets a
# temporary data dir and a free loopback port and is stopped (by its pid) when the script exits.
set -euo pipefail

cd "$(dirname "$0")/.."
# Where cargo puts the binaries (a shared CARGO_TARGET_DIR, or the workspace's own).
bin="${CARGO_TARGET_DIR:-target}/release"
subcommand=http
case "${1:-}" in
    ""|-*) ;;
    *) subcommand="$1"; shift ;;
esac

if [[ "${subcommand}" == pipeline ]]; then
    cargo build --release -p iaas-benches --bin iaas-load >&2
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    status=0
    "${bin}/iaas-load" pipeline "$@" || status=$?
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit "${status}"
fi

cargo build --release -p iaas-platform -p iaas-benches --bin iaas-platform --bin iaas-load >&2

data_dir="$(mktemp -d -t iaas-load-XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export IAAS_LISTEN="127.0.0.1:${port}"
export IAAS_LOAD_URL="http://${IAAS_LISTEN}"
export IAAS_DATA_DIR="${data_dir}"
export IAAS_CACHE_PREFIX="iaas-load-$$-$(date +%s):"
export RUST_LOG="${RUST_LOG:-warn}"
# A load run provisions more instances for one user than the default quota allows (10).
export IAAS_QUOTA_INSTANCES="${IAAS_QUOTA_INSTANCES:-10000}"
export IAAS_QUOTA_MILLICPUS="${IAAS_QUOTA_MILLICPUS:-10000000}"
export IAAS_QUOTA_MEMORY_MIB="${IAAS_QUOTA_MEMORY_MIB:-10000000}"
# Every load user registers from this machine's one address (the default allows 20 an hour
# per client, and on a shared Redis the count outlives one run).
export IAAS_REGISTRATIONS_PER_CLIENT="${IAAS_REGISTRATIONS_PER_CLIENT:-100000}"

"${bin}/iaas-platform" >"${data_dir}/platform.log" 2>&1 &
platform=$!
# docker-ws reads the platform's memory and CPU from /proc at each step of a sweep, http its CPU
# over the run.
export IAAS_LOAD_PLATFORM_PID="${platform}"
cleanup() {
    kill "${platform}" 2>/dev/null || true
    wait "${platform}" 2>/dev/null || true
    rm -rf "${data_dir}"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
    if curl -fsS "http://${IAAS_LISTEN}/readyz" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "${platform}" 2>/dev/null; then
        echo "the platform exited; its log:" >&2
        cat "${data_dir}/platform.log" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS "http://${IAAS_LISTEN}/readyz" >/dev/null || { echo "platform not ready" >&2; exit 1; }

echo "platform on ${IAAS_LISTEN} (redis: ${IAAS_REDIS_URL:-in-process}), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
"${bin}/iaas-load" "${subcommand}" "$@" || status=$?
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "${status}"
