//! The reader thread of `create`: the volume in batches of
//! [`super::BATCH_BYTES`], at most [`super::READ_AHEAD_BATCHES`] ahead of
//! the packer, buffers recycled.
//!
//! A sparse image file is read by its data only: the reader asks the
//! filesystem where the next data begins (`lseek(SEEK_DATA)`) and where it
//! ends (`SEEK_HOLE`), reads the blocks that overlap it, and hands the
//! blocks in between on as [`Batch::Hole`], unread: they are zero blocks,
//! exactly what reading them would have found, so the snapshot is the
//! same, block for block. A 200 GiB image holding 320 MiB of data is then
//! read in seconds instead of minutes. Block devices, and filesystems that
//! do not answer `SEEK_DATA`, are read whole, as before.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
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

/// What the reader hands the packer. A data batch's buffer goes back to
/// the reader through `recycle` once packed, so the reader reuses
/// [`READ_AHEAD_BATCHES`] + 1 buffers instead of faulting in fresh memory
/// for every batch (that cost more than hashing and compressing).
pub(super) enum Batch {
    /// Bytes read from the volume, from block `first` on.
    Data { first: u64, buf: Vec<u8> },
    /// `blocks` blocks (`bytes` of the volume) inside a hole of a sparse
    /// file: not read; all zeros.
    Hole { blocks: u64, bytes: u64 },
}

/// The data extent of a regular file at or after `from`: `Some(Some((data,
/// hole)))`, `Some(None)` when only a hole follows, `None` when the
/// filesystem cannot tell (then the file must be read whole).
fn next_data(file: &File, from: u64, size: u64) -> Option<Option<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    let data = match lseek(file, from as libc::off_t, Whence::SeekData) {
        Ok(pos) => pos as u64,
        Err(nix::errno::Errno::ENXIO) => return Some(None),
        Err(_) => return None,
    };
    let hole = match lseek(file, data as libc::off_t, Whence::SeekHole) {
        Ok(pos) => (pos as u64).min(size),
        Err(_) => return None,
    };
    Some(Some((data, hole)))
}

/// Reads batches of the volume on its own thread.
pub(super) fn spawn_reader(
    file: File,
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
    // Only a regular file has holes to ask about.
    let mut sparse = file.metadata().is_ok_and(|m| m.is_file());
    std::thread::spawn(move || {
        let bs = block_size as u64;
        let total = block_count(size, block_size);
        let mut block = 0u64;
        while block < total {
            let start = block * bs;
            // The blocks to read now: up to a batch, and in a sparse file
            // only up to where its current data extent ends.
            let mut until = total;
            if sparse {
                let hole_until = match next_data(&file, start, size) {
                    None => {
                        sparse = false;
                        None
                    }
                    Some(None) => Some(total),
                    Some(Some((data, hole))) => {
                        if data / bs > block {
                            Some(data / bs)
                        } else {
                            // Data from within this block on: read the
                            // blocks it overlaps.
                            until = hole.div_ceil(bs).clamp(block + 1, total);
                            None
                        }
                    }
                };
                if let Some(end) = hole_until {
                    let hole = Batch::Hole {
                        blocks: end - block,
                        bytes: (end * bs).min(size) - start,
                    };
                    if tx.send(Ok(hole)).is_err() {
                        return;
                    }
                    block = end;
                    continue;
                }
            }
            let n = batch_blocks.min(until - block);
            let len = (n * bs).min(size - start) as usize;
            let mut buf = recycle_rx.try_recv().unwrap_or_default();
            buf.resize(len, 0);
            let r = file
                .read_exact_at(&mut buf, start)
                .with_context(|| format!("reading source {} at offset {start}", source.display()));
            let failed = r.is_err();
            if tx
                .send(r.map(|_| Batch::Data { first: block, buf }))
                .is_err()
                || failed
            {
                return;
            }
            block += n;
        }
    });
    (rx, recycle_tx)
}
