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
//! ```
//!
//! Arguments are bare words (a run of characters other than whitespace and
//! `(` `)` `,` `"` `#` `{` `}` `;` `=`) or double-quoted strings, in which
//! `\\`, `\"`, `\n`, `\t` and `\xHH` (one raw byte, two hex digits) are the
//! only escapes. Keys and values are byte strings; node ids are non-empty
//! UTF-8 strings. A weight is a positive integer that fits in a `u32`.
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
//! allowed), run in order on that lane's thread while all lanes run at the same
//! time. Blocks do not nest, and `;` is not allowed outside a block.
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

use std::fmt;
use std::io::BufRead;

/// The operation names, for "expected an operation name" messages.
const OP_NAMES: &str = "an operation name (add_node, remove_node, put, get, delete, stats)";

/// The largest number of characters of offending input quoted in an error.
const MAX_FOUND_CHARS: usize = 40;

/// One operation of a script.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `add_node(id)` or `add_node(id, weight=N)`: add a node to the ring.
    AddNode {
        /// The new node's id (non-empty).
        id: String,
        /// The node's weight, if the script gave one (always at least 1).
        weight: Option<u32>,
    },
    /// `remove_node(id)`: remove a node from the ring.
    RemoveNode {
        /// The id of the node to remove (non-empty).
        id: String,
    },
    /// `put(key, value)`: store a value under a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// `get(key)`: read the value stored under a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// `delete(key)`: delete the value stored under a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// `stats()`: report cluster statistics.
    Stats,
}

impl Op {
    /// The operation's name as written in a script, e.g. `"add_node"`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::AddNode { .. } => "add_node",
            Op::RemoveNode { .. } => "remove_node",
            Op::Put { .. } => "put",
            Op::Get { .. } => "get",
            Op::Delete { .. } => "delete",
            Op::Stats => "stats",
        }
    }
}

/// Formats the operation in script syntax, so that [`parse_line`] reads back
/// the same operation. Keys and values are always quoted with [`escape`]; node
/// ids are written bare when they are valid bare words.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddNode { id, weight: None } => write!(f, "add_node({})", node_id_text(id)),
            Op::AddNode {
                id,
                weight: Some(w),
            } => write!(f, "add_node({}, weight={w})", node_id_text(id)),
            Op::RemoveNode { id } => write!(f, "remove_node({})", node_id_text(id)),
            Op::Put { key, value } => write!(f, "put({}, {})", escape(key), escape(value)),
            Op::Get { key } => write!(f, "get({})", escape(key)),
            Op::Delete { key } => write!(f, "delete({})", escape(key)),
            Op::Stats => f.write_str("stats()"),
        }
    }
}

fn node_id_text(id: &str) -> String {
    if !id.is_empty() && id.chars().all(is_word_char) {
        id.to_owned()
    } else {
        escape(id.as_bytes())
    }
}

/// One lane of a `concurrently` block: the operations of one line of the
/// block, to run in order on one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// The 1-based line number of the lane in the script.
    pub line: usize,
    /// The lane's operations, in order (never empty).
    pub ops: Vec<Op>,
}

/// One top-level element of a script, as yielded by [`ScriptReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A single operation on a line of its own.
    Op {
        /// The 1-based line number of the operation.
        line: usize,
        /// The operation.
        op: Op,
    },
    /// A `concurrently { ... }` block.
    Concurrent {
        /// The 1-based line number of the `concurrently {` line.
        line: usize,
        /// The block's lanes, in script order (empty for an empty block).
        lanes: Vec<Lane>,
    },
}

impl Item {
    /// The 1-based line number where the item starts.
    pub fn line(&self) -> usize {
        match self {
            Item::Op { line, .. } | Item::Concurrent { line, .. } => *line,
        }
    }
}

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
    fn expected(line: usize, column: usize, expected: impl Into<String>, found: String) -> Self {
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

/// An error from [`ScriptReader`]: a syntax error or an I/O error.
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

/// Quotes a byte string in script syntax: `"` + escaped text + `"`.
///
/// `\` and `"` are escaped as `\\` and `\"`, newline and tab as `\n` and `\t`,
/// other control characters and bytes that are not valid UTF-8 as `\xHH`; all
/// other text is kept as is. [`parse_line`] reads the result back as exactly
/// `bytes`, for every byte string.
pub fn escape(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02X}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out.push('"');
    out
}

/// Parses one line holding a single operation.
///
/// Returns `Ok(None)` for a blank or comment-only line. `line_no` is only used
/// in error positions. `concurrently` blocks span several lines and are
/// rejected here: use [`ScriptReader`] for whole scripts.
pub fn parse_line(line: &str, line_no: usize) -> Result<Option<Op>, ParseError> {
    let mut p = Parser::new(line, line_no);
    let first = p.peek()?;
    match first.tok {
        Tok::End => Ok(None),
        Tok::Word("concurrently") => Err(ParseError::expected(
            line_no,
            first.col,
            "a single operation (`concurrently` blocks need a whole script)",
            found(&first),
        )),
        _ => p.top_level_op().map(Some),
    }
}

/// A streaming script parser: an iterator over the [`Item`]s of a script read
/// line by line from a [`BufRead`].
///
/// Only the current line (and the lanes of the current block) are held in
/// memory. After a [`ScriptError::Syntax`] error the iterator can be polled
/// again to go on parsing (see the [module docs](self) for how blocks recover);
/// after a [`ScriptError::Io`] error it yields `None`. Lines may end in `\n` or
/// `\r\n`; a line that is not valid UTF-8 is a syntax error.
pub struct ScriptReader<R> {
    reader: R,
    buf: Vec<u8>,
    line_no: usize,
    state: State,
    done: bool,
}

#[derive(Debug)]
enum State {
    TopLevel,
    Block {
        line: usize,
        column: usize,
        lanes: Vec<Lane>,
    },
    /// Skipping an abandoned block up to its `}` line.
    Abandoned {
        line: usize,
        column: usize,
    },
}

impl<R: BufRead> ScriptReader<R> {
    /// Creates a parser reading the script from `reader`.
    pub fn new(reader: R) -> Self {
        ScriptReader {
            reader,
            buf: Vec::new(),
            line_no: 0,
            state: State::TopLevel,
            done: false,
        }
    }

