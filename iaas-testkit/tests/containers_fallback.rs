//! The fallback path: with no running service named, the testkit starts one with
//! testcontainers from the configured image. These tests start containers unconditionally, so
//! they prove the path works on this machine with the images `scripts/services.sh` built.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use redis::AsyncCommands;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn redis_from_a_container_published_on_loopback() {
    let service = iaas_testkit::start_redis_container().await.unwrap();
    assert!(service.url().starts_with("redis://127.0.0.1:"), "{}", service.url());
    let client = redis::Client::open(service.url()).unwrap();
    let mut conn = iaas_testkit::wait::eventually(std::time::Duration::from_secs(15), || {
        client.get_multiplexed_async_connection()
    })
    .await
    .unwrap();
    let _: () = conn.set("k", "v").await.unwrap();
    assert_eq!(conn.get::<_, String>("k").await.unwrap(), "v");
}

#[tokio::test]
async fn postgres_from_a_container_honours_the_official_env_contract() {
    let service = iaas_testkit::start_postgres_container().await.unwrap();
    // The container was created with POSTGRES_USER/PASSWORD/DB = iaas.
    let mut conn = iaas_testkit::wait::eventually(std::time::Duration::from_secs(60), || {
        PgConnection::connect(service.url())
    })
    .await
    .unwrap();
    let user: String =
        sqlx::query_scalar("SELECT current_user").fetch_one(&mut conn).await.unwrap();
    assert_eq!(user, "iaas");
}
