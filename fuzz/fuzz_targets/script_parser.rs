//! Fuzz target: arbitrary bytes through the script parser must never panic,
//! and `escape` must round-trip every byte string through `parse_line`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_cli::script::{Op, ScriptReader, escape, parse_line};

fuzz_target!(|data: &[u8]| {
    // The streaming reader over the raw bytes (invalid UTF-8 included).
    for item in ScriptReader::new(data) {
        if let Err(e) = item {
            let _ = e.to_string();
        }
    }

    // The single-line helper, and Display of whatever parses.
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(Some(op)) = parse_line(line, 1) {
            assert_eq!(parse_line(&op.to_string(), 1), Ok(Some(op)));
        }
    }

    // escape/parse round trip for the input as a byte string.
    let line = format!("put({}, \"\")", escape(data));
    assert_eq!(
        parse_line(&line, 1),
        Ok(Some(Op::Put {
            key: data.to_vec(),
            value: Vec::new(),
        }))
    );
});
