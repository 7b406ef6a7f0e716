//! Access traces: what was read and written, when, on one volume in one
//! session. Recorded by `monitor` (a live volume), by mounts with
//! `--record-traces`, or imported from blkparse / fio logs; read by `trace
//! show`, the workload classifier and (later) the hints learner.
//!
//! ## Format (`docs/format.md`, "Traces")
//! `u32 header length | header | frame*`. The header is an envelope of
//! [`crate::format::codec`] (magic `SATR`, checksum) holding the volume
//! name and size, the session's start time, the host and where the trace
//! came from. Each frame is `magic SAFR | u32 record count | u32 compressed
//! length | BLAKE3 of the compressed bytes | zstd(records)`, a record being
//! 25 fixed bytes: `t_ns u64 | op u8 | offset u64 | len u32 | stream u32`.
//!
//! Why this shape: records are written and read **streaming**, one frame
//! (at most [`FRAME_RECORDS`] records, ~1.6 MiB) in memory at a time, so a
//! trace of 10 million records needs no more memory than one of ten; fixed
//! records compress well with zstd (neighbouring offsets and times share
//! their high bytes: 3.7× on the 10M-record test trace) and need no parser; each frame carries its own
//! checksum, so a corrupt frame is an error, never wrong records; and a
//! writer can flush a partial frame every few seconds, so a crash loses at
//! most those seconds: a reader treats a torn final frame as the end of the
//! trace (and says so), not as corruption.

pub mod classify;
pub mod import;
pub mod plot;
pub mod record;
pub mod summary;

use std::io::{Read, Write};

use anyhow::{bail, Context};

use crate::format::codec::{Reader, Writer};

pub const TRACE_MAGIC: &[u8; 4] = b"SATR";
pub const FRAME_MAGIC: &[u8; 4] = b"SAFR";
pub const TRACE_VERSION: u16 = 1;
pub const RECORD_LEN: usize = 25;
/// Records per frame: ~1.6 MiB uncompressed, the reader's memory bound.
pub const FRAME_RECORDS: usize = 65_536;
/// A header is a few names; anything longer is corrupt.
const MAX_HEADER_LEN: usize = 64 * 1024;
const FRAME_HEADER_LEN: usize = 4 + 4 + 4 + 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Read = 0,
    Write = 1,
}

/// One access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Nanoseconds since the start of the session.
    pub t_ns: u64,
    pub op: Op,
    pub offset: u64,
    pub len: u32,
    /// Who issued it, when known (a pid, a fio job); 0 = unknown.
    pub stream: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceHeader {
    pub volume: String,
    pub volume_size: u64,
    /// Milliseconds since the Unix epoch.
    pub start_ms: i64,
    pub host: String,
    /// `monitor`, `mount`, `blkparse`, `fio`, ...
    pub source: String,
}

impl TraceHeader {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TRACE_MAGIC, TRACE_VERSION);
        w.str(&self.volume);
        w.u64(self.volume_size);
        w.i64(self.start_ms);
        w.str(&self.host);
        w.str(&self.source);
        w.finish()
    }

    fn decode(data: &[u8]) -> anyhow::Result<Self> {
        let (mut r, _) = Reader::open(data, TRACE_MAGIC, TRACE_VERSION, "trace header")?;
        let h = TraceHeader {
            volume: r.str("volume")?.to_string(),
            volume_size: r.u64("volume_size")?,
            start_ms: r.i64("start_ms")?,
            host: r.str("host")?.to_string(),
            source: r.str("source")?.to_string(),
        };
        r.finish()?;
        Ok(h)
    }
}

/// Writes a trace: records are buffered into frames; `flush` writes a
/// partial frame (call it every few seconds to bound what a crash loses).
pub struct TraceWriter<W: Write> {
    out: W,
    pending: Vec<u8>,
    pending_records: usize,
    records: u64,
}

impl<W: Write> TraceWriter<W> {
    pub fn new(mut out: W, header: &TraceHeader) -> std::io::Result<Self> {
        let h = header.encode();
        out.write_all(&(h.len() as u32).to_le_bytes())?;
        out.write_all(&h)?;
        Ok(TraceWriter {
            out,
            pending: Vec::with_capacity(FRAME_RECORDS * RECORD_LEN),
            pending_records: 0,
            records: 0,
        })
    }

