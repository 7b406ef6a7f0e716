//! The read path of a mounted image: offset and length → block ids →
//! index → manifest page → cache or store → assembled reply.
//!
//! Holes (blocks with no manifest entry) read as zeros without any fetch.
//! Reads spanning blocks are assembled from each block's slice; the stored
//! blocks of one read are requested together, so adjacent ones are fetched
//! with one GET.

use crate::cache::Tier;
use crate::fetch::{Fetcher, Want};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// A read this large that ends at a block boundary comes from a sequential
/// reader (the kernel's readahead sends 128 KiB-1 MiB requests; random
/// readers send a few KiB).
const SEQUENTIAL_READ: usize = 64 * 1024;
/// Blocks after such a read whose disk-cache files are read into the page
/// cache in the background: 4 × 512 KiB = 2 MiB, two of the kernel's 1 MiB
/// readahead requests, so the disk works while the current ones are served.
const ADVISE_AHEAD: u64 = 4;

/// Has the next [`ADVISE_AHEAD`] blocks from `first` that sit in the disk
/// tier read into the page cache (only blocks whose manifest page is
/// loaded; holes and uncached blocks are skipped). Without it a hot
/// sequential read waits for the disk at the start of every block file.
fn advise_next_blocks(snap: &Snapshot, fetcher: &Fetcher, first: u64) {
    let blocks = snap
        .header()
        .volume_size
        .div_ceil(snap.header().block_size as u64);
    for b in first..(first + ADVISE_AHEAD).min(blocks) {
        if let Some(Some(block)) = snap.locate_loaded(b) {
            fetcher.cache().advise(&block.checksum, snap.block_len(b));
        }
    }
}

/// The fast path: the read answered from what is local (loaded manifest
/// pages, the memory tier, the disk tier), on the calling FUSE thread, or
/// `None` when anything must come from the store. Hot reads skip every
/// thread hand-off this way (they dominated hot random reads).
pub fn read_range_local(
    snap: &Snapshot,
    fetcher: &Fetcher,
    offset: u64,
    len: usize,
) -> Option<Vec<u8>> {
    let h = snap.header();
    let end = offset.saturating_add(len as u64).min(h.volume_size);
    if offset >= end {
        return Some(Vec::new());
    }
    let bs = h.block_size as u64;
    let mut out = vec![0u8; (end - offset) as usize];
    let (mut memory, mut disk, mut holes) = (0, 0, 0);
    for b in offset / bs..end.div_ceil(bs) {
        let Some(block) = snap.locate_loaded(b)? else {
            holes += 1;
            continue;
        };
        let bstart = b * bs;
        let blen = snap.block_len(b);
        let from = (offset.max(bstart) - bstart) as usize;
        let to = (end.min(bstart + blen as u64) - bstart) as usize;
        let (data, tier) = fetcher.cache().get_local(&block.checksum, blen, from..to)?;
        match tier {
            Tier::Memory => memory += 1,
            Tier::Disk => disk += 1,
        }
        let at = (bstart + from as u64 - offset) as usize;
        out[at..at + data.len()].copy_from_slice(&data);
    }
    if end % bs == 0 && len >= SEQUENTIAL_READ {
        advise_next_blocks(snap, fetcher, end / bs);
    }
    let m = fetcher.metrics();
    Metrics::add(&m.memory_hits, memory);
    Metrics::add(&m.disk_hits, disk);
    Metrics::add(&m.hole_blocks, holes);
    Some(out)
}

/// Reads `len` bytes at `offset` (clamped to the volume's end).
pub async fn read_range(
    snap: &Snapshot,
    fetcher: &Fetcher,
    offset: u64,
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    let h = snap.header();
    let end = offset.saturating_add(len as u64).min(h.volume_size);
    if offset >= end {
        return Ok(Vec::new());
    }
    let bs = h.block_size as u64;
    let mut wants: Vec<Want> = Vec::new();
    for b in offset / bs..end.div_ceil(bs) {
        match snap.locate(b).await? {
            Some(block) => {
                let bstart = b * bs;
                let len = snap.block_len(b);
                let from = (offset.max(bstart) - bstart) as usize;
                let to = (end.min(bstart + len as u64) - bstart) as usize;
                wants.push(Want {
                    block,
                    len,
                    range: from..to,
                });
            }
            None => Metrics::inc(&fetcher.metrics().hole_blocks),
        }
    }
    let mut out = vec![0u8; (end - offset) as usize];
    let results = fetcher.get_blocks(&wants).await;
    for (w, r) in wants.iter().zip(results) {
        let data = r?;
        let at = (w.block.block_id * bs + w.range.start as u64 - offset) as usize;
        out[at..at + data.len()].copy_from_slice(&data);
    }
    Ok(out)
}
