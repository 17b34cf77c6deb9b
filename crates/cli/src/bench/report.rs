//! The figures of one `ringkv bench` run, and their table.

use serde::Serialize;

/// All results of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The settings used.
    pub keys: usize,
    /// Nodes in the measured cluster.
    pub nodes: usize,
    /// Placement of the measured cluster.
    pub placement: String,
    /// Keys per copy batch.
    pub copy_batch: usize,
    /// Lock stripes per node.
    pub stripes: usize,
    /// Lookup time per ring size.
    pub lookup: Vec<LookupResult>,
    /// Balance per ring size.
    pub balance: Vec<BalanceResult>,
    /// Keys moved by one add and one remove, against the optimum.
    pub movement: MovementResult,
    /// Throughput against the baseline.
    pub throughput: ThroughputResult,
    /// Latency while a rebalance runs, against idle.
    pub latency: LatencyResult,
}

/// Median time of one `Ring::owner` (hash included).
#[derive(Debug, Clone, Serialize)]
pub struct LookupResult {
    /// The ring's placement.
    pub placement: String,
    /// Physical nodes.
    pub nodes: usize,
    /// Nanoseconds per lookup of a 16-byte key.
    pub ns: f64,
    /// A sorted `Vec<u64>` with binary search, same tokens, same run.
    pub binary_search_ns: f64,
}

/// Share of the ring per node (exact, from the token arcs).
#[derive(Debug, Clone, Serialize)]
pub struct BalanceResult {
    /// The ring's placement.
    pub placement: String,
    /// Physical nodes, all of weight 1.
    pub nodes: usize,
    /// Busiest node's share over the mean share.
    pub busiest_over_mean: f64,
    /// Standard deviation of the shares over the mean share.
    pub relative_stddev: f64,
}

/// Data movement of membership changes on the loaded cluster.
#[derive(Debug, Clone, Serialize)]
pub struct MovementResult {
    /// Keys moved by adding one node.
    pub add_keys_moved: u64,
    /// The optimum for an add: keys the new node owns afterwards.
    pub add_optimum: u64,
    /// An even share, `keys / (nodes + 1)`, for reference.
    pub add_even_share: u64,
    /// Wall time of the add.
    pub add_seconds: f64,
    /// Keys moved per second by the add.
    pub add_keys_per_second: f64,
    /// Keys moved by removing that node again.
    pub remove_keys_moved: u64,
    /// The optimum for a remove: the keys the node held.
    pub remove_optimum: u64,
    /// Wall time of the remove.
    pub remove_seconds: f64,
}

/// Get/put throughput with 2 threads, 90% gets.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    /// Client threads.
    pub threads: usize,
    /// ringkv operations per second.
    pub ringkv_ops_per_second: f64,
    /// `DashMap<Bytes, Bytes>` operations per second, same workload.
    pub baseline_ops_per_second: f64,
    /// ringkv over baseline.
    pub ratio: f64,
}

/// Client latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Operations measured.
    pub ops: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

/// Latency of one client while idle and while nodes join and leave.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Without membership changes.
    pub idle: Percentiles,
    /// While another thread adds and removes a node in a loop.
    pub rebalancing: Percentiles,
    /// Membership changes completed during the measurement.
    pub changes: usize,
}

/// Renders the report as a plain-text table.
pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ringkv bench: {} keys on {} nodes, {}, copy batch {}, {} stripes",
        r.keys, r.nodes, r.placement, r.copy_batch, r.stripes
    );
    let _ = writeln!(s, "\nlookup (16-byte keys, hash included)");
    let _ = writeln!(
        s,
        "  {:<36}  {:>6}  {:>10}  {:>14}",
        "placement", "nodes", "ringkv ns", "binsearch ns"
    );
    for l in &r.lookup {
        let _ = writeln!(
            s,
            "  {:<36}  {:>6}  {:>10.1}  {:>14.1}",
            l.placement, l.nodes, l.ns, l.binary_search_ns
        );
    }
    let _ = writeln!(s, "\nbalance (share of the ring, weight 1 each)");
    let _ = writeln!(
        s,
        "  {:<36}  {:>6}  {:>14}  {:>12}",
        "placement", "nodes", "busiest/mean", "stddev/mean"
    );
    for b in &r.balance {
        let _ = writeln!(
            s,
            "  {:<36}  {:>6}  {:>14.3}  {:>12.3}",
            b.placement, b.nodes, b.busiest_over_mean, b.relative_stddev
        );
    }
    let m = &r.movement;
    let _ = writeln!(s, "\nmovement");
    let _ = writeln!(
        s,
        "  add node:    {} keys moved, optimum {} (even share {}), {:.3} s, {:.2} M keys/s",
        m.add_keys_moved,
        m.add_optimum,
        m.add_even_share,
        m.add_seconds,
        m.add_keys_per_second / 1e6
    );
    let _ = writeln!(
        s,
        "  remove node: {} keys moved, optimum {}, {:.3} s",
        m.remove_keys_moved, m.remove_optimum, m.remove_seconds
    );
    let t = &r.throughput;
    let _ = writeln!(s, "\nthroughput ({} threads, 90% get / 10% put)", t.threads);
    let _ = writeln!(
        s,
        "  ringkv {:.2} M ops/s, DashMap baseline {:.2} M ops/s, ratio {:.2}",
        t.ringkv_ops_per_second / 1e6,
        t.baseline_ops_per_second / 1e6,
        t.ratio
    );
    let _ = writeln!(
        s,
        "\nlatency of one client, microseconds ({} membership changes during)",
        r.latency.changes
    );
    let _ = writeln!(
        s,
        "  {:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}",
        "", "ops", "p50", "p99", "p99.9", "max"
    );
    for (name, p) in [
        ("idle", &r.latency.idle),
        ("rebalancing", &r.latency.rebalancing),
    ] {
        let _ = writeln!(
            s,
            "  {:>12}  {:>8}  {:>8.2}  {:>8.2}  {:>8.2}  {:>9.1}",
            name, p.ops, p.p50_us, p.p99_us, p.p999_us, p.max_us
        );
    }
    s
}
