//! `hints --evaluate`: replays a held-out session against an index the way
//! the prefetcher uses it, and measures what that would have bought.
//!
//! Replay, for a window W and a threshold T: at the session's start what a
//! mount from a remote store fetches at once is prefetched
//! ([`super::warmup::MountStart`]: the warm-up core's first stretch and
//! the probes, or, for an index without a warm-up, the prior's metadata),
//! the rest of the core as the session's reads move along it
//! ([`super::timeline`]), and a workload group's
//! warm-up blocks once
//! the first reads match its signature ([`super::warmup::Matcher`]); on
//! the first read of a group in an episode (W, as in learning), what
//! [`super::rule`] selects of the group and its successors (by block
//! masks, in the matching context); on a read nothing prefetched, the
//! directory it falls in when [`super::directory`]'s rule fires. A block
//! is prefetched at most once and never after it was read.
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
    Directory,
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
    pub directory: Score,
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
    evaluate_marks(index, stored, session, w, threshold, warmup).0
}

/// What happened to one block in a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Read, and prefetched before.
    Hit,
    /// Read, not prefetched.
    Miss,
    /// Prefetched, never read in the session.
    Waste,
}

/// A block's outcome and when (the read; for waste, the prefetch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub t_ns: u64,
    pub block: u64,
    pub outcome: Outcome,
}

