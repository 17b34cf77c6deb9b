//! Tests of the measurement helpers (the figures themselves are checked end
//! to end by the CLI tests).

use std::sync::Mutex;

use super::*;

fn small() -> BenchOptions {
    BenchOptions {
        keys: 1000,
        ops: 5000,
        ..BenchOptions::default()
    }
}

/// What an operation is, as comparable data.
fn describe(op: &WorkOp) -> (bool, Bytes, Bytes) {
    match op {
        WorkOp::Put(k, v) => (true, k.clone(), v.clone()),
        WorkOp::Get(k) => (false, k.clone(), Bytes::new()),
    }
}

#[test]
fn both_contenders_get_the_same_operations() {
    let options = small();
    let work = Workload::new(&options);
    let record = |seen: &Mutex<Vec<_>>| {
        let mut seen = seen.lock().expect("no panic while held");
        seen.sort();
        std::mem::take(&mut *seen)
    };
    let (a, b) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
    drive(&options, &work, |op| {
        a.lock().expect("no panic while held").push(describe(&op))
    });
    drive(&options, &work, |op| {
        b.lock().expect("no panic while held").push(describe(&op))
    });
    let (a, b) = (record(&a), record(&b));
    assert_eq!(a.len(), THREADS * options.ops);
    assert_eq!(a, b);
    // About 10% puts, every key one of the loaded keys.
    let puts = a.iter().filter(|(put, _, _)| *put).count();
    assert!((600..1400).contains(&puts), "{puts} puts of 10000");
    assert!(a.iter().all(|(_, k, _)| work.keys.contains(k)));
}

#[test]
fn operations_share_the_pregenerated_bytes() {
    // A key or value handed to an operation is the pool's own buffer (a
    // reference-count clone), not a copy built per operation.
    let options = small();
    let work = Workload::new(&options);
    let mut rng = SmallRng::seed_from_u64(1);
    for _ in 0..1000 {
        let (k, v) = match WorkOp::draw(&work, &mut rng) {
            WorkOp::Put(k, v) => (k, Some(v)),
            WorkOp::Get(k) => (k, None),
        };
        assert!(work.keys.iter().any(|p| p.as_ptr() == k.as_ptr()));
        if let Some(v) = v {
            assert!((16..100).contains(&v.len()));
            assert!(work.values.iter().any(|p| p.as_ptr() == v.as_ptr()));
        }
    }
}

#[test]
fn percentiles_follow_hdrhistogram() {
    // 1..=1000 microseconds, once each.
    let mut h = histogram();
    for us in 1..=1000u64 {
        h.record(us * 1000).expect("in range");
    }
    let p = percentiles(&h);
    assert_eq!(p.ops, 1000);
    // Within the 3 significant digits the histogram keeps.
    let close = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
    assert!(close(p.p50_us, 500.0), "{p:?}");
    assert!(close(p.p99_us, 990.0), "{p:?}");
    assert!(close(p.p999_us, 999.0), "{p:?}");
    assert!(close(p.max_us, 1000.0), "{p:?}");
}
