//! Ring positions: the only place where bytes become tokens.
//!
//! Positions must be identical on every machine, in every version and after
//! every restart, so they are computed over an explicit byte layout, never
//! through `std::hash::Hash`.
//!
//! A key is placed by its hash tag when it has one ([`hash_tag`]), as Redis
//! Cluster and twemproxy do: `{user1}.name` and `{user1}.email` hash the
//! same bytes, `user1`, so they share a token and always live on one node.
//! That is what keeps multi-key commands on one node once nodes are
//! separate processes.
//!
//! A key's token starts with its Redis Cluster hash slot ([`key_slot`]:
//! CRC16 of the tag, modulo 16384) in its top 14 bits, followed by the top
//! 50 bits of `xxh3_64` of the tag. So every slot is one contiguous run of
//! tokens ([`slot_tokens`]), and a ring whose range boundaries fall on slot
//! boundaries (balanced partitions with at most [`SLOTS`] partitions, the
//! default) gives every slot exactly one owner: a node can publish the map
//! Redis Cluster clients route by (`CLUSTER SLOTS`). Within a slot, keys
//! are spread by `xxh3`, so a range scan still pages through them in an
//! even order.

use std::ops::RangeInclusive;

use xxhash_rust::xxh3::xxh3_64;

/// A position on the ring: the 64-bit circle `0..=u64::MAX`.
pub type Token = u64;

/// The layout of [`key_token`] and of the balanced allocation, which every
/// node of a cluster must share: a node that placed keys otherwise would
/// receive keys outside the ranges it serves and delete them, and each
/// member's state machine recomputes the ring from the log of changes.
/// 1: `xxh3_64` of the tag alone; 2: the Redis Cluster slot, then
/// `xxh3_64`, and a leave hands partitions to the receiver with the most
/// quota left.
pub const KEY_FORMAT: u32 = 2;

/// Redis Cluster's number of hash slots.
pub const SLOTS: u16 = 16384;

/// A token's slot is its top 14 bits.
const SLOT_SHIFT: u32 = 64 - SLOTS.trailing_zeros();

/// CRC16 as Redis Cluster computes slots (`crc16.c`: CCITT, polynomial
/// 0x1021, initial value 0, not reflected: the XMODEM variant). Sliced by
/// 16 (16 tables of 256 entries, 8 KiB): a 16-byte key is one step of 16
/// independent lookups instead of a chain of 16 (`key_token` of a 16-byte
/// key: 11 ns sliced, 35 ns with one table; `xxh3_64` alone: 3 to 4 ns;
/// docs/BENCHMARKS.md, nodes section 9).
const CRC16: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

/// The ring position of a key: its slot ([`key_slot`]) in the top 14 bits,
/// then the top 50 bits of `xxh3_64(hash_tag(key))`.
///
/// Keys with the same hash tag share a token, so they are always owned by
/// the same node and move together in a redistribution.
///
/// ```
/// use ringkv_ring::{key_slot, key_token, slot_tokens};
///
/// assert_eq!(key_token(b"key1"), key_token(b"key1"));
/// // Both keys hash only their tag, `user1`.
/// assert_eq!(key_token(b"{user1}.name"), key_token(b"{user1}.email"));
/// assert_eq!(key_token(b"{user1}.name"), key_token(b"user1"));
/// // A token lies in its key's slot.
/// assert!(slot_tokens(key_slot(b"foo")).contains(&key_token(b"foo")));
/// ```
#[inline]
pub fn key_token(key: &[u8]) -> Token {
    let tag = hash_tag(key);
    (u64::from(slot_of_tag(tag)) << SLOT_SHIFT) | (xxh3_64(tag) >> (64 - SLOT_SHIFT))
}

/// The Redis Cluster hash slot of a key: CRC16 of its hash tag, modulo
/// [`SLOTS`], exactly `CLUSTER KEYSLOT`.
///
/// ```
/// use ringkv_ring::key_slot;
///
/// // Values Redis answers to CLUSTER KEYSLOT.
/// assert_eq!(key_slot(b"foo"), 12182);
/// assert_eq!(key_slot(b"{foo}.bar"), 12182);
/// ```
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    slot_of_tag(hash_tag(key))
}

#[inline]
fn slot_of_tag(tag: &[u8]) -> u16 {
    CRC16.checksum(tag) & (SLOTS - 1)
}

