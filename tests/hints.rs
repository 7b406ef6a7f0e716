//! `hints`: learning from traces (files, the store, a parent's), the
//! evaluation replay, and the index rewrite being atomic.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use snapahead::create::{create, CreateOptions};
use snapahead::format::{keys, ManifestIndex};
use snapahead::name::SnapshotName;
use snapahead::store::Store;
use snapahead::trace::{Op, Record, TraceHeader, TraceWriter};

const BS: u64 = 64 * 1024;

fn cli(dir: &Path, store: &str, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .current_dir(dir)
        .args(["--store", store])
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{t}");
    t
}

/// `create v` of `v.img` with 64 KiB blocks, 4 per group.
fn create_v(d: &Path, store: &str) {
    ok(&cli(
        d,
        store,
        &[
            "create",
            "v",
            "--source",
            "v.img",
            "--block-size",
            "64KiB",
            "--group-size",
            "4",
        ],
    ));
}

/// A session: group 0 (blocks 0-3) read whole at start, then group 5
/// (blocks 20-23) half a second later, then one block of group 9.
fn write_session(path: &Path, volume_size: u64, jitter_ns: u64) {
    let h = TraceHeader {
        volume: "v".into(),
        volume_size,
        start_ms: 0,
        host: "h".into(),
        source: "test".into(),
    };
    let mut w = TraceWriter::new(std::fs::File::create(path).unwrap(), &h).unwrap();
    let mut push = |t: u64, block: u64| {
        w.push(&Record {
            t_ns: t + jitter_ns,
            op: Op::Read,
            offset: block * BS,
            len: BS as u32,
            stream: 1,
        })
        .unwrap();
    };
    for b in 0..4 {
        push(b * 1_000_000, b);
    }
    for b in 20..24 {
        push(500_000_000 + b, b);
    }
    push(900_000_000, 37);
    // Writes are not reads to predict.
    w.push(&Record {
        t_ns: 950_000_000,
        op: Op::Write,
        offset: 50 * BS,
        len: 4096,
        stream: 1,
    })
    .unwrap();
    w.finish().unwrap();
}

