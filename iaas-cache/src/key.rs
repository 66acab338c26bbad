//! Cache keys, built without allocating on the read path.
//!
//! Every read names its key, `{prefix}cluster:{kind}:{id}`. Built with `format!`, that was a
//! heap allocation, a trip through the formatting machinery and the UUID's `Display` on every
//! hit: 22 % of the instructions of an in-process hit (callgrind, `docs/benchmarks.md`). So
//! [`Keys`] renders the constant head of each key (`{prefix}cluster:info:`, ...) once, when the
//! cache is built, and [`KeyBuf`] copies a head and the UUID's 36 hyphenated characters into a
//! buffer on the stack. Only a prefix too long for that buffer falls back to a `String`.

use std::fmt;
use std::ops::Deref;

use iaas_core::InstanceId;
use uuid::fmt::Hyphenated;

use crate::kind::Kind;

/// Bytes of a key kept on the stack; a longer key (a prefix over about 70 bytes) is allocated.
const INLINE_KEY_BYTES: usize = 128;

/// The constant heads of one cache's keys, rendered once.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix}cluster:{kind}:`, in [`Kind::ALL`] order.
    values: [String; 3],
    /// `{prefix}cluster:gen:`.
    generation: String,
}

impl Keys {
    /// The heads for keys under `prefix`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            values: Kind::ALL.map(|kind| format!("{prefix}cluster:{kind}:")),
            generation: format!("{prefix}cluster:gen:"),
        }
    }

    /// `{prefix}cluster:{kind}:{id}`.
    pub(crate) fn value(&self, kind: Kind, id: InstanceId) -> KeyBuf {
        KeyBuf::new(&self.values[kind.index()], id)
    }

    /// `{prefix}cluster:gen:{id}`.
    pub(crate) fn generation(&self, id: InstanceId) -> KeyBuf {
        KeyBuf::new(&self.generation, id)
    }
}

/// One key: a head followed by a hyphenated lower-case UUID, on the stack when it fits.
pub(crate) enum KeyBuf {
    /// The key's bytes are `bytes[..len]`.
    Inline { bytes: [u8; INLINE_KEY_BYTES], len: usize },
    /// A key longer than [`INLINE_KEY_BYTES`].
    Heap(String),
}

impl KeyBuf {
    fn new(head: &str, id: InstanceId) -> Self {
        let mut uuid = [0u8; Hyphenated::LENGTH];
        let uuid = id.as_uuid().hyphenated().encode_lower(&mut uuid);
        let len = head.len() + uuid.len();
        if len > INLINE_KEY_BYTES {
            let mut key = String::with_capacity(len);
            key.push_str(head);
            key.push_str(uuid);
            return KeyBuf::Heap(key);
        }
        let mut bytes = [0u8; INLINE_KEY_BYTES];
        // In bounds: `len` (both parts together) is at most INLINE_KEY_BYTES, checked above.
        bytes[..head.len()].copy_from_slice(head.as_bytes());
        bytes[head.len()..len].copy_from_slice(uuid.as_bytes());
        KeyBuf::Inline { bytes, len }
    }

    /// The key.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            KeyBuf::Inline { bytes, len } =>
            {
                #[allow(
                    clippy::expect_used,
                    reason = "an invariant of `new`, named in the message"
                )]
                std::str::from_utf8(&bytes[..*len])
                    .expect("an inline key holds a whole `str` followed by an ASCII UUID")
            }
            KeyBuf::Heap(key) => key,
        }
    }
}

impl Deref for KeyBuf {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_key_is_what_format_would_build(prefix in ".{0,120}", bits in any::<u128>()) {
            let id = InstanceId::from_uuid(uuid::Uuid::from_u128(bits));
            let keys = Keys::new(&prefix);
            for kind in Kind::ALL {
                prop_assert_eq!(keys.value(kind, id).to_string(), format!("{prefix}cluster:{kind}:{id}"));
            }
            prop_assert_eq!(keys.generation(id).to_string(), format!("{prefix}cluster:gen:{id}"));
        }
    }

    #[test]
    fn short_prefixes_stay_on_the_stack_and_long_ones_do_not_break() {
        let id = InstanceId::new_random();
        assert!(matches!(Keys::new("iaas:").value(Kind::Info, id), KeyBuf::Inline { .. }));
        let long = "p".repeat(200);
        let key = Keys::new(&long).value(Kind::Replication, id);
        assert!(matches!(key, KeyBuf::Heap(_)));
        assert_eq!(key.to_string(), format!("{long}cluster:replication:{id}"));
    }
}
