//! The saved ring format (`ringkv-ring/1`): fixtures written by an earlier
//! build must read back to the same ring, and invalid documents are typed
//! errors naming the problem.

use ringkv_ring::{BalancedConfig, Placement, RING_FORMAT, Ring, RingConfig, RingError};

const BALANCED: &str = include_str!("fixtures/balanced-ring-v1.json");
const RANDOM: &str = include_str!("fixtures/random-ring-v1.json");

/// The history that produced `fixtures/balanced-ring-v1.json`.
fn balanced_history() -> Ring {
    Ring::balanced(BalancedConfig { partitions: 64 })
        .unwrap()
        .with_node("a", 1)
        .unwrap()
        .with_node("b", 2)
        .unwrap()
        .with_node("c", 1)
        .unwrap()
        .without_node("b")
        .unwrap()
        .with_node("d", 3)
        .unwrap()
        .with_node("b", 1)
        .unwrap()
}

/// The membership of `fixtures/random-ring-v1.json` (7 changes).
fn random_history() -> Ring {
    Ring::new(RingConfig {
        vnodes_per_weight: 4,
    })
    .unwrap()
    .with_node("a", 1)
    .unwrap()
    .with_node("b", 2)
    .unwrap()
    .with_node("gone", 1)
    .unwrap()
    .with_node("c", 1)
    .unwrap()
    .without_node("gone")
    .unwrap()
    .without_node("c")
    .unwrap()
    .with_node("c", 3)
    .unwrap()
}

/// The tokens `key-0` .. `key-11` had when the fixtures were written
/// (`xxh3_64` of the key: keys were placed so before their tokens began with
/// the Redis Cluster slot), computed with Python's `xxhash`. The fixtures
/// test the ring format, so they keep the tokens they were recorded with;
/// today's key tokens are pinned by the golden tests of `key_token`.
const FIXTURE_TOKENS: [u64; 12] = [
    9340302149712544120,
    3254397408892824057,
    6473087458662454564,
    12615923472555598550,
    12426218323621869023,
    15901411816689633488,
    16960121990568429218,
    16610363266936908879,
    4299064673712455566,
    6249463627074751170,
    148667466464730333,
    8095125118757784000,
];

fn owners(ring: &Ring) -> Vec<String> {
    FIXTURE_TOKENS
        .iter()
        .map(|&token| ring.owner_of_token(token).unwrap().to_string())
        .collect()
}

/// Prints the fixtures and the owners the tests expect. Run with
/// `cargo test -p ringkv-ring --test serial -- --ignored --nocapture`
/// only to create a new format version's fixtures: the committed ones must
/// never be regenerated for `ringkv-ring/1`.
#[test]
#[ignore]
fn print_fixtures() {
    for ring in [balanced_history(), random_history()] {
        println!("{}", ring.to_json());
        println!("{:?}", owners(&ring));
    }
}

/// Owners of `key-0` .. `key-11` (by [`FIXTURE_TOKENS`]) in the fixtures,
/// recorded when they were written.
#[test]
fn saved_balanced_ring_reads_back() {
    let ring = Ring::from_json(BALANCED).unwrap();
    assert_eq!(
        ring.placement(),
        Placement::BalancedPartitions { partitions: 64 }
    );
    assert_eq!(ring.epoch(), 6);
    let nodes: Vec<(String, u32)> = ring.nodes().map(|(id, w)| (id.to_string(), w)).collect();
    let want = [("a", 1), ("b", 1), ("c", 1), ("d", 3)].map(|(id, w)| (id.to_string(), w));
    assert_eq!(nodes, want);
    assert_eq!(owners(&ring), BALANCED_OWNERS);
    // The writer still writes the same bytes.
    assert_eq!(ring.to_json(), BALANCED.trim_end());
    // The fixture's history now allocates otherwise: the fixture was
    // written when a leave handed each partition to the first receiver with
    // quota left, and since key layout 2 a leave hands it to the one with
    // the most left. The joins before that leave still allocate as then
    // (these letters were printed by the build before the change).
    let joins = Ring::balanced(BalancedConfig { partitions: 64 })
        .and_then(|r| r.with_node("a", 1))
        .and_then(|r| r.with_node("b", 2))
        .and_then(|r| r.with_node("c", 1))
        .unwrap();
    assert_eq!(
        letters(&joins),
        "cbacbacbabbabbcabbabbacbbacbacbabcabccbbcbbcabbbcabbcabbcbbacbba"
    );
    assert!(!balanced_history().same_placement(&ring));
}

