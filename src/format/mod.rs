//! The on-store format: which objects a snapshot is made of, their keys, and
//! their binary encodings. `docs/format.md` documents all of it field by field;
//! this module is the single place that reads and writes it.
//!
//! A snapshot is
//! - **data objects** (`data/<32 hex>`): runs of compressed blocks, each block
//!   addressable by byte range, so one block can be fetched alone and a whole
//!   object with one GET. They carry no header of their own: every block is
//!   verified against the checksum in its manifest entry.
//! - **manifest pages** (`pages/<snapshot id>/<page no>`): the manifest
//!   entries (block → object, offset, length, checksum, compression) of a run
//!   of consecutive groups.
//! - **the manifest index** (`snapshots/<name>/index`): the snapshot header
//!   and one entry per non-empty group (block range, page, prefetch hints,
//!   successors) plus the warm-up list. It is written last: writing it is the
//!   commit point, so an interrupted create leaves nothing visible.
//!
//! Pages and data objects are named by random ids, never by user input, so a
//! deleted-and-recreated name never aliases an older snapshot's pages.

pub mod codec;
pub mod index;
mod index_codec;
pub mod page;
pub mod span;

pub use codec::FormatError;
pub use index::{
    mask_byte, mask_probability, BlockRun, ContextSuccessors, EntryMask, FsPrior, GroupEntry,
    InlineBlock, ManifestIndex, SnapshotHeader, Successor, WarmUp, WarmupGroup, MAX_INLINE_BYTES,
    MAX_LOCATED,
};
pub use page::{Compression, EntryTable, ManifestEntry, ManifestPage};
pub use span::{Span, Spans};

use std::fmt;

use crate::name::SnapshotName;

/// Version of the data objects, pages and traces this build writes (the
/// manifest index has its own, [`index::INDEX_VERSION`]).
pub const FORMAT_VERSION: u16 = 1;

/// Smallest and largest block size: below 64 KiB the per-block overhead
/// (a manifest entry, a request) dominates; above 4 MiB a single 4 KiB random
/// read fetches too much.
pub const MIN_BLOCK_SIZE: u32 = 64 * 1024;
pub const MAX_BLOCK_SIZE: u32 = 4 * 1024 * 1024;
/// 512 KiB: large enough that a ranged GET amortises request latency, small
/// enough that a random 4 KiB read does not drag in megabytes.
pub const DEFAULT_BLOCK_SIZE: u32 = 512 * 1024;
/// 16 blocks (8 MiB at the default block size): the unit a prefetch hint
/// speaks about. Smaller groups give finer hints but a larger index.
pub const DEFAULT_GROUP_SIZE: u32 = 16;
/// Groups are at most this many blocks, which bounds a page lookup.
pub const MAX_GROUP_SIZE: u32 = 65_536;
/// Prefetch windows written into a new index until hints are computed.
pub const DEFAULT_WINDOWS_MS: [u32; 2] = [2_000, 10_000];

/// Checks a block size against the format's limits.
pub fn validate_block_size(bs: u64) -> Result<u32, String> {
    if !(MIN_BLOCK_SIZE as u64..=MAX_BLOCK_SIZE as u64).contains(&bs) || !bs.is_power_of_two() {
        return Err(format!(
            "block size {bs} must be a power of two from 64KiB to 4MiB"
        ));
    }
    Ok(bs as u32)
}

/// A random 128-bit id naming a snapshot's pages or a data object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 16]);

impl Id {
    pub fn random() -> Self {
        Id(rand::random())
    }
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Id(out))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Object key layout. Every key is built here, from validated names and ids.
pub mod keys {
    use super::Id;
    use crate::name::SnapshotName;

    pub const SNAPSHOTS_PREFIX: &str = "snapshots";
    pub const PAGES_PREFIX: &str = "pages";
    pub const DATA_PREFIX: &str = "data";
    pub const TRACES_PREFIX: &str = "traces";

    pub fn index(name: &SnapshotName) -> String {
        format!("{SNAPSHOTS_PREFIX}/{name}/index")
    }
    pub fn page(snapshot: Id, page: u32) -> String {
        format!("{PAGES_PREFIX}/{snapshot}/{page:08}")
    }
    pub fn data(object: Id) -> String {
        format!("{DATA_PREFIX}/{object}")
    }
    /// The snapshot name of an index key, if `key` is one.
    pub fn parse_index(key: &str) -> Option<SnapshotName> {
        let rest = key.strip_prefix(SNAPSHOTS_PREFIX)?.strip_prefix('/')?;
        let name = rest.strip_suffix("/index")?;
        SnapshotName::parse(name).ok()
    }
    /// The snapshot id of a page key, if `key` is one.
    pub fn parse_page(key: &str) -> Option<Id> {
        let rest = key.strip_prefix(PAGES_PREFIX)?.strip_prefix('/')?;
        let (id, no) = rest.split_once('/')?;
        (no.len() == 8 && no.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
        Id::parse_hex(id)
    }
    /// Whether `key` is a well-formed data object key.
    pub fn is_data(key: &str) -> bool {
        key.strip_prefix(DATA_PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(Id::parse_hex)
            .is_some()
    }
}

/// Number of blocks of a volume (the last may be partial).
pub fn block_count(volume_size: u64, block_size: u32) -> u64 {
    volume_size.div_ceil(block_size as u64)
}

/// Uncompressed length of block `block_id`: `block_size`, except the last.
pub fn block_len(volume_size: u64, block_size: u32, block_id: u64) -> usize {
    let start = block_id * block_size as u64;
    volume_size.saturating_sub(start).min(block_size as u64) as usize
}

pub(crate) fn name_field(
    r: &mut codec::Reader<'_>,
    field: &str,
) -> Result<SnapshotName, FormatError> {
    let s = r.str(field)?;
    SnapshotName::parse(s).map_err(|e| r.error(field, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let id = Id::random();
        assert_eq!(keys::parse_page(&keys::page(id, 7)), Some(id));
        assert!(keys::is_data(&keys::data(id)));
        assert!(!keys::is_data("data/../../etc/passwd"));
        let n = SnapshotName::parse("demo").unwrap();
        assert_eq!(keys::parse_index(&keys::index(&n)), Some(n));
        assert_eq!(keys::parse_index("snapshots/../index"), None);
    }

    #[test]
    fn block_geometry() {
        assert_eq!(block_count(1000, 64 * 1024), 1);
        assert_eq!(block_count(128 * 1024, 64 * 1024), 2);
        assert_eq!(block_len(100_000, 65536, 1), 100_000 - 65536);
        assert!(validate_block_size(3 << 20).is_err());
        assert!(validate_block_size(32 << 10).is_err());
        assert_eq!(validate_block_size(1 << 20), Ok(1 << 20));
    }
}
