//! Learning hints, successors and the warm-up list from sessions: pure
//! computation over [`Session`]s and the snapshot's [`StoredBlocks`], with
//! no store and no I/O, so every rule of the module doc of [`super`] is
//! tested with hand-made sessions. Over 500 lines with those known-answer
//! tests, on purpose: each rule is read beside the sessions that pin it.

use std::collections::{HashMap, HashSet, VecDeque};

use anyhow::{bail, Context};

use super::{
    Session, StoredBlocks, CONTEXT_GAIN, DEFAULT_HISTORY, MATE_CANDIDATES, MATE_SCORE,
    MAX_CONTEXTS, MAX_ENTRY_MASKS, MAX_SUCCESSORS, MIN_CONTEXT_EPISODES, MIN_SUCCESSOR_P,
    SCAN_GROUPS, SCAN_TOUCHES,
};
use crate::format::{mask_byte, ContextSuccessors, EntryMask, ManifestIndex, Successor};

/// What to learn; the default is the full model, [`LearnOptions::flat`]
/// the version-2 one (for comparison in `bench/hints_varied.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnOptions {
    /// Per-block masks on hints and successors (else whole groups).
    pub masks: bool,
    /// Distinct groups a context looks back (0: no contexts).
    pub history: u8,
    /// Warm-up per workload group of sessions (else one list for all).
    pub workload_groups: bool,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            masks: true,
            history: DEFAULT_HISTORY,
            workload_groups: true,
        }
    }
}

impl LearnOptions {
    /// Whole-group hints, no contexts, one warm-up list: the index of
    /// version 2.
    pub fn flat() -> Self {
        LearnOptions {
            masks: false,
            history: 0,
            workload_groups: false,
        }
    }
}

/// Blocks read (offset in their group → episodes that read it) and the
/// summed fraction of the group's stored blocks read, over episodes.
#[derive(Default)]
struct Reads {
    fraction_sum: f64,
    blocks: HashMap<u32, u32>,
}

impl Reads {
    fn add(&mut self, blocks: &HashSet<u64>, group_first: u64, stored: usize) {
        self.fraction_sum += blocks.len() as f64 / stored.max(1) as f64;
        for b in blocks {
            *self.blocks.entry((b - group_first) as u32).or_default() += 1;
        }
    }
}

#[derive(Default)]
struct Followers {
    episodes: u64,
    /// successor group → what of it was read in the window
    successors: HashMap<u64, Reads>,
}

#[derive(Default)]
struct GroupStats {
    episodes: u64,
    own: Reads,
    /// entry block (offset in the group) → (episodes, what they read)
    by_entry: HashMap<u32, (u64, Reads)>,
    followers: Followers,
    /// context group → the followers of the episodes it preceded
    contexts: HashMap<u64, Followers>,
}

/// What learning produced for one window.
struct WindowModel {
    stats: HashMap<u64, GroupStats>,
}

/// The last `history` distinct groups read before each read, most recent
/// first: what a context matches against, kept the same way here and in
/// the prefetcher ([`Recent`]).
#[derive(Debug, Clone, Default)]
pub struct Recent {
    groups: VecDeque<u64>,
}

impl Recent {
    /// The groups read before `g`, most recent first (at most `history`).
    pub fn before(&self, g: u64, history: usize) -> Vec<u64> {
        self.groups
            .iter()
            .copied()
            .filter(|&x| x != g)
            .take(history)
            .collect()
    }

    /// Notes a read of group `g`.
    pub fn push(&mut self, g: u64, history: usize) {
        if self.groups.front() == Some(&g) {
            return;
        }
        self.groups.retain(|&x| x != g);
        self.groups.push_front(g);
        self.groups.truncate(history + 1);
    }
}

