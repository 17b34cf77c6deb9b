//! The stored entry through the cluster's API: versions, types, and which
//! writes keep or clear an expiry.

use ringkv_cluster::{Cluster, Entry, EntryKind, Update};

fn cluster() -> Cluster {
    let c = Cluster::default();
    c.add_node("n1").unwrap();
    c.add_node("n2").unwrap();
    c
}

#[test]
fn every_write_stamps_a_fresh_version() {
    let c = cluster();
    c.put("a", "1").unwrap();
    let v1 = c.get_entry(b"a").unwrap().unwrap().version;
    c.put("b", "1").unwrap();
    c.put("a", "1").unwrap();
    let v2 = c.get_entry(b"a").unwrap().unwrap().version;
    assert!(v2 > v1, "a rewrite of the same value is a new version");
    c.update("a", |_| (Update::Put("2".into()), ())).unwrap();
    let v3 = c.get_entry(b"a").unwrap().unwrap().version;
    assert!(v3 > v2);
    c.update("a", |_| (Update::Keep, ())).unwrap();
    assert_eq!(
        c.get_entry(b"a").unwrap().unwrap().version,
        v3,
        "keep writes nothing"
    );
    let given = Entry {
        version: 1,
        ..Entry::string("x")
    };
    let v4 = c.put_entry("a", given).unwrap();
    assert!(v4 > v3, "the caller's version is replaced");
    let e = c.get_entry(b"a").unwrap().unwrap();
    assert_eq!(
        (e.version, e.kind, e.value.as_ref()),
        (v4, EntryKind::String, &b"x"[..])
    );
}

#[test]
fn update_keeps_the_expiry_and_put_clears_it() {
    let c = cluster();
    c.put_entry("k", Entry::string("1").expiring(Some(u64::MAX - 1)))
        .unwrap();
    c.update("k", |_| (Update::Put("2".into()), ())).unwrap();
    let e = c.get_entry(b"k").unwrap().unwrap();
    assert_eq!(
        (e.value.as_ref(), e.expires_at),
        (&b"2"[..], Some(u64::MAX - 1))
    );
    c.put("k", "3").unwrap();
    assert_eq!(c.get_entry(b"k").unwrap().unwrap().expires_at, None);
    // A key created by update has no expiry.
    c.update("new", |_| (Update::Put("1".into()), ())).unwrap();
    assert_eq!(c.get_entry(b"new").unwrap().unwrap().expires_at, None);
}

#[test]
fn entries_travel_whole_when_their_range_moves() {
    let c = cluster();
    let mut want = Vec::new();
    for i in 0..500u64 {
        let key = format!("k{i}");
        let at = (i % 3 == 0).then_some(u64::MAX - i);
        c.put_entry(key.clone(), Entry::string(key.clone()).expiring(at))
            .unwrap();
        want.push((key.clone(), c.get_entry(key.as_bytes()).unwrap().unwrap()));
    }
    c.add_node("n3").unwrap();
    c.remove_node("n1").unwrap();
    for (key, e) in want {
        assert_eq!(c.get_entry(key.as_bytes()).unwrap(), Some(e), "{key}");
    }
}
