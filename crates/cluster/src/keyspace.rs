//! The key space as a whole: `scan` in token order, `random_key`, `flush`,
//! `dbsize`.
//!
//! A scan cursor is a position on the ring: the next token to read. Each
//! call reads the tokens from the cursor on, one run at a time, each run
//! from the node serving it at that moment (under the run's stripe read
//! lock, after the same authority check as a `get`), so a key present for
//! the whole scan is returned once its token is passed, whichever nodes
//! join and leave in between. Keys that share a token (a 64-bit hash
//! collision) are always returned together, so a token position is a
//! complete cursor.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use ringkv_ring::Token;

use crate::ClusterError;
use crate::cluster::Cluster;
use crate::entry::Entry;
use crate::node::Node;
use crate::plan::Phase;
use crate::store::StoredEntry;

/// One page of [`Cluster::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// The live keys of the page that passed the filter, in token order.
    pub keys: Vec<Bytes>,
    /// Where to continue; `0` once the whole ring was read (as Redis's
    /// cursor).
    pub cursor: u64,
}

/// Runs of tokens one `scan` call reads at most.
const MAX_RUNS: usize = 1024;

/// Entries flushed per lock hold, so that a flush delays a client by at
/// most one chunk.
const FLUSH_CHUNK: usize = 256;

