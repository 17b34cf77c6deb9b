//! `kill -9` at random instants while clients write and delete and nodes
//! are added and removed, then a restart checked against a model of what
//! the clients were told.
//!
//! One data directory lives through every kill of a run: each restart is
//! the start of the next round, so the model (and the membership) carries
//! over from round to round. Each client owns its keys and has at most one
//! command in flight per key (half the clients send pipelines of commands
//! on distinct keys), so after a kill a key may hold its last acknowledged
//! value or the value of its one unacknowledged command, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::harness::{self, Allowed, Launch, Server, is_server_error};

/// Client threads, and keys each owns.
const CLIENTS: usize = 4;
const KEYS_PER_CLIENT: usize = 64;
/// The node ids the admin thread adds and removes.
const POOL: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];

/// A key's state as the model knows it.
#[derive(Debug, Clone, Default)]
struct KeyState {
    /// The value after the last acknowledged command (`None`: absent).
    acked: Option<String>,
    /// The command sent but not answered when the process died, if any:
    /// `Some(None)` is a DEL, `Some(Some(v))` a SET of `v`.
    in_flight: Option<Option<String>>,
}

/// What a client thread did in one round.
struct ClientRun {
    keys: BTreeMap<String, KeyState>,
    ops: u64,
    /// Error replies (not lost connections): a write must never fail.
    errors: Vec<String>,
}

/// What the admin thread did in one round.
struct AdminRun {
    members: BTreeSet<String>,
    /// The membership the unanswered change would have made.
    in_flight: Option<BTreeSet<String>>,
    changes: u64,
    errors: Vec<String>,
}

/// Prints how to replay a run if the test fails.
struct SeedReport {
    base: u64,
    round: Arc<Mutex<(usize, u64)>>,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if thread::panicking() {
            let (round, seed) = *self.round.lock().unwrap();
            eprintln!(
                "crash test failed in round {round} (round seed {seed:#x}); replay with \
                 RINGKV_CRASH_SEED={} (rounds before it replay too)",
                self.base
            );
        }
    }
}

/// The base seed: `RINGKV_CRASH_SEED`, or a fresh one.
fn base_seed() -> u64 {
    match std::env::var("RINGKV_CRASH_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("RINGKV_CRASH_SEED={s:?} is not a u64")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64;
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

/// Kills a server `kills` times at random instants in `window` after its
/// clients start, checking the restart each time. A data directory lives
/// through [`KILLS_PER_DIR`] kills, then the next round starts afresh: a
/// directory whose process is always killed never has its journal folded
/// into its trees, so its open gets slower with every kill.
pub fn run(kills: usize, window: (Duration, Duration)) {
    let base = base_seed();
    let report = SeedReport {
        base,
        round: Arc::new(Mutex::new((0, base))),
    };
    eprintln!("crash test: RINGKV_CRASH_SEED={base}, {kills} kills");
    let started = Instant::now();
    let (mut total_ops, mut total_changes) = (0, 0);
    // Restarts that found a change in flight and rolled it back or
    // completed it.
    let (mut rolled_back, mut completed) = (0, 0);
    let mut life = None;
    for round in 0..kills {
        let seed = base
            .wrapping_add(round as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        *report.round.lock().unwrap() = (round, seed);
        let mut rng = SmallRng::seed_from_u64(seed);
        let context = format!("round {round} (seed {seed:#x})");
        if round % KILLS_PER_DIR == 0 {
            life = Some(Life::new(policy(round)));
        }
        let life = life.as_mut().expect("started");

        let mut con = life.server.connect();
        let probe = format!("round{round}");
        harness::write_works(&mut con, "probe", &probe, &context);
        life.model.get_mut("probe").expect("modelled").acked = Some(probe);
        drop(con);

        // Clients and the admin thread run until the kill drops them.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let keys: BTreeMap<String, KeyState> = life
                    .model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("c{c}:")))
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .collect();
                let con = life.server.connect();
                let seed = rng.random();
                let stop = Arc::clone(&stop);
                thread::spawn(move || client(con, keys, round, c, seed, &stop))
            })
            .collect();
        let admin = {
            let con = life.server.connect();
            let seed = rng.random();
            let members = life.members.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || admin(con, members, seed, &stop))
        };

        let delay = rng.random_range(window.0..=window.1);
        thread::sleep(delay);
        life.server.kill();
        // The threads end on their dropped connections; this only makes
        // sure none starts another command.
        stop.store(true, Ordering::Relaxed);

        for c in clients {
            let run = c.join().expect("client thread");
            assert!(
                run.errors.is_empty(),
                "{context}: writes failed:\n{}",
                run.errors.join("\n")
            );
            total_ops += run.ops;
            life.model.extend(run.keys);
        }
        let run = admin.join().expect("admin thread");
        total_changes += run.changes;
        // A change may be refused; that is recorded, not a test failure.
        if !run.errors.is_empty() {
            eprintln!("{context}: change errors: {:?}", run.errors);
        }
        let mut member_choices = vec![run.members];
        member_choices.extend(run.in_flight);

        let restart = Instant::now();
        life.launch.fsync = policy(round + 1);
        life.server = Server::start(&life.launch, &[]);
        let restart = restart.elapsed();
        if life.server.seen(&["before its commit point"]).is_some() {
            rolled_back += 1;
        }
        if life.server.seen(&["after its commit point"]).is_some() {
            completed += 1;
        }
        life.check(&member_choices, &context);
        eprintln!(
            "{context}: killed under --fsync {} after {delay:?}, restarted in {restart:?}; \
             {total_ops} commands \
             and {total_changes} changes so far, {:.1} s",
            policy(round),
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "crash test: {kills} kills, {total_ops} client commands, {total_changes} membership \
         changes acknowledged, {rolled_back} changes rolled back and {completed} completed by \
         a restart, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(report);
}