    pub fn push(&mut self, r: &Record) -> std::io::Result<()> {
        self.pending.extend_from_slice(&r.t_ns.to_le_bytes());
        self.pending.push(r.op as u8);
        self.pending.extend_from_slice(&r.offset.to_le_bytes());
        self.pending.extend_from_slice(&r.len.to_le_bytes());
        self.pending.extend_from_slice(&r.stream.to_le_bytes());
        self.pending_records += 1;
        self.records += 1;
        if self.pending_records >= FRAME_RECORDS {
            self.write_frame()?;
        }
        Ok(())
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn write_frame(&mut self) -> std::io::Result<()> {
        if self.pending_records == 0 {
            return Ok(());
        }
        // Level 3: traces are written once and kept; the default level
        // costs little at these sizes and compresses noticeably better.
        let z = zstd::bulk::compress(&self.pending, 3)?;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + z.len());
        frame.extend_from_slice(FRAME_MAGIC);
        frame.extend_from_slice(&(self.pending_records as u32).to_le_bytes());
        frame.extend_from_slice(&(z.len() as u32).to_le_bytes());
        frame.extend_from_slice(blake3::hash(&z).as_bytes());
        frame.extend_from_slice(&z);
        // One write per frame: a crash leaves whole frames and at most one torn one.
        self.out.write_all(&frame)?;
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// Writes buffered records as a (partial) frame and flushes the output.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.write_frame()?;
        self.out.flush()
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

/// Reads a trace frame by frame; iterate for records.
pub struct TraceReader<R: Read> {
    input: R,
    pub header: TraceHeader,
    frame: Vec<u8>,
    pos: usize,
    /// Set when the trace ended in a torn frame (a crash while writing).
    pub truncated: bool,
    failed: bool,
    frames: u64,
}

/// Reads up to `buf.len()` bytes; returns how many (less only at EOF).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> TraceReader<R> {
    pub fn new(mut input: R) -> anyhow::Result<Self> {
        let mut len = [0u8; 4];
        if read_full(&mut input, &mut len)? < 4 {
            bail!("not a trace: shorter than its header");
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_HEADER_LEN {
            bail!("not a trace: header length {len} is absurd");
        }
        let mut h = vec![0u8; len];
        if read_full(&mut input, &mut h)? < len {
            bail!("not a trace: truncated header");
        }
        let header = TraceHeader::decode(&h)?;
        Ok(TraceReader {
            input,
            header,
            frame: Vec::new(),
            pos: 0,
            truncated: false,
            failed: false,
            frames: 0,
        })
    }

    /// Loads the next frame; `Ok(false)` at the end.
    fn next_frame(&mut self) -> anyhow::Result<bool> {
        let mut fh = [0u8; FRAME_HEADER_LEN];
        let n = read_full(&mut self.input, &mut fh)?;
        if n == 0 {
            return Ok(false);
        }
        let frame_no = self.frames;
        if n < FRAME_HEADER_LEN {
            self.truncated = true;
            return Ok(false);
        }
        if &fh[..4] != FRAME_MAGIC {
            bail!("trace frame {frame_no}: bad magic (corrupt trace)");
        }
        let count = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]) as usize;
        let zlen = u32::from_le_bytes([fh[8], fh[9], fh[10], fh[11]]) as usize;
        if count == 0 || count > FRAME_RECORDS {
            bail!("trace frame {frame_no}: record count {count} out of range");
        }
        // zstd never expands data by more than a small bound.
        if zlen > zstd::zstd_safe::compress_bound(count * RECORD_LEN) {
            bail!("trace frame {frame_no}: compressed length {zlen} is absurd");
        }
        let mut z = vec![0u8; zlen];
        if read_full(&mut self.input, &mut z)? < zlen {
            self.truncated = true;
            return Ok(false);
        }
        if blake3::hash(&z).as_bytes()[..] != fh[12..44] {
            bail!("trace frame {frame_no}: checksum mismatch (corrupt trace)");
        }
        let data = zstd::bulk::decompress(&z, count * RECORD_LEN)
            .with_context(|| format!("trace frame {frame_no}: zstd"))?;
        if data.len() != count * RECORD_LEN {
            bail!(
                "trace frame {frame_no}: {} bytes for {count} records",
                data.len()
            );
        }
        self.frame = data;
        self.pos = 0;
        self.frames += 1;
        Ok(true)
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = anyhow::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.pos >= self.frame.len() {
            match self.next_frame() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let b = &self.frame[self.pos..self.pos + RECORD_LEN];
        self.pos += RECORD_LEN;
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let op = match b[8] {
            0 => Op::Read,
            1 => Op::Write,
            v => {
                self.failed = true;
                return Some(Err(anyhow::anyhow!(
                    "trace frame {}: unknown op {v}",
                    self.frames.saturating_sub(1)
                )));
            }
        };
        Some(Ok(Record {
            t_ns: u64_at(0),
            op,
            offset: u64_at(9),
            len: u32_at(17),
            stream: u32_at(21),
        }))
    }
}

/// Opens a trace file for reading.
pub fn open(
    path: &std::path::Path,
) -> anyhow::Result<TraceReader<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open trace {}", path.display()))?;
    TraceReader::new(std::io::BufReader::new(f))
        .with_context(|| format!("trace {}", path.display()))
}

