//! The metadata state: what every node derives from the committed log, and
//! the queries routing asks of it. Transitions are in [`crate::apply`].

use std::collections::BTreeMap;

use ringkv_ring::{Ring, Token, key_token};
use serde::{Deserialize, Serialize};

use crate::change::{Change, Phase};
use crate::member::{Lifecycle, Member};
use crate::serial::ring_json_opt;

/// The `format` of a serialised state ([`MetaState::encode`]).
pub const META_FORMAT: &str = "ringkv-meta/1";

/// The Raft id of the node that bootstraps the cluster (`--init`): it
/// initialises its Raft group with this id before the first command.
pub const FIRST_RAFT_ID: u64 = 1;

/// The cluster's metadata: membership, the ring in force, the change in
/// flight. Plain data; every replica that applies the same commands in the
/// same order holds an equal state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaState {
    /// Grows by one with every applied command (rejected ones do not
    /// count). Requests carry it; a node whose epoch is behind the
    /// sender's waits to catch up before it decides.
    pub epoch: u64,
    /// The ring in force outside the change in flight (`None` before
    /// `Bootstrap`). Its own epoch is the epoch at which it came into force.
    #[serde(with = "ring_json_opt")]
    pub ring: Option<Ring>,
    /// Members by id: joining, up and leaving ones.
    pub members: BTreeMap<String, Member>,
    /// The membership change in flight.
    pub change: Option<Change>,
    /// The Raft id the next admitted member gets.
    pub next_raft_id: u64,
    /// The number the next change gets.
    pub next_change: u64,
}

impl PartialEq for MetaState {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.members == other.members
            && self.change == other.change
            && self.next_raft_id == other.next_raft_id
            && self.next_change == other.next_change
            && match (&self.ring, &other.ring) {
                (None, None) => true,
                (Some(a), Some(b)) => a.epoch() == b.epoch() && a.to_json() == b.to_json(),
                _ => false,
            }
    }
}

impl Eq for MetaState {}

/// Who serves a token now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving<'a> {
    /// The node that serves it.
    pub node: &'a str,
    /// The token's range is fenced at that node: reads are served, writes
    /// wait for the switch (then go to the new owner) or for the fence to
    /// lift.
    pub fenced: bool,
    /// That node is marked down, or the token's range was dropped by a
    /// forced removal and is not switched yet: the key is unavailable
    /// (`CLUSTERDOWN`), at that node too.
    pub down: bool,
    /// The token's range was dropped (its source, `node`, gave its keys up)
    /// and waits for its target to clear it: nobody serves it, even if
    /// `node` is marked up again meanwhile.
    pub dropped: bool,
}

/// Why a serialised state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable metadata state: {reason}")]
pub struct DecodeError {
    /// What was wrong.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<S> {
    format: String,
    state: S,
}

impl MetaState {
    /// An empty state: no cluster yet.
    pub fn new() -> Self {
        MetaState::default()
    }

    /// Whether `Bootstrap` was applied.
    pub fn is_initialised(&self) -> bool {
        self.ring.is_some()
    }

    /// The ring the cluster is moving to: the change's target ring during a
    /// change, the ring in force otherwise.
    pub fn target_ring(&self) -> Option<&Ring> {
        match &self.change {
            Some(c) => Some(&c.to),
            None => self.ring.as_ref(),
        }
    }

    /// Who serves `token` now: inside a moving range, its source until the
    /// range switches and its target after; elsewhere its owner on the
    /// ring. `None` while the ring is empty.
    pub fn serving(&self, token: Token) -> Option<Serving<'_>> {
        let (node, phase) = match &self.change {
            Some(change) => match change.find(token) {
                Some(i) => {
                    let r = &change.ranges[i];
                    (r.authority(), Some(r.phase))
                }
                None => (change.to.owner_of_token(token)?.as_str(), None),
            },
            None => (self.ring.as_ref()?.owner_of_token(token)?.as_str(), None),
        };
        let dropped = phase == Some(Phase::Dropped);
        let down = dropped || self.members.get(node).is_none_or(|m| m.down);
        Some(Serving {
            node,
            fenced: phase == Some(Phase::Fenced),
            down,
            dropped,
        })
    }

    /// [`MetaState::serving`] for a key (by its token, hash tags included).
    pub fn serving_key(&self, key: &[u8]) -> Option<Serving<'_>> {
        self.serving(key_token(key))
    }

    /// The pending member whose change the coordinator should begin next:
    /// the one waiting longest (smallest `since`, then id), if no change is
    /// in flight.
    pub fn next_pending(&self) -> Option<&str> {
        if self.change.is_some() {
            return None;
        }
        self.members
            .iter()
            .filter(|(_, m)| !matches!(m.lifecycle, Lifecycle::Up))
            .min_by_key(|(id, m)| (m.since, id.as_str()))
            .map(|(id, _)| id.as_str())
    }

    /// The member with Raft id `raft_id`.
    pub fn member_by_raft_id(&self, raft_id: u64) -> Option<(&str, &Member)> {
        self.members
            .iter()
            .find(|(_, m)| m.raft_id == raft_id)
            .map(|(id, m)| (id.as_str(), m))
    }

    /// The state as a versioned JSON document (format [`META_FORMAT`]):
    /// what a Raft snapshot holds.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            format: META_FORMAT.to_string(),
            state: self,
        })
        .expect("plain data serialises")
    }

    /// Reads a state written by [`MetaState::encode`], refusing other
    /// formats.
    pub fn decode(bytes: &[u8]) -> Result<MetaState, DecodeError> {
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let bad = |e: serde_json::Error| DecodeError {
            reason: e.to_string(),
        };
        let format: Format = serde_json::from_slice(bytes).map_err(bad)?;
        if format.format != META_FORMAT {
            return Err(DecodeError {
                reason: format!(
                    "format `{}` is not `{META_FORMAT}`; run the ringkv version that wrote it",
                    format.format
                ),
            });
        }
        let envelope: Envelope<MetaState> = serde_json::from_slice(bytes).map_err(bad)?;
        Ok(envelope.state)
    }
}
