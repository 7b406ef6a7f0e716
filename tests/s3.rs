//! The `s3://` store against a real S3 server: the Garage node that
//! `scripts/garage.sh start` runs on 127.0.0.1 (`make test` starts it and
//! exports its address and key). Without that environment the tests say
//! they skipped; CI always has it.

mod common;

use std::time::Duration;

use snapahead::catalog;
use snapahead::create::{create, CreateOptions};
use snapahead::name::SnapshotName;
use snapahead::progress::Progress;
use snapahead::snapshot::Snapshot;
use snapahead::store::S3Config;
use snapahead::store::Store;

fn s3_env() -> Option<(String, S3Config)> {
    let endpoint = std::env::var("SNAPAHEAD_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("SNAPAHEAD_S3_BUCKET").ok()?;
    let cfg = S3Config {
        endpoint: Some(endpoint),
        region: Some("garage".into()),
        allow_http: true,
        ..Default::default()
    };
    // A fresh prefix per run: tests never see each other's objects.
    let prefix = format!("test-{}", snapahead::format::Id::random());
    Some((format!("s3://{bucket}/{prefix}"), cfg))
}

macro_rules! s3_or_skip {
    () => {
        match s3_env() {
            Some(v) => v,
            None => {
                common::skip(
                    "s3",
                    "no S3 server (run `scripts/garage.sh start` and source `scripts/garage.sh env`)",
                );
                return;
            }
        }
    };
}

#[tokio::test]
async fn create_verify_read_gc_on_garage() {
    let (url, cfg) = s3_or_skip!();
    let store = Store::open(&url, &cfg, std::path::Path::new(".")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.img");
    let bs = 64 * 1024;
    let mut vol = common::mixed_volume(bs, 96, 777, 21);
    common::write(&src, &vol);
    let name = SnapshotName::parse("s3demo").unwrap();
    let mut o = CreateOptions::new(name.clone(), &src);
    o.block_size = Some(bs as u32);
    create(&store, &o).await.unwrap();

    let snap = Snapshot::open(&store, &name).await.unwrap();
    assert!(snap.read_at(0, vol.len()).await.unwrap() == vol);
    let r = snap.verify(4, &Progress::new("t", 0, false)).await.unwrap();
    assert!(r.bad.is_empty() && r.blocks_checked > 0);

    // Incremental on S3, then gc after deleting the parent.
    vol[bs * 2] ^= 1;
    common::write(&src, &vol);
    let child = SnapshotName::parse("s3child").unwrap();
    let mut o = CreateOptions::new(child.clone(), &src);
    o.parent = Some(name.clone());
    let s = create(&store, &o).await.unwrap();
    assert_eq!(s.new_bytes, bs as u64);
    catalog::delete(&store, &name).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    catalog::gc(&store, Duration::ZERO, false, now + 5000)
        .await
        .unwrap();
    let snap = Snapshot::open(&store, &child).await.unwrap();
    assert!(snap.read_at(0, vol.len()).await.unwrap() == vol);

    // Clean up this run's prefix.
    catalog::delete(&store, &child).await.unwrap();
    catalog::gc(&store, Duration::ZERO, false, now + 5000)
        .await
        .unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}
