//! Encoding and decoding of the manifest index ([`ManifestIndex`]): the
//! layout of docs/format.md, "Manifest index", field by field. Apart from
//! the types in `index.rs` because the validating decoder of five
//! versions is most of the index's code: every count is checked against
//! the bytes left before anything is allocated, every group id, block and
//! probability against the volume, so a corrupt or hostile index is an
//! error naming its field, never a panic or a huge allocation. Just over 500
//! lines, on purpose: one reader per section, each beside its writer.

use super::codec::{Reader, Writer};
use super::index::*;
use super::page::{decode_table, encode_table};
use super::EntryTable;
use super::{name_field, validate_block_size, FormatError, Id, MAX_GROUP_SIZE};

impl ManifestIndex {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_version(INDEX_VERSION)
    }

    /// Encodes as format `version` (1 to [`INDEX_VERSION`]), leaving out
    /// what that version cannot hold: what the tests of the upgrade path
    /// (and of old mounts) write.
    pub fn encode_version(&self, version: u16) -> Vec<u8> {
        let version = version.clamp(1, INDEX_VERSION);
        let v3 = version >= 3;
        let h = &self.header;
        let mut w = Writer::new(INDEX_MAGIC, version);
        w.str(h.name.as_str());
        w.bytes(&h.id.0);
        w.u64(h.volume_size);
        w.u32(h.block_size);
        w.u32(h.group_size);
        w.i64(h.created_ms);
        match &h.parent {
            None => w.u8(0),
            Some((name, id)) => {
                w.u8(1);
                w.str(name.as_str());
                w.bytes(&id.0);
            }
        }
        w.u64(h.stored_blocks);
        w.u64(h.zero_blocks);
        w.u64(h.stored_bytes);
        w.u64(h.uploaded_bytes);
        w.u32(h.page_count);
        w.count(self.windows_ms.len());
        for ms in &self.windows_ms {
            w.u32(*ms);
        }
        w.count(self.groups.len());
        for g in &self.groups {
            w.u64(g.group);
            w.u64(g.first_block);
            w.u64(g.last_block);
            w.u32(g.stored_blocks);
            w.u64(g.stored_bytes);
            w.u32(g.page);
            w.u32(g.entry_start);
            w.u32(g.entry_count);
            for i in 0..self.windows_ms.len() {
                w.f32(g.hints.get(i).copied().unwrap_or(0.0));
            }
            let gs = self.header.group_size as usize;
            for i in 0..self.windows_ms.len() {
                let succ = g.successors.get(i).map(Vec::as_slice).unwrap_or(&[]);
                encode_successors(&mut w, succ, gs, v3);
            }
            if !v3 {
                continue;
            }
            for i in 0..self.windows_ms.len() {
                encode_mask(&mut w, g.masks.get(i).map(Vec::as_slice).unwrap_or(&[]), gs);
            }
            for i in 0..self.windows_ms.len() {
                let ctx = g.contexts.get(i).map(Vec::as_slice).unwrap_or(&[]);
                let ctx = &ctx[..ctx.len().min(MAX_CONTEXTS)];
                w.u16(ctx.len() as u16);
                for c in ctx {
                    w.u64(c.after);
                    w.u32(c.episodes);
                    encode_successors(&mut w, &c.successors, gs, true);
                }
            }
            for i in 0..self.windows_ms.len() {
                let en = g.entries.get(i).map(Vec::as_slice).unwrap_or(&[]);
                let en = &en[..en.len().min(MAX_ENTRY_MASKS)];
                w.u16(en.len() as u16);
                for e in en {
                    w.u32(e.entry);
                    w.u32(e.episodes);
                    encode_mask(&mut w, &e.mask, gs);
                }
            }
        }
        encode_warmup(&mut w, &self.warmup, self.header.group_size);
        if version < 2 {
            return w.finish();
        }
        match &self.prior {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                w.str(&p.filesystem);
                encode_runs(&mut w, &p.metadata);
                w.count(p.files.len().min(MAX_PRIOR_FILES));
                for f in p.files.iter().take(MAX_PRIOR_FILES) {
                    encode_runs(&mut w, f);
                }
            }
        }
        if !v3 {
            return w.finish();
        }
        w.u8(self.history.min(MAX_HISTORY));
        let groups = &self.warmup_groups[..self.warmup_groups.len().min(MAX_WARMUP_GROUPS)];
        w.count(groups.len());
        for g in groups {
            w.u32(g.sessions);
            let sig = &g.signature[..g.signature.len().min(MAX_SIGNATURE)];
            w.count(sig.len());
            for b in sig {
                w.u64(*b);
            }
            encode_warmup(&mut w, &g.blocks, self.header.group_size);
        }
        if version < 4 {
            return w.finish();
        }
        let dirs = self.prior.as_ref().map_or(&[][..], |p| &p.directories[..]);
        let dirs = &dirs[..dirs.len().min(MAX_PRIOR_DIRS)];
        w.count(dirs.len());
        for d in dirs {
            w.u32(d.parent);
            encode_runs(&mut w, &d.blocks);
            encode_runs(&mut w, &d.owned);
            w.u8(d.affinity);
        }
        if version < 5 {
            return w.finish();
        }
        let located = &self.located;
        let n = located.entries.len().min(MAX_LOCATED);
        encode_table(&mut w, &located.objects, &located.entries[..n]);
        let written = &located.entries[..n];
        let mut total = 0;
        let inline: Vec<&InlineBlock> = self
            .inline
            .iter()
            // Past MAX_LOCATED, a block that lost its entry loses its bytes.
            .filter(|b| {
                n == located.entries.len()
                    || written
                        .binary_search_by_key(&b.block_id, |e| e.block_id)
                        .is_ok()
            })
            .take_while(|b| {
                total += b.stored.len();
                total <= MAX_INLINE_BYTES
            })
            .collect();
        w.count(inline.len());
        for b in inline {
            w.u64(b.block_id);
            w.blob(&b.stored);
        }
        w.finish()
    }

    /// Decodes and validates an index; `what` names it in errors (its key).
    pub fn decode(data: &[u8], what: &str) -> Result<Self, FormatError> {
        let (mut r, version) = Reader::open(
            data,
            INDEX_MAGIC,
            INDEX_VERSION,
            format!("manifest index {what}"),
        )?;
        let name = name_field(&mut r, "name")?;
        let id = Id(r.bytes("snapshot_id")?);
        let volume_size = r.u64("volume_size")?;
        if volume_size == 0 {
            return Err(r.error("volume_size", "is 0"));
        }
        let block_size = r.u32("block_size")?;
        validate_block_size(block_size as u64).map_err(|e| r.error("block_size", e))?;
        let group_size = r.u32("group_size")?;
        if group_size == 0 || group_size > MAX_GROUP_SIZE {
            return Err(r.error(
                "group_size",
                format!("{group_size} not in 1..={MAX_GROUP_SIZE}"),
            ));
        }
        let created_ms = r.i64("created_ms")?;
        let parent = match r.u8("has_parent")? {
            0 => None,
            1 => Some((
                name_field(&mut r, "parent name")?,
                Id(r.bytes("parent id")?),
            )),
            v => return Err(r.error("has_parent", format!("{v} is not 0 or 1"))),
        };
        let header = SnapshotHeader {
            name,
            id,
            volume_size,
            block_size,
            group_size,
            created_ms,
            parent,
            stored_blocks: r.u64("stored_blocks")?,
            zero_blocks: r.u64("zero_blocks")?,
            stored_bytes: r.u64("stored_bytes")?,
            uploaded_bytes: r.u64("uploaded_bytes")?,
            page_count: r.u32("page_count")?,
        };
        let n_blocks = header.block_count();
        let n_groups = header.group_count();
        if header.stored_blocks.saturating_add(header.zero_blocks) != n_blocks {
            return Err(r.error(
                "stored_blocks",
                "stored + zero blocks do not add up to the volume's blocks",
            ));
        }

        let n_windows = r.count("window count", 4)?;
        if n_windows == 0 || n_windows > MAX_WINDOWS {
            return Err(r.error(
                "window count",
                format!("{n_windows} not in 1..={MAX_WINDOWS}"),
            ));
        }
        let mut windows_ms = Vec::with_capacity(n_windows);
        for _ in 0..n_windows {
            let ms = r.u32("window")?;
            if ms == 0 {
                return Err(r.error("window", "is 0 ms"));
            }
            windows_ms.push(ms);
        }

        let n = r.count("group count", GROUP_FIXED_LEN + 6 * n_windows)?;
        let mut groups: Vec<GroupEntry> = Vec::with_capacity(n);
        let mut stored_total = 0u64;
        for _ in 0..n {
            let group = r.u64("group")?;
            if group >= n_groups {
                return Err(r.error(
                    "group",
                    format!("{group} beyond the volume's {n_groups} groups"),
                ));
            }
            if groups.last().is_some_and(|p| p.group >= group) {
                return Err(r.error("group", format!("{group} out of order")));
            }
            let first_block = r.u64("first_block")?;
            let last_block = r.u64("last_block")?;
            let lo = group * group_size as u64;
            let hi = (lo + group_size as u64).min(n_blocks);
            if !(lo <= first_block && first_block <= last_block && last_block < hi) {
                return Err(r.error(
                    "first_block",
                    format!("range {first_block}..={last_block} outside group {group}"),
                ));
            }
            let stored_blocks = r.u32("stored_blocks")?;
            if stored_blocks == 0 || stored_blocks as u64 > last_block - first_block + 1 {
                return Err(r.error(
                    "stored_blocks",
                    format!("{stored_blocks} does not fit the group's range"),
                ));
            }
            stored_total += stored_blocks as u64;
            let stored_bytes = r.u64("stored_bytes")?;
            let page = r.u32("page")?;
            if page >= header.page_count {
                return Err(r.error(
                    "page",
                    format!("{page} beyond page_count {}", header.page_count),
                ));
            }
            let entry_start = r.u32("entry_start")?;
            let entry_count = r.u32("entry_count")?;
            if entry_count != stored_blocks || entry_start.checked_add(entry_count).is_none() {
                return Err(r.error("entry_count", "does not match stored_blocks"));
            }
            let mut hints = Vec::with_capacity(n_windows);
            for _ in 0..n_windows {
                hints.push(r.probability("hint")?);
            }
            let gs = group_size as usize;
            let v3 = version >= 3;
            let mut successors = Vec::with_capacity(n_windows);
            for _ in 0..n_windows {
                successors.push(decode_successors(&mut r, n_groups, gs, v3)?);
            }
            let mut masks = Vec::with_capacity(n_windows);
            let mut contexts = Vec::with_capacity(n_windows);
            let mut entries = Vec::with_capacity(n_windows);
            if v3 {
                for _ in 0..n_windows {
                    masks.push(decode_mask(&mut r, gs)?);
                }
                for _ in 0..n_windows {
                    let k = r.u16("context count")? as usize;
                    if k > MAX_CONTEXTS {
                        return Err(r.error("context count", format!("{k} > {MAX_CONTEXTS}")));
                    }
                    let mut v = Vec::with_capacity(k);
                    for _ in 0..k {
                        let after = r.u64("context group")?;
                        if after >= n_groups {
                            return Err(
                                r.error("context group", format!("{after} beyond the volume"))
                            );
                        }
                        let episodes = r.u32("context episodes")?;
                        v.push(ContextSuccessors {
                            after,
                            episodes,
                            successors: decode_successors(&mut r, n_groups, gs, true)?,
                        });
                    }
                    contexts.push(v);
                }
                for _ in 0..n_windows {
                    let k = r.u16("entry mask count")? as usize;
                    if k > MAX_ENTRY_MASKS {
                        return Err(r.error("entry mask count", format!("{k} > {MAX_ENTRY_MASKS}")));
                    }
                    let mut v = Vec::with_capacity(k);
                    for _ in 0..k {
                        let entry = r.u32("entry block")?;
                        if entry >= group_size {
                            return Err(r.error("entry block", format!("{entry} beyond the group")));
                        }
                        v.push(EntryMask {
                            entry,
                            episodes: r.u32("entry episodes")?,
                            mask: decode_mask(&mut r, gs)?,
                        });
                    }
                    entries.push(v);
                }
            }
            groups.push(GroupEntry {
                group,
                first_block,
                last_block,
                stored_blocks,
                stored_bytes,
                page,
                entry_start,
                entry_count,
                hints,
                successors,
                masks,
                contexts,
                entries,
            });
        }
        if stored_total != header.stored_blocks {
            return Err(r.error(
                "groups",
                "stored blocks of the groups do not add up to the header's",
            ));
        }
        let warmup = decode_warmup(&mut r, group_size, n_groups)?;
        let prior = if version >= 2 {
            decode_prior(&mut r, n_blocks)?
        } else {
            None
        };
        let mut history = 0;
        let mut warmup_groups = Vec::new();
        if version >= 3 {
            history = r.u8("history")?;
            if history > MAX_HISTORY {
                return Err(r.error("history", format!("{history} > {MAX_HISTORY}")));
            }
            let n = r.count("warm-up group count", 12)?;
            if n > MAX_WARMUP_GROUPS {
                return Err(r.error("warm-up group count", format!("{n} > {MAX_WARMUP_GROUPS}")));
            }
            for _ in 0..n {
                let sessions = r.u32("warm-up group sessions")?;
                let k = r.count("signature length", 8)?;
                if k > MAX_SIGNATURE {
                    return Err(r.error("signature length", format!("{k} > {MAX_SIGNATURE}")));
                }
                let mut signature = Vec::with_capacity(k);
                for _ in 0..k {
                    let b = r.u64("signature block")?;
                    if b >= n_blocks {
                        return Err(r.error("signature block", format!("{b} beyond the volume")));
                    }
                    signature.push(b);
                }
                warmup_groups.push(WarmupGroup {
                    sessions,
                    signature,
                    blocks: decode_warmup(&mut r, group_size, n_groups)?,
                });
            }
        }
        let mut prior = prior;
        if version >= 4 {
            let n = r.count("prior directory count", 13)?;
            if n > MAX_PRIOR_DIRS {
                return Err(r.error("prior directory count", format!("{n} > {MAX_PRIOR_DIRS}")));
            }
            let mut dirs = Vec::with_capacity(n);
            for _ in 0..n {
                let parent = r.u32("prior directory parent")?;
                if parent != NO_PARENT && parent as usize >= n {
                    return Err(r.error(
                        "prior directory parent",
                        format!("{parent} of {n} directories"),
                    ));
                }
                dirs.push(PriorDir {
                    parent,
                    blocks: decode_runs(&mut r, n_blocks, "prior directory run")?,
                    owned: decode_runs(&mut r, n_blocks, "prior directory owned run")?,
                    affinity: r.u8("prior directory affinity")?,
                });
            }
            match prior.as_mut() {
                Some(p) => p.directories = dirs,
                None if dirs.is_empty() => {}
                None => return Err(r.error("prior directory count", "directories without a prior")),
            }
        }
        let mut located = EntryTable::default();
        let mut inline = Vec::new();
        if version >= 5 {
            let (objects, entries) = decode_table(&mut r)?;
            if entries.len() > MAX_LOCATED {
                let n = entries.len();
                return Err(r.error("located entry count", format!("{n} > {MAX_LOCATED}")));
            }
            if let Some(e) = entries.last().filter(|e| e.block_id >= n_blocks) {
                let b = e.block_id;
                return Err(r.error(
                    "located block_id",
                    format!("{b} beyond the volume's {n_blocks} blocks"),
                ));
            }
            located = EntryTable { objects, entries };
            let n = r.count("inline block count", 12)?;
            let mut total = 0;
            for _ in 0..n {
                let block_id = r.u64("inline block_id")?;
                if inline
                    .last()
                    .is_some_and(|b: &InlineBlock| b.block_id >= block_id)
                {
                    return Err(r.error("inline block_id", format!("{block_id} out of order")));
                }
                let stored = r.blob("inline block")?;
                let Some((_, e)) = located.get(block_id) else {
                    return Err(r.error("inline block_id", format!("{block_id} is not located")));
                };
                if stored.len() != e.length as usize {
                    let (l, want) = (stored.len(), e.length);
                    return Err(
                        r.error("inline block", format!("{l} bytes, its entry says {want}"))
                    );
                }
                total += stored.len();
                if total > MAX_INLINE_BYTES {
                    return Err(r.error(
                        "inline block",
                        format!("over {MAX_INLINE_BYTES} bytes in all"),
                    ));
                }
                inline.push(InlineBlock {
                    block_id,
                    stored: stored.to_vec(),
                });
            }
        }
        r.finish()?;
        Ok(ManifestIndex {
            header,
            windows_ms,
            groups,
            warmup,
            warmup_groups,
            history,
            prior,
            located,
            inline,
        })
    }
}

