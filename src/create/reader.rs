//! The reader thread of `create`: the volume in batches of
//! [`super::BATCH_BYTES`], at most [`super::READ_AHEAD_BATCHES`] ahead of
//! the packer, buffers recycled.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use anyhow::Context;

use super::{BATCH_BYTES, READ_AHEAD_BATCHES};
use crate::format::block_count;

/// Size of a file or block device (seeking to the end works for both,
/// without an ioctl).
pub(super) fn volume_size(f: &mut File) -> std::io::Result<u64> {
    let n = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(n)
}

/// A batch read from the volume: its first block and its bytes. The buffer
/// goes back to the reader through `recycle` once packed, so the reader
/// reuses [`READ_AHEAD_BATCHES`] + 1 buffers instead of faulting in fresh
/// memory for every batch (that cost more than hashing and compressing).
pub(super) type Batch = (u64, Vec<u8>);

/// Reads batches of the volume on its own thread.
pub(super) fn spawn_reader(
    mut file: File,
    source: PathBuf,
    size: u64,
    block_size: u32,
) -> (
    std::sync::mpsc::Receiver<anyhow::Result<Batch>>,
    std::sync::mpsc::Sender<Vec<u8>>,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_BATCHES);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let batch_blocks = (BATCH_BYTES / block_size as usize).max(1) as u64;
    std::thread::spawn(move || {
        let mut block = 0u64;
        let total = block_count(size, block_size);
        while block < total {
            let n = batch_blocks.min(total - block);
            let start = block * block_size as u64;
            let len = (n * block_size as u64).min(size - start) as usize;
            let mut buf = recycle_rx.try_recv().unwrap_or_default();
            buf.resize(len, 0);
            let r = file
                .read_exact(&mut buf)
                .with_context(|| format!("reading source {} at offset {start}", source.display()));
            let failed = r.is_err();
            if tx.send(r.map(|_| (block, buf))).is_err() || failed {
                return;
            }
            block += n;
        }
    });
    (rx, recycle_tx)
}
