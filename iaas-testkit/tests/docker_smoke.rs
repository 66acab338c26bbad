//! Proves the Docker engine the suite uses is real: a container from a local image starts and
//! dies, and both show up on the engine's event stream.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use iaas_testkit::isolation::{RUN_LABEL, run_id, unique_name};

#[tokio::test]
async fn a_container_start_and_die_are_observed_as_events() {
    let docker = iaas_testkit::docker().await.unwrap();
    let name = unique_name("iaas-smoke");
    let label = format!("iaas.test.smoke={name}");

    let filters = HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
    // The stream is lazy: its request is sent on the first poll, after the container started.
    // `since` (a time before the container existed) makes the engine replay what came before.
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 1;
    let mut events = docker.events(Some(
        EventsOptionsBuilder::new().since(&since.to_string()).filters(&filters).build(),
    ));

    let body = ContainerCreateBody {
        image: Some(iaas_testkit::busybox_image()),
        cmd: Some(vec!["sh".into(), "-c".into(), "sleep 0.3; exit 3".into()]),
        labels: Some(HashMap::from([
            ("iaas.test.smoke".to_owned(), name.clone()),
            (RUN_LABEL.to_owned(), run_id().to_owned()),
        ])),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();

    let mut actions = Vec::new();
    let mut exit_code = None;
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            let actor = event.actor.unwrap_or_default();
            assert_eq!(
                actor.id.as_deref(),
                Some(created.id.as_str()),
                "the label filter let a stranger through"
            );
            let action = event.action.unwrap_or_default();
            if action == "die" {
                exit_code = actor.attributes.unwrap_or_default().get("exitCode").cloned();
            }
            actions.push(action.clone());
            if action == "die" {
                break;
            }
        }
    })
    .await;

    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    result.unwrap_or_else(|_| panic!("no die event within 20 s; saw {actions:?}"));
    assert!(actions.iter().any(|a| a == "start"), "{actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("die"));
    assert_eq!(exit_code.as_deref(), Some("3"));
}
