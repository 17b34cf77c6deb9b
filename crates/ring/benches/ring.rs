//! Criterion benchmarks of `ringkv-ring`: lookups against the `hashring`
//! crate and a plain sorted-`Vec` baseline, preference lists, membership
//! changes and diffs, for random vnodes and (`ringkv_balanced`) balanced
//! partitions.
//!
//! Run with `cargo bench -p ringkv-ring --bench ring` (only the key hash:
//! `cargo bench -p ringkv-ring --bench ring -- key_token`).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hashring::HashRing;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_ring::{BalancedConfig, Ring, hash_tag, key_token, vnode_token};
use xxhash_rust::xxh3::xxh3_64;

const VNODES: u32 = 256;
const SIZES: [usize; 3] = [10, 100, 1000];
/// Members of the balanced ring a join is timed on in `add_node_many`.
const MANY: usize = 8000;
/// Nodes of weight [`HEAVY_WEIGHT`] (a million vnodes each) in
/// `add_node_many`.
const HEAVY: usize = 8;
const HEAVY_WEIGHT: u32 = 4096;
/// Keys are cycled through so hashing is part of every lookup and the
/// working set is realistic rather than one hot key.
const KEYS: usize = 4096;

fn node_id(i: usize) -> String {
    format!("node-{i}")
}

fn ringkv(n: usize) -> Ring {
    (0..n).fold(Ring::default(), |r, i| r.with_node(node_id(i), 1).unwrap())
}

/// `n` weight-1 nodes on the default 65,536 balanced partitions.
fn balanced(n: usize) -> Ring {
    (0..n).fold(
        Ring::balanced(BalancedConfig::default()).unwrap(),
        |r, i| r.with_node(node_id(i), 1).unwrap(),
    )
}

fn keys() -> Vec<[u8; 16]> {
    let mut rng = StdRng::seed_from_u64(42);
    (0..KEYS).map(|_| rng.random()).collect()
}

/// A vnode of the `hashring` crate: it hashes `(node, index)` with SipHash.
#[derive(Debug, Clone, Copy, Hash, PartialEq)]
struct VNode {
    node: u32,
    index: u32,
}

fn hashring(n: usize) -> HashRing<VNode> {
    let mut ring = HashRing::new();
    let vnodes = (0..n as u32)
        .flat_map(|node| (0..VNODES).map(move |index| VNode { node, index }))
        .collect();
    ring.batch_add(vnodes); // one sort instead of one per vnode
    ring
}

/// The simplest fast ring: sorted tokens, a parallel owner array, binary
/// search. Same tokens as ringkv.
struct SortedVec {
    tokens: Vec<u64>,
    owners: Vec<u32>,
}

impl SortedVec {
    fn new(n: usize) -> Self {
        let mut pairs: Vec<(u64, u32)> = (0..n)
            .flat_map(|i| (0..VNODES).map(move |k| (vnode_token(&node_id(i), k), i as u32)))
            .collect();
        pairs.sort_unstable();
        SortedVec {
            tokens: pairs.iter().map(|p| p.0).collect(),
            owners: pairs.iter().map(|p| p.1).collect(),
        }
    }

    #[inline]
    fn owner(&self, key: &[u8]) -> u32 {
        let t = key_token(key);
        let i = self.tokens.partition_point(|&x| x < t);
        self.owners[if i == self.tokens.len() { 0 } else { i }]
    }
}

/// Times `find` over the pre-generated keys, cycling so that the same key is
/// not looked up twice in a row. One loop for every contender keeps the
/// comparison identical apart from the lookup itself.
fn bench_lookup<R>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    keys: &[[u8; 16]],
    find: impl Fn(&[u8; 16]) -> R,
) {
    let mut i = 0usize;
    g.bench_function(id, |b| {
        b.iter(|| {
            i = (i + 1) % KEYS; // a constant power of two: a mask, not a division
            black_box(find(black_box(&keys[i])))
        })
    });
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("lookup");
    for n in SIZES {
        let ring = ringkv(n);
        bench_lookup(&mut g, BenchmarkId::new("ringkv", n), &keys, |k| {
            ring.owner(k)
        });
        drop(ring);
        let ring = balanced(n);
        bench_lookup(&mut g, BenchmarkId::new("ringkv_balanced", n), &keys, |k| {
            ring.owner(k)
        });
        drop(ring);
        let ring = hashring(n);
        bench_lookup(&mut g, BenchmarkId::new("hashring", n), &keys, |k| {
            ring.get(k)
        });
        drop(ring);
        let ring = SortedVec::new(n);
        bench_lookup(&mut g, BenchmarkId::new("sorted_vec", n), &keys, |k| {
            ring.owner(k)
        });
    }
    g.finish();
}

