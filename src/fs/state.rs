//! What the filesystem, the metrics endpoint and the trace uploader of a
//! mount share: the mounted files and the fetch and prefetch machinery,
//! and the mount's [`MountStats`] built from them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::FileAttr;

use crate::fetch::Fetcher;
use crate::metrics::stats::{MountStats, PrefetchStats, SnapshotStats};
use crate::snapshot::Snapshot;

/// One snapshot, shown as `<name>.img`.
pub struct MountedFile {
    pub file_name: String,
    pub snapshot: Arc<Snapshot>,
    pub attr: FileAttr,
    /// Records its demand reads (`--record-traces`).
    pub recorder: Option<crate::trace::record::Recorder>,
}

/// What the filesystem and the metrics endpoint share.
pub struct MountState {
    pub files: Vec<Arc<MountedFile>>,
    pub prefetcher: Option<Arc<crate::prefetch::Prefetcher>>,
    pub fetcher: Arc<Fetcher>,
    pub started: SystemTime,
    pub mountpoint: String,
    pub store: String,
    /// Where the metrics endpoint listens, once bound.
    pub metrics_addr: std::sync::OnceLock<String>,
}

impl MountState {
    /// Uploads every recorder's trace so far (periodically and at unmount).
    pub async fn upload_traces(&self, store: &crate::store::Store) {
        for f in &self.files {
            let Some(rec) = &f.recorder else { continue };
            match rec.upload(store).await {
                Ok(Some(n)) => log::info!("trace {}: {n} reads uploaded", rec.key()),
                Ok(None) => {}
                Err(e) => log::warn!("trace {}: upload failed: {e:#} (retried later)", rec.key()),
            }
        }
    }

    fn sync_page_counter(&self) {
        let pages: u64 = self.files.iter().map(|f| f.snapshot.pages_fetched()).sum();
        self.fetcher
            .metrics()
            .page_fetches
            .store(pages, Ordering::Relaxed);
    }

    /// Everything the mount reports, now.
    pub fn stats(&self) -> MountStats {
        self.sync_page_counter();
        MountStats {
            mountpoint: self.mountpoint.clone(),
            store: self.store.clone(),
            metrics_addr: self.metrics_addr.get().cloned(),
            uptime_seconds: self
                .started
                .elapsed()
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            snapshots: self
                .files
                .iter()
                .map(|f| {
                    let h = f.snapshot.header();
                    SnapshotStats {
                        name: h.name.to_string(),
                        file: f.file_name.clone(),
                        volume_size: h.volume_size,
                        block_size: h.block_size,
                        pages_fetched: f.snapshot.pages_fetched(),
                        pages: h.page_count,
                    }
                })
                .collect(),
            metrics: self.fetcher.metrics().report(self.fetcher.cache().gauges()),
            prefetch: self
                .prefetcher
                .as_ref()
                .map_or_else(PrefetchStats::default, |p| p.status()),
        }
    }
}
