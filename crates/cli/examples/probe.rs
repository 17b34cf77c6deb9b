//! A latency probe with a timestamp on every request, for timelines of a
//! rebalance (`scripts/bench-nodes.sh` with `TIMELINE_SECS`, then
//! `scripts/timeline.py`): `redis-benchmark` gives a summary of a run, not
//! when each slow request was sent.
//!
//! ```sh
//! cargo run --release -p ringkv-cli --example probe -- \
//!     --addr 127.0.0.1:6379 --conns 10 --secs 7 --keys 1000000 --out probe.csv
//! ```
//!
//! Each of `--conns` connections sends `GET key:<12 digits>` of a random
//! key below `--keys` (the benchmark's key names), one at a time, for
//! `--secs` seconds. `--out` gets a CSV row per request: when it was sent
//! (microseconds since the UNIX epoch), its latency (microseconds) and
//! whether the reply was an error (1) or not (0).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// The server, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// How long to probe, in seconds.
    #[arg(long)]
    secs: f64,
    /// Keys are `key:%012d` below this.
    #[arg(long)]
    keys: u64,
    /// The CSV file to write.
    #[arg(long)]
    out: std::path::PathBuf,
}

/// One request: sent at (µs since the epoch), latency (µs), error reply.
type Row = (u64, u64, bool);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.conns == 0 || args.keys == 0 || args.secs <= 0.0 {
        bail!("--conns, --keys and --secs must be above zero");
    }
    let end = Instant::now() + Duration::from_secs_f64(args.secs);
    let mut connections = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let stream = TcpStream::connect(&args.addr)
            .await
            .with_context(|| format!("cannot connect to {}", args.addr))?;
        stream.set_nodelay(true)?;
        connections.push(tokio::spawn(probe(stream, args.keys, end)));
    }
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?,
    );
    writeln!(out, "sent_us,latency_us,error")?;
    // Every connection's rows are written; a connection that failed makes
    // the probe fail after, so a short timeline is not taken for a whole.
    let mut failed = Vec::new();
    for connection in connections {
        match connection.await? {
            Ok(rows) => {
                for (sent, latency, error) in rows {
                    writeln!(out, "{sent},{latency},{}", u8::from(error))?;
                }
            }
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    out.flush()?;
    if !failed.is_empty() {
        bail!(
            "{} of the connections failed: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// How long past the end a reply may take before the probe gives up.
const GRACE: Duration = Duration::from_secs(10);

/// GETs on `stream` until `end`.
async fn probe(stream: TcpStream, keys: u64, end: Instant) -> anyhow::Result<Vec<Row>> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut rng = SmallRng::from_os_rng();
    let (mut rows, mut line, mut value) = (Vec::new(), String::new(), Vec::new());
    while Instant::now() < end {
        let key = format!("key:{:012}", rng.random_range(0..keys));
        let request = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
        let started = Instant::now();
        write.write_all(request.as_bytes()).await?;
        line.clear();
        let deadline = tokio::time::Instant::from_std(end + GRACE);
        let read_line = tokio::time::timeout_at(deadline, read.read_line(&mut line));
        if read_line
            .await
            .context("no reply within 10 s of the end")??
            == 0
        {
            bail!("the server closed the connection");
        }
        let error = line.starts_with('-');
        if let Some(len) = line.strip_prefix('$') {
            let len: i64 = len.trim().parse().context("a bulk reply's length")?;
            if len >= 0 {
                value.resize(len as usize + 2, 0);
                let read_value = tokio::time::timeout_at(deadline, read.read_exact(&mut value));
                read_value
                    .await
                    .context("no reply within 10 s of the end")??;
            }
        } else if !error {
            bail!("unexpected reply to GET: {line:?}");
        }
        rows.push((sent, started.elapsed().as_micros() as u64, error));
    }
    Ok(rows)
}
