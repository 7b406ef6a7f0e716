//! What is in a store, and tidying it: `list`, `inspect`, `delete`, `gc`.
//!
//! `delete` removes the index first (the snapshot disappears at once, exactly
//! as create makes it appear by writing the index last), then its pages. Data
//! objects may be shared with parents and children, so `delete` never touches
//! them: `gc` does, by marking every data object and page that any committed
//! index references (each snapshot has a full manifest of its own, so a
//! child's references are complete even after its parent is deleted) and
//! sweeping the rest. Objects younger than the grace period are kept, because
//! a `create` running right now has uploaded objects that no index references
//! yet. If any index cannot be read, gc refuses to delete anything: it cannot
//! know what that snapshot needs.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};

use crate::format::{keys, ManifestIndex};
use crate::name::SnapshotName;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// One day: longer than any create we expect (1 TiB at 100 MB/s is ~3 h),
/// so gc never removes the objects of a create that is still running.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Every snapshot index in the store, decoded; an index that cannot be read
/// is returned as an error line instead of hiding the others.
pub async fn list(
    store: &Store,
) -> anyhow::Result<Vec<(SnapshotName, anyhow::Result<ManifestIndex>)>> {
    let mut names: Vec<SnapshotName> = store
        .list(keys::SNAPSHOTS_PREFIX)
        .await?
        .iter()
        .filter_map(|l| keys::parse_index(&l.key))
        .collect();
    names.sort();
    let out = futures::stream::iter(names)
        .map(|name| async move {
            let key = keys::index(&name);
            let ix = async {
                let data = store.get(&key).await?;
                crate::snapshot::decode_index(&data, &key, &name)
            }
            .await;
            (name, ix)
        })
        .buffered(16)
        .collect()
        .await;
    Ok(out)
}

/// Thresholds reported by `inspect`: the range a prefetch threshold moves in.
pub const REPORT_THRESHOLDS: [f32; 4] = [0.25, 0.5, 0.75, 0.9];
/// Hint histogram buckets: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
pub const HINT_BUCKETS: usize = 10;

