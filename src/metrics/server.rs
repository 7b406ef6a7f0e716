//! The metrics endpoint: a minimal HTTP/1.1 responder for `GET /metrics`
//! (Prometheus text) and `GET /stats` (JSON), one request per connection,
//! then close. Small on purpose: a scraper every few seconds is its whole
//! load, and a web framework would be most of the binary.
//!
//! A failing `accept` (EMFILE when the process runs out of descriptors,
//! ENOBUFS, ...) is retried after a pause that doubles up to
//! [`MAX_ACCEPT_BACKOFF`], and logged once per outage: retrying at once
//! would spin a core while the condition lasts.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::stats::MountStats;

/// First pause after a failed `accept`.
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause: a scrape interval is seconds, so a second lost to the
/// pause is invisible while a descriptor shortage lasts.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// A request head must arrive within this, in at most [`MAX_HEAD`] bytes.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8192;

/// What the endpoint serves: the mount's stats, taken at each request.
pub type StatsSource = Arc<dyn Fn() -> MountStats + Send + Sync>;

/// The pause after `failures` consecutive failed accepts.
fn backoff(failures: u32) -> Duration {
    MIN_ACCEPT_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_ACCEPT_BACKOFF)
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, stats: StatsSource) {
    let mut failures = 0u32;
    loop {
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => {
                if failures > 0 {
                    log::info!("metrics endpoint accepts connections again");
                }
                failures = 0;
                sock
            }
            Err(e) => {
                if failures == 0 {
                    log::warn!("metrics endpoint: accept failed: {e} (retrying with backoff)");
                }
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            // Read the request head: it may arrive in pieces.
            let mut buf = vec![0u8; MAX_HEAD];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                match tokio::time::timeout(HEAD_TIMEOUT, sock.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    super::prometheus::render(&stats()),
                ),
                "/stats" => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string(&stats()).unwrap_or_default(),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /stats\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound() {
        assert_eq!(backoff(0), MIN_ACCEPT_BACKOFF);
        assert_eq!(backoff(1), MIN_ACCEPT_BACKOFF * 2);
        assert_eq!(backoff(3), MIN_ACCEPT_BACKOFF * 8);
        assert_eq!(backoff(40), MAX_ACCEPT_BACKOFF);
    }

    #[tokio::test]
    async fn serves_metrics_stats_and_404() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let src: StatsSource = Arc::new(|| MountStats {
            mountpoint: "/m".into(),
            ..Default::default()
        });
        let task = tokio::spawn(serve(l, src));
        for (path, want) in [
            ("/metrics", "snapahead_reads_total 0"),
            ("/stats", "\"mountpoint\":\"/m\""),
            ("/x", "404 Not Found"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.contains(want), "{path}: {out}");
        }
        task.abort();
    }
}
