//! Unit tests of the ring; properties live in `tests/properties.rs`.

use crate::{BalancedConfig, MAX_NODE_ID_LEN, Ring, RingConfig, RingError, key_token, vnode_token};

fn ring_of(ids: &[&str]) -> Ring {
    ids.iter().fold(Ring::default(), |r, id| {
        r.with_node(*id, 1).expect("valid node")
    })
}

/// Golden positions: any change of the hash function or byte layout breaks
/// every stored ring and every node's data placement, so it must be caught.
#[test]
fn golden_tokens() {
    let keys: [(&[u8], u64); 4] = [
        (b"", GOLDEN_KEYS[0]),
        (b"key1", GOLDEN_KEYS[1]),
        (b"a longer key of 32 bytes, here!!", GOLDEN_KEYS[2]),
        (&[0u8, 255, 7], GOLDEN_KEYS[3]),
    ];
    for (key, want) in keys {
        assert_eq!(key_token(key), want, "key {key:?}");
    }
    let vnodes = [
        ("node1", 0, GOLDEN_VNODES[0]),
        ("node1", 1, GOLDEN_VNODES[1]),
        ("node2", 255, GOLDEN_VNODES[2]),
        ("ü-node", 7, GOLDEN_VNODES[3]),
    ];
    for (id, index, want) in vnodes {
        assert_eq!(vnode_token(id, index), want, "vnode {id}#{index}");
    }
}

// Values computed independently in Python over the same bytes: keys as
// `((binascii.crc_hqx(key, 0) & 16383) << 50) | (xxhash.xxh3_64_intdigest(key) >> 14)`,
// vnodes as `xxhash.xxh3_64_intdigest(layout)`.
const GOLDEN_KEYS: [u64; 4] = [
    198023763518286,
    10346141857904547680,
    8862051170214730559,
    14726966415305457545,
];
const GOLDEN_VNODES: [u64; 4] = [
    9809481056315734373,
    9635044244664534392,
    6609596927254542,
    16665076980907238301,
];

#[test]
fn empty_ring_answers_nothing() {
    let ring = Ring::default();
    assert!(ring.owner(b"k").is_none());
    assert_eq!(ring.preference_list(b"k", 3).count(), 0);
    assert!(ring.range_of_token(5).is_none());
    assert!(ring.diff(&ring).moves.is_empty());
}

#[test]
fn errors_leave_the_ring_unchanged() {
    let ring = ring_of(&["a", "b"]);
    assert_eq!(
        ring.with_node("a", 1).unwrap_err(),
        RingError::DuplicateNode { id: "a".into() }
    );
    assert_eq!(
        ring.without_node("zz").unwrap_err(),
        RingError::UnknownNode { id: "zz".into() }
    );
    assert_eq!(
        ring.with_node("c", 0).unwrap_err(),
        RingError::ZeroWeight { id: "c".into() }
    );
    assert_eq!(ring.with_node("", 1).unwrap_err(), RingError::EmptyNodeId);
    assert!(matches!(
        ring.with_node("c", u32::MAX).unwrap_err(),
        RingError::TooManyVnodes { .. }
    ));
    assert_eq!(
        Ring::new(RingConfig {
            vnodes_per_weight: 0
        })
        .unwrap_err(),
        RingError::ZeroVnodes
    );
    assert_eq!(ring.epoch(), 2);
    assert_eq!(ring.len(), 2);
    assert!(ring.same_placement(&ring_of(&["b", "a"])));
    let msg = RingError::DuplicateNode { id: "a".into() }.to_string();
    assert!(
        msg.contains("`a`") && msg.contains("remove it first"),
        "{msg}"
    );
}

#[test]
fn lookup_matches_a_linear_scan() {
    let ring = ring_of(&["n1", "n2", "n3", "n4", "n5"]);
    let tokens: Vec<_> = ring.vnodes().map(|(t, id)| (t, id.clone())).collect();
    let probes = (0..10_000u64).map(|i| key_token(&i.to_le_bytes())).chain([
        0,
        1,
        u64::MAX,
        tokens[0].0,
        tokens[tokens.len() - 1].0,
    ]);
    for t in probes {
        let want = tokens
            .iter()
            .find(|(tok, _)| *tok >= t)
            .unwrap_or(&tokens[0])
            .1
            .clone();
        assert_eq!(ring.owner_of_token(t), Some(&want), "token {t}");
    }
}

#[test]
fn epochs_count_changes() {
    let ring = ring_of(&["a", "b", "c"]);
    assert_eq!(ring.epoch(), 3);
    assert_eq!(ring.without_node("b").unwrap().epoch(), 4);
    assert_eq!(ring.vnode_count(), 3 * 256);
    assert_eq!(ring.with_node("d", 3).unwrap().vnode_count(), 6 * 256);
}

/// Node ids are 1 to 64 bytes of ASCII letters, digits and `-_.:@`: an id
/// that could forge a log or reply line, or that has no one spelling, is
/// refused with an error naming it (escaped) and the rule.
#[test]
fn node_ids_follow_one_rule() {
    let ring = ring_of(&["a"]);
    for (id, index, found) in [
        ("n1\r\nrole:master", 2, '\r'),
        ("n1\n", 2, '\n'),
        ("n\0x", 1, '\0'),
        ("node 7", 4, ' '),
        ("nöde", 1, 'ö'),
        ("n\"1", 1, '"'),
        ("a/b", 1, '/'),
    ] {
        let err = ring.with_node(id, 1).unwrap_err();
        assert_eq!(
            err,
            RingError::InvalidNodeId {
                id: id.into(),
                index,
                found
            },
            "id {id:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{id:?}")) && msg.contains("-_.:@") && !msg.contains('\n'),
            "{msg}"
        );
    }
    assert_eq!(ring.with_node("", 1).unwrap_err(), RingError::EmptyNodeId);
    let longest = "x".repeat(MAX_NODE_ID_LEN);
    let too_long = "x".repeat(MAX_NODE_ID_LEN + 1);
    assert_eq!(
        ring.with_node(too_long.as_str(), 1).unwrap_err(),
        RingError::NodeIdTooLong {
            len: MAX_NODE_ID_LEN + 1,
            max: MAX_NODE_ID_LEN
        }
    );
    // The boundaries and every allowed character pass, on both strategies.
    let every = "azAZ09-_.:@";
    for empty in [
        Ring::default(),
        Ring::balanced(BalancedConfig { partitions: 64 }).unwrap(),
    ] {
        let r = empty
            .with_node("x", 1)
            .and_then(|r| r.with_node(longest.as_str(), 1))
            .and_then(|r| r.with_node(every, 1))
            .and_then(|r| r.with_node("10.0.0.7:7001", 1))
            .and_then(|r| r.with_node("kv@host", 1))
            .expect("valid ids");
        assert_eq!(r.len(), 5);
    }
    // Errors about other things escape the id they quote.
    let msg = ring.without_node("x\r\ny").unwrap_err().to_string();
    assert!(msg.contains(r"`x\r\ny`"), "{msg}");
}

#[test]
fn gallop_is_a_partition_point() {
    for len in 0..70usize {
        let v: Vec<usize> = (0..len).collect();
        for cut in 0..=len {
            assert_eq!(
                crate::random::gallop(&v, |&x| x < cut),
                cut,
                "len {len} cut {cut}"
            );
        }
    }
}
