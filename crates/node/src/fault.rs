//! Crash points for the process tests: `RINGKV_NODE_ABORT_AT=<point>` or
//! `<point>:<node>` makes the process abort (as `kill -9` would stop it:
//! no cleanup, no flush) the first time it reaches that point of a range
//! move (of the change that adds or removes `<node>`, if given).
//!
//! - `scan-page`: a source, after reading the first page it serves.
//! - `copy-page`: a target, after writing the first page of a copy.
//! - `ship`: a source, when asked for the last changes of fenced ranges.
//! - `before-switch`: the coordinator, before it proposes a switch.
//! - `after-switch`: the coordinator, once a switch is committed.

use std::sync::OnceLock;

/// The variable that arms a crash point.
pub const ABORT_AT: &str = "RINGKV_NODE_ABORT_AT";

/// Aborts the process if `point` of the change of node `node` is the
/// armed crash point.
pub(crate) fn reached(point: &str, node: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let Some(armed) = ARMED.get_or_init(|| std::env::var(ABORT_AT).ok()) else {
        return;
    };
    let hit = match armed.split_once(':') {
        Some((p, n)) => p == point && n == node,
        None => armed == point,
    };
    if hit {
        tracing::error!(point, "{ABORT_AT}: aborting the process here");
        std::process::abort();
    }
}
