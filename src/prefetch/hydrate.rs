//! Background hydration, as EBS does for volumes restored from snapshots:
//! once nothing else waits, the mount fetches the rest of its snapshots
//! into the disk cache, so a later read of any block is local.
//!
//! Order, most likely first: the groups of the warm-up list (in its order),
//! then the groups the index hints at (strongest hint first), then every
//! other group in block order, which is the order blocks were packed into
//! data objects, so consecutive jobs read consecutive stored bytes. A job
//! is one group's uncached blocks (at most `group_size` blocks: one or two
//! ranged GETs).
//!
//! A walk goes first: when the fetch unit sees a session walk a tree
//! ([`super::unit`]), that subtree's groups are hydrated before the order
//! above resumes, starting at once (no start delay) and with
//! [`WALK_JOBS`] even while demand reads miss: a walk is bound by the
//! link's throughput, not by one miss at a time.
//!
//! Yielding: hydration starts `prefetch.hydrate_delay` (default
//! [`START_AFTER`]) after the mount (a session's
//! start-up has the machine to itself), a job is made only when the
//! prefetch queue is empty,
//! at most [`HYDRATE_JOBS`] run at once ([`HYDRATE_JOBS_BUSY`] while demand
//! reads miss), and they use prefetch slots, never the demand reads' own
//! (`prefetch.demand_slots`). So a demand read or a hint queued while
//! hydration runs is dispatched before any further hydration work, and
//! waits for at most the GETs already in flight. `prefetch.hydrate_rate`
//! caps the stored bytes per second hydration asks for (a token bucket
//! refilled at that rate; 0: the link's own speed).
//!
//! Never evicting: `prefetch.hydrate: auto` (the default) hydrates a
//! mount's snapshots from a remote store (not file://, whose blocks are as
//! near as the cache's) only while their stored data fits in half the disk
//! cache (the other half stays for what other mounts read), `always`
//! hydrates any snapshot but stops there too, and hydration also stops
//! when the cache has no free room for the next job. Hydrated blocks go to
//! the disk tier and enter the memory tier only into free room, so they do
//! not push out what was read.
//!
//! Resuming: the walk skips every block already cached, so a remount's
//! hydration fast-forwards over what an earlier one (or earlier reads)
//! brought, and fetches only the rest. Blocks the disk writer had to skip
//! (its queue full) are fetched again by a later mount.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::BlockCache;
use crate::metrics::stats::{HydrationState, HydrationStats};
use crate::snapshot::Snapshot;

/// Hydration jobs running at once at most (a job is one or two GETs of up
/// to 8 MiB): two reached 67% of the link in `bench/peers.sh` (one GET's
/// round trip idles the link between jobs), four keep it full while
/// leaving 12 of the 16 prefetch slots to hints that fire meanwhile.
pub(super) const HYDRATE_JOBS: u64 = 4;
/// Hydration jobs at once while a walk's subtree goes first: a walk is
/// bound by the link's throughput. Against 4, same run of `bench/peers.sh
/// --quick` (medians of 3), a first-session scan took 0.99 s against
/// 1.07 s and `tar` 1.00 s against 1.15 s; 8 of the 16 prefetch slots stay
/// free for the unit and hints.
pub(super) const WALK_JOBS: u64 = 8;
/// Hydration jobs at once while the mount is busy: a demand read missed in
/// the last [`BUSY_FOR`]. One job keeps hydration going under a steady
/// load (as EBS's does) while a session's start-up burst, which waits on
/// every miss in turn, gets the link and the CPU (on 2 cores, four
/// hydration GETs of 8 MiB made demand GETs wait ~5 round trips).
pub(super) const HYDRATE_JOBS_BUSY: u64 = 1;
/// Hydration starts this long after the mount by default
/// (`prefetch.hydrate_delay`): a session's start-up
/// waits on its misses one after another, and on 2 cores hydration's
/// decoding and cache writes beside it made a first-session program start
/// 2.1× slower (1.85 s against 0.88 s without hydration, `bench/peers.sh`),
/// while a tree scan gains from hydration only over seconds.
pub const START_AFTER: Duration = Duration::from_secs(2);
/// How long after a demand miss the mount counts as busy.
pub(super) const BUSY_FOR: Duration = Duration::from_millis(500);
/// Groups examined per call at most when they are all cached already (a
/// remount fast-forwarding), so one call never holds up the loop for long.
const SCAN_PER_CALL: usize = 64;

/// `prefetch.hydrate` in snapshots.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HydrateMode {
    /// Only when the mount's snapshots fit in half the disk cache.
    #[default]
    Auto,
    Off,
    /// Any snapshot, up to half the disk cache.
    Always,
}

/// Counters a finished job updates from its own task.
#[derive(Default)]
pub(super) struct Progress {
    /// Bytes (uncompressed) of the snapshot's stored blocks known cached.
    pub hydrated: AtomicU64,
    /// Bytes hydration itself fetched.
    pub fetched: AtomicU64,
    /// Jobs made and not finished (a walk that ended is done only when
    /// they are).
    pub jobs: AtomicU64,
}

