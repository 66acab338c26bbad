use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::config::KafkaConfig;
use crate::error::EventsError;

/// Creates `topic` with `partitions` partitions and `replication` replicas unless it exists.
///
/// Brokers may also create topics on first use; creating it here makes the partition count a
/// decision rather than a broker default (ordering is per partition, parallelism is partitions).
pub async fn ensure_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<(), EventsError> {
    if partitions < 1 || replication < 1 {
        return Err(EventsError::InvalidConfig {
            key: "partitions",
            reason: format!(
                "partitions ({partitions}) and replication ({replication}) must be at least 1"
            ),
        });
    }
    let admin: AdminClient<DefaultClientContext> =
        config.client_config().create().map_err(|source| EventsError::Client {
            client: "admin client",
            brokers: config.brokers.clone(),
            source,
        })?;
    let options =
        AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))],
            &options,
        )
        .await
        .map_err(|err| EventsError::Topic { topic: topic.to_owned(), reason: err.to_string() })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(EventsError::Topic { topic: name, reason: code.to_string() });
            }
        }
    }
    Ok(())
}
