//! Where an ext4 filesystem keeps its metadata and its files, read from
//! the volume at `create`, so a mount can fetch what any session of that
//! filesystem reads first before a single trace was recorded.
//!
//! Read directly from the documented on-disk format (the kernel's
//! `Documentation/filesystems/ext4/`): no maintained crate exposes extents
//! and inode-table locations (`ext4-view` reads files by path, and hides
//! both). Only what a prior needs is parsed, and every number is checked
//! against the volume's size before it is used:
//! - the superblock (at byte 1024; magic 0xEF53), and the group descriptor
//!   table after it (not with `meta_bg`, which scatters it: such volumes
//!   get the superblock only);
//! - per group, the **used part of the inode table**: with `uninit_bg` or
//!   `metadata_csum`, `inodes_per_group − bg_itable_unused` inodes (none
//!   when the group's inodes are uninitialized), else the whole table;
//! - every in-use inode's extent tree (leaves in `i_block`, index nodes read
//!   from the volume, depth ≤ [`MAX_DEPTH`]): directories' extents are
//!   metadata, regular files' extents are their data in file order.
//!   Reserved regular files (below `s_first_ino`: the journal) are
//!   skipped: nothing reads them at mount time.
//!   Inodes without extents (ext2/3 block maps, inline data) are skipped:
//!   they get no prior, which only costs a miss.
//! - every directory's **entries**, as child inode numbers in the order
//!   Linux's `readdir` (and so `tar` or `grep -r`) returns them: read
//!   linearly from its blocks, skipping entries of inode 0, which is how
//!   both an htree's index blocks (one fake entry covering the block) and
//!   the `metadata_csum` tail (inode 0) present themselves to a linear
//!   reader, as the kernel's `ext4_readdir` treats them too; then, for a
//!   directory the kernel reads in hash order (indexed, or of one block,
//!   with `dir_index`), sorted by the hash of their names
//!   ([`super::dirhash`]). At most [`MAX_DIRECTORY_BYTES`] of directory
//!   blocks are read.
//!
//! Anything unexpected (bad magic, a field out of range, a read error)
//! ends the scan with "no prior": a prior is an optimization, and the
//! snapshot itself never depends on it.

use std::ops::Range;

use super::dirhash::DirHash;

/// Superblock offset and magic.
const SB_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
/// Feature bits used here.
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;
const EXTENTS_FL: u32 = 0x80000;
/// Inode flags of a directory the kernel reads in hash order.
const INDEX_FL: u32 = 0x1000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// Extent trees deeper than this are corrupt (the kernel's own bound is 5).
pub const MAX_DEPTH: u16 = 5;
/// Inode-table bytes scanned at most (a 1 TiB filesystem full of small
/// files has ~64 M inodes = 16 GiB of tables; a prior needs the start of
/// it, and a create must not read a second volume's worth of metadata).
pub const MAX_INODE_TABLE_BYTES: u64 = 1 << 30;
/// Extent-tree nodes read from the volume at most, over the whole scan
/// (2^18 nodes of 4 KiB = 1 GiB): a damaged or hostile image whose index
/// nodes point at each other cannot make a create read without end.
pub const MAX_EXTENT_NODES: u64 = 1 << 18;
/// Directory bytes read for entries at most, over the whole scan: the
/// prior's own bound on metadata (`create/prior.rs`, 64 MiB), so a create
/// reads no more directory blocks than a mount could ever be told to fetch.
pub const MAX_DIRECTORY_BYTES: u64 = 64 << 20;
/// Extents kept per file at most (fragmented files: the rest gets no prior).
const MAX_EXTENTS_PER_FILE: usize = 4096;

/// One in-use inode with extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub directory: bool,
    /// Byte ranges of the volume holding its data, in file order.
    pub extents: Vec<Range<u64>>,
    /// A directory's entries (without `.` and `..`) as inode numbers, in
    /// the order `readdir` returns them (see the module doc); empty for
    /// files.
    pub children: Vec<u64>,
}

/// What the scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u64,
    /// Superblock and group descriptor table, as one range from 0.
    pub head: Range<u64>,
    /// Per group with used inodes: (group, byte range of the used part).
    pub inode_tables: Vec<(u64, Range<u64>)>,
    /// Directories and regular files with extents.
    pub inodes: Vec<Inode>,
}

