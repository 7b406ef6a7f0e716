//! The fetch unit: how much a demand miss brings, sized by the link.
//!
//! A demand miss waits one round trip whatever it fetches, and on a remote
//! store a 512 KiB block (a hundred-odd KiB stored) leaves the link idle for
//! most of that trip. Where the index says nothing about a region (its group
//! has no hint in any window: no recorded session read it), a miss of block
//! `b` in data object `O` therefore also queues `b`'s neighbours stored in
//! `O` (the blocks after `b` first, then those before it, up to the whole
//! object), as many as the link carries nearly free: while their stored
//! bytes at the measured throughput per GET, plus decoding them at the
//! measured decode rate, cost at most a fraction of the measured round
//! trip ([`crate::fetch::link`]). The fraction is the unit's own measured
//! precision (the share of the blocks it fetched that demand reads then
//! read, starting from [`PRIOR_PRECISION`] and clamped to
//! [`MIN_FRACTION`]..=1): a neighbour is read with that probability, and
//! then saves a round trip, so the bytes are worth that share of one. A
//! scan reading everything it is given grows to a full round trip's worth;
//! a reader that leaves the unit unread shrinks it. (A fixed half round
//! trip brought ~3 incompressible 512 KiB blocks per miss behind 27 ms at
//! 134 MiB/s per GET, all of them read, and left the first-session tree
//! scan of `bench/peers.sh` 9× slower than with hydration.) On file:// that budget is smaller than
//! one block, so the unit stays at the block; behind 20 ms it is megabytes.
//!
//! The neighbours are a prefetch job of the highest priority, not part of
//! the demand GET: the read that missed gets its own block back after one
//! round trip and never waits for the extra bytes, while they arrive in
//! the same round trip on another connection.
//!
//! Where `create` found a filesystem ([`crate::format::FsPrior`]) and the
//! missed block belongs to a file spanning several blocks, the unit is the
//! rest of that file instead (its blocks after the missed one, in file
//! order, at most [`FILE_REST_BLOCKS`]): a file being read is most often
//! read whole, wherever its blocks lie. The same credit bounds it.
//!
//! Before both, where the missed block enters a directory about whose
//! walks the index learned nothing (no session entered a sibling:
//! [`crate::predict::directory::Directories::unobserved`]), the unit is the
//! rest of that directory's files, in `readdir` order, once per directory and
//! mount, at most [`crate::predict::directory::MAX_DIRECTORY_BLOCKS`]: a
//! walk (`tar`, `grep -r`, `cp -r`) reads a directory it enters whole, and
//! its files are small, so the object's neighbours (other directories'
//! files, where a writer interleaved them) or one file's rest bring little
//! of what it reads next. The same credit bounds it, so a reader of one
//! file per directory stops paying after [`INITIAL_CREDIT`] blocks. (Also
//! queueing the next sibling in `readdir` order on a directory's first read
//! was tried: it made a first-session `tar` 1.23 s → 1.76 s against tuned
//! s3fs's 1.02–1.06 s in back-to-back runs of `bench/peers.sh`, the guessed
//! directory competing with the one being read; not kept.)
//!
//! A walk of the tree is then handed to hydration: when the unit enters
//! a second child of one parent directory while the rest it brought of an
//! earlier sibling was read at least [`WALK_USE`] (a `tar`, a `grep -r` or
//! a scan of a tree, not one file here and one there), the rest of that
//! parent's subtree goes to the front of background hydration
//! ([`super::hydrate`]), which then starts at once instead of after its
//! start delay: a walk is bound by the link's throughput, and the unit's
//! one directory at a time leaves it idle for a round trip at every
//! directory. Hydration's priority keeps those GETs behind the demand
//! reads and the unit's own.
//!
//! Random readers must not pay for it. The classifier's verdict "random"
//! (after [`super::decide::CLASSIFY_EVERY`] reads) turns the unit off; before
//! a verdict, a **credit** bounds it: the unit may fetch at most
//! `credit` blocks, each costs one, and each of them a demand read later
//! reads earns [`EARN_PER_USE`] back. A workload that reads at least half of
//! what the unit brings keeps it; a random one spends [`INITIAL_CREDIT`]
//! blocks and then fetches exactly what it reads.

use std::collections::{HashMap, HashSet};

use crate::cache::BlockCache;
use crate::fetch::link::LinkEstimate;
use crate::format::index::NO_PARENT;
use crate::format::FsPrior;
use crate::predict::directory::{self, Directories};
use crate::snapshot::{BlockRef, Snapshot};
use crate::trace::classify::Class;

