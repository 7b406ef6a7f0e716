//! [`MountStats`] as Prometheus text exposition format (version 0.0.4):
//! counters as `snapahead_<name>_total`, cache gauges, the two latency
//! histograms, and the prefetch daemon's threshold, queue and per-snapshot
//! window. Rendered from the same value `snapahead stats` shows, so the two
//! never disagree.

use std::fmt::Write as _;

use super::stats::{HydrationStats, MountStats};

/// A per-snapshot hydration gauge: name, help, value.
type HydrationGauge = (&'static str, &'static str, fn(&HydrationStats) -> f64);
use super::HistogramStats;

fn metric(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        s,
        "# HELP snapahead_{name} {help}\n# TYPE snapahead_{name} {kind}"
    );
}

fn histogram(s: &mut String, name: &str, help: &str, h: &HistogramStats) {
    metric(s, name, "histogram", help);
    for (b, c) in &h.buckets {
        let _ = writeln!(s, "snapahead_{name}_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(
        s,
        "snapahead_{name}_bucket{{le=\"+Inf\"}} {}\nsnapahead_{name}_sum {}\nsnapahead_{name}_count {}",
        h.count, h.sum_seconds, h.count
    );
}

/// Label values are snapshot names and class names: `[A-Za-z0-9._-]`, but
/// escape anyway so a future label can never break the format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(st: &MountStats) -> String {
    let mut s = String::new();
    let m = &st.metrics;
    for (name, help, v) in m.counters.fields() {
        metric(&mut s, &format!("{name}_total"), "counter", help);
        let _ = writeln!(s, "snapahead_{name}_total {v}");
    }
    let g = &m.cache;
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
        metric(&mut s, name, "gauge", help);
        let _ = writeln!(s, "snapahead_{name} {v}");
    }
    histogram(
        &mut s,
        "fetch_latency_seconds",
        "time to fetch a run of blocks from the store",
        &m.fetch_latency,
    );
    histogram(
        &mut s,
        "read_latency_seconds",
        "time to serve a FUSE read",
        &m.read_latency,
    );
    let p = &st.prefetch;
    if p.enabled {
        metric(
            &mut s,
            "prefetch_threshold",
            "gauge",
            "current prefetch threshold",
        );
        let _ = writeln!(s, "snapahead_prefetch_threshold {}", p.threshold);
        metric(
            &mut s,
            "prefetch_queue_depth",
            "gauge",
            "queued prefetch jobs",
        );
        let _ = writeln!(s, "snapahead_prefetch_queue_depth {}", p.queue_depth);
        metric(
            &mut s,
            "readahead_backoff",
            "gauge",
            "read-ahead windows are divided by 2 to this (it backs off while its blocks go unread)",
        );
        let _ = writeln!(s, "snapahead_readahead_backoff {}", p.readahead_backoff);
        metric(
            &mut s,
            "link_rtt_seconds",
            "gauge",
            "store round trip as measured from the mount's GETs",
        );
        let _ = writeln!(s, "snapahead_link_rtt_seconds {}", p.link.rtt_ms / 1000.0);
        metric(
            &mut s,
            "link_get_bytes_per_second",
            "gauge",
            "throughput of one GET as measured",
        );
        let _ = writeln!(
            s,
            "snapahead_link_get_bytes_per_second {:.0}",
            p.link.get_bytes_per_s
        );
        metric(
            &mut s,
            "snapshot_window_ms",
            "gauge",
            "prefetch window in use, by snapshot and workload class",
        );
        for (f, ps) in st.snapshots.iter().zip(&p.snapshots) {
            let class = ps.class.map_or("unknown", |c| c.as_str());
            let _ = writeln!(
                s,
                "snapahead_snapshot_window_ms{{snapshot=\"{}\",class=\"{}\"}} {}",
                label(&f.name),
                label(class),
                ps.window_ms
            );
        }
        let hydrating: Vec<_> = st
            .snapshots
            .iter()
            .zip(&p.snapshots)
            .filter_map(|(f, ps)| ps.hydration.map(|h| (label(&f.name), h)))
            .collect();
        if !hydrating.is_empty() {
            metric(
                &mut s,
                "hydrated_bytes",
                "gauge",
                "bytes of the snapshot's stored blocks cached (hydrated or read), by snapshot and hydration state",
            );
            for (name, h) in &hydrating {
                let _ = writeln!(
                    s,
                    "snapahead_hydrated_bytes{{snapshot=\"{name}\",state=\"{}\"}} {}",
                    h.state.as_str(),
                    h.hydrated_bytes
                );
            }
            let per_snapshot: [HydrationGauge; 2] = [
                (
                    "hydrate_total_bytes",
                    "bytes of the snapshot's stored blocks (uncompressed)",
                    |h| h.total_bytes as f64,
                ),
                (
                    "hydrate_rate_bytes_per_second",
                    "average rate of background hydration since the mount started",
                    |h| h.rate_bytes_per_s,
                ),
            ];
            for (key, help, value) in per_snapshot {
                metric(&mut s, key, "gauge", help);
                for (name, h) in &hydrating {
                    let _ = writeln!(s, "snapahead_{key}{{snapshot=\"{name}\"}} {:.0}", value(h));
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::stats::{PrefetchSnapshotStats, PrefetchStats, SnapshotStats};
    use crate::metrics::{CacheGauges, Metrics};
    use crate::trace::classify::Class;

    #[test]
    fn renders_counters_gauges_histograms_and_prefetch() {
        let m = Metrics::default();
        Metrics::inc(&m.reads);
        Metrics::add(&m.bytes_served, 4096);
        m.fetch_latency.observe(std::time::Duration::from_millis(3));
        m.fetch_latency
            .observe(std::time::Duration::from_millis(30));
        let st = MountStats {
            snapshots: vec![SnapshotStats {
                name: "db".into(),
                ..Default::default()
            }],
            metrics: m.report(CacheGauges {
                disk_bytes: 9,
                ..Default::default()
            }),
            prefetch: PrefetchStats {
                enabled: true,
                threshold: 0.5,
                snapshots: vec![PrefetchSnapshotStats {
                    class: Some(Class::Sequential),
                    window_ms: 2000,
                    readahead_window: 0,
                    hydration: Some(crate::metrics::stats::HydrationStats {
                        state: crate::metrics::stats::HydrationState::Running,
                        hydrated_bytes: 10,
                        total_bytes: 40,
                        percent: 25.0,
                        fetched_bytes: 10,
                        rate_bytes_per_s: 5.0,
                    }),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let text = render(&st);
        assert!(text.contains("snapahead_reads_total 1\n"));
        assert!(text.contains("snapahead_bytes_served_total 4096\n"));
        assert!(text.contains("snapahead_cache_disk_bytes 9\n"));
        let three_ms = crate::metrics::bucket_bound(crate::metrics::bucket_of_for_tests(0.003));
        assert!(text.contains(&format!(
            "snapahead_fetch_latency_seconds_bucket{{le=\"{three_ms}\"}} 1\n"
        )));
        assert!(text.contains("snapahead_fetch_latency_seconds_count 2\n"));
        assert!(text.contains("snapahead_prefetch_threshold 0.5\n"));
        assert!(text
            .contains("snapahead_snapshot_window_ms{snapshot=\"db\",class=\"sequential\"} 2000\n"));
        assert!(text.contains("snapahead_hydrated_bytes{snapshot=\"db\",state=\"running\"} 10\n"));
        assert!(text.contains("snapahead_hydrate_total_bytes{snapshot=\"db\"} 40\n"));
        // Every sample line belongs to a declared metric.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {name} "))
                    || text.contains(&format!("# TYPE {base} ")),
                "{l}"
            );
        }
    }
}
