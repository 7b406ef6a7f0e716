//! An opened snapshot: its manifest index in memory, manifest pages fetched
//! on first use and kept, and the block read path
//! `block → group (index) → page → entry → ranged GET → verify → decompress`.
//!
//! Opening reads only the index, whatever the volume's size. The blocks a
//! mount fetches first are located by the index itself (version 5: its
//! located blocks), so their GETs need no page; every other block is found
//! through its page, and each page is fetched at most once however many readers ask at the same time (a
//! `OnceCell` per page). Every block is checked against its BLAKE3 checksum
//! after decompression: a mismatch is an error naming the block and the
//! object, never data. Decompression is bounded by the block size, so a
//! corrupted object cannot make us allocate more than one block.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use blake3::hazmat::ChainingValue;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::cache::verified::check_block;
use crate::format::{
    block_len, keys, Compression, EntryTable, GroupEntry, ManifestEntry, ManifestIndex,
    ManifestPage, SnapshotHeader, Span, Spans,
};
use crate::name::SnapshotName;
use crate::store::Store;

/// Where one stored block is, and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub block_id: u64,
    pub object: Arc<str>,
    pub offset: u64,
    pub length: u32,
    pub compression: Compression,
    pub checksum: [u8; 32],
}

impl BlockRef {
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.length as u64
    }
}

/// Why one block could not be served: where (block, object) and what
/// went wrong, as a kind that metrics and callers can match on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("block {block} in object {object}: {kind}")]
pub struct BlockError {
    pub block: u64,
    pub object: Arc<str>,
    pub kind: BlockErrorKind,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BlockErrorKind {
    /// The GET failed (after the store's retries).
    #[error("{0}")]
    Store(Arc<crate::store::StoreError>),
    #[error("stored length {got} instead of {want}")]
    StoredLength { got: usize, want: usize },
    #[error("zstd: {0}")]
    Decompress(String),
    #[error("decoded {got} bytes instead of {want}")]
    DecodedLength { got: usize, want: usize },
    #[error("checksum mismatch")]
    Checksum,
    /// A broken invariant of our own (never expected).
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl BlockError {
    pub fn new(r: &BlockRef, kind: BlockErrorKind) -> Self {
        BlockError {
            block: r.block_id,
            object: r.object.clone(),
            kind,
        }
    }

    /// Whether the stored bytes were wrong (as opposed to not fetched).
    pub fn is_corrupt(&self) -> bool {
        !matches!(
            self.kind,
            BlockErrorKind::Store(_) | BlockErrorKind::Internal(_)
        )
    }
}

/// The manifest index stored at `key` for snapshot `name`: decoded, and
/// refused when it names another snapshot (a copied or misplaced object).
pub fn decode_index(data: &[u8], key: &str, name: &SnapshotName) -> anyhow::Result<ManifestIndex> {
    let index = ManifestIndex::decode(data, key)?;
    if &index.header.name != name {
        bail!(
            "{key}: index names snapshot {:?}, expected {name:?}",
            index.header.name.as_str()
        );
    }
    Ok(index)
}

thread_local! {
    /// One zstd decompression context per thread, reused: a fresh context
    /// per block (`zstd::bulk::decompress`) allocates, faults in and frees
    /// its tables on every block (`ZSTD_createDCtx` was 0.5% of a cold
    /// read's CPU, and the faults of its fresh pages more).
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `zstd::bulk::decompress` with this thread's context.
fn zstd_decompress(src: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(src, capacity)
    })
}

/// Decodes a stored block held in `stored` (a slice of a GET's body: a raw
/// block is returned as that slice, not copied) and checks it against its
/// checksum; `expected_len` is its uncompressed length. Also returns the
/// block's segment chaining values for the disk cache (computed in the
/// same BLAKE3 pass as the check).
pub fn decode_block_cvs(
    stored: Bytes,
    r: &BlockRef,
    expected_len: usize,
) -> Result<(Bytes, Vec<ChainingValue>), BlockError> {
    let fail = |kind| Err(BlockError::new(r, kind));
    if stored.len() != r.length as usize {
        return fail(BlockErrorKind::StoredLength {
            got: stored.len(),
            want: r.length as usize,
        });
    }
    let data = match r.compression {
        Compression::None => stored,
        Compression::Zstd => match zstd_decompress(&stored, expected_len) {
            Ok(d) => Bytes::from(d),
            Err(e) => return fail(BlockErrorKind::Decompress(e.to_string())),
        },
    };
    if data.len() != expected_len {
        return fail(BlockErrorKind::DecodedLength {
            got: data.len(),
            want: expected_len,
        });
    }
    match check_block(&data, &r.checksum) {
        Some(cvs) => Ok((data, cvs)),
        None => fail(BlockErrorKind::Checksum),
    }
}

/// Pages [`Snapshot::load_pages`] fetches at once: their GETs are small
/// (~57 KiB), so a few in flight fill a link without crowding out the
/// warm-up's data GETs beside them.
const PAGE_LOADS: usize = 4;

/// A decoded page with its object keys shared, so a `BlockRef` costs no
/// string allocation.
struct LoadedPage {
    objects: Vec<Arc<str>>,
    entries: Vec<ManifestEntry>,
}

impl LoadedPage {
    /// The entry of `block`, when this page holds it.
    fn find(&self, block: u64) -> Option<BlockRef> {
        let i = self
            .entries
            .binary_search_by_key(&block, |e| e.block_id)
            .ok()?;
        Some(self.block_ref(&self.entries[i]))
    }

