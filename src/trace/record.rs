//! Recording a mount's demand reads (`mount --record-traces`).
//!
//! One [`Recorder`] per mounted snapshot and session. Every FUSE read of
//! the snapshot's image is recorded before it is served (prefetches never
//! pass through FUSE, so they are never recorded). The trace is kept in
//! memory as encoded frames and uploaded whole to
//! `traces/<snapshot>/<host>-<start ms>.trace` every [`UPLOAD_EVERY`] and at
//! unmount; each upload replaces the previous one (a PUT is atomic), so the
//! store always holds a complete, readable trace of the session so far.
//! Traces from every host that mounts a snapshot accumulate there for the
//! hints learner.
//!
//! Memory is bounded: after [`MAX_RECORDS`] records the recorder stops and
//! says so once in the log, keeping the earliest part of the session (the
//! start of a session is what warm-up learning needs most).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Op, Record, TraceHeader, TraceWriter};
use crate::name::SnapshotName;
use crate::store::Store;

/// ~2 million reads: hours of a busy volume, ~10–20 MiB of trace.
pub const MAX_RECORDS: u64 = 2_000_000;
/// How often a running mount uploads its traces so far.
pub const UPLOAD_EVERY: Duration = Duration::from_secs(60);

/// The key of a session's trace.
pub fn trace_key(snapshot: &SnapshotName, host: &str, start_ms: i64) -> String {
    format!(
        "{}/{snapshot}/{host}-{start_ms}.trace",
        crate::format::keys::TRACES_PREFIX
    )
}

pub struct Recorder {
    started: Instant,
    key: String,
    state: Mutex<State>,
}

struct State {
    writer: TraceWriter<Vec<u8>>,
    full: bool,
    dirty: bool,
}

impl Recorder {
    pub fn new(snapshot: &SnapshotName, volume_size: u64) -> anyhow::Result<Recorder> {
        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let host = super::host_name();
        let header = TraceHeader {
            volume: snapshot.to_string(),
            volume_size,
            start_ms,
            host: host.clone(),
            source: "mount".into(),
        };
        Ok(Recorder {
            started: Instant::now(),
            key: trace_key(snapshot, &host, start_ms),
            state: Mutex::new(State {
                writer: TraceWriter::new(Vec::new(), &header)?,
                full: false,
                dirty: false,
            }),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Records one demand read.
    pub fn read(&self, offset: u64, len: u32, pid: u32) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.full {
            return;
        }
        if s.writer.records() >= MAX_RECORDS {
            s.full = true;
            log::warn!("trace {}: {MAX_RECORDS} reads recorded; keeping this earliest part, recording stops", self.key);
            return;
        }
        let r = Record {
            t_ns: self.started.elapsed().as_nanos() as u64,
            op: Op::Read,
            offset,
            len,
            stream: pid,
        };
        // Writing into a Vec cannot fail.
        let _ = s.writer.push(&r);
        s.dirty = true;
    }

    /// Uploads the trace so far if anything was recorded since the last
    /// upload. Returns the number of records uploaded.
    pub async fn upload(&self, store: &Store) -> anyhow::Result<Option<u64>> {
        let (bytes, n) = {
            let Ok(mut s) = self.state.lock() else {
                return Ok(None);
            };
            if !s.dirty {
                return Ok(None);
            }
            s.writer.flush()?;
            s.dirty = false;
            (Bytes::from(s.writer.get_ref().clone()), s.writer.records())
        };
        store.put(&self.key, bytes).await?;
        Ok(Some(n))
    }
}
