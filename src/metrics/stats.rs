//! [`MountStats`]: everything a running mount reports, as one serde type.
//! The mount fills it (`fs::MountState::stats`); `snapahead stats` reads it
//! back from the mount's `.snapahead-stats` file; [`super::prometheus`]
//! renders it as text. A field added here reaches every consumer, and a
//! consumer cannot ask for a key that no producer writes.

use serde::{Deserialize, Serialize};

use super::{CacheGauges, Counters, HistogramStats};
use crate::trace::classify::Class;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountStats {
    pub mountpoint: String,
    pub store: String,
    /// Where the metrics endpoint listens (the port it got when asked for
    /// port 0), if it runs.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    pub uptime_seconds: f64,
    pub snapshots: Vec<SnapshotStats>,
    pub metrics: MetricsStats,
    pub prefetch: PrefetchStats,
}

/// One mounted snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub name: String,
    /// `<name>.img`
    pub file: String,
    pub volume_size: u64,
    pub block_size: u32,
    pub pages_fetched: u64,
    pub pages: u32,
}

/// The counters (flattened: `metrics.reads`, `metrics.misses`, ...), the
/// cache's gauges and the latency histograms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricsStats {
    #[serde(flatten)]
    pub counters: Counters,
    pub cache: CacheGauges,
    pub fetch_latency: HistogramStats,
    pub read_latency: HistogramStats,
}

/// The prefetch daemon's state; `enabled: false` and nothing else when the
/// mount runs without it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PrefetchStats {
    pub enabled: bool,
    pub threshold: f32,
    pub queue_depth: u64,
    /// Jobs fetching right now.
    pub jobs_running: u64,
    /// Demand reads told to the daemon, and how many of those it has
    /// decided on (its queue and `jobs_running` include their jobs).
    pub reads_accepted: u64,
    pub reads_handled: u64,
    pub unread_prefetched_bytes: u64,
    /// Read-ahead windows are divided by 2^this: it backs off while its
    /// blocks go unused (`readahead_used` / `readahead_unused`).
    #[serde(default)]
    pub readahead_backoff: u32,
    /// The store link as the mount measures it (sizes the fetch unit).
    #[serde(default)]
    pub link: LinkStats,
    /// Per mounted snapshot, in mount order.
    pub snapshots: Vec<PrefetchSnapshotStats>,
}

/// The store link as measured from the mount's own GETs.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkStats {
    pub rtt_ms: f64,
    /// Bytes per second one GET sustains.
    pub get_bytes_per_s: f64,
    /// Decoded bytes per second (zstd + BLAKE3, one thread).
    pub decode_bytes_per_s: f64,
    /// GETs measured.
    pub samples: u64,
    /// A local store (file://): no fetch unit, no hydration by default.
    pub local: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrefetchSnapshotStats {
    /// None until the classifier has seen enough reads.
    pub class: Option<Class>,
    /// The hint window in use.
    pub window_ms: u32,
    /// The largest read-ahead window of its streams.
    pub readahead_window: u64,
    /// Background hydration of the snapshot (None: not reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydration: Option<HydrationStats>,
}

/// Where background hydration of one snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HydrationState {
    /// `prefetch.hydrate: off`.
    #[default]
    Off,
    /// `auto`, and the snapshots do not fit in half the disk cache.
    TooLarge,
    /// `auto`, and the store is local (file://): nothing far to bring near.
    LocalStore,
    Running,
    /// Every stored block is cached.
    Done,
    /// Stopped at half the disk cache, or the cache had no free room.
    Capped,
}

impl HydrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            HydrationState::Off => "off",
            HydrationState::TooLarge => "too_large",
            HydrationState::LocalStore => "local_store",
            HydrationState::Running => "running",
            HydrationState::Done => "done",
            HydrationState::Capped => "capped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HydrationStats {
    pub state: HydrationState,
    /// Uncompressed bytes of the snapshot's stored blocks found cached or
    /// hydrated so far, of `total_bytes`.
    pub hydrated_bytes: u64,
    pub total_bytes: u64,
    pub percent: f64,
    /// Bytes hydration fetched itself (uncompressed), and their average
    /// rate since the mount started.
    pub fetched_bytes: u64,
    pub rate_bytes_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Histogram, Metrics};

    #[test]
    fn json_round_trip_keeps_the_flat_counter_keys() {
        let m = Metrics::default();
        Metrics::add(&m.misses, 7);
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        let mut s = MountStats {
            mountpoint: "/mnt".into(),
            metrics: m.report(CacheGauges {
                disk_bytes: 5,
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metrics.read_latency = h.stats();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["metrics"]["misses"], 7);
        assert_eq!(v["metrics"]["cache"]["disk_bytes"], 5);
        assert_eq!(v["prefetch"]["enabled"], false);
        let back: MountStats = serde_json::from_value(v).unwrap();
        assert_eq!(back.metrics.counters.misses, 7);
        assert_eq!(back.metrics.read_latency.count, 1);
        assert_eq!(back.mountpoint, "/mnt");
    }
}
