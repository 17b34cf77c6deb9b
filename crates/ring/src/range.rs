//! Token ranges on the circle.

use std::ops::RangeInclusive;

use crate::Token;

/// An arc of the ring: the tokens `t` with `start < t <= end`, wrapping past
/// `u64::MAX` when `start >= end`. `start == end` is the whole circle.
///
/// A key belongs to the first vnode token at or after its own token, so the
/// range owned by a vnode at token `end` is `(previous token, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenRange {
    /// Exclusive lower bound.
    pub start: Token,
    /// Inclusive upper bound.
    pub end: Token,
}

impl TokenRange {
    /// The range `(start, end]`.
    pub const fn new(start: Token, end: Token) -> Self {
        TokenRange { start, end }
    }

    /// The whole circle.
    pub const FULL: TokenRange = TokenRange { start: 0, end: 0 };

    /// Whether the range wraps past `u64::MAX` (the whole circle wraps).
    pub const fn wraps(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `token` lies in the range.
    #[inline]
    pub const fn contains(&self, token: Token) -> bool {
        if self.start < self.end {
            self.start < token && token <= self.end
        } else {
            token > self.start || token <= self.end
        }
    }

    /// Number of tokens in the range, as a fraction of the circle in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        let len = self.end.wrapping_sub(self.start);
        if len == 0 {
            1.0
        } else {
            len as f64 / 2f64.powi(64)
        }
    }

    /// The range as one or two inclusive intervals in ascending order, for
    /// ordered stores: a wrapping range yields `[0, end]` and `[start + 1, MAX]`.
    pub fn intervals(&self) -> impl Iterator<Item = RangeInclusive<Token>> {
        let (first, second) = if self.start < self.end {
            (Some(self.start + 1..=self.end), None)
        } else {
            let high = self.start.checked_add(1).map(|lo| lo..=Token::MAX);
            (Some(0..=self.end), high)
        };
        first.into_iter().chain(second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_plain_and_wrapping() {
        let r = TokenRange::new(10, 20);
        assert!(!r.contains(10) && r.contains(11) && r.contains(20) && !r.contains(21));
        let w = TokenRange::new(u64::MAX - 1, 5);
        assert!(w.contains(u64::MAX) && w.contains(0) && w.contains(5));
        assert!(!w.contains(6) && !w.contains(u64::MAX - 1));
        assert!(TokenRange::FULL.contains(0) && TokenRange::FULL.contains(u64::MAX));
        assert!(TokenRange::new(7, 7).contains(7) && TokenRange::new(7, 7).contains(8));
    }

    #[test]
    fn intervals_cover_exactly_the_range() {
        let cases = [
            TokenRange::new(10, 20),
            TokenRange::new(20, 10),
            TokenRange::new(u64::MAX, 3),
            TokenRange::new(5, 5),
            TokenRange::new(u64::MAX, u64::MAX),
        ];
        let probes = [0, 1, 3, 4, 5, 6, 9, 10, 11, 20, 21, u64::MAX - 1, u64::MAX];
        for r in cases {
            let iv: Vec<_> = r.intervals().collect();
            for t in probes {
                let n = iv.iter().filter(|i| i.contains(&t)).count();
                assert_eq!(n, r.contains(t) as usize, "range {r:?} token {t}");
            }
        }
    }
}
