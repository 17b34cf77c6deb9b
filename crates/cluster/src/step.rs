//! One migrator step: retried with backoff, never against a node known to
//! be down, and with panics caught at the step's boundary.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use tracing::warn;

use crate::ClusterError;
use crate::cluster::Cluster;

/// What a panic unwinds with.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// Why a step stopped a membership change.
pub(crate) enum Stop {
    /// It failed (after its retries).
    Failed(ClusterError),
    /// It panicked: a `Store` or a broken invariant (progress callbacks run
    /// on their own thread and cannot reach a change).
    /// The change is first brought to the state a failure at the same
    /// point leaves (rolled back before the commit point, paused after
    /// it), then the panic continues to the caller.
    Panicked(Panic),
}

impl Stop {
    /// The error to return, built by `wrap` from the failure; a panic
    /// continues unwinding instead. Call this only once the cluster is in
    /// the state a failure here leaves.
    pub(crate) fn into_error(
        self,
        wrap: impl FnOnce(ClusterError) -> ClusterError,
    ) -> ClusterError {
        match self {
            Stop::Failed(e) => wrap(e),
            Stop::Panicked(p) => resume_unwind(p),
        }
    }

    /// A short description for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Stop::Failed(e) => e.to_string(),
            Stop::Panicked(p) => format!("panicked: {}", panic_message(p)),
        }
    }
}

/// Runs `f`, turning a panic into [`Stop::Panicked`].
///
/// `AssertUnwindSafe`: whatever `f` leaves half done is undone or completed
/// by the caller's failure handling, which does not rely on `f`'s partial
/// work: a rollback clears the targets' copies of every range it touched,
/// and a paused switch is redone from the dirty keys, which is idempotent.
pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, ClusterError>) -> Result<T, Stop> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Stop::Failed(e)),
        Err(p) => Err(Stop::Panicked(p)),
    }
}

/// The message of a panic payload, if it has one.
pub(crate) fn panic_message(p: &Panic) -> &str {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

impl Cluster {
    /// Runs `step` up to `max_attempts` times with exponential backoff.
    ///
    /// An unavailable node is not retried: a node that is down stays down
    /// until it is healed by an explicit call, so retrying would only hold
    /// the membership mutex longer (with thousands of ranges, seconds).
    pub(crate) fn retry<T>(
        &self,
        what: &str,
        range: usize,
        mut step: impl FnMut() -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut backoff = self.config.retry_backoff;
        let mut attempt = 1;
        loop {
            match step() {
                Ok(v) => return Ok(v),
                Err(e @ ClusterError::Unavailable { .. }) => return Err(e),
                Err(e) if attempt < self.config.max_attempts => {
                    warn!(range, attempt, error = %e, "{what} failed, retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
