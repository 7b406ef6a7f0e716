//! `snapahead stats MNT [--json]`: reads the mount's `.snapahead-stats`
//! file, a [`MountStats`], and shows it as a table (or passes the JSON on).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use bytesize::ByteSize;

use super::pct;
use crate::metrics::stats::MountStats;
use crate::metrics::HistogramStats;

#[derive(clap::Args)]
pub struct Args {
    mountpoint: PathBuf,
    #[arg(long)]
    json: bool,
}

fn ms(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{:.1} ms", s * 1000.0))
}

fn latency(h: &HistogramStats) -> (String, String) {
    (ms(h.p50_seconds), ms(h.p99_seconds))
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let path = a.mountpoint.join(crate::fs::STATS_NAME);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "cannot read {}: {e} (is a snapahead mount running there?)",
            path.display()
        )
    })?;
    if a.json {
        out!("{}", text.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let st: MountStats =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let m = &st.metrics.counters;
    out!("mount          {} (store {})", st.mountpoint, st.store);
    if let Some(a) = &st.metrics_addr {
        out!("metrics        http://{a}/metrics");
    }
    for s in &st.snapshots {
        out!(
            "  {:<24} {:>12}  pages {}/{}",
            s.file,
            ByteSize(s.volume_size).to_string(),
            s.pages_fetched,
            s.pages
        );
    }
    let blocks = m.memory_hits + m.disk_hits + m.misses;
    out!(
        "reads          {} ({} served), {} errors",
        m.reads,
        ByteSize(m.bytes_served),
        m.read_errors
    );
    out!(
        "block lookups  {} memory hits ({:.1}%), {} disk hits ({:.1}%), {} misses ({:.1}%), {} holes",
        m.memory_hits,
        pct(m.memory_hits, blocks),
        m.disk_hits,
        pct(m.disk_hits, blocks),
        m.misses,
        pct(m.misses, blocks),
        m.hole_blocks
    );
    out!(
        "fetches        {} GETs, {} blocks, {} fetched, {} failed, {} checksum errors",
        m.fetches,
        m.blocks_fetched,
        ByteSize(m.bytes_fetched),
        m.fetch_errors,
        m.checksum_errors
    );
    let (f50, f99) = latency(&st.metrics.fetch_latency);
    let (r50, r99) = latency(&st.metrics.read_latency);
    out!(
        "latency        fetch p50 {f50} p99 {f99} ({} fetches); read p50 {r50} p99 {r99}",
        st.metrics.fetch_latency.count
    );
    let p = &st.prefetch;
    if p.enabled {
        out!(
            "prefetch       threshold {:.2}, {} queued; {} issued, {} done ({}), {} used ({}), {} wasted ({}), {} dropped",
            p.threshold,
            p.queue_depth,
            m.prefetch_issued,
            m.prefetch_completed,
            ByteSize(m.prefetch_bytes),
            m.prefetch_used,
            ByteSize(m.prefetch_used_bytes),
            m.prefetch_wasted,
            ByteSize(m.prefetch_wasted_bytes),
            m.prefetch_dropped
        );
        out!(
            "               done by source: warm-up {}, read-ahead {}, hints and successors {}, fetch unit {} ({} read) blocks",
            m.prefetch_warmup_blocks,
            m.prefetch_readahead_blocks,
            m.prefetch_hint_blocks,
            m.prefetch_unit_blocks,
            m.prefetch_unit_used
        );
        let judged = m.readahead_used + m.readahead_unused;
        out!(
            "               read-ahead: {} of {} judged blocks read (precision {}), windows at 1/{}",
            m.readahead_used,
            judged,
            if judged == 0 {
                "n/a".to_string()
            } else {
                format!("{:.2}", m.readahead_used as f64 / judged as f64)
            },
            1u64 << p.readahead_backoff.min(63)
        );
        let l = &p.link;
        out!(
            "               link: {}round trip {:.1} ms, {}/s per GET, decode {}/s ({} GETs measured)",
            if l.local { "local store; " } else { "" },
            l.rtt_ms,
            ByteSize(l.get_bytes_per_s as u64),
            ByteSize(l.decode_bytes_per_s as u64),
            l.samples
        );
        for s in &p.snapshots {
            out!(
                "               {}, window {} ms, read-ahead {}",
                s.class
                    .map_or("workload not yet classified".to_string(), |c| format!(
                        "{} workload",
                        format!("{c:?}").to_lowercase()
                    )),
                s.window_ms,
                ByteSize(s.readahead_window)
            );
            if let Some(h) = &s.hydration {
                out!(
                    "               hydration {}: {} of {} cached ({:.1}%), {} fetched at {}/s",
                    h.state.as_str().replace('_', " "),
                    ByteSize(h.hydrated_bytes),
                    ByteSize(h.total_bytes),
                    h.percent,
                    ByteSize(h.fetched_bytes),
                    ByteSize(h.rate_bytes_per_s as u64)
                );
            }
        }
    } else {
        out!("prefetch       disabled");
    }
    let c = &st.metrics.cache;
    out!(
        "cache          disk {} in {} blocks (bound {}), memory {} in {} blocks (bound {}); {} corrupt dropped, {} write errors",
        ByteSize(c.disk_bytes),
        c.disk_entries,
        ByteSize(c.disk_capacity),
        ByteSize(c.memory_bytes),
        c.memory_entries,
        ByteSize(c.memory_capacity),
        m.cache_corrupt,
        m.cache_write_errors
    );
    Ok(ExitCode::SUCCESS)
}