impl Cluster {
    /// Reads the keys from `cursor` on, in token order, looking at about
    /// `count` entries (Redis's `COUNT`, a hint: keys sharing a token come
    /// together, and expired keys are looked at but not returned), and
    /// returns those for which `filter(key, entry)` holds with the cursor to
    /// pass next. Start with cursor `0`; a returned cursor of `0` means the
    /// scan is complete.
    ///
    /// Redis's guarantee holds while nodes join and leave: a key present
    /// for the whole scan is returned at least once (keys written or
    /// deleted during it may or may not be). Each run of tokens is read
    /// from the node serving it then, under one stripe read lock.
    ///
    /// ```
    /// use ringkv_cluster::Cluster;
    /// # let cluster = Cluster::default();
    /// # cluster.add_node("n1")?;
    /// for i in 0..100 {
    ///     cluster.put(format!("user:{i}"), "x")?;
    /// }
    /// let (mut cursor, mut seen) = (0, 0);
    /// loop {
    ///     let page = cluster.scan(cursor, 10, |key, _| key.starts_with(b"user:1"))?;
    ///     seen += page.keys.len();
    ///     cursor = page.cursor;
    ///     if cursor == 0 {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(seen, 11); // user:1, user:10 ..= user:19
    /// # Ok::<(), ringkv_cluster::ClusterError>(())
    /// ```
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        mut filter: impl FnMut(&[u8], &Entry) -> bool,
    ) -> Result<ScanPage, ClusterError> {
        let count = count.max(1);
        let mut keys = Vec::new();
        let mut entries = Vec::new();
        let mut next = Some(cursor);
        let (mut looked, mut runs) = (0, 0);
        while let Some(token) = next {
            // Empty runs cost a lock each: a call on a sparse ring stops
            // after `MAX_RUNS` of them, returning a short page (as Redis's
            // SCAN may return an empty one).
            if looked >= count || runs == MAX_RUNS {
                break;
            }
            runs += 1;
            entries.clear();
            next = self.read_run(token, count - looked, &mut entries)?;
            looked += entries.len();
            let now = self.now_ms();
            keys.extend(
                entries
                    .drain(..)
                    .filter(|e| !e.entry.is_expired(now) && filter(&e.key, &e.entry))
                    .map(|e| e.key),
            );
        }
        Ok(ScanPage {
            keys,
            cursor: next.unwrap_or(0),
        })
    }

    /// The live entries with tokens in `tokens`, in token order, at most
    /// about `limit` of them (keys sharing a token come together), and the
    /// token to read next if the limit cut the read short (`None`: the
    /// whole interval was read). Each run is read as [`Cluster::scan`]
    /// reads it. A range move between processes (`ringkv node`) pages
    /// through a moving range with this.
    pub fn scan_tokens(
        &self,
        tokens: std::ops::RangeInclusive<Token>,
        limit: usize,
    ) -> Result<(Vec<StoredEntry>, Option<Token>), ClusterError> {
        let (mut next, last) = (Some(*tokens.start()), *tokens.end());
        let mut out = Vec::new();
        while let Some(token) = next {
            if token > last {
                return Ok((out, None));
            }
            if out.len() >= limit.max(1) {
                break;
            }
            // Each run reads into its own buffer: `read_run_upto` measures
            // its limit against the buffer's length.
            let mut run = Vec::new();
            next = self.read_run_upto(token, last, limit.max(1) - out.len(), &mut run)?;
            let now = self.now_ms();
            out.extend(run.into_iter().filter(|e| !e.entry.is_expired(now)));
        }
        Ok((out, next.filter(|&t| t <= last)))
    }

    /// Calls `visit` with the live entries with tokens in `tokens`, in the
    /// order [`Cluster::scan_tokens`] returns them, under each run's stripe
    /// read lock and without copying them: at most about `limit` of them,
    /// fewer if `visit` returns `false` (the rest of that token's keys are
    /// still visited: keys sharing a token go together). Returns the token
    /// to read next, `None` once the whole interval was read. A range move
    /// between processes encodes its pages this way.
    pub fn visit_tokens(
        &self,
        tokens: std::ops::RangeInclusive<Token>,
        limit: usize,
        visit: &mut dyn FnMut(Token, &Bytes, &Entry) -> bool,
    ) -> Result<Option<Token>, ClusterError> {
        let (mut next, last) = (Some(*tokens.start()), *tokens.end());
        let (limit, mut seen) = (limit.max(1), 0);
        while let Some(token) = next {
            if token > last {
                return Ok(None);
            }
            if seen >= limit {
                break;
            }
            let mut stopped = false;
            let now = self.now_ms();
            let mut live = |t: Token, key: &Bytes, entry: &Entry| {
                if entry.is_expired(now) {
                    return true;
                }
                let go_on = visit(t, key, entry);
                stopped |= !go_on;
                go_on
            };
            let (n, at) = self.visit_run(token, last, limit - seen, &mut live)?;
            seen += n;
            next = at;
            if stopped {
                break;
            }
        }
        Ok(next.filter(|&t| t <= last))
    }

    /// [`Cluster::visit_tokens`] within one run and one stripe, from
    /// `token` to `upto` at most: how many entries it visited, and the
    /// token to go on from (`None` past the end of the ring).
    fn visit_run(
        &self,
        token: Token,
        upto: Token,
        limit: usize,
        visit: &mut dyn FnMut(Token, &Bytes, &Entry) -> bool,
    ) -> Result<(usize, Option<Token>), ClusterError> {
        loop {
            let seen = self.routing.load_full();
            let (node, end) = seen.segment(token)?;
            let end = end.min(stripe_end(node, token)).min(upto);
            let store = node.read(token)?;
            // Under the stripe's read lock the run's authority cannot move
            // away from `node`; check it has not already (a new snapshot,
            // or the run's range switched since we looked).
            let now = self.routing.load();
            if !Arc::ptr_eq(&now, &seen) || !Arc::ptr_eq(now.authority(token)?.0, node) {
                continue;
            }
            let mut stopped = false;
            let (n, last) = store
                .visit(token..=end, None, limit, &mut |t, k, e| {
                    let go_on = visit(t, k, e);
                    stopped |= !go_on;
                    go_on
                })
                .map_err(|e| node.store_error(e))?;
            return Ok(match last {
                Some(last) if n >= limit || stopped => (n, last.checked_add(1)),
                _ => (n, end.checked_add(1)),
            });
        }
    }

    /// Deletes, under one stripe write lock, the entries of up to `chunk`
    /// keys (whole tokens) from the start of `tokens` on, within one run,
    /// whose token is `doomed` (asked once per token, under the lock).
    /// Returns how many it deleted and the token to go on from (`None`
    /// once `tokens` is done). Nothing is cloned: the removed entries are
    /// freed after the lock is released. A node drops the ranges it gave
    /// away this way.
    pub fn remove_tokens(
        &self,
        tokens: std::ops::RangeInclusive<Token>,
        chunk: usize,
        doomed: impl Fn(Token) -> bool,
    ) -> Result<(usize, Option<Token>), ClusterError> {
        let (token, upto) = (*tokens.start(), *tokens.end());
        let chunk = chunk.max(1);
        // First under the read lock, which clients' reads share: a chunk
        // with nothing doomed (most of a sweep of every key after a start)
        // takes no write lock.
        let mut any = false;
        let (_, next) = self.visit_run(token, upto, chunk, &mut |t, _, _| {
            any |= doomed(t);
            !any
        })?;
        if !any {
            return Ok((0, next.filter(|&t| t <= upto)));
        }
        let mut freed = Vec::new();
        loop {
            let seen = self.routing.load_full();
            let (node, end) = seen.segment(token)?;
            let end = end.min(stripe_end(node, token)).min(upto);
            let mut guard = node.write(token)?;
            // As `flush_run` checks, for a client write.
            let now = self.routing.load();
            if !Arc::ptr_eq(&now, &seen) {
                continue;
            }
            let (owner, range) = now.authority(token)?;
            if !Arc::ptr_eq(owner, node) {
                continue;
            }
            // The doomed tokens, as runs of consecutive stored tokens.
            let mut runs: Vec<(Token, Token)> = Vec::new();
            let mut open = false;
            let (n, last) = guard
                .visit(token..=end, None, chunk, &mut |t, _, _| {
                    match runs.last_mut() {
                        _ if !doomed(t) => open = false,
                        Some(run) if open => run.1 = t,
                        _ => {
                            runs.push((t, t));
                            open = true;
                        }
                    }
                    true
                })
                .map_err(|e| node.store_error(e))?;
            // Each run is one store call: if one fails, the runs before it
            // are gone and are counted as deleted all the same.
            let mut failed = None;
            for (a, b) in runs {
                if let Err(e) = guard.take_range(a..=b, usize::MAX, &mut freed) {
                    failed = Some(node.store_error(e));
                    break;
                }
            }
            // A key deleted in a range being copied is logged, as a
            // flush's is.
            if let Some(range) = range.filter(|r| r.phase() == Phase::Copying) {
                for e in &freed {
                    range.mark_dirty(&e.key);
                }
            }
            node.add_served(node.stripe_of(token), -(freed.len() as i64));
            drop(guard);
            if let Some(e) = failed {
                return Err(e);
            }
            let next = match last {
                Some(last) if n >= chunk => last.checked_add(1),
                _ => end.checked_add(1),
            };
            return Ok((freed.len(), next.filter(|&t| t <= upto)));
        }
    }

    /// Appends to `out` up to `limit` entries (whole tokens) from `token`
    /// on, from the node serving them, within one run and one stripe.
    /// Returns the token to read next, or `None` past the end of the ring.
    fn read_run(
        &self,
        token: Token,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<Option<Token>, ClusterError> {
        self.read_run_upto(token, Token::MAX, limit, out)
    }

    /// [`Cluster::read_run`], reading no token past `upto`.
    fn read_run_upto(
        &self,
        token: Token,
        upto: Token,
        limit: usize,
        out: &mut Vec<StoredEntry>,
    ) -> Result<Option<Token>, ClusterError> {
        let (_, next) = self.visit_run(token, upto, limit, &mut |token, key, entry| {
            out.push(StoredEntry {
                token,
                key: key.clone(),
                entry: entry.clone(),
            });
            true
        })?;
        Ok(next)
    }

    /// Whether the cluster holds at least one live key, and one of them,
    /// chosen by starting a scan at a random token (keys after large empty
    /// arcs are likelier, as Redis's `RANDOMKEY` is not uniform either).
    pub fn random_key(&self) -> Result<Option<Bytes>, ClusterError> {
        let start = crate::expire::splitmix(&mut self.expire_seed.fetch_add(1, Ordering::Relaxed));
        let mut cursor = start;
        let mut wrapped = false;
        loop {
            let page = self.scan(cursor, 16, |_, _| true)?;
            if let Some(key) = page.keys.into_iter().next() {
                return Ok(Some(key));
            }
            cursor = page.cursor;
            if cursor == 0 {
                if wrapped || start == 0 {
                    return Ok(None);
                }
                wrapped = true;
            }
            if wrapped && cursor >= start {
                return Ok(None);
            }
        }
    }

    /// Keys stored (Redis's `DBSIZE`): each key once, at the node serving
    /// it, counted without walking data. Expired keys count until they are
    /// reclaimed, as in Redis.
    pub fn dbsize(&self) -> usize {
        self.counts.read(|| {
            let routing = self.routing.load();
            routing
                .nodes
                .values()
                .map(|n| n.served().max(0) as usize)
                .sum()
        })
    }

    /// Deletes every key, on every node (Redis's `FLUSHALL`); returns how
    /// many it deleted.
    ///
    /// It is not one atomic step: it walks the ring in token order as
    /// [`Cluster::scan`] does, a run of at most 256 keys per stripe write
    /// lock, deleting each key on the node serving it then (a key in a
    /// range being copied is logged for the switch, so the copy does not
    /// bring it back). Every key written before the call and not rewritten
    /// during it is gone when it returns, whichever nodes joined or left
    /// meanwhile; a write that runs concurrently may survive or not,
    /// depending on whether the flush had passed its token. For an atomic
    /// flush, callers stop writes first. A node that is down fails the
    /// call ([`ClusterError::Unavailable`]) when the flush reaches its
    /// tokens; the tokens before were flushed.
    pub fn flush(&self) -> Result<u64, ClusterError> {
        let mut deleted = 0;
        let mut next = Some(0);
        while let Some(token) = next {
            next = self.flush_run(token, &mut deleted)?;
        }
        Ok(deleted)
    }

    /// Deletes up to [`FLUSH_CHUNK`] keys (whole tokens) of the run from
    /// `token` on, on the node serving it, under the run's stripe write
    /// lock. Returns the token to go on from, or `None` past the end.
    fn flush_run(&self, token: Token, deleted: &mut u64) -> Result<Option<Token>, ClusterError> {
        let mut page = Vec::with_capacity(FLUSH_CHUNK);
        let mut freed = Vec::new();
        loop {
            let seen = self.routing.load_full();
            let (node, end) = seen.segment(token)?;
            let end = end.min(stripe_end(node, token));
            let mut guard = node.write(token)?;
            // As for a client write: authority over the whole run is
            // stable under the stripe's write lock once checked.
            let now = self.routing.load();
            if !Arc::ptr_eq(&now, &seen) {
                continue;
            }
            let (owner, range) = now.authority(token)?;
            if !Arc::ptr_eq(owner, node) {
                continue;
            }
            let copying = range.filter(|r| r.phase() == Phase::Copying);
            guard
                .scan(token..=end, None, FLUSH_CHUNK, &mut page)
                .map_err(|e| node.store_error(e))?;
            let stripe = node.stripe_of(token);
            for e in &page {
                // A key deleted in a range being copied is logged, so the
                // switch deletes the target's copy too.
                if let Some(range) = copying {
                    range.mark_dirty(&e.key);
                }
                if let Some(old) = guard
                    .delete(e.token, &e.key)
                    .map_err(|err| node.store_error(err))?
                {
                    node.add_served(stripe, -1);
                    *deleted += 1;
                    freed.push(old);
                }
            }
            drop(guard);
            drop(freed); // values are freed outside the lock
            return Ok(match page.last() {
                Some(last) if page.len() >= FLUSH_CHUNK => last.token.checked_add(1),
                _ => end.checked_add(1),
            });
        }
    }
}

/// The last token of the stripe of `node` that holds `token`.
fn stripe_end(node: &Node, token: Token) -> Token {
    node.split(token..=Token::MAX)
        .next()
        .map_or(Token::MAX, |(_, part)| *part.end())
}
