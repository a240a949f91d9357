//! Room names and the configurable rules they must follow.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// A validated room name, cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Wraps a name without checking it. Use [`RoomNameRules::parse`] for client input;
    /// this is for names the server builds itself (`issue:42`) or received from a peer
    /// instance that already validated them.
    pub fn new_unchecked(name: impl Into<Arc<str>>) -> Self {
        RoomName(name.into())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which room names are accepted: 1..=`max_len` bytes of ASCII letters, digits and the
/// punctuation listed in `extra_chars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomNameRules {
    /// Longest accepted name, in bytes.
    pub max_len: usize,
    /// Punctuation accepted besides ASCII letters and digits.
    pub extra_chars: String,
}

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The name is empty.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("room name is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the refused name.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("room name contains {0:?}; allowed are ASCII letters, digits and {1:?}")]
    BadChar(char, String),
}

impl RoomNameRules {
    /// Validates `name` and wraps it.
    pub fn parse(&self, name: &str) -> Result<RoomName, RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > self.max_len {
            return Err(RoomNameError::TooLong {
                len: name.len(),
                max: self.max_len,
            });
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !self.extra_chars.contains(*c))
        {
            return Err(RoomNameError::BadChar(bad, self.extra_chars.clone()));
        }
        Ok(RoomName(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RoomNameRules {
        RoomNameRules {
            max_len: 16,
            extra_chars: ":_-.".into(),
        }
    }

    #[test]
    fn accepts_valid_names() {
        assert_eq!(rules().parse("project:42").unwrap().as_str(), "project:42");
        assert!(rules().parse("a_b-c.d").is_ok());
    }

    #[test]
    fn refuses_invalid_names() {
        assert_eq!(rules().parse(""), Err(RoomNameError::Empty));
        assert!(matches!(
            rules().parse("a-very-long-room-name"),
            Err(RoomNameError::TooLong { len: 21, max: 16 })
        ));
        assert!(matches!(
            rules().parse("room name"),
            Err(RoomNameError::BadChar(' ', _))
        ));
        assert!(matches!(
            rules().parse("räum"),
            Err(RoomNameError::BadChar('ä', _))
        ));
    }
}
