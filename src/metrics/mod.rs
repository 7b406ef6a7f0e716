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

/// Latency buckets (seconds): from a memory hit (~µs) to a slow S3 GET.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
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
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// (upper bound, cumulative count) pairs, then the total count and sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cum = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Relaxed);
            buckets.push((*b, cum));
        }
        cum += self.counts[LATENCY_BUCKETS.len()].load(Relaxed);
        (buckets, cum, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }

    /// An estimate of quantile `q` (upper bound of its bucket), seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (buckets, total, _) = self.snapshot();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        Some(
            buckets
                .iter()
                .find(|(_, c)| *c >= want)
                .map_or(f64::INFINITY, |(b, _)| *b),
        )
    }

    pub fn stats(&self) -> HistogramStats {
        let (buckets, count, sum_seconds) = self.snapshot();
        HistogramStats {
            count,
            sum_seconds,
            p50_seconds: self.quantile(0.5),
            p99_seconds: self.quantile(0.99),
            buckets,
        }
    }
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
    blocks_fetched: "blocks fetched from the store",
    bytes_fetched: "bytes fetched from the store (compressed)",
    fetch_errors: "GETs that failed after retries",
    checksum_errors: "fetched blocks whose checksum did not match",
    decode_errors: "fetched blocks of the wrong stored length or that failed to decompress",
    cache_corrupt: "disk cache files found corrupt and dropped",
    cache_write_errors: "blocks that could not be written to the disk cache",
    cache_writes_skipped: "blocks not written to the disk cache because its writer was behind",
    page_fetches: "manifest pages fetched",
    prefetch_issued: "blocks queued for prefetch",
    prefetch_completed: "blocks prefetched into the cache",
    prefetch_bytes: "bytes prefetched (uncompressed)",
    prefetch_warmup_blocks: "blocks prefetched from the warm-up list",
    prefetch_readahead_blocks: "blocks prefetched by sequential read-ahead",
    prefetch_hint_blocks: "blocks prefetched for hints and successors",
    prefetch_used: "prefetched blocks later read by a demand read",
    prefetch_used_bytes: "bytes of prefetched blocks later read",
    prefetch_wasted: "prefetched blocks evicted unread",
    prefetch_wasted_bytes: "bytes of prefetched blocks evicted unread",
    prefetch_dropped: "queued prefetches dropped (already cached or no longer useful)",
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
        assert_eq!(m.fetch_latency.quantile(0.5), Some(0.005));
        let r = m.report(CacheGauges::default());
        assert_eq!(r.counters.reads, 1);
        assert_eq!(r.counters.bytes_served, 4096);
        assert_eq!(r.fetch_latency.count, 2);
        assert_eq!(r.fetch_latency.buckets[4], (0.005, 1));
    }
}
