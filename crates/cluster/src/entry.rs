//! The stored entry: a value with its type, its expiry and its version.
//!
//! An [`Entry`] is what a [`Store`](crate::Store) keeps under a key. Besides
//! the value it carries what must travel with the key when its range moves
//! to another node, survive rollbacks and (with a persistent engine) be
//! written to disk:
//! - the absolute expiry time ([`Entry::expires_at`], unix milliseconds), so
//!   a key that expires while its range is copied is just as expired on the
//!   target, whatever the two nodes' clocks were doing in between;
//! - the type tag ([`EntryKind`]), so that hashes, lists and others can be
//!   stored later without a format change: the tag says how to read the
//!   value's bytes;
//! - the modification version ([`Entry::version`]), stamped by the cluster
//!   on every write, which WATCH-style optimistic transactions compare. It
//!   lives in the entry (not beside it) because it must move with the key:
//!   a version kept per node would restart on the target and could repeat a
//!   value a client already watched.
//!
//! An access clock for LRU eviction is deliberately *not* in the entry: it
//! changes on every read, which runs under a shared lock and must not
//! rewrite the entry, and it need not survive a move or a restart (Redis
//! does not persist it either). It lives beside the entry, in the node's
//! per-stripe bookkeeping.
//!
//! # Byte layout (format 1)
//!
//! For engines that store entries as bytes ([`Entry::encode`],
//! [`Entry::decode`]); all integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     1  format version (1)
//!      1     1  kind (0 = string)
//!      2     1  flags (bit 0: an expiry follows; other bits 0)
//!      3     8  version
//!     11     8  expires_at, unix ms (only if flag bit 0 is set)
//!  11|19   ...  value bytes, to the end
//! ```
//!
//! A later format bumps byte 0 and keeps decoding format 1.

use bytes::Bytes;

/// The format version written by [`Entry::encode`].
pub const ENTRY_FORMAT: u8 = 1;

/// Bytes of bookkeeping counted per entry in `used_memory`, on top of the
/// key's and the value's lengths: the in-memory store's tree slot, the
/// entry's fixed fields and the two reference-counted buffers' headers,
/// rounded. It makes the count proportional to what the process holds for
/// small keys too; it is a documented estimate, not an allocator figure.
pub const ENTRY_OVERHEAD: usize = 96;

/// What kind of value an entry holds. Only strings exist today; the tag is
/// stored (byte 1 of the layout) so that other types can follow without a
/// format change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EntryKind {
    /// A byte string (also used for counters, as Redis does).
    #[default]
    String,
}

impl EntryKind {
    /// The name Redis's `TYPE` command answers for this kind.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::String => "string",
        }
    }

    fn tag(self) -> u8 {
        match self {
            EntryKind::String => 0,
        }
    }

    fn from_tag(tag: u8) -> Option<EntryKind> {
        match tag {
            0 => Some(EntryKind::String),
            _ => None,
        }
    }
}

/// A stored value with its type, expiry and version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The value's bytes, read according to `kind`.
    pub value: Bytes,
    /// When the key expires, in unix milliseconds; `None` for a key that
    /// never expires. The key is expired once the clock is *past* this
    /// instant (Redis's rule: at exactly `expires_at` it is still live).
    pub expires_at: Option<u64>,
    /// How to read `value`.
    pub kind: EntryKind,
    /// The modification version: the cluster stamps every write with a
    /// fresh, cluster-wide increasing number, so two reads of a key that
    /// see the same version saw the same write. Whatever a caller puts
    /// here is replaced on write.
    pub version: u64,
}

impl Entry {
    /// A string entry that never expires.
    pub fn string(value: impl Into<Bytes>) -> Entry {
        Entry {
            value: value.into(),
            ..Entry::default()
        }
    }

    /// The same entry expiring at `expires_at` (unix ms), or never.
    pub fn expiring(mut self, expires_at: Option<u64>) -> Entry {
        self.expires_at = expires_at;
        self
    }

