//! The manifest page decoder on any bytes, resealed with a valid trailing
//! checksum so the fuzzer explores the field checks behind it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snapahead::format::ManifestPage::decode(data, "fuzz");
    if data.len() >= 32 {
        let mut v = data.to_vec();
        let n = v.len() - 32;
        let sum = blake3::hash(&v[..n]);
        v[n..].copy_from_slice(sum.as_bytes());
        let _ = snapahead::format::ManifestPage::decode(&v, "fuzz");
    }
});
