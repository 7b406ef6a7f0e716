//! `snapahead monitor IMAGE MNT --trace OUT`: [`crate::fs::monitor::run`].

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The volume image (a regular file), exposed read-write as <MOUNTPOINT>/<file name>
    image: PathBuf,
    /// An existing empty directory
    mountpoint: PathBuf,
    /// The trace to write (flushed every 2 s and at unmount)
    #[arg(long)]
    trace: PathBuf,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    crate::fs::monitor::run(&a.image, &a.mountpoint, &a.trace).await?;
    Ok(ExitCode::SUCCESS)
}
