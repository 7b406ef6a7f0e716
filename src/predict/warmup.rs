//! The warm-up: what a mount fetches before it is asked, learned from what
//! sessions read in their first [`WARMUP_WINDOW`].
//!
//! One list for every session (version 2) makes each mount pay for every
//! workload that ever ran on the image. So sessions are grouped by what
//! they read early, and the index holds
//! - a **core**: blocks every workload group reads early (an ext4 mount's
//!   superblock and inode tables, an interpreter both programs start),
//!   fetched from the start, a stretch ahead of the session
//!   ([`super::timeline`]);
//! - per **workload group**, the blocks its sessions read early beyond the
//!   core, fetched once a session's first reads match the group's
//!   **signature** (its most typical blocks that no other group reads
//!   early, [`SIGNATURE_LEN`] of them, [`MATCH_BLOCKS`] needed among the
//!   session's first [`MATCH_WITHIN`] distinct blocks). A session that
//!   matches no group gets the core only;
//! - with the core, each group's **probes** ([`probes`]): the first
//!   [`MATCH_BLOCKS`] blocks of its signature. The reads that identify a
//!   workload come before its set can be fetched, so without them they are
//!   always misses: in `bench/hints_varied.sh` the mixed image's Python
//!   start missed 2 of its 16 blocks that way (recall 0.85). A probe costs
//!   a session of another workload [`MATCH_BLOCKS`] blocks per group, so
//!   probes are fetched only while they add up to at most
//!   [`MAX_PROBE_BLOCKS`].
//!
//! Grouping: average-linkage agglomerative clustering of the sessions'
//! early block sets under Jaccard similarity, merging while the closest
//! pair of groups is at least [`CLUSTER_SIMILARITY`] alike. Chosen over
//! k-means (no k to guess; sets, not vectors) and over grouping by the very
//! first blocks (every session on one image starts with the same
//! filesystem metadata, so the first blocks say least). Average linkage,
//! not single: one session sharing half its blocks with each of two
//! families does not chain them into one. A group needs
//! [`MIN_GROUP_SESSIONS`] sessions, so noise (a random reader, a one-off
//! session) creates none. Clustering is quadratic in sessions, so it looks
//! at the [`MAX_WARMUP_SESSIONS`] first sessions given (newest first, as
//! `hints --from-store` passes them).
//!
//! Within a group a block is warmed up when more than [`WARMUP_SHARE`] of
//! its sessions read it early, as the one list was. When no group forms
//! (every session reads its own part of the volume: walks of different
//! subtrees, random readers), the core is what most sessions *start* with
//! ([`start_core`]), so the first reads every session makes still hit.
//!
//! [`MountStart`] is what a mount then fetches at once (core, probes, or
//! the prior's metadata): one definition for the prefetcher's first jobs
//! and for the blocks `create` and `hints` locate in the index. Just over
//! 500 lines with its tests, on purpose: learning the warm-up and using
//! it at mount share these types and rules.

use std::collections::{HashMap, HashSet};

use super::{Session, StoredBlocks, WARMUP_MIN_PRECISION, WARMUP_SHARE, WARMUP_WINDOW};
use crate::format::{ManifestIndex, WarmUp, WarmupGroup};

