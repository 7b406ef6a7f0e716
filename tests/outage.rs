//! Store outages in the middle of a mount, end to end: a real FUSE mount of
//! a snapshot on the Garage node (`scripts/garage.sh`), reached through
//! `latency-proxy`, which the test kills (connections refused) or stops
//! with SIGSTOP (connections accepted, never answered) and brings back.
//!
//! What must hold: cached blocks keep being served; an uncached read fails
//! with EIO within the configured bound (retry_timeout + request_timeout),
//! never hangs; once the store is back, the same reads succeed without a
//! remount, and every byte of the image matches the source.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{bin, run, Mount};

/// The store settings the mount gets: short, so the test is.
const REQUEST_TIMEOUT_S: u64 = 2;
const RETRY_TIMEOUT_S: u64 = 3;
const BLOCK: usize = 256 * 1024;
const VOLUME: usize = 48 * BLOCK;

struct Proxy {
    child: Child,
    listen: SocketAddr,
    upstream: String,
}

impl Proxy {
    /// On `listen` (port 0: a free one; a restart reuses the port it got).
    fn start(listen: &str, upstream: &str) -> Proxy {
        let (child, listen) = common::start_latency_proxy(listen, upstream, &["--delay-ms", "1"]);
        Proxy {
            child,
            listen,
            upstream: upstream.to_string(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        *self = Proxy::start(&self.listen.to_string(), &self.upstream);
    }

    fn signal(&self, sig: &str) {
        run(Command::new("kill").args([sig, &self.child.id().to_string()]));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.kill();
    }
}

/// Reads `len` bytes at `off` with O_DIRECT (past the kernel page cache,
/// so the mount itself answers); returns the time it took too.
fn read_direct(path: &Path, off: usize, len: usize) -> (std::io::Result<Vec<u8>>, Duration) {
    let t = Instant::now();
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        f.seek(SeekFrom::Start(off as u64))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)?;
        Ok(buf)
    })();
    (r, t.elapsed())
}

#[test]
fn store_outage_mid_mount_serves_the_cache_fails_fast_and_recovers() {
    let test = "store_outage_mid_mount_serves_the_cache_fails_fast_and_recovers";
    let Some((endpoint, bucket)) = common::s3_server(test) else {
        return;
    };
    if !common::fuse_available(test) {
        return;
    }
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let mut proxy = Proxy::start("127.0.0.1:0", &upstream);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("s3://{bucket}/outage-{}", snapahead::format::Id::random());
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        format!(
            "s3: {{ endpoint: 'http://{}', region: garage, allow_http: true, \
             connect_timeout: 1s, request_timeout: {REQUEST_TIMEOUT_S}s, retry_timeout: {RETRY_TIMEOUT_S}s }}\n",
            proxy.listen
        ),
    )
    .unwrap();
    let vol = common::random_bytes(31, VOLUME);
    common::write(&dir.path().join("v.img"), &vol);
    run(Command::new(bin())
        .current_dir(dir.path())
        .args(["--store", &store, "create", "v", "--source", "v.img"])
        .args(["--block-size", &BLOCK.to_string()]));

    let mut m = Mount::start(
        dir.path(),
        &store,
        &dir.path().join("cache"),
        &["--no-prefetch"],
        "v.img",
    );
    let img = m.mountpoint.join("v.img");
    // Blocks 0..16 are read (and cached) while the store is up.
    let cached = 16 * BLOCK;
    let (first, _) = read_direct(&img, 0, cached);
    assert!(first.unwrap() == vol[..cached]);

    // Outage 1: the store refuses connections.
    proxy.kill();
    let bound = Duration::from_secs(RETRY_TIMEOUT_S + REQUEST_TIMEOUT_S + 3);
    let (again, _) = read_direct(&img, 0, cached);
    assert!(
        again.unwrap() == vol[..cached],
        "cached blocks must be served"
    );
    let (miss, took) = read_direct(&img, 20 * BLOCK, 4096);
    let e = miss.expect_err("an uncached read cannot succeed with the store down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(took < bound, "EIO after {took:?}, bound {bound:?}");
    eprintln!("store refusing: EIO after {took:?} (bound {bound:?})");
    let log = m.log_text();
    assert!(log.contains("blocks 20"), "the log names the block: {log}");

    // Back: the same read succeeds, no remount.
    proxy.restart();
    let (ok, _) = read_direct(&img, 20 * BLOCK, 4096);
    assert!(ok.unwrap() == vol[20 * BLOCK..20 * BLOCK + 4096]);

    // Outage 2: the store accepts connections and never answers.
    proxy.signal("-STOP");
    let (miss, took) = read_direct(&img, 30 * BLOCK, 4096);
    let e = miss.expect_err("an uncached read cannot succeed with the store stalled");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(took < bound, "EIO after {took:?}, bound {bound:?}");
    eprintln!("store stalled: EIO after {took:?} (bound {bound:?})");
    let (again, _) = read_direct(&img, 0, cached);
    assert!(again.unwrap() == vol[..cached]);
    proxy.signal("-CONT");

    // Everything readable matches the source, byte for byte.
    let (all, _) = read_direct(&img, 0, VOLUME);
    assert!(all.unwrap() == vol, "the whole image after recovery");
    let st = m.stop();
    assert!(st.success(), "{st}: {}", m.log_text());
}
