//! Workload classification with multi-stream sequential detection.
//!
//! A loop device merges every application stream into one file, so "is this
//! read right after the previous one?" sees four interleaved `cp`s as
//! random. Instead a table of up to [`MAX_STREAMS`] stream heads is kept: a
//! read that starts at, just before (overlapping readahead) or just after
//! (a small skip) any head's end extends that stream; otherwise it starts a
//! new one, replacing the least recently used head. The share of read bytes
//! that extended a stream is the sequential fraction; it classifies the
//! workload and picks a prefetch window and read-ahead depth.
//!
//! Used by `trace show`, and live by the prefetcher.

use super::{Op, Record};

/// Concurrent streams tracked: more than the readers one volume usually
/// sees at once; a random workload merely churns the table.
pub const MAX_STREAMS: usize = 32;
/// A read starting up to this far past a head's end still continues it
/// (readahead skipping cached pages, small holes in a file's extents)...
pub const SEQ_GAP: u64 = 128 * 1024;
/// ...but never more than this many times its own length: a 4 KiB random
/// read must land within 16 KiB of a head, or random I/O forms "streams".
pub const SEQ_GAP_LENGTHS: u64 = 4;
/// A stream counts as detected once it was extended this many times.
pub const MIN_STREAM_READS: u64 = 4;
/// Sequential fraction at or above which a workload is sequential.
pub const SEQUENTIAL_AT: f64 = 0.6;
/// ... and at or below which it is random.
pub const RANDOM_AT: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Sequential,
    Random,
    Mixed,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    end: u64,
    last_used: u64,
    extensions: u64,
}

/// The stream-head table.
#[derive(Debug, Default, Clone)]
pub struct StreamDetector {
    heads: Vec<Head>,
    clock: u64,
    /// Most streams active at once (extended enough, still in the table).
    max_active: u64,
}

impl StreamDetector {
    /// Feeds one read; returns whether it continued a stream.
    pub fn observe(&mut self, offset: u64, len: u64) -> bool {
        self.clock += 1;
        let best = self
            .heads
            .iter_mut()
            .filter(|h| {
                let gap = SEQ_GAP.min(SEQ_GAP_LENGTHS * len.max(1));
                offset >= h.end.saturating_sub(len.max(1)) && offset <= h.end + gap
            })
            .min_by_key(|h| offset.abs_diff(h.end));
        if let Some(h) = best {
            h.end = h.end.max(offset + len);
            h.last_used = self.clock;
            h.extensions += 1;
            if h.extensions == MIN_STREAM_READS {
                self.max_active = self.max_active.max(self.active_streams() as u64);
            }
            return true;
        }
        let head = Head {
            end: offset + len,
            last_used: self.clock,
            extensions: 0,
        };
        if self.heads.len() < MAX_STREAMS {
            self.heads.push(head);
        } else if let Some(lru) = self.heads.iter_mut().min_by_key(|h| h.last_used) {
            *lru = head;
        }
        false
    }

    /// The most streams that were active at the same time.
    pub fn streams_detected(&self) -> u64 {
        self.max_active
    }

    /// Streams currently active in the table (extended enough).
    pub fn active_streams(&self) -> usize {
        self.heads
            .iter()
            .filter(|h| h.extensions >= MIN_STREAM_READS)
            .count()
    }
}

/// The verdict on a run of reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Classification {
    pub class: Class,
    /// Share of read bytes that continued a stream.
    pub sequential_fraction: f64,
    pub streams: u64,
    /// Prefetch window to use for hints (ms), from the windows offered.
    pub window_ms: u32,
    /// Suggested read-ahead per stream (bytes); 0 for random workloads.
    pub readahead_bytes: u64,
}

/// Accumulates reads and classifies them.
#[derive(Debug, Default, Clone)]
pub struct Classifier {
    det: StreamDetector,
    seq_bytes: u64,
    bytes: u64,
}

impl Classifier {
    pub fn observe(&mut self, r: &Record) {
        if r.op != Op::Read || r.len == 0 {
            return;
        }
        self.bytes += r.len as u64;
        if self.det.observe(r.offset, r.len as u64) {
            self.seq_bytes += r.len as u64;
        }
    }

    /// `windows_ms`: the windows the index offers (shortest for random,
    /// longest for sequential); `max_readahead`: the read-ahead bound.
    pub fn classification(&self, windows_ms: &[u32], max_readahead: u64) -> Classification {
        let f = if self.bytes == 0 {
            0.0
        } else {
            self.seq_bytes as f64 / self.bytes as f64
        };
        let class = if f >= SEQUENTIAL_AT {
            Class::Sequential
        } else if f <= RANDOM_AT {
            Class::Random
        } else {
            Class::Mixed
        };
        let shortest = windows_ms.iter().copied().min().unwrap_or(2000);
        let longest = windows_ms.iter().copied().max().unwrap_or(10_000);
        let (window_ms, readahead_bytes) = match class {
            Class::Sequential => (longest, max_readahead),
            Class::Mixed => (shortest, max_readahead / 4),
            Class::Random => (shortest, 0),
        };
        Classification {
            class,
            sequential_fraction: f,
            streams: self.det.streams_detected(),
            window_ms,
            readahead_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(offset: u64, len: u32) -> Record {
        Record {
            t_ns: 0,
            op: Op::Read,
            offset,
            len,
            stream: 0,
        }
    }

    fn classify(reads: impl Iterator<Item = Record>) -> Classification {
        let mut c = Classifier::default();
        for r in reads {
            c.observe(&r);
        }
        c.classification(&[2000, 10_000], 8 << 20)
    }

    /// A tiny deterministic PRNG for offsets.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 16
    }

    #[test]
    fn one_sequential_reader() {
        let c = classify((0..1000).map(|i| read(i * 131_072, 131_072)));
        assert_eq!(c.class, Class::Sequential);
        assert!(c.sequential_fraction > 0.99);
        assert_eq!(c.streams, 1);
        assert_eq!((c.window_ms, c.readahead_bytes), (10_000, 8 << 20));
    }

    #[test]
    fn four_interleaved_sequential_readers_are_sequential() {
        // As a loop device sees `cp` of four files at once: round-robin
        // 128 KiB reads from four far-apart regions.
        let bases = [0u64, 1 << 30, 3 << 30, 7 << 30];
        let c = classify((0..400).map(|i| read(bases[i % 4] + (i / 4) as u64 * 131_072, 131_072)));
        assert_eq!(c.class, Class::Sequential, "{c:?}");
        assert_eq!(c.streams, 4);
    }

    #[test]
    fn fio_randread_is_random() {
        let mut s = 42;
        let c = classify((0..10_000).map(|_| read((lcg(&mut s) % (1 << 18)) * 4096, 4096)));
        assert_eq!(c.class, Class::Random, "{c:?}");
        assert!(c.sequential_fraction < 0.05);
        assert_eq!((c.window_ms, c.readahead_bytes), (2000, 0));
    }

    #[test]
    fn half_and_half_is_mixed() {
        let mut s = 7;
        let c = classify((0..4000).map(|i| {
            if i % 2 == 0 {
                read((i / 2) as u64 * 65_536, 65_536)
            } else {
                read((1 << 32) + (lcg(&mut s) % (1 << 18)) * 65_536, 65_536)
            }
        }));
        assert_eq!(c.class, Class::Mixed, "{c:?}");
    }

    #[test]
    fn writes_are_ignored() {
        let mut c = Classifier::default();
        c.observe(&Record {
            op: Op::Write,
            ..read(0, 4096)
        });
        assert_eq!(c.classification(&[2000], 0).sequential_fraction, 0.0);
    }
}
