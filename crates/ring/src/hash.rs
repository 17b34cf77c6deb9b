//! Ring positions: the only place where bytes become tokens.
//!
//! Positions must be identical on every machine, in every version and after
//! every restart, so they are computed with `xxh3_64` (seed 0) over an
//! explicit byte layout, never through `std::hash::Hash`.

use xxhash_rust::xxh3::xxh3_64;

/// A position on the ring: the 64-bit circle `0..=u64::MAX`.
pub type Token = u64;

/// The ring position of a key: `xxh3_64(key)`, over the key's bytes as given.
///
/// ```
/// let token = ringkv_ring::key_token(b"key1");
/// assert_eq!(token, ringkv_ring::key_token(b"key1"));
/// ```
#[inline]
pub fn key_token(key: &[u8]) -> Token {
    xxh3_64(key)
}

/// The ring position of virtual node `index` of node `id`.
///
/// Byte layout hashed with `xxh3_64`:
///
/// ```text
/// +----------------------+----------------+---------------------+
/// | id length: u32 LE    | id: UTF-8      | vnode index: u32 LE |
/// +----------------------+----------------+---------------------+
/// ```
///
/// The length prefix makes the layout unambiguous for every id, including
/// ids that end in digits or contain NUL bytes.
pub fn vnode_token(id: &str, index: u32) -> Token {
    let id = id.as_bytes();
    let mut buf = Vec::with_capacity(id.len() + 8);
    buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
    buf.extend_from_slice(id);
    buf.extend_from_slice(&index.to_le_bytes());
    xxh3_64(&buf)
}
