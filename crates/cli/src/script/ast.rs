//! The operations of a script and the items a [`ScriptReader`] yields.

use std::fmt;

use super::escape::escape;
use super::lexer::is_word_char;
#[cfg(doc)]
use super::{ScriptReader, parse_line};

/// One operation of a script.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `add_node(id)` or `add_node(id, weight=N)`: add a node to the ring.
    AddNode {
        /// The new node's id (non-empty).
        id: String,
        /// The node's weight, if the script gave one (always at least 1).
        weight: Option<u32>,
    },
    /// `remove_node(id)` or `remove_node(id, force=true)`: remove a node
    /// from the ring.
    RemoveNode {
        /// The id of the node to remove (non-empty).
        id: String,
        /// `force=true`: remove it even if it is down or the last node,
        /// dropping the keys that cannot be moved.
        force: bool,
    },
    /// `put(key, value)`: store a value under a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// `get(key)`: read the value stored under a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// `delete(key)`: delete the value stored under a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// `stats()`: report cluster statistics.
    Stats,
    /// `crash(id)`: the node stops answering (its data stays).
    Crash {
        /// The node's id.
        id: String,
    },
    /// `heal(id)`: a crashed node answers again, with its data.
    Heal {
        /// The node's id.
        id: String,
    },
    /// `fail(id, point)` or `fail(id, point, times=N)`: make the node fail
    /// at a step of the next membership change it takes part in.
    Fail {
        /// The node's id.
        id: String,
        /// The step of a range's transfer where it fails.
        point: FailPoint,
        /// `None`: the node crashes there (until `heal`); `Some(n)`: its next
        /// `n` calls fail, then it works again (a transient fault).
        times: Option<u32>,
    },
    /// `resume()`: complete a paused membership change.
    Resume,
}

/// A step of a range's transfer, where `fail(id, point)` strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailPoint {
    /// `before_copy`: before the first key of the range is read.
    BeforeCopy,
    /// `mid_copy`: after the first batch is read from the source, before it
    /// is written to the target.
    MidCopy,
    /// `before_switch`: after the range is copied, before ownership
    /// switches (past the change's commit point: a failure here pauses the
    /// change instead of rolling it back).
    BeforeSwitch,
    /// `cleanup`: after the switch, when the source deletes its copy.
    Cleanup,
}

impl FailPoint {
    /// Every point, in transfer order.
    pub const ALL: [FailPoint; 4] = [
        FailPoint::BeforeCopy,
        FailPoint::MidCopy,
        FailPoint::BeforeSwitch,
        FailPoint::Cleanup,
    ];

    /// The point's name as written in a script, e.g. `"mid_copy"`.
    pub fn name(self) -> &'static str {
        match self {
            FailPoint::BeforeCopy => "before_copy",
            FailPoint::MidCopy => "mid_copy",
            FailPoint::BeforeSwitch => "before_switch",
            FailPoint::Cleanup => "cleanup",
        }
    }

    /// The point named `name` in a script.
    pub fn from_name(name: &str) -> Option<FailPoint> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl Op {
    /// The operation's name as written in a script, e.g. `"add_node"`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::AddNode { .. } => "add_node",
            Op::RemoveNode { .. } => "remove_node",
            Op::Put { .. } => "put",
            Op::Get { .. } => "get",
            Op::Delete { .. } => "delete",
            Op::Stats => "stats",
            Op::Crash { .. } => "crash",
            Op::Heal { .. } => "heal",
            Op::Fail { .. } => "fail",
            Op::Resume => "resume",
        }
    }
}

/// Formats the operation in script syntax, so that [`parse_line`] reads back
/// the same operation. Keys and values are always quoted with [`escape`]; node
/// ids are written bare when they are valid bare words.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddNode { id, weight: None } => write!(f, "add_node({})", node_id_text(id)),
            Op::AddNode {
                id,
                weight: Some(w),
            } => write!(f, "add_node({}, weight={w})", node_id_text(id)),
            Op::RemoveNode { id, force: false } => {
                write!(f, "remove_node({})", node_id_text(id))
            }
            Op::RemoveNode { id, force: true } => {
                write!(f, "remove_node({}, force=true)", node_id_text(id))
            }
            Op::Put { key, value } => write!(f, "put({}, {})", escape(key), escape(value)),
            Op::Get { key } => write!(f, "get({})", escape(key)),
            Op::Delete { key } => write!(f, "delete({})", escape(key)),
            Op::Stats => f.write_str("stats()"),
            Op::Crash { id } => write!(f, "crash({})", node_id_text(id)),
            Op::Heal { id } => write!(f, "heal({})", node_id_text(id)),
            Op::Fail { id, point, times } => {
                write!(f, "fail({}, {}", node_id_text(id), point.name())?;
                match times {
                    Some(n) => write!(f, ", times={n})"),
                    None => f.write_str(")"),
                }
            }
            Op::Resume => f.write_str("resume()"),
        }
    }
}

fn node_id_text(id: &str) -> String {
    if !id.is_empty() && id.chars().all(is_word_char) {
        id.to_owned()
    } else {
        escape(id.as_bytes())
    }
}

/// One lane of a `concurrently` block: the operations of one line of the
/// block, to run in order on one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// The 1-based line number of the lane in the script.
    pub line: usize,
    /// The lane's operations, in order (never empty).
    pub ops: Vec<Op>,
}

/// One top-level element of a script, as yielded by [`ScriptReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A single operation on a line of its own.
    Op {
        /// The 1-based line number of the operation.
        line: usize,
        /// The operation.
        op: Op,
    },
    /// A `concurrently { ... }` block.
    Concurrent {
        /// The 1-based line number of the `concurrently {` line.
        line: usize,
        /// The block's lanes, in script order (empty for an empty block).
        lanes: Vec<Lane>,
    },
}

impl Item {
    /// The 1-based line number where the item starts.
    pub fn line(&self) -> usize {
        match self {
            Item::Op { line, .. } | Item::Concurrent { line, .. } => *line,
        }
    }
}
