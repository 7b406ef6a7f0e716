//! Progress on long work: an `indicatif` bar (bytes, rate, ETA) when stderr is
//! a terminal, otherwise a log line every [`LOG_EVERY`], so that long jobs
//! under systemd or CI still say how far they are.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};

/// Often enough to see a job is alive, rare enough not to flood a journal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    log_lines: bool,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// `visible = false` reports nothing (library callers, tests).
    pub fn new(label: impl Into<String>, total: u64, visible: bool) -> Progress {
        let label = label.into();
        let tty = std::io::stderr().is_terminal();
        let bar = (visible && tty).then(|| {
            let b = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_message(label.clone());
            b
        });
        let now = Instant::now();
        Progress {
            label,
            total,
            done: AtomicU64::new(0),
            bar,
            log_lines: visible && !tty,
            started: now,
            last_log: Mutex::new(now),
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if self.log_lines {
            let Ok(mut last) = self.last_log.lock() else {
                return;
            };
            if last.elapsed() >= LOG_EVERY {
                *last = Instant::now();
                let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                log::info!(
                    "{}: {} / {} ({:.0}%), {}/s",
                    self.label,
                    ByteSize(done),
                    ByteSize(self.total),
                    100.0 * done as f64 / self.total.max(1) as f64,
                    ByteSize((done as f64 / secs) as u64)
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
