//! The operation-script language of the `ringkv` tool, and its streaming parser.
//!
//! A script has one operation per line:
//!
//! ```text
//! # comments start with `#` (outside quotes) and run to the end of the line
//! add_node(node4)
//! add_node(node5, weight=2)
//! remove_node(node2)
//! put(key1, value1)
//! put("a key", "a value, with a comma\n")
//! get(key1)
//! delete(key1)
//! stats()
//! crash(node1)
//! heal(node1)
//! fail(node4, mid_copy)
//! fail(node4, before_copy, times=2)
//! remove_node(node3, force=true)
//! resume()
//! ```
//!
//! Arguments are bare words (a run of characters other than whitespace and
//! `(` `)` `,` `"` `#` `{` `}` `;` `=`) or double-quoted strings, in which
//! `\\`, `\"`, `\n`, `\t` and `\xHH` (one raw byte, two hex digits) are the
//! only escapes. Keys and values are byte strings; node ids are non-empty
//! UTF-8 strings. A weight or a `times` is a positive integer that fits in a
//! `u32`; a failure point is one of the bare words `before_copy`,
//! `mid_copy`, `before_switch` and `cleanup` ([`FailPoint`]); `force` is
//! `true` or `false`.
//!
//! # Concurrency blocks
//!
//! ```text
//! concurrently {
//!     add_node(node5)
//!     remove_node(node2); get(key1)
//!     put(key9, v9); get(key9); delete(key9)
//! }
//! ```
//!
//! `concurrently {` opens a block and must be alone on its line (a comment may
//! follow); `}` alone on its line closes it. Each non-blank line inside the
//! block is one [`Lane`]: its operations, separated by `;` (one trailing `;` is
//! allowed), run in order while the lanes run concurrently (on a bounded pool
//! of threads, see [`crate::pool`]). Blocks do not nest, and `;` is not allowed
//! outside a block.
//!
//! # Errors and recovery
//!
//! [`ScriptReader`] reads one line at a time and yields one [`Item`] per
//! top-level operation or per complete block. After an error it can simply be
//! polled again (the CLI's `--keep-going`):
//!
//! * An error on a top-level line skips that line only; parsing resumes on the
//!   next line.
//! * An error inside a block (a bad lane, a nested `concurrently`, a line that
//!   is not valid UTF-8) **abandons the whole block**: none of its lanes are
//!   yielded, the following lines are skipped without further diagnostics up to
//!   and including the next line whose first non-blank character is `}`, and
//!   parsing resumes after it. If the input ends first, an
//!   [`ErrorKind::UnterminatedBlock`] error follows.
//! * A `}` line with trailing text closes its block but reports an error, so
//!   the block is abandoned too.
//! * A malformed header such as `concurrently { put(a, b)` still opens a block
//!   (which is abandoned), so its lanes are not misread as top-level lines.
//! * After an I/O error the reader is exhausted and yields `None`.
//!
//! # Limits
//!
//! Memory stays bounded whatever the input ([`Limits`]): a line longer than
//! 1 MiB, a block of more than 100,000 lanes or 8 MiB of text is a syntax
//! error at the line that crosses the cap. The reader never stores more than
//! the cap of a line: the rest of a long line is skipped when the reader is
//! polled again, and a block past its cap is abandoned as above.

mod ast;
mod error;
mod escape;
mod lexer;
mod limits;
mod line;
mod parser;
mod reader;
#[cfg(test)]
mod tests;

pub use ast::{FailPoint, Item, Lane, Op};
pub use error::{ErrorKind, ParseError, ScriptError};
pub use escape::escape;
pub use limits::Limits;
pub use parser::parse_line;
pub use reader::ScriptReader;
