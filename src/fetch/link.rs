//! What the link to the store costs, measured from the mount's own fetches.
//!
//! Every GET reports its stored bytes and its latency (from asking the
//! store to the last byte), every decode its bytes and time. From those the
//! model keeps three numbers:
//! - **round trip** (`rtt`): the latency a GET pays whatever its size: the
//!   smallest latency of the last [`RTT_SAMPLES`] GETs (a minimum filter:
//!   queueing and transfer only ever add to latency, so the smallest recent
//!   sample is the closest to the link's own; a demand GET of one block
//!   carries a few hundred KiB, a millisecond or two of transfer on top).
//!   Only GETs smaller than [`THROUGHPUT_MIN_BYTES`] are samples (a large
//!   one stands in only until the first small one).
//!   An earlier version subtracted each GET's estimated transfer time
//!   first; with a throughput estimate taken under load that went to zero
//!   (`bench/peers.sh` showed a 20 ms link as 0.0 ms), so no unit was ever
//!   fetched.
//! - **throughput per GET** (`bytes/s` of one stream): measured only on GETs
//!   of at least [`THROUGHPUT_MIN_BYTES`], where transfer time is not lost in
//!   the round trip's noise, as a moving average (weight [`EWMA_WEIGHT`]).
//!   Until one such GET was seen it is [`DEFAULT_THROUGHPUT`].
//! - **decode rate** (zstd + BLAKE3 per decoded byte, one thread), the same
//!   way, defaulting to [`DEFAULT_DECODE_RATE`].
//!
//! [`LinkModel::free_bytes`] turns them into the budget the fetch unit
//! uses (`prefetch/unit.rs`): how many stored bytes (and the decoded bytes
//! they become) one more GET can carry while costing at most `fraction` of
//! a round trip. Behind 20 ms at 100+ MB/s that is a megabyte or more. On
//! file:// the round trip is ~0.1 ms and decoding one 512 KiB block
//! ~0.5 ms, so the budget would be below one block anyway; a local store
//! ([`crate::store::Store::is_local`]) is marked as such and gets no budget
//! at all, so a loaded machine's slow local read cannot pass for a remote
//! link.
//!
//! All state is a few atomics and a small ring behind a mutex taken once per
//! GET (not per read): no cost on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Round-trip samples the minimum filter looks at: 32 GETs is a fraction
/// of a second under load, a few seconds when idle, so the estimate
/// follows a changing link without being fooled by one lucky GET long ago.
pub const RTT_SAMPLES: usize = 32;
/// GETs this large measure throughput: at 100 MB/s 1 MiB takes 10 ms, as
/// long as a typical round trip, so transfer time dominates the sample's
/// error.
pub const THROUGHPUT_MIN_BYTES: u64 = 1 << 20;
/// Weight of a new sample in the throughput and decode moving averages:
/// about the last eight samples count.
const EWMA_WEIGHT: f64 = 0.125;
/// Throughput per GET assumed before one was measured: what one stream from
/// S3 in the same region sustains (~90-100 MB/s), so the first estimate is
/// not optimistic for remote stores.
pub const DEFAULT_THROUGHPUT: f64 = 100e6;
/// Decode rate assumed before one was measured: zstd + BLAKE3 on one core
/// of a modest machine (~1 GB/s zstd, ~2 GB/s BLAKE3 together ≈ 600 MB/s).
pub const DEFAULT_DECODE_RATE: f64 = 600e6;
/// Decodes shorter than this are not timed samples (timer noise).
const DECODE_MIN_BYTES: u64 = 256 << 10;

#[derive(Default)]
pub struct LinkModel {
    /// Recent round-trip samples, ns, as a ring.
    rtt: Mutex<(Vec<u64>, usize)>,
    /// Bytes/s per GET, as f64 bits; 0 = not measured yet.
    throughput: AtomicU64,
    /// Decoded bytes/s, as f64 bits; 0 = not measured yet.
    decode: AtomicU64,
    gets: AtomicU64,
}

/// What the model believes now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkEstimate {
    pub rtt: Duration,
    pub throughput: f64,
    pub decode_rate: f64,
    /// GETs measured so far.
    pub samples: u64,
    /// The store is local (file://, memory://): nothing is ever nearly
    /// free, a miss costs less than decoding more blocks.
    pub local: bool,
}

fn ewma(cell: &AtomicU64, sample: f64) {
    let old = f64::from_bits(cell.load(Relaxed));
    let new = if old > 0.0 {
        old + EWMA_WEIGHT * (sample - old)
    } else {
        sample
    };
    cell.store(new.to_bits(), Relaxed);
}

fn load_or(cell: &AtomicU64, default: f64) -> f64 {
    match f64::from_bits(cell.load(Relaxed)) {
        x if x > 0.0 && x.is_finite() => x,
        _ => default,
    }
}

