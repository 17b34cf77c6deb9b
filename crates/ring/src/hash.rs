//! Ring positions: the only place where bytes become tokens.
//!
//! Positions must be identical on every machine, in every version and after
//! every restart, so they are computed with `xxh3_64` (seed 0) over an
//! explicit byte layout, never through `std::hash::Hash`.
//!
//! A key is placed by its hash tag when it has one ([`hash_tag`]), as Redis
//! Cluster and twemproxy do: `{user1}.name` and `{user1}.email` hash the
//! same bytes, `user1`, so they share a token and always live on one node.
//! That is what keeps multi-key commands on one node once nodes are
//! separate processes.

use xxhash_rust::xxh3::xxh3_64;

/// A position on the ring: the 64-bit circle `0..=u64::MAX`.
pub type Token = u64;

/// The ring position of a key: `xxh3_64(hash_tag(key))`.
///
/// Keys with the same hash tag share a token, so they are always owned by
/// the same node and move together in a redistribution; a key without a
/// tag is hashed whole, exactly as before tags existed.
///
/// ```
/// use ringkv_ring::key_token;
///
/// assert_eq!(key_token(b"key1"), key_token(b"key1"));
/// // Both keys hash only their tag, `user1`.
/// assert_eq!(key_token(b"{user1}.name"), key_token(b"{user1}.email"));
/// assert_eq!(key_token(b"{user1}.name"), key_token(b"user1"));
/// ```
#[inline]
pub fn key_token(key: &[u8]) -> Token {
    xxh3_64(hash_tag(key))
}

/// The bytes of `key` that place it: its hash tag if it has one, else the
/// whole key. The same rule as Redis Cluster's `keyHashSlot`:
///
/// - find the first `{`; none: the whole key;
/// - find the first `}` after it; none, or nothing between them (`{}`):
///   the whole key;
/// - else the bytes strictly between that `{` and that `}`.
///
/// Only the first `{` counts: `foo{}{bar}` has an empty first tag and is
/// hashed whole, and `{{bar}}` hashes `{bar`.
///
/// ```
/// use ringkv_ring::hash_tag;
///
/// assert_eq!(hash_tag(b"{user1}.name"), b"user1");
/// assert_eq!(hash_tag(b"plain"), b"plain");
/// assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
/// ```
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    // Most keys have no `{`: one vectorised scan, then the whole key.
    let Some(open) = find(b'{', key) else {
        return key;
    };
    let rest = &key[open + 1..];
    match find(b'}', rest) {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// The index of the first `byte` in `hay`.
///
/// Each 16-byte chunk is tested with a branch-free OR of comparisons, which
/// compiles to a couple of SIMD instructions and inlines into
/// [`key_token`]; only the chunk holding the byte is searched one byte at
/// a time. A plain `position` loop (one branch per byte) and the `memchr`
/// crate (a call through its runtime CPU dispatch) both made a 16-byte
/// key's token about three times slower than hashing alone.
#[inline]
fn find(byte: u8, hay: &[u8]) -> Option<usize> {
    let mut base = 0;
    for chunk in hay.chunks(16) {
        if chunk.iter().fold(false, |seen, &b| seen | (b == byte)) {
            return chunk.iter().position(|&b| b == byte).map(|i| base + i);
        }
        base += chunk.len();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::{hash_tag, key_token};
    use proptest::prelude::*;
    use xxhash_rust::xxh3::xxh3_64;

    /// A line-by-line port of Redis Cluster's `keyHashSlot` (cluster.c),
    /// returning the hashed bytes instead of their CRC16 slot: the reference
    /// `hash_tag` must agree with on every key.
    fn redis_key_hash_bytes(key: &[u8]) -> &[u8] {
        let keylen = key.len();
        let mut s = 0;
        while s < keylen && key[s] != b'{' {
            s += 1;
        }
        // No '{': hash the whole key.
        if s == keylen {
            return key;
        }
        let mut e = s + 1;
        while e < keylen && key[e] != b'}' {
            e += 1;
        }
        // No '}' or nothing between {}: hash the whole key.
        if e == keylen || e == s + 1 {
            return key;
        }
        &key[s + 1..e]
    }

    /// The cases of `keyHashSlot`, each with the bytes it hashes.
    #[test]
    fn redis_hash_tag_cases() {
        let cases: [(&[u8], &[u8]); 16] = [
            (b"", b""),
            (b"plain", b"plain"),
            (b"{user1}.name", b"user1"),
            (b"{user1}.email", b"user1"),
            (b"foo{bar}baz", b"bar"),
            (b"foo{bar}", b"bar"),
            (b"{a}", b"a"),
            // Only the first `{` and the first `}` after it count.
            (b"foo{bar}{zap}", b"bar"),
            (b"{{bar}}", b"{bar"),
            (b"foo{{bar}}zap", b"{bar"),
            (b"}{x}", b"x"),
            // An empty first tag: the whole key, even if a later tag exists.
            (b"foo{}{bar}", b"foo{}{bar}"),
            (b"{}", b"{}"),
            // `{` without a `}` after it: the whole key.
            (b"zap{", b"zap{"),
            (b"foo}bar{", b"foo}bar{"),
            // Tags are bytes, not text.
            (b"x{\xff\x00}y", b"\xff\x00"),
        ];
        for (key, want) in cases {
            assert_eq!(
                hash_tag(key),
                want,
                "key {:?}",
                key.escape_ascii().to_string()
            );
            assert_eq!(
                redis_key_hash_bytes(key),
                want,
                "reference on key {:?}",
                key.escape_ascii().to_string()
            );
            assert_eq!(key_token(key), xxh3_64(want));
        }
    }

    /// Golden positions of tagged keys: a change of the tag rule moves every
    /// tagged key to another node, so it must be caught like a change of the
    /// hash. Values computed independently with the Python `xxhash` package
    /// (`xxhash.xxh3_64_intdigest(b"user1")` and so on), over the bytes the
    /// rule selects, written out by hand in each row.
    #[test]
    fn golden_tagged_tokens() {
        let keys: [(&[u8], u64); 7] = [
            (b"{user1}.name", 17291743399244377756),  // b"user1"
            (b"foo{bar}baz", 15304296276065178466),   // b"bar"
            (b"{{bar}}", 11772691545060249104),       // b"{bar"
            (b"foo{bar}{zap}", 15304296276065178466), // b"bar"
            (b"x{\xff\x00}y", 794437103675513319),    // b"\xff\x00"
            (b"foo{}{bar}", 13944242203610388636),    // the whole key
            (b"zap{", 358110751222167768),            // the whole key
        ];
        for (key, want) in keys {
            assert_eq!(
                key_token(key),
                want,
                "key {:?}",
                key.escape_ascii().to_string()
            );
        }
    }

    proptest! {
        /// `hash_tag` agrees with the port of `keyHashSlot` on keys made
        /// mostly of braces, where every edge case lives.
        #[test]
        fn hash_tag_matches_redis(key in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), Just(b'a'), any::<u8>()], 0..12,
        )) {
            prop_assert_eq!(hash_tag(&key), redis_key_hash_bytes(&key));
        }

        /// Keys sharing a tag share a token, whatever surrounds the tag.
        #[test]
        fn a_shared_tag_shares_a_token(
            tag in "[^{}]{1,8}", before in "[^{]{0,8}", after in ".{0,8}",
        ) {
            let key = format!("{before}{{{tag}}}{after}");
            prop_assert_eq!(key_token(key.as_bytes()), key_token(tag.as_bytes()));
        }
    }
}
