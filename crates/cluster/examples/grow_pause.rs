//! How long a `MemStore` put waits while a table grows: `MemStore` keeps
//! its entries in hash tables, which grow by rehashing at once, under the
//! stripe's write lock in a cluster (`docs/ARCHITECTURE.md`, `store.rs`).
//!
//! ```sh
//! cargo run --release -p ringkv-cluster --example grow_pause -- 4000000 untagged
//! cargo run --release -p ringkv-cluster --example grow_pause -- 4000000 tag
//! ```
//!
//! Puts N keys of 16 bytes with 100-byte values into one store, each under
//! its own token (`untagged`) or all under one token (`tag`, one hash
//! tag), and prints every put slower than a millisecond: how many keys the
//! store held, and how long the put took. One case a process: freeing a
//! first store of millions of entries would stall the second's first
//! allocations in the system allocator.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_cluster::{Entry, MemStore, Store};

fn run(what: &str, n: u64, token_of: impl Fn(u64) -> u64) {
    let mut store = MemStore::new();
    let value = Bytes::from(vec![b'v'; 100]);
    let mut total = Duration::ZERO;
    for i in 0..n {
        let key = Bytes::from(format!("key:{i:012}"));
        let began = Instant::now();
        store
            .put(token_of(i), key, Entry::string(value.clone()))
            .expect("a memory store does not fail");
        let took = began.elapsed();
        total += took;
        if took > Duration::from_millis(1) {
            println!("{what}: put at {i} keys took {took:?}");
        }
    }
    println!("{what}: {n} puts, mean {:?}", total / n as u32);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|a| a.parse().expect("N, a number of keys"))
        .unwrap_or(1_000_000);
    match args.next().as_deref() {
        Some("untagged") | None => run("untagged", n, |i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        Some("tag") => run("one tag", n, |_| 7),
        Some(other) => panic!("`{other}`: the case is `untagged` or `tag`"),
    }
}
