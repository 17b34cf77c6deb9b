//! Hand-written histories with known verdicts.

use ringkv_lincheck::{
    CheckConfig, CheckError, Clock, Event, History, Op, Recorder, Violation, check, check_with,
};

type E = Event<&'static str, u64>;

fn put(invoke: u64, complete: u64, v: u64) -> E {
    Event::put("k", v, invoke, complete)
}
fn get(invoke: u64, complete: u64, r: Option<u64>) -> E {
    Event::get("k", invoke, complete, r)
}
fn del(invoke: u64, complete: u64) -> E {
    Event::delete("k", invoke, complete)
}
fn del_ret(invoke: u64, complete: u64, removed: bool) -> E {
    Event::delete_returning("k", invoke, complete, removed)
}
fn upd(invoke: u64, complete: u64, observed: Option<u64>, written: Option<u64>) -> E {
    Event::update("k", invoke, complete, observed, written)
}

#[track_caller]
fn assert_ok(events: Vec<E>) {
    if let Err(e) = check(events) {
        panic!("expected linearizable, got:\n{e}");
    }
}

#[track_caller]
fn assert_violation(events: Vec<E>) -> Box<Violation<&'static str, u64>> {
    match check(events) {
        Err(CheckError::Violation(v)) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    let report = check(Vec::<E>::new()).unwrap();
    assert_eq!((report.keys, report.operations), (0, 0));
}

#[test]
fn sequential_history_ok() {
    assert_ok(vec![
        get(0, 1, None),
        put(2, 3, 1),
        get(4, 5, Some(1)),
        put(6, 7, 2),
        get(8, 9, Some(2)),
        get(10, 11, Some(2)),
        del(12, 13),
        get(14, 15, None),
        put(16, 17, 1),
        get(18, 19, Some(1)),
    ]);
}

#[test]
fn sequential_stale_read_is_rejected_with_useful_report() {
    let v = assert_violation(vec![
        put(0, 1, 1).with_client(7),
        put(2, 3, 2).with_client(7),
        get(4, 5, Some(1)).with_client(9),
    ]);
    assert_eq!(v.key, "k");
    assert_eq!(v.state, Some(2));
    assert_eq!(v.prefix_len, 2);
    assert_eq!(v.context.len(), 2);
    assert_eq!(v.stuck, vec![get(4, 5, Some(1)).with_client(9)]);
    let text = v.to_string();
    assert!(text.contains("\"k\""), "{text}");
    assert!(
        text.contains("client 9: get(\"k\") -> Some(1) @ [4, 5]"),
        "{text}"
    );
    assert!(text.contains("client 7: put(\"k\", 2) @ [2, 3]"), "{text}");
    assert!(text.contains("register holds Some(2)"), "{text}");
}

#[test]
fn concurrent_put_and_get_may_see_either_value() {
    let base = || vec![put(0, 1, 1), put(2, 10, 2)];
    for seen in [Some(1), Some(2)] {
        let mut h = base();
        h.push(get(3, 5, seen));
        assert_ok(h);
    }
    // ...but not a value overwritten before the get started.
    let mut h = base();
    h.push(get(3, 5, None));
    assert_violation(h);
}

#[test]
fn shared_endpoint_counts_as_concurrent() {
    assert_ok(vec![put(0, 5, 1), get(5, 6, None)]);
    assert_violation(vec![put(0, 4, 1), get(5, 6, None)]);
}

#[test]
fn read_of_never_written_value_is_rejected() {
    let v = assert_violation(vec![put(0, 1, 1), get(2, 3, Some(42))]);
    assert!(v.reason.contains("never written"), "{}", v.reason);
    assert_eq!(v.stuck, vec![get(2, 3, Some(42))]);
}

#[test]
fn read_from_the_future_is_rejected() {
    // The only write of 1 is invoked after the read completed.
    let v = assert_violation(vec![get(0, 1, Some(1)), put(2, 3, 1)]);
    assert!(
        v.reason.contains("after the read completed"),
        "{}",
        v.reason
    );
}

#[test]
fn new_then_old_read_is_rejected() {
    // Both reads are concurrent with put(2), but they do not overlap each
    // other: once a read returned 2, a later read may not return 1.
    let v = assert_violation(vec![
        put(0, 1, 1),
        put(2, 20, 2),
        get(3, 4, Some(2)),
        get(5, 6, Some(1)),
    ]);
    assert_eq!(v.state, Some(2));
    assert!(v.stuck.contains(&get(5, 6, Some(1))), "{v}");
    // Old-then-new is fine, and so are two *overlapping* reads in either order.
    assert_ok(vec![
        put(0, 1, 1),
        put(2, 20, 2),
        get(3, 4, Some(1)),
        get(5, 6, Some(2)),
    ]);
    assert_ok(vec![
        put(0, 1, 1),
        put(2, 20, 2),
        get(3, 6, Some(2)),
        get(4, 7, Some(1)),
    ]);
}

