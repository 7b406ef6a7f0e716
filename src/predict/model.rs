//! Learning hints, successors and the warm-up list from sessions: pure
//! computation over [`Session`]s and the snapshot's [`StoredBlocks`], with
//! no store and no I/O, so every rule of the module doc of [`super`] is
//! tested with hand-made sessions.

use std::collections::HashMap;

use anyhow::{bail, Context};

use super::{
    Session, StoredBlocks, MAX_SUCCESSORS, MIN_SUCCESSOR_P, SCAN_GROUPS, SCAN_TOUCHES,
    WARMUP_MIN_PRECISION, WARMUP_SHARE, WARMUP_WINDOW,
};
use crate::format::{ManifestIndex, Successor, WarmUp};

#[derive(Default)]
struct GroupStats {
    episodes: u64,
    fraction_sum: f64,
    /// successor → sum over episodes of the fraction of it read in the window
    successors: HashMap<u64, f64>,
}

/// What learning produced for one window.
struct WindowModel {
    stats: HashMap<u64, GroupStats>,
}

fn learn_window(sessions: &[Session], stored: &StoredBlocks, window_ns: u64) -> WindowModel {
    let mut stats: HashMap<u64, GroupStats> = HashMap::new();
    for s in sessions {
        // Episodes: open[g] = (start time, distinct blocks read, touch index).
        let mut open: HashMap<u64, (u64, std::collections::HashSet<u64>)> = HashMap::new();
        let mut starts: Vec<(usize, u64, u64)> = Vec::new(); // (event index, t0, g)
        let close = |stats: &mut HashMap<u64, GroupStats>, g: u64, blocks: usize| {
            let n = stored.by_group.get(&g).map_or(1, |v| v.len().max(1));
            let st = stats.entry(g).or_default();
            st.episodes += 1;
            st.fraction_sum += blocks as f64 / n as f64;
        };
        for (ei, &(t, b)) in s.events.iter().enumerate() {
            let g = b / stored.group_size;
            match open.get_mut(&g) {
                Some((t0, blocks)) if t <= *t0 + window_ns => {
                    blocks.insert(b);
                }
                other => {
                    if let Some((_, blocks)) = other {
                        let n = blocks.len();
                        close(&mut stats, g, n);
                    }
                    open.insert(g, (t, std::iter::once(b).collect()));
                    starts.push((ei, t, g));
                }
            }
        }
        for (g, (_, blocks)) in open {
            close(&mut stats, g, blocks.len());
        }
        // Successors: how much of each other group is read within the
        // window after each episode start.
        for (ei, t0, g) in starts {
            let mut seen: HashMap<u64, std::collections::HashSet<u64>> = HashMap::new();
            for &(t, b) in s.events.iter().skip(ei).take(SCAN_TOUCHES) {
                if t > t0 + window_ns {
                    break;
                }
                let h = b / stored.group_size;
                if h != g && (seen.contains_key(&h) || seen.len() < SCAN_GROUPS) {
                    seen.entry(h).or_default().insert(b);
                }
            }
            let st = stats.entry(g).or_default();
            for (h, blocks) in seen {
                let n = stored.by_group.get(&h).map_or(1, |v| v.len().max(1));
                *st.successors.entry(h).or_default() += blocks.len() as f64 / n as f64;
            }
        }
    }
    WindowModel { stats }
}

/// Whether early reads repeat across sessions: the mean, over ordered
/// pairs of sessions (i, j), of the share of j's early blocks that i also
/// reads early — the precision warm-up learned from j would have had on
/// i. A start-up or a scan repeats its blocks (≈ 1); random I/O shares
/// blocks only by chance (≈ the fraction of the volume it touches), and
/// warming up that overlap would be waste.
fn early_reads_repeat(sessions: &[Session], stored: &StoredBlocks) -> bool {
    let _ = stored;
    if sessions.len() < 2 {
        return true;
    }
    let limit = WARMUP_WINDOW.as_nanos() as u64;
    let sets: Vec<std::collections::HashSet<u64>> = sessions
        .iter()
        .map(|s| {
            let start = s.events.first().map_or(0, |e| e.0);
            s.events
                .iter()
                .take_while(|e| e.0 - start <= limit)
                .map(|e| e.1)
                .collect()
        })
        .collect();
    let mut sum = 0.0;
    let mut pairs = 0;
    for (i, a) in sets.iter().enumerate() {
        for (j, b) in sets.iter().enumerate() {
            if i != j && !b.is_empty() {
                sum += b.iter().filter(|x| a.contains(x)).count() as f64 / b.len() as f64;
                pairs += 1;
            }
        }
    }
    pairs > 0 && sum / pairs as f64 >= WARMUP_MIN_PRECISION
}

