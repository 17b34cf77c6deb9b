//! How much of a script the reader holds in memory at once.

/// Caps that keep a [`ScriptReader`](super::ScriptReader)'s memory bounded,
/// whatever its input (`/dev/zero`, a block that never closes, ...).
///
/// Going past a cap is a syntax error with the line and column where it
/// happened; the reader then recovers as for any other syntax error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line, in bytes, its line ending included. A longer line
    /// is an error; the reader skips the rest of it without storing it.
    pub max_line_bytes: usize,
    /// The most lanes in one `concurrently` block.
    pub max_block_lanes: usize,
    /// The most bytes of script text in one `concurrently` block, counted
    /// from the line after `concurrently {` up to the closing `}`.
    pub max_block_bytes: usize,
}

impl Limits {
    /// 1 MiB: the longest line of a script.
    pub const MAX_LINE_BYTES: usize = 1 << 20;
    /// 100,000: the most lanes in one `concurrently` block.
    pub const MAX_BLOCK_LANES: usize = 100_000;
    /// 8 MiB: the most script text in one `concurrently` block.
    pub const MAX_BLOCK_BYTES: usize = 8 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: Self::MAX_LINE_BYTES,
            max_block_lanes: Self::MAX_BLOCK_LANES,
            max_block_bytes: Self::MAX_BLOCK_BYTES,
        }
    }
}
