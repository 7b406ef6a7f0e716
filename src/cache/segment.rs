//! The disk tier's files: blocks appended as records to a few large
//! segment files, `<dir>/segments/<16 hex>.seg`, instead of one file per
//! block.
//!
//! Why: creating a file is the expensive part of caching a block on ext4.
//! A profile of a cold `dd` (mount `--no-prefetch`, 512 MiB from file://)
//! put 37% of the mount's CPU in the disk tier's `put`, half of it in
//! ext4's inode allocation (`__ext4_new_inode`, scanning for a free inode
//! past recently deleted ones), and creating 1024 files of 512 KiB took
//! 0.16–1.66 CPU s from one run to the next on the same machine, against
//! 0.10–0.12 s for the same bytes written into one file (docs/benchmarks.md,
//! "Read path: previous build vs this one"). A segment is created once per
//! [`segment_target`] bytes; a record is two `pwrite`s.
//!
//! A record, at an offset that is a multiple of [`ALIGN`]:
//! `magic "SACR" | version u16 | reserved u16 | block length u32 | CV count
//! u32 | key (32 bytes) | CVs (32 bytes each)`, zero-padded to a multiple
//! of [`ALIGN`], then the block, then padding to the next multiple of
//! [`ALIGN`] (not written: the next record, or the file's end). The key is
//! in the header so that the index can be rebuilt by reading the headers
//! (one `pread` each) when a cache is reopened.
//!
//! Evicting a block punches its record out of the file
//! (`fallocate(PUNCH_HOLE)`), which frees its disk space at once; a segment
//! with no record left is deleted. Offsets are never reused, so a reader
//! that raced an eviction reads zeros, which fail the check against the key
//! and are never served. Records are aligned so a punch frees whole
//! filesystem blocks and a 4 KiB read of a block touches one page.
//!
//! Crashes: a record is indexed only after both writes returned; at reopen a
//! record whose bytes run past the file's end (a torn tail) is ignored, and
//! a header that does not parse (a punched hole reads as zeros, damage) is
//! skipped to the next data (`SEEK_DATA`) or the next [`ALIGN`] boundary.
//! Every read is still checked against the key, so whatever a crash leaves
//! can cost a refetch, never a wrong byte.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use blake3::hazmat::ChainingValue;

use super::verified::SEGMENT;
use super::BlockKey;

const MAGIC: &[u8; 4] = b"SACR";
const VERSION: u16 = 1;
/// magic 4, version 2, reserved 2, length 4, CV count 4, key 32.
pub const HEADER_FIXED: usize = 48;
/// Records and their blocks start at multiples of this: the page size and
/// ext4's block size, so a punch frees whole blocks and a 4 KiB read of a
/// block reads one page. Costs at most 4 KiB of header padding per block
/// (0.8% of a 512 KiB block).
pub const ALIGN: u64 = 4096;
/// Segments are at least this large (a small cache still writes few files)
/// and at most this large (a segment is deleted only when all of it is
/// evicted; smaller ones free their tail sooner).
const SEGMENT_MIN: u64 = 8 << 20;
const SEGMENT_MAX: u64 = 1 << 30;
/// A full cache spans about this many segments: 128 MiB each for the
/// default 8 GiB, 16 files created per GiB written.
const SEGMENTS_PER_CACHE: u64 = 64;

/// Size of the segments of a cache bounded by `capacity` bytes.
pub fn segment_target(capacity: u64) -> u64 {
    (capacity / SEGMENTS_PER_CACHE).clamp(SEGMENT_MIN, SEGMENT_MAX)
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// CVs a block of `len` bytes carries: one per [`SEGMENT`], none for a
/// one-segment block (its checksum is checked whole).
pub fn cv_count(len: usize) -> usize {
    if len > SEGMENT {
        len.div_ceil(SEGMENT)
    } else {
        0
    }
}

/// Where the block starts, from the record's start.
pub fn data_offset(len: usize) -> u64 {
    align_up((HEADER_FIXED + 32 * cv_count(len)) as u64)
}

/// Bytes a record of a `len`-byte block takes in its segment, padding
/// included: what the cache's bound counts.
pub fn record_size(len: usize) -> u64 {
    data_offset(len) + align_up(len as u64)
}

/// The header of a record, padded to its block's start.
pub fn encode_header(key: &BlockKey, len: usize, cvs: &[ChainingValue]) -> Vec<u8> {
    let mut h = Vec::with_capacity(data_offset(len) as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&(len as u32).to_le_bytes());
    h.extend_from_slice(&(cvs.len() as u32).to_le_bytes());
    h.extend_from_slice(key);
    for cv in cvs {
        h.extend_from_slice(cv);
    }
    h.resize(data_offset(len) as usize, 0);
    h
}

/// The fixed part of a record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key: BlockKey,
    pub len: usize,
}

/// Parses the fixed part of a header; `None` if it is not one (zeros of a
/// punched record, damage, or a CV count that does not fit the length).
pub fn parse_fixed(b: &[u8]) -> Option<Header> {
    let b = b.get(..HEADER_FIXED)?;
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    if &b[..4] != MAGIC || b[4..6] != VERSION.to_le_bytes() {
        return None;
    }
    let len = u32_at(8);
    if len == 0 || u32_at(12) != cv_count(len) {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&b[16..48]);
    Some(Header { key, len })
}

/// Reads a record's whole header at `at` and returns its CVs if it holds
/// the block `key` of length `len` (not yet proven against the key).
pub fn read_header(
    file: &File,
    at: u64,
    key: &BlockKey,
    len: usize,
) -> std::io::Result<Option<Vec<ChainingValue>>> {
    let mut h = vec![0u8; HEADER_FIXED + 32 * cv_count(len)];
    file.read_exact_at(&mut h, at)?;
    match parse_fixed(&h) {
        Some(f) if f.key == *key && f.len == len => Ok(Some(
            h[HEADER_FIXED..]
                .chunks_exact(32)
                .map(|c| {
                    let mut a = [0u8; 32];
                    a.copy_from_slice(c);
                    a
                })
                .collect(),
        )),
        _ => Ok(None),
    }
}

