//! Hints and successors: on the first touch of a group in an episode (the
//! snapshot's current window W), prefetch the rest of the group when its
//! hint, discounted by what is already cached or queued
//! ([`crate::predict::remaining_precision`]), reaches the threshold; the
//! same for each successor group. Blocks already queued by any job count
//! as covered, as `hints --evaluate` counts them: without that, a group
//! touched while the warm-up is still fetching it looked uncovered and was
//! fetched whole.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cache::BlockCache;
use crate::snapshot::Snapshot;

/// Episode starts remembered at most; past it, closed episodes are
/// forgotten (a group touched again then simply starts a new one).
const MAX_EPISODES: usize = 100_000;

/// Per mounted snapshot: open episodes and the blocks already queued.
#[derive(Default)]
pub(super) struct HintState {
    /// group → start of its current episode
    episodes: HashMap<u64, Instant>,
    /// Blocks some job was queued for (warm-up, read-ahead, hints).
    planned: HashSet<u64>,
}

impl HintState {
    /// Remembers `blocks` as queued for prefetch (forgetting everything
    /// past [`super::accounting::MAX_TRACKED`]: then hints are judged on
    /// the cache alone).
    pub fn plan(&mut self, blocks: &[u64]) {
        if self.planned.len() + blocks.len() > super::accounting::MAX_TRACKED {
            self.planned.clear();
        }
        self.planned.extend(blocks.iter().copied());
    }

    /// Whether some job was queued for block `b`.
    pub fn is_planned(&self, b: u64) -> bool {
        self.planned.contains(&b)
    }

    /// The block lists to prefetch for a read of `groups` of `snap`, with
    /// the index's window number `w` (of length `window`) at `threshold`.
    pub async fn on_read(
        &mut self,
        snap: &Snapshot,
        cache: &BlockCache,
        groups: std::ops::RangeInclusive<u64>,
        w: usize,
        window: Duration,
        threshold: f32,
    ) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        let now = Instant::now();
        for g in groups {
            if self
                .episodes
                .get(&g)
                .is_some_and(|t0| now.duration_since(*t0) <= window)
            {
                continue;
            }
            self.episodes.insert(g, now);
            let Some(entry) = snap.index().group(g) else {
                continue;
            };
            let hint = entry.hints.get(w).copied().unwrap_or(0.0);
            let successors = entry.successors.get(w);
            let strong_successor =
                successors.is_some_and(|v| v.iter().any(|s| s.probability >= threshold));
            if hint < threshold && !strong_successor {
                continue;
            }
            let candidates = std::iter::once((g, hint)).chain(
                successors
                    .into_iter()
                    .flatten()
                    .map(|s| (s.group, s.probability)),
            );
            for (cg, strength) in candidates {
                if strength < threshold {
                    continue;
                }
                let Some(ce) = snap.index().group(cg) else {
                    continue;
                };
                let Ok(blocks) = snap.group_blocks(ce).await else {
                    continue;
                };
                let covered = blocks
                    .iter()
                    .filter(|b| self.planned.contains(&b.block_id) || cache.contains(&b.checksum))
                    .count();
                if crate::predict::remaining_precision(strength, blocks.len(), covered) >= threshold
                {
                    let ids: Vec<u64> = blocks.iter().map(|b| b.block_id).collect();
                    self.plan(&ids);
                    out.push(ids);
                }
            }
        }
        if self.episodes.len() > MAX_EPISODES {
            self.episodes
                .retain(|_, t0| now.duration_since(*t0) <= window);
        }
        out
    }
}
