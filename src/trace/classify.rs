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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Sequential,
    Random,
    Mixed,
}

impl Class {
    /// The name `stats`, `/metrics` and the JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Sequential => "sequential",
            Class::Random => "random",
            Class::Mixed => "mixed",
        }
    }
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

/// The hint window wanted for each class (`prefetch.windows` in
/// snapshots.yaml): the index offers a few windows (`hints --window`), and
/// the one nearest to the class's wish is used. Short for random work (what
/// is read together is read within moments), long for sequential work (a
/// stream comes back to a group's neighbours seconds later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassWindows {
    #[serde(deserialize_with = "crate::units::duration")]
    pub random: std::time::Duration,
    #[serde(deserialize_with = "crate::units::duration")]
    pub mixed: std::time::Duration,
    #[serde(deserialize_with = "crate::units::duration")]
    pub sequential: std::time::Duration,
}

impl Default for ClassWindows {
    /// The shortest and the longest of the index's default windows (2 s, 10 s).
    fn default() -> Self {
        use std::time::Duration;
        ClassWindows {
            random: Duration::from_secs(2),
            mixed: Duration::from_secs(2),
            sequential: Duration::from_secs(10),
        }
    }
}

impl ClassWindows {
    /// Of `offered` (ms), the window nearest to what `class` wants (the
    /// shorter one on a tie); `wanted` when none is offered.
    pub fn pick(&self, class: Class, offered: &[u32]) -> u32 {
        let wanted = match class {
            Class::Random => self.random,
            Class::Mixed => self.mixed,
            Class::Sequential => self.sequential,
        };
        let wanted = u32::try_from(wanted.as_millis()).unwrap_or(u32::MAX);
        offered
            .iter()
            .copied()
            .min_by_key(|&w| (w.abs_diff(wanted), w))
            .unwrap_or(wanted)
    }
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

    /// `windows_ms`: the windows the index offers, chosen from by
    /// `wanted`; `max_readahead`: the read-ahead bound.
    pub fn classification(
        &self,
        windows_ms: &[u32],
        wanted: &ClassWindows,
        max_readahead: u64,
    ) -> Classification {
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
        let window_ms = wanted.pick(class, windows_ms);
        let readahead_bytes = match class {
            Class::Sequential => max_readahead,
            Class::Mixed => max_readahead / 4,
            Class::Random => 0,
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
        c.classification(&[2000, 10_000], &ClassWindows::default(), 8 << 20)
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
    fn each_class_gets_the_offered_window_nearest_its_wish() {
        let d = ClassWindows::default();
        assert_eq!(d.pick(Class::Random, &[2000, 10_000]), 2000);
        assert_eq!(d.pick(Class::Sequential, &[2000, 10_000]), 10_000);
        assert_eq!(d.pick(Class::Sequential, &[1000, 5000, 30_000]), 5000);
        assert_eq!(d.pick(Class::Mixed, &[]), 2000);
        let w = ClassWindows {
            random: std::time::Duration::from_millis(500),
            mixed: std::time::Duration::from_secs(6),
            sequential: std::time::Duration::from_secs(60),
        };
        assert_eq!(w.pick(Class::Random, &[1000, 5000, 30_000]), 1000);
        // 6 s lies between 5 s and 10 s: the nearer one.
        assert_eq!(w.pick(Class::Mixed, &[5000, 10_000]), 5000);
        assert_eq!(w.pick(Class::Sequential, &[5000, 10_000]), 10_000);
    }

    #[test]
    fn writes_are_ignored() {
        let mut c = Classifier::default();
        c.observe(&Record {
            op: Op::Write,
            ..read(0, 4096)
        });
        assert_eq!(
            c.classification(&[2000], &ClassWindows::default(), 0)
                .sequential_fraction,
            0.0
        );
    }
}