/// The slot a token lies in.
#[inline]
pub fn token_slot(token: Token) -> u16 {
    (token >> SLOT_SHIFT) as u16
}

/// The tokens of slot `slot` (taken modulo [`SLOTS`]): one contiguous run,
/// `2^50` tokens wide.
pub fn slot_tokens(slot: u16) -> RangeInclusive<Token> {
    let first = u64::from(slot & (SLOTS - 1)) << SLOT_SHIFT;
    first..=first | ((1 << SLOT_SHIFT) - 1)
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
    use super::{SLOTS, hash_tag, key_slot, key_token, slot_tokens, token_slot};
    use proptest::prelude::*;
    use xxhash_rust::xxh3::xxh3_64;

    /// Redis's `crc16` (crc16.c), bit by bit rather than by table: the
    /// reference the `crc` crate's XMODEM table must agree with.
    fn redis_crc16(bytes: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &b in bytes {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// The token of the bytes `tag` selects, computed from the two
    /// reference functions.
    fn reference_token(tag: &[u8]) -> u64 {
        (u64::from(redis_crc16(tag) % SLOTS) << 50) | (xxh3_64(tag) >> 14)
    }

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
            assert_eq!(key_token(key), reference_token(want));
        }
    }

    /// Golden positions of tagged keys: a change of the tag rule moves every
    /// tagged key to another node, so it must be caught like a change of the
    /// hash. Values computed independently in Python, over the bytes the
    /// rule selects (written out by hand in each row):
    /// `((binascii.crc_hqx(tag, 0) & 16383) << 50) | (xxhash.xxh3_64_intdigest(tag) >> 14)`.
    #[test]
    fn golden_tagged_tokens() {
        let keys: [(&[u8], u64); 7] = [
            (b"{user1}.name", 9127600049126517930),  // b"user1"
            (b"foo{bar}baz", 5699113528645025995),   // b"bar"
            (b"{{bar}}", 4521206674041071166),       // b"{bar"
            (b"foo{bar}{zap}", 5699113528645025995), // b"bar"
            (b"x{\xff\x00}y", 1151844093292757984),  // b"\xff\x00"
            (b"foo{}{bar}", 9416752009926549716),    // the whole key
            (b"zap{", 324281030516331361),           // the whole key
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

    /// Slots Redis itself answers to `CLUSTER KEYSLOT` (its documentation's
    /// examples and `redis-cli`), and the check value of CRC16/XMODEM.
    #[test]
    fn slots_are_redis_clusters() {
        assert_eq!(redis_crc16(b"123456789"), 0x31C3);
        let cases: [(&[u8], u16); 6] = [
            (b"somekey", 11058),
            (b"foo{hash_tag}", 2515),
            (b"foo", 12182),
            (b"bar", 5061),
            (b"hello", 866),
            (b"{user1}.name", 8106),
        ];
        for (key, slot) in cases {
            assert_eq!(
                key_slot(key),
                slot,
                "key {:?}",
                key.escape_ascii().to_string()
            );
            assert_eq!(token_slot(key_token(key)), slot);
            assert!(slot_tokens(slot).contains(&key_token(key)));
        }
        // redis-benchmark's table of one tag per slot (crc16_slottable.h):
        // its first entries.
        for (slot, tag) in ["06S", "Qi", "5L5", "4Iu", "4gY"].iter().enumerate() {
            assert_eq!(key_slot(tag.as_bytes()), slot as u16, "tag {tag}");
        }
    }

    /// The slots' token runs tile the circle, in slot order.
    #[test]
    fn slot_tokens_tile_the_ring() {
        assert_eq!(*slot_tokens(0).start(), 0);
        assert_eq!(*slot_tokens(SLOTS - 1).end(), u64::MAX);
        for slot in 1..SLOTS {
            assert_eq!(*slot_tokens(slot).start(), slot_tokens(slot - 1).end() + 1);
            assert_eq!(token_slot(*slot_tokens(slot).start()), slot);
            assert_eq!(token_slot(*slot_tokens(slot).end()), slot);
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

        /// The slot is Redis's CRC16 of the tag, and the token its
        /// reference layout, on any key.
        #[test]
        fn slots_and_tokens_match_the_references(
            key in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let tag = redis_key_hash_bytes(&key);
            prop_assert_eq!(key_slot(&key), redis_crc16(tag) % SLOTS);
            prop_assert_eq!(key_token(&key), reference_token(tag));
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
