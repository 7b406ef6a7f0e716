//! Manifest pages: the manifest entries of a run of consecutive groups.
//!
//! A page lists the data-object keys it refers to once, in a table, and each
//! entry names its object by position in that table: a page of 1024 entries
//! spread over a handful of objects stays ~60 KiB instead of repeating a
//! 37-byte key per entry. Entries are sorted by block id, so the entries of
//! one group are a contiguous slice (the index records where).

use super::codec::{Reader, Writer};
use super::{keys, FormatError, Id, FORMAT_VERSION};

pub const PAGE_MAGIC: &[u8; 4] = b"SAPG";
/// Bytes of one encoded entry: block_id 8, object 4, offset 8, length 4,
/// compression 1, checksum 32.
pub const ENTRY_LEN: usize = 57;
/// A stored block is at most 4 MiB uncompressed; zstd's worst case adds a
/// little, so anything above this length is corrupt.
pub const MAX_STORED_LEN: u32 = 4 * 1024 * 1024 + 64 * 1024;

/// How a stored block is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is (incompressible data: zstd would only make it larger).
    None = 0,
    Zstd = 1,
}

impl Compression {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// One stored block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub block_id: u64,
    /// Index into [`ManifestPage::objects`].
    pub object: u32,
    pub offset: u64,
    pub length: u32,
    pub compression: Compression,
    /// BLAKE3 of the uncompressed block.
    pub checksum: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPage {
    /// The snapshot this page belongs to (guards against a page of another
    /// snapshot being read in its place).
    pub snapshot_id: Id,
    pub page_no: u32,
    /// Data-object keys, each validated as `data/<32 hex>`.
    pub objects: Vec<String>,
    pub entries: Vec<ManifestEntry>,
}

impl ManifestPage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(PAGE_MAGIC, FORMAT_VERSION);
        w.bytes(&self.snapshot_id.0);
        w.u32(self.page_no);
        encode_table(&mut w, &self.objects, &self.entries);
        w.finish()
    }

    /// Decodes and validates a page; `what` names it in errors (its key).
    pub fn decode(data: &[u8], what: &str) -> Result<Self, FormatError> {
        let (mut r, _) = Reader::open(
            data,
            PAGE_MAGIC,
            FORMAT_VERSION,
            format!("manifest page {what}"),
        )?;
        let snapshot_id = Id(r.bytes("snapshot_id")?);
        let page_no = r.u32("page_no")?;
        let (objects, entries) = decode_table(&mut r)?;
        r.finish()?;
        Ok(ManifestPage {
            snapshot_id,
            page_no,
            objects,
            entries,
        })
    }
}

/// Manifest entries outside any page, with their own object table: in the
/// index (version 5), the blocks a mount fetches first, so that their first
/// GET waits for no page GET (docs/format.md, "Located blocks"). Sorted by
/// block id, no repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryTable {
    /// Data-object keys, each validated as `data/<32 hex>`.
    pub objects: Vec<String>,
    pub entries: Vec<ManifestEntry>,
}

impl EntryTable {
    /// A table of `located`: each an entry and the key of its object (the
    /// entry's `object` field is set here). Sorted by block id; a block
    /// given twice is kept once.
    pub fn new<'a>(located: impl IntoIterator<Item = (&'a str, ManifestEntry)>) -> Self {
        let mut objects: Vec<String> = Vec::new();
        let mut entries: Vec<ManifestEntry> = Vec::new();
        for (key, mut e) in located {
            e.object = match objects.iter().position(|o| o == key) {
                Some(i) => i as u32,
                None => {
                    objects.push(key.to_string());
                    objects.len() as u32 - 1
                }
            };
            entries.push(e);
        }
        entries.sort_by_key(|e| e.block_id);
        entries.dedup_by_key(|e| e.block_id);
        EntryTable { objects, entries }
    }

    /// The entry of `block`, with its object's key.
    pub fn get(&self, block: u64) -> Option<(&str, &ManifestEntry)> {
        let i = self
            .entries
            .binary_search_by_key(&block, |e| e.block_id)
            .ok()?;
        let e = &self.entries[i];
        Some((self.objects.get(e.object as usize)?.as_str(), e))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The block ids, in order.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.block_id)
    }
}

