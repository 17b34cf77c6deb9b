//! Cluster administration, the `RINGKV.` commands, and `CLUSTER` where no
//! router answers it (`ringkv serve` is not a Redis Cluster: a node of a
//! multi-process cluster answers `CLUSTER SLOTS` and the like itself).
//!
//! Membership changes return [`Outcome::Blocking`]: the redistribution
//! holds the cluster's membership lock and copies ranges for as long as it
//! takes, so it runs on tokio's blocking pool, not on a runtime worker.
//! Clients (this connection's excepted: it waits for the reply) go on
//! reading and writing meanwhile; the cluster's own `tracing` events log
//! the redistribution, as in `ringkv run`.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_cluster::RebalanceReport;

use super::{Ctx, Outcome, cluster_error, parse_i64};
use crate::reply::{self, Frame};
use crate::state::Shared;

fn node_id(arg: &Bytes) -> Result<String, Frame> {
    String::from_utf8(arg.to_vec()).map_err(|_| reply::err("node id must be UTF-8"))
}

pub fn addnode(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let id = match node_id(&args[0]) {
        Ok(id) => id,
        Err(e) => return e.into(),
    };
    let weight = match &args[1..] {
        [] => 1,
        [weight] => match parse_i64(weight).and_then(|w| u32::try_from(w).ok()) {
            Some(w) if w >= 1 => w,
            _ => return reply::err("weight must be an integer from 1 to 4294967295").into(),
        },
        _ => return reply::syntax_error().into(),
    };
    let shared = Arc::clone(ctx.shared);
    Outcome::Blocking(Box::new(move || {
        let result = shared.cluster.add_node_weighted(&id, weight);
        report_reply(&shared, result)
    }))
}

/// `RINGKV.REMOVENODE id [FORCE]`: with `FORCE`, the removal goes ahead
/// even where keys cannot be moved (the last node, or a node that is
/// down), and the reply's `keys_dropped` counts the keys lost.
pub fn removenode(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let id = match node_id(&args[0]) {
        Ok(id) => id,
        Err(e) => return e.into(),
    };
    let force = match &args[1..] {
        [] => false,
        [word] if word.eq_ignore_ascii_case(b"FORCE") => true,
        _ => return reply::syntax_error().into(),
    };
    let shared = Arc::clone(ctx.shared);
    Outcome::Blocking(Box::new(move || {
        let result = if force {
            shared.cluster.remove_node_forced(&id)
        } else {
            shared.cluster.remove_node(&id)
        };
        report_reply(&shared, result)
    }))
}

/// `SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]`. Every stop is the
/// same clean stop (a first SIGTERM's), which keeps every acknowledged
/// write whatever is asked: the options are checked as Redis 7 checks
/// them and change nothing. `ABORT` cannot stop a shutdown once begun (the
/// connections are draining), so it answers as Redis does when none is in
/// progress. On a node of a multi-process cluster it stops the node's
/// process the same way (`ringkv node` watches its client server); the
/// node stays a member, down until it returns.
pub fn shutdown(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let (mut save, mut nosave, mut abort, mut other) = (false, false, false, false);
    for arg in args {
        let word = arg.to_ascii_uppercase();
        match word.as_slice() {
            b"SAVE" => save = true,
            b"NOSAVE" => nosave = true,
            b"ABORT" => abort = true,
            b"NOW" | b"FORCE" => other = true,
            _ => return reply::syntax_error().into(),
        }
    }
    if (save && nosave) || (abort && (save || nosave || other)) {
        return reply::syntax_error().into();
    }
    if abort {
        return reply::err("No shutdown in progress.").into();
    }
    Outcome::Shutdown
}

pub fn resume(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let shared = Arc::clone(ctx.shared);
    Outcome::Blocking(Box::new(move || match shared.cluster.resume() {
        Ok(None) => Frame::Null,
        Ok(Some(report)) => report_reply(&shared, Ok(report)),
        Err(e) => cluster_error(e),
    }))
}

/// `RINGKV.REPAIR`: deletes stale copies left by failed cleanups on nodes
/// that are back; replies with how many stale ranges remain.
pub fn repair(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let shared = Arc::clone(ctx.shared);
    Outcome::Blocking(Box::new(move || reply::int(shared.cluster.repair())))
}

/// The report of a change as a map (a flat field/value array in RESP2).
fn report_reply(
    shared: &Shared,
    result: Result<RebalanceReport, ringkv_cluster::ClusterError>,
) -> Frame {
    let report = match result {
        Ok(report) => report,
        Err(e) => return cluster_error(e),
    };
    shared.record_rebalance(&report);
    reply::map(vec![
        ("op", reply::bulk(report.kind.as_str())),
        ("node", reply::bulk(report.node.to_string())),
        ("epoch", reply::int(report.epoch)),
        ("keys_moved", reply::int(report.keys_moved)),
        ("bytes_moved", reply::int(report.bytes_moved)),
        ("transfers", reply::int(report.transfers.len())),
        ("duration_ms", reply::int(report.duration.as_millis())),
        ("keys_dropped", reply::int(report.keys_dropped)),
        ("pending_cleanups", reply::int(report.pending_cleanups)),
    ])
}

pub fn nodes(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    let stats = ctx.shared.cluster.stats();
    reply::array(
        stats
            .nodes
            .into_iter()
            .map(|node| {
                reply::map(vec![
                    ("id", reply::bulk(node.id.to_string())),
                    ("weight", reply::int(node.weight)),
                    ("keys", reply::int(node.keys)),
                    ("down", reply::int(u8::from(node.down))),
                ])
            })
            .collect(),
    )
    .into()
}

/// `CLUSTER` without a router: `ringkv serve` is one server, not a Redis
/// Cluster, and answers as a Redis server without cluster mode does.
pub fn cluster(_: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    reply::err("This instance has cluster support disabled").into()
}

pub fn locate(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let key = &args[0];
    let cluster = &ctx.shared.cluster;
    let ring = cluster.ring();
    let owner = ring.owner(key).map(|id| Bytes::from(id.to_string()));
    let copies = cluster
        .locate(key)
        .into_iter()
        .map(|(id, _)| reply::bulk(id.to_string()))
        .collect();
    reply::map(vec![
        (
            "token",
            reply::bulk(format!("{:016x}", ringkv_ring::key_token(key))),
        ),
        ("owner", reply::bulk_or_null(owner)),
        ("epoch", reply::int(ring.epoch())),
        ("stored_on", reply::array(copies)),
    ])
    .into()
}
