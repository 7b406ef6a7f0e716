//! The read path of a mounted image: offset and length → block spans
//! ([`crate::format::Spans`]) → index → manifest page → cache or store →
//! the reply.
//!
//! Two passes, so a hot read never leaves the FUSE thread and a cold one
//! redoes nothing:
//! 1. [`read_local`], on the calling FUSE thread, resolves every span it
//!    can from what is local (loaded manifest pages, the memory tier, a
//!    verified pread of the disk tier). Hot reads end here: no thread
//!    hand-off (those dominated hot random reads).
//! 2. When a span needs the store (or a page not loaded yet), the read is
//!    handed over as a [`Pending`] holding what pass 1 already read and
//!    verified; [`Pending::finish`] fetches only the rest, the stored
//!    blocks of the read together, so adjacent ones come in one GET.
//!
//! The reply copies nothing it need not: a read inside one block is the
//! cache's `Bytes` (a slice, no copy); a read across blocks is assembled
//! once, and only holes are written as zeros.

use bytes::Bytes;

use crate::cache::Tier;
use crate::fetch::{Fetcher, Want};
use crate::format::{Span, Spans};
use crate::metrics::Metrics;
use crate::snapshot::{BlockRef, Snapshot};

/// A read this large that ends at a block boundary comes from a sequential
/// reader (the kernel's readahead sends 128 KiB-1 MiB requests; random
/// readers send a few KiB).
const SEQUENTIAL_READ: usize = 64 * 1024;
/// Blocks after such a read whose disk-cache files are read into the page
/// cache in the background: 4 × 512 KiB = 2 MiB, two of the kernel's 1 MiB
/// readahead requests, so the disk works while the current ones are served.
const ADVISE_AHEAD: u64 = 4;

/// One span of a read, as resolved so far.
enum Piece {
    Hole,
    Data(Bytes),
    /// Stored, not local: where it is, when its page was loaded.
    Need(Option<BlockRef>),
}

/// Has the next [`ADVISE_AHEAD`] blocks from `first` that sit in the disk
/// tier read into the page cache (only blocks whose manifest page is
/// loaded; holes and uncached blocks are skipped). Without it a hot
/// sequential read waits for the disk at the start of every block file.
fn advise_next_blocks(snap: &Snapshot, fetcher: &Fetcher, first: u64) {
    let blocks = snap.header().block_count();
    for b in first..(first + ADVISE_AHEAD).min(blocks) {
        if let Some(Some(block)) = snap.locate_loaded(b) {
            fetcher.cache().advise(&block.checksum, snap.block_len(b));
        }
    }
}

/// A read pass 1 could not finish: its spans, what it resolved, and what
/// is left for the store.
pub struct Pending {
    len: usize,
    /// Each span of the read with what is known of it (one allocation).
    parts: Vec<(Span, Piece)>,
}

/// What [`read_local`] made of a read.
pub enum Local {
    Done(Bytes),
    Pending(Pending),
}

/// Pass 1: the read answered from what is local, or handed over with what
/// was found.
pub fn read_local(snap: &Snapshot, fetcher: &Fetcher, offset: u64, len: usize) -> Local {
    let h = snap.header();
    let spans = Spans::new(h.volume_size, h.block_size, offset, len as u64);
    let reply_len = spans.reply_len();
    let (mut memory, mut disk, mut holes) = (0, 0, 0);
    let mut complete = true;
    let blocks = spans.blocks();
    let mut parts = Vec::with_capacity((blocks.end - blocks.start) as usize);
    for sp in spans {
        let piece = match snap.locate_loaded(sp.block) {
            Some(None) => {
                holes += 1;
                Piece::Hole
            }
            Some(Some(block)) => {
                match fetcher
                    .cache()
                    .get_local(&block.checksum, sp.block_len, sp.range.clone())
                {
                    Some((data, tier)) => {
                        match tier {
                            Tier::Memory => memory += 1,
                            Tier::Disk => disk += 1,
                        }
                        Piece::Data(data)
                    }
                    None => {
                        complete = false;
                        Piece::Need(Some(block))
                    }
                }
            }
            None => {
                complete = false;
                Piece::Need(None)
            }
        };
        parts.push((sp, piece));
    }
    let m = fetcher.metrics();
    Metrics::add(&m.memory_hits, memory);
    Metrics::add(&m.disk_hits, disk);
    Metrics::add(&m.hole_blocks, holes);
    let end = offset + reply_len as u64;
    let bs = h.block_size as u64;
    let pending = Pending {
        len: reply_len,
        parts,
    };
    if !complete {
        return Local::Pending(pending);
    }
    if end % bs == 0 && len >= SEQUENTIAL_READ {
        advise_next_blocks(snap, fetcher, end / bs);
    }
    Local::Done(pending.assemble())
}

impl Pending {
    /// Pass 2: locates what pass 1 could not (loading manifest pages),
    /// fetches every block still needed in one call, and assembles the reply.
    pub async fn finish(mut self, snap: &Snapshot, fetcher: &Fetcher) -> anyhow::Result<Bytes> {
        let mut wants: Vec<Want> = Vec::new();
        let mut at: Vec<usize> = Vec::new();
        for (i, (sp, piece)) in self.parts.iter_mut().enumerate() {
            // Taken out (a hole stays behind until the data comes).
            let block = match std::mem::replace(piece, Piece::Hole) {
                Piece::Need(Some(b)) => b,
                Piece::Need(None) => match snap.locate(sp.block).await? {
                    Some(b) => b,
                    None => {
                        Metrics::inc(&fetcher.metrics().hole_blocks);
                        continue;
                    }
                },
                known => {
                    *piece = known;
                    continue;
                }
            };
            wants.push(Want {
                block,
                len: sp.block_len,
                range: sp.range.clone(),
            });
            at.push(i);
        }
        for (i, r) in at.into_iter().zip(fetcher.get_blocks(&wants).await) {
            self.parts[i].1 = Piece::Data(r?);
        }
        Ok(self.assemble())
    }

    /// The reply: a single piece as it is, several assembled once.
    fn assemble(self) -> Bytes {
        if let [(_, Piece::Data(d))] = self.parts.as_slice() {
            return d.clone();
        }
        let mut out = Vec::with_capacity(self.len);
        for (sp, piece) in self.parts {
            debug_assert_eq!(out.len(), sp.at);
            match piece {
                Piece::Data(d) => out.extend_from_slice(&d),
                // Only holes are zeroed (a Need left here would be a bug of
                // `finish`; zeros keep the reply's length right).
                Piece::Hole | Piece::Need(_) => out.resize(out.len() + sp.range.len(), 0),
            }
        }
        Bytes::from(out)
    }
}

/// Reads `len` bytes at `offset` (clamped to the volume's end): both passes.
pub async fn read_range(
    snap: &Snapshot,
    fetcher: &Fetcher,
    offset: u64,
    len: usize,
) -> anyhow::Result<Bytes> {
    match read_local(snap, fetcher, offset, len) {
        Local::Done(b) => Ok(b),
        Local::Pending(p) => p.finish(snap, fetcher).await,
    }
}