/// Two groups of sessions merge while their mean pairwise Jaccard
/// similarity is at least this: variants of one program start share most
/// of their early blocks (≥ 0.6 in `bench/hints_varied.sh`), two different
/// workloads on one image share its filesystem metadata only (< 0.2).
pub const CLUSTER_SIMILARITY: f64 = 0.5;
/// Sessions a workload group needs: one session alone is not a pattern.
pub const MIN_GROUP_SESSIONS: usize = 2;
/// Sessions clustered at most (pairwise similarity: 64² set comparisons).
pub const MAX_WARMUP_SESSIONS: usize = 64;
/// Signature blocks per group: enough that a few of them are read within
/// the first reads of any of the group's sessions.
pub const SIGNATURE_LEN: usize = 8;
/// Signature blocks a session must read before its group's set is
/// fetched: one could be a coincidence, two rarely are.
pub const MATCH_BLOCKS: usize = 2;
/// Probe blocks fetched at mount at most (all groups together): 8 blocks
/// of 512 KiB are 4 MiB, a fraction of any start-up's warm-up; more groups
/// than that (4 at [`MATCH_BLOCKS`] 2) get none, and cost only their misses.
pub const MAX_PROBE_BLOCKS: usize = 8;
/// Distinct blocks of a session's start that [`start_core`] looks at: an
/// ext4 mount and the first lookups read a handful of 512 KiB blocks
/// (superblock, group descriptors, the root's inode table and directory);
/// past that, sessions of different workloads part, and a random reader's
/// few blocks among these rarely meet another session's by chance.
pub const START_READS: usize = 8;
/// Only the first this many distinct blocks a session reads are matched:
/// a start-up shows what it is within its first few dozen blocks, while a
/// random reader given ten seconds would meet any signature by chance
/// (300 random reads of a 2048-block image hit 2 of 8 given blocks one
/// time in three; its first 64 reads one time in 40).
pub const MATCH_WITHIN: usize = 64;

/// One session's first reads: block → time of its first read, relative to
/// the session's first read (mounting and the workload starting are not
/// part of the pattern).
fn early_reads(s: &Session) -> HashMap<u64, u64> {
    let limit = WARMUP_WINDOW.as_nanos() as u64;
    let mut out = HashMap::new();
    let Some(&(start, _)) = s.events.first() else {
        return out;
    };
    for &(t, b) in &s.events {
        let rel = t - start;
        if rel > limit {
            break;
        }
        out.entry(b).or_insert(rel);
    }
    out
}

/// Whether early reads repeat across sessions: the mean, over ordered
/// pairs of sessions (i, j), of the share of j's early blocks that i also
/// reads early — the precision warm-up learned from j would have had on
/// i. A start-up or a scan repeats its blocks (≈ 1); random I/O shares
/// blocks only by chance (≈ the fraction of the volume it touches), and
/// warming up that overlap would be waste.
fn early_reads_repeat(sets: &[&HashMap<u64, u64>]) -> bool {
    if sets.len() < 2 {
        return true;
    }
    let mut sum = 0.0;
    let mut pairs = 0;
    for (i, a) in sets.iter().enumerate() {
        for (j, b) in sets.iter().enumerate() {
            if i != j && !b.is_empty() {
                sum += b.keys().filter(|x| a.contains_key(x)).count() as f64 / b.len() as f64;
                pairs += 1;
            }
        }
    }
    pairs > 0 && sum / pairs as f64 >= WARMUP_MIN_PRECISION
}

fn jaccard(a: &HashMap<u64, u64>, b: &HashMap<u64, u64>) -> f64 {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let both = small.keys().filter(|k| large.contains_key(k)).count();
    let either = a.len() + b.len() - both;
    if either == 0 {
        0.0
    } else {
        both as f64 / either as f64
    }
}

/// Average-linkage clustering of `sets` (see the module doc): groups of
/// indices into `sets`.
pub fn cluster(sets: &[&HashMap<u64, u64>]) -> Vec<Vec<usize>> {
    let n = sets.len();
    let mut sim = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let s = jaccard(sets[i], sets[j]);
            sim[i][j] = s;
            sim[j][i] = s;
        }
    }
    let mut groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for a in 0..groups.len() {
            for b in a + 1..groups.len() {
                let mut sum = 0.0;
                for &i in &groups[a] {
                    for &j in &groups[b] {
                        sum += sim[i][j];
                    }
                }
                let avg = sum / (groups[a].len() * groups[b].len()) as f64;
                if avg >= CLUSTER_SIMILARITY && best.is_none_or(|x| avg > x.0) {
                    best = Some((avg, a, b));
                }
            }
        }
        let Some((_, a, b)) = best else { break };
        let merged = groups.remove(b);
        groups[a].extend(merged);
    }
    groups
}

