//! `snapahead delete NAME`: [`crate::catalog::delete`].

use std::process::ExitCode;

use super::Ctx;
use crate::name::SnapshotName;

#[derive(clap::Args)]
pub struct Args {
    name: SnapshotName,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    crate::catalog::delete(&ctx.store()?, &a.name).await?;
    out!("deleted {} (run gc to free its data objects)", a.name);
    Ok(ExitCode::SUCCESS)
}
