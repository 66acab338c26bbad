//! The Elasticsearch adapter against the documented HTTP contract: a real HTTP server (axum on
//! 127.0.0.1:0) receives what the official client sends, checks the request shapes of the
//! `_bulk`, `_search` and `_index_template` APIs, and answers with response bodies in the
//! documented shapes, including a bulk answer with `"errors": true` and per-item errors.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

#[allow(dead_code, reason = "only the suite's event helpers are used here")]
mod log_index_suite;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use iaas_core::{EventAction, EventHandler, HandlerError, InstanceId, InstanceKind, UserId};
use iaas_events::monitoring::{
    CountQuery, ElasticsearchConfig, ElasticsearchLogIndex, IndexError, LogIndex, LogQuery,
    MonitoringIndexer,
};
use log_index_suite as suite;
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: String,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<(u16, Value)>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Script>>;

async fn answer(
    State(script): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut script = script.lock().unwrap();
    script.seen.push(Seen {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (status, body) = script
        .answers
        .pop_front()
        .unwrap_or((500, json!({ "error": "the test scripted no answer" })));
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json"), ("x-elastic-product", "Elasticsearch")],
        body.to_string(),
    )
}

/// A scripted server and an index pointing at it.
async fn server(answers: Vec<(u16, Value)>) -> (ElasticsearchLogIndex, Shared) {
    let script: Shared = Arc::new(Mutex::new(Script { answers: answers.into(), seen: Vec::new() }));
    let app = axum::Router::new().fallback(answer).with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = ElasticsearchConfig::new(format!("http://{addr}"));
    config.index = "logs-test".to_owned();
    config.timeout = Duration::from_secs(5);
    (ElasticsearchLogIndex::new(config).unwrap(), script)
}

fn seen(script: &Shared) -> Vec<Seen> {
    script.lock().unwrap().seen.clone()
}

fn ndjson(body: &str) -> Vec<Value> {
    assert!(body.ends_with('\n'), "NDJSON bodies end with a newline: {body:?}");
    body.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn created(id: &str, status: u16) -> Value {
    json!({ "create": { "_index": "logs-test", "_id": id, "_version": 1, "result": "created",
        "_shards": { "total": 2, "successful": 1, "failed": 0 }, "_seq_no": 0, "_primary_term": 1,
        "status": status } })
}

fn item_error(id: &str, status: u16, kind: &str, reason: &str) -> Value {
    json!({ "create": { "_index": "logs-test", "_id": id, "status": status,
        "error": { "type": kind, "reason": reason, "index": "logs-test" } } })
}

fn bulk_answer(errors: bool, items: Vec<Value>) -> Value {
    json!({ "took": 30, "errors": errors, "items": items })
}

fn sample(user: UserId, n: i64) -> Vec<iaas_core::InfrastructureEvent> {
    let instance = InstanceId::new_random();
    (0..n)
        .map(|i| {
            suite::event(user, instance, InstanceKind::Postgres, EventAction::Started, i)
                .with_metadata("container", format!("pg-{i}"))
        })
        .collect()
}

#[tokio::test]
async fn bulk_request_is_ndjson_create_with_the_event_id_as_document_id() {
    let events = sample(UserId::new_random(), 3);
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let items = ids.iter().map(|id| created(id, 201)).collect();
    let (index, script) = server(vec![(200, bulk_answer(false, items))]).await;

    index.index(&suite::entries(&events)).await.unwrap();

    let requests = seen(&script);
    assert_eq!(requests.len(), 1);
    let bulk = &requests[0];
    assert_eq!((bulk.method.clone(), bulk.path.as_str()), (Method::POST, "/logs-test/_bulk"));
    assert_eq!(bulk.content_type, "application/x-ndjson");
    assert_eq!(bulk.query, "", "no refresh unless configured");
    let lines = ndjson(&bulk.body);
    assert_eq!(lines.len(), 6, "one action line and one document per entry");
    for (pair, (event, id)) in lines.chunks(2).zip(events.iter().zip(&ids)) {
        assert_eq!(pair[0], json!({ "create": { "_id": id } }));
        let doc = &pair[1];
        assert_eq!(doc["event_id"], json!(id));
        assert_eq!(doc["user_id"], json!(event.user_id.to_string()));
        assert_eq!(doc["instance_id"], json!(event.instance_id.to_string()));
        assert_eq!(doc["type"], json!("postgres"));
        assert_eq!(doc["action"], json!("started"));
        assert_eq!(doc["level"], json!("info"));
        assert_eq!(doc["message"], json!("postgres started"));
        assert_eq!(doc["metadata"]["container"], json!(event.metadata["container"]));
        assert_eq!(
            doc["metadata_text"],
            json!(format!("container {}", event.metadata["container"]))
        );
        let ts = doc["timestamp"].as_str().unwrap();
        assert_eq!(chrono::DateTime::parse_from_rfc3339(ts).unwrap(), event.occurred_at);
    }
}

#[tokio::test]
async fn redelivered_entries_answered_409_count_as_indexed() {
    let events = sample(UserId::new_random(), 2);
    let items = vec![
        item_error(
            &events[0].id.to_string(),
            409,
            "version_conflict_engine_exception",
            "[x]: version conflict, document already exists (current version [1])",
        ),
        created(&events[1].id.to_string(), 201),
    ];
    let (index, _script) = server(vec![(200, bulk_answer(true, items))]).await;
    index.index(&suite::entries(&events)).await.unwrap();
}

#[tokio::test]
async fn mapping_error_on_an_item_rejects_that_entry_for_good() {
    let events = sample(UserId::new_random(), 3);
    let items = vec![
        created(&events[0].id.to_string(), 201),
        item_error(
            &events[1].id.to_string(),
            400,
            "document_parsing_exception",
            "[1:2] failed to parse field [timestamp] of type [date_nanos]",
        ),
        created(&events[2].id.to_string(), 201),
    ];
    let (index, _script) = server(vec![(200, bulk_answer(true, items.clone()))]).await;
    let err = index.index(&suite::entries(&events)).await.unwrap_err();
    match &err {
        IndexError::Rejected { event_id, reason, .. } => {
            assert_eq!(*event_id, events[1].id);
            assert!(reason.contains("document_parsing_exception"), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!err.is_transient());

    // Through the handler: a permanent failure, so the consumer dead-letters the event.
    let (index, _script) = server(vec![(
        200,
        bulk_answer(
            true,
            vec![item_error(&events[1].id.to_string(), 400, "document_parsing_exception", "bad")],
        ),
    )])
    .await;
    let handled = MonitoringIndexer::new(Arc::new(index)).handle(&events[1]).await;
    assert!(matches!(handled, Err(HandlerError::Permanent(_))), "{handled:?}");
}

#[tokio::test]
async fn rejected_items_and_overload_are_transient_and_the_retry_succeeds() {
    let events = sample(UserId::new_random(), 2);
    let (a, b) = (events[0].id.to_string(), events[1].id.to_string());
    let (index, script) = server(vec![
        // One item refused by a full write queue (429), the other indexed.
        (200, bulk_answer(true, vec![
            created(&a, 201),
            item_error(&b, 429, "es_rejected_execution_exception", "rejected execution of coordinating operation"),
        ])),
        // The whole cluster unavailable.
        (503, json!({ "error": { "type": "cluster_block_exception", "reason": "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered]" }, "status": 503 })),
        // The retry: the first is already there (409), the second goes in.
        (200, bulk_answer(true, vec![
            item_error(&a, 409, "version_conflict_engine_exception", "document already exists"),
            created(&b, 201),
        ])),
    ])
    .await;
    let indexer = MonitoringIndexer::new(Arc::new(index.clone()));
    let entries = suite::entries(&events);
    let first = index.index(&entries).await.unwrap_err();
    assert!(first.is_transient(), "{first:?}");
    assert!(first.to_string().contains("elasticsearch"), "{first}");
    let second = index.index(&entries).await.unwrap_err();
    assert!(second.is_transient(), "{second:?}");
    index.index(&entries).await.unwrap();
    assert_eq!(seen(&script).len(), 3);
    // And the handler maps an unreachable server to a transient failure.
    drop(indexer);
    let mut config = ElasticsearchConfig::new("http://127.0.0.1:1");
    config.timeout = Duration::from_secs(2);
    let down = MonitoringIndexer::new(Arc::new(ElasticsearchLogIndex::new(config).unwrap()));
    let handled = down.handle(&events[0]).await;
    assert!(matches!(handled, Err(ref e) if e.is_transient()), "{handled:?}");
}

#[tokio::test]
async fn search_is_a_bool_query_with_user_filter_sort_and_search_after() {
    let user = UserId::new_random();
    let events = sample(user, 3);
    let entries = suite::entries(&events);
    let hit = |i: usize| {
        let e = &entries[i];
        json!({ "_index": "logs-test", "_id": e.event_id.to_string(), "_score": null,
            "_source": serde_json::to_value(e).unwrap(),
            "sort": [e.timestamp.timestamp_nanos_opt().unwrap(), e.event_id.to_string()] })
    };
    let page = |hits: Vec<Value>| {
        json!({ "took": 5, "timed_out": false,
            "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
            "hits": { "max_score": null, "hits": hits } })
    };
    let (index, script) =
        server(vec![(200, page(vec![hit(2), hit(1), hit(0)])), (200, page(vec![hit(0)]))]).await;

    let instance = events[0].instance_id;
    let query = LogQuery::for_user(user)
        .instance(instance)
        .kind(InstanceKind::Postgres)
        .action(EventAction::Started)
        .between(suite::at(0), suite::at(100))
        .text("PG-1 started")
        .limit(2);
    let first = index.search(&query).await.unwrap();
    assert_eq!(first.entries, vec![entries[2].clone(), entries[1].clone()]);
    let cursor = first.next_cursor.expect("three hits for a limit of two: a next page");
    let second = index.search(&query.clone().after(Some(cursor))).await.unwrap();
    assert_eq!(second.entries, vec![entries[0].clone()]);
    assert_eq!(second.next_cursor, None);

    let requests = seen(&script);
    assert_eq!(requests[0].path, "/logs-test/_search");
    let body: Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(body["size"], json!(3), "limit + 1, to know whether a next page exists");
    assert_eq!(body["sort"], json!([{ "timestamp": "desc" }, { "event_id": "desc" }]));
    let filters = body["query"]["bool"]["filter"].as_array().unwrap();
    for expected in [
        json!({ "term": { "user_id": user.to_string() } }),
        json!({ "term": { "instance_id": instance.to_string() } }),
        json!({ "term": { "type": "postgres" } }),
        json!({ "term": { "action": "started" } }),
        json!({ "range": { "timestamp": { "gte": "2025-06-15T15:00:00Z", "lt": "2025-06-15T15:01:40Z" } } }),
    ] {
        assert!(filters.contains(&expected), "{expected} missing from {filters:?}");
    }
    let text = &body["query"]["bool"]["must"][0]["simple_query_string"];
    assert_eq!(text["query"], json!("pg 1 started"));
    assert_eq!(text["default_operator"], json!("and"));
    assert_eq!(text["fields"], json!(["message", "metadata_text"]));
    assert!(body.get("search_after").is_none());

    let body: Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(
        body["search_after"],
        json!([
            entries[1].timestamp.timestamp_nanos_opt().unwrap(),
            entries[1].event_id.to_string()
        ])
    );
}

#[tokio::test]
async fn counts_come_from_a_date_histogram_with_terms_sub_aggregations() {
    let user = UserId::new_random();
    let start = suite::at(0).timestamp_millis();
    let answer = json!({
        "took": 3, "timed_out": false, "hits": { "hits": [] },
        "aggregations": { "buckets": { "buckets": [
            { "key_as_string": "2025-06-15T15:00:00.000Z", "key": start, "doc_count": 3,
              "by_action": { "doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                "buckets": [ { "key": "started", "doc_count": 2 }, { "key": "failed", "doc_count": 1 } ] },
              "by_type": { "doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                "buckets": [ { "key": "nginx", "doc_count": 3 } ] } },
            { "key_as_string": "2025-06-15T15:01:00.000Z", "key": start + 60_000, "doc_count": 1,
              "by_action": { "buckets": [ { "key": "stopped", "doc_count": 1 } ] },
              "by_type": { "buckets": [ { "key": "postgres", "doc_count": 1 } ] } }
        ] } }
    });
    let (index, script) = server(vec![(200, answer)]).await;
    let counts = index
        .counts(&CountQuery::new(user, suite::at(0), suite::at(3600), Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(counts.buckets.len(), 2);
    assert_eq!(counts.buckets[0].start, suite::at(0));
    assert_eq!(counts.buckets[0].total, 3);
    assert_eq!(counts.buckets[0].by_action.get("started"), Some(&2));
    assert_eq!(counts.buckets[0].by_action.get("failed"), Some(&1));
    assert_eq!(counts.buckets[0].by_type.get("nginx"), Some(&3));
    assert_eq!(counts.buckets[1].start, suite::at(60));
    assert_eq!(counts.buckets[1].by_type.get("postgres"), Some(&1));

    let body: Value = serde_json::from_str(&seen(&script)[0].body).unwrap();
    assert_eq!(body["size"], json!(0));
    let histogram = &body["aggs"]["buckets"]["date_histogram"];
    assert_eq!(histogram["field"], json!("timestamp"));
    assert_eq!(histogram["fixed_interval"], json!("60s"));
    assert_eq!(body["aggs"]["buckets"]["aggs"]["by_action"]["terms"]["field"], json!("action"));
    assert_eq!(body["aggs"]["buckets"]["aggs"]["by_type"]["terms"]["field"], json!("type"));
    let filters = body["query"]["bool"]["filter"].as_array().unwrap();
    assert!(filters.contains(&json!({ "term": { "user_id": user.to_string() } })));
}

#[tokio::test]
async fn template_has_explicit_strict_mappings() {
    let (index, script) = server(vec![(200, json!({ "acknowledged": true }))]).await;
    index.ensure_template().await.unwrap();
    let request = &seen(&script)[0];
    assert_eq!(
        (request.method.clone(), request.path.as_str()),
        (Method::PUT, "/_index_template/logs-test-template")
    );
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["index_patterns"], json!(["logs-test*"]));
    let mappings = &body["template"]["mappings"];
    assert_eq!(mappings["dynamic"], json!("strict"));
    for (field, kind) in [
        ("event_id", "keyword"),
        ("instance_id", "keyword"),
        ("user_id", "keyword"),
        ("type", "keyword"),
        ("action", "keyword"),
        ("level", "keyword"),
        ("message", "text"),
        ("metadata", "flattened"),
        ("metadata_text", "text"),
        ("timestamp", "date_nanos"),
    ] {
        assert_eq!(mappings["properties"][field]["type"], json!(kind), "{field}");
    }
    // Every field a document carries is mapped (strict mode would reject the others).
    let doc =
        serde_json::to_value(suite::entries(&sample(UserId::new_random(), 1)).remove(0)).unwrap();
    for field in doc.as_object().unwrap().keys() {
        assert!(mappings["properties"].get(field).is_some(), "{field} is not mapped");
    }

    let (index, _script) = server(vec![(400, json!({ "error": { "type": "illegal_argument_exception", "reason": "bad template" }, "status": 400 }))]).await;
    let err = index.ensure_template().await.unwrap_err();
    assert!(err.to_string().contains("template"), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn invalid_queries_never_reach_the_server() {
    let (index, script) = server(vec![]).await;
    let err = index.search(&LogQuery::for_user(UserId::new_random()).limit(0)).await.unwrap_err();
    assert!(matches!(err, IndexError::InvalidQuery { field: "limit", .. }));
    assert!(seen(&script).is_empty());
    assert!(matches!(
        ElasticsearchLogIndex::new(ElasticsearchConfig::new("not a url")),
        Err(IndexError::InvalidConfig { key: "url", .. })
    ));
}
