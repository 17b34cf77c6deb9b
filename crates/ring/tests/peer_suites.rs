//! Behaviour checked by the test suites of other consistent-hashing
//! libraries, restated for this ring: `stathat/consistent` (Go),
//! `golang/groupcache/consistenthash` (Go) and the `consistent_hash_ring`
//! crate (Rust). The code is our own; only the behaviours are ported.

mod common;

use common::*;
use ringkv_ring::{NodeId, Ring, RingConfig, RingError, Token, key_token, vnode_token};

/// Keys "key0", "key1", ... as used by the Go suites.
fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("key{i}").into_bytes()).collect()
}

fn owners(ring: &Ring, keys: &[Vec<u8>]) -> Vec<Option<NodeId>> {
    keys.iter().map(|k| ring.owner(k).cloned()).collect()
}

const TWENTY: RingConfig = RingConfig {
    vnodes_per_weight: 20,
};

// ---------------------------------------------------------------- stathat

/// stathat `TestGetEmpty`, `TestGetTwoEmpty`: an empty ring answers nothing.
#[test]
fn empty_ring_answers_nothing() {
    for ring in [
        Ring::default(),
        Ring::default()
            .with_node("a", 1)
            .unwrap()
            .without_node("a")
            .unwrap(),
    ] {
        assert!(ring.is_empty());
        assert_eq!((ring.len(), ring.vnode_count()), (0, 0));
        for key in keys(50) {
            assert!(ring.owner(&key).is_none());
            assert_eq!(ring.preference_list(&key, 2).count(), 0);
        }
        for t in [0, 1, u64::MAX] {
            assert!(ring.owner_of_token(t).is_none());
            assert!(ring.range_of_token(t).is_none());
            assert_eq!(ring.preference_list_of_token(t, 3).count(), 0);
        }
    }
}

/// stathat `TestAdd`, `TestRemove`: every node contributes exactly its
/// vnodes, sorted, and removing it takes them all away again.
#[test]
fn add_and_remove_count_vnodes() {
    let one = Ring::new(TWENTY).unwrap().with_node("abcdefg", 1).unwrap();
    assert_eq!(one.vnode_count(), 20);
    let tokens = one.tokens_of("abcdefg").unwrap();
    assert_eq!(tokens.len(), 20);
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]));
    let expected: Vec<Token> = {
        let mut t: Vec<Token> = (0..20).map(|i| vnode_token("abcdefg", i)).collect();
        t.sort_unstable();
        t
    };
    assert_eq!(tokens, expected);

    let two = one.with_node("qwerqwerwqer", 1).unwrap();
    assert_eq!((two.len(), two.vnode_count()), (2, 40));
    let back = two.without_node("abcdefg").unwrap();
    assert_eq!((back.len(), back.vnode_count()), (1, 20));
    assert!(back.tokens_of("abcdefg").is_none());
    assert!(!back.contains("abcdefg") && back.contains("qwerqwerwqer"));
}

/// stathat `TestRemoveNonExisting`: removing an unknown node is an error and
/// changes nothing.
#[test]
fn removing_an_unknown_node_changes_nothing() {
    let ring = Ring::new(TWENTY).unwrap().with_node("01234567", 1).unwrap();
    let err = ring.without_node("abcdefghijk").unwrap_err();
    assert_eq!(
        err,
        RingError::UnknownNode {
            id: "abcdefghijk".into()
        }
    );
    assert_eq!((ring.len(), ring.vnode_count(), ring.epoch()), (1, 20, 1));
}

