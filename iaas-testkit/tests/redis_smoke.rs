//! Proves the Redis the suite uses is a real server: keys expire on their TTL.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::time::Duration;

use iaas_testkit::isolation::key_prefix;
use iaas_testkit::wait::eventually;
use redis::AsyncCommands;

#[tokio::test]
async fn set_with_ttl_then_get_then_expiry() {
    let service = iaas_testkit::redis().await.unwrap();
    let client = redis::Client::open(service.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}greeting", key_prefix("smoke"));

    let _: () = conn.set_ex(&key, "hello", 1).await.unwrap();
    let value: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(value.as_deref(), Some("hello"));
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    assert!((0..=1).contains(&ttl), "ttl {ttl}");

    eventually(Duration::from_secs(5), || {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            let value: Option<String> = conn.get(&key).await.map_err(|e| e.to_string())?;
            value.map_or(Ok(()), |v| Err(format!("still {v:?}")))
        }
    })
    .await
    .unwrap();
}