#[test]
fn lost_write_is_rejected() {
    assert_violation(vec![put(0, 1, 1), get(2, 3, None)]);
    // Lost among other traffic: the second write is acknowledged but a later,
    // non-overlapping read still sees the first.
    assert_violation(vec![
        put(0, 1, 1),
        get(2, 3, Some(1)),
        put(4, 6, 2),
        get(5, 7, Some(1)),
        get(8, 9, Some(1)),
    ]);
}

#[test]
fn deleted_key_coming_back_is_rejected() {
    assert_violation(vec![
        put(0, 1, 1),
        del(2, 3),
        get(4, 5, None),
        get(6, 7, Some(1)),
    ]);
    assert_violation(vec![put(0, 1, 1), del(2, 3), get(4, 5, Some(1))]);
    // A delete concurrent with the read may or may not be visible.
    assert_ok(vec![
        put(0, 1, 1),
        del(2, 6),
        get(4, 5, Some(1)),
        get(7, 8, None),
    ]);
}

#[test]
fn unknown_outcome_put_may_take_effect_late_or_never() {
    // Shows up, even long after the call failed.
    assert_ok(vec![
        Event::put_unknown("k", 1, 0),
        get(1, 2, None),
        get(10, 11, Some(1)),
        get(12, 13, Some(1)),
    ]);
    // Never shows up.
    let report = check(vec![Event::put_unknown("k", 1, 0), get(5, 6, None)]).unwrap();
    assert_eq!(report.ignored_operations, 1);
    // Shows up and then vanishes without any write: violation.
    assert_violation(vec![
        Event::put_unknown("k", 1, 0),
        get(1, 2, Some(1)),
        get(3, 4, None),
    ]);
    // Cannot take effect before it was invoked.
    assert_violation(vec![get(0, 1, Some(1)), Event::put_unknown("k", 1, 2)]);
    // Can take effect at most once: 1, 2, 1 needs a second write of 1.
    assert_violation(vec![
        Event::put_unknown("k", 1, 0),
        get(1, 2, Some(1)),
        put(3, 4, 2),
        get(5, 6, Some(1)),
    ]);
}

#[test]
fn unknown_outcome_delete_may_take_effect_late_or_never() {
    assert_ok(vec![
        put(0, 1, 1),
        Event::delete_unknown("k", 2),
        get(3, 4, Some(1)),
        get(5, 6, None),
    ]);
    assert_ok(vec![
        put(0, 1, 1),
        Event::delete_unknown("k", 2),
        get(5, 6, Some(1)),
    ]);
    assert_violation(vec![
        put(0, 1, 1),
        get(2, 3, None),
        Event::delete_unknown("k", 4),
    ]);
}

#[test]
fn unknown_outcome_gets_are_ignored() {
    let report = check(vec![
        put(0, 1, 1),
        Event::new("k", Op::Get(Some(99)), 2, None),
    ])
    .unwrap();
    assert_eq!(report.ignored_operations, 1);
}

#[test]
fn keys_are_independent() {
    // Each key is fine on its own; mixing them up would not be.
    let h = vec![
        Event::put("a", 1, 0, 1),
        Event::get("b", 2, 3, None),
        Event::put("b", 2, 4, 5),
        Event::get("a", 6, 7, Some(1)),
        Event::get("b", 8, 9, Some(2)),
    ];
    let report = check(h.clone()).unwrap();
    assert_eq!((report.keys, report.operations), (2, 5));

    // A violation on "b" is attributed to "b", while "a" is fine.
    let mut bad = h;
    bad.push(Event::get("b", 10, 11, Some(1)));
    match check(bad) {
        Err(CheckError::Violation(v)) => assert_eq!(v.key, "b"),
        other => panic!("expected violation on b, got {other:?}"),
    }
}

#[test]
fn malformed_event_is_reported() {
    match check(vec![put(5, 3, 1).with_client(4)]) {
        Err(CheckError::Malformed(m)) => {
            assert_eq!((m.key, m.client, m.invoke, m.complete), ("k", 4, 5, 3));
        }
        other => panic!("expected malformed, got {other:?}"),
    }
}