    fn block_ref(&self, e: &ManifestEntry) -> BlockRef {
        BlockRef {
            block_id: e.block_id,
            // In range: the page decoder checks every entry's object index.
            object: self.objects[e.object as usize].clone(),
            offset: e.offset,
            length: e.length,
            compression: e.compression,
            checksum: e.checksum,
        }
    }
}

pub struct Snapshot {
    store: Store,
    index: Arc<ManifestIndex>,
    /// The index's located blocks (version 5): found without their page.
    located: LoadedPage,
    pages: Vec<OnceCell<Arc<LoadedPage>>>,
    pages_fetched: std::sync::atomic::AtomicU64,
}

impl Snapshot {
    /// Loads the index of `name`; fails clearly when there is none.
    pub async fn open(store: &Store, name: &SnapshotName) -> anyhow::Result<Snapshot> {
        let key = keys::index(name);
        let data = match store.get(&key).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                bail!(
                    "no snapshot named {:?} in store {}",
                    name.as_str(),
                    store.url()
                )
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self::from_index(
            store.clone(),
            decode_index(&data, &key, name)?,
        ))
    }

    pub fn from_index(store: Store, index: ManifestIndex) -> Snapshot {
        let pages = (0..index.header.page_count)
            .map(|_| OnceCell::new())
            .collect();
        let located = LoadedPage {
            objects: index
                .located
                .objects
                .iter()
                .map(|k| Arc::from(k.as_str()))
                .collect(),
            entries: index.located.entries.clone(),
        };
        Snapshot {
            store,
            index: Arc::new(index),
            located,
            pages,
            pages_fetched: 0.into(),
        }
    }

    pub fn index(&self) -> &Arc<ManifestIndex> {
        &self.index
    }
    pub fn header(&self) -> &SnapshotHeader {
        &self.index.header
    }
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Manifest page `n`, fetched once.
    async fn page(&self, n: u32) -> anyhow::Result<Arc<LoadedPage>> {
        let cell = self
            .pages
            .get(n as usize)
            .ok_or_else(|| anyhow!("page {n} beyond the snapshot's {} pages", self.pages.len()))?;
        cell.get_or_try_init(|| async {
            let h = &self.index.header;
            let key = keys::page(h.id, n);
            let t0 = std::time::Instant::now();
            let data = self.store.get(&key).await?;
            log::trace!("page {n}: GET {:?}, {} B", t0.elapsed(), data.len());
            self.pages_fetched
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let page = ManifestPage::decode(&data, &key)?;
            if page.snapshot_id != h.id || page.page_no != n {
                bail!(
                    "{key}: page belongs to snapshot {} page {}",
                    page.snapshot_id,
                    page.page_no
                );
            }
            Ok(Arc::new(LoadedPage {
                objects: page.objects.iter().map(|k| Arc::from(k.as_str())).collect(),
                entries: page.entries,
            }))
        })
        .await
        .cloned()
    }

