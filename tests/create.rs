//! `create` and the catalog against real stores (file:// and memory://):
//! everything written is read back byte for byte through the library.

mod common;

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use snapahead::catalog;
use snapahead::create::{create, CreateOptions};
use snapahead::format::keys;
use snapahead::name::SnapshotName;
use snapahead::progress::Progress;
use snapahead::snapshot::Snapshot;
use snapahead::store::S3Config;
use snapahead::store::Store;

const BS: usize = 64 * 1024;

fn name(s: &str) -> SnapshotName {
    SnapshotName::parse(s).unwrap()
}

fn opts(n: &str, src: &std::path::Path) -> CreateOptions {
    let mut o = CreateOptions::new(name(n), src);
    o.block_size = Some(BS as u32);
    o.group_size = Some(4);
    o
}

fn quiet() -> Progress {
    Progress::new("test", 0, false)
}

async fn check_round_trip(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vol.img");
    // 200 full blocks and a partial one.
    let vol = common::mixed_volume(BS, 200, 12_345, 1);
    common::write(&src, &vol);

    let s = create(store, &opts("mixed", &src)).await.unwrap();
    assert_eq!(s.bytes_read, vol.len() as u64);
    // 2 of every 8 blocks are zeros: holes, not stored.
    assert_eq!(s.zero_bytes, 50 * BS as u64);
    // The repeated block (1 in 8) is stored once: everything else new.
    assert_eq!(s.reused_bytes, 24 * BS as u64);
    assert_eq!(
        s.new_bytes + s.reused_bytes + s.zero_bytes,
        vol.len() as u64
    );

    let snap = Snapshot::open(store, &name("mixed")).await.unwrap();
    let h = snap.header();
    assert_eq!(h.volume_size, vol.len() as u64);
    assert_eq!(h.zero_blocks, 50);
    assert_eq!(h.stored_blocks, 151);
    // Compressible text makes the stored bytes smaller than the data.
    assert!(h.stored_bytes < (151 * BS) as u64);

    // The whole volume, and odd ranges across blocks, holes and the tail.
    assert!(snap.read_at(0, vol.len()).await.unwrap() == vol);
    for (off, len) in [
        (1, 10),
        (BS as u64 - 3, 7),
        (3 * BS as u64 + 5, 3 * BS),
        (vol.len() as u64 - 100, 1000),
    ] {
        let got = snap.read_at(off, len).await.unwrap();
        let end = (off as usize + len).min(vol.len());
        assert!(got == vol[off as usize..end], "range {off}+{len}");
    }
    let r = snap.verify(4, &quiet()).await.unwrap();
    assert_eq!(r.blocks_checked, 151);
    assert!(r.bad.is_empty(), "{:?}", r.bad);

    // An existing name is refused and the store is unchanged.
    let before = store.list("").await.unwrap().len();
    let e = create(store, &opts("mixed", &src))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    // An unknown parent, a missing source, an empty source: refused.
    let mut o = opts("child", &src);
    o.parent = Some(name("nope"));
    let e = format!("{:#}", create(store, &o).await.unwrap_err());
    assert!(e.contains("no snapshot named \"nope\""), "{e}");
    let e = format!(
        "{:#}",
        create(store, &opts("x", &dir.path().join("missing")))
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("cannot open source") && e.contains("missing"),
        "{e}"
    );
    let empty = dir.path().join("empty");
    common::write(&empty, b"");
    let e = format!("{:#}", create(store, &opts("x", &empty)).await.unwrap_err());
    assert!(e.contains("empty"), "{e}");
    assert_eq!(store.list("").await.unwrap().len(), before);
}

#[tokio::test]
async fn round_trip_memory_store() {
    check_round_trip(&Store::memory()).await;
}

#[tokio::test]
async fn round_trip_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("file://store", &S3Config::default(), dir.path()).unwrap();
    check_round_trip(&store).await;
}

