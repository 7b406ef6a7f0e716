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

/// `s3.sse` reaches the wire: every upload carries the encryption header
/// (a recorded request on a stand-in server on 127.0.0.1, so the test
/// does not depend on what the S3 server does with it).
#[tokio::test]
async fn server_side_encryption_is_sent_on_every_upload() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || loop {
                // One request: head, then Content-Length bytes of body.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if c.read_exact(&mut body).is_err() {
                    return;
                }
                seen.lock().unwrap().push(text);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n");
            });
        }
    });
    for (sse, key, want) in [
        ("AES256", None, vec!["x-amz-server-side-encryption: AES256"]),
        (
            "aws:kms",
            Some("arn:aws:kms:eu-west-1:1:key/k1"),
            vec![
                "x-amz-server-side-encryption: aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:eu-west-1:1:key/k1",
            ],
        ),
    ] {
        heads.lock().unwrap().clear();
        let cfg = S3Config {
            endpoint: Some(format!("http://{addr}")),
            region: Some("garage".into()),
            allow_http: true,
            max_retries: 0,
            sse: Some(sse.into()),
            kms_key_id: key.map(str::to_string),
            ..Default::default()
        };
        // Static credentials, so the client never looks further (an
        // instance-metadata lookup would leave the loopback network).
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, "test");
            }
        }
        let store = Store::open("s3://b/p", &cfg, std::path::Path::new(".")).unwrap();
        store
            .put("data/x", bytes::Bytes::from_static(b"hello"))
            .await
            .unwrap();
        let h = heads.lock().unwrap().join("\n").to_lowercase();
        assert!(h.starts_with("put "), "{h}");
        for w in want {
            assert!(h.contains(&w.to_lowercase()), "{w} not in:\n{h}");
        }
    }
    // A wrong value is refused before any request, naming the setting.
    let bad = S3Config {
        sse: Some("aes".into()),
        ..Default::default()
    };
    let e = Store::open("s3://b", &bad, std::path::Path::new("."))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("s3.sse"), "{e:#}");
}
