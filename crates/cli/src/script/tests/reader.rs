//! Whole scripts: blocks, line endings, recovery, I/O errors, streaming.

use super::*;
use std::cell::Cell;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

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
                        ops: vec![
                            Op::RemoveNode {
                                id: "node2".into(),
                                force: false
                            },
                            get("key1")
                        ]
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
            Err("line 1, column 13: expected `{` after `concurrently`, found end of line".into()),
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
        vec![Err("line 2, column 9: expected an operation name (add_node, remove_node, put, get, delete, stats, crash, heal, fail, resume), found `;`".into())]
    );
    assert_eq!(
        script("concurrently {\n get(a) get(b)\n}"),
        vec![Err(
            "line 2, column 9: expected `;` or end of line, found `get`".into()
        )]
    );
    assert_eq!(
        script("concurrently {\n ;\n}"),
        vec![Err("line 2, column 2: expected an operation name (add_node, remove_node, put, get, delete, stats, crash, heal, fail, resume), found `;`".into())]
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
