//! What one demand read asks the daemon to do, per mounted snapshot:
//! account for the prefetched blocks it reads, feed the workload
//! classifier (every [`CLASSIFY_EVERY`] reads it picks the hint window and
//! bounds read-ahead: all of `max_readahead` for sequential work, a quarter
//! for mixed, none for random), match the first reads against the warm-up's
//! workload groups, extend the stream's read-ahead (not into groups the
//! index has block masks for: there the prediction replaces it), ask
//! [`super::hints`] for the groups it touches, for a miss in a directory
//! whose siblings sessions read whole, the rest of that directory
//! ([`crate::predict::directory`]), and, for a miss where the index knows
//! nothing, [`super::unit`] for the rest of a directory no session walked,
//! else for the neighbours the link carries nearly free.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::accounting::Accounting;
use super::hints::HintState;
use super::readahead::Readahead;
use super::scheduler::Priority;
use super::unit::{FetchUnit, Miss};
use super::PrefetchConfig;
use crate::cache::BlockCache;
use crate::fetch::link::LinkEstimate;
use crate::format::Spans;
use crate::metrics::Metrics;
use crate::predict::directory::{Directories, Walks};
use crate::predict::timeline::{Move, Timeline};
use crate::predict::warmup::Matcher;
use crate::snapshot::Snapshot;
use crate::trace::classify::{Class, Classifier};

/// The classifier looks at this many recent reads per snapshot.
pub(super) const CLASSIFY_EVERY: u64 = 256;
/// Blocks of one read looked up in the workload signatures: the kernel's
/// reads of an image are at most a few blocks; a huge read's tail adds
/// nothing a signature needs.
const MATCH_SCAN_BLOCKS: usize = 64;

pub(super) struct FileState {
    pub snapshot: Arc<Snapshot>,
    pub readahead: Readahead,
    classifier: Classifier,
    reads: u64,
    /// None until [`CLASSIFY_EVERY`] reads were seen.
    pub class: Option<Class>,
    /// Index into the snapshot's windows.
    pub window: usize,
    pub hints: HintState,
    unit: FetchUnit,
    /// The core warm-up's timeline and the session's cursor in it.
    pub timeline: Timeline,
    /// Matches the first reads against the index's workload groups.
    warmup: Option<Matcher>,
    /// When the first demand read came.
    first_read: Option<Instant>,
    /// The prior's directories by block, and the walks fired this mount.
    directories: Directories,
    walks: Walks,
}

/// The blocks of `range` outside the groups the index has a block mask for
/// in window `w`: where read-ahead may go.
fn unlearned(ix: &crate::format::ManifestIndex, w: usize, range: std::ops::Range<u64>) -> Vec<u64> {
    let gs = ix.header.group_size as u64;
    range
        .filter(|b| ix.group(b / gs).is_none_or(|e| e.mask(w).is_none()))
        .collect()
}

/// The blocks a read of `len` bytes at `offset` touches (the read path's
/// own arithmetic, [`Spans`]).
fn read_blocks(h: &crate::format::SnapshotHeader, offset: u64, len: u32) -> std::ops::Range<u64> {
    Spans::new(h.volume_size, h.block_size, offset, len as u64).blocks()
}

/// Whether block `b` of `snap` is in the cache (as far as the loaded
/// manifest pages say: a block of a page not loaded yet counts as not).
pub(super) fn cached(snap: &Snapshot, cache: &BlockCache, b: u64) -> bool {
    matches!(snap.locate_loaded(b), Some(Some(r)) if cache.contains(&r.checksum))
}

/// What every decision of one batch of reads shares.
pub(super) struct Context<'a> {
    pub threshold: f32,
    pub cfg: &'a PrefetchConfig,
    pub cache: &'a BlockCache,
    pub metrics: &'a Metrics,
    pub accounting: &'a Accounting,
    /// The store link as measured at the start of the batch.
    pub link: LinkEstimate,
}

impl FileState {
    pub fn new(snapshot: Arc<Snapshot>, max_readahead: u64) -> Self {
        let unit = FetchUnit::new(&snapshot);
        FileState {
            readahead: Readahead::new(max_readahead),
            classifier: Classifier::default(),
            reads: 0,
            class: None,
            window: 0,
            hints: HintState::default(),
            timeline: Timeline::default(),
            unit,
            warmup: (!snapshot.index().warmup_groups.is_empty())
                .then(|| Matcher::new(snapshot.index())),
            first_read: None,
            directories: Directories::new(snapshot.index().prior.as_ref()),
            walks: Walks::default(),
            snapshot,
        }
    }

