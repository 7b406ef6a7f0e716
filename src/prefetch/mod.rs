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
//! - a miss where the index knows nothing: the neighbours of the missed
//!   block in its data object that the measured link carries nearly free
//!   ([`unit`], the link-sized fetch unit);
//! - at mount: the warm-up list, in order, released a stretch ahead of
//!   where the session's reads are in it ([`crate::predict::timeline`]:
//!   a session doing part of the trained work does not wait behind the
//!   rest); for a
//!   snapshot without one (no traces learned yet) whose `create` found
//!   ext4, the filesystem's metadata from the index's prior instead
//!   (remote stores only); and, from a remote store, the manifest pages of
//!   small snapshots (at most `manifest_pages` in all, [`EAGER_PAGES`] by
//!   default), so a first miss outside the warm-up waits for one round
//!   trip (the data), not two (page, then data).
//!
//! Scheduling: jobs wait in a priority queue (fetch unit > warm-up >
//! read-ahead > hints and successors), at most `concurrency` run at once, and they fetch
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
//!
//! Layout: [`intake`] carries demand reads from FUSE threads to the daemon;
//! `decide` turns one read into jobs, with [`readahead`] (per-stream
//! windows), `hints` (hints and successors per episode) and `unit`;
//! [`crate::predict::timeline`] paces the warm-up;
//! `scheduler` holds the priority queue and the prefetch slots;
//! `accounting` tracks used and wasted prefetches and samples the
//! [`controller`]'s signals (and read-ahead's own precision, which
//! [`readahead::Backoff`] turns into smaller windows); this file runs the
//! loop that ties them. Just over 500 lines, on purpose: the loop, the job
//! runner and the status they publish share the daemon's state.

mod accounting;
pub mod controller;
mod decide;
mod hints;
pub mod hydrate;
pub mod intake;
pub mod readahead;
mod scheduler;
mod unit;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use serde::Deserialize;

use bytes::Bytes;

use crate::cache::BlockKey;
use crate::fetch::{Fetcher, Want};
use crate::metrics::stats::{PrefetchSnapshotStats, PrefetchStats};
use crate::metrics::Metrics;
use crate::predict::timeline::Timeline;
use crate::predict::warmup::MountStart;
use crate::snapshot::Snapshot;
use crate::trace::classify::ClassWindows;
use accounting::{Accounting, Sampler};
use controller::{Controller, RealClock, ThresholdConfig};
use decide::{Context, FileState};
use hydrate::{HydrateMode, Hydrator};
use intake::{Intake, ReadEvent};
pub use scheduler::Priority;
use scheduler::{Job, Scheduler};

/// Blocks per job when the prior's metadata is queued at mount: jobs run
/// in parallel on the prefetch slots, so the metadata of a large
/// filesystem arrives over many GETs at once, not one after another.
const PRIOR_JOB_BLOCKS: usize = 16;

/// Manifest pages fetched at mount by default, in all, from a remote store
/// (`prefetch.manifest_pages`): ~57 KiB
/// each, so at most ~1 MiB beside the warm-up, and 16 pages locate 8 GiB
/// of volume at 512 KiB blocks: every page of a typical root or
/// application image. Larger snapshots fetch their pages on first use
/// (a page GET in front of a first miss there).
pub const EAGER_PAGES: u32 = 16;

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
    /// Background hydration of the whole snapshot ([`hydrate`]): `auto`
    /// (from a remote store, when the mount's snapshots fit in half the
    /// disk cache), `off`,
    /// `always` (up to half the disk cache).
    pub hydrate: HydrateMode,
    /// Stored bytes per second hydration asks for at most; 0: as fast as
    /// the link goes (it yields to every other fetch anyway).
    pub hydrate_rate: ByteSize,
    /// How long after the mount hydration starts (a session's start-up
    /// has the machine to itself meanwhile); a walk of a directory tree
    /// starts its subtree's hydration at once.
    #[serde(deserialize_with = "crate::units::duration")]
    pub hydrate_delay: Duration,
    /// Manifest pages fetched at mount from a remote store, all snapshots
    /// together; a snapshot with more pages than are left fetches each on
    /// first use (0: all on first use).
    pub manifest_pages: u32,
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
            hydrate: HydrateMode::Auto,
            hydrate_rate: ByteSize(0),
            hydrate_delay: hydrate::START_AFTER,
            manifest_pages: EAGER_PAGES,
        }
    }
}

