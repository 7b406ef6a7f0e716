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
    /// The bound the class set, before [`Backoff`].
    class_max: u64,
    backoff: u32,
}

impl Readahead {
    pub fn new(max_window: u64) -> Self {
        Readahead {
            heads: Vec::new(),
            clock: 0,
            max_window,
            class_max: max_window,
            backoff: 0,
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
        self.class_max = max;
        self.apply();
    }

    /// Divides the bound by 2^`shift` (see [`Backoff`]).
    pub fn set_backoff(&mut self, shift: u32) {
        self.backoff = shift;
        self.apply();
    }

    fn apply(&mut self) {
        let max = self.class_max >> self.backoff.min(63);
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

/// Read-ahead judged by its own precision: of the read-ahead blocks
/// judged (read, or not read within the horizon), the share read. Every
/// [`BACKOFF_SAMPLE`] judged blocks, a precision under [`BACKOFF_BELOW`]
/// halves the windows once more (down to 1/2^[`MAX_BACKOFF`]), one at or
/// above [`RECOVER_AT`] doubles them back. A start-up reading many small
/// files in ascending order looks sequential and fetched windows it never
/// read; a real stream reads all of its window and never backs off.
#[derive(Debug, Default)]
pub struct Backoff {
    /// (used, unused) counters when the current sample began.
    base: (u64, u64),
    shift: u32,
}

/// Judged blocks per decision: enough that one stream's window ending
/// unread at a file's end (a few blocks) does not decide alone.
pub const BACKOFF_SAMPLE: u64 = 32;
pub const BACKOFF_BELOW: f64 = 0.5;
pub const RECOVER_AT: f64 = 0.8;
/// At most 1/64 of the class's window (64 MiB → 1 MiB: two blocks).
pub const MAX_BACKOFF: u32 = 6;

impl Backoff {
    /// Feeds the cumulative (used, unused) counters; returns the new shift
    /// when it changes.
    pub fn observe(&mut self, used: u64, unused: u64) -> Option<u32> {
        let (u, n) = (
            used.saturating_sub(self.base.0),
            unused.saturating_sub(self.base.1),
        );
        if u + n < BACKOFF_SAMPLE {
            return None;
        }
        self.base = (used, unused);
        let precision = u as f64 / (u + n) as f64;
        let before = self.shift;
        if precision < BACKOFF_BELOW {
            self.shift = (self.shift + 1).min(MAX_BACKOFF);
        } else if precision >= RECOVER_AT {
            self.shift = self.shift.saturating_sub(1);
        }
        (self.shift != before).then_some(self.shift)
    }

    pub fn shift(&self) -> u32 {
        self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_halves_while_read_ahead_goes_unread_and_recovers() {
        let mut b = Backoff::default();
        // Too few judged: no decision.
        assert_eq!(b.observe(5, 20), None);
        // 5 of 40 read: back off, twice, then keep at the floor.
        assert_eq!(b.observe(5, 35), Some(1));
        assert_eq!(b.observe(5, 70), Some(2));
        for i in 3..=MAX_BACKOFF {
            assert_eq!(b.observe(5, 35 * (i as u64 + 1)), Some(i));
        }
        assert_eq!(b.observe(5, 35 * 20), None);
        assert_eq!(b.shift(), MAX_BACKOFF);
        // All read again: windows double back.
        assert_eq!(b.observe(40, 35 * 20), Some(MAX_BACKOFF - 1));
        // In between (60%): stays.
        assert_eq!(b.observe(40 + 20, 35 * 20 + 12), None);
        let mut ra = Readahead::new(64 << 20);
        ra.set_backoff(6);
        ra.set_max_window(64 << 20);
        assert_eq!(ra.max_window, 1 << 20);
    }

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
