//! `snapahead mount` with real FUSE mounts and real loop devices (CI runs as
//! root with /dev/fuse; elsewhere these tests say they skipped). Every test
//! unmounts and cleans up through `common::Mount`'s drop, even on failure.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{ext4_image, run, sha256, Mount};

/// `umount -l` of a path on drop, whatever happened in the test.
struct Umount(std::path::PathBuf);
impl Drop for Umount {
    fn drop(&mut self) {
        if common::is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes `vol` as `dir/v.img`, snapshots it as `v` into `dir/store` with
/// block size `bs`, and returns the store's URL.
fn snapshot_v(dir: &Path, vol: &[u8], bs: &str) -> String {
    let img = dir.join("v.img");
    common::write(&img, vol);
    let store = format!("file://{}", dir.join("store").display());
    create(dir, &store, "v", &img, bs);
    store
}

fn create(dir: &Path, store: &str, name: &str, img: &Path, bs: &str) {
    run(Command::new(common::bin())
        .current_dir(dir)
        .args([
            "--store",
            store,
            "create",
            name,
            "--block-size",
            bs,
            "--source",
        ])
        .arg(img));
}

/// An ext4 image of a small tree, snapshotted as `vol` (64 KiB blocks) into
/// `dir/store`: the tree, the image and the store's URL.
fn ext4_snapshot(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (tree, img) = ext4_image(dir, 64);
    let store = format!("file://{}", dir.join("store").display());
    create(dir, &store, "vol", &img, "64KiB");
    (tree, img, store)
}

/// Loop-mounts the mounted image (where loop devices exist) and checks
/// that the filesystem in it holds exactly `tree`.
fn loop_mount_matches(m: &mut Mount, mounted: &Path, tree: &Path, dir: &Path, test: &str) {
    if common::loop_available(&format!("loop part of {test}")) {
        let lo = dir.join("lo");
        m.loop_mount(mounted, &lo);
        run(Command::new("diff")
            .args(["-r", "--exclude=lost+found"])
            .arg(tree)
            .arg(&lo));
        m.loop_unmount(&lo);
    }
}

#[test]
fn ext4_image_reads_back_exactly_through_mount_and_loop_device() {
    if !common::fuse_available("ext4_image_reads_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (tree, img, store) = ext4_snapshot(dir.path());
    let mut m = Mount::start(
        dir.path(),
        &store,
        &dir.path().join("cache"),
        &[],
        "vol.img",
    );
    let mounted = m.mountpoint.join("vol.img");

    // Attributes: size, read-only mode, st_blocks ~ stored data.
    let md = std::fs::metadata(&mounted).unwrap();
    assert_eq!(md.len(), std::fs::metadata(&img).unwrap().len());
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(md.permissions().mode() & 0o777, 0o444);
    assert!(
        md.blocks() > 0 && md.blocks() * 512 < md.len() / 2,
        "st_blocks {}",
        md.blocks()
    );
    // Writes are refused.
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(&mounted)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    assert_eq!(sha256(&mounted), sha256(&img));

    loop_mount_matches(&mut m, &mounted, &tree, dir.path(), "ext4_image_reads_back");

    // cp --sparse=always keeps the holes: the copy takes about the stored
    // (uncompressed, non-hole) bytes, far less than the volume.
    let copy = dir.path().join("copy.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&mounted)
        .arg(&copy));
    assert_eq!(sha256(&copy), sha256(&img));
    let copy_bytes = std::fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(
        copy_bytes <= md.blocks() * 512 + (1 << 20),
        "copy takes {copy_bytes}, stored {}",
        md.blocks() * 512
    );

    let s = m.stats();
    assert!(s["metrics"]["reads"].as_u64().unwrap() > 0);
    assert!(s["metrics"]["hole_blocks"].as_u64().unwrap() > 0);
    assert_eq!(s["metrics"]["read_errors"], 0);
    let status = m.stop();
    assert!(status.success(), "exit {status}: {}", m.log_text());
}

/// A first mount from a remote-like store (20 ms per GET) of an ext4
/// snapshot nobody traced: the index carries the stored bytes of the
/// metadata's first blocks (inline), the mount decodes them into its cache
/// with no GET, and a loop mount and a full diff of the tree read the right
/// bytes through them.
#[test]
fn a_first_mount_takes_ext4s_first_blocks_from_the_index() {
    if !common::fuse_available("a_first_mount_takes_ext4s_first_blocks_from_the_index") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (tree, img, store) = ext4_snapshot(dir.path());
    let out = run(Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--store", &store, "inspect", "vol", "--json"]));
    let ix: serde_json::Value = serde_json::from_str(&out).unwrap();
    let inline = ix["inline_blocks"].as_u64().unwrap();
    assert!(
        inline > 0 && ix["located_blocks"].as_u64().unwrap() >= inline,
        "{ix}"
    );
    let mut m = Mount::start(
        dir.path(),
        &store,
        &dir.path().join("cache"),
        &["--inject-latency", "20ms"],
        "vol.img",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while m.stats()["metrics"]["inline_blocks"].as_u64() != Some(inline) {
        assert!(std::time::Instant::now() < deadline, "{}", m.stats());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mounted = m.mountpoint.join("vol.img");
    loop_mount_matches(
        &mut m,
        &mounted,
        &tree,
        dir.path(),
        "a_first_mount_takes_ext4s_first_blocks",
    );
    assert_eq!(sha256(&mounted), sha256(&img));
    let s = m.stats();
    assert_eq!(s["metrics"]["read_errors"], 0);
    assert_eq!(s["metrics"]["checksum_errors"], 0);
    let status = m.stop();
    assert!(status.success(), "exit {status}: {}", m.log_text());
}

#[test]
fn seek_data_and_hole_follow_the_manifest() {
    if !common::fuse_available("seek_data_and_hole") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * 1024;
    // Blocks: 0-1 data, 2-4 hole, 5 data, 6.. hole, last block data (partial).
    let mut vol = vec![0u8; 20 * bs + 1000];
    vol[..2 * bs].copy_from_slice(&common::random_bytes(1, 2 * bs));
    vol[5 * bs + 7] = 1;
    let n = vol.len();
    vol[n - 10] = 9;
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let m = Mount::start(dir.path(), &store, &dir.path().join("cache"), &[], "v.img");
    let f = std::fs::File::open(m.mountpoint.join("v.img")).unwrap();
    let seek = |off: i64, whence: i32| -> i64 {
        use nix::unistd::Whence;
        let w = match whence {
            libc::SEEK_DATA => Whence::SeekData,
            libc::SEEK_HOLE => Whence::SeekHole,
            _ => unreachable!("the test seeks for data and holes only"),
        };
        // ENXIO (no data or hole past the offset) reads as -1, as lseek(2).
        nix::unistd::lseek(&f, off, w).unwrap_or(-1)
    };
    let b = bs as i64;
    assert_eq!(seek(0, libc::SEEK_DATA), 0);
    assert_eq!(seek(0, libc::SEEK_HOLE), 2 * b);
    assert_eq!(seek(2 * b + 5, libc::SEEK_DATA), 5 * b);
    assert_eq!(seek(5 * b, libc::SEEK_HOLE), 6 * b);
    assert_eq!(seek(6 * b, libc::SEEK_DATA), 20 * b);
    assert_eq!(seek(20 * b, libc::SEEK_HOLE), n as i64);
    assert_eq!(seek(n as i64 + 1, libc::SEEK_DATA), -1);
    // qemu-img sees the same layout.
    if common::which("qemu-img") {
        let map = run(Command::new("qemu-img")
            .args(["map", "--output=json", "-f", "raw"])
            .arg(m.mountpoint.join("v.img")));
        let extents: serde_json::Value = serde_json::from_str(&map).unwrap();
        let data: Vec<(u64, u64)> = extents
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"] == true)
            .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            data,
            vec![
                (0, 2 * bs as u64),
                (5 * bs as u64, bs as u64),
                (20 * bs as u64, 1000)
            ],
            "{map}"
        );
    }
    drop(f);
}

#[test]
fn concurrent_random_reads_get_correct_bytes() {
    if !common::fuse_available("concurrent_random_reads") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = common::mixed_volume(128 * 1024, 160, 4321, 5);
    let store = snapshot_v(dir.path(), &vol, "128KiB");
    let m = Mount::start(dir.path(), &store, &dir.path().join("cache"), &[], "v.img");
    let path = m.mountpoint.join("v.img");
    let vol = std::sync::Arc::new(vol);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (vol, path) = (vol.clone(), path.clone());
            std::thread::spawn(move || {
                let f = std::fs::File::open(&path).unwrap();
                let mut seed = 0x9e3779b97f4a7c15u64 ^ t;
                for _ in 0..200 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let off = seed % vol.len() as u64;
                    let len = (seed >> 40) as usize % 300_000 + 1;
                    let mut buf = vec![0u8; len];
                    let n = f.read_at(&mut buf, off).unwrap();
                    let end = (off as usize + len).min(vol.len());
                    assert_eq!(n, end - off as usize);
                    assert!(
                        buf[..n] == vol[off as usize..end],
                        "thread {t} bytes differ at {off}+{len}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = m.stats();
    // Each stored block fetched at most once however many readers wanted it.
    let stored = s["metrics"]["blocks_fetched"].as_u64().unwrap();
    assert!(
        stored <= 120,
        "{stored} blocks fetched for 120 distinct stored blocks"
    );
}

#[test]
fn remount_reuses_the_cache_and_drops_a_corrupted_cache_file() {
    if !common::fuse_available("remount_reuses_the_cache") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = common::mixed_volume(64 * 1024, 64, 0, 8);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let cache = dir.path().join("cache");
    let read_all = |m: &Mount| {
        let mut data = Vec::new();
        std::fs::File::open(m.mountpoint.join("v.img"))
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert!(data == vol, "bytes differ");
    };
    let mut m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    read_all(&m);
    assert!(m.stats()["metrics"]["fetches"].as_u64().unwrap() > 0);
    // Background cache writes land (the writer has handled every fetched
    // block), then stop.
    m.wait_cache_written();
    assert!(m.stop().success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Second mount, same cache: a full read makes no fetch at all.
    let mut m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    read_all(&m);
    let s = m.stats();
    assert_eq!(s["metrics"]["fetches"], 0, "{s}");
    assert!(s["metrics"]["disk_hits"].as_u64().unwrap() > 0);
    // The sequential reader had its next blocks' cache files read ahead
    // into the page cache.
    assert!(
        s["metrics"]["disk_readahead_blocks"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(m.stop().success());

    // Corrupt one cached block: it is dropped, refetched, and served right.
    let victim = walk_files(&cache.join("segments"))
        .into_iter()
        .next()
        .expect("a segment file");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut bytes = std::fs::read(&victim).unwrap();
    // In the first record's block (its header takes the first 4 KiB page).
    bytes[4096 + 100] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    read_all(&m);
    let s = m.stats();
    assert_eq!(s["metrics"]["cache_corrupt"], 1, "{s}");
    assert_eq!(s["metrics"]["blocks_fetched"], 1, "{s}");
}

#[test]
fn corrupted_store_object_gives_eio_never_wrong_bytes() {
    if !common::fuse_available("corrupted_store_object") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * 1024;
    let vol = common::random_bytes(12, 32 * bs);
    let store_dir = dir.path().join("store");
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    // Random data is stored raw: byte k of block b sits at offset b*bs + k
    // of the first object (blocks are packed in order).
    let objects = walk_files(&store_dir.join("data"));
    let first = objects
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() as usize >= 8 * bs)
        .unwrap();
    let mut obj = std::fs::read(first).unwrap();
    // Find which block the object starts with and corrupt its 4th block.
    let start_block = (0..32)
        .find(|b| obj[..64] == vol[b * bs..b * bs + 64])
        .expect("object holds raw blocks");
    let bad_block = start_block + 3;
    obj[3 * bs + 500] ^= 0x01;
    std::fs::write(first, &obj).unwrap();

    let m = Mount::start(dir.path(), &store, &dir.path().join("cache"), &[], "v.img");
    let f = std::fs::File::open(m.mountpoint.join("v.img")).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = f
        .read_at(&mut buf, (bad_block * bs + 4096) as u64)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Neighbours are fine.
    let n = f.read_at(&mut buf, ((bad_block + 1) * bs) as u64).unwrap();
    assert!(buf[..n] == vol[(bad_block + 1) * bs..(bad_block + 1) * bs + n]);
    drop(f);
    assert!(
        m.log_text().contains(&format!("block {bad_block}")),
        "{}",
        m.log_text()
    );
    // verify names exactly that block.
    let o = Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--store", &store, "verify", "v"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("BAD block {bad_block} ")) && out.contains("1 bad"),
        "{out}"
    );
}

#[test]
fn mount_refuses_bad_mountpoints_clearly() {
    if !common::fuse_available("mount_refuses_bad_mountpoints") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    for (mp, want) in [("missing", "No such file"), ("file", "not a directory")] {
        if mp == "file" {
            std::fs::write(dir.path().join("file"), b"x").unwrap();
        }
        let o = Command::new(common::bin())
            .current_dir(dir.path())
            .args(["--store", &store, "mount"])
            .arg(dir.path().join(mp))
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && t.contains(want), "{mp}: {t}");
    }
    // A busy mountpoint: something is mounted there already.
    let img = dir.path().join("v.img");
    common::write(&img, &common::random_bytes(1, 1 << 20));
    create(dir.path(), &store, "v", &img, "64KiB");
    let m = Mount::start(dir.path(), &store, &dir.path().join("cache"), &[], "v.img");
    let o = Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--store", &store, "mount"])
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && t.contains("busy"), "{t}");
    // An external unmount ends the mount process cleanly.
    let mut m = m;
    run(Command::new("fusermount3").arg("-u").arg(&m.mountpoint));
    let mut child = m.child.take().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mount did not exit after fusermount3 -u"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(st.success(), "{}", m.log_text());
}

fn walk_files(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk_files(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    if !common::fuse_available("metrics_endpoint") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = common::random_bytes(4, 1 << 20);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    // Port 0: the mount binds a free port and reports it (no pick-and-
    // release race with other tests).
    let m = Mount::start(
        dir.path(),
        &store,
        &dir.path().join("cache"),
        &["--metrics", "127.0.0.1:0"],
        "v.img",
    );
    let addr = m.stats()["metrics_addr"]
        .as_str()
        .expect("the mount reports where its metrics listen")
        .to_string();
    assert!(!addr.ends_with(":0"), "{addr}");
    // Starting the mount read only the index: no manifest page yet.
    assert_eq!(m.stats()["snapshots"][0]["pages_fetched"], 0);
    let mut data = Vec::new();
    std::fs::File::open(m.mountpoint.join("v.img"))
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert!(data == vol);
    let get = |path: &str| {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let text = get("/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(&format!("snapahead_bytes_served_total {}\n", vol.len())),
        "{text}"
    );
    assert!(
        text.contains("snapahead_blocks_fetched_total 16\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE snapahead_fetch_latency_seconds histogram"));
    assert!(
        text.contains("snapahead_cache_memory_entries 16\n"),
        "{text}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn record_traces_uploads_the_sessions_demand_reads() {
    if !common::fuse_available("record_traces") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * 1024;
    let vol = common::random_bytes(21, 64 * bs);
    let store_dir = dir.path().join("store");
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let mut m = Mount::start(
        dir.path(),
        &store,
        &dir.path().join("cache"),
        &["--record-traces"],
        "v.img",
    );
    let f = std::fs::File::open(m.mountpoint.join("v.img")).unwrap();
    let reads = [
        (0u64, 4096usize),
        (10 * bs as u64 + 100, 5000),
        (40 * bs as u64, bs),
    ];
    for (off, len) in reads {
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off).unwrap();
        assert!(buf[..n] == vol[off as usize..off as usize + n]);
    }
    drop(f);
    assert!(m.stop().success(), "{}", m.log_text());

    let traces = walk_files(&store_dir.join("traces").join("v"));
    assert_eq!(traces.len(), 1, "{traces:?}");
    let name = traces[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with(".trace") && name.contains('-'), "{name}");
    let r = snapahead::trace::open(&traces[0]).unwrap();
    assert_eq!(r.header.volume, "v");
    assert_eq!(r.header.source, "mount");
    assert_eq!(r.header.volume_size, vol.len() as u64);
    let records: Vec<snapahead::trace::Record> = r.map(|x| x.unwrap()).collect();
    assert!(records.iter().all(|r| r.op == snapahead::trace::Op::Read));
    for (off, len) in reads {
        assert!(
            records
                .iter()
                .any(|r| r.offset <= off && r.offset + r.len as u64 >= off + len as u64),
            "read {off}+{len} not in {records:?}"
        );
    }
}

#[test]
fn kill_9_during_heavy_prefetch_never_serves_a_torn_cache_block() {
    if !common::fuse_available("kill_9_during_prefetch") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * 1024;
    let vol = common::random_bytes(33, 512 * bs);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let cache = dir.path().join("cache");
    // A sequential reader makes the prefetcher read ahead hard; kill -9 the
    // mount in the middle of it (cache files being written).
    let mut m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    let mut f = std::fs::File::open(m.mountpoint.join("v.img")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..8 {
        f.read_exact(&mut buf).unwrap();
    }
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(f);
    drop(m); // lazily unmounts the dead mount
    assert!(!common::is_mounted(&dir.path().join("mnt")));
    // Whatever the cache holds now, a remount serves the right bytes.
    let m = Mount::start(dir.path(), &store, &cache, &["--no-prefetch"], "v.img");
    let mut data = Vec::new();
    std::fs::File::open(m.mountpoint.join("v.img"))
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert!(data == vol, "wrong bytes after kill -9 and remount");
    let s = m.stats();
    assert!(
        s["metrics"]["disk_hits"].as_u64().unwrap() > 0,
        "the cache was not reused: {s}"
    );
    assert_eq!(s["metrics"]["read_errors"], 0);
}

#[test]
fn a_tiny_cache_and_a_full_cache_filesystem_keep_serving() {
    if !common::fuse_available("tiny_and_full_cache") {
        return;
    }
    if !common::is_root() {
        common::skip("tiny_and_full_cache", "needs root (tmpfs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * 1024;
    let vol = common::random_bytes(44, 128 * bs);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let read_twice = |m: &Mount| {
        for _ in 0..2 {
            let mut data = Vec::new();
            std::fs::File::open(m.mountpoint.join("v.img"))
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            assert!(data == vol, "bytes differ");
        }
    };

    // (1) A disk tier of 256 KiB for an 8 MiB working set: constant eviction.
    let small = dir.path().join("small");
    let m = Mount::start(
        dir.path(),
        &store,
        &small,
        &["--cache-size", "256KiB"],
        "v.img",
    );
    read_twice(&m);
    let s = m.stats();
    assert_eq!(s["metrics"]["read_errors"], 0, "{s}");
    assert!(
        s["metrics"]["cache"]["disk_bytes"].as_u64().unwrap() <= 256 * 1024,
        "{s}"
    );
    drop(m);

    // (2) The cache directory on a 1 MiB tmpfs, bound far larger: writes hit
    // ENOSPC, readers never see an error.
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&full));
    let _u = Umount(full.clone());
    let m = Mount::start(
        dir.path(),
        &store,
        &full.join("c"),
        &["--cache-size", "1GiB"],
        "v.img",
    );
    read_twice(&m);
    let s = m.wait_for("the tmpfs fills (cache write errors)", |s| {
        s["metrics"]["cache_write_errors"].as_u64().unwrap() > 0
    });
    assert_eq!(s["metrics"]["read_errors"], 0, "{s}");
}

/// Two mounts on one cache directory: the second is refused with a message
/// naming the directory, the first keeps serving, and once it is gone the
/// directory can be used again.
#[test]
fn a_second_mount_on_the_same_cache_directory_is_refused() {
    if !common::fuse_available("same_cache_dir") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = common::random_bytes(12, 1 << 20);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let cache = dir.path().join("cache");
    let m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    let other = dir.path().join("mnt2");
    std::fs::create_dir_all(&other).unwrap();
    let o = Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--store", &store, "mount"])
        .arg(&other)
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "second mount started: {err}");
    assert!(
        err.contains("in use by another snapahead process") && err.contains("cache"),
        "{err}"
    );
    assert!(
        !common::is_mounted(&other),
        "nothing mounted at the second mountpoint"
    );
    assert!(std::fs::read(m.mountpoint.join("v.img")).unwrap() == vol);
    let mut m = m;
    assert!(m.stop().success());
    let m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    assert!(std::fs::read(m.mountpoint.join("v.img")).unwrap() == vol);
}

/// `kill -9` of a mount leaves a dead FUSE mount ("Transport endpoint is
/// not connected"); starting the mount again detaches it and serves at
/// once, mounted once, with the disk cache it had (no block fetched again).
#[test]
fn a_restart_after_kill_9_detaches_the_dead_mount_and_keeps_the_cache() {
    if !common::fuse_available("restart_after_kill_9") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = common::mixed_volume(64 * 1024, 48, 0, 21);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let cache = dir.path().join("cache");
    let mut m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    let entry = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == m.mountpoint.to_str())
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    assert!(
        entry.starts_with("snapahead ")
            && (entry.ends_with(" fuse") || entry.ends_with(" fuse.snapahead")),
        "how a snapahead mount shows in /proc/mounts: {entry:?}"
    );
    assert!(std::fs::read(m.mountpoint.join("v.img")).unwrap() == vol);
    m.wait_cache_written();
    let mut child = m.child.take().unwrap();
    child.kill().unwrap(); // SIGKILL: no unmount, no flush
    child.wait().unwrap();
    // Dead: a listing (which the kernel cannot answer from its caches)
    // fails with ENOTCONN.
    let dead = std::fs::read_dir(&m.mountpoint)
        .and_then(|mut d| d.next().transpose())
        .unwrap_err();
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN), "{dead}");
    // Not dropped: its drop would detach the dead mount, and the restart
    // must do that itself (the second Mount cleans up the same mountpoint).
    std::mem::forget(m);
    let started = std::time::Instant::now();
    // The kernel still has v.img's entry cached from the dead mount, so
    // Mount::start's "the file is there" proves nothing: wait until the
    // mountpoint answers a listing that holds v.img, which only a live
    // server does (between the dead mount's detach and the new mount, the
    // bare directory answers an empty listing: a fresh-clone CI run read
    // v.img there and found nothing).
    let mut m = Mount::start(dir.path(), &store, &cache, &[], "v.img");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lists_v_img = |p: &std::path::Path| {
        std::fs::read_dir(p).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name() == std::ffi::OsStr::new("v.img"))
        })
    };
    while !lists_v_img(&m.mountpoint) {
        if let Some(Ok(Some(st))) = m.child.as_mut().map(|c| c.try_wait()) {
            panic!("the restarted mount exited ({st}): {}", m.log_text());
        }
        assert!(std::time::Instant::now() < deadline, "{}", m.log_text());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::fs::read(m.mountpoint.join("v.img")).unwrap() == vol);
    let ready = started.elapsed();
    assert!(
        m.log_text().contains("dead snapahead mount"),
        "{}",
        m.log_text()
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let here = mounts
        .lines()
        .filter(|l| l.split(' ').nth(1) == m.mountpoint.to_str())
        .count();
    assert_eq!(here, 1, "mounted once: {mounts}");
    let s = m.stats();
    assert_eq!(
        s["metrics"]["fetches"], 0,
        "cached blocks fetched again: {s}"
    );
    eprintln!("restart after kill -9: serving in {ready:?}");
}

/// A snapshot whose index is damaged in the store: a mount of every
/// snapshot serves the healthy ones and counts the bad one; naming the bad
/// one, or having no healthy one, fails without mounting.
#[test]
fn a_damaged_index_costs_only_its_own_snapshot() {
    if !common::fuse_available("damaged_index") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vol = common::random_bytes(31, 1 << 20);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    create(
        dir.path(),
        &store,
        "bad",
        &dir.path().join("v.img"),
        "64KiB",
    );
    let index = dir.path().join("store/snapshots/bad/index");
    assert!(index.exists(), "index layout changed: {}", index.display());
    std::fs::write(&index, b"not an index").unwrap();
    let mut m = Mount::start(dir.path(), &store, &dir.path().join("cache"), &[], "v.img");
    assert!(std::fs::read(m.mountpoint.join("v.img")).unwrap() == vol);
    assert!(!m.mountpoint.join("bad.img").exists());
    let s = m.stats();
    assert_eq!(s["metrics"]["snapshots_unreadable"], 1, "{s}");
    assert!(
        m.log_text().contains("\"bad\" is not served"),
        "{}",
        m.log_text()
    );
    assert!(m.stop().success());
    let mount_fails = |extra: &[&str], want: &str| {
        let o = Command::new(common::bin())
            .current_dir(dir.path())
            .args(["--store", &store, "mount"])
            .arg(dir.path().join("mnt"))
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} mounted: {err}");
        assert!(err.contains(want), "{extra:?}: want {want:?} in {err}");
        assert!(!common::is_mounted(&dir.path().join("mnt")));
    };
    mount_fails(&["--snapshot", "bad"], "bad");
    std::fs::write(dir.path().join("store/snapshots/v/index"), b"junk").unwrap();
    mount_fails(&[], "no snapshot in");
}

/// `mount -t fuse.snapahead` and an fstab line, through the mount(8)
/// helper installed where mount looks for it; `umount` ends the mount.
#[test]
fn mount_t_fuse_snapahead_and_fstab_lines_work() {
    let test = "mount_t_fuse_snapahead";
    if !common::fuse_available(test) {
        return;
    }
    if !common::is_root() {
        common::skip(test, "installing /sbin/mount.fuse.snapahead needs root");
        return;
    }
    let helper = Path::new("/sbin/mount.fuse.snapahead");
    struct Remove<'a>(&'a Path, bool);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::fs::remove_file(self.0);
            }
        }
    }
    let ours = !helper.exists();
    if ours {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mount-fuse-snapahead"), helper).unwrap();
    }
    let _remove = Remove(helper, ours);
    let dir = tempfile::tempdir().unwrap();
    let vol = common::random_bytes(44, 1 << 20);
    let store = snapshot_v(dir.path(), &vol, "64KiB");
    let mnt = dir.path().join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    let _u = Umount(mnt.clone());
    let opts = format!(
        "ro,nofail,cache_dir={},log={}",
        dir.path().join("cache").display(),
        dir.path().join("mount.log").display()
    );
    let umount_and_wait = |m: &Path| {
        run(Command::new("umount").arg(m));
        assert!(!common::is_mounted(m), "still mounted after umount");
    };
    // mount -t: returns once mounted, the mount runs on in the background.
    run(Command::new("mount")
        .args(["-t", "fuse.snapahead", &store])
        .arg(&mnt)
        .args(["-o", &opts]));
    assert!(common::is_mounted(&mnt));
    assert!(std::fs::read(mnt.join("v.img")).unwrap() == vol);
    umount_and_wait(&mnt);
    // An fstab line (a private fstab via -T): `mount MOUNTPOINT`.
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{store} {} fuse.snapahead {opts},_netdev 0 0\n",
            mnt.display()
        ),
    )
    .unwrap();
    run(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    assert!(std::fs::read(mnt.join("v.img")).unwrap() == vol);
    umount_and_wait(&mnt);
    // A bad option fails the mount, naming it; nothing is mounted.
    let o = Command::new("mount")
        .args(["-t", "fuse.snapahead", &store])
        .arg(&mnt)
        .args(["-o", "ro,colour=red"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("colour=red"),
        "{o:?}"
    );
    assert!(!common::is_mounted(&mnt));
    let log = std::fs::read_to_string(dir.path().join("mount.log")).unwrap_or_default();
    assert!(
        log.contains("unmounted externally") || log.contains("unmounted"),
        "{log}"
    );
}