/// A block mask: a flag byte (0: none), then one byte per block.
fn encode_mask(w: &mut Writer, mask: &[u8], gs: usize) {
    if mask.is_empty() {
        w.u8(0);
        return;
    }
    w.u8(1);
    let mut m = mask.to_vec();
    m.resize(gs, 0);
    for b in m {
        w.u8(b);
    }
}

fn decode_mask(r: &mut Reader<'_>, gs: usize) -> Result<Vec<u8>, FormatError> {
    match r.u8("mask flag")? {
        0 => Ok(Vec::new()),
        1 => (0..gs).map(|_| r.u8("mask")).collect(),
        v => Err(r.error("mask flag", format!("{v} is not 0 or 1"))),
    }
}

/// A successor list: a `u16` count, then (group, probability[, mask]).
fn encode_successors(w: &mut Writer, succ: &[Successor], gs: usize, masks: bool) {
    let succ = &succ[..succ.len().min(MAX_SUCCESSORS)];
    w.u16(succ.len() as u16);
    for s in succ {
        w.u64(s.group);
        w.f32(s.probability);
        if masks {
            encode_mask(w, &s.mask, gs);
        }
    }
}

fn decode_successors(
    r: &mut Reader<'_>,
    n_groups: u64,
    gs: usize,
    masks: bool,
) -> Result<Vec<Successor>, FormatError> {
    let k = r.u16("successor count")? as usize;
    if k > MAX_SUCCESSORS {
        return Err(r.error("successor count", format!("{k} > {MAX_SUCCESSORS}")));
    }
    let mut v = Vec::with_capacity(k);
    for _ in 0..k {
        let g = r.u64("successor group")?;
        if g >= n_groups {
            return Err(r.error("successor group", format!("{g} beyond the volume")));
        }
        let probability = r.probability("successor probability")?;
        let mask = if masks {
            decode_mask(r, gs)?
        } else {
            Vec::new()
        };
        v.push(Successor {
            group: g,
            probability,
            mask,
        });
    }
    Ok(v)
}

