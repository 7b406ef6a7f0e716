//! The scheduler: prefetch jobs wait in a priority queue (fetch unit >
//! warm-up > read-ahead > hints and successors > hydration; older first
//! within a priority) and
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

/// Blocks of one mounted file to prefetch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Job {
    pub priority: Priority,
    /// Older first within a priority.
    seq: std::cmp::Reverse<u64>,
    pub file: usize,
    pub blocks: Vec<u64>,
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
        let rank = Priority::Unit as u64 - self.priority as u64;
        (rank << 56) | (self.seq.0 & ((1 << 56) - 1))
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
            seq: 0,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            done: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn push(&mut self, priority: Priority, file: usize, blocks: Vec<u64>) {
        self.seq += 1;
        self.queue.push(Job {
            priority,
            seq: std::cmp::Reverse(self.seq),
            file,
            blocks,
        });
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
