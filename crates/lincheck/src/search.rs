//! The Wing & Gong / Lowe depth-first search over one key's operations.

use crate::config::Config;
use crate::memo::Memo;
use crate::model::KOp;

pub(crate) enum SearchOutcome {
    Linearizable { states: u64 },
    Exhausted { states: u64, max_depth: usize },
    Stuck { states: u64, dead_end: DeadEnd },
}

/// Snapshot of the deepest configuration from which no candidate succeeded.
pub(crate) struct DeadEnd {
    /// Linearized operations, in order.
    pub(crate) path: Vec<u32>,
    pub(crate) state: u32,
    /// All minimal operations at that point.
    pub(crate) stuck: Vec<u32>,
}

pub(crate) struct Frame {
    pub(crate) start: usize,
    pub(crate) next: usize,
    pub(crate) end: usize,
}

/// Wing & Gong / Lowe depth-first search with memoization of failed
/// configurations (as in knossos / porcupine).
pub(crate) fn search(ops: &[KOp], value_count: usize, budget: u64) -> SearchOutcome {
    let mut cfg = Config::new(ops, value_count);
    if cfg.done() {
        return SearchOutcome::Linearizable { states: 1 };
    }
    let mut memo = Memo::default();
    let mut states: u64 = 1;
    let mut candidates: Vec<u32> = Vec::new();
    let mut frames = vec![cfg.push_candidates(&mut candidates)];
    // (operation, register value before it)
    let mut path: Vec<(u32, u32)> = Vec::new();
    let mut max_depth = 0;
    // Every configuration pushed on the path gets a node (operation, parent
    // node) in this arena, so a dead end can be remembered in O(1) and its
    // path reconstructed only if the search fails.
    const ROOT: u32 = u32::MAX;
    let mut nodes: Vec<(u32, u32)> = Vec::new();
    let mut node_path: Vec<u32> = Vec::new();
    // (depth, node, register value, minimal operations) of the deepest dead end.
    let mut dead_end: Option<(usize, u32, u32, Vec<u32>)> = None;

    loop {
        let frame = frames
            .last_mut()
            .expect("the root frame is never popped early");
        if frame.next == frame.end {
            // Every candidate failed: dead end. Remember the deepest one.
            if dead_end.as_ref().is_none_or(|d| path.len() > d.0) {
                let mut stuck = Vec::new();
                cfg.for_each_minimal(|j| {
                    if !cfg.is_dead(j) {
                        stuck.push(j as u32);
                    }
                });
                let node = node_path.last().copied().unwrap_or(ROOT);
                dead_end = Some((path.len(), node, cfg.state, stuck));
            }
            candidates.truncate(frame.start);
            frames.pop();
            node_path.pop();
            if !path.is_empty() {
                let (base, pool) = cfg.memo_entry();
                memo.record_failure(base, pool);
            }
            match path.pop() {
                Some((op, prev)) => cfg.undo(op as usize, prev),
                None => {
                    let (_, mut node, state, stuck) = dead_end.expect("recorded above");
                    let mut path = Vec::new();
                    while node != ROOT {
                        let (op, parent) = nodes[node as usize];
                        path.push(op);
                        node = parent;
                    }
                    path.reverse();
                    return SearchOutcome::Stuck {
                        states,
                        dead_end: DeadEnd { path, state, stuck },
                    };
                }
            }
            continue;
        }
        let op = candidates[frame.next];
        frame.next += 1;
        let prev = cfg.apply(op as usize);
        if cfg.done() {
            return SearchOutcome::Linearizable { states };
        }
        let (base, pool) = cfg.memo_entry();
        if memo.known_to_fail(&base, &pool) {
            cfg.undo(op as usize, prev);
            continue;
        }
        states += 1;
        path.push((op, prev));
        nodes.push((op, node_path.last().copied().unwrap_or(ROOT)));
        node_path.push((nodes.len() - 1) as u32);
        max_depth = max_depth.max(path.len());
        if states > budget {
            return SearchOutcome::Exhausted { states, max_depth };
        }
        frames.push(cfg.push_candidates(&mut candidates));
    }
}