    /// How a demand read of `len` bytes at `offset` moves the warm-up's
    /// timeline, if it does.
    pub fn timeline_move(&mut self, offset: u64, len: u32) -> Option<Move> {
        let blocks = read_blocks(self.snapshot.header(), offset, len);
        if blocks.is_empty() {
            return None;
        }
        self.timeline.on_read(blocks)
    }

    /// A walk the fetch unit saw since the last call: the blocks of the
    /// subtree being walked, for hydration.
    pub fn take_walk(&mut self) -> Option<Vec<u64>> {
        self.unit.take_walk()
    }

    /// The hint window in use, in ms.
    pub fn window_ms(&self) -> u32 {
        self.snapshot
            .index()
            .windows_ms
            .get(self.window)
            .copied()
            .unwrap_or(0)
    }

    /// The prefetch jobs (priority, blocks) a demand read of `len` bytes at
    /// `offset` calls for.
    pub async fn decide(
        &mut self,
        offset: u64,
        len: u32,
        cx: &Context<'_>,
    ) -> Vec<(Priority, Vec<u64>)> {
        let (threshold, cfg, cache, metrics) = (cx.threshold, cx.cfg, cx.cache, cx.metrics);
        let mut jobs = Vec::new();
        // Borrowed through our own handle on the snapshot: nothing on this
        // per-read path is cloned or allocated unless there is work to do.
        let snap = self.snapshot.clone();
        let h = snap.header();
        let bs = h.block_size as u64;
        let read_blocks = read_blocks(h, offset, len);
        if read_blocks.is_empty() {
            return jobs;
        }
        let miss_at = |block, class| Miss {
            snap: &snap,
            cache,
            link: &cx.link,
            class,
            block,
        };
        // A read nothing prefetched or cached in a directory whose siblings
        // sessions read whole brings the directory (before this read's own
        // decisions plan anything; asked only where the rule would fire).
        if let Some(prior) = snap
            .index()
            .prior
            .as_ref()
            .filter(|_| !self.directories.is_empty())
        {
            for b in read_blocks.clone().take(MATCH_SCAN_BLOCKS) {
                let hints = &self.hints;
                let missed = || !hints.is_planned(b) && !cached(&snap, cache, b);
                let Some(d) = self.walks.on_read(&self.directories, b, threshold, missed) else {
                    continue;
                };
                let blocks: Vec<u64> = crate::predict::directory::blocks(prior, d)
                    .filter(|&x| {
                        !read_blocks.contains(&x)
                            && !self.hints.is_planned(x)
                            && !cached(&snap, cache, x)
                    })
                    .collect();
                if !blocks.is_empty() {
                    self.hints.plan(&blocks);
                    jobs.push((Priority::Hint, blocks));
                }
            }
        }
        // A miss entering a directory nothing is learned about: the unit's
        // guess, the rest of it (before read-ahead plans: a walk of small
        // files in ascending order looks sequential).
        if jobs.is_empty() && !self.directories.is_empty() {
            let hints = &self.hints;
            let miss = miss_at(read_blocks.start, self.class);
            let blocks = self
                .unit
                .directory_rest(&miss, &self.directories, |n| hints.is_planned(n))
                .await;
            if !blocks.is_empty() {
                self.hints.plan(&blocks);
                jobs.push((Priority::Unit, blocks));
            }
        }
        cx.accounting.mark_used(&snap, read_blocks.clone(), metrics);
        Metrics::add(
            &metrics.prefetch_unit_used,
            self.unit.on_read(read_blocks.clone()),
        );
        self.classify(offset, len, cfg);
        jobs.extend(self.match_workload(read_blocks.clone()));
        // Sequential read-ahead, outside the groups the index has learned
        // block by block: there its masks say what follows (a start-up
        // reading small files in ascending order looks sequential, and
        // blind read-ahead fetched what it never read).
        if let Some(r) = self.readahead.on_read(offset, len as u64) {
            let last = (r.end.min(h.volume_size)).div_ceil(bs);
            let blocks = unlearned(snap.index(), self.window, r.start / bs..last);
            if !blocks.is_empty() {
                self.hints.plan(&blocks);
                jobs.push((Priority::Readahead, blocks));
            }
        }
        // Hints and successors on the first touch of a group in an episode.
        let window = Duration::from_millis(self.window_ms() as u64);
        let dirs = &self.directories;
        let governed = |b: u64| dirs.governs(b, threshold);
        for blocks in self
            .hints
            .on_read(
                &snap,
                cache,
                read_blocks.clone(),
                self.window,
                window,
                threshold,
                governed,
            )
            .await
        {
            jobs.push((Priority::Hint, blocks));
        }
        // A miss where nothing above applies: the link-sized unit (a
        // directory fetched above counts as something).
        if jobs.is_empty() {
            let hints = &self.hints;
            let miss = miss_at(offset / bs, self.class);
            let blocks = self.unit.neighbours(&miss, |n| hints.is_planned(n)).await;
            if !blocks.is_empty() {
                self.hints.plan(&blocks);
                jobs.push((Priority::Unit, blocks));
            }
        }
        let n: u64 = jobs.iter().map(|j| j.1.len() as u64).sum();
        Metrics::add(&metrics.prefetch_issued, n);
        jobs
    }

