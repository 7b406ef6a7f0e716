//! `hints --evaluate`: replays a held-out session against an index the way
//! the prefetcher uses it, and measures what that would have bought.
//!
//! Replay, for a window W and a threshold T: at the session's start the
//! warm-up groups are prefetched; on the first read of a group in an
//! episode (W, as in learning), the rest of that group is prefetched when
//! its hint ≥ T, and every successor with p ≥ T is prefetched — strengths
//! discounted by the blocks already read or prefetched
//! ([`super::remaining_precision`]). A block is prefetched at most once and
//! never after it was read.
//! - **precision** = prefetched bytes that the session reads within W of
//!   their prefetch (warm-up: within the warm-up window) / prefetched bytes;
//! - **recall** = read bytes whose block had been prefetched before the read
//!   / read bytes (each block counted at its first read).
//!
//! Both per mechanism (warm-up, hint, successor) and overall. Bytes are the
//! blocks' uncompressed sizes.

use std::collections::{HashMap, HashSet};

use super::{Session, StoredBlocks};
use crate::format::ManifestIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    Warmup,
    Hint,
    Successor,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Score {
    pub prefetched_bytes: u64,
    pub useful_bytes: u64,
    pub covered_read_bytes: u64,
    pub precision: f64,
    pub recall: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct Evaluation {
    pub window_ms: u32,
    pub threshold: f32,
    pub read_bytes: u64,
    pub overall: Score,
    pub warmup: Score,
    pub hint: Score,
    pub successor: Score,
}

/// Evaluates window `w` (an index into `index.windows_ms`). `warmup`:
/// replay the warm-up list too; without it the replay shows what hints and
/// successors alone predict (what a session longer than the warm-up window
/// relies on once its start is over).
pub fn evaluate(
    index: &ManifestIndex,
    stored: &StoredBlocks,
    session: &Session,
    w: usize,
    threshold: f32,
    warmup: bool,
) -> Evaluation {
    let window_ns = index.windows_ms.get(w).copied().unwrap_or(0) as u64 * 1_000_000;
    let h = &index.header;
    let len = |b: u64| crate::format::block_len(h.volume_size, h.block_size, b) as u64;
    let start = session.events.first().map_or(0, |e| e.0);
    // block → (prefetch time, mechanism)
    let mut prefetched: HashMap<u64, (u64, Mechanism)> = HashMap::new();
    let mut read: HashSet<u64> = HashSet::new();
    let mut scores: HashMap<Mechanism, Score> = HashMap::new();
    let mut read_bytes = 0;
    // Warm-up: the listed blocks, at the session's start.
    let warmup_list = if warmup { &index.warmup[..] } else { &[] };
    for w in warmup_list {
        for b in w.blocks(h.group_size) {
            if stored.is_stored(b) && !prefetched.contains_key(&b) {
                prefetched.insert(b, (start, Mechanism::Warmup));
                scores
                    .entry(Mechanism::Warmup)
                    .or_default()
                    .prefetched_bytes += len(b);
            }
        }
    }
    // Prefetches the rest of group `g` when the precision of that rest
    // (strength `p` discounted by what is already read or prefetched)
    // reaches the threshold.
    let mut prefetch_group =
        |g: u64,
         p: f32,
         t: u64,
         m: Mechanism,
         read: &HashSet<u64>,
         pf: &mut HashMap<u64, (u64, Mechanism)>| {
            let blocks = stored.by_group.get(&g).map(Vec::as_slice).unwrap_or(&[]);
            let covered = blocks
                .iter()
                .filter(|b| read.contains(b) || pf.contains_key(b))
                .count();
            if super::remaining_precision(p, blocks.len(), covered) < threshold {
                return;
            }
            for &b in blocks {
                if !read.contains(&b) && !pf.contains_key(&b) {
                    pf.insert(b, (t, m));
                    scores.entry(m).or_default().prefetched_bytes += len(b);
                }
            }
        };
    let mut episode_start: HashMap<u64, u64> = HashMap::new();
    let mut useful: Vec<(Mechanism, u64, bool)> = Vec::new();
    for &(t, b) in &session.events {
        if read.insert(b) {
            read_bytes += len(b);
            if let Some(&(tp, m)) = prefetched.get(&b) {
                // Covered: prefetched before this read; useful if read within
                // W of the prefetch (warm-up: within the warm-up window, the
                // horizon it is learned for).
                let horizon = match m {
                    Mechanism::Warmup => window_ns.max(super::WARMUP_WINDOW.as_nanos() as u64),
                    _ => window_ns,
                };
                useful.push((m, len(b), t.saturating_sub(tp) <= horizon));
            }
        }
        let g = b / stored.group_size;
        let new_episode = episode_start.get(&g).is_none_or(|&t0| t > t0 + window_ns);
        if !new_episode {
            continue;
        }
        episode_start.insert(g, t);
        let Some(entry) = index.group(g) else {
            continue;
        };
        let hint = entry.hints.get(w).copied().unwrap_or(0.0);
        prefetch_group(g, hint, t, Mechanism::Hint, &read, &mut prefetched);
        for s in entry.successors.get(w).into_iter().flatten() {
            prefetch_group(
                s.group,
                s.probability,
                t,
                Mechanism::Successor,
                &read,
                &mut prefetched,
            );
        }
    }
    for (m, bytes, in_window) in useful {
        let s = scores.entry(m).or_default();
        s.covered_read_bytes += bytes;
        if in_window {
            s.useful_bytes += bytes;
        }
    }
    let finish = |mut s: Score| {
        s.precision = if s.prefetched_bytes == 0 {
            0.0
        } else {
            s.useful_bytes as f64 / s.prefetched_bytes as f64
        };
        s.recall = if read_bytes == 0 {
            0.0
        } else {
            s.covered_read_bytes as f64 / read_bytes as f64
        };
        s
    };
    let mut overall = Score::default();
    for s in scores.values() {
        overall.prefetched_bytes += s.prefetched_bytes;
        overall.useful_bytes += s.useful_bytes;
        overall.covered_read_bytes += s.covered_read_bytes;
    }
    let get = |m| finish(scores.get(&m).copied().unwrap_or_default());
    Evaluation {
        window_ms: index.windows_ms.get(w).copied().unwrap_or(0),
        threshold,
        read_bytes,
        overall: finish(overall),
        warmup: get(Mechanism::Warmup),
        hint: get(Mechanism::Hint),
        successor: get(Mechanism::Successor),
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::index;
    use super::super::{learn, Session};
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_repeated_session_is_predicted_and_random_noise_is_not() {
        let (ix, stored) = index(8);
        // Every session: reads group 0 whole at start, then group 5 whole.
        let s = || Session {
            events: (0..4)
                .map(|b| (b * 1000, b))
                .chain((20..24).map(|b| (S + b, b)))
                .collect(),
        };
        let learned = learn(&ix, &stored, &[s(), s()], &[2000]);
        let e = evaluate(&learned, &stored, &s(), 0, 0.5, true);
        assert_eq!(e.read_bytes, 8 * 65536);
        // Warm-up covers group 0, and 5 follows 0: all but nothing is missed.
        assert!(e.overall.recall >= 0.99, "{e:?}");
        assert!(e.overall.precision >= 0.99, "{e:?}");
        // A session reading one block of each group: hints of 1.0 now
        // prefetch whole groups that are not read: low precision.
        let other = Session {
            events: (0..8).map(|g| (g * 3 * S, g * 4 + 1)).collect(),
        };
        let e = evaluate(&learned, &stored, &other, 0, 0.5, true);
        assert!(e.overall.precision < 0.5, "{e:?}");
        // A threshold above every hint and probability prefetches only warm-up.
        let e = evaluate(&learned, &stored, &s(), 0, 1.1, true);
        assert_eq!(e.hint.prefetched_bytes + e.successor.prefetched_bytes, 0);
        // Without the warm-up list: the first read of group 0 is a miss,
        // its hint of 1.0 brings the other 3 blocks, its successor group 5
        // all 4: recall 7/8, nothing wasted.
        let e = evaluate(&learned, &stored, &s(), 0, 0.5, false);
        assert_eq!(e.warmup.prefetched_bytes, 0);
        assert_eq!(e.hint.prefetched_bytes, 3 * 65536, "{e:?}");
        assert_eq!(e.successor.prefetched_bytes, 4 * 65536, "{e:?}");
        assert!((e.overall.recall - 7.0 / 8.0).abs() < 1e-9, "{e:?}");
        assert!(e.overall.precision >= 0.99, "{e:?}");
    }
}
