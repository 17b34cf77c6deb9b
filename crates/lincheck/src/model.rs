//! The compact form of one key's operations that the search works on.

/// A compact, sorted operation of one key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KOp {
    pub(crate) invoke: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub(crate) complete: u64,
    pub(crate) known: bool,
    pub(crate) write: bool,
    /// Interned register value written (writes) or returned (reads); 0 = `None`.
    pub(crate) value: u32,
    /// Index into the key's event vector.
    pub(crate) src: usize,
}

/// Sentinel value id for a read result no write ever produced.
pub(crate) const NEVER_WRITTEN: u32 = u32::MAX;
/// Memo-key stand-in for any register value no pending read returns.
pub(crate) const UNOBSERVABLE: u32 = u32::MAX;
