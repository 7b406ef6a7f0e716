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
//!
//! Version 3 makes the learned parts finer (docs/format.md, "Block masks"):
//! - a **block mask** per group and window: one byte per block of the group,
//!   the probability (×255) that the block is read in an episode of the
//!   group; the hint is their mean. Prefetch takes the blocks at or above
//!   its threshold, not the whole group. A byte, not a bit: the threshold
//!   moves at run time (the controller), so a bitmap cut at one learned
//!   threshold would be wrong at every other. 16 bytes a group at the
//!   default 16-block groups, only for groups that sessions read;
//! - the same mask on each successor (which of its blocks follow);
//! - **entry masks**: the mask of the episodes that start at a given block
//!   of the group, where it differs from the plain one (which file of a
//!   group of small files was opened says which blocks follow);
//! - **contexts**: successor lists that apply only when one of the last
//!   `history` distinct groups read before the episode was a given group,
//!   so a group shared by two workloads does not bring both followers;
//! - **workload groups** of the warm-up: the list `warmup` is the core every
//!   group of sessions reads early, and each [`WarmupGroup`] adds its own
//!   blocks once a session's first reads match its signature.
//!
//! Version 5 adds the **located blocks**: the manifest entries of what a
//! mount fetches first (the warm-up core and probes, or the prior's
//! metadata), copied from the pages, so the first data GETs need no page
//! GET before them: one round trip less before a mount's first byte; and
//! the **inline blocks**: the stored bytes of the first of them (a few
//! hundred KiB at most), so the reads every session starts with (an ext4
//! mount's superblock and first inode table) need no GET at all.
//!
//! The encoder and validating decoder are in `index_codec.rs`. Just over
//! 500 lines with its tests, on purpose: the round-trip, upgrade and
//! corruption tests build whole indexes from these types.

use super::{block_count, EntryTable, Id};
use crate::name::SnapshotName;

pub const INDEX_MAGIC: &[u8; 4] = b"SAIX";
/// Version 2 adds the filesystem prior ([`FsPrior`]), version 3 block
/// masks, contexts and workload groups, version 4 the prior's directories
/// and their learned affinities, version 5 the located blocks; older
/// indexes still decode (without them: whole-group hints, one warm-up
/// list, no directories, nothing located), and are written back as version
/// 5 by the next `hints`.
pub const INDEX_VERSION: u16 = 5;
/// Located blocks at most: 57 bytes each, so at most 57 KiB more to GET
/// with the index (about one page), and 1024 covers the prior's 64 MiB of
/// metadata at the 64 KiB block size and 512 MiB of warm-up at the default
/// 512 KiB. Past this, the rest is found through its pages as before.
pub const MAX_LOCATED: usize = 1024;
/// Stored bytes of inline blocks at most: ~2 ms more on the index's GET at
/// 1 Gbit/s, a tenth of the 20 ms round trip each inline block saves; an
/// ext4 image's first 512 KiB block (superblock, group descriptors, the
/// first inode table blocks) compresses to a few tens of KiB.
pub const MAX_INLINE_BYTES: usize = 256 * 1024;
/// Contexts per group and window at most.
pub const MAX_CONTEXTS: usize = 64;
/// Entry masks per group and window at most.
pub const MAX_ENTRY_MASKS: usize = 64;
/// Workload groups of the warm-up at most.
pub const MAX_WARMUP_GROUPS: usize = 256;
/// Signature blocks per workload group at most.
pub const MAX_SIGNATURE: usize = 64;
/// History length (distinct groups) a context may look back at most.
pub const MAX_HISTORY: u8 = 16;
/// Files a prior describes at most (a prior is a hint: past this, the
/// largest files are kept).
pub const MAX_PRIOR_FILES: usize = 1 << 20;
/// Directories a prior describes at most (past this, the rest get no
/// directory prior: a miss there costs what it costs without one).
pub const MAX_PRIOR_DIRS: usize = 1 << 20;
/// At most this many prefetch windows (each costs 4 bytes a group).
pub const MAX_WINDOWS: usize = 8;
/// At most this many successors per group and window.
pub const MAX_SUCCESSORS: usize = 64;
/// Smallest encoded group entry without windows.
pub(super) const GROUP_FIXED_LEN: usize = 48;

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
    /// Per block of the successor group: the probability (×255) that it is
    /// read in the window; empty: the whole group (a version 1/2 index).
    pub mask: Vec<u8>,
}

/// Successors that apply when group `after` is among the last `history`
/// distinct groups read before the episode (most recent match wins).
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSuccessors {
    pub after: u64,
    /// Training episodes seen in this context.
    pub episodes: u32,
    pub successors: Vec<Successor>,
}

