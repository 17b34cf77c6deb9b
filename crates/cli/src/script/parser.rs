//! The parser: the tokens of one line into an operation or a lane.

#[cfg(doc)]
use super::ScriptReader;
use super::ast::{FailPoint, Op};
use super::error::ParseError;
use super::lexer::{Lexer, Tok, Token, found, quote_found};

/// The operation names, for "expected an operation name" messages.
const OP_NAMES: &str = "an operation name (add_node, remove_node, put, get, delete, stats, \
                        crash, heal, fail, resume)";

/// The names of the points for `fail`, for "expected" messages.
const POINT_NAMES: &str = "a failure point (before_copy, mid_copy, before_switch, cleanup)";

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

pub(super) struct Parser<'a> {
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
    pub(super) fn new(src: &'a str, line: usize) -> Self {
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

    pub(super) fn peek(&mut self) -> Result<Token<'a>, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next_token()?);
        }
        Ok(self.peeked.clone().expect("just peeked"))
    }

    pub(super) fn next(&mut self) -> Result<Token<'a>, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next_token(),
        }
    }

    /// Drops a peeked token.
    pub(super) fn bump(&mut self) {
        self.peeked = None;
    }

    fn err(&self, col: usize, expected: impl Into<String>, found: String) -> ParseError {
        ParseError::expected(self.line(), col, expected, found)
    }

    /// An operation followed by the end of the line.
    pub(super) fn top_level_op(&mut self) -> Result<Op, ParseError> {
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
    pub(super) fn lane(&mut self) -> Result<Vec<Op>, ParseError> {
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
            Tok::Word(
                w @ ("add_node" | "remove_node" | "put" | "get" | "delete" | "stats" | "crash"
                | "heal" | "fail" | "resume"),
            ) => w,
            _ => return Err(self.err(name_tok.col, OP_NAMES, found(&name_tok))),
        };
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(self.err(open.col, format!("`(` after `{name}`"), found(&open)));
        }
        let (args, close_col) = self.args()?;
        let (signature, min, max, count_text) = match name {
            "add_node" => ("add_node(id, weight=N)", 1, 2, "1 or 2 arguments"),
            "remove_node" => ("remove_node(id, force=true)", 1, 2, "1 or 2 arguments"),
            "put" => ("put(key, value)", 2, 2, "2 arguments"),
            "get" => ("get(key)", 1, 1, "1 argument"),
            "delete" => ("delete(key)", 1, 1, "1 argument"),
            "crash" => ("crash(id)", 1, 1, "1 argument"),
            "heal" => ("heal(id)", 1, 1, "1 argument"),
            "fail" => ("fail(id, point, times=N)", 2, 3, "2 or 3 arguments"),
            "resume" => ("resume()", 0, 0, "no arguments"),
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
        // All ops take positional arguments, except the optional named last
        // ones: add_node's weight, remove_node's force and fail's times.
        let positional = match name {
            "add_node" | "remove_node" => 1,
            "fail" => 2,
            _ => args.len(),
        }
        .min(args.len());
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
                    Some(arg) => Some(self.positive(arg, "weight")?),
                };
                Op::AddNode { id, weight }
            }
            "remove_node" => Op::RemoveNode {
                id: self.node_id(&args[0])?,
                force: match args.get(1) {
                    None => false,
                    Some(arg) => self.flag(arg, "force")?,
                },
            },
            "crash" => Op::Crash {
                id: self.node_id(&args[0])?,
            },
            "heal" => Op::Heal {
                id: self.node_id(&args[0])?,
            },
            "fail" => Op::Fail {
                id: self.node_id(&args[0])?,
                point: self.point(&args[1])?,
                times: match args.get(2) {
                    None => None,
                    Some(arg) => Some(self.positive(arg, "times")?),
                },
            },
            "resume" => Op::Resume,
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

    /// Checks that `arg` is written `name=...`; `expected` describes the
    /// argument for the error message.
    fn named(&self, arg: &Arg<'a>, name: &str, expected: &str) -> Result<(), ParseError> {
        match arg.name {
            Some((n, _)) if n == name => Ok(()),
            Some((_, col)) => Err(self.err(col, expected, quote_found(arg.full_text))),
            None => Err(self.err(arg.start_col, expected, quote_found(arg.full_text))),
        }
    }

    /// A `name=N` argument, N a positive integer that fits in a `u32`.
    fn positive(&self, arg: &Arg<'a>, name: &str) -> Result<u32, ParseError> {
        self.named(arg, name, &format!("`{name}=N`"))?;
        let parsed = match arg.value {
            Tok::Word(w) if w.bytes().all(|b| b.is_ascii_digit()) => w.parse::<u32>().ok(),
            _ => None,
        };
        match parsed {
            Some(w) if w > 0 => Ok(w),
            _ => Err(self.err(
                arg.col,
                format!("a {name} that is an integer from 1 to 4294967295"),
                quote_found(arg.text),
            )),
        }
    }

    /// A `name=true` or `name=false` argument.
    fn flag(&self, arg: &Arg<'a>, name: &str) -> Result<bool, ParseError> {
        self.named(arg, name, &format!("`{name}=true` or `{name}=false`"))?;
        match arg.value {
            Tok::Word("true") => Ok(true),
            Tok::Word("false") => Ok(false),
            _ => Err(self.err(arg.col, "`true` or `false`", quote_found(arg.text))),
        }
    }

    /// A failure point, written as a bare word.
    fn point(&self, arg: &Arg<'a>) -> Result<FailPoint, ParseError> {
        match arg.value {
            Tok::Word(w) => FailPoint::from_name(w),
            _ => None,
        }
        .ok_or_else(|| self.err(arg.col, POINT_NAMES, quote_found(arg.text)))
    }
}
