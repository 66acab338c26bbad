//! The behaviour every `LogIndex` backend must show, run against the embedded index and (when
//! `IAAS_TEST_ELASTICSEARCH_URL` is set) a real Elasticsearch. Every check uses fresh users, so
//! backends shared between tests (one Elasticsearch index) stay isolated.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use iaas_core::{EventAction, EventHandler, InfrastructureEvent, InstanceId, InstanceKind, UserId};
use iaas_events::monitoring::{
    CountQuery, Cursor, IndexError, LogEntry, LogIndex, LogQuery, MonitoringIndexer,
};

/// A fixed base time on a whole hour, so stored timestamps compare exactly and count buckets
/// start at it.
pub(crate) fn base() -> DateTime<Utc> {
    DateTime::from_timestamp(1_749_999_600, 0).unwrap()
}

pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    base() + chrono::Duration::seconds(seconds)
}

pub(crate) fn event(
    user: UserId,
    instance: InstanceId,
    kind: InstanceKind,
    action: EventAction,
    seconds: i64,
) -> InfrastructureEvent {
    InfrastructureEvent::new(instance, user, kind, action, at(seconds))
}

pub(crate) fn entries(events: &[InfrastructureEvent]) -> Vec<LogEntry> {
    events.iter().map(LogEntry::from_event).collect()
}

/// Every page of `query`, following cursors, with the ids in the order returned.
pub(crate) async fn all_pages(index: &dyn LogIndex, query: LogQuery) -> Vec<LogEntry> {
    let mut out = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..1000 {
        let page = index.search(&query.clone().after(cursor)).await.unwrap();
        assert!(page.entries.len() <= query.limit as usize);
        out.extend(page.entries);
        match page.next_cursor {
            // Through its text, as an HTTP client would carry it.
            Some(next) => cursor = Some(next.to_string().parse().unwrap()),
            None => return out,
        }
    }
    panic!("pagination never ended");
}

fn ids(entries: &[LogEntry]) -> Vec<iaas_core::EventId> {
    entries.iter().map(|e| e.event_id).collect()
}

/// Newest first by (timestamp, event id), as every backend must order.
fn expected_order(events: &[InfrastructureEvent]) -> Vec<iaas_core::EventId> {
    let mut sorted: Vec<_> = events.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse((e.occurred_at, e.id.to_string())));
    sorted.into_iter().map(|e| e.id).collect()
}

pub(crate) async fn indexed_entry_comes_back_whole(index: &dyn LogIndex) {
    let user = UserId::new_random();
    let event =
        event(user, InstanceId::new_random(), InstanceKind::Postgres, EventAction::Failed, 5)
            .with_metadata("exit_code", "137")
            .with_metadata("container", "pg-main");
    index.index(&entries(std::slice::from_ref(&event))).await.unwrap();
    let page = index.search(&LogQuery::for_user(user)).await.unwrap();
    assert_eq!(page.entries, entries(&[event]));
    assert_eq!(page.entries[0].message, "postgres failed");
    assert_eq!(page.next_cursor, None);
}

pub(crate) async fn each_filter_narrows_the_results(index: &dyn LogIndex) {
    let user = UserId::new_random();
    let (a, b) = (InstanceId::new_random(), InstanceId::new_random());
    let events = vec![
        event(user, a, InstanceKind::Postgres, EventAction::Created, 0),
        event(user, a, InstanceKind::Postgres, EventAction::Started, 10),
        event(user, b, InstanceKind::Nginx, EventAction::Started, 20),
        event(user, b, InstanceKind::Nginx, EventAction::Stopped, 30),
        event(user, a, InstanceKind::Postgres, EventAction::Stopped, 40),
    ];
    index.index(&entries(&events)).await.unwrap();
    let search = |query: LogQuery| async move { ids(&index.search(&query).await.unwrap().entries) };
    let q = || LogQuery::for_user(user);

    assert_eq!(search(q()).await, expected_order(&events));
    assert_eq!(search(q().instance(b)).await, [events[3].id, events[2].id]);
    assert_eq!(
        search(q().kind(InstanceKind::Postgres)).await,
        [events[4].id, events[1].id, events[0].id]
    );
    assert_eq!(search(q().action(EventAction::Started)).await, [events[2].id, events[1].id]);
    // [from, to): 10 is in, 30 is out.
    assert_eq!(search(q().between(at(10), at(30))).await, [events[2].id, events[1].id]);
    assert_eq!(
        search(q().instance(a).action(EventAction::Stopped).between(at(0), at(41))).await,
        [events[4].id]
    );
    assert!(search(q().kind(InstanceKind::Docker)).await.is_empty());
}

pub(crate) async fn cursor_pages_have_no_duplicates_or_gaps(index: &dyn LogIndex) {
    let user = UserId::new_random();
    let instance = InstanceId::new_random();
    // 23 events over 8 distinct timestamps: ties must be broken by event id across pages.
    let events: Vec<_> = (0..23)
        .map(|i| event(user, instance, InstanceKind::Docker, EventAction::ConfigChanged, i / 3))
        .collect();
    index.index(&entries(&events)).await.unwrap();
    for limit in [1, 5, 7, 23, 50] {
        let got = all_pages(index, LogQuery::for_user(user).limit(limit)).await;
        assert_eq!(ids(&got), expected_order(&events), "limit {limit}");
    }
    let got = all_pages(index, LogQuery::for_user(user).instance(instance).limit(4)).await;
    assert_eq!(ids(&got), expected_order(&events));
}

