//! The warm-up follows the session: the core warm-up is a timeline (its
//! entries are in the order sessions first read them), and the mount
//! fetches it a stretch ahead of where the session is, not all at once.
//!
//! A warm-up learned from sessions that all ran a scan and then a program
//! holds both, the scan first. A session that runs the program alone found
//! every one of its blocks in the warm-up, and still waited: at mount all
//! of the warm-up was queued, the program's blocks after 200 MiB of the
//! scan's, and its reads shared the link and the CPU (the store's, the
//! proxy's and the mount's decoding) with them: in `bench/peers.sh` (h) the
//! trained program start took twice as long as on a snapshot never traced
//! (measured in bench/analysis.md, "Warm-up timeline").
//!
//! So each core entry has a **rank** (its position in the timeline) and
//! the mount releases entries to the scheduler only a **stretch** ahead of
//! the **cursor**, the entry the session is in; each entry as jobs of at
//! most [`JOB_BLOCKS`] blocks. The session's reads move the cursor:
//! - forward, to any entry further on (the next one, or a jump past
//!   others): the stretch slides along, and the entry's jobs still queued
//!   go to the front of the warm-up (only its own: the entries after it
//!   keep their order, so a session whose reads come a few entries out of
//!   order, as a container start's do, does not push the entries it reads
//!   next behind later ones);
//! - back, to an entry not released yet (one a jump passed over): the
//!   stretch starts again from there. An entry passed over and never read
//!   is left to background hydration, which starts with the warm-up.
//!
//! The stretch starts at [`LOOKAHEAD_BYTES`] and doubles each time the
//! session has read at least [`GROW_SHARE`] of the blocks released so far,
//! so its size follows how much of the warm-up this session turns out to
//! use, as read-ahead's window follows a stream: the trained workload, or
//! one that reads all of it in another order (`tar` of the tree the scan
//! read a third of), soon has the whole warm-up under way, as if it had
//! all been queued at mount; a session that uses little of it (the
//! program alone) has cost one stretch beside its own reads. Order alone
//! could not tell them apart: every session on a filesystem image starts
//! with the same entries (the mount's), and an in-order session's reads
//! still come a few entries out of order.
//!
//! A job already dispatched is not called back, and a job queued stays
//! queued when the cursor moves: what a session passes over costs at most
//! the stretch released before it did.

use std::collections::{HashMap, HashSet};

/// Blocks per warm-up job at most: a whole entry at the default group size
/// (16), as before the timeline, so a job is one GET where the entry's
/// blocks are stored together. Jobs of 4 blocks, so that a job moved to the
/// front would start sooner, made twice the GETs and were slower for the
/// trained scan and the program start alike (bench/analysis.md, "Warm-up
/// timeline").
pub const JOB_BLOCKS: usize = 16;

/// Bytes of volume released ahead of the cursor at first: 128 MiB, the
/// prefetch slots' worth (16 slots, a job a 16-block group of 512 KiB
/// blocks), so the link carries as many GETs at once as when the whole
/// warm-up was queued at mount, and only what waited behind them is
/// withheld. Measured (`bench/peers.sh`, bench/analysis.md "Warm-up
/// timeline"): with 64 MiB the trained scan, which reads all of its warm-up
/// and is bound by the link, took 0.53–0.64 s against 0.37–0.40 s in three
/// runs. In bytes, not blocks: at 128 KiB blocks a container start's
/// 56 MiB warm-up is still released whole at mount, as at 512 KiB.
pub const LOOKAHEAD_BYTES: u64 = 128 << 20;

/// [`LOOKAHEAD_BYTES`] in blocks of `block_size`.
pub fn lookahead_blocks(block_size: u32) -> usize {
    (LOOKAHEAD_BYTES / block_size.max(1) as u64).max(1) as usize
}

/// The stretch doubles once the session has read this share of the
/// blocks released: half, so the link always has at least half a stretch
/// it knows will be read ahead of a session that reads it all, while a
/// session reading a tenth of it never grows it.
pub const GROW_SHARE: f64 = 0.5;

/// What the cursor asks of the scheduler after a read.
#[derive(Debug, PartialEq, Eq)]
pub struct Move {
    /// The queued jobs of this rank go to the front of the warm-up: the
    /// session is reading there now.
    pub front: u32,
}

#[derive(Debug)]
struct Entry {
    blocks: Vec<u64>,
    released: bool,
}

