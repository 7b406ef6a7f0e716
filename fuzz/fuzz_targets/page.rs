//! The manifest page decoder on any bytes, and on the same bytes sealed with a
//! valid trailing checksum so the fuzzer explores the field checks behind it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapahead::format::{codec::append_checksum, ManifestPage};

fuzz_target!(|data: &[u8]| {
    let _ = ManifestPage::decode(data, "fuzz");
    let mut sealed = data.to_vec();
    append_checksum(&mut sealed);
    let _ = ManifestPage::decode(&sealed, "fuzz");
});
