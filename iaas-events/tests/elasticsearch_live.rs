//! The shared `LogIndex` suite against a real Elasticsearch. Runs only when
//! `IAAS_TEST_ELASTICSEARCH_URL` is set (`iaas_testkit::elasticsearch` prints why it skips
//! otherwise); every test writes to its own index, created through the adapter's template.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod log_index_suite;

use std::sync::Arc;

use iaas_events::monitoring::{ElasticsearchConfig, ElasticsearchLogIndex};
use log_index_suite as suite;

/// An index of its own for `test`, with the template installed, or `None` when no server is set.
async fn live(test: &str) -> Option<ElasticsearchLogIndex> {
    let url = iaas_testkit::elasticsearch(test)?;
    let mut config = ElasticsearchConfig::new(url);
    // Index names must be lowercase; the template pattern is `{index}*`.
    config.index = iaas_testkit::isolation::unique_name("iaas-logs-test").to_lowercase();
    // Searches right after writes must see them.
    config.refresh_on_write = true;
    let index = ElasticsearchLogIndex::new(config).unwrap();
    index.ensure_template().await.unwrap();
    Some(index)
}

macro_rules! live_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() {
            let Some(index) = live(stringify!($name)).await else { return };
            suite::$name(&index).await;
        }
    };
}

live_test!(indexed_entry_comes_back_whole);
live_test!(each_filter_narrows_the_results);
live_test!(cursor_pages_have_no_duplicates_or_gaps);
live_test!(text_search_matches_words_of_message_and_metadata);
live_test!(counts_per_action_and_type_per_bucket);
live_test!(another_users_entries_are_never_returned);
live_test!(bad_queries_are_refused_with_the_field);

#[tokio::test]
async fn redelivery_never_duplicates() {
    let Some(index) = live("redelivery_never_duplicates").await else { return };
    suite::redelivery_never_duplicates(Arc::new(index)).await;
}
