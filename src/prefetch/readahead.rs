//! Sequential read-ahead per stream.
//!
//! Like the classifier, a table of stream heads (a loop device interleaves
//! many readers into one file). A read that continues a head grows that
//! stream's window — [`INITIAL_WINDOW`] on its second sequential read, then
//! doubling, up to `max_window` (the bandwidth-delay product: enough bytes
//! in flight to keep the store's pipe full) — and asks for the bytes from
//! the stream's end to `end + window` not yet asked for. A read that
//! continues no head starts a new stream with no window: random access gets
//! no read-ahead at all, and a stream that turns random simply stops
//! growing and ages out of the table.

use std::ops::Range;

use crate::trace::classify::{MAX_STREAMS, SEQ_GAP, SEQ_GAP_LENGTHS};

/// First window of a stream: two default blocks.
pub const INITIAL_WINDOW: u64 = 1 << 20;

#[derive(Debug, Clone, Copy)]
struct Head {
    end: u64,
    window: u64,
    /// Read-ahead already asked for up to here.
    ahead: u64,
    sequential_reads: u32,
    last_used: u64,
}

#[derive(Debug)]
pub struct Readahead {
    heads: Vec<Head>,
    clock: u64,
    max_window: u64,
}

impl Readahead {
    pub fn new(max_window: u64) -> Self {
        Readahead {
            heads: Vec::new(),
            clock: 0,
            max_window,
        }
    }

    /// Feeds one demand read; returns the byte range to read ahead, if any.
    pub fn on_read(&mut self, offset: u64, len: u64) -> Option<Range<u64>> {
        self.clock += 1;
        let gap = SEQ_GAP.min(SEQ_GAP_LENGTHS * len.max(1));
        let clock = self.clock;
        let max = self.max_window;
        if let Some(h) = self
            .heads
            .iter_mut()
            .filter(|h| offset >= h.end.saturating_sub(len.max(1)) && offset <= h.end + gap)
            .min_by_key(|h| offset.abs_diff(h.end))
        {
            h.end = h.end.max(offset + len);
            h.last_used = clock;
            h.sequential_reads += 1;
            if max == 0 {
                return None;
            }
            h.window = if h.window == 0 {
                INITIAL_WINDOW.min(max)
            } else {
                (h.window * 2).min(max)
            };
            let target = h.end + h.window;
            let from = h.ahead.max(h.end);
            // Ask only once at least half a window is missing, then for all
            // of it: in steady state every 128 KiB read would otherwise ask
            // for one block, one GET per block, and the store's latency would
            // cap the stream at slots × block / RTT (~400 MB/s at 20 ms).
            // Half windows make GETs of whole object runs (Linux's async
            // read-ahead marker works the same way).
            if target > from && target - from >= h.window / 2 {
                h.ahead = target;
                return Some(from..target);
            }
            return None;
        }
        let head = Head {
            end: offset + len,
            window: 0,
            ahead: offset + len,
            sequential_reads: 0,
            last_used: clock,
        };
        if self.heads.len() < MAX_STREAMS {
            self.heads.push(head);
        } else if let Some(lru) = self.heads.iter_mut().min_by_key(|h| h.last_used) {
            *lru = head;
        }
        None
    }

    /// Changes the bound (the workload's class picks it: full for
    /// sequential work, a quarter for mixed, none for random); windows
    /// already above it shrink to it.
    pub fn set_max_window(&mut self, max: u64) {
        self.max_window = max;
        for h in &mut self.heads {
            h.window = h.window.min(max);
        }
    }

    /// The largest window of any stream (for metrics).
    pub fn max_active_window(&self) -> u64 {
        self.heads.iter().map(|h| h.window).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_stream_grows_its_window_up_to_the_bound() {
        let mut ra = Readahead::new(8 << 20);
        assert_eq!(ra.on_read(0, 131_072), None);
        let mut windows = Vec::new();
        for i in 1..40u64 {
            if let Some(r) = ra.on_read(i * 131_072, 131_072) {
                assert!(r.start >= (i + 1) * 131_072 - 131_072);
            }
            windows.push(ra.max_active_window());
        }
        assert_eq!(windows[0], 1 << 20);
        assert_eq!(windows[1], 2 << 20);
        assert_eq!(*windows.last().unwrap(), 8 << 20);
    }

    #[test]
    fn a_steady_stream_asks_in_half_windows() {
        let mut ra = Readahead::new(8 << 20);
        let mut asks = Vec::new();
        for i in 0..400u64 {
            if let Some(r) = ra.on_read(i * 131_072, 131_072) {
                asks.push((i, r.end - r.start));
            }
        }
        // Past the growth phase, every ask is at least half the window, and
        // the stream stays covered: asked-for bytes keep up with the reads.
        let steady: Vec<_> = asks.iter().filter(|(i, _)| *i > 20).collect();
        assert!(!steady.is_empty());
        assert!(steady.iter().all(|(_, n)| *n >= 4 << 20), "{steady:?}");
        let asked: u64 = asks.iter().map(|(_, n)| n).sum();
        assert!(asked + 131_072 >= 400 * 131_072, "{asked}");
    }

    #[test]
    fn random_reads_get_no_readahead() {
        let mut ra = Readahead::new(8 << 20);
        let mut seed = 1u64;
        for _ in 0..1000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            assert_eq!(
                ra.on_read((seed >> 20) % (1 << 30) / 4096 * 4096, 4096),
                None
            );
        }
    }

    #[test]
    fn interleaved_streams_each_read_ahead() {
        let mut ra = Readahead::new(4 << 20);
        let bases = [0u64, 1 << 30, 2 << 30];
        let mut got = [0u64; 3];
        for i in 0..30u64 {
            for (s, b) in bases.iter().enumerate() {
                if let Some(r) = ra.on_read(b + i * 65_536, 65_536) {
                    assert!(r.start >= *b && r.end <= b + (i + 1) * 65_536 + (4 << 20));
                    got[s] += r.end - r.start;
                }
            }
        }
        assert!(got.iter().all(|g| *g >= 4 << 20), "{got:?}");
    }

    #[test]
    fn the_bound_follows_the_workload_class() {
        let mut ra = Readahead::new(8 << 20);
        let mut off = 0;
        let mut read = |ra: &mut Readahead| {
            let r = ra.on_read(off, 128 << 10);
            off += 128 << 10;
            r
        };
        for _ in 0..20 {
            read(&mut ra);
        }
        assert_eq!(ra.max_active_window(), 8 << 20);
        // Classified random: the stream keeps its place but reads nothing ahead.
        ra.set_max_window(0);
        assert_eq!(ra.max_active_window(), 0);
        for _ in 0..20 {
            assert_eq!(read(&mut ra), None);
        }
        // Mixed: a quarter; the window grows again up to it (asking again
        // once the stream passes what was asked for before the pause).
        ra.set_max_window(2 << 20);
        let asked: u64 = (0..80)
            .filter_map(|_| read(&mut ra))
            .map(|r| r.end - r.start)
            .sum();
        assert!(asked > 0);
        assert_eq!(ra.max_active_window(), 2 << 20);
    }
}
