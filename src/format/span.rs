//! Block arithmetic of a read: `(offset, len)` of a volume → the blocks it
//! touches, the byte range it needs of each, and where that range goes in
//! the reply. One iterator, used by every read path (the mount's fast and
//! slow paths, `Snapshot::read_at`), so the three cannot drift apart.

use std::ops::Range;

/// The part of one block a read needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub block: u64,
    /// Uncompressed length of the whole block (the last may be short).
    pub block_len: usize,
    /// Bytes of the block the read needs.
    pub range: Range<usize>,
    /// Where those bytes go in the reply.
    pub at: usize,
}

/// The spans of a read of `len` bytes at `offset`, clamped to the volume's
/// end (a read past it yields nothing).
#[derive(Debug, Clone)]
pub struct Spans {
    volume_size: u64,
    block_size: u64,
    offset: u64,
    end: u64,
    next: u64,
}

impl Spans {
    pub fn new(volume_size: u64, block_size: u32, offset: u64, len: u64) -> Spans {
        let end = offset.saturating_add(len).min(volume_size);
        let block_size = block_size.max(1) as u64;
        Spans {
            volume_size,
            block_size,
            offset,
            end,
            next: offset / block_size,
        }
    }

    /// Bytes the reply holds: `len` clamped to the volume.
    pub fn reply_len(&self) -> usize {
        self.end.saturating_sub(self.offset) as usize
    }

    /// The blocks touched.
    pub fn blocks(&self) -> Range<u64> {
        if self.offset >= self.end {
            return 0..0;
        }
        self.offset / self.block_size..self.end.div_ceil(self.block_size)
    }
}

impl Iterator for Spans {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        let b = self.next;
        let start = b.checked_mul(self.block_size)?;
        if self.offset >= self.end || start >= self.end {
            return None;
        }
        self.next += 1;
        let block_end = (start + self.block_size).min(self.volume_size);
        let from = self.offset.max(start);
        let to = self.end.min(block_end);
        Some(Span {
            block: b,
            block_len: (block_end - start) as usize,
            range: (from - start) as usize..(to - start) as usize,
            at: (from - self.offset) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(vol: u64, bs: u32, off: u64, len: u64) -> Vec<(u64, usize, Range<usize>, usize)> {
        Spans::new(vol, bs, off, len)
            .map(|s| (s.block, s.block_len, s.range, s.at))
            .collect()
    }

    #[test]
    fn splits_at_block_boundaries_and_clamps_to_the_volume() {
        // 10 blocks of 100 bytes, the last short (1000 → 950).
        assert_eq!(spans(950, 100, 0, 100), vec![(0, 100, 0..100, 0)]);
        assert_eq!(
            spans(950, 100, 150, 100),
            vec![(1, 100, 50..100, 0), (2, 100, 0..50, 50)]
        );
        assert_eq!(
            spans(950, 100, 890, 1000),
            vec![(8, 100, 90..100, 0), (9, 50, 0..50, 10)]
        );
        assert_eq!(Spans::new(950, 100, 890, 1000).reply_len(), 60);
        assert!(spans(950, 100, 950, 10).is_empty());
        assert!(spans(950, 100, 10, 0).is_empty());
        assert_eq!(Spans::new(950, 100, 10, 0).blocks(), 0..0);
        assert_eq!(Spans::new(950, 100, 150, 100).blocks(), 1..3);
        // Offsets near u64::MAX neither overflow nor panic.
        assert!(spans(950, 100, u64::MAX - 5, 100).is_empty());
    }

    #[test]
    fn the_spans_tile_the_reply_exactly() {
        for (off, len) in [
            (0u64, 4096u64),
            (4095, 2),
            (100, 300_000),
            (524_287, 524_290),
        ] {
            let s = Spans::new(3 << 20, 512 * 1024, off, len);
            let total = s.reply_len();
            let mut at = 0;
            for sp in s {
                assert_eq!(sp.at, at);
                at += sp.range.len();
            }
            assert_eq!(at, total);
        }
    }
}
