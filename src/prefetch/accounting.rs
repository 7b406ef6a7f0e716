//! Accounting: every prefetched block is remembered until a demand read
//! uses it or it leaves the cache unread (wasted), and the control loop's
//! [`Signals`] are sampled from those outcomes and the mount's counters.
//!
//! Blocks are tracked by content key, at most [`MAX_TRACKED`] of them (a
//! prefetch past that is fetched but not accounted: the bound keeps memory
//! fixed however long a mount runs).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::controller::{self, Signals};
use crate::cache::{BlockCache, BlockKey};
use crate::fetch::Fetcher;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Prefetched-but-unread blocks remembered for accounting at most.
pub(super) const MAX_TRACKED: usize = 1 << 20;
/// Ticks over which prefetch accuracy is judged (20 × 0.5 s = 10 s): long
/// enough that a burst of prefetches has been read or not, short enough to
/// follow a change of workload.
const ACCURACY_TICKS: usize = 20;

/// A read-ahead block not read within this long of its prefetch counts as
/// unused for read-ahead's own precision: a sequential reader consumes its
/// window within a few round trips, so by 5 s it has passed it by.
pub(super) const READAHEAD_HORIZON: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Accounting {
    /// One lock for both: every demand read looks in both.
    tracked: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    /// Prefetched, not yet read: key → bytes.
    unread: HashMap<BlockKey, u64>,
    /// Read-ahead blocks not yet judged: key → when prefetched.
    readahead: HashMap<BlockKey, Instant>,
}

impl Accounting {
    /// A block was prefetched into the cache.
    pub fn prefetched(&self, key: BlockKey, bytes: u64) {
        if let Ok(mut t) = self.tracked.lock() {
            if t.unread.len() < MAX_TRACKED {
                t.unread.insert(key, bytes);
            }
        }
    }

    /// A block prefetched by read-ahead, to judge read-ahead by.
    pub fn prefetched_readahead(&self, key: BlockKey) {
        if let Ok(mut t) = self.tracked.lock() {
            if t.readahead.len() < MAX_TRACKED {
                t.readahead.insert(key, Instant::now());
            }
        }
    }

    /// Demand reads of `blocks` of `snap`: the prefetched ones are used.
    pub fn mark_used(&self, snap: &Snapshot, blocks: std::ops::Range<u64>, m: &Metrics) {
        let Ok(mut t) = self.tracked.lock() else {
            return;
        };
        let Tracked {
            unread: u,
            readahead: ra,
        } = &mut *t;
        if u.is_empty() && ra.is_empty() {
            return;
        }
        for b in blocks {
            if let Some(Some(block)) = snap.locate_loaded(b) {
                if let Some(bytes) = u.remove(&block.checksum) {
                    Metrics::inc(&m.prefetch_used);
                    Metrics::add(&m.prefetch_used_bytes, bytes);
                }
                if ra.remove(&block.checksum).is_some() {
                    Metrics::inc(&m.readahead_used);
                }
            }
        }
    }

    /// Read-ahead blocks past [`READAHEAD_HORIZON`] unread: unused.
    pub fn judge_readahead(&self, m: &Metrics) {
        let Ok(mut tracked) = self.tracked.lock() else {
            return;
        };
        tracked.readahead.retain(|_, t| {
            let pending = t.elapsed() < READAHEAD_HORIZON;
            if !pending {
                Metrics::inc(&m.readahead_unused);
            }
            pending
        });
    }

    /// Prefetched blocks that left the cache unread: wasted.
    pub fn account_wasted(&self, cache: &BlockCache, m: &Metrics) {
        let Ok(mut t) = self.tracked.lock() else {
            return;
        };
        let u = &mut t.unread;
        u.retain(|k, bytes| {
            let kept = cache.contains(k);
            if !kept {
                Metrics::inc(&m.prefetch_wasted);
                Metrics::add(&m.prefetch_wasted_bytes, *bytes);
            }
            kept
        });
    }

    pub fn unread_bytes(&self) -> u64 {
        self.tracked
            .lock()
            .map(|t| t.unread.values().sum())
            .unwrap_or(0)
    }
}

/// Turns the mount's cumulative counters into one [`Signals`] per tick.
#[derive(Default)]
pub(super) struct Sampler {
    /// (demand hits, misses) at the last tick.
    lookups: (u64, u64),
    /// (prefetches completed, used) at the last tick.
    prefetch: (u64, u64),
    /// (completed, used) per tick, the last [`ACCURACY_TICKS`].
    accuracy: VecDeque<(u64, u64)>,
    /// (demand GETs that took a slot, their total wait) at the last tick.
    slot_wait: (u64, Duration),
}

impl Sampler {
    pub fn sample(&mut self, fetcher: &Fetcher, unread_bytes: u64) -> Signals {
        let m = fetcher.metrics();
        let hits = m.memory_hits.load(Relaxed) + m.disk_hits.load(Relaxed);
        let misses = m.misses.load(Relaxed);
        let (dh, dm) = (hits - self.lookups.0, misses - self.lookups.1);
        self.lookups = (hits, misses);
        let (done, used) = (
            m.prefetch_completed.load(Relaxed),
            m.prefetch_used.load(Relaxed),
        );
        self.accuracy
            .push_back((done - self.prefetch.0, used.saturating_sub(self.prefetch.1)));
        self.prefetch = (done, used);
        if self.accuracy.len() > ACCURACY_TICKS {
            self.accuracy.pop_front();
        }
        let (wd, wu) = self
            .accuracy
            .iter()
            .fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
        let (waits, waited) = fetcher.demand_slot_wait();
        let (dn, dt) = (waits - self.slot_wait.0, waited - self.slot_wait.1);
        self.slot_wait = (waits, waited);
        Signals {
            hit_rate: (dh + dm > 0).then(|| dh as f64 / (dh + dm) as f64),
            accuracy: if wd == 0 { 1.0 } else { wu as f64 / wd as f64 },
            accuracy_samples: wd,
            slot_occupancy: fetcher.slot_occupancy(),
            demand_wait: if dn == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos((dt.as_nanos() / dn as u128) as u64)
            },
            load_per_core: controller::load_per_core(),
            pressure: unread_bytes as f64 / fetcher.cache().capacity().max(1) as f64,
        }
    }
}