/// A warm-up list: a count, then (group, bitmap of its blocks).
fn encode_warmup(w: &mut Writer, list: &[WarmUp], group_size: u32) {
    w.count(list.len());
    let mask_len = (group_size as usize).div_ceil(8);
    for e in list {
        w.u64(e.group);
        let mut m = e.mask.clone();
        m.resize(mask_len, 0);
        w.bytes(&m);
    }
}

fn decode_warmup(
    r: &mut Reader<'_>,
    group_size: u32,
    n_groups: u64,
) -> Result<Vec<WarmUp>, FormatError> {
    let mask_len = (group_size as usize).div_ceil(8);
    let n_warm = r.count("warm-up count", 8 + mask_len)?;
    let mut warmup = Vec::with_capacity(n_warm);
    for _ in 0..n_warm {
        let g = r.u64("warm-up group")?;
        if g >= n_groups {
            return Err(r.error("warm-up group", format!("{g} beyond the volume")));
        }
        let mut mask = vec![0u8; mask_len];
        for m in mask.iter_mut() {
            *m = r.u8("warm-up mask")?;
        }
        warmup.push(WarmUp { group: g, mask });
    }
    Ok(warmup)
}

/// The prior section of a version 2 index (after the warm-up list).
fn decode_prior(r: &mut Reader<'_>, n_blocks: u64) -> Result<Option<FsPrior>, FormatError> {
    match r.u8("has_prior")? {
        0 => return Ok(None),
        1 => {}
        v => return Err(r.error("has_prior", format!("{v} is not 0 or 1"))),
    }
    let filesystem = r.str("prior filesystem")?.to_string();
    let runs = decode_runs;
    let metadata = runs(r, n_blocks, "prior metadata run")?;
    let n_files = r.count("prior file count", 4)?;
    if n_files > MAX_PRIOR_FILES {
        return Err(r.error("prior file count", format!("{n_files} > {MAX_PRIOR_FILES}")));
    }
    let mut files = Vec::with_capacity(n_files);
    for _ in 0..n_files {
        files.push(runs(r, n_blocks, "prior file run")?);
    }
    Ok(Some(FsPrior {
        filesystem,
        metadata,
        files,
        directories: Vec::new(),
    }))
}

fn encode_runs(w: &mut Writer, runs: &[BlockRun]) {
    w.count(runs.len());
    for r in runs {
        w.u64(r.first);
        w.u32(r.count);
    }
}

/// Runs of blocks, each non-empty and inside the volume.
fn decode_runs(
    r: &mut Reader<'_>,
    n_blocks: u64,
    what: &str,
) -> Result<Vec<BlockRun>, FormatError> {
    let n = r.count(what, 12)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let first = r.u64(what)?;
        let count = r.u32(what)?;
        if count == 0 || first.saturating_add(count as u64) > n_blocks {
            return Err(r.error(
                what,
                format!("run {first}+{count} outside the volume's {n_blocks} blocks"),
            ));
        }
        out.push(BlockRun { first, count });
    }
    Ok(out)
}
