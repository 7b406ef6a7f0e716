//! `mount -t fuse.snapahead SOURCE MOUNTPOINT -o OPTIONS`, and fstab lines
//! such as
//!
//! ```text
//! /etc/snapahead/snapshots.yaml  /mnt/snaps  fuse.snapahead  ro,allow_other,cache_dir=/var/cache/snapahead,_netdev  0 0
//! ```
//!
//! mount(8) runs `/sbin/mount.fuse.snapahead SOURCE MOUNTPOINT [-fnsv] -o
//! OPTIONS` (the binary `mount-fuse-snapahead`, installed there under that
//! name by `make install`), which maps the line to `snapahead mount` and, as mount helpers
//! do, returns once the mount is up, leaving the mount running in the
//! background (only here does snapahead daemonize; `snapahead mount` stays
//! in the foreground for systemd and people). `umount MOUNTPOINT` ends it
//! cleanly, as `fusermount3 -u` does.
//!
//! SOURCE: a config file (as `--config`), a store URL (`file://`, `s3://`:
//! as `--store`), or `snapahead` for the defaults. OPTIONS, besides the
//! ones mount(8) itself handles (ignored here: `ro`, `defaults`, `auto`,
//! `noauto`, `nofail`, `_netdev`, `user(s)`, `nouser`, `noatime`, `nodev`,
//! `nosuid`, `dev`, `suid`, `exec`, `noexec`, `x-*`, `comment=`):
//! `snapshot=NAME` (repeatable), `cache_dir=DIR`, `cache_size=SIZE`,
//! `metrics=ADDR`, `allow_other`, `no_prefetch`, `record_traces`, and
//! `log=FILE` (where the mount's log goes; default
//! `/var/log/snapahead-mount.log` for root, else `~/.snapahead-mount.log`).
//! `rw` is ignored (mount(8) adds it when a line names neither; the mount
//! is read-only whatever it says); anything unknown is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// How long the helper waits for the mount to appear: opening a store and
/// reading the indexes takes well under this; past it something is wrong.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// Options mount(8) and fstab use that are not the filesystem's business.
const MOUNT_OWN: [&str; 15] = [
    "ro", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "noatime",
    "nodev", "nosuid", "dev", "suid", "exec",
];

/// What a mount line asks for, as `snapahead` arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Global flags (`--config` / `--store`), then `mount MOUNTPOINT`, then its flags.
    pub args: Vec<String>,
    pub mountpoint: PathBuf,
    pub log: Option<PathBuf>,
    /// `-f`: do everything but mount.
    pub fake: bool,
}

/// Parses the helper's command line (after the program name).
pub fn plan(argv: &[String]) -> anyhow::Result<Plan> {
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.extend(
                it.next()
                    .ok_or_else(|| anyhow!("-o needs options"))?
                    .split(',')
                    .map(str::to_string),
            ),
            "-f" => fake = true,
            "-n" | "-s" | "-v" => {}
            o if o.starts_with("-o") => options.extend(o[2..].split(',').map(str::to_string)),
            o if o.starts_with('-') => bail!(
                "unknown flag {o} (usage: mount.fuse.snapahead SOURCE MOUNTPOINT [-o OPTIONS])"
            ),
            p => positional.push(p.to_string()),
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        bail!("usage: mount.fuse.snapahead SOURCE MOUNTPOINT [-o OPTIONS] (got {positional:?})");
    };
    let mut args = Vec::new();
    if ["file://", "s3://", "memory://"]
        .iter()
        .any(|p| source.starts_with(p))
    {
        args.extend(["--store".to_string(), source.clone()]);
    } else if source != "snapahead" {
        args.extend(["--config".to_string(), source.clone()]);
    }
    args.extend(["mount".to_string(), mountpoint.clone()]);
    let mut log = None;
    for o in options.iter().filter(|o| !o.is_empty()) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        let flag = |name: &str| -> anyhow::Result<Vec<String>> {
            let v = v.ok_or_else(|| anyhow!("mount option {k} needs a value ({k}=...)"))?;
            Ok(vec![format!("--{name}"), v.to_string()])
        };
        match (k, v) {
            ("snapshot", _) => args.extend(flag("snapshot")?),
            ("cache_dir", _) => args.extend(flag("cache-dir")?),
            ("cache_size", _) => args.extend(flag("cache-size")?),
            ("metrics", _) => args.extend(flag("metrics")?),
            ("allow_other", None) => args.push("--allow-other".into()),
            ("no_prefetch", None) => args.push("--no-prefetch".into()),
            ("record_traces", None) => args.push("--record-traces".into()),
            ("log", Some(p)) => log = Some(PathBuf::from(p)),
            // mount(8) passes rw when the line says nothing: the mount is
            // read-only whatever it says.
            ("rw", None) => {}
            (k, _)
                if MOUNT_OWN.contains(&k)
                    || k == "noexec"
                    || k.starts_with("x-")
                    || k == "comment" => {}
            _ => bail!(
                "unknown mount option {o:?} (see `snapahead help mount` and README \"fstab\")"
            ),
        }
    }
    Ok(Plan {
        args,
        mountpoint: PathBuf::from(mountpoint),
        log,
        fake,
    })
}