/// stathat `TestGetSingle`: a ring with one node owns everything, at every
/// boundary as well as for random keys.
#[test]
fn one_node_owns_everything() {
    for cfg in [
        RingConfig {
            vnodes_per_weight: 1,
        },
        TWENTY,
        RingConfig::default(),
    ] {
        let ring = Ring::new(cfg).unwrap().with_node("abcdefg", 1).unwrap();
        let probes = boundary_probes(ring.vnodes().map(|(t, _)| t))
            .into_iter()
            .chain((0..2000u64).map(splitmix));
        for t in probes {
            assert_eq!(ring.owner_of_token(t).unwrap(), "abcdefg", "token {t}");
            let replicas: Vec<_> = ring.preference_list_of_token(t, 3).collect();
            assert_eq!(replicas, ["abcdefg"]);
        }
    }
    // With a single vnode the owned range is the whole circle.
    let single = Ring::new(RingConfig {
        vnodes_per_weight: 1,
    })
    .unwrap()
    .with_node("only", 1)
    .unwrap();
    let r = single.range_of_token(12345).unwrap();
    assert!((0..=u64::MAX).step_by(1 << 60).all(|t| r.contains(t)));
    assert_eq!(r.fraction(), 1.0);
}

/// stathat `TestGetMultiple`, `TestGetMultipleQuick`: with several nodes,
/// every key maps to a member, the map agrees with a naive successor search,
/// and every member gets some keys.
#[test]
fn several_nodes_share_the_keys() {
    let ring = ring_ids(TWENTY, &["abcdefg", "hijklmn", "opqrstu"]);
    let v = vnode_list(&ring);
    let mut hits = [0usize; 3];
    for key in keys(3000) {
        let got = ring.owner(&key).unwrap();
        assert_eq!(Some(got.clone()), naive_owner(&v, key_token(&key)));
        let i = ["abcdefg", "hijklmn", "opqrstu"]
            .iter()
            .position(|n| got == n)
            .expect("a member");
        hits[i] += 1;
    }
    assert!(hits.iter().all(|&h| h > 300), "uneven: {hits:?}");
}

/// stathat `TestGetMultipleRemove`: after removing a node no key maps to it,
/// and keys that did not live on it stay put.
#[test]
fn removing_a_node_moves_only_its_keys() {
    let ring = ring_ids(TWENTY, &["abcdefg", "hijklmn", "opqrstu"]);
    let smaller = ring.without_node("hijklmn").unwrap();
    for key in keys(3000) {
        let (before, after) = (ring.owner(&key).unwrap(), smaller.owner(&key).unwrap());
        assert_ne!(after, "hijklmn");
        if before != "hijklmn" {
            assert_eq!(before, after, "key {:?}", String::from_utf8_lossy(&key));
        }
    }
}

/// stathat `TestGetTwo`, `TestGetTwoOnlyOneInCircle`, `TestGetN`,
/// `TestGetNLess`: replica lists are distinct, start at the owner and are
/// cut to the membership size.
#[test]
fn replicas_are_distinct_and_capped() {
    let one = ring_ids(TWENTY, &["abcdefg"]);
    let pl: Vec<_> = one.preference_list(b"99999999", 2).collect();
    assert_eq!(pl, ["abcdefg"]);

    let three = ring_ids(TWENTY, &["abcdefg", "hijklmn", "opqrstu"]);
    for key in keys(500) {
        let owner = three.owner(&key).unwrap();
        let two: Vec<_> = three.preference_list(&key, 2).collect();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0], owner);
        assert_ne!(two[0], two[1]);
        let mut all: Vec<_> = three.preference_list(&key, 5).collect();
        assert_eq!(
            all.len(),
            3,
            "asking for more than the members gives all of them"
        );
        assert_eq!(all[..2], two[..]);
        all.sort();
        assert_eq!(all, ["abcdefg", "hijklmn", "opqrstu"]);
    }
}

/// stathat `TestSet`: replacing the membership set gives the ring that was
/// built from the new set directly, whichever way it was reached.
#[test]
fn replacing_the_membership_is_path_independent() {
    let start = ring_ids(TWENTY, &["abc", "def", "ghi"]);
    let replaced = start
        .without_node("abc")
        .unwrap()
        .with_node("jkl", 1)
        .unwrap()
        .without_node("ghi")
        .unwrap()
        .with_node("mno", 1)
        .unwrap();
    let direct = ring_ids(TWENTY, &["mno", "jkl", "def"]);
    assert!(replaced.same_placement(&direct));
    assert_eq!(owners(&replaced, &keys(1000)), owners(&direct, &keys(1000)));
}

