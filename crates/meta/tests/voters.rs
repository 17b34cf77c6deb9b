//! Properties of the voter choice.

mod common;

use std::collections::BTreeSet;

use common::{check_invariants, intent, resolve};
use proptest::prelude::*;
use ringkv_meta::{Lifecycle, MetaState, choose_voters, seated_down, voter_count};

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
    /// of the eligible members and the down voters that keep their seats
    /// (or the old voters when none is eligible); a down voter keeps its
    /// seat only when every eligible member votes; every old voter that is
    /// still eligible stays while there is room; and nothing changes while
    /// the old voters are eligible and as many as needed.
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
            let down = seated_down(&state, &voters);
            if el.is_empty() {
                prop_assert_eq!(&next, &voters);
            } else {
                prop_assert_eq!(next.len(), voter_count(el.len() + down.len()));
                let allowed: BTreeSet<u64> = el.union(&down).copied().collect();
                prop_assert!(next.is_subset(&allowed), "{:?} not within {:?}", next, allowed);
                if !next.is_subset(&el) {
                    prop_assert!(el.is_subset(&next), "a down voter kept a seat an eligible member could take");
                }
                let kept = voters.intersection(&el).count().min(next.len());
                prop_assert_eq!(voters.intersection(&next).filter(|v| el.contains(v)).count(), kept, "an eligible voter was replaced");
                if voters.is_subset(&el) && voters.len() == voter_count(el.len()) {
                    prop_assert_eq!(&next, &voters);
                }
            }
            voters = next;
        }
    }
}

#[test]
fn a_down_voter_keeps_its_seat_until_someone_can_take_it() {
    use ringkv_meta::Command;
    let mut state = MetaState::new();
    state
        .apply(&Command::Bootstrap {
            placement: common::PLACEMENT,
            node: common::node("a", 1),
        })
        .unwrap();
    for id in ["b", "c", "d"] {
        state
            .apply(&Command::Join {
                node: common::node(id, 1),
            })
            .unwrap();
        common::complete_change(&mut state, id);
    }
    let ids: std::collections::BTreeMap<String, u64> = state
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.raft_id))
        .collect();
    let raft = |id: &str| ids[id];
    let three = BTreeSet::from([raft("a"), raft("b"), raft("c")]);
    assert_eq!(choose_voters(&state, &three), three);
    // c is down and d can take its seat.
    state.apply(&Command::MarkDown { id: "c".into() }).unwrap();
    assert_eq!(
        choose_voters(&state, &three),
        BTreeSet::from([raft("a"), raft("b"), raft("d")])
    );
    // d is down too: c keeps its seat (three voters, not one).
    state.apply(&Command::MarkDown { id: "d".into() }).unwrap();
    assert_eq!(choose_voters(&state, &three), three);
}

#[test]
fn sizes() {
    let sizes: Vec<usize> = (0..8).map(voter_count).collect();
    assert_eq!(sizes, [1, 1, 1, 3, 3, 5, 5, 5]);
}