impl LinkModel {
    /// One successful GET of `bytes` stored bytes that took `latency`.
    pub fn record_get(&self, bytes: u64, latency: Duration) {
        let secs = latency.as_secs_f64();
        if bytes >= THROUGHPUT_MIN_BYTES {
            // Transfer time = latency − round trip (as known before this
            // sample; never less than a tenth of the latency, so a sample on
            // a link whose round trip grew cannot explode).
            let rtt = self.estimate().rtt.as_secs_f64();
            let transfer = (secs - rtt).max(secs / 10.0);
            if transfer > 0.0 {
                ewma(&self.throughput, bytes as f64 / transfer);
            }
        }
        let sample = latency.as_nanos().min(u64::MAX as u128) as u64;
        if let Ok(mut g) = self.rtt.lock() {
            let (ring, next) = &mut *g;
            // Large GETs carry their transfer in their latency: they stand
            // for the round trip only until a small one was seen.
            let stands_in = bytes < THROUGHPUT_MIN_BYTES || ring.is_empty();
            if stands_in {
                if ring.len() < RTT_SAMPLES {
                    ring.push(sample);
                } else {
                    ring[*next] = sample;
                }
                *next = (*next + 1) % RTT_SAMPLES;
            }
        }
        self.gets.fetch_add(1, Relaxed);
    }

    /// One decode of `bytes` decoded bytes that took `took`.
    pub fn record_decode(&self, bytes: u64, took: Duration) {
        let secs = took.as_secs_f64();
        if bytes >= DECODE_MIN_BYTES && secs > 0.0 {
            ewma(&self.decode, bytes as f64 / secs);
        }
    }

    pub fn estimate(&self) -> LinkEstimate {
        let rtt_ns = self
            .rtt
            .lock()
            .ok()
            .and_then(|g| g.0.iter().copied().min())
            .unwrap_or(0);
        LinkEstimate {
            rtt: Duration::from_nanos(rtt_ns),
            throughput: load_or(&self.throughput, DEFAULT_THROUGHPUT),
            decode_rate: load_or(&self.decode, DEFAULT_DECODE_RATE),
            samples: self.gets.load(Relaxed),
            local: false,
        }
    }
}

impl LinkEstimate {
    /// Whether `stored` more bytes in a GET, decoding to `decoded` bytes,
    /// cost at most `fraction` of a round trip.
    pub fn nearly_free(&self, stored: u64, decoded: u64, fraction: f64) -> bool {
        if self.local {
            return false;
        }
        let cost = stored as f64 / self.throughput + decoded as f64 / self.decode_rate;
        cost <= fraction * self.rtt.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1000.0)
    }

    #[test]
    fn round_trip_is_the_smallest_recent_latency() {
        let l = LinkModel::default();
        assert_eq!(l.estimate().rtt, Duration::ZERO, "nothing measured");
        // 20 ms GETs of 100 KB, some queued.
        for i in 0..20 {
            l.record_get(100_000, ms(21.0 + (i % 5) as f64 * 3.0));
        }
        let e = l.estimate();
        assert!((e.rtt.as_secs_f64() * 1000.0 - 21.0).abs() < 0.01, "{e:?}");
        // Large GETs under load (a slow throughput estimate) do not drag
        // the round trip to zero.
        for _ in 0..RTT_SAMPLES {
            l.record_get(8 << 20, ms(300.0));
        }
        let e = l.estimate();
        assert!(e.rtt >= ms(20.0), "{e:?}");
        // The link gets slower: once the old samples left the ring, it shows.
        for _ in 0..RTT_SAMPLES {
            l.record_get(100_000, ms(41.0));
        }
        assert!((l.estimate().rtt.as_secs_f64() * 1000.0 - 41.0).abs() < 0.01);
    }

    #[test]
    fn throughput_comes_from_large_gets_only() {
        let l = LinkModel::default();
        for _ in 0..10 {
            l.record_get(10_000, ms(10.0));
        }
        assert_eq!(l.estimate().throughput, DEFAULT_THROUGHPUT);
        // 10 ms round trip + 8 MiB at 400 MB/s (21 ms).
        for _ in 0..40 {
            l.record_get(8 << 20, ms(10.0 + 8.0 * 1048.576 / 400.0));
        }
        let t = l.estimate().throughput;
        assert!((t / 400e6 - 1.0).abs() < 0.05, "{t}");
    }

    #[test]
    fn budget_is_below_a_block_on_a_local_store_and_large_behind_latency() {
        let block = 512u64 << 10;
        let local = LinkEstimate {
            rtt: ms(0.1),
            throughput: 2e9,
            decode_rate: 1e9,
            samples: 100,
            local: false,
        };
        assert!(!local.nearly_free(block / 4, block, 0.5));
        let remote = LinkEstimate {
            rtt: ms(20.0),
            throughput: 125e6,
            decode_rate: 1e9,
            samples: 100,
            local: false,
        };
        // 8 blocks compressed 4:1: 1 MiB stored, 4 MiB decoded ≈ 8.4 + 4.2 ms.
        assert!(remote.nearly_free(8 * block / 4, 8 * block, 0.75));
        assert!(!remote.nearly_free(32 * block / 4, 32 * block, 0.75));
    }

    #[test]
    fn decode_rate_ignores_tiny_decodes() {
        let l = LinkModel::default();
        l.record_decode(4096, Duration::from_micros(1));
        assert_eq!(l.estimate().decode_rate, DEFAULT_DECODE_RATE);
        l.record_decode(1 << 20, ms(1.0));
        assert!((l.estimate().decode_rate / 1.048576e9 - 1.0).abs() < 0.01);
    }
}