fn default_log() -> PathBuf {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if root {
        PathBuf::from("/var/log/snapahead-mount.log")
    } else {
        Path::new(&std::env::var("HOME").unwrap_or_else(|_| ".".into()))
            .join(".snapahead-mount.log")
    }
}

/// The helper: starts `snapahead` (the binary beside this one, else on
/// PATH) in the background and returns once the mount is up.
pub fn helper_main(argv: &[String]) -> ExitCode {
    match helper(argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mount.fuse.snapahead: {e:#}");
            // mount(8) reports helper failures as its own exit status 32.
            ExitCode::from(32)
        }
    }
}

fn helper(argv: &[String]) -> anyhow::Result<()> {
    let p = plan(argv)?;
    if p.fake {
        return Ok(());
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("snapahead")))
        .filter(|e| e.exists())
        .unwrap_or_else(|| PathBuf::from("snapahead"));
    let log_path = p.log.unwrap_or_else(default_log);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the mount's log {}", log_path.display()))?;
    let start_len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mountpoint =
        PathBuf::from(&p.args[p.args.iter().position(|a| a == "mount").unwrap_or(0) + 1]);
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&exe)
        .args(&p.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at the terminal that ran mount(8)
        // does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if crate::fs::mount::is_snapahead_mount(&mountpoint) {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let tail = String::from_utf8_lossy(text.get(start_len as usize..).unwrap_or(&[]));
            bail!(
                "snapahead mount exited ({st}) before mounting:\n{}",
                tail.trim_end()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "{} was not mounted within {} s (log: {})",
                mountpoint.display(),
                MOUNT_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn mount_lines_map_to_snapahead_mount() {
        let p = plan(&s(&[
            "/etc/snapahead/snapshots.yaml",
            "/mnt/s",
            "-o",
            "ro,_netdev,nofail,allow_other,snapshot=db,snapshot=web,cache_dir=/var/cache/sa,cache_size=8GiB,log=/tmp/x.log,x-systemd.automount",
        ]))
        .unwrap();
        assert_eq!(
            p.args,
            s(&[
                "--config",
                "/etc/snapahead/snapshots.yaml",
                "mount",
                "/mnt/s",
                "--allow-other",
                "--snapshot",
                "db",
                "--snapshot",
                "web",
                "--cache-dir",
                "/var/cache/sa",
                "--cache-size",
                "8GiB"
            ])
        );
        assert_eq!(p.log.as_deref(), Some(Path::new("/tmp/x.log")));
        // A config file named like the subcommand is still the source.
        let p = plan(&s(&["mount", "/m"])).unwrap();
        assert_eq!(p.args, s(&["--config", "mount", "mount", "/m"]));
        assert_eq!(p.mountpoint, Path::new("/m"));
        let p = plan(&s(&["s3://bucket/p", "/m", "-n", "-o", "ro"])).unwrap();
        assert_eq!(p.args, s(&["--store", "s3://bucket/p", "mount", "/m"]));
        let p = plan(&s(&["snapahead", "/m", "-o", "rw"])).unwrap();
        assert_eq!(p.args, s(&["mount", "/m"]));
        let p = plan(&s(&["snapahead", "/m", "-f"])).unwrap();
        assert!(p.fake && p.args == s(&["mount", "/m"]));
        for (bad, want) in [
            (
                s(&["snapahead", "/m", "-o", "colour=red"]),
                "unknown mount option",
            ),
            (s(&["snapahead", "/m", "-o", "cache_dir"]), "needs a value"),
            (s(&["snapahead"]), "usage"),
        ] {
            let e = plan(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }
}
