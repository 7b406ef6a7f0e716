//! `snapahead verify`: every stored block of a snapshot fetched and checked
//! (each data object with one GET), and the index's own copies (located
//! entries, inline blocks) checked against the pages and checksums.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::{decode_block_cvs, BlockRef, Snapshot};

impl Snapshot {
    /// Fetches every stored block and checks it. Each data object is read
    /// with one GET; a missing or short object makes all its blocks bad.
    pub async fn verify(
        &self,
        concurrency: usize,
        progress: &crate::progress::Progress,
    ) -> anyhow::Result<VerifyReport> {
        let blocks = self.all_blocks().await?;
        let mismatched = self.located_mismatches(&blocks);
        let mut by_object: BTreeMap<Arc<str>, Vec<BlockRef>> = BTreeMap::new();
        for b in blocks {
            by_object.entry(b.object.clone()).or_default().push(b);
        }
        let results: Vec<(usize, Vec<BadBlock>)> = futures::stream::iter(by_object)
            .map(|(key, blocks)| async move {
                let end = blocks
                    .iter()
                    .map(|b| b.offset + b.length as u64)
                    .max()
                    .unwrap_or(0);
                let data = self.store.get(&key).await;
                let mut bad = Vec::new();
                for b in &blocks {
                    let reason = match &data {
                        Err(e) => Some(e.to_string()),
                        Ok(d) => {
                            let r = b.offset as usize..(b.offset + b.length as u64) as usize;
                            if r.end > d.len() {
                                Some(format!(
                                    "object is {} bytes, block needs bytes up to {end}",
                                    d.len()
                                ))
                            } else {
                                decode_block_cvs(d.slice(r), b, self.block_len(b.block_id))
                                    .err()
                                    .map(|e| e.kind.to_string())
                            }
                        }
                    };
                    progress.inc(self.block_len(b.block_id) as u64);
                    if let Some(reason) = reason {
                        bad.push(BadBlock {
                            block_id: b.block_id,
                            object: key.to_string(),
                            reason,
                        });
                    }
                }
                (blocks.len(), bad)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut report = VerifyReport::default();
        report.bad.extend(mismatched);
        for (n, bad) in results {
            report.blocks_checked += n as u64;
            report.bad.extend(bad);
        }
        report.bad.sort_by_key(|b| b.block_id);
        Ok(report)
    }
}

impl Snapshot {
    /// The index's located blocks that its pages do not hold as they say
    /// (`blocks`: every stored block from the pages, in block order), and
    /// its inline blocks that do not decode to their checksum. Both are
    /// copies written with the index, so any difference is damage.
    fn located_mismatches(&self, blocks: &[BlockRef]) -> Vec<BadBlock> {
        let mut bad = Vec::new();
        for e in &self.located.entries {
            let Some(l) = self.located.find(e.block_id) else {
                continue;
            };
            let found = blocks.binary_search_by_key(&e.block_id, |b| b.block_id);
            let reason = match found.ok().map(|i| &blocks[i]) {
                None => "the index locates it, its page has no such block".to_string(),
                Some(p) if *p != l => format!(
                    "the index locates it at {} bytes {:?}, its page at {} bytes {:?}",
                    l.object,
                    l.range(),
                    p.object,
                    p.range()
                ),
                Some(_) => continue,
            };
            bad.push(BadBlock {
                block_id: e.block_id,
                object: l.object.to_string(),
                reason,
            });
        }
        for b in &self.index.inline {
            let Some(l) = self.located.find(b.block_id) else {
                continue;
            };
            let stored = Bytes::copy_from_slice(&b.stored);
            if let Err(e) = decode_block_cvs(stored, &l, self.block_len(b.block_id)) {
                bad.push(BadBlock {
                    block_id: b.block_id,
                    object: "(the index's inline copy)".to_string(),
                    reason: e.kind.to_string(),
                });
            }
        }
        bad
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub bad: Vec<BadBlock>,
}

#[derive(Debug, Clone)]
pub struct BadBlock {
    pub block_id: u64,
    pub object: String,
    pub reason: String,
}
