//! What callers see when the database misbehaves: typed errors, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{event, nginx, user};
use iaas_core::{Error, EventAction, InstanceRepository, ManualClock, UserId, UserRepository};
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, StoreError};
use iaas_testkit::TestDatabase;
use sqlx::{Connection, Executor, PgConnection};

#[tokio::test]
async fn a_postgres_that_goes_down_gives_unavailable_within_the_acquire_timeout() {
    // A server of our own, so stopping it disturbs no other test.
    let server = iaas_testkit::start_postgres_container().await.unwrap();
    let mut config = PostgresConfig::new(server.url());
    config.acquire_timeout = Duration::from_secs(2);
    let store =
        iaas_testkit::wait::eventually(Duration::from_secs(60), || PostgresStore::connect(&config))
            .await
            .unwrap();
    let ada = user("ada");
    store.create_user(&ada).await.unwrap();

    server.container().expect("started for this test").stop().await.unwrap();

    let started = Instant::now();
    let err = store.get_user(ada.id).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { backend: "postgres", .. }), "{err:?}");
    let err = store.create_user(&user("bob")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_postgres_fails_the_start_with_a_redacted_url() {
    let mut config = PostgresConfig::new("postgres://iaas:secret@127.0.0.1:1/iaas");
    config.acquire_timeout = Duration::from_secs(2);
    let err = PostgresStore::connect(&config).await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { backend: "postgres", .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("127.0.0.1:1") && !shown.contains("secret"), "{shown}");
}

#[tokio::test]
async fn a_failing_postgres_migration_stops_the_start() {
    let server = iaas_testkit::postgres().await.unwrap();
    let db = TestDatabase::create(&server, "bad_migration").await.unwrap();
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    conn.execute("CREATE TABLE users (something_else int)").await.unwrap();
    conn.close().await.unwrap();

    let err = PostgresStore::connect(&PostgresConfig::new(db.url())).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate { backend: "postgres", .. }), "{err:?}");
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_failing_sqlite_migration_stops_the_start() {
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-store-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("iaas.db");
    {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true),
        )
        .await
        .unwrap();
        pool.execute("CREATE TABLE users (something_else int)").await.unwrap();
        pool.close().await;
    }
    let err = SqliteStore::open(&SqliteConfig::new(&path)).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate { backend: "sqlite", .. }), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_corrupted_row_is_an_internal_error_naming_it() {
    let clock = Arc::new(ManualClock::new(common::start_time()));
    let (store, _file) = common::sqlite(clock).await;
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    sqlx::query("UPDATE instances SET spec = '{\"kind\":\"mainframe\"}'")
        .execute(store.pool())
        .await
        .unwrap();

    let err = store.get_instance(web.id).await.unwrap_err();
    assert!(matches!(err, Error::Internal { .. }), "{err:?}");
    assert!(err.to_string().contains(&web.id.to_string()), "{err}");
}

#[tokio::test]
async fn a_reopened_sqlite_file_keeps_everything() {
    let clock = Arc::new(ManualClock::new(common::start_time()));
    let (store, file) = common::sqlite(clock).await;
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    store.pool().close().await;

    let reopened = SqliteStore::open(&SqliteConfig::new(file.path())).await.unwrap();
    assert_eq!(reopened.get_instance(web.id).await.unwrap(), Some(web));
    assert_eq!(iaas_core::Outbox::stats(&reopened).await.unwrap().pending, 1);
}
