//! The filesystem prior of a new snapshot: [`super::ext4`]'s byte ranges
//! turned into the snapshot's blocks ([`FsPrior`]).
//!
//! Metadata, in the order a mount fetches it: the superblock and group
//! descriptors, the used inode tables, then directory blocks in volume
//! order (so neighbouring ones share GETs). Each block once, and at most
//! [`MAX_METADATA_BYTES`] of blocks: the prior is fetched at every mount
//! without traces, whatever the session turns out to be, so it must stay a
//! small price next to a round trip per miss it saves (64 MiB is ~0.5 s at
//! 1 Gbit/s, about the time one interpreter start spends missing).
//!
//! Files: every regular file whose data spans more than one snapshot block,
//! as its blocks in file order, so the first read of such a file can bring
//! the rest; a file inside one block gains nothing from a prior.
//!
//! Directories: every directory, in walk order (depth first, siblings as
//! `readdir` returns them), with its parent and the blocks of the regular
//! files directly in it (in `readdir` order, each block once), so a
//! walk that reads one of its files can bring the others
//! ([`crate::predict::directory`]). A block holding files of two
//! directories (the end of one and the start of the next, as `mkfs.ext4
//! -d` and most writers lay a directory's files out together) is *owned*
//! by the one with most bytes in it: only a read there counts as a read of
//! that directory, so finishing one directory does not start the next.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use super::ext4;
use crate::format::index::{PriorDir, MAX_PRIOR_DIRS, NO_PARENT};
use crate::format::{BlockRun, FsPrior};

/// Metadata blocks a prior names at most, in bytes of volume.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

/// The prior of the volume at `source`, if it holds a filesystem we read.
pub fn scan(source: &Path, volume_size: u64, block_size: u32) -> Option<FsPrior> {
    let file = std::fs::File::open(source).ok()?;
    let layout = ext4::scan(&file, volume_size)?;
    let prior = from_layout(&layout, volume_size, block_size);
    log::info!(
        "{}: ext4 found: {} metadata blocks, {} multi-block files in the prior",
        source.display(),
        prior.metadata.iter().map(|r| r.count as u64).sum::<u64>(),
        prior.files.len()
    );
    Some(prior)
}

/// Converts byte ranges of an ext4 layout to runs of snapshot blocks.
pub fn from_layout(layout: &ext4::Layout, volume_size: u64, block_size: u32) -> FsPrior {
    let bs = block_size as u64;
    let n_blocks = volume_size.div_ceil(bs);
    let max_blocks = (MAX_METADATA_BYTES / bs).max(1);
    let mut seen = HashSet::new();
    let mut order: Vec<u64> = Vec::new();
    let mut add = |r: &Range<u64>, order: &mut Vec<u64>| {
        for b in blocks_of(r, bs, n_blocks) {
            if order.len() as u64 >= max_blocks {
                return;
            }
            if seen.insert(b) {
                order.push(b);
            }
        }
    };
    add(&layout.head, &mut order);
    for (_, r) in &layout.inode_tables {
        add(r, &mut order);
    }
    let mut dirs: Vec<&Range<u64>> = layout
        .inodes
        .iter()
        .filter(|i| i.directory)
        .flat_map(|i| &i.extents)
        .collect();
    dirs.sort_by_key(|r| r.start);
    for r in dirs {
        add(r, &mut order);
    }
    let metadata = runs(&order);
    let files = layout
        .inodes
        .iter()
        .filter(|i| !i.directory)
        .filter_map(|i| {
            let mut seen = HashSet::new();
            let blocks: Vec<u64> = i
                .extents
                .iter()
                .flat_map(|r| blocks_of(r, bs, n_blocks))
                .filter(|b| seen.insert(*b))
                .collect();
            (blocks.len() > 1).then(|| runs(&blocks))
        })
        .take(crate::format::index::MAX_PRIOR_FILES)
        .collect();
    FsPrior {
        filesystem: "ext4".into(),
        metadata,
        files,
        directories: directories(layout, bs, n_blocks),
    }
}

