//! A run in flight: blocks stored back to back in one object, fetched with
//! one ranged GET, then decoded and verified one block at a time, each
//! block handed to its readers the moment it is verified.
//!
//! A run is up to [`MAX_RUN_BYTES`] stored (16 blocks of 512 KiB), and its
//! decode (zstd, then BLAKE3) takes 1–2 ms per block on the 2-core
//! machines we measure on, longer while a warm-up decodes beside it. When a
//! run was published whole, a reader that joined it for one block waited
//! for all of them: measured on the trained container start of
//! `bench/coldstart.sh`, the loop mount's reads of blocks 33 and 101 waited
//! 11 and 18 ms for 13- and 11-block warm-up runs whose decodes took 27 and
//! 30 ms. So each block has its own cell ([`RunCells`]), filled as soon as
//! that block is checked, and a demand reader that joins a run marks its
//! block *wanted first*: the decoder takes wanted blocks before the rest,
//! which follow in stored order. Nothing is decoded twice and nothing more
//! is decoded than before; only the order and the hand-off change.
//!
//! Every cell is filled exactly once: with the block, with the error that
//! stopped it (store, length, decompression, checksum), or, if the fetch is
//! abandoned (its task dropped, its decode thread lost), with an internal
//! error, so no reader can wait forever.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{watch, Semaphore};

use super::{gate, link, SlotWait, Want, FETCH_ERRORS};
use crate::cache::BlockCache;
use crate::metrics::Metrics;
use crate::snapshot::{decode_block_cvs, BlockError, BlockErrorKind};
use crate::store::Store;

/// Longest run fetched with one GET: larger runs are split so one request
/// never holds more than this in memory.
pub const MAX_RUN_BYTES: u64 = 8 << 20;

/// The per-block outcomes of one run, shared by its fetch and its readers.
pub(super) struct RunCells {
    cells: Vec<OnceLock<Result<Bytes, BlockError>>>,
    /// How many cells are filled: readers watch it for their own.
    filled: watch::Sender<usize>,
    /// Positions a demand reader waits for, decoded before the others.
    wanted: Mutex<Vec<usize>>,
}

impl RunCells {
    pub(super) fn new(blocks: usize) -> Arc<Self> {
        Arc::new(RunCells {
            cells: (0..blocks).map(|_| OnceLock::new()).collect(),
            filled: watch::Sender::new(0),
            wanted: Mutex::new(Vec::new()),
        })
    }

    /// A demand reader waits for the block at `pos`: decode it next.
    pub(super) fn want_first(&self, pos: usize) {
        if pos < self.cells.len() && self.cells[pos].get().is_none() {
            self.lock_wanted().push(pos);
        }
    }

    /// The outcome for the block at `pos`, as soon as it is known (`None`:
    /// no such position).
    pub(super) async fn wait(&self, pos: usize) -> Option<Result<Bytes, BlockError>> {
        let cell = self.cells.get(pos)?;
        // Subscribed before looking: a fill after the look wakes us.
        let mut rx = self.filled.subscribe();
        loop {
            if let Some(r) = cell.get() {
                return Some(r.clone());
            }
            // The sender lives in `self`, which outlives this call, so
            // this only fails if the channel is closed by hand: look once
            // more and give up.
            if rx.changed().await.is_err() {
                return cell.get().cloned();
            }
        }
    }

    /// Fills the cell at `pos` (first outcome wins) and wakes its readers.
    fn fill(&self, pos: usize, r: Result<Bytes, BlockError>) {
        if self.cells[pos].set(r).is_ok() {
            self.filled.send_modify(|n| *n += 1);
        }
    }

    /// Fills every cell still empty with the error `why(pos)`.
    fn fill_rest(&self, why: impl Fn(usize) -> BlockError) {
        for pos in 0..self.cells.len() {
            if self.cells[pos].get().is_none() {
                self.fill(pos, Err(why(pos)));
            }
        }
    }

