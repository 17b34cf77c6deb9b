//! Tests of `recover.rs`: recovery, sync ordering and transaction undo.

use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_ring::{NodeId, Token};

use crate::backend::Backend;
use crate::store::{MemStore, Store, StoreError, StoredEntry};
use crate::{Cluster, ClusterConfig, Entry};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Write(Bytes),
    Sync,
    Ack(Bytes),
}

type Log = Arc<Mutex<Vec<Event>>>;

/// A store that logs its writes.
struct Logged(MemStore, Log);

impl Store for Logged {
    fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.0.get(token, key)
    }
    fn put(&mut self, token: Token, key: Bytes, entry: Entry) -> Result<Option<Entry>, StoreError> {
        let old = self.0.put(token, key.clone(), entry);
        self.1.lock().push(Event::Write(key));
        old
    }
    fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let old = self.0.delete(token, key);
        self.1
            .lock()
            .push(Event::Write(Bytes::copy_from_slice(key)));
        old
    }
    fn scan(
        &self,
        t: RangeInclusive<Token>,
        a: Option<Token>,
        l: usize,
        o: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        self.0.scan(t, a, l, o)
    }
    fn take_range(
        &mut self,
        t: RangeInclusive<Token>,
        l: usize,
        o: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        self.0.take_range(t, l, o)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// `--fsync always` as the cluster sees it: acknowledgements wait for
/// `sync`, which logs when it starts.
struct Recording(Log);

impl Backend for Recording {
    fn open_node(
        &self,
        _: &NodeId,
        stripes: usize,
        _: bool,
    ) -> Result<Vec<Box<dyn Store>>, StoreError> {
        Ok((0..stripes)
            .map(|_| Box::new(Logged(MemStore::new(), self.0.clone())) as Box<dyn Store>)
            .collect())
    }
    fn drop_node(&self, _: &NodeId) -> Result<(), StoreError> {
        Ok(())
    }
    fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        Ok(Vec::new())
    }
    fn persistent(&self) -> bool {
        false
    }
    fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(Vec::new())
    }
    fn write_records(&self, _: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync_acks(&self) -> bool {
        true
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.0.lock().push(Event::Sync);
        std::thread::sleep(std::time::Duration::from_micros(50));
        Ok(())
    }
    fn location(&self) -> Option<String> {
        None
    }
}

/// In memory, except that a transaction's batch is not kept while
/// `fail` is set: its writes are applied, then the batch fails, as a
/// full disk fails a data directory's.
struct LosesTransactions {
    inner: crate::backend::FactoryBackend,
    fail: std::sync::atomic::AtomicBool,
}

impl Backend for LosesTransactions {
    fn open_node(
        &self,
        id: &NodeId,
        stripes: usize,
        fresh: bool,
    ) -> Result<Vec<Box<dyn Store>>, StoreError> {
        self.inner.open_node(id, stripes, fresh)
    }
    fn drop_node(&self, id: &NodeId) -> Result<(), StoreError> {
        self.inner.drop_node(id)
    }
    fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        self.inner.stored_nodes()
    }
    fn persistent(&self) -> bool {
        false
    }
    fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.records()
    }
    fn write_records(&self, w: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        self.inner.write_records(w)
    }
    fn sync_acks(&self) -> bool {
        false
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn location(&self) -> Option<String> {
        None
    }
    fn atomically(
        &self,
        f: &mut dyn FnMut() -> Result<(), crate::ClusterError>,
    ) -> Result<(), crate::ClusterError> {
        f()?;
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::ClusterError::Storage {
                what: "the transaction's writes could not be written".into(),
                source: StoreError::Engine("disk full (test)".into()),
            });
        }
        Ok(())
    }
}

/// Keys in the expiry indexes of every stripe.
fn volatile_keys(c: &Cluster) -> usize {
    let routing = c.routing.load();
    routing
        .nodes
        .values()
        .map(|n| {
            (0..n.stripe_count())
                .map(|i| n.read_stripe(i).unwrap().volatile_len())
                .sum::<usize>()
        })
        .sum()
}

