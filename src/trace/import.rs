//! Importing traces recorded by other tools.
//!
//! **blkparse** (the default text output of `blkparse`, from `blktrace` or
//! ftrace's `blk` tracer on a real block device), lines like
//! `  8,0    3      1   0.000000000   697  Q   R 223490 + 8 [cat]`:
//! device, cpu, sequence, time (s), pid, action, RWBS, sector `+` count,
//! process. Only one action is taken, so a request is not counted once per
//! stage: `Q` (queued: what the filesystem or application asked for, before
//! the scheduler merged or split it) when the trace has any, else `D`
//! (issued to the driver), else `C` (completed). RWBS with `R` is a read,
//! with `W` a write; discards (`D`), flushes without data and other lines
//! (plugs, summaries) are skipped. Sectors are 512 bytes. The pid becomes
//! the stream hint.
//!
//! **fio iolog v2/v3** (`write_iolog=`): v3 lines are `usec file action
//! [offset length]`, v2 lines `file action [offset length]` with `wait
//! usec` lines for time. `read` and `write` become records (offsets in
//! bytes); `add/open/close/sync/datasync/trim` are skipped. The file's
//! position in the log becomes the stream hint.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, bail, Context};

use super::{Op, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Blkparse,
    Fio,
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    pub records: Vec<Record>,
    /// Largest `offset + len` seen (the volume is at least this big).
    pub extent: u64,
    /// Which blkparse action was taken, or the fio log version.
    pub detail: String,
}

fn lines(path: &Path) -> anyhow::Result<impl Iterator<Item = (usize, std::io::Result<String>)>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l)))
}

/// `seconds.fraction` → nanoseconds, exactly.
fn parse_seconds(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let int: u64 = int.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    int.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// A blkparse event line: (time ns, pid, action, rwbs, sector, sectors).
fn blk_event(line: &str) -> Option<(&str, &str, &str, &str, &str, &str)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || f[8] != "+" || !f[0].contains(',') {
        return None;
    }
    Some((f[3], f[4], f[5], f[6], f[7], f[9]))
}

pub fn import_blkparse(path: &Path) -> anyhow::Result<Imported> {
    // Pass 1: which actions are present.
    let mut actions: HashMap<String, u64> = HashMap::new();
    for (_, l) in lines(path)? {
        let l = l.with_context(|| format!("reading {}", path.display()))?;
        if let Some((_, _, a, _, _, _)) = blk_event(&l) {
            *actions.entry(a.to_string()).or_default() += 1;
        }
    }
    let action = ["Q", "D", "C"]
        .into_iter()
        .find(|a| actions.contains_key(*a))
        .ok_or_else(|| {
            anyhow!(
                "{}: no Q, D or C events: not blkparse output?",
                path.display()
            )
        })?;
    // Pass 2: the records.
    let mut out = Imported {
        records: Vec::new(),
        extent: 0,
        detail: format!("blkparse action {action}"),
    };
    let mut t0 = None;
    for (n, l) in lines(path)? {
        let l = l.with_context(|| format!("reading {}", path.display()))?;
        let Some((time, pid, a, rwbs, sector, count)) = blk_event(&l) else {
            continue;
        };
        if a != action || rwbs.contains('D') {
            continue;
        }
        let op = if rwbs.contains('R') {
            Op::Read
        } else if rwbs.contains('W') {
            Op::Write
        } else {
            continue;
        };
        let bad = |what: &str| anyhow!("{}:{n}: bad {what} in {l:?}", path.display());
        let t = parse_seconds(time).ok_or_else(|| bad("time"))?;
        let sector: u64 = sector.parse().map_err(|_| bad("sector"))?;
        let count: u64 = count.parse().map_err(|_| bad("sector count"))?;
        let offset = sector.checked_mul(512).ok_or_else(|| bad("sector"))?;
        let len = u32::try_from(count * 512).map_err(|_| bad("sector count"))?;
        if len == 0 {
            continue;
        }
        let t0 = *t0.get_or_insert(t);
        out.extent = out.extent.max(offset + len as u64);
        out.records.push(Record {
            t_ns: t.saturating_sub(t0),
            op,
            offset,
            len,
            stream: pid.parse().unwrap_or(0),
        });
    }
    Ok(out)
}

