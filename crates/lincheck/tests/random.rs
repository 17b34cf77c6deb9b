//! Randomized tests: histories linearizable by construction must be
//! accepted, provably broken mutations of them must be rejected, and the
//! checker must agree with a brute-force reference on tiny arbitrary
//! histories.

mod common;

use common::{
    GenParams, brute_force_linearizable, linearizable_history, mutate_never_written,
    mutate_stale_read, noisy_history, random_small_history, reference_linearizable,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use ringkv_lincheck::{CheckError, check};

fn params() -> impl Strategy<Value = GenParams> {
    (
        1usize..=8,
        1usize..=400,
        1u32..=3,
        0.0f64..0.2,
        0.2f64..0.6,
        0.0f64..0.2,
        0.0f64..0.3,
        0.0f64..=1.0,
    )
        .prop_map(
            |(clients, ops, keys, unknown, get, delete, update, report)| GenParams {
                clients,
                ops,
                keys,
                unknown,
                get,
                delete,
                update,
                report,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn linearizable_by_construction_is_accepted(p in params(), seed in any::<u64>()) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let h = linearizable_history(&mut rng, &p);
        if let Err(e) = check(h.clone()) {
            prop_assert!(false, "rejected a linearizable history:\n{}\n{:#?}", e, h);
        }
    }

    #[test]
    fn never_written_read_is_rejected(p in params(), seed in any::<u64>()) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let h = linearizable_history(&mut rng, &p);
        if let Some(bad) = mutate_never_written(&mut rng, &h) {
            let err = check(bad).unwrap_err();
            prop_assert!(err.is_violation(), "{}", err);
        }
    }

    #[test]
    fn stale_read_is_rejected(p in params(), seed in any::<u64>()) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let h = linearizable_history(&mut rng, &p);
        if let Some(bad) = mutate_stale_read(&mut rng, &h) {
            match check(bad.clone()) {
                Err(CheckError::Violation(_)) => {}
                other => prop_assert!(false, "expected violation, got {:?}\n{:#?}", other, bad),
            }
        }
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_histories(
        n in 1usize..=7,
        keys in 1u32..=2,
        seed in any::<u64>(),
    ) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let h = random_small_history(&mut rng, n, keys, 0.2);
        let expected = brute_force_linearizable(&h);
        match check(h.clone()) {
            Ok(_) => prop_assert!(expected, "accepted a non-linearizable history: {:#?}", h),
            Err(CheckError::Violation(v)) => {
                prop_assert!(!expected, "rejected a linearizable history:\n{}\n{:#?}", v, h)
            }
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }
}

/// The tiny-history cross-check again, with many more cases, so that both
/// verdicts are exercised plenty (the generator yields a healthy mix), and
/// with a high share of unknown-outcome writes to exercise their special
/// handling (interchangeable spares, dominance in the memo table).
#[test]
fn brute_force_cross_check_bulk() {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..30_000 {
        let n = 1 + i % 9;
        let unknown = [0.0, 0.2, 0.5][i % 3];
        let h = random_small_history(&mut rng, n, 1 + (i % 2) as u32, unknown);
        let expected = brute_force_linearizable(&h);
        let got = match check(h.clone()) {
            Ok(_) => true,
            Err(CheckError::Violation(_)) => false,
            Err(e) => panic!("unexpected {e:?}"),
        };
        assert_eq!(got, expected, "disagreement on {h:#?}");
        if got { accepted += 1 } else { rejected += 1 }
    }
    assert!(
        accepted > 3_000 && rejected > 3_000,
        "{accepted} accepted, {rejected} rejected"
    );
}

/// Differential test on medium histories (up to ~35 operations per key,
/// many of them with unknown outcome) against an exhaustive reference
/// search without any of the checker's reductions.
#[test]
fn reference_cross_check_medium() {
    let mut rng = SmallRng::seed_from_u64(0xfeed);
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..2_000 {
        let p = GenParams {
            clients: 2 + i % 4,
            ops: 10 + i % 25,
            keys: 1 + (i % 2) as u32,
            unknown: [0.1, 0.3, 0.5][i % 3],
            get: 0.4,
            delete: [0.0, 0.15, 0.3][(i / 3) % 3],
            update: [0.0, 0.2, 0.4][(i / 27) % 3],
            report: [0.0, 0.5, 1.0][(i / 81) % 3],
        };
        let h = noisy_history(&mut rng, &p, [0.03, 0.1, 0.3][(i / 9) % 3]);
        let expected = reference_linearizable(&h);
        let got = match check(h.clone()) {
            Ok(_) => true,
            Err(CheckError::Violation(_)) => false,
            Err(e) => panic!("unexpected {e:?}"),
        };
        assert_eq!(got, expected, "disagreement on {h:#?}");
        if got { accepted += 1 } else { rejected += 1 }
    }
    assert!(
        accepted > 300 && rejected > 300,
        "{accepted} accepted, {rejected} rejected"
    );
}

/// ~5,000 operations on one key from 4-8 clients (no timing assertions; it
/// should take milliseconds even in debug builds). The last two cases add
/// read-modify-writes and deletes that report what they removed.
#[test]
fn performance_single_hot_key() {
    let cases = [
        // (clients, unknown, update, report, also check a violation)
        (4, 0.0, 0.0, 0.0, true),
        (8, 0.0, 0.0, 0.0, true),
        (8, 0.05, 0.0, 0.0, true),
        (8, 0.0, 0.1, 0.5, true),
        // Proving a violation here takes about a minute in a debug build
        // (deletes that removed a value can each be explained by any spare
        // unknown-outcome write), so only the linearizable history is timed.
        (8, 0.05, 0.1, 0.5, false),
    ];
    for (clients, unknown, update, report, violation) in cases {
        let mut rng = SmallRng::seed_from_u64(clients as u64);
        let p = GenParams {
            clients,
            ops: 5_000,
            keys: 1,
            unknown,
            get: 0.5,
            delete: 0.05,
            update,
            report,
        };
        let h = linearizable_history(&mut rng, &p);
        let started = std::time::Instant::now();
        let report = check(h.clone()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{clients} clients, {} ops, unknown={unknown}, update={update}, report={:?}: {:?}, {report:?}",
            h.len(),
            p.report,
            started.elapsed()
        );

        // A single stale read injected somewhere is found too.
        if let Some(bad) = mutate_stale_read(&mut rng, &h).filter(|_| violation) {
            let started = std::time::Instant::now();
            let err = check(bad).unwrap_err();
            let v = err.violation().unwrap_or_else(|| panic!("{err}"));
            eprintln!(
                "  violation found in {:?} ({} states, prefix {}/{})",
                started.elapsed(),
                v.states_explored,
                v.prefix_len,
                v.operations
            );
        }
    }
}
