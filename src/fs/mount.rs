//! Running a mount: checks, the FUSE session, the metrics endpoint, and a
//! clean end.
//!
//! The mount runs in the foreground until SIGINT/SIGTERM or an external
//! `fusermount3 -u`. On a signal it unmounts with `fusermount3 -u`; if the
//! mount is busy (a loop device or an open file still uses an image) it says
//! so and **keeps serving** (exiting would turn every later read of those
//! users into an error); a second signal detaches it lazily and exits.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{Config as FuseConfig, MountOption, SessionACL};
use tokio::signal::unix::{signal, SignalKind};

use super::SnapFs;
use crate::cache::BlockCache;
use crate::fetch::Fetcher;
use crate::metrics::Metrics;
use crate::name::SnapshotName;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// FUSE session threads: they only parse requests and hand reads to the
/// async runtime, so a few suffice on any machine.
pub const FUSE_THREADS: usize = 4;
/// Kernel readahead for the mount, in KiB. The kernel starts FUSE mounts at
/// 128 KiB; sequential readers then send 128 KiB requests, and per-request
/// costs (a FUSE round trip, a cache lookup) cap throughput. 1 MiB requests
/// cut those 8× (the environment notes measured 12.6 → 93 MB/s over a 20 ms
/// backend). One block (512 KiB), so that each request lies in one block
/// and needs no assembly, was tried and not kept: over the 20 ms link it
/// made `tar` and the tree scan slower (docs/benchmarks.md, "Read path:
/// previous build vs this one").
pub const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's readahead through sysfs (root only; best effort).
fn raise_read_ahead(mountpoint: &Path) {
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    // Linux dev_t encoding (glibc's gnu_dev_major/minor).
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&path, READ_AHEAD_KB.to_string()) {
        Ok(()) => log::debug!(
            "readahead of {} set to {READ_AHEAD_KB} KiB",
            mountpoint.display()
        ),
        Err(e) => log::debug!("cannot raise readahead ({path}: {e}); the kernel's default applies"),
    }
}

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    /// Snapshots to show; empty: every snapshot in the store.
    pub snapshots: Vec<SnapshotName>,
    pub allow_other: bool,
    pub metrics_addr: Option<SocketAddr>,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub memory_cache_size: u64,
    /// Record each snapshot's demand reads and upload them to the store.
    pub record_traces: bool,
    pub prefetch: crate::prefetch::PrefetchConfig,
}

/// What a snapahead mount shows in `/proc/mounts`: its source (the FUSE
/// `fsname`) and, depending on how it was mounted, the type `fuse` or
/// `fuse.snapahead` (`fuse.` + subtype; fusermount3 adds the subtype, a
/// mount(2) by root may not).
pub const FS_NAME: &str = "snapahead";
const FS_TYPES: [&str; 2] = ["fuse", "fuse.snapahead"];

/// Whether `/proc/mounts` lists `p` as a snapahead FUSE mount.
pub fn is_snapahead_mount(p: &Path) -> bool {
    // A dead mount may not canonicalize itself; its parent can.
    let full = match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            match parent.canonicalize() {
                Ok(pp) => pp.join(name),
                Err(_) => return false,
            }
        }
        _ => return false,
    };
    // Mount points in /proc/mounts escape space, tab, newline and '\\'.
    let want = full
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split(' ');
            let (source, at, kind) = (f.next(), f.next(), f.next());
            source == Some(FS_NAME)
                && at == Some(want.as_str())
                && kind.is_some_and(|k| FS_TYPES.contains(&k))
        })
    })
}

/// Refuses a mountpoint that is missing, not a directory, or already a
/// mount point, with a message that says what to do. A dead snapahead
/// mount (its process was killed: the mountpoint answers ENOTCONN) is
/// detached first, so a restart (systemd's `Restart=on-failure`) needs no
/// one to run `fusermount3 -u`; a dead mount of anything else is refused.
pub fn check_mountpoint(p: &Path) -> anyhow::Result<()> {
    if is_snapahead_mount(p) && is_dead_fuse_mount(p) {
        log::warn!(
            "{} is a dead snapahead mount (its process ended without unmounting): detaching it",
            p.display()
        );
        unmount(p, true)
            .with_context(|| format!("cannot detach the dead mount at {}", p.display()))?;
    }
    check_live_mountpoint(p)
}

/// Whether `p`'s FUSE server is gone. Its attributes may still answer from
/// the kernel's cache (they have long TTLs), so ask for something the
/// kernel must send to the server: a directory listing.
fn is_dead_fuse_mount(p: &Path) -> bool {
    let dead = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    match std::fs::read_dir(p) {
        Err(e) => dead(&e),
        Ok(mut d) => matches!(d.next(), Some(Err(e)) if dead(&e)),
    }
}

fn check_live_mountpoint(p: &Path) -> anyhow::Result<()> {
    let md = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            bail!(
                "mountpoint {} is a dead FUSE mount (\"{e}\"): run `fusermount3 -u {}` first",
                p.display(),
                p.display()
            )
        }
        Err(e) => bail!("mountpoint {}: {e}", p.display()),
    };
    if !md.is_dir() {
        bail!("mountpoint {} is not a directory", p.display());
    }
    let parent = p
        .canonicalize()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if std::fs::metadata(&parent)
        .map(|pm| pm.dev() != md.dev())
        .unwrap_or(false)
    {
        bail!(
            "mountpoint {} is busy: something is already mounted there",
            p.display()
        );
    }
    Ok(())
}