#[tokio::test]
async fn incremental_uploads_only_changed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::memory();
    let src = dir.path().join("v.img");
    let blocks = 512;
    let mut vol = common::random_bytes(7, blocks * BS);
    common::write(&src, &vol);
    create(&store, &opts("base", &src)).await.unwrap();

    // Change 1% of the blocks (5 of 512), a few bytes each.
    for b in [3usize, 100, 101, 300, 511] {
        vol[b * BS + 17] ^= 0xff;
    }
    common::write(&src, &vol);
    let mut o = opts("child", &src);
    o.parent = Some(name("base"));
    let s = create(&store, &o).await.unwrap();
    let volume = vol.len() as u64;
    assert_eq!(s.new_bytes, 5 * BS as u64);
    assert!(
        s.uploaded_bytes <= volume * 2 / 100,
        "uploaded {} of {volume}",
        s.uploaded_bytes
    );
    let child = Snapshot::open(&store, &name("child")).await.unwrap();
    assert_eq!(
        child.header().parent.as_ref().map(|p| p.0.as_str()),
        Some("base")
    );
    assert!(child.read_at(0, vol.len()).await.unwrap() == vol);
}

#[tokio::test]
async fn gc_keeps_what_a_child_uses_and_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("file://store", &S3Config::default(), dir.path()).unwrap();
    let src = dir.path().join("v.img");
    let mut vol = common::random_bytes(11, 64 * BS);
    common::write(&src, &vol);
    create(&store, &opts("parent", &src)).await.unwrap();
    vol[5 * BS] ^= 1;
    common::write(&src, &vol);
    let mut o = opts("child", &src);
    o.parent = Some(name("parent"));
    create(&store, &o).await.unwrap();
    let data_before = store.list(keys::DATA_PREFIX).await.unwrap().len();

    // Deleting the parent frees nothing the child uses.
    catalog::delete(&store, &name("parent")).await.unwrap();
    assert!(Snapshot::open(&store, &name("parent")).await.is_err());
    let r = catalog::gc(&store, Duration::ZERO, false, now_ms())
        .await
        .unwrap();
    assert_eq!(r.snapshots, 1);
    let child = Snapshot::open(&store, &name("child")).await.unwrap();
    assert!(child.verify(4, &quiet()).await.unwrap().bad.is_empty());
    assert!(child.read_at(0, vol.len()).await.unwrap() == vol);
    // The parent's pages are gone (delete), its data objects are all still
    // used by the child: nothing to remove.
    assert_eq!(
        store.list(keys::DATA_PREFIX).await.unwrap().len(),
        data_before
    );

    // An orphan object: kept while young, removed after the grace period.
    store
        .put(
            "data/0123456789abcdef0123456789abcdef",
            bytes::Bytes::from_static(b"orphan"),
        )
        .await
        .unwrap();
    let r = catalog::gc(&store, Duration::from_secs(3600), false, now_ms())
        .await
        .unwrap();
    assert_eq!((r.removed.len(), r.kept_young), (0, 1));
    let r = catalog::gc(&store, Duration::ZERO, true, now_ms() + 1000)
        .await
        .unwrap();
    assert_eq!(r.removed.len(), 1);
    assert!(
        store
            .exists("data/0123456789abcdef0123456789abcdef")
            .await
            .unwrap(),
        "dry run deleted"
    );
    let r = catalog::gc(&store, Duration::ZERO, false, now_ms() + 1000)
        .await
        .unwrap();
    assert_eq!(r.removed.len(), 1);
    assert!(!store
        .exists("data/0123456789abcdef0123456789abcdef")
        .await
        .unwrap());

    // Deleting the child too leaves every object an orphan.
    catalog::delete(&store, &name("child")).await.unwrap();
    catalog::gc(&store, Duration::ZERO, false, now_ms() + 1000)
        .await
        .unwrap();
    assert!(store.list(keys::DATA_PREFIX).await.unwrap().is_empty());
    assert!(store.list(keys::PAGES_PREFIX).await.unwrap().is_empty());
}

