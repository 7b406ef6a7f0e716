//! `monitor`: a passthrough FUSE mount of a live volume image that records
//! every read and write into a trace.
//!
//! The image appears read-write as `<mountpoint>/<file name>`; the user
//! loop-mounts that file and runs the workload. Each read and write is
//! forwarded to the image with `pread`/`pwrite` on the FUSE thread that
//! received it and recorded as `(time, op, offset, length, pid)`. The file is
//! opened with direct I/O, so the kernel keeps no second page cache of it
//! here and every access of the loop device reaches us — a trace of what the
//! volume really sees, not of what missed an extra cache.
//!
//! Records go through a channel to a writer thread that writes trace frames
//! and flushes every [`FLUSH_EVERY`]: a crash loses at most that much; a
//! clean end (SIGINT/SIGTERM, `fusermount3 -u`) flushes everything.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyWrite, Request, WriteFlags,
};

use super::{Owner, ROOT_INO};
use crate::trace::{Op, Record, TraceHeader, TraceWriter};

/// How much a crash may lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// A sequential read (one starting where the last ended, at least
/// [`SEQUENTIAL_READ`] long) has the image's next bytes read into the page
/// cache in the background, this far: direct I/O gives the kernel no
/// readahead on our side, so without it every 1 MiB request of a `dd`
/// waited for the disk. 4 MiB: a few requests ahead, small against memory.
const READ_AHEAD: u64 = 4 << 20;
const SEQUENTIAL_READ: u32 = 64 * 1024;
const FILE_INO: u64 = 2;
const TTL: Duration = Duration::from_secs(1);

struct MonitorFs {
    image: File,
    file_name: String,
    owner: Owner,
    started: Instant,
    mtime: SystemTime,
    records: Sender<Record>,
    /// Where the last read ended: a read starting there is sequential.
    last_read_end: std::sync::atomic::AtomicU64,
}

impl MonitorFs {
    fn attr(&self, ino: u64) -> fuser::FileAttr {
        if ino == ROOT_INO {
            return self
                .owner
                .attr(ROOT_INO, 0, 0, self.mtime, FileType::Directory, 0o755);
        }
        let size = self.image.metadata().map(|m| m.len()).unwrap_or(0);
        self.owner.attr(
            FILE_INO,
            size,
            size.div_ceil(512),
            self.mtime,
            FileType::RegularFile,
            0o644,
        )
    }

    fn record(&self, op: Op, offset: u64, len: usize, pid: u32) {
        // The writer thread only stops after the filesystem is dropped.
        let _ = self.records.send(Record {
            t_ns: self.started.elapsed().as_nanos() as u64,
            op,
            offset,
            len: len as u32,
            stream: pid,
        });
    }
}

