//! `snapahead monitor` on a real loop-mounted ext4 image: the trace holds
//! the writes and reads at the extents of the files written and read, as
//! `debugfs` reports them, and the image stays a clean filesystem.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::run;
use snapahead::trace::{self, Op, Record};

/// Byte ranges of a file's blocks in the image (via debugfs).
fn extents(img: &Path, file: &str) -> Vec<(u64, u64)> {
    let dump = run(Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .stderr(Stdio::null()));
    let bs: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("block size");
    let out = run(Command::new("debugfs")
        .args(["-R", &format!("blocks {file}")])
        .arg(img)
        .stderr(Stdio::null()));
    let blocks: Vec<u64> = out
        .split_whitespace()
        .filter_map(|b| b.parse().ok())
        .collect();
    assert!(!blocks.is_empty(), "no blocks for {file}");
    blocks.iter().map(|b| (b * bs, (b + 1) * bs)).collect()
}

fn covered(records: &[Record], op: Op, (start, end): (u64, u64)) -> bool {
    records
        .iter()
        .any(|r| r.op == op && r.offset <= start && r.offset + r.len as u64 >= end)
}

#[test]
fn monitor_records_reads_and_writes_at_the_files_extents() {
    if !common::fuse_available("monitor_records") || !common::loop_available("monitor_records") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tree")).unwrap();
    let pre = common::random_bytes(1, 2 << 20);
    std::fs::write(d.join("tree/pre.bin"), &pre).unwrap();
    let img = d.join("vol.img");
    run(Command::new("truncate").args(["-s", "64M"]).arg(&img));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(d.join("tree"))
        .arg(&img));
    let mnt = d.join("mnt");
    let lo = d.join("lo");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&lo).unwrap();
    let trace_path = d.join("t.trace");

    let log = d.join("monitor.log");
    let mut child = Command::new(common::bin())
        .arg("monitor")
        .arg(&img)
        .arg(&mnt)
        .arg("--trace")
        .arg(&trace_path)
        .current_dir(d)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Cleanup<'a>(&'a Path, &'a Path, u32);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount")
                .arg(self.0)
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("kill")
                .args(["-TERM", &self.2.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(300));
            if common::is_mounted(self.1) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(self.1)
                    .status();
            }
        }
    }
    let _cleanup = Cleanup(&lo, &mnt, child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mnt.join("vol.img").exists() {
        assert!(
            Instant::now() < deadline,
            "monitor did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Write a new file, then (after a fresh loop mount, so nothing is
    // cached) read the old one.
    let new = common::random_bytes(2, 1 << 20);
    run(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(mnt.join("vol.img"))
        .arg(&lo));
    std::fs::write(lo.join("new.bin"), &new).unwrap();
    run(Command::new("umount").arg(&lo));
    run(Command::new("mount")
        .arg("-o")
        .arg("loop,ro")
        .arg(mnt.join("vol.img"))
        .arg(&lo));
    assert!(std::fs::read(lo.join("pre.bin")).unwrap() == pre);
    run(Command::new("umount").arg(&lo));

    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "monitor did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!common::is_mounted(&mnt));

    let reader = trace::open(&trace_path).unwrap();
    assert_eq!(reader.header.volume_size, 64 << 20);
    assert_eq!(reader.header.source, "monitor");
    let records: Vec<Record> = reader.map(|r| r.unwrap()).collect();
    for e in extents(&img, "/new.bin") {
        assert!(covered(&records, Op::Write, e), "no write covers {e:?}");
    }
    for e in extents(&img, "/pre.bin") {
        assert!(covered(&records, Op::Read, e), "no read covers {e:?}");
    }
    // The passthrough wrote the right bytes: a clean fs holding the file.
    run(Command::new("fsck.ext4").arg("-fn").arg(&img));
    let out = d.join("new.out");
    run(Command::new("debugfs")
        .args(["-R", &format!("dump /new.bin {}", out.display())])
        .arg(&img)
        .stderr(Stdio::null()));
    assert!(std::fs::read(&out).unwrap() == new);
}