    /// The next block to decode: a wanted one, else the first empty cell
    /// from `cursor` on (which it advances).
    fn next(&self, cursor: &mut usize) -> Option<usize> {
        {
            let mut w = self.lock_wanted();
            while let Some(pos) = w.pop() {
                if self.cells[pos].get().is_none() {
                    return Some(pos);
                }
            }
        }
        while *cursor < self.cells.len() {
            let pos = *cursor;
            *cursor += 1;
            if self.cells[pos].get().is_none() {
                return Some(pos);
            }
        }
        None
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        // A poisoned list is still a list of positions.
        self.wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Fills what is left of a run with an internal error when its fetch ends
/// early (dropped task, lost decode thread); a no-op after a full fetch.
pub(super) struct FillOnDrop {
    pub cells: Arc<RunCells>,
    pub run: Arc<[Want]>,
}

impl Drop for FillOnDrop {
    fn drop(&mut self) {
        self.cells
            .fill_rest(|pos| self.run[pos].internal("fetch abandoned"));
    }
}

/// What a run's fetch needs besides its blocks.
pub(super) struct RunEnv {
    pub store: Store,
    pub cache: Arc<BlockCache>,
    pub metrics: Arc<Metrics>,
    pub link: Arc<link::LinkModel>,
    pub slots: Arc<Semaphore>,
    /// Demand runs record their wait for a slot here.
    pub slot_wait: Option<Arc<SlotWait>>,
    /// Prefetch and hydration runs decode through the gate.
    pub gate: Option<(Arc<gate::DecodeGate>, Arc<gate::Ticket>)>,
    /// Hydration: cached without evicting what was read
    /// ([`BlockCache::put_cold`]).
    pub cold: bool,
    /// The run's stored bytes when they are already here (a block the
    /// index carries inline): decoded without a GET.
    pub stored: Option<Bytes>,
}

/// Groups wanted blocks into runs stored back to back in one object.
pub(super) fn runs(wants: &[Want], idx: &[usize]) -> Vec<Vec<usize>> {
    let mut sorted = idx.to_vec();
    sorted.sort_by(|&a, &b| {
        let (x, y) = (&wants[a].block, &wants[b].block);
        (&x.object, x.offset).cmp(&(&y.object, y.offset))
    });
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in sorted {
        let b = &wants[i].block;
        if let Some(run) = out.last_mut() {
            let first = &wants[run[0]].block;
            let last = &wants[run[run.len() - 1]].block;
            if last.object == b.object
                && last.offset + last.length as u64 == b.offset
                && b.offset + b.length as u64 - first.offset <= MAX_RUN_BYTES
            {
                run.push(i);
                continue;
            }
        }
        out.push(vec![i]);
    }
    out
}

/// One GET for the run, then per-block decode, verify and cache on a
/// blocking thread (zstd and BLAKE3 of up to [`MAX_RUN_BYTES`] would stall
/// the async workers that serve other reads), each block's cell filled as
/// it is done.
pub(super) async fn fetch_run(env: &RunEnv, run: Arc<[Want]>, cells: Arc<RunCells>) {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    let key = first.block.object.clone();
    let range = first.block.offset..last.block.offset + last.block.length as u64;
    let asked = Instant::now();
    let (data, started, latency, slot) = match &env.stored {
        Some(b) => {
            Metrics::inc(&env.metrics.inline_blocks);
            (b.clone(), asked, std::time::Duration::ZERO, None)
        }
        None => {
            let slot = env.slots.acquire().await;
            if let Some(w) = &env.slot_wait {
                w.record(asked.elapsed());
            }
            let started = Instant::now();
            let got = env.store.get_range(&key, range.clone()).await;
            let latency = started.elapsed();
            env.metrics.fetch_latency.observe(latency);
            Metrics::inc(&env.metrics.fetches);
            let data = match got {
                Ok(d) => d,
                Err(e) => {
                    Metrics::inc(&env.metrics.fetch_errors);
                    FETCH_ERRORS.error(|| {
                        format!(
                            "fetching blocks {}..={}: {e}",
                            first.block.block_id, last.block.block_id
                        )
                    });
                    let e = Arc::new(e);
                    cells.fill_rest(|pos| {
                        BlockError::new(&run[pos].block, BlockErrorKind::Store(e.clone()))
                    });
                    return;
                }
            };
            Metrics::add(&env.metrics.bytes_fetched, data.len() as u64);
            env.link.record_get(data.len() as u64, latency);
            (data, started, latency, Some(slot))
        }
    };
    let decode = {
        let (run, cells) = (run.clone(), cells.clone());
        let (metrics, link, cache, cold) = (
            env.metrics.clone(),
            env.link.clone(),
            env.cache.clone(),
            env.cold,
        );
        move || {
            let t0 = Instant::now();
            let decoded: u64 = run.iter().map(|w| w.len as u64).sum();
            let mut cursor = 0;
            while let Some(pos) = cells.next(&mut cursor) {
                let w = &run[pos];
                let s = (w.block.offset - range.start) as usize;
                let end = s + w.block.length as usize;
                Metrics::inc(&metrics.blocks_fetched);
                let stored = match data.get(s..end) {
                    Some(_) => data.slice(s..end),
                    None => Bytes::new(),
                };
                let r = decode_block_cvs(stored, &w.block, w.len).map(|(b, cvs)| {
                    if cold {
                        cache.put_cold(w.block.checksum, b.clone(), cvs);
                    } else {
                        cache.put(w.block.checksum, b.clone(), cvs);
                    }
                    b
                });
                if let Err(e) = &r {
                    Metrics::inc(match e.kind {
                        BlockErrorKind::Checksum => &metrics.checksum_errors,
                        _ => &metrics.decode_errors,
                    });
                    FETCH_ERRORS.error(|| e.to_string());
                }
                cells.fill(pos, r);
            }
            link.record_decode(decoded, t0.elapsed());
            log::trace!(
                "run {}..={} ({} blocks, {} B stored): slot {:?}, GET {:?}, decode {:?}",
                run[0].block.block_id,
                run[run.len() - 1].block.block_id,
                run.len(),
                data.len(),
                started - asked,
                latency,
                t0.elapsed()
            );
        }
    };
    // The GET is done: its slot goes to the next one while this run waits
    // to decode.
    drop(slot);
    let _decoding = match &env.gate {
        Some((g, t)) => Some(g.enter(t.clone()).await),
        None => None,
    };
    if tokio::task::spawn_blocking(decode).await.is_err() {
        cells.fill_rest(|pos| run[pos].internal("decode task failed"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u8) -> Result<Bytes, BlockError> {
        Ok(Bytes::from(vec![n; 4]))
    }

    fn wants(n: u64) -> Arc<[Want]> {
        (0..n)
            .map(|i| Want {
                block: crate::snapshot::BlockRef {
                    block_id: i,
                    object: "data/00".into(),
                    offset: i * 4,
                    length: 4,
                    compression: crate::format::page::Compression::None,
                    checksum: [i as u8; 32],
                },
                len: 4,
                range: 0..4,
            })
            .collect()
    }

    #[test]
    fn wanted_blocks_are_decoded_first_then_the_rest_in_order_each_once() {
        let c = RunCells::new(5);
        let mut cursor = 0;
        assert_eq!(c.next(&mut cursor), Some(0));
        c.fill(0, block(0));
        c.want_first(3);
        assert_eq!(c.next(&mut cursor), Some(3));
        c.fill(3, block(3));
        // Wanted again once filled: not decoded twice.
        c.want_first(3);
        let mut order = Vec::new();
        while let Some(p) = c.next(&mut cursor) {
            c.fill(p, block(p as u8));
            order.push(p);
        }
        assert_eq!(order, vec![1, 2, 4]);
    }

    #[tokio::test]
    async fn a_reader_gets_its_block_while_the_rest_of_the_run_is_still_empty() {
        let c = RunCells::new(4);
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait(2).await })
        };
        c.fill(2, block(2));
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .expect("the reader was not woken")
            .expect("reader task");
        assert_eq!(got.expect("position").expect("block").as_ref(), &[2; 4]);
        assert!(c.cells[0].get().is_none() && c.cells[3].get().is_none());
    }

    #[tokio::test]
    async fn an_abandoned_run_fails_its_readers_instead_of_hanging_them() {
        let c = RunCells::new(3);
        c.fill(0, block(0));
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait(1).await })
        };
        drop(FillOnDrop {
            cells: c.clone(),
            run: wants(3),
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .expect("the reader was not woken")
            .expect("reader task");
        assert!(matches!(got, Some(Err(_))), "{got:?}");
        assert!(
            matches!(c.wait(0).await, Some(Ok(_))),
            "a filled block keeps its bytes"
        );
        assert!(c.wait(3).await.is_none(), "no such position");
    }
}
