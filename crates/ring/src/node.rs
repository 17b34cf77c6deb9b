//! Node identities and the rule a ring member's id follows.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::RingError;

/// Largest node id accepted, in bytes (see [`NodeId::validate`]).
pub const MAX_NODE_ID_LEN: usize = 64;

/// The punctuation a node id may hold besides ASCII letters and digits.
pub const NODE_ID_PUNCTUATION: &str = "-_.:@";

/// A node's id: an immutable, cheaply cloned string.
///
/// Any string makes a `NodeId`, but a ring accepts as a member only an id
/// that passes [`NodeId::validate`]: [`Ring::with_node`](crate::Ring::with_node)
/// and [`Ring::from_json`](crate::Ring::from_json) check it.
///
/// Ordering is byte-wise on the UTF-8 text; it breaks token collisions.
/// Comparing two clones of one id does not read the text: snapshots share
/// their members' ids, so a diff compares owners by pointer.
#[derive(Clone)]
pub struct NodeId(Arc<str>);

impl PartialEq for NodeId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for NodeId {}

impl Ord for NodeId {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for NodeId {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for NodeId {
    /// The text's hash, as `str` hashes (so that `Borrow<str>` lookups in
    /// hash maps agree).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl NodeId {
    /// Builds an id from any string (unchecked: see [`NodeId::validate`]).
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        NodeId(id.into())
    }

    /// Checks that `id` can name a ring member: 1 to [`MAX_NODE_ID_LEN`]
    /// (64) bytes of ASCII letters, digits and [`NODE_ID_PUNCTUATION`]
    /// (`-_.:@`).
    ///
    /// Why this set: ids are written unquoted into log lines, `INFO`
    /// replies, protocol errors, scripts and saved rings, so they must not
    /// hold a control character (CR/LF would forge a line, NUL cuts C
    /// strings), a space or a quote (they split words), or non-ASCII text
    /// (it has look-alikes and several encodings of one name). What
    /// remains still names a node the usual ways: `node1`, `n-4`,
    /// `db_2.eu`, `10.0.0.7:7001`, `kv@host`. 64 bytes keep an id
    /// readable in one log column and every saved ring small.
    ///
    /// ```
    /// use ringkv_ring::{NodeId, RingError};
    /// assert!(NodeId::validate("10.0.0.7:7001").is_ok());
    /// assert!(matches!(
    ///     NodeId::validate("n1\r\nrole:master"),
    ///     Err(RingError::InvalidNodeId { found: '\r', index: 2, .. })
    /// ));
    /// ```
    pub fn validate(id: &str) -> Result<(), RingError> {
        if id.is_empty() {
            return Err(RingError::EmptyNodeId);
        }
        if id.len() > MAX_NODE_ID_LEN {
            return Err(RingError::NodeIdTooLong {
                len: id.len(),
                max: MAX_NODE_ID_LEN,
            });
        }
        let allowed =
            |b: u8| b.is_ascii_alphanumeric() || NODE_ID_PUNCTUATION.as_bytes().contains(&b);
        if let Some(index) = id.bytes().position(|b| !allowed(b)) {
            let found = id[index..]
                .chars()
                .next()
                .expect("a byte that is not allowed starts a character: allowed bytes are ASCII");
            return Err(RingError::InvalidNodeId {
                id: NodeId::new(id),
                index,
                found,
            });
        }
        Ok(())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId::new(s)
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}
