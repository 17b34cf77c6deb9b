//! `INFO [section...]`: Redis 7's sections and the fields clients and
//! Redis's own tests read, plus ringkv's `# Ring` section.
//!
//! Sections: `server`, `clients`, `memory`, `persistence`, `stats`,
//! `replication`, `cpu`, `cluster`, `keyspace` and `ring` by default (and
//! for `default`); `all` and `everything` add `commandstats`. Section names
//! are matched in any case; an unknown one adds nothing.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ringkv_cluster::Placement;

use super::{COMMANDS, Ctx, Outcome};
use crate::reply;
use crate::state::Shared;

/// The sections `INFO` and `INFO default` print, in Redis's order.
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
    "ring",
];

pub fn info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Outcome {
    let mut wanted: Vec<&str> = Vec::new();
    let mut add = |section: &'static str| {
        if !wanted.contains(&section) {
            wanted.push(section);
        }
    };
    if args.is_empty() {
        DEFAULT.iter().for_each(|s| add(s));
    }
    for arg in args {
        match &arg.to_ascii_lowercase()[..] {
            b"default" => DEFAULT.iter().for_each(|s| add(s)),
            b"all" | b"everything" => {
                DEFAULT.iter().for_each(|s| add(s));
                add("commandstats");
            }
            other => {
                if let Some(s) = DEFAULT
                    .iter()
                    .chain(&["commandstats"])
                    .find(|s| s.as_bytes() == other)
                {
                    add(s);
                }
            }
        }
    }
    let mut out = String::new();
    for section in wanted {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        write_section(ctx.shared, section, &mut out);
    }
    reply::verbatim(out).into()
}

/// Process CPU time, user and system, in seconds (`getrusage`).
fn cpu_times() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => (seconds(usage.user_time()), seconds(usage.system_time())),
        Err(_) => (0.0, 0.0),
    }
}

/// The process's resident memory in bytes (`/proc/self/statm`), 0 where
/// that is not available.
pub fn resident_bytes() -> u64 {
    const PAGE: u64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE)
}

/// Bytes as Redis's `*_human` fields show them (`1.50M`).
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes}B"),
        1024..1_048_576 => format!("{:.2}K", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.2}M", b / 1_048_576.0),
        _ => format!("{:.2}G", b / 1_073_741_824.0),
    }
}