pub struct Prefetcher {
    fetcher: Arc<Fetcher>,
    cfg: PrefetchConfig,
    intake: Intake,
    threshold_milli: AtomicU64,
    queue_depth: AtomicU64,
    jobs_running: Arc<AtomicU64>,
    reads_handled: AtomicU64,
    accounting: Accounting,
    status: Mutex<Vec<PrefetchSnapshotStats>>,
    /// Set by [`Prefetcher::shutdown`]: the loop ends, nothing new starts.
    stopped: std::sync::atomic::AtomicBool,
    stop: tokio::sync::Notify,
    /// The loop has ended (after a shutdown).
    ended: std::sync::atomic::AtomicBool,
    /// Read-ahead's back-off (windows divided by 2^this).
    readahead_backoff: AtomicU64,
}

impl Prefetcher {
    /// Starts the daemon for `snapshots` (in mount order) on the current runtime.
    pub fn start(
        snapshots: Vec<Arc<Snapshot>>,
        fetcher: Arc<Fetcher>,
        cfg: PrefetchConfig,
    ) -> Arc<Prefetcher> {
        let local = fetcher.link_estimate().local;
        let hydrator = Hydrator::new(
            &snapshots,
            cfg.hydrate,
            cfg.hydrate_rate.as_u64(),
            cfg.hydrate_delay,
            fetcher.cache(),
            local,
        );
        let (files, sched, inline) = Self::first_jobs(&snapshots, &cfg, local);
        if !local {
            Self::load_small_manifests(&snapshots, cfg.manifest_pages);
        }
        let status = snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| PrefetchSnapshotStats {
                class: None,
                window_ms: s.index().windows_ms.first().copied().unwrap_or(0),
                readahead_window: 0,
                hydration: hydrator.stats(i),
            })
            .collect();
        let p = Arc::new(Prefetcher {
            fetcher,
            threshold_milli: AtomicU64::new((cfg.threshold.initial * 1000.0) as u64),
            cfg,
            intake: Intake::default(),
            queue_depth: AtomicU64::new(sched.len() as u64),
            jobs_running: Arc::default(),
            reads_handled: AtomicU64::new(0),
            accounting: Accounting::default(),
            status: Mutex::new(status),
            stopped: false.into(),
            stop: tokio::sync::Notify::new(),
            ended: false.into(),
            readahead_backoff: AtomicU64::new(0),
        });
        tokio::spawn(p.clone().admit_inline(snapshots.clone(), inline));
        tokio::spawn(p.clone().run(snapshots, files, sched, hydrator));
        p
    }

    /// Decodes the inline blocks `first_jobs` left out of the warm-up
    /// (`inline[i]`: snapshot i's) into the cache: no GET, the index brought
    /// their stored bytes; counted as warm-up prefetches. A reader asking
    /// for one meanwhile joins its decode.
    async fn admit_inline(self: Arc<Self>, snapshots: Vec<Arc<Snapshot>>, inline: Vec<Vec<u64>>) {
        let mut blocks = Vec::new();
        for (s, ids) in snapshots.iter().zip(&inline) {
            for b in s
                .index()
                .inline
                .iter()
                .filter(|b| ids.contains(&b.block_id))
            {
                // Located by the index (its decoder checks each inline
                // block has an entry), so no page is needed here.
                let Some(Some(block)) = s.locate_loaded(b.block_id) else {
                    continue;
                };
                let len = s.block_len(b.block_id);
                let want = Want {
                    block,
                    len,
                    range: 0..len,
                };
                blocks.push((want, Bytes::copy_from_slice(&b.stored)));
            }
        }
        if blocks.is_empty() {
            return;
        }
        let m = self.fetcher.metrics().clone();
        let admitted: Vec<(BlockKey, u64)> = blocks
            .iter()
            .map(|(w, _)| (w.block.checksum, w.len as u64))
            .collect();
        let done = self.fetcher.admit_stored(blocks, 0).await;
        log::debug!(
            "{} of {} inline blocks admitted at mount",
            done.iter().filter(|&&d| d).count(),
            done.len()
        );
        for ((key, len), done) in admitted.into_iter().zip(done) {
            if done {
                Metrics::inc(&m.prefetch_warmup_blocks);
                Metrics::inc(&m.prefetch_completed);
                Metrics::add(&m.prefetch_bytes, len);
                self.accounting.prefetched(key, len);
            }
        }
    }

    /// Stops the daemon: no job starts after this (those running finish).
    pub fn shutdown(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.notify_one();
    }

    /// After [`Prefetcher::shutdown`]: whether the loop has ended and every
    /// job it started has finished.
    pub fn has_stopped(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.ended.load(SeqCst) && self.jobs_running.load(SeqCst) == 0
    }

    /// Called by the FUSE thread for every demand read; never blocks for
    /// long (see [`intake`]).
    pub fn on_read(&self, file: usize, offset: u64, len: u32) {
        self.intake.push(ReadEvent { file, offset, len });
    }

    pub fn threshold(&self) -> f32 {
        self.threshold_milli.load(Relaxed) as f32 / 1000.0
    }

    /// The daemon's state as the mount reports it. Loaded in this order
    /// (and stored in the reverse one, SeqCst): reads handled, reads
    /// accepted, queue, running — so `handled == accepted` with an empty
    /// queue and nothing running means the daemon really is idle.
    pub fn status(&self) -> PrefetchStats {
        use std::sync::atomic::Ordering::SeqCst;
        let reads_handled = self.reads_handled.load(SeqCst);
        let reads_accepted = self.intake.accepted();
        let queue_depth = self.queue_depth.load(SeqCst);
        let jobs_running = self.jobs_running.load(SeqCst);
        PrefetchStats {
            enabled: true,
            threshold: self.threshold(),
            queue_depth,
            jobs_running,
            reads_accepted,
            reads_handled,
            unread_prefetched_bytes: self.accounting.unread_bytes(),
            readahead_backoff: self.readahead_backoff.load(Relaxed) as u32,
            link: {
                let l = self.fetcher.link_estimate();
                crate::metrics::stats::LinkStats {
                    rtt_ms: l.rtt.as_secs_f64() * 1000.0,
                    get_bytes_per_s: l.throughput,
                    decode_bytes_per_s: l.decode_rate,
                    samples: l.samples,
                    local: l.local,
                }
            },
            snapshots: self.status.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }

    /// Fetches every manifest page of the snapshots that have few, in
    /// mount order, up to `budget` pages in all. A page that fails here is
    /// fetched again by the first read that needs it (and its error
    /// reported there).
    fn load_small_manifests(snapshots: &[Arc<Snapshot>], mut budget: u32) {
        for s in snapshots {
            let pages = s.header().page_count;
            if pages == 0 || pages > budget {
                continue;
            }
            budget -= pages;
            let s = s.clone();
            tokio::spawn(async move {
                if let Err(e) = s.load_pages().await {
                    log::debug!(
                        "{}: manifest pages not loaded at mount: {e:#}",
                        s.header().name
                    );
                }
            });
        }
    }

    /// Each snapshot's state, and the queue with the mount's first jobs:
    /// warm-up lists, in order; for a snapshot without one (no traces
    /// learned), the filesystem's metadata from the prior, from a remote
    /// store. Built before the daemon starts, so its queue depth is known
    /// from the first moment (a caller waiting for an idle daemon cannot
    /// see it idle before it began). Blocks the index carries inline get no
    /// job; they are returned per snapshot, for [`Self::admit_inline`].
    fn first_jobs(
        snapshots: &[Arc<Snapshot>],
        cfg: &PrefetchConfig,
        local: bool,
    ) -> (Vec<FileState>, Scheduler, Vec<Vec<u64>>) {
        let max_ra = cfg.max_readahead.as_u64();
        let mut files: Vec<FileState> = snapshots
            .iter()
            .map(|s| FileState::new(s.clone(), max_ra))
            .collect();
        let mut sched = Scheduler::new(cfg.concurrency);
        let mut admit = Vec::with_capacity(files.len());
        for (i, f) in files.iter_mut().enumerate() {
            let start = MountStart::of(f.snapshot.index(), !local);
            // The index's inline blocks need no job: they are admitted at once.
            let inline: HashSet<u64> = f
                .snapshot
                .index()
                .inline
                .iter()
                .map(|b| b.block_id)
                .collect();
            let mut admitted: Vec<u64> = start.first_blocks(usize::MAX);
            admitted.retain(|b| inline.contains(b));
            for blocks in &start.warmup {
                f.hints.plan(blocks);
            }
            let h = f.snapshot.header();
            let (gs, bs) = (h.group_size, h.block_size);
            f.timeline = Timeline::new(&start.warmup, gs, bs, |b| !inline.contains(&b));
            for (rank, blocks) in f.timeline.release() {
                sched.push_warmup(i, rank, blocks);
            }
            let rest = [start.probes]
                .into_iter()
                .chain(start.metadata.chunks(PRIOR_JOB_BLOCKS).map(<[u64]>::to_vec));
            for mut blocks in rest {
                f.hints.plan(&blocks);
                blocks.retain(|b| !inline.contains(b));
                if !blocks.is_empty() {
                    sched.push(Priority::Warmup, i, blocks);
                }
            }
            admit.push(admitted);
        }
        (files, sched, admit)
    }

    async fn run(
        self: Arc<Self>,
        snapshots: Vec<Arc<Snapshot>>,
        mut files: Vec<FileState>,
        mut sched: Scheduler,
        mut hydrator: Hydrator,
    ) {
        let job_done = sched.done();
        let mut controller = Controller::new(self.cfg.threshold, RealClock::default());
        let mut sampler = Sampler::default();
        let mut backoff = readahead::Backoff::default();
        let mut tick = tokio::time::interval(controller::TICK);
        let m = self.fetcher.metrics().clone();
        let mut batch: Vec<ReadEvent> = Vec::new();
        let mut seen_misses = m.misses.load(Relaxed);
        let mut last_miss = Instant::now()
            .checked_sub(hydrate::BUSY_FOR)
            .unwrap_or_else(Instant::now);
        let mut poll = tokio::time::interval(intake::POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            // Hydration only fills an empty queue, with fewer jobs while
            // demand reads miss.
            let demand_waiting = self.fetcher.demand_waiting() > 0;
            let misses = m.misses.load(Relaxed);
            if misses != seen_misses || demand_waiting {
                seen_misses = misses;
                last_miss = Instant::now();
            }
            let busy = last_miss.elapsed() < hydrate::BUSY_FOR;
            if sched.len() == 0 {
                while let Some(job) = hydrator.next(&snapshots, self.fetcher.cache(), busy).await {
                    sched.push(Priority::Hydrate, job.file, job.blocks);
                }
            }
            for (job, permit) in sched.dispatch(demand_waiting) {
                let snap = files[job.file].snapshot.clone();
                let me = self.clone();
                let done = job_done.clone();
                let running = self.jobs_running.clone();
                let hydrating = (job.priority == Priority::Hydrate)
                    .then(|| (hydrator.running.clone(), hydrator.progress(job.file)));
                running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let fetched = me.run_job(&snap, job).await;
                    if let Some((jobs, progress)) = hydrating {
                        if let Some(p) = progress {
                            p.job_done(fetched);
                        }
                        jobs.fetch_sub(1, Relaxed);
                    }
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(permit);
                    done.notify_one();
                });
            }
            self.queue_depth
                .store(sched.len() as u64, std::sync::atomic::Ordering::SeqCst);
            self.publish_hydration(&hydrator);
            // Hydration resumes when the rate cap allows (or, while demand
            // waits, looks again shortly): only while it has a free job slot.
            // Hydration resumes when the rate cap allows, or when the mount
            // stops being busy (more jobs then): only with a job slot free.
            let hydrate_wake = hydrator
                .wake_at()
                .filter(|_| {
                    sched.len() == 0 && hydrator.running.load(Relaxed) < hydrator.job_limit(false)
                })
                .map(|t| {
                    if busy {
                        t.max(last_miss + hydrate::BUSY_FOR)
                    } else {
                        t
                    }
                });
            let mut ticked = false;
            tokio::select! {
                _ = self.stop.notified() => {}
                _ = job_done.notified() => {}
                _ = sleep_until(hydrate_wake) => {}
                // Demand reads, polled under load, woken for when idle.
                _ = poll.tick() => {
                    self.intake.take(&mut batch);
                    if batch.is_empty() {
                        // Nothing came in a whole poll: sleep until woken.
                        if self.intake.go_idle() {
                            tokio::select! {
                                _ = self.stop.notified() => {}
                                _ = self.intake.woken() => {}
                                _ = job_done.notified() => {}
                                // The tick's work runs while idle too: the
                                // read-ahead horizon and waste are judged
                                // when nobody reads.
                                _ = tick.tick() => ticked = true,
                                _ = sleep_until(hydrate_wake) => {}
                            }
                        }
                        self.intake.busy();
                    } else {
                        self.handle_batch(&mut batch, &mut files, &mut sched, &mut hydrator, &m).await;
                    }
                }
                _ = tick.tick() => ticked = true,
            }
            if ticked {
                self.on_tick(&mut controller, &mut sampler, &mut backoff, &mut files, &m);
            }
        }
    }

    /// Reads that came in: each file's decisions, queued.
    async fn handle_batch(
        &self,
        batch: &mut Vec<ReadEvent>,
        files: &mut [FileState],
        sched: &mut Scheduler,
        hydrator: &mut Hydrator,
        m: &Metrics,
    ) {
        let cx = Context {
            threshold: self.threshold(),
            cfg: &self.cfg,
            cache: self.fetcher.cache(),
            metrics: m,
            accounting: &self.accounting,
            link: self.fetcher.link_estimate(),
        };
        let n = batch.len() as u64;
        for ev in batch.drain(..) {
            let Some(f) = files.get_mut(ev.file) else {
                continue;
            };
            if let Some(mv) = f.timeline_move(ev.offset, ev.len) {
                for (rank, blocks) in f.timeline.release() {
                    sched.push_warmup(ev.file, rank, blocks);
                }
                sched.move_warmup(ev.file, &mv);
                log::debug!("warm-up timeline: {mv:?}, {} jobs queued", sched.len());
            }
            let jobs = f.decide(ev.offset, ev.len, &cx).await;
            for (priority, blocks) in jobs {
                sched.push(priority, ev.file, blocks);
            }
            if let Some(walk) = f.take_walk() {
                let gs = f.snapshot.header().group_size as u64;
                log::debug!(
                    "a walk of a directory tree: {} blocks go to the front of hydration",
                    walk.len()
                );
                Metrics::add(&m.hydrate_walks, 1);
                hydrator.prefer(ev.file, &walk, gs);
            }
        }
        // Published per batch, not per tick: a tick can fall in an idle
        // wait and a short burst of reads would never show.
        self.publish_status(files);
        for job in sched.trim() {
            Metrics::add(&m.prefetch_dropped, job.blocks.len() as u64);
            if job.priority == Priority::Hydrate {
                hydrator.dropped(job.file);
            }
        }
        // Their jobs are in the queue (and its depth published) before the
        // reads count as handled.
        self.queue_depth
            .store(sched.len() as u64, std::sync::atomic::Ordering::SeqCst);
        self.reads_handled.fetch_add(n, Relaxed);
    }

    /// The controller's tick: waste and read-ahead judged, read-ahead's
    /// back-off and the threshold updated. Runs idle or busy.
    fn on_tick(
        &self,
        controller: &mut Controller<RealClock>,
        sampler: &mut Sampler,
        backoff: &mut readahead::Backoff,
        files: &mut [FileState],
        m: &Metrics,
    ) {
        self.accounting.account_wasted(self.fetcher.cache(), m);
        self.accounting.judge_readahead(m);
        if let Some(shift) = backoff.observe(
            m.readahead_used.load(Relaxed),
            m.readahead_unused.load(Relaxed),
        ) {
            for f in files.iter_mut() {
                f.readahead.set_backoff(shift);
            }
        }
        self.readahead_backoff
            .store(backoff.shift() as u64, Relaxed);
        let s = sampler.sample(&self.fetcher, self.accounting.unread_bytes());
        let t = controller.tick(&s);
        self.threshold_milli.store((t * 1000.0) as u64, Relaxed);
    }

    fn publish_hydration(&self, h: &Hydrator) {
        if let Ok(mut st) = self.status.lock() {
            for (i, x) in st.iter_mut().enumerate() {
                x.hydration = h.stats(i);
            }
        }
    }

    /// Copies what the daemon knows per snapshot to what `status` reports.
    fn publish_status(&self, files: &[FileState]) {
        if let Ok(mut st) = self.status.lock() {
            for (x, f) in st.iter_mut().zip(files) {
                x.class = f.class;
                x.window_ms = f.window_ms();
                x.readahead_window = f.readahead.max_active_window();
            }
        }
    }

    /// Fetches a job's blocks that are stored and not cached yet; returns
    /// the bytes (uncompressed) it brought.
    async fn run_job(&self, snap: &Snapshot, job: Job) -> u64 {
        let m = self.fetcher.metrics();
        let by_source = match job.priority {
            Priority::Warmup => &m.prefetch_warmup_blocks,
            Priority::Readahead => &m.prefetch_readahead_blocks,
            Priority::Hint => &m.prefetch_hint_blocks,
            Priority::Unit => &m.prefetch_unit_blocks,
            Priority::Hydrate => &m.hydrate_blocks,
        };
        let order = job.order();
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
            return 0;
        }
        let hydrating = job.priority == Priority::Hydrate;
        let results = if hydrating {
            self.fetcher.hydrate_blocks(&wants, order).await
        } else {
            self.fetcher.prefetch_blocks(&wants, order).await
        };
        let mut brought = 0;
        for (w, r) in wants.iter().zip(results) {
            if r.is_ok() {
                brought += w.len as u64;
                Metrics::inc(by_source);
                if hydrating {
                    // Not a prediction: kept out of the controller's accuracy.
                    Metrics::add(&m.hydrate_bytes, w.len as u64);
                    continue;
                }
                Metrics::inc(&m.prefetch_completed);
                Metrics::add(&m.prefetch_bytes, w.len as u64);
                self.accounting.prefetched(w.block.checksum, w.len as u64);
                if job.priority == Priority::Readahead {
                    self.accounting.prefetched_readahead(w.block.checksum);
                }
            }
        }
        brought
    }
}

/// Sleeps until `t`, or forever when there is no `t`.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
