//! The reader's caps: long lines, big blocks, blocks that never close.

use super::*;
use std::cell::Cell;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

/// A reader of `prefix` and then `line` repeated `times` times (or without
/// end), that counts the bytes handed out.
struct Generated {
    prefix: Vec<u8>,
    line: Vec<u8>,
    times: Option<u64>,
    pos: usize,
    in_prefix: bool,
    handed: Rc<Cell<u64>>,
}

impl Generated {
    fn new(prefix: &[u8], line: &[u8], times: Option<u64>) -> (Self, Rc<Cell<u64>>) {
        let handed = Rc::new(Cell::new(0));
        let reader = Generated {
            prefix: prefix.to_vec(),
            line: line.to_vec(),
            times,
            pos: 0,
            in_prefix: true,
            handed: Rc::clone(&handed),
        };
        (reader, handed)
    }

    fn current(&self) -> &[u8] {
        if self.in_prefix {
            &self.prefix[self.pos..]
        } else if self.times == Some(0) {
            &[]
        } else {
            &self.line[self.pos..]
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current()[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Generated {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.in_prefix && self.pos == self.prefix.len() {
            self.in_prefix = false;
            self.pos = 0;
        }
        if !self.in_prefix && self.pos == self.line.len() {
            self.pos = 0;
            if let Some(times) = &mut self.times {
                *times = times.saturating_sub(1);
            }
        }
        Ok(self.current())
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
        self.handed.set(self.handed.get() + amt as u64);
    }
}

fn small() -> Limits {
    Limits {
        max_line_bytes: 64,
        max_block_lanes: 3,
        max_block_bytes: 200,
    }
}

fn items(text: &str, limits: Limits) -> Vec<Result<Item, String>> {
    ScriptReader::with_limits(text.as_bytes(), limits)
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn a_line_past_the_cap_is_an_error_and_the_next_line_parses() {
    let long = format!("put(k, {})", "v".repeat(100));
    let text = format!("get(a)\n{long}\nget(b)\n");
    assert_eq!(
        items(&text, small()),
        vec![
            Ok(Item::Op {
                line: 1,
                op: get("a")
            }),
            Err(
                "line 2, column 65: line longer than 64 bytes, the most a script line may hold: \
                 shorten it"
                    .into()
            ),
            Ok(Item::Op {
                line: 3,
                op: get("b")
            }),
        ]
    );
    // The cap counts the line ending: 63 bytes and `\n` fit, `\r\n` does not.
    let fits = format!("put(k, {})", "v".repeat(55));
    assert_eq!(fits.len(), 63);
    assert!(items(&format!("{fits}\n"), small())[0].is_ok());
    assert!(items(&format!("{fits}\r\n"), small())[0].is_err());
}

#[test]
fn a_line_without_end_is_read_in_bounded_memory() {
    // 100 MB of zero bytes, as from `head -c 100M /dev/zero`.
    let (zeros, handed) = Generated::new(b"", &[0; 4096], Some(25_600));
    let mut reader = ScriptReader::new(zeros);
    let err = reader.next().expect("an item").expect_err("an error");
    assert!(
        err.to_string()
            .starts_with("line 1, column 1048577: line longer than 1048576 bytes"),
        "{err}"
    );
    // Nothing past the cap was read to report the error ...
    assert!(handed.get() <= 1 << 20, "read {} bytes", handed.get());
    // ... and going on skips the rest of the line without storing it.
    assert!(reader.next().is_none());
    assert_eq!(handed.get(), 100 << 20);
    assert_eq!(reader.lines_read(), 1);
}

#[test]
fn a_block_with_too_many_lanes_is_abandoned() {
    let text = "concurrently {\nget(a)\nget(b)\n\nget(c)\nget(d)\nget(e)\n}\nget(f)\n";
    assert_eq!(
        items(text, small()),
        vec![
            Err(
                "line 6, column 1: the `concurrently` block opened on line 1 has more than 3 \
                 lanes, the most a block may hold: split it into several blocks"
                    .into()
            ),
            Ok(Item::Op {
                line: 9,
                op: get("f")
            }),
        ]
    );
    // Exactly at the cap is fine.
    let text = "concurrently {\nget(a)\nget(b)\nget(c)\n}\n";
    assert!(
        matches!(&items(text, small())[..], [Ok(Item::Concurrent { lanes, .. })] if lanes.len() == 3)
    );
}

#[test]
fn a_block_too_long_is_abandoned() {
    let lane = format!("put(k, {})\n", "v".repeat(40)); // 50 bytes
    let text = format!("concurrently {{\n{lane}{lane}{lane}{lane}{lane}}}\nget(f)\n");
    assert_eq!(
        items(
            &text,
            Limits {
                max_block_lanes: 10,
                ..small()
            }
        ),
        vec![
            Err(
                "line 6, column 1: the `concurrently` block opened on line 1 holds more than 200 \
                 bytes of script, the most a block may hold: close it with `}` or split it into \
                 several blocks"
                    .into()
            ),
            Ok(Item::Op {
                line: 8,
                op: get("f")
            }),
        ]
    );
}

#[test]
fn an_unterminated_block_is_an_error_in_bounded_memory() {
    // Lanes without end: the block's cap stops the buffering.
    let lane = format!("put(key, {})\n", "v".repeat(117));
    assert_eq!(lane.len(), 128);
    let (lanes, handed) = Generated::new(b"concurrently {\n", lane.as_bytes(), None);
    let mut reader = ScriptReader::new(lanes);
    let err = reader.next().expect("an item").expect_err("an error");
    let lanes_read = (Limits::MAX_BLOCK_BYTES / 128) as u64;
    assert_eq!(
        err.to_string(),
        format!(
            "line {}, column 1: the `concurrently` block opened on line 1 holds more than \
             8388608 bytes of script, the most a block may hold: close it with `}}` or split it \
             into several blocks",
            lanes_read + 2
        )
    );
    assert_eq!(handed.get(), 15 + 128 * (lanes_read + 1));
    // The same input, ending: one error for the block, then the end.
    let (lanes, _) = Generated::new(b"concurrently {\n", b"get(key)\n", Some(10));
    let all: Vec<_> = ScriptReader::new(lanes)
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    assert_eq!(
        all,
        vec![Err(
            "line 1, column 1: unterminated `concurrently` block opened on line 1: \
                  expected `}` before the end of the input"
                .into()
        )]
    );
}
