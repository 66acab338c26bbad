//! How cached values are laid out as bytes.
//!
//! ```text
//! byte 0   magic 0xC7        anything else is not ours: a miss
//! byte 1   format version    a layout this build does not know: a miss, never garbage
//! byte 2   kind tag          info / stats / replication: a value under the wrong key is a miss
//! byte 3   flags             bit 0: payload is LZ4-compressed
//! 8 bytes  written at        i64 LE, ms since the Unix epoch (drives early refresh)
//! [4 bytes LE]               uncompressed length, only when compressed
//! payload                    postcard
//! ```
//!
//! **Why postcard.** Measured on the sample values of this module's tests (a 3-node cluster
//! info, a stats sample, a 2-replica replication status), postcard is 2-3 times smaller than
//! JSON (see `postcard_is_smaller_than_json`), and both round-trip every field, because the core
//! types serialize timestamps as strings and ids as UUIDs either way. Smaller values mean less
//! Redis memory (the target is < 70 % of `maxmemory`) and fewer bytes per hit.
//!
//! **Why LZ4, above a threshold.** Large values are worth compressing. Small ones do not shrink
//! and would pay the CPU, so only payloads longer than [`CodecConfig::compress_above`] are
//! compressed, and only when compression actually saves bytes. LZ4 (pure Rust `lz4_flex`)
//! decompresses at memory speed, which matters on the hit path.
//!
//! Decoding never trusts the bytes: every failure is a [`CorruptValue`] (the cache counts it and
//! treats the key as a miss), the declared uncompressed length is capped before anything is
//! allocated, and trailing bytes are refused.

use chrono::{DateTime, Utc};

use crate::kind::{CachedValue, Kind};

/// First byte of every value this crate writes.
const MAGIC: u8 = 0xC7;
/// The layout described above. Bump it when the layout or a cached type changes shape.
pub const FORMAT_VERSION: u8 = 1;
const FLAG_LZ4: u8 = 0b0000_0001;
const HEADER_LEN: usize = 12;
const LENGTH_LEN: usize = 4;

/// Encoding settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CodecConfig {
    /// Payloads longer than this many bytes are LZ4-compressed (default 1024, about where LZ4
    /// starts to save more than its framing costs on these values).
    pub compress_above: usize,
    /// Largest value, in bytes once decompressed, accepted when encoding or decoding (default
    /// 4 MiB); bounds the allocation a corrupt length field can ask for.
    pub max_value_bytes: usize,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self { compress_above: 1024, max_value_bytes: 4 * 1024 * 1024 }
    }
}

/// Why bytes found under a cache key are not a value of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptValue {
    /// Shorter than the header.
    #[error("value is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Not written by this crate.
    #[error("value does not start with the cache magic byte (found {found:#04x})")]
    ForeignMagic {
        /// The first byte.
        found: u8,
    },
    /// Written with a layout this build does not read.
    #[error("value format version {found} is not {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// A value of another kind (or an unknown tag).
    #[error("value is tagged {found}, expected {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: Kind,
        /// The tag found.
        found: u8,
    },
    /// The write time is not a representable instant.
    #[error("value has an impossible write time ({millis} ms)")]
    BadTimestamp {
        /// The stored milliseconds.
        millis: i64,
    },
    /// Unknown flag bits.
    #[error("value has unknown flags {flags:#010b}")]
    UnknownFlags {
        /// The flags byte.
        flags: u8,
    },
    /// Larger than [`CodecConfig::max_value_bytes`] once decompressed.
    #[error("value declares {declared} bytes, more than the {max} allowed")]
    TooLarge {
        /// The declared length.
        declared: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The compressed payload does not decompress to its declared length.
    #[error("compressed payload is corrupt: {reason}")]
    Decompress {
        /// The decompressor's explanation.
        reason: String,
    },
    /// The payload is not a value of the expected type.
    #[error("payload is not a {kind} value: {reason}")]
    Payload {
        /// The kind asked for.
        kind: Kind,
        /// The decoder's explanation.
        reason: String,
    },
}

/// A decoded value and when it was written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decoded<T> {
    /// The value.
    pub value: T,
    /// When it was encoded (the writer's clock).
    pub written_at: DateTime<Utc>,
}

/// Encodes and decodes cached values (see the module docs for the layout).
#[derive(Debug, Clone, Default)]
pub struct Codec {
    config: CodecConfig,
}

impl Codec {
    /// A codec with these settings.
    pub fn new(config: CodecConfig) -> Self {
        Self { config }
    }