fn learn_window(
    sessions: &[&Session],
    stored: &StoredBlocks,
    window_ns: u64,
    history: usize,
) -> WindowModel {
    let gs = stored.group_size;
    let n_stored = |g: u64| stored.by_group.get(&g).map_or(1, |v| v.len().max(1));
    let mut stats: HashMap<u64, GroupStats> = HashMap::new();
    for s in sessions {
        // Episodes: open[g] = (start time, distinct blocks read, entry).
        let mut open: HashMap<u64, (u64, HashSet<u64>, u64)> = HashMap::new();
        // (event index, t0, g, the groups read before)
        let mut starts: Vec<(usize, u64, u64, Vec<u64>)> = Vec::new();
        let mut recent = Recent::default();
        let close =
            |stats: &mut HashMap<u64, GroupStats>, g: u64, blocks: &HashSet<u64>, entry: u64| {
                let st = stats.entry(g).or_default();
                st.episodes += 1;
                st.own.add(blocks, g * gs, n_stored(g));
                let e = st.by_entry.entry((entry - g * gs) as u32).or_default();
                e.0 += 1;
                e.1.add(blocks, g * gs, n_stored(g));
            };
        for (ei, &(t, b)) in s.events.iter().enumerate() {
            let g = b / gs;
            match open.get_mut(&g) {
                Some((t0, blocks, _)) if t <= *t0 + window_ns => {
                    blocks.insert(b);
                }
                other => {
                    if let Some((_, blocks, entry)) = other {
                        close(&mut stats, g, blocks, *entry);
                    }
                    open.insert(g, (t, std::iter::once(b).collect(), b));
                    starts.push((ei, t, g, recent.before(g, history)));
                }
            }
            recent.push(g, history);
        }
        for (g, (_, blocks, entry)) in open {
            close(&mut stats, g, &blocks, entry);
        }
        // Successors: what of each other group is read within the window
        // after each episode start, for the group and for each context.
        for (ei, t0, g, before) in starts {
            let mut seen: HashMap<u64, HashSet<u64>> = HashMap::new();
            for &(t, b) in s.events.iter().skip(ei).take(SCAN_TOUCHES) {
                if t > t0 + window_ns {
                    break;
                }
                let h = b / gs;
                if h != g && (seen.contains_key(&h) || seen.len() < SCAN_GROUPS) {
                    seen.entry(h).or_default().insert(b);
                }
            }
            let st = stats.entry(g).or_default();
            let add = |f: &mut Followers| {
                f.episodes += 1;
                for (h, blocks) in &seen {
                    f.successors
                        .entry(*h)
                        .or_default()
                        .add(blocks, h * gs, n_stored(*h));
                }
            };
            add(&mut st.followers);
            for c in before {
                add(st.contexts.entry(c).or_default());
            }
        }
    }
    WindowModel { stats }
}

/// Each block's probability of being read in an episode, estimated as
/// `k / (n + 1)` for a block read in k of n episodes: one unseen episode
/// added, so that few episodes cannot claim certainty. A block read in the
/// one episode seen gets 1/2 (just the default threshold: a single session
/// learned still replays), in both of two 2/3, but one read in 2 of 4
/// episodes 0.4: the 0.5 of a small sample that `bench/hints_varied.sh`
/// found to be ~0.2 on unseen sessions (successors of a tree walk).
///
/// A block counts once read in `min_k` episodes. Learning from several
/// sessions, a block read in one episode only is an event, not a pattern:
/// trusted in its context (an entry mask: the same file opened again reads
/// the same blocks, `min_k` 1), not in the plain mask or as a successor
/// (`min_k` 2), where `bench/hints_varied.sh` found such one-off blocks
/// read ~1 time in 5 (the next directory of a tree walk).
fn mask_of(r: &Reads, episodes: u64, gs: u64, min_k: u32) -> Vec<u8> {
    let mut m = vec![0u8; gs as usize];
    for (&i, &n) in &r.blocks {
        if (i as u64) < gs && n >= min_k {
            m[i as usize] = mask_byte(n as f64 / (episodes + 1) as f64);
        }
    }
    m
}

