//! The `snapahead` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use bytesize::ByteSize;
use clap::{Parser, Subcommand};

use snapahead::catalog;
use snapahead::config::{BlockSize, Config, DEFAULT_CONFIG};
use snapahead::create::{self, CreateOptions};
use snapahead::name::SnapshotName;
use snapahead::progress::Progress;
use snapahead::snapshot::Snapshot;

/// `println!` that returns an error instead of panicking when stdout is
/// closed (`snapahead list | head`); `main` exits quietly on a broken pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

#[derive(Parser)]
#[command(
    name = "snapahead",
    version,
    about = "Snapshot block volumes into object storage; mount them at once, fetched lazily and prefetched ahead of reads",
    long_about = "Snapshot block volumes (raw image files, block devices) into object storage \
(a local directory by default, or any S3-compatible server), incrementally against a parent.\n\n\
Configuration comes from snapshots.yaml (see README.md). Logging: RUST_LOG=info|debug|trace."
)]
struct Cli {
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
    Create {
        /// Name of the new snapshot ([A-Za-z0-9._-], not starting with '.')
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
    },
    /// Learn prefetch hints, successors and warm-up from traces into the snapshot's index,
    /// or (--evaluate) measure how well the index predicts a held-out trace
    Hints {
        name: SnapshotName,
        /// Trace files to learn from (repeatable)
        #[arg(long = "trace")]
        traces: Vec<PathBuf>,
        /// Also learn from every trace stored under traces/<name>/ (and its parents'): all hosts' sessions
        #[arg(long)]
        from_store: bool,
        /// Prefetch windows, e.g. 2s,10s [default: the index's]
        #[arg(long)]
        window: Option<String>,
        /// Replay this held-out trace against the current index instead of learning
        #[arg(long)]
        evaluate: Option<PathBuf>,
        /// Threshold for --evaluate: prefetch when hint or successor probability >= T
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// For --evaluate: replay without the warm-up list, to see what hints and successors
        /// alone predict (a session longer than the warm-up window relies on them)
        #[arg(long, requires = "evaluate")]
        no_warmup: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the snapshots in the store
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot's header, counts, stored vs logical bytes and hint statistics
    Inspect {
        name: SnapshotName,
        #[arg(long)]
        json: bool,
    },
    /// Fetch every stored block and check its checksum; exits non-zero on any bad block
    Verify {
        name: SnapshotName,
        /// Objects fetched at once
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Delete a snapshot (its data objects are removed later by gc)
    Delete { name: SnapshotName },
    /// Mount snapshots as read-only sparse image files <MOUNTPOINT>/<name>.img (foreground; SIGINT/SIGTERM unmount)
    Mount {
        /// An existing empty directory
        mountpoint: PathBuf,
        /// Snapshots to show (repeatable) [default: those named in the config, or all in the store when it names none or --store is given]
        #[arg(long = "snapshot")]
        snapshots: Vec<SnapshotName>,
        /// Let other users read the mount (needs user_allow_other in /etc/fuse.conf unless root)
        #[arg(long)]
        allow_other: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (and JSON at /stats), e.g. 127.0.0.1:9100
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Disk cache directory [default: config cache.dir]
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Disk cache bound, e.g. 8GiB; 0 disables the disk tier [default: config cache.size]
        #[arg(long)]
        cache_size: Option<bytesize::ByteSize>,
        /// Record each snapshot's demand reads and upload them to traces/<snapshot>/ in the store
        /// (every minute and at unmount), for `hints`
        #[arg(long)]
        record_traces: bool,
        /// Disable the prefetch daemon (fetch only what is read)
        #[arg(long)]
        no_prefetch: bool,
        /// Add this latency to every GET (benchmarks: a local store made to behave like a remote one)
        #[arg(long, hide = true, value_parser = humantime::parse_duration)]
        inject_latency: Option<Duration>,
    },
    /// Record how a live volume image is used: a read-write passthrough FUSE mount that traces every access
    Monitor {
        /// The volume image (a regular file), exposed read-write as <MOUNTPOINT>/<file name>
        image: PathBuf,
        /// An existing empty directory
        mountpoint: PathBuf,
        /// The trace to write (flushed every 2 s and at unmount)
        #[arg(long)]
        trace: PathBuf,
    },
    /// Show the statistics of a running mount (reads <MOUNTPOINT>/.snapahead-stats)
    Stats {
        mountpoint: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Access traces: import them from blkparse / fio, or summarize one
    Trace {
        #[command(subcommand)]
        cmd: TraceCmd,
    },
    /// Delete data objects and pages that no snapshot references
    Gc {
        /// Only report what would be deleted
        #[arg(long)]
        dry_run: bool,
        /// Keep unreferenced objects younger than this (a create may still be running)
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

#[derive(Subcommand)]
enum TraceCmd {
    /// Convert a blkparse text log or a fio iolog (v2/v3) into a snapahead trace
    Import {
        #[arg(long, value_enum)]
        format: snapahead::trace::import::Format,
        /// The log to read
        input: PathBuf,
        /// The trace to write
        #[arg(long)]
        out: PathBuf,
        /// Volume name recorded in the trace [default: the input's file name]
        #[arg(long)]
        volume: Option<String>,
        /// Volume size [default: the end of the furthest access]
        #[arg(long)]
        volume_size: Option<bytesize::ByteSize>,
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
}

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
    let cli = Cli::parse();
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
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

fn fmt_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = match &cli.config {
        Some(p) => Config::load(p, true)?,
        None => Config::load(PathBuf::from(DEFAULT_CONFIG).as_path(), false)?,
    };
    if let Cmd::Stats { mountpoint, json } = &cli.cmd {
        return print_stats(mountpoint, *json);
    }
    if let Cmd::Trace { cmd } = &cli.cmd {
        return trace_cmd(cmd);
    }
    if let Cmd::Monitor {
        image,
        mountpoint,
        trace,
    } = &cli.cmd
    {
        snapahead::fs::monitor::run(image, mountpoint, trace).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = cfg.open_store(cli.store.as_deref())?;
    match cli.cmd {
        Cmd::Stats { .. } | Cmd::Trace { .. } | Cmd::Monitor { .. } => {}
        Cmd::Hints {
            name,
            traces,
            from_store,
            window,
            evaluate,
            threshold,
            no_warmup,
            json,
        } => match evaluate {
            Some(held_out) => {
                evaluate_hints(&store, &name, &held_out, threshold, !no_warmup, json).await?
            }
            None => learn_hints(&store, &name, &traces, from_store, window.as_deref()).await?,
        },
        Cmd::Mount {
            mountpoint,
            snapshots,
            allow_other,
            metrics,
            cache_dir,
            cache_size,
            record_traces,
            no_prefetch,
            inject_latency,
        } => {
            let store = match inject_latency {
                Some(l) => store.with_latency(l),
                None => store,
            };
            // The config's list describes the config's store: with --store
            // given, every snapshot of that store is shown instead.
            let snapshots = if snapshots.is_empty() && cli.store.is_none() {
                cfg.snapshots.iter().map(|s| s.name.clone()).collect()
            } else {
                snapshots
            };
            let opts = snapahead::fs::mount::MountOptions {
                mountpoint,
                snapshots,
                allow_other,
                metrics_addr: metrics,
                cache_dir: cache_dir.unwrap_or(cfg.cache.dir.clone()),
                cache_size: cache_size.map(|s| s.as_u64()).unwrap_or(cfg.cache.size),
                memory_cache_size: cfg.cache.memory,
                record_traces,
                prefetch: if no_prefetch {
                    snapahead::prefetch::PrefetchConfig {
                        enabled: false,
                        ..cfg.prefetch.clone()
                    }
                } else {
                    cfg.prefetch.clone()
                },
            };
            snapahead::fs::mount::run(store, opts).await?;
        }
        Cmd::Create {
            name,
            source,
            parent,
            block_size,
            group_size,
            uploads,
            json,
            traces,
        } => {
            let entry = cfg.snapshot(&name);
            let source = source
                .or_else(|| entry.and_then(|e| e.source.clone()))
                .ok_or_else(|| {
                    anyhow!(
                        "no source for {:?}: pass --source or add it to the config",
                        name.as_str()
                    )
                })?;
            let mut opts = CreateOptions::new(name, source);
            opts.parent = parent;
            opts.block_size = block_size.or(entry.and_then(|e| e.block_size)).map(|b| b.0);
            opts.group_size = group_size.or(entry.and_then(|e| e.group_size));
            opts.upload_concurrency = uploads.max(1);
            opts.show_progress = true;
            let s = create::create(&store, &opts).await?;
            if !traces.is_empty() {
                learn_hints(&store, &opts.name, &traces, false, None).await?;
            }
            if json {
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
        }
        Cmd::List { json } => {
            let all = catalog::list(&store).await?;
            let mut rows = Vec::new();
            let mut bad = false;
            for (name, ix) in &all {
                match ix {
                    Ok(ix) => {
                        let h = &ix.header;
                        rows.push(serde_json::json!({
                            "name": name.as_str(),
                            "volume_size": h.volume_size,
                            "block_size": h.block_size,
                            "stored_bytes": h.stored_bytes,
                            "parent": h.parent.as_ref().map(|p| p.0.to_string()),
                            "created": fmt_time(h.created_ms),
                        }));
                    }
                    Err(e) => {
                        bad = true;
                        eprintln!("warning: snapshot {:?}: {e:#}", name.as_str());
                    }
                }
            }
            if json {
                out!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                out!(
                    "{:<24} {:>12} {:>10} {:>12} {:<16} CREATED",
                    "NAME",
                    "SIZE",
                    "BLOCK",
                    "STORED",
                    "PARENT"
                );
                for r in &rows {
                    out!(
                        "{:<24} {:>12} {:>10} {:>12} {:<16} {}",
                        r["name"].as_str().unwrap_or(""),
                        ByteSize(r["volume_size"].as_u64().unwrap_or(0)).to_string(),
                        ByteSize(r["block_size"].as_u64().unwrap_or(0)).to_string(),
                        ByteSize(r["stored_bytes"].as_u64().unwrap_or(0)).to_string(),
                        r["parent"].as_str().unwrap_or("-"),
                        r["created"].as_str().unwrap_or("")
                    );
                }
            }
            if bad {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Inspect { name, json } => {
            let snap = Snapshot::open(&store, &name).await?;
            let r = catalog::inspect(snap.index(), snap.index().encode().len() as u64);
            if json {
                out!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_inspect(&r)?;
            }
        }
        Cmd::Verify { name, concurrency } => {
            let snap = Snapshot::open(&store, &name).await?;
            let logical = catalog::inspect(snap.index(), 0).logical_stored_bytes;
            let progress = Progress::new(format!("verify {name}"), logical, true);
            let r = snap.verify(concurrency, &progress).await?;
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
                name,
                r.blocks_checked,
                r.bad.len()
            );
            if !r.bad.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Delete { name } => {
            catalog::delete(&store, &name).await?;
            out!("deleted {name} (run gc to free its data objects)");
        }
        Cmd::Gc { dry_run, grace } => {
            let r = catalog::gc(&store, grace, dry_run, now_ms()).await?;
            for (k, size) in &r.removed {
                log::debug!(
                    "{} {k} ({size} bytes)",
                    if dry_run { "would delete" } else { "deleted" }
                );
            }
            out!(
                "{} snapshots, {} referenced data objects; {} {} unreferenced objects ({}); kept {} younger than {}",
                r.snapshots,
                r.referenced_objects,
                if dry_run { "would delete" } else { "deleted" },
                r.removed.len(),
                ByteSize(r.removed_bytes),
                r.kept_young,
                humantime::format_duration(grace)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn learn_hints(
    store: &snapahead::store::Store,
    name: &SnapshotName,
    traces: &[PathBuf],
    from_store: bool,
    window: Option<&str>,
) -> anyhow::Result<()> {
    use snapahead::predict;
    let snap = Snapshot::open(store, name).await?;
    let h = snap.header().clone();
    let stored = predict::stored_blocks(&snap).await?;
    let mut sessions = Vec::new();
    for t in traces {
        let reader = snapahead::trace::open(t)?;
        let what = t.display().to_string();
        sessions.push((
            what.clone(),
            predict::load_session(reader, &what, h.volume_size, h.block_size as u64, &stored)?,
        ));
    }
    if from_store {
        sessions.extend(predict::store_sessions(store, &snap, &stored).await?);
    }
    if sessions.is_empty() {
        anyhow::bail!(
            "no traces to learn from: pass --trace FILE or --from-store (traces/{name}/ in {} holds none)",
            store.url()
        );
    }
    let windows = match window {
        Some(w) => predict::parse_windows(w)?,
        None => snap.index().windows_ms.clone(),
    };
    let only: Vec<predict::Session> = sessions.into_iter().map(|(_, s)| s).collect();
    let reads: usize = only.iter().map(|s| s.events.len()).sum();
    let learned = predict::learn(snap.index(), &stored, &only, &windows);
    predict::commit(store, &learned).await?;
    out!(
        "{name}: learned from {} session(s), {reads} block reads",
        only.len()
    );
    let r = catalog::inspect(&learned, 0);
    for w in &r.windows {
        out!(
            "  window {:>6} ms: {} of {} groups with hint >= 0.5, {} successors in {} groups",
            w.window_ms,
            w.groups_at_or_above
                .iter()
                .find(|(t, _)| *t == 0.5)
                .map_or(0, |x| x.1),
            r.groups,
            w.successors_total,
            w.groups_with_successors
        );
    }
    out!(
        "  warm-up: {} groups, {}",
        r.warmup_groups,
        ByteSize(r.warmup_bytes)
    );
    Ok(())
}

async fn evaluate_hints(
    store: &snapahead::store::Store,
    name: &SnapshotName,
    held_out: &std::path::Path,
    threshold: f32,
    warmup: bool,
    json: bool,
) -> anyhow::Result<()> {
    use snapahead::predict::{self, evaluate};
    let snap = Snapshot::open(store, name).await?;
    let h = snap.header().clone();
    let stored = predict::stored_blocks(&snap).await?;
    let what = held_out.display().to_string();
    let session = predict::load_session(
        snapahead::trace::open(held_out)?,
        &what,
        h.volume_size,
        h.block_size as u64,
        &stored,
    )?;
    let evals: Vec<evaluate::Evaluation> = (0..snap.index().windows_ms.len())
        .map(|w| evaluate::evaluate(snap.index(), &stored, &session, w, threshold, warmup))
        .collect();
    if json {
        out!("{}", serde_json::to_string_pretty(&evals)?);
        return Ok(());
    }
    for e in &evals {
        out!(
            "window {} ms, threshold {}: {} read",
            e.window_ms,
            e.threshold,
            ByteSize(e.read_bytes)
        );
        for (m, s) in [
            ("warm-up", &e.warmup),
            ("hint", &e.hint),
            ("successor", &e.successor),
            ("overall", &e.overall),
        ] {
            out!(
                "  {m:<10} prefetched {:>10}  precision {:.3}  recall {:.3}",
                ByteSize(s.prefetched_bytes).to_string(),
                s.precision,
                s.recall
            );
        }
    }
    Ok(())
}

fn trace_cmd(cmd: &TraceCmd) -> anyhow::Result<ExitCode> {
    use snapahead::trace::{self, import, summary, TraceHeader, TraceWriter};
    match cmd {
        TraceCmd::Import {
            format,
            input,
            out,
            volume,
            volume_size,
        } => {
            let im = match format {
                import::Format::Blkparse => import::import_blkparse(input)?,
                import::Format::Fio => import::import_fio(input)?,
            };
            let size = volume_size.map(|s| s.as_u64()).unwrap_or(im.extent);
            if im.extent > size {
                anyhow::bail!(
                    "{}: accesses reach byte {}, beyond --volume-size {size}",
                    input.display(),
                    im.extent
                );
            }
            let header = TraceHeader {
                volume: volume.clone().unwrap_or_else(|| {
                    input
                        .file_stem()
                        .map(|s| s.to_string_lossy().to_string())
                        .unwrap_or_default()
                }),
                volume_size: size,
                start_ms: std::fs::metadata(input)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                host: trace::host_name(),
                source: match format {
                    import::Format::Blkparse => "blkparse".into(),
                    import::Format::Fio => "fio".into(),
                },
            };
            let f = std::fs::File::create(out)
                .map_err(|e| anyhow!("cannot create {}: {e}", out.display()))?;
            let mut w = TraceWriter::new(std::io::BufWriter::new(f), &header)?;
            for r in &im.records {
                w.push(r)?;
            }
            w.finish()?;
            out!(
                "imported {} records ({}) from {} into {}",
                im.records.len(),
                im.detail,
                input.display(),
                out.display()
            );
        }
        TraceCmd::Show {
            trace: path,
            block_size,
            json,
        } => {
            let s = summary::summarize(trace::open(path)?, block_size.as_u64())?;
            if s.truncated {
                log::warn!("{}: the trace ends in a torn frame (its writer stopped abruptly); shown up to there", path.display());
            }
            if *json {
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
                if total == 0 {
                    0.0
                } else {
                    100.0 * s.read_bytes as f64 / total as f64
                }
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stats(mountpoint: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let path = mountpoint.join(snapahead::fs::STATS_NAME);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "cannot read {}: {e} (is a snapahead mount running there?)",
            path.display()
        )
    })?;
    if json {
        out!("{}", text.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let m = &v["metrics"];
    let n = |k: &str| m[k].as_u64().unwrap_or(0);
    out!(
        "mount          {} (store {})",
        v["mountpoint"].as_str().unwrap_or("?"),
        v["store"].as_str().unwrap_or("?")
    );
    for s in v["snapshots"].as_array().into_iter().flatten() {
        out!(
            "  {:<24} {:>12}  pages {}/{}",
            s["file"].as_str().unwrap_or("?"),
            ByteSize(s["volume_size"].as_u64().unwrap_or(0)).to_string(),
            s["pages_fetched"],
            s["pages"]
        );
    }
    let blocks = n("memory_hits") + n("disk_hits") + n("misses");
    let pct = |a: u64| {
        if blocks == 0 {
            0.0
        } else {
            100.0 * a as f64 / blocks as f64
        }
    };
    out!(
        "reads          {} ({} served), {} errors",
        n("reads"),
        ByteSize(n("bytes_served")),
        n("read_errors")
    );
    out!(
        "block lookups  {} memory hits ({:.1}%), {} disk hits ({:.1}%), {} misses ({:.1}%), {} holes",
        n("memory_hits"),
        pct(n("memory_hits")),
        n("disk_hits"),
        pct(n("disk_hits")),
        n("misses"),
        pct(n("misses")),
        n("hole_blocks")
    );
    out!(
        "fetches        {} GETs, {} blocks, {} fetched, {} failed, {} checksum errors",
        n("fetches"),
        n("blocks_fetched"),
        ByteSize(n("bytes_fetched")),
        n("fetch_errors"),
        n("checksum_errors")
    );
    let lat = |k: &str, q: &str| {
        m[k][q]
            .as_f64()
            .map(|s| format!("{:.1} ms", s * 1000.0))
            .unwrap_or("-".into())
    };
    out!(
        "latency        fetch p50 {} p99 {} ({} fetches); read p50 {} p99 {}",
        lat("fetch_latency", "p50_seconds"),
        lat("fetch_latency", "p99_seconds"),
        m["fetch_latency"]["count"],
        lat("read_latency", "p50_seconds"),
        lat("read_latency", "p99_seconds")
    );
    let p = &v["prefetch"];
    if p["enabled"].as_bool() == Some(true) {
        out!(
            "prefetch       threshold {:.2}, {} queued; {} issued, {} done ({}), {} used ({}), {} wasted ({}), {} dropped",
            p["threshold"].as_f64().unwrap_or(0.0),
            p["queue_depth"],
            n("prefetch_issued"),
            n("prefetch_completed"),
            ByteSize(n("prefetch_bytes")),
            n("prefetch_used"),
            ByteSize(n("prefetch_used_bytes")),
            n("prefetch_wasted"),
            ByteSize(n("prefetch_wasted_bytes")),
            n("prefetch_dropped")
        );
        out!(
            "               done by source: warm-up {}, read-ahead {}, hints and successors {} blocks",
            n("prefetch_warmup_blocks"),
            n("prefetch_readahead_blocks"),
            n("prefetch_hint_blocks")
        );
        for s in p["snapshots"].as_array().into_iter().flatten() {
            out!(
                "               {}, window {} ms, read-ahead {}",
                s["class"]
                    .as_str()
                    .map_or("workload not yet classified".to_string(), |c| format!(
                        "{c} workload"
                    )),
                s["window_ms"],
                ByteSize(s["readahead_window"].as_u64().unwrap_or(0))
            );
        }
    } else {
        out!("prefetch       disabled");
    }
    let c = &m["cache"];
    let g = |k: &str| c[k].as_u64().unwrap_or(0);
    out!(
        "cache          disk {} in {} blocks (bound {}), memory {} in {} blocks (bound {}); {} corrupt dropped, {} write errors",
        ByteSize(g("disk_bytes")),
        g("disk_entries"),
        ByteSize(g("disk_capacity")),
        ByteSize(g("memory_bytes")),
        g("memory_entries"),
        ByteSize(g("memory_capacity")),
        n("cache_corrupt"),
        n("cache_write_errors")
    );
    Ok(ExitCode::SUCCESS)
}

fn print_inspect(r: &catalog::InspectReport) -> anyhow::Result<()> {
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    out!("snapshot       {} (id {})", r.name, r.id);
    out!("format         version {}", r.format_version);
    out!("created        {}", fmt_time(r.created_ms));
    out!("parent         {}", r.parent.as_deref().unwrap_or("-"));
    out!(
        "volume size    {} ({} bytes)",
        ByteSize(r.volume_size),
        r.volume_size
    );
    out!(
        "block size     {}, {} blocks per group",
        ByteSize(r.block_size as u64),
        r.group_size
    );
    out!(
        "blocks         {} total, {} stored, {} zero ({:.1}% holes)",
        r.blocks,
        r.stored_blocks,
        r.zero_blocks,
        pct(r.zero_blocks, r.blocks)
    );
    out!(
        "stored         {} compressed for {} of data ({:.1}%); {} uploaded by its create",
        ByteSize(r.stored_bytes),
        ByteSize(r.logical_stored_bytes),
        pct(r.stored_bytes, r.logical_stored_bytes),
        ByteSize(r.uploaded_bytes)
    );
    out!(
        "index          {} groups, {} pages, {} bytes",
        r.groups,
        r.pages,
        r.index_bytes
    );
    for w in &r.windows {
        out!(
            "hints, window {}:",
            humantime::format_duration(Duration::from_millis(w.window_ms as u64))
        );
        let hist: Vec<String> = w
            .hint_histogram
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "[{:.1},{:.1}{}:{n}",
                    i as f32 / 10.0,
                    (i + 1) as f32 / 10.0,
                    if i == 9 { "]" } else { ")" }
                )
            })
            .collect();
        out!("  histogram    {}", hist.join(" "));
        let above: Vec<String> = w
            .groups_at_or_above
            .iter()
            .map(|(t, n)| format!(">={t}: {n}"))
            .collect();
        out!("  groups       {}", above.join(", "));
        out!(
            "  successors   {} groups have {} in all",
            w.groups_with_successors,
            w.successors_total
        );
    }
    out!(
        "warm-up        {} groups, {}",
        r.warmup_groups,
        ByteSize(r.warmup_bytes)
    );
    Ok(())
}