/// Reads bytes of the volume at an offset (exactly `buf.len()` or fails).
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let s = usize::try_from(offset)
            .ok()
            .and_then(|o| self.get(o..o + buf.len()));
        match s {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |x| u16::from_le_bytes([x[0], x[1]]))
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// The filesystem's geometry, from its superblock.
struct Geometry {
    block_size: u64,
    blocks: u64,
    first_data_block: u64,
    inodes_per_group: u64,
    inode_size: u64,
    /// First inode of ordinary files: below it are reserved ones (the
    /// journal, 8, is a regular file of mostly unused blocks).
    first_ino: u64,
    groups: u64,
    desc_size: u64,
    has_64bit: bool,
    uninit_bg: bool,
    meta_bg: bool,
    /// The directory hash, where `readdir` may use it.
    dirhash: Option<DirHash>,
}

fn geometry(sb: &[u8], volume_size: u64) -> Option<Geometry> {
    if u16_at(sb, 0x38) != EXT4_MAGIC {
        return None;
    }
    let log = u32_at(sb, 0x18);
    if log > 6 {
        return None; // blocks of 1 KiB .. 64 KiB
    }
    let block_size = 1024u64 << log;
    let incompat = u32_at(sb, 0x60);
    let ro_compat = u32_at(sb, 0x64);
    let has_64bit = incompat & INCOMPAT_64BIT != 0;
    let blocks = u32_at(sb, 0x4) as u64
        | if has_64bit {
            (u32_at(sb, 0x150) as u64) << 32
        } else {
            0
        };
    let blocks_per_group = u32_at(sb, 0x20) as u64;
    let inodes_per_group = u32_at(sb, 0x28) as u64;
    let dynamic = u32_at(sb, 0x4C) >= 1;
    let inode_size = if dynamic {
        u16_at(sb, 0x58) as u64
    } else {
        128
    };
    let first_ino = if dynamic { u32_at(sb, 0x54) as u64 } else { 11 };
    let first_data_block = u32_at(sb, 0x14) as u64;
    let desc_size = if has_64bit {
        u16_at(sb, 0xFE) as u64
    } else {
        32
    };
    let sane = blocks > first_data_block
        && blocks.checked_mul(block_size)? <= volume_size
        && blocks_per_group > 0
        && inodes_per_group > 0
        && (128..=block_size).contains(&inode_size)
        && inode_size.is_power_of_two()
        && (32..=1024).contains(&desc_size);
    if !sane || incompat & INCOMPAT_EXTENTS == 0 {
        return None;
    }
    Some(Geometry {
        block_size,
        blocks,
        first_data_block,
        inodes_per_group,
        inode_size,
        first_ino,
        groups: (blocks - first_data_block).div_ceil(blocks_per_group),
        desc_size,
        has_64bit,
        uninit_bg: ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
        meta_bg: incompat & INCOMPAT_META_BG != 0,
        dirhash: DirHash::from_superblock(sb),
    })
}

