//! The monitoring API over HTTP on the embedded index: a user finds their own events, pages
//! through them, counts them, and gets a named 4xx for every bad parameter.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use chrono::{Duration, Utc};
use http_body_util::BodyExt as _;
use iaas_core::{
    EventAction, EventHandler, InfrastructureEvent, InstanceId, InstanceKind, Principal, UserId,
};
use iaas_events::monitoring::{
    MonitoringIndexer, SCOPE_EVENTS_READ, SqliteIndexConfig, SqliteLogIndex, monitoring_router,
};
use iaas_testkit::isolation::unique_name;
use serde_json::Value;
use tower::ServiceExt as _;

async fn test_auth(mut request: axum::extract::Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let scopes = request
        .headers()
        .get("x-test-scopes")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(SCOPE_EVENTS_READ)
        .to_owned();
    if let Some(user_id) = user {
        request.extensions_mut().insert(Principal::new(user_id, vec![scopes]));
    }
    next.run(request).await
}

async fn get(
    app: &Router,
    uri: &str,
    user: Option<UserId>,
    scope: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().uri(uri);
    if let Some(user) = user {
        request = request.header("x-test-user", user.to_string());
    }
    if let Some(scope) = scope {
        request = request.header("x-test-scopes", scope);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn users_search_page_and_count_their_own_events() {
    let dir = std::env::temp_dir().join(unique_name("iaas-monitoring-http"));
    std::fs::create_dir_all(&dir).unwrap();
    let index = Arc::new(
        SqliteLogIndex::open(&SqliteIndexConfig::new(dir.join("events.db"))).await.unwrap(),
    );
    let indexer = MonitoringIndexer::new(index.clone());
    let (ada, bob) = (UserId::new_random(), UserId::new_random());
    let db = InstanceId::new_random();
    let start = Utc::now() - Duration::minutes(30);
    for (i, action) in
        [EventAction::Created, EventAction::Started, EventAction::Stopped, EventAction::Started]
            .into_iter()
            .enumerate()
    {
        let at = start + Duration::seconds(i64::try_from(i).unwrap());
        indexer
            .handle(&InfrastructureEvent::new(db, ada, InstanceKind::Postgres, action, at))
            .await
            .unwrap();
    }
    let bobs = InfrastructureEvent::new(
        InstanceId::new_random(),
        bob,
        InstanceKind::Nginx,
        EventAction::Started,
        start,
    );
    indexer.handle(&bobs).await.unwrap();
    let app = monitoring_router(index).layer(middleware::from_fn(test_auth));

    let (status, body) = get(&app, "/v1/events", Some(ada), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "Bob's event never shows");
    assert_eq!(entries[0]["message"], "postgres started", "newest first");

    let (_, body) =
        get(&app, &format!("/v1/events?instance={db}&action=started"), Some(ada), None).await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 2);

    let (_, first) = get(&app, "/v1/events?limit=3", Some(ada), None).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) =
        get(&app, &format!("/v1/events?limit=3&cursor={cursor}"), Some(ada), None).await;
    assert_eq!(second["entries"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());

    let (status, body) = get(&app, "/v1/events/stats?bucket=3600", Some(ada), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let total: u64 =
        body["buckets"].as_array().unwrap().iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(total, 4);

    let (status, body) = get(&app, "/v1/events", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, body) = get(&app, "/v1/events", Some(ada), Some("instances:read")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope"))
    );
    for (uri, param) in [
        ("/v1/events?instance=nope", "instance"),
        ("/v1/events?type=mainframe", "type"),
        ("/v1/events?from=yesterday", "from"),
        ("/v1/events?cursor=%27%3B--", "cursor"),
        ("/v1/events?limit=-1", "limit"),
        ("/v1/events/stats?bucket=soon", "bucket"),
    ] {
        let (status, body) = get(&app, uri, Some(ada), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(param), "{uri}: {body}");
    }
    let (status, body) = get(&app, "/v1/events?limit=100000", Some(ada), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query")),
        "{body}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