    /// Whether the entry is expired at `now` (unix ms): only once the clock
    /// is past its expiry.
    #[inline]
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| now > at)
    }

    /// Milliseconds left to live at `now`, or `None` if it never expires
    /// (Redis's `PTTL` answers -1 then). Zero once expired.
    pub fn ttl_ms(&self, now: u64) -> Option<u64> {
        self.expires_at.map(|at| at.saturating_sub(now))
    }

    /// What the entry counts for in `used_memory` under a key of `key_len`
    /// bytes: key + value + [`ENTRY_OVERHEAD`].
    #[inline]
    pub fn footprint(&self, key_len: usize) -> usize {
        key_len + self.value.len() + ENTRY_OVERHEAD
    }

    /// Appends the entry's bytes (format [`ENTRY_FORMAT`], see the module
    /// docs) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(19 + self.value.len());
        out.push(ENTRY_FORMAT);
        out.push(self.kind.tag());
        out.push(u8::from(self.expires_at.is_some()));
        out.extend_from_slice(&self.version.to_le_bytes());
        if let Some(at) = self.expires_at {
            out.extend_from_slice(&at.to_le_bytes());
        }
        out.extend_from_slice(&self.value);
    }

    /// Reads an entry written by [`Entry::encode`]. The value shares
    /// `bytes`' buffer (no copy).
    pub fn decode(bytes: &Bytes) -> Result<Entry, EntryFormatError> {
        let (mut entry, start) = Entry::header(bytes)?;
        entry.value = bytes.slice(start..);
        Ok(entry)
    }

    /// [`Entry::decode`] into a value of its own (copied): for entries
    /// read out of a larger buffer that should not stay alive with them,
    /// as a range copy's page.
    pub fn decode_copied(bytes: &[u8]) -> Result<Entry, EntryFormatError> {
        let (mut entry, start) = Entry::header(bytes)?;
        entry.value = Bytes::copy_from_slice(&bytes[start..]);
        Ok(entry)
    }

    /// The entry `bytes` encode, with an empty value, and where its value
    /// starts.
    fn header(bytes: &[u8]) -> Result<(Entry, usize), EntryFormatError> {
        let header = bytes.get(..11).ok_or(EntryFormatError::Truncated)?;
        if header[0] != ENTRY_FORMAT {
            return Err(EntryFormatError::UnknownFormat(header[0]));
        }
        let kind =
            EntryKind::from_tag(header[1]).ok_or(EntryFormatError::UnknownKind(header[1]))?;
        let flags = header[2];
        if flags & !1 != 0 {
            return Err(EntryFormatError::UnknownFlags(flags));
        }
        let version = u64::from_le_bytes(header[3..11].try_into().expect("8 bytes"));
        let (expires_at, start) = if flags & 1 == 1 {
            let at = bytes.get(11..19).ok_or(EntryFormatError::Truncated)?;
            (
                Some(u64::from_le_bytes(at.try_into().expect("8 bytes"))),
                19,
            )
        } else {
            (None, 11)
        };
        let entry = Entry {
            value: Bytes::new(),
            expires_at,
            kind,
            version,
        };
        Ok((entry, start))
    }
}

/// Why bytes could not be read as an [`Entry`]. The bytes were not
/// written by [`Entry::encode`] of this or an earlier version: the engine's
/// data is corrupt or newer than this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryFormatError {
    /// Fewer bytes than the header needs.
    #[error("stored entry is truncated; the engine's data is corrupt")]
    Truncated,
    /// Byte 0 names a format this build does not know.
    #[error("stored entry has format {0}, this build reads format 1; upgrade ringkv")]
    UnknownFormat(u8),
    /// Byte 1 names a type this build does not know.
    #[error("stored entry has type tag {0}, unknown to this build; upgrade ringkv")]
    UnknownKind(u8),
    /// Byte 2 sets flags this build does not know.
    #[error("stored entry has flags {0:#04x}, unknown to this build; upgrade ringkv")]
    UnknownFlags(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trips_and_layout_is_pinned() {
        let e = Entry {
            value: Bytes::from_static(b"hi"),
            expires_at: Some(0x0102),
            kind: EntryKind::String,
            version: 7,
        };
        let mut out = Vec::new();
        e.encode(&mut out);
        assert_eq!(
            out,
            [
                1, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, b'h', b'i'
            ]
        );
        assert_eq!(Entry::decode(&Bytes::from(out)), Ok(e.clone()));
        let plain = Entry::string("v");
        let mut out = Vec::new();
        plain.encode(&mut out);
        assert_eq!(out, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'v']);
        assert_eq!(Entry::decode(&Bytes::from(out)), Ok(plain));
    }

    #[test]
    fn decode_refuses_what_it_does_not_know() {
        let d = |b: &[u8]| Entry::decode(&Bytes::copy_from_slice(b));
        assert_eq!(d(&[1, 0, 0]), Err(EntryFormatError::Truncated));
        assert_eq!(
            d(&[1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5]),
            Err(EntryFormatError::Truncated)
        );
        assert_eq!(d(&[2; 11]), Err(EntryFormatError::UnknownFormat(2)));
        assert_eq!(
            d(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EntryFormatError::UnknownKind(9))
        );
        assert_eq!(
            d(&[1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EntryFormatError::UnknownFlags(2))
        );
    }

    #[test]
    fn expiry_follows_redis_rule() {
        let e = Entry::string("v").expiring(Some(100));
        assert!(!e.is_expired(99));
        assert!(!e.is_expired(100), "live at exactly its expiry");
        assert!(e.is_expired(101));
        assert_eq!(e.ttl_ms(40), Some(60));
        assert_eq!(e.ttl_ms(200), Some(0));
        assert_eq!(Entry::string("v").ttl_ms(5), None);
    }
}