/// Scans the ext4 filesystem of a volume of `volume_size` bytes; `None`
/// when the volume holds no ext4 (or one this scan cannot make sense of).
pub fn scan<R: ReadAt + ?Sized>(vol: &R, volume_size: u64) -> Option<Layout> {
    let mut sb = [0u8; 1024];
    vol.read_exact_at(&mut sb, SB_OFFSET).ok()?;
    let g = geometry(&sb, volume_size)?;
    let bs = g.block_size;
    let gdt_start = (g.first_data_block + 1) * bs;
    let gdt_len = g.groups.checked_mul(g.desc_size)?;
    let mut layout = Layout {
        block_size: bs,
        head: 0..(SB_OFFSET + 1024).max(gdt_start),
        ..Default::default()
    };
    if g.meta_bg {
        return Some(layout);
    }
    if gdt_start.checked_add(gdt_len)? > volume_size {
        return None;
    }
    layout.head = 0..gdt_start + gdt_len.div_ceil(bs) * bs;
    let mut gdt = vec![0u8; gdt_len as usize];
    vol.read_exact_at(&mut gdt, gdt_start).ok()?;
    let mut budget = MAX_INODE_TABLE_BYTES;
    let mut nodes = MAX_EXTENT_NODES;
    let mut dir_budget = MAX_DIRECTORY_BYTES;
    for grp in 0..g.groups {
        let d = &gdt[(grp * g.desc_size) as usize..((grp + 1) * g.desc_size) as usize];
        let wide = g.has_64bit && g.desc_size >= 64;
        let table = u32_at(d, 0x8) as u64
            | if wide {
                (u32_at(d, 0x28) as u64) << 32
            } else {
                0
            };
        let flags = u16_at(d, 0x12);
        let unused = u16_at(d, 0x1C) as u64
            | if wide {
                (u16_at(d, 0x32) as u64) << 16
            } else {
                0
            };
        let used = if !g.uninit_bg {
            g.inodes_per_group
        } else if flags & BG_INODE_UNINIT != 0 {
            0
        } else {
            g.inodes_per_group.saturating_sub(unused)
        };
        if used == 0 {
            continue;
        }
        let len = (used * g.inode_size).min(budget);
        let start = table.checked_mul(bs)?;
        if table >= g.blocks || start.checked_add(len)? > volume_size {
            return None;
        }
        if len == 0 {
            break;
        }
        budget -= len;
        layout.inode_tables.push((grp, start..start + len));
        let mut inodes = vec![0u8; len as usize];
        vol.read_exact_at(&mut inodes, start).ok()?;
        for (i, raw) in inodes.chunks_exact(g.inode_size as usize).enumerate() {
            let ino = grp * g.inodes_per_group + i as u64 + 1;
            if let Some(mut inode) = parse_inode(vol, &g, ino, raw, &mut nodes) {
                if inode.directory {
                    let max_ino = g.inodes_per_group * g.groups;
                    let hash = g.dirhash.filter(|_| hash_order(&g, raw));
                    inode.children =
                        entries(vol, &g, &inode.extents, max_ino, hash, &mut dir_budget);
                }
                layout.inodes.push(inode);
            }
        }
    }
    Some(layout)
}

/// A directory or regular file in use with an extent tree.
fn parse_inode<R: ReadAt + ?Sized>(
    vol: &R,
    g: &Geometry,
    ino: u64,
    raw: &[u8],
    nodes: &mut u64,
) -> Option<Inode> {
    let mode = u16_at(raw, 0x0);
    let links = u16_at(raw, 0x1A);
    let dtime = u32_at(raw, 0x14);
    let flags = u32_at(raw, 0x20);
    let kind = mode & 0xF000;
    let directory = kind == 0x4000;
    if links == 0 || dtime != 0 || !(directory || kind == 0x8000) || flags & EXTENTS_FL == 0 {
        return None;
    }
    if !directory && ino < g.first_ino {
        return None; // the journal and other reserved files
    }
    let mut extents = Vec::new();
    walk(
        vol,
        g,
        raw.get(0x28..0x28 + 60)?,
        MAX_DEPTH,
        nodes,
        &mut extents,
    )?;
    extents.sort_by_key(|(logical, _)| *logical);
    let extents: Vec<Range<u64>> = extents.into_iter().map(|(_, r)| r).collect();
    if extents.is_empty() {
        return None;
    }
    Some(Inode {
        ino,
        directory,
        extents,
        children: Vec::new(),
    })
}

/// Whether the kernel reads the directory inode `raw` in hash order
/// (`is_dx_dir` in `fs/ext4/namei.c`, given `dir_index`): indexed, inline,
/// or of exactly one block.
fn hash_order(g: &Geometry, raw: &[u8]) -> bool {
    let flags = u32_at(raw, 0x20);
    let size = u32_at(raw, 0x4) as u64 | (u32_at(raw, 0x6C) as u64) << 32;
    flags & (INDEX_FL | INLINE_DATA_FL) != 0 || size == g.block_size
}