/// Blocks read early by more than [`WARMUP_SHARE`] of `sets`, with their
/// median first-read time.
fn shared_blocks(sets: &[&HashMap<u64, u64>]) -> HashMap<u64, u64> {
    let need = (WARMUP_SHARE * sets.len() as f64).floor() as usize + 1;
    let mut times: HashMap<u64, Vec<u64>> = HashMap::new();
    for s in sets {
        for (&b, &t) in s.iter() {
            times.entry(b).or_default().push(t);
        }
    }
    times
        .into_iter()
        .filter(|(_, ts)| ts.len() >= need)
        .map(|(b, mut ts)| {
            ts.sort_unstable();
            (b, ts[ts.len() / 2])
        })
        .collect()
}

/// Blocks among the first [`START_READS`] distinct blocks of more than
/// [`WARMUP_SHARE`] of `sets` (at least [`MIN_GROUP_SESSIONS`]), with
/// their median first-read time: what sessions that form no workload group
/// still all begin with (an ext4 mount's superblock and first inode
/// table, before each walks its own directories). Only the first reads:
/// over a whole early window, readers of one file share blocks by chance.
fn start_core(sets: &[&HashMap<u64, u64>]) -> HashMap<u64, u64> {
    if sets.len() < MIN_GROUP_SESSIONS {
        return HashMap::new();
    }
    let firsts: Vec<HashMap<u64, u64>> = sets
        .iter()
        .map(|s| {
            let mut by_time: Vec<(u64, u64)> = s.iter().map(|(&b, &t)| (t, b)).collect();
            by_time.sort_unstable();
            by_time
                .into_iter()
                .take(START_READS)
                .map(|(t, b)| (b, t))
                .collect()
        })
        .collect();
    let refs: Vec<&HashMap<u64, u64>> = firsts.iter().collect();
    shared_blocks(&refs)
}

/// Warm-up entries for `blocks` (block → typical first-read time), by
/// group, groups ordered by the earliest typical read of their blocks.
fn entries(blocks: &HashMap<u64, u64>, group_size: u64) -> Vec<WarmUp> {
    let mut groups: HashMap<u64, (u64, Vec<u64>)> = HashMap::new();
    for (&b, &t) in blocks {
        let e = groups
            .entry(b / group_size)
            .or_insert((u64::MAX, Vec::new()));
        e.0 = e.0.min(t);
        e.1.push(b);
    }
    let mut warm: Vec<(u64, u64, Vec<u64>)> =
        groups.into_iter().map(|(g, (t, v))| (t, g, v)).collect();
    warm.sort_unstable_by_key(|w| (w.0, w.1));
    warm.into_iter()
        .map(|(_, g, blocks)| WarmUp::new(g, group_size as u32, blocks))
        .collect()
}

