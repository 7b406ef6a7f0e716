//! The FUSE filesystem of a mount: a read-only directory with one sparse
//! image file per snapshot (`<name>.img`) and a hidden `.snapahead-stats`
//! file (JSON, read by `snapahead stats`).
//!
//! fuser runs a multi-threaded session loop; each `read` is handed to the
//! tokio runtime and answered from there (fuser's replies are `Send`), so a
//! read waiting for the store never blocks the session threads and reads are
//! served concurrently. Image files are immutable: attributes and entries
//! get long TTLs and opens keep the kernel page cache (`FOPEN_KEEP_CACHE`).
//! `lseek(SEEK_DATA/SEEK_HOLE)` answers from the manifest, so sparse-aware
//! tools (`cp --sparse`, `qemu-img map`) see the holes without reading them.

pub mod monitor;
pub mod mount;
pub mod read;
mod state;

pub use state::{MountState, MountedFile};

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, Request,
};

use crate::fetch::Fetcher;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

pub const ROOT_INO: u64 = 1;
pub const STATS_INO: u64 = 2;
/// Image files get inodes from here on (index + FIRST_FILE_INO).
pub const FIRST_FILE_INO: u64 = 16;
/// Starts with '.', which no snapshot name may: it cannot clash with one.
pub const STATS_NAME: &str = ".snapahead-stats";
/// Snapshots are immutable: the kernel may keep attributes this long.
const TTL: Duration = Duration::from_secs(3600);
/// What `stat` reports as the preferred I/O size: one default block.
const BLKSIZE: u32 = 512 * 1024;
/// Read failures not logged where they happened (manifest pages), at most
/// a few per period.
static READ_ERRORS: crate::ratelimit::LogLimit = crate::ratelimit::LogLimit::new();

pub struct SnapFs {
    rt: tokio::runtime::Handle,
    state: Arc<MountState>,
    owner: Owner,
    /// Contents of open `.snapahead-stats` handles, fixed at open.
    stats_handles: DashMap<u64, Bytes>,
    next_fh: AtomicU64,
}

/// Who owns every inode of the mount: the mounting process.
#[derive(Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Owner {
    fn attr(
        self,
        ino: u64,
        size: u64,
        blocks: u64,
        mtime: SystemTime,
        kind: FileType,
        perm: u16,
    ) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }
}

