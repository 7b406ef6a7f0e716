//! `latency-proxy`: a TCP proxy on loopback that delays every byte by a
//! fixed one-way delay in each direction, for benchmarks and fault tests.
//!
//! This machine has no `tc netem`, so the latency a real object store has
//! (~10 ms each way to first byte in-region) is injected here instead, and
//! every tool under test (snapahead, rclone, s3fs) goes through the same
//! proxy to the same server.
//!
//! Mechanism, per connection and per direction: a reader task stamps each
//! chunk it reads with `arrival + delay` and queues it; a writer task sleeps
//! until the stamp, then writes the chunk. Chunks keep their order (one
//! queue, one writer), nothing is dropped, and the delay is added once per
//! chunk, not per request: a long response streams at full speed after its
//! first byte, as from a real server. The queue is bounded
//! ([`QUEUE_CHUNKS`]), so a slow receiver pushes back on the sender through
//! TCP as it would without the proxy. An optional per-connection bandwidth
//! cap paces the writer with a simple "next free time" clock.
//!
//! Outages are made by killing the proxy (connections reset, new ones
//! refused) and starting it again on the same port.
//!
//! `--stats FILE` rewrites FILE (temp + rename) every 200 ms with the bytes
//! forwarded so far: `up <bytes>\ndown <bytes>\nconnections <n>\n`, so a
//! benchmark can report the bytes each workload transferred.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction: with 64 KiB reads, 4 MiB queued, more
/// than a 10 ms delay holds at 1.6 GB/s (16 MiB would be the exact
/// bandwidth-delay product, but loopback chunks are usually smaller).
const QUEUE_CHUNKS: usize = 256;
/// Read size per chunk.
const CHUNK: usize = 64 * 1024;
/// How often `--stats` is rewritten.
const STATS_EVERY: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(
    about = "TCP proxy that adds a fixed one-way delay (and optionally a bandwidth cap) to each direction",
    long_about = None
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3910")]
    listen: SocketAddr,
    /// Address to forward to (e.g. Garage's S3 API).
    #[arg(long, default_value = "127.0.0.1:3900")]
    upstream: SocketAddr,
    /// One-way delay added to every byte, each direction, in milliseconds.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    /// Per-connection, per-direction bandwidth cap in bytes per second
    /// (0: none). Suffixes: 100MB, 1GiB...
    #[arg(long, default_value = "0")]
    bandwidth: bytesize::ByteSize,
    /// Write forwarded byte counts to this file every 200 ms.
    #[arg(long)]
    stats: Option<PathBuf>,
}

#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
}

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("latency-proxy: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The address it got (`--listen 127.0.0.1:0` asks for a free port), as
    // the first line on stdout, for whoever started it.
    let bound = listener.local_addr()?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout();
        writeln!(out, "listening on {bound}")?;
        out.flush()?;
    }
    let counters = Arc::new(Counters::default());
    if let Some(path) = args.stats.clone() {
        let c = counters.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = write_stats(&path, &c) {
                    log::warn!("stats file {}: {e}", path.display());
                }
                tokio::time::sleep(STATS_EVERY).await;
            }
        });
    }
    let delay = Duration::from_millis(args.delay_ms);
    let rate = args.bandwidth.as_u64();
    log::info!("{bound} -> {} with {delay:?} each way", args.upstream);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (client, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        log::warn!("accept: {e}");
                        continue;
                    }
                };
                let c = counters.clone();
                let upstream = args.upstream;
                tokio::spawn(async move {
                    if let Err(e) = serve(client, upstream, delay, rate, c).await {
                        log::debug!("{peer}: {e:#}");
                    }
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Some(path) = &args.stats {
        write_stats(path, &counters)?;
    }
    Ok(())
}

fn write_stats(path: &std::path::Path, c: &Counters) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "up {}\ndown {}\nconnections {}\n",
            c.up.load(Relaxed),
            c.down.load(Relaxed),
            c.connections.load(Relaxed)
        ),
    )?;
    std::fs::rename(&tmp, path)
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    delay: Duration,
    rate: u64,
    c: Arc<Counters>,
) -> Result<()> {
    let server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("cannot connect to {upstream}"))?;
    c.connections.fetch_add(1, Relaxed);
    // The proxy must not add Nagle delays of its own.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let c2 = c.clone();
    let up = tokio::spawn(async move {
        pipe(cr, sw, delay, rate, move |n| c2.up.fetch_add(n, Relaxed)).await
    });
    let down = pipe(sr, cw, delay, rate, move |n| c.down.fetch_add(n, Relaxed)).await;
    let up = up.await.context("upstream direction panicked")?;
    up.and(down)
}

/// Forwards `from` to `to`, each chunk `delay` after it arrived.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    rate: u64,
    count: impl Fn(u64) -> u64 + Send + 'static,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            buf.truncate(n);
            if tx.send((Instant::now() + delay, buf)).await.is_err() {
                return Ok(());
            }
        }
    });
    let mut next_free = Instant::now();
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if rate > 0 {
            let now = Instant::now();
            next_free =
                next_free.max(now) + Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
            tokio::time::sleep_until(next_free).await;
        }
        to.write_all(&chunk).await?;
        count(chunk.len() as u64);
    }
    // The other side closed its write half: pass the EOF on.
    let _ = to.shutdown().await;
    reader.await.context("reader panicked")??;
    Ok(())
}
