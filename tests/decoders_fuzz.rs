//! Property tests: every decoder of outside input returns an error or a
//! value on any bytes — never a panic, never a runaway allocation. Inputs
//! are arbitrary bytes and valid encodings with random bytes changed,
//! truncated or extended (the cases a corrupted store or file produces).

use proptest::prelude::*;
use snapahead::format::codec::{append_checksum, CHECKSUM_LEN};
use snapahead::format::{
    Compression, GroupEntry, Id, ManifestEntry, ManifestIndex, ManifestPage, SnapshotHeader,
    Successor, WarmUp,
};
use snapahead::name::SnapshotName;
use snapahead::trace::{Op, Record, TraceHeader, TraceReader, TraceWriter};

fn index() -> Vec<u8> {
    let groups = (0..8u64)
        .map(|g| GroupEntry {
            group: g,
            first_block: g * 4,
            last_block: g * 4 + 3,
            stored_blocks: 4,
            stored_bytes: 4096,
            page: 0,
            entry_start: (g * 4) as u32,
            entry_count: 4,
            hints: vec![0.5],
            successors: vec![vec![Successor {
                group: (g + 1) % 8,
                probability: 0.7,
                mask: vec![200, 0, 10, 255],
            }]],
            masks: vec![vec![255, 128, 0, 7]],
            contexts: vec![vec![]],
            entries: vec![vec![]],
        })
        .collect();
    ManifestIndex {
        header: SnapshotHeader {
            name: SnapshotName::parse("fuzz").unwrap(),
            id: Id([5; 16]),
            volume_size: 32 * 65536,
            block_size: 65536,
            group_size: 4,
            created_ms: 1,
            parent: None,
            stored_blocks: 32,
            zero_blocks: 0,
            stored_bytes: 1,
            uploaded_bytes: 1,
            page_count: 1,
        },
        windows_ms: vec![2000],
        groups,
        warmup: vec![WarmUp::new(1, 4, [4, 5])],
        warmup_groups: vec![],
        history: 1,
        prior: Some(snapahead::format::FsPrior {
            filesystem: "ext4".into(),
            metadata: vec![snapahead::format::BlockRun { first: 0, count: 3 }],
            files: vec![vec![snapahead::format::BlockRun { first: 9, count: 2 }]],
            directories: vec![snapahead::format::index::PriorDir {
                parent: snapahead::format::index::NO_PARENT,
                blocks: vec![snapahead::format::BlockRun { first: 9, count: 2 }],
                owned: vec![snapahead::format::BlockRun { first: 9, count: 2 }],
                affinity: 200,
            }],
        }),
        located: snapahead::format::EntryTable {
            objects: vec!["data/0123456789abcdef0123456789abcdef".into()],
            entries: [0u64, 4, 5].into_iter().map(entry).collect(),
        },
        inline: vec![snapahead::format::InlineBlock {
            block_id: 4,
            stored: vec![9; 100],
        }],
    }
    .encode()
}

/// Block `b`'s entry, 100 bytes at `b * 100` of the one object.
fn entry(b: u64) -> ManifestEntry {
    ManifestEntry {
        block_id: b,
        object: 0,
        offset: b * 100,
        length: 100,
        compression: Compression::Zstd,
        checksum: [b as u8; 32],
    }
}

fn page() -> Vec<u8> {
    ManifestPage {
        snapshot_id: Id([5; 16]),
        page_no: 0,
        objects: vec!["data/0123456789abcdef0123456789abcdef".into()],
        entries: (0..32).map(entry).collect(),
    }
    .encode()
}

fn trace() -> Vec<u8> {
    let h = TraceHeader {
        volume: "v".into(),
        volume_size: 1 << 30,
        start_ms: 0,
        host: "h".into(),
        source: "t".into(),
    };
    let mut w = TraceWriter::new(Vec::new(), &h).unwrap();
    for i in 0..300u64 {
        w.push(&Record {
            t_ns: i,
            op: if i % 5 == 0 { Op::Write } else { Op::Read },
            offset: i * 4096,
            len: 4096,
            stream: 1,
        })
        .unwrap();
        if i % 100 == 99 {
            w.flush().unwrap();
        }
    }
    w.finish().unwrap()
}