    /// Its settings.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// Encodes `value`, stamped `written_at`, compressing it when its payload is above the
    /// threshold. Fails only when the value is larger than [`CodecConfig::max_value_bytes`] or
    /// cannot be serialized.
    pub fn encode<T: CachedValue>(
        &self,
        value: &T,
        written_at: DateTime<Utc>,
    ) -> Result<Vec<u8>, String> {
        let payload = postcard::to_allocvec(value).map_err(|err| err.to_string())?;
        if payload.len() > self.config.max_value_bytes {
            return Err(format!(
                "value is {} bytes, more than the {} allowed",
                payload.len(),
                self.config.max_value_bytes
            ));
        }
        let declared = u32::try_from(payload.len()).map_err(|err| err.to_string())?;
        if payload.len() > self.config.compress_above {
            let compressed = lz4_flex::block::compress(&payload);
            if compressed.len() + LENGTH_LEN < payload.len() {
                let mut out = Vec::with_capacity(HEADER_LEN + LENGTH_LEN + compressed.len());
                out.extend_from_slice(&[MAGIC, FORMAT_VERSION, T::KIND.tag(), FLAG_LZ4]);
                out.extend_from_slice(&written_at.timestamp_millis().to_le_bytes());
                out.extend_from_slice(&declared.to_le_bytes());
                out.extend_from_slice(&compressed);
                return Ok(out);
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&[MAGIC, FORMAT_VERSION, T::KIND.tag(), 0]);
        out.extend_from_slice(&written_at.timestamp_millis().to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decodes a value of kind `T` and its write time, or says why the bytes are not one.
    pub fn decode<T: CachedValue>(&self, bytes: &[u8]) -> Result<Decoded<T>, CorruptValue> {
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(CorruptValue::TooShort { len: bytes.len() });
        };
        let [magic, version, tag, flags, stamp @ ..] = *header;
        if magic != MAGIC {
            return Err(CorruptValue::ForeignMagic { found: magic });
        }
        if version != FORMAT_VERSION {
            return Err(CorruptValue::UnsupportedVersion { found: version });
        }
        if tag != T::KIND.tag() {
            return Err(CorruptValue::WrongKind { expected: T::KIND, found: tag });
        }
        let millis = i64::from_le_bytes(stamp);
        let written_at =
            DateTime::from_timestamp_millis(millis).ok_or(CorruptValue::BadTimestamp { millis })?;
        let value = match flags {
            0 => self.decode_payload(rest)?,
            FLAG_LZ4 => {
                let Some((length, compressed)) = rest.split_first_chunk::<LENGTH_LEN>() else {
                    return Err(CorruptValue::TooShort { len: bytes.len() });
                };
                let declared = u32::from_le_bytes(*length) as usize;
                if declared > self.config.max_value_bytes {
                    return Err(CorruptValue::TooLarge {
                        declared,
                        max: self.config.max_value_bytes,
                    });
                }
                let payload = lz4_flex::block::decompress(compressed, declared)
                    .map_err(|err| CorruptValue::Decompress { reason: err.to_string() })?;
                if payload.len() != declared {
                    return Err(CorruptValue::Decompress {
                        reason: format!("{} bytes instead of {declared}", payload.len()),
                    });
                }
                self.decode_payload(&payload)?
            }
            other => return Err(CorruptValue::UnknownFlags { flags: other }),
        };
        Ok(Decoded { value, written_at })
    }

    fn decode_payload<T: CachedValue>(&self, payload: &[u8]) -> Result<T, CorruptValue> {
        let (value, trailing) = postcard::take_from_bytes::<T>(payload)
            .map_err(|err| CorruptValue::Payload { kind: T::KIND, reason: err.to_string() })?;
        if trailing.is_empty() {
            Ok(value)
        } else {
            Err(CorruptValue::Payload {
                kind: T::KIND,
                reason: format!("{} trailing bytes", trailing.len()),
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use iaas_core::{
        ClusterInfo, ClusterStats, Endpoint, InstanceId, InstanceStatus, NodeInfo, NodeRole,
        ReplicaState, ReplicationStatus,
    };
    use proptest::prelude::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn decode_value<T: CachedValue>(codec: &Codec, bytes: &[u8]) -> Result<T, CorruptValue> {
        codec.decode::<T>(bytes).map(|decoded| decoded.value)
    }

    pub(crate) fn info(id: InstanceId) -> ClusterInfo {
        ClusterInfo {
            instance_id: id,
            status: InstanceStatus::Running,
            nodes: (0..3)
                .map(|i| NodeInfo {
                    name: format!("iaas-orders-db-{i}"),
                    container_id: Some(format!("{i:0>12}abcdef")),
                    role: if i == 0 { NodeRole::Primary } else { NodeRole::Replica },
                    running: true,
                })
                .collect(),
            endpoints: vec![Endpoint {
                name: "postgres".into(),
                host: "127.0.0.1".into(),
                port: 54321,
            }],
            observed_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn stats(id: InstanceId) -> ClusterStats {
        ClusterStats {
            instance_id: id,
            cpu_percent: 12.5,
            memory_bytes: 300 << 20,
            memory_limit_bytes: 1 << 30,
            connections: Some(17),
            observed_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn replication(id: InstanceId) -> ReplicationStatus {
        ReplicationStatus {
            instance_id: id,
            primary: "iaas-orders-db-0".into(),
            replicas: (1..3)
                .map(|i| ReplicaState {
                    name: format!("iaas-orders-db-{i}"),
                    state: "streaming".into(),
                    lag_bytes: 4096,
                    lag_seconds: Some(0.02),
                })
                .collect(),
            observed_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let codec = Codec::default();
        let id = InstanceId::new_random();
        assert_eq!(
            decode_value::<ClusterInfo>(&codec, &codec.encode(&info(id), at()).unwrap()),
            Ok(info(id))
        );
        assert_eq!(
            decode_value::<ClusterStats>(&codec, &codec.encode(&stats(id), at()).unwrap()),
            Ok(stats(id))
        );
        assert_eq!(
            decode_value::<ReplicationStatus>(
                &codec,
                &codec.encode(&replication(id), at()).unwrap()
            ),
            Ok(replication(id))
        );
    }

    #[test]
    fn the_write_time_round_trips() {
        let codec = Codec::default();
        let written_at = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        let bytes = codec.encode(&stats(InstanceId::new_random()), written_at).unwrap();
        assert_eq!(codec.decode::<ClusterStats>(&bytes).unwrap().written_at, written_at);
    }

    #[test]
    fn postcard_is_smaller_than_json() {
        let codec = Codec::default();
        let id = InstanceId::new_random();
        let sizes = [
            (
                "info",
                codec.encode(&info(id), at()).unwrap().len(),
                serde_json::to_vec(&info(id)).unwrap().len(),
            ),
            (
                "stats",
                codec.encode(&stats(id), at()).unwrap().len(),
                serde_json::to_vec(&stats(id)).unwrap().len(),
            ),
            (
                "replication",
                codec.encode(&replication(id), at()).unwrap().len(),
                serde_json::to_vec(&replication(id)).unwrap().len(),
            ),
        ];
        for (kind, ours, json) in sizes {
            println!("{kind}: postcard+header {ours} bytes, JSON {json} bytes");
            assert!(ours * 2 <= json, "{kind}: {ours} bytes is not half of JSON's {json}");
        }
    }

    #[test]
    fn large_values_are_compressed_and_small_ones_not() {
        let codec = Codec::new(CodecConfig { compress_above: 64, ..CodecConfig::default() });
        let mut big = info(InstanceId::new_random());
        big.nodes = (0..200)
            .map(|i| NodeInfo {
                name: format!("iaas-web-{i}"),
                container_id: None,
                role: NodeRole::Replica,
                running: true,
            })
            .collect();
        let bytes = codec.encode(&big, at()).unwrap();
        assert_eq!(bytes[3], FLAG_LZ4);
        assert!(bytes.len() < postcard::to_allocvec(&big).unwrap().len() / 2);
        assert_eq!(decode_value::<ClusterInfo>(&codec, &bytes), Ok(big));

        let small = stats(InstanceId::new_random());
        assert_eq!(codec.encode(&small, at()).unwrap()[3], 0);
    }

    #[test]
    fn a_changed_layout_or_foreign_value_is_refused() {
        let codec = Codec::default();
        let mut bytes = codec.encode(&info(InstanceId::new_random()), at()).unwrap();
        assert_eq!(
            decode_value::<ClusterStats>(&codec, &bytes),
            Err(CorruptValue::WrongKind { expected: Kind::Stats, found: 1 })
        );
        bytes[1] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode_value::<ClusterInfo>(&codec, &bytes),
            Err(CorruptValue::UnsupportedVersion { .. })
        ));
        let json = serde_json::to_vec(&info(InstanceId::new_random())).unwrap();
        assert!(matches!(
            decode_value::<ClusterInfo>(&codec, &json),
            Err(CorruptValue::ForeignMagic { .. })
        ));
        assert_eq!(
            decode_value::<ClusterInfo>(&codec, b"ab"),
            Err(CorruptValue::TooShort { len: 2 })
        );
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_allocating() {
        let codec = Codec::default();
        let mut bytes = vec![MAGIC, FORMAT_VERSION, Kind::Info.tag(), FLAG_LZ4];
        bytes.extend_from_slice(&0i64.to_le_bytes());
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(
            decode_value::<ClusterInfo>(&codec, &bytes),
            Err(CorruptValue::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let codec = Codec::default();
        let mut bytes = codec.encode(&stats(InstanceId::new_random()), at()).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_value::<ClusterStats>(&codec, &bytes),
            Err(CorruptValue::Payload { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = Codec::default();
            let _ = decode_value::<ClusterInfo>(&codec, &bytes);
            let _ = decode_value::<ClusterStats>(&codec, &bytes);
            let _ = decode_value::<ReplicationStatus>(&codec, &bytes);
        }

        #[test]
        fn corrupting_a_valid_value_never_panics(
            flip_at in 0usize..400,
            with in any::<u8>(),
            compress_above in prop_oneof![Just(0usize), Just(1024usize)],
        ) {
            let codec = Codec::new(CodecConfig { compress_above, ..CodecConfig::default() });
            let mut bytes = codec.encode(&info(InstanceId::new_random()), at()).unwrap();
            let at = flip_at % bytes.len();
            bytes[at] = with;
            // Either it still decodes (the byte was not significant) or it is refused.
            let _ = decode_value::<ClusterInfo>(&codec, &bytes);
        }
    }
}
