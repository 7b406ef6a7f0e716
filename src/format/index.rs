//! The manifest index: the snapshot header plus one entry per non-empty
//! group, and the warm-up list. It is the only object a mount loads at start,
//! so it is kept small (~60 bytes a group: a 1 TiB volume at 512 KiB blocks
//! and 16-block groups has 131,072 groups, ~8 MiB) and it alone answers
//! "block → group → page", so a lookup needs the index plus one page.
//!
//! Groups are fixed ranges of block ids: group `g` holds blocks
//! `g*group_size .. (g+1)*group_size`. Groups that are all holes have no
//! entry. Per window (`windows_ms`), each group carries a prefetch hint (the
//! expected fraction of its stored blocks read within the window once it is
//! touched, see docs/design.md) and its likely successor groups; both are zero /
//! empty until `hints` learns them from traces.

use super::codec::{Reader, Writer};
use super::{block_count, name_field, validate_block_size, FormatError, Id, MAX_GROUP_SIZE};
use crate::name::SnapshotName;

pub const INDEX_MAGIC: &[u8; 4] = b"SAIX";
/// Version 2 adds the filesystem prior ([`FsPrior`]); version 1 indexes
/// (without it) still decode, and are written back as version 2 by the
/// next `hints`.
pub const INDEX_VERSION: u16 = 2;
/// Files a prior describes at most (a prior is a hint: past this, the
/// largest files are kept).
pub const MAX_PRIOR_FILES: usize = 1 << 20;
/// At most this many prefetch windows (each costs 4 bytes a group).
pub const MAX_WINDOWS: usize = 8;
/// At most this many successors per group and window.
pub const MAX_SUCCESSORS: usize = 64;
/// Smallest encoded group entry without windows.
const GROUP_FIXED_LEN: usize = 48;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub name: SnapshotName,
    pub id: Id,
    pub volume_size: u64,
    pub block_size: u32,
    pub group_size: u32,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub parent: Option<(SnapshotName, Id)>,
    /// Blocks with data (not holes).
    pub stored_blocks: u64,
    /// All-zero blocks (holes).
    pub zero_blocks: u64,
    /// Compressed bytes this snapshot references (each stored location once).
    pub stored_bytes: u64,
    /// Compressed bytes uploaded by the create of this snapshot.
    pub uploaded_bytes: u64,
    pub page_count: u32,
}

impl SnapshotHeader {
    pub fn block_count(&self) -> u64 {
        block_count(self.volume_size, self.block_size)
    }
    pub fn group_count(&self) -> u64 {
        self.block_count().div_ceil(self.group_size as u64)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Successor {
    pub group: u64,
    pub probability: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    pub group: u64,
    /// First and last *stored* block of the group.
    pub first_block: u64,
    pub last_block: u64,
    pub stored_blocks: u32,
    pub stored_bytes: u64,
    /// Page holding this group's entries, and where in it.
    pub page: u32,
    pub entry_start: u32,
    pub entry_count: u32,
    /// One hint per window of [`ManifestIndex::windows_ms`].
    pub hints: Vec<f32>,
    /// Per window: successor groups, most likely first.
    pub successors: Vec<Vec<Successor>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManifestIndex {
    pub header: SnapshotHeader,
    pub windows_ms: Vec<u32>,
    /// Sorted by group id, strictly increasing.
    pub groups: Vec<GroupEntry>,
    /// What to fetch as soon as the snapshot is mounted, in order.
    pub warmup: Vec<WarmUp>,
    /// What the filesystem in the volume says of itself, found by `create`.
    pub prior: Option<FsPrior>,
}

/// `count` consecutive blocks from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRun {
    pub first: u64,
    pub count: u32,
}

impl BlockRun {
    pub fn blocks(&self) -> std::ops::Range<u64> {
        self.first..self.first + self.count as u64
    }
}

/// A prior for mounts without traces, from the filesystem's own layout
/// (ext4: see `create/ext4.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsPrior {
    /// The filesystem found, e.g. "ext4".
    pub filesystem: String,
    /// Blocks holding its metadata (superblock, group descriptors, the
    /// used part of the inode tables, directories), in fetch order.
    pub metadata: Vec<BlockRun>,
    /// Files spanning more than one block: each one's blocks, in file order.
    pub files: Vec<Vec<BlockRun>>,
}

/// A warm-up entry: the blocks of one group that sessions read early.
/// Block-granular, because a start-up reads scattered small files: warming
/// whole groups would fetch mostly what is never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmUp {
    pub group: u64,
    /// Bit i (byte i/8, bit i%8) = block `group*group_size + i`;
    /// `ceil(group_size/8)` bytes.
    pub mask: Vec<u8>,
}