pub fn import_fio(path: &Path) -> anyhow::Result<Imported> {
    let mut it = lines(path)?;
    let version = match it.next() {
        Some((_, Ok(l))) if l.starts_with("fio version 2 iolog") => 2,
        Some((_, Ok(l))) if l.starts_with("fio version 3 iolog") => 3,
        Some((_, Ok(l))) => bail!(
            "{}:1: {l:?} is not a fio iolog v2/v3 header",
            path.display()
        ),
        Some((_, Err(e))) => return Err(e).with_context(|| format!("reading {}", path.display())),
        None => bail!("{}: empty file", path.display()),
    };
    let mut out = Imported {
        records: Vec::new(),
        extent: 0,
        detail: format!("fio iolog v{version}"),
    };
    let mut files: HashMap<String, u32> = HashMap::new();
    let mut clock_us: u64 = 0;
    for (n, l) in it {
        let l = l.with_context(|| format!("reading {}", path.display()))?;
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = |what: &str| anyhow!("{}:{n}: bad {what} in {l:?}", path.display());
        let (t_us, rest) = if version == 3 {
            let t: u64 = f[0].parse().map_err(|_| bad("timestamp"))?;
            (Some(t), &f[1..])
        } else {
            (None, &f[..])
        };
        if rest.len() < 2 {
            return Err(bad("line"));
        }
        let (file, action) = (rest[0], rest[1]);
        match action {
            "read" | "write" => {
                if rest.len() < 4 {
                    return Err(bad("I/O line"));
                }
                let offset: u64 = rest[2].parse().map_err(|_| bad("offset"))?;
                let len: u32 = rest[3].parse().map_err(|_| bad("length"))?;
                let next = files.len() as u32;
                let stream = *files.entry(file.to_string()).or_insert(next);
                // v2 has no times: keep order, 1 µs apart, plus any waits.
                let t = t_us.unwrap_or_else(|| {
                    clock_us += 1;
                    clock_us
                });
                out.extent = out.extent.max(offset + len as u64);
                out.records.push(Record {
                    t_ns: t.saturating_mul(1000),
                    op: if action == "read" {
                        Op::Read
                    } else {
                        Op::Write
                    },
                    offset,
                    len,
                    stream,
                });
            }
            "wait" if version == 2 => {
                let us: u64 = rest
                    .get(2)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("wait"))?;
                clock_us += us;
            }
            "add" | "open" | "close" | "sync" | "datasync" | "trim" | "wait" => {}
            other => return Err(bad(&format!("action {other:?}"))),
        }
    }
    if files.len() > 1 {
        log::warn!(
            "{}: the log covers {} files; their offsets are taken as one volume's",
            path.display(),
            files.len()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn blkparse_takes_queue_events_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // Written from blkparse's documented default format.
        let p = write(
            dir.path(),
            "t.txt",
            "  8,0    3        1     0.000000000   697  Q   R 223490 + 8 [cat]\n\
             \x20 8,0    3        2     0.000001000   697  G   R 223490 + 8 [cat]\n\
             \x20 8,0    3        3     0.000002000   697  P   N [cat]\n\
             \x20 8,0    3        4     0.000003000   697  D   R 223490 + 8 [cat]\n\
             \x20 8,0    3        5     0.000400000   697  C   R 223490 + 8 [0]\n\
             \x20 8,0    1        6     0.500000000   812  Q  WS 1000 + 16 [kworker]\n\
             \x20 8,0    1        7     0.600000000   812  Q   D 5000 + 64 [fstrim]\n\
             \x20 8,0    1        8     0.700000000   812  Q  FN 0 + 0 [sync]\n\
             CPU3 (8,0):\n Reads Queued:           1,        4KiB\n",
        );
        let im = import_blkparse(&p).unwrap();
        assert_eq!(im.detail, "blkparse action Q");
        assert_eq!(im.records.len(), 2, "{:?}", im.records);
        assert_eq!(
            im.records[0],
            Record {
                t_ns: 0,
                op: Op::Read,
                offset: 223490 * 512,
                len: 4096,
                stream: 697
            }
        );
        assert_eq!(
            im.records[1],
            Record {
                t_ns: 500_000_000,
                op: Op::Write,
                offset: 512_000,
                len: 8192,
                stream: 812
            }
        );
        // Without Q events, D events are taken.
        let p = write(
            dir.path(),
            "d.txt",
            "  8,0  0  1  1.5  10  D   R 8 + 8 [x]\n  8,0  0  2  1.6  10  C   R 8 + 8 [0]\n",
        );
        let im = import_blkparse(&p).unwrap();
        assert_eq!(
            (im.detail.as_str(), im.records.len()),
            ("blkparse action D", 1)
        );
        // Errors name the line.
        let p = write(
            dir.path(),
            "bad.txt",
            "  8,0  0  1  0.1  10  Q   R 12x + 8 [x]\n",
        );
        let e = import_blkparse(&p).unwrap_err().to_string();
        assert!(e.contains("bad.txt:1") && e.contains("sector"), "{e}");
        let p = write(dir.path(), "none.txt", "hello\n");
        assert!(import_blkparse(&p).is_err());
    }

    #[test]
    fn fio_v2_and_v3() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "v3.log",
            "fio version 3 iolog\n0 /dev/vdb add\n1 /dev/vdb open\n120 /dev/vdb read 4096 4096\n\
             250 /dev/vdb write 0 8192\n300 /dev/vdb sync 0 0\n400 /dev/vdb close\n",
        );
        let im = import_fio(&p).unwrap();
        assert_eq!(im.records.len(), 2);
        assert_eq!(
            im.records[0],
            Record {
                t_ns: 120_000,
                op: Op::Read,
                offset: 4096,
                len: 4096,
                stream: 0
            }
        );
        assert_eq!(im.records[1].op, Op::Write);
        assert_eq!(im.extent, 8192);
        let p = write(
            dir.path(),
            "v2.log",
            "fio version 2 iolog\n/dev/vdb add\n/dev/vdb open\n/dev/vdb read 0 4096\n/dev/vdb wait 1000\n/dev/vdb read 4096 4096\n/dev/vdb close\n",
        );
        let im = import_fio(&p).unwrap();
        assert_eq!(
            im.records.iter().map(|r| r.t_ns).collect::<Vec<_>>(),
            vec![1000, 1_002_000]
        );
        let p = write(dir.path(), "v1.log", "/dev/vdb read 0 4096\n");
        assert!(import_fio(&p)
            .unwrap_err()
            .to_string()
            .contains("not a fio iolog"));
        let p = write(
            dir.path(),
            "badnum.log",
            "fio version 3 iolog\n5 /dev/x read zero 4096\n",
        );
        assert!(import_fio(&p)
            .unwrap_err()
            .to_string()
            .contains("badnum.log:2"));
    }
}

