//! Getting blocks: cache first, then the store, with every fetch shared.
//!
//! [`Fetcher::get_blocks`] takes the stored blocks a read needs and returns
//! their verified, uncompressed bytes:
//! 1. each block is looked up in the cache (memory, then disk);
//! 2. a block already being fetched is **joined**, never fetched twice: the
//!    in-flight map points each block, keyed by content, at its run's
//!    per-block cells, so concurrent readers (and the prefetcher) wait for
//!    the same GET;
//! 3. the remaining blocks are cut into **runs** of blocks stored back to
//!    back in one object, and each run is one ranged GET ([`run`]);
//! 4. every fetched block is decompressed (bounded by its length), checked
//!    against its checksum, cached, and handed to its readers on its own,
//!    not when its whole run is done; blocks a demand reader waits for are
//!    decoded first. Prefetch and hydration runs decode one per CPU at a
//!    time, in the order [`gate`] chooses; a demand read's runs, and runs a
//!    demand read joined, decode at once. Hydrated blocks are cached cold
//!    (memory only into free room). A mismatch fails that block (EIO to the
//!    reader, a log line naming block and object), never returns data.
//!
//! A bounded number of GETs run at once (the mount's fetch slots:
//! `prefetch.concurrency` + `prefetch.demand_slots`, [`DEFAULT_FETCH_SLOTS`]
//! by default), so a burst of readers cannot open hundreds of connections
//! to the store.
//!
//! Every GET and decode also feeds [`link::LinkModel`], the mount's
//! measurement of its store link (round trip, throughput per GET, decode
//! rate), which sizes the prefetcher's fetch unit.

pub mod gate;
pub mod link;
mod run;

pub use run::MAX_RUN_BYTES;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Semaphore;

use crate::cache::{BlockCache, BlockKey, Tier};
use crate::metrics::Metrics;
use crate::ratelimit::LogLimit;
use crate::snapshot::{BlockError, BlockErrorKind, BlockRef};
use crate::store::Store;
use run::{FillOnDrop, RunCells, RunEnv};

/// GETs in flight at once: enough to hide ~20 ms of store latency at
/// several hundred MB/s with 512 KiB blocks, few enough to be polite to
/// the store and to bound memory (64 × a few MiB).
pub const DEFAULT_FETCH_SLOTS: usize = 64;
/// Prefetch and hydration decodes running at once, per CPU ([`gate`]):
/// one, so the run needed soonest is decoded first and finishes early.
const DECODES_PER_CPU: usize = 1;

/// Failed GETs and bad blocks are logged where they happen, once each, and
/// at most a few per period during an outage (every reader of the failed
/// run shares the one error; the read path does not log it again).
static FETCH_ERRORS: LogLimit = LogLimit::new();

/// A block a read wants: its uncompressed length, and the bytes of it the
/// read needs.
#[derive(Debug, Clone)]
pub struct Want {
    pub block: BlockRef,
    pub len: usize,
    pub range: std::ops::Range<usize>,
}

impl Want {
    /// The wanted bytes of the whole block `b`.
    fn slice(&self, b: &Bytes) -> Result<Bytes, BlockError> {
        if self.range.end <= b.len() {
            Ok(b.slice(self.range.clone()))
        } else {
            Err(self.internal("range beyond the block"))
        }
    }

    fn internal(&self, what: &'static str) -> BlockError {
        BlockError::new(&self.block, BlockErrorKind::Internal(what))
    }
}

pub struct Fetcher {
    store: Store,
    cache: Arc<BlockCache>,
    metrics: Arc<Metrics>,
    /// Block content → the run fetching it.
    inflight: Arc<DashMap<BlockKey, InFlight>>,
    slots: Arc<Semaphore>,
    slot_count: usize,
    next_run: std::sync::atomic::AtomicU64,
    /// Demand reads waiting on a fetch right now (prefetch yields to them).
    demand_waiting: std::sync::atomic::AtomicUsize,
    /// Time demand GETs waited for a fetch slot, in all, and how many
    /// waited: the prefetch controller's "demand wait" signal.
    slot_wait: Arc<SlotWait>,
    /// The link as measured from this fetcher's GETs.
    link: Arc<link::LinkModel>,
    /// Who decodes next among prefetch and hydration runs.
    decode_gate: Arc<gate::DecodeGate>,
}

