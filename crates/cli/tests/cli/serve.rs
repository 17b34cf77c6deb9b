//! `ringkv serve` as a process: signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `ringkv serve` process on a free loopback port, with its stderr
/// lines delivered to a channel.
struct Served {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Process::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ringkv serve starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut served = Served {
            child,
            addr: String::new(),
            log,
            seen: Vec::new(),
        };
        let line = served.wait_for("listening");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("the listening line names its address");
        served.addr = addr.to_owned();
        served
    }

    /// Waits (at most 60 s) for a log line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; log:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        stream
    }

    fn signal(&self, name: &str) {
        let status = Process::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Reads until `reply` has arrived in full.
fn expect(stream: &mut TcpStream, reply: &[u8]) {
    let mut got = vec![0; reply.len()];
    stream.read_exact(&mut got).expect("a reply");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply)
    );
}

#[test]
fn a_second_signal_exits_while_a_membership_change_still_runs() {
    // One key per batch makes the change long enough to be caught in the
    // middle: 100,000 keys moved one lock round trip at a time.
    let mut served = Served::start(&["--copy-batch", "1", "--nodes", "n1"]);
    let mut c = served.connect();
    for chunk in 0..20 {
        let mut args = vec!["MSET".to_owned()];
        for i in 0..5_000 {
            args.push(format!("key{chunk}-{i}"));
            args.push("value".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.write_all(&command(&args)).expect("write");
        expect(&mut c, b"+OK\r\n");
    }
    let mut admin = served.connect();
    admin
        .write_all(&command(&["RINGKV.ADDNODE", "n2"]))
        .expect("write");
    served.wait_for("rebalance started");

    let started = Instant::now();
    served.signal("TERM");
    served.wait_for("shutting down");
    served.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = served.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after two signals"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exited = started.elapsed();
    // The rest of the log: the change must not have been waited for.
    while let Ok(line) = served.log.recv_timeout(Duration::from_secs(5)) {
        served.seen.push(line);
    }
    assert!(status.success(), "exit status {status}");
    assert!(
        !served
            .seen
            .iter()
            .any(|l| l.contains("rebalance done") && l.contains("node=n2")),
        "the process waited for the change ({exited:?}):\n{}",
        served.seen.join("\n")
    );
}
