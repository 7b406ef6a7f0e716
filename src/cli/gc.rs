//! `snapahead gc [--dry-run] [--grace 24h]`: [`crate::catalog::gc`].

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytesize::ByteSize;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Only report what would be deleted
    #[arg(long)]
    dry_run: bool,
    /// Keep unreferenced objects younger than this (a create may still be running)
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    grace: Duration,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64;
    let r = crate::catalog::gc(&ctx.store()?, a.grace, a.dry_run, now_ms).await?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for (k, size) in &r.removed {
        log::debug!("{verb} {k} ({size} bytes)");
    }
    out!(
        "{} snapshots, {} referenced data objects; {verb} {} unreferenced objects ({}); kept {} younger than {}",
        r.snapshots,
        r.referenced_objects,
        r.removed.len(),
        ByteSize(r.removed_bytes),
        r.kept_young,
        humantime::format_duration(a.grace)
    );
    Ok(ExitCode::SUCCESS)
}
