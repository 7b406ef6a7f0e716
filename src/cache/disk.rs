//! The disk tier: blocks kept in a few large segment files
//! ([`super::segment`]: one record per block, appended), bounded in bytes
//! with LRU eviction, indexed in memory.
//!
//! - A block is indexed only once its record is written whole, so a crash
//!   leaves at worst an unindexed tail, never a torn block under a block's
//!   key. Eviction punches the record out (its space is freed at once) and
//!   deletes a segment left with no record.
//! - Every read is checked against the key (the BLAKE3 of the block), so a
//!   record damaged after it was written (disk error, power loss before the
//!   data reached the disk, a person editing the file) is dropped and
//!   refetched, never served. A record's header holds the block's segment
//!   chaining values (see [`super::verified`]), so a read of a few KiB
//!   reads and checks only the 16 KiB segments it touches. An opened
//!   block also keeps, per segment, its 4 KiB pages' CVs once a partial
//!   read has proven them: a hot random 4 KiB read then reads and hashes
//!   4 KiB (in memory only: at most [`MAX_OPEN_BLOCKS`] × 4 KiB of CVs).
//! - At start every segment's headers are read back ([`segment::scan`]) and
//!   every record becomes a cache entry again (in the order written: oldest
//!   first in LRU order); the content is checked lazily, on first read.
//!   Writes go to a new segment: an old one's tail may be torn.
//! - The directory is created 0700 and files 0600: cached blocks are the
//!   volume's data.
//! - One mount per directory: [`super::dir::lock`].
//! - On a filesystem that cannot punch holes, an evicted record's bytes
//!   stay counted against the bound until its whole segment is deleted, so
//!   the bound holds there too (with more evictions).
//!
//! Over 500 lines with its tests, on purpose: the index, eviction and the
//! verified partial read are one mechanism whose tests damage records
//! written by the same code.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use bytes::Bytes;
use lru::LruCache;

use super::dir;
use super::segment::{self, record_size};
use super::verified::{cvs_match_root, merge_leaves, page_cvs, segment_cv, PAGE, SEGMENT};
use super::BlockKey;
use crate::ratelimit::LogLimit;
use blake3::hazmat::ChainingValue;

/// Blocks kept opened (header read, CVs proven) for their next reads; a
/// hot block's read is then one pread and a page or segment hash.
pub const MAX_OPEN_BLOCKS: usize = 4096;

/// Open segment files at most: a quarter of the process's open-file limit
/// (systemd's default soft limit is 1024), so the mount never runs out of
/// descriptors however many segments old blocks keep alive.
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
    (soft.unwrap_or(1024) / 4).clamp(16, 4096)
}

/// Failures to free an evicted record's space, logged at most a few times.
static PUNCH_ERRORS: LogLimit = LogLimit::new();

pub struct DiskCache {
    /// Held while the cache is open (see the module doc).
    _lock: nix::fcntl::Flock<File>,
    /// `<dir>/segments`.
    segments_dir: PathBuf,
    capacity: u64,
    segment_target: u64,
    state: Mutex<State>,
    /// Segment files opened, by sequence number (bounded: see
    /// [`open_file_budget`]).
    files: Mutex<LruCache<u64, Arc<File>>>,
    open: Mutex<LruCache<BlockKey, Arc<OpenBlock>>>,
    /// Tests: behave as on a filesystem that cannot punch holes.
    #[cfg(test)]
    no_punch: std::sync::atomic::AtomicBool,
}

/// Where a cached block is: its record's segment and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seg: u64,
    at: u64,
    len: usize,
}

impl Entry {
    fn size(&self) -> u64 {
        record_size(self.len)
    }
}

#[derive(Default)]
struct Segment {
    /// Bytes of its records still indexed.
    live: u64,
    /// Bytes of evicted records whose space could not be freed (no hole
    /// punching here): still counted in `used` until the file goes.
    dead: u64,
}

struct State {
    lru: LruCache<BlockKey, Entry>,
    used: u64,
    segments: HashMap<u64, Segment>,
    /// The segment written to, and where its next record goes.
    active: Option<(u64, u64)>,
    next_seq: u64,
}

