//! The on-disk key: `token (u64 big-endian) || key bytes`, so that the
//! engine's byte order is the `(token, key)` order a range scan needs.

use std::ops::Bound;

/// Bytes of the token prefix.
pub(crate) const TOKEN_LEN: usize = 8;

/// `token || key`.
pub(crate) fn encode(token: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOKEN_LEN + key.len());
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The token and key of an encoded key, or `None` if it is too short to
/// hold a token.
pub(crate) fn decode(raw: &[u8]) -> Option<(u64, &[u8])> {
    let (token, key) = raw.split_at_checked(TOKEN_LEN)?;
    let token = u64::from_be_bytes(token.try_into().expect("split at TOKEN_LEN"));
    Some((token, key))
}

/// The encoded-key bounds of every entry whose token lies in `lo..=hi`.
pub(crate) fn token_bounds(lo: u64, hi: u64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    // The empty key sorts first among keys of a token, so the bare token
    // prefix is the smallest encoded key of that token.
    let start = Bound::Included(lo.to_be_bytes().to_vec());
    let end = match hi.checked_add(1) {
        Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
        None => Bound::Unbounded,
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_order_is_token_then_key_order() {
        let a = encode(1, b"zz");
        let b = encode(2, b"");
        let c = encode(2, b"a");
        assert!(a < b && b < c);
        assert_eq!(decode(&c), Some((2, &b"a"[..])));
        assert_eq!(decode(b"short"), None);
    }

    #[test]
    fn bounds_cover_the_last_token() {
        let (start, end) = token_bounds(u64::MAX, u64::MAX);
        assert_eq!(start, Bound::Included(u64::MAX.to_be_bytes().to_vec()));
        assert_eq!(end, Bound::Unbounded);
    }
}