/// Opens the snapshots to show: only their indexes are read. Named
/// snapshots must all open; with no names (every snapshot in the store) a
/// snapshot whose index cannot be read is logged and counted in
/// `unreadable`, and the others are served; that fails only when there
/// were snapshots and none could be opened.
pub async fn open_snapshots(
    store: &Store,
    names: &[SnapshotName],
    unreadable: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<Vec<Arc<Snapshot>>> {
    let mut out = Vec::new();
    if !names.is_empty() {
        for n in names {
            out.push(Arc::new(Snapshot::open(store, n).await?));
        }
        return Ok(out);
    }
    let mut bad = Vec::new();
    for (name, ix) in crate::catalog::list(store).await? {
        match ix {
            Ok(ix) => out.push(Arc::new(Snapshot::from_index(store.clone(), ix))),
            Err(e) => {
                log::error!("snapshot {:?} is not served: {e:#}", name.as_str());
                Metrics::inc(unreadable);
                bad.push(name);
            }
        }
    }
    if out.is_empty() && !bad.is_empty() {
        bail!(
            "no snapshot in {} can be served: {} unreadable ({})",
            store.url(),
            bad.len(),
            bad.iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

pub async fn run(store: Store, opts: MountOptions) -> anyhow::Result<()> {
    check_mountpoint(&opts.mountpoint)?;
    let metrics = Arc::new(Metrics::default());
    let snapshots = open_snapshots(&store, &opts.snapshots, &metrics.snapshots_unreadable)
        .await
        .with_context(|| format!("cannot open the snapshots in {}", store.url()))?;
    if snapshots.is_empty() {
        log::warn!(
            "store {} holds no snapshots: the mount will be empty",
            store.url()
        );
    }
    // Bound before mounting: a taken address fails before anything is mounted.
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            // The address it got: port 0 asks the kernel for a free one.
            let bound = l.local_addr().map_or(addr, |a| a);
            log::info!("metrics at http://{bound}/metrics");
            Some((l, bound))
        }
        None => None,
    };
    let cache = Arc::new(BlockCache::open(
        &opts.cache_dir,
        opts.cache_size,
        opts.memory_cache_size,
        metrics.clone(),
    )?);
    let fetcher = Arc::new(Fetcher::new(
        store.clone(),
        cache,
        metrics,
        opts.prefetch.fetch_slots(),
    ));
    let prefetcher = opts.prefetch.enabled.then(|| {
        crate::prefetch::Prefetcher::start(
            snapshots.clone(),
            fetcher.clone(),
            opts.prefetch.clone(),
        )
    });
    let mountpoint = opts.mountpoint.display().to_string();
    let fs = SnapFs::new(
        tokio::runtime::Handle::current(),
        snapshots,
        fetcher,
        mountpoint.clone(),
        store.url().to_string(),
        opts.record_traces,
        prefetcher,
    )?;
    let state = fs.state();
    // Known before the mount appears, so whoever sees the mount sees it too.
    if let Some((_, bound)) = &metrics_listener {
        let _ = state.metrics_addr.set(bound.to_string());
    }

    let mut cfg = FuseConfig::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(FS_NAME.into()),
        MountOption::Subtype("snapahead".into()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    cfg.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(FUSE_THREADS);
    cfg.clone_fd = true;
    let session = fuser::spawn_mount(fs, &opts.mountpoint, &cfg).with_context(|| {
        format!("cannot mount on {mountpoint} (is fuse3 installed and /dev/fuse available?)")
    })?;
    raise_read_ahead(&opts.mountpoint);
    log::info!(
        "mounted {} snapshot(s) from {} on {mountpoint}: {}",
        state.files.len(),
        store.url(),
        state
            .files
            .iter()
            .map(|f| f.file_name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let Some((listener, _)) = metrics_listener {
        let state = state.clone();
        tokio::spawn(crate::metrics::server::serve(
            listener,
            Arc::new(move || state.stats()),
        ));
    }

    let uploader = opts.record_traces.then(|| {
        let (state, store) = (state.clone(), store.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::trace::record::UPLOAD_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                state.upload_traces(&store).await;
            }
        })
    });
    let served = serve_until_unmounted(session, &opts.mountpoint).await;
    if let Some(u) = uploader {
        u.abort();
        state.upload_traces(&store).await;
    }
    served
}

/// Serves until SIGINT/SIGTERM (then unmounts; if busy, keeps serving until
/// a second signal detaches lazily) or an external unmount; then joins the
/// session. Shared by `mount` and `monitor`.
pub async fn serve_until_unmounted(
    session: fuser::BackgroundSession,
    mountpoint: &Path,
) -> anyhow::Result<()> {
    let shown = mountpoint.display();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut asked = 0;
    loop {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if session.guard.is_finished() {
                    log::info!("{shown} was unmounted externally");
                    break;
                }
                continue;
            }
        }
        asked += 1;
        if asked == 1 {
            log::info!("signal received: unmounting {shown}");
            match unmount(mountpoint, false) {
                Ok(()) => break,
                Err(e) => log::warn!(
                    "cannot unmount {shown}: {e}; still serving (detach loop devices / close files, \
                     or send the signal again to detach lazily and exit)"
                ),
            }
        } else {
            log::warn!("second signal: detaching {shown} lazily");
            let _ = unmount(mountpoint, true);
            return Ok(());
        }
    }
    // Unmounted (by us or externally): the session thread ends on its own.
    tokio::task::spawn_blocking(move || session.join())
        .await
        .context("joining the FUSE session")?
        .context("ending the FUSE session")?;
    log::info!("unmounted {shown}");
    Ok(())
}

/// `fusermount3 -u [-z] PATH`.
pub fn unmount(p: &Path, lazy: bool) -> anyhow::Result<()> {
    let mut c = Command::new("fusermount3");
    c.arg("-u");
    if lazy {
        c.arg("-z");
    }
    let out = c.arg(p).output().context("running fusermount3")?;
    if out.status.success() {
        Ok(())
    } else {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
    }
}