    /// The page holding group `g` and the range of its entries, checked to
    /// lie within the group (entries are sorted, so the ends suffice).
    async fn group_entries(
        &self,
        g: &GroupEntry,
    ) -> anyhow::Result<(Arc<LoadedPage>, Range<usize>)> {
        let page = self.page(g.page).await?;
        let range = g.entry_start as usize..g.entry_start as usize + g.entry_count as usize;
        let entries = page
            .entries
            .get(range.clone())
            .ok_or_else(|| anyhow!("group {} points beyond page {}", g.group, g.page))?;
        let inside = |e: Option<&ManifestEntry>| {
            e.is_some_and(|e| (g.first_block..=g.last_block).contains(&e.block_id))
        };
        if !inside(entries.first()) || !inside(entries.last()) {
            bail!("page {} holds entries outside group {}", g.page, g.group);
        }
        Ok((page, range))
    }

    /// The stored blocks of one group, in block order.
    pub async fn group_blocks(&self, g: &GroupEntry) -> anyhow::Result<Vec<BlockRef>> {
        let (page, range) = self.group_entries(g).await?;
        Ok(page.entries[range]
            .iter()
            .map(|e| page.block_ref(e))
            .collect())
    }

    /// Where block `block` is stored, or `None` for a hole. On the read
    /// path: a binary search in the index, then one in its located blocks
    /// or in the (cached) page.
    pub async fn locate(&self, block: u64) -> anyhow::Result<Option<BlockRef>> {
        self.locate_with(block, true).await
    }

    /// [`Snapshot::locate`] through the pages only (what the located blocks
    /// are checked against, and copied from).
    pub async fn locate_in_pages(&self, block: u64) -> anyhow::Result<Option<BlockRef>> {
        self.locate_with(block, false).await
    }

    async fn locate_with(&self, block: u64, located: bool) -> anyhow::Result<Option<BlockRef>> {
        let Some(g) = self.index.group_of_block(block) else {
            return Ok(None);
        };
        if block < g.first_block || block > g.last_block {
            return Ok(None);
        }
        if let Some(r) = self.located.find(block).filter(|_| located) {
            return Ok(Some(r));
        }
        let (page, range) = self.group_entries(g).await?;
        let entries = &page.entries[range];
        Ok(entries
            .binary_search_by_key(&block, |e| e.block_id)
            .ok()
            .map(|i| page.block_ref(&entries[i])))
    }

    /// The entries of `blocks` as the pages hold them, holes left out: the
    /// located blocks an index is written with.
    pub async fn entry_table(&self, blocks: &[u64]) -> anyhow::Result<EntryTable> {
        let mut found = Vec::with_capacity(blocks.len());
        for &b in blocks {
            if let Some(r) = self.locate_in_pages(b).await? {
                found.push(r);
            }
        }
        Ok(EntryTable::new(found.iter().map(|r| {
            let e = ManifestEntry {
                block_id: r.block_id,
                object: 0,
                offset: r.offset,
                length: r.length,
                compression: r.compression,
                checksum: r.checksum,
            };
            (&*r.object, e)
        })))
    }

    /// [`Snapshot::locate`] without waiting: `None` when the group's page is
    /// not loaded yet, `Some(None)` for a hole.
    pub fn locate_loaded(&self, block: u64) -> Option<Option<BlockRef>> {
        let Some(g) = self.index.group_of_block(block) else {
            return Some(None);
        };
        if block < g.first_block || block > g.last_block {
            return Some(None);
        }
        if let Some(r) = self.located.find(block) {
            return Some(Some(r));
        }
        let page = self.pages.get(g.page as usize)?.get()?;
        let range = g.entry_start as usize..g.entry_start as usize + g.entry_count as usize;
        // Checked by `group_entries` when the page was first used for this group;
        // out-of-range here means a corrupt index: let the async path report it.
        let entries = page.entries.get(range)?;
        match entries.binary_search_by_key(&block, |e| e.block_id) {
            Ok(i) => Some(Some(page.block_ref(&entries[i]))),
            Err(_) => Some(None),
        }
    }