/// The unit's precision before it has fetched anything: an even chance,
/// weighted as [`PRIOR_WEIGHT`] blocks.
pub(super) const PRIOR_PRECISION: f64 = 0.5;
pub(super) const PRIOR_WEIGHT: f64 = 16.0;
/// The smallest fraction of a round trip the unit spends: below it the
/// unit is one block or none, and the credit decides.
pub(super) const MIN_FRACTION: f64 = 0.25;
/// Blocks the unit may fetch before any of them was read: two expansions
/// of a typical 8-block budget. A random reader of 200 reads wastes at most
/// this (8 MiB of 512 KiB blocks).
pub(super) const INITIAL_CREDIT: u64 = 16;
/// Credit a read unit block earns back: 2 makes "half of the unit read"
/// the break-even precision.
pub(super) const EARN_PER_USE: u64 = 2;
/// Credit saved at most, so a workload turning random stops within one
/// budget's worth of waste.
pub(super) const MAX_CREDIT: u64 = 256;
/// Block ids looked at on each side of a miss at most (a 4 MiB data object
/// holds at most 64 blocks of 64 KiB or more).
pub(super) const MAX_SCAN: u64 = 64;
/// GETs measured before the link model is trusted: before that the round
/// trip is unknown (zero), so no unit is fetched.
pub(super) const MIN_SAMPLES: u64 = 1;
/// Blocks of a file's rest fetched at most on one miss: 16 MiB of 512 KiB
/// blocks, a few round trips' worth of a fast link; a larger file read
/// through is a sequential stream, which read-ahead follows.
pub(super) const FILE_REST_BLOCKS: usize = 32;
/// The share of an entered directory's rest read before its parent's walk
/// goes to hydration: a walk reads most of what it is given (a scan of
/// every third file of each directory still touches most of its 512 KiB
/// blocks), an interpreter importing a module here and there much less.
pub(super) const WALK_USE: f64 = 0.5;
/// Unit blocks remembered until read, at most (then forgotten: they just
/// earn nothing).
const MAX_TRACKED: usize = 1 << 16;

/// A demand miss, as the unit sees it.
pub(super) struct Miss<'a> {
    pub snap: &'a Snapshot,
    pub cache: &'a BlockCache,
    /// The store link as measured now.
    pub link: &'a LinkEstimate,
    /// The classifier's verdict on the workload, once it has one.
    pub class: Option<Class>,
    /// The block that missed.
    pub block: u64,
}

pub(super) struct FetchUnit {
    credit: u64,
    /// Blocks the unit fetched, and how many of them demand reads read.
    fetched: u64,
    used: u64,
    /// Blocks the unit queued that no demand read has read yet.
    unread: HashSet<u64>,
    /// The prior's file runs, sorted by first block: (first, count, file).
    file_runs: Vec<(u64, u32, usize)>,
    /// Directories whose rest the unit fetched (once per mount each).
    dirs_fetched: HashSet<u32>,
    /// Per parent directory, its children the unit entered and the rest it
    /// fetched of each.
    entered: HashMap<u32, Vec<Vec<u64>>>,
    /// Parents whose walk went to hydration (once each).
    walked: HashSet<u32>,
    /// A walk's subtree blocks, not yet handed to hydration.
    walk: Option<Vec<u64>>,
}

impl Default for FetchUnit {
    fn default() -> Self {
        FetchUnit {
            credit: INITIAL_CREDIT,
            fetched: 0,
            used: 0,
            unread: HashSet::new(),
            file_runs: Vec::new(),
            dirs_fetched: HashSet::new(),
            entered: HashMap::new(),
            walked: HashSet::new(),
            walk: None,
        }
    }
}

impl FetchUnit {
    pub fn new(snap: &Snapshot) -> Self {
        let mut file_runs: Vec<(u64, u32, usize)> = snap
            .index()
            .prior
            .iter()
            .flat_map(|p| p.files.iter().enumerate())
            .flat_map(|(i, runs)| runs.iter().map(move |r| (r.first, r.count, i)))
            .collect();
        file_runs.sort_unstable();
        FetchUnit {
            file_runs,
            ..Default::default()
        }
    }

    /// The prior's file holding block `b`, if any.
    fn file_of(&self, b: u64) -> Option<usize> {
        let i = self.file_runs.partition_point(|r| r.0 <= b);
        let (first, count, file) = *self.file_runs.get(i.checked_sub(1)?)?;
        (b < first + count as u64).then_some(file)
    }

