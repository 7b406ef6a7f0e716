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

use std::ops::Range;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::format::{
    block_len, keys, EntryTable, GroupEntry, ManifestEntry, ManifestIndex, ManifestPage,
    SnapshotHeader, Span, Spans,
};
use crate::name::SnapshotName;
use crate::store::Store;

mod block;
mod verify;
pub use block::{decode_block_cvs, BlockError, BlockErrorKind, BlockRef};
pub use verify::{BadBlock, VerifyReport};

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
}