/// Demand GETs' waits for a fetch slot (cumulative; the controller takes
/// differences per tick).
#[derive(Default)]
pub struct SlotWait {
    nanos: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

impl SlotWait {
    fn record(&self, waited: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.nanos.fetch_add(waited.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// (demand GETs that took a slot, total time they waited for it).
    pub fn totals(&self) -> (u64, std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.count.load(Relaxed),
            std::time::Duration::from_nanos(self.nanos.load(Relaxed)),
        )
    }
}

impl Fetcher {
    /// `slots`: GETs in flight at most (at least one).
    pub fn new(store: Store, cache: Arc<BlockCache>, metrics: Arc<Metrics>, slots: usize) -> Self {
        let slot_count = slots.max(1);
        Fetcher {
            store,
            cache,
            metrics,
            inflight: Arc::new(DashMap::new()),
            slots: Arc::new(Semaphore::new(slot_count)),
            slot_count,
            next_run: 0.into(),
            demand_waiting: 0.into(),
            slot_wait: Arc::default(),
            link: Arc::default(),
            decode_gate: Arc::new(gate::DecodeGate::new(
                DECODES_PER_CPU
                    * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
        }
    }

    /// The store link as measured so far (marked local for file:// and
    /// memory://).
    pub fn link_estimate(&self) -> link::LinkEstimate {
        link::LinkEstimate {
            local: self.store.is_local(),
            ..self.link.estimate()
        }
    }

    /// How long demand GETs waited for a fetch slot (cumulative).
    pub fn demand_slot_wait(&self) -> (u64, std::time::Duration) {
        self.slot_wait.totals()
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The wanted bytes of every wanted block, in order; each fails alone.
    /// A demand read: counted in the hit/miss metrics.
    pub async fn get_blocks(&self, wants: &[Want]) -> Vec<Result<Bytes, BlockError>> {
        self.get(wants, Purpose::Demand, 0).await
    }

    /// Fetches blocks for the prefetcher: the same shared, coalesced path,
    /// not counted as demand hits or misses. `order`: the job's rank, which
    /// decodes first among prefetch runs (smaller first, see [`gate`]).
    pub async fn prefetch_blocks(
        &self,
        wants: &[Want],
        order: u64,
    ) -> Vec<Result<Bytes, BlockError>> {
        self.get(wants, Purpose::Prefetch, order).await
    }

    /// Fetches blocks for background hydration: like a prefetch, but cached
    /// cold (disk tier, memory only into free room), so it pushes out
    /// nothing that was read.
    pub async fn hydrate_blocks(
        &self,
        wants: &[Want],
        order: u64,
    ) -> Vec<Result<Bytes, BlockError>> {
        self.get(wants, Purpose::Hydrate, order).await
    }

    /// Blocks whose stored bytes are already here (the index's inline
    /// blocks), each with its bytes: decoded, checked and cached like
    /// fetched blocks, without a GET, and through the in-flight map, so a
    /// reader asking meanwhile joins the decode instead of fetching. Blocks
    /// cached or in flight already are left alone. Returns, per block,
    /// whether this call decoded and cached it.
    pub async fn admit_stored(&self, blocks: Vec<(Want, Bytes)>, order: u64) -> Vec<bool> {
        let mut waits = Vec::with_capacity(blocks.len());
        for (w, stored) in blocks {
            let key = w.block.checksum;
            let mut ours = None;
            if !self.cache.contains(&key) && !self.inflight.contains_key(&key) {
                let claims = self.start_run_from(vec![w], Purpose::Prefetch, order, Some(stored));
                if let Some(Claim::Ours(cells, pos)) = claims.into_iter().next() {
                    ours = Some((cells, pos));
                }
            }
            waits.push(ours);
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Some((cells, pos)) => matches!(cells.wait(pos).await, Some(Ok(_))),
                None => false,
            });
        }
        out
    }

    /// Demand reads waiting on a fetch right now.
    pub fn demand_waiting(&self) -> usize {
        self.demand_waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Share of fetch slots in use (0..1).
    pub fn slot_occupancy(&self) -> f64 {
        1.0 - self.slots.available_permits() as f64 / self.slot_count as f64
    }

    async fn get(
        &self,
        wants: &[Want],
        purpose: Purpose,
        order: u64,
    ) -> Vec<Result<Bytes, BlockError>> {
        let demand = purpose == Purpose::Demand;
        let mut out: Vec<Option<Result<Bytes, BlockError>>> =
            (0..wants.len()).map(|_| None).collect();
        // 1. Cache.
        let mut missing: Vec<usize> = Vec::new();
        for (i, w) in wants.iter().enumerate() {
            match self
                .cache
                .get(&w.block.checksum, w.len, w.range.clone())
                .await
            {
                Some((b, tier)) => {
                    if demand {
                        Metrics::inc(match tier {
                            Tier::Memory => &self.metrics.memory_hits,
                            Tier::Disk => &self.metrics.disk_hits,
                        });
                    }
                    out[i] = Some(Ok(b));
                }
                None => {
                    if demand {
                        Metrics::inc(&self.metrics.misses);
                    }
                    missing.push(i);
                }
            }
        }
        // 2 + 3. Join fetches in flight, start runs for the rest.
        let mut waits: Vec<(usize, Arc<RunCells>, usize)> = Vec::new();
        let mut to_fetch: Vec<usize> = Vec::new();
        let mut seen: HashMap<BlockKey, usize> = HashMap::new();
        let mut dups: Vec<(usize, usize)> = Vec::new();
        let mut ready: HashMap<usize, Bytes> = HashMap::new();
        let mut started_own = false;
        for i in missing {
            let key = wants[i].block.checksum;
            if let Some(&first) = seen.get(&key) {
                dups.push((i, first));
                continue;
            }
            seen.insert(key, i);
            match self.inflight.get(&key) {
                Some(e) => {
                    if demand {
                        e.make_urgent();
                    }
                    waits.push((i, e.cells.clone(), e.pos))
                }
                None => to_fetch.push(i),
            }
        }
        for run in run::runs(wants, &to_fetch) {
            let claims = self.start_run(
                run.iter().map(|&i| wants[i].clone()).collect(),
                purpose,
                order,
            );
            for (&i, owner) in run.iter().zip(claims) {
                // Our run fetches the block, or someone else's claimed it first.
                match owner {
                    Claim::Ours(cells, pos) => {
                        started_own = true;
                        waits.push((i, cells, pos))
                    }
                    Claim::Theirs(cells, pos) => waits.push((i, cells, pos)),
                    Claim::Ready(b) => {
                        ready.insert(i, b.clone());
                        out[i] = Some(wants[i].slice(&b));
                    }
                }
            }
        }
        for (i, first) in dups {
            if let Some(&(_, ref cells, pos)) = waits.iter().find(|(j, _, _)| *j == first) {
                waits.push((i, cells.clone(), pos));
            } else if let Some(b) = ready.get(&first) {
                out[i] = Some(wants[i].slice(b));
            }
        }
        // While a demand read waits on a fetch it had to start itself, the
        // prefetcher holds back. (Joining a prefetch already under way is the
        // prefetcher doing its job: holding back then would stall a
        // sequential reader's pipeline.)
        let _waiting = (demand && started_own).then(|| WaitGuard::new(&self.demand_waiting));
        let waited = Instant::now();
        let n_waits = waits.len();
        for (i, cells, pos) in waits {
            out[i] = Some(match cells.wait(pos).await {
                Some(Ok(b)) => wants[i].slice(&b),
                Some(Err(e)) => Err(e),
                None => Err(wants[i].internal("run result too short")),
            });
        }
        if demand && n_waits > 0 {
            log::trace!(
                "demand read of blocks {}..: waited {:?} for {n_waits} block(s)",
                wants.first().map_or(0, |w| w.block.block_id),
                waited.elapsed()
            );
        }
        out.into_iter()
            .zip(wants)
            .map(|(o, w)| o.unwrap_or_else(|| Err(w.internal("block not resolved"))))
            .collect()
    }

    /// Claims the run's blocks in the in-flight map (atomically per block)
    /// and starts one GET for the run unless every block was claimed by a
    /// fetch already under way. Returns, per block, where to wait for it.
    fn start_run(&self, run: Vec<Want>, purpose: Purpose, order: u64) -> Vec<Claim> {
        self.start_run_from(run, purpose, order, None)
    }

    /// [`Fetcher::start_run`] of one run whose stored bytes are `stored`
    /// when given (no GET).
    fn start_run_from(
        &self,
        run: Vec<Want>,
        purpose: Purpose,
        order: u64,
        stored: Option<Bytes>,
    ) -> Vec<Claim> {
        let demand = purpose == Purpose::Demand;
        let id = self
            .next_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ticket = gate::Ticket::new(order);
        let env = RunEnv {
            store: self.store.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            link: self.link.clone(),
            slots: self.slots.clone(),
            slot_wait: demand.then(|| self.slot_wait.clone()),
            gate: (!demand).then(|| (self.decode_gate.clone(), ticket.clone())),
            cold: purpose == Purpose::Hydrate,
            stored,
        };
        let inflight = self.inflight.clone();
        let keys: Vec<BlockKey> = run.iter().map(|w| w.block.checksum).collect();
        // Shared with the decode thread without copying the wants.
        let run: Arc<[Want]> = run.into();
        let cells = RunCells::new(run.len());
        let claims: Vec<Claim> = keys
            .iter()
            .enumerate()
            .map(|(pos, &k)| match self.inflight.entry(k) {
                dashmap::Entry::Occupied(e) => {
                    if demand {
                        e.get().make_urgent();
                    }
                    Claim::Theirs(e.get().cells.clone(), e.get().pos)
                }
                dashmap::Entry::Vacant(v) => {
                    // A fetch that just finished cached the block before it
                    // left this map: with the entry locked, look once more.
                    if let Some(b) = self.cache.get_memory(&k) {
                        return Claim::Ready(b);
                    }
                    v.insert(InFlight {
                        id,
                        cells: cells.clone(),
                        pos,
                        ticket: ticket.clone(),
                    });
                    Claim::Ours(cells.clone(), pos)
                }
            })
            .collect();
        if claims.iter().any(|c| matches!(c, Claim::Ours(..))) {
            // Driven to the end even if every waiter goes away (a reader
            // interrupted): the fetch completes, is cached, and leaves the
            // in-flight map. Blocks claimed by others are fetched too (they
            // are in the range) but only ours are waited for here.
            tokio::spawn(async move {
                let _unfilled = FillOnDrop {
                    cells: cells.clone(),
                    run: run.clone(),
                };
                run::fetch_run(&env, run, cells).await;
                for k in &keys {
                    inflight.remove_if(k, |_, v| v.id == id);
                }
            });
        }
        claims
    }
}

/// A run in flight, as the blocks it fetches know it.
struct InFlight {
    id: u64,
    cells: Arc<RunCells>,
    /// The block's position in the run.
    pos: usize,
    /// Its place at the decode gate (a demand reader joining makes it urgent).
    ticket: Arc<gate::Ticket>,
}

impl InFlight {
    /// A demand reader waits for this block: its run skips the line at the
    /// decode gate, and the block is decoded first within the run.
    fn make_urgent(&self) {
        self.ticket.make_urgent();
        self.cells.want_first(self.pos);
    }
}

/// Who asked for a fetch: counted, prioritized and cached accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Demand,
    Prefetch,
    Hydrate,
}

/// Counts a demand read as waiting for as long as it lives.
struct WaitGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> WaitGuard<'a> {
    fn new(c: &'a std::sync::atomic::AtomicUsize) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WaitGuard(c)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Who fetches a block of a run: the run's cells and the block's position
/// in them.
enum Claim {
    Ours(Arc<RunCells>, usize),
    /// Cached meanwhile: no fetch needed.
    Ready(Bytes),
    /// Another fetch had it in flight.
    Theirs(Arc<RunCells>, usize),
}