/// The core warm-up list and the workload groups (empty with `grouped`
/// off: then one list, of blocks most of all sessions read early).
pub fn learn_warmup(
    sessions: &[Session],
    stored: &StoredBlocks,
    grouped: bool,
) -> (Vec<WarmUp>, Vec<WarmupGroup>) {
    let gs = stored.group_size;
    let early: Vec<HashMap<u64, u64>> = sessions
        .iter()
        .take(if grouped {
            MAX_WARMUP_SESSIONS
        } else {
            usize::MAX
        })
        .map(early_reads)
        .filter(|e| !e.is_empty())
        .collect();
    let all: Vec<&HashMap<u64, u64>> = early.iter().collect();
    if all.is_empty() {
        return (Vec::new(), Vec::new());
    }
    if !grouped || all.len() == 1 {
        if !early_reads_repeat(&all) {
            return (Vec::new(), Vec::new());
        }
        return (entries(&shared_blocks(&all), gs), Vec::new());
    }
    let clusters: Vec<Vec<usize>> = cluster(&all)
        .into_iter()
        .filter(|c| c.len() >= MIN_GROUP_SESSIONS)
        .collect();
    let sets: Vec<(usize, HashMap<u64, u64>)> = clusters
        .iter()
        .map(|c| {
            let members: Vec<&HashMap<u64, u64>> = c.iter().map(|&i| all[i]).collect();
            (c.len(), shared_blocks(&members))
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if sets.is_empty() {
        // No workload repeats as a whole; what the sessions start with may.
        return (entries(&start_core(&all), gs), Vec::new());
    }
    // The core: read early in every group, at its earliest typical time.
    let mut core: HashMap<u64, u64> = sets[0].1.clone();
    for (_, s) in &sets[1..] {
        core.retain(|b, t| {
            s.get(b).is_some_and(|u| {
                *t = (*t).min(*u);
                true
            })
        });
    }
    if sets.len() == 1 {
        return (entries(&core, gs), Vec::new());
    }
    let groups = sets
        .iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let own: HashMap<u64, u64> = s
                .iter()
                .filter(|(b, _)| !core.contains_key(b))
                .map(|(&b, &t)| (b, t))
                .collect();
            let unique = |b: &u64| {
                sets.iter()
                    .enumerate()
                    .all(|(j, o)| j == i || !o.1.contains_key(b))
            };
            let mut by_time: Vec<(u64, bool, u64)> =
                own.iter().map(|(&b, &t)| (t, !unique(&b), b)).collect();
            // Blocks no other group reads early first, each by time.
            by_time.sort_unstable_by_key(|x| (x.1, x.0, x.2));
            WarmupGroup {
                sessions: *n as u32,
                signature: by_time.iter().take(SIGNATURE_LEN).map(|x| x.2).collect(),
                blocks: entries(&own, gs),
            }
        })
        .filter(|g| !g.blocks.is_empty())
        .collect();
    (entries(&core, gs), groups)
}

/// The blocks fetched with the core so that the reads identifying a
/// workload group are hits: each group's first [`MATCH_BLOCKS`] signature
/// blocks (the signature is ordered most typical first), none at all if
/// they add up to more than [`MAX_PROBE_BLOCKS`]. Sorted, no repeats.
pub fn probes(index: &ManifestIndex) -> Vec<u64> {
    let mut out: Vec<u64> = index
        .warmup_groups
        .iter()
        .flat_map(|g| g.signature.iter().take(MATCH_BLOCKS).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    if out.len() > MAX_PROBE_BLOCKS {
        return Vec::new();
    }
    out
}

/// What a mount fetches before it is asked, in order: the prefetcher's
/// first jobs, and the blocks `create` and `hints` locate in the index so
/// that those fetches need no manifest page first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MountStart {
    /// The core's entries, one job each, in the index's order.
    pub warmup: Vec<Vec<u64>>,
    /// Every workload group's probes ([`probes`]).
    pub probes: Vec<u64>,
    /// Without a warm-up (no traces learned), the prior's metadata: from a
    /// remote store only (a local one has no round trip to hide).
    pub metadata: Vec<u64>,
}

impl MountStart {
    pub fn of(index: &ManifestIndex, remote: bool) -> Self {
        let gs = index.header.group_size;
        let metadata = match &index.prior {
            Some(p) if remote && index.warmup.is_empty() => {
                p.metadata.iter().flat_map(|r| r.blocks()).collect()
            }
            _ => Vec::new(),
        };
        MountStart {
            warmup: index
                .warmup
                .iter()
                .map(|w| w.blocks(gs).collect())
                .collect(),
            probes: probes(index),
            metadata,
        }
    }

    /// The first `max` distinct blocks, in fetch order: what the index
    /// locates (`format::MAX_LOCATED` of them).
    pub fn first_blocks(&self, max: usize) -> Vec<u64> {
        let mut seen = HashSet::new();
        let all = self
            .warmup
            .iter()
            .flatten()
            .chain(&self.probes)
            .chain(&self.metadata);
        all.copied().filter(|&b| seen.insert(b)).take(max).collect()
    }
}

