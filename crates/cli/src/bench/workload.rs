//! The keys, values and operations the measurements use, generated before
//! anything is timed.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::BenchOptions;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:012}"))
}

/// Values drawn by the workload: a pool, so that no measured operation
/// builds one.
const VALUES: usize = 1024;

/// Keys and values generated once, before anything is measured: every
/// measured operation, ringkv's or the baseline's, takes a key and a value
/// by cloning a `Bytes` (a reference count), so both sides do the same
/// work around the call being compared.
pub(super) struct Workload {
    pub(super) keys: Vec<Bytes>,
    pub(super) values: Vec<Bytes>,
}

impl Workload {
    pub(super) fn new(options: &BenchOptions) -> Self {
        let mut rng = SmallRng::seed_from_u64(options.seed ^ 0x7a1);
        Workload {
            keys: (0..options.keys as u64).map(key).collect(),
            values: (0..VALUES)
                .map(|_| Bytes::from(vec![b'v'; rng.random_range(16..100)]))
                .collect(),
        }
    }

    /// A random key of the loaded set.
    pub(super) fn key(&self, rng: &mut SmallRng) -> Bytes {
        self.keys[rng.random_range(0..self.keys.len())].clone()
    }

    /// A random value (16 to 99 bytes).
    pub(super) fn value(&self, rng: &mut SmallRng) -> Bytes {
        self.values[rng.random_range(0..self.values.len())].clone()
    }
}

/// One operation of the workload: a put with its value, or a get.
pub(super) enum WorkOp {
    Put(Bytes, Bytes),
    Get(Bytes),
}

impl WorkOp {
    /// 90% gets, 10% puts, over the loaded keys.
    pub(super) fn draw(work: &Workload, rng: &mut SmallRng) -> Self {
        let key = work.key(rng);
        if rng.random_range(0..10) == 0 {
            WorkOp::Put(key, work.value(rng))
        } else {
            WorkOp::Get(key)
        }
    }
}
