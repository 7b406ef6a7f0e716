//! The memory tier: an LRU of verified blocks bounded in bytes.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

use super::BlockKey;

pub struct MemoryCache {
    capacity: u64,
    state: Mutex<State>,
}

struct State {
    lru: LruCache<BlockKey, Bytes>,
    used: u64,
}

impl MemoryCache {
    pub fn new(capacity: u64) -> Self {
        MemoryCache {
            capacity,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.state.lock().is_ok_and(|s| s.lru.contains(key))
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let mut s = self.state.lock().ok()?;
        s.lru.get(key).cloned()
    }

    pub fn put(&self, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(old) = s.lru.put(key, data) {
            s.used -= old.len() as u64;
        }
        s.used += len;
        while s.used > self.capacity {
            match s.lru.pop_lru() {
                Some((_, old)) => s.used -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Caches `data` only if it fits without evicting anything: for blocks
    /// that are merely convenient to keep (a whole-block disk hit), never
    /// worth displacing a block that was fetched or read before.
    pub fn put_if_room(&self, key: BlockKey, data: Bytes) -> bool {
        let len = data.len() as u64;
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.used + len > self.capacity || s.lru.contains(&key) {
            return false;
        }
        s.used += len;
        s.lru.put(key, data);
        true
    }

    /// (bytes, entries)
    pub fn usage(&self) -> (u64, u64) {
        self.state
            .lock()
            .map_or((0, 0), |s| (s.used, s.lru.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lru() {
        let c = MemoryCache::new(10);
        c.put([1; 32], Bytes::from_static(b"aaaa"));
        c.put([2; 32], Bytes::from_static(b"bbbb"));
        assert!(c.get(&[1; 32]).is_some()); // 1 is now most recent
        c.put([3; 32], Bytes::from_static(b"cccc"));
        assert!(c.get(&[2; 32]).is_none());
        assert!(c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some());
        assert_eq!(c.usage(), (8, 2));
        c.put([4; 32], Bytes::from(vec![0; 11]));
        assert!(c.get(&[4; 32]).is_none());
        // Only into free room: no eviction for a convenience copy.
        assert!(!c.put_if_room([5; 32], Bytes::from_static(b"eeee")));
        assert!(c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some());
        assert!(c.put_if_room([6; 32], Bytes::from_static(b"ff")));
        assert_eq!(c.usage(), (10, 3));
    }
}
