//! Writes staged on one thread and committed together
//! ([`DataDir::atomically`]).

use std::sync::Arc;

use fjall::Keyspace;

use super::DataDir;
use crate::Durability;
use crate::error::PersistError;

/// Writes staged by [`DataDir::atomically`] on one thread.
struct Group {
    /// The directory (its `Inner`'s address).
    dir: usize,
    ops: Vec<(Keyspace, Vec<u8>, Option<Vec<u8>>)>,
}

thread_local! {
    static GROUP: std::cell::RefCell<Option<Group>> = const { std::cell::RefCell::new(None) };
}

impl DataDir {
    /// Runs `f` with every write to this directory's trees made on this
    /// thread staged, then writes them all in one engine batch: all of
    /// them reach the journal, or none (a crash never keeps half). Reads
    /// inside `f` do not see the staged writes. Nothing is written if `f`
    /// fails. The outer error is the batch's own failure; a nested call
    /// joins the outer group.
    pub fn atomically<T, E>(
        &self,
        durability: Durability,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, PersistError> {
        let me = Arc::as_ptr(&self.inner) as usize;
        let nested = GROUP.with(|g| {
            let mut g = g.borrow_mut();
            match &*g {
                Some(group) => group.dir == me,
                None => {
                    *g = Some(Group {
                        dir: me,
                        // A pipeline's SETs, most often.
                        ops: Vec::with_capacity(16),
                    });
                    false
                }
            }
        });
        if nested {
            return Ok(f());
        }
        // Take the group back whatever happens in `f`, a panic included.
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                GROUP.with(|g| g.borrow_mut().take());
            }
        }
        let reset = Reset;
        let result = f();
        let ops = GROUP
            .with(|g| g.borrow_mut().take())
            .map(|g| g.ops)
            .unwrap_or_default();
        drop(reset);
        if result.is_err() || ops.is_empty() {
            return Ok(result);
        }
        self.commit(ops, durability)?;
        Ok(result)
    }

    /// Stages `ops` into this thread's group for this directory, if one is
    /// open; returns whether it did.
    pub(crate) fn stage(
        &self,
        keyspace: &Keyspace,
        ops: &mut dyn Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> bool {
        let me = Arc::as_ptr(&self.inner) as usize;
        GROUP.with(|g| {
            let mut g = g.borrow_mut();
            match g.as_mut() {
                Some(group) if group.dir == me => {
                    group.ops.extend(ops.map(|(k, v)| (keyspace.clone(), k, v)));
                    true
                }
                _ => false,
            }
        })
    }
}
