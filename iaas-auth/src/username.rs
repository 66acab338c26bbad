//! Username rules: 3 to 64 characters, ASCII letters, digits, `.`, `_` and `-`, compared in
//! lowercase.
//!
//! ASCII only, so two usernames that look alike are the same bytes (no homoglyphs, no Unicode
//! normalisation to get wrong). Usernames are lowercased before they are stored or looked up, so
//! `Ada` and `ada` are one account.

use std::fmt;

use crate::error::{AuthError, Result, truncate_for_error};

/// Shortest accepted username.
pub const MIN_USERNAME_LEN: usize = 3;
/// Longest accepted username.
pub const MAX_USERNAME_LEN: usize = 64;

/// A valid, lowercased username.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Validates and lowercases `input`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid =
            |reason| AuthError::InvalidUsername { input: truncate_for_error(input), reason };
        if input.is_empty() {
            return Err(invalid("must not be empty"));
        }
        // Bytes first: a huge input is rejected before anything walks its characters twice.
        if input.len() > MAX_USERNAME_LEN {
            return Err(invalid("must be at most 64 characters"));
        }
        if input.len() < MIN_USERNAME_LEN {
            return Err(invalid("must be at least 3 characters"));
        }
        if !input.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(invalid("may contain only ASCII letters, digits, '.', '_' and '-'"));
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// The normalised username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased() {
        assert_eq!(Username::parse("Ada.Lovelace_1-x").unwrap().as_str(), "ada.lovelace_1-x");
    }

    #[test]
    fn bad_usernames_are_rejected_with_a_reason() {
        for (input, reason) in [
            ("", "must not be empty"),
            ("ab", "must be at least 3 characters"),
            (&"a".repeat(65), "must be at most 64 characters"),
            ("ada lovelace", "may contain only ASCII letters, digits, '.', '_' and '-'"),
            ("adé", "may contain only ASCII letters, digits, '.', '_' and '-'"),
            ("ada\0", "may contain only ASCII letters, digits, '.', '_' and '-'"),
        ] {
            match Username::parse(input) {
                Err(AuthError::InvalidUsername { reason: got, .. }) => {
                    assert_eq!(got, reason, "{input:?}");
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_length_limits_are_inclusive() {
        assert!(Username::parse("abc").is_ok());
        assert!(Username::parse(&"a".repeat(64)).is_ok());
    }
}
