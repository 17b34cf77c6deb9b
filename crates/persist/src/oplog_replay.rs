//! Replay of the write log at open: records read back into the engine
//! (rule 4 of [`super`]).

use std::fs;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use tracing::warn;

use super::{BATCH_BYTES, CRC, HEADER};
use crate::error::PersistError;

/// One decoded operation, borrowing the record.
pub(super) struct RawOp<'a> {
    pub(super) tree: &'a str,
    pub(super) key: &'a [u8],
    pub(super) value: Option<&'a [u8]>,
}

/// The operations of one record's body, or `None` if it does not parse
/// (a record whose checksum matched but whose body does not parse was
/// written by something else).
pub(super) fn decode(mut body: &[u8]) -> Option<Vec<RawOp<'_>>> {
    fn take<'a>(body: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (body.get(..n)?, body.get(n..)?);
        *body = rest;
        Some(head)
    }
    fn len(body: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(body, 4)?.try_into().ok()?) as usize)
    }
    let mut ops = Vec::new();
    while !body.is_empty() {
        let kind = take(&mut body, 1)?[0];
        let name_len = take(&mut body, 1)?[0] as usize;
        let tree = std::str::from_utf8(take(&mut body, name_len)?).ok()?;
        let key_len = len(&mut body)?;
        let key = take(&mut body, key_len)?;
        let value = match kind {
            0 => None,
            1 => {
                let n = len(&mut body)?;
                Some(take(&mut body, n)?)
            }
            _ => return None,
        };
        ops.push(RawOp { tree, key, value });
    }
    Some(ops)
}

/// What replaying the log at open found.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    pub(super) records: u64,
    pub(super) ops: u64,
    /// Operations on trees dropped since (their names are never reused).
    pub(super) dropped: u64,
}

/// Replays one log file into the engine. In the newest file a record that
/// is cut short or fails its checksum is a write a crash interrupted (it
/// was never acknowledged): it and what follows are dropped; a header of
/// zeros is where the records of a prefilled file end. In an older file,
/// closed with an fsync, the same is damage.
pub(super) fn replay(
    path: &Path,
    file: &Path,
    newest: bool,
    db: &Database,
    replayed: &mut Replayed,
) -> Result<(), PersistError> {
    let bytes = fs::read(file).map_err(|source| PersistError::Dir {
        path: path.to_path_buf(),
        source,
    })?;
    let open_err = |source| PersistError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut spaces: std::collections::HashMap<String, Option<Keyspace>> = Default::default();
    let mut batch = db.batch().durability(None);
    let mut batched = 0;
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + HEADER);
        if newest && header.is_some_and(|h| h.iter().all(|&b| b == 0)) {
            // No record is empty: the zeros of a spare (`OpLog::make_spare`).
            break;
        }
        let body = header.and_then(|h| {
            let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
            bytes
                .get(at + HEADER..at + HEADER + len)
                .filter(|body| CRC.checksum(body) == crc)
        });
        let ops = body.and_then(decode);
        let Some(ops) = ops else {
            if newest && body.is_none() {
                warn!(
                    file = %file.display(),
                    offset = at,
                    dropped_bytes = bytes.len() - at,
                    "the write log ends in a record a crash cut short (never acknowledged); dropped"
                );
                break;
            }
            return Err(PersistError::Damaged {
                path: path.to_path_buf(),
                file: file.to_path_buf(),
                problem: format!(
                    "holds a damaged record at byte {at} (of {}): restore the directory from a \
                     backup",
                    bytes.len()
                ),
            });
        };
        at += HEADER + body.map_or(0, <[u8]>::len);
        replayed.records += 1;
        for op in ops {
            let space = match spaces.get(op.tree) {
                Some(space) => space.clone(),
                None => {
                    let space = db
                        .keyspace_exists(op.tree)
                        .then(|| db.keyspace(op.tree, KeyspaceCreateOptions::default))
                        .transpose()
                        .map_err(open_err)?;
                    spaces.insert(op.tree.to_string(), space.clone());
                    space
                }
            };
            let Some(space) = space else {
                replayed.dropped += 1;
                continue;
            };
            replayed.ops += 1;
            batched += op.key.len() + op.value.map_or(0, <[u8]>::len);
            match op.value {
                Some(v) => batch.insert(&space, op.key, v),
                None => batch.remove(&space, op.key),
            }
        }
        if batched >= BATCH_BYTES {
            std::mem::replace(&mut batch, db.batch().durability(None))
                .commit()
                .map_err(open_err)?;
            batched = 0;
        }
    }
    batch.commit().map_err(open_err)
}