    /// Every stored block, in block order (verify, gc, incremental create).
    pub async fn all_blocks(&self) -> anyhow::Result<Vec<BlockRef>> {
        let per_group: Vec<Vec<BlockRef>> = futures::stream::iter(self.index.groups.iter())
            .map(|g| self.group_blocks(g))
            .buffered(16)
            .try_collect()
            .await?;
        Ok(per_group.into_iter().flatten().collect())
    }

    /// Fetches every manifest page not loaded yet (a few at a time).
    pub async fn load_pages(&self) -> anyhow::Result<()> {
        futures::stream::iter(0..self.index.header.page_count)
            .map(|n| self.page(n))
            .buffer_unordered(PAGE_LOADS)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// Manifest pages fetched so far (each at most once).
    pub fn pages_fetched(&self) -> u64 {
        self.pages_fetched
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `lseek(SEEK_DATA)`: the first offset ≥ `offset` inside a stored
    /// block, or `None` when only holes follow (ENXIO).
    pub async fn next_data(&self, offset: u64) -> anyhow::Result<Option<u64>> {
        let h = &self.index.header;
        if offset >= h.volume_size {
            return Ok(None);
        }
        let bs = h.block_size as u64;
        let b = offset / bs;
        let start = self.index.groups.partition_point(|g| g.last_block < b);
        for g in &self.index.groups[start..] {
            let blocks = self.group_blocks(g).await?;
            if let Some(first) = blocks.iter().find(|e| e.block_id >= b) {
                return Ok(Some(offset.max(first.block_id * bs)));
            }
        }
        Ok(None)
    }

    /// `lseek(SEEK_HOLE)`: the first offset ≥ `offset` inside a hole, or
    /// the volume's size (the implicit hole at the end); `None` past the end.
    pub async fn next_hole(&self, offset: u64) -> anyhow::Result<Option<u64>> {
        let h = &self.index.header;
        if offset >= h.volume_size {
            return Ok(None);
        }
        let bs = h.block_size as u64;
        let gs = h.group_size as u64;
        let mut b = offset / bs;
        while let Some(g) = self.index.group_of_block(b) {
            let blocks = self.group_blocks(g).await?;
            let mut i = blocks.partition_point(|e| e.block_id < b);
            let before = b;
            while i < blocks.len() && blocks[i].block_id == b {
                b += 1;
                i += 1;
            }
            // `b` is a hole, or the run stopped at a gap inside the group, or
            // at the volume's end; only a run reaching the group's end goes
            // on to the next group.
            if b == before || b % gs != 0 || b >= h.block_count() {
                break;
            }
        }
        Ok(Some(offset.max(b * bs).min(h.volume_size)))
    }

    /// Uncompressed length of `block`.
    pub fn block_len(&self, block: u64) -> usize {
        let h = &self.index.header;
        block_len(h.volume_size, h.block_size, block)
    }

    /// Fetches, checks and decompresses one stored block.
    pub async fn fetch_block(&self, r: &BlockRef) -> anyhow::Result<Bytes> {
        let stored = self
            .store
            .get_range(&r.object, r.range())
            .await
            .with_context(|| format!("block {}", r.block_id))?;
        Ok(decode_block_cvs(stored, r, self.block_len(r.block_id))?.0)
    }

    /// Reads `len` bytes at `offset` of the volume (clamped to its end);
    /// holes read as zeros.
    pub async fn read_at(&self, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
        let h = &self.index.header;
        let spans = Spans::new(h.volume_size, h.block_size, offset, len as u64);
        let mut out = vec![0u8; spans.reply_len()];
        let fetched: Vec<(Span, Option<Bytes>)> = futures::stream::iter(spans)
            .map(|sp| async move {
                match self.locate(sp.block).await? {
                    None => Ok::<_, anyhow::Error>((sp, None)),
                    Some(r) => Ok((sp, Some(self.fetch_block(&r).await?))),
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        for (sp, data) in fetched {
            if let Some(data) = data {
                out[sp.at..sp.at + sp.range.len()].copy_from_slice(&data[sp.range]);
            }
        }
        Ok(out)
    }

    /// Fetches every stored block and checks it. Each data object is read
    /// with one GET; a missing or short object makes all its blocks bad.
    pub async fn verify(
        &self,
        concurrency: usize,
        progress: &crate::progress::Progress,
    ) -> anyhow::Result<VerifyReport> {
        let blocks = self.all_blocks().await?;
        let mismatched = self.located_mismatches(&blocks);
        let mut by_object: BTreeMap<Arc<str>, Vec<BlockRef>> = BTreeMap::new();
        for b in blocks {
            by_object.entry(b.object.clone()).or_default().push(b);
        }
        let results: Vec<(usize, Vec<BadBlock>)> = futures::stream::iter(by_object)
            .map(|(key, blocks)| async move {
                let end = blocks
                    .iter()
                    .map(|b| b.offset + b.length as u64)
                    .max()
                    .unwrap_or(0);
                let data = self.store.get(&key).await;
                let mut bad = Vec::new();
                for b in &blocks {
                    let reason = match &data {
                        Err(e) => Some(e.to_string()),
                        Ok(d) => {
                            let r = b.offset as usize..(b.offset + b.length as u64) as usize;
                            if r.end > d.len() {
                                Some(format!(
                                    "object is {} bytes, block needs bytes up to {end}",
                                    d.len()
                                ))
                            } else {
                                decode_block_cvs(d.slice(r), b, self.block_len(b.block_id))
                                    .err()
                                    .map(|e| e.kind.to_string())
                            }
                        }
                    };
                    progress.inc(self.block_len(b.block_id) as u64);
                    if let Some(reason) = reason {
                        bad.push(BadBlock {
                            block_id: b.block_id,
                            object: key.to_string(),
                            reason,
                        });
                    }
                }
                (blocks.len(), bad)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut report = VerifyReport::default();
        report.bad.extend(mismatched);
        for (n, bad) in results {
            report.blocks_checked += n as u64;
            report.bad.extend(bad);
        }
        report.bad.sort_by_key(|b| b.block_id);
        Ok(report)
    }
}

impl Snapshot {
    /// The index's located blocks that its pages do not hold as they say
    /// (`blocks`: every stored block from the pages, in block order), and
    /// its inline blocks that do not decode to their checksum. Both are
    /// copies written with the index, so any difference is damage.
    fn located_mismatches(&self, blocks: &[BlockRef]) -> Vec<BadBlock> {
        let mut bad = Vec::new();
        for e in &self.located.entries {
            let Some(l) = self.located.find(e.block_id) else {
                continue;
            };
            let found = blocks.binary_search_by_key(&e.block_id, |b| b.block_id);
            let reason = match found.ok().map(|i| &blocks[i]) {
                None => "the index locates it, its page has no such block".to_string(),
                Some(p) if *p != l => format!(
                    "the index locates it at {} bytes {:?}, its page at {} bytes {:?}",
                    l.object,
                    l.range(),
                    p.object,
                    p.range()
                ),
                Some(_) => continue,
            };
            bad.push(BadBlock {
                block_id: e.block_id,
                object: l.object.to_string(),
                reason,
            });
        }
        for b in &self.index.inline {
            let Some(l) = self.located.find(b.block_id) else {
                continue;
            };
            let stored = Bytes::copy_from_slice(&b.stored);
            if let Err(e) = decode_block_cvs(stored, &l, self.block_len(b.block_id)) {
                bad.push(BadBlock {
                    block_id: b.block_id,
                    object: "(the index's inline copy)".to_string(),
                    reason: e.kind.to_string(),
                });
            }
        }
        bad
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub bad: Vec<BadBlock>,
}

#[derive(Debug, Clone)]
pub struct BadBlock {
    pub block_id: u64,
    pub object: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's reused zstd context decodes correctly after a stream
    /// that failed half way (no state carries over from one block to the
    /// next), and a wrong length is still caught.
    #[test]
    fn the_reused_zstd_context_recovers_after_a_bad_block() {
        let good: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
        let packed = zstd::bulk::compress(&good, 3).unwrap();
        let mut bad = packed.clone();
        let mid = bad.len() / 2;
        bad[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
        for _ in 0..3 {
            assert!(zstd_decompress(&bad, good.len()).is_err());
            assert_eq!(zstd_decompress(&packed, good.len()).unwrap(), good);
            assert!(zstd_decompress(&packed[..mid], good.len()).is_err());
        }
        assert!(zstd_decompress(&packed, good.len() - 1).is_err());
    }
}
