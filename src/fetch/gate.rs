//! The decode gate: which fetched run is decoded next.
//!
//! Decoding a run (zstd, then BLAKE3 of every block) is CPU work: about
//! 500 MB/s of volume per core on the 2-core machines we measure on. A
//! mount's warm-up starts dozens of GETs together; their data arrives in
//! whatever order the store answers, and decoding all of it at once shares
//! the cores among every run, so the block the first read waits for (an
//! ext4 superblock, say) finishes as late as the last. Measured on the
//! trained container start of `bench/coldstart.sh`: the loop mount's first
//! read waited for a run that had arrived among the first and was decoded
//! among the last.
//!
//! So prefetch and hydration decodes pass through this gate, at most one
//! per CPU at a time, and a free place goes to the waiting run with the
//! smallest *order*, the prefetcher's rank of the job it belongs to
//! (priority, then age: the warm-up in first-read order before hints,
//! hints before hydration).
//!
//! A demand read's own runs never enter the gate, and a run a demand read
//! has joined (marked *urgent* by the reader) leaves the line at once:
//! both decode beside whatever prefetch is decoding (one extra thread on
//! the cores for as long as that run takes, against a reader waiting
//! behind prefetch). A sequential reader's next block is always in a
//! read-ahead run: without this it could wait for other runs' decodes at
//! every step. (Cold sequential reads through read-ahead measured the same
//! with the gate and without: docs/benchmarks.md, "Hints that generalize".)
//! The gate is work-conserving: a place never waits for a run that has
//! not arrived yet.
//!
//! What it bought (`bench/coldstart.sh`, beside the build before): the
//! container start's loop mount 0.15 → 0.09 s; the whole start did not
//! move, as that start is CPU-bound: ordering decodes changes who waits,
//! not how much work stands before the programs' reads. The trade-off is throughput for order: with one place
//! per CPU the cores also serve the FUSE threads and the readers'
//! programs, where an unbounded pool had them all decoding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A run's place in line.
#[derive(Debug)]
pub struct Ticket {
    order: u64,
    urgent: AtomicBool,
    /// Wakes the run waiting at the gate when it becomes urgent.
    woken: tokio::sync::Notify,
}

impl Ticket {
    pub fn new(order: u64) -> Arc<Self> {
        Arc::new(Ticket {
            order,
            urgent: AtomicBool::new(false),
            woken: tokio::sync::Notify::new(),
        })
    }

    /// A demand read waits for this run: it decodes without waiting for a
    /// place.
    pub fn make_urgent(&self) {
        if !self.urgent.swap(true, Ordering::SeqCst) {
            self.woken.notify_one();
        }
    }

    fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::SeqCst)
    }
}

struct State {
    free: usize,
    waiting: Vec<(Arc<Ticket>, oneshot::Sender<()>)>,
}

/// At most `places` runs decode at once; see the module doc for who is next.
pub struct DecodeGate {
    state: Mutex<State>,
}

/// A place in the gate, given back when dropped (or leave to decode
/// without one: an urgent run).
pub struct Pass<'a> {
    gate: &'a DecodeGate,
    holds_place: bool,
}

impl DecodeGate {
    pub fn new(places: usize) -> Self {
        DecodeGate {
            state: Mutex::new(State {
                free: places.max(1),
                waiting: Vec::new(),
            }),
        }
    }

    /// Waits for a place for the run holding `ticket`, or until it turns
    /// urgent.
    pub async fn enter(&self, ticket: Arc<Ticket>) -> Pass<'_> {
        let pass = |holds_place| Pass {
            gate: self,
            holds_place,
        };
        let mut rx = {
            let mut s = self.lock();
            if s.free > 0 {
                s.free -= 1;
                return pass(true);
            }
            if ticket.is_urgent() {
                return pass(false);
            }
            let (tx, rx) = oneshot::channel();
            s.waiting.push((ticket.clone(), tx));
            rx
        };
        loop {
            tokio::select! {
                // The sender is only dropped after sending (a place handed
                // over) or with the gate itself; either way, go on.
                _ = &mut rx => return pass(true),
                _ = ticket.woken.notified() => {
                    if !ticket.is_urgent() {
                        continue;
                    }
                    let left_line = {
                        let mut s = self.lock();
                        let at = s.waiting.iter().position(|(t, _)| Arc::ptr_eq(t, &ticket));
                        at.map(|i| s.waiting.swap_remove(i)).is_some()
                    };
                    if left_line {
                        return pass(false);
                    }
                    // Out of line already: a place was just handed to it.
                    let _ = rx.await;
                    return pass(true);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a freed place to the best waiter, or keeps it free.
    fn release(&self) {
        let mut s = self.lock();
        while !s.waiting.is_empty() {
            let best = (0..s.waiting.len())
                .min_by_key(|&i| s.waiting[i].0.order)
                .unwrap_or(0);
            let (_, tx) = s.waiting.swap_remove(best);
            if tx.send(()).is_ok() {
                return;
            }
            // That waiter is gone (its task dropped): the next one.
        }
        s.free += 1;
    }

    /// Runs waiting for a place (for tests and stats).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.holds_place {
            self.gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits (polling, under a deadline) until `n` runs wait at the gate.
    async fn until_waiting(g: &DecodeGate, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while g.waiting() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waiters never queued"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_freed_place_goes_to_the_smallest_order_and_an_urgent_run_goes_at_once() {
        let gate = Arc::new(DecodeGate::new(1));
        let first = gate.enter(Ticket::new(0)).await;
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let tickets: Vec<Arc<Ticket>> = [30, 10, 20].into_iter().map(Ticket::new).collect();
        let mut passes = Vec::new();
        for t in &tickets {
            let (g, t, tx) = (gate.clone(), t.clone(), done_tx.clone());
            let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
            passes.push(hold_tx);
            tokio::spawn(async move {
                let _p = g.enter(t.clone()).await;
                let _ = tx.send(t.order);
                // Holds its place (if any) until the test lets go.
                let _ = hold_rx.await;
            });
        }
        until_waiting(&gate, 3).await;
        // A reader joins the run of order 30: it decodes without a place,
        // while the first still holds the only one.
        tickets[0].make_urgent();
        assert_eq!(done.recv().await, Some(30));
        assert_eq!(gate.waiting(), 2);
        drop(passes.remove(0));
        // The place, freed, goes by order: 10, then 20.
        drop(first);
        assert_eq!(done.recv().await, Some(10));
        drop(passes.remove(0));
        assert_eq!(done.recv().await, Some(20));
        drop(passes.remove(0));
        // Every place came back, and the urgent run took none.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while gate.lock().free != 1 {
            assert!(tokio::time::Instant::now() < deadline, "a place was lost");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_run_urgent_before_it_arrives_does_not_wait() {
        let gate = DecodeGate::new(1);
        let _held = gate.enter(Ticket::new(0)).await;
        let t = Ticket::new(5);
        t.make_urgent();
        let p = gate.enter(t).await;
        assert!(!p.holds_place);
    }

    #[tokio::test]
    async fn places_bound_the_runs_inside() {
        let gate = Arc::new(DecodeGate::new(2));
        let a = gate.enter(Ticket::new(1)).await;
        let b = gate.enter(Ticket::new(2)).await;
        let g = gate.clone();
        let third = tokio::spawn(async move {
            let _p = g.enter(Ticket::new(3)).await;
        });
        until_waiting(&gate, 1).await;
        assert!(!third.is_finished());
        drop(a);
        third.await.expect("the third run got the freed place");
        drop(b);
        assert_eq!(gate.lock().free, 2);
    }
}
