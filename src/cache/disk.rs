//! The disk tier: one file per block under `<dir>/blocks/<2 hex>/<64 hex>`,
//! bounded in bytes with LRU eviction.
//!
//! - Files are written whole: to `<dir>/tmp/` first, then renamed into
//!   place, so a crash leaves at worst a stray temp file (removed at the next
//!   start), never a torn block under a block's name.
//! - Every read is checked against the key (the BLAKE3 of the block), so a
//!   file damaged after it was written (disk error, power loss before the
//!   data reached the disk, a person editing it) is dropped and refetched,
//!   never served. A file is `header | block`: the header holds the
//!   block's segment chaining values (see [`super::verified`]), so a read of
//!   a few KiB reads and checks only the 16 KiB segments it touches. An
//!   open file also keeps, per segment, its 4 KiB pages' CVs once a partial
//!   read has proven them: a hot random 4 KiB read then reads and hashes
//!   4 KiB (in memory only: at most [`MAX_OPEN_FILES`] × 4 KiB of CVs).
//! - At start the directory is scanned and every block file becomes a cache
//!   entry again (oldest modification first in LRU order); the content is
//!   checked lazily, on first read.
//! - The directory is created 0700 and files 0600: cached blocks are the
//!   volume's data.
//! - One mount per directory: `open` takes an exclusive `flock` on
//!   `<dir>/lock` (holding the owner's pid) for as long as the cache is
//!   open, and refuses a directory another process holds (after waiting
//!   [`LOCK_WAIT`] for it to let go: a restart's old process may still be
//!   flushing). Two mounts on
//!   one directory would each keep their own LRU of the same files, evict
//!   each other's blocks and overshoot the bound; sharing safely would
//!   need one index across processes. The kernel drops the lock when its
//!   holder dies, even by `kill -9`, so a restarted mount never finds a
//!   stale one.
//!
//! Over 500 lines with its tests, on purpose: the file format, the
//! rebuilt index, eviction and the verified partial read are one mechanism
//! whose tests damage files written by the same code.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use bytes::Bytes;
use lru::LruCache;

use super::verified::{cvs_match_root, merge_leaves, page_cvs, segment_cv, PAGE, SEGMENT};
use super::BlockKey;
use blake3::hazmat::ChainingValue;

/// Cache file header: magic, version u16, reserved u16, block length u32,
/// CV count u32, then the CVs (32 bytes each).
const FILE_MAGIC: &[u8; 4] = b"SACB";
const FILE_VERSION: u16 = 1;
const HEADER_FIXED: usize = 16;

/// `cvs`: the block's segment CVs, as [`super::verified::check_block`]
/// returned them when the block was checked (none for a one-segment block).
fn encode_header(block: &[u8], cvs: &[ChainingValue]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_FIXED + 32 * cvs.len());
    h.extend_from_slice(FILE_MAGIC);
    h.extend_from_slice(&FILE_VERSION.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&(block.len() as u32).to_le_bytes());
    h.extend_from_slice(&(cvs.len() as u32).to_le_bytes());
    for cv in cvs {
        h.extend_from_slice(cv);
    }
    h
}

/// Open cache files kept with their verified CVs: a hot block's read is
/// then one pread and a segment hash. At most this many, and at most a
/// quarter of the process's open-file limit (systemd's default soft limit
/// is 1024), so the mount never runs out of descriptors.
pub const MAX_OPEN_FILES: usize = 4096;

fn open_file_budget() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        });
    (soft.unwrap_or(1024) / 4).clamp(16, MAX_OPEN_FILES)
}

pub struct DiskCache {
    /// Held while the cache is open (see the module doc).
    _lock: nix::fcntl::Flock<File>,
    root: PathBuf,
    capacity: u64,
    state: Mutex<State>,
    open: Mutex<LruCache<BlockKey, std::sync::Arc<OpenBlock>>>,
}

