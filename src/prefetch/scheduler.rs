//! The scheduler: prefetch jobs wait in a priority queue (fetch unit >
//! warm-up > read-ahead > hints and successors > hydration; older first
//! within a priority, except that the warm-up's timeline moves its jobs,
//! [`crate::predict::timeline`]) and
//! run on at most `concurrency` prefetch slots. While a demand read waits
//! on the store, prefetch backs off to 1/[`DEMAND_BACKOFF`] of its slots:
//! it yields to demand without starving (a warm-up must still finish beside
//! a reader that keeps missing). The queue is bounded: past
//! [`MAX_QUEUED_JOBS`] the least valuable jobs are dropped.

use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// While demand reads wait on the store, prefetch keeps 1/this of its slots.
pub(super) const DEMAND_BACKOFF: usize = 4;
/// Queued prefetch jobs at most; beyond, the lowest priority are dropped.
pub(super) const MAX_QUEUED_JOBS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background hydration ([`super::hydrate`]): only what nothing else wants.
    Hydrate = 0,
    Hint = 1,
    Readahead = 2,
    Warmup = 3,
    /// Neighbours of a demand miss ([`super::unit`]): a reader is waiting
    /// right next to them.
    Unit = 4,
}

/// Sequence numbers of queued jobs start here; jobs the warm-up's timeline
/// moves to the front get numbers below it, each move below the last.
const FIRST_SEQ: u64 = 1 << 40;

/// Blocks of one mounted file to prefetch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Job {
    pub priority: Priority,
    /// Older first within a priority.
    seq: std::cmp::Reverse<u64>,
    pub file: usize,
    pub blocks: Vec<u64>,
    /// The core warm-up entry this job is part of ([`crate::predict::timeline`]).
    pub rank: Option<u32>,
}

impl Ord for Job {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(o.priority, o.seq))
    }
}
impl Job {
    /// The job's rank as one number, smaller first: priority, then age
    /// (the order the fetcher's decode gate serves prefetch runs in).
    pub fn order(&self) -> u64 {
        let p = Priority::Unit as u64 - self.priority as u64;
        (p << 56) | (self.seq.0 & ((1 << 56) - 1))
    }
}

