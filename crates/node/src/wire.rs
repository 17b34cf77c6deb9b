//! The messages node processes exchange over the peer transport (JSON
//! bodies; the Raft RPCs are `ringkv_meta::raft`'s).

use bytes::Bytes;
use ringkv_meta::{Command, Response};
use serde::{Deserialize, Serialize};

/// `Propose`: a metadata command for the leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct Propose {
    /// The command.
    pub command: Command,
}

/// What a `Propose` came to.
#[derive(Debug, Serialize, Deserialize)]
pub enum Proposed {
    /// Committed and applied, with the state machine's answer.
    Applied(Response),
    /// This node is not the leader; the leader's peer address if known.
    NotLeader(Option<String>),
}

/// `Forward`: client requests for the node that serves their keys, in
/// groups, one call for them all (see `crate::batch`). Each group is one
/// connection's requests, which the receiver runs in order; groups run
/// concurrently.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forward {
    /// The groups.
    pub groups: Vec<ForwardGroup>,
}

/// One connection's requests in a [`Forward`] call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardGroup {
    /// The sender's epoch when it routed them: the receiver catches up to
    /// it before deciding.
    pub epoch: u64,
    /// The client's protocol (2 or 3), in which the replies are encoded.
    pub protocol: u8,
    /// Whether a request may wait on the receiver (for a fence to lift, or
    /// the receiver's view to catch up). A group that may not stops at such
    /// a request instead ([`Stop::Later`]): the groups of a call share its
    /// answer, so one waiting would hold them all.
    pub wait: bool,
    /// The requests, each command name first.
    pub requests: Vec<Vec<Bytes>>,
}

impl ForwardGroup {
    /// About the bytes it takes in a call.
    pub fn size(&self) -> usize {
        self.requests
            .iter()
            .flatten()
            .map(|w| w.len() + 8)
            .sum::<usize>()
            + 16
    }
}

/// What a [`ForwardGroup`] came to: the replies of its first requests, in
/// order; then, if `stop` is set, why the next one did not run. No later
/// request of the group ran either.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupAnswer {
    /// The encoded replies of the requests that ran.
    pub replies: Vec<Bytes>,
    /// Why the group stopped short.
    pub stop: Option<Stop>,
}

/// Why a [`ForwardGroup`] stopped short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// The receiver does not serve the request's keys at `epoch`; `node`
    /// does, as far as it knows.
    Moved {
        /// The receiver's epoch.
        epoch: u64,
        /// Who serves the keys, as the receiver sees it.
        node: String,
    },
    /// The request would have waited, and the group may not
    /// ([`ForwardGroup::wait`]).
    Later,
}

/// Where a copy stands: the range (its index in the plan) and the token
/// to read next in it (`None`: from its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The range's index in the change's plan.
    pub range: usize,
    /// The next token to read in it.
    pub token: Option<u64>,
}

/// `RangeScan`: the next page of every range of change `change` that moves
/// from the called node to `target`, in plan order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Scan {
    /// The change.
    pub change: u64,
    /// The node the ranges move to.
    pub target: String,
    /// The epoch of the target's view when it began the pull (the source
    /// waits for it: its recording of writes has started, and it sees the
    /// ranges copying as the target does).
    pub epoch: u64,
    /// Where to go on (`None`: from the first range).
    pub cursor: Option<Cursor>,
    /// Entries per page, about.
    pub count: usize,
}

/// One page of a copy.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanPage {
    /// Identifies the source's recording of writes for the change: the
    /// last shipment must come from the same recording, or writes may have
    /// been missed (the source restarted).
    pub tracker: u64,
    /// Keys and encoded entries (`ringkv_cluster::Entry::encode`), packed
    /// by [`pack`].
    pub entries: Bytes,
    /// Where to go on, `None` when every range is done.
    pub next: Option<Cursor>,
}

/// Appends one entry to a copy's page: the key's length (u32,
/// little-endian), the key, the encoded entry's length (u32), the entry,
/// as `encode` writes it. A page is one buffer, not two vectors per entry:
/// the source packs it under the stripe's read lock and the target reads
/// it in place.
pub fn pack(page: &mut Vec<u8>, key: &[u8], encode: impl FnOnce(&mut Vec<u8>)) {
    page.extend_from_slice(&len32(key.len()).to_le_bytes());
    page.extend_from_slice(key);
    let at = page.len();
    page.extend_from_slice(&[0; 4]);
    encode(page);
    let n = len32(page.len() - at - 4);
    page[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("a key or an entry is far under 4 GiB (the frame limit)")
}

/// The `(key, encoded entry)` pairs of a page [`pack`] wrote, in order; an
/// error names the offset where the page stops making sense.
pub fn unpack(page: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), String>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= page.len() {
            return None;
        }
        let mut field = || -> Result<&[u8], String> {
            let n = page
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| format!("a copy's page is truncated at byte {at}"))?;
            let bytes = page.get(at + 4..at + 4 + n).ok_or_else(|| {
                format!("a copy's page is truncated at byte {at}: a field of {n} bytes")
            })?;
            at += 4 + n;
            Ok(bytes)
        };
        let pair = field().and_then(|key| Ok((key, field()?)));
        if pair.is_err() {
            at = page.len();
        }
        Some(pair)
    })
}