/// A cache file opened and its header checked against the block's key.
struct OpenBlock {
    file: File,
    len: usize,
    /// Segment CVs, proven against the key; empty for one-segment blocks.
    cvs: Vec<[u8; 32]>,
    /// Per segment, its pages' CVs once a partial read proved them against
    /// the segment's CV (see [`super::verified::PAGE`]).
    pages: Vec<OnceLock<Box<[ChainingValue]>>>,
    data_at: u64,
}

struct State {
    lru: LruCache<BlockKey, u64>,
    used: u64,
}

pub enum Lookup {
    /// The bytes asked for, and the whole block when the read had to read
    /// and verify all of it anyway (then it may go to the memory tier).
    Hit {
        data: Bytes,
        whole: Option<Bytes>,
    },
    Miss,
    Corrupt,
}

/// Lower-case hex of a key (on the read path: no per-byte formatting).
fn hex(key: &BlockKey) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in key {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn parse_hex(s: &str) -> Option<BlockKey> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, o) in k.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

fn mkdir_private(p: &Path) -> anyhow::Result<()> {
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
fn lock_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<File>> {
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

impl DiskCache {
    pub fn open(dir: &Path, capacity: u64) -> anyhow::Result<Self> {
        mkdir_private(dir)?;
        let lock = lock_dir(dir)?;
        mkdir_private(&dir.join("blocks"))?;
        let tmp = dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
        }
        mkdir_private(&tmp)?;

        // Rebuild the index from the files present.
        let mut found: Vec<(std::time::SystemTime, BlockKey, u64)> = Vec::new();
        for sub in fs::read_dir(dir.join("blocks"))? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name();
                match name.to_str().and_then(parse_hex) {
                    Some(k) => {
                        let md = f.metadata()?;
                        found.push((md.modified().unwrap_or(std::time::UNIX_EPOCH), k, md.len()));
                    }
                    None => {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort_by_key(|(t, _, _)| *t);
        let cache = DiskCache {
            _lock: lock,
            root: dir.to_path_buf(),
            capacity,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
            }),
            open: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(open_file_budget())
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        };
        {
            let mut s = cache.lock();
            for (_, k, len) in found {
                s.lru.put(k, len);
                s.used += len;
            }
        }
        cache.evict();
        let (b, n) = cache.usage();
        log::info!(
            "disk cache {}: {n} blocks, {b} bytes (bound {capacity})",
            dir.display()
        );
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the LRU inconsistent
        // in a way that matters (entries are re-checked on read).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &BlockKey) -> PathBuf {
        let h = hex(key);
        self.root.join("blocks").join(&h[..2]).join(h)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn usage(&self) -> (u64, u64) {
        let s = self.lock();
        (s.used, s.lru.len() as u64)
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.lock().lru.contains(key)
    }

    /// The open file of block `key` (opened and its header checked on first
    /// use, then kept in the open-file LRU). `Ok(None)`: not a block of
    /// length `len` with that key.
    fn open_block(
        &self,
        key: &BlockKey,
        len: usize,
    ) -> std::io::Result<Option<std::sync::Arc<OpenBlock>>> {
        if let Some(b) = self.open.lock().ok().and_then(|mut o| o.get(key).cloned()) {
            return Ok(Some(b));
        }
        let Some(b) = OpenBlock::open(File::open(self.path(key))?, key, len)? else {
            return Ok(None);
        };
        let b = std::sync::Arc::new(b);
        if let Ok(mut open) = self.open.lock() {
            open.put(*key, b.clone());
        }
        Ok(Some(b))
    }

    /// Asks the kernel to read block `key`'s file into the page cache in the
    /// background (`posix_fadvise(WILLNEED)`), so that a sequential reader
    /// finds its next blocks in memory instead of waiting for the disk one
    /// block file at a time (the kernel's own readahead starts afresh in
    /// every file). Best effort: a missing or bad file is left to `get`.
    /// True when the block was found and advised.
    pub fn advise(&self, key: &BlockKey, len: usize) -> bool {
        if !self.lock().lru.contains(key) {
            return false;
        }
        match self.open_block(key, len) {
            Ok(Some(b)) => {
                // Advice only: a failure costs the speed-up, nothing else.
                let _ = nix::fcntl::posix_fadvise(
                    &b.file,
                    b.data_at as libc::off_t,
                    b.len as libc::off_t,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                );
                true
            }
            _ => false,
        }
    }

    /// Reads and verifies bytes `range` of the block `key` of length `len`.
    pub fn get(&self, key: &BlockKey, len: usize, range: Range<usize>) -> Lookup {
        if self.lock().lru.get(key).is_none() {
            return Lookup::Miss;
        }
        let block = self.open_block(key, len);
        let data = match block {
            Ok(Some(b)) if b.len == len => b.read(key, range),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        match data {
            Ok(Some((data, whole))) => Lookup::Hit { data, whole },
            Ok(None) | Err(_) => {
                log::warn!(
                    "disk cache: {} is damaged or unreadable; dropped, the block will be refetched",
                    self.path(key).display()
                );
                self.remove(key);
                Lookup::Corrupt
            }
        }
    }

    fn remove(&self, key: &BlockKey) {
        let mut s = self.lock();
        if let Some(len) = s.lru.pop(key) {
            s.used -= len;
        }
        drop(s);
        self.forget_open(key);
        let _ = fs::remove_file(self.path(key));
    }

    fn forget_open(&self, key: &BlockKey) {
        if let Ok(mut o) = self.open.lock() {
            o.pop(key);
        }
    }

    /// Stores a verified block (temp file + rename), then evicts down to
    /// the bound. `cvs`: what [`super::verified::check_block`] returned for
    /// it, so the block is not hashed a second time here.
    pub fn put(&self, key: &BlockKey, data: &[u8], cvs: &[ChainingValue]) -> std::io::Result<()> {
        let header = encode_header(data, cvs);
        // Accounted as the file's size, as the start-up scan does.
        let len = (header.len() + data.len()) as u64;
        if len > self.capacity || self.contains(key) {
            return Ok(());
        }
        let dest = self.path(key);
        if let Some(parent) = dest.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent)?;
                fs::set_permissions(parent, fs::Permissions::from_mode(0o700))?;
            }
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}", hex(key), rand::random::<u64>()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&header)?;
            f.write_all(data)?;
            fs::rename(&tmp, &dest)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            // Out of space: make room for the future, report this one.
            if e.raw_os_error() == Some(28) {
                self.shrink_to(self.usage().0 / 2);
            }
            return Err(e);
        }
        {
            let mut s = self.lock();
            if s.lru.put(*key, len).is_none() {
                s.used += len;
            }
        }
        self.evict();
        Ok(())
    }

    fn evict(&self) {
        self.shrink_to(self.capacity);
    }

    fn shrink_to(&self, bound: u64) {
        loop {
            let victim = {
                let mut s = self.lock();
                if s.used <= bound {
                    return;
                }
                match s.lru.pop_lru() {
                    Some((k, len)) => {
                        s.used -= len;
                        k
                    }
                    None => return,
                }
            };
            self.forget_open(&victim);
            let _ = fs::remove_file(self.path(&victim));
        }
    }
}

