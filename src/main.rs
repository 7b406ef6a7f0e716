//! The `snapahead` binary: process set-up (allocator, logging, runtime),
//! then [`snapahead::cli::run`], which maps each command to one library call.

use std::process::ExitCode;

use clap::Parser;

/// glibc gives threads that allocate at once their own malloc arenas (up
/// to 8 per core). A mount allocates and frees 512 KiB blocks on FUSE
/// threads, tokio workers and the cache writer, which strands freed memory
/// across arenas: in the 60 s stress test RSS creeps to ~250 MiB with the
/// default and stays flat at ~100 MiB with two arenas, at the same
/// throughput (docs/benchmarks.md, "Where snapahead is not ahead").
/// A user's own `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        // fuser warns "Unmount failed" when its session ends after we already
        // unmounted with fusermount3 (the way we handle busy mounts); harmless.
        "info,fuser::mnt=error",
    ))
    .format_timestamp_millis()
    .init();
    let cli = snapahead::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(snapahead::cli::run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `snapahead list | head`: stdout closed early is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
