//! Directory walks: what a volume's use says about directories no session
//! has read yet.
//!
//! Traces predict what they saw. A `grep -r`, a `tar`, a build that reads
//! whichever package directories it needs — their next session reads
//! *other* directories, which no hint names. But the filesystem knows
//! where each directory's files are (the prior `create` records from ext4:
//! [`crate::format::index::PriorDir`]), and sessions show how a volume's
//! directories are used: under `files/` a walk reads each directory it
//! enters whole; under `lib/`, an interpreter reads some modules of each
//! package. That is learned per **parent** directory, so it speaks for
//! children never read:
//!
//! - **affinity(P)** = over every session and every child directory D of P
//!   the session entered (read a block of D's that no other directory's
//!   files share, else any owned one): the share of D's stored blocks it read,
//!   summed, over (n + 1) observations (the k/(n+1) of block masks: one
//!   observation alone is an even chance, not a certainty). Only children
//!   of at most [`MAX_DIRECTORY_BLOCKS`] count: the rule applies to no
//!   others.
//! - **The rule**: on a read that nothing prefetched (a miss) of a block
//!   that says directory D was entered (as above), once per session and
//!   directory: when affinity(parent of D) ≥ the threshold and
//!   D holds at most [`MAX_DIRECTORY_BLOCKS`] blocks, fetch D's blocks not
//!   yet read, cached or queued. Affinity is the expected precision of that
//!   fetch, so the one threshold of hints serves it too.
//!
//! A parent no session entered a child of has learned nothing
//! ([`crate::format::index::UNOBSERVED`], kept apart from a learned
//! affinity near 0): there the rule does not fire, and the mount's fetch
//! unit may bring the rest of a directory a miss enters, as its guess
//! under its own credit ([`Directories::unobserved`], `prefetch/unit.rs`).
//! That is the first session's walk: a `tar` or `grep -r` of a snapshot
//! nobody traced.
//!
//! Blocks of directories the rule applies to are its alone: hints and
//! successors leave them ([`Directories::governs`]), since their guesses of
//! which directory a walk enters next were the waste of tree walks; except
//! in directories of fewer than [`MIN_GOVERNED_BLOCKS`], where missing the
//! first block costs more than a hint's guess does.
//!
//! Trade-offs. Firing on misses only leaves what the hints learned alone
//! (a trained package directory is hinted block by block, and its hits
//! never bring the rest). The first read of each directory is still a
//! miss: a walk of directories of n blocks reaches a recall of about
//! (n − 1)/n. Blocks rather than files: a read of a block does not say
//! which of its files was read, so the share is in blocks, and ownership
//! keeps the last file of one directory from starting the next. One parent
//! level: a walk's habits belong to the tree it walks (`files/` against
//! `lib/`), and deeper ancestors would mix them.
//!
//! The same [`Directories`] serve the mount (`prefetch/decide.rs`) and
//! `hints --evaluate` ([`super::evaluate`]), so the benchmark scores what a
//! mount does.

use std::collections::HashSet;

use super::{Session, StoredBlocks};
use crate::format::index::{PriorDir, NO_PARENT, UNOBSERVED};
use crate::format::{mask_byte, mask_probability, FsPrior};

/// A directory whose files span more blocks than this is not fetched on
/// a read (32 MiB of 512 KiB blocks: a wrong guess costs a quarter second
/// of a 1 Gbit/s link at most, and a walk through a larger one reads its
/// big files as streams, which read-ahead follows).
pub const MAX_DIRECTORY_BLOCKS: u64 = 64;

/// What a directory's parent says about walks into it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parent {
    /// The rule never applies: no parent, or more than
    /// [`MAX_DIRECTORY_BLOCKS`].
    Never,
    /// No session entered a child of the parent: nothing is learned, and
    /// the fetch unit may guess (`prefetch/unit.rs`).
    Unobserved,
    /// The parent's learned affinity.
    Learned(f32),
}

/// Directories of fewer blocks than this stay the hints' where they have
/// any: the rule misses the first block of each directory it brings, a
/// recall of (n - 1)/n, below 3/4 here, while a hint knows which blocks.
/// (Measured on `bench/hints_varied.sh`'s traces: governing every walked
/// directory left a Python start without its warm-up at recall 0.44, as its
/// packages of 1-3 blocks sit under a parent read whole; from 4 blocks up
/// 0.88, and the tree walks unchanged.)
pub const MIN_GOVERNED_BLOCKS: u64 = 4;

