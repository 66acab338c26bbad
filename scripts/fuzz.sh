#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and fails on the first crash.
#
#   scripts/fuzz.sh [seconds-per-target]   (default 20; longer by hand, e.g. 3600)
#
# Installs cargo-fuzz when it is missing (`cargo install cargo-fuzz --locked`, once). Builds with
# the nightly toolchain when rustup has one, else with the stable one (RUSTC_BOOTSTRAP=1: the
# sanitizer-free build needs no unstable feature beyond the flags cargo-fuzz passes). Builds go
# to $CARGO_TARGET_DIR/fuzz (target/fuzz by default), apart from the workspace's own artifacts
# and kept between runs, so a second run only fuzzes. Each target starts from its checked-in seeds
# (fuzz/seeds/<target>, read-only) and grows its working corpus in fuzz/corpus/<target>
# (gitignored); a crash leaves its input in fuzz/artifacts/<target>/. The sanitizer is off by
# default: every crate of the project forbids unsafe code, so the targets look for panics and
# broken invariants; set FUZZ_SANITIZER=address to build with AddressSanitizer.
set -euo pipefail

seconds="${1:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it (once): cargo install cargo-fuzz --locked" >&2
    cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    echo "no nightly toolchain; building the fuzz targets with stable and RUSTC_BOOTSTRAP=1" >&2
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi

targets=(event_codec token_verify config_parser docker_event)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/fuzz"
cargo "${toolchain[@]}" fuzz build --sanitizer "$sanitizer"

status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "== $target: ${seconds}s"
    log="$(mktemp)"
    if cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1; then
        grep -E '^(stat::|Done|#[0-9]+ *DONE)' "$log" || tail -n 5 "$log"
    else
        echo "!! $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        tail -n 40 "$log" >&2
        status=1
    fi
    rm -f "$log"
done
exit "$status"
