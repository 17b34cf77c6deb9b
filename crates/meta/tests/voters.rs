//! Properties of the voter choice.

mod common;

use std::collections::BTreeSet;

use common::{check_invariants, intent, resolve};
use proptest::prelude::*;
use ringkv_meta::{Lifecycle, MetaState, choose_voters, voter_count};

fn eligible(state: &MetaState) -> BTreeSet<u64> {
    state
        .members
        .values()
        .filter(|m| m.lifecycle == Lifecycle::Up && !m.down)
        .map(|m| m.raft_id)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Along any history, the voters chosen after each command: are 1, 3 or 5
    /// eligible members (or the old voters when none is eligible), keep
    /// every old voter that is still eligible while there is room, and do
    /// not change while the old voters are eligible and as many as needed.
    #[test]
    fn voters_are_few_eligible_and_stable(intents in proptest::collection::vec(intent(), 1..100)) {
        let mut state = MetaState::new();
        state.apply(&ringkv_meta::Command::Bootstrap { placement: common::PLACEMENT, node: common::node("a", 1) }).unwrap();
        let mut voters = BTreeSet::from([ringkv_meta::FIRST_RAFT_ID]);
        for intent in &intents {
            let command = resolve(&state, intent);
            let _ = state.apply(&command);
            check_invariants(&state).map_err(TestCaseError::fail)?;
            let next = choose_voters(&state, &voters);
            prop_assert_eq!(&next, &choose_voters(&state, &voters), "deterministic");
            let el = eligible(&state);
            if el.is_empty() {
                prop_assert_eq!(&next, &voters);
            } else {
                prop_assert_eq!(next.len(), voter_count(el.len()));
                prop_assert!(next.is_subset(&el), "{:?} not within {:?}", next, el);
                let kept = voters.intersection(&el).count().min(next.len());
                prop_assert_eq!(voters.intersection(&next).count(), kept, "an eligible voter was replaced");
                if voters.is_subset(&el) && voters.len() == voter_count(el.len()) {
                    prop_assert_eq!(&next, &voters);
                }
            }
            voters = next;
        }
    }
}

#[test]
fn sizes() {
    let sizes: Vec<usize> = (0..8).map(voter_count).collect();
    assert_eq!(sizes, [1, 1, 1, 3, 3, 5, 5, 5]);
}
