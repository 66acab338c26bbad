//! Kafka: the publisher and topic administration.
//!
//! One topic, `infrastructure.events`, carries every event, for the producer and every
//! consumer alike. The message key is the instance id, so all
//! events of one instance land on one partition in order; the event name (`postgres.started`)
//! travels in a header so consumers can filter without decoding the payload.

mod config;
mod consumer;
mod publisher;
mod topic;

pub use config::{Acks, Compression, KafkaConfig};
pub use consumer::{
    ConsumerConfig, ConsumerStats, HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_ORIGIN,
    KafkaConsumerRunner, Membership,
};
pub use publisher::{
    HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_NAME, HEADER_EVENT_VERSION, KafkaPublisher,
};
pub use topic::ensure_topic;
