//! The Redis Cluster face of a node: `CLUSTER SLOTS`, `NODES`, `KEYSLOT`,
//! `INFO` and `MYID`, so that Redis Cluster clients (redis-py's
//! `RedisCluster`, `redis-benchmark --cluster`, ...) send each key straight
//! to the node that serves it instead of through a forwarding hop.
//!
//! A key's token begins with its Redis Cluster hash slot
//! (`ringkv_ring::key_token`), so a slot is one run of tokens. With balanced
//! partitions of at most 16,384 (a node's default), range boundaries fall
//! on slot boundaries and each slot has exactly one serving node: the map is
//! exact. With more partitions, or random vnodes, a slot may be split and
//! the map names the node serving its first token: a hint, since any node
//! forwards a key it does not serve. A client with an old map is forwarded
//! too, unless the node runs with `--cluster-redirects` (`-MOVED`, in
//! `router.rs`).
//!
//! Everything here is a pure function of the node's view.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ringkv_meta::MetaState;
use ringkv_ring::{Placement, SLOTS, Token, key_slot, slot_tokens, token_slot};
use ringkv_server::route::AdminReply;

/// Consecutive slots served by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run<'a> {
    /// The first slot.
    pub first: u16,
    /// The last slot (inclusive).
    pub last: u16,
    /// The node serving them.
    pub node: &'a str,
}

/// Every slot's serving node, in slot order, consecutive slots of one node
/// merged. Empty before the cluster is initialised.
pub(crate) fn runs(state: &MetaState) -> Vec<Run<'_>> {
    let mut out: Vec<Run<'_>> = Vec::new();
    for slot in 0..SLOTS {
        let Some(serving) = state.serving(*slot_tokens(slot).start()) else {
            return Vec::new();
        };
        match out.last_mut() {
            Some(run) if run.node == serving.node => run.last = slot,
            _ => out.push(Run {
                first: slot,
                last: slot,
                node: serving.node,
            }),
        }
    }
    out
}

/// Which hash slots this node serves, as of a recent view: the router's
/// hint of which pipelines to gather ([`ringkv_server::route::Router::forwards`]).
/// One bit a slot, read and written without a lock: a request is always
/// routed by the view itself, so a stale or torn hint costs speed only.
#[derive(Debug)]
pub(crate) struct Hint {
    words: Box<[AtomicU64]>,
}

