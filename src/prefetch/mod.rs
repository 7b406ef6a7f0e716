//! The prefetch daemon of a mount: fetch what will be read next, before it
//! is asked for, without ever slowing down what is asked for now.
//!
//! Inputs: every demand read of a mounted image (sent by the FUSE thread as
//! a cheap, non-blocking event), the index's hints, successors and warm-up
//! list, and the control loop's threshold. Decisions, per demand read of a
//! group g by a stream s:
//! - first touch of g in an episode (the snapshot's current window W):
//!   prefetch the rest of g if its hint, discounted by what is already
//!   cached ([`crate::predict::remaining_precision`]), reaches the
//!   threshold; the same for each successor of g;
//! - a sequential stream: read ahead its window ([`readahead`]), bounded by
//!   the snapshot's recent class (all of `max_readahead` for sequential
//!   work, a quarter for mixed, none for random);
//! - at mount: the warm-up list, in order.
//!
//! Scheduling: jobs wait in a priority queue (warm-up > read-ahead > hints
//! and successors), at most `concurrency` run at once, and they fetch
//! through the same [`Fetcher`] as demand reads, so a block is never
//! fetched twice at once and a demand read for a block being prefetched
//! joins that fetch. Demand reads keep the rest of the fetcher's slots:
//! prefetch can never occupy more than `concurrency` of them, and while a
//! demand read waits on the store it backs off to a quarter of those. A job
//! re-checks the cache when it runs, so prefetches that became useless
//! (the block was read meanwhile) are dropped, and the queue is bounded.
//!
//! Accounting: every prefetched block is remembered until it is read (used)
//! or leaves the cache unread (wasted); both feed the control loop.

pub mod controller;
pub mod readahead;

use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::cache::BlockKey;
use crate::fetch::{Fetcher, Want};
use crate::metrics::stats::{PrefetchSnapshotStats, PrefetchStats};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::trace::classify::{Class, ClassWindows, Classifier};
use controller::{Controller, RealClock, Signals, ThresholdConfig};
use readahead::Readahead;

/// Demand reads waiting for the daemon at most; beyond, they are dropped
/// (prefetch is best effort; the FUSE thread never waits).
const EVENT_QUEUE: usize = 4096;
/// While demand reads wait on the store, prefetch keeps 1/this of its slots.
const DEMAND_BACKOFF: usize = 4;
/// How often a busy daemon looks at new demand reads: small against a
/// store's latency (tens of ms), large against a read (µs).
const POLL: Duration = Duration::from_millis(2);
/// Queued prefetch jobs at most; beyond, the lowest priority are dropped.
const MAX_QUEUED_JOBS: usize = 10_000;
/// Prefetched-but-unread blocks remembered for accounting at most.
const MAX_TRACKED: usize = 1 << 20;
/// The classifier looks at this many recent reads per snapshot.
const CLASSIFY_EVERY: u64 = 256;

/// `prefetch:` in snapshots.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefetchConfig {
    pub enabled: bool,
    pub threshold: ThresholdConfig,
    /// Hint window per workload class (the index's nearest one is used).
    pub windows: ClassWindows,
    /// Largest read-ahead window per stream: twice the bandwidth-delay
    /// product of the store (20 ms × 1.6 GB/s ≈ 32 MiB), because a stream
    /// asks for more only once half its window is consumed.
    pub max_readahead: ByteSize,
    /// Prefetch fetches in flight at most.
    pub concurrency: usize,
    /// Fetch slots only demand reads may take: the fetcher has
    /// `concurrency + demand_slots`, and prefetch never holds more than
    /// `concurrency` of them, so a demand read finds a free slot even in a
    /// prefetch storm.
    pub demand_slots: usize,
}

impl PrefetchConfig {
    /// GETs in flight at most, prefetch and demand together.
    pub fn fetch_slots(&self) -> usize {
        self.concurrency.saturating_add(self.demand_slots).max(1)
    }
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            enabled: true,
            threshold: ThresholdConfig::default(),
            windows: ClassWindows::default(),
            max_readahead: ByteSize::mib(64),
            // A quarter of the fetcher's 64 slots: demand keeps 48.
            concurrency: 16,
            demand_slots: crate::fetch::DEFAULT_FETCH_SLOTS - 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Hint = 1,
    Readahead = 2,
    Warmup = 3,
}

