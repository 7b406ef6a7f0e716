//! `snapahead trace import|show|plot`: [`crate::trace::import::import_to_file`],
//! [`crate::trace::summary::summarize`] and [`crate::predict::plot_trace`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytesize::ByteSize;

use super::{fmt_time, pct, Ctx};
use crate::name::SnapshotName;
use crate::snapshot::Snapshot;
use crate::trace::{self, import, summary};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Convert a blkparse text log or a fio iolog (v2/v3) into a snapahead trace
    Import {
        #[arg(long, value_enum)]
        format: import::Format,
        /// The log to read
        input: PathBuf,
        /// The trace to write
        #[arg(long)]
        out: PathBuf,
        /// Volume name recorded in the trace [default: the snapshot's name, or the input's file name]
        #[arg(long)]
        volume: Option<String>,
        /// Volume size [default: the snapshot's, or the end of the furthest access]
        #[arg(long, conflicts_with = "snapshot")]
        volume_size: Option<bytesize::ByteSize>,
        /// The snapshot the log was recorded on: the trace takes its volume size (and name)
        #[arg(long)]
        snapshot: Option<SnapshotName>,
    },
    /// Summarize a trace: duration, ops, bytes, mix, distinct blocks, classification, streams, timeline
    Show {
        trace: PathBuf,
        /// Block size for counting distinct blocks
        #[arg(long, default_value = "512KiB")]
        block_size: bytesize::ByteSize,
        #[arg(long)]
        json: bool,
    },
    /// Draw a trace as a heat map (volume offset x time, reads and writes coloured) into an SVG
    /// file; with --snapshot, what that snapshot's index would prefetch: hits, misses and waste
    Plot {
        trace: PathBuf,
        /// The SVG file to write
        #[arg(long)]
        out: PathBuf,
        /// Replay the trace against this snapshot's index (as `hints --evaluate` does) and colour
        /// each block read by whether it was prefetched
        #[arg(long)]
        snapshot: Option<SnapshotName>,
        /// With --snapshot: the threshold to replay at
        #[arg(long, default_value_t = 0.5, requires = "snapshot")]
        threshold: f32,
        /// With --snapshot: replay without the warm-up
        #[arg(long, requires = "snapshot")]
        no_warmup: bool,
    },
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Import {
            format,
            input,
            out,
            volume,
            volume_size,
            snapshot,
        } => {
            let (volume, volume_size) = match snapshot {
                Some(name) => {
                    let snap = Snapshot::open(&ctx.store()?, &name).await?;
                    (
                        Some(volume.unwrap_or_else(|| name.to_string())),
                        Some(snap.header().volume_size),
                    )
                }
                None => (volume, volume_size.map(|s| s.as_u64())),
            };
            let r = import::import_to_file(format, &input, &out, volume.as_deref(), volume_size)?;
            out!(
                "imported {} records ({}) from {} into {}",
                r.records,
                r.detail,
                input.display(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show {
            trace,
            block_size,
            json,
        } => show(&trace, block_size.as_u64(), json),
        Cmd::Plot {
            trace,
            out,
            snapshot,
            threshold,
            no_warmup,
        } => {
            let store = match snapshot {
                Some(_) => Some(ctx.store()?),
                None => None,
            };
            let what = match (&store, &snapshot) {
                (Some(store), Some(name)) => Some((store, name)),
                _ => None,
            };
            let r = crate::predict::plot_trace(&trace, &out, what, threshold, !no_warmup).await?;
            out!("wrote {} ({})", out.display(), r);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(path: &Path, block_size: u64, json: bool) -> anyhow::Result<ExitCode> {
    let s = summary::summarize(trace::open(path)?, block_size)?;
    if s.truncated {
        log::warn!(
            "{}: the trace ends in a torn frame (its writer stopped abruptly); shown up to there",
            path.display()
        );
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let h = &s.header;
    let total = s.read_bytes + s.write_bytes;
    out!(
        "trace          {} ({} from {}, host {}, started {})",
        path.display(),
        h.volume,
        h.source,
        h.host,
        fmt_time(h.start_ms)
    );
    out!("volume size    {}", ByteSize(h.volume_size));
    out!("duration       {:.3} s", s.duration_s);
    out!(
        "ops            {} reads ({}), {} writes ({})",
        s.reads,
        ByteSize(s.read_bytes),
        s.writes,
        ByteSize(s.write_bytes)
    );
    out!(
        "mix            {:.1}% of bytes read",
        pct(s.read_bytes, total)
    );
    out!(
        "distinct       {} blocks of {}",
        s.distinct_blocks,
        ByteSize(s.block_size)
    );
    let c = &s.classification;
    out!(
        "class          {:?} ({:.1}% of read bytes sequential), {} streams detected; suggested window {} ms, read-ahead {}",
        c.class,
        100.0 * c.sequential_fraction,
        c.streams,
        c.window_ms,
        ByteSize(c.readahead_bytes)
    );
    out!("timeline       (per {} s)", s.timeline_bucket_s);
    for b in &s.timeline {
        out!(
            "  {:>6} s  {:>8} reads {:>10}  {:>8} writes {:>10}",
            b.start_s,
            b.reads,
            ByteSize(b.read_bytes).to_string(),
            b.writes,
            ByteSize(b.write_bytes).to_string()
        );
    }
    Ok(ExitCode::SUCCESS)
}