#[test]
fn learn_from_files_and_store_then_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = common::random_bytes(3, 64 * BS as usize);
    common::write(&d.join("v.img"), &vol);
    let store_dir = d.join("store");
    let store = format!("file://{}", store_dir.display());
    create_v(d, &store);
    for (i, j) in [(1, 0), (2, 3_000), (3, 7_000)] {
        write_session(&d.join(format!("s{i}.trace")), vol.len() as u64, j);
    }

    // A mount that holds the index keeps working across the rewrite.
    let fuse = common::fuse_available("hints: mount across rewrite");
    let m = fuse.then(|| common::Mount::start(d, &store, &d.join("cache"), &[], "v.img"));

    let out = ok(&cli(
        d,
        &store,
        &[
            "hints", "v", "--trace", "s1.trace", "--trace", "s2.trace", "--window", "1s,10s",
        ],
    ));
    assert!(out.contains("learned from 2 session(s)"), "{out}");
    let j: serde_json::Value =
        serde_json::from_slice(&cli(d, &store, &["inspect", "v", "--json"]).stdout).unwrap();
    assert_eq!(j["windows"][0]["window_ms"], 1000);
    assert_eq!(j["windows"][1]["window_ms"], 10_000);
    // Groups 0 and 5 are read whole in both sessions: each block at 2/3
    // (k of n episodes counts k/(n+1)); group 9 one block of four: 1/6.
    assert_eq!(j["windows"][0]["hint_histogram"][6], 2, "{j}");
    assert_eq!(j["windows"][0]["hint_histogram"][1], 1, "{j}");
    assert_eq!(j["warmup_groups"], 3);
    assert!(j["windows"][0]["successors_total"].as_u64().unwrap() >= 2);

    if let Some(m) = &m {
        let data = std::fs::read(m.mountpoint.join("v.img")).unwrap();
        assert!(data == vol, "the mount broke when the index was rewritten");
    }
    drop(m);

    // The held-out third session is predicted well.
    let o = cli(
        d,
        &store,
        &[
            "hints",
            "v",
            "--evaluate",
            "s3.trace",
            "--threshold",
            "0.5",
            "--json",
        ],
    );
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(e[0]["overall"]["recall"].as_f64().unwrap() >= 0.8, "{e}");
    assert!(e[0]["overall"]["precision"].as_f64().unwrap() >= 0.7, "{e}");

    // From the store: the traces of a parent teach its child.
    let traces = store_dir.join("traces/v");
    std::fs::create_dir_all(&traces).unwrap();
    std::fs::copy(d.join("s1.trace"), traces.join("h-1.trace")).unwrap();
    std::fs::copy(d.join("s2.trace"), traces.join("h-2.trace")).unwrap();
    ok(&cli(
        d,
        &store,
        &["create", "child", "--source", "v.img", "--parent", "v"],
    ));
    let out = ok(&cli(d, &store, &["hints", "child", "--from-store"]));
    assert!(out.contains("learned from 2 session(s)"), "{out}");
    let j: serde_json::Value =
        serde_json::from_slice(&cli(d, &store, &["inspect", "child", "--json"]).stdout).unwrap();
    assert_eq!(j["warmup_groups"], 3, "{j}");

    // `create --trace` learns at creation.
    ok(&cli(
        d,
        &store,
        &[
            "create",
            "v3",
            "--source",
            "v.img",
            "--block-size",
            "64KiB",
            "--group-size",
            "4",
            "--trace",
            "s1.trace",
            "--trace",
            "s2.trace",
        ],
    ));
    let j: serde_json::Value =
        serde_json::from_slice(&cli(d, &store, &["inspect", "v3", "--json"]).stdout).unwrap();
    assert_eq!(j["warmup_groups"], 3, "{j}");
    assert_eq!(j["windows"][0]["hint_histogram"][6], 2, "{j}");

    // A trace of a volume of another size is refused; no traces at all too.
    write_session(&d.join("other.trace"), vol.len() as u64 * 2, 0);
    let o = cli(d, &store, &["hints", "v", "--trace", "other.trace"]);
    let t = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && t.contains("other.trace") && t.contains("volume"),
        "{t}"
    );
    let o = cli(d, &store, &["hints", "child"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no traces"));
}

#[tokio::test]
async fn an_interrupted_rewrite_leaves_the_old_index() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.img");
    common::write(&src, &common::random_bytes(4, 16 * BS as usize));
    let slow = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let store = Store::from_object_store(Arc::new(slow), "throttled memory");
    let name = SnapshotName::parse("v").unwrap();
    let mut o = CreateOptions::new(name.clone(), &src);
    o.block_size = Some(BS as u32);
    create(&store, &o).await.unwrap();
    let before = store.get(&keys::index(&name)).await.unwrap();
    let old = ManifestIndex::decode(&before, "old").unwrap();
    let mut new = old.clone();
    new.warmup = vec![snapahead::format::WarmUp::new(
        0,
        new.header.group_size,
        [0, 1],
    )];
    new.groups[0].hints = vec![1.0; new.windows_ms.len()];
    // Cut the rewrite off while its PUT is under way.
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        snapahead::predict::commit(&store, &new),
    )
    .await;
    assert!(r.is_err());
    let after = store.get(&keys::index(&name)).await.unwrap();
    assert_eq!(ManifestIndex::decode(&after, "after").unwrap(), old);
    // Completed, it replaces the index whole.
    let written = snapahead::predict::commit(&store, &new).await.unwrap();
    let done =
        ManifestIndex::decode(&store.get(&keys::index(&name)).await.unwrap(), "new").unwrap();
    assert_eq!(done, written);
    // As given, but for the located and inline blocks: those of its new
    // warm-up (two incompressible 64 KiB blocks fit inline).
    let located: Vec<u64> = done.located.blocks().collect();
    assert_eq!(located, [0, 1]);
    let inline: Vec<u64> = done.inline.iter().map(|b| b.block_id).collect();
    assert_eq!(inline, [0, 1]);
    assert_eq!(
        ManifestIndex {
            located: new.located.clone(),
            inline: new.inline.clone(),
            ..done
        },
        new
    );
}