#[derive(Debug, PartialEq, Eq)]
struct Job {
    priority: Priority,
    /// Older first within a priority.
    seq: std::cmp::Reverse<u64>,
    file: usize,
    blocks: Vec<u64>,
}

impl Ord for Job {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(o.priority, o.seq))
    }
}
impl PartialOrd for Job {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Per mounted snapshot.
struct FileState {
    snapshot: Arc<Snapshot>,
    readahead: Readahead,
    classifier: Classifier,
    reads: u64,
    /// None until [`CLASSIFY_EVERY`] reads were seen.
    class: Option<Class>,
    /// Index into the snapshot's windows.
    window: usize,
    /// group → start of its current episode
    episodes: HashMap<u64, Instant>,
    /// Blocks some job was queued for (warm-up, read-ahead, hints): they
    /// count as covered when a hint's remaining precision is judged, as in
    /// `hints --evaluate`. Without this a group touched while the warm-up
    /// is still fetching looked uncovered and was fetched whole.
    planned: std::collections::HashSet<u64>,
}

impl FileState {
    /// Remembers `blocks` as queued for prefetch (forgetting everything
    /// past [`MAX_TRACKED`]: then hints are judged on the cache alone).
    fn plan(&mut self, blocks: &[u64]) {
        if self.planned.len() + blocks.len() > MAX_TRACKED {
            self.planned.clear();
        }
        self.planned.extend(blocks.iter().copied());
    }
}

pub struct Prefetcher {
    fetcher: Arc<Fetcher>,
    cfg: PrefetchConfig,
    /// Demand reads not yet seen by the daemon (filled by FUSE threads).
    pending: Mutex<Vec<(usize, u64, u32)>>,
    /// The daemon found nothing to do and waits to be woken.
    idle: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    threshold_milli: AtomicU64,
    queue_depth: AtomicU64,
    /// Prefetched, not yet read: key → bytes.
    unread: Mutex<HashMap<BlockKey, u64>>,
    status: Mutex<Vec<PrefetchSnapshotStats>>,
}

impl Prefetcher {
    /// Starts the daemon for `snapshots` (in mount order) on the current runtime.
    pub fn start(
        snapshots: Vec<Arc<Snapshot>>,
        fetcher: Arc<Fetcher>,
        cfg: PrefetchConfig,
    ) -> Arc<Prefetcher> {
        let status = snapshots
            .iter()
            .map(|s| PrefetchSnapshotStats {
                class: None,
                window_ms: s.index().windows_ms.first().copied().unwrap_or(0),
                readahead_window: 0,
            })
            .collect();
        let p = Arc::new(Prefetcher {
            fetcher,
            threshold_milli: AtomicU64::new((cfg.threshold.initial * 1000.0) as u64),
            cfg,
            pending: Mutex::new(Vec::new()),
            idle: std::sync::atomic::AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            queue_depth: AtomicU64::new(0),
            unread: Mutex::new(HashMap::new()),
            status: Mutex::new(status),
        });
        tokio::spawn(p.clone().run(snapshots));
        p
    }

    /// Called by the FUSE thread for every demand read; never blocks for
    /// long and wakes the daemon only when it was idle: under load the daemon
    /// polls every [`POLL`], so a read costs a short uncontended lock, not a
    /// task wake-up (which at 100k reads/s cost ~17% of the IOPS).
    pub fn on_read(&self, file: usize, offset: u64, len: u32) {
        if let Ok(mut p) = self.pending.lock() {
            if p.len() < EVENT_QUEUE {
                p.push((file, offset, len));
            }
        }
        if self.idle.swap(false, Relaxed) {
            self.wake.notify_one();
        }
    }

    pub fn threshold(&self) -> f32 {
        self.threshold_milli.load(Relaxed) as f32 / 1000.0
    }

    /// The daemon's state as the mount reports it.
    pub fn status(&self) -> PrefetchStats {
        let snapshots = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let unread: u64 = self.unread.lock().map(|u| u.values().sum()).unwrap_or(0);
        PrefetchStats {
            enabled: true,
            threshold: self.threshold(),
            queue_depth: self.queue_depth.load(Relaxed),
            unread_prefetched_bytes: unread,
            snapshots,
        }
    }