/// What [`import_to_file`] wrote.
#[derive(Debug)]
pub struct ImportReport {
    pub records: usize,
    pub detail: String,
}

/// Imports `input` (a log in `format`) into the snapahead trace `out`.
/// `volume`: the volume name recorded (default: the input's file stem);
/// `volume_size`: its size (default: the end of the furthest access; an
/// access beyond a given size is an error).
pub fn import_to_file(
    format: Format,
    input: &Path,
    out: &Path,
    volume: Option<&str>,
    volume_size: Option<u64>,
) -> anyhow::Result<ImportReport> {
    let im = match format {
        Format::Blkparse => import_blkparse(input)?,
        Format::Fio => import_fio(input)?,
    };
    let size = volume_size.unwrap_or(im.extent);
    if im.extent > size {
        bail!(
            "{}: accesses reach byte {}, beyond the volume's {size} bytes (--volume-size or the snapshot's size)",
            input.display(),
            im.extent
        );
    }
    let header = super::TraceHeader {
        volume: volume.map(str::to_string).unwrap_or_else(|| {
            input
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        }),
        volume_size: size,
        start_ms: std::fs::metadata(input)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        host: super::host_name(),
        source: match format {
            Format::Blkparse => "blkparse".into(),
            Format::Fio => "fio".into(),
        },
    };
    let f =
        std::fs::File::create(out).map_err(|e| anyhow!("cannot create {}: {e}", out.display()))?;
    let mut w = super::TraceWriter::new(std::io::BufWriter::new(f), &header)?;
    for r in &im.records {
        w.push(r)?;
    }
    w.finish()?;
    Ok(ImportReport {
        records: im.records.len(),
        detail: im.detail,
    })
}
