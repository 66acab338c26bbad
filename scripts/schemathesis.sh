#!/usr/bin/env bash
# Runs Schemathesis against each OpenAPI document the platform serves (auth, provisioning,
# monitoring) and fails on any 5xx answer or any answer that breaks its documented schema.
#
# What it does, idempotently:
#   1. installs Schemathesis $ST_VERSION from PyPI into a venv ($IAAS_SCHEMATHESIS_VENV,
#      default /var/lib/iaas-test/venv); a second run finds it and skips the install;
#   2. builds the iaas-platform binary and starts it on embedded defaults (a temporary
#      IAAS_DATA_DIR, a free loopback port, the Docker engine of DOCKER_HOST); instances of
#      every kind use the small test busybox image ($IAAS_TEST_BUSYBOX_IMAGE), so nothing heavy
#      starts, and nothing is pulled;
#   3. registers a fresh user, logs in, and runs `st run` on each served document with its
#      bearer token, bounded by examples per operation and by time;
#   4. on exit, whatever happened: stops the platform and removes every container, network and
#      volume the run's user got (label iaas.owner=<its id>), then the data directory.
#
# Environment: ST_MAX_EXAMPLES (default 25) test cases per operation and phase, ST_MAX_TIME
# (unset: Schemathesis's --max-time, which makes fuzzing repeat until it is spent),
# ST_DOCUMENT_TIMEOUT (default 120 s, a hard bound per document), ST_SEED (default fixed, for
# reproducible runs), ST_WORKERS (default 1). The whole run takes about a minute on a 2-core
# machine once the binary is built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ST_VERSION="4.32.5"
VENV="${IAAS_SCHEMATHESIS_VENV:-/var/lib/iaas-test/venv}"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-25}"
MAX_TIME="${ST_MAX_TIME-}"
SEED="${ST_SEED:-20261125}"
# One worker: with several, Hypothesis describes lambdas from several threads at once, which
# trips CPython 3.11's "AST constructor recursion depth mismatch" (a Runtime Error in the run).
WORKERS="${ST_WORKERS:-1}"
# Hard bound per document, in case the engine or the server hangs.
DOCUMENT_TIMEOUT="${ST_DOCUMENT_TIMEOUT:-120}"
DOCUMENTS=(auth provisioning monitoring)

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'schemathesis.sh: %s\n' "$*" >&2; exit 1; }

env_file="${IAAS_SERVICES_ENV_FILE:-/var/lib/iaas-test/services.env}"
if [[ -f "$env_file" ]]; then
  # shellcheck disable=SC1090
  source "$env_file"
fi
BUSYBOX="${IAAS_TEST_BUSYBOX_IMAGE:-iaas-local/busybox:1}"
command -v docker >/dev/null || die "the docker CLI is needed to clean up after the run"
command -v curl >/dev/null || die "curl is needed"

step "schemathesis $ST_VERSION in $VENV"
installed() {
  [[ -x "$VENV/bin/st" ]] &&
    [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "$ST_VERSION" ]]
}
if installed; then
  echo "already installed" >&2
else
  if ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
  installed || die "schemathesis $ST_VERSION did not install into $VENV"
fi

step "build iaas-platform"
cargo build --quiet -p iaas-platform --bin iaas-platform --locked
target_dir="$(cargo metadata --format-version 1 --no-deps |
  "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
binary="$target_dir/debug/iaas-platform"
[[ -x "$binary" ]] || die "no binary at $binary"

work="$(mktemp -d -t iaas-schemathesis.XXXXXX)"
platform_pid=""
user_id=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$platform_pid" ]] && kill -0 "$platform_pid" 2>/dev/null; then
    kill -TERM "$platform_pid" 2>/dev/null || true
    wait "$platform_pid" 2>/dev/null || true
  fi
  if [[ -n "$user_id" ]]; then
    # Everything the platform made for the run's user carries its id; nothing else is touched.
    local filter="label=iaas.owner=$user_id"
    local -a containers networks volumes
    mapfile -t containers < <(docker ps -aq --filter label=iaas.managed=true --filter "$filter")
    if ((${#containers[@]})); then
      docker rm -f "${containers[@]}" >/dev/null || echo "could not remove containers ${containers[*]}" >&2
    fi
    mapfile -t networks < <(docker network ls -q --filter "$filter")
    if ((${#networks[@]})); then
      docker network rm "${networks[@]}" >/dev/null || echo "could not remove networks ${networks[*]}" >&2
    fi
    mapfile -t volumes < <(docker volume ls -q --filter "$filter")
    if ((${#volumes[@]})); then
      docker volume rm -f "${volumes[@]}" >/dev/null || echo "could not remove volumes ${volumes[*]}" >&2
    fi
    echo "removed ${#containers[@]} containers, ${#networks[@]} networks, ${#volumes[@]} volumes of user $user_id" >&2
  fi
  if [[ $status -ne 0 && -f "$work/platform.log" ]]; then
    # The first start prints the throwaway admin password: keep it out of CI logs anyway.
    echo "--- last lines of the platform log (password lines left out) ---" >&2
    grep -iv 'password' "$work/platform.log" | tail -n 40 >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

step "start the platform on $base (data in $work)"
# Embedded defaults: no database, broker, Redis or Elasticsearch settings reach the binary.
env -u IAAS_CONFIG -u IAAS_DATABASE_URL -u IAAS_KAFKA_BROKERS -u IAAS_REDIS_URL \
  -u IAAS_ELASTICSEARCH_URL \
  IAAS_LISTEN="127.0.0.1:$port" IAAS_DATA_DIR="$work/data" \
  IAAS_POSTGRES_IMAGE="$BUSYBOX" IAAS_NGINX_IMAGE="$BUSYBOX" IAAS_POSTGRES_HA_IMAGE="$BUSYBOX" \
  RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1 \
  "$binary" >"$work/platform.log" 2>&1 &
platform_pid=$!
for _ in $(seq 1 120); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$platform_pid" 2>/dev/null || die "the platform exited during its start"
  sleep 0.5
done
curl -fsS "$base/healthz" >/dev/null || die "the platform did not answer /healthz within 60 s"

step "register and log in"
password="st-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
credentials="{\"username\":\"schemathesis\",\"password\":\"$password\"}"
json_field() { "$VENV/bin/python" -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
user_id="$(curl -fsS -H 'content-type: application/json' -d "$credentials" "$base/v1/auth/register" | json_field id)"
token="$(curl -fsS -H 'content-type: application/json' -d "$credentials" "$base/v1/auth/login" | json_field access_token)"
[[ -n "$token" ]] || die "no access token"

# Schemathesis and Hypothesis keep caches in the working directory: keep them out of the repo.
cd "$work"
failed=()
for document in "${DOCUMENTS[@]}"; do
  step "st run $base/v1/openapi/$document.json"
  if ! timeout "$DOCUMENT_TIMEOUT" "$VENV/bin/st" run "$base/v1/openapi/$document.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance \
    --mode all \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    ${MAX_TIME:+--max-time "$MAX_TIME"} \
    --seed "$SEED" \
    --workers "$WORKERS" \
    --request-timeout 20 \
    --suppress-health-check all \
    --generation-database none \
    --no-color; then
    failed+=("$document")
  fi
done

if ((${#failed[@]})); then
  die "schemathesis found failures in: ${failed[*]}"
fi
step "schemathesis: no 5xx and no schema violation in ${DOCUMENTS[*]}"