/// A record found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub key: BlockKey,
    pub at: u64,
    pub len: usize,
}

/// Every whole record of a segment file, in file order.
pub fn scan(file: &File) -> std::io::Result<Vec<Found>> {
    let end = file.metadata()?.len();
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut fixed = [0u8; HEADER_FIXED];
    while at + HEADER_FIXED as u64 <= end {
        file.read_exact_at(&mut fixed, at)?;
        match parse_fixed(&fixed) {
            Some(h) if at + data_offset(h.len) + h.len as u64 <= end => {
                out.push(Found {
                    key: h.key,
                    at,
                    len: h.len,
                });
                at += record_size(h.len);
            }
            // A record running past the end: a torn last write.
            Some(_) => break,
            None => match next_data(file, at + ALIGN)? {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    Ok(out)
}

/// The first [`ALIGN`] boundary at or after `from` that may hold a record:
/// past a punched hole in one step (`SEEK_DATA`), else `from` itself;
/// `None`: no data after `from`.
fn next_data(file: &File, from: u64) -> std::io::Result<Option<u64>> {
    use nix::unistd::{lseek, Whence};
    match lseek(file, from as libc::off_t, Whence::SeekData) {
        Ok(p) => Ok(Some((p as u64 / ALIGN * ALIGN).max(from))),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        // A filesystem without SEEK_DATA: look at every boundary.
        Err(_) => Ok(Some(from)),
    }
}

/// Frees a record's space (`fallocate(PUNCH_HOLE | KEEP_SIZE)`).
pub fn punch(file: &File, at: u64, size: u64) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        at as libc::off_t,
        size as libc::off_t,
    )
    .map_err(std::io::Error::from)
}

/// `<dir>/segments/<seq as 16 hex>.seg`.
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

/// The sequence number in a segment file's name.
pub fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write_record(f: &File, at: u64, key: &BlockKey, data: &[u8]) -> u64 {
        let cvs = crate::cache::verified::check_block(data, key).unwrap();
        let h = encode_header(key, data.len(), &cvs);
        f.write_all_at(&h, at).unwrap();
        f.write_all_at(data, at + h.len() as u64).unwrap();
        at + record_size(data.len())
    }

    fn block(seed: u8, len: usize) -> (BlockKey, Vec<u8>) {
        let d: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        (*blake3::hash(&d).as_bytes(), d)
    }

    #[test]
    fn sizes_are_aligned_and_headers_round_trip() {
        assert_eq!(record_size(1000), 2 * ALIGN);
        // 512 KiB: 32 CVs, a 1072-byte header padded to one page.
        assert_eq!(data_offset(512 * 1024), ALIGN);
        assert_eq!(record_size(512 * 1024), ALIGN + 512 * 1024);
        let (k, d) = block(3, 100_000);
        let cvs = crate::cache::verified::check_block(&d, &k).unwrap();
        let h = encode_header(&k, d.len(), &cvs);
        assert_eq!(h.len() as u64, data_offset(d.len()));
        assert_eq!(
            parse_fixed(&h),
            Some(Header {
                key: k,
                len: d.len()
            })
        );
        assert!(parse_fixed(&[0u8; HEADER_FIXED]).is_none());
        let mut bad = h.clone();
        bad[12] ^= 1; // CV count no longer fits the length
        assert!(parse_fixed(&bad).is_none());
        assert_eq!(parse_name("00000000000000ff.seg"), Some(255));
        assert_eq!(parse_name("ff.seg"), None);
        assert_eq!(
            path(Path::new("/c"), 255),
            Path::new("/c/00000000000000ff.seg")
        );
        // Segments: 128 MiB for the default 8 GiB, within bounds otherwise.
        assert_eq!(segment_target(8 << 30), 128 << 20);
        assert_eq!(segment_target(1 << 20), SEGMENT_MIN);
        assert_eq!(segment_target(1 << 40), SEGMENT_MAX);
    }

    /// The scan finds every whole record, steps over punched ones and a
    /// damaged header, and ignores a torn last record.
    #[test]
    fn the_scan_skips_holes_damage_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("s"))
            .unwrap();
        let blocks: Vec<_> = (1..=5).map(|s| block(s, 40_000 + s as usize)).collect();
        let mut at = 0;
        let mut starts = Vec::new();
        for (k, d) in &blocks {
            starts.push(at);
            at = write_record(&f, at, k, d);
        }
        let all = scan(&f).unwrap();
        assert_eq!(all.len(), 5);
        assert!(all
            .iter()
            .zip(&blocks)
            .all(|(r, (k, d))| r.key == *k && r.len == d.len()));

        // Punch record 1: its space is freed, the scan steps over it.
        let before = f.metadata().unwrap().blocks();
        punch(&f, starts[1], record_size(blocks[1].1.len())).unwrap();
        assert!(f.metadata().unwrap().blocks() < before, "space freed");
        // Damage record 3's header.
        f.write_all_at(b"XXXX", starts[3]).unwrap();
        // Tear record 4: its last bytes never reached the file.
        f.set_len(starts[4] + data_offset(blocks[4].1.len()) + 10)
            .unwrap();
        let found: Vec<BlockKey> = scan(&f).unwrap().iter().map(|r| r.key).collect();
        assert_eq!(found, vec![blocks[0].0, blocks[2].0]);
        assert_eq!(scan(&f).unwrap()[1].at, starts[2]);
    }
}