/// The owner of each partition, one letter per partition.
fn letters(ring: &Ring) -> String {
    ring.vnodes().map(|(_, id)| id.as_str()).collect()
}

/// Every member's state machine recomputes the ring from the log of
/// changes, so the allocation is part of the key layout
/// ([`ringkv_ring::KEY_FORMAT`]): this pins what today's allocation makes
/// of the fixture's history, a leave among its changes.
#[test]
fn balanced_allocation_of_a_history_is_pinned() {
    assert_eq!(ringkv_ring::KEY_FORMAT, 2, "a new layout pins its own");
    assert_eq!(
        letters(&balanced_history()),
        "bddbddbddcbaddbdddabdadcdbcdbcddbddbcdadcadcaddbcdadcdacdacddadd"
    );
}

#[test]
fn saved_random_ring_reads_back() {
    let ring = Ring::from_json(RANDOM).unwrap();
    assert_eq!(
        ring.placement(),
        Placement::RandomVnodes {
            vnodes_per_weight: 4
        }
    );
    assert_eq!(ring.epoch(), 7);
    assert_eq!(ring.vnode_count(), 4 * (1 + 2 + 3));
    assert_eq!(owners(&ring), RANDOM_OWNERS);
    assert_eq!(ring.to_json(), RANDOM.trim_end());
    assert!(random_history().same_placement(&ring));
}

const BALANCED_OWNERS: [&str; 12] = ["d", "d", "c", "c", "c", "d", "b", "c", "d", "b", "d", "d"];
const RANDOM_OWNERS: [&str; 12] = ["c", "b", "c", "b", "b", "b", "c", "c", "c", "c", "c", "c"];

#[test]
fn round_trips_keep_placement_and_epoch() {
    for ring in [
        balanced_history(),
        random_history(),
        Ring::default(),
        Ring::balanced(BalancedConfig::default()).unwrap(),
        balanced_history().without_node("a").unwrap(),
    ] {
        let json = ring.to_json();
        assert!(
            json.starts_with(&format!("{{\"format\":\"{RING_FORMAT}\"")),
            "{json}"
        );
        let back = Ring::from_json(&json).unwrap();
        assert!(back.same_placement(&ring));
        assert_eq!(back.epoch(), ring.epoch());
        assert_eq!(back.to_json(), json);
    }
}

/// `BALANCED` with `from` replaced by `to` (which must occur once).
fn edit(from: &str, to: &str) -> String {
    assert_eq!(BALANCED.matches(from).count(), 1, "{from}");
    BALANCED.replacen(from, to, 1)
}