/// One snapshot's core warm-up timeline and the session's cursor in it.
#[derive(Debug, Default)]
pub struct Timeline {
    /// group → rank of its core entry.
    rank: HashMap<u64, u32>,
    entries: Vec<Entry>,
    group_size: u64,
    /// The entry the session is in (None before its first read).
    cursor: Option<u32>,
    /// Where releasing starts.
    from: u32,
    /// Blocks released ahead of `from`.
    stretch: usize,
    /// Blocks in the whole timeline: the stretch never needs to be more.
    total: usize,
    /// Released blocks the session has not read yet.
    unread: HashSet<u64>,
    /// Released blocks, and those of them read.
    released: usize,
    read: usize,
}

impl Timeline {
    /// The timeline of `entries` (the core's blocks, one entry per group,
    /// in the index's order: [`MountStart::warmup`]) of a snapshot with
    /// blocks of `block_size`, fetching only the blocks `fetch` accepts
    /// (the index's inline blocks need no job; a read of them still moves
    /// the cursor).
    ///
    /// [`MountStart::warmup`]: crate::predict::warmup::MountStart::warmup
    pub fn new(
        entries: &[Vec<u64>],
        group_size: u32,
        block_size: u32,
        fetch: impl Fn(u64) -> bool,
    ) -> Self {
        let group_size = group_size.max(1) as u64;
        let mut t = Timeline {
            group_size,
            stretch: lookahead_blocks(block_size),
            ..Timeline::default()
        };
        for (rank, blocks) in entries.iter().enumerate() {
            if let Some(&b) = blocks.first() {
                t.rank.entry(b / group_size).or_insert(rank as u32);
            }
            let blocks: Vec<u64> = blocks.iter().copied().filter(|&b| fetch(b)).collect();
            t.total += blocks.len();
            t.entries.push(Entry {
                blocks,
                released: false,
            });
        }
        t
    }

    /// The jobs (rank, blocks) to queue now: the entries not released yet
    /// within the stretch from where releasing starts.
    pub fn release(&mut self) -> Vec<(u32, Vec<u64>)> {
        let mut jobs = Vec::new();
        let mut ahead = 0;
        for (rank, e) in self.entries.iter_mut().enumerate().skip(self.from as usize) {
            if ahead >= self.stretch {
                break;
            }
            ahead += e.blocks.len();
            if !e.released {
                e.released = true;
                self.released += e.blocks.len();
                self.unread.extend(&e.blocks);
                for chunk in e.blocks.chunks(JOB_BLOCKS) {
                    jobs.push((rank as u32, chunk.to_vec()));
                }
            }
        }
        jobs
    }