/// [`evaluate`], and every block's [`Outcome`] (for `trace plot`; a mark
/// per distinct block, which an offline replay can afford).
pub fn evaluate_marks(
    index: &ManifestIndex,
    stored: &StoredBlocks,
    session: &Session,
    w: usize,
    threshold: f32,
    warmup: bool,
) -> (Evaluation, Vec<Mark>) {
    let mut marks = Vec::new();
    let window_ns = index.windows_ms.get(w).copied().unwrap_or(0) as u64 * 1_000_000;
    let warm_ns = super::WARMUP_WINDOW.as_nanos() as u64;
    let h = &index.header;
    let len = |b: u64| crate::format::block_len(h.volume_size, h.block_size, b) as u64;
    let start = session.events.first().map_or(0, |e| e.0);
    // block → (prefetch time, mechanism)
    let mut prefetched: HashMap<u64, (u64, Mechanism)> = HashMap::new();
    let mut read: HashSet<u64> = HashSet::new();
    let mut scores: HashMap<Mechanism, Score> = HashMap::new();
    let mut read_bytes = 0;
    let mut prefetch = |b: u64,
                        t: u64,
                        m: Mechanism,
                        pf: &mut HashMap<u64, (u64, Mechanism)>,
                        read: &HashSet<u64>| {
        if stored.is_stored(b) && !read.contains(&b) && !pf.contains_key(&b) {
            pf.insert(b, (t, m));
            scores.entry(m).or_default().prefetched_bytes += len(b);
        }
    };
    // Warm-up: the mount's start at the session's start; a workload group's
    // blocks once the first reads match its signature.
    let mut matcher = warmup.then(|| super::warmup::Matcher::new(index));
    // What a mount from a remote store fetches from the start: the core's
    // first stretch (the rest as the session moves along it, as at mount:
    // `super::timeline`) and the probes, or, without a warm-up, the
    // prior's metadata.
    let mut timeline = None;
    if warmup {
        let ms = super::warmup::MountStart::of(index, true);
        let (gs, bs) = (h.group_size, h.block_size);
        let mut t = super::timeline::Timeline::new(&ms.warmup, gs, bs, |_| true);
        let core = t.release().into_iter().flat_map(|j| j.1);
        for b in core.chain(ms.probes).chain(ms.metadata) {
            prefetch(b, start, Mechanism::Warmup, &mut prefetched, &read);
        }
        timeline = Some(t);
    }
    let mut episode_start: HashMap<u64, u64> = HashMap::new();
    let mut recent = super::Recent::default();
    let history = index.history as usize;
    let mut useful: Vec<(Mechanism, u64, bool)> = Vec::new();
    let dirs = super::directory::Directories::new(index.prior.as_ref());
    let mut walks = super::directory::Walks::default();
    for &(t, b) in &session.events {
        let mut missed = false;
        if read.insert(b) {
            missed = !prefetched.contains_key(&b);
            read_bytes += len(b);
            marks.push(Mark {
                t_ns: t,
                block: b,
                outcome: if prefetched.contains_key(&b) {
                    Outcome::Hit
                } else {
                    Outcome::Miss
                },
            });
            if let Some(&(tp, m)) = prefetched.get(&b) {
                // Covered: prefetched before this read; useful if read within
                // W of the prefetch (warm-up: within the warm-up window, the
                // horizon it is learned for).
                let horizon = match m {
                    Mechanism::Warmup => window_ns.max(warm_ns),
                    _ => window_ns,
                };
                useful.push((m, len(b), t.saturating_sub(tp) <= horizon));
            }
        }
        if let Some(tl) = timeline.as_mut() {
            if tl.on_read(b..b + 1).is_some() {
                for x in tl.release().into_iter().flat_map(|j| j.1) {
                    prefetch(x, t, Mechanism::Warmup, &mut prefetched, &read);
                }
            }
        }
        if let Some(mt) = matcher.as_mut().filter(|_| t - start <= warm_ns) {
            for gi in mt.on_block(b) {
                for e in &index.warmup_groups[gi].blocks {
                    for x in e.blocks(h.group_size) {
                        prefetch(x, t, Mechanism::Warmup, &mut prefetched, &read);
                    }
                }
            }
        }
        if let Some(p) = index.prior.as_ref() {
            if let Some(d) = walks.on_read(&dirs, b, threshold, || missed) {
                for x in super::directory::blocks(p, d) {
                    prefetch(x, t, Mechanism::Directory, &mut prefetched, &read);
                }
            }
        }
        let g = b / stored.group_size;
        let before = recent.before(g, history);
        recent.push(g, history);
        let new_episode = episode_start.get(&g).is_none_or(|&t0| t > t0 + window_ns);
        if !new_episode {
            continue;
        }
        episode_start.insert(g, t);
        let entry = b - g * stored.group_size;
        let walked = dirs.governs(b, threshold);
        for c in super::rule::candidates(index, g, entry, w, &before, walked) {
            if !c.may_pass(threshold) {
                continue;
            }
            let blocks = stored
                .by_group
                .get(&c.group)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let first = c.group * stored.group_size;
            let pick = c.select(blocks, first, threshold, |x| {
                read.contains(&x) || prefetched.contains_key(&x) || dirs.governs(x, threshold)
            });
            let m = match c.source {
                super::rule::Source::Hint => Mechanism::Hint,
                super::rule::Source::Successor => Mechanism::Successor,
            };
            for x in pick {
                prefetch(x, t, m, &mut prefetched, &read);
            }
        }
    }
    marks.extend(prefetched.iter().filter(|(b, _)| !read.contains(b)).map(
        |(&block, &(t_ns, _))| Mark {
            t_ns,
            block,
            outcome: Outcome::Waste,
        },
    ));
    marks.sort_by_key(|m| (m.t_ns, m.block));
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
    let e = Evaluation {
        window_ms: index.windows_ms.get(w).copied().unwrap_or(0),
        threshold,
        read_bytes,
        overall: finish(overall),
        warmup: get(Mechanism::Warmup),
        hint: get(Mechanism::Hint),
        successor: get(Mechanism::Successor),
        directory: get(Mechanism::Directory),
    };
    (e, marks)
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

    #[test]
    fn a_walk_entering_a_group_does_not_drag_in_the_groups_other_workload() {
        let (mut ix, stored) = index(8);
        // Under P: B (blocks 0-1, below the floor, so the hints' where they
        // have any), A (2-5, straddling groups 0 and 1), C (8-11).
        ix.prior = Some(crate::predict::directory::tests::prior_of(&[
            (1, 0, 2),
            (1, 2, 4),
            (1, 8, 4),
        ]));
        // Three sessions read B whole (group 0's mask learns blocks 0-1),
        // one walks C: P learns that its children are read whole.
        let b = || Session {
            events: vec![(0, 0), (1000, 1)],
        };
        let c = Session {
            events: (8..12).map(|x| (x * 1000, x)).collect(),
        };
        let learned = learn(&ix, &stored, &[b(), b(), b(), c], &[2000]);
        // A walk of A, never seen: the rule brings A; group 0's hint, which
        // is B's workload, is not asked, as the walk entered group 0 in A.
        let walk = Session {
            events: (2..6).map(|x| (x * 1000, x)).collect(),
        };
        let e = evaluate(&learned, &stored, &walk, 0, 0.5, false);
        assert_eq!(e.directory.prefetched_bytes, 3 * 65536, "{e:?}");
        assert_eq!(e.hint.prefetched_bytes, 0, "{e:?}");
        assert!(e.overall.precision > 0.99, "{e:?}");
        // B's own session still gets block 1 after block 0 (the rule is
        // first to it: B is under the floor, yet walked).
        let e = evaluate(&learned, &stored, &b(), 0, 0.5, false);
        assert_eq!(e.overall.useful_bytes, 65536, "{e:?}");
    }

    #[test]
    fn a_walked_directory_is_fetched_by_the_rule_and_left_alone_by_hints() {
        let (mut ix, stored) = index(8);
        // Groups 0-3 are four sibling directories of 4 blocks each.
        ix.prior = Some(crate::predict::directory::tests::prior());
        // Two walks of the first two directories: hints learn group 0 and
        // its successor group 1; the directory rule learns affinity 0.8.
        let s = || Session {
            events: (0..8).map(|b| (b * 1000, b)).collect(),
        };
        let learned = learn(&ix, &stored, &[s(), s()], &[2000]);
        let e = evaluate(&learned, &stored, &s(), 0, 0.5, false);
        // Each directory's first read is a miss that brings its other 3
        // blocks; hints and successors take none of them.
        assert_eq!(e.directory.prefetched_bytes, 6 * 65536, "{e:?}");
        assert_eq!(
            e.hint.prefetched_bytes + e.successor.prefetched_bytes,
            0,
            "{e:?}"
        );
        assert!((e.overall.recall - 6.0 / 8.0).abs() < 1e-9, "{e:?}");
        // Without the prior, the same index predicts by hints: successor 1.
        let mut plain = learned.clone();
        plain.prior = None;
        let e = evaluate(&plain, &stored, &s(), 0, 0.5, false);
        assert_eq!(e.directory.prefetched_bytes, 0);
        assert_eq!(e.successor.prefetched_bytes, 4 * 65536, "{e:?}");
    }

    /// A core larger than the timeline's first stretch is replayed as a
    /// mount fetches it: a session that reads all of it in order has it
    /// all ahead of its reads; one that jumps from the start to the last
    /// entry costs the first stretch and that entry, not the whole core.
    #[test]
    fn the_replay_fetches_the_core_a_stretch_ahead_as_a_mount_does() {
        let (mut ix, stored) = index(64);
        // 1 MiB blocks: a first stretch of 128 blocks, half of the 256.
        let mib = 1u64 << 20;
        ix.header.block_size = mib as u32;
        ix.header.volume_size = 256 * mib;
        let stretch = crate::predict::timeline::lookahead_blocks(mib as u32) as u64;
        assert_eq!(stretch, 128);
        let all = || Session {
            events: (0..256).map(|b| (b * 1_000_000, b)).collect(),
        };
        let learned = learn(&ix, &stored, &[all(), all()], &[2000]);
        let core: usize = learned.warmup.iter().map(|w| w.blocks(4).count()).sum();
        assert_eq!(core, 256);
        let e = evaluate(&learned, &stored, &all(), 0, 0.5, true);
        assert_eq!(e.warmup.prefetched_bytes, 256 * mib, "{e:?}");
        assert_eq!(e.warmup.useful_bytes, 256 * mib, "{e:?}");
        let jump = Session {
            events: vec![(0, 0), (1_000_000, 252), (2_000_000, 253)],
        };
        let e = evaluate(&learned, &stored, &jump, 0, 0.5, true);
        // The last entry's 4 blocks but the one whose read released them.
        assert_eq!(e.warmup.prefetched_bytes, (stretch + 3) * mib, "{e:?}");
    }

    /// An index without a warm-up is replayed as a mount uses it: the
    /// prior's metadata at the session's start (with the warm-up on), as a
    /// mount from a remote store fetches it.
    #[test]
    fn without_a_warm_up_the_replay_fetches_the_priors_metadata_as_a_mount_does() {
        let (mut ix, stored) = index(8);
        let mut prior = crate::predict::directory::tests::prior();
        prior.metadata = vec![crate::format::BlockRun { first: 0, count: 2 }];
        ix.prior = Some(prior);
        assert!(ix.warmup.is_empty());
        let s = Session {
            events: vec![(0, 0), (1000, 1), (2000, 20)],
        };
        let e = evaluate(&ix, &stored, &s, 0, 0.5, true);
        assert_eq!(e.warmup.prefetched_bytes, 2 * 65536, "{e:?}");
        assert_eq!(e.warmup.useful_bytes, 2 * 65536, "{e:?}");
        let e = evaluate(&ix, &stored, &s, 0, 0.5, false);
        assert_eq!(e.warmup.prefetched_bytes, 0, "{e:?}");
    }
}
