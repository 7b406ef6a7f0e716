//! `snapahead create NAME [--source ...]`: [`crate::create::create`], then
//! (with `--trace`) [`crate::predict::learn_from`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use bytesize::ByteSize;

use super::Ctx;
use crate::config::BlockSize;
use crate::create::{self, CreateOptions};
use crate::name::SnapshotName;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the new snapshot ([A-Za-z0-9._-], starting with a letter or digit)
    name: SnapshotName,
    /// Volume to read (image file or block device) [default: the config entry's source]
    #[arg(long)]
    source: Option<PathBuf>,
    /// Reuse the blocks of this snapshot: only changed blocks are uploaded
    #[arg(long)]
    parent: Option<SnapshotName>,
    /// Block size, a power of two from 64KiB to 4MiB [default: config, parent's, or 512KiB]
    #[arg(long)]
    block_size: Option<BlockSize>,
    /// Blocks per index group, the unit of prefetch hints [default: config, parent's, or 16]
    #[arg(long)]
    group_size: Option<u32>,
    /// Uploads in flight
    #[arg(long, default_value_t = create::DEFAULT_UPLOAD_CONCURRENCY)]
    uploads: usize,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Learn prefetch hints from these traces right after creating (see `hints`)
    #[arg(long = "trace")]
    traces: Vec<PathBuf>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let entry = ctx.cfg.snapshot(&a.name);
    let source = a
        .source
        .or_else(|| entry.and_then(|e| e.source.clone()))
        .ok_or_else(|| {
            anyhow!(
                "no source for {:?}: pass --source or add it to the config",
                a.name.as_str()
            )
        })?;
    let mut opts = CreateOptions::new(a.name, source);
    opts.parent = a.parent;
    opts.block_size = a
        .block_size
        .or(entry.and_then(|e| e.block_size))
        .map(|b| b.0);
    opts.group_size = a.group_size.or(entry.and_then(|e| e.group_size));
    opts.upload_concurrency = a.uploads.max(1);
    opts.show_progress = true;
    let s = create::create(&store, &opts).await?;
    if !a.traces.is_empty() {
        let r = crate::predict::learn_from(
            &store,
            &opts.name,
            &crate::predict::LearnRequest::from_files(&a.traces),
        )
        .await?;
        super::hints::print_learned(&opts.name, &r)?;
    }
    if a.json {
        out!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        out!(
            "created {} in {}: read {}, zero {}, new {}, reused {}, uploaded {} in {} objects, {:.1}s ({}/s)",
            s.name,
            store.url(),
            ByteSize(s.bytes_read),
            ByteSize(s.zero_bytes),
            ByteSize(s.new_bytes),
            ByteSize(s.reused_bytes),
            ByteSize(s.uploaded_bytes),
            s.objects_uploaded,
            s.seconds,
            ByteSize((s.bytes_read as f64 / s.seconds.max(1e-3)) as u64)
        );
    }
    Ok(ExitCode::SUCCESS)
}
