#!/usr/bin/env bash
# scripts/publish-check.sh — what `cargo publish` would upload, checked without uploading.
#
# Packages every publishable crate of the workspace in dependency order and verifies each one by
# building it from its package alone, with its workspace dependencies resolved to the packages
# made in the same run (`cargo publish --dry-run --workspace`). A crate that depends on a file
# outside its own directory, on a path-only dependency, or on a feature of a sibling that the
# sibling's package does not have fails here, not on crates.io.
#
# The packages leave out `tests/`: those integration tests need the workspace's unpublished
# test kit (iaas-testkit) and real services, so they run from the repository (scripts/test.sh),
# not from a downloaded crate. Arguments are passed on to cargo (e.g. --allow-dirty while
# editing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Cargo unpacks each package it verifies against into $CARGO_HOME/registry/src/<registry>/
# and reuses that copy whenever the name and version match. The workspace's own crates keep
# their version between commits, so a copy from an earlier run would be verified instead of
# this checkout: remove them first.
#
# And the builds of those copies: cargo packs every file with one fixed modification time, so
# an unpacked copy always looks older than what was built from an earlier one, and that build
# would be reused. Its dependency file (`deps/<crate>-<hash>.d`) names the copy's path: the
# build's fingerprint (`.fingerprint/<package>-<hash>`) goes, so cargo builds it again.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
debug="${CARGO_TARGET_DIR:-target}/debug"
cargo metadata --no-deps --format-version 1 --locked |
	python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    print(p["name"] + "-" + p["version"])' |
	while read -r unpacked; do
		rm -rf "$cargo_home"/registry/src/*/"$unpacked"
		[ -d "$debug/deps" ] || continue
		{ grep -laF "registry/src/" "$debug"/deps/*.d 2>/dev/null || true; } |
			{ xargs -r grep -laF "/$unpacked/" || true; } |
			while read -r depfile; do
				hash="${depfile##*-}"
				rm -rf "$debug"/.fingerprint/*-"${hash%.d}"
			done
	done

cargo publish --dry-run --workspace --locked "$@"
