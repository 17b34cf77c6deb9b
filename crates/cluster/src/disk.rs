//! The persistent backend: every node's entries and the cluster's records
//! in one [`DataDir`] (one fjall database, one journal), and
//! [`PersistentStore`], the [`Store`] of one lock stripe over its node's
//! tree.
//!
//! On disk (see docs/ARCHITECTURE.md, "On disk"):
//! - one tree per node, named `node-<n>` (`n` never reused), keyed by
//!   `token (u64 big-endian) || key`, valued by [`Entry::encode`]: value,
//!   expiry, type tag and version travel to disk together;
//! - records: `n/<node id>` names the node's tree, `seq` the next `n`, and
//!   under `c/` the cluster's own records (`crate::durable`).
//!
//! Every write goes to the journal shared by all of them, in the order its
//! call returned, so a crash keeps a prefix of the writes: the order the
//! cluster's crash consistency rests on (see [`Backend`]).

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_persist::{
    DataDir, Durability, FsyncPolicy, PersistError, PersistentEngine, WriteBatch,
};
use ringkv_ring::{NodeId, Token};
use tracing::info;

use crate::backend::Backend;
use crate::entry::Entry;
use crate::store::{MemStore, Store, StoreError, StoredEntry};

/// Prefix of the cluster's records.
const CLUSTER: &str = "c/";
/// Prefix of the node-to-tree records.
const NODE: &str = "n/";
/// The record holding the number of the next tree.
const SEQ: &[u8] = b"seq";

/// A [`PersistError`] as a [`StoreError`], keeping the OS error as source.
pub(crate) fn store_err(e: PersistError) -> StoreError {
    let corrupt = e.is_corruption();
    let (message, io) = e.into_parts();
    match io {
        Some(source) => StoreError::Io {
            context: message,
            source: Arc::new(source),
        },
        None if corrupt => StoreError::Corrupt(message),
        // The message names the directory and says what to do.
        None => StoreError::Refused(message),
    }
}

/// The backend of [`Cluster::open`](crate::Cluster::open).
pub(crate) struct DiskBackend {
    dir: DataDir,
    /// Serialises tree allocation (the `seq` record's read-modify-write).
    alloc: Mutex<()>,
}

impl DiskBackend {
    pub(crate) fn open(path: &Path, policy: FsyncPolicy) -> Result<DiskBackend, PersistError> {
        Ok(DiskBackend {
            dir: DataDir::open(path, policy)?,
            alloc: Mutex::new(()),
        })
    }

    fn tree_of(&self, id: &NodeId) -> Result<Option<String>, StoreError> {
        let record = self
            .dir
            .record(format!("{NODE}{id}").as_bytes())
            .map_err(store_err)?;
        record
            .map(|name| {
                // The names this module writes: `node-<n>`. Anything else is
                // damage (and no name to hand to the engine).
                std::str::from_utf8(&name)
                    .ok()
                    .filter(|n| {
                        n.strip_prefix("node-").is_some_and(|d| {
                            (1..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
                        })
                    })
                    .map(str::to_string)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "the record of node `{id}`'s tree in {} is damaged ({:?} is no tree \
                             name); restore the directory from a backup",
                            self.dir.path().display(),
                            String::from_utf8_lossy(&name[..name.len().min(64)])
                        ))
                    })
            })
            .transpose()
    }
}

impl Backend for DiskBackend {
    fn open_node(
        &self,
        id: &NodeId,
        stripes: usize,
        fresh: bool,
    ) -> Result<Vec<Box<dyn Store>>, StoreError> {
        let _alloc = self.alloc.lock();
        let mut tree = self.tree_of(id)?;
        if fresh && tree.is_some() {
            self.drop_node(id)?;
            tree = None;
        }
        let name = match tree {
            Some(name) if !self.dir.has_tree(&name) => {
                return Err(StoreError::Corrupt(format!(
                    "the data of node `{id}` (tree {name}) is missing from {}; restore the \
                     directory from a backup",
                    self.dir.path().display()
                )));
            }
            Some(name) => name,
            None if !fresh => {
                return Err(StoreError::Corrupt(format!(
                    "{} records node `{id}` as a member but holds no data for it; restore the \
                     directory from a backup",
                    self.dir.path().display()
                )));
            }
            None => {
                let seq = match self.dir.record(SEQ).map_err(store_err)? {
                    Some(raw) => {
                        <[u8; 8]>::try_from(&*raw)
                            .map(u64::from_be_bytes)
                            .map_err(|_| {
                                StoreError::Corrupt(format!(
                                    "the tree counter record in {} is {} bytes, not 8",
                                    self.dir.path().display(),
                                    raw.len()
                                ))
                            })?
                    }
                    None => 0,
                };
                let name = format!("node-{seq}");
                let key = format!("{NODE}{id}");
                let next = (seq + 1).to_be_bytes();
                self.dir
                    .write_records(
                        &[
                            (key.as_bytes(), Some(name.as_bytes())),
                            (SEQ, Some(&next[..])),
                        ],
                        Durability::NoSync,
                    )
                    .map_err(store_err)?;
                info!(node = %id, tree = %name, "node tree created");
                name
            }
        };
        let engine = self.dir.tree(&name).map_err(store_err)?;
        // An existing tree's stripes are read into memory by the cluster's
        // load at open (`Store::load`).
        Ok((0..stripes)
            .map(|_| {
                Box::new(PersistentStore {
                    engine: engine.clone(),
                    mem: MemStore::new(),
                }) as Box<dyn Store>
            })
            .collect())
    }

