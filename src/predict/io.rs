//! The learner's connection to the world: the stored blocks of an opened
//! snapshot, the traces stored for it, and committing a learned index.
//! [`learn_from`] and [`evaluate_trace`] are what `snapahead hints` runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::evaluate::{self, Evaluation};
use super::warmup::MountStart;
use super::{learn_with, load_session, parse_windows, LearnOptions, Session, StoredBlocks};
use futures::{StreamExt, TryStreamExt};

use crate::format::{InlineBlock, ManifestIndex, MAX_INLINE_BYTES, MAX_LOCATED};
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
/// the same block ids, so a parent's sessions teach its child too. At most
/// `max_sessions`, the newest first (by the store's modification time): a
/// fleet's store may hold far more traces than learning needs, and memory
/// grows with the sessions held. Listing is cheap (a key each); only the
/// kept traces are read.
pub async fn store_sessions(
    store: &Store,
    snap: &Snapshot,
    stored: &StoredBlocks,
    max_sessions: usize,
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
    let mut listed = Vec::new();
    for n in names {
        let prefix = format!("{}/{n}", crate::format::keys::TRACES_PREFIX);
        listed.extend(store.list(&prefix).await?);
    }
    listed.sort_by(|a, b| {
        b.last_modified_ms
            .cmp(&a.last_modified_ms)
            .then(b.key.cmp(&a.key))
    });
    if listed.len() > max_sessions {
        log::info!(
            "{} traces stored for {}: learning from the newest {max_sessions} (--max-sessions)",
            listed.len(),
            h.name
        );
        listed.truncate(max_sessions);
    }
    let mut out = Vec::with_capacity(listed.len());
    for l in listed {
        let data = store.get(&l.key).await?;
        let reader = TraceReader::new(&data[..]).with_context(|| format!("trace {}", l.key))?;
        let session = load_session(reader, &l.key, h.volume_size, h.block_size as u64, stored)?;
        out.push((l.key, session));
    }
    Ok(out)
}

/// Writes a new index for an existing snapshot. One PUT of the whole
/// object: readers see the old index or the new one, never a mix, and a
/// rewrite cut short leaves the old one in place. Pages and data objects are
/// not touched, so a mount holding the old index keeps working.
///
/// The index is written with its located blocks (what a mount fetches
/// first, found in the pages here) replaced by those of its own warm-up;
/// returns the index as written.
pub async fn commit(store: &Store, index: &ManifestIndex) -> anyhow::Result<ManifestIndex> {
    let mut index = index.clone();
    locate_start(store, &mut index).await?;
    let key = crate::format::keys::index(&index.header.name);
    store.put(&key, bytes::Bytes::from(index.encode())).await?;
    Ok(index)
}

/// Sets what the index carries of the blocks a mount fetches first
/// ([`MountStart`], remote): their entries (`located`, from the pages) and
/// the stored bytes of the first of them that fit in
/// [`MAX_INLINE_BYTES`] (`inline`, from the data objects), so a mount's
/// first reads wait for no page and the very first for no GET. Done by
/// `create` and by every index rewrite ([`commit`]).
pub async fn locate_start(store: &Store, index: &mut ManifestIndex) -> anyhow::Result<()> {
    let snap = Snapshot::from_index(store.clone(), index.clone());
    let start = MountStart::of(index, true).first_blocks(MAX_LOCATED);
    let located = snap
        .entry_table(&start)
        .await
        .context("locating the mount's first blocks in the manifest pages")?;
    let mut total = 0;
    let mut chosen = Vec::new();
    for b in start {
        if let Some((key, e)) = located.get(b) {
            if total + e.length as usize <= MAX_INLINE_BYTES {
                total += e.length as usize;
                chosen.push((b, key.to_string(), e.offset..e.offset + e.length as u64));
            }
        }
    }
    let mut inline: Vec<InlineBlock> = futures::stream::iter(chosen)
        .map(|(block_id, key, range)| async move {
            let stored = store
                .get_range(&key, range)
                .await
                .with_context(|| format!("reading block {block_id} to carry in the index"))?;
            anyhow::Ok(InlineBlock {
                block_id,
                stored: stored.to_vec(),
            })
        })
        .buffer_unordered(INLINE_READS)
        .try_collect()
        .await?;
    inline.sort_by_key(|b| b.block_id);
    index.located = located;
    index.inline = inline;
    Ok(())
}

/// Inline blocks read from the store at once while an index is written.
const INLINE_READS: usize = 8;

/// What [`learn_from`] did: the learned index (committed) and what it
/// learned from.
pub struct LearnReport {
    pub index: ManifestIndex,
    pub sessions: usize,
    pub block_reads: usize,
}

