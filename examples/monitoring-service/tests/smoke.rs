//! The monitoring service binary against the real broker: starts, is live and ready (log index
//! and broker), indexes an event published to its topic through `monitoring-consumer-group`
//! and finds it through the search API, stops cleanly on SIGTERM; refuses to start without
//! brokers. It verifies tokens with the public keys of a JWKS only: the signing key is not in
//! its configuration, and the key file it would otherwise read is never created.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::time::Duration;

use iaas_core::EventPublisher;

use iaas_testkit::http::get;
use iaas_testkit::process::{Server, command, lookup};

#[tokio::test]
async fn indexes_events_from_the_broker_and_serves_them() {
    let kafka = iaas_testkit::kafka().await.unwrap();
    let data_dir = iaas_testkit::isolation::temp_dir("monitoring-smoke");
    // The auth service's key stays here, in the test; the service gets its JWKS only.
    let signer = iaas_auth::TokenIssuer::new(
        iaas_auth::KeySet::new(iaas_auth::SigningKey::generate_ed25519("auth-1").unwrap()),
        iaas_auth::TokenConfig::default(),
        std::sync::Arc::new(iaas_core::SystemClock),
    );
    std::fs::create_dir_all(&data_dir).unwrap();
    let jwks = data_dir.join("jwks.json");
    std::fs::write(&jwks, signer.jwks().to_string()).unwrap();
    let key_file = data_dir.join("auth.key");
    let envs = [
        (iaas_platform::LISTEN_VAR, "127.0.0.1:0".to_owned()),
        (iaas_platform::DATA_DIR_VAR, data_dir.display().to_string()),
        (iaas_platform::KAFKA_BROKERS_VAR, kafka.url().to_owned()),
        (iaas_platform::KAFKA_TOPIC_VAR, iaas_testkit::isolation::topic_name("monitoring-smoke")),
        (iaas_platform::AUTH_JWKS_VAR, jwks.display().to_string()),
        (iaas_platform::AUTH_KEY_FILE_VAR, key_file.display().to_string()),
    ];
    let running = Server::start(command(env!("CARGO_BIN_EXE_monitoring-service"), "IAAS_", &envs))
        .await
        .unwrap();

    let (status, body) = get(running.addr(), "/healthz", None).await.unwrap().into_json();
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
    let (status, body) = get(running.addr(), "/readyz", None).await.unwrap().into_json();
    let checks = [&body["checks"]["kafka"], &body["checks"]["log_index"]];
    assert_eq!((status, checks), (200, [&"ok".into(); 2]), "log index and broker: {body}");
    let metrics = get(running.addr(), "/metrics", None).await.unwrap();
    assert_eq!(metrics.status, 200, "Prometheus metrics are served");

    // An event on the service's topic, as the provisioning service's relay would publish it.
    let config = iaas_platform::Config::from_lookup(|k| lookup(&envs, k)).unwrap();
    let publisher =
        iaas_events::kafka::KafkaPublisher::new(&iaas_platform::kafka_config(&config, kafka.url()))
            .unwrap();
    let user = iaas_core::UserId::new_random();
    let instance = iaas_core::InstanceId::new_random();
    let event = iaas_core::InfrastructureEvent::new(
        instance,
        user,
        iaas_core::InstanceKind::Postgres,
        iaas_core::EventAction::Started,
        iaas_core::Clock::now(&iaas_core::SystemClock),
    );
    publisher.publish(&event).await.unwrap();

    let token = signer.issue(user, &["events:read".to_owned()]).unwrap().token;
    // A token signed with any other key (the platform's key file, say) is refused.
    let forger = iaas_platform::token_issuer(
        &iaas_platform::Config::from_lookup(|k| {
            (k == iaas_platform::AUTH_KEY_FILE_VAR)
                .then(|| data_dir.join("forger.key").display().to_string())
        })
        .unwrap(),
    )
    .unwrap();
    let forged = forger.issue(user, &["events:read".to_owned()]).unwrap().token;
    let (status, body) =
        get(running.addr(), "/v1/events", Some(&forged)).await.unwrap().into_json();
    assert_eq!((status, &body["error"]["code"]), (401, &"token_unknown_key".into()), "{body}");
    let path = format!("/v1/events?instance={instance}");
    iaas_testkit::wait::eventually(Duration::from_secs(30), || async {
        let (status, body) = get(running.addr(), &path, Some(&token)).await.unwrap().into_json();
        let messages: Vec<String> = body["entries"]
            .as_array()
            .map(|e| {
                e.iter().map(|e| e["message"].as_str().unwrap_or_default().to_owned()).collect()
            })
            .unwrap_or_default();
        if messages == ["postgres started"] { Ok(()) } else { Err((status, body)) }
    })
    .await
    .unwrap();

    let exited = running.stop().await.unwrap();
    assert!(exited.status.success(), "SIGTERM stops it cleanly: {}\n{}", exited.status, exited.log);
    assert!(!key_file.exists(), "the service made a signing key: {}", key_file.display());
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test]
async fn without_brokers_it_exits_2_naming_the_setting() {
    let envs = [
        (
            iaas_platform::DATA_DIR_VAR,
            iaas_testkit::isolation::temp_dir("monitoring-unconfigured").display().to_string(),
        ),
        (iaas_platform::LISTEN_VAR, "127.0.0.1:0".to_owned()),
    ];
    let output =
        command(env!("CARGO_BIN_EXE_monitoring-service"), "IAAS_", &envs).output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("IAAS_KAFKA_BROKERS"), "{stderr}");
}
