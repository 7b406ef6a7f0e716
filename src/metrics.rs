//! Counters and histograms of a mount, rendered as Prometheus text
//! (`--metrics ADDR`, `GET /metrics`) and as JSON (the mount's
//! `.snapahead-stats` file, read by `snapahead stats`).
//!
//! Plain atomics, no registry: the hot path does one relaxed `fetch_add` per
//! event, and the set of metrics is fixed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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

        impl Metrics {
            fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Relaxed)),)*]
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
    disk_readahead_blocks: "disk-cache blocks read into the page cache ahead of a sequential reader",
    misses: "block reads that needed the store",
    fetches: "GET requests for data (one per run of adjacent blocks)",
    blocks_fetched: "blocks fetched from the store",
    bytes_fetched: "bytes fetched from the store (compressed)",
    fetch_errors: "GETs that failed after retries",
    checksum_errors: "fetched blocks whose checksum did not match",
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

/// Gauges owned by the cache, sampled when rendering.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
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

    pub fn prometheus(&self, g: &CacheGauges) -> String {
        let mut s = String::new();
        for (name, help, v) in self.counters() {
            s += &format!("# HELP snapahead_{name}_total {help}\n# TYPE snapahead_{name}_total counter\nsnapahead_{name}_total {v}\n");
        }
        for (name, help, v) in [
            ("cache_disk_bytes", "bytes in the disk cache", g.disk_bytes),
            (
                "cache_disk_entries",
                "blocks in the disk cache",
                g.disk_entries,
            ),
            (
                "cache_disk_capacity_bytes",
                "disk cache bound",
                g.disk_capacity,
            ),
            (
                "cache_memory_bytes",
                "bytes in the memory tier",
                g.memory_bytes,
            ),
            (
                "cache_memory_entries",
                "blocks in the memory tier",
                g.memory_entries,
            ),
            (
                "cache_memory_capacity_bytes",
                "memory tier bound",
                g.memory_capacity,
            ),
        ] {
            s += &format!("# HELP snapahead_{name} {help}\n# TYPE snapahead_{name} gauge\nsnapahead_{name} {v}\n");
        }
        for (name, help, h) in [
            (
                "fetch_latency_seconds",
                "time to fetch a run of blocks from the store",
                &self.fetch_latency,
            ),
            (
                "read_latency_seconds",
                "time to serve a FUSE read",
                &self.read_latency,
            ),
        ] {
            let (buckets, count, sum) = h.snapshot();
            s += &format!("# HELP snapahead_{name} {help}\n# TYPE snapahead_{name} histogram\n");
            for (b, c) in buckets {
                s += &format!("snapahead_{name}_bucket{{le=\"{b}\"}} {c}\n");
            }
            s += &format!("snapahead_{name}_bucket{{le=\"+Inf\"}} {count}\nsnapahead_{name}_sum {sum}\nsnapahead_{name}_count {count}\n");
        }
        s
    }

    pub fn json(&self, g: &CacheGauges) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, _, v) in self.counters() {
            m.insert(name.into(), v.into());
        }
        m.insert("cache".into(), serde_json::to_value(g).unwrap_or_default());
        for (name, h) in [
            ("fetch_latency", &self.fetch_latency),
            ("read_latency", &self.read_latency),
        ] {
            let (buckets, count, sum) = h.snapshot();
            m.insert(
                name.into(),
                serde_json::json!({
                    "count": count,
                    "sum_seconds": sum,
                    "p50_seconds": h.quantile(0.5),
                    "p99_seconds": h.quantile(0.99),
                    "buckets": buckets.iter().map(|(b, c)| serde_json::json!([b, c])).collect::<Vec<_>>(),
                }),
            );
        }
        serde_json::Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_rendering() {
        let m = Metrics::default();
        Metrics::inc(&m.reads);
        Metrics::add(&m.bytes_served, 4096);
        m.fetch_latency.observe(Duration::from_millis(3));
        m.fetch_latency.observe(Duration::from_millis(30));
        let text = m.prometheus(&CacheGauges::default());
        assert!(text.contains("snapahead_reads_total 1\n"));
        assert!(text.contains("snapahead_bytes_served_total 4096\n"));
        assert!(text.contains("snapahead_fetch_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("snapahead_fetch_latency_seconds_count 2\n"));
        assert_eq!(m.fetch_latency.quantile(0.5), Some(0.005));
        let j = m.json(&CacheGauges::default());
        assert_eq!(j["reads"], 1);
    }
}