/// stathat `TestAddCollision`: two node ids whose tokens collide. Found
/// offline by a distinguished-point (rho) search over
/// `vnode_token(hex16(x), 0)`; both ids are 16 hex digits.
const COLLIDING: (&str, &str) = ("333456c0b89e8fc0", "9043c4f2796c67c2");
const COLLIDING_TOKEN: Token = 9_025_715_293_609_305_762;

#[test]
fn colliding_tokens_are_broken_by_id() {
    let (low, high) = COLLIDING;
    assert!(low < high);
    assert_eq!(vnode_token(low, 0), COLLIDING_TOKEN);
    assert_eq!(vnode_token(high, 0), COLLIDING_TOKEN);

    // One vnode each, plus bystanders so the circle has other tokens.
    let cfg = RingConfig {
        vnodes_per_weight: 1,
    };
    let low_first = ring_ids(cfg, &["p", low, "q", high]);
    let high_first = ring_ids(cfg, &[high, "q", low, "p"]);
    assert!(low_first.same_placement(&high_first));
    assert!(low_first.diff(&high_first).moves.is_empty());

    let v = vnode_list(&low_first);
    check_sorted(&v);
    let at: Vec<&str> = v
        .iter()
        .filter(|(t, _)| *t == COLLIDING_TOKEN)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(at, [low, high], "the smaller id sorts first");

    for ring in [&low_first, &high_first] {
        // The smaller id owns the shared token and the arc before it.
        assert_eq!(ring.owner_of_token(COLLIDING_TOKEN).unwrap(), low);
        assert_eq!(ring.owner_of_token(COLLIDING_TOKEN - 1).unwrap(), low);
        let pl: Vec<_> = ring.preference_list_of_token(COLLIDING_TOKEN, 2).collect();
        assert_eq!(pl, [low, high], "the shadowed node is the next replica");
        let range = ring.range_of_token(COLLIDING_TOKEN).unwrap();
        assert_eq!(range.end, COLLIDING_TOKEN);
        assert_ne!(range.start, COLLIDING_TOKEN);
    }

    // Removing the winner hands exactly its arc to the shadowed node;
    // removing the shadowed node moves nothing.
    let without_low = low_first.without_node(low).unwrap();
    let diff = low_first.diff(&without_low);
    assert_eq!(diff.moves.len(), 1, "{:?}", diff.moves);
    assert_eq!(
        (diff.moves[0].from.as_str(), diff.moves[0].to.as_str()),
        (low, high)
    );
    assert_eq!(
        diff.moves[0].range,
        low_first.range_of_token(COLLIDING_TOKEN).unwrap()
    );
    let without_high = low_first.without_node(high).unwrap();
    assert!(low_first.diff(&without_high).moves.is_empty());
    let replica_moves = low_first.diff_replicas(&without_high, 2);
    assert!(!replica_moves.is_empty(), "the shadowed node was a replica");

    // The same on a ring where each colliding node is a small share
    // (removal then locates the node's entries instead of scanning).
    let crowd: Vec<String> = (0..40).map(|i| format!("bystander-{i}")).collect();
    let mut ids: Vec<&str> = crowd.iter().map(String::as_str).collect();
    ids.extend([low, high]);
    let crowded = ring_ids(cfg, &ids);
    ids.reverse();
    assert!(crowded.same_placement(&ring_ids(cfg, &ids)));
    let ids_without =
        |gone: &str| -> Vec<&str> { ids.iter().copied().filter(|id| *id != gone).collect() };
    for gone in [low, high] {
        let removed = crowded.without_node(gone).unwrap();
        assert!(removed.same_placement(&ring_ids(cfg, &ids_without(gone))));
        let survivor = if gone == low { high } else { low };
        assert_eq!(removed.owner_of_token(COLLIDING_TOKEN).unwrap(), survivor);
    }

    // With many vnodes the collision at index 0 is still order independent.
    let a = ring_ids(RingConfig::default(), &[low, high]);
    let b = ring_ids(RingConfig::default(), &[high, low]);
    assert!(a.same_placement(&b));
    assert_eq!(a.owner_of_token(COLLIDING_TOKEN).unwrap(), low);
}