/// The root directory's inode number in ext4.
const ROOT_INO: u64 = 2;

/// The directories of a layout ([`PriorDir`]) in walk order: depth first
/// from the root, each directory's subdirectories in the order `readdir`
/// returns them (so siblings follow each other as `tar` or `grep -r`
/// visits them), then any directory that walk does not reach, in inode
/// order.
fn directories(layout: &ext4::Layout, bs: u64, n_blocks: u64) -> Vec<PriorDir> {
    let by_ino: HashMap<u64, &ext4::Inode> = layout.inodes.iter().map(|i| (i.ino, i)).collect();
    let mut dirs: Vec<&ext4::Inode> = Vec::new();
    let mut placed = HashSet::new();
    let mut stack: Vec<u64> = vec![ROOT_INO];
    while let Some(ino) = stack.pop() {
        let Some(d) = by_ino.get(&ino).filter(|d| d.directory) else {
            continue;
        };
        if !placed.insert(ino) {
            continue; // a loop in a damaged image
        }
        dirs.push(d);
        stack.extend(d.children.iter().rev().copied());
    }
    dirs.extend(
        layout
            .inodes
            .iter()
            .filter(|i| i.directory && !placed.contains(&i.ino)),
    );
    dirs.truncate(MAX_PRIOR_DIRS);
    let index: HashMap<u64, u32> = dirs
        .iter()
        .enumerate()
        .map(|(k, d)| (d.ino, k as u32))
        .collect();
    let mut parent = vec![NO_PARENT; dirs.len()];
    // (block, directory) → bytes of the directory's files in the block.
    let mut bytes: HashMap<(u64, u32), u64> = HashMap::new();
    let mut blocks: Vec<Vec<u64>> = vec![Vec::new(); dirs.len()];
    for (k, d) in dirs.iter().enumerate() {
        let mut seen = HashSet::new();
        for c in &d.children {
            let Some(child) = by_ino.get(c) else { continue };
            if child.directory {
                if let Some(&ci) = index.get(c) {
                    if ci as usize != k && parent[ci as usize] == NO_PARENT {
                        parent[ci as usize] = k as u32;
                    }
                }
                continue;
            }
            for r in &child.extents {
                for b in blocks_of(r, bs, n_blocks) {
                    let overlap = r.end.min((b + 1) * bs) - r.start.max(b * bs);
                    *bytes.entry((b, k as u32)).or_default() += overlap;
                    if seen.insert(b) {
                        blocks[k].push(b);
                    }
                }
            }
        }
    }
    // Each block's owner: most bytes, the lower directory on a tie.
    let mut owner: HashMap<u64, (u64, u32)> = HashMap::new();
    for (&(b, k), &n) in &bytes {
        let e = owner.entry(b).or_insert((n, k));
        if n > e.0 || (n == e.0 && k < e.1) {
            *e = (n, k);
        }
    }
    blocks
        .iter()
        .enumerate()
        .map(|(k, bl)| {
            let owned: Vec<u64> = bl
                .iter()
                .copied()
                .filter(|b| owner.get(b).is_some_and(|o| o.1 == k as u32))
                .collect();
            PriorDir {
                parent: parent[k],
                blocks: runs(bl),
                owned: runs(&owned),
                affinity: 0,
            }
        })
        .collect()
}

/// The snapshot blocks a byte range touches, within the volume.
fn blocks_of(r: &Range<u64>, bs: u64, n_blocks: u64) -> Range<u64> {
    if r.start >= r.end {
        return 0..0;
    }
    (r.start / bs).min(n_blocks)..r.end.div_ceil(bs).min(n_blocks)
}

