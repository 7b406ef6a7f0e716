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
//! trained program start took twice as long as on a snapshot never traced.
//!
//! So each core entry has a **rank** (its position in the timeline) and
//! the mount releases entries to the scheduler only a **stretch** ahead of
//! the **cursor**, the entry the session last reached; each entry as jobs
//! of at most [`JOB_BLOCKS`] blocks. The stretch starts at
//! [`LOOKAHEAD_BLOCKS`] and doubles each time the session steps on to the
//! next entries in the trained order, from its [`GROW_AFTER_STEPS`]th step
//! on (a jump starts over): the trained workload soon has the
//! whole warm-up under way, as if it had all been queued at mount, while a
//! session that does something else after the mount's common first reads
//! has cost one stretch. The session's reads move the cursor:
//! - a read in an entry not reached before moves the cursor there and
//!   releases the next stretch; that entry's queued jobs and the ones after
//!   it go to the front of the warm-up, in timeline order (with the entries
//!   a small step passed over);
//! - a read more than [`SKIP_RANKS`] entries past the furthest one reached
//!   is a jump: the session left out what lies between. Those entries are
//!   not released, and their queued jobs leave the queue; background
//!   hydration, which starts with the warm-up, brings them when the mount
//!   is idle. A read there later releases the entry again, like any other.
//!
//! A session that runs the trained workload reads the timeline in order,
//! and the warm-up stays a stretch ahead of it: when the session is faster
//! than the link, the link is busy the whole time, as before. A job
//! already dispatched is not called back: what the session skips costs
//! the jobs in flight when it jumps, one stretch at most.

use std::collections::HashMap;

/// Blocks per warm-up job at most: a whole entry at the default group size
/// (16), as before the timeline. Measured (`bench/peers.sh` workloads, same
/// run, 4 runs): jobs of 4 blocks, so that a job moved to the front would
/// start sooner, made twice the GETs and were slower on both sides: the
/// trained scan 1.34 s against 1.19 s, the program start alone 0.77 s
/// against 0.61 s. What the session skips is not released at all, so
/// in-flight jobs ahead of the front are one stretch at most.
pub const JOB_BLOCKS: usize = 16;

/// Blocks released ahead of the cursor at first: 64 MiB of 512 KiB
/// blocks, about 150 ms of that link, what a session that turns out to be
/// another workload costs beside its own reads. Measured on `bench/peers.sh`
/// (h): the trained program start alone fetched 75 MiB instead of 225 MiB.
pub const LOOKAHEAD_BLOCKS: usize = 128;

/// Steps on in the trained order before the stretch grows: the first
/// reads of every session on a filesystem image (the mount's, the root
/// directory's) are the timeline's first entries whatever the workload; in
/// `bench/peers.sh` (h) the program start alone stepped from entry 0 to 1
/// and then jumped to 29, and growing on that one step had 32 MiB more
/// under way before the jump (107 MiB fetched instead of 75).
pub const GROW_AFTER_STEPS: u32 = 2;

/// A read this many entries or fewer past the furthest one reached is the
/// session going on in the trained order (reads of one start-up interleave
/// within a few entries); further is a jump that leaves the entries
/// between out.
pub const SKIP_RANKS: u32 = 4;

/// What the cursor asks of the scheduler after a read.
#[derive(Debug, PartialEq, Eq)]
pub struct Move {
    /// The queued jobs of this rank and later go to the front of the warm-up.
    pub front: u32,
    /// The queued jobs of these ranks leave the queue.
    pub skip: std::ops::Range<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Released,
    Skipped,
}

#[derive(Debug)]
struct Entry {
    blocks: Vec<u64>,
    state: State,
}

/// One snapshot's core warm-up timeline and the session's cursor in it.
#[derive(Debug, Default)]
pub struct Timeline {
    /// group → rank of its core entry.
    rank: HashMap<u64, u32>,
    entries: Vec<Entry>,
    group_size: u64,
    /// The furthest rank read so far.
    reached: Option<u32>,
    /// Where releasing goes on from.
    cursor: u32,
    /// Blocks released ahead of the cursor.
    stretch: usize,
    /// Steps on in the trained order since the first read or the last jump.
    steps: u32,
}

impl Timeline {
    /// The timeline of `entries` (the core's blocks, one entry per group,
    /// in the index's order: [`MountStart::warmup`]), fetching only the
    /// blocks `fetch` accepts (the index's inline blocks need no job; a
    /// read of them still moves the cursor).
    ///
    /// [`MountStart::warmup`]: crate::predict::warmup::MountStart::warmup
    pub fn new(entries: &[Vec<u64>], group_size: u32, fetch: impl Fn(u64) -> bool) -> Self {
        let group_size = group_size.max(1) as u64;
        let mut t = Timeline {
            group_size,
            stretch: LOOKAHEAD_BLOCKS,
            ..Timeline::default()
        };
        for (rank, blocks) in entries.iter().enumerate() {
            if let Some(&b) = blocks.first() {
                t.rank.entry(b / group_size).or_insert(rank as u32);
            }
            t.entries.push(Entry {
                blocks: blocks.iter().copied().filter(|&b| fetch(b)).collect(),
                state: State::Waiting,
            });
        }
        t
    }

