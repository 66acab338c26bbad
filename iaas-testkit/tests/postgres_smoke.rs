//! Proves the PostgreSQL the suite uses is a real server, and that per-test databases work.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use iaas_testkit::TestDatabase;
use sqlx::{Connection, PgConnection, Row};

#[tokio::test]
async fn a_query_through_sqlx_in_a_fresh_database() {
    let server = iaas_testkit::postgres().await.unwrap();
    let db = TestDatabase::create(&server, "smoke").await.unwrap();

    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let row = sqlx::query("SELECT current_database() AS name, 6 * 7 AS answer")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("name"), db.name());
    assert_eq!(row.get::<i32, _>("answer"), 42);

    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)").execute(&mut conn).await.unwrap();
    let duplicate = sqlx::query("INSERT INTO t VALUES (1)").execute(&mut conn).await.unwrap_err();
    assert!(duplicate.as_database_error().is_some_and(|e| e.is_unique_violation()), "{duplicate}");
    conn.close().await.unwrap();

    db.drop_database().await.unwrap();
}