#[test]
fn invalid_documents_are_typed_errors() {
    let err = |json: &str| Ring::from_json(json).unwrap_err();
    assert_eq!(
        err(&edit("ringkv-ring/1", "ringkv-ring/2")),
        RingError::UnsupportedFormat {
            found: "ringkv-ring/2".into()
        }
    );
    assert!(matches!(
        err("{\"format\": 1}"),
        RingError::MalformedRing { .. }
    ));
    assert!(matches!(err("not json"), RingError::MalformedRing { .. }));
    let last_epoch = err(&edit("\"epoch\":6", &format!("\"epoch\":{}", u64::MAX)));
    assert!(
        matches!(&last_epoch, RingError::MalformedRing { reason } if reason.contains("epoch")),
        "{last_epoch}"
    );
    // One below is fine, and the next change takes the last epoch.
    let ring =
        Ring::from_json(&edit("\"epoch\":6", &format!("\"epoch\":{}", u64::MAX - 1))).unwrap();
    assert_eq!(ring.with_node("e", 1).unwrap().epoch(), u64::MAX);
    let unknown = err(&edit("\"epoch\"", "\"colour\":1,\"epoch\""));
    assert!(
        matches!(&unknown, RingError::MalformedRing { reason } if reason.contains("colour")),
        "{unknown}"
    );
    assert_eq!(
        err(&edit(
            "{\"id\":\"a\",\"weight\":1}",
            "{\"id\":\"a\",\"weight\":0}"
        )),
        RingError::ZeroWeight { id: "a".into() }
    );
    assert_eq!(
        err(&edit("{\"id\":\"b\",", "{\"id\":\"a\",")),
        RingError::DuplicateNode { id: "a".into() }
    );
    assert_eq!(
        err(&edit("{\"id\":\"c\",", "{\"id\":\"\",")),
        RingError::EmptyNodeId
    );
    assert_eq!(
        err(&edit("\"assignment\":[3,", "\"assignment\":[7,")),
        RingError::UnknownNodeIndex {
            partition: 0,
            index: 7,
            nodes: 4
        }
    );
    assert_eq!(
        err(&edit("\"assignment\":[", "\"assignment\":[0,")),
        RingError::PartitionCount {
            expected: 64,
            found: 65
        }
    );
    assert_eq!(
        err(&edit("\"partitions\":64", "\"partitions\":63")),
        RingError::InvalidPartitions {
            partitions: 63,
            min: 2,
            max: 1 << 24
        }
    );
    let random = RANDOM.trim_end().trim_end_matches('}').to_string() + ",\"assignment\":[]}";
    assert_eq!(err(&random), RingError::UnexpectedAssignment);
    // The messages name the problem.
    let msg = RingError::UnknownNodeIndex {
        partition: 3,
        index: 9,
        nodes: 4,
    }
    .to_string();
    assert!(
        msg.contains("partition 3") && msg.contains("index 9"),
        "{msg}"
    );
}

/// A saved ring is read through the same id rule as `with_node`: a
/// hand-edited file cannot bring in an id that forges a log line.
#[test]
fn saved_rings_with_invalid_ids_are_refused() {
    let bad = |json: &str| match Ring::from_json(json) {
        Err(RingError::InvalidNodeId { id, .. }) => id.to_string(),
        other => panic!("expected InvalidNodeId, got {other:?}"),
    };
    // JSON escapes: CR LF, NUL, a space, a non-ASCII letter.
    for (json_id, id) in [
        ("c\\r\\nx", "c\r\nx"),
        ("c\\u0000", "c\0"),
        ("c d", "c d"),
        ("c\\u00e9", "cé"),
    ] {
        let balanced = edit("{\"id\":\"c\",", &format!("{{\"id\":\"{json_id}\","));
        assert_eq!(bad(&balanced), id, "balanced ring, id {id:?}");
        let random = RANDOM.replacen("{\"id\":\"c\",", &format!("{{\"id\":\"{json_id}\","), 1);
        assert_eq!(bad(&random), id, "random ring, id {id:?}");
    }
    let long = "x".repeat(ringkv_ring::MAX_NODE_ID_LEN + 1);
    let random = RANDOM.replacen("{\"id\":\"c\",", &format!("{{\"id\":\"{long}\","), 1);
    assert_eq!(
        Ring::from_json(&random).unwrap_err(),
        RingError::NodeIdTooLong {
            len: ringkv_ring::MAX_NODE_ID_LEN + 1,
            max: ringkv_ring::MAX_NODE_ID_LEN
        }
    );
}