    async fn run(self: Arc<Self>, snapshots: Vec<Arc<Snapshot>>) {
        let max_ra = self.cfg.max_readahead.as_u64();
        let mut files: Vec<FileState> = snapshots
            .into_iter()
            .map(|snapshot| FileState {
                snapshot,
                readahead: Readahead::new(max_ra),
                classifier: Classifier::default(),
                reads: 0,
                class: None,
                window: 0,
                episodes: HashMap::new(),
                planned: Default::default(),
            })
            .collect();
        let mut queue: BinaryHeap<Job> = BinaryHeap::new();
        let mut seq = 0u64;
        // Warm-up lists first, in order.
        for (i, f) in files.iter_mut().enumerate() {
            let snap = f.snapshot.clone();
            let gs = snap.header().group_size;
            for w in &snap.index().warmup {
                seq += 1;
                let blocks: Vec<u64> = w.blocks(gs).collect();
                f.plan(&blocks);
                queue.push(Job {
                    priority: Priority::Warmup,
                    seq: std::cmp::Reverse(seq),
                    file: i,
                    blocks,
                });
            }
        }
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        // A finished job wakes the dispatcher: its slot is free again.
        let job_done = Arc::new(tokio::sync::Notify::new());
        let mut controller = Controller::new(self.cfg.threshold, RealClock::default());
        let mut tick = tokio::time::interval(controller::TICK);
        let m = self.fetcher.metrics().clone();
        let mut last = (0u64, 0u64, 0u64);
        let mut accuracy_window: std::collections::VecDeque<(u64, u64)> = Default::default();
        let mut last_pf = (0u64, 0u64);
        let mut batch: Vec<(usize, u64, u32)> = Vec::new();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Dispatch while there are free prefetch slots. While a demand
            // read waits on the store, prefetch backs off to a quarter of its
            // slots: it yields to demand without starving (a warm-up must
            // still finish beside a reader that keeps missing).
            let concurrency = self.cfg.concurrency.max(1);
            let limit = if self.fetcher.demand_waiting() > 0 {
                (concurrency / DEMAND_BACKOFF).max(1)
            } else {
                concurrency
            };
            while let Some(permit) = (!queue.is_empty()
                && concurrency - slots.available_permits() < limit)
                .then(|| slots.clone().try_acquire_owned().ok())
                .flatten()
            {
                let Some(job) = queue.pop() else { break };
                let snap = files[job.file].snapshot.clone();
                let me = self.clone();
                let done = job_done.clone();
                tokio::spawn(async move {
                    me.run_job(&snap, job).await;
                    drop(permit);
                    done.notify_one();
                });
            }
            self.queue_depth.store(queue.len() as u64, Relaxed);
            tokio::select! {
                _ = job_done.notified() => {}
                // Demand reads, polled under load, woken for when idle.
                _ = poll.tick() => {
                    std::mem::swap(&mut batch, &mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
                    if batch.is_empty() {
                        // Nothing came in a whole poll: sleep until woken.
                        self.idle.store(true, Relaxed);
                        if self.pending.lock().map(|p| p.is_empty()).unwrap_or(true) {
                            tokio::select! {
                                _ = self.wake.notified() => {}
                                _ = job_done.notified() => {}
                                _ = tick.tick() => {}
                            }
                        }
                        self.idle.store(false, Relaxed);
                        continue;
                    }
                    let threshold = self.threshold();
                    for (file, offset, len) in batch.drain(..) {
                        let Some(f) = files.get_mut(file) else { continue };
                        for job in self.decide(f, file, offset, len, threshold).await {
                            seq += 1;
                            queue.push(Job { seq: std::cmp::Reverse(seq), ..job });
                        }
                    }
                    // Published per batch, not per tick: a tick can fall in an
                    // idle wait and a short burst of reads would never show.
                    self.publish_status(&files);
                    if queue.len() > MAX_QUEUED_JOBS {
                        // Keep the most valuable; the rest is dropped.
                        let mut v = queue.into_sorted_vec();
                        let drop_n = v.len() - MAX_QUEUED_JOBS;
                        Metrics::add(&m.prefetch_dropped, v.drain(..drop_n).map(|j| j.blocks.len() as u64).sum());
                        queue = v.into_iter().collect();
                    }
                }
                _ = tick.tick() => {
                    self.account_wasted();
                    let hits = m.memory_hits.load(Relaxed) + m.disk_hits.load(Relaxed);
                    let misses = m.misses.load(Relaxed);
                    let (dh, dm) = (hits - last.0, misses - last.1);
                    last = (hits, misses, 0);
                    let (done, used) = (m.prefetch_completed.load(Relaxed), m.prefetch_used.load(Relaxed));
                    accuracy_window.push_back((done - last_pf.0, used - last_pf.1));
                    last_pf = (done, used);
                    if accuracy_window.len() > 20 {
                        accuracy_window.pop_front();
                    }
                    let (wd, wu) = accuracy_window.iter().fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
                    let unread: u64 = self.unread.lock().map(|u| u.values().sum()).unwrap_or(0);
                    let s = Signals {
                        hit_rate: (dh + dm > 0).then(|| dh as f64 / (dh + dm) as f64),
                        accuracy: if wd == 0 { 1.0 } else { wu as f64 / wd as f64 },
                        accuracy_samples: wd,
                        slot_occupancy: self.fetcher.slot_occupancy(),
                        demand_wait: Duration::ZERO,
                        load_per_core: controller::load_per_core(),
                        pressure: unread as f64 / self.fetcher.cache().capacity().max(1) as f64,
                    };
                    let t = controller.tick(&s);
                    self.threshold_milli.store((t * 1000.0) as u64, Relaxed);
                }
            }
        }
    }