    fn drop_node(&self, id: &NodeId) -> Result<(), StoreError> {
        if let Some(name) = self.tree_of(id)? {
            self.dir.drop_tree(&name).map_err(store_err)?;
        }
        let key = format!("{NODE}{id}");
        self.dir
            .write_records(&[(key.as_bytes(), None)], Durability::NoSync)
            .map_err(store_err)
    }

    fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        let records = self.dir.records(NODE.as_bytes()).map_err(store_err)?;
        records
            .into_iter()
            .map(|(key, _)| {
                let id = std::str::from_utf8(&key[NODE.len()..]).unwrap_or_default();
                NodeId::validate(id).map(|()| NodeId::new(id)).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "a node record in {} names an invalid node id: {e}",
                        self.dir.path().display()
                    ))
                })
            })
            .collect()
    }

    fn persistent(&self) -> bool {
        true
    }

    fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let records = self.dir.records(CLUSTER.as_bytes()).map_err(store_err)?;
        records
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8(k[CLUSTER.len()..].to_vec()).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "a cluster record key in {} is not UTF-8",
                        self.dir.path().display()
                    ))
                })?;
                Ok((key, v.to_vec()))
            })
            .collect()
    }

    fn write_records(&self, writes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        let keys: Vec<String> = writes
            .iter()
            .map(|(k, _)| format!("{CLUSTER}{k}"))
            .collect();
        let batch: Vec<(&[u8], Option<&[u8]>)> = keys
            .iter()
            .zip(writes)
            .map(|(k, (_, v))| (k.as_bytes(), v.as_deref()))
            .collect();
        self.dir
            .write_records(&batch, Durability::NoSync)
            .map_err(store_err)
    }

    fn sync_acks(&self) -> bool {
        self.dir.policy() == FsyncPolicy::Always
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.dir.sync().map_err(store_err)
    }

    fn sync_now(&self) -> Result<(), StoreError> {
        self.dir.sync_now().map_err(store_err)
    }

    fn location(&self) -> Option<String> {
        Some(self.dir.path().display().to_string())
    }

    fn checkpoint(&self, wait: bool) -> Result<(), StoreError> {
        self.dir.checkpoint(wait).map_err(store_err)
    }

    fn buffered_bytes(&self) -> u64 {
        self.dir.log_queued_bytes()
    }

    fn atomically(
        &self,
        f: &mut dyn FnMut() -> Result<(), crate::ClusterError>,
    ) -> Result<(), crate::ClusterError> {
        self.dir
            .atomically(Durability::NoSync, f)
            .map_err(|e| crate::ClusterError::Storage {
                what: "the transaction's writes could not be written".into(),
                source: store_err(e),
            })?
    }
}

/// One lock stripe of a node: the stripe's tokens of the node's tree,
/// served from memory.
///
/// The tree is the durable copy and `mem` the serving copy, as Redis serves
/// from memory what its AOF keeps: every write goes to the tree first (a
/// failure changes nothing) and then to `mem`, so reads never touch the
/// engine and a write never reads the entry it replaces from it (that LSM
/// read was nearly half of `put` in a profile). `mem` is filled from the
/// tree when the node opens ([`Store::load`]). The price is Redis's: a
/// node's data must fit in memory (a start reads the whole tree).
#[derive(Debug)]
pub(crate) struct PersistentStore {
    engine: PersistentEngine,
    mem: MemStore,
}