/// The warm-up list: blocks first read within [`WARMUP_WINDOW`] of a
/// session's start in more than [`WARMUP_SHARE`] of the sessions, grouped by
/// group, groups ordered by the median time their first such block is read.
fn learn_warmup(sessions: &[Session], stored: &StoredBlocks) -> Vec<WarmUp> {
    if sessions.is_empty() {
        return Vec::new();
    }
    let limit = WARMUP_WINDOW.as_nanos() as u64;
    // block → first-read times (relative), one per session that read it early
    let mut early: HashMap<u64, Vec<u64>> = HashMap::new();
    for s in sessions {
        let Some(&(start, _)) = s.events.first() else {
            continue;
        };
        let mut seen = std::collections::HashSet::new();
        for &(t, b) in &s.events {
            // Relative to the session's first read: mounting and the
            // workload starting are not part of the pattern.
            let rel = t - start;
            if rel > limit {
                break;
            }
            if seen.insert(b) {
                early.entry(b).or_default().push(rel);
            }
        }
    }
    if !early_reads_repeat(sessions, stored) {
        return Vec::new();
    }
    let need = (WARMUP_SHARE * sessions.len() as f64).floor() as usize + 1;
    // group → (its blocks, their median first-read times)
    let mut groups: HashMap<u64, (Vec<u64>, Vec<u64>)> = HashMap::new();
    for (b, mut ts) in early.into_iter().filter(|(_, ts)| ts.len() >= need) {
        ts.sort_unstable();
        let e = groups.entry(b / stored.group_size).or_default();
        e.0.push(b);
        e.1.push(ts[ts.len() / 2]);
    }
    let mut warm: Vec<(u64, u64, Vec<u64>)> = groups
        .into_iter()
        .map(|(g, (blocks, times))| (times.into_iter().min().unwrap_or(0), g, blocks))
        .collect();
    warm.sort_unstable_by_key(|w| (w.0, w.1));
    warm.into_iter()
        .map(|(_, g, blocks)| WarmUp::new(g, stored.group_size as u32, blocks))
        .collect()
}

/// Learns hints, successors and warm-up for `windows_ms` from `sessions`
/// and returns the new index (data and pages untouched).
pub fn learn(
    index: &ManifestIndex,
    stored: &StoredBlocks,
    sessions: &[Session],
    windows_ms: &[u32],
) -> ManifestIndex {
    let mut out = index.clone();
    out.windows_ms = windows_ms.to_vec();
    let models: Vec<WindowModel> = windows_ms
        .iter()
        .map(|ms| learn_window(sessions, stored, *ms as u64 * 1_000_000))
        .collect();
    for g in &mut out.groups {
        g.hints = Vec::with_capacity(models.len());
        g.successors = Vec::with_capacity(models.len());
        for m in &models {
            let st = m.stats.get(&g.group);
            let hint = st
                .filter(|s| s.episodes > 0)
                .map_or(0.0, |s| (s.fraction_sum / s.episodes as f64) as f32)
                .clamp(0.0, 1.0);
            g.hints.push(hint);
            let mut succ: Vec<Successor> = st
                .map(|s| {
                    s.successors
                        .iter()
                        .map(|(&h, &sum)| Successor {
                            group: h,
                            probability: (sum / s.episodes.max(1) as f64).min(1.0) as f32,
                        })
                        // Only groups with data are worth prefetching.
                        .filter(|x| {
                            x.probability >= MIN_SUCCESSOR_P && index.group(x.group).is_some()
                        })
                        .collect()
                })
                .unwrap_or_default();
            succ.sort_by(|a, b| {
                b.probability
                    .total_cmp(&a.probability)
                    .then(a.group.cmp(&b.group))
            });
            succ.truncate(MAX_SUCCESSORS);
            g.successors.push(succ);
        }
    }
    out.warmup = learn_warmup(sessions, stored);
    out
}

