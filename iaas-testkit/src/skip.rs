//! Skipping a fault test that cannot run here, loudly: under `scripts/test.sh` (which sets
//! [`STRICT_VAR`]) a skip is a failure, so a green CI never hides a fault run it did not do.

/// Set by `scripts/test.sh`: every fault test must run.
pub const STRICT_VAR: &str = "IAAS_TEST_STRICT";

/// Reports that `test` cannot run here because of `reason`: panics when [`STRICT_VAR`] is set,
/// else prints `SKIPPED: ...` on stderr. The caller returns right after.
pub fn skip_fault_test(test: &str, reason: &str) {
    assert!(
        std::env::var_os(STRICT_VAR).is_none(),
        "{test} must run under {STRICT_VAR} but cannot: {reason}"
    );
    eprintln!("SKIPPED: {test}: {reason}");
}
