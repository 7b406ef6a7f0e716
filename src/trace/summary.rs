//! `trace show`: what a trace holds, in one pass with bounded memory
//! (counters, the classifier's table, a set of distinct block ids bounded
//! by the volume's block count, and one bucket per second).

use std::collections::{BTreeMap, HashSet};

use super::classify::{ClassWindows, Classification, Classifier};
use super::{Op, TraceHeader, TraceReader};

/// At most this many timeline rows: longer traces get wider buckets.
pub const TIMELINE_ROWS: u64 = 60;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Bucket {
    pub start_s: u64,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub header: TraceHeader,
    pub duration_s: f64,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub block_size: u64,
    pub distinct_blocks: u64,
    pub classification: Classification,
    pub timeline_bucket_s: u64,
    pub timeline: Vec<Bucket>,
    /// The trace ended in a torn frame (its writer crashed).
    pub truncated: bool,
}

pub fn summarize<R: std::io::Read>(
    mut reader: TraceReader<R>,
    block_size: u64,
) -> anyhow::Result<Summary> {
    let block_size = block_size.max(1);
    let mut s = Summary {
        header: reader.header.clone(),
        duration_s: 0.0,
        reads: 0,
        writes: 0,
        read_bytes: 0,
        write_bytes: 0,
        block_size,
        distinct_blocks: 0,
        classification: Classifier::default().classification(
            &crate::format::DEFAULT_WINDOWS_MS,
            &ClassWindows::default(),
            0,
        ),
        timeline_bucket_s: 1,
        timeline: Vec::new(),
        truncated: false,
    };
    let mut blocks: HashSet<u64> = HashSet::new();
    let mut per_second: BTreeMap<u64, Bucket> = BTreeMap::new();
    let mut classifier = Classifier::default();
    let mut last_ns = 0;
    for r in reader.by_ref() {
        let r = r?;
        last_ns = last_ns.max(r.t_ns);
        let sec = r.t_ns / 1_000_000_000;
        let b = per_second.entry(sec).or_insert(Bucket {
            start_s: sec,
            ..Default::default()
        });
        match r.op {
            Op::Read => {
                s.reads += 1;
                s.read_bytes += r.len as u64;
                b.reads += 1;
                b.read_bytes += r.len as u64;
            }
            Op::Write => {
                s.writes += 1;
                s.write_bytes += r.len as u64;
                b.writes += 1;
                b.write_bytes += r.len as u64;
            }
        }
        if r.len > 0 {
            for blk in r.offset / block_size..=(r.offset + r.len as u64 - 1) / block_size {
                blocks.insert(blk);
            }
        }
        classifier.observe(&r);
    }
    s.truncated = reader.truncated;
    s.duration_s = last_ns as f64 / 1e9;
    s.distinct_blocks = blocks.len() as u64;
    s.classification = classifier.classification(
        &crate::format::DEFAULT_WINDOWS_MS,
        &ClassWindows::default(),
        8 << 20,
    );
    let secs = last_ns / 1_000_000_000 + 1;
    s.timeline_bucket_s = secs.div_ceil(TIMELINE_ROWS).max(1);
    let mut rows: BTreeMap<u64, Bucket> = BTreeMap::new();
    for (sec, b) in per_second {
        let start = sec / s.timeline_bucket_s * s.timeline_bucket_s;
        let row = rows.entry(start).or_insert(Bucket {
            start_s: start,
            ..Default::default()
        });
        row.reads += b.reads;
        row.writes += b.writes;
        row.read_bytes += b.read_bytes;
        row.write_bytes += b.write_bytes;
    }
    s.timeline = rows.into_values().collect();
    Ok(s)
}
