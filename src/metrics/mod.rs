//! Counters and histograms of a mount, and the one type that reports them.
//!
//! Plain atomics, no registry: the hot path does one relaxed `fetch_add` per
//! event, and the set of metrics is fixed. [`Metrics`] is what the code
//! counts into; [`Counters`] is a plain copy of it. What a mount reports —
//! counters, cache gauges, latency histograms, the snapshots shown, the
//! prefetch daemon's state — is one serde type, [`stats::MountStats`],
//! produced by the mount and consumed by `snapahead stats` (JSON, the
//! mount's `.snapahead-stats` file), by [`prometheus::render`] (text for
//! `GET /metrics`) and by [`server`] (the small HTTP endpoint). Producer and
//! consumers share the type, not string keys.

pub mod prometheus;
pub mod server;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency histogram buckets: upper bounds 0.1 ms × 2^(k/4), k = 0 ..
/// [`BUCKETS`]: four buckets per doubling, from 0.1 ms (a memory hit is
/// below it) to ~53 s (past any retry budget). Each bucket is 19% wider
/// than the one before, so 20 ms and 40 ms fall four buckets apart and a
/// quantile interpolated within its bucket is off by less than that; a
/// decade-spaced set (100 ms, 250 ms, 1 s) would report every fetch on a
/// 20 ms link as "100 ms".
pub const BUCKETS: usize = 77;
const FIRST_BOUND: f64 = 1e-4;
const PER_DOUBLING: f64 = 4.0;

/// Upper bound of bucket `k`, seconds.
pub fn bucket_bound(k: usize) -> f64 {
    FIRST_BOUND * (k as f64 / PER_DOUBLING).exp2()
}

/// The bounds, computed once: observing a latency (twice per read) is then
/// a binary search, no logarithm.
static BOUNDS: std::sync::LazyLock<[f64; BUCKETS]> =
    std::sync::LazyLock::new(|| std::array::from_fn(bucket_bound));

#[cfg(test)]
pub(crate) fn bucket_of_for_tests(s: f64) -> usize {
    bucket_of(s)
}

/// The bucket a duration falls in (`BUCKETS`: above the last bound).
fn bucket_of(s: f64) -> usize {
    BOUNDS.partition_point(|&b| b < s)
}

pub struct Histogram {
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// A histogram as reported: cumulative buckets, count, sum, two quantiles.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistogramStats {
    pub count: u64,
    pub sum_seconds: f64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// (upper bound in seconds, cumulative count), ascending.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.counts[bucket_of(d.as_secs_f64())].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// (upper bound, cumulative count) pairs, then the total count and sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cum = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (b, c) in BOUNDS.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            buckets.push((*b, cum));
        }
        cum += self.counts[BUCKETS].load(Relaxed);
        (buckets, cum, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }

    /// An estimate of quantile `q`, seconds: linear within the bucket that
    /// holds it (the last bound when it lies above every bucket).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (buckets, total, _) = self.snapshot();
        quantile_of(&buckets, total, q)
    }

    pub fn stats(&self) -> HistogramStats {
        let (buckets, count, sum_seconds) = self.snapshot();
        HistogramStats {
            count,
            sum_seconds,
            p50_seconds: quantile_of(&buckets, count, 0.5),
            p99_seconds: quantile_of(&buckets, count, 0.99),
            buckets,
        }
    }
}

/// Quantile `q` of cumulative `buckets` holding `total` observations.
fn quantile_of(buckets: &[(f64, u64)], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).max(1.0);
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, cum) in buckets {
        if cum as f64 >= want {
            let inside = (cum - below) as f64;
            let frac = if inside > 0.0 {
                (want - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * frac.clamp(0.0, 1.0));
        }
        lower = bound;
        below = cum;
    }
    Some(lower)
}

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        #[derive(Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
            /// Time to fetch a block run from the store.
            pub fetch_latency: Histogram,
            /// Time to serve a FUSE read.
            pub read_latency: Histogram,
        }

        /// The counters of [`Metrics`] at one moment.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counters {
            $(#[doc = $help] pub $name: u64,)*
        }

        impl Metrics {
            pub fn counters(&self) -> Counters {
                Counters { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl Counters {
            /// (name, help, value) of every counter, for rendering.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name),)*]
            }
        }
    };
}