/// Many concurrent puts followed by reads that see 1, 2, 1: not
/// linearizable, but proving it needs to explore many orders of the puts.
fn hard_violation() -> Vec<E> {
    let mut h: Vec<E> = (1..=12).map(|v| put(0, 100, v).with_client(v)).collect();
    h.push(get(101, 102, Some(1)));
    h.push(get(103, 104, Some(2)));
    h.push(get(105, 106, Some(1)));
    h
}

#[test]
fn search_budget_gives_inconclusive() {
    let config = CheckConfig {
        max_states_per_key: 50,
        ..CheckConfig::default()
    };
    let err = check_with(hard_violation(), &config).unwrap_err();
    assert!(err.is_inconclusive(), "{err}");
    assert!(err.to_string().contains("inconclusive"), "{err}");
    // With the default budget the search completes and finds the violation.
    let err = check(hard_violation()).unwrap_err();
    let v = err.violation().expect("violation");
    assert!(v.states_explored > 50, "{v}");
    // And the linearizable variant (1, 1, 1) passes.
    let mut ok = hard_violation();
    ok.truncate(12);
    ok.extend([
        get(101, 102, Some(1)),
        get(103, 104, Some(1)),
        get(105, 106, Some(1)),
    ]);
    assert_ok(ok);
}

#[test]
fn violation_context_is_bounded() {
    let mut h = Vec::new();
    for i in 0..100u64 {
        h.push(put(4 * i, 4 * i + 1, i + 1));
        h.push(get(4 * i + 2, 4 * i + 3, Some(i + 1)));
    }
    h.push(get(1000, 1001, Some(50)));
    let v = assert_violation(h);
    assert_eq!(v.prefix_len, 200);
    assert_eq!(v.context.len(), CheckConfig::default().context_ops);
    assert_eq!(v.context.last(), Some(&get(398, 399, Some(100))));
    assert!(
        v.to_string().contains("190 earlier operations omitted"),
        "{v}"
    );
}

#[test]
fn recorder_records_outcomes() {
    let clock = Clock::new();
    let mut rec: Recorder<&str, u64> = Recorder::new(clock.clone(), 3);
    rec.put("k", 1, || Ok::<_, ()>(())).unwrap();
    rec.put("k", 2, || Err::<(), _>("timeout")).unwrap_err();
    rec.get("k", || Err::<Option<u64>, _>("unavailable"))
        .unwrap_err();
    rec.delete("k", || Err::<bool, _>("timeout")).unwrap_err();
    assert_eq!(rec.get("k", || Ok::<_, ()>(Some(2))).unwrap(), Some(2));
    let t0 = clock.now();
    let t1 = clock.now();
    rec.push(Event::get("k", t0, t1, Some(2)));

    let events = rec.into_events();
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events.iter().all(|e| e.client == 3));
    assert_eq!(events[0].complete, Some(1));
    assert_eq!(events[1].complete, None);
    assert_eq!(
        (events[2].op.clone(), events[2].complete),
        (Op::Delete(None), None)
    );
    // Timestamps are strictly increasing across operations.
    assert!(events.windows(2).all(|w| w[0].invoke < w[1].invoke));
    check(events.clone()).unwrap();

    // The unknown put of 2 never being read back is also fine.
    let mut no_two = events;
    no_two.truncate(3);
    check(no_two).unwrap();
}

#[test]
fn history_collects_from_threads() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    let store: Mutex<HashMap<u32, u64>> = Mutex::new(HashMap::new());
    let history: History<u32, u64> = History::new();
    std::thread::scope(|s| {
        for client in 0..6u64 {
            let (store, history) = (&store, &history);
            s.spawn(move || {
                let mut rec = history.recorder(client);
                for i in 0..300u64 {
                    let key = (i % 3) as u32;
                    match i % 4 {
                        0 | 1 => {
                            rec.get(key, || {
                                Ok::<_, ()>(store.lock().unwrap().get(&key).copied())
                            })
                            .unwrap();
                        }
                        2 => {
                            let v = client * 1_000_000 + i;
                            rec.put(key, v, || Ok::<_, ()>(store.lock().unwrap().insert(key, v)))
                                .unwrap();
                        }
                        _ => {
                            rec.delete(key, || {
                                Ok::<_, ()>(store.lock().unwrap().remove(&key).is_some())
                            })
                            .unwrap();
                        }
                    }
                }
            });
        }
    });
    assert_eq!(history.len(), 1800);
    let report = history.check().unwrap();
    assert_eq!((report.keys, report.operations), (3, 1800));
}