fn write_section(shared: &Shared, section: &str, out: &mut String) {
    let stats = &shared.stats;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    // `write!` to a String cannot fail.
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "{key}:{value}\r\n");
    };
    match section {
        "server" => {
            let uptime = shared.started.elapsed().as_secs();
            line("# Server\r\nredis_version", &super::conn::REDIS_VERSION);
            line("ringkv_version", &env!("CARGO_PKG_VERSION"));
            line("redis_git_sha1", &"00000000");
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("arch_bits", &(usize::BITS));
            line("process_id", &std::process::id());
            line("tcp_port", &shared.local_addr.port());
            line("uptime_in_seconds", &uptime);
            line("uptime_in_days", &(uptime / 86_400));
            line("hz", &10);
            line("executable", &"");
            line("config_file", &"");
        }
        "clients" => {
            line("# Clients\r\nconnected_clients", &count(&stats.connected));
            line("cluster_connections", &0);
            line(
                "maxclients",
                &shared.live.max_clients.load(Ordering::Relaxed),
            );
            line("blocked_clients", &0);
            line("tracking_clients", &0);
        }
        "memory" => {
            // What the stores hold, counted by the cluster as entries
            // change (keys, values and a fixed overhead per entry), and
            // the writes the data directory's log holds until they reach
            // its engine. As Redis's AOF buffer, those count in
            // `used_memory` but not for `maxmemory`.
            let buffer = shared.cluster.write_buffer_bytes();
            let used = shared.cluster.stats().used_memory + buffer;
            line("# Memory\r\nused_memory", &used);
            line("used_memory_human", &human(used));
            line("used_memory_rss", &resident_bytes());
            line("mem_not_counted_for_evict", &buffer);
            line("mem_aof_buffer", &buffer);
            let max = shared.cluster.maxmemory();
            line("maxmemory", &max);
            line("maxmemory_human", &human(max));
            line(
                "maxmemory_policy",
                &shared.cluster.maxmemory_policy().name(),
            );
        }
        "persistence" => {
            line("# Persistence\r\nloading", &0);
            line("async_loading", &0);
            line("rdb_bgsave_in_progress", &0);
            let dir = shared.cluster.data_dir();
            line("aof_enabled", &u8::from(dir.is_some()));
            line("aof_rewrite_in_progress", &0);
            if let Some(dir) = dir {
                line("ringkv_data_dir", &dir);
                line("ringkv_fsync", &shared.cluster.config().fsync.name());
            }
        }
        "stats" => {
            line(
                "# Stats\r\ntotal_connections_received",
                &count(&stats.connections),
            );
            line("total_commands_processed", &count(&stats.commands));
            line("total_net_input_bytes", &count(&stats.net_input_bytes));
            line("rejected_connections", &count(&stats.rejected));
            line("expired_keys", &shared.cluster.stats().expired_keys);
            line("evicted_keys", &shared.cluster.stats().evicted_keys);
            line("keyspace_hits", &count(&stats.keyspace_hits));
            line("keyspace_misses", &count(&stats.keyspace_misses));
            line("total_error_replies", &count(&stats.error_replies));
            line(
                "total_error_replies_protocol",
                &count(&stats.protocol_errors),
            );
            line(
                "client_output_buffer_limit_disconnections",
                &count(&stats.output_limit_disconnections),
            );
            line("ringkv_set_runs", &count(&stats.set_runs));
            line("ringkv_write_runs", &count(&stats.write_runs));
            if let Some(sets) = &shared.sets {
                let (groups, grouped) = sets.written();
                line("ringkv_set_groups", &groups);
                line("ringkv_set_grouped", &grouped);
            }
        }
        "replication" => {
            line("# Replication\r\nrole", &"master");
            line("connected_slaves", &0);
            line("master_repl_offset", &0);
        }
        "cpu" => {
            let (user, sys) = cpu_times();
            line("# CPU\r\nused_cpu_sys", &format!("{sys:.6}"));
            line("used_cpu_user", &format!("{user:.6}"));
            line("used_cpu_sys_children", &"0.000000");
            line("used_cpu_user_children", &"0.000000");
        }
        // A node of a multi-process cluster answers CLUSTER SLOTS.
        "cluster" => line(
            "# Cluster\r\ncluster_enabled",
            &u8::from(shared.router.is_some()),
        ),
        "keyspace" => {
            let _ = write!(out, "# Keyspace\r\n");
            let keys = shared.cluster.stats().total_keys;
            // As Redis: an empty database is not listed.
            if keys > 0 {
                let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
            }
        }
        "commandstats" => {
            let _ = write!(out, "# Commandstats\r\n");
            for (spec, calls) in COMMANDS.iter().zip(shared.command_calls()) {
                let (calls, rejected, failed) = calls;
                if calls + rejected > 0 {
                    let _ = write!(
                        out,
                        "cmdstat_{}:calls={calls},usec=0,usec_per_call=0.00,\
                         rejected_calls={rejected},failed_calls={failed}\r\n",
                        spec.name
                    );
                }
            }
        }
        "ring" => ring_section(shared, out),
        _ => {}
    }
}

fn ring_section(shared: &Shared, out: &mut String) {
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "{key}:{value}\r\n");
    };
    if let Some(router) = &shared.router {
        out.push_str("# Ring\r\n");
        for (key, value) in router.ring_info() {
            let _ = write!(out, "{key}:{value}\r\n");
        }
        return;
    }
    let cluster = shared.cluster.stats();
    line("# Ring\r\nring_nodes", &cluster.nodes.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_redis() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(3 * 1_048_576), "3.00M");
    }

    #[test]
    fn cpu_time_is_measured() {
        // Burn a little CPU so that the user time cannot be zero.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (user, sys) = cpu_times();
        assert!(user > 0.0 && sys >= 0.0, "user {user} sys {sys}");
    }
}