pub(crate) async fn text_search_matches_words_of_message_and_metadata(index: &dyn LogIndex) {
    let user = UserId::new_random();
    let instance = InstanceId::new_random();
    let events = vec![
        event(user, instance, InstanceKind::Postgres, EventAction::Started, 1)
            .with_metadata("container", "orders-db"),
        event(user, instance, InstanceKind::Nginx, EventAction::Failed, 2)
            .with_metadata("reason", "oom killed"),
        event(user, instance, InstanceKind::Nginx, EventAction::Started, 3),
    ];
    index.index(&entries(&events)).await.unwrap();
    let search = |q: &'static str| async move {
        let mut got = ids(&index.search(&LogQuery::for_user(user).text(q)).await.unwrap().entries);
        got.sort();
        got
    };
    let sorted = |mut v: Vec<iaas_core::EventId>| {
        v.sort();
        v
    };
    assert_eq!(search("nginx").await, sorted(vec![events[1].id, events[2].id]));
    assert_eq!(search("OOM").await, vec![events[1].id]);
    assert_eq!(search("orders").await, vec![events[0].id]);
    assert_eq!(search("nginx started").await, vec![events[2].id]);
    assert!(search("absentword").await.is_empty());
    // Query syntax typed by a user is just text, never an error.
    assert_eq!(search("\"oom\" (killed*").await, vec![events[1].id]);
    assert_eq!(search("  ").await.len(), 3);
}

pub(crate) async fn counts_per_action_and_type_per_bucket(index: &dyn LogIndex) {
    let user = UserId::new_random();
    let instance = InstanceId::new_random();
    let events = vec![
        event(user, instance, InstanceKind::Postgres, EventAction::Started, 0),
        event(user, instance, InstanceKind::Postgres, EventAction::Stopped, 59),
        event(user, instance, InstanceKind::Nginx, EventAction::Started, 60),
        event(user, instance, InstanceKind::Nginx, EventAction::Started, 61),
        event(user, instance, InstanceKind::Nginx, EventAction::Failed, 200),
        // Outside [from, to).
        event(user, instance, InstanceKind::Nginx, EventAction::Failed, 300),
    ];
    index.index(&entries(&events)).await.unwrap();
    // `base()` is a whole multiple of 60 s since the epoch, so buckets start at at(0), at(60)...
    let counts = index
        .counts(&CountQuery::new(user, at(0), at(300), Duration::from_secs(60)))
        .await
        .unwrap();
    let got: Vec<_> = counts
        .buckets
        .iter()
        .map(|b| {
            let actions: Vec<_> = b.by_action.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let types: Vec<_> = b.by_type.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            (b.start, b.total, actions, types)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (at(0), 2, vec![("started", 1), ("stopped", 1)], vec![("postgres", 2)]),
            (at(60), 2, vec![("started", 2)], vec![("nginx", 2)]),
            (at(180), 1, vec![("failed", 1)], vec![("nginx", 1)]),
        ]
    );
}

pub(crate) async fn redelivery_never_duplicates(index: std::sync::Arc<dyn LogIndex>) {
    let user = UserId::new_random();
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..10)
        .map(|i| event(user, instance, InstanceKind::Postgres, EventAction::Started, i))
        .collect();
    index.index(&entries(&events)).await.unwrap();
    // The same batch again, a batch overlapping it, and every event through the handler twice.
    index.index(&entries(&events)).await.unwrap();
    index.index(&entries(&events[5..])).await.unwrap();
    let indexer = MonitoringIndexer::new(index.clone());
    for event in events.iter().chain(&events) {
        indexer.handle(event).await.unwrap();
    }
    let got = all_pages(index.as_ref(), LogQuery::for_user(user).limit(3)).await;
    assert_eq!(got.len(), 10);
    assert_eq!(ids(&got).into_iter().collect::<HashSet<_>>().len(), 10);
    let counts = index
        .counts(&CountQuery::new(user, at(0), at(3600), Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(counts.buckets.iter().map(|b| b.total).sum::<u64>(), 10);
    assert_eq!(
        index.search(&LogQuery::for_user(user).text("postgres")).await.unwrap().entries.len(),
        10
    );
}

pub(crate) async fn another_users_entries_are_never_returned(index: &dyn LogIndex) {
    let (alice, mallory) = (UserId::new_random(), UserId::new_random());
    let instance = InstanceId::new_random();
    let alices = event(alice, instance, InstanceKind::Postgres, EventAction::Started, 1)
        .with_metadata("secret", "alicedata");
    index.index(&entries(&[alices])).await.unwrap();
    // Mallory knows the instance id, the text and the time: still nothing.
    let query = LogQuery::for_user(mallory)
        .instance(instance)
        .kind(InstanceKind::Postgres)
        .text("alicedata")
        .between(at(0), at(10));
    assert!(index.search(&query).await.unwrap().entries.is_empty());
    assert!(index.search(&LogQuery::for_user(mallory)).await.unwrap().entries.is_empty());
    let counts = index
        .counts(&CountQuery::new(mallory, at(0), at(3600), Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(counts.buckets.is_empty());
    assert_eq!(
        index.search(&LogQuery::for_user(alice).text("alicedata")).await.unwrap().entries.len(),
        1
    );
}

pub(crate) async fn bad_queries_are_refused_with_the_field(index: &dyn LogIndex) {
    let user = UserId::new_random();
    let err = index.search(&LogQuery::for_user(user).limit(501)).await.unwrap_err();
    assert!(matches!(err, IndexError::InvalidQuery { field: "limit", .. }), "{err}");
    assert_eq!(err.http_status(), 400);
    let err = index
        .counts(&CountQuery::new(user, at(0), at(86_400), Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, IndexError::InvalidQuery { field: "bucket", .. }), "{err}");
    assert!("not-a-cursor".parse::<Cursor>().is_err());
}
