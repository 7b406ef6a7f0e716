//! The read path of a mounted image: offset and length → block ids →
//! index → manifest page → cache or store → assembled reply.
//!
//! Holes (blocks with no manifest entry) read as zeros without any fetch.
//! Reads spanning blocks are assembled from each block's slice; the stored
//! blocks of one read are requested together, so adjacent ones are fetched
//! with one GET.

use crate::fetch::{Fetcher, Want};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The fast path: the read answered from memory alone (loaded pages, the
/// memory tier), on the calling thread, or `None` when anything is missing.
/// Hot reads skip the hand-off to the async runtime this way.
pub fn read_range_from_memory(
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
    let (mut hits, mut holes) = (0, 0);
    for b in offset / bs..end.div_ceil(bs) {
        let Some(block) = snap.locate_loaded(b)? else {
            holes += 1;
            continue;
        };
        let data = fetcher.cache().get_memory(&block.checksum)?;
        hits += 1;
        copy_block(&mut out, offset, end, b * bs, &data);
    }
    let m = fetcher.metrics();
    Metrics::add(&m.memory_hits, hits);
    Metrics::add(&m.hole_blocks, holes);
    Some(out)
}

/// Copies the part of block data starting at volume offset `bstart` that
/// falls in `offset..end` into `out` (which starts at `offset`).
fn copy_block(out: &mut [u8], offset: u64, end: u64, bstart: u64, data: &[u8]) {
    let from = offset.max(bstart);
    let to = end.min(bstart + data.len() as u64);
    if from < to {
        out[(from - offset) as usize..(to - offset) as usize]
            .copy_from_slice(&data[(from - bstart) as usize..(to - bstart) as usize]);
    }
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
            Some(block) => wants.push(Want {
                len: snap.block_len(b),
                block,
            }),
            None => Metrics::inc(&fetcher.metrics().hole_blocks),
        }
    }
    let mut out = vec![0u8; (end - offset) as usize];
    let results = fetcher.get_blocks(&wants).await;
    for (w, r) in wants.iter().zip(results) {
        copy_block(&mut out, offset, end, w.block.block_id * bs, &r?);
    }
    Ok(out)
}
