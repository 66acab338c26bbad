use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::EventsError;

/// How many replicas must have a message before it counts as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acks {
    /// Every in-sync replica (`acks=all`): nothing acknowledged is lost with the leader.
    All,
    /// The leader only (`acks=1`): a leader crash can lose acknowledged
    /// events. Incompatible with the idempotent producer.
    Leader,
}

/// Batch compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// None.
    None,
    /// LZ4 (the default: fast, and readable by every broker tested here).
    Lz4,
    /// Zstandard.
    Zstd,
    /// Snappy. The tansu broker used in this project's tests cannot serve
    /// snappy batches back to consumers.
    Snappy,
    /// Gzip.
    Gzip,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

/// Kafka producer settings. Defaults favour not losing events: idempotent producer, `acks=all`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Topic every event goes to (default `infrastructure.events`).
    pub topic: String,
    /// Acknowledgement level (default [`Acks::All`]).
    pub acks: Acks,
    /// Idempotent producer: retries never duplicate or reorder messages (default on).
    pub idempotent: bool,
    /// Batch compression (default [`Compression::Lz4`]).
    pub compression: Compression,
    /// How long the producer waits to fill a batch (`linger.ms`, default 2 ms). A lone event
    /// waits this long before it is sent; under load batches fill while earlier requests are in
    /// flight, and a batch the relay queues at once (up to `batch_messages`) goes out full
    /// without waiting, so a short linger costs little throughput (see docs/benchmarks.md).
    pub linger: Duration,
    /// Most messages per batch (`batch.num.messages`, default 100).
    pub batch_messages: u32,
    /// Upper bound on delivering one message, retries included (`message.timeout.ms`, default
    /// 10 s). When it passes, the publish fails as unavailable and the caller keeps the event.
    pub delivery_timeout: Duration,
    /// Extra librdkafka properties, passed through unchanged (they win over the fields above).
    pub extra: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The default topic.
    pub const DEFAULT_TOPIC: &'static str = "infrastructure.events";

    /// Safe defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: Self::DEFAULT_TOPIC.to_owned(),
            acks: Acks::All,
            idempotent: true,
            compression: Compression::Lz4,
            linger: Duration::from_millis(2),
            batch_messages: 100,
            delivery_timeout: Duration::from_secs(10),
            extra: BTreeMap::new(),
        }
    }

    /// Settings that trade safety for latency: `acks=1`, no idempotence, snappy, 3 retries,
    /// batches of 100 or 2 ms. Faster to acknowledge, and able to lose acknowledged events
    /// when a leader fails.
    pub fn leader_acks(brokers: impl Into<String>) -> Self {
        let mut config = Self::new(brokers);
        config.acks = Acks::Leader;
        config.idempotent = false;
        config.compression = Compression::Snappy;
        config.extra.insert("retries".to_owned(), "3".to_owned());
        config
    }

    /// Checks the settings agree with each other.
    pub fn validate(&self) -> Result<(), EventsError> {
        if self.brokers.trim().is_empty() {
            return Err(EventsError::InvalidConfig {
                key: "brokers",
                reason: "must not be empty".into(),
            });
        }
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !topic_ok {
            return Err(EventsError::InvalidConfig {
                key: "topic",
                reason: format!(
                    "{:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
                    self.topic
                ),
            });
        }
        if self.idempotent && self.acks != Acks::All {
            return Err(EventsError::InvalidConfig {
                key: "acks",
                reason: "the idempotent producer requires acks=all".into(),
            });
        }
        if self.delivery_timeout < Duration::from_millis(1) {
            return Err(EventsError::InvalidConfig {
                key: "delivery_timeout",
                reason: "must be at least 1 ms".into(),
            });
        }
        Ok(())
    }

    /// The librdkafka configuration these settings stand for.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set(
                "acks",
                match self.acks {
                    Acks::All => "all",
                    Acks::Leader => "1",
                },
            )
            .set("enable.idempotence", self.idempotent.to_string())
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("batch.num.messages", self.batch_messages.to_string())
            .set("message.timeout.ms", self.delivery_timeout.as_millis().to_string());
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_do_not_lose_events() {
        let config = KafkaConfig::new("127.0.0.1:9092");
        config.validate().unwrap();
        let client = config.client_config();
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert_eq!(config.topic, "infrastructure.events");
    }

    #[test]
    fn the_leader_acks_settings_are_available() {
        let config = KafkaConfig::leader_acks("127.0.0.1:9092");
        config.validate().unwrap();
        let client = config.client_config();
        assert_eq!(client.get("acks"), Some("1"));
        assert_eq!(client.get("compression.type"), Some("snappy"));
        assert_eq!(client.get("retries"), Some("3"));
        assert_eq!(client.get("linger.ms"), Some("2"));
        assert_eq!(client.get("batch.num.messages"), Some("100"));
    }

    #[test]
    fn contradictions_and_bad_names_are_refused() {
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        config.acks = Acks::Leader;
        assert!(matches!(config.validate(), Err(EventsError::InvalidConfig { key: "acks", .. })));
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        config.topic = "events/../x".into();
        assert!(matches!(config.validate(), Err(EventsError::InvalidConfig { key: "topic", .. })));
        assert!(KafkaConfig::new(" ").validate().is_err());
    }

    #[test]
    fn extra_properties_pass_through_and_win() {
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        config.extra.insert("linger.ms".into(), "0".into());
        config.extra.insert("client.id".into(), "iaas".into());
        let client = config.client_config();
        assert_eq!(client.get("linger.ms"), Some("0"));
        assert_eq!(client.get("client.id"), Some("iaas"));
    }
}