/// Which sessions hold a pattern worth learning: with more than one
/// session, those whose blocks overlap another session's well beyond
/// chance, looking at up to [`MATE_CANDIDATES`] others. The score is how
/// far the overlap goes from what chance gives (`|A|·|B|/N`, N the stored
/// blocks) towards the most it can be (`min(|A|,|B|)`): 0 for two random
/// readers however dense they are, 1 for the same session twice; a pair
/// is alike at [`MATE_SCORE`]. Block masks alone would take a dense random
/// reader's chance repeats for patterns.
fn patterned(sessions: &[Session], stored: &StoredBlocks) -> Vec<bool> {
    if sessions.len() < 2 {
        return vec![true; sessions.len()];
    }
    let gs = stored.group_size;
    // Per session: group → the blocks of it read.
    let sets: Vec<HashMap<u64, HashSet<u64>>> = sessions
        .iter()
        .map(|s| {
            let mut m: HashMap<u64, HashSet<u64>> = HashMap::new();
            for e in &s.events {
                m.entry(e.1 / gs).or_default().insert(e.1);
            }
            m
        })
        .collect();
    (0..sets.len())
        .map(|i| {
            sets.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .take(MATE_CANDIDATES)
                .any(|(_, b)| alike(&sets[i], b, stored))
        })
        .collect()
}

/// Whether two sessions overlap beyond chance (see [`patterned`]). Chance
/// is reckoned within the groups both touch: a random reader of one large
/// file meets another in that file far more often than over the whole
/// volume, and that is still chance.
fn alike(
    a: &HashMap<u64, HashSet<u64>>,
    b: &HashMap<u64, HashSet<u64>>,
    stored: &StoredBlocks,
) -> bool {
    let (mut n, mut na, mut nb, mut both) = (0usize, 0usize, 0usize, 0usize);
    for (g, x) in a {
        let Some(y) = b.get(g) else { continue };
        n += stored.by_group.get(g).map_or(0, Vec::len);
        na += x.len();
        nb += y.len();
        both += x.iter().filter(|blk| y.contains(blk)).count();
    }
    if n == 0 || na == 0 || nb == 0 {
        return false;
    }
    let chance = na as f64 * nb as f64 / n as f64;
    let most = na.min(nb) as f64;
    if most - chance < 1.0 {
        // Dense sessions (all of the groups they share): nothing to tell
        // chance from pattern by; alike if nearly equal.
        return both as f64 >= 0.9 * most;
    }
    (both as f64 - chance) / (most - chance) >= MATE_SCORE
}

/// The entry masks of a group (with contexts on): for each block episodes
/// started at, the mask of those episodes, kept where it differs from the
/// plain mask by [`CONTEXT_GAIN`] in some block. The entry block is the
/// context here, so one episode is enough (the same file opened again
/// reads the same blocks); a random reader's episode starts anywhere and
/// its entry rarely comes back.
fn entry_masks(st: &GroupStats, plain: &[u8], gs: u64, on: bool) -> Vec<EntryMask> {
    if !on {
        return Vec::new();
    }
    let gain = mask_byte(CONTEXT_GAIN as f64) as i32;
    let mut out: Vec<EntryMask> = st
        .by_entry
        .iter()
        .map(|(&entry, (n, r))| EntryMask {
            entry,
            episodes: (*n).min(u32::MAX as u64) as u32,
            mask: mask_of(r, *n, gs, 1),
        })
        .filter(|e| {
            e.mask
                .iter()
                .zip(plain)
                .any(|(a, b)| (*a as i32 - *b as i32).abs() >= gain)
        })
        .collect();
    out.sort_by(|a, b| b.episodes.cmp(&a.episodes).then(a.entry.cmp(&b.entry)));
    out.truncate(MAX_ENTRY_MASKS);
    out
}

