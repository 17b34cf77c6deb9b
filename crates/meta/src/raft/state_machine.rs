//! The metadata state machine as openraft's `RaftStateMachine`: committed
//! entries go through [`MetaState::apply`], snapshots are
//! [`MetaState::encode`].

// The error type is openraft's `StorageError`, which its storage traits
// return; the helpers here build it where it arises rather than box it
// only to unbox it at the trait boundary.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use ringkv_persist::{DataDir, Durability};
use tokio::sync::watch;

use super::TypeConfig;
use crate::command::{Rejected, Response};
use crate::state::MetaState;

type NodeId = u64;

/// The applied metadata and its latest snapshot. Clones share them; a node
/// reads the state through [`MetaStore::state`] and waits for epochs with
/// [`MetaStore::subscribe`].
///
/// Opened on a data directory ([`MetaStore::open`]), it keeps its latest
/// snapshot there: a restart starts from that snapshot and openraft
/// applies the committed entries after it again (the log is durable, see
/// [`DiskLogStore`](super::DiskLogStore)), so the state itself need not be
/// written on every apply.
#[derive(Debug, Clone)]
pub struct MetaStore {
    /// A std mutex, not a tokio one: nothing awaits while it is held; it is
    /// held to apply a batch of entries or to copy the state out.
    inner: Arc<Mutex<Inner>>,
    /// The applied epoch, published after every applied batch.
    epoch: Arc<watch::Sender<u64>>,
    /// Where snapshots are kept (`None`: in memory), and the last log id
    /// of the one kept there. openraft builds snapshots in a task of their
    /// own, so a build that read the state before an install may finish
    /// after it: the mutex orders the writes, and an older snapshot never
    /// replaces a newer one (the log may be purged up to the newer one).
    dir: Option<DataDir>,
    kept: Arc<Mutex<Option<LogId<NodeId>>>>,
}

/// Records of the latest snapshot: its meta (JSON) and its data
/// ([`MetaState::encode`]), written together.
const SNAPSHOT_META: &[u8] = b"raft/snapshot-meta";
const SNAPSHOT_DATA: &[u8] = b"raft/snapshot-data";

#[derive(Debug, Default)]
struct Inner {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    state: MetaState,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    /// Snapshots built so far by this store: part of their ids.
    built: u64,
}

impl Default for MetaStore {
    fn default() -> Self {
        MetaStore {
            inner: Arc::default(),
            epoch: Arc::new(watch::channel(0).0),
            dir: None,
            kept: Arc::default(),
        }
    }
}

impl MetaStore {
    /// The store of a node with a data directory: starts from the snapshot
    /// kept there, if any, and keeps every later one there.
    pub fn open(dir: &DataDir) -> Result<MetaStore, StorageError<NodeId>> {
        let read = |key: &[u8]| {
            dir.record(key)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))
        };
        let mut store = MetaStore {
            dir: Some(dir.clone()),
            ..MetaStore::default()
        };
        let (Some(meta), Some(data)) = (read(SNAPSHOT_META)?, read(SNAPSHOT_DATA)?) else {
            return Ok(store);
        };
        let damaged = |what: String| {
            StorageIOError::read_snapshot(
                None,
                &std::io::Error::other(format!(
                    "the Raft snapshot in {} {what}; restore the directory from a backup, or \
                     remove the node and join it afresh",
                    dir.path().display()
                )),
            )
        };
        let meta: SnapshotMeta<NodeId, BasicNode> = serde_json::from_slice(&meta)
            .map_err(|e| damaged(format!("has a meta record that does not decode ({e})")))?;
        let state =
            MetaState::decode(&data).map_err(|e| damaged(format!("does not decode ({e})")))?;
        let epoch = state.epoch;
        {
            let inner = Arc::get_mut(&mut store.inner).expect("not shared yet");
            let inner = inner.get_mut().unwrap_or_else(|e| e.into_inner());
            inner.state = state;
            inner.last_applied = meta.last_log_id;
            inner.last_membership = meta.last_membership.clone();
            *store.kept.lock().unwrap_or_else(|e| e.into_inner()) = meta.last_log_id;
            inner.snapshot = Some((meta, data.to_vec()));
        }
        store.publish(epoch);
        Ok(store)
    }

    /// Keeps the snapshot `(meta, data)` in the data directory, if any.
    fn keep(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_some() && *kept >= meta.last_log_id {
            return Ok(());
        }
        let encoded = serde_json::to_vec(meta).expect("snapshot metas serialise");
        dir.write_records(
            &[(SNAPSHOT_META, Some(&encoded)), (SNAPSHOT_DATA, Some(data))],
            Durability::NoSync,
        )
        .and_then(|()| dir.sync())
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *kept = meta.last_log_id;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change to `Inner` completes before the lock is released or
        // is a plain assignment, so a poisoned lock holds a whole state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the applied state.
    pub fn state(&self) -> MetaState {
        self.lock().state.clone()
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.lock().last_applied
    }

    /// The applied epoch, updated after every applied batch: a node that
    /// must decide at a sender's epoch waits on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    fn publish(&self, epoch: u64) {
        self.epoch.send_replace(epoch);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.lock();
        let data = inner.state.encode();
        inner.built += 1;
        let snapshot_id = match inner.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, inner.built),
            None => format!("--{}", inner.built),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.last_membership.clone(),
            snapshot_id,
        };
        // An install may have put a newer snapshot here since this build
        // read the state: keep that one.
        let newer = inner
            .snapshot
            .as_ref()
            .is_some_and(|(m, _)| m.last_log_id > meta.last_log_id);
        if !newer {
            inner.snapshot = Some((meta.clone(), data.clone()));
        }
        drop(inner);
        self.keep(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let inner = self.lock();
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut answers = Vec::new();
        let epoch = {
            let mut inner = self.lock();
            for entry in entries {
                inner.last_applied = Some(entry.log_id);
                answers.push(match entry.payload {
                    EntryPayload::Normal(command) => inner.state.apply(&command),
                    EntryPayload::Membership(membership) => {
                        inner.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        // No client waits for this answer.
                        Err(Rejected::NoChange)
                    }
                    // A new leader's first entry; no client waits for it.
                    EntryPayload::Blank => Err(Rejected::NoChange),
                });
            }
            inner.state.epoch
        };
        self.publish(epoch);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state = MetaState::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let epoch = state.epoch;
        self.keep(meta, &data)?;
        {
            let mut inner = self.lock();
            inner.state = state;
            inner.last_applied = meta.last_log_id;
            inner.last_membership = meta.last_membership.clone();
            inner.snapshot = Some((meta.clone(), data));
        }
        self.publish(epoch);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.lock().snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