#[derive(Debug, serde::Serialize)]
pub struct WindowReport {
    pub window_ms: u32,
    pub hint_histogram: [u64; HINT_BUCKETS],
    /// (threshold, groups whose hint is at least that)
    pub groups_at_or_above: Vec<(f32, u64)>,
    pub groups_with_successors: u64,
    pub successors_total: u64,
    /// Groups whose hint has a block mask (format version 3).
    pub groups_with_masks: u64,
    /// Context successor lists in all.
    pub contexts_total: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct InspectReport {
    pub name: String,
    pub id: String,
    pub format_version: u16,
    pub volume_size: u64,
    pub block_size: u32,
    pub group_size: u32,
    pub created_ms: i64,
    pub parent: Option<String>,
    pub blocks: u64,
    pub stored_blocks: u64,
    pub zero_blocks: u64,
    /// Compressed bytes referenced.
    pub stored_bytes: u64,
    /// Uncompressed bytes of stored blocks.
    pub logical_stored_bytes: u64,
    pub uploaded_bytes: u64,
    pub groups: u64,
    pub pages: u32,
    pub index_bytes: u64,
    pub windows: Vec<WindowReport>,
    /// The warm-up core (every mount fetches it).
    pub warmup_groups: u64,
    pub warmup_bytes: u64,
    /// Distinct groups contexts look back.
    pub history: u8,
    /// Workload groups of sessions, each with its own warm-up.
    pub workloads: Vec<WorkloadReport>,
    /// Blocks fetched with the core so the reads identifying a workload hit.
    pub probes: Vec<u64>,
    /// The filesystem prior `create` recorded (ext4), if any.
    pub prior: Option<PriorReport>,
    /// Blocks the index locates itself (format version 5: what a mount
    /// fetches first, with no manifest page GET before them).
    pub located_blocks: u64,
    /// Of those, blocks whose stored bytes the index carries (no GET).
    pub inline_blocks: u64,
    pub inline_bytes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct WorkloadReport {
    /// Training sessions grouped into it.
    pub sessions: u32,
    /// The blocks whose early reads identify it.
    pub signature: Vec<u64>,
    /// Its warm-up beyond the core.
    pub groups: u64,
    pub blocks: u64,
    pub bytes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct PriorReport {
    pub filesystem: String,
    /// Blocks of metadata a mount without traces fetches at start.
    pub metadata_blocks: u64,
    pub metadata_bytes: u64,
    /// Files spanning more than one block, whose rest a first read brings.
    pub files: u64,
    /// Directories described (format version 4), and those under which
    /// sessions were seen to read a child directory whole (learned
    /// affinity ≥ 0.5: a miss in a child brings the child's files).
    pub directories: u64,
    pub walked_parents: u64,
}

/// Stored bytes of a warm-up list, estimated from each group's stored
/// bytes per stored block.
fn warmup_bytes(ix: &ManifestIndex, list: &[crate::format::WarmUp]) -> u64 {
    let gs = ix.header.group_size;
    list.iter()
        .filter_map(|w| {
            let g = ix.group(w.group)?;
            let n = w
                .blocks(gs)
                .filter(|b| (g.first_block..=g.last_block).contains(b))
                .count() as u64;
            Some(g.stored_bytes * n.min(g.stored_blocks as u64) / g.stored_blocks.max(1) as u64)
        })
        .sum()
}

pub fn inspect(ix: &ManifestIndex, index_bytes: u64) -> InspectReport {
    let h = &ix.header;
    let windows = ix
        .windows_ms
        .iter()
        .enumerate()
        .map(|(w, &ms)| {
            let mut hist = [0u64; HINT_BUCKETS];
            let mut with_succ = 0;
            let mut succ = 0;
            let mut masked = 0;
            let mut contexts = 0;
            for g in &ix.groups {
                masked += g.mask(w).is_some() as u64;
                contexts += g.contexts.get(w).map_or(0, Vec::len) as u64;
                let hint = g.hints.get(w).copied().unwrap_or(0.0);
                hist[((hint * HINT_BUCKETS as f32) as usize).min(HINT_BUCKETS - 1)] += 1;
                let n = g.successors.get(w).map_or(0, Vec::len) as u64;
                with_succ += (n > 0) as u64;
                succ += n;
            }
            WindowReport {
                window_ms: ms,
                hint_histogram: hist,
                groups_at_or_above: REPORT_THRESHOLDS
                    .iter()
                    .map(|&t| {
                        (
                            t,
                            ix.groups
                                .iter()
                                .filter(|g| g.hints.get(w).copied().unwrap_or(0.0) >= t)
                                .count() as u64,
                        )
                    })
                    .collect(),
                groups_with_successors: with_succ,
                successors_total: succ,
                groups_with_masks: masked,
                contexts_total: contexts,
            }
        })
        .collect();
    let logical_stored_bytes = ix.logical_stored_bytes();
    InspectReport {
        name: h.name.to_string(),
        id: h.id.to_string(),
        format_version: crate::format::FORMAT_VERSION,
        volume_size: h.volume_size,
        block_size: h.block_size,
        group_size: h.group_size,
        created_ms: h.created_ms,
        parent: h.parent.as_ref().map(|(n, _)| n.to_string()),
        blocks: h.block_count(),
        stored_blocks: h.stored_blocks,
        zero_blocks: h.zero_blocks,
        stored_bytes: h.stored_bytes,
        logical_stored_bytes,
        uploaded_bytes: h.uploaded_bytes,
        groups: ix.groups.len() as u64,
        pages: h.page_count,
        index_bytes,
        windows,
        warmup_groups: ix.warmup.len() as u64,
        warmup_bytes: warmup_bytes(ix, &ix.warmup),
        history: ix.history,
        workloads: ix
            .warmup_groups
            .iter()
            .map(|w| WorkloadReport {
                sessions: w.sessions,
                signature: w.signature.clone(),
                groups: w.blocks.len() as u64,
                blocks: w
                    .blocks
                    .iter()
                    .map(|e| e.blocks(h.group_size).count() as u64)
                    .sum(),
                bytes: warmup_bytes(ix, &w.blocks),
            })
            .collect(),
        probes: crate::predict::warmup::probes(ix),
        prior: ix.prior.as_ref().map(|p| {
            let blocks: u64 = p.metadata.iter().map(|r| r.count as u64).sum();
            PriorReport {
                filesystem: p.filesystem.clone(),
                metadata_blocks: blocks,
                metadata_bytes: blocks * h.block_size as u64,
                files: p.files.len() as u64,
                directories: p.directories.len() as u64,
                walked_parents: p
                    .directories
                    .iter()
                    .filter(|d| crate::format::mask_probability(d.affinity) >= 0.5)
                    .count() as u64,
            }
        }),
        located_blocks: ix.located.entries.len() as u64,
        inline_blocks: ix.inline.len() as u64,
        inline_bytes: ix.inline.iter().map(|b| b.stored.len() as u64).sum(),
    }
}

/// Deletes a snapshot: its index (the snapshot is gone from then on), then
/// its pages. Data objects are left for `gc`.
pub async fn delete(store: &Store, name: &SnapshotName) -> anyhow::Result<()> {
    let snap = Snapshot::open(store, name).await?;
    let id = snap.header().id;
    store.delete(&keys::index(name)).await?;
    let prefix = format!("{}/{id}", keys::PAGES_PREFIX);
    for l in store.list(&prefix).await? {
        store.delete(&l.key).await?;
    }
    Ok(())
}

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub snapshots: usize,
    pub referenced_objects: usize,
    /// Unreferenced data objects and pages older than the grace period:
    /// deleted, or (dry run) would be.
    pub removed: Vec<(String, u64)>,
    pub removed_bytes: u64,
    /// Unreferenced but younger than the grace period.
    pub kept_young: usize,
    pub dry_run: bool,
}

pub async fn gc(
    store: &Store,
    grace: Duration,
    dry_run: bool,
    now_ms: i64,
) -> anyhow::Result<GcReport> {
    let mut report = GcReport {
        dry_run,
        ..Default::default()
    };
    let mut live_objects: HashSet<String> = HashSet::new();
    let mut live_snapshots = HashSet::new();
    for (name, ix) in list(store).await? {
        let ix = ix.with_context(|| {
            format!(
                "gc refuses to run: snapshot {:?} cannot be read",
                name.as_str()
            )
        })?;
        live_snapshots.insert(ix.header.id);
        let snap = Snapshot::from_index(store.clone(), ix);
        let blocks = snap.all_blocks().await.with_context(|| {
            format!(
                "gc refuses to run: manifest of {:?} cannot be read",
                name.as_str()
            )
        })?;
        live_objects.extend(blocks.into_iter().map(|b| b.object.to_string()));
        report.snapshots += 1;
    }
    report.referenced_objects = live_objects.len();

    let cutoff = now_ms - grace.as_millis() as i64;
    let mut candidates = Vec::new();
    for l in store.list(keys::DATA_PREFIX).await? {
        if keys::is_data(&l.key) && !live_objects.contains(&l.key) {
            candidates.push(l);
        }
    }
    for l in store.list(keys::PAGES_PREFIX).await? {
        if keys::parse_page(&l.key).is_some_and(|id| !live_snapshots.contains(&id)) {
            candidates.push(l);
        }
    }
    for l in candidates {
        if l.last_modified_ms > cutoff {
            report.kept_young += 1;
            continue;
        }
        report.removed_bytes += l.size;
        report.removed.push((l.key, l.size));
    }
    if !dry_run {
        futures::stream::iter(report.removed.iter())
            .map(|(k, _)| store.delete(k))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(report)
}
