//! Syntax and I/O errors of the script parser.

use std::fmt;

/// What went wrong in a [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Something other than what the grammar allows here.
    Expected {
        /// What was expected, e.g. "`,` or `)`" or "2 arguments for put(key, value)".
        expected: String,
        /// What was found instead, e.g. "`x`", "end of line" or "1".
        found: String,
    },
    /// A quoted string without its closing `"` on the same line.
    UnterminatedString {
        /// The 1-based column of the opening `"`.
        start_column: usize,
    },
    /// A backslash sequence in a quoted string that is not an escape.
    UnknownEscape {
        /// The sequence as written, e.g. `\q`.
        escape: String,
    },
    /// A `}` line outside any `concurrently` block.
    UnmatchedCloseBrace,
    /// A `concurrently` line inside a `concurrently` block.
    NestedBlock {
        /// The line where the enclosing block was opened.
        outer_line: usize,
    },
    /// A line longer than [`Limits::max_line_bytes`](super::Limits).
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A `concurrently` block with more lanes than
    /// [`Limits::max_block_lanes`](super::Limits).
    TooManyLanes {
        /// The line where the block was opened.
        opened_line: usize,
        /// The limit.
        limit: usize,
    },
    /// A `concurrently` block longer than
    /// [`Limits::max_block_bytes`](super::Limits).
    BlockTooLong {
        /// The line where the block was opened.
        opened_line: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The input ended inside a `concurrently` block.
    UnterminatedBlock {
        /// The line where the block was opened.
        opened_line: usize,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Expected { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::UnterminatedString { start_column } => {
                write!(f, "unterminated string starting at column {start_column}")
            }
            ErrorKind::UnknownEscape { escape } => write!(
                f,
                "unknown escape `{escape}` (the escapes are \\\\, \\\", \\n, \\t and \\xHH)"
            ),
            ErrorKind::UnmatchedCloseBrace => {
                f.write_str("`}` without an open `concurrently` block")
            }
            ErrorKind::NestedBlock { outer_line } => write!(
                f,
                "`concurrently` blocks cannot be nested (the enclosing block was opened on line {outer_line})"
            ),
            ErrorKind::LineTooLong { limit } => write!(
                f,
                "line longer than {limit} bytes, the most a script line may hold: shorten it"
            ),
            ErrorKind::TooManyLanes { opened_line, limit } => write!(
                f,
                "the `concurrently` block opened on line {opened_line} has more than {limit} lanes, \
                 the most a block may hold: split it into several blocks"
            ),
            ErrorKind::BlockTooLong { opened_line, limit } => write!(
                f,
                "the `concurrently` block opened on line {opened_line} holds more than {limit} bytes \
                 of script, the most a block may hold: close it with `}}` or split it into several blocks"
            ),
            ErrorKind::UnterminatedBlock { opened_line } => write!(
                f,
                "unterminated `concurrently` block opened on line {opened_line}: expected `}}` before the end of the input"
            ),
        }
    }
}

/// A syntax error, with its 1-based line and column (counted in characters).
///
/// Displays as e.g. ``line 7, column 12: expected `,` or `)`, found `x` ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// The 1-based column, in characters.
    pub column: usize,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl ParseError {
    pub(super) fn expected(
        line: usize,
        column: usize,
        expected: impl Into<String>,
        found: String,
    ) -> Self {
        ParseError {
            line,
            column,
            kind: ErrorKind::Expected {
                expected: expected.into(),
                found,
            },
        }
    }
}

/// An error from [`ScriptReader`](super::ScriptReader): a syntax error or an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The script is malformed; the reader can go on with the next line.
    #[error(transparent)]
    Syntax(#[from] ParseError),
    /// Reading the script failed; the reader yields nothing more.
    #[error("line {line}: error reading the script: {source}")]
    Io {
        /// The 1-based number of the line that was being read.
        line: usize,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ScriptError {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            ScriptError::Syntax(e) => e.line,
            ScriptError::Io { line, .. } => *line,
        }
    }
}
