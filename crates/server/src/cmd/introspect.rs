//! What the server tells about itself: INFO, DBSIZE, COMMAND, CONFIG GET.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ringkv_cluster::Placement;

use super::{COMMANDS, Ctx, Outcome, Spec, lookup};
use crate::glob::Pattern;
use crate::reply::{self, Frame};

pub fn dbsize(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Outcome {
    reply::int(ctx.shared.cluster.stats().total_keys).into()
}

const SECTIONS: &[&str] = &["server", "clients", "stats", "keyspace", "ring"];

pub fn info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let mut out = String::new();
    for section in SECTIONS {
        if all || wanted.iter().any(|w| w == section) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            write_section(ctx, section, &mut out);
        }
    }
    reply::verbatim(out).into()
}

fn write_section(ctx: &Ctx<'_>, section: &str, out: &mut String) {
    let shared = ctx.shared;
    let stats = &shared.stats;
    // `write!` to a String cannot fail.
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        if key.starts_with('#') {
            let _ = write!(out, "{key}\r\n");
        } else {
            let _ = write!(out, "{key}:{value}\r\n");
        }
    };
    match section {
        "server" => {
            line("# Server", &"");
            line("redis_version", &super::conn::REDIS_VERSION);
            line("ringkv_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("process_id", &std::process::id());
            line("tcp_port", &shared.local_addr.port());
            line("uptime_in_seconds", &shared.started.elapsed().as_secs());
        }
        "clients" => {
            line("# Clients", &"");
            line(
                "connected_clients",
                &stats.connected.load(Ordering::Relaxed),
            );
            line("maxclients", &shared.config.max_clients);
        }
        "stats" => {
            line("# Stats", &"");
            line(
                "total_connections_received",
                &stats.connections.load(Ordering::Relaxed),
            );
            line(
                "total_commands_processed",
                &stats.commands.load(Ordering::Relaxed),
            );
            line(
                "rejected_connections",
                &stats.rejected.load(Ordering::Relaxed),
            );
            line(
                "total_error_replies_protocol",
                &stats.protocol_errors.load(Ordering::Relaxed),
            );
            line(
                "client_output_buffer_limit_disconnections",
                &stats.output_limit_disconnections.load(Ordering::Relaxed),
            );
        }
        "keyspace" => {
            line("# Keyspace", &"");
            let keys = shared.cluster.stats().total_keys;
            line("db0", &format!("keys={keys},expires=0,avg_ttl=0"));
        }
        "ring" => {
            let cluster = shared.cluster.stats();
            line("# Ring", &"");
            line("ring_nodes", &cluster.nodes.len());
            line("ring_epoch", &cluster.epoch);
            match shared.cluster.config().placement {
                Placement::BalancedPartitions { partitions } => {
                    line("ring_placement", &"balanced");
                    line("ring_partitions", &partitions);
                }
                Placement::RandomVnodes { vnodes_per_weight } => {
                    line("ring_placement", &"random");
                    line("ring_vnodes_per_weight", &vnodes_per_weight);
                }
                other => line("ring_placement", &other),
            }
            line("ring_keys", &cluster.total_keys);
            line("ring_rebalancing", &u8::from(cluster.rebalancing));
            line("ring_pending_cleanups", &cluster.pending_cleanups);
            for (i, node) in cluster.nodes.iter().enumerate() {
                line(
                    &format!("node{i}"),
                    &format!(
                        "id={},weight={},keys={},down={}",
                        node.id,
                        node.weight,
                        node.keys,
                        u8::from(node.down)
                    ),
                );
            }
            match shared.last_rebalance() {
                None => line("last_rebalance", &"none"),
                Some(last) => {
                    line("last_rebalance", &last.op);
                    line("last_rebalance_node", &last.node);
                    line("last_rebalance_epoch", &last.epoch);
                    line("last_rebalance_keys_moved", &last.keys_moved);
                    line("last_rebalance_bytes_moved", &last.bytes_moved);
                    line("last_rebalance_duration_ms", &last.duration.as_millis());
                    line("last_rebalance_time", &last.finished_unix);
                }
            }
        }
        _ => {}
    }
}

pub fn command(_: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let Some((sub, names)) = args.split_first() else {
        return reply::array(COMMANDS.iter().map(command_info).collect()).into();
    };
    let frame = match &sub.to_ascii_uppercase()[..] {
        b"COUNT" if names.is_empty() => reply::int(COMMANDS.len()),
        b"LIST" if names.is_empty() => {
            reply::array(COMMANDS.iter().map(|s| reply::bulk(s.name)).collect())
        }
        b"INFO" => reply::array(
            names
                .iter()
                .map(|n| lookup(n).map_or(Frame::Null, command_info))
                .collect(),
        ),
        b"DOCS" => {
            let specs: Vec<&Spec> = if names.is_empty() {
                COMMANDS.iter().collect()
            } else {
                names.iter().filter_map(|n| lookup(n)).collect()
            };
            Frame::Map(
                specs
                    .into_iter()
                    .map(|s| (reply::bulk(s.name), command_docs(s)))
                    .collect(),
            )
        }
        b"COUNT" | b"LIST" => reply::wrong_arity(&format!(
            "command|{}",
            String::from_utf8_lossy(sub).to_lowercase()
        )),
        _ => reply::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            reply::quote(sub)
        )),
    };
    frame.into()
}

/// An entry of `COMMAND` / `COMMAND INFO`, in Redis 7's ten-field shape.
fn command_info(spec: &Spec) -> Frame {
    let flags = spec
        .flags
        .iter()
        .map(|f| Frame::Simple(Bytes::from_static(f.as_bytes())))
        .collect();
    reply::array(vec![
        reply::bulk(spec.name),
        reply::int(spec.arity),
        Frame::Set(flags),
        reply::int(spec.keys.0),
        reply::int(spec.keys.1),
        reply::int(spec.keys.2),
        reply::array(Vec::new()),
        reply::array(Vec::new()),
        reply::array(Vec::new()),
        reply::array(Vec::new()),
    ])
}

/// An entry of `COMMAND DOCS`: a map (flat array, RESP2) of its summary,
/// since and group.
fn command_docs(spec: &Spec) -> Frame {
    reply::map(vec![
        ("summary", reply::bulk(spec.summary)),
        ("since", reply::bulk("1.0.0")),
        ("group", reply::bulk(spec.group)),
    ])
}

pub fn config(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    if !args[0].eq_ignore_ascii_case(b"GET") {
        return reply::err(format!(
            "CONFIG {} is not supported: ringkv's settings are fixed at startup",
            reply::quote(&args[0]).to_uppercase()
        ))
        .into();
    }
    if args.len() < 2 {
        return reply::wrong_arity("config|get").into();
    }
    let config = &ctx.shared.config;
    let settings = [
        ("maxclients", config.max_clients.to_string()),
        ("proto-max-bulk-len", config.max_bulk_len.to_string()),
        ("databases", "1".to_string()),
        ("save", String::new()),
        ("appendonly", "no".to_string()),
        ("timeout", config.idle_timeout.as_secs().to_string()),
        (
            "client-output-buffer-limit",
            format!("normal {} 0 0", config.client_output_buffer_limit),
        ),
    ];
    let patterns = match args[1..]
        .iter()
        .map(|p| Pattern::new(p, true))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(patterns) => patterns,
        Err(e) => return reply::err(e).into(),
    };
    let mut out = Vec::new();
    for (name, value) in &settings {
        if patterns.iter().any(|p| p.matches(name.as_bytes())) {
            out.push((reply::bulk(*name), reply::bulk(value.clone())));
        }
    }
    Frame::Map(out).into()
}