impl Progress {
    /// A job of this snapshot finished, having brought `bytes`.
    pub fn job_done(&self, bytes: u64) {
        self.hydrated.fetch_add(bytes, Relaxed);
        self.fetched.fetch_add(bytes, Relaxed);
        self.jobs.fetch_sub(1, Relaxed);
    }
}

struct FileHydration {
    /// Group numbers in hydration order, and how far the walk got.
    order: Vec<u64>,
    pos: usize,
    /// Groups of a walk, hydrated before `order` resumes, and those of
    /// them done (`order` skips them, so nothing is counted twice).
    front: std::collections::VecDeque<u64>,
    front_done: HashSet<u64>,
    state: HydrationState,
    total: u64,
    progress: Arc<Progress>,
}

pub(super) struct Hydrator {
    files: Vec<FileHydration>,
    /// Bytes all hydration of this mount may bring into the cache at most.
    budget: u64,
    /// Stored bytes per second asked for at most; 0 = unlimited.
    rate: u64,
    /// When the next job may be made (token bucket).
    next_at: Instant,
    started: Instant,
    /// `prefetch.hydrate_delay`: how long after `started` the order starts.
    delay: Duration,
    pub running: Arc<AtomicU64>,
}

/// One job hydration asks for.
pub(super) struct HydrateJob {
    pub file: usize,
    pub blocks: Vec<u64>,
}

impl Hydrator {
    pub fn new(
        snapshots: &[Arc<Snapshot>],
        mode: HydrateMode,
        rate: u64,
        delay: Duration,
        cache: &BlockCache,
        local_store: bool,
    ) -> Hydrator {
        let cache_bytes = cache
            .disk()
            .map_or_else(|| cache.capacity(), |d| d.capacity());
        let budget = cache_bytes / 2;
        let mut planned = 0u64;
        let files = snapshots
            .iter()
            .map(|s| {
                let total = s.index().logical_stored_bytes();
                let state = match mode {
                    HydrateMode::Off => HydrationState::Off,
                    HydrateMode::Auto if local_store => HydrationState::LocalStore,
                    HydrateMode::Auto if planned + total > budget => HydrationState::TooLarge,
                    _ => HydrationState::Running,
                };
                if state == HydrationState::Running {
                    planned += total;
                }
                FileHydration {
                    order: order(s),
                    pos: 0,
                    front: Default::default(),
                    front_done: HashSet::new(),
                    state,
                    total,
                    progress: Arc::default(),
                }
            })
            .collect();
        let now = Instant::now();
        Hydrator {
            files,
            budget,
            rate,
            next_at: now,
            started: now,
            delay,
            running: Arc::default(),
        }
    }

    /// Whether hydration still has work (the loop then keeps a timer).
    pub fn active(&self) -> bool {
        self.files
            .iter()
            .any(|f| f.state == HydrationState::Running)
    }

    /// When the start delay and the rate cap allow the next job (None: no
    /// work left).
    pub fn wake_at(&self) -> Option<Instant> {
        self.active().then_some(self.next_at.max(self.start_at()))
    }

    /// Jobs that may run at once now: more for a walk, fewer while busy.
    pub fn job_limit(&self, busy: bool) -> u64 {
        if self.walking() {
            WALK_JOBS
        } else if busy {
            HYDRATE_JOBS_BUSY
        } else {
            HYDRATE_JOBS
        }
    }

    /// Whether a walk's groups wait at the front.
    fn walking(&self) -> bool {
        self.files.iter().any(|f| !f.front.is_empty())
    }

    /// When hydration may start: at once for a walk, else after the delay.
    fn start_at(&self) -> Instant {
        if self.walking() {
            self.started
        } else {
            self.started + self.delay
        }
    }

    /// A walk of snapshot `i` was seen: `blocks`' groups go first.
    pub fn prefer(&mut self, i: usize, blocks: &[u64], group_size: u64) {
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        if f.state != HydrationState::Running || group_size == 0 {
            return;
        }
        let mut seen = HashSet::new();
        for g in blocks.iter().map(|b| b / group_size) {
            if seen.insert(g) && !f.front_done.contains(&g) {
                f.front.push_back(g);
            }
        }
    }

