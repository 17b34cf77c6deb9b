//! Properties of the metadata state machine over random command sequences.

mod common;

use common::{Intent, check_invariants, intent, resolve};
use proptest::prelude::*;
use ringkv_meta::{Command, MetaState, NodeSpec, apply};

/// Applies `intents` on replica A, and the same commands on replica B, which
/// is rebuilt from a snapshot (encode, decode) at the steps in `restores`.
fn run(intents: &[Intent], restores: &[bool]) -> Result<(), TestCaseError> {
    let mut a = MetaState::new();
    let mut b = MetaState::new();
    for (step, intent) in intents.iter().enumerate() {
        let command = resolve(&a, intent);
        // Commands travel through the log serialised.
        let wire = serde_json::to_vec(&command).unwrap();
        let received: Command = serde_json::from_slice(&wire).unwrap();
        prop_assert_eq!(&received, &command);

        let before = a.clone();
        let (next_a, ra) = apply(a, &command);
        let (next_b, rb) = apply(b, &received);
        a = next_a;
        b = next_b;
        prop_assert_eq!(
            &ra,
            &rb,
            "step {}: replicas answered differently to {:?}",
            step,
            command
        );
        prop_assert_eq!(&a, &b, "step {}: replicas differ after {:?}", step, command);
        match &ra {
            Ok(applied) => {
                prop_assert_eq!(a.epoch, before.epoch + 1, "step {}: {:?}", step, command);
                prop_assert_eq!(applied.epoch, a.epoch);
                prop_assert_ne!(
                    &a,
                    &before,
                    "step {}: applied but unchanged: {:?}",
                    step,
                    command
                );
            }
            Err(why) => {
                prop_assert_eq!(
                    &a,
                    &before,
                    "step {}: rejected ({}) but changed: {:?}",
                    step,
                    why,
                    command
                );
            }
        }
        if let Err(e) = check_invariants(&a) {
            return Err(TestCaseError::fail(format!(
                "step {step} after {command:?}: {e}\nstate: {a:#?}"
            )));
        }
        if restores.get(step).copied().unwrap_or(false) {
            b = MetaState::decode(&b.encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&a, &b, "step {}: the snapshot differs", step);
        }
    }
    Ok(())
}

