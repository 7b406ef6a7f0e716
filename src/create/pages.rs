//! Manifest pages and index groups from `create`'s entries: groups of
//! [`crate::format::DEFAULT_GROUP_SIZE`] blocks (or the chosen size), pages
//! of about [`super::PAGE_TARGET_ENTRIES`] entries, never splitting a group.

use std::collections::HashMap;
use std::sync::Arc;

use super::pack::Loc;
use super::PAGE_TARGET_ENTRIES;
use crate::format::{GroupEntry, Id, ManifestEntry, ManifestPage};

/// Splits the entries into groups and pages.
pub(super) fn build_pages(
    id: Id,
    entries: &[(u64, [u8; 32], Loc)],
    group_size: u32,
) -> (Vec<ManifestPage>, Vec<GroupEntry>) {
    let mut pages: Vec<ManifestPage> = Vec::new();
    let mut groups: Vec<GroupEntry> = Vec::new();
    let mut current: Option<(ManifestPage, HashMap<Arc<str>, u32>)> = None;
    let mut i = 0;
    while i < entries.len() {
        let g = entries[i].0 / group_size as u64;
        let mut j = i;
        while j < entries.len() && entries[j].0 / group_size as u64 == g {
            j += 1;
        }
        let group_entries = &entries[i..j];
        if current.as_ref().is_some_and(|(p, _)| {
            p.entries.len() + group_entries.len() > PAGE_TARGET_ENTRIES && !p.entries.is_empty()
        }) {
            if let Some((p, _)) = current.take() {
                pages.push(p);
            }
        }
        let (page, objects) = current.get_or_insert_with(|| {
            (
                ManifestPage {
                    snapshot_id: id,
                    page_no: pages.len() as u32,
                    objects: Vec::new(),
                    entries: Vec::new(),
                },
                HashMap::new(),
            )
        });
        let entry_start = page.entries.len() as u32;
        let mut stored_bytes = 0;
        for (block_id, sum, loc) in group_entries {
            let obj = *objects.entry(loc.object.clone()).or_insert_with(|| {
                page.objects.push(loc.object.to_string());
                page.objects.len() as u32 - 1
            });
            stored_bytes += loc.length as u64;
            page.entries.push(ManifestEntry {
                block_id: *block_id,
                object: obj,
                offset: loc.offset,
                length: loc.length,
                compression: loc.compression,
                checksum: *sum,
            });
        }
        groups.push(GroupEntry {
            group: g,
            first_block: group_entries[0].0,
            last_block: group_entries[group_entries.len() - 1].0,
            stored_blocks: group_entries.len() as u32,
            stored_bytes,
            page: page.page_no,
            entry_start,
            entry_count: group_entries.len() as u32,
            hints: Vec::new(),
            successors: Vec::new(),
            masks: Vec::new(),
            contexts: Vec::new(),
            entries: Vec::new(),
        });
        i = j;
    }
    if let Some((p, _)) = current {
        pages.push(p);
    }
    (pages, groups)
}
