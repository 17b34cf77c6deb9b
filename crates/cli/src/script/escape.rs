//! Quoting byte strings in script syntax, the inverse of the lexer's
//! quoted strings.

#[cfg(doc)]
use super::parse_line;

/// Quotes a byte string in script syntax: `"` + escaped text + `"`.
///
/// `\` and `"` are escaped as `\\` and `\"`, newline and tab as `\n` and `\t`,
/// other control characters and bytes that are not valid UTF-8 as `\xHH`; all
/// other text is kept as is. [`parse_line`] reads the result back as exactly
/// `bytes`, for every byte string.
pub fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
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