#[test]
fn history_detects_a_broken_store() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    // A broken "store": writes go to the shared map, but each client reads
    // from a private cache that only its own writes refresh.
    struct Broken {
        shared: Mutex<HashMap<&'static str, u64>>,
        caches: Mutex<HashMap<u64, Option<u64>>>,
    }
    impl Broken {
        fn put(&self, client: u64, key: &'static str, v: u64) -> Result<(), ()> {
            self.shared.lock().unwrap().insert(key, v);
            self.caches.lock().unwrap().insert(client, Some(v));
            Ok(())
        }
        fn get(&self, client: u64) -> Result<Option<u64>, ()> {
            Ok(self.caches.lock().unwrap().get(&client).copied().flatten())
        }
    }
    let store = Broken {
        shared: Mutex::new(HashMap::new()),
        caches: Mutex::new(HashMap::new()),
    };

    let history: History<&str, u64> = History::new();
    let mut writer = history.recorder(1);
    let mut reader = history.recorder(2);
    reader.get("k", || store.get(2)).unwrap();
    writer.put("k", 7, || store.put(1, "k", 7)).unwrap();
    reader.get("k", || store.get(2)).unwrap(); // stale: None
    drop((writer, reader)); // flush into `history`

    let err = history.check().unwrap_err();
    let v = err.violation().expect("stale read must be a violation");
    assert_eq!(v.key, "k");
    assert!(
        v.stuck
            .iter()
            .any(|e| e.client == 2 && e.op == Op::Get(None)),
        "{v}"
    );
}

#[test]
fn delete_reports_must_match_the_register() {
    assert_ok(vec![
        del_ret(0, 1, false),
        put(2, 3, 1),
        del_ret(4, 5, true),
        del_ret(6, 7, false),
        get(8, 9, None),
    ]);
    // Nothing to remove: the key was never written.
    let v = assert_violation(vec![del_ret(0, 1, true)]);
    assert!(v.reason.contains("no value was written"), "{v}");
    // Removed nothing although the key held a value.
    let v = assert_violation(vec![put(0, 1, 1), del_ret(2, 3, false)]);
    assert_eq!(v.state, Some(1));
    assert!(v.to_string().contains("register holds Some(1)"), "{v}");
    // One value cannot be removed twice, one delete after the other...
    let v = assert_violation(vec![put(0, 1, 1), del_ret(2, 3, true), del_ret(4, 5, true)]);
    assert!(
        v.to_string()
            .contains("delete(\"k\") -> true @ [4, 5]   <- register holds None"),
        "{v}"
    );
    // ...or concurrently.
    assert_violation(vec![put(0, 1, 1), del_ret(2, 5, true), del_ret(3, 6, true)]);
    assert_ok(vec![
        put(0, 1, 1),
        del_ret(2, 5, true),
        del_ret(3, 6, false),
    ]);
    // A put concurrent with the delete may come before or after it.
    for removed in [true, false] {
        assert_ok(vec![put(0, 10, 1), del_ret(1, 2, removed)]);
    }
}

#[test]
fn delete_reports_with_unknown_outcome() {
    // A delete whose call failed reported nothing to its caller: a recorded
    // report is ignored.
    assert_ok(vec![Event::new("k", Op::Delete(Some(true)), 0, None)]);
    // An unknown-outcome put may be what the delete removed...
    assert_ok(vec![Event::put_unknown("k", 1, 0), del_ret(1, 2, true)]);
    // ...but not if it was invoked after the delete completed.
    assert_violation(vec![del_ret(0, 1, true), Event::put_unknown("k", 1, 2)]);
    // An unknown-outcome delete may have removed the value first.
    assert_ok(vec![
        put(0, 1, 1),
        Event::delete_unknown("k", 2),
        del_ret(3, 4, false),
    ]);
}

#[test]
fn updates_follow_the_register() {
    assert_ok(vec![
        upd(0, 1, None, Some(1)),
        get(2, 3, Some(1)),
        upd(4, 5, Some(1), Some(2)),
        upd(6, 7, Some(2), Some(2)), // left the key alone
        get(8, 9, Some(2)),
        upd(10, 11, Some(2), None), // deleted it
        get(12, 13, None),
        del_ret(14, 15, false),
    ]);
    // Two concurrent updates chain: one sees the other's write.
    assert_ok(vec![
        put(0, 1, 1),
        upd(2, 5, Some(1), Some(2)),
        upd(3, 6, Some(2), Some(3)),
        get(7, 8, Some(3)),
    ]);
    assert_violation(vec![
        put(0, 1, 1),
        upd(2, 5, Some(1), Some(2)),
        upd(3, 6, Some(2), Some(3)),
        get(7, 8, Some(2)),
    ]);
}