/// A transaction whose batch is not kept leaves every key, the key
/// counts, the memory count and the expiry index as they were.
#[test]
fn a_transaction_that_is_not_kept_is_undone() {
    use std::sync::atomic::Ordering::SeqCst;
    let backend = Arc::new(LosesTransactions {
        inner: crate::backend::FactoryBackend::memory(),
        fail: true.into(),
    });
    let cluster = Cluster::with_backend(ClusterConfig::default(), backend.clone()).unwrap();
    for n in ["n1", "n2", "n3"] {
        cluster.add_node(n).unwrap();
    }
    let keys: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("k{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        let entry = Entry::string(format!("v{i}"));
        match i % 3 {
            0 => drop(cluster.put_entry(key.clone(), entry).unwrap()),
            1 => drop(
                cluster
                    .put_entry(key.clone(), entry.expiring(Some(u64::MAX)))
                    .unwrap(),
            ),
            _ => {} // absent
        }
    }
    let view = |c: &Cluster| {
        let values: Vec<_> = keys.iter().map(|k| c.get_entry(k).unwrap()).collect();
        let s = c.stats();
        let per_node: Vec<_> = s
            .nodes
            .iter()
            .map(|n| (n.keys, n.stored, n.used_memory))
            .collect();
        (
            values,
            s.total_keys,
            s.used_memory,
            per_node,
            volatile_keys(c),
        )
    };
    let before = view(&cluster);
    // Overwrite some (dropping or adding an expiry), delete some,
    // create the absent ones.
    let err = cluster
        .transaction(keys.clone(), |txn| {
            for (i, key) in keys.iter().enumerate() {
                match i % 4 {
                    0 => txn.put(key, Entry::string("new")),
                    1 => txn.put(key, Entry::string("new").expiring(Some(u64::MAX - 1))),
                    2 => drop(txn.delete(key)),
                    _ => {}
                }
            }
        })
        .unwrap_err();
    assert!(err.to_string().contains("could not be written"), "{err}");
    assert_eq!(
        view(&cluster),
        before,
        "the failed transaction left a trace"
    );
    // The same transaction, kept, is applied; the bookkeeping matches
    // what a cluster that never failed holds.
    backend.fail.store(false, SeqCst);
    cluster
        .transaction(keys.clone(), |txn| {
            for key in &keys {
                txn.put(key, Entry::string("kept"));
            }
        })
        .unwrap();
    let fresh = Cluster::new(ClusterConfig::default()).unwrap();
    for n in ["n1", "n2", "n3"] {
        fresh.add_node(n).unwrap();
    }
    for key in &keys {
        fresh.put(key.clone(), "kept").unwrap();
        assert_eq!(cluster.get(key).unwrap().as_deref(), Some(&b"kept"[..]));
    }
    let (s, f) = (cluster.stats(), fresh.stats());
    assert_eq!((s.total_keys, s.used_memory), (f.total_keys, f.used_memory));
    assert_eq!(volatile_keys(&cluster), 0, "no key kept an expiry");
}

/// Under `always`, every client write (put, delete, update,
/// transaction) is acknowledged only after a sync that started after
/// the write.
#[test]
fn acknowledged_means_synced_after_the_write() {
    let log: Log = Arc::default();
    let cluster = Arc::new(
        Cluster::with_backend(ClusterConfig::default(), Arc::new(Recording(log.clone()))).unwrap(),
    );
    cluster.add_node("n1").unwrap();
    cluster.add_node("n2").unwrap();
    log.lock().clear();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (cluster, log) = (cluster.clone(), log.clone());
            std::thread::spawn(move || {
                for i in 0..100 {
                    let key = Bytes::from(format!("t{t}-{i}"));
                    match i % 4 {
                        0 => cluster.put(key.clone(), "v").unwrap(),
                        1 => drop(cluster.delete(key.clone()).unwrap()),
                        2 => cluster
                            .update(key.clone(), |_| (crate::Update::Put("u".into()), ()))
                            .unwrap(),
                        _ => cluster
                            .transaction([key.clone()], |txn| txn.put(&key, Entry::string("x")))
                            .unwrap(),
                    }
                    log.lock().push(Event::Ack(key));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = log.lock();
    let mut acks = 0;
    for (a, event) in log.iter().enumerate() {
        let Event::Ack(key) = event else { continue };
        acks += 1;
        let w = log[..a]
            .iter()
            .rposition(|e| *e == Event::Write(key.clone()))
            .unwrap_or_else(|| panic!("{key:?} acknowledged without a write"));
        assert!(
            log[w..a].contains(&Event::Sync),
            "{key:?} acknowledged with no sync between its write and the ack"
        );
    }
    assert_eq!(acks, 400);
}

/// Deferred, a write does not sync but says it owes one; reads and
/// writes that need none owe none; outside, writes sync again.
#[test]
fn defer_sync_hands_the_sync_to_the_caller() {
    let log: Log = Arc::default();
    let cluster =
        Cluster::with_backend(ClusterConfig::default(), Arc::new(Recording(log.clone()))).unwrap();
    cluster.add_node("n1").unwrap();
    log.lock().clear();
    let ((), owed) = super::defer_sync(|| cluster.put("k", "v").unwrap());
    assert!(owed);
    assert!(
        !log.lock().contains(&Event::Sync),
        "deferred: {:?}",
        log.lock()
    );
    let (_, owed) = super::defer_sync(|| cluster.get(b"k").unwrap());
    assert!(!owed, "a read owes no sync");
    let ((_, inner), outer) =
        super::defer_sync(|| super::defer_sync(|| cluster.delete("k").unwrap()));
    assert!(!inner && outer, "a nested write is owed by the outer call");
    cluster.sync().unwrap();
    assert_eq!(log.lock().last(), Some(&Event::Sync));
    log.lock().clear();
    cluster.put("k", "v").unwrap();
    assert_eq!(
        log.lock().last(),
        Some(&Event::Sync),
        "not deferred any more"
    );
}