/// Mean of a mask over the group's stored blocks: the hint (or successor
/// probability) that mask implies.
fn mask_mean(m: &[u8], group: u64, stored: &StoredBlocks) -> f32 {
    let blocks = stored
        .by_group
        .get(&group)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if blocks.is_empty() {
        return 0.0;
    }
    let first = group * stored.group_size;
    let sum: f32 = blocks
        .iter()
        .map(|b| m.get((b - first) as usize).copied().unwrap_or(0) as f32 / 255.0)
        .sum();
    (sum / blocks.len() as f32).clamp(0.0, 1.0)
}

/// The strength deciding rank and kept-ness: the most likely block with a
/// mask, the whole group's probability without.
fn strength(s: &Successor) -> f32 {
    if s.mask.is_empty() {
        s.probability
    } else {
        s.mask.iter().copied().max().unwrap_or(0) as f32 / 255.0
    }
}

/// A follower list, strongest first, at most [`MAX_SUCCESSORS`].
fn successors_of(
    f: &Followers,
    index: &ManifestIndex,
    stored: &StoredBlocks,
    opts: &LearnOptions,
    min_k: u32,
) -> Vec<Successor> {
    let gs = stored.group_size;
    let mut succ: Vec<Successor> = f
        .successors
        .iter()
        // Only groups with data are worth prefetching.
        .filter(|(h, _)| index.group(**h).is_some())
        .map(|(&h, r)| {
            if opts.masks {
                let mask = mask_of(r, f.episodes, gs, min_k);
                Successor {
                    group: h,
                    probability: mask_mean(&mask, h, stored),
                    mask,
                }
            } else {
                Successor {
                    group: h,
                    probability: (r.fraction_sum / f.episodes.max(1) as f64).min(1.0) as f32,
                    mask: Vec::new(),
                }
            }
        })
        .filter(|x| strength(x) >= MIN_SUCCESSOR_P)
        .collect();
    succ.sort_by(|a, b| {
        strength(b)
            .total_cmp(&strength(a))
            .then(b.probability.total_cmp(&a.probability))
            .then(a.group.cmp(&b.group))
    });
    succ.truncate(MAX_SUCCESSORS);
    succ
}

/// Whether a context's list changes a decision: some successor's strength
/// differs from the plain list's by [`CONTEXT_GAIN`] or more.
fn differs(ctx: &[Successor], plain: &[Successor]) -> bool {
    let of = |v: &[Successor], g: u64| v.iter().find(|s| s.group == g).map_or(0.0, strength);
    ctx.iter()
        .map(|s| s.group)
        .chain(plain.iter().map(|s| s.group))
        .any(|g| (of(ctx, g) - of(plain, g)).abs() >= CONTEXT_GAIN)
}

/// Learns hints, successors and warm-up for `windows_ms` from `sessions`
/// with the full model ([`LearnOptions::default`]).
pub fn learn(
    index: &ManifestIndex,
    stored: &StoredBlocks,
    sessions: &[Session],
    windows_ms: &[u32],
) -> ManifestIndex {
    learn_with(
        index,
        stored,
        sessions,
        windows_ms,
        &LearnOptions::default(),
    )
}

