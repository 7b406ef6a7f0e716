//! Verified partial reads of a cached block, against its BLAKE3 checksum.
//!
//! BLAKE3 hashes a block as a binary tree of 1 KiB chunks. For a block
//! longer than [`SEGMENT`], the tree's leaves at [`SEGMENT`] granularity are
//! exactly the aligned segments `[k·SEGMENT, (k+1)·SEGMENT)` (the last may be
//! short), because BLAKE3 always splits an input at the largest power-of-two
//! number of chunks below its length. So a cache file can carry the chaining
//! value (CV) of every segment, and a reader can
//! 1. merge the CVs up the tree and compare the root with the block's
//!    checksum (the cache key): this proves the CVs without trusting the
//!    file, for ~one compression per segment;
//! 2. read only the segments a request touches and check each against its
//!    CV.
//!
//! A 4 KiB read of a 512 KiB block then costs a 1 KiB header and one 16 KiB
//! segment instead of the whole block, and it is still checked against the
//! block's real checksum. (The construction is Bao's, with 16 KiB leaves;
//! tests compare every result with `blake3::hash`.)
//!
//! The same split goes one level further for hot random reads: a segment is
//! itself the subtree of its [`PAGE`]-sized pages, so the first partial read
//! of a segment can compute its pages' CVs and prove them by merging them
//! into the segment's CV ([`merge_leaves`]); the reader may keep them, and
//! every later 4 KiB read of that segment reads and hashes 4 KiB, not 16.
//! They are not written to the file: four times the header (4 KiB per
//! 512 KiB block), and hashing a fetched block in 4 KiB pieces is slower
//! than in 16 KiB ones (2128 against 2593 MB/s by `cargo run --release
//! --example segment_hash`), which every fetch would pay.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Leaf size: small enough that a 4 KiB read touches 16 KiB, large enough
/// that the CV header of a 4 MiB block stays 8 KiB.
pub const SEGMENT: usize = 16 * 1024;

/// Page size of the proven-on-first-use CVs inside a segment: the size of a
/// random reader's request (4 KiB, the page size), so a hot one hashes
/// exactly what it asked for.
pub const PAGE: usize = 4096;

/// The CV of the subtree of `data` at `offset` (a multiple of [`PAGE`]: a
/// segment or a page).
pub fn segment_cv(offset: u64, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(offset)
        .update(data)
        .finalize_non_root()
}

/// CVs of every segment of a block (only meaningful when it is longer than
/// one segment).
pub fn segment_cvs(block: &[u8]) -> Vec<ChainingValue> {
    block
        .chunks(SEGMENT)
        .enumerate()
        .map(|(i, s)| segment_cv((i * SEGMENT) as u64, s))
        .collect()
}

/// Checks `block` against its checksum `root` and returns its segment CVs
/// (empty for a one-segment block): one BLAKE3 pass yields both, so a
/// block fetched from the store is hashed once, not once to check it and
/// again for its cache file's header. `None`: the checksum does not match.
pub fn check_block(block: &[u8], root: &[u8; 32]) -> Option<Vec<ChainingValue>> {
    if block.len() <= SEGMENT {
        return (blake3::hash(block).as_bytes() == root).then(Vec::new);
    }
    let cvs = segment_cvs(block);
    cvs_match_root(&cvs, block.len() as u64, root).then_some(cvs)
}

/// The CVs of the [`PAGE`]s of the segment `seg` at `offset`.
pub fn page_cvs(offset: u64, seg: &[u8]) -> Vec<ChainingValue> {
    seg.chunks(PAGE)
        .enumerate()
        .map(|(i, p)| segment_cv(offset + (i * PAGE) as u64, p))
        .collect()
}

/// The CV (not the root) of a subtree of `len` bytes whose `leaf`-sized
/// leaves (a power of two of at least one 1 KiB chunk) have the CVs `cvs`:
/// a segment's from its pages' CVs. `None`: not one CV per leaf.
pub fn merge_leaves(cvs: &[ChainingValue], len: u64, leaf: u64) -> Option<ChainingValue> {
    (len > 0 && cvs.len() as u64 == len.div_ceil(leaf)).then(|| subtree(cvs, 0, len, leaf))
}

