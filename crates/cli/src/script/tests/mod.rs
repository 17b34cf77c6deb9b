//! Tests of the script language: single lines, whole scripts, random input.

use super::*;

mod limits;
mod lines;
mod random;
mod reader;

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