/// A fio iolog over part of a volume, imported without its size, still
/// teaches hints; imported with `--snapshot` it carries the snapshot's
/// size; one that reaches beyond the snapshot is refused with a hint on
/// how to re-import.
#[test]
fn imported_fio_traces_fit_the_snapshot_they_were_recorded_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = format!("file://{}", d.join("store").display());
    let vol = common::random_bytes(40, 64 * BS as usize);
    common::write(&d.join("v.img"), &vol);
    create_v(d, &store);
    // Reads of blocks 0-3 and 8-9: the furthest access ends at 10 blocks.
    let mut log = String::from("fio version 3 iolog\n0 /dev/vdb add\n1 /dev/vdb open\n");
    for (i, b) in [0u64, 1, 2, 3, 8, 9].iter().enumerate() {
        log += &format!("{} /dev/vdb read {} {}\n", 10 + i * 1000, b * BS, BS);
    }
    std::fs::write(d.join("fio.log"), &log).unwrap();
    let import = |log: &str, out: &str, extra: &[&str]| {
        let mut args = vec!["trace", "import", "--format", "fio", log, "--out", out];
        args.extend_from_slice(extra);
        cli(d, &store, &args)
    };
    ok(&import("fio.log", "a.trace", &[]));
    let t = ok(&cli(d, &store, &["hints", "v", "--trace", "a.trace"]));
    assert!(
        t.contains("learned from 1 session(s), 6 block reads"),
        "{t}"
    );
    ok(&import("fio.log", "b.trace", &["--snapshot", "v"]));
    let show = ok(&cli(d, &store, &["trace", "show", "b.trace", "--json"]));
    let j: serde_json::Value = serde_json::from_str(show.trim()).unwrap();
    assert_eq!(j["header"]["volume_size"], vol.len() as u64, "{j}");
    assert_eq!(j["header"]["volume"], "v");
    ok(&cli(d, &store, &["hints", "v", "--trace", "b.trace"]));
    // Beyond the snapshot: refused, and the message says what to do.
    log += &format!("9000 /dev/vdb read {} {}\n", 100 * BS, BS);
    std::fs::write(d.join("far.log"), &log).unwrap();
    ok(&import("far.log", "far.trace", &[]));
    let o = cli(d, &store, &["hints", "v", "--trace", "far.trace"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--snapshot NAME"), "{e}");
    let o = import("far.log", "x.trace", &["--snapshot", "v"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("beyond the volume's"),
        "{e}"
    );
}

/// A version 1 index (written as an old `create` did) still mounts and
/// serves the same bytes; the next `hints` writes it back as the current
/// version (5), with block masks and its warm-up's blocks located.
#[test]
fn a_version_1_index_mounts_and_is_upgraded_by_hints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = common::random_bytes(5, 64 * BS as usize);
    common::write(&d.join("v.img"), &vol);
    let store_dir = d.join("store");
    let store = format!("file://{}", store_dir.display());
    create_v(d, &store);
    let key = store_dir.join(keys::index(&SnapshotName::parse("v").unwrap()));
    let ix = ManifestIndex::decode(&std::fs::read(&key).unwrap(), "v").unwrap();
    let v1 = ix.encode_version(1);
    assert_eq!(u16::from_le_bytes([v1[4], v1[5]]), 1);
    std::fs::write(&key, &v1).unwrap();
    let out = ok(&cli(d, &store, &["inspect", "v"]));
    assert!(out.contains("64 blocks") || out.contains("groups"), "{out}");
    if common::fuse_available("hints: mount a version 1 index") {
        let m = common::Mount::start(d, &store, &d.join("cache"), &[], "v.img");
        let data = std::fs::read(m.mountpoint.join("v.img")).unwrap();
        assert!(data == vol, "a version 1 index served other bytes");
    }
    for i in [1, 2] {
        write_session(&d.join(format!("s{i}.trace")), vol.len() as u64, i * 1000);
    }
    ok(&cli(
        d,
        &store,
        &["hints", "v", "--trace", "s1.trace", "--trace", "s2.trace"],
    ));
    let up = std::fs::read(&key).unwrap();
    assert_eq!(
        u16::from_le_bytes([up[4], up[5]]),
        snapahead::format::index::INDEX_VERSION
    );
    assert_eq!(snapahead::format::index::INDEX_VERSION, 5);
    let upgraded = ManifestIndex::decode(&up, "v").unwrap();
    let gs = upgraded.header.group_size;
    let warm: Vec<u64> = upgraded.warmup.iter().flat_map(|w| w.blocks(gs)).collect();
    assert!(!warm.is_empty());
    let j: serde_json::Value =
        serde_json::from_slice(&cli(d, &store, &["inspect", "v", "--json"]).stdout).unwrap();
    assert_eq!(j["located_blocks"], warm.len(), "{j}");
    assert_eq!(j["inline_blocks"], upgraded.inline.len(), "{j}");
    assert!(!upgraded.inline.is_empty());
    // Groups 0, 5 and 9 were read: each has a mask.
    assert_eq!(j["windows"][0]["groups_with_masks"], 3, "{j}");
}

/// `--from-store` learns from the newest `--max-sessions` traces only.
#[test]
fn from_store_takes_the_newest_traces_up_to_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = common::random_bytes(6, 64 * BS as usize);
    common::write(&d.join("v.img"), &vol);
    let store_dir = d.join("store");
    let store = format!("file://{}", store_dir.display());
    create_v(d, &store);
    let traces = store_dir.join("traces/v");
    std::fs::create_dir_all(&traces).unwrap();
    for i in 0..5 {
        write_session(&traces.join(format!("h-{i}.trace")), vol.len() as u64, i);
    }
    let out = ok(&cli(
        d,
        &store,
        &["hints", "v", "--from-store", "--max-sessions", "2"],
    ));
    assert!(out.contains("learned from 2 session(s)"), "{out}");
    let out = ok(&cli(d, &store, &["hints", "v", "--from-store"]));
    assert!(out.contains("learned from 5 session(s)"), "{out}");
}