#[tokio::test]
async fn gc_refuses_when_an_index_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::memory();
    let src = dir.path().join("v.img");
    common::write(&src, &common::random_bytes(3, 8 * BS));
    create(&store, &opts("a", &src)).await.unwrap();
    store
        .put(
            &keys::index(&name("broken")),
            bytes::Bytes::from_static(b"garbage"),
        )
        .await
        .unwrap();
    let e = format!(
        "{:#}",
        catalog::gc(&store, Duration::ZERO, false, now_ms())
            .await
            .unwrap_err()
    );
    assert!(e.contains("broken") && e.contains("refuses"), "{e}");
    assert!(!store.list(keys::DATA_PREFIX).await.unwrap().is_empty());
}

#[tokio::test]
async fn interrupted_create_leaves_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.img");
    let vol = common::random_bytes(5, 48 << 20);
    common::write(&src, &vol);
    // Every PUT takes 100 ms: 12 data objects two at a time take ~600 ms,
    // so the create is still uploading when the first object has landed.
    let slow = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_put_per_call: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let store = Store::from_object_store(Arc::new(slow), "throttled memory");
    let mut o = opts("cut", &src);
    o.upload_concurrency = 2;
    {
        // Cut the create off as soon as something was uploaded (polled
        // under a deadline, whatever the machine's speed).
        let run = create(&store, &o);
        tokio::pin!(run);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = &mut run => panic!("create finished before it could be interrupted"),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if !store.list(keys::DATA_PREFIX).await.unwrap().is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing was uploaded in 60 s"
            );
        }
    }
    assert!(catalog::list(&store).await.unwrap().is_empty());
    assert!(Snapshot::open(&store, &name("cut")).await.is_err());

    // A rerun succeeds; gc then removes exactly the first run's orphans.
    create(&store, &o).await.unwrap();
    let r = catalog::gc(&store, Duration::ZERO, false, now_ms() + 1000)
        .await
        .unwrap();
    assert!(!r.removed.is_empty());
    let snap = Snapshot::open(&store, &name("cut")).await.unwrap();
    assert!(snap.verify(4, &quiet()).await.unwrap().bad.is_empty());
    assert!(snap.read_at(0, vol.len()).await.unwrap() == vol);
}

#[tokio::test]
async fn verify_names_exactly_the_corrupted_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("file://store", &S3Config::default(), dir.path()).unwrap();
    let src = dir.path().join("v.img");
    let vol = common::random_bytes(9, 32 * BS);
    common::write(&src, &vol);
    create(&store, &opts("v", &src)).await.unwrap();
    let snap = Snapshot::open(&store, &name("v")).await.unwrap();
    let blocks = snap.all_blocks().await.unwrap();
    // Flip one byte inside block 7's stored bytes.
    let b7 = blocks.iter().find(|b| b.block_id == 7).unwrap();
    let path = dir.path().join("store").join(&*b7.object);
    let mut obj = std::fs::read(&path).unwrap();
    obj[(b7.offset + 10) as usize] ^= 0x55;
    std::fs::write(&path, &obj).unwrap();

    let r = snap.verify(4, &quiet()).await.unwrap();
    assert_eq!(
        r.bad.iter().map(|b| b.block_id).collect::<Vec<_>>(),
        vec![7]
    );
    assert!(r.bad[0].object.contains(&*b7.object) && r.bad[0].reason.contains("checksum"));
    // Reading it is an error naming block and object, never wrong bytes.
    let e = format!("{:#}", snap.read_at(7 * BS as u64, 10).await.unwrap_err());
    assert!(e.contains("block 7") && e.contains(&*b7.object), "{e}");
    assert!(snap.read_at(8 * BS as u64, BS).await.unwrap() == vol[8 * BS..9 * BS]);

    // A missing object: every block in it is bad.
    std::fs::remove_file(&path).unwrap();
    let r = snap.verify(4, &quiet()).await.unwrap();
    let in_obj = blocks.iter().filter(|b| b.object == b7.object).count();
    assert_eq!(r.bad.len(), in_obj);
}

