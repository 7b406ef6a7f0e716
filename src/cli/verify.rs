//! `snapahead verify NAME`: [`crate::snapshot::Snapshot::verify`], with a
//! progress bar; exits non-zero on any bad block.

use std::process::ExitCode;

use super::Ctx;
use crate::name::SnapshotName;
use crate::progress::Progress;
use crate::snapshot::Snapshot;

#[derive(clap::Args)]
pub struct Args {
    name: SnapshotName,
    /// Objects fetched at once
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let snap = Snapshot::open(&ctx.store()?, &a.name).await?;
    let progress = Progress::new(
        format!("verify {}", a.name),
        snap.index().logical_stored_bytes(),
        true,
    );
    let r = snap.verify(a.concurrency, &progress).await?;
    progress.finish();
    for b in &r.bad {
        out!(
            "BAD block {} (offset {}) in {}: {}",
            b.block_id,
            b.block_id * snap.header().block_size as u64,
            b.object,
            b.reason
        );
    }
    out!(
        "{}: {} blocks checked, {} bad",
        a.name,
        r.blocks_checked,
        r.bad.len()
    );
    Ok(if r.bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
