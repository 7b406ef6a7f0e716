//! Hints and successors: on the first touch of a group in an episode (the
//! snapshot's current window W), prefetch what [`crate::predict::rule`]
//! selects: the group's and its successors' blocks at or above the
//! threshold by their block masks (whole groups, discounted by what is
//! covered, for an index without masks), the successors of the context the
//! last distinct groups read match. Blocks already queued by any job count
//! as covered, as `hints --evaluate` counts them: without that, a group
//! touched while the warm-up is still fetching it looked uncovered and was
//! fetched whole. Blocks the directory walk rule governs
//! ([`crate::predict::directory::Directories::governs`]) are left to it,
//! and an episode entered through one asks no hint of its group.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cache::BlockCache;
use crate::predict::{rule, Recent};
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
    /// The distinct groups read last, for contexts.
    recent: Recent,
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

    /// The block lists to prefetch for a read of blocks `read` of `snap`, with
    /// the index's window number `w` (of length `window`) at `threshold`:
    /// what [`crate::predict::rule`] selects on each group's first touch in
    /// an episode.
    // Each argument is one input of the rule; a struct for one caller
    // would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn on_read(
        &mut self,
        snap: &Snapshot,
        cache: &BlockCache,
        read: std::ops::Range<u64>,
        w: usize,
        window: Duration,
        threshold: f32,
        governed: impl Fn(u64) -> bool,
    ) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        let now = Instant::now();
        let history = snap.index().history as usize;
        let gs = snap.header().group_size as u64;
        if read.is_empty() {
            return out;
        }
        for g in read.start / gs..=(read.end - 1) / gs {
            // The episode's first block in this group.
            let entry = read.start.max(g * gs) - g * gs;
            let open = self
                .episodes
                .get(&g)
                .is_some_and(|t0| now.duration_since(*t0) <= window);
            // The history is read only where an episode starts (most reads
            // fall in an open one), but kept up to date on every read.
            let before = if open {
                Vec::new()
            } else {
                self.recent.before(g, history)
            };
            self.recent.push(g, history);
            if open {
                continue;
            }
            self.episodes.insert(g, now);
            let walked = governed(g * gs + entry);
            for c in rule::candidates(snap.index(), g, entry, w, &before, walked) {
                if !c.may_pass(threshold) {
                    continue;
                }
                let Some(ce) = snap.index().group(c.group) else {
                    continue;
                };
                let Ok(blocks) = snap.group_blocks(ce).await else {
                    continue;
                };
                let ids: Vec<u64> = blocks.iter().map(|b| b.block_id).collect();
                // The read's own blocks are being fetched by the read; the
                // cache is asked only of blocks the rule would take.
                let cached = |b: u64| {
                    ids.binary_search(&b)
                        .is_ok_and(|i| cache.contains(&blocks[i].checksum))
                };
                let pick = c.select(&ids, c.group * gs, threshold, |b| {
                    read.contains(&b) || self.planned.contains(&b) || governed(b) || cached(b)
                });
                if !pick.is_empty() {
                    self.plan(&pick);
                    out.push(pick);
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
