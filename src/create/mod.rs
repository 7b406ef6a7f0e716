//! `create`: volume → blocks → (zero? skip : hash, compress) → data objects
//! → parallel upload → manifest pages → manifest index (the commit).
//!
//! Three stages overlap so that neither the disk, the CPUs nor the network
//! waits for the others:
//! 1. a **reader thread** reads the volume in batches of [`BATCH_BYTES`]
//!    (bounded queue of [`READ_AHEAD_BATCHES`]);
//! 2. a **packer thread** hashes every block of a batch in parallel (rayon),
//!    looks each hash up in the blocks already known (the parent's, and this
//!    volume's earlier blocks: repeated data is stored once), compresses only
//!    the new ones, again in parallel, and appends them to the current data
//!    object, sealing it at [`OBJECT_TARGET`];
//! 3. the **uploader** (async, on the caller's runtime) keeps up to
//!    `upload_concurrency` PUTs in flight.
//!
//! Queues between stages are bounded, so memory stays at a few batches and
//! objects whatever the volume's size.
//!
//! Layout: [`reader`] (the reader thread), [`pack`] (hash, dedup,
//! compress, pack into objects), [`pages`] (manifest pages and groups);
//! this file composes them and commits.
//!
//! Nothing is visible until the index is written, last: an interrupted create
//! leaves only unreferenced data objects and pages, which `gc` removes once
//! they are older than its grace period.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use tokio::task::JoinSet;

mod dirhash;
pub mod ext4;
mod pack;
mod pages;
pub mod prior;
mod reader;

use pack::{loc_of, pack, Loc, Sealed};
use pages::build_pages;
use reader::volume_size;

use crate::format::{
    keys, EntryTable, Id, ManifestIndex, SnapshotHeader, DEFAULT_BLOCK_SIZE, DEFAULT_GROUP_SIZE,
    DEFAULT_WINDOWS_MS,
};
use crate::name::SnapshotName;
use crate::progress::Progress;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// 32 MiB read per batch: enough blocks (64 at 512 KiB) to keep every core
/// busy compressing, small enough that a few batches in flight stay cheap.
pub const BATCH_BYTES: usize = 32 << 20;
/// Batches read ahead of the packer.
pub const READ_AHEAD_BATCHES: usize = 2;
/// A data object is sealed once it holds this much: a few MiB makes a whole
/// object one efficient GET and keeps the object count (and PUT cost) low.
pub const OBJECT_TARGET: usize = 4 << 20;
/// A manifest page holds whole groups, up to about this many entries
/// (~57 KiB): one GET on a first touch of any of its groups.
pub const PAGE_TARGET_ENTRIES: usize = 1024;
/// zstd level 1: the fastest standard level; snapshots are read far more
/// often than written, and level 1 already removes most redundancy of disk
/// images (zeros are not stored at all).
pub const ZSTD_LEVEL: i32 = 1;
/// PUTs in flight: hides per-request latency of S3 (tens of ms) without
/// holding many objects in memory (8 × 4 MiB).
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub name: SnapshotName,
    pub source: PathBuf,
    pub parent: Option<SnapshotName>,
    /// `None`: the parent's, else [`DEFAULT_BLOCK_SIZE`].
    pub block_size: Option<u32>,
    pub group_size: Option<u32>,
    pub upload_concurrency: usize,
    pub show_progress: bool,
}