/// The expected precision of prefetching the rest of a group whose
/// strength (hint or successor probability) is `p`, when `covered` of its
/// `stored` blocks are already read or prefetched: the expected `p·stored`
/// blocks read include the covered ones first, so the remainder holds
/// `p·stored − covered` of them. (Without this, a group half read by a
/// workload and already warmed up would be "prefetched" for its other,
/// never-read half.)
pub fn remaining_precision(p: f32, stored: usize, covered: usize) -> f32 {
    if covered >= stored {
        return 0.0;
    }
    ((p * stored as f32 - covered as f32) / (stored - covered) as f32).clamp(0.0, 1.0)
}

/// Parses `2s,10s` into milliseconds.
pub fn parse_windows(s: &str) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = humantime::parse_duration(part).with_context(|| format!("window {part:?}"))?;
        let ms = u32::try_from(d.as_millis()).ok().filter(|&m| m > 0);
        out.push(
            ms.ok_or_else(|| anyhow::anyhow!("window {part:?} must be between 1 ms and 49 days"))?,
        );
    }
    if out.is_empty() || out.len() > crate::format::index::MAX_WINDOWS {
        bail!(
            "give 1 to {} windows, e.g. 2s,10s",
            crate::format::index::MAX_WINDOWS
        );
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::{GroupEntry, Id, SnapshotHeader};
    use crate::name::SnapshotName;

    /// An index of `groups` full groups of 4 blocks (64 KiB blocks).
    pub(crate) fn index(groups: u64) -> (ManifestIndex, StoredBlocks) {
        let gs = 4u64;
        let entries = (0..groups)
            .map(|g| GroupEntry {
                group: g,
                first_block: g * gs,
                last_block: g * gs + gs - 1,
                stored_blocks: gs as u32,
                stored_bytes: 1000,
                page: 0,
                entry_start: (g * gs) as u32,
                entry_count: gs as u32,
                hints: vec![0.0],
                successors: vec![vec![]],
            })
            .collect();
        let ix = ManifestIndex {
            header: SnapshotHeader {
                name: SnapshotName::parse("t").unwrap(),
                id: Id([1; 16]),
                volume_size: groups * gs * 65536,
                block_size: 65536,
                group_size: gs as u32,
                created_ms: 0,
                parent: None,
                stored_blocks: groups * gs,
                zero_blocks: 0,
                stored_bytes: 0,
                uploaded_bytes: 0,
                page_count: 1,
            },
            windows_ms: vec![2000],
            groups: entries,
            warmup: vec![],
            prior: None,
        };
        let stored = StoredBlocks {
            group_size: gs,
            by_group: (0..groups)
                .map(|g| (g, (g * gs..g * gs + gs).collect()))
                .collect(),
        };
        (ix, stored)
    }

    const S: u64 = 1_000_000_000;

    fn session(events: &[(u64, u64)]) -> Session {
        Session {
            events: events.to_vec(),
        }
    }

    #[test]
    fn hints_are_the_fraction_of_stored_blocks_read_within_the_window() {
        let (ix, stored) = index(4);
        // Group 0: read whole in every session. Group 1: a quarter. Group 2:
        // never. Group 3: its 4 blocks, but 2 of them after the window.
        let s = || {
            session(&[
                (0, 0),
                (1, 1),
                (2, 2),
                (3, 3),
                (10, 4),
                (20, 12),
                (21, 13),
                (5 * S, 14),
                (5 * S, 15),
            ])
        };
        let out = learn(&ix, &stored, &[s(), s()], &[2000]);
        let h: Vec<f32> = out.groups.iter().map(|g| g.hints[0]).collect();
        // Group 3: episode 1 reads 2 of 4; the reads at 5 s start episode 2 (2 of 4).
        assert_eq!(h, vec![1.0, 0.25, 0.0, 0.5]);
    }

    #[test]
    fn successor_always_following_within_the_window_has_probability_one() {
        let (ix, stored) = index(4);
        // Group 2 (blocks 8-11) is read whole within 2 s after every episode
        // of group 0; group 1 (blocks 4-7) whole in one of three episodes;
        // group 3 in every episode, but one block of four.
        let g2 = |t: u64| [(t, 8), (t + 1, 9), (t + 2, 10), (t + 3, 11), (t + 4, 12)];
        let mut e1 = vec![(0, 0)];
        e1.extend(g2(S));
        e1.push((30 * S, 0));
        e1.extend(g2(31 * S));
        let mut e2 = vec![(0, 0)];
        e2.extend(g2(S / 2));
        e2.extend([(S, 4), (S + 1, 5), (S + 2, 6), (S + 3, 7)]);
        let out = learn(&ix, &stored, &[session(&e1), session(&e2)], &[2000]);
        let g0 = &out.groups[0].successors[0];
        assert_eq!(
            g0[0],
            Successor {
                group: 2,
                probability: 1.0
            }
        );
        assert!(
            (g0[1].probability - 1.0 / 3.0).abs() < 1e-6 && g0[1].group == 1,
            "{g0:?}"
        );
        // Group 3: strength 0.25, kept (>= 0.1) after group 1.
        assert!(
            g0[2].group == 3 && (g0[2].probability - 0.25).abs() < 1e-6,
            "{g0:?}"
        );
        // Nothing follows group 1 within 2 s.
        assert!(out.groups[1].successors[0].is_empty());
    }

    #[test]
    fn warmup_is_ordered_by_typical_first_read_and_needs_a_share_of_sessions() {
        let (ix, stored) = index(6);
        // Group 2 (blocks 8-11) and group 0 (0-3) are read whole early in
        // every session; 4 and 5 in one only; group 3 early in all, but one
        // block of four (a random read, not worth a whole group).
        let s1 = session(&[
            (100, 8),
            (101, 9),
            (102, 10),
            (103, 11),
            (200, 0),
            (201, 1),
            (202, 2),
            (203, 3),
            (250, 12),
            (300, 20),
            (20 * S, 4),
        ]);
        let s2 = session(&[
            (100, 0),
            (101, 1),
            (102, 2),
            (103, 3),
            (150, 8),
            (151, 9),
            (152, 10),
            (153, 11),
            (160, 13),
            (20 * S, 4),
        ]);
        let s3 = session(&[
            (100, 8),
            (101, 9),
            (102, 10),
            (103, 11),
            (110, 0),
            (111, 1),
            (112, 2),
            (113, 3),
            (115, 14),
            (120, 16),
        ]);
        let out = learn(&ix, &stored, &[s1, s2, s3], &[2000]);
        let groups: Vec<u64> = out.warmup.iter().map(|w| w.group).collect();
        assert_eq!(groups, vec![2, 0]);
        // Exactly the blocks read early in most sessions.
        assert_eq!(
            out.warmup[0].blocks(4).collect::<Vec<_>>(),
            vec![8, 9, 10, 11]
        );
    }

    #[test]
    fn windows_parse() {
        assert_eq!(parse_windows("2s,10s").unwrap(), vec![2000, 10_000]);
        assert!(parse_windows("").is_err());
        assert!(parse_windows("2x").is_err());
        assert!(parse_windows("0s").is_err());
    }
}

#[cfg(test)]
mod remaining_tests {
    use super::remaining_precision;

    #[test]
    fn remaining_precision_discounts_what_is_covered() {
        assert_eq!(remaining_precision(1.0, 4, 0), 1.0);
        assert_eq!(remaining_precision(0.5, 4, 0), 0.5);
        // Half read, and that half already covered: the rest is waste.
        assert_eq!(remaining_precision(0.5, 4, 2), 0.0);
        assert_eq!(remaining_precision(0.75, 4, 2), 0.5);
        assert_eq!(remaining_precision(1.0, 4, 4), 0.0);
    }
}