/// `trace plot` draws reads and writes; with `--snapshot`, hits and
/// misses of that snapshot's index (the colours of `trace::plot::Kind`).
#[test]
fn trace_plot_draws_reads_writes_hits_and_misses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = common::random_bytes(7, 64 * BS as usize);
    common::write(&d.join("v.img"), &vol);
    let store = format!("file://{}", d.join("store").display());
    create_v(d, &store);
    for i in [1, 2, 3] {
        write_session(&d.join(format!("s{i}.trace")), vol.len() as u64, i * 1000);
    }
    let fill = |rgb: (u8, u8, u8), svg: &str| {
        let hex = format!("#{:02X}{:02X}{:02X}", rgb.0, rgb.1, rgb.2);
        svg.to_uppercase().contains(&hex)
    };
    use snapahead::trace::plot::Kind;
    ok(&cli(
        d,
        &store,
        &["trace", "plot", "s1.trace", "--out", "a.svg"],
    ));
    let svg = std::fs::read_to_string(d.join("a.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.contains("volume offset (MiB)") && svg.contains("time (s)"));
    // The legend shows each kind present at full colour.
    assert!(fill(Kind::Read.rgb(), &svg) && fill(Kind::Write.rgb(), &svg));
    assert!(!fill(Kind::Hit.rgb(), &svg));
    ok(&cli(
        d,
        &store,
        &["hints", "v", "--trace", "s1.trace", "--trace", "s2.trace"],
    ));
    let out = ok(&cli(
        d,
        &store,
        &[
            "trace",
            "plot",
            "s3.trace",
            "--out",
            "b.svg",
            "--snapshot",
            "v",
            "--no-warmup",
        ],
    ));
    assert!(out.contains("precision"), "{out}");
    let svg = std::fs::read_to_string(d.join("b.svg")).unwrap();
    // Without warm-up the first read of each group is a miss, the rest hits.
    assert!(fill(Kind::Hit.rgb(), &svg), "no hits drawn");
    assert!(fill(Kind::Miss.rgb(), &svg), "no misses drawn");
    assert!(fill(Kind::Write.rgb(), &svg), "writes not drawn");
    assert!(
        !fill(Kind::Read.rgb(), &svg),
        "reads drawn plain beside outcomes"
    );
    // A trace that is not one is an error naming it.
    std::fs::write(d.join("bad.trace"), b"nope").unwrap();
    let o = cli(d, &store, &["trace", "plot", "bad.trace", "--out", "c.svg"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("bad.trace"));
}
