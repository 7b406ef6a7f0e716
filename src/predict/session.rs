//! A recorded session as the learner sees it: the stored blocks it read,
//! in time order. Holes and writes are not reads of stored data and are
//! dropped here, once, so the model never has to think about them.

use std::collections::HashMap;

use anyhow::{bail, Context};

use crate::trace::{Op, TraceReader};

/// The stored blocks of a snapshot, by group.
pub struct StoredBlocks {
    pub group_size: u64,
    /// group → its stored block ids, ascending.
    pub by_group: HashMap<u64, Vec<u64>>,
}

impl StoredBlocks {
    pub fn is_stored(&self, block: u64) -> bool {
        self.by_group
            .get(&(block / self.group_size))
            .is_some_and(|v| v.binary_search(&block).is_ok())
    }
}

/// One session's reads as (time, stored block) events, in time order.
pub struct Session {
    pub events: Vec<(u64, u64)>,
}

/// Sources of imported traces (`trace import`): they know the volume only
/// up to its furthest access, so their size may be smaller than the
/// snapshot's.
const IMPORTED: [&str; 2] = ["blkparse", "fio"];

/// Reads a trace into a session: reads only, mapped to the stored blocks
/// they touch. Refuses a recorded trace of a volume of another size and an
/// imported one larger than the snapshot (the message says how to
/// re-import); an imported trace's accesses all lie within its header's
/// size, so a smaller one is a trace of this volume that never read its end.
pub fn load_session<R: std::io::Read>(
    mut reader: TraceReader<R>,
    what: &str,
    volume_size: u64,
    block_size: u64,
    stored: &StoredBlocks,
) -> anyhow::Result<Session> {
    let h = &reader.header;
    let imported = IMPORTED.contains(&h.source.as_str());
    if h.volume_size != volume_size && !(imported && h.volume_size < volume_size) {
        bail!(
            "trace {what} is of a volume of {} bytes, the snapshot's is {volume_size}: it does not describe this volume{}",
            h.volume_size,
            if imported {
                format!(" (if it does, import it again with `trace import --snapshot NAME` or `--volume-size {volume_size}`)")
            } else {
                String::new()
            }
        );
    }
    let mut events = Vec::new();
    for r in reader.by_ref() {
        let r = r.with_context(|| format!("trace {what}"))?;
        if r.op != Op::Read || r.len == 0 {
            continue;
        }
        // Clamped: a reader may ask past the end (the kernel's readahead
        // of the last page); an imported trace ends within its header's
        // size, at most the snapshot's.
        let end = r.offset.saturating_add(r.len as u64).min(volume_size);
        if r.offset >= end {
            continue;
        }
        for b in r.offset / block_size..end.div_ceil(block_size) {
            if stored.is_stored(b) {
                events.push((r.t_ns, b));
            }
        }
    }
    if reader.truncated {
        log::warn!("trace {what} ends in a torn frame; used up to there");
    }
    events.sort_by_key(|e| e.0);
    Ok(Session { events })
}