    /// The jobs (rank, blocks) to queue now: the waiting entries within
    /// the stretch ahead of the cursor.
    pub fn release(&mut self) -> Vec<(u32, Vec<u64>)> {
        let mut jobs = Vec::new();
        let mut ahead = 0;
        for (rank, e) in self
            .entries
            .iter_mut()
            .enumerate()
            .skip(self.cursor as usize)
        {
            if ahead >= self.stretch {
                break;
            }
            if e.state == State::Skipped {
                continue;
            }
            ahead += e.blocks.len();
            if e.state == State::Waiting {
                e.state = State::Released;
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
        let first = blocks.start / self.group_size;
        let last = blocks.end.saturating_sub(1) / self.group_size;
        // The lowest rank among the read's groups (a read spans one or two).
        let r = (first..=last.min(first + 1))
            .filter_map(|g| self.rank.get(&g).copied())
            .min()?;
        match self.reached {
            Some(top) if r <= top => {
                // Behind the furthest: only an entry left out comes back.
                let e = &mut self.entries[r as usize];
                if e.state != State::Skipped {
                    return None;
                }
                e.state = State::Waiting;
                self.cursor = r;
                Some(Move {
                    front: r,
                    skip: r..r,
                })
            }
            Some(top) if r > top.saturating_add(SKIP_RANKS) => {
                for e in &mut self.entries[top as usize + 1..r as usize] {
                    e.state = State::Skipped;
                }
                self.reached = Some(r);
                self.cursor = r;
                self.stretch = LOOKAHEAD_BLOCKS;
                self.steps = 0;
                Some(Move {
                    front: r,
                    skip: top + 1..r,
                })
            }
            top => {
                if top.is_some() {
                    // On in the trained order: the trained workload.
                    self.steps += 1;
                    if self.steps >= GROW_AFTER_STEPS {
                        self.stretch = self.stretch.saturating_mul(2);
                    }
                }
                let front = top.map_or(r, |t| r.min(t + 1));
                self.reached = Some(r);
                self.cursor = front;
                Some(Move {
                    front,
                    skip: front..front,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` entries, groups 0..n of 16 blocks, `k` blocks each.
    fn timeline(n: u64, k: u64) -> Timeline {
        let e: Vec<Vec<u64>> = (0..n).map(|g| (g * 16..g * 16 + k).collect()).collect();
        Timeline::new(&e, 16, |_| true)
    }

    fn ranks(jobs: &[(u32, Vec<u64>)]) -> Vec<u32> {
        jobs.iter().map(|j| j.0).collect()
    }

    #[test]
    fn entries_are_released_a_stretch_ahead_in_jobs_of_at_most_job_blocks() {
        // Groups of 64 blocks; the first entry is longer than a job.
        let j = JOB_BLOCKS as u64;
        let e = vec![(128..128 + 2 * j + 2).collect(), vec![64, 65], vec![0]];
        let mut t = Timeline::new(&e, 64, |b| b != 65);
        let jobs = t.release();
        assert_eq!(ranks(&jobs), vec![0, 0, 0, 1, 2]);
        assert_eq!(jobs[0].1, (128..128 + j).collect::<Vec<_>>());
        assert_eq!(jobs[2].1, vec![128 + 2 * j, 129 + 2 * j]);
        assert_eq!(jobs[3].1, vec![64], "blocks not to fetch get no job");
        assert!(t.release().is_empty(), "released once");
        // 16 blocks an entry: LOOKAHEAD_BLOCKS / 16 entries at a time.
        let mut t = timeline(40, 16);
        let per = (LOOKAHEAD_BLOCKS / 16) as u32;
        let first = t.release();
        assert_eq!(*ranks(&first).last().unwrap(), per - 1);
        // The cursor moving on releases the next entries; from the second
        // step on in the trained order, each doubles the stretch.
        assert!(t.on_read(0..1).is_some());
        assert!(t.release().is_empty(), "still within the stretch");
        t.on_read(16..17);
        let one = vec![per; 16 / JOB_BLOCKS];
        assert_eq!(ranks(&t.release()), one, "one step: the same stretch");
        t.on_read(32..33);
        let jobs = t.release();
        assert_eq!(*ranks(&jobs).first().unwrap(), per + 1);
        assert_eq!(
            *ranks(&jobs).last().unwrap(),
            2 * per + 1,
            "twice the stretch"
        );
        // A jump starts over at the first stretch.
        t.on_read(30 * 16..30 * 16 + 1);
        let jobs = t.release();
        assert_eq!(*ranks(&jobs).last().unwrap(), 30 + per - 1);
    }

    #[test]
    fn a_session_in_the_trained_order_moves_nothing_a_jump_skips_the_gap() {
        let mut t = timeline(40, 2);
        t.release();
        assert_eq!(
            t.on_read(0..1),
            Some(Move {
                front: 0,
                skip: 0..0
            })
        );
        assert_eq!(t.on_read(1..2), None, "same entry again");
        assert_eq!(
            t.on_read(17..18),
            Some(Move {
                front: 1,
                skip: 1..1
            })
        );
        // A small step ahead (interleaved reads): no skip, and the entries
        // stepped over stay in front with it.
        assert_eq!(
            t.on_read(64..65),
            Some(Move {
                front: 2,
                skip: 2..2
            })
        );
        // A jump past more than SKIP_RANKS entries leaves them out...
        assert_eq!(
            t.on_read(30 * 16..30 * 16 + 1),
            Some(Move {
                front: 30,
                skip: 5..30
            })
        );
        let jobs = t.release();
        assert!(ranks(&jobs).iter().all(|&r| r > 30), "{jobs:?}");
        // ...until a read comes back to one: released again.
        assert_eq!(
            t.on_read(6 * 16..6 * 16 + 1),
            Some(Move {
                front: 6,
                skip: 6..6
            })
        );
        assert_eq!(ranks(&t.release()), vec![6]);
        assert_eq!(t.on_read(6 * 16..6 * 16 + 1), None);
        // Outside the warm-up: nothing.
        assert_eq!(t.on_read(5000..5001), None);
    }
}