    /// The blocks of the prior's file `file` after `b`, in file order.
    fn rest_of_file(snap: &Snapshot, file: usize, b: u64) -> Vec<u64> {
        let Some(runs) = snap.index().prior.as_ref().and_then(|p| p.files.get(file)) else {
            return Vec::new();
        };
        runs.iter()
            .flat_map(|r| r.blocks())
            .skip_while(|&x| x != b)
            .skip(1)
            .take(FILE_REST_BLOCKS)
            .collect()
    }

    /// A demand read of `blocks`: returns how many of them the unit had
    /// fetched (each earns credit).
    pub fn on_read(&mut self, blocks: std::ops::Range<u64>) -> u64 {
        if self.unread.is_empty() {
            return 0;
        }
        let used = blocks.filter(|b| self.unread.remove(b)).count() as u64;
        self.credit = (self.credit + used * EARN_PER_USE).min(MAX_CREDIT);
        self.used += used;
        used
    }

    /// The share of a round trip the unit may spend now: its measured
    /// precision, smoothed by the prior.
    pub fn fraction(&self) -> f64 {
        let p = (self.used as f64 + PRIOR_PRECISION * PRIOR_WEIGHT)
            / (self.fetched as f64 + PRIOR_WEIGHT);
        p.clamp(MIN_FRACTION, 1.0)
    }

    /// Whether the unit may act on a miss of block `b`: the workload is
    /// not random, credit is left, the link is measured and remote, the
    /// index says nothing about `b`'s group, and `b` is not cached. Returns
    /// where `b` is stored.
    async fn applies(&self, m: &Miss<'_>) -> Option<BlockRef> {
        let (snap, cache, b) = (m.snap, m.cache, m.block);
        if m.class == Some(Class::Random)
            || self.credit == 0
            || m.link.samples < MIN_SAMPLES
            || m.link.local
        {
            return None;
        }
        let gs = snap.header().group_size as u64;
        if let Some(g) = snap.index().group(b / gs) {
            let hinted =
                g.hints.iter().any(|&h| h > 0.0) || g.successors.iter().any(|s| !s.is_empty());
            if hinted {
                return None;
            }
        }
        let missed = snap.locate(b).await.ok().flatten()?;
        if cache.contains(&missed.checksum) {
            return None;
        }
        Some(missed)
    }

    /// For a miss of block `b` (nothing planned or cached) entering a
    /// directory nothing is learned about, the rest of that directory: its
    /// blocks after `b` in `readdir` order, then those before it; once per
    /// directory and mount (see the module doc).
    pub async fn directory_rest(
        &mut self,
        m: &Miss<'_>,
        dirs: &Directories,
        planned: impl Fn(u64) -> bool,
    ) -> Vec<u64> {
        let (snap, cache, b) = (m.snap, m.cache, m.block);
        let (Some(d), Some(prior)) = (dirs.unobserved(b), snap.index().prior.as_ref()) else {
            return Vec::new();
        };
        if self.dirs_fetched.contains(&d) || planned(b) || self.applies(m).await.is_none() {
            return Vec::new();
        }
        self.dirs_fetched.insert(d);
        let all: Vec<u64> = directory::blocks(prior, d).collect();
        let at = all.iter().position(|&n| n == b).map_or(0, |i| i + 1);
        let out = self.take_credit(
            all[at..]
                .iter()
                .chain(&all[..at])
                .copied()
                .filter(|&n| n != b && !planned(n) && !super::decide::cached(snap, cache, n)),
        );
        self.note_entry(prior, d);
        let rest = self.spend(out);
        if let Some(p) = prior.directories.get(d as usize).map(|pd| pd.parent) {
            self.entered.entry(p).or_default().push(rest.clone());
        }
        rest
    }

    /// Directory `d` was entered: when an earlier sibling's rest was read
    /// enough, the walk of their parent (its whole subtree, the
    /// directories after `d` first) becomes [`Self::take_walk`]'s.
    fn note_entry(&mut self, prior: &FsPrior, d: u32) {
        let Some(p) = prior.directories.get(d as usize).map(|pd| pd.parent) else {
            return;
        };
        if p == NO_PARENT || self.walked.contains(&p) {
            return;
        }
        let read = |rest: &Vec<u64>| {
            let used = rest.iter().filter(|b| !self.unread.contains(b)).count();
            !rest.is_empty() && used as f64 >= WALK_USE * rest.len() as f64
        };
        if !self.entered.get(&p).is_some_and(|s| s.iter().any(read)) {
            return;
        }
        self.walked.insert(p);
        let under: Vec<u32> = (0..prior.directories.len() as u32)
            .filter(|&x| x != d && directory::is_under(prior, x, p))
            .collect();
        let at = under.partition_point(|&x| x < d);
        let blocks = under[at..]
            .iter()
            .chain(&under[..at])
            .flat_map(|&x| directory::blocks(prior, x))
            .collect();
        self.walk = Some(blocks);
    }

