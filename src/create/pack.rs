//! The packer of `create`: hashes every block of a batch in parallel,
//! skips zero blocks, looks each hash up in the blocks already known (the
//! parent's and this volume's earlier ones), compresses only new blocks,
//! and appends them to the current data object, sealing it at
//! [`super::OBJECT_TARGET`].

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rayon::prelude::*;

use super::reader::{spawn_reader, Batch};
use super::{OBJECT_TARGET, ZSTD_LEVEL};
use crate::format::{keys, Compression, Id};
use crate::progress::Progress;
use crate::snapshot::BlockRef;

/// Where a known block lives.
#[derive(Clone)]
pub(super) struct Loc {
    pub(super) object: Arc<str>,
    pub(super) offset: u64,
    pub(super) length: u32,
    pub(super) compression: Compression,
}

/// A sealed data object on its way to the store.
pub(super) struct Sealed {
    pub(super) key: String,
    pub(super) data: Bytes,
}

/// What the packer hands back: one entry per stored block, in block order.
pub(super) struct Packed {
    pub(super) entries: Vec<(u64, [u8; 32], Loc)>,
    pub(super) zero_blocks: u64,
    pub(super) zero_bytes: u64,
    pub(super) new_bytes: u64,
    pub(super) reused_bytes: u64,
    pub(super) bytes_read: u64,
}

pub(super) fn loc_of(b: &BlockRef) -> Loc {
    Loc {
        object: b.object.clone(),
        offset: b.offset,
        length: b.length,
        compression: b.compression,
    }
}

/// The packer: hash, dedup, compress, pack; returns the manifest entries.
pub(super) fn pack(
    file: File,
    source: PathBuf,
    size: u64,
    block_size: u32,
    mut known: HashMap<[u8; 32], Loc>,
    out: tokio::sync::mpsc::Sender<Sealed>,
    progress: &Progress,
) -> anyhow::Result<Packed> {
    let (batches, recycle) = spawn_reader(file, source, size, block_size);
    let bs = block_size as usize;
    let mut packed = Packed {
        entries: Vec::new(),
        zero_blocks: 0,
        zero_bytes: 0,
        new_bytes: 0,
        reused_bytes: 0,
        bytes_read: 0,
    };
    let mut obj_key: Arc<str> = Arc::from(keys::data(Id::random()));
    let mut obj_buf: Vec<u8> = Vec::with_capacity(OBJECT_TARGET + bs);
    let seal = |key: &Arc<str>, buf: &mut Vec<u8>| -> anyhow::Result<()> {
        let data = Bytes::from(std::mem::replace(
            buf,
            Vec::with_capacity(OBJECT_TARGET + bs),
        ));
        out.blocking_send(Sealed {
            key: key.to_string(),
            data,
        })
        .map_err(|_| anyhow!("upload stopped"))
    };

    for batch in batches {
        let (first_block, buf) = match batch? {
            Batch::Data { first, buf } => (first, buf),
            Batch::Hole { blocks, bytes } => {
                packed.zero_blocks += blocks;
                packed.zero_bytes += bytes;
                progress.inc(bytes);
                continue;
            }
        };
        packed.bytes_read += buf.len() as u64;
        // Stage 1, parallel: zero test and hash.
        let hashed: Vec<Option<[u8; 32]>> = buf
            .par_chunks(bs)
            .map(|b| (!is_zero(b)).then(|| *blake3::hash(b).as_bytes()))
            .collect();
        // Stage 2, parallel: compress the blocks not known yet.
        let to_compress: Vec<(usize, &[u8])> = buf
            .chunks(bs)
            .enumerate()
            .filter(|(i, _)| hashed[*i].is_some_and(|h| !known.contains_key(&h)))
            .collect();
        let mut compressed: HashMap<usize, Option<Vec<u8>>> = to_compress
            .par_iter()
            .map(|(i, b)| Ok((*i, compress(b)?)))
            .collect::<anyhow::Result<_>>()?;
        // Stage 3, in order: pack.
        for (i, block) in buf.chunks(bs).enumerate() {
            let block_id = first_block + i as u64;
            let Some(sum) = hashed[i] else {
                packed.zero_blocks += 1;
                packed.zero_bytes += block.len() as u64;
                continue;
            };
            if let Some(loc) = known.get(&sum) {
                packed.reused_bytes += block.len() as u64;
                packed.entries.push((block_id, sum, loc.clone()));
                continue;
            }
            // Not known when the batch was hashed, nor since (a repeat within
            // the batch is found in `known` above): it was compressed.
            let Some(encoded) = compressed.remove(&i) else {
                bail!("internal error: block {block_id} was neither known nor compressed");
            };
            let (compression, data) = match &encoded {
                Some(z) => (Compression::Zstd, z.as_slice()),
                None => (Compression::None, block),
            };
            if obj_buf.len() + data.len() > OBJECT_TARGET && !obj_buf.is_empty() {
                seal(&obj_key, &mut obj_buf)?;
                obj_key = Arc::from(keys::data(Id::random()));
            }
            let loc = Loc {
                object: obj_key.clone(),
                offset: obj_buf.len() as u64,
                length: data.len() as u32,
                compression,
            };
            obj_buf.extend_from_slice(data);
            packed.new_bytes += block.len() as u64;
            known.insert(sum, loc.clone());
            packed.entries.push((block_id, sum, loc));
        }
        progress.inc(buf.len() as u64);
        // The reader may have finished already; then the buffer is dropped.
        let _ = recycle.send(buf);
    }
    if !obj_buf.is_empty() {
        seal(&obj_key, &mut obj_buf)?;
    }
    Ok(packed)
}

/// Whether a block is all zeros. OR-folding 64-byte chunks vectorises well;
/// the early exit happens per chunk, so data blocks are rejected at once.
fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
        && chunks.remainder().iter().all(|&x| x == 0)
}

thread_local! {
    /// Per-thread zstd context and output buffer, reused for every block:
    /// a fresh context and a fresh 512 KiB output buffer per block cost more
    /// (in page faults and memset) than the compression of random data.
    static ZSTD: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The zstd encoding of `b`, or `None` when that is not smaller (the block
/// is then stored raw, copied straight from the read buffer).
fn compress(b: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some((
                zstd::bulk::Compressor::new(ZSTD_LEVEL).context("zstd context")?,
                Vec::new(),
            ));
        }
        let Some((ctx, out)) = slot.as_mut() else {
            bail!("zstd context missing");
        };
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(b.len()));
        let n = ctx.compress_to_buffer(b, out).context("zstd compression")?;
        Ok((n < b.len()).then(|| out[..n].to_vec()))
    })
}
