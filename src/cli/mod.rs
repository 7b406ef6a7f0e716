//! The `snapahead` command line: one file per command, each a thin map from
//! its arguments to one library call and the printing of its result. No
//! command does work of its own here; what it runs lives in the module
//! that owns it (`create`, `catalog`, `predict`, `trace`, `fs`, ...).

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`snapahead list | head`); `main` exits quietly on a broken pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

mod create;
mod delete;
pub mod fstab;
mod gc;
mod hints;
mod inspect;
mod list;
mod monitor;
mod mount;
mod stats;
mod trace;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::store::Store;

#[derive(Parser)]
#[command(
    name = "snapahead",
    version,
    about = "Snapshot block volumes into object storage; mount them at once, fetched lazily and prefetched ahead of reads",
    long_about = "Snapshot block volumes (raw image files, block devices) into object storage \
(a local directory by default, or any S3-compatible server), incrementally against a parent.\n\n\
Configuration comes from snapshots.yaml (see README.md). Logging: RUST_LOG=info|debug|trace."
)]
pub struct Cli {
    /// Config file [default: ./snapshots.yaml; a missing default file means built-in defaults]
    #[arg(long, global = true, env = "SNAPAHEAD_CONFIG")]
    config: Option<PathBuf>,
    /// Object store URL, overriding the config: file://PATH, s3://BUCKET[/PREFIX] or memory://
    #[arg(long, global = true, env = "SNAPAHEAD_STORE")]
    store: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Snapshot a volume: read it, skip zero blocks, compress, upload, commit
    Create(create::Args),
    /// Learn prefetch hints, successors and warm-up from traces into the snapshot's index,
    /// or (--evaluate) measure how well the index predicts a held-out trace
    Hints(hints::Args),
    /// List the snapshots in the store
    List(list::Args),
    /// Show a snapshot's header, counts, stored vs logical bytes and hint statistics
    Inspect(inspect::Args),
    /// Fetch every stored block and check its checksum; exits non-zero on any bad block
    Verify(verify::Args),
    /// Delete a snapshot (its data objects are removed later by gc)
    Delete(delete::Args),
    /// Mount snapshots as read-only sparse image files <MOUNTPOINT>/<name>.img (foreground; SIGINT/SIGTERM unmount)
    Mount(mount::Args),
    /// Record how a live volume image is used: a read-write passthrough FUSE mount that traces every access
    Monitor(monitor::Args),
    /// Show the statistics of a running mount (reads <MOUNTPOINT>/.snapahead-stats)
    Stats(stats::Args),
    /// Access traces: import them from blkparse / fio, or summarize one
    Trace {
        #[command(subcommand)]
        cmd: trace::Cmd,
    },
    /// Delete data objects and pages that no snapshot references
    Gc(gc::Args),
}

/// What every command may need: the loaded config and the `--store` override.
pub(crate) struct Ctx {
    cfg: Config,
    store_url: Option<String>,
}

impl Ctx {
    /// The store: `--store`, else the config's.
    fn store(&self) -> anyhow::Result<Store> {
        self.cfg.open_store(self.store_url.as_deref())
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p, true)?,
        None => Config::load(PathBuf::from(DEFAULT_CONFIG).as_path(), false)?,
    };
    let ctx = Ctx {
        cfg,
        store_url: cli.store,
    };
    match cli.cmd {
        Cmd::Create(a) => create::run(&ctx, a).await,
        Cmd::Hints(a) => hints::run(&ctx, a).await,
        Cmd::List(a) => list::run(&ctx, a).await,
        Cmd::Inspect(a) => inspect::run(&ctx, a).await,
        Cmd::Verify(a) => verify::run(&ctx, a).await,
        Cmd::Delete(a) => delete::run(&ctx, a).await,
        Cmd::Mount(a) => mount::run(&ctx, a).await,
        Cmd::Monitor(a) => monitor::run(a).await,
        Cmd::Stats(a) => stats::run(a),
        Cmd::Trace { cmd } => trace::run(&ctx, cmd).await,
        Cmd::Gc(a) => gc::run(&ctx, a).await,
    }
}

/// Milliseconds since the epoch as RFC 3339, to the second.
fn fmt_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `a` as a percentage of `b` (0 when `b` is 0).
fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}
