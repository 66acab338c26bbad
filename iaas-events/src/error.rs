//! Errors of building the event components (configuration and clients). Publishing itself
//! reports through [`iaas_core::Error`], like every port.

/// Why a publisher, topic or relay could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// A configuration value is unusable.
    #[error("invalid {key}: {reason}")]
    InvalidConfig {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The Kafka client refused its configuration.
    #[cfg(feature = "kafka")]
    #[error("cannot create the Kafka {client} for {brokers}")]
    Client {
        /// `"producer"`, `"admin client"`, ...
        client: &'static str,
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Creating or checking a topic failed.
    #[cfg(feature = "kafka")]
    #[error("cannot create topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A call on a running Kafka client failed.
    #[cfg(feature = "kafka")]
    #[error("{operation} failed")]
    Kafka {
        /// What was asked (`"reading the assignment of group g"`).
        operation: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