impl CreateOptions {
    pub fn new(name: SnapshotName, source: impl Into<PathBuf>) -> Self {
        CreateOptions {
            name,
            source: source.into(),
            parent: None,
            block_size: None,
            group_size: None,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            show_progress: false,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CreateSummary {
    pub name: String,
    pub volume_size: u64,
    pub bytes_read: u64,
    /// All-zero blocks, stored as holes.
    pub zero_bytes: u64,
    /// Blocks stored by this create (uncompressed bytes).
    pub new_bytes: u64,
    /// Blocks referenced instead of stored: already in the parent, or
    /// repeated within the volume (uncompressed bytes).
    pub reused_bytes: u64,
    /// Everything PUT: data objects, pages and the index.
    pub uploaded_bytes: u64,
    pub objects_uploaded: u64,
    pub seconds: f64,
}

pub async fn create(store: &Store, opts: &CreateOptions) -> anyhow::Result<CreateSummary> {
    let started = Instant::now();
    let index_key = keys::index(&opts.name);
    if store.exists(&index_key).await? {
        bail!(
            "snapshot {:?} already exists in store {}",
            opts.name.as_str(),
            store.url()
        );
    }

    // The parent's blocks, by content.
    let mut known: HashMap<[u8; 32], Loc> = HashMap::new();
    let mut parent_hdr = None;
    if let Some(p) = &opts.parent {
        let ps = Snapshot::open(store, p)
            .await
            .with_context(|| format!("parent of {:?}", opts.name.as_str()))?;
        for b in ps.all_blocks().await? {
            known.insert(b.checksum, loc_of(&b));
        }
        parent_hdr = Some(ps.header().clone());
    }
    let block_size = match (opts.block_size, &parent_hdr) {
        (Some(bs), Some(p)) if bs != p.block_size => {
            bail!(
                "block size {bs} differs from parent {:?}'s {}: blocks could not be shared",
                p.name.as_str(),
                p.block_size
            )
        }
        (Some(bs), _) => bs,
        (None, Some(p)) => p.block_size,
        (None, None) => DEFAULT_BLOCK_SIZE,
    };
    crate::format::validate_block_size(block_size as u64).map_err(|e| anyhow!(e))?;
    let group_size = opts
        .group_size
        .or(parent_hdr.as_ref().map(|p| p.group_size))
        .unwrap_or(DEFAULT_GROUP_SIZE);
    if group_size == 0 || group_size > crate::format::MAX_GROUP_SIZE {
        bail!(
            "group size {group_size} out of range 1..={}",
            crate::format::MAX_GROUP_SIZE
        );
    }

    let mut file = File::open(&opts.source)
        .with_context(|| format!("cannot open source {}", opts.source.display()))?;
    let size = volume_size(&mut file)
        .with_context(|| format!("cannot size source {}", opts.source.display()))?;
    if size == 0 {
        bail!("source {} is empty", opts.source.display());
    }

    let progress = Arc::new(Progress::new(
        format!("create {}", opts.name),
        size,
        opts.show_progress,
    ));
    let (obj_tx, mut obj_rx) = tokio::sync::mpsc::channel::<Sealed>(opts.upload_concurrency.max(1));
    let source = opts.source.clone();
    let prog = progress.clone();
    let packer = std::thread::Builder::new()
        .name("create-packer".into())
        .spawn(move || pack(file, source, size, block_size, known, obj_tx, &prog))
        .context("cannot start packer thread")?;

    // Upload sealed objects as they come, bounded in flight.
    let mut uploads: JoinSet<Result<u64, crate::store::StoreError>> = JoinSet::new();
    let mut uploaded = 0u64;
    let mut objects = 0u64;
    let mut upload_err = None;
    while let Some(obj) = obj_rx.recv().await {
        if uploads.len() >= opts.upload_concurrency.max(1) {
            match uploads.join_next().await {
                Some(Ok(Ok(n))) => {
                    uploaded += n;
                    objects += 1;
                }
                Some(Ok(Err(e))) => {
                    upload_err = Some(anyhow::Error::from(e));
                    break;
                }
                Some(Err(e)) => {
                    upload_err = Some(anyhow!("upload task failed: {e}"));
                    break;
                }
                None => {}
            }
        }
        let st = store.clone();
        uploads.spawn(async move {
            let n = obj.data.len() as u64;
            st.put(&obj.key, obj.data).await.map(|_| n)
        });
    }
    // Closing the receiver makes a still-running packer stop at its next send.
    drop(obj_rx);
    while let Some(r) = uploads.join_next().await {
        match r {
            Ok(Ok(n)) => {
                uploaded += n;
                objects += 1;
            }
            Ok(Err(e)) => {
                upload_err.get_or_insert(e.into());
            }
            Err(e) => {
                upload_err.get_or_insert(anyhow!("upload task failed: {e}"));
            }
        }
    }
    let packed = tokio::task::spawn_blocking(move || packer.join())
        .await
        .map_err(|e| anyhow!("packer: {e}"))?
        .map_err(|_| anyhow!("packer thread panicked"))?;
    progress.finish();
    if let Some(e) = upload_err {
        return Err(e.context(format!("uploading snapshot {:?}", opts.name.as_str())));
    }
    let packed = packed?;

    // The filesystem's own layout, as a prior for untrained mounts.
    let prior = {
        let source = opts.source.clone();
        tokio::task::spawn_blocking(move || prior::scan(&source, size, block_size))
            .await
            .unwrap_or(None)
    };

    // Manifest pages, then the index.
    let id = Id::random();
    let (pages, groups) = build_pages(id, &packed.entries, group_size);
    let mut page_uploads = JoinSet::new();
    for page in &pages {
        let st = store.clone();
        let key = keys::page(id, page.page_no);
        let data = Bytes::from(page.encode());
        uploaded += data.len() as u64;
        page_uploads.spawn(async move { st.put(&key, data).await });
        if page_uploads.len() >= opts.upload_concurrency.max(1) {
            if let Some(r) = page_uploads.join_next().await {
                r.map_err(|e| anyhow!("page upload task: {e}"))??;
            }
        }
    }
    while let Some(r) = page_uploads.join_next().await {
        r.map_err(|e| anyhow!("page upload task: {e}"))??;
    }

    let mut unique = HashSet::new();
    let stored_bytes = packed
        .entries
        .iter()
        .filter(|(_, sum, _)| unique.insert(*sum))
        .map(|(_, _, l)| l.length as u64)
        .sum();
    let created_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64;
    let n_windows = DEFAULT_WINDOWS_MS.len();
    let index = ManifestIndex {
        header: SnapshotHeader {
            name: opts.name.clone(),
            id,
            volume_size: size,
            block_size,
            group_size,
            created_ms,
            parent: parent_hdr.map(|p| (p.name, p.id)),
            stored_blocks: packed.entries.len() as u64,
            zero_blocks: packed.zero_blocks,
            stored_bytes,
            uploaded_bytes: 0,
            page_count: pages.len() as u32,
        },
        windows_ms: DEFAULT_WINDOWS_MS.to_vec(),
        groups: groups
            .into_iter()
            .map(|mut g| {
                g.hints = vec![0.0; n_windows];
                g.successors = vec![Vec::new(); n_windows];
                g
            })
            .collect(),
        warmup: Vec::new(),
        warmup_groups: Vec::new(),
        history: 0,
        prior,
        located: EntryTable::default(),
        inline: Vec::new(),
    };
    let mut index = index;
    // What a first mount fetches at once (the prior's metadata), located
    // and partly inline so its first reads wait for no page and no GET.
    crate::predict::locate_start(store, &mut index).await?;
    let index_len = index.encode().len() as u64;
    uploaded += index_len;
    index.header.uploaded_bytes = uploaded;
    // A concurrent create of the same name may have committed meanwhile.
    if store.exists(&index_key).await? {
        bail!(
            "snapshot {:?} was created by someone else while this create ran",
            opts.name.as_str()
        );
    }
    store.put(&index_key, Bytes::from(index.encode())).await?;

    Ok(CreateSummary {
        name: opts.name.to_string(),
        volume_size: size,
        bytes_read: packed.bytes_read,
        zero_bytes: packed.zero_bytes,
        new_bytes: packed.new_bytes,
        reused_bytes: packed.reused_bytes,
        uploaded_bytes: uploaded,
        objects_uploaded: objects,
        seconds: started.elapsed().as_secs_f64(),
    })
}