/// The `--fsync` policy of the server killed in round `r`: every policy
/// promises that a kill -9 loses no acknowledged write (the OS keeps its
/// page cache). Every write reaches the OS before its store call returns;
/// `always` also waits for the shared fsync before the reply.
fn policy(round: usize) -> &'static str {
    ["always", "everysec", "no"][round % 3]
}

/// Kills in one data directory.
const KILLS_PER_DIR: usize = 10;

/// One data directory, its server and the model of its contents.
struct Life {
    server: Server,
    launch: Launch,
    model: BTreeMap<String, KeyState>,
    members: BTreeSet<String>,
    _home: tempfile::TempDir,
}

impl Life {
    /// A new directory, served by n1, n2, n3 under `--fsync fsync`, every
    /// key absent.
    fn new(fsync: &'static str) -> Life {
        let home = harness::scratch();
        // Fewer partitions than the default: a change moves a few hundred
        // ranges, so several changes (and kills inside them) fit in a round.
        let mut launch = Launch::new(home.path(), &["--partitions", "1024"]);
        launch.fsync = fsync;
        Life {
            server: Server::start(&launch, &[]),
            launch,
            model: (0..CLIENTS)
                .flat_map(|c| (0..KEYS_PER_CLIENT).map(move |k| format!("c{c}:{k}")))
                .chain(["probe".to_owned()])
                .map(|k| (k, KeyState::default()))
                .collect(),
            members: ["n1", "n2", "n3"].map(String::from).into(),
            _home: home,
        }
    }

    /// Checks the restarted server against the model (and the members
    /// against `member_choices`), then makes what it read the model.
    fn check(&mut self, member_choices: &[BTreeSet<String>], context: &str) {
        let mut con = self.server.connect();
        let allowed: Allowed = self
            .model
            .iter()
            .map(|(k, s)| {
                let mut ok = vec![s.acked.clone()];
                ok.extend(s.in_flight.clone());
                (k.clone(), ok)
            })
            .collect();
        let read = harness::check_keys(&mut con, &allowed, context);
        let now = harness::members(&mut con, context);
        assert!(
            member_choices.contains(&now),
            "{context}: members {now:?} after the restart, want one of {member_choices:?}"
        );
        harness::check_membership(&mut con, &now, &read, context);
        self.members = now;
        for (k, v) in read {
            self.model.insert(
                k,
                KeyState {
                    acked: v,
                    in_flight: None,
                },
            );
        }
    }
}