/// Learns hints, successors and warm-up for `windows_ms` from `sessions`
/// and returns the new index (data and pages untouched).
pub fn learn_with(
    index: &ManifestIndex,
    stored: &StoredBlocks,
    sessions: &[Session],
    windows_ms: &[u32],
    opts: &LearnOptions,
) -> ManifestIndex {
    let mut out = index.clone();
    out.windows_ms = windows_ms.to_vec();
    out.history = opts.history.min(crate::format::index::MAX_HISTORY);
    let history = out.history as usize;
    let keep = if opts.masks {
        patterned(sessions, stored)
    } else {
        vec![true; sessions.len()]
    };
    // By reference: a fleet's sessions are most of learning's memory.
    let learned: Vec<&Session> = sessions
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(s, _)| s)
        .collect();
    // Every session: a directory's share read is itself the measure, and
    // a random reader's is low (two walks of different directories share
    // nothing, and `patterned` would drop both).
    if let Some(p) = out.prior.as_mut() {
        if opts.masks {
            super::directory::learn(p, stored, sessions);
        } else {
            super::directory::forget(p);
        }
    }
    let models: Vec<WindowModel> = windows_ms
        .iter()
        .map(|ms| learn_window(&learned, stored, *ms as u64 * 1_000_000, history))
        .collect();
    // See `mask_of`: one session alone is all there is to replay.
    let min_k = if learned.len() > 1 { 2 } else { 1 };
    let gs = stored.group_size;
    for g in &mut out.groups {
        g.hints = Vec::with_capacity(models.len());
        g.successors = Vec::with_capacity(models.len());
        g.masks = Vec::with_capacity(models.len());
        g.contexts = Vec::with_capacity(models.len());
        g.entries = Vec::with_capacity(models.len());
        for m in &models {
            let Some(st) = m.stats.get(&g.group).filter(|s| s.episodes > 0) else {
                g.hints.push(0.0);
                g.successors.push(Vec::new());
                g.masks.push(Vec::new());
                g.contexts.push(Vec::new());
                g.entries.push(Vec::new());
                continue;
            };
            if opts.masks {
                let mask = mask_of(&st.own, st.episodes, gs, min_k);
                g.hints.push(mask_mean(&mask, g.group, stored));
                g.entries.push(entry_masks(st, &mask, gs, opts.history > 0));
                g.masks.push(mask);
            } else {
                g.entries.push(Vec::new());
                let hint = (st.own.fraction_sum / st.episodes as f64) as f32;
                g.hints.push(hint.clamp(0.0, 1.0));
                g.masks.push(Vec::new());
            }
            let plain = successors_of(&st.followers, index, stored, opts, min_k);
            let mut ctx: Vec<ContextSuccessors> = st
                .contexts
                .iter()
                .filter(|(_, f)| f.episodes >= MIN_CONTEXT_EPISODES)
                .map(|(&c, f)| ContextSuccessors {
                    after: c,
                    episodes: f.episodes.min(u32::MAX as u64) as u32,
                    successors: successors_of(f, index, stored, opts, min_k),
                })
                .filter(|c| differs(&c.successors, &plain))
                .collect();
            ctx.sort_by(|a, b| b.episodes.cmp(&a.episodes).then(a.after.cmp(&b.after)));
            ctx.truncate(MAX_CONTEXTS);
            g.successors.push(plain);
            g.contexts.push(ctx);
        }
    }
    let (core, groups) = super::warmup::learn_warmup(sessions, stored, opts.workload_groups);
    out.warmup = core;
    out.warmup_groups = groups;
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
                masks: vec![vec![]],
                contexts: vec![vec![]],
                entries: vec![vec![]],
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
            warmup_groups: vec![],
            history: 0,
            prior: None,
            located: Default::default(),
            inline: vec![],
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
        // Group 3: episode 1 reads 2 of 4; the reads at 5 s start episode 2
        // (2 of 4). A block read in k of n episodes counts k/(n+1): group 0
        // read whole in both sessions' episodes is 2/3, group 3's blocks
        // each in 2 of 4 episodes 2/5. Masks are bytes: within 1/255.
        for (got, want) in h.iter().zip([2.0 / 3.0, 1.0 / 6.0, 0.0, 0.4]) {
            assert!((got - want).abs() <= 1.0 / 255.0, "{h:?}");
        }
        // The masks say which blocks.
        assert_eq!(out.groups[1].masks[0], vec![170, 0, 0, 0]);
        assert_eq!(out.groups[3].masks[0], vec![102; 4]);
        assert!(out.groups[2].masks[0].is_empty());
        // The version-2 model: plain fractions.
        let flat = learn_with(&ix, &stored, &[s(), s()], &[2000], &LearnOptions::flat());
        let h: Vec<f32> = flat.groups.iter().map(|g| g.hints[0]).collect();
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
        let sessions = [session(&e1), session(&e2)];
        // The version-2 model: whole-group strengths.
        let out = learn_with(&ix, &stored, &sessions, &[2000], &LearnOptions::flat());
        let g0 = &out.groups[0].successors[0];
        assert_eq!(
            (g0[0].group, g0[0].probability, g0[0].mask.len()),
            (2, 1.0, 0)
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
        // With masks (k of n episodes: k/(n+1)): group 2 whole at 3/4, of
        // group 3 exactly its first block at 3/4; group 1, read after one
        // episode of three, is an event, not a pattern: dropped.
        let out = learn(&ix, &stored, &sessions, &[2000]);
        let g0 = &out.groups[0].successors[0];
        assert_eq!(g0.len(), 2, "{g0:?}");
        assert_eq!((g0[0].group, g0[0].mask.clone()), (2, vec![191; 4]));
        assert_eq!((g0[1].group, g0[1].mask.clone()), (3, vec![191, 0, 0, 0]));
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

#[cfg(test)]
mod generalize_tests {
    use super::tests::index;
    use super::*;
    use crate::predict::evaluate::evaluate;

    const S: u64 = 1_000_000_000;

    fn session(events: &[(u64, u64)]) -> Session {
        Session {
            events: events.to_vec(),
        }
    }

    /// Two sessions read the same small file (blocks 1-2) of group 0: the
    /// mask names those blocks, and a session touching another block of
    /// the group (another small file) fetches nothing of it.
    #[test]
    fn a_mask_brings_the_blocks_read_not_the_group() {
        let (ix, stored) = index(4);
        let s = || session(&[(0, 1), (1, 2)]);
        let out = learn(&ix, &stored, &[s(), s()], &[2000]);
        assert_eq!(out.groups[0].masks[0], vec![0, 170, 170, 0]);
        // The same reads again, without warm-up: block 1 misses, block 2 is
        // prefetched by the mask; 0 and 3 never are.
        let e = evaluate(&out, &stored, &s(), 0, 0.5, false);
        assert_eq!(e.hint.prefetched_bytes, 65536, "{e:?}");
        // Another file of the group (block 3): the mask says block 1 and 2,
        // which this session never reads. The flat model brought the whole
        // group at the touch; with masks at most those two blocks.
        let other = session(&[(0, 3)]);
        let flat = learn_with(&ix, &stored, &[s(), s()], &[2000], &LearnOptions::flat());
        let e_flat = evaluate(&flat, &stored, &other, 0, 0.5, false);
        assert_eq!(e_flat.hint.prefetched_bytes, 0, "hint 0.5 of 3 uncovered");
        let mut masked = out.clone();
        masked.groups[0].masks[0] = vec![0, 255, 255, 255];
        let e = evaluate(&masked, &stored, &other, 0, 0.5, false);
        assert_eq!(e.hint.prefetched_bytes, 2 * 65536, "{e:?}");
    }

    /// Group 1 is read by two workloads: A reads group 0 before it and
    /// group 2 after, B reads group 3 before and group 4 after (twice
    /// each). Without context group 1's successors are both at 2/5 (read
    /// after 2 of its 4 episodes); with it, a session that came from group
    /// 0 gets group 2 only, at 2/3.
    #[test]
    fn a_shared_group_brings_the_followers_of_the_workload_that_reached_it() {
        let (ix, stored) = index(6);
        let a = |t: u64| session(&[(t, 0), (t + 1, 4), (t + 2, 8), (t + 3, 9)]);
        let b = |t: u64| session(&[(t, 12), (t + 1, 4), (t + 2, 16), (t + 3, 17)]);
        let train = [a(0), b(0), a(0), b(0)];
        let out = learn(&ix, &stored, &train, &[2000]);
        let g1 = &out.groups[1];
        let plain: Vec<(u64, f32)> = g1.successors[0]
            .iter()
            .map(|s| (s.group, strength(s)))
            .collect();
        assert!(
            plain.iter().all(|&(_, p)| (p - 0.4).abs() < 0.01) && plain.len() == 2,
            "{plain:?}"
        );
        let from_a: Vec<u64> = g1
            .successors_in(0, &[0], 2)
            .iter()
            .map(|s| s.group)
            .collect();
        assert_eq!(from_a, vec![2]);
        let from_b: Vec<u64> = g1
            .successors_in(0, &[3], 2)
            .iter()
            .map(|s| s.group)
            .collect();
        assert_eq!(from_b, vec![4]);
        // Replayed at a threshold of 0.35 (below the plain 0.4): A's session
        // prefetches its own blocks 4, 8, 9 (as successors of groups 0 and
        // 1), nothing of B's.
        let e = evaluate(&out, &stored, &a(0), 0, 0.35, false);
        assert_eq!(e.successor.prefetched_bytes, 3 * 65536, "{e:?}");
        assert!((e.successor.precision - 1.0).abs() < 1e-9, "{e:?}");
        // Without contexts (history 0) the same threshold brings both.
        let opts = LearnOptions {
            history: 0,
            ..LearnOptions::default()
        };
        let no_ctx = learn_with(&ix, &stored, &train, &[2000], &opts);
        assert!(no_ctx.groups[1].contexts[0].is_empty());
        let e = evaluate(&no_ctx, &stored, &a(0), 0, 0.35, false);
        assert_eq!(e.successor.prefetched_bytes, 5 * 65536, "{e:?}");
    }

    /// Group 0 holds two small files, blocks 0-1 and 2-3; two sessions
    /// open the first, two the second. The plain mask says every block at
    /// 2/5; the entry masks say which file: a session opening the first
    /// gets block 1, never 2 or 3.
    #[test]
    fn the_block_an_episode_starts_at_says_which_blocks_follow() {
        let (ix, stored) = index(4);
        let x = || session(&[(0, 0), (1, 1)]);
        let y = || session(&[(0, 2), (1, 3)]);
        let out = learn(&ix, &stored, &[x(), y(), x(), y()], &[2000]);
        let g = &out.groups[0];
        assert_eq!(g.masks[0], vec![102; 4]);
        assert_eq!(g.mask_at(0, 0), Some(&[170, 170, 0, 0][..]));
        assert_eq!(g.mask_at(0, 2), Some(&[0, 0, 170, 170][..]));
        // An entry never seen: the plain mask.
        assert_eq!(g.mask_at(0, 1), Some(&[102; 4][..]));
        let e = evaluate(&out, &stored, &x(), 0, 0.5, false);
        assert_eq!(e.hint.prefetched_bytes, 65536, "{e:?}");
        assert!((e.overall.precision - 1.0).abs() < 1e-9, "{e:?}");
        // Without contexts: nothing reaches 0.5.
        let opts = LearnOptions {
            history: 0,
            ..LearnOptions::default()
        };
        let plain = learn_with(&ix, &stored, &[x(), y(), x(), y()], &[2000], &opts);
        assert!(plain.groups[0].entries[0].is_empty());
        let e = evaluate(&plain, &stored, &x(), 0, 0.5, false);
        assert_eq!(e.overall.prefetched_bytes, 0, "{e:?}");
    }

    /// A random reader's blocks are each read once: with several sessions
    /// nothing of them is learned, so nothing is prefetched.
    #[test]
    fn reads_that_never_repeat_teach_nothing() {
        let (ix, stored) = index(64);
        let mut x = 7u64;
        let mut rand = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % 256
        };
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(session(
                &(0..100).map(|i| (i * S / 50, rand())).collect::<Vec<_>>(),
            ));
        }
        let held_out = session(&(0..100).map(|i| (i * S / 50, rand())).collect::<Vec<_>>());
        let out = learn(&ix, &stored, &sessions, &[2000]);
        let e = evaluate(&out, &stored, &held_out, 0, 0.5, true);
        assert!(
            e.overall.prefetched_bytes * 20 <= e.read_bytes,
            "prefetched {} for {} read",
            e.overall.prefetched_bytes,
            e.read_bytes
        );
    }
}
