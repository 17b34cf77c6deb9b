//! The source's side of a range move between processes: it answers
//! `RangeScan` (a page of a range, read while it keeps serving, with the
//! id of its recording of writes) and `RangeShip` (the entry now, or
//! absence, of every key written since the recording began, once the
//! range is fenced). The target's side is [`crate::moves`].

use std::sync::Arc;

use bytes::Bytes;
use ringkv_cluster::Cluster;
use ringkv_meta::{Change, Phase};
use tracing::debug;

use crate::Inner;
use crate::moves::{PAGE, PAGE_BYTES, ready_at, the_change};
use crate::wire::{Cursor, Scan, ScanPage, Ship, Shipment, pack};

/// The source's next page of the ranges moving from it to
/// `request.target`.
pub(crate) async fn scan(inner: &Arc<Inner>, request: Scan) -> Result<ScanPage, String> {
    let state = ready_at(inner, request.epoch).await?;
    the_change(&state, request.change)?;
    let tracker = match &*inner.tracker.lock() {
        Some(t) if t.change == request.change => t.id,
        _ => return Err("this node is not recording writes for the change".into()),
    };
    let cluster = Arc::clone(&inner.cluster);
    let count = request.count.clamp(1, 16 * PAGE);
    let me = inner.me.clone();
    tokio::task::spawn_blocking(move || {
        let change = state.change.as_ref().expect("checked above");
        let (entries, next) = read_page(
            &cluster,
            change,
            &me,
            &request.target,
            request.cursor,
            count,
        )?;
        if !entries.is_empty() {
            crate::fault::reached("scan-page", &change.node);
        }
        Ok(ScanPage {
            tracker,
            entries,
            next,
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Ranges one page call looks at, at most: a change on a ring of 16,384
/// partitions (a node's default) or more has thousands to tens of
/// thousands of small ranges, mostly empty.
const RANGES_PER_PAGE: usize = 4096;

/// Reads about `count` entries of the ranges of `change` copying from
/// `me` to `target`, from `cursor` on: the entries, packed ([`pack`]),
/// and where to go on (`None` when every range is done).
fn read_page(
    cluster: &Cluster,
    change: &Change,
    me: &str,
    target: &str,
    cursor: Option<Cursor>,
    count: usize,
) -> Result<(Bytes, Option<Cursor>), String> {
    let mut page: Vec<u8> = Vec::new();
    let mut entries = 0;
    let (mut i, mut at) = cursor.map_or((0, None), |c| (c.range, c.token));
    let mut looked = 0;
    while i < change.ranges.len() {
        let r = &change.ranges[i];
        if r.from != me || r.to != target || r.phase.is_done() {
            (i, at) = (i + 1, None);
            continue;
        }
        if r.phase != Phase::Copying {
            // The target pulls only copying ranges; a source that sees one
            // fenced is not where the target is (a fence after the pull
            // began): skipping it would end the copy without its keys.
            return Err(format!(
                "range {i} is {:?} at the source, not copying; the pull must start again",
                r.phase
            ));
        }
        if entries >= count || page.len() >= PAGE_BYTES || looked == RANGES_PER_PAGE {
            let next = Cursor {
                range: i,
                token: at,
            };
            return Ok((page.into(), Some(next)));
        }
        looked += 1;
        let intervals: Vec<_> = r.range().intervals().collect();
        // The interval the cursor is in (a wrapping range has two).
        let first = at.map_or(0, |t| {
            intervals.iter().position(|iv| iv.contains(&t)).unwrap_or(0)
        });
        for (n, interval) in intervals.iter().enumerate().skip(first) {
            let from = match at {
                Some(t) if n == first => t,
                _ => *interval.start(),
            };
            // Packed under the stripe's read lock, nothing cloned; past the
            // byte bound the page ends with the token being read (keys
            // sharing a token go together).
            let next = cluster
                .visit_tokens(
                    from..=*interval.end(),
                    count.saturating_sub(entries),
                    &mut |_, key, entry| {
                        pack(&mut page, key, |out| entry.encode(out));
                        entries += 1;
                        page.len() < PAGE_BYTES
                    },
                )
                .map_err(|e| e.to_string())?;
            if let Some(t) = next {
                let next = Cursor {
                    range: i,
                    token: Some(t),
                };
                return Ok((page.into(), Some(next)));
            }
        }
        (i, at) = (i + 1, None);
    }
    Ok((page.into(), None))
}

/// A last shipment asked of a recording of writes the source no longer
/// has.
const RECOPY_SOURCE: &str =
    "recopy: the source's recording of writes is not the one the copy came from (it restarted)";

/// The source's last shipment of fenced ranges.
pub(crate) async fn ship(inner: &Arc<Inner>, request: Ship) -> Result<Shipment, String> {
    // Not the recording the copy came from (this process restarted, or
    // it never recorded the change): no use waiting to catch up first,
    // as fenced ranges hold their writes meanwhile.
    if !matches!(&*inner.tracker.lock(), Some(t) if t.change == request.change && t.id == request.tracker)
    {
        return Err(RECOPY_SOURCE.into());
    }
    let asked = std::time::Instant::now();
    let state = ready_at(inner, request.epoch).await?;
    let change = the_change(&state, request.change)?;
    debug!(node = %inner.me, change = change.id, epoch = request.epoch, ranges = request.ranges.len(), waited_us = asked.elapsed().as_micros() as u64, "rebalance: shipping");
    for &i in &request.ranges {
        let r = change.ranges.get(i).ok_or("no such range in the change")?;
        if r.from != inner.me || r.phase != Phase::Fenced {
            return Err(format!("range {i} is not fenced at node {}", inner.me));
        }
    }
    crate::fault::reached("ship", &change.node);
    // The view is at or past the fence: every write to these ranges that
    // this node accepted has finished, and is recorded.
    let mut keys: Vec<Bytes> = {
        let tracker = inner.tracker.lock();
        match &*tracker {
            Some(t) if t.change == request.change && t.id == request.tracker => request
                .ranges
                .iter()
                .flat_map(|i| t.keys.get(i).into_iter().flatten())
                .filter(|k| request.after.as_deref().is_none_or(|after| &k[..] > after))
                .cloned()
                .collect(),
            _ => return Err(RECOPY_SOURCE.into()),
        }
    };
    keys.sort_unstable();
    let cluster = Arc::clone(&inner.cluster);
    tokio::task::spawn_blocking(move || {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for key in keys {
            if bytes >= PAGE_BYTES {
                more = true;
                break;
            }
            let entry = cluster.get_entry(&key).map_err(|e| e.to_string())?;
            let entry = entry.map(|e| {
                let mut encoded = Vec::new();
                e.encode(&mut encoded);
                encoded
            });
            bytes += key.len() + entry.as_ref().map_or(0, Vec::len);
            entries.push((key.to_vec(), entry));
        }
        Ok(Shipment { entries, more })
    })
    .await
    .map_err(|e| e.to_string())?
}