/// Writes an object table and the entries that refer into it: a page's
/// body after its header, and the located blocks of an index (version 5).
pub(crate) fn encode_table(w: &mut Writer, objects: &[String], entries: &[ManifestEntry]) {
    w.count(objects.len());
    for o in objects {
        w.str(o);
    }
    w.count(entries.len());
    for e in entries {
        w.u64(e.block_id);
        w.u32(e.object);
        w.u64(e.offset);
        w.u32(e.length);
        w.u8(e.compression as u8);
        w.bytes(&e.checksum);
    }
}

/// Reads what [`encode_table`] writes, validated: every key has the form
/// `data/<32 hex>`, entries are sorted by block id without repeats, each
/// names an object of the table and a length a stored block can have.
pub(crate) fn decode_table(
    r: &mut Reader,
) -> Result<(Vec<String>, Vec<ManifestEntry>), FormatError> {
    let n_objects = r.count("object count", 2)?;
    let mut objects = Vec::with_capacity(n_objects);
    for _ in 0..n_objects {
        let k = r.str("object key")?;
        if !keys::is_data(k) {
            return Err(r.error("object key", format!("{k:?} is not a data object key")));
        }
        objects.push(k.to_string());
    }
    let n_entries = r.count("entry count", ENTRY_LEN)?;
    let mut entries: Vec<ManifestEntry> = Vec::with_capacity(n_entries);
    for _ in 0..n_entries {
        let block_id = r.u64("block_id")?;
        let object = r.u32("object")?;
        let offset = r.u64("offset")?;
        let length = r.u32("length")?;
        let comp = r.u8("compression")?;
        let checksum = r.bytes("checksum")?;
        if let Some(prev) = entries.last() {
            if block_id <= prev.block_id {
                return Err(r.error(
                    "block_id",
                    format!("{block_id} not after {}", prev.block_id),
                ));
            }
        }
        if object as usize >= objects.len() {
            return Err(r.error(
                "object",
                format!(
                    "{object} out of range (table has {} objects)",
                    objects.len()
                ),
            ));
        }
        if length == 0 || length > MAX_STORED_LEN {
            return Err(r.error("length", format!("{length} out of range")));
        }
        if offset.checked_add(length as u64).is_none() {
            return Err(r.error("offset", "offset + length overflows"));
        }
        let compression = Compression::from_u8(comp)
            .ok_or_else(|| r.error("compression", format!("unknown code {comp}")))?;
        entries.push(ManifestEntry {
            block_id,
            object,
            offset,
            length,
            compression,
            checksum,
        });
    }
    Ok((objects, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ManifestPage {
        ManifestPage {
            snapshot_id: Id([7; 16]),
            page_no: 3,
            objects: vec![keys::data(Id([1; 16])), keys::data(Id([2; 16]))],
            entries: (0..10)
                .map(|i| ManifestEntry {
                    block_id: i * 3,
                    object: (i % 2) as u32,
                    offset: i * 1000,
                    length: 900,
                    compression: Compression::Zstd,
                    checksum: [i as u8; 32],
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(ManifestPage::decode(&p.encode(), "t").unwrap(), p);
    }

    #[test]
    fn every_truncation_and_flip_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(
                ManifestPage::decode(&enc[..n], "t").is_err(),
                "truncated at {n}"
            );
        }
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(ManifestPage::decode(&bad, "t").is_err(), "flip at {i}");
        }
    }

    #[test]
    fn bad_key_and_order_are_refused() {
        let mut p = sample();
        p.objects[0] = "data/../../etc".into();
        let e = ManifestPage::decode(&p.encode(), "t").unwrap_err();
        assert!(e.to_string().contains("not a data object key"), "{e}");
        let mut p = sample();
        p.entries[2].block_id = 0;
        assert!(ManifestPage::decode(&p.encode(), "t").is_err());
        let mut p = sample();
        p.entries[1].object = 9;
        assert!(ManifestPage::decode(&p.encode(), "t").is_err());
    }
}
