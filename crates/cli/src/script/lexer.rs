//! The lexer: one line of script text into tokens.

use super::error::{ErrorKind, ParseError};

/// The largest number of characters of offending input quoted in an error.
const MAX_FOUND_CHARS: usize = 40;

pub(super) fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | ',' | '"' | '#' | '{' | '}' | ';' | '=')
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok<'a> {
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
pub(super) struct Token<'a> {
    pub(super) tok: Tok<'a>,
    /// 1-based column of the token's first character.
    pub(super) col: usize,
    /// The token's source text (empty for `End`).
    pub(super) text: &'a str,
}

/// Describes a token for the "found" part of an error message.
pub(super) fn found(t: &Token<'_>) -> String {
    match t.tok {
        Tok::End => "end of line".to_owned(),
        _ => quote_found(t.text),
    }
}

pub(super) fn quote_found(text: &str) -> String {
    if text.chars().count() > MAX_FOUND_CHARS {
        let cut: String = text.chars().take(MAX_FOUND_CHARS).collect();
        format!("`{cut}…`")
    } else {
        format!("`{text}`")
    }
}

pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) line: usize,
    /// Byte offset of the next character.
    pub(super) pos: usize,
    /// 1-based column of the next character.
    pub(super) col: usize,
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

    pub(super) fn next_token(&mut self) -> Result<Token<'a>, ParseError> {
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
