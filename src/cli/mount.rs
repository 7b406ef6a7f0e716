//! `snapahead mount MNT`: [`crate::fs::mount::run`] with the options the
//! config and the flags compose.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::Ctx;
use crate::fs::mount::MountOptions;
use crate::name::SnapshotName;

#[derive(clap::Args)]
pub struct Args {
    /// An existing empty directory
    mountpoint: PathBuf,
    /// Snapshots to show (repeatable) [default: those named in the config, or all in the store when it names none or --store is given]
    #[arg(long = "snapshot")]
    snapshots: Vec<SnapshotName>,
    /// Let other users read the mount (needs user_allow_other in /etc/fuse.conf unless root)
    #[arg(long)]
    allow_other: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (and JSON at /stats), e.g. 127.0.0.1:9100
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Disk cache directory [default: config cache.dir]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Disk cache bound, e.g. 8GiB; 0 disables the disk tier [default: config cache.size]
    #[arg(long)]
    cache_size: Option<bytesize::ByteSize>,
    /// Record each snapshot's demand reads and upload them to traces/<snapshot>/ in the store
    /// (every minute and at unmount), for `hints`
    #[arg(long)]
    record_traces: bool,
    /// Disable the prefetch daemon (fetch only what is read)
    #[arg(long)]
    no_prefetch: bool,
    /// Add this latency to every GET (benchmarks: a local store made to behave like a remote one)
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    inject_latency: Option<Duration>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let store = match a.inject_latency {
        Some(l) => store.with_latency(l),
        None => store,
    };
    let cfg = &ctx.cfg;
    // The config's list describes the config's store: with --store given,
    // every snapshot of that store is shown instead.
    let snapshots = if a.snapshots.is_empty() && ctx.store_url.is_none() {
        cfg.snapshots.iter().map(|s| s.name.clone()).collect()
    } else {
        a.snapshots
    };
    let mut prefetch = cfg.prefetch.clone();
    if a.no_prefetch {
        prefetch.enabled = false;
    }
    let opts = MountOptions {
        mountpoint: a.mountpoint,
        snapshots,
        allow_other: a.allow_other,
        metrics_addr: a.metrics,
        cache_dir: a.cache_dir.unwrap_or(cfg.cache.dir.clone()),
        cache_size: a.cache_size.map(|s| s.as_u64()).unwrap_or(cfg.cache.size),
        memory_cache_size: cfg.cache.memory,
        record_traces: a.record_traces,
        prefetch,
    };
    crate::fs::mount::run(store, opts).await?;
    Ok(ExitCode::SUCCESS)
}
