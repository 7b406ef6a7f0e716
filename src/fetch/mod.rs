//! Getting blocks: cache first, then the store, with every fetch shared.
//!
//! [`Fetcher::get_blocks`] takes the stored blocks a read needs and returns
//! their verified, uncompressed bytes:
//! 1. each block is looked up in the cache (memory, then disk);
//! 2. a block already being fetched is **joined**, never fetched twice: the
//!    in-flight map holds one shared future per fetch, keyed by block
//!    content, so concurrent readers (and, later, the prefetcher) wait for
//!    the same GET;
//! 3. the remaining blocks are cut into **runs** of blocks stored back to
//!    back in one object, and each run is one ranged GET;
//! 4. every fetched block is decompressed (bounded by its length), checked
//!    against its checksum, and cached (prefetch and hydration runs decode
//!    one per CPU at a time, in the order [`gate`] chooses; a demand read's
//!    runs, and runs a demand read joined, decode at once). A mismatch fails that block (EIO to
//!    the reader, a log line naming block and object), never returns data.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;

use crate::cache::{BlockCache, BlockKey, Tier};
use crate::metrics::Metrics;
use crate::ratelimit::LogLimit;
use crate::snapshot::{decode_block_cvs, BlockError, BlockErrorKind, BlockRef};
use crate::store::Store;
use blake3::hazmat::ChainingValue;

/// GETs in flight at once: enough to hide ~20 ms of store latency at
/// several hundred MB/s with 512 KiB blocks, few enough to be polite to
/// the store and to bound memory (64 × a few MiB).
pub const DEFAULT_FETCH_SLOTS: usize = 64;
/// Longest run fetched with one GET: larger runs are split so one request
/// never holds more than this in memory.
pub const MAX_RUN_BYTES: u64 = 8 << 20;

/// Prefetch and hydration decodes running at once, per CPU ([`gate`]):
/// one, so the run needed soonest is decoded first and finishes early.
const DECODES_PER_CPU: usize = 1;

/// The outcome of one run's fetch: per block of the run, its bytes or why not.
type RunResult = Arc<Vec<Result<Bytes, BlockError>>>;

