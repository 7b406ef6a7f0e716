//! The disk tier's directory: created private (0700: cached blocks are
//! the volume's data), and owned by one mount at a time.
//!
//! `lock` takes an exclusive `flock` on `<dir>/lock` (holding the owner's
//! pid) for as long as the cache is open, and refuses a directory another
//! process holds (after waiting [`LOCK_WAIT`] for it to let go: a restart's
//! old process may still be flushing). Two mounts on one directory would
//! each keep their own LRU of the same files, evict each other's blocks and
//! overshoot the bound; sharing safely would need one index across
//! processes. The kernel drops the lock when its holder dies, even by
//! `kill -9`, so a restarted mount never finds a stale one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Creates `p` (and its parents) and makes it 0700.
pub fn mkdir_private(p: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(p)
        .with_context(|| format!("cannot create cache directory {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions of {}", p.display()))
}

/// How long `open` waits for another process to release the directory: a
/// mount that was just unmounted flushes and exits within a second or so,
/// and a restart (`umount` then `mount`, systemd's restart) should not fail
/// on that; a mount that keeps running is refused after this.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes `<dir>/lock` for this process, or says who holds it.
pub fn lock(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let locked = loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                f = back;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => break other,
        }
    };
    match locked {
        Ok(mut held) => {
            // Who holds it, for the message another process will give.
            held.set_len(0)?;
            held.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            Ok(held)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "cache directory {} is in use by another snapahead process (pid {}): \
                 give each mount its own cache.dir (or --cache-dir)",
                dir.display(),
                pid.trim()
            )
        }
        Err((_, e)) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display())),
    }
}

/// Removes what an earlier layout of the disk tier left (one file per
/// block under `blocks/`, temp files under `tmp/`): a cache, so it is
/// dropped, not converted.
pub fn drop_old_layout(dir: &Path) -> anyhow::Result<()> {
    for old in ["blocks", "tmp"] {
        let p = dir.join(old);
        if p.exists() {
            log::info!(
                "disk cache {}: dropping {} (an earlier cache layout)",
                dir.display(),
                p.display()
            );
            fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_is_used_by_one_cache_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = super::super::DiskCache::open(dir.path(), 1 << 20).unwrap();
        let e = super::super::DiskCache::open(dir.path(), 1 << 20)
            .err()
            .expect("refused while held");
        let msg = format!("{e:#}");
        assert!(msg.contains("in use by another snapahead process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(c);
        super::super::DiskCache::open(dir.path(), 1 << 20).expect("free again once closed");
    }
}
