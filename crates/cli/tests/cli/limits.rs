//! Input that would exhaust memory or threads: endless lines, huge and
//! unterminated blocks. Each is a clear error (exit code 2) in bounded
//! memory, or runs on a bounded number of threads.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, Stdio};

use super::*;

/// Starts `ringkv run - ARGS` with piped stdin, stdout and stderr.
fn spawn(args: &[&str]) -> Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["run", "-"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv")
}

/// Writes `input` (generated, never held whole) to the child's stdin and
/// returns how many bytes the child took before it closed its end.
fn feed(stdin: &mut ChildStdin, mut input: impl Read) -> u64 {
    let mut written = 0u64;
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = input.read(&mut buf).expect("generate input");
        if n == 0 {
            return written;
        }
        match stdin.write_all(&buf[..n]) {
            Ok(()) => written += n as u64,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return written,
            Err(e) => panic!("write to ringkv: {e}"),
        }
    }
}

/// The child's peak resident memory so far, in bytes (Linux only).
fn peak_rss(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn finish(child: Child) -> Outcome {
    let output = child.wait_with_output().expect("ringkv finishes");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// 100 MiB of zero bytes, like `head -c 100M /dev/zero`.
fn zeros() -> impl Read {
    io::repeat(0).take(100 << 20)
}

/// What the tool may hold at most: the 1 MiB line, an 8 MiB block and their
/// parsed form, and the binary itself; far below the 100 MiB fed to it.
const MEMORY_BOUND: u64 = 64 << 20;

#[test]
fn an_endless_line_stops_the_run_with_a_clear_error() {
    let mut child = spawn(&[]);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let taken = feed(&mut stdin, zeros());
    drop(stdin);
    let out = finish(child);
    out.expect_code(2);
    assert_eq!(
        out.err_lines(),
        [
            "error: line 1, column 1048577: line longer than 1048576 bytes, the most a script line may hold: shorten it"
        ]
    );
    // It stopped at the cap: what it read is the line's first MiB and
    // what the pipe and its buffer held.
    assert!(taken < 4 << 20, "ringkv took {taken} bytes");
}

/// Runs `ringkv run --keep-going ARGS` on `input` then `tail`: the input is
/// one line that does not parse, skipped within [`MEMORY_BOUND`], and the
/// `get` in `tail` then prints `None`.
fn assert_skipped_in_bounded_memory(args: &[&str], input: impl Read, tail: &[u8]) {
    let mut child = spawn(&[&["--keep-going"], args].concat());
    let mut stdin = child.stdin.take().expect("stdin is piped");
    feed(&mut stdin, input);
    let peak = peak_rss(&child);
    stdin.write_all(tail).expect("write to ringkv");
    drop(stdin);
    let out = finish(child);
    out.expect_code(2);
    assert_eq!(out.out_lines(), ["None"]);
    assert_eq!(
        out.err_lines()[1..],
        ["errors: 1 line(s) did not parse, 0 operation(s) failed"]
    );
    if let Some(peak) = peak {
        assert!(peak < MEMORY_BOUND, "peak memory {peak} bytes");
    }
}

#[test]
fn an_endless_line_is_skipped_in_bounded_memory_with_keep_going() {
    assert_skipped_in_bounded_memory(&["--nodes", "n1"], zeros(), b"\nget(a)\n");
}

/// Lanes without end after `concurrently {`, never closed.
fn endless_block(bytes: u64) -> impl Read {
    b"add_node(n1)\nconcurrently {\n"
        .chain(io::repeat(0).take(bytes).map_zeros_to(b"put(key, value)\n"))
}

/// Turns a reader of zeros into a reader of `line` repeated.
trait MapZeros: Read + Sized {
    fn map_zeros_to(self, line: &'static [u8]) -> Repeated<Self> {
        Repeated {
            inner: self,
            line,
            pos: 0,
        }
    }
}
impl<R: Read> MapZeros for R {}

struct Repeated<R> {
    inner: R,
    line: &'static [u8],
    pos: usize,
}

impl<R: Read> Read for Repeated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for b in &mut buf[..n] {
            *b = self.line[self.pos];
            self.pos = (self.pos + 1) % self.line.len();
        }
        Ok(n)
    }
}

#[test]
fn an_unterminated_block_stops_the_run_with_a_clear_error() {
    let mut child = spawn(&[]);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let taken = feed(&mut stdin, endless_block(100 << 20));
    drop(stdin);
    let out = finish(child);
    out.expect_code(2);
    assert_eq!(
        out.err_lines(),
        [
            "error: line 100003, column 1: the `concurrently` block opened on line 2 has more than 100000 lanes, the most a block may hold: split it into several blocks"
        ]
    );
    assert!(taken < 4 << 20, "ringkv took {taken} bytes");
}

#[test]
fn an_unterminated_block_is_skipped_in_bounded_memory_with_keep_going() {
    // The block is abandoned: none of its puts run, so `key` stays absent.
    assert_skipped_in_bounded_memory(&[], endless_block(32 << 20), b"}\nget(key)\n");
}

/// 20,000 lanes (one thread each would exhaust the kernel's mappings) run
/// on the bounded pool, and print in lane order.
#[test]
fn twenty_thousand_lanes_run() {
    let mut script = String::from("add_node(n1)\nconcurrently {\n");
    for i in 0..20_000 {
        script.push_str(&format!("put(k{i}, v{i}); get(k{i})\n"));
    }
    script.push_str("}\nstats()\n");
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    assert_eq!(lines.len(), 20_001);
    for (i, line) in lines[..20_000].iter().enumerate() {
        assert_eq!(*line, format!("\"v{i}\""));
    }
    assert_eq!(parse_stats(lines[20_000]).keys, 20_000);
}