/// A stored value that does not decode is corruption: say so, never guess.
fn decode(engine: &PersistentEngine, key: &[u8], bytes: &Bytes) -> Result<Entry, StoreError> {
    Entry::decode(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "the entry of key {:?} in {} does not decode ({e}): restore the directory from a \
             backup, or run the ringkv version that wrote it",
            String::from_utf8_lossy(&key[..key.len().min(64)]),
            engine.path().display()
        ))
    })
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.value.len() + 32);
    entry.encode(&mut out);
    out
}

impl Store for PersistentStore {
    fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.mem.get(token, key)
    }

    fn put(&mut self, token: Token, key: Bytes, entry: Entry) -> Result<Option<Entry>, StoreError> {
        self.engine
            .put(token, &key, encode(&entry), Durability::NoSync)
            .map_err(store_err)?;
        self.mem.put(token, key, entry)
    }

    fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        if !self.mem.contains(token, key) {
            return Ok(None);
        }
        self.engine
            .delete(token, key, Durability::NoSync)
            .map_err(store_err)?;
        self.mem.delete(token, key)
    }

    fn put_many(
        &mut self,
        entries: Vec<StoredEntry>,
        replaced: &mut Vec<Option<Entry>>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::with_capacity(entries.len());
        for e in &entries {
            batch.put(e.token, e.key.clone(), encode(&e.entry));
        }
        self.engine
            .write(batch, Durability::NoSync)
            .map_err(store_err)?;
        self.mem.put_many(entries, replaced)
    }

    fn scan(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        self.mem.scan(tokens, after, limit, out)
    }

    fn visit(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        visit: &mut dyn FnMut(Token, &Bytes, &Entry) -> bool,
    ) -> Result<(usize, Option<Token>), StoreError> {
        self.mem.visit(tokens, after, limit, visit)
    }

    fn take_range(
        &mut self,
        tokens: RangeInclusive<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        // Exactly the entries deleted from the tree leave memory: the ones
        // `scan` gives (up to `limit`, all keys of a token together), so
        // the two copies never differ.
        let mut doomed = Vec::new();
        self.mem.scan(tokens, None, limit, &mut doomed)?;
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::with_capacity(doomed.len());
        for e in &doomed {
            batch.delete(e.token, e.key.clone());
        }
        self.engine
            .write(batch, Durability::NoSync)
            .map_err(store_err)?;
        let n = doomed.len();
        for e in doomed {
            self.mem.delete(e.token, &e.key)?;
            out.push(e);
        }
        Ok(n)
    }

    fn len(&self) -> usize {
        self.mem.len()
    }

    fn load(&mut self, tokens: RangeInclusive<Token>) -> Result<(), StoreError> {
        const PAGE: usize = 4096;
        let mut page = Vec::with_capacity(PAGE);
        let mut after = None;
        loop {
            page.clear();
            self.engine
                .scan(tokens.clone(), after, PAGE, &mut page)
                .map_err(store_err)?;
            let Some(last) = page.last() else { break };
            after = Some(last.token);
            let done = page.len() < PAGE;
            for e in page.drain(..) {
                let entry = decode(&self.engine, &e.key, &e.value)?;
                self.mem.put(e.token, e.key, entry)?;
            }
            if done {
                break;
            }
        }
        Ok(())
    }

    fn revert(
        &mut self,
        token: Token,
        key: Bytes,
        old: Option<Entry>,
    ) -> Result<Option<Entry>, StoreError> {
        // The undone write never reached the tree: memory only.
        self.mem.revert(token, key, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cluster, ClusterConfig, ClusterError, Placement};

    /// The disk backend with an fsync that fails, once armed, as a failing
    /// device's does (EIO), for the `--fsync always` acknowledgement path.
    struct FailingSync(DiskBackend, Arc<std::sync::atomic::AtomicBool>);

    impl Backend for FailingSync {
        fn open_node(
            &self,
            id: &NodeId,
            stripes: usize,
            fresh: bool,
        ) -> Result<Vec<Box<dyn Store>>, StoreError> {
            self.0.open_node(id, stripes, fresh)
        }
        fn drop_node(&self, id: &NodeId) -> Result<(), StoreError> {
            self.0.drop_node(id)
        }
        fn stored_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
            self.0.stored_nodes()
        }
        fn persistent(&self) -> bool {
            true
        }
        fn records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.0.records()
        }
        fn write_records(&self, writes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
            self.0.write_records(writes)
        }
        fn sync_acks(&self) -> bool {
            self.0.sync_acks()
        }
        fn sync(&self) -> Result<(), StoreError> {
            if !self.1.load(std::sync::atomic::Ordering::SeqCst) {
                return self.0.sync();
            }
            Err(store_err(PersistError::Write {
                path: self.0.dir.path().to_path_buf(),
                source: fjall::Error::Io(std::io::Error::from_raw_os_error(5)),
            }))
        }
        fn location(&self) -> Option<String> {
            self.0.location()
        }
    }

    #[test]
    fn a_failed_fsync_under_always_is_not_an_acknowledgement_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let backend = FailingSync(
            DiskBackend::open(dir.path(), FsyncPolicy::Always).unwrap(),
            armed.clone(),
        );
        let config = ClusterConfig {
            placement: Placement::BalancedPartitions { partitions: 64 },
            fsync: FsyncPolicy::Always,
            ..ClusterConfig::default()
        };
        let cluster = Cluster::with_backend(config, Arc::new(backend)).unwrap();
        cluster.add_node("n1").unwrap();
        armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = cluster.put("k", "v").unwrap_err();
        assert!(matches!(err, ClusterError::Storage { .. }), "{err:?}");
        let message = err.to_string();
        for words in [
            "not acknowledged",
            "Input/output error",
            &dir.path().display().to_string(),
            "restart",
        ] {
            assert!(message.contains(words), "{words:?} not in {message}");
        }
        // The OS error is kept as the source.
        let ClusterError::Storage { source, .. } = err else {
            unreachable!()
        };
        assert!(matches!(source, StoreError::Io { .. }), "{source:?}");
        // The outcome is unknown, and reads still work.
        assert!(cluster.get(b"k").is_ok());
    }

    #[test]
    fn take_range_removes_the_same_entries_from_the_tree_and_from_memory() {
        // Keys sharing a token (a hash tag) go together; the tree must lose
        // exactly what memory loses, or a later open brings keys back.
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId::new("n1");
        let tokens = crate::stripe_tokens(0, 1);
        let keys = |entries: &[StoredEntry]| -> Vec<Bytes> {
            entries.iter().map(|e| e.key.clone()).collect()
        };
        let served = {
            let backend = DiskBackend::open(dir.path(), FsyncPolicy::No).unwrap();
            let mut stores = backend.open_node(&id, 1, true).unwrap();
            let s = &mut stores[0];
            for (token, key) in [(1, "a"), (1, "b"), (1, "c"), (2, "d"), (3, "e")] {
                s.put(token, Bytes::from(key), Entry::string("v")).unwrap();
            }
            let mut out = Vec::new();
            let n = s.take_range(tokens.clone(), 2, &mut out).unwrap();
            assert_eq!(n, out.len());
            assert_eq!(keys(&out), ["a", "b", "c"], "all keys of a token together");
            let mut left = Vec::new();
            s.scan(tokens.clone(), None, usize::MAX, &mut left).unwrap();
            assert_eq!(s.len(), left.len());
            keys(&left)
        };
        assert_eq!(served, ["d", "e"]);
        let backend = DiskBackend::open(dir.path(), FsyncPolicy::No).unwrap();
        let mut stores = backend.open_node(&id, 1, false).unwrap();
        stores[0].load(tokens.clone()).unwrap();
        let mut reloaded = Vec::new();
        stores[0]
            .scan(tokens, None, usize::MAX, &mut reloaded)
            .unwrap();
        assert_eq!(keys(&reloaded), served, "the tree held what memory served");
    }

    #[test]
    fn a_node_tree_survives_reopening_and_a_fresh_open_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId::new("n1");
        {
            let backend = DiskBackend::open(dir.path(), FsyncPolicy::No).unwrap();
            let mut stores = backend.open_node(&id, 4, true).unwrap();
            let token = u64::MAX - 5; // the last stripe
            stores[3]
                .put(token, Bytes::from_static(b"k"), Entry::string("v"))
                .unwrap();
            assert_eq!(backend.stored_nodes().unwrap(), vec![id.clone()]);
        }
        let backend = DiskBackend::open(dir.path(), FsyncPolicy::No).unwrap();
        let mut stores = backend.open_node(&id, 4, false).unwrap();
        // Served from memory once loaded, as the cluster does at open.
        assert_eq!(stores[3].get(u64::MAX - 5, b"k").unwrap(), None);
        stores[3].load(crate::stripe_tokens(3, 4)).unwrap();
        assert_eq!(
            stores[3].get(u64::MAX - 5, b"k").unwrap().map(|e| e.value),
            Some(Bytes::from_static(b"v"))
        );
        drop(stores);
        let stores = backend.open_node(&id, 4, true).unwrap();
        assert_eq!(stores[3].get(u64::MAX - 5, b"k").unwrap(), None, "fresh");
        backend.drop_node(&id).unwrap();
        assert!(backend.stored_nodes().unwrap().is_empty());
    }
}