/// `RangeShip`: the last changes of fenced ranges, from their source.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ship {
    /// The change.
    pub change: u64,
    /// The ranges.
    pub ranges: Vec<usize>,
    /// The epoch of the fence (the source waits to have applied it).
    pub epoch: u64,
    /// The recording the target's copy came from.
    pub tracker: u64,
    /// Go on after this key (keys ship in byte order, a bounded part at a
    /// time; `None`: from the first).
    pub after: Option<Vec<u8>>,
}

/// The last changes: each written key's entry now, or `None` if it is
/// absent (deleted) now.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shipment {
    /// Keys and their encoded entries, or `None`.
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// More keys follow: ask again after the last one.
    pub more: bool,
}

/// `RangePull`: the coordinator tells a target to pull ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pull {
    /// The change.
    pub change: u64,
    /// The ranges (each has this node as its target).
    pub ranges: Vec<usize>,
    /// The epoch the coordinator saw (the target waits for it).
    pub epoch: u64,
    /// What the target does with them.
    pub kind: PullKind,
}

/// What a target does with the ranges of a [`Pull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PullKind {
    /// A full copy of copying ranges (its old copy of them cleared first).
    Copy,
    /// The last changes of fenced ranges, onto the copy.
    LastChanges,
    /// Clears its copy of dropped ranges (their source is down), before
    /// they switch and it serves them empty.
    Clear,
}

/// The target's answer to `RangePull`: the pull runs on the target, and
/// the coordinator asks again, with the same request, until it is done.
#[derive(Debug, Serialize, Deserialize)]
pub enum PullAnswer {
    /// The pull ended, with what it moved.
    Done(Pulled),
    /// The pull is still running.
    Running,
}

/// What a pull moved.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Pulled {
    /// Entries written.
    pub keys: u64,
    /// Keys deleted (last changes only).
    pub deleted: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// `Status`: what a node says about itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Its id.
    pub id: String,
    /// The epoch of its view.
    pub epoch: u64,
    /// Keys in its local store (served or not).
    pub keys: u64,
    /// Its Raft log's last applied index.
    pub applied: u64,
    /// Its Raft log's last index.
    pub last_log: u64,
    /// Whether it is the Raft leader.
    pub leader: bool,
    /// Whether it serves clients (caught up with the log after a start).
    pub ready: bool,
}

/// `Keys`: the keys the receiver serves in token intervals, for a page of
/// `SCAN` or `KEYS` on another node (`crate::keyspace`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysRequest {
    /// The sender's epoch: the receiver reaches it before reading.
    pub epoch: u64,
    /// Runs of tokens, each `(first, last)`, in token order.
    pub intervals: Vec<(u64, u64)>,
    /// About how many keys to read (whole tokens are read).
    pub limit: usize,
}

/// What a [`KeysRequest`] read: its keys, in token order, up to `next`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysPage {
    /// The live keys read.
    pub keys: Vec<Bytes>,
    /// Where reading stopped, if it stopped short of the last interval's
    /// end: the limit was reached, or (`moved`) the receiver does not serve
    /// this token.
    pub next: Option<u64>,
    /// The receiver's epoch, when it stopped at a token it does not serve.
    pub moved: Option<u64>,
}

/// What a `Count` (sent with the sender's epoch) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counted {
    /// The keys the receiver serves at that epoch.
    Keys(u64),
    /// The receiver is at this newer epoch: count again from there.
    Moved(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_gives_back_its_pairs_in_order_and_names_where_it_is_cut() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..50u8)
            .map(|i| (vec![i; usize::from(i % 7)], vec![i ^ 0x55; usize::from(i)]))
            .collect();
        let mut page = Vec::new();
        for (key, entry) in &pairs {
            pack(&mut page, key, |out| out.extend_from_slice(entry));
        }
        let got: Vec<(Vec<u8>, Vec<u8>)> = unpack(&page)
            .map(|p| p.map(|(k, e)| (k.to_vec(), e.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, pairs);
        assert_eq!(unpack(&[]).count(), 0);
        // Cut anywhere inside the last pair: the pairs before it, then one
        // error naming the byte where the cut pair starts, then nothing.
        let last = page.len() - (8 + pairs[49].0.len() + pairs[49].1.len());
        for cut in last + 1..page.len() {
            let read: Vec<_> = unpack(&page[..cut]).collect();
            assert_eq!(read.len(), 50, "cut at {cut}");
            assert!(read[..49].iter().all(Result::is_ok));
            let err = read[49].as_ref().unwrap_err();
            assert!(err.contains("truncated"), "{err}");
        }
    }
}