/// What to learn from, and how.
#[derive(Debug, Clone)]
pub struct LearnRequest {
    /// Trace files.
    pub traces: Vec<PathBuf>,
    /// Also every trace stored for the snapshot and its ancestors.
    pub from_store: bool,
    /// At most this many stored traces, the newest first.
    pub max_sessions: usize,
    /// Windows, e.g. `2s,10s` (default: the index's).
    pub windows: Option<String>,
    pub options: LearnOptions,
}

/// Stored traces learned from at most, by default: a day of a busy fleet
/// at one session a minute; ~16 bytes per block read held per session.
pub const DEFAULT_MAX_SESSIONS: usize = 1000;

impl LearnRequest {
    /// From trace files only, the full model.
    pub fn from_files(traces: &[PathBuf]) -> Self {
        LearnRequest {
            traces: traces.to_vec(),
            from_store: false,
            max_sessions: DEFAULT_MAX_SESSIONS,
            windows: None,
            options: LearnOptions::default(),
        }
    }
}

/// Learns hints, successors and warm-up for snapshot `name` from what
/// `req` names, and commits the new index (format version 3, whatever the
/// version it replaces).
pub async fn learn_from(
    store: &Store,
    name: &SnapshotName,
    req: &LearnRequest,
) -> anyhow::Result<LearnReport> {
    let snap = Snapshot::open(store, name).await?;
    let h = snap.header().clone();
    let stored = stored_blocks(&snap).await?;
    let mut sessions: Vec<Session> = Vec::new();
    for t in &req.traces {
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
    if req.from_store {
        sessions.extend(
            store_sessions(store, &snap, &stored, req.max_sessions)
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
    let windows = match &req.windows {
        Some(w) => parse_windows(w)?,
        None => snap.index().windows_ms.clone(),
    };
    let block_reads = sessions.iter().map(|s| s.events.len()).sum();
    let index = learn_with(snap.index(), &stored, &sessions, &windows, &req.options);
    let index = commit(store, &index).await?;
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

/// `trace plot`: draws the trace at `path` into `out` (SVG); with a
/// snapshot, each block read as a hit or a miss of that snapshot's index
/// and what it prefetched unread as waste (replayed at `threshold`, the
/// 2 s window). Returns a one-line summary.
pub async fn plot_trace(
    path: &Path,
    out: &Path,
    snapshot: Option<(&Store, &SnapshotName)>,
    threshold: f32,
    warmup: bool,
) -> anyhow::Result<String> {
    use crate::trace::plot::{render, Access, Heat, Kind};
    let reader = crate::trace::open(path)?;
    let volume_size = reader.header.volume_size;
    let volume = reader.header.volume.clone();
    let mut accesses = Vec::new();
    for r in reader {
        let r = r.with_context(|| format!("trace {}", path.display()))?;
        let kind = match r.op {
            crate::trace::Op::Read => Kind::Read,
            crate::trace::Op::Write => Kind::Write,
        };
        accesses.push(Access {
            t_ns: r.t_ns,
            offset: r.offset,
            len: r.len as u64,
            kind,
        });
    }
    let title;
    let summary;
    if let Some((store, name)) = snapshot {
        let snap = Snapshot::open(store, name).await?;
        let h = snap.header().clone();
        let stored = stored_blocks(&snap).await?;
        let session = load_session(
            crate::trace::open(path)?,
            &path.display().to_string(),
            h.volume_size,
            h.block_size as u64,
            &stored,
        )?;
        let (e, marks) =
            evaluate::evaluate_marks(snap.index(), &stored, &session, 0, threshold, warmup);
        // Reads of stored blocks become their outcome; writes stay.
        accesses.retain(|a| a.kind == Kind::Write);
        let bs = h.block_size as u64;
        accesses.extend(marks.iter().map(|m| Access {
            t_ns: m.t_ns,
            offset: m.block * bs,
            len: crate::format::block_len(h.volume_size, h.block_size, m.block) as u64,
            kind: match m.outcome {
                evaluate::Outcome::Hit => Kind::Hit,
                evaluate::Outcome::Miss => Kind::Miss,
                evaluate::Outcome::Waste => Kind::Waste,
            },
        }));
        title = format!(
            "{} against {name}: precision {:.2}, recall {:.2} (threshold {threshold}, window {} ms)",
            path.display(),
            e.overall.precision,
            e.overall.recall,
            e.window_ms
        );
        summary = format!(
            "precision {:.2}, recall {:.2}",
            e.overall.precision, e.overall.recall
        );
    } else {
        title = format!("{} ({volume})", path.display());
        summary = format!("{} accesses", accesses.len());
    }
    let heat = Heat::new(&accesses, volume_size);
    render(&heat, &title, out)?;
    Ok(summary)
}