impl PartialOrd for Job {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

pub(super) struct Scheduler {
    queue: BinaryHeap<Job>,
    seq: u64,
    /// The lowest sequence number a timeline move gave out.
    front: u64,
    concurrency: usize,
    slots: Arc<Semaphore>,
    /// A finished job wakes the dispatcher: its slot is free again.
    done: Arc<tokio::sync::Notify>,
}

impl Scheduler {
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Scheduler {
            queue: BinaryHeap::new(),
            seq: FIRST_SEQ,
            front: FIRST_SEQ,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            done: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn push(&mut self, priority: Priority, file: usize, blocks: Vec<u64>) {
        self.push_job(priority, file, blocks, None);
    }

    /// A job of the core warm-up entry `rank`.
    pub fn push_warmup(&mut self, file: usize, rank: u32, blocks: Vec<u64>) {
        self.push_job(Priority::Warmup, file, blocks, Some(rank));
    }

    fn push_job(&mut self, priority: Priority, file: usize, blocks: Vec<u64>, rank: Option<u32>) {
        self.seq += 1;
        self.queue.push(Job {
            priority,
            seq: std::cmp::Reverse(self.seq),
            file,
            blocks,
            rank,
        });
    }

    /// Carries out a move of `file`'s warm-up timeline: its queued jobs of
    /// the front rank go before every other warm-up job.
    pub fn move_warmup(&mut self, file: usize, mv: &crate::predict::timeline::Move) {
        let ours = |j: &Job| j.file == file && j.rank == Some(mv.front);
        // Mostly the warm-up is ahead of the session: nothing to move, and
        // the heap need not be rebuilt.
        if !self.queue.iter().any(ours) {
            return;
        }
        let mut jobs = std::mem::take(&mut self.queue).into_vec();
        let mut ahead: Vec<&mut Job> = jobs.iter_mut().filter(|j| ours(j)).collect();
        // Stable: the rank's jobs keep their order.
        ahead.sort_by_key(|j| j.seq.0);
        self.front -= ahead.len() as u64;
        for (i, j) in ahead.into_iter().enumerate() {
            j.seq = std::cmp::Reverse(self.front + i as u64);
        }
        self.queue = jobs.into();
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Notified each time a dispatched job finishes.
    pub fn done(&self) -> Arc<tokio::sync::Notify> {
        self.done.clone()
    }

    /// The jobs to start now, each with its slot (held until it finishes):
    /// as many as free prefetch slots allow, fewer while `demand_waiting`.
    pub fn dispatch(&mut self, demand_waiting: bool) -> Vec<(Job, OwnedSemaphorePermit)> {
        let limit = if demand_waiting {
            (self.concurrency / DEMAND_BACKOFF).max(1)
        } else {
            self.concurrency
        };
        let mut out = Vec::new();
        while !self.queue.is_empty() && self.concurrency - self.slots.available_permits() < limit {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let Some(job) = self.queue.pop() else { break };
            out.push((job, permit));
        }
        out
    }

    /// Drops the least valuable jobs beyond [`MAX_QUEUED_JOBS`] and
    /// returns them.
    pub fn trim(&mut self) -> Vec<Job> {
        if self.queue.len() <= MAX_QUEUED_JOBS {
            return Vec::new();
        }
        let mut v = std::mem::take(&mut self.queue).into_sorted_vec();
        let drop_n = v.len() - MAX_QUEUED_JOBS;
        let dropped = v.drain(..drop_n).collect();
        self.queue = v.into_iter().collect();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_then_age_and_slots_bound_dispatch() {
        let mut s = Scheduler::new(8);
        s.push(Priority::Hint, 0, vec![1]);
        s.push(Priority::Warmup, 0, vec![2]);
        s.push(Priority::Readahead, 0, vec![3]);
        s.push(Priority::Warmup, 0, vec![4]);
        // A demand read waits: 8 / 4 = 2 slots.
        let first = s.dispatch(true);
        let blocks: Vec<u64> = first.iter().map(|(j, _)| j.blocks[0]).collect();
        // The decode gate's order agrees: warm-up before hints, older first.
        let orders: Vec<u64> = first.iter().map(|(j, _)| j.order()).collect();
        assert!(orders[0] < orders[1], "{orders:?}");
        assert_eq!(blocks, vec![2, 4], "warm-up first, older first");
        assert!(s.dispatch(true).is_empty(), "both back-off slots taken");
        let rest = s.dispatch(false);
        let blocks: Vec<u64> = rest.iter().map(|(j, _)| j.blocks[0]).collect();
        assert_eq!(blocks, vec![3, 1]);
        let later: Vec<u64> = rest.iter().map(|(j, _)| j.order()).collect();
        assert!(
            orders[1] < later[0] && later[0] < later[1],
            "{orders:?} {later:?}"
        );
        drop(first);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_timeline_move_fronts_the_cursors_entry() {
        use crate::predict::timeline::Move;
        let mut s = Scheduler::new(64);
        s.push(Priority::Hint, 0, vec![100]);
        for rank in 0..6u32 {
            for k in 0..2 {
                s.push_warmup(0, rank, vec![rank as u64 * 10 + k]);
            }
        }
        // Another snapshot's warm-up is left where it was.
        s.push_warmup(1, 5, vec![999]);
        s.move_warmup(0, &Move { front: 4 });
        let got: Vec<u64> = s.dispatch(false).iter().map(|(j, _)| j.blocks[0]).collect();
        assert_eq!(
            got,
            vec![40, 41, 0, 1, 10, 11, 20, 21, 30, 31, 50, 51, 999, 100],
            "the cursor's entry first; the rest in their order"
        );
        // A later move goes before an earlier one.
        for rank in 0..3u32 {
            s.push_warmup(0, rank, vec![rank as u64]);
        }
        s.move_warmup(0, &Move { front: 2 });
        s.move_warmup(0, &Move { front: 1 });
        let got: Vec<u64> = s.dispatch(false).iter().map(|(j, _)| j.blocks[0]).collect();
        assert_eq!(got, vec![1, 2, 0]);
    }

    #[test]
    fn trim_drops_the_least_valuable() {
        let mut s = Scheduler::new(1);
        s.push(Priority::Hint, 0, vec![1, 2]);
        for _ in 0..MAX_QUEUED_JOBS {
            s.push(Priority::Warmup, 0, vec![0]);
        }
        let dropped = s.trim();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].blocks, vec![1, 2]);
        assert_eq!(s.len(), MAX_QUEUED_JOBS);
        assert!(s.queue.iter().all(|j| j.priority == Priority::Warmup));
    }
}