/// A client: random SET and DEL on its own keys, one at a time, until the
/// connection drops.
fn client(
    mut con: redis::Connection,
    mut keys: BTreeMap<String, KeyState>,
    round: usize,
    id: usize,
    seed: u64,
    stop: &AtomicBool,
) -> ClientRun {
    let mut rng = SmallRng::seed_from_u64(seed);
    let names: Vec<String> = keys.keys().cloned().collect();
    let mut errors = Vec::new();
    let mut ops = 0;
    // Odd clients pipeline their writes: up to 8 commands on distinct keys
    // in one round trip, which the server writes as one engine commit
    // per run of SETs, or per run of writes that begins with a DEL (each
    // key still has at most one command in flight).
    let pipelined = id % 2 == 1;
    while !stop.load(Ordering::Relaxed) {
        if pipelined {
            let n = rng.random_range(2..=8);
            let mut pipe = redis::pipe();
            let mut sent = Vec::with_capacity(n);
            for i in rand::seq::index::sample(&mut rng, names.len(), n) {
                let key = &names[i];
                let value = rng
                    .random_bool(0.8)
                    .then(|| format!("r{round}.c{id}.{ops}.{i}"));
                match &value {
                    Some(v) => pipe.cmd("SET").arg(key).arg(v).ignore(),
                    None => pipe.cmd("DEL").arg(key).ignore(),
                };
                keys.get_mut(key).expect("own key").in_flight = Some(value.clone());
                sent.push((key.clone(), value));
            }
            match pipe.query::<()>(&mut con) {
                Ok(()) => {
                    for (key, value) in sent {
                        let state = keys.get_mut(&key).expect("own key");
                        state.acked = value;
                        state.in_flight = None;
                        ops += 1;
                    }
                }
                Err(e) if is_server_error(&e) => {
                    errors.push(format!("pipeline {sent:?}: {e}"));
                    break;
                }
                // The kill: each command of the pipeline may or may not
                // have been applied.
                Err(_) => break,
            }
            continue;
        }
        let key = &names[rng.random_range(0..names.len())];
        let value = if rng.random_bool(0.7) {
            Some(format!("r{round}.c{id}.{ops}"))
        } else {
            None
        };
        let state = keys.get_mut(key).expect("own key");
        state.in_flight = Some(value.clone());
        let result = match &value {
            Some(v) => redis::cmd("SET").arg(key).arg(v).query::<()>(&mut con),
            None => redis::cmd("DEL").arg(key).query::<()>(&mut con),
        };
        match result {
            Ok(()) => {
                state.acked = value;
                state.in_flight = None;
                ops += 1;
            }
            Err(e) if is_server_error(&e) => {
                // Refused: nothing changed, but the test fails.
                state.in_flight = None;
                errors.push(format!("{key} {value:?}: {e}"));
            }
            // The kill: the outcome of this command is unknown.
            Err(_) => break,
        }
    }
    ClientRun { keys, ops, errors }
}

/// The admin: adds and removes nodes of [`POOL`] one change at a time,
/// keeping two to five members, until the connection drops.
fn admin(
    mut con: redis::Connection,
    mut members: BTreeSet<String>,
    seed: u64,
    stop: &AtomicBool,
) -> AdminRun {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut errors = Vec::new();
    let mut changes = 0;
    let in_flight = loop {
        if stop.load(Ordering::Relaxed) {
            break None;
        }
        thread::sleep(Duration::from_millis(rng.random_range(0..30)));
        let add = match members.len() {
            0..=2 => true,
            5.. => false,
            _ => rng.random_bool(0.5),
        };
        let candidates: Vec<&str> = POOL
            .iter()
            .copied()
            .filter(|n| members.contains(*n) != add)
            .collect();
        let node = candidates[rng.random_range(0..candidates.len())];
        let mut after = members.clone();
        if add {
            after.insert(node.to_owned());
        } else {
            after.remove(node);
        }
        match harness::change(&mut con, add, node) {
            Ok(_) => {
                members = after;
                changes += 1;
            }
            Err(e) if is_server_error(&e) => {
                errors.push(format!(
                    "{} {node}: {e}",
                    if add { "add" } else { "remove" }
                ));
                // A refused or rolled-back change leaves the members as
                // they were; read them back to be sure.
                match redis::cmd("RINGKV.NODES").query::<Vec<redis::Value>>(&mut con) {
                    Ok(nodes) => {
                        members = nodes
                            .iter()
                            .map(|n| harness::text(&harness::fields(n)["id"]))
                            .collect();
                    }
                    Err(_) => break Some(after),
                }
            }
            // The kill: the change's outcome is unknown.
            Err(_) => break Some(after),
        }
    };
    AdminRun {
        members,
        in_flight,
        changes,
        errors,
    }
}

/// A few kills, for every test run.
#[test]
fn kill_9_at_random_instants_loses_no_acknowledged_write() {
    run(3, (Duration::from_millis(200), Duration::from_millis(900)));
}

/// 200 kills (`RINGKV_CRASH_KILLS` overrides the count).
#[test]
#[ignore = "heavy: 200 kills, minutes; run with --ignored"]
fn kill_9_at_random_instants_200_times() {
    let kills = std::env::var("RINGKV_CRASH_KILLS")
        .map(|s| s.parse().expect("RINGKV_CRASH_KILLS is a count"))
        .unwrap_or(200);
    run(
        kills,
        (Duration::from_millis(50), Duration::from_millis(1000)),
    );
}