/// This machine's name, reduced to characters safe in an object key.
pub fn host_name() -> String {
    let raw =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("h{clean}")
    } else {
        clean
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header() -> TraceHeader {
        TraceHeader {
            volume: "vol".into(),
            volume_size: 1 << 30,
            start_ms: 1_700_000_000_000,
            host: "h".into(),
            source: "test".into(),
        }
    }

    fn rec(i: u64) -> Record {
        Record {
            t_ns: i * 1000,
            op: if i % 3 == 0 { Op::Write } else { Op::Read },
            offset: i * 4096,
            len: 4096,
            stream: (i % 4) as u32,
        }
    }

    fn encode(n: u64, flush_every: u64) -> Vec<u8> {
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        for i in 0..n {
            w.push(&rec(i)).unwrap();
            if flush_every > 0 && i % flush_every == flush_every - 1 {
                w.flush().unwrap();
            }
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_across_frames_and_flushes() {
        for (n, every) in [(0, 0), (1, 0), (70_000, 0), (1000, 7)] {
            let enc = encode(n, every);
            let r = TraceReader::new(&enc[..]).unwrap();
            assert_eq!(r.header, header());
            let got: Vec<Record> = r.map(|x| x.unwrap()).collect();
            assert_eq!(got.len() as u64, n);
            assert!(got.iter().enumerate().all(|(i, r)| *r == rec(i as u64)));
        }
    }

    #[test]
    fn torn_tail_is_the_end_and_corruption_is_an_error() {
        let enc = encode(1000, 100);
        // Cut in the middle of the last frame: 900 records survive.
        let mut r = TraceReader::new(&enc[..enc.len() - 10]).unwrap();
        let mut n = 0;
        for x in r.by_ref() {
            x.unwrap();
            n += 1;
        }
        assert_eq!(n, 900);
        assert!(r.truncated);
        // A flipped byte anywhere after the header: an error, never a panic.
        let hlen = 4 + u32::from_le_bytes([enc[0], enc[1], enc[2], enc[3]]) as usize;
        for i in (hlen..enc.len()).step_by(37) {
            let mut bad = enc.clone();
            bad[i] ^= 0x20;
            let r = TraceReader::new(&bad[..]).unwrap();
            let results: Vec<_> = r.collect();
            assert!(
                results.iter().any(|x| x.is_err()),
                "flip at {i} went unnoticed"
            );
        }
        // Garbage and truncated headers.
        assert!(TraceReader::new(&b"xx"[..]).is_err());
        assert!(TraceReader::new(&[255u8, 255, 255, 255, 0][..]).is_err());
        assert!(TraceReader::new(&enc[..hlen - 1]).is_err());
    }
}
