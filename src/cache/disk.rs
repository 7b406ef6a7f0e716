//! The disk tier: one file per block under `<dir>/blocks/<2 hex>/<64 hex>`,
//! bounded in bytes with LRU eviction.
//!
//! - Files are written whole: to `<dir>/tmp/` first, then renamed into
//!   place, so a crash leaves at worst a stray temp file (removed at the next
//!   start), never a torn block under a block's name.
//! - Every read is checked against the key (the BLAKE3 of the block), so a
//!   file damaged after it was written (disk error, power loss before the
//!   data reached the disk, a person editing it) is dropped and refetched,
//!   never served.
//! - At start the directory is scanned and every block file becomes a cache
//!   entry again (oldest modification first in LRU order); the content is
//!   checked lazily, on first read.
//! - The directory is created 0700 and files 0600: cached blocks are the
//!   volume's data.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use lru::LruCache;

use super::BlockKey;

pub struct DiskCache {
    root: PathBuf,
    capacity: u64,
    state: Mutex<State>,
}

struct State {
    lru: LruCache<BlockKey, u64>,
    used: u64,
}

pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    Corrupt,
}

fn hex(key: &BlockKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
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

impl DiskCache {
    pub fn open(dir: &Path, capacity: u64) -> anyhow::Result<Self> {
        mkdir_private(dir)?;
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
            root: dir.to_path_buf(),
            capacity,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
            }),
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

    /// Reads and verifies a block.
    pub fn get(&self, key: &BlockKey, len: usize) -> Lookup {
        if self.lock().lru.get(key).is_none() {
            return Lookup::Miss;
        }
        let path = self.path(key);
        let mut data = Vec::with_capacity(len);
        let ok = File::open(&path)
            .and_then(|f| f.take(len as u64 + 1).read_to_end(&mut data))
            .is_ok();
        if ok && data.len() == len && blake3::hash(&data).as_bytes() == key {
            return Lookup::Hit(data);
        }
        log::warn!(
            "disk cache: {} is damaged or unreadable; dropped, the block will be refetched",
            path.display()
        );
        self.remove(key);
        Lookup::Corrupt
    }

    fn remove(&self, key: &BlockKey) {
        let mut s = self.lock();
        if let Some(len) = s.lru.pop(key) {
            s.used -= len;
        }
        drop(s);
        let _ = fs::remove_file(self.path(key));
    }

    /// Stores a verified block (temp file + rename), then evicts down to the bound.
    pub fn put(&self, key: &BlockKey, data: &[u8]) -> std::io::Result<()> {
        let len = data.len() as u64;
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
            let _ = fs::remove_file(self.path(&victim));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u8, len: usize) -> (BlockKey, Vec<u8>) {
        let d = vec![seed; len];
        (*blake3::hash(&d).as_bytes(), d)
    }

    #[test]
    fn put_get_evict_reopen_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let c = DiskCache::open(&root, 3000).unwrap();
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let (k1, d1) = block(1, 1000);
        let (k2, d2) = block(2, 1000);
        let (k3, d3) = block(3, 1000);
        c.put(&k1, &d1).unwrap();
        c.put(&k2, &d2).unwrap();
        assert_eq!(
            fs::metadata(c.path(&k1)).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(c.get(&k1, 1000), Lookup::Hit(d) if d == d1));
        c.put(&k3, &d3).unwrap();
        let (k4, d4) = block(4, 1000);
        c.put(&k4, &d4).unwrap(); // evicts k2, the least recently used
        assert!(matches!(c.get(&k2, 1000), Lookup::Miss));
        assert!(!c.path(&k2).exists());
        assert_eq!(c.usage(), (3000, 3));
        drop(c);

        // Reopened: the entries are back; a damaged file is dropped.
        let c = DiskCache::open(&root, 3000).unwrap();
        assert_eq!(c.usage(), (3000, 3));
        let mut bad = d3.clone();
        bad[10] ^= 1;
        fs::write(c.path(&k3), &bad).unwrap();
        assert!(matches!(c.get(&k3, 1000), Lookup::Corrupt));
        assert!(matches!(c.get(&k3, 1000), Lookup::Miss));
        assert!(!c.path(&k3).exists());
        // A truncated file too.
        fs::write(c.path(&k4), &d4[..500]).unwrap();
        assert!(matches!(c.get(&k4, 1000), Lookup::Corrupt));
        // A stray temp file from a crash is removed at start.
        fs::write(root.join("tmp").join("x.tmp"), b"torn").unwrap();
        drop(c);
        DiskCache::open(&root, 3000).unwrap();
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }
}