/// An index whose located copy of an entry disagrees with its page, or
/// whose inline copy of a block is damaged (copies written with the index,
/// so that is damage): `verify` names the block and the place.
#[tokio::test]
async fn verify_names_a_located_block_its_page_disagrees_with() {
    let store = Store::memory();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.img");
    common::write(&src, &common::random_bytes(11, 32 * BS));
    create(&store, &opts("v", &src)).await.unwrap();
    let snap = Snapshot::open(&store, &name("v")).await.unwrap();
    let mut ix = (**snap.index()).clone();
    ix.warmup = vec![snapahead::format::WarmUp::new(
        0,
        ix.header.group_size,
        [2, 3],
    )];
    let ix = snapahead::predict::commit(&store, &ix).await.unwrap();
    let snap = Snapshot::open(&store, &name("v")).await.unwrap();
    assert_eq!(snap.index().located.entries.len(), 2);
    assert!(snap.verify(4, &quiet()).await.unwrap().bad.is_empty());
    let mut bad = ix.clone();
    bad.located.entries[1].offset += 1;
    store
        .put(
            &snapahead::format::keys::index(&name("v")),
            bad.encode().into(),
        )
        .await
        .unwrap();
    let snap = Snapshot::open(&store, &name("v")).await.unwrap();
    let r = snap.verify(4, &quiet()).await.unwrap();
    assert_eq!(r.bad.len(), 1, "{:?}", r.bad);
    assert_eq!(r.bad[0].block_id, 3);
    assert!(
        r.bad[0].reason.contains("the index locates it at"),
        "{}",
        r.bad[0].reason
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A sparse image is read by its data only (SEEK_DATA), and the snapshot
/// is the same, block for block, as the one a full read of the same bytes
/// makes.
#[tokio::test]
async fn a_sparse_file_is_read_by_its_data_and_snapshots_the_same() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("sparse.img");
    let size: u64 = 300 << 20;
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(size).unwrap();
    // Data at the start, in the middle (not block-aligned), and a partial
    // block at the very end; zeros written as data inside one extent too.
    f.write_all_at(&common::random_bytes(61, 3 << 20), 0)
        .unwrap();
    f.write_all_at(&common::random_bytes(62, 1_000_001), (150 << 20) + 12_345)
        .unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 200 << 20).unwrap();
    f.write_all_at(b"the end", size - 7).unwrap();
    drop(f);
    let full = dir.path().join("full.img");
    let bytes = std::fs::read(&sparse).unwrap();
    common::write(&full, &bytes);
    let store = Store::open("file://store", &S3Config::default(), dir.path()).unwrap();
    let a = create(&store, &opts("sparse", &sparse)).await.unwrap();
    let b = create(&store, &opts("full", &full)).await.unwrap();
    assert!(
        a.bytes_read < size / 4,
        "read {} of a {size}-byte file with ~5 MiB of data",
        a.bytes_read
    );
    assert_eq!(b.bytes_read, size, "a non-sparse file is read whole");
    assert_eq!(a.zero_bytes + a.new_bytes + a.reused_bytes, size);
    let blocks = |n: &'static str| {
        let store = store.clone();
        async move {
            let s = Snapshot::open(&store, &name(n)).await.unwrap();
            s.all_blocks()
                .await
                .unwrap()
                .into_iter()
                .map(|b| (b.block_id, b.checksum))
                .collect::<Vec<_>>()
        }
    };
    let (ba, bb) = (blocks("sparse").await, blocks("full").await);
    assert!(!ba.is_empty());
    assert_eq!(ba, bb, "same blocks, same checksums");
    let snap = Snapshot::open(&store, &name("sparse")).await.unwrap();
    assert!(snap.read_at(0, size as usize).await.unwrap() == bytes);
}