impl OpenBlock {
    /// Reads the header (one pread) and proves its CVs against `key`.
    /// `Ok(None)`: the file does not hold a block of length `len` with that key.
    fn open(file: File, key: &BlockKey, len: usize) -> std::io::Result<Option<OpenBlock>> {
        let n_cvs = if len > SEGMENT {
            len.div_ceil(SEGMENT)
        } else {
            0
        };
        let mut header = vec![0u8; HEADER_FIXED + 32 * n_cvs];
        file.read_exact_at(&mut header, 0)?;
        let u32_at = |i: usize| {
            u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]) as usize
        };
        if &header[..4] != FILE_MAGIC
            || header[4..6] != FILE_VERSION.to_le_bytes()
            || u32_at(8) != len
            || u32_at(12) != n_cvs
        {
            return Ok(None);
        }
        let cvs: Vec<[u8; 32]> = header[HEADER_FIXED..]
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                a
            })
            .collect();
        if n_cvs > 0 && !cvs_match_root(&cvs, len as u64, key) {
            return Ok(None);
        }
        Ok(Some(OpenBlock {
            file,
            len,
            pages: cvs.iter().map(|_| OnceLock::new()).collect(),
            cvs,
            data_at: header.len() as u64,
        }))
    }

    /// Reads `range` of the block and checks it: the whole block against
    /// `key` when it is one segment or the range covers it, otherwise each
    /// touched segment against its CV, or only the touched pages of a
    /// segment whose page CVs are known (the first partial read of a
    /// segment reads it whole and proves its page CVs). `Ok(None)`: a check
    /// failed. With the bytes, the whole verified block when it was read
    /// whole.
    fn read(
        &self,
        key: &BlockKey,
        range: Range<usize>,
    ) -> std::io::Result<Option<(Bytes, Option<Bytes>)>> {
        let len = self.len;
        if range.start > range.end || range.end > len {
            return Ok(None);
        }
        if self.cvs.is_empty() || (range.start == 0 && range.end == len) {
            let mut data = vec![0u8; len];
            self.file.read_exact_at(&mut data, self.data_at)?;
            if blake3::hash(&data).as_bytes() != key {
                return Ok(None);
            }
            let whole = Bytes::from(data);
            return Ok(Some((whole.slice(range), Some(whole))));
        }
        if range.is_empty() {
            return Ok(Some((Bytes::new(), None)));
        }
        let first = range.start / SEGMENT;
        let last = (range.end - 1) / SEGMENT;
        // The bytes read: whole segments, except at an end whose segment's
        // page CVs are known, where only the touched pages.
        let start = match self.pages[first].get() {
            Some(_) => range.start / PAGE * PAGE,
            None => first * SEGMENT,
        };
        let end = match self.pages[last].get() {
            Some(_) => range.end.div_ceil(PAGE) * PAGE,
            None => (last + 1) * SEGMENT,
        }
        .min(len);
        let mut data = vec![0u8; end - start];
        self.file
            .read_exact_at(&mut data, self.data_at + start as u64)?;
        for k in first..=last {
            let (s0, s1) = (k * SEGMENT, ((k + 1) * SEGMENT).min(len));
            let (a, b) = (start.max(s0), end.min(s1));
            if !self.check_part(
                k,
                a,
                &data[a - start..b - start],
                range.start <= s0 && range.end >= s1,
            ) {
                return Ok(None);
            }
        }
        let data = Bytes::from(data);
        Ok(Some((
            data.slice(range.start - start..range.end - start),
            None,
        )))
    }

    /// Checks `part`, the bytes at `at` of segment `k`: all of it, or (when
    /// its page CVs are known) whole pages of it. `covered`: the request
    /// covers the whole segment, so its page CVs are not worth computing.
    fn check_part(&self, k: usize, at: usize, part: &[u8], covered: bool) -> bool {
        let s0 = k * SEGMENT;
        let whole = at == s0 && part.len() == (self.len - s0).min(SEGMENT);
        if let Some(pages) = self.pages[k].get().filter(|_| !(whole && covered)) {
            let first = (at - s0) / PAGE;
            return part.chunks(PAGE).enumerate().all(|(i, p)| {
                pages.get(first + i) == Some(&segment_cv((at + i * PAGE) as u64, p))
            });
        }
        if !whole {
            // Only reached with page CVs known (the read was sized by them).
            return false;
        }
        if covered {
            return segment_cv(s0 as u64, part) == self.cvs[k];
        }
        // The segment's first partial read: its page CVs, proven by the
        // segment's CV, serve the reads after it.
        let pages = page_cvs(s0 as u64, part);
        if merge_leaves(&pages, part.len() as u64, PAGE as u64) != Some(self.cvs[k]) {
            return false;
        }
        let _ = self.pages[k].set(pages.into_boxed_slice());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::verified::check_block;

    /// Stores a block the way the fetch path does: checked, then put with
    /// the CVs the check computed.
    fn put(c: &DiskCache, key: &BlockKey, data: &[u8]) {
        let cvs = check_block(data, key).expect("test blocks match their keys");
        c.put(key, data, &cvs).unwrap();
    }

    fn block(seed: u8, len: usize) -> (BlockKey, Vec<u8>) {
        let d = vec![seed; len];
        (*blake3::hash(&d).as_bytes(), d)
    }

    #[test]
    fn put_get_evict_reopen_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        // Each 1000-byte block takes a 1016-byte file (16-byte header, no CVs).
        let c = DiskCache::open(&root, 3100).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let (k1, d1) = block(1, 1000);
        let (k2, d2) = block(2, 1000);
        let (k3, d3) = block(3, 1000);
        put(&c, &k1, &d1);
        put(&c, &k2, &d2);
        assert_eq!(
            fs::metadata(c.path(&k1)).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(c.get(&k1, 1000, 0..1000), Lookup::Hit { data: d, .. } if d == d1));
        put(&c, &k3, &d3);
        let (k4, d4) = block(4, 1000);
        put(&c, &k4, &d4); // evicts k2, the least recently used
        assert!(matches!(c.get(&k2, 1000, 0..1000), Lookup::Miss));
        assert!(!c.path(&k2).exists());
        assert_eq!(c.usage(), (3048, 3));
        drop(c);

        // Reopened: the entries are back; a damaged file is dropped.
        let c = DiskCache::open(&root, 3100).unwrap();
        assert_eq!(c.usage(), (3048, 3));
        let mut bad = fs::read(c.path(&k3)).unwrap();
        bad[HEADER_FIXED + 10] ^= 1;
        fs::write(c.path(&k3), &bad).unwrap();
        assert!(matches!(c.get(&k3, 1000, 0..1000), Lookup::Corrupt));
        assert!(matches!(c.get(&k3, 1000, 0..1000), Lookup::Miss));
        assert!(!c.path(&k3).exists());
        // A truncated file too.
        let whole = fs::read(c.path(&k4)).unwrap();
        fs::write(c.path(&k4), &whole[..500]).unwrap();
        assert!(matches!(c.get(&k4, 1000, 0..1000), Lookup::Corrupt));
        // A stray temp file from a crash is removed at start.
        fs::write(root.join("tmp").join("x.tmp"), b"torn").unwrap();
        drop(c);
        DiskCache::open(&root, 3100).unwrap();
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_is_used_by_one_cache_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let e = DiskCache::open(dir.path(), 1 << 20)
            .err()
            .expect("refused while held");
        let msg = format!("{e:#}");
        assert!(msg.contains("in use by another snapahead process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(c);
        DiskCache::open(dir.path(), 1 << 20).expect("free again once closed");
    }

    #[test]
    fn partial_reads_are_verified_per_segment() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 10 << 20).unwrap();
        let len = 512 * 1024 - 100;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let key = *blake3::hash(&data).as_bytes();
        put(&c, &key, &data);
        for r in [
            0..4096,
            5000..9000,
            16380..16390,
            len - 10..len,
            0..len,
            100..100,
        ] {
            match c.get(&key, len, r.clone()) {
                Lookup::Hit { data: d, whole } => {
                    assert!(d == data[r.clone()], "{r:?}");
                    // Only a read of the whole block hands the block over.
                    assert_eq!(whole.is_some(), r == (0..len), "{r:?}");
                }
                _ => panic!("{r:?} not a hit"),
            }
        }
        // Damage segment 3: reads of other segments still verify (their
        // CVs and the root do), a read touching segment 3 is refused.
        let path = c.path(&key);
        let mut file = fs::read(&path).unwrap();
        let data_at = HEADER_FIXED + 32 * len.div_ceil(SEGMENT);
        file[data_at + 3 * SEGMENT + 5] ^= 1;
        fs::write(&path, &file).unwrap();
        assert!(matches!(c.get(&key, len, 0..4096), Lookup::Hit { .. }));
        assert!(matches!(
            c.get(&key, len, 3 * SEGMENT..3 * SEGMENT + 10),
            Lookup::Corrupt
        ));
        assert!(matches!(c.get(&key, len, 0..10), Lookup::Miss));
        // A wrong length is refused too.
        put(&c, &key, &data);
        assert!(matches!(c.get(&key, len - 1, 0..10), Lookup::Corrupt));
    }

    #[test]
    fn known_page_cvs_verify_exactly_the_pages_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 10 << 20).unwrap();
        let len = 512 * 1024 - 100;
        let data: Vec<u8> = (0..len).map(|i| (i * 11 % 251) as u8).collect();
        let key = *blake3::hash(&data).as_bytes();
        put(&c, &key, &data);
        let hit = |r: Range<usize>| match c.get(&key, len, r.clone()) {
            Lookup::Hit { data: d, .. } => assert!(d == data[r.clone()], "{r:?}"),
            _ => panic!("{r:?} not a hit"),
        };
        // First partial reads prove segments 1 and the last (short) one;
        // then every kind of range: inside a page, across pages, across a
        // proven and an unproven segment, whole segments, the block's end.
        hit(SEGMENT + 100..SEGMENT + 110);
        hit(len - 5000..len - 4000);
        for r in [
            SEGMENT..SEGMENT + 4096,
            SEGMENT + 4000..SEGMENT + 4200,
            2 * SEGMENT - 10..2 * SEGMENT + 10,
            SEGMENT - 10..SEGMENT + 10,
            SEGMENT..2 * SEGMENT,
            SEGMENT + 1..3 * SEGMENT + 1,
            len - 10..len,
            len - PAGE - 1..len,
        ] {
            hit(r);
        }
        let open = c.open_block(&key, len).unwrap().unwrap();
        assert!(open.pages[1].get().is_some() && open.pages[5].get().is_none());
        // Damage page 3 of segment 1: its other pages, proven, still read
        // (only they are hashed); a read of page 3 is refused.
        let path = c.path(&key);
        let mut file = fs::read(&path).unwrap();
        file[open.data_at as usize + SEGMENT + 3 * PAGE + 7] ^= 1;
        fs::write(&path, &file).unwrap();
        hit(SEGMENT..SEGMENT + 3 * PAGE);
        assert!(matches!(
            c.get(&key, len, SEGMENT + 3 * PAGE..SEGMENT + 3 * PAGE + 1),
            Lookup::Corrupt
        ));
        // A read covering the damaged segment whole is refused as well.
        put(&c, &key, &data);
        hit(SEGMENT + 100..SEGMENT + 110);
        fs::write(&path, &file).unwrap();
        assert!(matches!(c.get(&key, len, 0..3 * SEGMENT), Lookup::Corrupt));
    }

    #[test]
    fn advise_opens_only_cached_intact_blocks_and_changes_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 10 << 20).unwrap();
        let len = 512 * 1024;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let key = *blake3::hash(&data).as_bytes();
        // Not cached: nothing is opened.
        assert!(!c.advise(&key, len));
        assert_eq!(c.open.lock().unwrap().len(), 0);
        put(&c, &key, &data);
        assert!(c.advise(&key, len));
        assert!(
            c.open.lock().unwrap().contains(&key),
            "advised file kept open"
        );
        match c.get(&key, len, 0..len) {
            Lookup::Hit { data: d, whole } => {
                assert!(d == data && whole.is_some_and(|w| w == data))
            }
            _ => panic!("not a hit after advise"),
        }
        // A damaged header: advise neither opens it nor panics; get drops it.
        c.forget_open(&key);
        let path = c.path(&key);
        let mut file = fs::read(&path).unwrap();
        file[HEADER_FIXED + 3] ^= 1;
        fs::write(&path, &file).unwrap();
        assert!(!c.advise(&key, len));
        assert!(!c.open.lock().unwrap().contains(&key));
        assert!(matches!(c.get(&key, len, 0..10), Lookup::Corrupt));
    }
}