impl Filesystem for MonitorFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Concurrent direct I/O (as the snapshot mount asks): without it the
        // kernel sends a queue-depth-16 reader's requests one at a time.
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO) {
            log::debug!("kernel lacks {missing:?}: direct I/O is serialized");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT_INO && name == self.file_name.as_str() {
            reply.entry(&TTL, &self.attr(FILE_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            ROOT_INO | FILE_INO => reply.attr(&TTL, &self.attr(ino.0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A volume's size is fixed; everything else is accepted and ignored.
        let current = self.image.metadata().map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| s != current) {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == FILE_INO {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 != FILE_INO {
            return reply.error(Errno::ENOENT);
        }
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match self.image.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("read of the image at {offset}: {e}");
                    return reply.error(Errno::EIO);
                }
            }
        }
        self.record(Op::Read, offset, n, req.pid());
        let end = offset + n as u64;
        let last = self
            .last_read_end
            .swap(end, std::sync::atomic::Ordering::Relaxed);
        if last == offset && size >= SEQUENTIAL_READ {
            // Advice only: a failure costs the speed-up, nothing else.
            let _ = nix::fcntl::posix_fadvise(
                &self.image,
                end as libc::off_t,
                READ_AHEAD as libc::off_t,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
        reply.data(&buf[..n]);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino.0 != FILE_INO {
            return reply.error(Errno::ENOENT);
        }
        let size = self.image.metadata().map(|m| m.len()).unwrap_or(0);
        if offset + data.len() as u64 > size {
            // Writing past the end would grow the volume.
            return reply.error(Errno::ENOSPC);
        }
        if let Err(e) = self.image.write_all_at(data, offset) {
            log::error!("write of the image at {offset}: {e}");
            return reply.error(Errno::EIO);
        }
        self.record(Op::Write, offset, data.len(), req.pid());
        reply.written(data.len() as u32);
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
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = if datasync {
            self.image.sync_data()
        } else {
            self.image.sync_all()
        };
        match r {
            Ok(()) => reply.ok(),
            Err(_) => reply.error(Errno::EIO),
        }
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
        let entries = [
            (ROOT_INO, FileType::Directory, "."),
            (ROOT_INO, FileType::Directory, ".."),
            (FILE_INO, FileType::RegularFile, self.file_name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The trace writer thread: frames out, flushed every [`FLUSH_EVERY`] and
/// at the end (when every sender is gone).
fn write_trace(
    rx: Receiver<Record>,
    mut w: TraceWriter<std::io::BufWriter<File>>,
    out: PathBuf,
) -> anyhow::Result<u64> {
    let mut last_flush = Instant::now();
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(r) => w
                .push(&r)
                .with_context(|| format!("writing trace {}", out.display()))?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            w.flush()
                .with_context(|| format!("writing trace {}", out.display()))?;
            last_flush = Instant::now();
        }
    }
    let n = w.records();
    let f = w
        .finish()
        .with_context(|| format!("writing trace {}", out.display()))?;
    f.get_ref()
        .sync_all()
        .with_context(|| format!("syncing trace {}", out.display()))?;
    Ok(n)
}

pub async fn run(image: &Path, mountpoint: &Path, trace: &Path) -> anyhow::Result<()> {
    super::mount::check_mountpoint(mountpoint)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("cannot open volume image {} read-write", image.display()))?;
    let md = file.metadata()?;
    if !md.is_file() {
        bail!(
            "{} is not a regular file (monitor passes an image file through)",
            image.display()
        );
    }
    let file_name = image
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "volume.img".into());
    let header = TraceHeader {
        volume: file_name.clone(),
        volume_size: md.len(),
        start_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        host: crate::trace::host_name(),
        source: "monitor".into(),
    };
    let out = std::fs::File::create(trace)
        .with_context(|| format!("cannot create trace {}", trace.display()))?;
    let writer = TraceWriter::new(std::io::BufWriter::new(out), &header)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let trace_path = trace.to_path_buf();
    let writer_thread = std::thread::Builder::new()
        .name("trace-writer".into())
        .spawn(move || write_trace(rx, writer, trace_path))?;

    let (uid, gid) = super::process_ids();
    let fs = MonitorFs {
        image: file,
        file_name: file_name.clone(),
        owner: Owner { uid, gid },
        started: Instant::now(),
        mtime: SystemTime::now(),
        records: tx,
        last_read_end: u64::MAX.into(),
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RW,
        fuser::MountOption::FSName("snapahead-monitor".into()),
        fuser::MountOption::Subtype("snapahead".into()),
        fuser::MountOption::NoAtime,
    ];
    cfg.n_threads = Some(super::mount::FUSE_THREADS);
    cfg.clone_fd = true;
    let session = fuser::spawn_mount(fs, mountpoint, &cfg)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    log::info!(
        "monitoring {} as {}/{file_name}; recording to {}",
        image.display(),
        mountpoint.display(),
        trace.display()
    );
    super::mount::serve_until_unmounted(session, mountpoint).await?;
    // The filesystem (and its sender) is gone with the session: the writer ends.
    let n = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .context("trace writer")?
        .map_err(|_| anyhow::anyhow!("trace writer panicked"))??;
    log::info!("trace {}: {n} records", trace.display());
    Ok(())
}