fn bootstrapped() -> impl Strategy<Value = Vec<Intent>> {
    proptest::collection::vec(intent(), 1..120).prop_map(|mut v| {
        v.insert(0, Intent::Bootstrap(0, 1));
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Two replicas given the same commands (one of them restored from
    /// snapshots now and then) answer the same and hold equal states; a
    /// rejected command changes nothing, an applied one raises the epoch by
    /// one; every state keeps the invariants.
    #[test]
    fn replicas_agree_and_rejections_change_nothing(
        intents in bootstrapped(),
        restores in proptest::collection::vec(proptest::bool::weighted(0.1), 120),
    ) {
        run(&intents, &restores)?;
    }

    /// The same from an empty state, where most commands are refused.
    #[test]
    fn an_uninitialised_state_refuses_all_but_bootstrap(intents in proptest::collection::vec(intent(), 1..20)) {
        run(&intents, &[])?;
    }
}

/// A change walked step by step: who serves what at each phase.
#[test]
fn a_join_moves_authority_range_by_range() {
    let mut s = MetaState::new();
    s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: common::node("a", 1),
    })
    .unwrap();
    s.apply(&Command::Join {
        node: common::node("b", 1),
    })
    .unwrap();
    let before = s.ring.clone().unwrap();
    // Joining: b is admitted but serves nothing.
    assert!(!before.contains("b"));
    let change = s
        .apply(&Command::BeginChange { node: "b".into() })
        .unwrap()
        .change
        .unwrap();
    let ranges = s.change.as_ref().unwrap().ranges.clone();
    assert!(!ranges.is_empty());
    for r in &ranges {
        assert_eq!(
            s.serving(r.end).unwrap().node,
            "a",
            "copying: the source serves"
        );
    }
    // Switching before fencing is refused.
    assert!(
        s.apply(&Command::SwitchRanges {
            change,
            ranges: vec![0]
        })
        .is_err()
    );
    s.apply(&Command::FenceRanges {
        change,
        ranges: vec![0],
    })
    .unwrap();
    let fenced = s.serving(ranges[0].end).unwrap();
    assert_eq!((fenced.node, fenced.fenced), ("a", true));
    // Aborting is still possible before the first switch...
    let mut aborted = s.clone();
    aborted.apply(&Command::AbortChange { change }).unwrap();
    assert!(aborted.ring.as_ref().unwrap().same_placement(&before));
    assert!(aborted.ring.as_ref().unwrap().epoch() > s.change.as_ref().unwrap().to.epoch());
    // ...not after it.
    s.apply(&Command::SwitchRanges {
        change,
        ranges: vec![0],
    })
    .unwrap();
    assert_eq!(s.serving(ranges[0].end).unwrap().node, "b");
    assert_eq!(
        s.apply(&Command::AbortChange { change }),
        Err(ringkv_meta::Rejected::Committed { change })
    );
    assert!(matches!(
        s.apply(&Command::FinishChange { change }),
        Err(ringkv_meta::Rejected::Incomplete { .. })
    ));
    let rest: Vec<usize> = (1..ranges.len()).collect();
    if !rest.is_empty() {
        s.apply(&Command::FenceRanges {
            change,
            ranges: rest.clone(),
        })
        .unwrap();
        s.apply(&Command::SwitchRanges {
            change,
            ranges: rest,
        })
        .unwrap();
    }
    s.apply(&Command::FinishChange { change }).unwrap();
    assert!(s.change.is_none());
    assert_eq!(s.members["b"].state(), ringkv_meta::NodeState::Up);
    // A retried command of the finished change acts no more.
    assert_eq!(
        s.apply(&Command::FinishChange { change }),
        Err(ringkv_meta::Rejected::NoSuchChange { change })
    );
}

/// A forced removal of a down node drops its ranges; an unforced one is
/// refused, and so is dropping the ranges of an up node.
#[test]
fn a_forced_removal_drops_only_the_down_node_s_ranges() {
    let mut s = MetaState::new();
    s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: common::node("a", 1),
    })
    .unwrap();
    for id in ["b", "c"] {
        s.apply(&Command::Join {
            node: common::node(id, 1),
        })
        .unwrap();
        let change = s
            .apply(&Command::BeginChange { node: id.into() })
            .unwrap()
            .change
            .unwrap();
        let all: Vec<usize> = (0..s.change.as_ref().unwrap().ranges.len()).collect();
        s.apply(&Command::FenceRanges {
            change,
            ranges: all.clone(),
        })
        .unwrap();
        s.apply(&Command::SwitchRanges {
            change,
            ranges: all,
        })
        .unwrap();
        s.apply(&Command::FinishChange { change }).unwrap();
    }
    s.apply(&Command::MarkDown { id: "c".into() }).unwrap();
    s.apply(&Command::Leave {
        id: "c".into(),
        force: false,
    })
    .unwrap();
    assert_eq!(
        s.apply(&Command::BeginChange { node: "c".into() }),
        Err(ringkv_meta::Rejected::NodeDown { id: "c".into() })
    );
    s.apply(&Command::Cancel { id: "c".into() }).unwrap();
    s.apply(&Command::Leave {
        id: "c".into(),
        force: true,
    })
    .unwrap();
    let change = s
        .apply(&Command::BeginChange { node: "c".into() })
        .unwrap()
        .change
        .unwrap();
    let all: Vec<usize> = (0..s.change.as_ref().unwrap().ranges.len()).collect();
    // Its ranges cannot be fenced (it is down) but can be dropped.
    assert!(
        s.apply(&Command::FenceRanges {
            change,
            ranges: vec![0]
        })
        .is_err()
    );
    s.apply(&Command::DropRanges {
        change,
        ranges: all.clone(),
    })
    .unwrap();
    // Nobody serves a dropped range (its source is down) until its target
    // has cleared its copy and it switches.
    let r = &s.change.as_ref().unwrap().ranges[0];
    let (end, to) = (r.end, r.to.clone());
    let serving = s.serving(end).unwrap();
    assert!(serving.node == "c" && serving.down);
    assert!(matches!(
        s.apply(&Command::FinishChange { change }),
        Err(ringkv_meta::Rejected::Incomplete { pending, .. }) if pending == all.len()
    ));
    s.apply(&Command::SwitchRanges {
        change,
        ranges: all,
    })
    .unwrap();
    let serving = s.serving(end).unwrap();
    assert!(serving.node == to && !serving.down);
    s.apply(&Command::FinishChange { change }).unwrap();
    assert!(!s.members.contains_key("c"));
    assert_eq!(s.ring.as_ref().unwrap().len(), 2);

    // b is up: its ranges move, never drop.
    s.apply(&Command::Leave {
        id: "b".into(),
        force: true,
    })
    .unwrap();
    let change = s
        .apply(&Command::BeginChange { node: "b".into() })
        .unwrap()
        .change
        .unwrap();
    assert!(matches!(
        s.apply(&Command::DropRanges {
            change,
            ranges: vec![0]
        }),
        Err(ringkv_meta::Rejected::CannotDrop { .. })
    ));
}

