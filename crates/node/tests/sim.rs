//! A seeded simulation of node processes: the node code of `ringkv node`
//! (router, forwarding, range moves, coordinator, failure detector, Raft)
//! runs unchanged in one process, its peers over the in-memory transport
//! and its clients over in-memory streams, on a paused tokio clock. A
//! seeded schedule loses requests and answers, delays (so reorders) peer
//! messages, partitions a node from the others, crashes nodes and restarts
//! them on their data directories, joins new nodes and decommissions
//! members, while six clients write, read and delete 40 keys through any
//! node (each node copies at a seeded `--rebalance-rate`, so that clients
//! write to ranges while they are copied; a quarter of the seeds run under
//! `--fsync always`).
//!
//! After the faults end and the cluster has settled (one membership and
//! epoch on every member, no change in flight, every member up), every key
//! is read through every node, and the whole history (every client
//! operation with its invocation and completion in one order; a write
//! that failed or timed out has an unknown outcome) is checked for per-key
//! linearizability by `ringkv-lincheck`. Then no key may be held by more
//! than the node that serves it.
//!
//! A crash here stops the node's tasks and network at once (no shutdown,
//! no final checkpoint), and its store is closed as the kernel keeps a
//! killed process's writes; torn files are the business of the process
//! tests (`crates/cli/tests/nodes`), which `kill -9` real processes.
//!
//! `cargo nextest run -p ringkv-node --test sim` runs 6 seeds;
//! `RINGKV_SIM_SEEDS=1000 cargo nextest run -p ringkv-node --test sim
//! --run-ignored only` the heavy run; a failure prints
//! `RINGKV_SIM_SEED=<seed>`, which replays that seed's schedule of faults
//! and operations. (openraft draws its election timeouts from an unseeded
//! generator and blocking tasks run on real threads, so a replay follows
//! the same schedule but not always the same interleaving.)

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringkv_lincheck::Event;
use ringkv_meta::{NodeState, PlacementSpec};
use ringkv_node::{Node, NodeConfig, Start};
use ringkv_peer::{DEFAULT_FRAME_LIMIT, Faults, MemTransport, Secret};
use ringkv_server::{Connector, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::{Instant, sleep, timeout};

/// Nodes that start the cluster, and those that may join later.
const FIRST: [&str; 3] = ["a", "b", "c"];
const SPARE: [&str; 3] = ["d", "e", "f"];
const CLIENTS: u64 = 6;
const KEYS: u64 = 40;
/// How long clients run and faults are injected, in simulated time.
const LOAD_FOR: Duration = Duration::from_secs(40);
/// How long a client waits for a reply before it gives up, closes the
/// connection and counts the request's outcome unknown, as a client with a
/// socket timeout does: a lost message stalls a forwarded request for the
/// forwarder's limit of 15 s, which would otherwise keep the clients idle
/// through the changes they are meant to meet.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the cluster must stay settled before the final checks: longer
/// than the failure detector's oldest decision (a 2 s probe, then a 2 s
/// second ask).
const STABLE: Duration = Duration::from_secs(5);
/// How long the final reads and administrative commands wait.
const REPLY_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------
// A client over an in-memory stream: just enough RESP2.

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

struct Client {
    stream: DuplexStream,
    input: BytesMut,
}

impl Client {
    fn connect(connector: &Connector) -> io::Result<Client> {
        Ok(Client {
            stream: connector.connect()?,
            input: BytesMut::new(),
        })
    }

    async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut replies = self.pipeline(&[args.to_vec()]).await?;
        Ok(replies.pop().expect("one reply"))
    }

    /// Sends `requests` in one write (a pipeline) and reads their replies.
    async fn pipeline(&mut self, requests: &[Vec<&[u8]>]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::new();
        for args in requests {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.stream.write_all(&out).await?;
        let mut replies = Vec::with_capacity(requests.len());
        while replies.len() < requests.len() {
            if let Some((reply, used)) = parse(&self.input)? {
                self.input.advance(used);
                replies.push(reply);
                continue;
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(replies)
    }
}

/// One reply from the front of `buf` and the bytes it took, if whole.
fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a RESP2 reply");
    let line = std::str::from_utf8(&buf[1..end]).map_err(|_| bad())?;
    let after = end + 2;
    let number = || line.parse::<i64>().map_err(|_| bad());
    Ok(match buf.first() {
        Some(b'+') => Some((Reply::Simple(line.into()), after)),
        Some(b'-') => Some((Reply::Error(line.into()), after)),
        Some(b':') => Some((Reply::Int(number()?), after)),
        Some(b'$') => match number()? {
            -1 => Some((Reply::Bulk(None), after)),
            n => {
                let n = n as usize;
                (buf.len() >= after + n + 2).then(|| {
                    (
                        Reply::Bulk(Some(buf[after..after + n].to_vec())),
                        after + n + 2,
                    )
                })
            }
        },
        Some(b'*') => {
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..number()?.max(0) {
                let Some((item, used)) = parse(&buf[at..])? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            Some((Reply::Array(items), at))
        }
        _ => return Err(bad()),
    })
}

// ---------------------------------------------------------------------
// The simulated cluster.

/// Client connectors of the nodes that run now, shared with the clients.
type Reachable = Arc<Mutex<BTreeMap<String, Connector>>>;

struct Sim {
    seed: u64,
    net: MemTransport,
    root: tempfile::TempDir,
    nodes: BTreeMap<String, Node>,
    reachable: Reachable,
    /// Members asked to leave whose removal was accepted.
    removed: BTreeSet<String>,
    /// Spare nodes not started yet.
    spare: Vec<&'static str>,
    /// Nodes whose start failed after their join may have been admitted:
    /// withdrawn (`RINGKV.REMOVENODE`), as an operator would, until gone.
    abandoned: BTreeSet<String>,
    /// Members whose removal had no clear answer (a proposal that timed
    /// out may still commit): asked again, as an operator would, until
    /// gone.
    leaving: BTreeSet<String>,
    /// `--rebalance-rate` of every node (keys a second).
    rebalance_rate: Option<u64>,
    log: Vec<String>,
}

fn peer_addr(id: &str) -> String {
    format!("sim-{id}")
}

fn client_addr(id: &str) -> SocketAddr {
    let port = 7000 + u16::from(id.as_bytes()[0] - b'a');
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl Sim {
    fn dir(&self, id: &str) -> PathBuf {
        self.root.path().join(id)
    }

    fn config(&self, id: &str, start: Start) -> NodeConfig {
        let mut config = NodeConfig::new(id, start, Secret::none());
        // Copies slow enough for clients to write to ranges being copied.
        config.rebalance_rate = self.rebalance_rate;
        config.placement = PlacementSpec::BalancedPartitions { partitions: 32 };
        config.data_dir = Some(self.dir(id));
        // A quarter of the seeds (all with RINGKV_SIM_ALWAYS=1) under
        // `--fsync always`, where every client's and every forwarded
        // request's fsync goes through the server's SET writer; chosen by
        // the seed, so the schedule's random stream is as before.
        if self.seed.is_multiple_of(4) || std::env::var_os("RINGKV_SIM_ALWAYS").is_some() {
            config.fsync = ringkv_cluster::FsyncPolicy::Always;
        }
        config.down_after = Duration::from_millis(1500);
        // A one-millisecond range: openraft draws the timeout from an
        // unseeded generator, which a wider range would let steer a run.
        let mut raft = (*ringkv_node::raft_config()).clone();
        raft.election_timeout_max = raft.election_timeout_min + 1;
        config.raft = Arc::new(raft.validate().expect("valid timings"));
        config
    }

    async fn start(&mut self, id: &str, start: Start) -> Result<(), String> {
        let (listener, connector) = Listener::memory(client_addr(id));
        let node =
            Node::start_in_memory(self.config(id, start), listener, &self.net, &peer_addr(id))
                .await
                .map_err(|e| e.to_string())?;
        self.nodes.insert(id.to_string(), node);
        self.reachable
            .lock()
            .unwrap()
            .insert(id.to_string(), connector);
        Ok(())
    }

    async fn crash(&mut self, id: &str) {
        self.reachable.lock().unwrap().remove(id);
        let node = self.nodes.remove(id).expect("a running node");
        assert!(
            node.crash(Duration::from_secs(60)).await,
            "node {id}'s store was still held a minute after its crash"
        );
    }

    fn note(&mut self, what: String) {
        self.log
            .push(format!("{:>8.3}s {what}", self.elapsed().as_secs_f64()));
    }

    fn elapsed(&self) -> Duration {
        START
            .with(|s| s.get())
            .map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Whether every member's node runs, is ready and up, and all agree
    /// on one state with no change in flight.
    fn settled(&self) -> bool {
        let members: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|(id, _)| !self.removed.contains(*id))
            .map(|(_, n)| n)
            .collect();
        let Some(first) = members.first() else {
            return false;
        };
        let view = first.state();
        view.change.is_none()
            && view.members.len() == members.len()
            && view.members.values().all(|m| m.state() == NodeState::Up)
            && view
                .members
                .keys()
                .all(|id| self.nodes.contains_key(id.as_str()))
            && members.iter().all(|n| {
                let s = n.state();
                n.is_ready() && s.epoch == view.epoch && s.members.len() == view.members.len()
            })
    }

    /// Waits until [`Sim::settled`], withdrawing abandoned joins.
    async fn settle(&mut self, rng: &mut SmallRng, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut withdraw = Instant::now();
        // Settled since when: it must hold for [`STABLE`], because the
        // failure detector may still act on probes it sent during the
        // faults (a probe waits up to 2 s, and a suspect is asked again).
        let mut since: Option<Instant> = None;
        while Instant::now() < deadline {
            if Instant::now() >= withdraw {
                withdraw += Duration::from_secs(1);
                for id in self.abandoned.clone() {
                    // Withdrawn, or never admitted.
                    if self.gone_after_remove(rng, &id).await {
                        self.note(format!("withdraw the join of {id}"));
                        self.abandoned.remove(&id);
                    }
                }
                for id in self.leaving.clone() {
                    // Removed now, or by the unanswered request.
                    if self.gone_after_remove(rng, &id).await {
                        self.note(format!("remove {id} again"));
                        self.leaving.remove(&id);
                        self.removed.insert(id);
                    }
                }
            }
            if self.abandoned.is_empty() && self.leaving.is_empty() && self.settled() {
                if since.get_or_insert_with(Instant::now).elapsed() >= STABLE {
                    return true;
                }
            } else {
                since = None;
            }
            sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Asks again for `id` to leave: whether it is no member now.
    async fn gone_after_remove(&mut self, rng: &mut SmallRng, id: &str) -> bool {
        match self.remove(rng, id).await {
            Ok(()) => true,
            Err(e) => e.contains("is not a member"),
        }
    }

    /// Sends `RINGKV.REMOVENODE id` through a node other than `id`.
    async fn remove(&mut self, rng: &mut SmallRng, id: &str) -> Result<(), String> {
        let via: Vec<String> = self
            .reachable
            .lock()
            .unwrap()
            .keys()
            .filter(|n| *n != id && !self.removed.contains(*n))
            .cloned()
            .collect();
        let via = &via[rng.random_range(0..via.len())];
        let connector = self.reachable.lock().unwrap()[via].clone();
        let mut client = Client::connect(&connector).map_err(|e| e.to_string())?;
        let reply = timeout(
            REPLY_LIMIT,
            client.call(&[b"RINGKV.REMOVENODE", id.as_bytes()]),
        )
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
        match reply {
            Reply::Simple(_) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }
}

thread_local! {
    static START: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The values clients write: unique, so a read names its write.
type History = Arc<Mutex<Vec<Event<String, String>>>>;

/// One client: random operations on [`KEYS`] keys through a random
/// reachable node (it reconnects after an I/O error or a timeout, whose
/// reply could otherwise answer its next request) until `until`.
async fn client(
    id: u64,
    seed: u64,
    reachable: Reachable,
    clock: Arc<AtomicU64>,
    history: History,
    until: Instant,
) {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(id));
    let tick = || clock.fetch_add(1, Ordering::SeqCst);
    let mut conn: Option<Client> = None;
    let mut n = 0u64;
    while Instant::now() < until {
        sleep(Duration::from_millis(rng.random_range(0..10))).await;
        let mut client = match conn.take() {
            Some(c) => c,
            None => {
                let pick = {
                    let nodes = reachable.lock().unwrap();
                    let all: Vec<&Connector> = nodes.values().collect();
                    (!all.is_empty()).then(|| all[rng.random_range(0..all.len())].clone())
                };
                match pick.map(|c| Client::connect(&c)) {
                    Some(Ok(c)) => c,
                    _ => continue,
                }
            }
        };
        // Mostly one request; now and then a pipeline of a few on a few
        // keys (so keys repeat in it), which a node routes together.
        let count = match rng.random_range(0..4) {
            0 => rng.random_range(2..=5),
            _ => 1,
        };
        let first = rng.random_range(0..KEYS);
        let ops: Vec<(String, u32, String)> = (0..count)
            .map(|_| {
                let key = match count {
                    1 => format!("k{first}"),
                    _ => format!("k{}", (first + rng.random_range(0..3)) % KEYS),
                };
                n += 1;
                (key, rng.random_range(0..10), format!("c{id}-{n}"))
            })
            .collect();
        let requests: Vec<Vec<&[u8]>> = ops
            .iter()
            .map(|(key, what, value)| match what {
                0..4 => vec![&b"SET"[..], key.as_bytes(), value.as_bytes()],
                4..8 => vec![&b"GET"[..], key.as_bytes()],
                _ => vec![&b"DEL"[..], key.as_bytes()],
            })
            .collect();
        // The requests of a pipeline are concurrent in the history: each
        // from its write to the last reply.
        let invoke = tick();
        let replies = timeout(CLIENT_TIMEOUT, client.pipeline(&requests)).await;
        let complete = tick();
        let ok = matches!(replies, Ok(Ok(_)));
        let mut replies = match replies {
            Ok(Ok(replies)) => replies.into_iter().map(Some).collect(),
            _ => vec![None; ops.len()],
        };
        for ((key, what, value), reply) in ops.into_iter().zip(replies.drain(..)) {
            let event = match (what, reply) {
                (0..4, Some(Reply::Simple(s))) if s == "OK" => {
                    Some(Event::put(key, value, invoke, complete))
                }
                (0..4, _) => Some(Event::put_unknown(key, value, invoke)),
                (4..8, Some(Reply::Bulk(v))) => Some(Event::get(
                    key,
                    invoke,
                    complete,
                    v.map(|v| String::from_utf8(v).expect("values are text")),
                )),
                (4..8, _) => None,
                (_, Some(Reply::Int(removed))) => {
                    Some(Event::delete_returning(key, invoke, complete, removed == 1))
                }
                (_, _) => Some(Event::delete_unknown(key, invoke)),
            };
            if let Some(event) = event {
                history.lock().unwrap().push(event.with_client(id));
            }
        }
        if ok {
            conn = Some(client);
        }
    }
}

async fn run(seed: u64) {
    START.with(|s| s.set(Some(Instant::now())));
    let mut rng = SmallRng::seed_from_u64(seed);
    let net = MemTransport::new(DEFAULT_FRAME_LIMIT);
    let root = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let mut sim = Sim {
        seed,
        net,
        root,
        nodes: BTreeMap::new(),
        reachable: Arc::default(),
        removed: BTreeSet::new(),
        spare: SPARE.to_vec(),
        abandoned: BTreeSet::new(),
        leaving: BTreeSet::new(),
        rebalance_rate: [None, Some(5), Some(20)][rng.random_range(0..3)],
        log: Vec::new(),
    };
    sim.start("a", Start::Init).await.expect("a starts");
    for id in &FIRST[1..] {
        sim.start(id, Start::Join(peer_addr("a")))
            .await
            .expect("a node joins a quiet cluster");
    }
    assert!(
        sim.settle(&mut rng, Duration::from_secs(60)).await,
        "three nodes settle"
    );
    sim.note(format!(
        "three nodes up, rebalance rate {:?}",
        sim.rebalance_rate
    ));

    let loss = rng.random_range(0.0..0.03);
    let delay = Duration::from_millis(rng.random_range(1..30));
    sim.net.set_faults(Some(Faults {
        lose_request: loss,
        lose_answer: loss,
        delay: (Duration::ZERO, delay),
        seed,
    }));
    sim.note(format!("faults: loss {loss:.3}, delay up to {delay:?}"));

    let clock = Arc::new(AtomicU64::new(0));
    let history: History = Arc::default();
    let until = Instant::now() + LOAD_FOR;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                seed,
                Arc::clone(&sim.reachable),
                Arc::clone(&clock),
                Arc::clone(&history),
                until,
            ))
        })
        .collect();

    while Instant::now() < until {
        sleep(Duration::from_millis(rng.random_range(1000..6000))).await;
        let running: Vec<String> = sim
            .nodes
            .keys()
            .filter(|id| !sim.removed.contains(*id))
            .cloned()
            .collect();
        match rng.random_range(0..4) {
            0 if !sim.spare.is_empty() => {
                let id = sim.spare.remove(0);
                let via = &running[rng.random_range(0..running.len())];
                let result = sim.start(id, Start::Join(peer_addr(via))).await;
                sim.note(format!("join {id} via {via}: {result:?}"));
                if result.is_err() {
                    sim.abandoned.insert(id.to_string());
                }
            }
            1 if running.len() > 3 => {
                let id = running[rng.random_range(0..running.len())].clone();
                let result = sim.remove(&mut rng, &id).await;
                sim.note(format!("remove {id}: {result:?}"));
                match result {
                    Ok(()) => {
                        sim.removed.insert(id);
                    }
                    // Refused: nothing was proposed, or it was rejected.
                    Err(e) if e.contains("in flight") || e.contains("is not a member") => {}
                    // No clear answer: it may have committed.
                    Err(_) => {
                        sim.leaving.insert(id);
                    }
                }
            }
            2 => {
                let id = running[rng.random_range(0..running.len())].clone();
                sim.crash(&id).await;
                sim.note(format!("crash {id}"));
                sleep(Duration::from_millis(rng.random_range(200..4000))).await;
                let result = sim.start(&id, Start::Restart).await;
                sim.note(format!("restart {id}: {result:?}"));
                assert!(result.is_ok(), "a crashed node restarts on its directory");
            }
            _ => {
                let id = running[rng.random_range(0..running.len())].clone();
                for other in sim.nodes.keys() {
                    if *other != id {
                        sim.net.cut(&peer_addr(&id), &peer_addr(other));
                    }
                }
                sim.note(format!("partition {id} from the others"));
                sleep(Duration::from_millis(rng.random_range(500..4000))).await;
                sim.net.heal();
                sim.note("heal".into());
            }
        }
    }
    for c in clients {
        c.await.expect("a client panicked");
    }
    sim.net.set_faults(None);
    sim.net.heal();
    sim.note("faults end".into());
    let settled = sim.settle(&mut rng, Duration::from_secs(180)).await;
    report_unless(&sim, settled, "the cluster did not settle within 180 s");

    // Every key through every node that runs: a removed node forwards,
    // unless it was removed before it ever caught up with the log (it has
    // no view to route by, and answers `-TRYAGAIN` until it is stopped).
    let final_reader = CLIENTS;
    let tick = || clock.fetch_add(1, Ordering::SeqCst);
    let connectors: Vec<(String, Connector)> = sim
        .reachable
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| sim.nodes[*id].is_ready())
        .map(|(id, c)| (id.clone(), c.clone()))
        .collect();
    let mut present = BTreeSet::new();
    for (node, connector) in &connectors {
        let mut client = Client::connect(connector).expect("connect");
        for k in 0..KEYS {
            let key = format!("k{k}");
            let invoke = tick();
            let reply = timeout(REPLY_LIMIT, client.call(&[b"GET", key.as_bytes()])).await;
            let complete = tick();
            let value = match reply {
                Ok(Ok(Reply::Bulk(v))) => v.map(|v| String::from_utf8(v).unwrap()),
                other => {
                    report_unless(&sim, false, &format!("GET {key} through {node}: {other:?}"));
                    unreachable!()
                }
            };
            if value.is_some() {
                present.insert(key.clone());
            }
            history
                .lock()
                .unwrap()
                .push(Event::get(key, invoke, complete, value).with_client(final_reader));
        }
    }
    let events = std::mem::take(&mut *history.lock().unwrap());
    let ops = events.len();
    if let Err(e) = ringkv_lincheck::check(events) {
        report_unless(
            &sim,
            false,
            &format!("the history is not linearizable: {e}"),
        );
    }

    // Cleanup deletes copies a node no longer serves once the change that
    // moved them ends: in the end each present key is held once.
    let mut held = 0;
    for _ in 0..100 {
        held = sim
            .nodes
            .iter()
            .filter(|(id, _)| !sim.removed.contains(*id))
            .map(|(_, n)| n.local_keys())
            .sum::<usize>();
        if held == present.len() {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    // Which count is off, and which key, with where it lies: a member's
    // count against its keys, and the present keys no member holds.
    let holders = |key: &str| -> Vec<String> {
        sim.nodes
            .iter()
            .filter(|(_, n)| {
                n.local_key_names()
                    .unwrap()
                    .iter()
                    .any(|k| k == key.as_bytes())
            })
            .map(|(id, _)| id.clone())
            .collect()
    };
    let detail = match held == present.len() {
        true => String::new(),
        false => {
            let counts: Vec<String> = sim
                .nodes
                .iter()
                .map(|(id, n)| {
                    let names = n.local_key_names().unwrap().len();
                    format!("{id}: count {} names {names}", n.local_keys())
                })
                .collect();
            let spread: Vec<String> = present
                .iter()
                .map(|k| (k, holders(k)))
                .filter(|(_, at)| at.iter().filter(|id| !sim.removed.contains(*id)).count() != 1)
                .map(|(k, at)| format!("{k} held by {at:?}"))
                .collect();
            format!(" ({}; {})", counts.join(", "), spread.join(", "))
        }
    };
    report_unless(
        &sim,
        held == present.len(),
        &format!(
            "{held} keys held by the members, {} present{detail}",
            present.len()
        ),
    );
    // The whole key space through every member: `DBSIZE` counts exactly
    // the present keys, and a whole `SCAN` names each of them once.
    let members = connectors
        .iter()
        .filter(|(id, _)| !sim.removed.contains(id));
    for (node, connector) in members {
        let mut client = Client::connect(connector).expect("connect");
        let size = timeout(REPLY_LIMIT, client.call(&[b"DBSIZE"])).await;
        report_unless(
            &sim,
            matches!(size, Ok(Ok(Reply::Int(n))) if n as usize == present.len()),
            &format!("DBSIZE through {node}: {size:?}, {} present", present.len()),
        );
        let (mut cursor, mut scanned) = (b"0".to_vec(), Vec::new());
        loop {
            let request: [&[u8]; 4] = [b"SCAN", &cursor, b"COUNT", b"10"];
            let reply = timeout(REPLY_LIMIT, client.call(&request)).await;
            let Ok(Ok(Reply::Array(mut parts))) = reply else {
                report_unless(&sim, false, &format!("SCAN through {node}: {reply:?}"));
                unreachable!()
            };
            let (Some(Reply::Array(keys)), Some(Reply::Bulk(Some(next)))) =
                (parts.pop(), parts.pop())
            else {
                report_unless(&sim, false, &format!("SCAN through {node}: {parts:?}"));
                unreachable!()
            };
            for key in keys {
                if let Reply::Bulk(Some(key)) = key {
                    scanned.push(String::from_utf8(key).unwrap());
                }
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
        let unique: BTreeSet<String> = scanned.iter().cloned().collect();
        report_unless(
            &sim,
            unique == present && scanned.len() == present.len(),
            &format!(
                "SCAN through {node} named {} keys ({} distinct), {} present",
                scanned.len(),
                unique.len(),
                present.len()
            ),
        );
    }
    eprintln!(
        "seed {seed}: {ops} operations linearizable; {} keys present; {}",
        present.len(),
        sim.log.join("; ")
    );
    for (_, node) in std::mem::take(&mut sim.nodes) {
        node.shutdown().await;
    }
}

/// Fails with the seed's schedule unless `ok`.
fn report_unless(sim: &Sim, ok: bool, what: &str) {
    if !ok {
        let states: Vec<String> = sim
            .nodes
            .iter()
            .map(|(id, n)| {
                let s = n.state();
                format!(
                    "{id}: ready={} epoch={} change={:?} members={:?}",
                    n.is_ready(),
                    s.epoch,
                    s.change.as_ref().map(|c| c.node.clone()),
                    s.members
                        .iter()
                        .map(|(id, m)| format!("{id}={:?}", m.state()))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        panic!(
            "seed {}: {what}\nschedule:\n  {}\nnodes:\n  {}",
            sim.seed,
            sim.log.join("\n  "),
            states.join("\n  ")
        );
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("RINGKV_SIM_SEED") {
        return vec![seed.parse().expect("RINGKV_SIM_SEED is a number")];
    }
    let count = std::env::var("RINGKV_SIM_SEEDS")
        .map(|s| s.parse().expect("RINGKV_SIM_SEEDS is a count"))
        .unwrap_or(6);
    (0..count).map(|i| 0x5eed_0000 + i).collect()
}

fn run_seeds(seeds: Vec<u64>) {
    // `RUST_LOG=ringkv_node=info` shows what the nodes did.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    for seed in seeds {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(run(seed));
        }));
        if let Err(panic) = result {
            eprintln!("simulation failed; replay with RINGKV_SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Seeds of the heavy run that once failed, run with every test run too.
/// 0x5eed0140 and 0x5eed01ee took a refused step again and again without
/// a pause while a member was down, without end (the coordinator woke on
/// its own rejected entries: `BeginChange`, and `FenceRanges` after a pull
/// answered at once).
const ONCE_FAILED: [u64; 2] = [0x5eed_0140, 0x5eed_01ee];

/// A few seeds, for every test run.
#[test]
fn nodes_stay_linearizable_under_loss_delay_partitions_crashes_joins_and_removals() {
    let mut seeds = seeds();
    if std::env::var_os("RINGKV_SIM_SEED").is_none() {
        seeds.extend(ONCE_FAILED);
    }
    run_seeds(seeds);
}

/// The heavy run: `RINGKV_SIM_SEEDS` seeds (1,000 by default).
#[test]
#[ignore = "heavy: 1,000 seeds; run with --run-ignored only"]
fn a_thousand_seeds() {
    if std::env::var("RINGKV_SIM_SEEDS").is_err() && std::env::var("RINGKV_SIM_SEED").is_err() {
        run_seeds((0..1000).map(|i| 0x5eed_0000 + i).collect());
    } else {
        run_seeds(seeds());
    }
}
