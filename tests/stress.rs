//! 16 concurrent readers against one mount, sequential and random mixed,
//! on the raw image and on files of the ext4 filesystem loop-mounted from
//! it, with a small disk cache (eviction and refetch all the time) and a
//! store that adds latency to every GET. Every byte read is compared with
//! the source; the mount's file descriptors and RSS are sampled and must
//! stay bounded (the peaks are printed).
//!
//! `make test` runs it for a few seconds; `make stress` for 60 s
//! (`SNAPAHEAD_STRESS_SECS`).

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run, Mount};

const READERS: usize = 16;
/// Bounds the mount must stay within while 16 readers hammer it. The
/// caches are 16 MiB (memory) and 8 MiB (disk); the rest is buffers in
/// flight and what the allocator keeps. Measured over 60 s on 2 cores:
/// ~100 MiB, flat, since the binary limits glibc to two malloc arenas
/// (near 250 MiB and still creeping with glibc's default); the bound
/// leaves 2× margin and catches a return of the creep or a leak.
const MAX_FDS: u64 = 256;
const MAX_RSS_KIB: u64 = 256 * 1024;

/// A tiny deterministic generator (no shared state between readers).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
}

fn proc_sample(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds)
}

/// Drops a file's clean pages from the page cache, so the next read of it
/// goes to the mount again.
fn evict(f: &File) {
    // Advice only: a failure leaves pages cached, which the test tolerates.
    let _ = nix::fcntl::posix_fadvise(f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

#[test]
fn sixteen_mixed_readers_get_correct_bytes_with_bounded_fds_and_rss() {
    let test = "sixteen_mixed_readers";
    if !common::fuse_available(test) || !common::loop_available(test) {
        return;
    }
    let secs: u64 = std::env::var("SNAPAHEAD_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    // The volume: 48 files of 1 MiB random bytes in an ext4 image.
    let tree = dir.path().join("tree");
    let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    for i in 0..48u64 {
        let rel = PathBuf::from(format!("d{}/f{i}", i % 6));
        std::fs::create_dir_all(tree.join(&rel).parent().unwrap()).unwrap();
        let data = common::random_bytes(500 + i, 1 << 20);
        std::fs::write(tree.join(&rel), &data).unwrap();
        files.insert(rel, data);
    }
    let img = dir.path().join("vol.img");
    run(Command::new("truncate").args(["-s", "96M"]).arg(&img));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img));
    let source = Arc::new(std::fs::read(&img).unwrap());
    let store = format!("file://{}", dir.path().join("store").display());
    run(Command::new(common::bin())
        .current_dir(dir.path())
        .args(["--store", &store, "create", "vol", "--block-size", "128KiB"])
        .arg("--source")
        .arg(&img));

    // Both cache tiers smaller than the 48 MiB of data: eviction and
    // refetch all the time.
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        "cache: { memory: 16MiB }\n",
    )
    .unwrap();
    let mut m = Mount::start(
        dir.path(),
        &store,
        &dir.path().join("cache"),
        &["--inject-latency", "2ms", "--cache-size", "8MiB"],
        "vol.img",
    );
    let pid = m.child.as_ref().map(|c| c.id()).unwrap();
    let raw = m.mountpoint.join("vol.img");
    let lo = dir.path().join("lo");
    m.loop_mount(&raw, &lo);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let files = Arc::new(files);
    let names: Arc<Vec<PathBuf>> = Arc::new(files.keys().cloned().collect());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut threads = Vec::new();
    for r in 0..READERS {
        let (stop, reads, bytes) = (stop.clone(), reads.clone(), bytes.clone());
        let (source, files, names) = (source.clone(), files.clone(), names.clone());
        let (raw, lo) = (raw.clone(), lo.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Lcg(r as u64 * 7919 + 1);
            let direct = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&raw)
                .expect("open the raw image");
            let size = source.len() as u64;
            let mut seq_off = ((r as u64 * 13) << 20) % size;
            while !stop.load(Relaxed) && Instant::now() < deadline {
                let (what, got, want): (String, Vec<u8>, &[u8]) = match r % 4 {
                    // Raw image, random 4 KiB..256 KiB, O_DIRECT.
                    0 => {
                        let len = 4096 * (1 + rng.next() % 64) as usize;
                        let off = (rng.next() % (size - len as u64)) / 4096 * 4096;
                        let mut b = vec![0u8; len];
                        direct.read_exact_at(&mut b, off).expect("raw random read");
                        let o = off as usize;
                        (format!("raw {off}+{len}"), b, &source[o..o + len])
                    }
                    // Raw image, sequential 1 MiB sweeps, O_DIRECT.
                    1 => {
                        let len = (1usize << 20).min((size - seq_off) as usize);
                        let mut b = vec![0u8; len];
                        direct
                            .read_exact_at(&mut b, seq_off)
                            .expect("raw sequential read");
                        let o = seq_off as usize;
                        seq_off = (seq_off + len as u64) % size;
                        (format!("raw {o}+{len}"), b, &source[o..o + len])
                    }
                    // A whole file of the loop-mounted ext4, then its pages dropped.
                    2 => {
                        let name = &names[rng.next() as usize % names.len()];
                        let p = lo.join(name);
                        let b = std::fs::read(&p).expect("read a file");
                        if let Ok(f) = File::open(&p) {
                            evict(&f);
                        }
                        (p.display().to_string(), b, &files[name][..])
                    }
                    // Random 4 KiB reads inside files of the ext4.
                    _ => {
                        let name = &names[rng.next() as usize % names.len()];
                        let p = lo.join(name);
                        let f = File::open(&p).expect("open a file");
                        let off = (rng.next() % ((1 << 20) - 4096)) as usize;
                        let mut b = vec![0u8; 4096];
                        f.read_exact_at(&mut b, off as u64).expect("pread a file");
                        evict(&f);
                        (
                            format!("{}@{off}", p.display()),
                            b,
                            &files[name][off..off + 4096],
                        )
                    }
                };
                if got != want {
                    stop.store(true, Relaxed);
                    panic!("reader {r}: wrong bytes at {what}");
                }
                reads.fetch_add(1, Relaxed);
                bytes.fetch_add(got.len() as u64, Relaxed);
            }
        }));
    }
    // Sample the mount, and keep dropping the image's pages so that reads
    // through the loop device reach the mount.
    let (mut peak_rss, mut peak_fds) = (0u64, 0u64);
    let raw_file = File::open(&raw).unwrap();
    let start = Instant::now();
    // RSS at each tenth of the run: a plateau, not a climb.
    let mut timeline = Vec::new();
    while Instant::now() < deadline && !stop.load(Relaxed) {
        let (rss, fds) = proc_sample(pid);
        peak_rss = peak_rss.max(rss);
        peak_fds = peak_fds.max(fds);
        if start.elapsed().as_millis() as u64 >= (timeline.len() as u64 + 1) * secs * 100 {
            timeline.push(rss / 1024);
        }
        evict(&raw_file);
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in threads {
        t.join().expect("a reader failed");
    }
    let n = reads.load(Relaxed);
    let mb = bytes.load(Relaxed) as f64 / 1e6;
    eprintln!(
        "stress: {READERS} readers, {secs} s: {n} reads, {mb:.0} MB ({:.0} MB/s), all correct; \
         mount peak RSS {} MiB, peak fds {peak_fds}",
        mb / secs as f64,
        peak_rss / 1024
    );
    eprintln!("stress: mount RSS (MiB) at each tenth of the run: {timeline:?}");
    assert!(
        n > READERS as u64 * 10,
        "too few reads to mean anything: {n}"
    );
    assert!(peak_fds <= MAX_FDS, "peak fds {peak_fds}");
    assert!(peak_rss <= MAX_RSS_KIB, "peak RSS {peak_rss} KiB");
    drop(raw_file);
    m.loop_unmount(&lo);
    assert_eq!(common::sha256(&raw), common::sha256(&img));
    let st = m.stop();
    assert!(st.success(), "{st}: {}", m.log_text());
    assert!(!m.log_text().contains("ERROR"), "{}", m.log_text());
}
