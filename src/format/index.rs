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

use super::codec::{Reader, Writer};
use super::{block_count, name_field, validate_block_size, FormatError, Id, MAX_GROUP_SIZE};
use crate::name::SnapshotName;

pub const INDEX_MAGIC: &[u8; 4] = b"SAIX";
/// Version 2 adds the filesystem prior ([`FsPrior`]), version 3 block
/// masks, contexts and workload groups; version 1 and 2 indexes still
/// decode (without them: whole-group hints, one warm-up list), and are
/// written back as version 3 by the next `hints`.
pub const INDEX_VERSION: u16 = 3;
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
        self.encode_version(INDEX_VERSION)
    }

    /// Encodes as format `version` (1 to [`INDEX_VERSION`]), leaving out
    /// what that version cannot hold: what the tests of the upgrade path
    /// (and of old mounts) write.
    pub fn encode_version(&self, version: u16) -> Vec<u8> {
        let version = version.clamp(1, INDEX_VERSION);
        let v3 = version >= 3;
        let h = &self.header;
        let mut w = Writer::new(INDEX_MAGIC, version);
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
            let gs = self.header.group_size as usize;
            for i in 0..self.windows_ms.len() {
                let succ = g.successors.get(i).map(Vec::as_slice).unwrap_or(&[]);
                encode_successors(&mut w, succ, gs, v3);
            }
            if !v3 {
                continue;
            }
            for i in 0..self.windows_ms.len() {
                encode_mask(&mut w, g.masks.get(i).map(Vec::as_slice).unwrap_or(&[]), gs);
            }
            for i in 0..self.windows_ms.len() {
                let ctx = g.contexts.get(i).map(Vec::as_slice).unwrap_or(&[]);
                let ctx = &ctx[..ctx.len().min(MAX_CONTEXTS)];
                w.u16(ctx.len() as u16);
                for c in ctx {
                    w.u64(c.after);
                    w.u32(c.episodes);
                    encode_successors(&mut w, &c.successors, gs, true);
                }
            }
            for i in 0..self.windows_ms.len() {
                let en = g.entries.get(i).map(Vec::as_slice).unwrap_or(&[]);
                let en = &en[..en.len().min(MAX_ENTRY_MASKS)];
                w.u16(en.len() as u16);
                for e in en {
                    w.u32(e.entry);
                    w.u32(e.episodes);
                    encode_mask(&mut w, &e.mask, gs);
                }
            }
        }
        encode_warmup(&mut w, &self.warmup, self.header.group_size);
        if version < 2 {
            return w.finish();
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
        if !v3 {
            return w.finish();
        }
        w.u8(self.history.min(MAX_HISTORY));
        let groups = &self.warmup_groups[..self.warmup_groups.len().min(MAX_WARMUP_GROUPS)];
        w.count(groups.len());
        for g in groups {
            w.u32(g.sessions);
            let sig = &g.signature[..g.signature.len().min(MAX_SIGNATURE)];
            w.count(sig.len());
            for b in sig {
                w.u64(*b);
            }
            encode_warmup(&mut w, &g.blocks, self.header.group_size);
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
            let gs = group_size as usize;
            let v3 = version >= 3;
            let mut successors = Vec::with_capacity(n_windows);
            for _ in 0..n_windows {
                successors.push(decode_successors(&mut r, n_groups, gs, v3)?);
            }
            let mut masks = Vec::with_capacity(n_windows);
            let mut contexts = Vec::with_capacity(n_windows);
            let mut entries = Vec::with_capacity(n_windows);
            if v3 {
                for _ in 0..n_windows {
                    masks.push(decode_mask(&mut r, gs)?);
                }
                for _ in 0..n_windows {
                    let k = r.u16("context count")? as usize;
                    if k > MAX_CONTEXTS {
                        return Err(r.error("context count", format!("{k} > {MAX_CONTEXTS}")));
                    }
                    let mut v = Vec::with_capacity(k);
                    for _ in 0..k {
                        let after = r.u64("context group")?;
                        if after >= n_groups {
                            return Err(
                                r.error("context group", format!("{after} beyond the volume"))
                            );
                        }
                        let episodes = r.u32("context episodes")?;
                        v.push(ContextSuccessors {
                            after,
                            episodes,
                            successors: decode_successors(&mut r, n_groups, gs, true)?,
                        });
                    }
                    contexts.push(v);
                }
                for _ in 0..n_windows {
                    let k = r.u16("entry mask count")? as usize;
                    if k > MAX_ENTRY_MASKS {
                        return Err(r.error("entry mask count", format!("{k} > {MAX_ENTRY_MASKS}")));
                    }
                    let mut v = Vec::with_capacity(k);
                    for _ in 0..k {
                        let entry = r.u32("entry block")?;
                        if entry >= group_size {
                            return Err(r.error("entry block", format!("{entry} beyond the group")));
                        }
                        v.push(EntryMask {
                            entry,
                            episodes: r.u32("entry episodes")?,
                            mask: decode_mask(&mut r, gs)?,
                        });
                    }
                    entries.push(v);
                }
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
                masks,
                contexts,
                entries,
            });
        }
        if stored_total != header.stored_blocks {
            return Err(r.error(
                "groups",
                "stored blocks of the groups do not add up to the header's",
            ));
        }
        let warmup = decode_warmup(&mut r, group_size, n_groups)?;
        let prior = if version >= 2 {
            decode_prior(&mut r, n_blocks)?
        } else {
            None
        };
        let mut history = 0;
        let mut warmup_groups = Vec::new();
        if version >= 3 {
            history = r.u8("history")?;
            if history > MAX_HISTORY {
                return Err(r.error("history", format!("{history} > {MAX_HISTORY}")));
            }
            let n = r.count("warm-up group count", 12)?;
            if n > MAX_WARMUP_GROUPS {
                return Err(r.error("warm-up group count", format!("{n} > {MAX_WARMUP_GROUPS}")));
            }
            for _ in 0..n {
                let sessions = r.u32("warm-up group sessions")?;
                let k = r.count("signature length", 8)?;
                if k > MAX_SIGNATURE {
                    return Err(r.error("signature length", format!("{k} > {MAX_SIGNATURE}")));
                }
                let mut signature = Vec::with_capacity(k);
                for _ in 0..k {
                    let b = r.u64("signature block")?;
                    if b >= n_blocks {
                        return Err(r.error("signature block", format!("{b} beyond the volume")));
                    }
                    signature.push(b);
                }
                warmup_groups.push(WarmupGroup {
                    sessions,
                    signature,
                    blocks: decode_warmup(&mut r, group_size, n_groups)?,
                });
            }
        }
        r.finish()?;
        Ok(ManifestIndex {
            header,
            windows_ms,
            groups,
            warmup,
            warmup_groups,
            history,
            prior,
        })
    }
}

