#!/usr/bin/env bash
# The dashboard's browser test: builds and starts the iaas-platform binary on embedded defaults
# (a temporary data directory, a free loopback port, the local Docker engine), then drives the
# dashboard in headless Chromium with tests/browser/dashboard.test.mjs (playwright-core, pinned
# in tests/browser/package-lock.json): register, sign in, create a docker instance, see it
# running and stopped over the WebSocket, search its events and their chart, delete it.
#
# Screenshots: $CARGO_TARGET_DIR/browser/ (target/browser/ under the repository root when
# CARGO_TARGET_DIR is unset): dashboard.png (the whole page after the event search),
# dashboard-running.png, and dashboard-failure.png when a step fails.
#
# Idempotent: installs Debian's chromium and Node.js (>= 18) only when missing, and the npm
# packages only when node_modules does not match the lockfile; never downloads a browser.
# Cleans up on success and failure alike: stops the platform, removes the containers and
# volumes of the test's user, deletes the temporary directories.
#
# Needs the Docker engine and the busybox image that scripts/services.sh provides (it reads
# /var/lib/iaas-test/services.env, or IAAS_SERVICES_ENV_FILE, when present). Exits non-zero on
# failure, printing the page's console errors and the platform's log.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { printf 'browser-test: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

env_file="${IAAS_SERVICES_ENV_FILE:-/var/lib/iaas-test/services.env}"
if [[ -f "$env_file" ]]; then
	# shellcheck disable=SC1090
	source "$env_file"
fi
image="${IAAS_TEST_BUSYBOX_IMAGE:-iaas-local/busybox:1}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
shot_dir="$target_dir/browser"
chromium_bin=/usr/bin/chromium
# Longest wait for the platform to listen and be ready.
ready_timeout_secs=60

apt_install() {
	local packages=("$@")
	if [[ $(id -u) -ne 0 ]]; then
		die "${packages[*]} missing and not root: install them (apt-get install -y ${packages[*]})"
	fi
	log "installing ${packages[*]} from Debian"
	# Another apt run (another engineer's script) may hold the lock for a while.
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}" >/dev/null
}

# ---- tools ---------------------------------------------------------------------------------
if [[ ! -x $chromium_bin ]]; then
	apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || die "Node.js $(node --version) is too old; playwright-core needs 18 or newer"
command -v docker >/dev/null || die "no docker CLI; run scripts/services.sh first"
docker version >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/services.sh first"
docker image inspect "$image" >/dev/null 2>&1 || die "image $image is missing; run scripts/services.sh first"

browser_dir="$repo/tests/browser"
pinned="$(node -p 'require(process.argv[1]).packages["node_modules/playwright-core"].version' "$browser_dir/package-lock.json")"
installed="$(node -p 'try { require(process.argv[1]).version } catch (_) { "" }' "$browser_dir/node_modules/playwright-core/package.json")"
if [[ $installed != "$pinned" ]]; then
	log "installing playwright-core $pinned (npm ci; the browser is Debian's, none is downloaded)"
	(cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# ---- the platform --------------------------------------------------------------------------
log "building iaas-platform"
cargo build --quiet -p iaas-platform --bin iaas-platform
platform_bin="$target_dir/debug/iaas-platform"
[[ -x $platform_bin ]] || die "no binary at $platform_bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/iaas-browser.XXXXXX")"
platform_pid=""
owner_file="$work/owner-id"
platform_log="$work/platform.log"

cleanup() {
	local status=$?
	if [[ -n $platform_pid ]] && kill -0 "$platform_pid" 2>/dev/null; then
		kill -TERM "$platform_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$platform_pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$platform_pid" 2>/dev/null || true
		wait "$platform_pid" 2>/dev/null || true
	fi
	# Only what this run's user created: other tests share the engine.
	if [[ -s $owner_file ]]; then
		local owner containers volumes
		owner="$(tr -d '[:space:]' <"$owner_file")"
		containers="$(docker ps -aq --filter "label=iaas.owner=$owner" 2>/dev/null || true)"
		if [[ -n $containers ]]; then
			log "removing containers left by the test: $(echo "$containers" | tr '\n' ' ')"
			# shellcheck disable=SC2086
			docker rm -f -v $containers >/dev/null 2>&1 || true
		fi
		volumes="$(docker volume ls -q --filter "label=iaas.owner=$owner" 2>/dev/null || true)"
		if [[ -n $volumes ]]; then
			# shellcheck disable=SC2086
			docker volume rm -f $volumes >/dev/null 2>&1 || true
		fi
	fi
	if [[ $status -ne 0 && -f $platform_log ]]; then
		log "the platform's log (last 60 lines):"
		tail -n 60 "$platform_log" >&2 || true
	fi
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Its log (stderr) is printed on failure; stdout, which carries the first-run admin password of
# this throw-away platform, is not.
log "starting the platform (data in $work/data)"
IAAS_LISTEN=127.0.0.1:0 \
	IAAS_DATA_DIR="$work/data" \
	IAAS_POSTGRES_IMAGE="${IAAS_TEST_POSTGRES_IMAGE:-iaas-local/postgres:15}" \
	IAAS_NGINX_IMAGE="${IAAS_TEST_NGINX_IMAGE:-iaas-local/nginx:1}" \
	RUST_LOG="${RUST_LOG:-info}" \
	NO_COLOR=1 \
	"$platform_bin" </dev/null >"$work/platform.stdout" 2>"$platform_log" &
platform_pid=$!

addr=""
deadline=$((SECONDS + ready_timeout_secs))
while [[ -z $addr ]]; do
	kill -0 "$platform_pid" 2>/dev/null || die "the platform exited before listening"
	((SECONDS < deadline)) || die "the platform did not log its address within ${ready_timeout_secs} s"
	addr="$(sed -n 's/.*listening.*addr=\([0-9.:]*\).*/\1/p' "$platform_log" | head -n 1)"
	[[ -n $addr ]] || sleep 0.2
done
base="http://$addr"
until curl -fsS "$base/readyz" >/dev/null 2>&1; do
	kill -0 "$platform_pid" 2>/dev/null || die "the platform exited before it was ready"
	((SECONDS < deadline)) || die "$base/readyz did not answer 200 within ${ready_timeout_secs} s"
	sleep 0.2
done
log "platform ready at $base"

# ---- the browser ---------------------------------------------------------------------------
mkdir -p "$shot_dir"
rm -f "$shot_dir"/dashboard*.png
IAAS_DASHBOARD_URL="$base" \
	IAAS_SCREENSHOT_DIR="$shot_dir" \
	IAAS_BROWSER_IMAGE="$image" \
	IAAS_BROWSER_OWNER_FILE="$owner_file" \
	CHROMIUM_PATH="$chromium_bin" \
	node "$browser_dir/dashboard.test.mjs"

# The delete in the browser must have removed the instance's containers.
owner="$(tr -d '[:space:]' <"$owner_file")"
left="$(docker ps -aq --filter "label=iaas.owner=$owner")"
[[ -z $left ]] || die "containers of the deleted instance remain: $left"
log "passed; screenshots in $shot_dir"