impl SnapFs {
    /// `snapshots` become `<name>.img`, in the order given.
    pub fn new(
        rt: tokio::runtime::Handle,
        snapshots: Vec<Arc<Snapshot>>,
        fetcher: Arc<Fetcher>,
        mountpoint: String,
        store: String,
        record_traces: bool,
        prefetcher: Option<Arc<crate::prefetch::Prefetcher>>,
    ) -> anyhow::Result<Self> {
        let (uid, gid) = process_ids();
        let owner = Owner { uid, gid };
        let files = snapshots
            .into_iter()
            .enumerate()
            .map(|(i, snapshot)| {
                let h = snapshot.header();
                let mtime = UNIX_EPOCH + Duration::from_millis(h.created_ms.max(0) as u64);
                // st_blocks: the bytes a sparse local copy would occupy (512-byte units).
                let stored = snapshot.index().logical_stored_bytes();
                let attr = owner.attr(
                    FIRST_FILE_INO + i as u64,
                    h.volume_size,
                    stored.div_ceil(512),
                    mtime,
                    FileType::RegularFile,
                    0o444,
                );
                let recorder = if record_traces {
                    Some(crate::trace::record::Recorder::new(&h.name, h.volume_size)?)
                } else {
                    None
                };
                Ok(Arc::new(MountedFile {
                    file_name: format!("{}.img", h.name),
                    snapshot,
                    attr,
                    recorder,
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(SnapFs {
            rt,
            state: Arc::new(MountState {
                files,
                prefetcher,
                fetcher,
                started: SystemTime::now(),
                mountpoint,
                store,
                metrics_addr: Default::default(),
            }),
            owner,
            stats_handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
        })
    }

    pub fn state(&self) -> Arc<MountState> {
        self.state.clone()
    }

    fn root_attr(&self) -> FileAttr {
        self.owner.attr(
            ROOT_INO,
            0,
            0,
            self.state.started,
            FileType::Directory,
            0o555,
        )
    }

    fn stats_attr(&self) -> FileAttr {
        self.owner.attr(
            STATS_INO,
            0,
            0,
            SystemTime::now(),
            FileType::RegularFile,
            0o444,
        )
    }

    fn file(&self, ino: u64) -> Option<&Arc<MountedFile>> {
        ino.checked_sub(FIRST_FILE_INO)
            .and_then(|i| self.state.files.get(i as usize))
    }
}

/// The process's uid and gid: the owner of `/proc/self`.
pub(crate) fn process_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

impl Filesystem for SnapFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for the largest readahead the kernel allows; it caps it to
        // the bdi's read_ahead_kb (128 KiB by default).
        let _ = config.set_max_readahead(1 << 20);
        // Concurrent direct I/O: without FUSE_ASYNC_DIO the kernel sends an
        // O_DIRECT reader's requests one at a time, so fio at QD16 would
        // see one 20 ms fetch after another. Best effort: old kernels lack it.
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO) {
            log::debug!("kernel lacks {missing:?}: direct I/O is serialized");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT_INO {
            return reply.error(Errno::ENOENT);
        }
        if name == STATS_NAME {
            return reply.entry(&Duration::ZERO, &self.stats_attr(), Generation(0));
        }
        match self
            .state
            .files
            .iter()
            .find(|f| name == f.file_name.as_str())
        {
            Some(f) => reply.entry(&TTL, &f.attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            ROOT_INO => reply.attr(&TTL, &self.root_attr()),
            STATS_INO => reply.attr(&Duration::ZERO, &self.stats_attr()),
            i => match self.file(i) {
                Some(f) => reply.attr(&TTL, &f.attr),
                None => reply.error(Errno::ENOENT),
            },
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if ino.0 == STATS_INO {
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            let mut text = serde_json::to_string_pretty(&self.state.stats()).unwrap_or_default();
            text.push('\n');
            self.stats_handles.insert(fh, Bytes::from(text));
            // Direct I/O: the size is not known to the kernel (it reports 0).
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        }
        match self.file(ino.0) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == STATS_INO {
            let Some(text) = self.stats_handles.get(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            let start = (offset as usize).min(text.len());
            let end = (start + size as usize).min(text.len());
            return reply.data(&text[start..end]);
        }
        let Some(file) = self.file(ino.0).cloned() else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(rec) = &file.recorder {
            rec.read(offset, size, req.pid());
        }
        if let Some(p) = &self.state.prefetcher {
            p.on_read((ino.0 - FIRST_FILE_INO) as usize, offset, size);
        }
        let fetcher = self.state.fetcher.clone();
        let started = std::time::Instant::now();
        let served = move |metrics: &Metrics, data: &[u8]| {
            Metrics::inc(&metrics.reads);
            Metrics::add(&metrics.bytes_served, data.len() as u64);
            metrics.read_latency.observe(started.elapsed());
        };
        let pending = match read::read_local(&file.snapshot, &fetcher, offset, size as usize) {
            read::Local::Done(data) => {
                served(fetcher.metrics(), &data);
                return reply.data(&data);
            }
            read::Local::Pending(p) => p,
        };
        self.rt.spawn(async move {
            let metrics = fetcher.metrics().clone();
            match pending.finish(&file.snapshot, &fetcher).await {
                Ok(data) => {
                    served(&metrics, &data);
                    reply.data(&data);
                }
                Err(e) => {
                    Metrics::inc(&metrics.read_errors);
                    // A bad or unfetchable block was logged where it failed.
                    if e.downcast_ref::<crate::snapshot::BlockError>().is_some() {
                        log::debug!("read {} at {offset}+{size}: {e:#}", file.file_name);
                    } else {
                        READ_ERRORS
                            .error(|| format!("read {} at {offset}+{size}: {e:#}", file.file_name));
                    }
                    reply.error(Errno::EIO);
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.stats_handles.remove(&fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT_INO {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(u64, FileType, &str)> = vec![
            (ROOT_INO, FileType::Directory, "."),
            (ROOT_INO, FileType::Directory, ".."),
        ];
        entries.extend(
            self.state
                .files
                .iter()
                .map(|f| (f.attr.ino.0, FileType::RegularFile, f.file_name.as_str())),
        );
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let total: u64 = self.state.files.iter().map(|f| f.attr.blocks).sum();
        reply.statfs(
            total,
            0,
            0,
            self.state.files.len() as u64 + 1,
            0,
            512,
            255,
            512,
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Some(file) = self.file(ino.0).cloned() else {
            return reply.error(Errno::EINVAL);
        };
        if offset < 0 {
            return reply.error(Errno::ENXIO);
        }
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            // The kernel handles SEEK_SET/CUR/END itself.
            return reply.error(Errno::EINVAL);
        }
        self.rt.spawn(async move {
            let snap = &file.snapshot;
            let r = if whence == libc::SEEK_DATA {
                snap.next_data(offset as u64).await
            } else {
                snap.next_hole(offset as u64).await
            };
            match r {
                Ok(Some(o)) => reply.offset(o as i64),
                Ok(None) => reply.error(Errno::ENXIO),
                Err(e) => {
                    log::error!("lseek {} at {offset}: {e:#}", file.file_name);
                    reply.error(Errno::EIO);
                }
            }
        });
    }
}
