//! How an index's predictions turn into blocks to prefetch: one rule,
//! used by the prefetcher (`prefetch/hints.rs`) and by `hints --evaluate`
//! ([`super::evaluate`]), so what the benchmark scores is what a mount does.
//!
//! On the first read of group g in an episode, the candidates are g itself
//! (its hint: the mask of episodes that started at the same block when the
//! index has one, else the plain mask) and its successors — the list of the first context that
//! matches the distinct groups read just before ([`super::Recent`]), else
//! the plain list. Of a candidate with a block mask, the blocks at or above
//! the threshold that are not yet read, cached or queued are fetched (each
//! is its own prediction, of precision ≥ the threshold). Without a mask (a
//! version 1/2 index, or `--flat`), the whole group's strength decides,
//! discounted by what is covered ([`super::remaining_precision`]).

use crate::format::{mask_probability, ManifestIndex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The group's own hint.
    Hint,
    Successor,
}

/// A group the index says to consider.
pub struct Candidate<'a> {
    pub group: u64,
    pub probability: f32,
    pub mask: Option<&'a [u8]>,
    pub source: Source,
}

/// The candidates of an episode of `g` in window `w` that starts at the
/// group's block `entry` (offset in the group), given `recent` (distinct
/// groups read before, most recent first). `walked`: the entry block is
/// one the directory walk rule governs
/// ([`super::directory::Directories::governs`]); then the walk speaks for
/// the episode and the group's own hint is not asked (a group holding the
/// edge of a walked tree and another workload's files learned its mask
/// from that workload, and a walk entering it would drag those in).
pub fn candidates<'a>(
    index: &'a ManifestIndex,
    g: u64,
    entry: u64,
    w: usize,
    recent: &[u64],
    walked: bool,
) -> Vec<Candidate<'a>> {
    let Some(e) = index.group(g) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !walked {
        out.push(Candidate {
            group: g,
            probability: e.hints.get(w).copied().unwrap_or(0.0),
            mask: if index.history > 0 {
                e.mask_at(w, entry)
            } else {
                e.mask(w)
            },
            source: Source::Hint,
        });
    }
    for s in e.successors_in(w, recent, index.history as usize) {
        out.push(Candidate {
            group: s.group,
            probability: s.probability,
            mask: (!s.mask.is_empty()).then_some(s.mask.as_slice()),
            source: Source::Successor,
        });
    }
    out
}

impl Candidate<'_> {
    /// Whether anything of it can reach `threshold` (cheap: before the
    /// group's blocks are looked up).
    pub fn may_pass(&self, threshold: f32) -> bool {
        match self.mask {
            Some(m) => m.iter().any(|&b| mask_probability(b) >= threshold),
            None => self.probability >= threshold,
        }
    }

    /// Of the group's stored `blocks` (ascending ids; the group starts at
    /// block `first`), those to prefetch at `threshold`, where `covered`
    /// says a block is already read, cached or queued.
    pub fn select(
        &self,
        blocks: &[u64],
        first: u64,
        threshold: f32,
        covered: impl Fn(u64) -> bool,
    ) -> Vec<u64> {
        match self.mask {
            Some(m) => blocks
                .iter()
                .copied()
                .filter(|&b| {
                    let p = m.get((b - first) as usize).copied().unwrap_or(0);
                    mask_probability(p) >= threshold && !covered(b)
                })
                .collect(),
            None => {
                let n_covered = blocks.iter().filter(|&&b| covered(b)).count();
                if super::remaining_precision(self.probability, blocks.len(), n_covered) < threshold
                {
                    return Vec::new();
                }
                blocks.iter().copied().filter(|&b| !covered(b)).collect()
            }
        }
    }
}
