//! The trace reader on any bytes: every record up to the first error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = snapahead::trace::TraceReader::new(data) {
        for rec in r {
            if rec.is_err() {
                break;
            }
        }
    }
});
