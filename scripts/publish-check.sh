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
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
cargo metadata --no-deps --format-version 1 --locked |
	python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    print(p["name"] + "-" + p["version"])' |
	while read -r unpacked; do
		rm -rf "$cargo_home"/registry/src/*/"$unpacked"
	done

cargo publish --dry-run --workspace --locked "$@"