/// The child inode numbers of a directory whose blocks are `extents`
/// (below `max_ino`; `.` and `..` left out), in on-disk order, or sorted
/// by the name hash `hash` where the kernel's `readdir` uses it. A
/// malformed entry ends the block it is in: what came before it is still
/// right.
fn entries<R: ReadAt + ?Sized>(
    vol: &R,
    g: &Geometry,
    extents: &[Range<u64>],
    max_ino: u64,
    hash: Option<DirHash>,
    budget: &mut u64,
) -> Vec<u64> {
    // (sort key, inode): the key stays 0 without a hash, and the sort is
    // stable, so on-disk order is kept.
    let mut out: Vec<((u32, u32), u64)> = Vec::new();
    for r in extents {
        let len = (r.end - r.start).min(*budget);
        if len == 0 {
            break;
        }
        *budget -= len;
        let mut buf = vec![0u8; len as usize];
        if vol.read_exact_at(&mut buf, r.start).is_err() {
            break;
        }
        // Entries never cross a filesystem block.
        for block in buf.chunks(g.block_size as usize) {
            let mut at = 0usize;
            while at + 8 <= block.len() {
                let ino = u32_at(block, at) as u64;
                let rec_len = u16_at(block, at + 4) as usize;
                let name_len = block[at + 6] as usize;
                if rec_len < 8
                    || rec_len % 4 != 0
                    || at + rec_len > block.len()
                    || 8 + name_len > rec_len
                {
                    break;
                }
                let name = &block[at + 8..at + 8 + name_len];
                if ino != 0 && ino <= max_ino && name != b"." && name != b".." {
                    out.push((hash.map_or((0, 0), |h| h.hash(name)), ino));
                }
                at += rec_len;
            }
        }
    }
    if hash.is_some() {
        out.sort_by_key(|e| e.0);
    }
    out.into_iter().map(|(_, ino)| ino).collect()
}

/// Collects (logical block, byte range) of every initialized extent of
/// the tree node `node`, at most `depth` levels deep.
fn walk<R: ReadAt + ?Sized>(
    vol: &R,
    g: &Geometry,
    node: &[u8],
    depth: u16,
    nodes: &mut u64,
    out: &mut Vec<(u64, Range<u64>)>,
) -> Option<()> {
    if u16_at(node, 0) != EXTENT_MAGIC {
        return None;
    }
    let entries = u16_at(node, 2) as usize;
    let level = u16_at(node, 6);
    if level > depth || 12 + entries * 12 > node.len() {
        return None;
    }
    for e in 0..entries {
        let x = &node[12 + e * 12..24 + e * 12];
        if level == 0 {
            let logical = u32_at(x, 0) as u64;
            let len = u16_at(x, 4) as u64;
            let start = (u16_at(x, 6) as u64) << 32 | u32_at(x, 8) as u64;
            // Lengths above 32768 mark uninitialized (preallocated) extents:
            // they read as zeros and hold nothing worth fetching.
            if len == 0 || len > 32768 {
                continue;
            }
            if start.checked_add(len)? > g.blocks {
                return None;
            }
            if out.len() < MAX_EXTENTS_PER_FILE {
                out.push((logical, start * g.block_size..(start + len) * g.block_size));
            }
        } else {
            let leaf = u32_at(x, 4) as u64 | (u16_at(x, 8) as u64) << 32;
            if leaf >= g.blocks || *nodes == 0 {
                return None;
            }
            *nodes -= 1;
            let mut child = vec![0u8; g.block_size as usize];
            vol.read_exact_at(&mut child, leaf * g.block_size).ok()?;
            walk(vol, g, &child, level - 1, nodes, out)?;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_filesystem_no_prior() {
        let zeros = vec![0u8; 1 << 20];
        assert_eq!(scan(&zeros[..], 1 << 20), None);
        // A superblock whose sizes exceed the volume is refused, not trusted.
        let mut v = vec![0u8; 1 << 20];
        v[1024 + 0x38..1024 + 0x3A].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        v[1024 + 0x4..1024 + 0x8].copy_from_slice(&1_000_000u32.to_le_bytes());
        v[1024 + 0x60..1024 + 0x64].copy_from_slice(&INCOMPAT_EXTENTS.to_le_bytes());
        assert_eq!(scan(&v[..], 1 << 20), None);
    }
}
