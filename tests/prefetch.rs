//! The prefetch daemon against a store that adds 20 ms to every GET
//! (object_store's ThrottledStore), driven through the mount's read path.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use snapahead::cache::BlockCache;
use snapahead::create::{create, CreateOptions};
use snapahead::fetch::Fetcher;
use snapahead::fs::read::read_range;
use snapahead::metrics::stats::{HydrationState, HydrationStats};
use snapahead::metrics::Metrics;
use snapahead::name::SnapshotName;
use snapahead::predict::warmup::MountStart;
use snapahead::predict::{self, Session};
use snapahead::prefetch::hydrate::HydrateMode;
use snapahead::prefetch::{PrefetchConfig, Prefetcher};
use snapahead::snapshot::Snapshot;
use snapahead::store::Store;

const LATENCY: Duration = Duration::from_millis(20);

/// One test at a time: they measure time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    snap: Arc<Snapshot>,
    fetcher: Arc<Fetcher>,
}

async fn setup(vol: &[u8], bs: u32, gs: u32) -> Setup {
    let slow = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_get_per_call: LATENCY,
            ..Default::default()
        },
    );
    let store = Store::from_object_store(Arc::new(slow), "memory + 20 ms per GET");
    setup_on(store, vol, bs, gs).await
}

/// The snapshot `v` of `vol` in `store`, with a fresh fetcher.
async fn setup_on(store: Store, vol: &[u8], bs: u32, gs: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.img");
    common::write(&src, vol);
    let name = SnapshotName::parse("v").unwrap();
    let mut o = CreateOptions::new(name.clone(), &src);
    o.block_size = Some(bs);
    o.group_size = Some(gs);
    create(&store, &o).await.unwrap();
    let snap = Arc::new(Snapshot::open(&store, &name).await.unwrap());
    let fetcher = fresh_fetcher(&store, dir.path());
    Setup {
        _dir: dir,
        store,
        snap,
        fetcher,
    }
}

/// Waits (at most 30 s) until the daemon has decided on every read it was
/// told of and has nothing queued or running.
async fn quiesce(p: &Prefetcher) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = p.status();
        if st.reads_handled == st.reads_accepted && st.queue_depth == 0 && st.jobs_running == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "prefetch still busy: {st:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fresh_fetcher(store: &Store, dir: &std::path::Path) -> Arc<Fetcher> {
    let cache_dir = dir.join(format!("cache-{}", rand::random::<u32>()));
    fetcher_with(store, &cache_dir, 1 << 30, 256 << 20)
}

/// A fetcher whose disk cache is `cache_dir`, bounded by `disk` bytes (and
/// a memory tier of 1 MiB, so what a test finds cached is on disk).
fn fetcher_on(store: &Store, cache_dir: &std::path::Path, disk: u64) -> Arc<Fetcher> {
    fetcher_with(store, cache_dir, disk, 1 << 20)
}

