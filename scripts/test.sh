#!/usr/bin/env bash
# The project's one test command: installs and starts every real service the tests need
# (scripts/services.sh), then runs the same checks CI runs, in order of cost:
# formatting, clippy (-D warnings), the doc build (-D warnings), doc tests, and every test
# against real Redis, Kafka-protocol broker, PostgreSQL and Docker engine; then the dashboard in
# headless Chromium (scripts/browser-test.sh), schemathesis against every OpenAPI document
# (scripts/schemathesis.sh) and a bounded run of every fuzz target (scripts/fuzz.sh). Before the
# browser test, every publishable crate is packaged and verified (scripts/publish-check.sh).
#
# Environment: every IAAS_TEST_* variable and DOCKER_HOST already set is respected (the
# service it names is used instead of a local one). CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Tests that cannot run here (no root for a firewall rule, a missing binary) print why and
# pass when run by hand; under this script they fail instead, so a green run hides no skip.
export IAAS_TEST_STRICT=1

step "services"
env_file="${IAAS_SERVICES_ENV_FILE:-/var/lib/iaas-test/services.env}"
export IAAS_SERVICES_ENV_FILE="$env_file"
scripts/services.sh >/dev/null
# shellcheck disable=SC1090
source "$env_file"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc -D warnings"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -Dwarnings" cargo doc --workspace --no-deps --locked

step "doc tests"
cargo test --workspace --doc --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci "$@"
else
  echo "cargo-nextest not found; running cargo test (install it with: cargo install cargo-nextest --locked)" >&2
  cargo test --workspace --locked --all-targets "$@"
fi

step "publish check (cargo publish --dry-run, every crate verified from its package)"
scripts/publish-check.sh

step "browser test (headless Chromium)"
scripts/browser-test.sh

step "schemathesis"
scripts/schemathesis.sh

step "fuzz (20 s per target)"
scripts/fuzz.sh 20