/// A block's record opened and its header checked against the block's key.
struct OpenBlock {
    seg: u64,
    at: u64,
    len: usize,
    /// Segment CVs, proven against the key; empty for one-segment blocks.
    cvs: Vec<[u8; 32]>,
    /// Per segment, its pages' CVs once a partial read proved them against
    /// the segment's CV (see [`super::verified::PAGE`]).
    pages: Vec<OnceLock<Box<[ChainingValue]>>>,
    /// Where the block's bytes start in the segment file.
    data_at: u64,
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

/// Lower-case hex of a key, for messages.
fn hex(key: &BlockKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

impl DiskCache {
    pub fn open(dir: &Path, capacity: u64) -> anyhow::Result<Self> {
        dir::mkdir_private(dir)?;
        let lock = dir::lock(dir)?;
        dir::drop_old_layout(dir)?;
        let segments_dir = dir.join("segments");
        dir::mkdir_private(&segments_dir)?;

        // Rebuild the index from the segments' records, oldest first.
        let mut seqs = Vec::new();
        for f in fs::read_dir(&segments_dir)
            .with_context(|| format!("cannot read {}", segments_dir.display()))?
        {
            let f = f?;
            match f.file_name().to_str().and_then(segment::parse_name) {
                Some(seq) => seqs.push(seq),
                None => {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        seqs.sort_unstable();
        let cache = DiskCache {
            _lock: lock,
            segments_dir,
            capacity,
            segment_target: segment::segment_target(capacity),
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
                segments: HashMap::new(),
                active: None,
                next_seq: seqs.last().map_or(0, |s| s + 1),
            }),
            files: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(open_file_budget())
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            open: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(MAX_OPEN_BLOCKS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            #[cfg(test)]
            no_punch: std::sync::atomic::AtomicBool::new(false),
        };
        for seq in seqs {
            let path = segment::path(&cache.segments_dir, seq);
            let found = File::open(&path)
                .and_then(|f| segment::scan(&f))
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut dup = Vec::new();
            {
                let mut s = cache.lock();
                let mut live = 0;
                for r in found {
                    let e = Entry {
                        seg: seq,
                        at: r.at,
                        len: r.len,
                    };
                    if s.lru.contains(&r.key) {
                        dup.push(e);
                        continue;
                    }
                    s.lru.put(r.key, e);
                    s.used += e.size();
                    live += e.size();
                }
                if live > 0 {
                    s.segments.insert(seq, Segment { live, dead: 0 });
                }
            }
            if cache.lock().segments.contains_key(&seq) {
                // A block cached twice (a crash between writing it again and
                // evicting the old copy): the later record goes.
                for e in dup {
                    cache.free(e);
                }
            } else {
                let _ = fs::remove_file(&path);
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

    /// Segment `seq`'s file, opened read-write on first use.
    fn file(&self, seq: u64) -> std::io::Result<Arc<File>> {
        if let Some(f) = self
            .files
            .lock()
            .ok()
            .and_then(|mut o| o.get(&seq).cloned())
        {
            return Ok(f);
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment::path(&self.segments_dir, seq))?,
        );
        if let Ok(mut files) = self.files.lock() {
            files.put(seq, f.clone());
        }
        Ok(f)
    }

    /// Block `key`'s record at `e`, its header read and proven (kept in the
    /// opened-block LRU). `Ok(None)`: the record does not hold that block.
    fn open_block(&self, key: &BlockKey, e: Entry) -> std::io::Result<Option<Arc<OpenBlock>>> {
        if let Some(b) = self.open.lock().ok().and_then(|mut o| o.get(key).cloned()) {
            if (b.seg, b.at, b.len) == (e.seg, e.at, e.len) {
                return Ok(Some(b));
            }
        }
        let file = self.file(e.seg)?;
        let Some(cvs) = segment::read_header(&file, e.at, key, e.len)? else {
            return Ok(None);
        };
        if !cvs.is_empty() && !cvs_match_root(&cvs, e.len as u64, key) {
            return Ok(None);
        }
        let b = Arc::new(OpenBlock {
            seg: e.seg,
            at: e.at,
            len: e.len,
            pages: cvs.iter().map(|_| OnceLock::new()).collect(),
            cvs,
            data_at: e.at + segment::data_offset(e.len),
        });
        if let Ok(mut open) = self.open.lock() {
            open.put(*key, b.clone());
        }
        Ok(Some(b))
    }

    /// Asks the kernel to read block `key`'s bytes into the page cache in
    /// the background (`posix_fadvise(WILLNEED)`), so that a sequential
    /// reader finds its next blocks in memory instead of waiting for the
    /// disk one block at a time. Best effort: a missing or bad record is
    /// left to `get`. True when the block was found and advised.
    pub fn advise(&self, key: &BlockKey, len: usize) -> bool {
        let Some(e) = self.lock().lru.peek(key).copied() else {
            return false;
        };
        if e.len != len {
            return false;
        }
        match (self.open_block(key, e), self.file(e.seg)) {
            (Ok(Some(b)), Ok(file)) => {
                // Advice only: a failure costs the speed-up, nothing else.
                let _ = nix::fcntl::posix_fadvise(
                    &*file,
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
        let Some(e) = self.lock().lru.get(key).copied() else {
            return Lookup::Miss;
        };
        let data = if e.len != len {
            Ok(None)
        } else {
            self.open_block(key, e).and_then(|b| match b {
                Some(b) => self.file(e.seg).and_then(|f| b.read(&f, key, range)),
                None => Ok(None),
            })
        };
        match data {
            Ok(Some((data, whole))) => Lookup::Hit { data, whole },
            Ok(None) | Err(_) => {
                // Evicted while being read (its record punched): a miss.
                if self.lock().lru.peek(key) != Some(&e) {
                    self.forget_open(key);
                    return Lookup::Miss;
                }
                log::warn!(
                    "disk cache: block {} in {} at {} is damaged or unreadable; dropped, the block will be refetched",
                    hex(key),
                    segment::path(&self.segments_dir, e.seg).display(),
                    e.at
                );
                self.remove(key);
                Lookup::Corrupt
            }
        }
    }

    fn remove(&self, key: &BlockKey) {
        let e = self.lock().lru.pop(key);
        self.forget_open(key);
        if let Some(e) = e {
            self.release(e);
        }
    }

    fn forget_open(&self, key: &BlockKey) {
        if let Ok(mut o) = self.open.lock() {
            o.pop(key);
        }
    }

    /// Un-counts an entry already out of the LRU and frees its space.
    fn release(&self, e: Entry) {
        {
            let mut s = self.lock();
            s.used = s.used.saturating_sub(e.size());
            if let Some(seg) = s.segments.get_mut(&e.seg) {
                seg.live = seg.live.saturating_sub(e.size());
            }
        }
        self.free(e);
    }

    /// Frees the space of a record no entry points at: the whole segment
    /// when it holds no other record (and is not being written), else the
    /// record's bytes (a punched hole).
    fn free(&self, e: Entry) {
        let gone = {
            let mut s = self.lock();
            let empty = s.segments.get(&e.seg).is_none_or(|g| g.live == 0)
                && s.active.map(|(a, _)| a) != Some(e.seg);
            match (empty, s.segments.remove(&e.seg)) {
                (true, g) => {
                    s.used = s.used.saturating_sub(g.map_or(0, |g| g.dead));
                    true
                }
                (false, Some(g)) => {
                    s.segments.insert(e.seg, g);
                    false
                }
                (false, None) => false,
            }
        };
        if gone {
            if let Ok(mut files) = self.files.lock() {
                files.pop(&e.seg);
            }
            let _ = fs::remove_file(segment::path(&self.segments_dir, e.seg));
            return;
        }
        let punched = self.file(e.seg).and_then(|f| {
            #[cfg(test)]
            if self.no_punch.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            segment::punch(&f, e.at, e.size())
        });
        if let Err(err) = punched {
            PUNCH_ERRORS.error(|| {
                format!(
                    "disk cache {}: cannot free an evicted block's space ({err}); it stays counted until its segment is emptied",
                    self.segments_dir.display()
                )
            });
            let mut s = self.lock();
            s.used += e.size();
            if let Some(g) = s.segments.get_mut(&e.seg) {
                g.dead += e.size();
            }
        }
    }

    /// Where the next record of `size` bytes goes: the end of the active
    /// segment, or a new segment when it would pass the segment size.
    fn reserve(&self, size: u64) -> std::io::Result<(u64, u64)> {
        let mut s = self.lock();
        if let Some((seq, next)) = s.active {
            if next == 0 || next + size <= self.segment_target {
                s.active = Some((seq, next + size));
                return Ok((seq, next));
            }
        }
        // A new segment; the old one is deleted if nothing in it is left.
        let seq = s.next_seq;
        s.next_seq += 1;
        let old = s.active.replace((seq, size));
        s.segments.insert(seq, Segment::default());
        drop(s);
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(segment::path(&self.segments_dir, seq));
        let file = match created {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let mut s = self.lock();
                s.segments.remove(&seq);
                s.active = None;
                return Err(e);
            }
        };
        if let Ok(mut files) = self.files.lock() {
            files.put(seq, file);
        }
        if let Some((old, _)) = old {
            if self.lock().segments.get(&old).is_some_and(|g| g.live == 0) {
                self.free(Entry {
                    seg: old,
                    at: 0,
                    len: 0,
                });
            }
        }
        Ok((seq, 0))
    }

    /// Stores a verified block (appended to the active segment), then
    /// evicts down to the bound. `cvs`: what
    /// [`super::verified::check_block`] returned for it, so the block is
    /// not hashed a second time here.
    pub fn put(&self, key: &BlockKey, data: &[u8], cvs: &[ChainingValue]) -> std::io::Result<()> {
        let size = record_size(data.len());
        if size > self.capacity || self.contains(key) {
            return Ok(());
        }
        let header = segment::encode_header(key, data.len(), cvs);
        let placed = self.reserve(size).and_then(|(seg, at)| {
            let f = self.file(seg)?;
            let written = f
                .write_all_at(&header, at)
                .and_then(|()| f.write_all_at(data, at + header.len() as u64));
            if let Err(err) = written {
                // Whatever reached the file is not indexed: its space goes back.
                let _ = segment::punch(&f, at, size);
                return Err(err);
            }
            Ok((seg, at))
        });
        let (seg, at) = match placed {
            Ok(p) => p,
            Err(err) => {
                // Out of space: make room for the future, report this one.
                if err.raw_os_error() == Some(libc::ENOSPC) {
                    self.shrink_to(self.usage().0 / 2);
                }
                return Err(err);
            }
        };
        let e = Entry {
            seg,
            at,
            len: data.len(),
        };
        let replaced = {
            let mut s = self.lock();
            s.used += size;
            if let Some(g) = s.segments.get_mut(&seg) {
                g.live += size;
            }
            s.lru.put(*key, e)
        };
        // Stored twice at once (two writers): the older copy goes.
        if let Some(old) = replaced {
            self.forget_open(key);
            self.release(old);
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
                    Some(v) => v,
                    None => return,
                }
            };
            self.forget_open(&victim.0);
            self.release(victim.1);
        }
    }
}

impl OpenBlock {
    /// Reads `range` of the block from its segment `file` and checks it:
    /// the whole block against `key` when it is one segment or the range
    /// covers it, otherwise each touched segment against its CV, or only
    /// the touched pages of a segment whose page CVs are known (the first
    /// partial read of a segment reads it whole and proves its page CVs).
    /// `Ok(None)`: a check failed. With the bytes, the whole verified block
    /// when it was read whole.
    fn read(
        &self,
        file: &File,
        key: &BlockKey,
        range: Range<usize>,
    ) -> std::io::Result<Option<(Bytes, Option<Bytes>)>> {
        let len = self.len;
        if range.start > range.end || range.end > len {
            return Ok(None);
        }
        if self.cvs.is_empty() || (range.start == 0 && range.end == len) {
            let mut data = vec![0u8; len];
            file.read_exact_at(&mut data, self.data_at)?;
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
        file.read_exact_at(&mut data, self.data_at + start as u64)?;
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
impl DiskCache {
    /// The segment file holding `key` and where its bytes start there.
    fn location(&self, key: &BlockKey) -> Option<(PathBuf, u64)> {
        let e = *self.lock().lru.peek(key)?;
        Some((
            segment::path(&self.segments_dir, e.seg),
            e.at + segment::data_offset(e.len),
        ))
    }

    fn segment_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.segments_dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::verified::check_block;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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

    /// Flips one byte of a file at `at`.
    fn damage(path: &Path, at: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 1], at).unwrap();
    }

    #[test]
    fn put_get_evict_reopen_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        // Each 1000-byte block takes an 8 KiB record (a page of header, a
        // page of data): room for three.
        let c = DiskCache::open(&root, 3 * 8192 + 100).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let (k1, d1) = block(1, 1000);
        let (k2, d2) = block(2, 1000);
        let (k3, d3) = block(3, 1000);
        put(&c, &k1, &d1);
        put(&c, &k2, &d2);
        let (seg, _) = c.location(&k1).unwrap();
        assert_eq!(
            fs::metadata(&seg).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(c.get(&k1, 1000, 0..1000), Lookup::Hit { data: d, .. } if d == d1));
        put(&c, &k3, &d3);
        let (k4, d4) = block(4, 1000);
        let allocated = fs::metadata(&seg).unwrap().blocks();
        put(&c, &k4, &d4); // evicts k2, the least recently used
        assert!(matches!(c.get(&k2, 1000, 0..1000), Lookup::Miss));
        assert_eq!(c.usage(), (3 * 8192, 3));
        // Its record was punched out: the file grew by one record, not two.
        assert!(
            fs::metadata(&seg).unwrap().blocks() < allocated + 16,
            "the evicted record's space is freed"
        );
        assert_eq!(c.segment_files().len(), 1, "all in one segment");
        drop(c);

        // Reopened: the entries are back; a damaged record is dropped.
        let c = DiskCache::open(&root, 3 * 8192 + 100).unwrap();
        assert_eq!(c.usage(), (3 * 8192, 3));
        let (p3, at3) = c.location(&k3).unwrap();
        damage(&p3, at3 + 10);
        assert!(matches!(c.get(&k3, 1000, 0..1000), Lookup::Corrupt));
        assert!(matches!(c.get(&k3, 1000, 0..1000), Lookup::Miss));
        assert_eq!(c.usage(), (2 * 8192, 2));
        // A torn record (the file cut short) is dropped at the next start.
        let (p4, at4) = c.location(&k4).unwrap();
        drop(c);
        fs::OpenOptions::new()
            .write(true)
            .open(&p4)
            .unwrap()
            .set_len(at4 + 500)
            .unwrap();
        // A stray file in segments/ and an earlier layout's directories go.
        fs::write(root.join("segments").join("x.tmp"), b"torn").unwrap();
        fs::create_dir_all(root.join("blocks").join("ab")).unwrap();
        let c = DiskCache::open(&root, 3 * 8192 + 100).unwrap();
        assert_eq!(c.usage(), (8192, 1));
        assert!(matches!(c.get(&k1, 1000, 0..1000), Lookup::Hit { data: d, .. } if d == d1));
        assert!(matches!(c.get(&k4, 1000, 0..1000), Lookup::Miss));
        assert!(!root.join("blocks").exists());
        assert!(c
            .segment_files()
            .iter()
            .all(|p| segment::parse_name(&p.file_name().unwrap().to_string_lossy()).is_some()));
        // New records go to a new segment; the old one's torn tail stays out.
        put(&c, &k2, &d2);
        assert_ne!(c.location(&k2).unwrap().0, c.location(&k1).unwrap().0);
        assert!(matches!(c.get(&k2, 1000, 0..1000), Lookup::Hit { data: d, .. } if d == d2));
    }

    /// Segments roll over at their size; a segment whose records were all
    /// evicted is deleted; the bound holds throughout.
    #[test]
    fn segments_roll_over_and_empty_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        // 8 MiB segments (the minimum): 15 records of 516 KiB each.
        let cap = 20 << 20;
        let c = DiskCache::open(dir.path(), cap).unwrap();
        let per = record_size(512 * 1024);
        assert_eq!(c.segment_target, 8 << 20);
        let keys: Vec<BlockKey> = (0..100u8)
            .map(|i| {
                let (k, d) = block(i, 512 * 1024);
                put(&c, &k, &d);
                assert!(c.usage().0 <= cap);
                k
            })
            .collect();
        assert_eq!(c.usage(), (cap / per * per, cap / per));
        // Only the segments holding the newest blocks are left.
        let files = c.segment_files();
        assert!(files.len() <= 4, "{files:?}");
        let on_disk: u64 = files
            .iter()
            .map(|p| fs::metadata(p).unwrap().blocks() * 512)
            .sum();
        assert!(on_disk <= cap + per, "{on_disk} bytes allocated");
        assert!(c.contains(&keys[99]) && !c.contains(&keys[0]));
    }

    /// Where holes cannot be punched, evicted records stay counted until
    /// their segment goes: the bound on what the tier holds on disk still
    /// holds, and what is indexed still reads back.
    #[test]
    fn without_hole_punching_the_bound_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 20 << 20;
        let c = DiskCache::open(dir.path(), cap).unwrap();
        c.no_punch.store(true, std::sync::atomic::Ordering::Relaxed);
        let blocks: Vec<(BlockKey, Vec<u8>)> = (0..120u8).map(|i| block(i, 512 * 1024)).collect();
        for (k, d) in &blocks {
            put(&c, k, d);
            assert!(c.usage().0 <= cap, "{:?}", c.usage());
            let on_disk: u64 = c
                .segment_files()
                .iter()
                .map(|p| fs::metadata(p).unwrap().blocks() * 512)
                .sum();
            assert!(on_disk <= cap + record_size(512 * 1024), "{on_disk}");
        }
        let (used, n) = c.usage();
        assert!(n > 0 && used >= n * record_size(512 * 1024));
        let (k, d) = &blocks[119];
        assert!(matches!(c.get(k, d.len(), 0..d.len()), Lookup::Hit { data, .. } if data == d[..]));
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
        let (path, data_at) = c.location(&key).unwrap();
        damage(&path, data_at + 3 * SEGMENT as u64 + 5);
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
        let e = *c.lock().lru.peek(&key).unwrap();
        let open = c.open_block(&key, e).unwrap().unwrap();
        assert!(open.pages[1].get().is_some() && open.pages[5].get().is_none());
        // Damage page 3 of segment 1: its other pages, proven, still read
        // (only they are hashed); a read of page 3 is refused.
        let (path, data_at) = c.location(&key).unwrap();
        let at = data_at + (SEGMENT + 3 * PAGE + 7) as u64;
        damage(&path, at);
        hit(SEGMENT..SEGMENT + 3 * PAGE);
        assert!(matches!(
            c.get(&key, len, SEGMENT + 3 * PAGE..SEGMENT + 3 * PAGE + 1),
            Lookup::Corrupt
        ));
        // A read covering the damaged segment whole is refused as well.
        put(&c, &key, &data);
        hit(SEGMENT + 100..SEGMENT + 110);
        let (path, data_at) = c.location(&key).unwrap();
        damage(&path, data_at + (SEGMENT + 3 * PAGE + 7) as u64);
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
            "advised block kept open"
        );
        match c.get(&key, len, 0..len) {
            Lookup::Hit { data: d, whole } => {
                assert!(d == data && whole.is_some_and(|w| w == data))
            }
            _ => panic!("not a hit after advise"),
        }
        // A damaged header: advise neither opens it nor panics; get drops it.
        c.forget_open(&key);
        let (path, data_at) = c.location(&key).unwrap();
        damage(
            &path,
            data_at - segment::ALIGN + segment::HEADER_FIXED as u64 + 3,
        );
        assert!(!c.advise(&key, len));
        assert!(!c.open.lock().unwrap().contains(&key));
        assert!(matches!(c.get(&key, len, 0..10), Lookup::Corrupt));
    }
}