    /// A workload group's warm-up blocks, once the first reads (within the
    /// warm-up window of the first one) match its signature.
    fn match_workload(&mut self, read: std::ops::Range<u64>) -> Vec<(Priority, Vec<u64>)> {
        let mut jobs = Vec::new();
        let first = *self.first_read.get_or_insert_with(Instant::now);
        let Some(m) = self.warmup.as_mut() else {
            return jobs;
        };
        if first.elapsed() > crate::predict::WARMUP_WINDOW || !m.is_active() {
            self.warmup = None;
            return jobs;
        }
        let gs = self.snapshot.header().group_size;
        // A signature is a few blocks: a long read's first ones suffice.
        for b in read.take(MATCH_SCAN_BLOCKS) {
            for gi in m.on_block(b) {
                for e in &self.snapshot.index().warmup_groups[gi].blocks {
                    let blocks: Vec<u64> = e
                        .blocks(gs)
                        .filter(|b| !self.hints.is_planned(*b))
                        .collect();
                    if !blocks.is_empty() {
                        self.hints.plan(&blocks);
                        jobs.push((Priority::Warmup, blocks));
                    }
                }
            }
        }
        jobs
    }

    /// Adaptive window and read-ahead bound from the recent workload.
    fn classify(&mut self, offset: u64, len: u32, cfg: &PrefetchConfig) {
        self.classifier.observe(&crate::trace::Record {
            t_ns: 0,
            op: crate::trace::Op::Read,
            offset,
            len,
            stream: 0,
        });
        self.reads += 1;
        if self.reads % CLASSIFY_EVERY != 0 {
            return;
        }
        let windows = &self.snapshot.index().windows_ms;
        let c = self
            .classifier
            .classification(windows, &cfg.windows, cfg.max_readahead.as_u64());
        self.class = Some(c.class);
        self.readahead.set_max_window(c.readahead_bytes);
        self.window = windows.iter().position(|&w| w == c.window_ms).unwrap_or(0);
        self.classifier = Classifier::default();
    }
}

#[cfg(test)]
mod tests {
    use super::unlearned;

    #[test]
    fn read_ahead_skips_the_groups_the_index_learned_block_by_block() {
        // Four groups of 16 blocks; group 1 has a mask in window 0, group 2
        // only a whole-group hint (a version-2 index), group 3 a mask in
        // window 1 only.
        let mut ix = crate::format::index::tests::sample();
        ix.header.group_size = 16;
        for g in &mut ix.groups {
            g.masks = vec![vec![], vec![]];
        }
        // sample()'s groups are 0, 2, 4, 6.
        ix.groups[1].masks[0] = vec![200; 16];
        ix.groups[3].masks[1] = vec![200; 16];
        let got = unlearned(&ix, 0, 30..100);
        assert!(got.iter().all(|b| !(32..48).contains(b)), "{got:?}");
        assert!(got.contains(&30) && got.contains(&48) && got.contains(&99));
        assert_eq!(unlearned(&ix, 1, 96..112), Vec::<u64>::new());
        assert_eq!(unlearned(&ix, 0, 96..112).len(), 16);
    }
}
