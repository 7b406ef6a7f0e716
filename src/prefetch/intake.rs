//! Intake: demand reads travel from the FUSE threads to the daemon.
//!
//! A FUSE thread must never wait on the daemon, and at 100k reads/s even a
//! task wake-up per read is too much (it cost ~17% of the IOPS). So a read
//! is pushed onto a short, uncontended `Vec` behind a mutex, and the daemon
//! is woken only when it said it was idle; under load it polls every
//! [`POLL`] and takes the whole batch at once. Past [`EVENT_QUEUE`] pending
//! reads the newest are dropped: prefetch is best effort.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Demand reads waiting for the daemon at most.
pub(super) const EVENT_QUEUE: usize = 4096;
/// How often a busy daemon looks at new demand reads: small against a
/// store's latency (tens of ms), large against a read (µs).
pub(super) const POLL: Duration = Duration::from_millis(2);

/// One demand read of a mounted file (index in mount order).
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadEvent {
    pub file: usize,
    pub offset: u64,
    pub len: u32,
}

#[derive(Default)]
pub(super) struct Intake {
    pending: Mutex<Vec<ReadEvent>>,
    /// Reads accepted into `pending`, in all (the daemon reports how many
    /// it has handled, so a caller can tell when it has caught up).
    accepted: std::sync::atomic::AtomicU64,
    /// The daemon found nothing to do and waits to be woken.
    idle: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Intake {
    /// From a FUSE thread: never blocks for long.
    pub fn push(&self, ev: ReadEvent) {
        if let Ok(mut p) = self.pending.lock() {
            if p.len() < EVENT_QUEUE {
                p.push(ev);
                self.accepted
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if self.idle.swap(false, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Moves every pending read into `batch` (which the daemon keeps, so
    /// its allocation is reused).
    pub fn take(&self, batch: &mut Vec<ReadEvent>) {
        std::mem::swap(
            batch,
            &mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// Declares the daemon idle; true when nothing arrived meanwhile (then
    /// it may sleep until [`Intake::woken`]).
    pub fn go_idle(&self) -> bool {
        self.idle.store(true, Relaxed);
        self.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
    }

    /// Reads accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn busy(&self) {
        self.idle.store(false, Relaxed);
    }

    /// Resolves when a read arrives while the daemon is idle.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_taken_in_one_batch() {
        let i = Intake::default();
        for k in 0..EVENT_QUEUE + 10 {
            i.push(ReadEvent {
                file: 0,
                offset: k as u64,
                len: 1,
            });
        }
        let mut batch = Vec::new();
        i.take(&mut batch);
        assert_eq!(batch.len(), EVENT_QUEUE);
        assert_eq!(batch[0].offset, 0);
        assert!(i.go_idle(), "nothing pending after the take");
        i.push(ReadEvent {
            file: 0,
            offset: 1,
            len: 1,
        });
        assert!(!i.go_idle());
    }
}
