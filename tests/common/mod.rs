//! Helpers shared by the integration tests: deterministic test volumes.
#![allow(dead_code)]

use std::path::Path;

use rand::{RngCore, SeedableRng};

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// A volume of `blocks` blocks of `bs` bytes plus a partial tail of `tail`
/// bytes, mixing what real disks hold: random (incompressible) blocks, zero
/// blocks (holes), one block repeated many times, and compressible text.
pub fn mixed_volume(bs: usize, blocks: usize, tail: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(bs * blocks + tail);
    let repeated = random_bytes(seed ^ 0xabcd, bs);
    for i in 0..blocks {
        match i % 8 {
            0..=2 => v.extend(random_bytes(seed + i as u64, bs)),
            3 | 4 => v.extend(std::iter::repeat_n(0u8, bs)),
            5 => v.extend_from_slice(&repeated),
            _ => {
                let line = format!("line {i} of a compressible text block, seed {seed}\n");
                v.extend(line.bytes().cycle().take(bs));
            }
        }
    }
    v.extend(random_bytes(seed + 999_999, tail));
    v
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write test volume");
}

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_snapahead")
}

/// Whether FUSE mounts can run here; prints why a test skips when not.
pub fn fuse_available(test: &str) -> bool {
    let ok = Path::new("/dev/fuse").exists() && which("fusermount3");
    if !ok {
        skip(test, "/dev/fuse or fusermount3 missing");
    }
    ok
}

/// A test that cannot run here says so and passes, on a developer's
/// machine. In CI (`CI` set to anything but `false`/`0`) the device or
/// server is part of the job: a missing one fails the run instead of
/// letting every test that needs it pass without running.
pub fn skip(test: &str, why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test}: {why}, and CI is set: CI must provide it");
    eprintln!("SKIPPED {test}: {why}");
}

/// The S3 server `make test` starts (Garage), as (endpoint, bucket) from
/// the environment `scripts/garage.sh env` prints; prints why a test skips
/// when it is not there.
pub fn s3_server(test: &str) -> Option<(String, String)> {
    match (
        std::env::var("SNAPAHEAD_S3_ENDPOINT"),
        std::env::var("SNAPAHEAD_S3_BUCKET"),
    ) {
        (Ok(endpoint), Ok(bucket)) => Some((endpoint, bucket)),
        _ => {
            skip(
                test,
                "no S3 server (run `scripts/garage.sh start` and source `scripts/garage.sh env`)",
            );
            None
        }
    }
}

/// Whether loop devices can be used (root and /dev/loop-control).
pub fn loop_available(test: &str) -> bool {
    let ok = is_root() && Path::new("/dev/loop-control").exists();
    if !ok {
        skip(test, "loop mounts need root and /dev/loop-control");
    }
    ok
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn is_mounted(p: &Path) -> bool {
    let p = p.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(p.as_str()))
        })
        .unwrap_or(false)
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A running `snapahead mount`, unmounted and stopped on drop, whatever
/// happened in the test (loop mounts registered with it are undone first).
pub struct Mount {
    pub child: Option<Child>,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
    loops: Vec<PathBuf>,
}

impl Mount {
    /// Starts `snapahead --store STORE mount MNT --cache-dir CACHE [extra]`
    /// and waits until `expect_file` appears in it.
    pub fn start(
        dir: &Path,
        store: &str,
        cache: &Path,
        extra: &[&str],
        expect_file: &str,
    ) -> Mount {
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).unwrap();
        let log = dir.join(format!("mount-{}.log", rand::random::<u32>()));
        let child = Command::new(bin())
            .current_dir(dir)
            .args(["--store", store, "mount"])
            .arg(&mountpoint)
            .arg("--cache-dir")
            .arg(cache)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child: Some(child),
            mountpoint,
            log,
            loops: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.mountpoint.join(expect_file).exists() {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("mount exited early ({st}): {}", m.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "mount did not come up: {}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `mount -o loop,ro IMAGE TARGET`, undone on drop.
    pub fn loop_mount(&mut self, image: &Path, target: &Path) {
        std::fs::create_dir_all(target).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(image)
            .arg(target));
        self.loops.push(target.to_path_buf());
    }

    pub fn loop_unmount(&mut self, target: &Path) {
        run(Command::new("umount").arg(target));
        self.loops.retain(|l| l != target);
    }

    /// Polls the mount's stats until `cond` holds (at most 30 s) and
    /// returns them: background work (cache writes, prefetch) is waited
    /// for by what it does, never by a fixed sleep.
    pub fn wait_for(
        &self,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: not within 30 s: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the disk cache writer has handled every fetched block.
    pub fn wait_cache_written(&self) {
        self.wait_for("the disk cache writer drains", |s| {
            let n = |k: &str| s["metrics"][k].as_u64().unwrap_or(0);
            n("cache_writes_done") + n("cache_writes_skipped") >= n("blocks_fetched")
        });
    }

    /// `snapahead stats MNT --json`.
    pub fn stats(&self) -> serde_json::Value {
        let out = run(Command::new(bin())
            .arg("stats")
            .arg(&self.mountpoint)
            .arg("--json"));
        serde_json::from_str(&out).unwrap()
    }

    /// SIGTERM; returns the exit status and asserts nothing stays mounted.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mount did not exit after SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!is_mounted(&self.mountpoint), "still mounted after SIGTERM");
        status
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for l in self.loops.drain(..) {
            let _ = Command::new("umount").arg("-l").arg(&l).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// A directory tree with known files, and an ext4 image made from it
/// (`mkfs.ext4 -d`) of `size_mb` MiB.
pub fn ext4_image(dir: &Path, size_mb: u64) -> (PathBuf, PathBuf) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("docs/deep/er")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    for i in 0..40 {
        let text = format!("file {i}\n").repeat(100 + i * 37);
        std::fs::write(tree.join(format!("docs/f{i}.txt")), text).unwrap();
    }
    std::fs::write(tree.join("docs/deep/er/nested.txt"), b"nested\n").unwrap();
    std::fs::write(tree.join("bin/random.bin"), random_bytes(77, 3 << 20)).unwrap();
    std::fs::write(tree.join("bin/more.bin"), random_bytes(78, 700_001)).unwrap();
    let img = dir.join("vol.img");
    run(Command::new("truncate")
        .args(["-s", &format!("{size_mb}M")])
        .arg(&img));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img));
    (tree, img)
}

pub fn sha256(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Starts `latency-proxy --listen LISTEN --upstream UPSTREAM [extra]` and
/// returns it with the address it listens on: `LISTEN` may be port 0, and
/// the proxy's first line says which port it got (no pick-and-release race
/// between tests).
pub fn start_latency_proxy(
    listen: &str,
    upstream: &str,
    extra: &[&str],
) -> (Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_latency-proxy"))
        .args(["--listen", listen, "--upstream", upstream])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start latency-proxy");
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("latency-proxy says where it listens");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("latency-proxy did not start: {line:?}"));
    (child, addr)
}
