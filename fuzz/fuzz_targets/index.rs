//! The manifest index decoder on any bytes, and on the same bytes sealed with a
//! valid trailing checksum so the fuzzer explores the field checks behind it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapahead::format::{codec::append_checksum, ManifestIndex};

fuzz_target!(|data: &[u8]| {
    let _ = ManifestIndex::decode(data, "fuzz");
    let mut sealed = data.to_vec();
    append_checksum(&mut sealed);
    let _ = ManifestIndex::decode(&sealed, "fuzz");
});