    /// The blocks of a walk detected since the last call (see the module
    /// doc), for hydration.
    pub fn take_walk(&mut self) -> Option<Vec<u64>> {
        self.walk.take()
    }

    /// The neighbours of block `b` to fetch for a read that needs it now,
    /// or nothing: `b` is cached, hinted, the workload random, or the link
    /// makes no neighbour nearly free.
    pub async fn neighbours(&mut self, m: &Miss<'_>, planned: impl Fn(u64) -> bool) -> Vec<u64> {
        let Some(missed) = self.applies(m).await else {
            return Vec::new();
        };
        let (snap, cache, link, b) = (m.snap, m.cache, m.link, m.block);
        if let Some(file) = self.file_of(b) {
            let out = self.take_credit(
                Self::rest_of_file(snap, file, b)
                    .into_iter()
                    .filter(|&n| !planned(n) && !super::decide::cached(snap, cache, n)),
            );
            return self.spend(out);
        }
        let blocks = snap.header().block_count();
        let fraction = self.fraction();
        let (mut stored, mut decoded) = (0u64, 0u64);
        let mut out = Vec::new();
        // Forward, then backward, each walk stopping at the object's end.
        for forward in [true, false] {
            let mut prev = missed.clone();
            for step in 1..=MAX_SCAN {
                let n = if forward {
                    b + step
                } else {
                    match b.checked_sub(step) {
                        Some(n) => n,
                        None => break,
                    }
                };
                if n >= blocks || out.len() as u64 >= self.credit {
                    break;
                }
                let r = match snap.locate(n).await {
                    Ok(Some(r)) => r,
                    Ok(None) => continue, // a hole: not stored, look further
                    Err(_) => break,
                };
                if !stored_beside(&prev, &r, forward) {
                    break;
                }
                prev = r.clone();
                if cache.contains(&r.checksum) || planned(n) {
                    continue;
                }
                let len = snap.block_len(n) as u64;
                if !link.nearly_free(stored + r.length as u64, decoded + len, fraction) {
                    break;
                }
                stored += r.length as u64;
                decoded += len;
                out.push(n);
            }
        }
        self.spend(out)
    }

    /// The first of `blocks` the credit allows.
    fn take_credit(&self, blocks: impl Iterator<Item = u64>) -> Vec<u64> {
        blocks.take(self.credit as usize).collect()
    }

    /// Takes `out` from the credit and remembers it until read.
    fn spend(&mut self, out: Vec<u64>) -> Vec<u64> {
        self.credit = self.credit.saturating_sub(out.len() as u64);
        self.fetched += out.len() as u64;
        if self.unread.len() + out.len() > MAX_TRACKED {
            self.unread.clear();
        }
        self.unread.extend(out.iter().copied());
        out
    }

    #[cfg(test)]
    pub fn credit(&self) -> u64 {
        self.credit
    }
}

/// Whether `next` is stored right after (or, walking back, right before)
/// `prev` in the same data object: one ranged GET can carry both.
fn stored_beside(prev: &BlockRef, next: &BlockRef, forward: bool) -> bool {
    if prev.object != next.object {
        return false;
    }
    if forward {
        prev.offset + prev.length as u64 == next.offset
    } else {
        next.offset + next.length as u64 == prev.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_spent_by_fetches_and_earned_by_reads() {
        let mut u = FetchUnit::default();
        assert_eq!(u.credit(), INITIAL_CREDIT);
        u.unread.extend([1, 2, 3, 4]);
        u.credit -= 4;
        assert_eq!(u.on_read(0..2), 1);
        assert_eq!(u.credit(), INITIAL_CREDIT - 4 + EARN_PER_USE);
        assert_eq!(u.on_read(1..2), 0, "a block earns once");
        assert_eq!(u.on_read(2..5), 3);
        assert_eq!(u.credit(), INITIAL_CREDIT + 4);
    }

    #[test]
    fn the_fraction_of_a_round_trip_follows_the_units_precision() {
        let mut u = FetchUnit::default();
        assert_eq!(u.fraction(), PRIOR_PRECISION);
        // Everything it fetched was read: towards a whole round trip.
        let got = u.spend((0..64).collect());
        assert_eq!(u.on_read(0..64), got.len() as u64);
        assert!(u.fraction() > 0.85, "{}", u.fraction());
        // Nothing read: down to the floor.
        let mut u = FetchUnit {
            credit: MAX_CREDIT,
            ..Default::default()
        };
        u.spend((100..300).collect());
        assert_eq!(u.fraction(), MIN_FRACTION);
    }
}
