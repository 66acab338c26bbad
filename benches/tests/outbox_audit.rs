//! `iaas-load outbox-audit` against a real PostgreSQL store and a real broker, on topics of
//! three partitions as the platform makes them: an outbox whose every event is on the topic
//! once passes; one with an event never published and another published twice fails, naming
//! both; an empty store is no pass.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::process::Command;
use std::time::Duration;

use iaas_events::kafka::{KafkaConfig, ensure_topic};
use iaas_store::{PostgresConfig, PostgresStore};
use iaas_testkit::TestDatabase;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Writes `ids` into the outbox as sent events.
async fn store(store: &PostgresStore, ids: &[uuid::Uuid]) {
    for id in ids {
        sqlx::query(
            "INSERT INTO outbox (event_id, instance_id, payload, created_us, sent_us) \
             VALUES ($1, $2, $3, 1, 2)",
        )
        .bind(id)
        .bind(uuid::Uuid::new_v4())
        .bind(serde_json::json!({"id": id.to_string(), "action": "created"}).to_string())
        .execute(store.pool())
        .await
        .unwrap();
    }
}

/// Publishes the events `ids` to `topic`, in order.
async fn publish(brokers: &str, topic: &str, ids: &[uuid::Uuid]) {
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for id in ids {
        let payload = serde_json::json!({"id": id.to_string(), "action": "created"}).to_string();
        producer
            .send(FutureRecord::<(), _>::to(topic).payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
}

/// Runs the audit; its exit status and what it printed.
fn audit(url: &str, brokers: &str, topic: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_iaas-load"))
        .env("IAAS_DATABASE_URL", url)
        .args(["outbox-audit", "--brokers", brokers, "--topic", topic])
        .args(["--quiet", "1", "--timeout", "60"])
        .output()
        .expect("the load tool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_passes_each_event_published_once_and_names_a_lost_and_a_duplicated_one() {
    let postgres = iaas_testkit::postgres().await.unwrap();
    let kafka = iaas_testkit::kafka().await.unwrap();
    let brokers = kafka.url().to_owned();
    let config = KafkaConfig::new(&brokers);

    // Three events, each on the topic once.
    let database = TestDatabase::create(&postgres, "outbox_audit_once").await.unwrap();
    let pg = PostgresStore::connect(&PostgresConfig::new(database.url())).await.unwrap();
    let topic = iaas_testkit::isolation::topic_name("outbox-audit-once");
    ensure_topic(&config, &topic, 3, 1, Duration::from_secs(10)).await.unwrap();
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    store(&pg, &ids).await;
    publish(&brokers, &topic, &ids).await;
    let (passed, printed) = audit(database.url(), &brokers, &topic);
    assert!(passed, "{printed}");
    assert!(
        printed.contains("3 messages read; stored 3, lost 0, duplicated 0, not in the store 0"),
        "{printed}"
    );
    pg.pool().close().await;
    database.drop_database().await.unwrap();

    // The first published twice, the third never: the audit fails and names both.
    let database = TestDatabase::create(&postgres, "outbox_audit_broken").await.unwrap();
    let pg = PostgresStore::connect(&PostgresConfig::new(database.url())).await.unwrap();
    let topic = iaas_testkit::isolation::topic_name("outbox-audit-broken");
    ensure_topic(&config, &topic, 3, 1, Duration::from_secs(10)).await.unwrap();
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    store(&pg, &ids).await;
    let stranger = uuid::Uuid::new_v4();
    publish(&brokers, &topic, &[ids[0], ids[1], ids[0], stranger]).await;
    let (passed, printed) = audit(database.url(), &brokers, &topic);
    assert!(!passed, "a lost and a duplicated event fail the audit:\n{printed}");
    assert!(
        printed.contains("4 messages read; stored 3, lost 1, duplicated 1, not in the store 1"),
        "{printed}"
    );
    assert!(printed.contains(&ids[2].to_string()), "the lost event is named:\n{printed}");
    assert!(printed.contains(&ids[0].to_string()), "the duplicated event is named:\n{printed}");
    pg.pool().close().await;
    database.drop_database().await.unwrap();

    // A store without events: nothing to audit is no pass.
    let database = TestDatabase::create(&postgres, "outbox_audit_empty").await.unwrap();
    let pg = PostgresStore::connect(&PostgresConfig::new(database.url())).await.unwrap();
    let (passed, printed) = audit(database.url(), &brokers, &topic);
    assert!(!passed && printed.contains("nothing to audit"), "{printed}");
    pg.pool().close().await;
    database.drop_database().await.unwrap();
}
