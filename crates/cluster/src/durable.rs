//! The cluster's records in a persistent backend, and what a restart
//! makes of them: plain data and pure functions, no locks or I/O.
//!
//! Records (keys under the backend's cluster prefix):
//! - `ring`: the committed ring ([`Ring::to_json`]), written when a change
//!   finishes or rolls back, and by the removal of the last node;
//! - `change`: the membership change in flight ([`ChangeRecord`]), written
//!   before its first copy and deleted by the write that commits its end;
//! - `switched/<i>`: range `i` of that change's plan has switched to its
//!   target, written under the range's stripe locks after the writes that
//!   completed the target's copy.
//!
//! The backend keeps a prefix of all writes in order (see
//! `crate::backend::Backend`), so after any crash: a range recorded as
//! switched has its complete copy on the target, and a range not recorded
//! is still served by its source, which holds its latest value. That makes
//! [`recovery`] a function of the records alone.

use std::collections::BTreeSet;

use ringkv_ring::{NodeId, Ring};
use serde::{Deserialize, Serialize};

use crate::report::ChangeKind;

/// The committed ring's record.
pub(crate) const RING: &str = "ring";
/// The change in flight's record.
pub(crate) const CHANGE: &str = "change";
/// Prefix of the switched-range records.
pub(crate) const SWITCHED: &str = "switched/";
/// The `format` of [`ChangeRecord`]s this version writes and reads.
const CHANGE_FORMAT: &str = "ringkv-change/1";

/// The key of range `i`'s switched record (zero-padded: key order is
/// range order).
pub(crate) fn switched_key(i: usize) -> String {
    format!("{SWITCHED}{i:010}")
}

/// A membership change in flight, as recorded before its first copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeRecord {
    format: String,
    /// `add_node` or `remove_node`.
    pub(crate) kind: String,
    pub(crate) node: String,
    pub(crate) force: bool,
    /// The ring before the change ([`Ring::to_json`]).
    pub(crate) from: String,
    /// The ring the change moves to.
    pub(crate) to: String,
}

impl ChangeRecord {
    pub(crate) fn new(
        kind: ChangeKind,
        node: &NodeId,
        force: bool,
        from: &Ring,
        to: &Ring,
    ) -> Self {
        ChangeRecord {
            format: CHANGE_FORMAT.into(),
            kind: kind.as_str().into(),
            node: node.as_str().into(),
            force,
            from: from.to_json(),
            to: to.to_json(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serialises")
    }
}

/// The records of a data directory, read back.
#[derive(Debug, Default)]
pub(crate) struct Records {
    pub(crate) ring: Option<Ring>,
    pub(crate) change: Option<Recorded>,
}

/// A change in flight, read back.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) kind: ChangeKind,
    pub(crate) node: NodeId,
    pub(crate) force: bool,
    pub(crate) from: Ring,
    pub(crate) to: Ring,
    /// Ranges of `from.diff(&to)` recorded as switched.
    pub(crate) switched: BTreeSet<usize>,
}

/// Why records could not be read: damaged, or from a newer version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster record `{key}` is unreadable: {reason}")]
pub(crate) struct BadRecord {
    pub(crate) key: String,
    pub(crate) reason: String,
}

/// Parses the records `(key, value)` of a backend.
pub(crate) fn parse(records: &[(String, Vec<u8>)]) -> Result<Records, BadRecord> {
    let bad = |key: &str, reason: String| BadRecord {
        key: key.into(),
        reason,
    };
    let text = |key: &str, value: &[u8]| {
        std::str::from_utf8(value)
            .map(str::to_string)
            .map_err(|e| bad(key, e.to_string()))
    };
    let ring_of =
        |key: &str, json: &str| Ring::from_json(json).map_err(|e| bad(key, e.to_string()));
    let mut out = Records::default();
    let mut change: Option<ChangeRecord> = None;
    let mut switched = BTreeSet::new();
    for (key, value) in records {
        if key == RING {
            out.ring = Some(ring_of(key, &text(key, value)?)?);
        } else if key == CHANGE {
            let record: ChangeRecord =
                serde_json::from_slice(value).map_err(|e| bad(key, e.to_string()))?;
            if record.format != CHANGE_FORMAT {
                return Err(bad(
                    key,
                    format!(
                        "format `{}` is not `{CHANGE_FORMAT}`; run the ringkv version that wrote it",
                        record.format
                    ),
                ));
            }
            change = Some(record);
        } else if let Some(i) = key.strip_prefix(SWITCHED) {
            let i: usize = i
                .parse()
                .map_err(|_| bad(key, "not a range number".into()))?;
            switched.insert(i);
        } else {
            return Err(bad(
                key,
                "unknown record; written by a newer ringkv?".into(),
            ));
        }
    }
    if let Some(c) = change {
        let kind = match c.kind.as_str() {
            "add_node" => ChangeKind::AddNode,
            "remove_node" => ChangeKind::RemoveNode,
            other => return Err(bad(CHANGE, format!("unknown kind `{other}`"))),
        };
        NodeId::validate(&c.node).map_err(|e| bad(CHANGE, e.to_string()))?;
        let (from, to) = (ring_of(CHANGE, &c.from)?, ring_of(CHANGE, &c.to)?);
        let moves = from.diff(&to).moves.len();
        if let Some(&i) = switched.iter().find(|&&i| i >= moves) {
            return Err(bad(
                &switched_key(i),
                format!("the change has {moves} ranges"),
            ));
        }
        out.change = Some(Recorded {
            kind,
            node: NodeId::new(c.node),
            force: c.force,
            from,
            to,
            switched,
        });
    } else if let Some(&i) = switched.first() {
        return Err(bad(&switched_key(i), "no change is recorded".into()));
    }
    Ok(out)
}

/// What a restart does with a recorded change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// No change was in flight: serve `ring`.
    Steady,
    /// The change stopped before its commit point (no range switched):
    /// serve its old membership under the epoch after the abandoned ring's,
    /// as a rollback does, and forget it.
    RollBack,
    /// The change passed its commit point: copy again every range not
    /// switched (its source kept serving it, so the target's copy may be
    /// stale), switch them, and finish.
    Resume,
}