    /// Copies what the daemon knows per snapshot to what `status` reports.
    fn publish_status(&self, files: &[FileState]) {
        if let Ok(mut st) = self.status.lock() {
            for (x, f) in st.iter_mut().zip(files) {
                x.class = f.class;
                x.window_ms = f
                    .snapshot
                    .index()
                    .windows_ms
                    .get(f.window)
                    .copied()
                    .unwrap_or(0);
                x.readahead_window = f.readahead.max_active_window();
            }
        }
    }

    /// What one demand read asks the daemon to do.
    async fn decide(
        &self,
        f: &mut FileState,
        file: usize,
        offset: u64,
        len: u32,
        threshold: f32,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        // Borrowed through our own handle on the snapshot: nothing on this
        // per-read path is cloned or allocated unless there is work to do.
        let snap = f.snapshot.clone();
        let h = snap.header();
        let bs = h.block_size as u64;
        let end = (offset + len as u64).min(h.volume_size);
        if offset >= end {
            return jobs;
        }
        // Accounting: prefetched blocks now read.
        self.mark_used(&f.snapshot, offset / bs..end.div_ceil(bs));
        // Adaptive window from the recent workload.
        f.classifier.observe(&crate::trace::Record {
            t_ns: 0,
            op: crate::trace::Op::Read,
            offset,
            len,
            stream: 0,
        });
        f.reads += 1;
        if f.reads % CLASSIFY_EVERY == 0 {
            let c = f.classifier.classification(
                &f.snapshot.index().windows_ms,
                &self.cfg.windows,
                self.cfg.max_readahead.as_u64(),
            );
            f.class = Some(c.class);
            f.readahead.set_max_window(c.readahead_bytes);
            f.window = f
                .snapshot
                .index()
                .windows_ms
                .iter()
                .position(|&w| w == c.window_ms)
                .unwrap_or(0);
            f.classifier = Classifier::default();
        }
        // Sequential read-ahead.
        if let Some(r) = f.readahead.on_read(offset, len as u64) {
            let last = (r.end.min(h.volume_size)).div_ceil(bs);
            let blocks: Vec<u64> = (r.start / bs..last).collect();
            if !blocks.is_empty() {
                f.plan(&blocks);
                jobs.push(Job {
                    priority: Priority::Readahead,
                    seq: std::cmp::Reverse(0),
                    file,
                    blocks,
                });
            }
        }
        // Hints and successors on the first touch of a group in an episode.
        let window = Duration::from_millis(
            f.snapshot
                .index()
                .windows_ms
                .get(f.window)
                .copied()
                .unwrap_or(0) as u64,
        );
        let gs = h.group_size as u64;
        let now = Instant::now();
        for g in (offset / bs) / gs..=((end - 1) / bs) / gs {
            if f.episodes
                .get(&g)
                .is_some_and(|t0| now.duration_since(*t0) <= window)
            {
                continue;
            }
            f.episodes.insert(g, now);
            let Some(entry) = snap.index().group(g) else {
                continue;
            };
            let w = f.window;
            let hint = entry.hints.get(w).copied().unwrap_or(0.0);
            let strong_successor = entry
                .successors
                .get(w)
                .is_some_and(|v| v.iter().any(|s| s.probability >= threshold));
            if hint < threshold && !strong_successor {
                continue;
            }
            let mut candidates = vec![(g, hint)];
            candidates.extend(
                entry
                    .successors
                    .get(w)
                    .into_iter()
                    .flatten()
                    .map(|s| (s.group, s.probability)),
            );
            for (cg, strength) in candidates {
                if strength < threshold {
                    continue;
                }
                let Some(ce) = snap.index().group(cg) else {
                    continue;
                };
                let Ok(blocks) = snap.group_blocks(ce).await else {
                    continue;
                };
                let covered = blocks
                    .iter()
                    .filter(|b| {
                        f.planned.contains(&b.block_id)
                            || self.fetcher.cache().contains(&b.checksum)
                    })
                    .count();
                if crate::predict::remaining_precision(strength, blocks.len(), covered) >= threshold
                {
                    let ids: Vec<u64> = blocks.iter().map(|b| b.block_id).collect();
                    f.plan(&ids);
                    jobs.push(Job {
                        priority: Priority::Hint,
                        seq: std::cmp::Reverse(0),
                        file,
                        blocks: ids,
                    });
                }
            }
        }
        if f.episodes.len() > 100_000 {
            f.episodes.retain(|_, t0| now.duration_since(*t0) <= window);
        }
        let n: u64 = jobs.iter().map(|j| j.blocks.len() as u64).sum();
        Metrics::add(&self.fetcher.metrics().prefetch_issued, n);
        jobs
    }