    /// The number of lines read so far (the line number of the last line read).
    pub fn lines_read(&self) -> usize {
        self.line_no
    }

    /// Handles one line; `None` means the line produced no item and no error.
    fn handle_line(
        state: &mut State,
        bytes: &[u8],
        line_no: usize,
    ) -> Option<Result<Item, ParseError>> {
        if let State::Abandoned { .. } = state {
            if String::from_utf8_lossy(bytes).trim_start().starts_with('}') {
                *state = State::TopLevel;
            }
            return None;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let column = valid.chars().count() + 1;
                let bad = &bytes[e.valid_up_to()..];
                let bad = &bad[..e.error_len().unwrap_or(bad.len()).min(bad.len())];
                let shown: String = bad.iter().map(|b| format!("\\x{b:02X}")).collect();
                abandon(state);
                return Some(Err(ParseError::expected(
                    line_no,
                    column,
                    "valid UTF-8 text",
                    format!("the bytes `{shown}`"),
                )));
            }
        };
        match state {
            State::TopLevel => top_level_line(state, text, line_no),
            State::Block { .. } => block_line(state, text, line_no),
            State::Abandoned { .. } => None,
        }
    }
}

/// Turns a block being parsed into an abandoned one; no-op at top level.
fn abandon(state: &mut State) {
    if let State::Block { line, column, .. } = *state {
        *state = State::Abandoned { line, column };
    }
}

fn top_level_line(
    state: &mut State,
    text: &str,
    line_no: usize,
) -> Option<Result<Item, ParseError>> {
    let mut p = Parser::new(text, line_no);
    let first = match p.peek() {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    match first.tok {
        Tok::End => None,
        Tok::RBrace => Some(Err(ParseError {
            line: line_no,
            column: first.col,
            kind: ErrorKind::UnmatchedCloseBrace,
        })),
        Tok::Word("concurrently") => {
            p.bump();
            let brace = match p.next() {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            };
            if brace.tok != Tok::LBrace {
                return Some(Err(ParseError::expected(
                    line_no,
                    brace.col,
                    "`{` after `concurrently`",
                    found(&brace),
                )));
            }
            *state = State::Block {
                line: line_no,
                column: first.col,
                lanes: Vec::new(),
            };
            match p.next() {
                Ok(Token { tok: Tok::End, .. }) => None,
                Ok(t) => {
                    abandon(state);
                    Some(Err(ParseError::expected(
                        line_no,
                        t.col,
                        "end of line after `concurrently {` (each lane goes on a line of its own)",
                        found(&t),
                    )))
                }
                Err(e) => {
                    abandon(state);
                    Some(Err(e))
                }
            }
        }
        _ => Some(p.top_level_op().map(|op| Item::Op { line: line_no, op })),
    }
}

fn block_line(state: &mut State, text: &str, line_no: usize) -> Option<Result<Item, ParseError>> {
    let State::Block {
        line: outer_line, ..
    } = *state
    else {
        return None;
    };
    let mut p = Parser::new(text, line_no);
    let result = (|| {
        let first = p.peek()?;
        match first.tok {
            Tok::End => Ok(None),
            Tok::RBrace => {
                p.bump();
                let State::Block { line, lanes, .. } = std::mem::replace(state, State::TopLevel)
                else {
                    return Ok(None);
                };
                let t = p.next()?;
                if t.tok != Tok::End {
                    return Err(ParseError::expected(
                        line_no,
                        t.col,
                        "end of line after the `}` closing a `concurrently` block",
                        found(&t),
                    ));
                }
                Ok(Some(Item::Concurrent { line, lanes }))
            }
            Tok::Word("concurrently") => Err(ParseError {
                line: line_no,
                column: first.col,
                kind: ErrorKind::NestedBlock { outer_line },
            }),
            _ => {
                let ops = p.lane()?;
                if let State::Block { lanes, .. } = state {
                    lanes.push(Lane { line: line_no, ops });
                }
                Ok(None)
            }
        }
    })();
    match result {
        Ok(None) => None,
        Ok(Some(item)) => Some(Ok(item)),
        Err(e) => {
            abandon(state);
            Some(Err(e))
        }
    }
}

impl<R: BufRead> Iterator for ScriptReader<R> {
    type Item = Result<Item, ScriptError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Err(source) => {
                    self.done = true;
                    return Some(Err(ScriptError::Io {
                        line: self.line_no + 1,
                        source,
                    }));
                }
                Ok(0) => {
                    self.done = true;
                    return match std::mem::replace(&mut self.state, State::TopLevel) {
                        State::TopLevel => None,
                        State::Block { line, column, .. } | State::Abandoned { line, column } => {
                            Some(Err(ScriptError::Syntax(ParseError {
                                line,
                                column,
                                kind: ErrorKind::UnterminatedBlock { opened_line: line },
                            })))
                        }
                    };
                }
                Ok(_) => {}
            }
            self.line_no += 1;
            let mut bytes: &[u8] = &self.buf;
            if let Some(rest) = bytes.strip_suffix(b"\n") {
                bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            if let Some(result) = Self::handle_line(&mut self.state, bytes, self.line_no) {
                return Some(result.map_err(ScriptError::Syntax));
            }
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for ScriptReader<R> {}

// ---------------------------------------------------------------------------
// Lexer

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | ',' | '"' | '#' | '{' | '}' | ';' | '=')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Str(Vec<u8>),
    LParen,
    RParen,
    Comma,
    Semi,
    Eq,
    LBrace,
    RBrace,
    /// End of line or start of a comment.
    End,
}

#[derive(Debug, Clone)]
struct Token<'a> {
    tok: Tok<'a>,
    /// 1-based column of the token's first character.
    col: usize,
    /// The token's source text (empty for `End`).
    text: &'a str,
}

/// Describes a token for the "found" part of an error message.
fn found(t: &Token<'_>) -> String {
    match t.tok {
        Tok::End => "end of line".to_owned(),
        _ => quote_found(t.text),
    }
}

fn quote_found(text: &str) -> String {
    if text.chars().count() > MAX_FOUND_CHARS {
        let cut: String = text.chars().take(MAX_FOUND_CHARS).collect();
        format!("`{cut}…`")
    } else {
        format!("`{text}`")
    }
}