impl Default for Hint {
    fn default() -> Self {
        Hint {
            words: (0..usize::from(SLOTS) / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl Hint {
    /// Whether `slot` was served here (all of it, or its first token).
    pub(crate) fn here(&self, slot: u16) -> bool {
        let word = self.words[usize::from(slot / 64)].load(Ordering::Relaxed);
        word & (1 << (slot % 64)) != 0
    }

    /// Sets every slot from `state`, as node `me` (with `--cluster-redirects`
    /// and an exact map, nothing is forwarded: every slot counts as here).
    pub(crate) fn fill(&self, state: &MetaState, me: &str, redirects: bool) {
        let all = redirects && exact(state);
        let mut words = vec![0u64; self.words.len()];
        // By runs of tokens, not slot by slot: a ring of 64 partitions is
        // 64 lookups, not 16,384.
        for run in crate::view::runs(state, 0, Token::MAX, usize::MAX) {
            if !all && run.node != me {
                continue;
            }
            // The slots whose first token is in the run.
            let (start, end) = (*run.tokens.start(), *run.tokens.end());
            let first = token_slot(start);
            let first = if *slot_tokens(first).start() < start {
                first + 1
            } else {
                first
            };
            for slot in first..=token_slot(end) {
                words[usize::from(slot / 64)] |= 1 << (slot % 64);
            }
        }
        for (word, bits) in self.words.iter().zip(words) {
            word.store(bits, Ordering::Relaxed);
        }
    }
}

/// Keeps `inner.hint` filled from each view published, off the request
/// path (a fill reads every slot's serving node: about a millisecond).
pub(crate) async fn keep_hint(inner: std::sync::Arc<crate::Inner>) {
    let mut epochs = inner.epochs.subscribe();
    loop {
        let worker = std::sync::Arc::clone(&inner);
        let filled = tokio::task::spawn_blocking(move || {
            let state = worker.view();
            worker.hint.fill(&state, &worker.me, worker.redirects);
        })
        .await;
        if filled.is_err() || epochs.changed().await.is_err() {
            return;
        }
    }
}

/// Whether every slot has one serving node: balanced partitions, at most
/// one per slot, so that no range boundary cuts a slot. Otherwise the map
/// names the node serving each slot's first token, a hint.
pub(crate) fn exact(state: &MetaState) -> bool {
    state.ring.as_ref().is_some_and(|ring| {
        matches!(ring.placement(), Placement::BalancedPartitions { partitions }
            if partitions <= u32::from(SLOTS))
    })
}

/// Answers `CLUSTER <args>` (`args[0]` is the subcommand) as node `me`.
pub(crate) fn command(state: &MetaState, me: &str, args: &[Bytes]) -> AdminReply {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let arity = match sub.as_str() {
        "keyslot" => 2,
        "slots" | "shards" | "nodes" | "info" | "myid" | "help" => 1,
        _ => {
            return AdminReply::Error(format!(
                "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(&args[0])
            ));
        }
    };
    if args.len() != arity {
        return AdminReply::Error(format!(
            "ERR wrong number of arguments for 'cluster|{sub}' command"
        ));
    }
    match sub.as_str() {
        "keyslot" => AdminReply::Int(i64::from(key_slot(&args[1]))),
        "myid" => AdminReply::Text(me.to_string()),
        "help" => AdminReply::Lines(
            [
                "CLUSTER <subcommand> [<arg> ...]. Subcommands are:",
                "SLOTS: each range of hash slots with the node serving it.",
                "SHARDS: each member with the ranges of hash slots it serves.",
                "NODES: the members in Redis Cluster's line format, with their slots.",
                "KEYSLOT <key>: the hash slot of <key>.",
                "INFO: the cluster's state, slots and members.",
                "MYID: this node's id.",
                "HELP: this text.",
            ]
            .map(String::from)
            .to_vec(),
        ),
        "slots" => slots(state),
        "shards" => shards(state),
        "nodes" => AdminReply::Text(nodes(state, me)),
        _ => AdminReply::Text(info(state)),
    }
}

/// `CLUSTER SLOTS`: `[first, last, [host, port, id]]` per run.
fn slots(state: &MetaState) -> AdminReply {
    let entries = runs(state)
        .into_iter()
        .map(|run| {
            let addr = state
                .members
                .get(run.node)
                .map_or("", |m| m.client_addr.as_str());
            let (host, port) = split_addr(addr);
            AdminReply::Array(vec![
                AdminReply::Int(i64::from(run.first)),
                AdminReply::Int(i64::from(run.last)),
                AdminReply::Array(vec![
                    AdminReply::Text(host.to_string()),
                    AdminReply::Int(i64::from(port)),
                    AdminReply::Text(run.node.to_string()),
                ]),
            ])
        })
        .collect();
    AdminReply::Array(entries)
}

/// `CLUSTER SHARDS` (Redis 7): one shard per member, as every member is a
/// master without replicas (R = 1): `["slots", [first, last, ...],
/// "nodes", [["id", id, "port", port, "ip", host, "endpoint", host,
/// "role", "master", "replication-offset", 0, "health", online|fail]]]`.
/// A member that serves no slot (joining) has an empty list, as an empty
/// master has in Redis.
fn shards(state: &MetaState) -> AdminReply {
    let runs = runs(state);
    let text = |s: &str| AdminReply::Text(s.to_string());
    let shards = state
        .members
        .iter()
        .map(|(id, member)| {
            let slots = runs
                .iter()
                .filter(|r| r.node == id)
                .flat_map(|r| [r.first, r.last])
                .map(|slot| AdminReply::Int(i64::from(slot)))
                .collect();
            let (host, port) = split_addr(&member.client_addr);
            let node = vec![
                text("id"),
                text(id),
                text("port"),
                AdminReply::Int(i64::from(port)),
                text("ip"),
                text(host),
                text("endpoint"),
                text(host),
                text("role"),
                text("master"),
                text("replication-offset"),
                AdminReply::Int(0),
                text("health"),
                text(if member.down { "fail" } else { "online" }),
            ];
            AdminReply::Array(vec![
                text("slots"),
                AdminReply::Array(slots),
                text("nodes"),
                AdminReply::Array(vec![AdminReply::Array(node)]),
            ])
        })
        .collect();
    AdminReply::Array(shards)
}

/// `CLUSTER NODES`: Redis's line format, one line per member:
/// `id host:port@peer-port flags - 0 0 epoch link slots...`. Every member
/// is a master (R = 1); a member marked down is flagged `fail`.
fn nodes(state: &MetaState, me: &str) -> String {
    let runs = runs(state);
    let mut out = String::new();
    for (id, member) in &state.members {
        let (host, port) = split_addr(&member.client_addr);
        let (_, peer_port) = split_addr(&member.peer_addr);
        let mut flags = if id == me { "myself,master" } else { "master" }.to_string();
        if member.down {
            flags.push_str(",fail");
        }
        let link = if member.down {
            "disconnected"
        } else {
            "connected"
        };
        out.push_str(&format!(
            "{id} {host}:{port}@{peer_port} {flags} - 0 0 {} {link}",
            state.epoch
        ));
        for run in runs.iter().filter(|r| r.node == id) {
            match run.first == run.last {
                true => out.push_str(&format!(" {}", run.first)),
                false => out.push_str(&format!(" {}-{}", run.first, run.last)),
            }
        }
        out.push('\n');
    }
    out
}

/// `CLUSTER INFO`: the fields clients read. The state is `fail` while a
/// slot's node is marked down (its keys are unavailable), as in Redis.
fn info(state: &MetaState) -> String {
    let runs = runs(state);
    let width = |r: &Run<'_>| u32::from(r.last - r.first) + 1;
    let assigned: u32 = runs.iter().map(width).sum();
    // Slot by slot, as requests are decided: a node marked down fails its
    // slots, and so does a range a forced removal dropped and its target
    // has not switched yet, whatever its source's flag.
    let failed = (0..SLOTS)
        .filter(|&slot| {
            state
                .serving(*slot_tokens(slot).start())
                .is_some_and(|s| s.down)
        })
        .count() as u32;
    let serving: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.node).collect();
    let ok = assigned == u32::from(SLOTS) && failed == 0;
    format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:{failed}\r\ncluster_known_nodes:{}\r\n\
         cluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\n",
        if ok { "ok" } else { "fail" },
        assigned - failed,
        state.members.len(),
        serving.len(),
        state.epoch,
        state.epoch,
    )
}

/// `host:port` (or `[v6]:port`) into its host and port; port 0 if none.
fn split_addr(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().unwrap_or(0),
        ),
        None => (addr, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixtures::{complete, force_out, two_nodes};
    use ringkv_meta::Command;

    fn words(args: &[&str]) -> Vec<Bytes> {
        args.iter().map(|a| Bytes::from(a.to_string())).collect()
    }

    /// The runs tile slots 0..=16383 in order, and every key is served by
    /// the node its slot's run names: the map is exact.
    fn assert_exact(state: &MetaState) {
        let runs = runs(state);
        assert_eq!(runs.first().map(|r| r.first), Some(0));
        assert_eq!(runs.last().map(|r| r.last), Some(SLOTS - 1));
        for pair in runs.windows(2) {
            assert_eq!(pair[1].first, pair[0].last + 1);
            assert_ne!(pair[1].node, pair[0].node, "runs of one node are merged");
        }
        for i in 0..20_000 {
            let key = format!("key:{i}");
            let slot = key_slot(key.as_bytes());
            let run = runs
                .iter()
                .find(|r| (r.first..=r.last).contains(&slot))
                .unwrap();
            assert_eq!(
                state.serving_key(key.as_bytes()).unwrap().node,
                run.node,
                "key {key} in slot {slot}"
            );
        }
    }

    #[test]
    fn the_map_is_exact_before_during_and_after_a_change() {
        let mut state = two_nodes();
        assert_exact(&state);
        assert!(runs(&state).iter().all(|r| r.node == "1"));
        state
            .apply(&Command::BeginChange { node: "2".into() })
            .unwrap();
        let change = state.change.as_ref().unwrap().id;
        let half: Vec<usize> = (0..state.change.as_ref().unwrap().ranges.len() / 2).collect();
        state
            .apply(&Command::FenceRanges {
                change,
                ranges: half.clone(),
            })
            .unwrap();
        state
            .apply(&Command::SwitchRanges {
                change,
                ranges: half,
            })
            .unwrap();
        // Half the ranges switched: both nodes serve some slots.
        assert_exact(&state);
        let nodes: std::collections::BTreeSet<&str> = runs(&state).iter().map(|r| r.node).collect();
        assert_eq!(nodes.len(), 2);

        let mut state = two_nodes();
        complete(&mut state, "2");
        assert_exact(&state);
        let two: u32 = runs(&state)
            .iter()
            .filter(|r| r.node == "2")
            .map(|r| u32::from(r.last - r.first) + 1)
            .sum();
        assert_eq!(two, 8192, "64 balanced partitions: half the slots each");
    }

    #[test]
    fn the_hint_names_exactly_the_slots_served_here() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        // Mid-change: node 3 joining, half of its ranges switched.
        let mut mid = state.clone();
        let three = crate::view::fixtures::spec("3");
        mid.apply(&Command::Join { node: three }).unwrap();
        mid.apply(&Command::BeginChange { node: "3".into() })
            .unwrap();
        let change = mid.change.as_ref().unwrap().id;
        let half: Vec<usize> = (0..mid.change.as_ref().unwrap().ranges.len() / 2).collect();
        for command in [
            Command::FenceRanges {
                change,
                ranges: half.clone(),
            },
            Command::SwitchRanges {
                change,
                ranges: half,
            },
        ] {
            mid.apply(&command).unwrap();
        }
        let hint = Hint::default();
        assert!(
            (0..SLOTS).all(|slot| !hint.here(slot)),
            "empty until filled"
        );
        for (state, me) in [(&state, "1"), (&state, "2"), (&mid, "2"), (&mid, "3")] {
            hint.fill(state, me, false);
            for i in 0..2_000 {
                let key = format!("key:{i}");
                let here = state.serving_key(key.as_bytes()).unwrap().node == me;
                assert_eq!(hint.here(key_slot(key.as_bytes())), here, "{key} at {me}");
            }
        }
        // Redirecting with an exact map, nothing is forwarded.
        hint.fill(&state, "1", true);
        assert!((0..SLOTS).all(|slot| hint.here(slot)));
    }

    #[test]
    fn an_uninitialised_cluster_has_no_slots() {
        let state = MetaState::new();
        assert!(runs(&state).is_empty());
        let AdminReply::Text(info) = command(&state, "1", &words(&["info"])) else {
            panic!("CLUSTER INFO is text");
        };
        assert!(info.starts_with("cluster_state:fail\r\n"), "{info}");
    }

    #[test]
    fn slots_nodes_and_info_describe_the_view() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        let AdminReply::Array(entries) = command(&state, "1", &words(&["SLOTS"])) else {
            panic!("CLUSTER SLOTS is an array");
        };
        assert_eq!(entries.len(), runs(&state).len());
        let AdminReply::Array(first) = &entries[0] else {
            panic!("an entry is an array");
        };
        assert!(matches!(first[0], AdminReply::Int(0)));
        let AdminReply::Array(node) = &first[2] else {
            panic!("the node is an array");
        };
        let owner = runs(&state)[0].node;
        assert!(matches!(&node[0], AdminReply::Text(h) if h == "127.0.0.1"));
        assert!(
            matches!(&node[1], AdminReply::Int(p) if *p == format!("1{owner}").parse::<i64>().unwrap())
        );
        assert!(matches!(&node[2], AdminReply::Text(id) if id == owner));

        // CLUSTER NODES, read as redis-benchmark reads it.
        let AdminReply::Text(text) = command(&state, "2", &words(&["nodes"])) else {
            panic!("CLUSTER NODES is text");
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let mut slots = 0;
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let id = fields[0];
            assert_eq!(fields[1], format!("127.0.0.1:1{id}@2{id}"));
            let want = if id == "2" { "myself,master" } else { "master" };
            assert_eq!(fields[2], want);
            assert_eq!(fields[3], "-");
            assert_eq!(fields[7], "connected");
            for def in &fields[8..] {
                let (a, b) = def.split_once('-').unwrap_or((def, def));
                slots += b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1;
            }
        }
        assert_eq!(slots, u32::from(SLOTS));

        let AdminReply::Text(info) = command(&state, "1", &words(&["info"])) else {
            panic!("CLUSTER INFO is text");
        };
        assert!(info.starts_with("cluster_state:ok\r\n"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384\r\n"), "{info}");
        assert!(info.contains("cluster_known_nodes:2\r\n"), "{info}");

        // A member marked down: its slots fail, the cluster state too.
        state.apply(&Command::MarkDown { id: "2".into() }).unwrap();
        let AdminReply::Text(info) = command(&state, "1", &words(&["info"])) else {
            panic!("CLUSTER INFO is text");
        };
        assert!(info.starts_with("cluster_state:fail\r\n"), "{info}");
        assert!(info.contains("cluster_slots_fail:8192\r\n"), "{info}");
        let AdminReply::Text(text) = command(&state, "1", &words(&["nodes"])) else {
            panic!("CLUSTER NODES is text");
        };
        assert!(text.contains(" master,fail - 0 0 "), "{text}");
    }

    #[test]
    fn dropped_slots_fail_even_once_their_source_is_up_again() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        force_out(&mut state, "2");
        state
            .apply(&Command::BeginChange { node: "2".into() })
            .unwrap();
        let change = state.change.as_ref().unwrap();
        let (change, ranges) = (change.id, (0..change.ranges.len()).collect());
        state
            .apply(&Command::DropRanges { change, ranges })
            .unwrap();
        let two = crate::view::fixtures::spec("2");
        state
            .apply(&Command::MarkUp {
                id: "2".into(),
                client_addr: two.client_addr,
                peer_addr: two.peer_addr,
            })
            .unwrap();
        let AdminReply::Text(info) = command(&state, "1", &words(&["info"])) else {
            panic!("CLUSTER INFO is text");
        };
        assert!(info.starts_with("cluster_state:fail\r\n"), "{info}");
        assert!(info.contains("cluster_slots_fail:8192\r\n"), "{info}");
    }

    #[test]
    fn shards_name_each_member_with_the_slots_it_serves() {
        let mut state = two_nodes();
        complete(&mut state, "2");
        state.apply(&Command::MarkDown { id: "2".into() }).unwrap();
        let AdminReply::Array(shards) = command(&state, "1", &words(&["SHARDS"])) else {
            panic!("CLUSTER SHARDS is an array");
        };
        assert_eq!(shards.len(), 2);
        let mut total = 0;
        for (shard, id) in shards.iter().zip(["1", "2"]) {
            let AdminReply::Array(fields) = shard else {
                panic!("a shard is an array");
            };
            assert!(matches!(&fields[0], AdminReply::Text(t) if t == "slots"));
            assert!(matches!(&fields[2], AdminReply::Text(t) if t == "nodes"));
            let AdminReply::Array(slots) = &fields[1] else {
                panic!("the slots are an array");
            };
            let bounds: Vec<i64> = slots
                .iter()
                .map(|s| match s {
                    AdminReply::Int(i) => *i,
                    _ => panic!("a slot is an integer"),
                })
                .collect();
            for pair in bounds.chunks(2) {
                for slot in pair[0]..=pair[1] {
                    let token = *slot_tokens(slot as u16).start();
                    assert_eq!(state.serving(token).unwrap().node, id, "slot {slot}");
                }
                total += pair[1] - pair[0] + 1;
            }
            let AdminReply::Array(nodes) = &fields[3] else {
                panic!("the nodes are an array");
            };
            let AdminReply::Array(node) = &nodes[0] else {
                panic!("a node is an array");
            };
            let pairs: Vec<(String, String)> = node
                .chunks(2)
                .map(|kv| match kv {
                    [AdminReply::Text(k), AdminReply::Text(v)] => (k.clone(), v.clone()),
                    [AdminReply::Text(k), AdminReply::Int(v)] => (k.clone(), v.to_string()),
                    _ => panic!("a node is pairs of name and value"),
                })
                .collect();
            let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            assert_eq!(get("id"), Some(id));
            assert_eq!(get("port"), Some(format!("1{id}").as_str()));
            assert_eq!(get("ip"), Some("127.0.0.1"));
            assert_eq!(get("role"), Some("master"));
            let health = if id == "2" { "fail" } else { "online" };
            assert_eq!(get("health"), Some(health));
        }
        assert_eq!(total, i64::from(SLOTS));
    }

    /// Redirects are sent only when the map is exact: balanced partitions,
    /// at most one per slot.
    #[test]
    fn the_map_is_exact_only_when_no_range_cuts_a_slot() {
        use crate::view::fixtures::spec;
        use ringkv_meta::PlacementSpec;
        assert!(exact(&two_nodes()));
        assert!(!exact(&MetaState::new()));
        for (placement, want) in [
            (
                PlacementSpec::BalancedPartitions { partitions: 16384 },
                true,
            ),
            (
                PlacementSpec::BalancedPartitions { partitions: 32768 },
                false,
            ),
            (
                PlacementSpec::RandomVnodes {
                    vnodes_per_weight: 8,
                },
                false,
            ),
        ] {
            let mut state = MetaState::new();
            state
                .apply(&Command::Bootstrap {
                    placement,
                    node: spec("1"),
                })
                .unwrap();
            assert_eq!(exact(&state), want, "{placement:?}");
        }
    }

    #[test]
    fn keyslot_myid_and_bad_subcommands() {
        let state = two_nodes();
        let AdminReply::Lines(help) = command(&state, "1", &words(&["help"])) else {
            panic!("CLUSTER HELP is lines");
        };
        assert!(help.iter().any(|l| l.starts_with("SLOTS")), "{help:?}");
        assert!(matches!(
            command(&state, "1", &words(&["keyslot", "foo"])),
            AdminReply::Int(12182)
        ));
        assert!(
            matches!(command(&state, "1", &words(&["MYID"])), AdminReply::Text(id) if id == "1")
        );
        let AdminReply::Error(e) = command(&state, "1", &words(&["keyslot"])) else {
            panic!("an arity error");
        };
        assert_eq!(
            e,
            "ERR wrong number of arguments for 'cluster|keyslot' command"
        );
        let AdminReply::Error(e) = command(&state, "1", &words(&["meet", "x"])) else {
            panic!("an unknown subcommand");
        };
        assert_eq!(e, "ERR unknown subcommand 'meet'. Try CLUSTER HELP.");
    }
}