    /// Fetches a job's blocks that are stored and not cached yet.
    async fn run_job(&self, snap: &Snapshot, job: Job) {
        let m = self.fetcher.metrics();
        let by_source = match job.priority {
            Priority::Warmup => &m.prefetch_warmup_blocks,
            Priority::Readahead => &m.prefetch_readahead_blocks,
            Priority::Hint => &m.prefetch_hint_blocks,
        };
        let mut wants = Vec::new();
        for b in job.blocks {
            match snap.locate(b).await {
                Ok(Some(block)) if !self.fetcher.cache().contains(&block.checksum) => {
                    let len = snap.block_len(b);
                    wants.push(Want {
                        block,
                        len,
                        range: 0..len,
                    });
                }
                _ => Metrics::inc(&m.prefetch_dropped),
            }
        }
        if wants.is_empty() {
            return;
        }
        let results = self.fetcher.prefetch_blocks(&wants).await;
        let mut unread = self.unread.lock().ok();
        for (w, r) in wants.iter().zip(results) {
            if r.is_ok() {
                Metrics::inc(&m.prefetch_completed);
                Metrics::add(&m.prefetch_bytes, w.len as u64);
                Metrics::inc(by_source);
                if let Some(u) = unread.as_mut() {
                    if u.len() < MAX_TRACKED {
                        u.insert(w.block.checksum, w.len as u64);
                    }
                }
            }
        }
    }

    /// Demand reads of prefetched blocks: used.
    fn mark_used(&self, snap: &Snapshot, blocks: std::ops::Range<u64>) {
        let m = self.fetcher.metrics();
        let Ok(mut u) = self.unread.lock() else {
            return;
        };
        if u.is_empty() {
            return;
        }
        for b in blocks {
            if let Some(Some(block)) = snap.locate_loaded(b) {
                if let Some(bytes) = u.remove(&block.checksum) {
                    Metrics::inc(&m.prefetch_used);
                    Metrics::add(&m.prefetch_used_bytes, bytes);
                }
            }
        }
    }

    /// Prefetched blocks that left the cache unread: wasted.
    fn account_wasted(&self) {
        let m = self.fetcher.metrics();
        let cache = self.fetcher.cache();
        let Ok(mut u) = self.unread.lock() else {
            return;
        };
        u.retain(|k, bytes| {
            let kept = cache.contains(k);
            if !kept {
                Metrics::inc(&m.prefetch_wasted);
                Metrics::add(&m.prefetch_wasted_bytes, *bytes);
            }
            kept
        });
    }
}
