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
    /// `remove_node(id)`: remove a node from the ring.
    RemoveNode {
        /// The id of the node to remove (non-empty).
        id: String,
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
            Op::RemoveNode { id } => write!(f, "remove_node({})", node_id_text(id)),
            Op::Put { key, value } => write!(f, "put({}, {})", escape(key), escape(value)),
            Op::Get { key } => write!(f, "get({})", escape(key)),
            Op::Delete { key } => write!(f, "delete({})", escape(key)),
            Op::Stats => f.write_str("stats()"),
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
