//! The engine against a `BTreeMap` model: random puts, deletes, batches,
//! gets, scans and take_range, with reopens in the middle. After each
//! operation the engine must answer what the model answers.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use proptest::prelude::*;
use ringkv_persist::{Durability, Entry, PersistentEngine, WriteBatch};

type Model = BTreeMap<(u64, Vec<u8>), Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u64, Vec<u8>, Vec<u8>, bool),
    Delete(u64, Vec<u8>),
    Batch(Vec<(u64, Vec<u8>, Option<Vec<u8>>)>),
    Get(u64, Vec<u8>),
    Scan(u64, u64, Option<u64>, usize),
    Take(u64, u64, usize),
    Reopen,
}

/// Few distinct tokens, so that keys share tokens, plus the ends of the
/// token space, where bounds overflow.
fn token() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..6u64,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff)], 0..3)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (token(), key(), value(), any::<bool>()).prop_map(|(t, k, v, s)| Op::Put(t, k, v, s)),
        2 => (token(), key()).prop_map(|(t, k)| Op::Delete(t, k)),
        2 => prop::collection::vec((token(), key(), prop::option::of(value())), 0..6)
            .prop_map(Op::Batch),
        2 => (token(), key()).prop_map(|(t, k)| Op::Get(t, k)),
        3 => (token(), token(), prop::option::of(token()), 0..5usize)
            .prop_map(|(a, b, after, l)| Op::Scan(a.min(b), a.max(b), after, l)),
        2 => (token(), token(), 0..5usize).prop_map(|(a, b, l)| Op::Take(a.min(b), a.max(b), l)),
        1 => Just(Op::Reopen),
    ]
}

/// What `scan` must return, computed from the model with the contract's
/// words: tokens in the interval and after `after`, up to `limit` entries
/// plus the rest of the last token.
fn model_scan(
    model: &Model,
    tokens: RangeInclusive<u64>,
    after: Option<u64>,
    limit: usize,
) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for ((token, key), value) in model {
        if !tokens.contains(token) || after.is_some_and(|a| *token <= a) {
            continue;
        }
        if out.len() >= limit && out.last().map(|e| e.token) != Some(*token) {
            break;
        }
        out.push(Entry {
            token: *token,
            key: key.clone().into(),
            value: value.clone().into(),
        });
    }
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine = PersistentEngine::open(dir.path()).expect("fresh open");
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Put(t, k, v, sync) => {
                let d = if sync {
                    Durability::Fsync
                } else {
                    Durability::NoSync
                };
                engine.put(t, &k, v.as_slice(), d).expect("put");
                model.insert((t, k), v);
            }
            Op::Delete(t, k) => {
                engine.delete(t, &k, Durability::NoSync).expect("delete");
                model.remove(&(t, k));
            }
            Op::Batch(writes) => {
                let mut batch = WriteBatch::new();
                for (t, k, v) in writes {
                    match v {
                        Some(v) => {
                            batch.put(t, k.clone(), v.clone());
                            model.insert((t, k), v);
                        }
                        None => {
                            batch.delete(t, k.clone());
                            model.remove(&(t, k));
                        }
                    }
                }
                engine.write(batch, Durability::NoSync).expect("batch");
            }
            Op::Get(t, k) => {
                let got = engine.get(t, &k).expect("get");
                prop_assert_eq!(got.as_deref(), model.get(&(t, k)).map(Vec::as_slice));
            }
            Op::Scan(lo, hi, after, limit) => {
                let mut out = vec![];
                engine.scan(lo..=hi, after, limit, &mut out).expect("scan");
                prop_assert_eq!(out, model_scan(&model, lo..=hi, after, limit));
            }
            Op::Take(lo, hi, limit) => {
                let expected = model_scan(&model, lo..=hi, None, limit);
                let mut out = vec![];
                let n = engine
                    .take_range(lo..=hi, limit, &mut out, Durability::NoSync)
                    .expect("take_range");
                prop_assert_eq!(n, expected.len());
                prop_assert_eq!(&out, &expected);
                for e in expected {
                    model.remove(&(e.token, e.key.to_vec()));
                }
            }
            Op::Reopen => {
                drop(engine);
                engine = PersistentEngine::open(dir.path()).expect("reopen");
            }
        }
    }
    // Everything, in order, after a last reopen.
    drop(engine);
    let engine = PersistentEngine::open(dir.path()).expect("final reopen");
    let mut all = vec![];
    engine
        .scan(0..=u64::MAX, None, usize::MAX, &mut all)
        .expect("full scan");
    prop_assert_eq!(all, model_scan(&model, 0..=u64::MAX, None, usize::MAX));
    Ok(())
}

proptest! {
    // Each case opens a database a few times; 32 cases keep this in
    // seconds. Failures print the shrunk operations and are kept under
    // proptest-regressions/ for replay.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn engine_matches_a_btreemap(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