struct Lexer<'a> {
    src: &'a str,
    line: usize,
    /// Byte offset of the next character.
    pos: usize,
    /// 1-based column of the next character.
    col: usize,
}

impl<'a> Lexer<'a> {
    fn bump_char(&mut self) -> Option<char> {
        let c = self.src[self.pos..].chars().next()?;
        self.pos += c.len_utf8();
        self.col += 1;
        Some(c)
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next_token(&mut self) -> Result<Token<'a>, ParseError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.bump_char();
        }
        let start = self.pos;
        let col = self.col;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                tok: Tok::End,
                col,
                text: "",
            });
        };
        let tok = match c {
            // A comment: stay put, so that every later call also gives `End`.
            '#' => {
                return Ok(Token {
                    tok: Tok::End,
                    col,
                    text: "",
                });
            }
            '"' => {
                self.bump_char();
                Tok::Str(self.string_body(col)?)
            }
            c if is_word_char(c) => {
                while self.peek_char().is_some_and(is_word_char) {
                    self.bump_char();
                }
                Tok::Word(&self.src[start..self.pos])
            }
            c => {
                self.bump_char();
                match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    ',' => Tok::Comma,
                    ';' => Tok::Semi,
                    '=' => Tok::Eq,
                    '{' => Tok::LBrace,
                    _ => Tok::RBrace,
                }
            }
        };
        Ok(Token {
            tok,
            col,
            text: &self.src[start..self.pos],
        })
    }

    /// Lexes a quoted string after its opening `"` (at column `start_col`).
    fn string_body(&mut self, start_col: usize) -> Result<Vec<u8>, ParseError> {
        let unterminated = ParseError {
            line: self.line,
            column: start_col,
            kind: ErrorKind::UnterminatedString {
                start_column: start_col,
            },
        };
        let mut out = Vec::new();
        loop {
            match self.bump_char() {
                None => return Err(unterminated),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let esc_col = self.col - 1;
                    let esc_start = self.pos - 1;
                    match self.bump_char() {
                        None => return Err(unterminated),
                        Some('\\') => out.push(b'\\'),
                        Some('"') => out.push(b'"'),
                        Some('n') => out.push(b'\n'),
                        Some('t') => out.push(b'\t'),
                        Some('x') => {
                            let hi = self.peek_char().and_then(|c| c.to_digit(16));
                            if hi.is_some() {
                                self.bump_char();
                            }
                            let lo = self.peek_char().and_then(|c| c.to_digit(16));
                            if lo.is_some() {
                                self.bump_char();
                            }
                            match (hi, lo) {
                                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                                _ => {
                                    let mut shown = self.src[esc_start..self.pos].to_owned();
                                    match self.peek_char() {
                                        Some(c) => shown.push(c),
                                        None => return Err(unterminated),
                                    }
                                    return Err(ParseError::expected(
                                        self.line,
                                        esc_col,
                                        "two hex digits after `\\x`",
                                        quote_found(&shown),
                                    ));
                                }
                            }
                        }
                        Some(c) => {
                            return Err(ParseError {
                                line: self.line,
                                column: esc_col,
                                kind: ErrorKind::UnknownEscape {
                                    escape: format!("\\{c}"),
                                },
                            });
                        }
                    }
                }
                Some(c) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token<'a>>,
}

/// One argument of an operation call.
struct Arg<'a> {
    /// `Some((name, column))` for `name=value`.
    name: Option<(&'a str, usize)>,
    value: Tok<'a>,
    /// Column of the argument's value.
    col: usize,
    /// The value's source text.
    text: &'a str,
    /// Column where the whole argument (name included) starts.
    start_col: usize,
    /// Source text of the whole argument.
    full_text: &'a str,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, line: usize) -> Self {
        Parser {
            lex: Lexer {
                src,
                line,
                pos: 0,
                col: 1,
            },
            peeked: None,
        }
    }

    fn line(&self) -> usize {
        self.lex.line
    }

    fn peek(&mut self) -> Result<Token<'a>, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next_token()?);
        }
        Ok(self.peeked.clone().expect("just peeked"))
    }

    fn next(&mut self) -> Result<Token<'a>, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next_token(),
        }
    }

    /// Drops a peeked token.
    fn bump(&mut self) {
        self.peeked = None;
    }

    fn err(&self, col: usize, expected: impl Into<String>, found: String) -> ParseError {
        ParseError::expected(self.line(), col, expected, found)
    }

    /// An operation followed by the end of the line.
    fn top_level_op(&mut self) -> Result<Op, ParseError> {
        let op = self.op()?;
        let t = self.next()?;
        match t.tok {
            Tok::End => Ok(op),
            Tok::Semi => Err(self.err(
                t.col,
                "end of line (`;` separates operations only inside a `concurrently` block)",
                found(&t),
            )),
            _ => Err(self.err(t.col, "end of line", found(&t))),
        }
    }

    /// The operations of a lane: `op (; op)* [;]` up to the end of the line.
    fn lane(&mut self) -> Result<Vec<Op>, ParseError> {
        let mut ops = vec![self.op()?];
        loop {
            let t = self.next()?;
            match t.tok {
                Tok::End => return Ok(ops),
                Tok::Semi => {
                    if self.peek()?.tok == Tok::End {
                        return Ok(ops);
                    }
                    ops.push(self.op()?);
                }
                _ => return Err(self.err(t.col, "`;` or end of line", found(&t))),
            }
        }
    }

    /// One operation call, `name(args)`.
    fn op(&mut self) -> Result<Op, ParseError> {
        let name_tok = self.next()?;
        let name = match name_tok.tok {
            Tok::Word(w @ ("add_node" | "remove_node" | "put" | "get" | "delete" | "stats")) => w,
            _ => return Err(self.err(name_tok.col, OP_NAMES, found(&name_tok))),
        };
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(self.err(open.col, format!("`(` after `{name}`"), found(&open)));
        }
        let (args, close_col) = self.args()?;
        let (signature, min, max, count_text) = match name {
            "add_node" => ("add_node(id, weight=N)", 1, 2, "1 or 2 arguments"),
            "remove_node" => ("remove_node(id)", 1, 1, "1 argument"),
            "put" => ("put(key, value)", 2, 2, "2 arguments"),
            "get" => ("get(key)", 1, 1, "1 argument"),
            "delete" => ("delete(key)", 1, 1, "1 argument"),
            _ => ("stats()", 0, 0, "no arguments"),
        };
        if args.len() < min || args.len() > max {
            let col = args.get(max).map_or(close_col, |a| a.start_col);
            return Err(self.err(
                col,
                format!("{count_text} for {signature}"),
                args.len().to_string(),
            ));
        }
        // All ops take positional arguments, except add_node's optional weight.
        let positional = if name == "add_node" { 1 } else { args.len() };
        for arg in &args[..positional] {
            if let Some((arg_name, col)) = arg.name {
                return Err(self.err(
                    col,
                    format!("a positional argument for {signature}"),
                    quote_found(&format!("{arg_name}=")),
                ));
            }
        }
        let bytes = |arg: &Arg<'a>| match &arg.value {
            Tok::Word(w) => w.as_bytes().to_vec(),
            Tok::Str(b) => b.clone(),
            _ => Vec::new(),
        };
        Ok(match name {
            "add_node" => {
                let id = self.node_id(&args[0])?;
                let weight = match args.get(1) {
                    None => None,
                    Some(arg) => Some(self.weight(arg)?),
                };
                Op::AddNode { id, weight }
            }
            "remove_node" => Op::RemoveNode {
                id: self.node_id(&args[0])?,
            },
            "put" => Op::Put {
                key: bytes(&args[0]),
                value: bytes(&args[1]),
            },
            "get" => Op::Get {
                key: bytes(&args[0]),
            },
            "delete" => Op::Delete {
                key: bytes(&args[0]),
            },
            _ => Op::Stats,
        })
    }

    /// The arguments after `(`, up to and including `)`; returns them and the
    /// column of the `)`.
    fn args(&mut self) -> Result<(Vec<Arg<'a>>, usize), ParseError> {
        let mut args = Vec::new();
        let mut t = self.next()?;
        if t.tok == Tok::RParen {
            return Ok((args, t.col));
        }
        loop {
            args.push(self.arg(t)?);
            let sep = self.next()?;
            match sep.tok {
                Tok::Comma => t = self.next()?,
                Tok::RParen => return Ok((args, sep.col)),
                _ => return Err(self.err(sep.col, "`,` or `)`", found(&sep))),
            }
        }
    }

    /// One argument starting with token `first`: a value or `name=value`.
    fn arg(&mut self, first: Token<'a>) -> Result<Arg<'a>, ParseError> {
        let value_expected = "an argument (a bare word or a \"quoted string\")";
        match first.tok {
            Tok::Word(name) if self.peek()?.tok == Tok::Eq => {
                self.bump();
                let v = self.next()?;
                match v.tok {
                    Tok::Word(_) | Tok::Str(_) => {
                        let start = first.text.as_ptr() as usize - self.lex.src.as_ptr() as usize;
                        let end = v.text.as_ptr() as usize - self.lex.src.as_ptr() as usize
                            + v.text.len();
                        Ok(Arg {
                            name: Some((name, first.col)),
                            value: v.tok,
                            col: v.col,
                            text: v.text,
                            start_col: first.col,
                            full_text: &self.lex.src[start..end],
                        })
                    }
                    _ => Err(self.err(v.col, format!("a value after `{name}=`"), found(&v))),
                }
            }
            Tok::Word(_) | Tok::Str(_) => Ok(Arg {
                name: None,
                value: first.tok,
                col: first.col,
                text: first.text,
                start_col: first.col,
                full_text: first.text,
            }),
            _ => Err(self.err(first.col, value_expected, found(&first))),
        }
    }

    fn node_id(&self, arg: &Arg<'a>) -> Result<String, ParseError> {
        match &arg.value {
            Tok::Word(w) => Ok((*w).to_owned()),
            Tok::Str(b) if b.is_empty() => {
                Err(self.err(arg.col, "a non-empty node id", quote_found(arg.text)))
            }
            Tok::Str(b) => String::from_utf8(b.clone()).map_err(|_| {
                self.err(
                    arg.col,
                    "a node id that is valid UTF-8",
                    quote_found(arg.text),
                )
            }),
            _ => Err(self.err(arg.col, "a node id", quote_found(arg.text))),
        }
    }

    fn weight(&self, arg: &Arg<'a>) -> Result<u32, ParseError> {
        match arg.name {
            Some(("weight", _)) => {}
            Some((_, col)) => {
                return Err(self.err(col, "`weight=N`", quote_found(arg.full_text)));
            }
            None => {
                return Err(self.err(arg.start_col, "`weight=N`", quote_found(arg.full_text)));
            }
        }
        let parsed = match arg.value {
            Tok::Word(w) if w.bytes().all(|b| b.is_ascii_digit()) => w.parse::<u32>().ok(),
            _ => None,
        };
        match parsed {
            Some(w) if w > 0 => Ok(w),
            _ => Err(self.err(
                arg.col,
                "a weight that is an integer from 1 to 4294967295",
                quote_found(arg.text),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::io::{self, Read};
    use std::rc::Rc;

    fn op(line: &str) -> Op {
        parse_line(line, 1)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .unwrap_or_else(|| panic!("{line:?}: no op"))
    }

    fn err(line: &str) -> ParseError {
        match parse_line(line, 3) {
            Err(e) => e,
            Ok(o) => panic!("{line:?} parsed as {o:?}"),
        }
    }

    /// Asserts the error's column and full message (line is always 3).
    fn check_err(line: &str, column: usize, message: &str) {
        let e = err(line);
        assert_eq!(
            e.to_string(),
            format!("line 3, column {column}: {message}"),
            "{line:?}"
        );
        assert_eq!((e.line, e.column), (3, column), "{line:?}");
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        }
    }

    fn get(k: &str) -> Op {
        Op::Get {
            key: k.as_bytes().to_vec(),
        }
    }

    fn script(text: &str) -> Vec<Result<Item, String>> {
        ScriptReader::new(text.as_bytes())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn every_op() {
        assert_eq!(
            op("add_node(node4)"),
            Op::AddNode {
                id: "node4".into(),
                weight: None
            }
        );
        assert_eq!(
            op("add_node(node5, weight=2)"),
            Op::AddNode {
                id: "node5".into(),
                weight: Some(2)
            }
        );
        assert_eq!(
            op("remove_node(node2)"),
            Op::RemoveNode { id: "node2".into() }
        );
        assert_eq!(op("put(key1, value1)"), put("key1", "value1"));
        assert_eq!(op("get(key1)"), get("key1"));
        assert_eq!(
            op("delete(key1)"),
            Op::Delete {
                key: b"key1".to_vec()
            }
        );
        assert_eq!(op("stats()"), Op::Stats);
        assert_eq!(op("stats( )"), Op::Stats);
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            op(r#"put("a key", "a value, with a comma")"#),
            put("a key", "a value, with a comma")
        );
        assert_eq!(
            op(r#"put("q\"b\\s", "l1\nl2\tt")"#),
            put("q\"b\\s", "l1\nl2\tt")
        );
        assert_eq!(
            op(r#"put("\xff\x00\x41", "")"#),
            Op::Put {
                key: vec![0xff, 0, b'A'],
                value: vec![]
            }
        );
        assert_eq!(op(r#"put("", "")"#), put("", ""));
        assert_eq!(op("put(ключ, 値)"), put("ключ", "値"));
        assert_eq!(
            op(r#"put("ключ", "a(b)c{d};e=f")"#),
            put("ключ", "a(b)c{d};e=f")
        );
        assert_eq!(
            op(r"put(a\b, c)"),
            put(r"a\b", "c"),
            "backslash in a bare word"
        );
        assert_eq!(
            op(r#"add_node("node 7", weight=3)"#),
            Op::AddNode {
                id: "node 7".into(),
                weight: Some(3)
            }
        );
        assert_eq!(op("remove_node(\"n\")"), Op::RemoveNode { id: "n".into() });
    }

    #[test]
    fn comments_and_whitespace() {
        assert_eq!(parse_line("", 1), Ok(None));
        assert_eq!(parse_line("   \t ", 1), Ok(None));
        assert_eq!(parse_line("# just a comment", 1), Ok(None));
        assert_eq!(parse_line("   # indented comment", 1), Ok(None));
        assert_eq!(op("get(k) # trailing comment"), get("k"));
        assert_eq!(op("get(k)#tight"), get("k"));
        assert_eq!(
            op(r##"put("a # b", "#")  # real comment"##),
            put("a # b", "#")
        );
        assert_eq!(op("  put( a , b )  "), put("a", "b"));
        assert_eq!(op("\tput(\ta,\tb\t)\t"), put("a", "b"));
        assert_eq!(op("put(a,b)"), put("a", "b"));
        assert_eq!(op("put (a, b)"), put("a", "b"));
        assert_eq!(
            op("add_node( n , weight = 4 )"),
            Op::AddNode {
                id: "n".into(),
                weight: Some(4)
            }
        );
    }

    #[test]
    fn weights() {
        let w = |s: &str| match op(s) {
            Op::AddNode { weight, .. } => weight,
            o => panic!("{o:?}"),
        };
        assert_eq!(w("add_node(n, weight=1)"), Some(1));
        assert_eq!(w("add_node(n, weight=007)"), Some(7));
        assert_eq!(w("add_node(n, weight=4294967295)"), Some(u32::MAX));
        let range = "expected a weight that is an integer from 1 to 4294967295";
        check_err("add_node(n, weight=0)", 20, &format!("{range}, found `0`"));
        check_err(
            "add_node(n, weight=4294967296)",
            20,
            &format!("{range}, found `4294967296`"),
        );
        check_err(
            "add_node(n, weight=-1)",
            20,
            &format!("{range}, found `-1`"),
        );
        check_err(
            "add_node(n, weight=+1)",
            20,
            &format!("{range}, found `+1`"),
        );
        check_err(
            "add_node(n, weight=two)",
            20,
            &format!("{range}, found `two`"),
        );
        check_err(
            r#"add_node(n, weight="2")"#,
            20,
            &format!("{range}, found `\"2\"`"),
        );
        check_err("add_node(n, 2)", 13, "expected `weight=N`, found `2`");
        check_err(
            "add_node(n, wait=2)",
            13,
            "expected `weight=N`, found `wait=2`",
        );
        check_err(
            "add_node(n, weight=)",
            20,
            "expected a value after `weight=`, found `)`",
        );
        check_err(
            "add_node(weight=2)",
            10,
            "expected a positional argument for add_node(id, weight=N), found `weight=`",
        );
        check_err(
            "add_node(n, weight=2, weight=3)",
            23,
            "expected 1 or 2 arguments for add_node(id, weight=N), found 3",
        );
        check_err(
            "put(k=1, v)",
            5,
            "expected a positional argument for put(key, value), found `k=`",
        );
    }

    #[test]
    fn syntax_errors_with_positions() {
        check_err(
            "pt(a, b)",
            1,
            "expected an operation name (add_node, remove_node, put, get, delete, stats), found `pt`",
        );
        check_err(
            "  (a)",
            3,
            "expected an operation name (add_node, remove_node, put, get, delete, stats), found `(`",
        );
        check_err("put a, b", 5, "expected `(` after `put`, found `a`");
        check_err("get", 4, "expected `(` after `get`, found end of line");
        check_err(
            "put(key1)",
            9,
            "expected 2 arguments for put(key, value), found 1",
        );
        check_err(
            "put(a, b, c)",
            11,
            "expected 2 arguments for put(key, value), found 3",
        );
        check_err("get()", 5, "expected 1 argument for get(key), found 0");
        check_err(
            "delete(a, b)",
            11,
            "expected 1 argument for delete(key), found 2",
        );
        check_err(
            "remove_node()",
            13,
            "expected 1 argument for remove_node(id), found 0",
        );
        check_err("stats(x)", 7, "expected no arguments for stats(), found 1");
        check_err(
            "add_node()",
            10,
            "expected 1 or 2 arguments for add_node(id, weight=N), found 0",
        );
        check_err("put(a b)", 7, "expected `,` or `)`, found `b`");
        check_err("put(a, b", 9, "expected `,` or `)`, found end of line");
        check_err(
            "put(a, b # c)",
            10,
            "expected `,` or `)`, found end of line",
        );
        check_err(
            "put(a, )",
            8,
            "expected an argument (a bare word or a \"quoted string\"), found `)`",
        );
        check_err(
            "put(,a)",
            5,
            "expected an argument (a bare word or a \"quoted string\"), found `,`",
        );
        check_err("put(a, b) x", 11, "expected end of line, found `x`");
        check_err("put(a, b))", 10, "expected end of line, found `)`");
        check_err(
            r#"put(a, "b) "#,
            8,
            "unterminated string starting at column 8",
        );
        check_err(
            r#"get("abc\"#,
            5,
            "unterminated string starting at column 5",
        );
        check_err(
            r#"get("a\qb")"#,
            7,
            r#"unknown escape `\q` (the escapes are \\, \", \n, \t and \xHH)"#,
        );
        check_err(
            r#"get("\xg1")"#,
            6,
            r"expected two hex digits after `\x`, found `\xg`",
        );
        check_err(
            r#"get("\x1")"#,
            6,
            r#"expected two hex digits after `\x`, found `\x1"`"#,
        );
        check_err(r#"get("\x"#, 5, "unterminated string starting at column 5");
        check_err(
            r#"remove_node("")"#,
            13,
            r#"expected a non-empty node id, found `""`"#,
        );
        check_err(
            r#"add_node("\xff")"#,
            10,
            r#"expected a node id that is valid UTF-8, found `"\xff"`"#,
        );
        // Columns count characters, not bytes.
        check_err(
            "put(ключ значение)",
            10,
            "expected `,` or `)`, found `значение`",
        );
        // Long offending text is cut short.
        let long = "x".repeat(100);
        let e = err(&format!("{long}()"));
        assert!(
            e.to_string()
                .ends_with(&format!("found `{}…`", "x".repeat(40))),
            "{e}"
        );
    }

    #[test]
    fn semicolons_outside_blocks() {
        let semi = "expected end of line (`;` separates operations only inside a `concurrently` block), found `;`";
        check_err("put(a, b);", 10, semi);
        check_err("put(a, b); get(a)", 10, semi);
        check_err(
            ";",
            1,
            "expected an operation name (add_node, remove_node, put, get, delete, stats), found `;`",
        );
        check_err(
            "concurrently {",
            1,
            "expected a single operation (`concurrently` blocks need a whole script), found `concurrently`",
        );
    }

    #[test]
    fn display_round_trips() {
        for line in [
            "add_node(node4)",
            "add_node(node5, weight=2)",
            r#"add_node("node 5", weight=2)"#,
            "remove_node(n)",
            r#"put("k", "v\n\"\\\xFF")"#,
            r#"get("")"#,
            r#"delete("x")"#,
            "stats()",
        ] {
            let o = op(line);
            assert_eq!(o.to_string(), line);
            assert_eq!(op(&o.to_string()), o);
        }
        assert_eq!(op("put(k, v)").name(), "put");
    }

    #[test]
    fn escape_output() {
        assert_eq!(escape(b""), r#""""#);
        assert_eq!(escape(b"plain text"), r#""plain text""#);
        assert_eq!(escape(b"a\"b\\c\nd\te"), r#""a\"b\\c\nd\te""#);
        assert_eq!(escape(b"\x00\r\x7f"), r#""\x00\x0D\x7F""#);
        assert_eq!(escape(&[0xff, b'a', 0xc3]), r#""\xFFa\xC3""#);
        assert_eq!(escape("é€".as_bytes()), "\"é€\"");
        assert_eq!(escape("\u{85}".as_bytes()), r#""\xC2\x85""#);
    }

    #[test]
    fn script_with_blocks_and_lanes() {
        let text = "\
# setup
add_node(node1)
add_node(node2, weight=3)

concurrently {   # start
    add_node(node5)
    remove_node(node2); get(key1)

    # a comment line inside the block
    put(key9, v9); get(key9); delete(key9);
    stats()
}
get(key9)
concurrently {
}
";
        let items: Vec<Item> = ScriptReader::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            items,
            vec![
                Item::Op {
                    line: 2,
                    op: Op::AddNode {
                        id: "node1".into(),
                        weight: None
                    }
                },
                Item::Op {
                    line: 3,
                    op: Op::AddNode {
                        id: "node2".into(),
                        weight: Some(3)
                    }
                },
                Item::Concurrent {
                    line: 5,
                    lanes: vec![
                        Lane {
                            line: 6,
                            ops: vec![Op::AddNode {
                                id: "node5".into(),
                                weight: None
                            }]
                        },
                        Lane {
                            line: 7,
                            ops: vec![Op::RemoveNode { id: "node2".into() }, get("key1")]
                        },
                        Lane {
                            line: 10,
                            ops: vec![
                                put("key9", "v9"),
                                get("key9"),
                                Op::Delete {
                                    key: b"key9".to_vec()
                                }
                            ]
                        },
                        Lane {
                            line: 11,
                            ops: vec![Op::Stats]
                        },
                    ]
                },
                Item::Op {
                    line: 13,
                    op: get("key9")
                },
                Item::Concurrent {
                    line: 14,
                    lanes: vec![]
                },
            ]
        );
        assert_eq!(items[2].line(), 5);
    }

    #[test]
    fn crlf_line_endings_and_last_line_without_newline() {
        let items = script("put(a, b)\r\nconcurrently {\r\n get(a)\r\n}\r\nget(b)");
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[2],
            Ok(Item::Op {
                line: 5,
                op: get("b")
            })
        );
    }

    #[test]
    fn block_errors() {
        assert_eq!(
            script("get(a)\nconcurrently {\n  get(a)\n\n"),
            vec![
                Ok(Item::Op {
                    line: 1,
                    op: get("a")
                }),
                Err("line 2, column 1: unterminated `concurrently` block opened on line 2: expected `}` before the end of the input".into()),
            ]
        );
        assert_eq!(
            script("get(a)\n  }  # stray\n"),
            vec![
                Ok(Item::Op {
                    line: 1,
                    op: get("a")
                }),
                Err("line 2, column 3: `}` without an open `concurrently` block".into()),
            ]
        );
        assert_eq!(
            script("concurrently {\n  concurrently {\n get(a)\n  }\n}\nget(z)\n"),
            vec![
                Err("line 2, column 3: `concurrently` blocks cannot be nested (the enclosing block was opened on line 1)".into()),
                // The abandoned block ends at the first `}`; the second is stray.
                Err("line 5, column 1: `}` without an open `concurrently` block".into()),
                Ok(Item::Op {
                    line: 6,
                    op: get("z")
                }),
            ]
        );
        assert_eq!(
            script("concurrently { get(a)\n  get(b)\n}\nget(c)"),
            vec![
                Err("line 1, column 16: expected end of line after `concurrently {` (each lane goes on a line of its own), found `get`".into()),
                Ok(Item::Op {
                    line: 4,
                    op: get("c")
                }),
            ]
        );
        assert_eq!(
            script("concurrently\nget(c)"),
            vec![
                Err(
                    "line 1, column 13: expected `{` after `concurrently`, found end of line"
                        .into()
                ),
                Ok(Item::Op {
                    line: 2,
                    op: get("c")
                }),
            ]
        );
        assert_eq!(
            script("concurrently {\n get(a)\n} get(b)\nget(c)"),
            vec![
                Err("line 3, column 3: expected end of line after the `}` closing a `concurrently` block, found `get`".into()),
                Ok(Item::Op {
                    line: 4,
                    op: get("c")
                }),
            ]
        );
        assert_eq!(
            script("concurrently {\n get(a);;get(b)\n}"),
            vec![Err("line 2, column 9: expected an operation name (add_node, remove_node, put, get, delete, stats), found `;`".into())]
        );
        assert_eq!(
            script("concurrently {\n get(a) get(b)\n}"),
            vec![Err(
                "line 2, column 9: expected `;` or end of line, found `get`".into()
            )]
        );
        assert_eq!(
            script("concurrently {\n ;\n}"),
            vec![Err("line 2, column 2: expected an operation name (add_node, remove_node, put, get, delete, stats), found `;`".into())]
        );
    }

    #[test]
    fn keep_going_recovery() {
        let text = "\
put(a, 1)
pt(b, 2)
get(\"unterminated)
concurrently {
  put(c, 3)
  put(d); get(d)
  get(\"e\\q\")
  concurrently {
}
get(a)
concurrently {
  get(f)
}
put(g, 7);
delete(a)
concurrently {
  get(h)
";
        let results: Vec<_> = ScriptReader::new(text.as_bytes()).collect();
        let summary: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(Item::Op { line, op }) => format!("ok {line}: {op}"),
                Ok(Item::Concurrent { line, lanes }) => {
                    format!("block {line}: {} lanes", lanes.len())
                }
                Err(e) => format!(
                    "error {}:{}",
                    e.line(),
                    match e {
                        ScriptError::Syntax(p) => p.column,
                        ScriptError::Io { .. } => 0,
                    }
                ),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                "ok 1: put(\"a\", \"1\")",
                "error 2:1",
                "error 3:5",
                // The first error in the block abandons it; later lines in it
                // (the bad escape, the nested block) are not reported.
                "error 6:8",
                "ok 10: get(\"a\")",
                "block 11: 1 lanes",
                "error 14:10",
                "ok 15: delete(\"a\")",
                "error 16:1",
            ]
        );
        match &results[8] {
            Err(ScriptError::Syntax(ParseError {
                kind: ErrorKind::UnterminatedBlock { opened_line: 16 },
                ..
            })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_lines() {
        let input: &[u8] =
            b"get(a)\nput(\"\xc3\xa9\xff\", x)\nconcurrently {\n get(\xfe)\n get(b)\n}\nget(c)\n";
        let results: Vec<_> = ScriptReader::new(input)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        assert_eq!(
            results,
            vec![
                Ok(Item::Op {
                    line: 1,
                    op: get("a")
                }),
                Err(r"line 2, column 7: expected valid UTF-8 text, found the bytes `\xFF`".into()),
                Err(r"line 4, column 6: expected valid UTF-8 text, found the bytes `\xFE`".into()),
                Ok(Item::Op {
                    line: 7,
                    op: get("c")
                }),
            ]
        );
    }

    struct FailingReader {
        fed: bool,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fed {
                Err(io::Error::other("disk on fire"))
            } else {
                self.fed = true;
                let line = b"get(a)\n";
                buf[..line.len()].copy_from_slice(line);
                Ok(line.len())
            }
        }
    }

    #[test]
    fn io_errors_are_distinct_and_end_the_stream() {
        let mut reader = ScriptReader::new(io::BufReader::new(FailingReader { fed: false }));
        assert!(matches!(reader.next(), Some(Ok(Item::Op { line: 1, .. }))));
        match reader.next() {
            Some(Err(e @ ScriptError::Io { line: 2, .. })) => {
                assert_eq!(
                    e.to_string(),
                    "line 2: error reading the script: disk on fire"
                );
                assert_eq!(e.line(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(reader.next().is_none());
        assert!(reader.next().is_none());
        assert_eq!(reader.lines_read(), 1);
    }

    /// A `BufRead` that makes up its lines one at a time, as they are read.
    struct LineGenerator {
        lines: usize,
        generated: Rc<Cell<usize>>,
        buf: Vec<u8>,
        pos: usize,
    }

    impl LineGenerator {
        fn line(i: usize) -> String {
            // Every 1000 lines: a 5-line block with 3 lanes (4 ops).
            match i % 1000 {
                995 => "concurrently {\n".to_owned(),
                996 => format!("  put(k{i}, v{i}); get(k{i})\n"),
                997 => "  stats()\n".to_owned(),
                998 => format!("  delete(\"k {i}\")\n"),
                999 => "}\n".to_owned(),
                n if n % 10 == 0 => "# comment\n".to_owned(),
                n if n % 3 == 0 => format!("put(key{i}, \"value {i}\\n\")\n"),
                _ => format!("get(key{i})  # trailing\n"),
            }
        }
    }

    impl Read for LineGenerator {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = {
                let buf = io::BufRead::fill_buf(self)?;
                let n = buf.len().min(out.len());
                out[..n].copy_from_slice(&buf[..n]);
                n
            };
            io::BufRead::consume(self, n);
            Ok(n)
        }
    }

    impl BufRead for LineGenerator {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let i = self.generated.get();
            if self.pos == self.buf.len() && i < self.lines {
                self.buf = Self::line(i).into_bytes();
                self.pos = 0;
                self.generated.set(i + 1);
            }
            Ok(&self.buf[self.pos..])
        }

        fn consume(&mut self, amt: usize) {
            self.pos += amt;
        }
    }

    #[test]
    fn streams_a_million_lines() {
        const LINES: usize = 1_000_000;
        let generated = Rc::new(Cell::new(0));
        let mut reader = ScriptReader::new(LineGenerator {
            lines: LINES,
            generated: Rc::clone(&generated),
            buf: Vec::new(),
            pos: 0,
        });
        // Items come out as soon as their lines are read.
        for _ in 0..5 {
            reader.next().unwrap().unwrap();
        }
        assert!(generated.get() <= 7, "read ahead {} lines", generated.get());
        let (mut ops, mut blocks, mut lane_ops) = (5, 0, 0);
        for item in reader.by_ref() {
            match item.unwrap() {
                Item::Op { .. } => ops += 1,
                Item::Concurrent { lanes, .. } => {
                    blocks += 1;
                    lane_ops += lanes.iter().map(|l| l.ops.len()).sum::<usize>();
                }
            }
        }
        assert_eq!(generated.get(), LINES);
        assert_eq!(reader.lines_read(), LINES);
        assert_eq!(blocks, LINES / 1000);
        assert_eq!(lane_ops, 4 * blocks);
        let comments = (0..995).filter(|n| n % 10 == 0).count();
        assert_eq!(ops, (995 - comments) * (LINES / 1000));
    }

    /// A small grammar-aware generator of script text, for the never-panic
    /// property: valid tokens, quotes, escapes, braces and random bytes.
    fn random_script(rng: &mut impl rand::Rng) -> Vec<u8> {
        const PIECES: &[&str] = &[
            "add_node",
            "remove_node",
            "put",
            "get",
            "delete",
            "stats",
            "concurrently",
            "weight",
            "(",
            ")",
            ",",
            ";",
            "=",
            "{",
            "}",
            "#",
            "\"",
            "\\",
            "\\\\",
            "\\\"",
            "\\n",
            "\\t",
            "\\x",
            "\\xf",
            "\\xff",
            "\\q",
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\n",
            "0",
            "1",
            "4294967296",
            "key",
            "ключ",
            "é",
            "\u{85}",
            "\u{2028}",
            "\u{a0}",
            "put(a, b)",
            "get(\"k\")",
            "concurrently {\n",
            "\n}\n",
            "add_node(n, weight=2)",
        ];
        let len = rng.random_range(0..40);
        let mut out = Vec::new();
        for _ in 0..len {
            match rng.random_range(0..10) {
                0 => out.push(rng.random()),
                1 => {
                    let n = rng.random_range(0..3);
                    for _ in 0..n {
                        out.push(rng.random_range(0x80..=0xff));
                    }
                }
                _ => out.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())].as_bytes()),
            }
        }
        out
    }

    /// Runs every input through every entry point; panics only on a bug.
    fn exercise(input: &[u8]) {
        for item in ScriptReader::new(input) {
            if let Err(e) = item {
                let _ = e.to_string();
            }
        }
        let text = String::from_utf8_lossy(input);
        for line in text.lines() {
            if let Ok(Some(op)) = parse_line(line, 1) {
                assert_eq!(parse_line(&op.to_string(), 1), Ok(Some(op)));
            }
        }
        let round_trip = parse_line(&format!("put({}, \"\")", escape(input)), 1);
        assert_eq!(
            round_trip,
            Ok(Some(Op::Put {
                key: input.to_vec(),
                value: Vec::new()
            }))
        );
    }

    fn random_inputs(seed: u64, count: u64) {
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        for i in 0..count {
            let input = random_script(&mut rng);
            let caught = std::panic::catch_unwind(|| exercise(&input));
            if caught.is_err() {
                panic!(
                    "seed {seed}, input #{i} panicked: {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn random_inputs_quick() {
        random_inputs(0x5eed, 5_000);
    }

    /// The std-only stand-in for the cargo-fuzz target. Run with
    /// `cargo test -p ringkv-cli --lib --release -- --ignored --nocapture fuzz_stand_in`;
    /// `RINGKV_FUZZ_SEED` and `RINGKV_FUZZ_ITERATIONS` override the defaults.
    #[test]
    #[ignore = "long: millions of random inputs"]
    fn fuzz_stand_in() {
        let seed = std::env::var("RINGKV_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        let count = std::env::var("RINGKV_FUZZ_ITERATIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2_000_000);
        println!("fuzz_stand_in: seed {seed} (RINGKV_FUZZ_SEED={seed} to replay), {count} inputs");
        random_inputs(seed, count);
    }

    proptest! {
        #[test]
        fn escape_round_trips_through_put(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let line = format!("put({}, {})", escape(&key), escape(&value));
            prop_assert_eq!(parse_line(&line, 1), Ok(Some(Op::Put { key, value })));
        }

        #[test]
        fn escape_round_trips_text(key in ".*", value in "\\PC*") {
            let line = format!("put({}, {})", escape(key.as_bytes()), escape(value.as_bytes()));
            prop_assert_eq!(
                parse_line(&line, 1),
                Ok(Some(Op::Put { key: key.into_bytes(), value: value.into_bytes() }))
            );
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".*") {
            let _ = parse_line(&s, 1);
            for item in ScriptReader::new(s.as_bytes()) {
                let _ = item;
            }
        }

        #[test]
        fn grammar_like_strings_never_panic(
            s in r##"([a-z_]{0,12}|[(){};,="#\\ \t\n]|\\x[0-9a-fg]{0,2}|[é€\u{85}]){0,30}"##
        ) {
            let _ = parse_line(&s, 1);
            for item in ScriptReader::new(s.as_bytes()) {
                let _ = item;
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for item in ScriptReader::new(&bytes[..]) {
                let _ = item;
            }
        }
    }
}
