//! [`PersistentStore`]: the cluster's [`Store`] trait over a
//! [`PersistentEngine`], and [`store_factory`], a [`StoreFactory`] that
//! gives each node one database shared by its lock stripes.
//!
//! Each value the engine keeps is a cluster [`Entry`](ringkv_cluster::Entry)
//! in its own byte layout ([`Entry::encode`](ringkv_cluster::Entry::encode)):
//! value, expiry, type tag and version travel to disk together.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ringkv_cluster::{Entry, NodeId, Store, StoreError, StoreFactory, StoredEntry, Token};

use crate::{Durability, PersistError, PersistentEngine};

/// One lock stripe of a node over the node's [`PersistentEngine`].
///
/// The stripe sees only the tokens the cluster routes to it, so it counts
/// its own entries: it starts empty, as every store a cluster creates
/// today does.
#[derive(Debug)]
pub struct PersistentStore {
    engine: PersistentEngine,
    durability: Durability,
    len: usize,
}

impl PersistentStore {
    /// An empty stripe over `engine`, writing with `durability`.
    pub fn new(engine: PersistentEngine, durability: Durability) -> PersistentStore {
        PersistentStore {
            engine,
            durability,
            len: 0,
        }
    }
}

/// The trait's error carries a message only: keep the whole chain in it.
fn store_err(e: PersistError) -> StoreError {
    StoreError::Engine(chain(&e))
}

/// `e`'s message followed by those of its sources not already in it.
fn chain(e: &PersistError) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    message
}

/// A stored value that does not decode is corruption: say so, never guess.
fn decode(bytes: &Bytes) -> Result<Entry, StoreError> {
    Entry::decode(bytes).map_err(|e| StoreError::Engine(e.to_string()))
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    entry.encode(&mut out);
    out
}

fn stored(e: crate::Entry) -> Result<StoredEntry, StoreError> {
    Ok(StoredEntry {
        token: e.token,
        entry: decode(&e.value)?,
        key: e.key,
    })
}

impl Store for PersistentStore {
    fn get(&self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let value = self.engine.get(token, key).map_err(store_err)?;
        value.as_ref().map(decode).transpose()
    }

    fn put(&mut self, token: Token, key: Bytes, entry: Entry) -> Result<Option<Entry>, StoreError> {
        let previous = self.get(token, &key)?;
        self.engine
            .put(token, &key, &encode(&entry), self.durability)
            .map_err(store_err)?;
        if previous.is_none() {
            self.len += 1;
        }
        Ok(previous)
    }

    fn delete(&mut self, token: Token, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let previous = self.get(token, key)?;
        if previous.is_some() {
            self.engine
                .delete(token, key, self.durability)
                .map_err(store_err)?;
            self.len = self.len.saturating_sub(1);
        }
        Ok(previous)
    }

    fn scan(
        &self,
        tokens: RangeInclusive<Token>,
        after: Option<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        let mut entries = Vec::new();
        self.engine
            .scan(tokens, after, limit, &mut entries)
            .map_err(store_err)?;
        for e in entries {
            out.push(stored(e)?);
        }
        Ok(())
    }

    fn take_range(
        &mut self,
        tokens: RangeInclusive<Token>,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        let mut entries = Vec::new();
        let n = self
            .engine
            .take_range(tokens, limit, &mut entries, self.durability)
            .map_err(store_err)?;
        self.len = self.len.saturating_sub(n);
        for e in entries {
            out.push(stored(e)?);
        }
        Ok(n)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A stripe whose database could not be opened: every call fails with the
/// open error, so the node's clients get it instead of a panic.
#[derive(Debug)]
struct Unopened(Arc<str>);

impl Unopened {
    fn err(&self) -> StoreError {
        StoreError::Engine(self.0.to_string())
    }
}

impl Store for Unopened {
    fn get(&self, _: Token, _: &[u8]) -> Result<Option<Entry>, StoreError> {
        Err(self.err())
    }
    fn put(&mut self, _: Token, _: Bytes, _: Entry) -> Result<Option<Entry>, StoreError> {
        Err(self.err())
    }
    fn delete(&mut self, _: Token, _: &[u8]) -> Result<Option<Entry>, StoreError> {
        Err(self.err())
    }
    fn scan(
        &self,
        _: RangeInclusive<Token>,
        _: Option<Token>,
        _: usize,
        _: &mut Vec<StoredEntry>,
    ) -> Result<(), StoreError> {
        Err(self.err())
    }
    fn take_range(
        &mut self,
        _: RangeInclusive<Token>,
        _: usize,
        _: &mut Vec<StoredEntry>,
    ) -> Result<usize, StoreError> {
        Err(self.err())
    }
    fn len(&self) -> usize {
        0
    }
}

/// The database a node's stripes are being given by [`store_factory`].
#[derive(Default)]
struct Handing {
    /// The database (or why it did not open), until every stripe has it.
    engine: Option<Result<PersistentEngine, Arc<str>>>,
    /// Stripes that got it.
    handed: usize,
    /// Databases this node id has had, naming the next directory.
    generation: usize,
}

/// A [`StoreFactory`] for `Cluster::with_store` that keeps node `id`'s
/// data in a fresh database under `root`, shared by its `stripes` stores.
///
/// The factory is called `stripes` times per node (once per lock stripe),
/// without the stripe's number, and the cluster does not reopen data yet:
/// so each run of `stripes` calls for one id opens a new directory
/// `root/<id>-<n>`. A database that cannot be opened gives stores that
/// fail every call with the open error (the factory cannot fail today).
/// Both go when the factory learns the node and stripe and may fail.
pub fn store_factory(root: PathBuf, stripes: usize, durability: Durability) -> StoreFactory {
    // Per node id; the lock makes each call's read-modify-write of the
    // node's entry atomic (add_node calls the factory from one thread, but
    // the factory is shared).
    let open: Mutex<HashMap<NodeId, Handing>> = Mutex::new(HashMap::new());
    Arc::new(move |id: &NodeId| {
        let mut open = open.lock().expect("no panic while the factory map is held");
        let Handing {
            engine,
            handed,
            generation,
        } = open.entry(id.clone()).or_default();
        let engine = match engine {
            Some(engine) => engine.clone(),
            None => {
                let dir = root.join(format!("{id}-{generation}"));
                *generation += 1;
                let opened = PersistentEngine::open(&dir).map_err(|e| {
                    tracing::error!(node = %id, error = %e, "node store not opened");
                    Arc::<str>::from(chain(&e))
                });
                *engine = Some(opened.clone());
                opened
            }
        };
        *handed += 1;
        if *handed == stripes {
            // The node's stripes now hold the only clones: removing the
            // node closes its database.
            *open.get_mut(id).expect("entry made above") = Handing {
                generation: *generation,
                ..Handing::default()
            };
        }
        match engine {
            Ok(engine) => Box::new(PersistentStore::new(engine, durability)) as Box<dyn Store>,
            Err(message) => Box::new(Unopened(message)),
        }
    })
}
