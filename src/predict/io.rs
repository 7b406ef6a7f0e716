//! The learner's connection to the world: the stored blocks of an opened
//! snapshot, the traces stored for it, and committing a learned index.
//! [`learn_from`] and [`evaluate_trace`] are what `snapahead hints` runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::evaluate::{self, Evaluation};
use super::{learn, load_session, parse_windows, Session, StoredBlocks};
use crate::format::ManifestIndex;
use crate::name::SnapshotName;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::trace::TraceReader;

/// The stored blocks of an opened snapshot (reads every manifest page).
pub async fn stored_blocks(snap: &Snapshot) -> anyhow::Result<StoredBlocks> {
    let gs = snap.header().group_size as u64;
    let mut by_group: HashMap<u64, Vec<u64>> = HashMap::new();
    for b in snap.all_blocks().await? {
        by_group
            .entry(b.block_id / gs)
            .or_default()
            .push(b.block_id);
    }
    Ok(StoredBlocks {
        group_size: gs,
        by_group,
    })
}

/// Every trace stored for `snap` and its ancestors (`traces/<name>/`):
/// the same block ids, so a parent's sessions teach its child too.
pub async fn store_sessions(
    store: &Store,
    snap: &Snapshot,
    stored: &StoredBlocks,
) -> anyhow::Result<Vec<(String, Session)>> {
    let h = snap.header();
    let mut names = vec![h.name.clone()];
    let mut parent = h.parent.as_ref().map(|p| p.0.clone());
    while let Some(p) = parent.take() {
        if names.contains(&p) || names.len() > 64 {
            break;
        }
        names.push(p.clone());
        // Follow the chain while the ancestors still exist.
        if let Ok(ps) = Snapshot::open(store, &p).await {
            parent = ps.header().parent.as_ref().map(|x| x.0.clone());
        }
    }
    let mut out = Vec::new();
    for n in names {
        let prefix = format!("{}/{n}", crate::format::keys::TRACES_PREFIX);
        for l in store.list(&prefix).await? {
            let data = store.get(&l.key).await?;
            let reader = TraceReader::new(&data[..]).with_context(|| format!("trace {}", l.key))?;
            out.push((
                l.key.clone(),
                load_session(reader, &l.key, h.volume_size, h.block_size as u64, stored)?,
            ));
        }
    }
    Ok(out)
}

/// Writes a new index for an existing snapshot. One PUT of the whole
/// object: readers see the old index or the new one, never a mix, and a
/// rewrite cut short leaves the old one in place. Pages and data objects are
/// not touched, so a mount holding the old index keeps working.
pub async fn commit(store: &Store, index: &ManifestIndex) -> anyhow::Result<()> {
    let key = crate::format::keys::index(&index.header.name);
    store.put(&key, bytes::Bytes::from(index.encode())).await?;
    Ok(())
}

/// What [`learn_from`] did: the learned index (committed) and what it
/// learned from.
pub struct LearnReport {
    pub index: ManifestIndex,
    pub sessions: usize,
    pub block_reads: usize,
}

/// Learns hints, successors and warm-up for snapshot `name` from trace
/// files and (with `from_store`) every trace stored for it and its
/// ancestors, with `windows` (e.g. `2s,10s`; default: the index's), and
/// commits the new index.
pub async fn learn_from(
    store: &Store,
    name: &SnapshotName,
    traces: &[PathBuf],
    from_store: bool,
    windows: Option<&str>,
) -> anyhow::Result<LearnReport> {
    let snap = Snapshot::open(store, name).await?;
    let h = snap.header().clone();
    let stored = stored_blocks(&snap).await?;
    let mut sessions: Vec<Session> = Vec::new();
    for t in traces {
        let what = t.display().to_string();
        let reader = crate::trace::open(t)?;
        sessions.push(load_session(
            reader,
            &what,
            h.volume_size,
            h.block_size as u64,
            &stored,
        )?);
    }
    if from_store {
        sessions.extend(
            store_sessions(store, &snap, &stored)
                .await?
                .into_iter()
                .map(|(_, s)| s),
        );
    }
    if sessions.is_empty() {
        anyhow::bail!(
            "no traces to learn from: pass --trace FILE or --from-store (traces/{name}/ in {} holds none)",
            store.url()
        );
    }
    let windows = match windows {
        Some(w) => parse_windows(w)?,
        None => snap.index().windows_ms.clone(),
    };
    let block_reads = sessions.iter().map(|s| s.events.len()).sum();
    let index = learn(snap.index(), &stored, &sessions, &windows);
    commit(store, &index).await?;
    Ok(LearnReport {
        index,
        sessions: sessions.len(),
        block_reads,
    })
}

/// Replays the held-out trace `held_out` against snapshot `name`'s index,
/// once per window: precision and recall of what it would prefetch at
/// `threshold` (with or without the warm-up list).
pub async fn evaluate_trace(
    store: &Store,
    name: &SnapshotName,
    held_out: &Path,
    threshold: f32,
    warmup: bool,
) -> anyhow::Result<Vec<Evaluation>> {
    let snap = Snapshot::open(store, name).await?;
    let h = snap.header().clone();
    let stored = stored_blocks(&snap).await?;
    let what = held_out.display().to_string();
    let session = load_session(
        crate::trace::open(held_out)?,
        &what,
        h.volume_size,
        h.block_size as u64,
        &stored,
    )?;
    Ok((0..snap.index().windows_ms.len())
        .map(|w| evaluate::evaluate(snap.index(), &stored, &session, w, threshold, warmup))
        .collect())
}
