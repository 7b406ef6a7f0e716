//! One stored block: where it is ([`BlockRef`]), decoding it (zstd, with
//! one reused context per thread) and checking it against its BLAKE3
//! checksum, and why that failed ([`BlockError`], a kind metrics and errno
//! choices match on).

use std::ops::Range;
use std::sync::Arc;

use blake3::hazmat::ChainingValue;
use bytes::Bytes;

use crate::cache::verified::check_block;
use crate::format::Compression;

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