/// A block mask: a flag byte (0: none), then one byte per block.
fn encode_mask(w: &mut Writer, mask: &[u8], gs: usize) {
    if mask.is_empty() {
        w.u8(0);
        return;
    }
    w.u8(1);
    let mut m = mask.to_vec();
    m.resize(gs, 0);
    for b in m {
        w.u8(b);
    }
}

fn decode_mask(r: &mut Reader<'_>, gs: usize) -> Result<Vec<u8>, FormatError> {
    match r.u8("mask flag")? {
        0 => Ok(Vec::new()),
        1 => (0..gs).map(|_| r.u8("mask")).collect(),
        v => Err(r.error("mask flag", format!("{v} is not 0 or 1"))),
    }
}

/// A successor list: a `u16` count, then (group, probability[, mask]).
fn encode_successors(w: &mut Writer, succ: &[Successor], gs: usize, masks: bool) {
    let succ = &succ[..succ.len().min(MAX_SUCCESSORS)];
    w.u16(succ.len() as u16);
    for s in succ {
        w.u64(s.group);
        w.f32(s.probability);
        if masks {
            encode_mask(w, &s.mask, gs);
        }
    }
}

fn decode_successors(
    r: &mut Reader<'_>,
    n_groups: u64,
    gs: usize,
    masks: bool,
) -> Result<Vec<Successor>, FormatError> {
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
        let probability = r.probability("successor probability")?;
        let mask = if masks {
            decode_mask(r, gs)?
        } else {
            Vec::new()
        };
        v.push(Successor {
            group: g,
            probability,
            mask,
        });
    }
    Ok(v)
}

/// A warm-up list: a count, then (group, bitmap of its blocks).
fn encode_warmup(w: &mut Writer, list: &[WarmUp], group_size: u32) {
    w.count(list.len());
    let mask_len = (group_size as usize).div_ceil(8);
    for e in list {
        w.u64(e.group);
        let mut m = e.mask.clone();
        m.resize(mask_len, 0);
        w.bytes(&m);
    }
}

fn decode_warmup(
    r: &mut Reader<'_>,
    group_size: u32,
    n_groups: u64,
) -> Result<Vec<WarmUp>, FormatError> {
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
    Ok(warmup)
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
            }),
        }
    }

    /// Version 1 (no prior) and 2 (no masks, contexts, workload groups)
    /// indexes still decode, as what they hold.
    #[test]
    fn version_1_and_2_indexes_decode_without_what_they_lack() {
        let ix = sample();
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
            ..ix.clone()
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
    }
}