/// A workload group of sessions: the warm-up blocks its sessions read
/// early beyond the core, fetched once a mount's first reads include
/// enough of its `signature` (see `predict::warmup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupGroup {
    /// Training sessions in the group.
    pub sessions: u32,
    /// Blocks that identify the group, most typical first.
    pub signature: Vec<u64>,
    pub blocks: Vec<WarmUp>,
}

/// Mask byte ↔ probability.
pub fn mask_byte(p: f64) -> u8 {
    (p.clamp(0.0, 1.0) * 255.0).round() as u8
}
pub fn mask_probability(b: u8) -> f32 {
    b as f32 / 255.0
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
    /// Per window: the block mask (one byte per block of the group, see the
    /// module doc); empty: the hint speaks for the whole group.
    pub masks: Vec<Vec<u8>>,
    /// Per window: successor lists by context.
    pub contexts: Vec<Vec<ContextSuccessors>>,
    /// Per window: block masks by the block an episode starts at, where
    /// that says more than the plain mask (see [`EntryMask`]).
    pub entries: Vec<Vec<EntryMask>>,
}

/// The block mask of the episodes of a group that start at block `entry`
/// (offset in the group): which file of a group of small files was opened
/// says which of its blocks follow; the plain mask only says what is read
/// on average.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMask {
    pub entry: u32,
    /// Training episodes that started there.
    pub episodes: u32,
    pub mask: Vec<u8>,
}

impl GroupEntry {
    /// The successors for window `w` given `recent` (the distinct groups
    /// read before this episode, most recent first; only the first
    /// `history` are looked at): a context's list when one matches,
    /// otherwise the plain list.
    pub fn successors_in(&self, w: usize, recent: &[u64], history: usize) -> &[Successor] {
        let ctx = self.contexts.get(w).map(Vec::as_slice).unwrap_or(&[]);
        if !ctx.is_empty() {
            for r in recent.iter().take(history) {
                if let Some(c) = ctx.iter().find(|c| c.after == *r) {
                    return &c.successors;
                }
            }
        }
        self.successors.get(w).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The mask of window `w`, when the index has one.
    pub fn mask(&self, w: usize) -> Option<&[u8]> {
        self.masks
            .get(w)
            .map(Vec::as_slice)
            .filter(|m| !m.is_empty())
    }

    /// The mask of window `w` for an episode starting at the group's
    /// block `entry` (its offset in the group): its entry mask when there
    /// is one, else the plain mask.
    pub fn mask_at(&self, w: usize, entry: u64) -> Option<&[u8]> {
        self.entries
            .get(w)
            .and_then(|v| v.iter().find(|e| e.entry as u64 == entry))
            .map(|e| e.mask.as_slice())
            .or_else(|| self.mask(w))
    }

    /// Whether any block of this group is worth prefetching at `threshold`
    /// in window `w` (by mask, or by the whole-group hint without one).
    pub fn has_likely_blocks(&self, w: usize, threshold: f32) -> bool {
        match self.mask(w) {
            Some(m) => m.iter().any(|&b| mask_probability(b) >= threshold),
            None => self.hints.get(w).copied().unwrap_or(0.0) >= threshold,
        }
    }
}

impl Successor {
    /// Whether any of its blocks is worth prefetching at `threshold`.
    pub fn is_likely(&self, threshold: f32) -> bool {
        if self.mask.is_empty() {
            self.probability >= threshold
        } else {
            self.mask.iter().any(|&b| mask_probability(b) >= threshold)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManifestIndex {
    pub header: SnapshotHeader,
    pub windows_ms: Vec<u32>,
    /// Sorted by group id, strictly increasing.
    pub groups: Vec<GroupEntry>,
    /// What to fetch as soon as the snapshot is mounted, in order: the
    /// core every workload group reads early.
    pub warmup: Vec<WarmUp>,
    /// Per workload group, what it reads early beyond the core.
    pub warmup_groups: Vec<WarmupGroup>,
    /// Distinct groups a context looks back (0: contexts unused).
    pub history: u8,
    /// What the filesystem in the volume says of itself, found by `create`.
    pub prior: Option<FsPrior>,
    /// The manifest entries of the blocks a mount fetches first (at most
    /// [`MAX_LOCATED`]), copied from the pages.
    pub located: EntryTable,
    /// The stored bytes of the first located blocks (at most
    /// [`MAX_INLINE_BYTES`] in all). Each must be a located block, as long
    /// as its entry says, sorted by block id, as `predict::locate_start`
    /// builds them: the encoder writes what it is given (past the budget it
    /// stops), and the decoder refuses anything else.
    pub inline: Vec<InlineBlock>,
}

/// A located block's stored bytes (compressed or raw, as in its data
/// object), carried in the index; checked against its entry's checksum
/// when used, like any fetched block.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineBlock {
    pub block_id: u64,
    pub stored: Vec<u8>,
}

impl std::fmt::Debug for InlineBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InlineBlock({}, {} B)", self.block_id, self.stored.len())
    }
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
    /// Directories (version 4; empty before): what a walk of one reads.
    pub directories: Vec<PriorDir>,
}

/// One directory of a prior: the blocks of the regular files directly in
/// it, and what sessions taught about walks of its subdirectories.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriorDir {
    /// Index of the parent in [`FsPrior::directories`]; [`NO_PARENT`] for
    /// the root (or a directory whose parent is not described).
    pub parent: u32,
    /// The blocks its files occupy, in `readdir` order, each once.
    pub blocks: Vec<BlockRun>,
    /// The subset of `blocks` where most of the bytes are this directory's
    /// (a block may hold the last file of one and the first of the next):
    /// a read there is a read of this directory.
    pub owned: Vec<BlockRun>,
    /// Learned by `hints` ([`mask_byte`] encoding; [`UNOBSERVED`]: no
    /// session entered a child, so nothing is learned): the expected share
    /// of a child directory's blocks a session reads once it has read one
    /// of them.
    pub affinity: u8,
}