/// A valid encoding with up to 8 bytes changed, then truncated or extended.
fn mutate(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        0..len + 16,
        any::<u8>(),
    )
        .prop_map(move |(flips, cut, fill)| {
            let mut v = base.clone();
            for (i, b) in flips {
                v[i] = b;
            }
            v.resize(cut, fill);
            v
        })
}

/// Gives mutated bytes a valid trailing checksum again, so the decoder gets
/// past the checksum and its field-by-field checks are what is tested.
fn reseal(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() >= CHECKSUM_LEN {
        v.truncate(v.len() - CHECKSUM_LEN);
        append_checksum(&mut v);
    }
    v
}

fn read_all_trace(bytes: &[u8]) {
    if let Ok(r) = TraceReader::new(bytes) {
        for rec in r {
            if rec.is_err() {
                break;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn index_decoder_never_panics(bytes in mutate(index())) {
        let _ = ManifestIndex::decode(&bytes, "fuzz");
    }

    #[test]
    fn page_decoder_never_panics(bytes in mutate(page())) {
        let _ = ManifestPage::decode(&bytes, "fuzz");
    }

    #[test]
    fn index_decoder_never_panics_past_the_checksum(bytes in mutate(index()).prop_map(reseal)) {
        let _ = ManifestIndex::decode(&bytes, "fuzz");
    }

    #[test]
    fn page_decoder_never_panics_past_the_checksum(bytes in mutate(page()).prop_map(reseal)) {
        let _ = ManifestPage::decode(&bytes, "fuzz");
    }

    #[test]
    fn trace_reader_never_panics(bytes in mutate(trace())) {
        read_all_trace(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = ManifestIndex::decode(&bytes, "fuzz");
        let _ = ManifestPage::decode(&bytes, "fuzz");
        read_all_trace(&bytes);
    }

    #[test]
    fn config_parser_never_panics(text in "[ -~\\n]{0,300}") {
        let _ = snapahead::config::Config::parse(&text, std::path::Path::new("fuzz.yaml"));
    }

    #[test]
    fn config_parser_never_panics_on_yaml_shapes(
        key in prop::sample::select(vec!["store", "s3", "cache", "snapshots", "prefetch", "bogus"]),
        value in prop::sample::select(vec!["1", "-1", "x", "[]", "{}", "[1, {a: b}]", "{ size: 99EiB }", "{ name: '..' }", "~", "1e400", "{ threshold: { min: 2 } }"]),
    ) {
        let _ = snapahead::config::Config::parse(&format!("{key}: {value}\n"), std::path::Path::new("fuzz.yaml"));
    }
}

/// The resealed cases reach the field checks: an unmutated encoding
/// resealed still decodes, and one with a field changed fails on that
/// field, not on the checksum.
#[test]
fn reseal_gets_past_the_checksum() {
    assert!(ManifestIndex::decode(&reseal(index()), "fuzz").is_ok());
    assert!(ManifestPage::decode(&reseal(page()), "fuzz").is_ok());
    let mut bad = index();
    bad[4] ^= 0xff; // the version
    let e = ManifestIndex::decode(&reseal(bad), "fuzz").unwrap_err();
    assert!(!e.to_string().contains("checksum"), "{e}");
}

/// Inputs found by `make fuzz` (or written by hand) under
/// fuzz/regressions/TARGET/ are replayed on every run: each must decode to
/// a value or an error, never a panic.
#[test]
fn fuzz_regressions_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for target in ["index", "page", "trace", "config"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for f in dir.flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            match target {
                "index" => {
                    let _ = ManifestIndex::decode(&bytes, "regression");
                }
                "page" => {
                    let _ = ManifestPage::decode(&bytes, "regression");
                }
                "trace" => read_all_trace(&bytes),
                _ => {
                    if let Ok(t) = std::str::from_utf8(&bytes) {
                        let _ = snapahead::config::Config::parse(t, std::path::Path::new("r.yaml"));
                    }
                }
            }
            replayed += 1;
        }
    }
    // The corpus is in the repository: finding none means a broken path.
    assert!(
        replayed >= 10,
        "only {replayed} inputs under {}",
        root.display()
    );
    eprintln!("replayed {replayed} fuzz regression inputs");
}
