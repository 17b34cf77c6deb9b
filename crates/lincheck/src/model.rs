//! The register model: what each kind of operation requires of the register
//! and does to it, and the compact form of one key's operations that the
//! search works on.
//!
//! Every operation is reduced to a *requirement* on the register value just
//! before it takes effect (none, "holds some value", or "holds exactly this
//! value") and an *effect* (keep the value, or write one):
//!
//! | operation                        | requirement   | effect      |
//! |----------------------------------|---------------|-------------|
//! | `put(v)`                         | none          | write `v`   |
//! | `delete`, report not recorded    | none          | write `None`|
//! | `delete -> true`                 | some value    | write `None`|
//! | `delete -> false`                | exactly `None`| keep        |
//! | `get -> r`                       | exactly `r`   | keep        |
//! | `update: o -> w`, `w != o`       | exactly `o`   | write `w`   |
//! | `update: o -> o`                 | exactly `o`   | keep        |
//!
//! Operations that keep the value are *reads*, whatever their name: the
//! search treats a delete that found nothing, or an update that left the
//! key alone, exactly like a get. A delete's report is only used when its
//! outcome is known (a caller whose call failed never received it).

use std::collections::HashMap;
use std::hash::Hash;

use crate::history::Op;

/// Requirement: none (blind writes).
pub(crate) const ANY: u32 = u32::MAX - 1;
/// Requirement: the register holds some value (a delete that removed one).
pub(crate) const PRESENT: u32 = u32::MAX - 2;
/// Effect: the register is left as it is (reads).
pub(crate) const KEEP: u32 = u32::MAX;
/// Value id of an observed value that no operation ever wrote.
pub(crate) const NEVER_WRITTEN: u32 = u32::MAX;
/// Memo-key stand-in for any register value no pending operation requires.
pub(crate) const UNOBSERVABLE: u32 = u32::MAX;
/// Memo-key stand-in for `None` when no pending operation requires exactly
/// `None` but some require "holds some value": `None` must then stay
/// distinct from the unobservable values.
pub(crate) const UNOBSERVABLE_NONE: u32 = u32::MAX - 1;

/// A compact, sorted operation of one key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KOp {
    pub(crate) invoke: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub(crate) complete: u64,
    pub(crate) known: bool,
    /// Interned value the register must hold (0 = `None`), or [`ANY`] or
    /// [`PRESENT`].
    pub(crate) pre: u32,
    /// Interned value written, or [`KEEP`].
    pub(crate) post: u32,
    /// Index into the key's event vector.
    pub(crate) src: usize,
}

impl KOp {
    /// Whether the operation leaves the register as it is.
    pub(crate) fn is_read(&self) -> bool {
        self.post == KEEP
    }

    /// Whether the operation may take effect while the register holds
    /// `state`.
    pub(crate) fn applies_to(&self, state: u32) -> bool {
        match self.pre {
            ANY => true,
            PRESENT => state != 0,
            v => v == state,
        }
    }
}

/// The values of one key, interned: id 0 is `None`, ids `1..` are the
/// values some operation wrote, in order of first appearance.
pub(crate) struct Values<V> {
    values: Vec<Option<V>>,
    ids: HashMap<V, u32>,
    /// Per value id: the earliest invocation of an operation writing it.
    first_write: Vec<u64>,
}

impl<V: Clone + Eq + Hash> Values<V> {
    /// Interns every value written by `ops` (given with their invocation).
    pub(crate) fn new<'a>(ops: impl IntoIterator<Item = (&'a Op<V>, u64)>) -> Self
    where
        V: 'a,
    {
        let mut values = Values {
            values: vec![None],
            ids: HashMap::new(),
            first_write: vec![0],
        };
        for (op, invoke) in ops {
            let written = match op {
                Op::Put(v) => v,
                // An update that left the key alone wrote nothing.
                Op::Update {
                    observed,
                    written: Some(v),
                } if observed.as_ref() != Some(v) => v,
                _ => continue,
            };
            let id = *values.ids.entry(written.clone()).or_insert_with(|| {
                values.values.push(Some(written.clone()));
                values.first_write.push(u64::MAX);
                (values.values.len() - 1) as u32
            });
            let first = &mut values.first_write[id as usize];
            *first = (*first).min(invoke);
        }
        values
    }

    /// Number of ids (`None` included).
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// The value of an id.
    pub(crate) fn get(&self, id: u32) -> &Option<V> {
        &self.values[id as usize]
    }

    /// The id of a value, or [`NEVER_WRITTEN`].
    pub(crate) fn id(&self, value: &Option<V>) -> u32 {
        value.as_ref().map_or(0, |v| self.some_id(v))
    }

    /// The id of `Some(value)`, or [`NEVER_WRITTEN`].
    fn some_id(&self, value: &V) -> u32 {
        self.ids.get(value).copied().unwrap_or(NEVER_WRITTEN)
    }

    /// The earliest invocation of a write of `id` (0 for `None`, which the
    /// register holds from the start).
    pub(crate) fn first_write(&self, id: u32) -> u64 {
        self.first_write[id as usize]
    }

    /// The earliest invocation of a write of any value other than `None`.
    pub(crate) fn first_write_of_some(&self) -> u64 {
        self.first_write[1..]
            .iter()
            .copied()
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The requirement and effect of `op` (see the module docs); `known`
    /// says whether its outcome is known.
    pub(crate) fn semantics(&self, op: &Op<V>, known: bool) -> (u32, u32) {
        match op {
            Op::Put(v) => (ANY, self.some_id(v)),
            Op::Delete(Some(true)) if known => (PRESENT, 0),
            Op::Delete(Some(false)) if known => (0, KEEP),
            Op::Delete(_) => (ANY, 0),
            Op::Get(r) => (self.id(r), KEEP),
            Op::Update { observed, written } => {
                let (o, w) = (self.id(observed), self.id(written));
                (o, if w == o { KEEP } else { w })
            }
        }
    }
}