/// Consecutive blocks (in the given order) merged into runs.
fn runs(blocks: &[u64]) -> Vec<BlockRun> {
    let mut out: Vec<BlockRun> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some(r) if r.first + r.count as u64 == b && r.count < u32::MAX => r.count += 1,
            _ => out.push(BlockRun { first: b, count: 1 }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_become_deduplicated_block_runs_in_fetch_order() {
        let kib = 1024u64;
        let layout = ext4::Layout {
            block_size: 4096,
            head: 0..8 * kib,
            inode_tables: vec![(0, 1024 * kib..1100 * kib)],
            inodes: vec![
                ext4::Inode {
                    ino: 2,
                    directory: true,
                    extents: vec![3000 * kib..3004 * kib, 10 * kib..14 * kib],
                    children: vec![12, 13],
                },
                ext4::Inode {
                    ino: 12,
                    directory: false,
                    // Two blocks of 512 KiB, the second first in file order.
                    extents: vec![1536 * kib..1540 * kib, 600 * kib..604 * kib],
                    children: vec![],
                },
                ext4::Inode {
                    ino: 13,
                    directory: false,
                    extents: std::iter::once(700 * kib..704 * kib).collect(),
                    children: vec![],
                },
            ],
        };
        let p = from_layout(&layout, 4 << 20, 512 * 1024);
        let blocks: Vec<u64> = p.metadata.iter().flat_map(|r| r.blocks()).collect();
        // Head (block 0), inode table (block 2), directories by offset
        // (block 0 again: skipped; block 5).
        assert_eq!(blocks, vec![0, 2, 5]);
        assert_eq!(p.files.len(), 1, "the one-block file has no prior");
        let f: Vec<u64> = p.files[0].iter().flat_map(|r| r.blocks()).collect();
        assert_eq!(f, vec![3, 1]);
        // The root directory holds both files: their blocks in entry order.
        assert_eq!(p.directories.len(), 1);
        let d: Vec<u64> = p.directories[0]
            .blocks
            .iter()
            .flat_map(|r| r.blocks())
            .collect();
        assert_eq!(d, vec![3, 1]);
        assert_eq!(p.directories[0].owned, p.directories[0].blocks);
        assert_eq!(p.directories[0].parent, NO_PARENT);
    }

    #[test]
    fn a_block_shared_by_two_directories_is_owned_by_the_one_with_more_bytes_in_it() {
        let kib = 1024u64;
        let dir = |ino, children: Vec<u64>| ext4::Inode {
            ino,
            directory: true,
            extents: std::iter::once(4 * kib..8 * kib).collect(),
            children,
        };
        let file = |ino, r: Range<u64>| ext4::Inode {
            ino,
            directory: false,
            extents: std::iter::once(r).collect(),
            children: vec![],
        };
        let layout = ext4::Layout {
            block_size: 4096,
            head: 0..8 * kib,
            inode_tables: vec![],
            inodes: vec![
                dir(2, vec![11, 12]),
                dir(11, vec![20, 21]),
                dir(12, vec![22]),
                // Directory 11: block 1 whole, 100 KiB of block 2.
                file(20, 512 * kib..1024 * kib),
                file(21, 1024 * kib..1124 * kib),
                // Directory 12: the rest of block 2 (412 KiB) and block 3.
                file(22, 1124 * kib..2048 * kib),
            ],
        };
        let p = from_layout(&layout, 4 << 20, 512 * 1024);
        let [root, a, b] = &p.directories[..] else {
            panic!("{:?}", p.directories)
        };
        assert_eq!(root.parent, NO_PARENT);
        assert!(root.blocks.is_empty());
        assert_eq!((a.parent, b.parent), (0, 0));
        let ids = |r: &[BlockRun]| r.iter().flat_map(|r| r.blocks()).collect::<Vec<_>>();
        assert_eq!(ids(&a.blocks), vec![1, 2]);
        assert_eq!(ids(&a.owned), vec![1]);
        assert_eq!(ids(&b.blocks), vec![2, 3]);
        assert_eq!(ids(&b.owned), vec![2, 3]);
    }
}
