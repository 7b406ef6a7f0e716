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

/// Reads a trace into a session: reads only, mapped to the stored blocks
/// they touch. Refuses a trace of a volume of another size.
pub fn load_session<R: std::io::Read>(
    mut reader: TraceReader<R>,
    what: &str,
    volume_size: u64,
    block_size: u64,
    stored: &StoredBlocks,
) -> anyhow::Result<Session> {
    if reader.header.volume_size != volume_size {
        bail!(
            "trace {what} is of a volume of {} bytes, the snapshot's is {volume_size}: it does not describe this volume",
            reader.header.volume_size
        );
    }
    let mut events = Vec::new();
    for r in reader.by_ref() {
        let r = r.with_context(|| format!("trace {what}"))?;
        if r.op != Op::Read || r.len == 0 {
            continue;
        }
        let end = (r.offset + r.len as u64).min(volume_size);
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