/// The CV of the subtree at `offset` (relative to the leaves' start) of
/// `len` bytes. BLAKE3 splits a subtree at the largest power-of-two number
/// of chunks below its length, so a subtree longer than a leaf splits on
/// leaf boundaries.
fn subtree(cvs: &[ChainingValue], offset: u64, len: u64, leaf: u64) -> ChainingValue {
    if len <= leaf {
        return cvs[(offset / leaf) as usize];
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(cvs, offset, left, leaf),
        &subtree(cvs, offset + left, len - left, leaf),
        Mode::Hash,
    )
}

/// Whether the segment CVs of a block of `len` bytes hash to `root`.
/// Requires `len > SEGMENT` and one CV per segment.
pub fn cvs_match_root(cvs: &[ChainingValue], len: u64, root: &[u8; 32]) -> bool {
    if len <= SEGMENT as u64 || cvs.len() as u64 != len.div_ceil(SEGMENT as u64) {
        return false;
    }
    let left = left_subtree_len(len);
    let seg = SEGMENT as u64;
    let hash = merge_subtrees_root(
        &subtree(cvs, 0, left, seg),
        &subtree(cvs, left, len - left, seg),
        Mode::Hash,
    );
    hash.as_bytes() == root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_blake3_for_many_lengths() {
        for len in [
            SEGMENT + 1,
            2 * SEGMENT,
            3 * SEGMENT - 7,
            64 * 1024,
            100_000,
            512 * 1024,
            512 * 1024 - 1,
            4 * 1024 * 1024,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let root = *blake3::hash(&data).as_bytes();
            let cvs = segment_cvs(&data);
            assert!(cvs_match_root(&cvs, len as u64, &root), "len {len}");
            // Any change to a CV or to the data is caught.
            let mut bad = cvs.clone();
            bad[cvs.len() / 2][0] ^= 1;
            assert!(!cvs_match_root(&bad, len as u64, &root), "len {len}");
            let k = cvs.len() - 1;
            let seg = &data[k * SEGMENT..];
            assert_eq!(segment_cv((k * SEGMENT) as u64, seg), cvs[k]);
            let mut s2 = seg.to_vec();
            s2[0] ^= 1;
            assert_ne!(segment_cv((k * SEGMENT) as u64, &s2), cvs[k]);
        }
    }

    #[test]
    fn page_cvs_merge_into_the_segment_cv() {
        let data: Vec<u8> = (0..100_000).map(|i| (i * 13 % 251) as u8).collect();
        let cvs = segment_cvs(&data);
        // Whole segments, and the short last one (100,000 = 6 × 16 KiB +
        // 1,696 bytes, one short page).
        for (k, seg) in data.chunks(SEGMENT).enumerate() {
            let off = (k * SEGMENT) as u64;
            let pages = page_cvs(off, seg);
            assert_eq!(pages.len(), seg.len().div_ceil(PAGE));
            let merged = merge_leaves(&pages, seg.len() as u64, PAGE as u64);
            assert_eq!(merged, Some(cvs[k]), "segment {k}");
            // A changed page CV, or one too few, is caught.
            let mut bad = pages.clone();
            bad[0][5] ^= 1;
            assert_ne!(
                merge_leaves(&bad, seg.len() as u64, PAGE as u64),
                Some(cvs[k])
            );
            assert_eq!(
                merge_leaves(&pages[1..], seg.len() as u64, PAGE as u64),
                None
            );
        }
    }

    #[test]
    fn check_block_accepts_exactly_the_right_bytes() {
        for len in [0, 1, 1024, SEGMENT, SEGMENT + 1, 100_000, 512 * 1024] {
            let mut data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let root = *blake3::hash(&data).as_bytes();
            let cvs = check_block(&data, &root).expect("the right bytes pass");
            if len > SEGMENT {
                assert_eq!(cvs, segment_cvs(&data), "len {len}");
            } else {
                assert!(cvs.is_empty());
            }
            if len > 0 {
                // A shorter block fails, and so does one changed byte.
                assert!(check_block(&data[..len - 1], &root).is_none(), "len {len}");
                data[len / 2] ^= 1;
                assert!(check_block(&data, &root).is_none(), "len {len}");
            }
        }
    }
}