/// Follows a session's first reads and says when they identify a workload
/// group (the same rule in the prefetcher and in `hints --evaluate`).
pub struct Matcher {
    /// signature block → the groups it belongs to
    by_block: HashMap<u64, Vec<usize>>,
    seen: Vec<usize>,
    need: Vec<usize>,
    done: Vec<bool>,
    /// Distinct blocks read so far (up to [`MATCH_WITHIN`]).
    read: HashSet<u64>,
}

impl Matcher {
    pub fn new(index: &ManifestIndex) -> Self {
        let mut by_block: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, g) in index.warmup_groups.iter().enumerate() {
            for &b in &g.signature {
                by_block.entry(b).or_default().push(i);
            }
        }
        let n = index.warmup_groups.len();
        Matcher {
            by_block,
            seen: vec![0; n],
            need: index
                .warmup_groups
                .iter()
                .map(|g| MATCH_BLOCKS.min(g.signature.len()).max(1))
                .collect(),
            done: vec![false; n],
            read: HashSet::new(),
        }
    }

    /// Whether there is anything left to match.
    pub fn is_active(&self) -> bool {
        self.read.len() < MATCH_WITHIN && self.done.iter().any(|d| !d)
    }

    /// Notes a read of `block`; returns the groups it completes the match
    /// of (each group once).
    pub fn on_block(&mut self, block: u64) -> Vec<usize> {
        if self.read.len() >= MATCH_WITHIN || !self.read.insert(block) {
            return Vec::new();
        }
        let Some(groups) = self.by_block.get(&block) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &g in groups {
            self.seen[g] += 1;
            if !self.done[g] && self.seen[g] >= self.need[g] {
                self.done[g] = true;
                out.push(g);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::model::tests::index;

    const MS: u64 = 1_000_000;

    /// A session reading `blocks` 1 ms apart.
    fn session(blocks: impl IntoIterator<Item = u64>) -> Session {
        Session {
            events: blocks
                .into_iter()
                .enumerate()
                .map(|(i, b)| (i as u64 * MS, b))
                .collect(),
        }
    }

    /// Sessions that each read their own part of the volume form no group,
    /// but all start with the same blocks (a filesystem's metadata): those,
    /// and only those, are the core. Readers that share no start get none.
    #[test]
    fn sessions_without_a_group_still_warm_up_their_common_start() {
        let (_, stored) = index(256);
        let walk = |i: u64| session([0, 1, 5].into_iter().chain(20 + i * 30..35 + i * 30));
        let sessions: Vec<Session> = (0..4).map(walk).collect();
        let (core, groups) = learn_warmup(&sessions, &stored, true);
        assert!(groups.is_empty(), "{groups:?}");
        let mut core_blocks: Vec<u64> = core.iter().flat_map(|w| w.blocks(4)).collect();
        core_blocks.sort_unstable();
        assert_eq!(core_blocks, vec![0, 1, 5]);
        // Random readers: nothing in common at their start, no core, even
        // though their whole early reads overlap by chance.
        let random = |seed: u64| session((0..40).map(move |i| (i * 37 + seed * 101) % 200 + 50));
        let sessions: Vec<Session> = (0..4).map(random).collect();
        let (core, groups) = learn_warmup(&sessions, &stored, true);
        assert!(core.is_empty() && groups.is_empty(), "{core:?} {groups:?}");
    }

    /// Two workloads share a start (blocks 0-3, the "filesystem metadata")
    /// and read their own blocks after; three sessions of each, plus two
    /// random one-off sessions. The groups come out as the two workloads,
    /// the shared start as the core, and the noise makes no group.
    #[test]
    fn two_workloads_separate_and_noise_makes_no_group() {
        let (_, stored) = index(64);
        let a = || session((0..4).chain(10..30));
        let b = || session((0..4).chain(40..60));
        let mut sessions = vec![a(), b(), a(), b(), a(), b()];
        sessions.push(session([100, 150, 201, 3]));
        sessions.push(session([120, 170, 222, 2]));
        let (core, groups) = learn_warmup(&sessions, &stored, true);
        let core_blocks: Vec<u64> = core.iter().flat_map(|w| w.blocks(4)).collect();
        assert_eq!(core_blocks, vec![0, 1, 2, 3]);
        assert_eq!(groups.len(), 2, "{groups:?}");
        let mut sets: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| {
                let mut v: Vec<u64> = g.blocks.iter().flat_map(|w| w.blocks(4)).collect();
                v.sort();
                v
            })
            .collect();
        sets.sort();
        assert_eq!(sets, vec![(10..30).collect::<Vec<_>>(), (40..60).collect()]);
        for g in &groups {
            assert_eq!(g.sessions, 3);
            assert_eq!(g.signature.len(), SIGNATURE_LEN);
        }
        // Flat (version 2): one list, and only when early reads repeat
        // across all sessions: here they do not (A and B share 4 blocks of
        // 24), so nothing is warmed up at all.
        let (flat, none) = learn_warmup(&sessions, &stored, false);
        assert!(none.is_empty() && flat.is_empty());
    }

    #[test]
    fn a_session_is_matched_by_its_first_signature_blocks() {
        let (mut ix, stored) = index(64);
        let a = || session((0..4).chain(10..30));
        let b = || session((0..4).chain(40..60));
        let (core, groups) = learn_warmup(&[a(), b(), a(), b()], &stored, true);
        ix.warmup = core;
        ix.warmup_groups = groups;
        let which = ix
            .warmup_groups
            .iter()
            .position(|g| g.signature.contains(&41))
            .unwrap();
        let mut m = Matcher::new(&ix);
        // The shared start matches nothing; B's first own blocks match B.
        let mut got = Vec::new();
        for blk in [0, 1, 2, 3, 40, 41, 42] {
            got.extend(m.on_block(blk));
        }
        assert_eq!(got, vec![which]);
        // Past the first MATCH_WITHIN distinct blocks nothing matches: a
        // session that reads B's signature only after 64 others.
        let mut late = Matcher::new(&ix);
        for blk in 100..100 + MATCH_WITHIN as u64 {
            assert!(late.on_block(blk).is_empty());
        }
        assert!(!late.is_active());
        assert!(late.on_block(40).is_empty() && late.on_block(41).is_empty());
        // The probes: each group's first MATCH_BLOCKS signature blocks.
        let p = probes(&ix);
        assert_eq!(p.len(), 2 * MATCH_BLOCKS, "{p:?}");
        for g in &ix.warmup_groups {
            for b in &g.signature[..MATCH_BLOCKS] {
                assert!(p.contains(b), "{p:?} lacks {b}");
            }
        }
        // Evaluated: B's session gets the core and both groups' probes at
        // once (B's identifying reads hit) and its own set after them: all
        // 24 blocks it reads covered, A's two probes the only waste.
        let e = crate::predict::evaluate::evaluate(&ix, &stored, &b(), 0, 0.5, true);
        assert_eq!(e.warmup.recall, 1.0, "{e:?}");
        assert_eq!(e.warmup.prefetched_bytes, 26 * 65536, "{e:?}");
        assert!((e.warmup.precision - 24.0 / 26.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn probes_are_fetched_only_while_few() {
        let (mut ix, _) = index(64);
        let group = |first: u64| WarmupGroup {
            sessions: 2,
            signature: (first..first + SIGNATURE_LEN as u64).collect(),
            blocks: Vec::new(),
        };
        ix.warmup_groups = (0..MAX_PROBE_BLOCKS / MATCH_BLOCKS)
            .map(|i| group(100 * i as u64))
            .collect();
        assert_eq!(probes(&ix).len(), MAX_PROBE_BLOCKS);
        // One group more: the probes would cost more than they save.
        ix.warmup_groups.push(group(10_000));
        assert!(probes(&ix).is_empty());
        // No groups, no probes.
        ix.warmup_groups.clear();
        assert!(probes(&ix).is_empty());
    }
}