fn fetcher_with(
    store: &Store,
    cache_dir: &std::path::Path,
    disk: u64,
    memory: u64,
) -> Arc<Fetcher> {
    let metrics = Arc::new(Metrics::default());
    // The previous user of the directory may still be letting go of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cache = loop {
        match BlockCache::open(cache_dir, disk, memory, metrics.clone()) {
            Ok(c) => break Arc::new(c),
            Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    Arc::new(Fetcher::new(
        store.clone(),
        cache,
        metrics,
        snapahead::fetch::DEFAULT_FETCH_SLOTS,
    ))
}

/// Learns hints from `sessions` into the snapshot's index, then opens it as
/// a new host would: the new index, an empty cache, a running prefetcher.
async fn learn_and_mount(
    s: &Setup,
    sessions: &[Session],
    windows: &[u32],
) -> (Arc<Snapshot>, Arc<Fetcher>, Arc<Prefetcher>) {
    let stored = predict::stored_blocks(&s.snap).await.unwrap();
    let learned = predict::learn(s.snap.index(), &stored, sessions, windows);
    predict::commit(&s.store, &learned).await.unwrap();
    let snap = Arc::new(
        Snapshot::open(&s.store, &SnapshotName::parse("v").unwrap())
            .await
            .unwrap(),
    );
    let fetcher = fresh_fetcher(&s.store, s._dir.path());
    let p = Prefetcher::start(vec![snap.clone()], fetcher.clone(), no_hydration());
    (snap, fetcher, p)
}

/// The defaults without background hydration, which would fetch the whole
/// snapshot beside what a test measures.
fn no_hydration() -> PrefetchConfig {
    PrefetchConfig {
        hydrate: HydrateMode::Off,
        ..Default::default()
    }
}

fn lookups(m: &Metrics) -> (u64, u64) {
    (
        m.memory_hits.load(Relaxed) + m.disk_hits.load(Relaxed),
        m.misses.load(Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_read_grows_the_window_and_then_hits() {
    let _serial = SERIAL.lock().await;
    let size = 64 << 20;
    let vol = common::random_bytes(1, size);
    let s = setup(&vol, 512 * 1024, 16).await;
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
    let chunk = 128 * 1024;
    let mut after_warmup = None;
    for off in (0..size).step_by(chunk) {
        let data = read_range(&s.snap, &s.fetcher, off as u64, chunk)
            .await
            .unwrap();
        assert!(data == vol[off..off + chunk]);
        p.on_read(0, off as u64, chunk as u32);
        // The application does something with the data: ~128 MB/s.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if off == 8 << 20 {
            after_warmup = Some(lookups(s.fetcher.metrics()));
        }
    }
    let (h0, m0) = after_warmup.unwrap();
    let (h1, m1) = lookups(s.fetcher.metrics());
    let (hits, misses) = (h1 - h0, m1 - m0);
    assert!(
        misses * 10 <= hits + misses,
        "after the first 8 MiB: {hits} hits, {misses} misses"
    );
    let st = p.status();
    assert!(st.snapshots[0].readahead_window >= 8 << 20, "{st:?}");
    let m = s.fetcher.metrics();
    assert!(m.prefetch_completed.load(Relaxed) > 64);
    // No hints were learned: every prefetch was read-ahead (or a miss's
    // neighbours, before the window grew).
    assert_eq!(
        m.prefetch_readahead_blocks.load(Relaxed) + m.prefetch_unit_blocks.load(Relaxed),
        m.prefetch_completed.load(Relaxed)
    );
    assert!(m.prefetch_readahead_blocks.load(Relaxed) > 64);
    // Read-ahead judges itself: the stream read what it brought.
    assert!(
        m.readahead_used.load(Relaxed) > 64,
        "read-ahead blocks read: {}",
        m.readahead_used.load(Relaxed)
    );
    assert_eq!(st.readahead_backoff, 0, "{st:?}");
}

/// Read-ahead that goes unread backs off, on a running prefetcher: short
/// sequential bursts (a start-up reading small files in ascending order
/// looks like this), each far from the last, so every block read-ahead
/// brings stays unread; past the read-ahead horizon they are judged
/// unused, and the windows are halved (`readahead_backoff` ≥ 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readahead_whose_blocks_go_unread_backs_off() {
    let _serial = SERIAL.lock().await;
    let size = 128usize << 20;
    let vol = common::random_bytes(11, size);
    // A local store: no fetch unit (a miss's neighbours in its object),
    // whose blocks would otherwise race read-ahead's for the same gaps.
    let s = setup_on(Store::memory(), &vol, 512 * 1024, 16).await;
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
    let chunk = 128 * 1024u64;
    // 32 bursts of 512 KiB, 4 MiB apart: read-ahead's windows (1 then
    // 2 MiB) stay inside the gap, so no burst reads another's blocks.
    for burst in 0..32u64 {
        let start = burst * (4 << 20);
        for i in 0..4 {
            let off = start + i * chunk;
            read_range(&s.snap, &s.fetcher, off, chunk as usize)
                .await
                .unwrap();
            p.on_read(0, off, chunk as u32);
        }
    }
    let m = s.fetcher.metrics();
    // Judged only after the horizon (5 s): poll under a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.status().readahead_backoff == 0 {
        assert!(
            Instant::now() < deadline,
            "no back-off: used {}, unused {}, {:?}",
            m.readahead_used.load(Relaxed),
            m.readahead_unused.load(Relaxed),
            p.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bursts earned read-ahead, and it went unread.
    assert!(
        m.prefetch_readahead_blocks.load(Relaxed) >= 32,
        "read-ahead blocks: {}",
        m.prefetch_readahead_blocks.load(Relaxed)
    );
    assert!(m.readahead_unused.load(Relaxed) >= 32);
    assert!(
        m.readahead_used.load(Relaxed) * 2 < m.readahead_unused.load(Relaxed),
        "used {} unused {}",
        m.readahead_used.load(Relaxed),
        m.readahead_unused.load(Relaxed)
    );
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_trigger_no_readahead_and_few_prefetches() {
    let _serial = SERIAL.lock().await;
    let size = 64 << 20;
    let vol = common::random_bytes(2, size);
    let s = setup(&vol, 512 * 1024, 16).await;
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
    let mut seed = 99u64;
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (seed >> 16) % (size as u64 - 4096) / 4096 * 4096;
        read_range(&s.snap, &s.fetcher, off, 4096).await.unwrap();
        p.on_read(0, off, 4096);
    }
    quiesce(&p).await;
    let m = s.fetcher.metrics();
    let prefetched = m.prefetch_bytes.load(Relaxed);
    // A random read may land just after an earlier one by chance (200 reads
    // on 64 MiB) and earn a small read-ahead; read-ahead on random reads as
    // such would queue hundreds of blocks. The bar (DESIGN, issue): prefetch
    // at most 10% of what the random reads themselves fetch.
    let demand_bytes = 200 * 512 * 1024u64;
    let issued = m.prefetch_issued.load(Relaxed);
    assert!(
        issued * 10 <= 200,
        "{issued} blocks queued for prefetch by 200 random reads"
    );
    assert!(
        prefetched * 10 <= demand_bytes,
        "prefetched {prefetched} bytes"
    );
    drop(p);
}

/// A start-up of `n` scattered blocks of a 512-block volume, one every 5 ms.
fn scattered_session(n: u64) -> (Vec<u64>, Session) {
    let blocks: Vec<u64> = (0..n).map(|i| (i * 97 + 13) % 512).collect();
    let events = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u64 * 5_000_000, *b))
        .collect();
    (blocks, Session { events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_learning_one_session_mostly_hits() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    let vol = common::random_bytes(3, 512 * bs as usize);
    let s = setup(&vol, bs as u32, 4).await;
    // The session: 60 scattered blocks, read in a fixed order.
    let (blocks, session) = scattered_session(60);
    // A fresh host: empty cache; the application starts shortly after mount.
    let (snap, fetcher, p) = learn_and_mount(&s, &[session], &[2000, 10_000]).await;
    assert!(!snap.index().warmup.is_empty());
    tokio::time::sleep(Duration::from_millis(150)).await;
    for b in &blocks {
        let off = b * bs + 100;
        let data = read_range(&snap, &fetcher, off, 4096).await.unwrap();
        assert!(data == vol[off as usize..off as usize + 4096]);
        p.on_read(0, off, 4096);
    }
    let (hits, misses) = lookups(fetcher.metrics());
    assert!(
        hits * 10 >= 9 * (hits + misses),
        "{hits} hits, {misses} misses"
    );
    // The warm-up list did it (the session is one start-up), and the
    // counters by source add up.
    let m = fetcher.metrics();
    let (w, r, h) = (
        m.prefetch_warmup_blocks.load(Relaxed),
        m.prefetch_readahead_blocks.load(Relaxed),
        m.prefetch_hint_blocks.load(Relaxed),
    );
    assert!(w >= 54, "warm-up prefetched {w} blocks");
    assert_eq!(w + r + h, m.prefetch_completed.load(Relaxed));
}

/// A group touched while the warm-up is still fetching its blocks: the
/// hint is judged on what is not yet cached *or queued*, so the group's
/// never-read blocks are not fetched (they were, before: 6 of 16 wasted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_counts_blocks_the_warm_up_already_queued() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    let vol = common::random_bytes(6, 64 * bs as usize);
    let s = setup(&vol, bs as u32, 16).await;
    // Every session reads blocks 0..10 of group 0 at its start: its mask
    // names those 10 (at 2/3: read in both of 2 episodes, k/(n+1)).
    let session = || Session {
        events: (0..10u64).map(|b| (b * 1_000_000, b)).collect(),
    };
    let (snap, fetcher, p) = learn_and_mount(&s, &[session(), session()], &[2000]).await;
    let g0 = &snap.index().groups[0];
    let likely: Vec<usize> = g0.masks[0]
        .iter()
        .enumerate()
        .filter(|(_, &m)| snapahead::format::mask_probability(m) >= 0.5)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(likely, (0..10).collect::<Vec<_>>(), "{g0:?}");
    // The first read comes at once, before the warm-up's GETs (20 ms) end;
    // the daemon hears of each read before it is served, as from FUSE.
    for b in 0..10u64 {
        let off = b * bs + 100;
        p.on_read(0, off, 4096);
        let data = read_range(&snap, &fetcher, off, 4096).await.unwrap();
        assert!(data == vol[off as usize..off as usize + 4096]);
    }
    quiesce(&p).await;
    let m = fetcher.metrics();
    // (Demand reads may win the race for some of the 10: the warm-up then
    // drops them, so its count is at most 10.)
    let w = m.prefetch_warmup_blocks.load(Relaxed);
    assert!((1..=10).contains(&w), "warm-up prefetched {w}");
    assert_eq!(
        m.prefetch_hint_blocks.load(Relaxed),
        0,
        "the hint fetched blocks the warm-up had queued, or the 6 never read"
    );
    assert_eq!(m.blocks_fetched.load(Relaxed), 10, "only what is read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_reads_stay_fast_during_a_prefetch_storm() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    let n = 2048u64;
    let vol = common::random_bytes(4, (n * bs) as usize);
    // One-block groups: the warm-up is 2048 separate prefetches (not 128
    // coalesced GETs), a storm that lasts through the measurement.
    let s = setup(&vol, bs as u32, 1).await;
    // Warm-up naming every block: a storm of 2048 queued prefetches.
    let session = Session {
        events: (0..n).map(|b| (b, b)).collect(),
    };
    let (snap, fetcher, p) = learn_and_mount(&s, &[session], &[2000]).await;
    // A session reading the warm-up's first blocks: the warm-up runs a
    // stretch ahead of it, over a hundred one-block jobs.
    for b in 0..16 {
        p.on_read(0, b * bs, 4096);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Demand reads far from where the warm-up is, while it runs (their
    // manifest page loaded first: the storm, not a cold page, is measured).
    snap.locate(n - 1).await.unwrap();
    let m = fetcher.metrics().clone();
    let before = m.prefetch_completed.load(Relaxed);
    let mut lat = Vec::new();
    // 200 reads: p99 then tolerates two outliers of a shared machine, and
    // still fails if prefetch delays demand reads systematically.
    for i in 0..200u64 {
        let b = n - 1 - i * 7;
        let t = Instant::now();
        read_range(&snap, &fetcher, b * bs, 4096).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    eprintln!(
        "demand latencies during the storm: {:?}",
        lat.iter().step_by(20).collect::<Vec<_>>()
    );
    let p99 = lat[lat.len() * 99 / 100];
    assert!(p99 <= 2 * LATENCY, "demand p99 {p99:?} during the storm");
    // The storm really ran while demand reads were measured.
    let during = m.prefetch_completed.load(Relaxed) - before;
    assert!(
        during >= 100,
        "only {during} prefetches completed during the measurement"
    );
}

/// The controller's "demand wait" is measured: demand GETs that queue for
/// a fetch slot record how long; prefetch GETs do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_waits_for_fetch_slots_are_measured() {
    let _serial = SERIAL.lock().await;
    let vol = common::random_bytes(7, 16 << 20);
    let s = setup(&vol, 64 * 1024, 16).await;
    let metrics = Arc::new(Metrics::default());
    let cache = Arc::new(
        BlockCache::open(
            &s._dir.path().join("one-slot"),
            1 << 30,
            256 << 20,
            metrics.clone(),
        )
        .unwrap(),
    );
    let fetcher = Fetcher::new(s.store.clone(), cache, metrics, 1);
    let want = |b: u64| {
        let snap = s.snap.clone();
        async move {
            let block = snap.locate(b).await.unwrap().unwrap();
            let len = snap.block_len(b);
            snapahead::fetch::Want {
                block,
                len,
                range: 0..len,
            }
        }
    };
    // Two blocks far apart: two GETs, one slot, so the second waits for
    // the first (at least one store latency).
    let wants = vec![want(0).await, want(100).await];
    for r in fetcher.get_blocks(&wants).await {
        r.unwrap();
    }
    let (n, waited) = fetcher.demand_slot_wait();
    assert_eq!(n, 2);
    assert!(waited >= LATENCY * 3 / 4, "waited {waited:?}");
    let wants = vec![want(200).await, want(240).await];
    for r in fetcher.prefetch_blocks(&wants, 0).await {
        r.unwrap();
    }
    assert_eq!(
        fetcher.demand_slot_wait().0,
        2,
        "prefetch GETs are not demand waits"
    );
}

/// A volume whose 512 KiB blocks compress well (~30:1) yet all differ, so a
/// 4 MiB data object holds many of them, as an ext4 image of programs does.
fn compressible_volume(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| ((i / 4096) as u8).wrapping_mul(31) ^ ((i / (512 << 10)) as u8) ^ (i % 7) as u8)
        .collect()
}

/// Tells the daemon of a read before serving it (as the FUSE thread does)
/// and waits until the daemon has decided on it, so it sees the miss while
/// the block is still on its way; then serves the read.
async fn miss(s: &Setup, p: &Prefetcher, off: u64, len: usize) {
    p.on_read(0, off, len as u32);
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.status().reads_handled < p.status().reads_accepted {
        assert!(Instant::now() < deadline, "daemon never handled the read");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    read_range(&s.snap, &s.fetcher, off, len).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_where_hints_say_nothing_brings_its_neighbours_on_a_slow_link() {
    let _serial = SERIAL.lock().await;
    let bs = 512 * 1024u64;
    let vol = compressible_volume(32 * bs as usize);
    let s = setup(&vol, bs as u32, 16).await;
    assert!(s
        .snap
        .index()
        .groups
        .iter()
        .all(|g| g.hints.iter().all(|&h| h == 0.0)));
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
    // The first miss teaches the mount the link's round trip.
    miss(&s, &p, 0, 4096).await;
    quiesce(&p).await;
    let m = s.fetcher.metrics();
    let before = m.blocks_fetched.load(Relaxed);
    assert!(
        s.fetcher.link_estimate().rtt >= LATENCY,
        "{:?}",
        s.fetcher.link_estimate()
    );
    // A miss in the middle of the volume: its object's neighbours come along.
    miss(&s, &p, 20 * bs + 100, 4096).await;
    quiesce(&p).await;
    let fetched = m.blocks_fetched.load(Relaxed) - before;
    let unit = m.prefetch_unit_blocks.load(Relaxed);
    assert!(fetched > 1 && unit > 0, "fetched {fetched}, unit {unit}");
    // The block after it is now local (on disk once the writer has stored
    // it: the memory tier here holds two blocks): reading it fetches nothing.
    disk_writes_done(&s.fetcher).await;
    let (_, misses0) = lookups(m);
    let data = read_range(&s.snap, &s.fetcher, 21 * bs, 4096)
        .await
        .unwrap();
    assert!(data == vol[21 * bs as usize..21 * bs as usize + 4096]);
    assert_eq!(
        lookups(m).1,
        misses0,
        "block 21 was not brought by the unit"
    );
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_local_store_a_miss_fetches_exactly_its_block() {
    let _serial = SERIAL.lock().await;
    let bs = 512 * 1024u64;
    let vol = compressible_volume(32 * bs as usize);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.img");
    common::write(&src, &vol);
    let url = format!("file://{}", dir.path().join("store").display());
    let store = Store::open(&url, &Default::default(), dir.path()).unwrap();
    assert!(store.is_local());
    let name = SnapshotName::parse("v").unwrap();
    let mut o = CreateOptions::new(name.clone(), &src);
    o.block_size = Some(bs as u32);
    create(&store, &o).await.unwrap();
    let s = Setup {
        snap: Arc::new(Snapshot::open(&store, &name).await.unwrap()),
        fetcher: fresh_fetcher(&store, dir.path()),
        store,
        _dir: dir,
    };
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
    for b in [0u64, 20, 5] {
        miss(&s, &p, b * bs + 100, 4096).await;
    }
    quiesce(&p).await;
    let m = s.fetcher.metrics();
    assert_eq!(m.blocks_fetched.load(Relaxed), 3);
    assert_eq!(m.prefetch_unit_blocks.load(Relaxed), 0);
    drop(p);
}

fn hydration(p: &Prefetcher) -> HydrationStats {
    p.status().snapshots[0]
        .hydration
        .expect("hydration reported")
}

/// Waits (at most 60 s) until hydration reaches a state other than running.
async fn hydration_ends(p: &Prefetcher) -> HydrationStats {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = hydration(p);
        if h.state != HydrationState::Running && p.status().jobs_running == 0 {
            return h;
        }
        assert!(Instant::now() < deadline, "hydration still running: {h:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the disk writer has handled every block that was fetched.
async fn disk_writes_done(f: &Fetcher) {
    let m = f.metrics();
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.cache_writes_done.load(Relaxed) < m.blocks_fetched.load(Relaxed) {
        assert!(Instant::now() < deadline, "disk writes pending");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydration_fetches_a_small_snapshot_whole_and_a_remount_only_the_rest() {
    let _serial = SERIAL.lock().await;
    let bs = 512 * 1024u64;
    let blocks = 48u64;
    let vol = compressible_volume((blocks * bs) as usize);
    let s = setup(&vol, bs as u32, 16).await;
    let cache_dir = s._dir.path().join("hydrate-cache");
    // First mount: hydration capped at a rate that takes seconds, stopped
    // part-way.
    let f1 = fetcher_on(&s.store, &cache_dir, 1 << 30);
    let slow = PrefetchConfig {
        hydrate_rate: bytesize::ByteSize::kib(256),
        ..Default::default()
    };
    let p1 = Prefetcher::start(vec![s.snap.clone()], f1.clone(), slow);
    let deadline = Instant::now() + Duration::from_secs(30);
    while f1.metrics().hydrate_blocks.load(Relaxed) < 4 {
        assert!(
            Instant::now() < deadline,
            "no hydration: {:?}",
            hydration(&p1)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p1.shutdown();
    // Jobs already dispatched finish on their own; wait for them to land.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p1.has_stopped() {
        assert!(Instant::now() < deadline, "daemon did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    disk_writes_done(&f1).await;
    let first = f1.metrics().blocks_fetched.load(Relaxed);
    assert!(first < blocks, "the rate cap did not hold: {first} blocks");
    drop(p1);
    drop(f1);
    // Second mount, same cache, no cap: it fetches exactly the rest.
    let f2 = fetcher_on(&s.store, &cache_dir, 1 << 30);
    let cached = {
        let all = s.snap.all_blocks().await.unwrap();
        all.iter()
            .filter(|b| f2.cache().contains(&b.checksum))
            .count() as u64
    };
    assert!(cached >= 4, "{cached} blocks survived the first mount");
    let p2 = Prefetcher::start(vec![s.snap.clone()], f2.clone(), Default::default());
    let h = hydration_ends(&p2).await;
    assert_eq!(h.state, HydrationState::Done, "{h:?}");
    assert_eq!(h.hydrated_bytes, h.total_bytes);
    assert_eq!(h.percent, 100.0);
    let m = f2.metrics();
    assert_eq!(m.blocks_fetched.load(Relaxed), blocks - cached);
    assert_eq!(m.hydrate_blocks.load(Relaxed), blocks - cached);
    // Every block is local now (once the disk writer has stored the last
    // ones: hydrated blocks enter memory only into free room): a read of
    // each fetches nothing.
    disk_writes_done(&f2).await;
    for b in 0..blocks {
        read_range(&s.snap, &f2, b * bs, 4096).await.unwrap();
    }
    assert_eq!(m.misses.load(Relaxed), 0);
    drop(p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydration_stops_at_half_the_disk_cache() {
    let _serial = SERIAL.lock().await;
    let bs = 512 * 1024u64;
    let vol = compressible_volume((32 * bs) as usize);
    let s = setup(&vol, bs as u32, 16).await;
    let disk = 8 << 20; // 16 MiB of snapshot, 8 MiB of disk cache
                        // auto: does not fit in half the cache, so it does not start.
    let f = fetcher_on(&s.store, &s._dir.path().join("c1"), disk);
    let p = Prefetcher::start(vec![s.snap.clone()], f.clone(), Default::default());
    quiesce(&p).await;
    assert_eq!(hydration(&p).state, HydrationState::TooLarge);
    assert_eq!(f.metrics().blocks_fetched.load(Relaxed), 0);
    p.shutdown();
    // always: hydrates up to half the cache, then stops.
    let f = fetcher_on(&s.store, &s._dir.path().join("c2"), disk);
    let always = PrefetchConfig {
        hydrate: HydrateMode::Always,
        ..Default::default()
    };
    let p = Prefetcher::start(vec![s.snap.clone()], f.clone(), always);
    let h = hydration_ends(&p).await;
    assert_eq!(h.state, HydrationState::Capped, "{h:?}");
    let fetched = f.metrics().hydrate_bytes.load(Relaxed);
    assert!(
        fetched > 0 && fetched <= disk / 2,
        "hydrated {fetched} bytes"
    );
    assert!(
        fetched + 16 * bs > disk / 2,
        "stopped early: {fetched} bytes"
    );
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_read_during_hydration_is_served_before_queued_hydration() {
    let _serial = SERIAL.lock().await;
    let bs = 512 * 1024u64;
    let blocks = 64u64;
    let vol = compressible_volume((blocks * bs) as usize);
    let s = setup(&vol, bs as u32, 4).await;
    // Hydration in block order, slowed so that it takes seconds.
    let slow = PrefetchConfig {
        hydrate_rate: bytesize::ByteSize::kib(512),
        ..Default::default()
    };
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), slow);
    let m = s.fetcher.metrics();
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.hydrate_blocks.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no hydration");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The last block: hydration's walk reaches it last.
    let off = (blocks - 1) * bs;
    let data = read_range(&s.snap, &s.fetcher, off, 4096).await.unwrap();
    assert!(data == vol[off as usize..off as usize + 4096]);
    let h = hydration(&p);
    assert_eq!(m.misses.load(Relaxed), 1, "the read was a miss");
    assert_eq!(h.state, HydrationState::Running, "{h:?}");
    assert!(h.percent < 50.0, "hydration was not still queued: {h:?}");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrained_ext4_snapshot_fetches_its_metadata_and_a_files_rest() {
    let _serial = SERIAL.lock().await;
    if !common::which("mkfs.ext4") {
        common::skip("ext4 prior at mount", "mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_tree, img) = common::ext4_image(dir.path(), 64);
    let vol = std::fs::read(&img).unwrap();
    let bs = 512 * 1024u64;
    let s = setup(&vol, bs as u32, 16).await;
    let prior = s.snap.index().prior.clone().expect("ext4 prior");
    assert!(s.snap.index().warmup.is_empty());
    let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
    quiesce(&p).await;
    disk_writes_done(&s.fetcher).await;
    // Every stored metadata block is local before any read.
    let mut stored_meta = 0;
    for b in prior.metadata.iter().flat_map(|r| r.blocks()) {
        if let Some(r) = s.snap.locate(b).await.unwrap() {
            stored_meta += 1;
            assert!(
                s.fetcher.cache().contains(&r.checksum),
                "metadata block {b}"
            );
        }
    }
    assert!(stored_meta > 0);
    let m = s.fetcher.metrics();
    assert_eq!(m.misses.load(Relaxed), 0);
    // The first read of a multi-block file brings the rest of it (the
    // largest file: its later blocks are not metadata blocks).
    let file = prior
        .files
        .iter()
        .max_by_key(|f| f.iter().map(|r| r.count).sum::<u32>())
        .unwrap();
    let blocks: Vec<u64> = file.iter().flat_map(|r| r.blocks()).collect();
    let mut rest = Vec::new();
    for &b in &blocks[1..] {
        let r = s.snap.locate(b).await.unwrap().unwrap();
        if !s.fetcher.cache().contains(&r.checksum) {
            rest.push(r);
        }
    }
    assert!(!rest.is_empty(), "the whole file was metadata: {blocks:?}");
    miss(&s, &p, blocks[0] * bs, 4096).await;
    quiesce(&p).await;
    disk_writes_done(&s.fetcher).await;
    for r in &rest {
        assert!(
            s.fetcher.cache().contains(&r.checksum),
            "block {} of the file",
            r.block_id
        );
    }
    assert_eq!(m.prefetch_unit_blocks.load(Relaxed), rest.len() as u64);
    drop(p);
}

/// A mounted index with block masks: a read of a group prefetches the
/// blocks its mask names, not the rest of the group; and a workload
/// group's warm-up comes once the first reads match its signature, the
/// other workload's never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_prefetches_masked_blocks_and_the_matching_workload_only() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    let vol = common::random_bytes(9, 256 * bs as usize);
    let s = setup(&vol, bs as u32, 16).await;
    const S: u64 = 1_000_000_000;
    // Two workloads share a start (blocks 0-3). A then reads 32-35 at
    // once and 128-135 5 s later (within the warm-up's 10 s, beyond the
    // 2 s window: only its workload warm-up can bring them), and later
    // blocks 100-101 of group 6; B reads 64-67, then 192-199.
    let workload = |own: std::ops::Range<u64>, late: std::ops::Range<u64>| {
        (0..4u64)
            .chain(own)
            .enumerate()
            .map(|(i, b)| (i as u64 * 1_000_000, b))
            .chain(late.map(|b| (5 * S + b, b)))
            .collect::<Vec<_>>()
    };
    let a = || Session {
        events: workload(32..36, 128..136)
            .into_iter()
            .chain([(20 * S, 100), (20 * S + 1, 101)])
            .collect(),
    };
    let b = || Session {
        events: workload(64..68, 192..200),
    };
    let (snap, fetcher, p) = learn_and_mount(&s, &[a(), b(), a(), b()], &[2000]).await;
    let ix = snap.index();
    assert_eq!(ix.warmup_groups.len(), 2, "{:?}", ix.warmup_groups);
    let core: Vec<u64> = ix.warmup.iter().flat_map(|w| w.blocks(16)).collect();
    assert_eq!(core, vec![0, 1, 2, 3]);
    quiesce(&p).await;
    let m = fetcher.metrics();
    // The core and each group's two probes (its first signature blocks).
    let mut probes = snapahead::predict::warmup::probes(ix);
    probes.sort_unstable();
    assert_eq!(probes, vec![32, 33, 64, 65]);
    assert_eq!(
        m.prefetch_warmup_blocks.load(Relaxed),
        8,
        "the core and the probes only"
    );
    // A session of A: its first own blocks match A's signature.
    let sig = &ix
        .warmup_groups
        .iter()
        .find(|g| g.signature.contains(&32))
        .expect("A's group")
        .signature;
    assert_eq!(sig[..2], [32, 33]);
    for blk in [32, 33] {
        let off = blk * bs;
        p.on_read(0, off, 4096);
        let data = read_range(&snap, &fetcher, off, 4096).await.unwrap();
        assert!(data == vol[off as usize..off as usize + 4096]);
    }
    quiesce(&p).await;
    let cached = |blk: u64| {
        let snap = snap.clone();
        let fetcher = fetcher.clone();
        async move {
            let key = snap.locate(blk).await.unwrap().unwrap().checksum;
            fetcher.cache().contains(&key)
        }
    };
    for blk in 128..136u64 {
        assert!(cached(blk).await, "A's late block {blk} not warmed up");
    }
    let w = m.prefetch_warmup_blocks.load(Relaxed);
    // The core, the probes and A's late 8 (34-35 go to whichever of
    // warm-up and the group's hint queued them first).
    assert!((16..=18).contains(&w), "warm-up prefetched {w}");
    // Of B, only its probes.
    for blk in (66..68u64).chain(192..200) {
        assert!(!cached(blk).await, "B's block {blk} fetched");
    }
    // Group 6: a read of block 100 brings 101 (its mask), not 96-111.
    let before = m.prefetch_hint_blocks.load(Relaxed);
    p.on_read(0, 100 * bs, 4096);
    read_range(&snap, &fetcher, 100 * bs, 4096).await.unwrap();
    quiesce(&p).await;
    assert_eq!(m.prefetch_hint_blocks.load(Relaxed) - before, 1);
    let key = snap.locate(101).await.unwrap().unwrap().checksum;
    assert!(fetcher.cache().contains(&key));
    let key = snap.locate(102).await.unwrap().unwrap().checksum;
    assert!(!fetcher.cache().contains(&key));
}

/// Which of `blocks` of the setup's snapshot are in its cache.
async fn cached_blocks(
    s: &Setup,
    blocks: impl IntoIterator<Item = u64>,
) -> std::collections::HashSet<u64> {
    cached_blocks_of(&s.snap, &s.fetcher, blocks).await
}

/// A 64 MiB ext4 image of `walk/d0..d7`, eight files of 40 kB each. The
/// hash seed is fixed, so `readdir` order (and the prior's) is the same in
/// every run.
fn walk_image(dir: &std::path::Path) -> Vec<u8> {
    let tree = dir.join("tree");
    for d in 0..8 {
        let p = tree.join(format!("walk/d{d}"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..8 {
            let seed = (d * 8 + f) as u64;
            std::fs::write(p.join(format!("f{f}")), common::random_bytes(seed, 40_000)).unwrap();
        }
    }
    let img = dir.join("vol.img");
    common::run(
        std::process::Command::new("truncate")
            .args(["-s", "64M"])
            .arg(&img),
    );
    common::run(
        std::process::Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-E",
                "hash_seed=5d8f4a0e-0d6c-4f3e-9b1a-7c2e9f3b1a42",
                "-d",
            ])
            .arg(&tree)
            .arg(&img),
    );
    std::fs::read(&img).unwrap()
}

/// The directories under `walk/` of a prior: its eight children.
fn walk_children(prior: &snapahead::format::FsPrior) -> Vec<usize> {
    let mut by_parent = std::collections::HashMap::<u32, Vec<usize>>::new();
    for (k, d) in prior.directories.iter().enumerate() {
        by_parent.entry(d.parent).or_default().push(k);
    }
    by_parent
        .values()
        .find(|v| v.len() == 8)
        .expect("walk/")
        .clone()
}

fn runs_blocks(runs: &[snapahead::format::BlockRun]) -> Vec<u64> {
    runs.iter().flat_map(|r| r.blocks()).collect()
}

/// No session recorded yet: a miss entering a directory brings the rest
/// of it on a slow link (the fetch unit's guess, under its credit) and
/// nothing of another directory; on a local store, exactly its block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrained_miss_in_a_directory_brings_its_rest_on_a_slow_link_only() {
    let _serial = SERIAL.lock().await;
    if !common::which("mkfs.ext4") {
        common::skip("untrained directory rest", "mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = walk_image(dir.path());
    let bs = 64 * 1024u64;
    for slow in [true, false] {
        let store_dir = tempfile::tempdir().unwrap();
        let s = if slow {
            setup(&vol, bs as u32, 16).await
        } else {
            let url = format!("file://{}", store_dir.path().join("store").display());
            let store = Store::open(&url, &Default::default(), store_dir.path()).unwrap();
            setup_on(store, &vol, bs as u32, 16).await
        };
        let prior = s.snap.index().prior.clone().expect("ext4 prior");
        let kids = walk_children(&prior);
        let blocks = |k: usize| runs_blocks(&prior.directories[k].blocks);
        let owned = |k: usize| runs_blocks(&prior.directories[k].owned);
        let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), no_hydration());
        quiesce(&p).await;
        // A first miss elsewhere, so the link is measured.
        miss(&s, &p, owned(kids[0])[0] * bs + 100, 4096).await;
        quiesce(&p).await;
        if slow {
            let link = s.fetcher.link_estimate();
            assert!(!link.local && link.rtt >= LATENCY, "{link:?}");
        }
        let m = s.fetcher.metrics();
        let (fetched0, unit0) = (
            m.blocks_fetched.load(Relaxed),
            m.prefetch_unit_blocks.load(Relaxed),
        );
        let (unseen, other) = (kids[6], kids[7]);
        let first = owned(unseen)[0];
        let cached_of = |ks: [usize; 2]| cached_blocks(&s, ks.into_iter().flat_map(blocks));
        // Some may be cached already (metadata, blocks shared with kids[0]).
        let before = cached_of([unseen, other]).await;
        miss(&s, &p, first * bs + 100, 4096).await;
        quiesce(&p).await;
        let cached = cached_of([unseen, other]).await;
        let rest: Vec<u64> = blocks(unseen).into_iter().filter(|&b| b != first).collect();
        // (Blocks of `other` shared with the directories read or guessed
        // before were brought with them: not this miss's doing.)
        let others: Vec<u64> = owned(other)
            .into_iter()
            .filter(|b| !blocks(unseen).contains(b) && !before.contains(b))
            .collect();
        assert!(!rest.is_empty() && !others.is_empty(), "{prior:?}");
        assert!(
            others.iter().all(|b| !cached.contains(b)),
            "slow {slow}: {cached:?}"
        );
        let fetched = m.blocks_fetched.load(Relaxed) - fetched0;
        let unit = m.prefetch_unit_blocks.load(Relaxed) - unit0;
        if slow {
            assert!(
                rest.iter().all(|b| cached.contains(b)),
                "{rest:?} vs {cached:?}"
            );
            let brought = rest.iter().filter(|b| !before.contains(b)).count();
            assert!(brought > 0, "{rest:?} were cached before");
            assert_eq!(unit, brought as u64, "the directory's rest, no more");
        } else {
            assert_eq!((fetched, unit), (1, 0), "a local store fetches the block");
        }
        drop(p);
    }
}

/// No session recorded yet, a slow link: a session that reads the rest
/// the unit brought of one directory and enters a sibling is walking the
/// tree, and the walk's subtree is hydrated at once (hydration's own start
/// delay is an hour here); a session that leaves the rest unread hands
/// nothing to hydration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_session_walking_a_tree_has_its_subtree_hydrated_at_once() {
    let _serial = SERIAL.lock().await;
    if !common::which("mkfs.ext4") {
        common::skip("walk to hydration", "mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = walk_image(dir.path());
    let bs = 64 * 1024u64;
    for walking in [true, false] {
        let s = setup(&vol, bs as u32, 16).await;
        let prior = s.snap.index().prior.clone().expect("ext4 prior");
        let kids = walk_children(&prior);
        let blocks = |k: usize| runs_blocks(&prior.directories[k].blocks);
        let owned = |k: usize| runs_blocks(&prior.directories[k].owned);
        let cfg = PrefetchConfig {
            hydrate_delay: Duration::from_secs(3600),
            ..Default::default()
        };
        let p = Prefetcher::start(vec![s.snap.clone()], s.fetcher.clone(), cfg);
        quiesce(&p).await;
        let m = s.fetcher.metrics();
        // The link measured, then one directory entered through a miss.
        miss(&s, &p, owned(kids[0])[0] * bs + 100, 4096).await;
        quiesce(&p).await;
        let first = owned(kids[1])[0];
        miss(&s, &p, first * bs + 100, 4096).await;
        quiesce(&p).await;
        if walking {
            for b in blocks(kids[1]).into_iter().filter(|&b| b != first) {
                miss(&s, &p, b * bs, 4096).await;
            }
            quiesce(&p).await;
        }
        assert_eq!(m.hydrate_blocks.load(Relaxed), 0, "before the delay");
        // A sibling entered.
        miss(&s, &p, owned(kids[2])[0] * bs + 100, 4096).await;
        quiesce(&p).await;
        let subtree: std::collections::BTreeSet<u64> =
            kids.iter().flat_map(|&k| blocks(k)).collect();
        if walking {
            assert_eq!(m.hydrate_walks.load(Relaxed), 1);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let cached = cached_blocks(&s, subtree.iter().copied()).await;
                if cached.len() == subtree.len() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "subtree not hydrated: {:?} missing, {:?}",
                    subtree
                        .iter()
                        .filter(|b| !cached.contains(b))
                        .collect::<Vec<_>>(),
                    hydration(&p)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(m.hydrate_blocks.load(Relaxed) > 0);
        } else {
            assert_eq!(m.hydrate_walks.load(Relaxed), 0);
            assert_eq!(m.hydrate_blocks.load(Relaxed), 0, "nothing walked");
        }
        drop(p);
    }
}

/// A directory walk learned from sessions that read whole directories:
/// on a real ext4 image, a miss in a directory no session read brings
/// that directory's files, and only those; sessions that read one block
/// per directory teach nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_in_an_unseen_directory_brings_it_where_sessions_walk_whole_directories() {
    let _serial = SERIAL.lock().await;
    if !common::which("mkfs.ext4") {
        common::skip("directory walks", "mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = walk_image(dir.path());
    let bs = 64 * 1024u64;
    for walks in [true, false] {
        let store_dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", store_dir.path().join("store").display());
        let store = Store::open(&url, &Default::default(), store_dir.path()).unwrap();
        let s = setup_on(store, &vol, bs as u32, 16).await;
        let prior = s.snap.index().prior.clone().expect("ext4 prior");
        // The eight directories of walk/: the parent with eight children.
        let mut by_parent = std::collections::HashMap::<u32, Vec<usize>>::new();
        for (k, d) in prior.directories.iter().enumerate() {
            by_parent.entry(d.parent).or_default().push(k);
        }
        let kids = by_parent
            .values()
            .find(|v| v.len() == 8)
            .expect("walk/")
            .clone();
        let blocks = |k: usize| -> Vec<u64> {
            prior.directories[k]
                .blocks
                .iter()
                .flat_map(|r| r.blocks())
                .collect()
        };
        let owned = |k: usize| -> Vec<u64> {
            prior.directories[k]
                .owned
                .iter()
                .flat_map(|r| r.blocks())
                .collect()
        };
        assert!(kids.iter().all(|&k| blocks(k).len() >= 4), "{prior:?}");
        // Two sessions over four directories: whole, or one block each.
        let session = |ds: &[usize]| Session {
            events: ds
                .iter()
                .flat_map(|&k| {
                    if walks {
                        blocks(k)
                    } else {
                        owned(k)[..1].to_vec()
                    }
                })
                .enumerate()
                .map(|(t, b)| (t as u64 * 1000, b))
                .collect(),
        };
        let sessions = [session(&kids[0..2]), session(&kids[2..4])];
        let (snap, fetcher, p) = learn_and_mount(&s, &sessions, &[2000]).await;
        quiesce(&p).await;
        let s = Setup { snap, fetcher, ..s };
        let (unseen, other) = (kids[6], kids[7]);
        let first = owned(unseen)[0];
        let cached_of = |ks: [usize; 2]| cached_blocks(&s, ks.into_iter().flat_map(blocks));
        miss(&s, &p, first * bs + 100, 4096).await;
        quiesce(&p).await;
        let cached = cached_of([unseen, other]).await;
        let rest: Vec<u64> = blocks(unseen).into_iter().filter(|&b| b != first).collect();
        let others: Vec<u64> = owned(other)
            .into_iter()
            .filter(|b| !blocks(unseen).contains(b))
            .collect();
        assert!(
            others.iter().all(|b| !cached.contains(b)),
            "{walks}: {cached:?}"
        );
        if walks {
            assert!(
                rest.iter().all(|b| cached.contains(b)),
                "{rest:?} vs {cached:?}"
            );
        } else {
            assert!(
                rest.iter().all(|b| !cached.contains(b)),
                "{rest:?} vs {cached:?}"
            );
        }
        drop(p);
    }
}

/// A trained index locates its warm-up's blocks (format version 5), so a
/// mount fetches its warm-up without a manifest page GET before the data:
/// one round trip less before the first byte. The same index written as
/// version 4 still mounts and warms up, through its pages. By default a
/// mount from a remote store also fetches a small snapshot's pages at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_mount_fetches_its_warm_up_without_a_manifest_page() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    let vol = common::random_bytes(7, 512 * bs as usize);
    let s = setup(&vol, bs as u32, 4).await;
    let (_, session) = scattered_session(40);
    let (snap0, _, p0) = learn_and_mount(&s, &[session], &[2000, 10_000]).await;
    drop(p0);
    // Manifest pages on first use only, so every page GET counted is one
    // a lookup needed.
    let cfg = PrefetchConfig {
        manifest_pages: 0,
        ..no_hydration()
    };
    let name = SnapshotName::parse("v").unwrap();
    let start = |cfg: PrefetchConfig| {
        let (store, dir) = (s.store.clone(), s._dir.path().to_path_buf());
        let name = name.clone();
        async move {
            let snap = Arc::new(Snapshot::open(&store, &name).await.unwrap());
            let fetcher = fresh_fetcher(&store, &dir);
            let p = Prefetcher::start(vec![snap.clone()], fetcher.clone(), cfg);
            (snap, fetcher, p)
        }
    };
    let (snap, fetcher, p) = start(cfg.clone()).await;
    assert_eq!(snap.index(), snap0.index());
    let warm = MountStart::of(snap.index(), true).first_blocks(usize::MAX);
    assert!(warm.len() >= 30, "warm-up of {} blocks", warm.len());
    let mut sorted = warm.clone();
    sorted.sort_unstable();
    let located: Vec<u64> = snap.index().located.blocks().collect();
    assert_eq!(located, sorted);
    quiesce(&p).await;
    // (The inline blocks are admitted beside the jobs quiesce waits for.)
    let cached = |snap: Arc<Snapshot>, fetcher: Arc<Fetcher>, warm: Vec<u64>| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        for b in warm {
            let r = snap.locate(b).await.unwrap().unwrap();
            while !fetcher.cache().contains(&r.checksum) {
                assert!(Instant::now() < deadline, "warm-up block {b} not cached");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    cached(snap.clone(), fetcher.clone(), warm.clone()).await;
    assert_eq!(snap.pages_fetched(), 0, "the warm-up needed a page");
    // The first blocks came with the index (incompressible 64 KiB blocks:
    // four fit in its 256 KiB), and only the rest were fetched.
    let ix = snap.index();
    let inline: Vec<u64> = ix.inline.iter().map(|b| b.block_id).collect();
    assert_eq!(inline.len(), 4, "{inline:?}");
    let m = fetcher.metrics();
    assert_eq!(m.inline_blocks.load(Relaxed), 4);
    let rest: u64 = ix
        .located
        .entries
        .iter()
        .filter(|e| !inline.contains(&e.block_id))
        .map(|e| e.length as u64)
        .sum();
    assert_eq!(m.bytes_fetched.load(Relaxed), rest);
    // The index's copies are what the pages say.
    for &b in &warm {
        let from_pages = snap.locate_in_pages(b).await.unwrap();
        assert_eq!(snap.locate(b).await.unwrap(), from_pages, "block {b}");
    }
    assert!(snap.pages_fetched() > 0);
    drop(p);

    // By default, the pages come at mount, without any read.
    let (snap, _fetcher, p) = start(no_hydration()).await;
    quiesce(&p).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while snap.pages_fetched() < snap.header().page_count as u64 {
        assert!(Instant::now() < deadline, "pages not loaded at mount");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(p);

    // Version 4: nothing located; the warm-up goes through its pages.
    let v4 = snap.index().encode_version(4);
    s.store
        .put(&snapahead::format::keys::index(&name), v4.into())
        .await
        .unwrap();
    let (snap4, fetcher4, p4) = start(cfg).await;
    assert!(snap4.index().located.is_empty());
    assert_eq!(snap4.index().warmup, snap.index().warmup);
    quiesce(&p4).await;
    assert!(snap4.pages_fetched() > 0);
    cached(snap4, fetcher4, warm).await;
    drop(p4);
}

/// Manifest pages at mount are bounded for all snapshots together: with a
/// budget of one page, the first snapshot (one page) gets it and the second
/// fetches its page on first use only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_pages_at_mount_stay_within_their_budget_across_snapshots() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    let s = setup(&common::random_bytes(8, 32 * bs as usize), bs as u32, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("w.img");
    common::write(&src, &common::random_bytes(9, 32 * bs as usize));
    let w = SnapshotName::parse("w").unwrap();
    let mut o = CreateOptions::new(w.clone(), &src);
    o.block_size = Some(bs as u32);
    create(&s.store, &o).await.unwrap();
    let v = Arc::new(
        Snapshot::open(&s.store, &SnapshotName::parse("v").unwrap())
            .await
            .unwrap(),
    );
    let w = Arc::new(Snapshot::open(&s.store, &w).await.unwrap());
    assert_eq!((v.header().page_count, w.header().page_count), (1, 1));
    let cfg = PrefetchConfig {
        manifest_pages: 1,
        ..no_hydration()
    };
    let p = Prefetcher::start(vec![v.clone(), w.clone()], s.fetcher.clone(), cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while v.pages_fetched() < 1 {
        assert!(
            Instant::now() < deadline,
            "the first snapshot's page not loaded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    quiesce(&p).await;
    assert_eq!(
        w.pages_fetched(),
        0,
        "the second snapshot's page was over budget"
    );
    // Its first read still finds its block, through the page.
    assert!(w.locate(3).await.unwrap().is_some());
    assert_eq!(w.pages_fetched(), 1);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_up_follows_the_session_a_stretch_ahead() {
    let _serial = SERIAL.lock().await;
    let bs = 64 * 1024u64;
    // 128 MiB at first: 2048 blocks of 64 KiB, 128 groups of 16.
    let stretch = snapahead::predict::timeline::lookahead_blocks(bs as u32) as u64;
    assert_eq!(stretch, 2048);
    let vol = common::random_bytes(11, 172 * 16 * bs as usize);
    let s = setup(&vol, bs as u32, 16).await;
    // Both training sessions mount (group 0), scan groups 2-161 whole,
    // then start a program (group 170): one workload, a warm-up of all of it.
    let scan = 32..32 + 160 * 16u64;
    let program = 2720..2730u64;
    let session = || Session {
        events: (0..4u64)
            .chain(scan.clone())
            .chain(program.clone())
            .enumerate()
            .map(|(i, b)| (i as u64 * 100_000, b))
            .collect(),
    };
    let (snap, fetcher, p) = learn_and_mount(&s, &[session(), session()], &[2000]).await;
    let warm = MountStart::of(snap.index(), true).first_blocks(usize::MAX);
    assert_eq!(warm.len(), 4 + 2560 + 10, "the warm-up is all of both");
    let m = fetcher.metrics().clone();
    let fetched = || m.prefetch_warmup_blocks.load(Relaxed) + m.inline_blocks.load(Relaxed);
    quiesce(&p).await;
    // At mount, one stretch only: entries until it is reached (the last
    // may pass it by up to an entry of 16), and the index's inline blocks.
    let first = fetched();
    assert!(
        (stretch..=stretch + 16 + 8).contains(&first),
        "{first} blocks at mount"
    );
    // The program alone: the mount's block, then a jump to the program's
    // entry, which comes next; the scan's entries beyond the first stretch
    // never come, and the stretch does not grow (the session reads little
    // of it).
    for b in [0, program.start] {
        p.on_read(0, b * bs, 4096);
        read_range(&snap, &fetcher, b * bs, 4096).await.unwrap();
        quiesce(&p).await;
    }
    let cached = cached_blocks_of(&snap, &fetcher, scan.clone().chain(program.clone())).await;
    assert!(program.clone().all(|b| cached.contains(&b)), "{cached:?}");
    assert!(
        !cached.contains(&(scan.end - 1)),
        "the scan's end was fetched"
    );
    let total = fetched();
    assert!(
        total <= first + 10,
        "{total} warm-up blocks for a program of 10"
    );
    drop(p);

    // The trained workload: it reads what the stretch releases, and the
    // stretch slides (and grows) with it: the whole warm-up comes.
    let fetcher = fresh_fetcher(&s.store, s._dir.path());
    let p = Prefetcher::start(vec![snap.clone()], fetcher.clone(), no_hydration());
    for b in (0..4).chain(scan.clone()) {
        p.on_read(0, b * bs, 4096);
    }
    quiesce(&p).await;
    let cached = cached_blocks_of(&snap, &fetcher, warm.iter().copied()).await;
    assert_eq!(cached.len(), warm.len(), "the trained session's warm-up");
}

/// Which of `blocks` of `snap` are in `fetcher`'s cache.
async fn cached_blocks_of(
    snap: &Snapshot,
    fetcher: &Fetcher,
    blocks: impl IntoIterator<Item = u64>,
) -> std::collections::HashSet<u64> {
    let mut cached = std::collections::HashSet::new();
    for b in blocks {
        if let Some(r) = snap.locate(b).await.unwrap() {
            if fetcher.cache().contains(&r.checksum) {
                cached.insert(b);
            }
        }
    }
    cached
}