    /// The next job, if one may run now: nothing else queued or waiting
    /// (the caller checks), a job slot free, the rate cap allowing it.
    pub async fn next(
        &mut self,
        snapshots: &[Arc<Snapshot>],
        cache: &BlockCache,
        busy: bool,
    ) -> Option<HydrateJob> {
        let now = Instant::now();
        let jobs = self.job_limit(busy);
        if self.running.load(Relaxed) >= jobs || now < self.next_at.max(self.start_at()) {
            return None;
        }
        let brought: u64 = self
            .files
            .iter()
            .map(|f| f.progress.hydrated.load(Relaxed))
            .sum();
        let budget = self.budget;
        for (i, f) in self.files.iter_mut().enumerate() {
            if f.state != HydrationState::Running {
                continue;
            }
            let snap = &snapshots[i];
            for _ in 0..SCAN_PER_CALL {
                // A walk's groups first; `order` skips those done.
                let (g, front) = match f.front.front() {
                    Some(&g) => (g, true),
                    None => match f.order.get(f.pos) {
                        Some(&g) => (g, false),
                        None => {
                            f.state = HydrationState::Done;
                            break;
                        }
                    },
                };
                let next = |f: &mut FileHydration| {
                    if front {
                        f.front.pop_front();
                        f.front_done.insert(g);
                    } else {
                        f.pos += 1;
                    }
                };
                if !front && f.front_done.contains(&g) {
                    next(f);
                    continue;
                }
                let Some(entry) = snap.index().group(g) else {
                    next(f);
                    continue;
                };
                let Ok(blocks) = snap.group_blocks(entry).await else {
                    next(f);
                    continue;
                };
                let (mut need, mut stored, mut need_bytes, mut have) = (Vec::new(), 0, 0, 0);
                let mut cut = false;
                for b in &blocks {
                    let len = snap.block_len(b.block_id) as u64;
                    if cache.contains(&b.checksum) {
                        have += len;
                    } else if brought + need_bytes + len > budget || !room(cache, need_bytes + len)
                    {
                        // The cap: this job takes what fits, and is the last.
                        cut = true;
                        break;
                    } else {
                        need.push(b.block_id);
                        stored += b.length as u64;
                        need_bytes += len;
                    }
                }
                f.progress.hydrated.fetch_add(have, Relaxed);
                if cut {
                    f.state = HydrationState::Capped;
                    f.front.clear();
                } else {
                    next(f);
                }
                if need.is_empty() {
                    if cut {
                        break;
                    }
                    continue;
                }
                if self.rate > 0 {
                    let cost = Duration::from_secs_f64(stored as f64 / self.rate as f64);
                    self.next_at = self.next_at.max(now) + cost;
                }
                self.running.fetch_add(1, Relaxed);
                f.progress.jobs.fetch_add(1, Relaxed);
                return Some(HydrateJob {
                    file: i,
                    blocks: need,
                });
            }
            if f.state == HydrationState::Running {
                // Scanned a batch of cached groups: the loop calls again.
                return None;
            }
        }
        None
    }

    /// A job of snapshot `i` was dropped from the queue unrun: its groups
    /// are walked again from the start (cached blocks are skipped fast).
    pub fn dropped(&mut self, i: usize) {
        self.running.fetch_sub(1, Relaxed);
        if let Some(f) = self.files.get_mut(i) {
            f.progress.jobs.fetch_sub(1, Relaxed);
            f.progress.hydrated.store(0, Relaxed);
            f.pos = 0;
            f.front_done.clear();
            if matches!(f.state, HydrationState::Done | HydrationState::Capped) {
                f.state = HydrationState::Running;
            }
        }
    }

    /// Snapshot `i`'s counters, which its finished jobs update.
    pub fn progress(&self, i: usize) -> Option<Arc<Progress>> {
        self.files.get(i).map(|f| f.progress.clone())
    }

    /// What `stats` shows for snapshot `i`.
    pub fn stats(&self, i: usize) -> Option<HydrationStats> {
        let f = self.files.get(i)?;
        let hydrated = f.progress.hydrated.load(Relaxed).min(f.total);
        let secs = self.started.elapsed().as_secs_f64();
        let unfinished = f.progress.jobs.load(Relaxed) > 0;
        Some(HydrationStats {
            state: match f.state {
                HydrationState::Done | HydrationState::Capped if unfinished => {
                    HydrationState::Running
                }
                s => s,
            },
            hydrated_bytes: hydrated,
            total_bytes: f.total,
            percent: if f.total == 0 {
                100.0
            } else {
                hydrated as f64 * 100.0 / f.total as f64
            },
            fetched_bytes: f.progress.fetched.load(Relaxed),
            rate_bytes_per_s: if secs > 0.0 {
                f.progress.fetched.load(Relaxed) as f64 / secs
            } else {
                0.0
            },
        })
    }
}

/// Whether the cache has free room for `bytes` more without evicting.
fn room(cache: &BlockCache, bytes: u64) -> bool {
    let g = cache.gauges();
    if cache.disk().is_some() {
        g.disk_bytes + bytes <= g.disk_capacity
    } else {
        g.memory_bytes + bytes <= g.memory_capacity
    }
}

/// The snapshot's groups in hydration order: warm-up, hinted (strongest
/// first), then the rest in block order; each once.
fn order(snap: &Snapshot) -> Vec<u64> {
    let index = snap.index();
    let gs = snap.header().group_size as u64;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(index.groups.len());
    for w in &index.warmup {
        for b in w.blocks(gs as u32) {
            let g = b / gs;
            if seen.insert(g) {
                out.push(g);
            }
        }
    }
    let mut hinted: Vec<(f32, u64)> = index
        .groups
        .iter()
        .filter_map(|g| {
            let h = g.hints.iter().copied().fold(0.0f32, f32::max);
            (h > 0.0).then_some((h, g.group))
        })
        .collect();
    hinted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, g) in hinted {
        if seen.insert(g) {
            out.push(g);
        }
    }
    for g in &index.groups {
        if seen.insert(g.group) {
            out.push(g.group);
        }
    }
    out
}