    /// A read of `blocks`: how the warm-up's order moves, if it does (call
    /// [`Self::release`] after it).
    pub fn on_read(&mut self, blocks: std::ops::Range<u64>) -> Option<Move> {
        // A read is a few blocks; a huge one's head says enough.
        for b in blocks.clone().take(16) {
            if self.unread.remove(&b) {
                self.read += 1;
            }
        }
        let grew = self.stretch < self.total
            && self.released > 0
            && self.read as f64 >= GROW_SHARE * self.released as f64;
        if grew {
            self.stretch = self.stretch.saturating_mul(2);
        }
        let first = blocks.start / self.group_size;
        let last = blocks.end.saturating_sub(1) / self.group_size;
        // The lowest rank among the read's groups (a read spans one or two).
        let r = (first..=last.min(first + 1))
            .filter_map(|g| self.rank.get(&g).copied())
            .min();
        let moved = match (r, self.cursor) {
            (Some(r), None) => Some(r),
            (Some(r), Some(c)) if r > c => Some(r),
            (Some(r), Some(_)) if !self.entries[r as usize].released => Some(r),
            _ => None,
        };
        if let Some(r) = moved {
            self.cursor = Some(r);
            self.from = r;
            return Some(Move { front: r });
        }
        grew.then_some(Move { front: self.from })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` entries, groups 0..n of 16 blocks, `k` blocks each.
    fn timeline(n: u64, k: u64) -> Timeline {
        let e: Vec<Vec<u64>> = (0..n).map(|g| (g * 16..g * 16 + k).collect()).collect();
        Timeline::new(&e, 16, BS, |_| true)
    }

    /// 1 MiB blocks: a first stretch of 128.
    const BS: u32 = 1 << 20;

    fn ranks(jobs: &[(u32, Vec<u64>)]) -> Vec<u32> {
        jobs.iter().map(|j| j.0).collect()
    }

    /// Reads the first block of entry `r` (groups of 16 blocks).
    fn read(t: &mut Timeline, r: u64) -> Option<Move> {
        t.on_read(r * 16..r * 16 + 1)
    }

    #[test]
    fn entries_are_released_a_stretch_ahead_in_jobs_of_at_most_job_blocks() {
        // Groups of 64 blocks; the first entry is longer than a job.
        let j = JOB_BLOCKS as u64;
        let e = vec![(128..128 + 2 * j + 2).collect(), vec![64, 65], vec![0]];
        let mut t = Timeline::new(&e, 64, BS, |b| b != 65);
        let jobs = t.release();
        assert_eq!(ranks(&jobs), vec![0, 0, 0, 1, 2]);
        assert_eq!(jobs[0].1, (128..128 + j).collect::<Vec<_>>());
        assert_eq!(jobs[2].1, vec![128 + 2 * j, 129 + 2 * j]);
        assert_eq!(jobs[3].1, vec![64], "blocks not to fetch get no job");
        assert!(t.release().is_empty(), "released once");
    }

    #[test]
    fn the_stretch_slides_with_the_cursor_and_a_jump_leaves_the_gap_out() {
        // 16 blocks an entry: a stretch is 8 entries.
        let per = (lookahead_blocks(BS) / 16) as u64;
        let mut t = timeline(40, 16);
        assert_eq!(*ranks(&t.release()).last().unwrap() as u64, per - 1);
        assert_eq!(read(&mut t, 0), Some(Move { front: 0 }));
        assert!(t.release().is_empty(), "still within the stretch");
        assert_eq!(read(&mut t, 0), None, "same entry again");
        // On to the next entry: the stretch slides by one.
        assert_eq!(read(&mut t, 1), Some(Move { front: 1 }));
        assert_eq!(ranks(&t.release()), vec![per as u32]);
        // A jump: the stretch from there, nothing of the gap.
        assert_eq!(read(&mut t, 30), Some(Move { front: 30 }));
        let jobs = t.release();
        assert_eq!(ranks(&jobs), (30..30 + per as u32).collect::<Vec<_>>());
        // Back to an entry behind, released before: nothing moves.
        assert_eq!(read(&mut t, 3), None);
        // Back into the gap: the stretch starts there again.
        assert_eq!(read(&mut t, 12), Some(Move { front: 12 }));
        let jobs = t.release();
        assert_eq!(ranks(&jobs), (12..12 + per as u32).collect::<Vec<_>>());
        // Outside the warm-up: nothing.
        assert_eq!(t.on_read(5000..5001), None);
    }

    #[test]
    fn the_stretch_grows_as_its_blocks_are_read_and_not_otherwise() {
        let per = lookahead_blocks(BS) as u64 / 16;
        // A session reading every block, in an order of its own (from the
        // end of each entry): the stretch doubles each time half of what
        // was released is read, so more is under way than the sliding
        // stretch alone would release (up to `per` entries past the one
        // being read), and ever more as it reads on.
        let mut t = timeline(64, 16);
        let mut released: usize = t.release().iter().map(|j| j.1.len()).sum();
        let mut read_all = |t: &mut Timeline, entries: std::ops::Range<u64>| {
            for r in entries {
                for b in (r * 16..r * 16 + 16).rev() {
                    t.on_read(b..b + 1);
                    released += t.release().iter().map(|j| j.1.len()).sum::<usize>();
                }
            }
            released
        };
        let sliding = |entries: u64| (entries + per - 1) as usize * 16;
        let first = read_all(&mut t, 0..per);
        assert!(first > sliding(per), "the stretch did not grow: {first}");
        let more = read_all(&mut t, per..2 * per);
        assert!(more >= 2 * sliding(2 * per), "{more}");
        // A session that reads one block of each entry it reaches never
        // grows it: one stretch and the entries it reaches.
        let mut t = timeline(64, 16);
        let mut released: usize = t.release().iter().map(|j| j.1.len()).sum();
        for r in [0, 1, 40, 41] {
            read(&mut t, r);
            released += t.release().iter().map(|j| j.1.len()).sum::<usize>();
        }
        let stretch = lookahead_blocks(BS);
        assert_eq!(released, stretch + 16 + stretch + 16);
    }
}