/// [`PriorDir::parent`] of a directory without one.
pub const NO_PARENT: u32 = u32::MAX;

/// [`PriorDir::affinity`] when no session entered a child directory: a
/// learned affinity is stored as at least 1, so "learned to be nearly
/// nothing" and "never seen" stay apart (the first is left alone, the
/// second is the fetch unit's to guess at).
pub const UNOBSERVED: u8 = 0;

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
                        mask: if g == 0 { vec![] } else { vec![191; 16] },
                    }],
                    vec![],
                ],
                masks: vec![(0..16u8).map(|i| i * 16).collect(), vec![]],
                entries: vec![
                    vec![EntryMask {
                        entry: 3,
                        episodes: 2,
                        mask: vec![255; 16],
                    }],
                    vec![],
                ],
                contexts: vec![
                    vec![ContextSuccessors {
                        after: 4,
                        episodes: 3,
                        successors: vec![Successor {
                            group: 6,
                            probability: 1.0,
                            mask: vec![255; 16],
                        }],
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
            warmup_groups: vec![WarmupGroup {
                sessions: 2,
                signature: vec![64, 65],
                blocks: vec![WarmUp::new(4, 16, [64, 65, 66])],
            }],
            history: 2,
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
                directories: vec![
                    PriorDir {
                        parent: NO_PARENT,
                        blocks: vec![],
                        owned: vec![],
                        affinity: 230,
                    },
                    PriorDir {
                        parent: 0,
                        blocks: vec![BlockRun { first: 7, count: 4 }],
                        owned: vec![BlockRun { first: 7, count: 3 }],
                        affinity: 0,
                    },
                ],
            }),
            located: located(&[32, 0, 33]),
            inline: vec![
                InlineBlock {
                    block_id: 0,
                    stored: vec![7; 1000],
                },
                InlineBlock {
                    block_id: 33,
                    stored: vec![8; 1000],
                },
            ],
        }
    }

    /// A located-blocks table for `blocks`, in two objects.
    pub(crate) fn located(blocks: &[u64]) -> EntryTable {
        let keys = [
            super::super::keys::data(Id([1; 16])),
            super::super::keys::data(Id([2; 16])),
        ];
        EntryTable::new(blocks.iter().map(|&b| {
            let e = crate::format::ManifestEntry {
                block_id: b,
                object: 0,
                offset: b * 1000,
                length: 1000,
                compression: crate::format::Compression::Zstd,
                checksum: [b as u8; 32],
            };
            (keys[b as usize % 2].as_str(), e)
        }))
    }

    /// Version 1 (no prior), 2 (no masks, contexts, workload groups), 3
    /// (no directories) and 4 (nothing located) indexes still decode, as
    /// what they hold.
    #[test]
    fn version_1_to_4_indexes_decode_without_what_they_lack() {
        let ix = sample();
        let v4 = ManifestIndex {
            located: EntryTable::default(),
            inline: vec![],
            ..ix.clone()
        };
        let enc = ix.encode_version(4);
        assert_eq!(u16::from_le_bytes([enc[4], enc[5]]), 4);
        assert_eq!(ManifestIndex::decode(&enc, "v4").unwrap(), v4);
        let mut v3 = v4.clone();
        v3.prior.as_mut().unwrap().directories.clear();
        assert_eq!(
            ManifestIndex::decode(&ix.encode_version(3), "v3").unwrap(),
            v3
        );
        let v2 = ManifestIndex {
            warmup_groups: vec![],
            history: 0,
            groups: ix
                .groups
                .iter()
                .map(|g| GroupEntry {
                    masks: vec![],
                    contexts: vec![],
                    entries: vec![],
                    successors: g
                        .successors
                        .iter()
                        .map(|v| {
                            v.iter()
                                .map(|s| Successor {
                                    mask: vec![],
                                    ..s.clone()
                                })
                                .collect()
                        })
                        .collect(),
                    ..g.clone()
                })
                .collect(),
            ..v3.clone()
        };
        assert_eq!(
            ManifestIndex::decode(&ix.encode_version(2), "v2").unwrap(),
            v2
        );
        let v1 = ManifestIndex {
            prior: None,
            ..v2.clone()
        };
        let enc = ix.encode_version(1);
        assert_eq!(u16::from_le_bytes([enc[4], enc[5]]), 1);
        assert_eq!(ManifestIndex::decode(&enc, "v1").unwrap(), v1);
        // And a prior outside the volume is refused.
        let mut bad = sample();
        bad.prior.as_mut().unwrap().metadata[0].first = 1 << 40;
        assert!(ManifestIndex::decode(&bad.encode(), "t").is_err());
        // So is a directory whose parent is not one of them.
        let mut bad = sample();
        bad.prior.as_mut().unwrap().directories[1].parent = 2;
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
        let mut ix = sample();
        ix.warmup_groups[0].signature.push(1 << 40);
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
        let mut ix = sample();
        ix.groups[0].contexts[0][0].after = 1 << 40;
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
        // A located block beyond the volume, and one naming no object.
        let mut ix = sample();
        ix.located = located(&[0, 129]);
        let e = ManifestIndex::decode(&ix.encode(), "t").unwrap_err();
        assert!(e.to_string().contains("located block_id"), "{e}");
        let mut ix = sample();
        ix.located.entries[0].object = 2;
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
        // Inline bytes of a block not located, of another length than its
        // entry's, or out of order.
        let mut ix = sample();
        ix.inline[1].block_id = 34;
        let e = ManifestIndex::decode(&ix.encode(), "t").unwrap_err();
        assert!(e.to_string().contains("is not located"), "{e}");
        let mut ix = sample();
        ix.inline[0].stored.pop();
        let e = ManifestIndex::decode(&ix.encode(), "t").unwrap_err();
        assert!(e.to_string().contains("its entry says 1000"), "{e}");
        let mut ix = sample();
        ix.inline.swap(0, 1);
        assert!(ManifestIndex::decode(&ix.encode(), "t").is_err());
    }

    /// More located blocks than [`MAX_LOCATED`]: the first are written,
    /// and an inline block whose entry was left out is left out too, so
    /// the index still decodes.
    #[test]
    fn located_blocks_past_the_cap_take_their_inline_bytes_with_them() {
        let mut ix = sample();
        ix.header.volume_size = 4096 * 65536;
        ix.header.zero_blocks = 4096 - 16;
        ix.located = located(&(0..MAX_LOCATED as u64 + 10).collect::<Vec<_>>());
        ix.inline = vec![
            InlineBlock {
                block_id: 0,
                stored: vec![1; 1000],
            },
            InlineBlock {
                block_id: MAX_LOCATED as u64 + 5,
                stored: vec![2; 1000],
            },
        ];
        let dec = ManifestIndex::decode(&ix.encode(), "t").unwrap();
        assert_eq!(dec.located.entries.len(), MAX_LOCATED);
        let kept: Vec<u64> = dec.inline.iter().map(|b| b.block_id).collect();
        assert_eq!(kept, [0]);
    }

    /// Inline bytes beyond [`MAX_INLINE_BYTES`] are not written (the
    /// encoder keeps the first that fit), so an index never grows past it.
    #[test]
    fn inline_blocks_stop_at_the_budget() {
        let mut ix = sample();
        ix.header.block_size = 1 << 20;
        ix.header.volume_size = 129 << 20;
        let big = |b: u64| crate::format::ManifestEntry {
            block_id: b,
            object: 0,
            offset: 0,
            length: 100 * 1024,
            compression: crate::format::Compression::Zstd,
            checksum: [0; 32],
        };
        let key = super::super::keys::data(Id([1; 16]));
        ix.located = EntryTable::new((0..4).map(|b| (key.as_str(), big(b))));
        ix.inline = (0..4)
            .map(|b| InlineBlock {
                block_id: b,
                stored: vec![1; 100 * 1024],
            })
            .collect();
        let dec = ManifestIndex::decode(&ix.encode(), "t").unwrap();
        let kept: Vec<u64> = dec.inline.iter().map(|b| b.block_id).collect();
        assert_eq!(kept, [0, 1], "256 KiB holds two blocks of 100 KiB");
    }
}
