//! The embedded log index (SQLite + FTS5) on real files in a temporary directory, through the
//! shared `LogIndex` suite, plus what only a file can show: the index survives a reopen.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod log_index_suite;

use std::path::PathBuf;
use std::sync::Arc;

use iaas_core::{EventAction, InstanceId, InstanceKind, UserId};
use iaas_events::monitoring::{LogIndex, LogQuery, SqliteIndexConfig, SqliteLogIndex};
use log_index_suite as suite;

/// A fresh directory under the system temp dir, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name(test));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &TempDir) -> SqliteLogIndex {
    SqliteLogIndex::open(&SqliteIndexConfig::new(dir.0.join("logs.db"))).await.unwrap()
}

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() {
            let dir = TempDir::new(stringify!($name));
            suite::$name(&open(&dir).await).await;
        }
    };
}

suite_test!(indexed_entry_comes_back_whole);
suite_test!(each_filter_narrows_the_results);
suite_test!(cursor_pages_have_no_duplicates_or_gaps);
suite_test!(text_search_matches_words_of_message_and_metadata);
suite_test!(counts_per_action_and_type_per_bucket);
suite_test!(another_users_entries_are_never_returned);
suite_test!(bad_queries_are_refused_with_the_field);

#[tokio::test]
async fn redelivery_never_duplicates() {
    let dir = TempDir::new("redelivery_never_duplicates");
    suite::redelivery_never_duplicates(Arc::new(open(&dir).await)).await;
}

#[tokio::test]
async fn entries_survive_closing_and_reopening_the_file() {
    let dir = TempDir::new("entries_survive_reopen");
    let user = UserId::new_random();
    let events: Vec<_> = (0..5)
        .map(|i| {
            suite::event(
                user,
                InstanceId::new_random(),
                InstanceKind::Nginx,
                EventAction::Created,
                i,
            )
        })
        .collect();
    {
        let index = open(&dir).await;
        index.index(&suite::entries(&events)).await.unwrap();
    }
    let reopened = open(&dir).await;
    // Reindexing after the reopen (a consumer replaying uncommitted offsets) adds nothing.
    reopened.index(&suite::entries(&events)).await.unwrap();
    let got = suite::all_pages(&reopened, LogQuery::for_user(user).limit(2)).await;
    assert_eq!(got.len(), 5);
    assert_eq!(
        reopened
            .search(&LogQuery::for_user(user).text("nginx created"))
            .await
            .unwrap()
            .entries
            .len(),
        5
    );
    assert!(dir.0.join("logs.db").metadata().unwrap().len() > 0);
}

#[tokio::test]
async fn concurrent_writers_and_readers_share_one_file() {
    let dir = TempDir::new("concurrent_writers");
    let index: Arc<dyn LogIndex> = Arc::new(open(&dir).await);
    let user = UserId::new_random();
    let mut tasks = Vec::new();
    for w in 0..4_i64 {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let event = suite::event(
                    user,
                    InstanceId::new_random(),
                    InstanceKind::Docker,
                    EventAction::Started,
                    w * 100 + i,
                );
                index.index(&suite::entries(&[event])).await.unwrap();
                index.search(&LogQuery::for_user(user)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        suite::all_pages(index.as_ref(), LogQuery::for_user(user).limit(500)).await.len(),
        100
    );
}
