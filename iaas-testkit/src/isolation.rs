//! Names that keep parallel tests out of each other's way on shared services.

use std::sync::OnceLock;

use uuid::Uuid;

/// Label put on every container a test starts, with the [`run_id`] as value, so a run's leftovers
/// can be found (`docker ps -a --filter label=iaas.test.run`).
pub const RUN_LABEL: &str = "iaas.test.run";

/// An id shared by everything one test process creates.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(short_id)
}

fn short_id() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A name no other test uses: `{prefix}-{12 hex digits}`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", short_id())
}

/// A path in the system's temporary directory no other test uses (not created).
pub fn temp_dir(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(unique_name(prefix))
}

/// A Redis key prefix no other test uses, ending in `:`.
pub fn key_prefix(test: &str) -> String {
    format!("test:{}:", unique_name(test))
}

/// A Kafka topic name no other test uses (letters, digits, `.`, `-` only).
pub fn topic_name(test: &str) -> String {
    format!("test.{}", unique_name(test))
}

/// A PostgreSQL database name no other test uses (lowercase letters, digits, `_`), within the
/// server's 63 bytes: a long test name is shortened, never the unique part.
pub fn database_name(test: &str) -> String {
    let id = short_id();
    let room = 63 - "test__".len() - id.len();
    let test: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(room)
        .collect();
    format!("test_{test}_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        assert_ne!(unique_name("a"), unique_name("a"));
        assert!(
            key_prefix("cache").starts_with("test:cache-") && key_prefix("cache").ends_with(':')
        );
        let topic = topic_name("relay");
        assert!(
            topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "{topic}"
        );
        let db = database_name("Outbox-Claim");
        assert!(
            db.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{db}"
        );
        assert_eq!(run_id(), run_id());
    }
}
