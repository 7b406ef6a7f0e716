//! The ext4 prior that `create` records, checked against e2fsprogs'
//! own view of the same image (`debugfs`, `dumpe2fs`) for images made by
//! `mkfs.ext4 -d`, with 1 KiB blocks (small filesystems' default) and 4 KiB.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use snapahead::create::ext4;

fn debugfs(img: &Path, req: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", req])
        .arg(img)
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file and directory below `tree`, as paths inside the image.
fn paths(tree: &Path, rel: &str, out: &mut Vec<(String, bool)>) {
    for e in std::fs::read_dir(tree.join(rel.trim_start_matches('/'))).unwrap() {
        let e = e.unwrap();
        let p = format!("{rel}/{}", e.file_name().to_string_lossy());
        let dir = e.file_type().unwrap().is_dir();
        out.push((p.clone(), dir));
        if dir {
            paths(tree, &p, out);
        }
    }
}

fn check(mkfs_args: &[&str]) {
    if !common::which("debugfs") || !common::which("mkfs.ext4") {
        common::skip("ext4 prior", "e2fsprogs (debugfs, mkfs.ext4) not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("lib/py/deep")).unwrap();
    for i in 0..30 {
        std::fs::write(
            tree.join(format!("lib/py/m{i}.py")),
            common::random_bytes(i, 1000 + i as usize * 9000),
        )
        .unwrap();
    }
    std::fs::write(tree.join("lib/big.so"), common::random_bytes(99, 3 << 20)).unwrap();
    std::fs::write(tree.join("lib/py/deep/x"), b"x\n").unwrap();
    let img = dir.path().join("v.img");
    common::run(Command::new("truncate").args(["-s", "96M"]).arg(&img));
    common::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .args(mkfs_args)
            .arg("-d")
            .arg(&tree)
            .arg(&img),
    );
    let size = std::fs::metadata(&img).unwrap().len();
    let file = std::fs::File::open(&img).unwrap();
    let layout = ext4::scan(&file, size).expect("ext4 found");
    let bs = layout.block_size;

    // Every file and directory: same inode, same blocks in the same order.
    let mut all = Vec::new();
    paths(&tree, "", &mut all);
    assert!(all.len() > 30);
    for (p, is_dir) in &all {
        let stat = debugfs(&img, &format!("stat {p}"));
        let ino: u64 = stat
            .split_whitespace()
            .skip_while(|w| *w != "Inode:")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no inode for {p}: {stat}"));
        let expected: Vec<u64> = debugfs(&img, &format!("blocks {p}"))
            .split_whitespace()
            .map(|b| b.parse().unwrap())
            .collect();
        let inode = layout.inodes.iter().find(|i| i.ino == ino);
        if expected.is_empty() {
            // Empty, or data inline in the inode: nothing to prefetch.
            assert!(inode.is_none_or(|i| i.extents.is_empty()), "{p}");
            continue;
        }
        let inode = inode.unwrap_or_else(|| panic!("{p} (inode {ino}) not found by the scan"));
        assert_eq!(inode.directory, *is_dir, "{p}");
        let got: Vec<u64> = inode
            .extents
            .iter()
            .flat_map(|r| r.start / bs..r.end / bs)
            .collect();
        assert_eq!(got, expected, "{p}: blocks differ from debugfs");
        if *is_dir {
            // The same entries as `debugfs ls` (which walks them in on-disk
            // order; their order is checked against the kernel below).
            let mut ls: Vec<u64> = debugfs(&img, &format!("ls -l {p}"))
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let name = *w.last()?;
                    (name != "." && name != "..").then(|| w.first()?.parse().ok())?
                })
                .collect();
            assert!(!ls.is_empty(), "{p}: debugfs lists nothing");
            let mut got = inode.children.clone();
            got.sort_unstable();
            ls.sort_unstable();
            assert_eq!(got, ls, "{p}: entries differ from debugfs");
        }
    }
    // Entries in the order the kernel's readdir returns them (hash order
    // for directories of one block or with an index), on a real loop mount.
    if common::loop_available("ext4 readdir order") {
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        common::run(
            Command::new("mount")
                .args(["-o", "loop,ro,noload"])
                .arg(&img)
                .arg(&mnt),
        );
        let mut checked = 0;
        for (p, is_dir) in all.iter().chain([&(String::new(), true)]) {
            if !is_dir {
                continue;
            }
            use std::os::unix::fs::{DirEntryExt, MetadataExt};
            let at = mnt.join(p.trim_start_matches('/'));
            let ino = std::fs::metadata(&at).unwrap().ino();
            let readdir: Vec<u64> = std::fs::read_dir(&at)
                .unwrap()
                .map(|e| e.unwrap().ino())
                .filter(|&i| i != 0)
                .collect();
            let got = &layout
                .inodes
                .iter()
                .find(|i| i.ino == ino)
                .unwrap_or_else(|| panic!("{p}: no inode {ino}"))
                .children;
            // lost+found and the like are in the image, not the tree.
            assert_eq!(got, &readdir, "{p}: order differs from readdir");
            checked += 1;
        }
        common::run(Command::new("umount").arg(&mnt));
        assert!(checked >= 4, "{checked}");
    }

    // Every directory's files, as the prior records them: lib/py holds 30
    // files, lib/py/deep's parent is lib/py.
    let prior = snapahead::create::prior::from_layout(&layout, size, 64 * 1024);
    // The prior lists directories depth first (siblings in readdir order):
    // the root first, lib before lib/py before lib/py/deep. Each is found
    // by a file of its own (their snapshot blocks, from debugfs).
    // (The middle of a large file: its ends may share a block with a
    // neighbour of another directory.)
    let holding = |file: &str| -> usize {
        let fs_blocks: Vec<u64> = debugfs(&img, &format!("blocks {file}"))
            .split_whitespace()
            .filter_map(|b| b.parse().ok())
            .collect();
        assert!(!fs_blocks.is_empty(), "{file}: no blocks");
        let fs_block = fs_blocks[fs_blocks.len() / 2];
        let b = fs_block * bs / (64 * 1024);
        prior
            .directories
            .iter()
            .position(|d| d.blocks.iter().any(|r| r.blocks().any(|x| x == b)))
            .unwrap_or_else(|| panic!("{file}: block {b} in no directory"))
    };
    let (lib, py) = (holding("/lib/big.so"), holding("/lib/py/m29.py"));
    let deep = prior
        .directories
        .iter()
        .position(|d| d.parent as usize == py)
        .expect("lib/py/deep");
    assert_eq!(
        prior.directories[0].parent,
        snapahead::format::index::NO_PARENT
    );
    assert_eq!(prior.directories[lib].parent, 0, "lib's parent is the root");
    assert_eq!(prior.directories[py].parent as usize, lib);
    assert!(0 < lib && lib < py && py < deep, "{lib} {py} {deep}");
    let py_blocks: u64 = prior.directories[py]
        .blocks
        .iter()
        .map(|r| r.count as u64)
        .sum();
    // 30 files of 1000 + 9000 i bytes: about 3.9 MiB, 60 or more blocks of 64 KiB.
    assert!(py_blocks >= 60, "lib/py: {py_blocks} blocks");

    // The used inode tables start where dumpe2fs says each table starts.
    let dump = String::from_utf8_lossy(
        &Command::new("dumpe2fs")
            .arg(&img)
            .output()
            .expect("dumpe2fs runs")
            .stdout,
    )
    .into_owned();
    let tables: Vec<(u64, u64)> = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Inode table at "))
        .map(|r| {
            let r = r.split_whitespace().next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert!(!layout.inode_tables.is_empty());
    for (g, r) in &layout.inode_tables {
        let (first, last) = tables[*g as usize];
        assert_eq!(r.start, first * bs, "group {g}'s inode table");
        assert!(r.end <= (last + 1) * bs, "group {g} beyond its table");
    }
    // Group 0's table holds every inode this small tree uses.
    let used: BTreeSet<u64> = layout.inodes.iter().map(|i| i.ino).collect();
    let max = *used.iter().max().unwrap();
    assert!(layout.inode_tables[0].1.end - layout.inode_tables[0].1.start >= max * 128);
    // Superblock and descriptors come first.
    let gd_end: u64 = dump
        .lines()
        .find_map(|l| l.split("Group descriptors at ").nth(1))
        .and_then(|r| r.split(['-', ',']).nth(1))
        .and_then(|n| n.trim().parse().ok())
        .expect("group descriptors in dumpe2fs");
    assert_eq!(layout.head.start, 0);
    assert!(layout.head.end >= (gd_end + 1) * bs);
}

#[test]
fn ext4_layout_matches_debugfs_with_1k_blocks() {
    check(&["-b", "1024"]);
}

#[test]
fn ext4_layout_matches_debugfs_with_4k_blocks() {
    check(&["-b", "4096"]);
}

#[test]
fn a_created_snapshot_of_ext4_carries_the_prior() {
    if !common::which("mkfs.ext4") {
        common::skip("ext4 prior", "mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_tree, img) = common::ext4_image(dir.path(), 64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = snapahead::store::Store::memory();
        let name = snapahead::name::SnapshotName::parse("e").unwrap();
        let o = snapahead::create::CreateOptions::new(name.clone(), &img);
        snapahead::create::create(&store, &o).await.unwrap();
        let snap = snapahead::snapshot::Snapshot::open(&store, &name)
            .await
            .unwrap();
        let prior = snap.index().prior.clone().expect("a prior for ext4");
        assert_eq!(prior.filesystem, "ext4");
        let meta: Vec<u64> = prior.metadata.iter().flat_map(|r| r.blocks()).collect();
        assert_eq!(meta[0], 0, "the superblock's block first");
        // The metadata an untrained mount fetches first is located in the
        // index: its stored blocks, as the pages hold them.
        let located: Vec<u64> = snap.index().located.blocks().collect();
        let mut stored = Vec::new();
        for &b in &meta {
            if let Some(r) = snap.locate_in_pages(b).await.unwrap() {
                assert_eq!(snap.locate(b).await.unwrap().as_ref(), Some(&r));
                stored.push(b);
            }
        }
        stored.sort_unstable();
        stored.dedup();
        assert!(!stored.is_empty());
        assert_eq!(located, stored);
        // The superblock's block, read first by every mount, comes inline.
        assert_eq!(snap.index().inline.first().map(|b| b.block_id), Some(0));
        // bin/random.bin is 3 MiB: more than one 512 KiB block.
        assert!(prior
            .files
            .iter()
            .any(|f| f.iter().map(|r| r.count).sum::<u32>() >= 6));
        // Raw data gets none.
        let raw = dir.path().join("raw.img");
        common::write(&raw, &common::random_bytes(5, 4 << 20));
        let rn = snapahead::name::SnapshotName::parse("raw").unwrap();
        let o = snapahead::create::CreateOptions::new(rn.clone(), &raw);
        snapahead::create::create(&store, &o).await.unwrap();
        let snap = snapahead::snapshot::Snapshot::open(&store, &rn)
            .await
            .unwrap();
        assert!(snap.index().prior.is_none());
    });
}