/// A prior's directories, looked up by block.
#[derive(Debug, Default)]
pub struct Directories {
    /// Entry runs of every directory, sorted: (first block, count, dir).
    entries: Vec<(u64, u32, u32)>,
    /// Per directory: what its parent learned.
    parent: Vec<Parent>,
    /// Per directory: how many blocks its files span.
    blocks: Vec<u64>,
}

impl Directories {
    /// The blocks that say a directory was entered: its owned blocks that
    /// no other directory's files share (a walk that reads one directory
    /// whole reads its neighbours' first or last files too), or all its
    /// owned blocks when every one is shared.
    pub fn new(prior: Option<&FsPrior>) -> Self {
        let Some(p) = prior else {
            return Directories::default();
        };
        let mut seen = HashSet::new();
        let mut shared = HashSet::new();
        for pd in &p.directories {
            for b in pd.blocks.iter().flat_map(|r| r.blocks()) {
                if !seen.insert(b) {
                    shared.insert(b);
                }
            }
        }
        let mut entries: Vec<(u64, u32, u32)> = Vec::new();
        for (d, pd) in p.directories.iter().enumerate() {
            let all = || pd.owned.iter().flat_map(|r| r.blocks());
            let interior = all().any(|b| !shared.contains(&b));
            for b in all().filter(|b| !interior || !shared.contains(b)) {
                match entries.last_mut() {
                    Some(r) if r.2 == d as u32 && r.0 + r.1 as u64 == b => r.1 += 1,
                    _ => entries.push((b, 1, d as u32)),
                }
            }
        }
        entries.sort_unstable();
        let parent = p
            .directories
            .iter()
            .map(|pd| match p.directories.get(pd.parent as usize) {
                Some(_) if block_count(pd) > MAX_DIRECTORY_BLOCKS => Parent::Never,
                None => Parent::Never,
                Some(pp) if pp.affinity == UNOBSERVED => Parent::Unobserved,
                Some(pp) => Parent::Learned(mask_probability(pp.affinity)),
            })
            .collect();
        let blocks = p.directories.iter().map(block_count).collect();
        Directories {
            entries,
            parent,
            blocks,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The directory a read of block `b` says was entered, if any.
    pub fn owner(&self, b: u64) -> Option<u32> {
        let i = self.entries.partition_point(|r| r.0 <= b);
        let (first, count, d) = *self.entries.get(i.checked_sub(1)?)?;
        (b < first + count as u64).then_some(d)
    }

    /// The directory block `b` enters, if the rule fetches it at
    /// `threshold`.
    pub fn walked(&self, b: u64, threshold: f32) -> Option<u32> {
        self.owner(b).filter(
            |&d| matches!(self.parent.get(d as usize), Some(Parent::Learned(a)) if *a >= threshold),
        )
    }

    /// The directory block `b` enters when no session has entered any of
    /// its siblings (nothing is learned about walks there: the fetch unit's
    /// guess), if the rule could apply to it.
    pub fn unobserved(&self, b: u64) -> Option<u32> {
        self.owner(b)
            .filter(|&d| self.parent.get(d as usize) == Some(&Parent::Unobserved))
    }

    /// Whether block `b` is left to the walk rule: it enters a directory
    /// of at least [`MIN_GOVERNED_BLOCKS`] the rule would fetch at
    /// `threshold` (so hints and successors do not guess at it: the rule
    /// brings it when the walk gets there).
    pub fn governs(&self, b: u64, threshold: f32) -> bool {
        self.walked(b, threshold).is_some_and(|d| {
            self.blocks.get(d as usize).copied().unwrap_or(0) >= MIN_GOVERNED_BLOCKS
        })
    }
}

/// The blocks of directory `d` of `prior`, in `readdir` order.
pub fn blocks(prior: &FsPrior, d: u32) -> impl Iterator<Item = u64> + '_ {
    prior
        .directories
        .get(d as usize)
        .into_iter()
        .flat_map(|pd| pd.blocks.iter().flat_map(|r| r.blocks()))
}

/// Whether directory `d` lies under `ancestor` (at any depth, `d` itself
/// excluded). The walk up stops after as many steps as there are
/// directories, so a damaged prior whose parents loop cannot hang it.
pub fn is_under(prior: &FsPrior, d: u32, ancestor: u32) -> bool {
    let mut at = d;
    for _ in 0..prior.directories.len() {
        match prior.directories.get(at as usize).map(|pd| pd.parent) {
            Some(p) if p == ancestor => return true,
            Some(p) if p != NO_PARENT => at = p,
            _ => return false,
        }
    }
    false
}

fn block_count(pd: &PriorDir) -> u64 {
    pd.blocks.iter().map(|r| r.count as u64).sum()
}

/// Learns every directory's affinity from `sessions` (replacing what was
/// there: a `hints` run learns from all the sessions it is given).
pub fn learn(prior: &mut FsPrior, stored: &StoredBlocks, sessions: &[Session]) {
    let dirs = Directories::new(Some(prior));
    let n_dirs = prior.directories.len();
    let mut sum = vec![0f64; n_dirs];
    let mut n = vec![0u64; n_dirs];
    for s in sessions {
        let read: HashSet<u64> = s.events.iter().map(|e| e.1).collect();
        let touched: HashSet<u32> = read.iter().filter_map(|&b| dirs.owner(b)).collect();
        for d in touched {
            let pd = &prior.directories[d as usize];
            if pd.parent == NO_PARENT || block_count(pd) > MAX_DIRECTORY_BLOCKS {
                continue;
            }
            let (mut total, mut got) = (0u64, 0u64);
            for b in pd.blocks.iter().flat_map(|r| r.blocks()) {
                if stored.is_stored(b) {
                    total += 1;
                    got += read.contains(&b) as u64;
                }
            }
            if total > 0 {
                sum[pd.parent as usize] += got as f64 / total as f64;
                n[pd.parent as usize] += 1;
            }
        }
    }
    for (k, pd) in prior.directories.iter_mut().enumerate() {
        pd.affinity = if n[k] == 0 {
            UNOBSERVED
        } else {
            mask_byte(sum[k] / (n[k] + 1) as f64).max(UNOBSERVED + 1)
        };
    }
}

/// Forgets every learned affinity (the flat model learns none).
pub fn forget(prior: &mut FsPrior) {
    for pd in &mut prior.directories {
        pd.affinity = UNOBSERVED;
    }
}

/// One session's walks: which directories the rule has fired for.
#[derive(Debug, Default)]
pub struct Walks {
    fired: HashSet<u32>,
}

impl Walks {
    /// A read of block `b` that nothing prefetched or cached (`missed`,
    /// asked only where the rule would fire): the directory whose blocks
    /// to fetch, if the rule fires (see the module doc).
    pub fn on_read(
        &mut self,
        dirs: &Directories,
        b: u64,
        threshold: f32,
        missed: impl FnOnce() -> bool,
    ) -> Option<u32> {
        let d = dirs.walked(b, threshold)?;
        if self.fired.contains(&d) || !missed() {
            return None;
        }
        self.fired.insert(d);
        Some(d)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::BlockRun;

    /// A prior of a root (0), a parent P (1) under it with no files of
    /// its own, then `dirs`: (parent, first block, blocks), each owning
    /// its blocks.
    pub(crate) fn prior_of(dirs: &[(u32, u64, u32)]) -> FsPrior {
        let mut directories = vec![
            PriorDir {
                parent: NO_PARENT,
                ..Default::default()
            },
            PriorDir {
                parent: 0,
                ..Default::default()
            },
        ];
        directories.extend(dirs.iter().map(|&(parent, first, count)| PriorDir {
            parent,
            blocks: vec![BlockRun { first, count }],
            owned: vec![BlockRun { first, count }],
            affinity: 0,
        }));
        FsPrior {
            filesystem: "ext4".into(),
            metadata: vec![],
            files: vec![],
            directories,
        }
    }

    /// A root, a parent P (1) with 4 children of 4 blocks each (2..=5:
    /// blocks 0-3, 4-7, 8-11, 12-15) and a child of the root (6: 16-19).
    pub(crate) fn prior() -> FsPrior {
        prior_of(&[(1, 0, 4), (1, 4, 4), (1, 8, 4), (1, 12, 4), (0, 16, 4)])
    }

    fn stored() -> StoredBlocks {
        StoredBlocks {
            group_size: 4,
            by_group: (0..8).map(|g| (g, (g * 4..g * 4 + 4).collect())).collect(),
        }
    }

    fn session(blocks: &[u64]) -> Session {
        Session {
            events: blocks
                .iter()
                .enumerate()
                .map(|(t, &b)| (t as u64, b))
                .collect(),
        }
    }

    #[test]
    fn a_directory_is_under_its_ancestors_and_a_looping_prior_ends() {
        let mut p = prior_of(&[(1, 0, 4), (2, 4, 4)]);
        assert!(is_under(&p, 3, 2) && is_under(&p, 3, 1) && is_under(&p, 3, 0));
        assert!(!is_under(&p, 2, 3) && !is_under(&p, 0, 1) && !is_under(&p, 3, 3));
        // A damaged prior whose parents form a loop: no hang.
        p.directories[1].parent = 3;
        assert!(!is_under(&p, 3, 0));
    }

    #[test]
    fn walks_that_read_whole_directories_teach_their_parent_a_high_affinity() {
        let mut p = prior();
        // Two walks, each reading two of P's children whole; one read of
        // the root's child 6, one block of four.
        let a = session(&[0, 1, 2, 3, 8, 9, 10, 11, 16]);
        let b = session(&[4, 5, 6, 7, 8, 9, 10, 11]);
        learn(&mut p, &stored(), &[a, b]);
        // P: 4 observations of 1.0, over 5.
        assert_eq!(p.directories[1].affinity, mask_byte(4.0 / 5.0));
        // The root: one observation of 0.25, over 2.
        assert_eq!(p.directories[0].affinity, mask_byte(0.125));

        // A miss in child 5, never read in training, brings it; once.
        let dirs = Directories::new(Some(&p));
        let mut w = Walks::default();
        let miss = || true;
        assert_eq!(w.on_read(&dirs, 13, 0.5, || false), None, "a hit");
        assert_eq!(w.on_read(&dirs, 13, 0.5, miss), Some(5));
        assert_eq!(w.on_read(&dirs, 14, 0.5, miss), None, "fired once");
        assert_eq!(blocks(&p, 5).collect::<Vec<_>>(), vec![12, 13, 14, 15]);
        // Its blocks, and every sibling's, are the rule's, not the hints'.
        assert!(dirs.governs(14, 0.5) && dirs.governs(1, 0.5));
        // Child 6 of the root does not pass, nor P at a higher threshold.
        assert_eq!(w.on_read(&dirs, 17, 0.5, miss), None);
        assert!(!dirs.governs(17, 0.5));
        assert_eq!(Walks::default().on_read(&dirs, 1, 0.9, miss), None);
        assert!(!dirs.governs(1, 0.9));
        // A block no directory owns.
        assert_eq!(w.on_read(&dirs, 40, 0.5, miss), None);
    }

    #[test]
    fn a_walked_directory_smaller_than_the_floor_stays_the_hints() {
        let mut p = prior();
        // Child 2 shrinks to 3 blocks (0-2).
        p.directories[2].blocks = vec![BlockRun { first: 0, count: 3 }];
        p.directories[2].owned = p.directories[2].blocks.clone();
        p.directories[1].affinity = 255;
        let dirs = Directories::new(Some(&p));
        assert_eq!(dirs.walked(1, 0.5), Some(2), "the rule still fires there");
        assert!(!dirs.governs(1, 0.5), "but hints keep its blocks");
        assert!(dirs.governs(5, 0.5), "a 4-block sibling is the rule's");
    }

    #[test]
    fn readers_of_one_block_per_directory_teach_a_low_affinity() {
        let mut p = prior();
        let a = session(&[0, 4, 8]);
        let b = session(&[1, 13]);
        learn(&mut p, &stored(), &[a, b]);
        // 5 observations of 0.25, over 6.
        assert_eq!(p.directories[1].affinity, mask_byte(1.25 / 6.0));
        let dirs = Directories::new(Some(&p));
        assert_eq!(Walks::default().on_read(&dirs, 5, 0.5, || true), None);
        // Learned to be low is not unobserved: the unit leaves P's children
        // alone; the root's child 6, which no session entered, is its.
        assert_ne!(p.directories[1].affinity, UNOBSERVED);
        assert_eq!(dirs.unobserved(5), None);
        assert_eq!(dirs.unobserved(17), Some(6));
        // Untrained, every directory with a parent is the unit's, none the rule's.
        let fresh = Directories::new(Some(&prior()));
        assert_eq!(fresh.unobserved(5), Some(3));
        assert_eq!(fresh.walked(5, 0.0), None);
        // A directory larger than the cap never fires, and teaches nothing.
        let mut big = prior();
        big.directories[2].blocks = vec![BlockRun {
            first: 0,
            count: MAX_DIRECTORY_BLOCKS as u32 + 1,
        }];
        learn(&mut big, &stored(), &[session(&[0, 1, 2, 3])]);
        assert_eq!(big.directories[1].affinity, 0);
        big.directories[1].affinity = 255;
        let dirs = Directories::new(Some(&big));
        assert_eq!(Walks::default().on_read(&dirs, 0, 0.5, || true), None);
        assert!(!dirs.governs(0, 0.5));
        assert_eq!(Walks::default().on_read(&dirs, 4, 0.5, || true), Some(3));
    }
}