#[test]
fn lost_update_is_rejected() {
    // Both updates found 1: one of them overwrote the other's write
    // without seeing it (two increments counting once).
    let v = assert_violation(vec![
        put(0, 1, 1).with_client(1),
        upd(2, 5, Some(1), Some(2)).with_client(2),
        upd(3, 6, Some(1), Some(3)).with_client(3),
    ]);
    let text = v.to_string();
    assert!(
        text.contains("update(\"k\"): Some(1) -> Some(3) @ [3, 6]   <- register holds Some(2)")
            || text
                .contains("update(\"k\"): Some(1) -> Some(2) @ [2, 5]   <- register holds Some(3)"),
        "{text}"
    );
    // Sequential, the same pair is a stale read.
    assert_violation(vec![
        put(0, 1, 1),
        upd(2, 3, Some(1), Some(2)),
        upd(4, 5, Some(1), Some(3)),
    ]);
    // An update that left the key alone is a read.
    assert_violation(vec![
        put(0, 1, 1),
        put(2, 3, 2),
        upd(4, 5, Some(1), Some(1)),
    ]);
    assert_ok(vec![
        put(0, 1, 1),
        put(2, 3, 2),
        upd(4, 5, Some(2), Some(2)),
    ]);
}

#[test]
fn update_observing_the_impossible_is_rejected_early() {
    let v = assert_violation(vec![put(0, 1, 1), upd(2, 3, Some(42), Some(2))]);
    assert!(
        v.reason
            .contains("an update found a value that was never written"),
        "{v}"
    );
    // Leaving a never-written value "alone" does not count as writing it.
    let v = assert_violation(vec![upd(0, 1, Some(42), Some(42))]);
    assert!(v.reason.contains("never written"), "{v}");
    let v = assert_violation(vec![upd(0, 1, Some(1), Some(2)), put(2, 3, 1)]);
    assert!(v.reason.contains("after the update completed"), "{v}");
}

#[test]
fn unknown_outcome_update_is_all_or_nothing() {
    let base = || {
        vec![
            put(0, 1, 1),
            Event::update_unknown("k", 2, Some(1), Some(2)),
        ]
    };
    // Took effect, late...
    let mut h = base();
    h.extend([get(3, 4, Some(1)), get(5, 6, Some(2))]);
    assert_ok(h);
    // ...or never.
    let mut h = base();
    h.push(get(3, 4, Some(1)));
    assert_ok(h);
    // If it took effect it found 1: it cannot explain a 2 after a 3.
    let mut h = base();
    h.extend([put(3, 4, 3), get(5, 6, Some(2))]);
    assert_violation(h);
    // Unknown-outcome operations may chain: a put of 1, then the update.
    assert_ok(vec![
        Event::put_unknown("k", 1, 0),
        Event::update_unknown("k", 1, Some(1), Some(2)),
        get(2, 3, Some(2)),
    ]);
    // An unknown-outcome update that deleted the key can explain a None.
    assert_ok(vec![
        put(0, 1, 1),
        Event::update_unknown("k", 2, Some(1), None),
        get(3, 4, None),
    ]);
}

#[test]
fn recorder_records_delete_reports_and_updates() {
    let clock = Clock::new();
    let mut rec: Recorder<&str, u64> = Recorder::new(clock, 5);
    assert!(!rec.delete("k", || Ok::<_, ()>(false)).unwrap());
    rec.update("k", |trace| {
        trace.record(None, Some(1));
        Ok::<_, ()>(())
    })
    .unwrap();
    // Failed after its function ran: unknown outcome.
    rec.update("k", |trace| {
        trace.record(Some(1), Some(2));
        Err::<(), _>("store failed")
    })
    .unwrap_err();
    // Failed before its function ran: nothing to record.
    rec.update("k", |_| Err::<(), _>("unavailable"))
        .unwrap_err();
    assert!(rec.delete("k", || Ok::<_, ()>(true)).unwrap());
    rec.delete("k", || Err::<bool, _>("timeout")).unwrap_err();

    let events = rec.into_events();
    let ops: Vec<(Op<u64>, bool)> = events
        .iter()
        .map(|e| (e.op.clone(), e.complete.is_some()))
        .collect();
    let update = |observed, written| Op::Update { observed, written };
    assert_eq!(
        ops,
        vec![
            (Op::Delete(Some(false)), true),
            (update(None, Some(1)), true),
            (update(Some(1), Some(2)), false),
            (Op::Delete(Some(true)), true),
            (Op::Delete(None), false),
        ]
    );
    assert_eq!(
        events[2].to_string(),
        "client 5: update(\"k\"): Some(1) -> Some(2) @ [4, ?] (outcome unknown)"
    );
    check(events).unwrap();
}
