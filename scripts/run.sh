#!/usr/bin/env bash
# scripts/run.sh — runs the platform on its embedded defaults, first setting up what it needs.
#
# On a fresh Debian 12 machine, as root, it installs and starts what is missing: the build
# prerequisites (a C compiler and make, for librdkafka), the Docker engine, and the tools the
# tutorial uses (curl, jq, psql). When no registry answers it builds the local PostgreSQL and
# Nginx images from Debian packages (scripts/services.sh, images under scripts/images/) and
# points the image catalog at them. Then it runs `cargo run -p iaas-platform`, passing on its
# arguments, so docs/tutorial.md works as written in a second terminal.
#
# Not root, it installs nothing: it checks that the engine answers, says what is missing, and
# runs the platform. Every IAAS_* setting already in the environment is kept, as is DOCKER_HOST;
# IAAS_POSTGRES_IMAGE / IAAS_NGINX_IMAGE set by the caller are used as they are.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# services.sh, sourced, defines its helpers (packages, engine, images) without running them.
# shellcheck source=scripts/services.sh
. "$ROOT/scripts/services.sh"

readonly RUN_PACKAGES=(docker.io debootstrap make gcc pkg-config curl jq postgresql-client procps)
# How long a pull may take before the registry is taken as unreachable (a closed network
# usually fails at once; a slow one gets this long per image).
readonly PULL_TIMEOUT_SECS="${IAAS_PULL_TIMEOUT_SECS:-300}"

# image_for VAR DEFAULT LOCAL_NAME LOCAL_IMAGE: exports VAR naming an image the engine has:
# the caller's, else DEFAULT when present or pullable, else LOCAL_IMAGE built from
# scripts/images/LOCAL_NAME.
image_for() {
	local var="$1" default="$2" name="$3" local_image="$4"
	if [ -n "${!var:-}" ]; then
		log "images: $var=${!var} (set by the caller)"
		return
	fi
	if docker image inspect "$default" >/dev/null 2>&1; then
		log "images: $default is present"
		return
	fi
	log "images: pulling $default"
	if timeout "$PULL_TIMEOUT_SECS" docker pull -q "$default" >/dev/null 2>>"$LOG_DIR/iaas-pull.log"; then
		return
	fi
	log "images: no registry answers for $default; using $local_image built from Debian packages"
	if [ "$(id -u)" != 0 ]; then
		docker image inspect "$local_image" >/dev/null 2>&1 ||
			die "$default cannot be pulled and $local_image is not built: run this script as root once, or set $var to an image the engine has"
	else
		ensure_built_image "$name" "$local_image"
	fi
	export "$var=$local_image"
}

run_main() {
	if [ "$(id -u)" = 0 ]; then
		mkdir -p "$STATE_DIR"
		ensure_packages "${RUN_PACKAGES[@]}"
		ensure_docker
	else
		command -v cc >/dev/null && command -v make >/dev/null ||
			die "building the platform needs a C compiler and make (Debian: apt-get install gcc make), or run this as root"
		docker_server_up ||
			die "no Docker engine answers (${DOCKER_HOST:-unix:///var/run/docker.sock}): start it, or run this as root to install and start one"
	fi
	image_for IAAS_POSTGRES_IMAGE postgres:16 postgres "$DEFAULT_POSTGRES_IMAGE"
	image_for IAAS_NGINX_IMAGE nginx:1.27 nginx "$DEFAULT_NGINX_IMAGE"
	# No registry publishes an image of PostgreSQL with Patroni and pgBackRest: the highly
	# available clusters' image is always the local one.
	if [ -z "${IAAS_POSTGRES_HA_IMAGE:-}" ] && [ "$(id -u)" = 0 ]; then
		ensure_built_image postgres-ha "$DEFAULT_POSTGRES_HA_IMAGE"
	fi
	cd "$ROOT"
	log "platform: cargo run -p iaas-platform (the first build takes a few minutes)"
	exec cargo run --locked -p iaas-platform -- "$@"
}

run_main "$@"