/// Ids that are prefixes of one another must not share tokens. A layout of
/// `id ++ decimal index` would hash ("node1", 10) and ("node11", 0) as the
/// same bytes "node110"; the length prefix keeps them apart.
#[test]
fn prefix_ids_get_distinct_tokens() {
    assert_ne!(vnode_token("node1", 10), vnode_token("node11", 0));
    assert_ne!(vnode_token("node1", 0), vnode_token("node10", 0));
    // The hash is prefix-free for any bytes, a NUL included, though a
    // ring refuses such an id.
    for k in 0..256 {
        assert_ne!(vnode_token("node1", k), vnode_token("node1\0", k));
    }
    let ids = ["node1", "node10", "node100", "node1.", "node", "node11"];
    let ring = ring_ids(RingConfig::default(), &ids);
    let v = vnode_list(&ring);
    let mut tokens: Vec<Token> = v.iter().map(|(t, _)| *t).collect();
    tokens.dedup();
    assert_eq!(
        tokens.len(),
        ids.len() * 256,
        "some prefix ids share tokens"
    );
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            for k in 0..256 {
                assert_ne!(vnode_token(a, k), vnode_token(b, k), "{a:?} {b:?} #{k}");
            }
        }
        assert_ne!(vnode_token(a, 0), key_token(a.as_bytes()));
    }
    // Every prefix id gets a fair share.
    for id in ids {
        let n = (0..6000u64)
            .filter(|i| ring.owner(&i.to_le_bytes()).unwrap() == id)
            .count();
        assert!(n > 500, "{id:?} owns only {n} of 6000 keys");
    }
}

// -------------------------------------------------------------- groupcache

/// groupcache `TestHashing`: keys land on the first vnode at or after them,
/// and a new node takes over exactly the arcs ending at its tokens.
#[test]
fn keys_land_on_the_next_vnode_and_new_nodes_take_their_arcs() {
    let cfg = RingConfig {
        vnodes_per_weight: 3,
    };
    let ring = ring_ids(cfg, &["6", "4", "2"]);
    let v = vnode_list(&ring);
    assert_eq!(v.len(), 9);
    for (k, (t, id)) in v.iter().enumerate() {
        // At a vnode token: that vnode. Just after: the next one clockwise.
        assert_eq!(ring.owner_of_token(*t).unwrap(), id);
        let next = &v[(k + 1) % v.len()].1;
        assert_eq!(ring.owner_of_token(t.wrapping_add(1)).unwrap(), next);
        assert_eq!(ring.owner_of_token(t.wrapping_sub(1)).unwrap(), id);
    }
    // Before the first token and after the last: the first vnode.
    assert_eq!(ring.owner_of_token(0).unwrap(), &v[0].1);
    assert_eq!(ring.owner_of_token(u64::MAX).unwrap(), &v[0].1);

    let more = ring.with_node("8", 1).unwrap();
    let eights = more.tokens_of("8").unwrap();
    for t in eights {
        let arc = more.range_of_token(t).unwrap();
        for probe in [t, arc.start.wrapping_add(1)] {
            assert_eq!(more.owner_of_token(probe).unwrap(), "8");
            assert_ne!(ring.owner_of_token(probe).unwrap(), "8");
        }
        // Just past the arc, unless another arc of "8" starts there,
        // nothing changed.
        let outside = t.wrapping_add(1);
        if more.owner_of_token(outside).unwrap() != "8" {
            assert_eq!(more.owner_of_token(outside), ring.owner_of_token(outside));
        }
    }
}