impl WarmUp {
    /// An entry for `blocks` of `group` (blocks outside it are ignored).
    pub fn new(group: u64, group_size: u32, blocks: impl IntoIterator<Item = u64>) -> Self {
        let first = group.saturating_mul(group_size as u64);
        let mut mask = vec![0u8; (group_size as usize).div_ceil(8)];
        for b in blocks {
            if let Some(i) = b.checked_sub(first).filter(|i| *i < group_size as u64) {
                mask[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        WarmUp { group, mask }
    }

    /// The block ids this entry names.
    pub fn blocks(&self, group_size: u32) -> impl Iterator<Item = u64> + '_ {
        let first = self.group.saturating_mul(group_size as u64);
        (0..group_size as u64)
            .filter(|i| {
                self.mask
                    .get((i / 8) as usize)
                    .is_some_and(|m| m & (1 << (i % 8)) != 0)
            })
            .map(move |i| first + i)
    }
}

impl ManifestIndex {
    /// Uncompressed bytes of the stored (non-hole) blocks: what a sparse
    /// local copy of the volume occupies.
    pub fn logical_stored_bytes(&self) -> u64 {
        let h = &self.header;
        if h.stored_blocks == 0 {
            return 0;
        }
        // Every stored block is full-size except possibly the volume's last.
        let last = h.block_count() - 1;
        let last_stored = self.groups.last().is_some_and(|g| g.last_block == last);
        let short = if last_stored {
            h.block_count() * h.block_size as u64 - h.volume_size
        } else {
            0
        };
        h.stored_blocks * h.block_size as u64 - short
    }

    /// The index entry of the group holding `block`, or `None` when the
    /// whole group is holes.
    pub fn group_of_block(&self, block: u64) -> Option<&GroupEntry> {
        self.group(block / self.header.group_size as u64)
    }

    pub fn group(&self, group: u64) -> Option<&GroupEntry> {
        self.groups
            .binary_search_by_key(&group, |g| g.group)
            .ok()
            .map(|i| &self.groups[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let h = &self.header;
        let mut w = Writer::new(INDEX_MAGIC, INDEX_VERSION);
        w.str(h.name.as_str());
        w.bytes(&h.id.0);
        w.u64(h.volume_size);
        w.u32(h.block_size);
        w.u32(h.group_size);
        w.i64(h.created_ms);
        match &h.parent {
            None => w.u8(0),
            Some((name, id)) => {
                w.u8(1);
                w.str(name.as_str());
                w.bytes(&id.0);
            }
        }
        w.u64(h.stored_blocks);
        w.u64(h.zero_blocks);
        w.u64(h.stored_bytes);
        w.u64(h.uploaded_bytes);
        w.u32(h.page_count);
        w.count(self.windows_ms.len());
        for ms in &self.windows_ms {
            w.u32(*ms);
        }
        w.count(self.groups.len());
        for g in &self.groups {
            w.u64(g.group);
            w.u64(g.first_block);
            w.u64(g.last_block);
            w.u32(g.stored_blocks);
            w.u64(g.stored_bytes);
            w.u32(g.page);
            w.u32(g.entry_start);
            w.u32(g.entry_count);
            for i in 0..self.windows_ms.len() {
                w.f32(g.hints.get(i).copied().unwrap_or(0.0));
            }
            for i in 0..self.windows_ms.len() {
                let succ = g.successors.get(i).map(Vec::as_slice).unwrap_or(&[]);
                let succ = &succ[..succ.len().min(MAX_SUCCESSORS)];
                w.u16(succ.len() as u16);
                for s in succ {
                    w.u64(s.group);
                    w.f32(s.probability);
                }
            }
        }
        w.count(self.warmup.len());
        let mask_len = (self.header.group_size as usize).div_ceil(8);
        for e in &self.warmup {
            w.u64(e.group);
            let mut m = e.mask.clone();
            m.resize(mask_len, 0);
            w.bytes(&m);
        }
        match &self.prior {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                w.str(&p.filesystem);
                let runs = |w: &mut Writer, runs: &[BlockRun]| {
                    w.count(runs.len());
                    for r in runs {
                        w.u64(r.first);
                        w.u32(r.count);
                    }
                };
                runs(&mut w, &p.metadata);
                w.count(p.files.len().min(MAX_PRIOR_FILES));
                for f in p.files.iter().take(MAX_PRIOR_FILES) {
                    runs(&mut w, f);
                }
            }
        }
        w.finish()
    }

    /// Decodes and validates an index; `what` names it in errors (its key).
    pub fn decode(data: &[u8], what: &str) -> Result<Self, FormatError> {
        let (mut r, version) = Reader::open(
            data,
            INDEX_MAGIC,
            INDEX_VERSION,
            format!("manifest index {what}"),
        )?;
        let name = name_field(&mut r, "name")?;
        let id = Id(r.bytes("snapshot_id")?);
        let volume_size = r.u64("volume_size")?;
        if volume_size == 0 {
            return Err(r.error("volume_size", "is 0"));
        }
        let block_size = r.u32("block_size")?;
        validate_block_size(block_size as u64).map_err(|e| r.error("block_size", e))?;
        let group_size = r.u32("group_size")?;
        if group_size == 0 || group_size > MAX_GROUP_SIZE {
            return Err(r.error(
                "group_size",
                format!("{group_size} not in 1..={MAX_GROUP_SIZE}"),
            ));
        }
        let created_ms = r.i64("created_ms")?;
        let parent = match r.u8("has_parent")? {
            0 => None,
            1 => Some((
                name_field(&mut r, "parent name")?,
                Id(r.bytes("parent id")?),
            )),
            v => return Err(r.error("has_parent", format!("{v} is not 0 or 1"))),
        };
        let header = SnapshotHeader {
            name,
            id,
            volume_size,
            block_size,
            group_size,
            created_ms,
            parent,
            stored_blocks: r.u64("stored_blocks")?,
            zero_blocks: r.u64("zero_blocks")?,
            stored_bytes: r.u64("stored_bytes")?,
            uploaded_bytes: r.u64("uploaded_bytes")?,
            page_count: r.u32("page_count")?,
        };
        let n_blocks = header.block_count();
        let n_groups = header.group_count();
        if header.stored_blocks.saturating_add(header.zero_blocks) != n_blocks {
            return Err(r.error(
                "stored_blocks",
                "stored + zero blocks do not add up to the volume's blocks",
            ));
        }

        let n_windows = r.count("window count", 4)?;
        if n_windows == 0 || n_windows > MAX_WINDOWS {
            return Err(r.error(
                "window count",
                format!("{n_windows} not in 1..={MAX_WINDOWS}"),
            ));
        }
        let mut windows_ms = Vec::with_capacity(n_windows);
        for _ in 0..n_windows {
            let ms = r.u32("window")?;
            if ms == 0 {
                return Err(r.error("window", "is 0 ms"));
            }
            windows_ms.push(ms);
        }

        let n = r.count("group count", GROUP_FIXED_LEN + 6 * n_windows)?;
        let mut groups: Vec<GroupEntry> = Vec::with_capacity(n);
        let mut stored_total = 0u64;
        for _ in 0..n {
            let group = r.u64("group")?;
            if group >= n_groups {
                return Err(r.error(
                    "group",
                    format!("{group} beyond the volume's {n_groups} groups"),
                ));
            }
            if groups.last().is_some_and(|p| p.group >= group) {
                return Err(r.error("group", format!("{group} out of order")));
            }
            let first_block = r.u64("first_block")?;
            let last_block = r.u64("last_block")?;
            let lo = group * group_size as u64;
            let hi = (lo + group_size as u64).min(n_blocks);
            if !(lo <= first_block && first_block <= last_block && last_block < hi) {
                return Err(r.error(
                    "first_block",
                    format!("range {first_block}..={last_block} outside group {group}"),
                ));
            }
            let stored_blocks = r.u32("stored_blocks")?;
            if stored_blocks == 0 || stored_blocks as u64 > last_block - first_block + 1 {
                return Err(r.error(
                    "stored_blocks",
                    format!("{stored_blocks} does not fit the group's range"),
                ));
            }
            stored_total += stored_blocks as u64;
            let stored_bytes = r.u64("stored_bytes")?;
            let page = r.u32("page")?;
            if page >= header.page_count {
                return Err(r.error(
                    "page",
                    format!("{page} beyond page_count {}", header.page_count),
                ));
            }
            let entry_start = r.u32("entry_start")?;
            let entry_count = r.u32("entry_count")?;
            if entry_count != stored_blocks || entry_start.checked_add(entry_count).is_none() {
                return Err(r.error("entry_count", "does not match stored_blocks"));
            }
            let mut hints = Vec::with_capacity(n_windows);
            for _ in 0..n_windows {
                hints.push(r.probability("hint")?);
            }
            let mut successors = Vec::with_capacity(n_windows);
            for _ in 0..n_windows {
                let k = r.u16("successor count")? as usize;
                if k > MAX_SUCCESSORS {
                    return Err(r.error("successor count", format!("{k} > {MAX_SUCCESSORS}")));
                }
                let mut v = Vec::with_capacity(k);
                for _ in 0..k {
                    let g = r.u64("successor group")?;
                    if g >= n_groups {
                        return Err(r.error("successor group", format!("{g} beyond the volume")));
                    }
                    v.push(Successor {
                        group: g,
                        probability: r.probability("successor probability")?,
                    });
                }
                successors.push(v);
            }
            groups.push(GroupEntry {
                group,
                first_block,
                last_block,
                stored_blocks,
                stored_bytes,
                page,
                entry_start,
                entry_count,
                hints,
                successors,
            });
        }
        if stored_total != header.stored_blocks {
            return Err(r.error(
                "groups",
                "stored blocks of the groups do not add up to the header's",
            ));
        }
        let mask_len = (group_size as usize).div_ceil(8);
        let n_warm = r.count("warm-up count", 8 + mask_len)?;
        let mut warmup = Vec::with_capacity(n_warm);
        for _ in 0..n_warm {
            let g = r.u64("warm-up group")?;
            if g >= n_groups {
                return Err(r.error("warm-up group", format!("{g} beyond the volume")));
            }
            let mut mask = vec![0u8; mask_len];
            for m in mask.iter_mut() {
                *m = r.u8("warm-up mask")?;
            }
            warmup.push(WarmUp { group: g, mask });
        }
        let prior = if version >= 2 {
            decode_prior(&mut r, n_blocks)?
        } else {
            None
        };
        r.finish()?;
        Ok(ManifestIndex {
            header,
            windows_ms,
            groups,
            warmup,
            prior,
        })
    }
}

/// The prior section of a version 2 index (after the warm-up list).
fn decode_prior(r: &mut Reader<'_>, n_blocks: u64) -> Result<Option<FsPrior>, FormatError> {
    match r.u8("has_prior")? {
        0 => return Ok(None),
        1 => {}
        v => return Err(r.error("has_prior", format!("{v} is not 0 or 1"))),
    }
    let filesystem = r.str("prior filesystem")?.to_string();
    fn runs(r: &mut Reader<'_>, n_blocks: u64, what: &str) -> Result<Vec<BlockRun>, FormatError> {
        let n = r.count(what, 12)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let first = r.u64(what)?;
            let count = r.u32(what)?;
            if count == 0 || first.saturating_add(count as u64) > n_blocks {
                return Err(r.error(
                    what,
                    format!("run {first}+{count} outside the volume's {n_blocks} blocks"),
                ));
            }
            out.push(BlockRun { first, count });
        }
        Ok(out)
    }
    let metadata = runs(r, n_blocks, "prior metadata run")?;
    let n_files = r.count("prior file count", 4)?;
    if n_files > MAX_PRIOR_FILES {
        return Err(r.error("prior file count", format!("{n_files} > {MAX_PRIOR_FILES}")));
    }
    let mut files = Vec::with_capacity(n_files);
    for _ in 0..n_files {
        files.push(runs(r, n_blocks, "prior file run")?);
    }
    Ok(Some(FsPrior {
        filesystem,
        metadata,
        files,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ManifestIndex {
        let groups: Vec<GroupEntry> = (0..4u64)
            .map(|g| GroupEntry {
                group: g * 2,
                first_block: g * 2 * 16,
                last_block: g * 2 * 16 + 3,
                stored_blocks: 4,
                stored_bytes: 4000,
                page: 0,
                entry_start: g as u32 * 4,
                entry_count: 4,
                hints: vec![0.5, 0.25],
                successors: vec![
                    vec![Successor {
                        group: 1,
                        probability: 0.75,
                    }],
                    vec![],
                ],
            })
            .collect();
        ManifestIndex {
            header: SnapshotHeader {
                name: SnapshotName::parse("demo").unwrap(),
                id: Id([9; 16]),
                volume_size: 128 * 65536 + 100,
                block_size: 65536,
                group_size: 16,
                created_ms: 1_700_000_000_000,
                parent: Some((SnapshotName::parse("base").unwrap(), Id([3; 16]))),
                stored_blocks: 16,
                zero_blocks: 129 - 16,
                stored_bytes: 16000,
                uploaded_bytes: 8000,
                page_count: 1,
            },
            windows_ms: vec![2000, 10000],
            groups,
            warmup: vec![WarmUp::new(2, 16, [32, 33]), WarmUp::new(0, 16, [0, 15])],
            prior: Some(FsPrior {
                filesystem: "ext4".into(),
                metadata: vec![
                    BlockRun { first: 0, count: 2 },
                    BlockRun {
                        first: 40,
                        count: 1,
                    },
                ],
                files: vec![vec![
                    BlockRun { first: 7, count: 3 },
                    BlockRun { first: 2, count: 1 },
                ]],
            }),
        }
    }

    /// A version 1 index (no prior section) still decodes.
    #[test]
    fn version_1_indexes_decode_without_a_prior() {
        let ix = ManifestIndex {
            prior: None,
            ..sample()
        };
        let v2 = ix.encode();
        // Version 1 = version 2 without the trailing has_prior byte.
        let mut body = v2[..v2.len() - 32 - 1].to_vec();
        assert_eq!(v2[v2.len() - 33], 0, "has_prior");
        body[4..6].copy_from_slice(&1u16.to_le_bytes());
        let sum = *blake3::hash(&body).as_bytes();
        body.extend_from_slice(&sum);
        assert_eq!(ManifestIndex::decode(&body, "v1").unwrap(), ix);
        // And a prior outside the volume is refused.
        let mut bad = sample();
        bad.prior.as_mut().unwrap().metadata[0].first = 1 << 40;
        assert!(ManifestIndex::decode(&bad.encode(), "t").is_err());
    }

    #[test]
    fn round_trip_and_lookup() {
        let ix = sample();
        let dec = ManifestIndex::decode(&ix.encode(), "t").unwrap();
        assert_eq!(dec, ix);
        assert_eq!(dec.group_of_block(33).map(|g| g.group), Some(2));
        assert!(dec.group_of_block(16).is_none());
    }

    #[test]
    fn every_truncation_and_flip_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(
                ManifestIndex::decode(&enc[..n], "t").is_err(),
                "truncated at {n}"
            );
        }
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(ManifestIndex::decode(&bad, "t").is_err(), "flip at {i}");
        }
    }

    #[test]
    fn absurd_values_are_refused() {
        let mut ix = sample();
        ix.groups[1].hints[0] = 1.5;
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
        let mut ix = sample();
        ix.groups[0].group = 1_000_000;
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
        let mut ix = sample();
        ix.header.block_size = 1000;
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
        let mut ix = sample();
        ix.warmup.push(WarmUp::new(1 << 60, 16, []));
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
    }
}
