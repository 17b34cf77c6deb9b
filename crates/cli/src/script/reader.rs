//! The streaming reader: a script read line by line into [`Item`]s, with
//! `concurrently` blocks and error recovery.

use std::io::BufRead;

use super::ast::{Item, Lane};
use super::error::{ErrorKind, ParseError, ScriptError};
use super::lexer::{Tok, Token, found};
use super::limits::Limits;
use super::line::{LineRead, read_line, skip_line};
use super::parser::Parser;

/// A streaming script parser: an iterator over the [`Item`]s of a script read
/// line by line from a [`BufRead`].
///
/// Only the current line (and the lanes of the current block) are held in
/// memory, within the caps of [`Limits`]. After a [`ScriptError::Syntax`] error the iterator can be polled
/// again to go on parsing (see the [module docs](super) for how blocks recover);
/// after a [`ScriptError::Io`] error it yields `None`. Lines may end in `\n` or
/// `\r\n`; a line that is not valid UTF-8 is a syntax error.
pub struct ScriptReader<R> {
    reader: R,
    buf: Vec<u8>,
    line_no: usize,
    state: State,
    done: bool,
    limits: Limits,
    /// The last line was too long and its rest is still to be skipped (done
    /// lazily, so that a caller that stops at the error reads no further).
    skip_rest: bool,
}

#[derive(Debug)]
enum State {
    TopLevel,
    Block {
        line: usize,
        column: usize,
        lanes: Vec<Lane>,
        /// Bytes of script text read inside the block so far.
        bytes: usize,
    },
    /// Skipping an abandoned block up to its `}` line.
    Abandoned {
        line: usize,
        column: usize,
    },
}

impl<R: BufRead> ScriptReader<R> {
    /// Creates a parser reading the script from `reader`, with the default
    /// [`Limits`].
    pub fn new(reader: R) -> Self {
        Self::with_limits(reader, Limits::default())
    }

    /// Creates a parser reading the script from `reader`, holding at most
    /// what `limits` allow in memory.
    pub fn with_limits(reader: R, limits: Limits) -> Self {
        ScriptReader {
            reader,
            buf: Vec::new(),
            line_no: 0,
            state: State::TopLevel,
            done: false,
            limits,
            skip_rest: false,
        }
    }

    /// The number of lines read so far (the line number of the last line read).
    pub fn lines_read(&self) -> usize {
        self.line_no
    }

    /// Handles one line; `None` means the line produced no item and no error.
    /// `raw_len` is the line's length with its line ending; `too_long` says
    /// that `bytes` is only the start of a line longer than the limit.
    fn handle_line(
        &mut self,
        bytes: &[u8],
        raw_len: usize,
        too_long: bool,
    ) -> Option<Result<Item, ParseError>> {
        let (state, line_no) = (&mut self.state, self.line_no);
        if let State::Abandoned { .. } = state {
            if String::from_utf8_lossy(bytes).trim_start().starts_with('}') {
                *state = State::TopLevel;
            }
            return None;
        }
        if too_long {
            abandon(state);
            return Some(Err(ParseError {
                line: line_no,
                column: String::from_utf8_lossy(bytes).chars().count() + 1,
                kind: ErrorKind::LineTooLong {
                    limit: self.limits.max_line_bytes,
                },
            }));
        }
        if let Some(e) = check_block_limits(state, &self.limits, raw_len, line_no) {
            abandon(state);
            return Some(Err(e));
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
            State::Block { .. } => block_line(state, text, line_no, self.limits.max_block_lanes),
            State::Abandoned { .. } => None,
        }
    }
}

/// Counts a line against its block's byte cap; returns the error if the
/// line goes past it. No-op outside a block.
fn check_block_limits(
    state: &mut State,
    limits: &Limits,
    raw_len: usize,
    line_no: usize,
) -> Option<ParseError> {
    let State::Block { line, bytes, .. } = state else {
        return None;
    };
    *bytes += raw_len;
    if *bytes <= limits.max_block_bytes {
        return None;
    }
    Some(ParseError {
        line: line_no,
        column: 1,
        kind: ErrorKind::BlockTooLong {
            opened_line: *line,
            limit: limits.max_block_bytes,
        },
    })
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
                bytes: 0,
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

fn block_line(
    state: &mut State,
    text: &str,
    line_no: usize,
    max_lanes: usize,
) -> Option<Result<Item, ParseError>> {
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
                    if lanes.len() >= max_lanes {
                        return Err(ParseError {
                            line: line_no,
                            column: 1,
                            kind: ErrorKind::TooManyLanes {
                                opened_line: outer_line,
                                limit: max_lanes,
                            },
                        });
                    }
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
            if self.skip_rest {
                self.skip_rest = false;
                if let Err(source) = skip_line(&mut self.reader) {
                    self.done = true;
                    return Some(Err(ScriptError::Io {
                        line: self.line_no,
                        source,
                    }));
                }
            }
            let read = match read_line(&mut self.reader, &mut self.buf, self.limits.max_line_bytes)
            {
                Err(source) => {
                    self.done = true;
                    return Some(Err(ScriptError::Io {
                        line: self.line_no + 1,
                        source,
                    }));
                }
                Ok(read) => read,
            };
            match read {
                LineRead::Eof => {
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
                LineRead::TooLong => self.skip_rest = true,
                LineRead::Complete => {}
            }
            self.line_no += 1;
            let buf = std::mem::take(&mut self.buf);
            let mut bytes: &[u8] = &buf;
            if let Some(rest) = bytes.strip_suffix(b"\n") {
                bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
            }
            let result = self.handle_line(bytes, buf.len(), read == LineRead::TooLong);
            self.buf = buf;
            if let Some(result) = result {
                return Some(result.map_err(ScriptError::Syntax));
            }
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for ScriptReader<R> {}