/// groupcache `TestConsistency`: two rings fed the same nodes in different
/// orders agree, also after both gain the same node.
#[test]
fn insertion_order_does_not_matter() {
    let a = ring_ids(RingConfig::default(), &["Bill", "Bob", "Bonny"]);
    let b = ring_ids(RingConfig::default(), &["Bob", "Bonny", "Bill"]);
    let names: Vec<Vec<u8>> = ["Ben", "Bob", "Bonny"]
        .map(|s| s.as_bytes().to_vec())
        .into();
    assert_eq!(owners(&a, &names), owners(&b, &names));
    assert_eq!(owners(&a, &keys(2000)), owners(&b, &keys(2000)));
    let (a, b) = (
        a.with_node("Becky", 1).unwrap(),
        b.with_node("Becky", 1).unwrap(),
    );
    assert_eq!(owners(&a, &names), owners(&b, &names));
    assert_eq!(owners(&a, &keys(2000)), owners(&b, &keys(2000)));
    assert!(a.same_placement(&b));
}

// ------------------------------------------------------ consistent_hash_ring

/// `remove_insert_is_idempotent`: removing a node and inserting it again
/// restores the same owners, for small vnode counts too.
#[test]
fn remove_then_insert_restores_owners() {
    let ids: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for vnodes in 1..=4 {
        let ring = ring_ids(
            RingConfig {
                vnodes_per_weight: vnodes,
            },
            &ids,
        );
        let before = owners(&ring, &keys(1000));
        for key in [&b"hello_worldo"[..], b"k", b""] {
            let x = ring.owner(key).unwrap().clone();
            let again = ring
                .without_node(x.as_str())
                .unwrap()
                .with_node(x.clone(), 1)
                .unwrap();
            assert_eq!(again.owner(key), Some(&x), "vnodes {vnodes}");
            assert_eq!(owners(&again, &keys(1000)), before);
            assert!(again.same_placement(&ring));
            assert_eq!(again.epoch(), ring.epoch() + 2);
        }
    }
}

/// `is_consistent`: the same nodes in any order give the same ring.
#[test]
fn node_order_is_irrelevant() {
    for vnodes in 1..=4 {
        let cfg = RingConfig {
            vnodes_per_weight: vnodes,
        };
        let a = ring_ids(cfg, &["0", "1", "2", "3", "4"]);
        let b = ring_ids(cfg, &["4", "2", "0", "3", "1"]);
        assert!(a.same_placement(&b));
        assert_eq!(owners(&a, &keys(500)), owners(&b, &keys(500)));
    }
}

/// Adding a node then removing it restores every owner, and the add moves
/// only keys to the new node.
#[test]
fn add_then_remove_restores_owners() {
    let ring = ring_ids(RingConfig::default(), &["a", "b", "c", "d"]);
    let bigger = ring.with_node("e", 2).unwrap();
    let before = owners(&ring, &keys(5000));
    for (key, was) in keys(5000).iter().zip(&before) {
        let now = bigger.owner(key).cloned();
        assert!(now == *was || now.as_ref().is_some_and(|n| n == "e"));
    }
    let back = bigger.without_node("e").unwrap();
    assert_eq!(owners(&back, &keys(5000)), before);
    assert!(back.same_placement(&ring));
}

/// The exact plan agrees with the owners on either side of the change.
#[test]
fn diff_of_an_add_sends_everything_to_the_new_node() {
    let ring = ring_ids(RingConfig::default(), &["a", "b", "c", "d"]);
    let bigger = ring.with_node("e", 1).unwrap();
    let diff = ring.diff(&bigger);
    assert!(diff.moves.iter().all(|m| m.to == "e"));
    let share = diff.fraction();
    assert!((0.1..0.3).contains(&share), "moved {share}");
    let covered: u128 = diff.moves.iter().map(|m| range_len(&m.range)).sum();
    let owned: u128 = bigger
        .tokens_of("e")
        .unwrap()
        .into_iter()
        .map(|t| range_len(&bigger.range_of_token(t).unwrap()))
        .sum();
    assert_eq!(covered, owned);
}