/// The last member leaves only by force, and a first member then starts
/// the ring again.
#[test]
fn the_last_member_leaves_only_by_force() {
    let mut s = MetaState::new();
    s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: common::node("a", 1),
    })
    .unwrap();
    s.apply(&Command::Leave {
        id: "a".into(),
        force: false,
    })
    .unwrap();
    assert_eq!(
        s.apply(&Command::BeginChange { node: "a".into() }),
        Err(ringkv_meta::Rejected::LastMember { id: "a".into() })
    );
    s.apply(&Command::Cancel { id: "a".into() }).unwrap();
    s.apply(&Command::Leave {
        id: "a".into(),
        force: true,
    })
    .unwrap();
    s.apply(&Command::BeginChange { node: "a".into() }).unwrap();
    assert!(s.change.is_none() && s.members.is_empty());
    assert!(s.ring.as_ref().unwrap().is_empty());
    assert!(s.serving(42).is_none());
    s.apply(&Command::Join {
        node: common::node("b", 2),
    })
    .unwrap();
    s.apply(&Command::BeginChange { node: "b".into() }).unwrap();
    assert_eq!(s.serving(42).unwrap().node, "b");
}

/// A retried join answers with the Raft id the first attempt was given.
#[test]
fn a_retried_join_is_answered_with_its_raft_id() {
    let mut s = MetaState::new();
    s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: common::node("a", 1),
    })
    .unwrap();
    let b = NodeSpec {
        token: 7,
        ..common::node("b", 1)
    };
    let id = s
        .apply(&Command::Join { node: b.clone() })
        .unwrap()
        .raft_id
        .unwrap();
    // The joiner's retry learns that its first attempt was applied.
    assert_eq!(
        s.apply(&Command::Join { node: b }),
        Err(ringkv_meta::Rejected::AlreadyMember {
            id: "b".into(),
            raft_id: id,
            token: 7,
        })
    );
}

/// The snapshot format is tagged and other formats are refused.
#[test]
fn snapshots_carry_their_format() {
    let mut s = MetaState::new();
    s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: common::node("a", 1),
    })
    .unwrap();
    let bytes = s.encode();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with(r#"{"format":"ringkv-meta/1""#), "{text}");
    assert_eq!(MetaState::decode(&bytes).unwrap(), s);
    let future = text.replace("ringkv-meta/1", "ringkv-meta/2");
    let err = MetaState::decode(future.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("ringkv-meta/2"), "{err}");
}

/// A node that places keys by another layout (an older ringkv: its `Join`
/// has no `key_format`) is refused, at bootstrap and at join, and nothing
/// changes: it would take keys outside its ranges for its own.
#[test]
fn a_node_of_another_key_layout_is_refused() {
    let old: NodeSpec = serde_json::from_str(
        r#"{"id":"old","client_addr":"old:6379","peer_addr":"old:7379","weight":1}"#,
    )
    .unwrap();
    assert_eq!(old.key_format, 1);
    let mut s = MetaState::new();
    let refused = s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: old.clone(),
    });
    assert!(
        matches!(&refused, Err(ringkv_meta::Rejected::BadNode { id, reason })
            if id == "old" && reason.contains("layout 1")),
        "{refused:?}"
    );
    assert_eq!(s, MetaState::new());
    s.apply(&Command::Bootstrap {
        placement: common::PLACEMENT,
        node: common::node("a", 1),
    })
    .unwrap();
    let before = s.clone();
    assert!(matches!(
        s.apply(&Command::Join { node: old }),
        Err(ringkv_meta::Rejected::BadNode { .. })
    ));
    assert_eq!(s, before);
}