counters! {
    reads: "FUSE read requests served",
    bytes_served: "bytes returned to readers",
    read_errors: "reads answered with EIO",
    hole_blocks: "block reads answered with zeros (holes), no fetch",
    memory_hits: "block reads served from the memory tier",
    disk_hits: "block reads served from the disk cache",
    disk_promotions: "whole blocks read from the disk cache and kept in the memory tier",
    disk_readahead_blocks: "disk-cache blocks read into the page cache ahead of a sequential reader",
    misses: "block reads that needed the store",
    fetches: "GET requests for data (one per run of adjacent blocks)",
    blocks_fetched: "blocks fetched from the store, or decoded from the index's inline blocks",
    inline_blocks: "blocks decoded from the stored bytes the index carries (no GET)",
    bytes_fetched: "bytes fetched from the store (compressed)",
    fetch_errors: "GETs that failed after retries",
    checksum_errors: "fetched blocks whose checksum did not match",
    decode_errors: "fetched blocks of the wrong stored length or that failed to decompress",
    cache_corrupt: "disk cache files found corrupt and dropped",
    cache_write_errors: "blocks that could not be written to the disk cache",
    cache_writes_skipped: "blocks not written to the disk cache because its writer was behind",
    cache_writes_done: "blocks the disk cache writer has handled (stored, already there, or failed)",
    page_fetches: "manifest pages fetched",
    snapshots_unreadable: "snapshots in the store not served because their index could not be read",
    prefetch_issued: "blocks queued for prefetch",
    prefetch_completed: "blocks prefetched into the cache",
    prefetch_bytes: "bytes prefetched (uncompressed)",
    prefetch_warmup_blocks: "blocks prefetched from the warm-up list",
    prefetch_readahead_blocks: "blocks prefetched by sequential read-ahead",
    prefetch_hint_blocks: "blocks prefetched for hints and successors",
    prefetch_unit_blocks: "blocks prefetched as neighbours of a demand miss (the link-sized fetch unit)",
    prefetch_unit_used: "fetch-unit blocks later read by a demand read",
    hydrate_blocks: "blocks fetched by background hydration",
    hydrate_bytes: "bytes fetched by background hydration (uncompressed)",
    hydrate_walks: "directory-tree walks the fetch unit handed to hydration (their subtree first)",
    prefetch_used: "prefetched blocks later read by a demand read",
    prefetch_used_bytes: "bytes of prefetched blocks later read",
    prefetch_wasted: "prefetched blocks evicted unread",
    prefetch_wasted_bytes: "bytes of prefetched blocks evicted unread",
    prefetch_dropped: "queued prefetches dropped (already cached or no longer useful)",
    readahead_used: "read-ahead blocks read within the read-ahead horizon of their prefetch",
    readahead_unused: "read-ahead blocks not read within the read-ahead horizon of their prefetch",
}

/// Gauges owned by the cache, sampled when reporting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheGauges {
    pub disk_bytes: u64,
    pub disk_entries: u64,
    pub disk_capacity: u64,
    pub memory_bytes: u64,
    pub memory_entries: u64,
    pub memory_capacity: u64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Everything counted, with the cache's gauges, as reported.
    pub fn report(&self, cache: CacheGauges) -> stats::MetricsStats {
        stats::MetricsStats {
            counters: self.counters(),
            cache,
            fetch_latency: self.fetch_latency.stats(),
            read_latency: self.read_latency.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_counter_copy() {
        let m = Metrics::default();
        Metrics::inc(&m.reads);
        Metrics::add(&m.bytes_served, 4096);
        m.fetch_latency.observe(Duration::from_millis(3));
        m.fetch_latency.observe(Duration::from_millis(30));
        let r = m.report(CacheGauges::default());
        assert_eq!(r.counters.reads, 1);
        assert_eq!(r.counters.bytes_served, 4096);
        assert_eq!(r.fetch_latency.count, 2);
        assert_eq!(r.fetch_latency.buckets.len(), BUCKETS);
    }

    #[test]
    fn buckets_tell_20_ms_from_40_ms_and_quantiles_interpolate() {
        for k in 1..BUCKETS {
            let b = bucket_bound(k);
            assert_eq!(bucket_of(b), k, "a bound is in its own bucket");
            assert_eq!(bucket_of(b * 1.000001), k + 1);
            assert!((b / bucket_bound(k - 1) - 2f64.powf(0.25)).abs() < 1e-9);
        }
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(1e9), BUCKETS);
        assert!(bucket_bound(BUCKETS - 1) > 50.0);
        assert!(bucket_of(0.040) >= bucket_of(0.020) + 4);
        // 100 fetches at 20 ms, one at 40 ms: p50 within a bucket of 20 ms,
        // p99 no longer "the bucket's bound of 100 ms".
        let h = Histogram::default();
        for _ in 0..100 {
            h.observe(Duration::from_millis(20));
        }
        h.observe(Duration::from_millis(40));
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.0168..=0.0201).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 < 0.0216, "p99 {p99} is in the 20 ms bucket");
        assert!((h.quantile(1.0).unwrap() - 0.040).abs() < 0.008);
        // Empty: no quantile; all above the last bound: that bound.
        assert_eq!(Histogram::default().quantile(0.5), None);
        let slow = Histogram::default();
        slow.observe(Duration::from_secs(3600));
        assert_eq!(slow.quantile(0.5), Some(bucket_bound(BUCKETS - 1)));
    }
}