/// Failed GETs and bad blocks are logged where they happen, once each, and
/// at most a few per period during an outage (every reader of the failed
/// run shares the one error; the read path does not log it again).
static FETCH_ERRORS: LogLimit = LogLimit::new();
type RunFuture = Shared<BoxFuture<'static, RunResult>>;

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
        let mut waits: Vec<(usize, RunFuture, usize)> = Vec::new();
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
                        e.ticket.make_urgent();
                    }
                    waits.push((i, e.fut.clone(), e.pos))
                }
                None => to_fetch.push(i),
            }
        }
        for run in runs(wants, &to_fetch) {
            let fut = self.start_run(
                run.iter().map(|&i| wants[i].clone()).collect(),
                purpose,
                order,
            );
            for (pos, (&i, owner)) in run.iter().zip(fut).enumerate() {
                // Our run fetches the block, or someone else's claimed it first.
                match owner {
                    Claim::Ours(f) => {
                        started_own = true;
                        waits.push((i, f, pos))
                    }
                    Claim::Theirs(f, their_pos) => waits.push((i, f, their_pos)),
                    Claim::Ready(b) => {
                        ready.insert(i, b.clone());
                        out[i] = Some(wants[i].slice(&b));
                    }
                }
            }
        }
        for (i, first) in dups {
            if let Some(&(_, ref fut, pos)) = waits.iter().find(|(j, _, _)| *j == first) {
                waits.push((i, fut.clone(), pos));
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
        for (i, fut, pos) in waits {
            let r = fut.await;
            out[i] = Some(match r.get(pos) {
                Some(Ok(b)) => wants[i].slice(b),
                Some(Err(e)) => Err(e.clone()),
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
    /// fetch already under way. Returns, per block, the future to wait on.
    fn start_run(&self, run: Vec<Want>, purpose: Purpose, order: u64) -> Vec<Claim> {
        let demand = purpose == Purpose::Demand;
        let id = self
            .next_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = self.store.clone();
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        let slots = self.slots.clone();
        let inflight = self.inflight.clone();
        let slot_wait = demand.then(|| self.slot_wait.clone());
        let link = self.link.clone();
        let ticket = gate::Ticket::new(order);
        let gate = (!demand).then(|| (self.decode_gate.clone(), ticket.clone()));
        let keys: Vec<BlockKey> = run.iter().map(|w| w.block.checksum).collect();
        let registered = keys.clone();
        // Shared with the decode thread without copying the wants.
        let run: Arc<[Want]> = run.into();
        let fut = async move {
            let results: Vec<Result<Bytes, BlockError>> = fetch_run(
                &store,
                run.clone(),
                &metrics,
                &link,
                &slots,
                slot_wait.as_deref(),
                gate.as_ref().map(|(g, t)| (&**g, t.clone())),
            )
            .await
            .into_iter()
            .zip(run.iter())
            .map(|(r, w)| {
                r.map(|(b, cvs)| {
                    cache.put(w.block.checksum, b.clone(), cvs);
                    b
                })
            })
            .collect();
            for k in &keys {
                inflight.remove_if(k, |_, v| v.id == id);
            }
            Arc::new(results)
        }
        .boxed()
        .shared();
        let claims: Vec<Claim> = registered
            .into_iter()
            .enumerate()
            .map(|(pos, k)| match self.inflight.entry(k) {
                dashmap::Entry::Occupied(e) => {
                    if demand {
                        e.get().ticket.make_urgent();
                    }
                    Claim::Theirs(e.get().fut.clone(), e.get().pos)
                }
                dashmap::Entry::Vacant(v) => {
                    // A fetch that just finished cached the block before it
                    // left this map: with the entry locked, look once more.
                    if let Some(b) = self.cache.get_memory(&k) {
                        return Claim::Ready(b);
                    }
                    v.insert(InFlight {
                        id,
                        fut: fut.clone(),
                        pos,
                        ticket: ticket.clone(),
                    });
                    Claim::Ours(fut.clone())
                }
            })
            .collect();
        if claims.iter().any(|c| matches!(c, Claim::Ours(_))) {
            // Driven to the end even if every waiter goes away (a reader
            // interrupted): the fetch completes, is cached, and leaves the
            // in-flight map.
            tokio::spawn(fut);
        }
        claims
    }
}

/// A run in flight, as the blocks it fetches know it.
struct InFlight {
    id: u64,
    fut: RunFuture,
    /// The block's position in the run.
    pos: usize,
    /// Its place at the decode gate (a demand reader joining makes it urgent).
    ticket: Arc<gate::Ticket>,
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

/// Who fetches a block of a run.
enum Claim {
    Ours(RunFuture),
    /// Cached meanwhile: no fetch needed.
    Ready(Bytes),
    /// Another fetch had it in flight: its future and the block's position.
    Theirs(RunFuture, usize),
}

/// Groups wanted blocks into runs stored back to back in one object.
fn runs(wants: &[Want], idx: &[usize]) -> Vec<Vec<usize>> {
    let mut sorted = idx.to_vec();
    sorted.sort_by(|&a, &b| {
        let (x, y) = (&wants[a].block, &wants[b].block);
        (&x.object, x.offset).cmp(&(&y.object, y.offset))
    });
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in sorted {
        let b = &wants[i].block;
        if let Some(run) = out.last_mut() {
            let first = &wants[run[0]].block;
            let last = &wants[run[run.len() - 1]].block;
            if last.object == b.object
                && last.offset + last.length as u64 == b.offset
                && b.offset + b.length as u64 - first.offset <= MAX_RUN_BYTES
            {
                run.push(i);
                continue;
            }
        }
        out.push(vec![i]);
    }
    out
}

/// One GET for the run, then per-block decode and verify on a blocking
/// thread (zstd and BLAKE3 of up to [`MAX_RUN_BYTES`] would stall the
/// async workers that serve other reads).
async fn fetch_run(
    store: &Store,
    run: Arc<[Want]>,
    metrics: &Arc<Metrics>,
    link: &Arc<link::LinkModel>,
    slots: &Semaphore,
    slot_wait: Option<&SlotWait>,
    decode_gate: Option<(&gate::DecodeGate, Arc<gate::Ticket>)>,
) -> Vec<Result<(Bytes, Vec<ChainingValue>), BlockError>> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Vec::new();
    };
    let key = first.block.object.clone();
    let range = first.block.offset..last.block.offset + last.block.length as u64;
    let asked = Instant::now();
    let slot = slots.acquire().await;
    if let Some(w) = slot_wait {
        w.record(asked.elapsed());
    }
    let started = Instant::now();
    let got = store.get_range(&key, range.clone()).await;
    let latency = started.elapsed();
    metrics.fetch_latency.observe(latency);
    Metrics::inc(&metrics.fetches);
    let data = match got {
        Ok(d) => d,
        Err(e) => {
            Metrics::inc(&metrics.fetch_errors);
            FETCH_ERRORS.error(|| {
                format!(
                    "fetching blocks {}..={}: {e}",
                    first.block.block_id, last.block.block_id
                )
            });
            let e = Arc::new(e);
            return run
                .iter()
                .map(|w| Err(BlockError::new(&w.block, BlockErrorKind::Store(e.clone()))))
                .collect();
        }
    };
    Metrics::add(&metrics.bytes_fetched, data.len() as u64);
    link.record_get(data.len() as u64, latency);
    let decode = {
        let run = run.clone();
        let metrics = metrics.clone();
        let link = link.clone();
        move || {
            let t0 = Instant::now();
            let decoded: u64 = run.iter().map(|w| w.len as u64).sum();
            let out = run
                .iter()
                .map(|w| {
                    let s = (w.block.offset - range.start) as usize;
                    Metrics::inc(&metrics.blocks_fetched);
                    let stored = match data.get(s..s + w.block.length as usize) {
                        Some(_) => data.slice(s..s + w.block.length as usize),
                        None => Bytes::new(),
                    };
                    decode_block_cvs(stored, &w.block, w.len).inspect_err(|e| {
                        Metrics::inc(match e.kind {
                            BlockErrorKind::Checksum => &metrics.checksum_errors,
                            _ => &metrics.decode_errors,
                        });
                        FETCH_ERRORS.error(|| e.to_string());
                    })
                })
                .collect::<Vec<_>>();
            link.record_decode(decoded, t0.elapsed());
            log::trace!(
                "run {}..={} ({} blocks, {} B stored): slot {:?}, GET {:?}, decode {:?}",
                run[0].block.block_id,
                run[run.len() - 1].block.block_id,
                run.len(),
                data.len(),
                started - asked,
                latency,
                t0.elapsed()
            );
            out
        }
    };
    // The GET is done: its slot goes to the next one while this run waits
    // to decode.
    drop(slot);
    let _decoding = match decode_gate {
        Some((g, t)) => Some(g.enter(t).await),
        None => None,
    };
    match tokio::task::spawn_blocking(decode).await {
        Ok(r) => r,
        Err(_) => run
            .iter()
            .map(|w| Err(w.internal("decode task failed")))
            .collect(),
    }
}