/// Decides what a restart does with `records`.
pub(crate) fn recovery(records: &Records) -> Recovery {
    match &records.change {
        None => Recovery::Steady,
        Some(c) if c.switched.is_empty() => Recovery::RollBack,
        Some(_) => Recovery::Resume,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> Ring {
        ids.iter()
            .fold(Ring::default(), |r, id| r.with_node(*id, 1).unwrap())
    }

    fn rec(key: &str, value: &[u8]) -> (String, Vec<u8>) {
        (key.into(), value.to_vec())
    }

    #[test]
    fn a_change_reads_back_as_written_and_decides_its_recovery() {
        let (from, to) = (ring(&["a", "b"]), ring(&["a", "b", "c"]));
        let record = ChangeRecord::new(ChangeKind::AddNode, &"c".into(), false, &from, &to);
        let mut records = vec![
            rec(RING, from.to_json().as_bytes()),
            rec(CHANGE, &record.encode()),
        ];
        let parsed = parse(&records).unwrap();
        assert_eq!(recovery(&parsed), Recovery::RollBack);
        let c = parsed.change.unwrap();
        assert_eq!(
            (c.kind, c.node.as_str(), c.force),
            (ChangeKind::AddNode, "c", false)
        );
        assert_eq!(c.to.epoch(), to.epoch());
        assert_eq!(c.from.diff(&c.to), from.diff(&to), "the same plan");

        records.push(rec(&switched_key(0), b""));
        assert_eq!(recovery(&parse(&records).unwrap()), Recovery::Resume);
        assert_eq!(recovery(&parse(&records[..1]).unwrap()), Recovery::Steady);
    }

    #[test]
    fn damaged_or_unknown_records_are_refused_by_name() {
        let from = ring(&["a"]);
        type Case = (Vec<(String, Vec<u8>)>, &'static str);
        let cases: Vec<Case> = vec![
            (vec![rec(RING, b"{not json")], "ring"),
            (vec![rec(CHANGE, b"{}")], "change"),
            (vec![rec("future", b"")], "future"),
            (vec![rec(&switched_key(3), b"")], "switched/0000000003"),
            (
                vec![
                    rec(
                        CHANGE,
                        &ChangeRecord::new(
                            ChangeKind::AddNode,
                            &"b".into(),
                            false,
                            &from,
                            &ring(&["a", "b"]),
                        )
                        .encode(),
                    ),
                    rec(&switched_key(999_999), b""),
                ],
                "switched/0000999999",
            ),
        ];
        for (records, key) in cases {
            let err = parse(&records).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}