/// `key_token` against the hash it was before hash tags (`xxh3_64` over
/// the whole key) and before slots (`xxh3_64` of the tag), on the 16-byte
/// keys of the lookups (almost none hold a `{`), and on keys with a tag.
fn key_hash(c: &mut Criterion) {
    let keys = keys();
    // Random bytes hold a `{` now and then; the tagless case must not.
    let tagless: Vec<[u8; 16]> = keys
        .iter()
        .map(|k| k.map(|b| if b == b'{' { b'x' } else { b }))
        .collect();
    let tagged: Vec<[u8; 16]> = keys
        .iter()
        .map(|k| {
            let mut k = k.map(|b| if b == b'{' || b == b'}' { b'x' } else { b });
            k[0] = b'{';
            k[9] = b'}';
            k
        })
        .collect();
    let mut g = c.benchmark_group("key_token");
    bench_lookup(
        &mut g,
        BenchmarkId::new("xxh3_whole_key", "16B"),
        &tagless,
        |k| xxh3_64(k),
    );
    bench_lookup(
        &mut g,
        BenchmarkId::new("key_token", "16B"),
        &tagless,
        |k| key_token(k),
    );
    bench_lookup(
        &mut g,
        BenchmarkId::new("key_token_tagged", "16B"),
        &tagged,
        |k| key_token(k),
    );
    bench_lookup(
        &mut g,
        BenchmarkId::new("xxh3_of_tag_tagged", "16B"),
        &tagged,
        |k| xxh3_64(hash_tag(k)),
    );
    g.finish();
}

fn preference_list(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("preference_list_3");
    for n in SIZES {
        let ring = ringkv(n);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("ringkv", n), |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                for id in ring.preference_list(black_box(&keys[i]), 3) {
                    black_box(id);
                }
            })
        });
        let ring = balanced(n);
        g.bench_function(BenchmarkId::new("ringkv_balanced", n), |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                for id in ring.preference_list(black_box(&keys[i]), 3) {
                    black_box(id);
                }
            })
        });
    }
    g.finish();
}

fn membership(c: &mut Criterion) {
    let mut g = c.benchmark_group("add_node");
    for n in SIZES {
        let ring = ringkv(n);
        // The new snapshot is dropped inside the timing: freeing it is part
        // of the cost of a change.
        g.bench_function(BenchmarkId::new("ringkv", n), |b| {
            b.iter(|| black_box(ring.with_node(black_box("newcomer"), 1).unwrap()))
        });
        let ring = balanced(n);
        g.bench_function(BenchmarkId::new("ringkv_balanced", n), |b| {
            b.iter(|| black_box(ring.with_node(black_box("newcomer"), 1).unwrap()))
        });
    }
    g.finish();

    // Many members: a join must cost what the ring change costs (O(Q + m)
    // for balanced partitions), not a scan of every member per partition.
    let mut g = c.benchmark_group("add_node_many");
    g.sample_size(10);
    let ring = balanced(MANY);
    g.bench_function(BenchmarkId::new("ringkv_balanced", MANY), |b| {
        b.iter(|| black_box(ring.with_node(black_box("newcomer"), 1).unwrap()))
    });
    // Heavy nodes: a million tokens each. Placing them is a merge of sorted
    // runs, not a million binary searches over the whole ring.
    let heavy = (0..HEAVY).fold(Ring::default(), |r, i| {
        r.with_node(node_id(i), HEAVY_WEIGHT).unwrap()
    });
    g.bench_function(
        BenchmarkId::new("ringkv_weight_4096", format!("{HEAVY}x4096")),
        |b| {
            b.iter(|| {
                black_box(
                    heavy
                        .with_node(black_box("newcomer"), HEAVY_WEIGHT)
                        .unwrap(),
                )
            })
        },
    );
    drop(heavy);
    g.finish();

    let mut g = c.benchmark_group("remove_node");
    for n in SIZES {
        let ring = ringkv(n);
        let victim = node_id(n / 2);
        g.bench_function(BenchmarkId::new("ringkv", n), |b| {
            b.iter(|| black_box(ring.without_node(black_box(&victim)).unwrap()))
        });
        let ring = balanced(n);
        g.bench_function(BenchmarkId::new("ringkv_balanced", n), |b| {
            b.iter(|| black_box(ring.without_node(black_box(&victim)).unwrap()))
        });
    }
    g.finish();
}

fn diff(c: &mut Criterion) {
    let mut g = c.benchmark_group("diff_one_added");
    for n in [100, 1000] {
        let old = ringkv(n);
        let new = old.with_node("newcomer", 1).unwrap();
        g.bench_function(BenchmarkId::new("diff", n), |b| {
            b.iter(|| black_box(old.diff(black_box(&new))))
        });
        g.bench_function(BenchmarkId::new("diff_replicas_3", n), |b| {
            b.iter(|| black_box(old.diff_replicas(black_box(&new), 3)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = key_hash, lookup, preference_list, membership, diff
}
criterion_main!(benches);
