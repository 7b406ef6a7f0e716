//! The `snapahead` binary as a user runs it: exit codes and messages.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn snapahead(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapahead"))
        .args(args)
        .current_dir(dir)
        .env_remove("SNAPAHEAD_CONFIG")
        .env_remove("SNAPAHEAD_STORE")
        .output()
        .expect("run snapahead")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn create_list_inspect_verify_delete_gc() {
    let dir = tempfile::tempdir().unwrap();
    let vol = common::mixed_volume(64 * 1024, 40, 0, 3);
    common::write(&dir.path().join("demo.img"), &vol);
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        "store: file://./store\nsnapshots:\n  - { name: demo, source: ./demo.img, block_size: 64KiB }\n",
    )
    .unwrap();
    let o = snapahead(dir.path(), &["create", "demo"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("created demo"), "{}", text(&o));
    let o = snapahead(dir.path(), &["list"]);
    assert!(
        o.status.success() && text(&o).contains("demo"),
        "{}",
        text(&o)
    );
    let o = snapahead(dir.path(), &["inspect", "demo", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["block_size"], 65536);
    assert_eq!(j["zero_blocks"], 10);
    let o = snapahead(dir.path(), &["verify", "demo"]);
    assert!(
        o.status.success() && text(&o).contains("0 bad"),
        "{}",
        text(&o)
    );
    // Second create of the same name: refused, non-zero.
    let o = snapahead(dir.path(), &["create", "demo"]);
    assert!(
        !o.status.success() && text(&o).contains("already exists"),
        "{}",
        text(&o)
    );
    let o = snapahead(dir.path(), &["delete", "demo"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = snapahead(dir.path(), &["gc", "--grace", "0s"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read_dir(dir.path().join("store/data"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

#[test]
fn bad_input_gets_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "store: file://./s\nsnapshots:\n  - { name: a, colour: red }\n",
            &["list"],
            "snapshots.yaml:3:",
        ),
        (
            "snapshots:\n  - { name: a }\n  - { name: a }\n",
            &["list"],
            "duplicate",
        ),
        (
            "snapshots:\n  - { name: a, block_size: 100KiB }\n",
            &["list"],
            "power of two",
        ),
        ("store: ftp://x\n", &["list"], "not supported"),
        ("store: file://./s\n", &["create", "nosrc"], "no source"),
        (
            "store: file://./s\n",
            &["create", "a/b", "--source", "x"],
            "'/'",
        ),
        (
            "store: file://./s\n",
            &["create", "..", "--source", "x"],
            "starts with '.'",
        ),
        (
            "store: file://./s\n",
            &["create", "--source", "x", "--", "-rf"],
            "starts with '-'; a name starts with a letter or a digit",
        ),
        (
            "store: file://./s\n",
            &["inspect", "ghost"],
            "no snapshot named \"ghost\"",
        ),
        (
            "store: file://./s\n",
            &["create", "a", "--source", "missing.img"],
            "missing.img",
        ),
        (
            "store: file://./s\n",
            &["create", "a", "--source", "x", "--block-size", "1MB"],
            "power of two",
        ),
    ];
    for (cfg, args, want) in cases {
        std::fs::write(dir.path().join("snapshots.yaml"), cfg).unwrap();
        let o = snapahead(dir.path(), args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded: {t}");
        assert!(t.contains(want), "{args:?}: expected {want:?} in: {t}");
        assert!(!t.contains("panicked"), "{args:?} panicked: {t}");
    }
    // An explicitly named config that does not exist is an error too.
    let o = snapahead(dir.path(), &["--config", "nope.yaml", "list"]);
    assert!(!o.status.success() && text(&o).contains("nope.yaml"));
}

#[test]
fn help_explains_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = snapahead(dir.path(), &["--help"]);
    let t = text(&o);
    for c in ["create", "list", "inspect", "verify", "delete", "gc"] {
        assert!(t.contains(c), "{c} missing from --help");
    }
    let o = snapahead(dir.path(), &["create", "--help"]);
    assert!(text(&o).contains("--parent"));
}

/// Against the Garage node of `scripts/garage.sh` when its environment is
/// set (as in `make test`): a wrong secret fails at once with an
/// authentication message, without retrying and without printing the secret.
#[test]
fn wrong_s3_credentials_fail_fast_and_clearly() {
    let Some((endpoint, bucket)) = common::s3_server("wrong_s3_credentials_fail_fast_and_clearly")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        format!("store: s3://{bucket}/cli-test\ns3: {{ endpoint: {endpoint}, region: garage, allow_http: true }}\n"),
    )
    .unwrap();
    let secret = "wrong-secret-0123456789";
    let started = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_snapahead"))
        .arg("list")
        .current_dir(dir.path())
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(t.contains("access denied"), "{t}");
    assert!(!t.contains(secret), "the secret appears in the output");
}

/// A store that does not answer (nothing listens on the port): one clear
/// message after the configured retries, within their time bound.
#[test]
fn unreachable_store_fails_within_the_retry_bound() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        format!(
            "store: s3://bucket/p\ns3: {{ endpoint: http://127.0.0.1:{port}, region: garage, allow_http: true, \
             retry_timeout: 2s, max_retries: 3, connect_timeout: 1s }}\n"
        ),
    )
    .unwrap();
    // Credentials that look real enough, so the store is really asked.
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_snapahead"))
            .args(args)
            .current_dir(dir.path())
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .output()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let o = run(&["list".as_ref()]);
    let t = text(&o);
    assert!(!o.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        t.contains(&format!("127.0.0.1:{port}")) && t.contains("list"),
        "{t}"
    );
    assert_eq!(
        t.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{t}"
    );
    // `mount` says the same and mounts nothing (checked before any FUSE
    // work, so this needs no /dev/fuse).
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = run(&["mount".as_ref(), mnt.as_os_str()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!("127.0.0.1:{port}")) && t.contains("cannot open the snapshots"),
        "{t}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "mounted after all");
}

/// `create` from a real block device (a loop device over an image): sized
/// without reading its length from a file, read whole, same bytes back.
#[test]
fn create_from_a_block_device() {
    if !common::loop_available("create_from_a_block_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let vol = common::mixed_volume(64 * 1024, 48, 0, 31);
    common::write(&img, &vol);
    let dev = common::run(Command::new("losetup").args(["-f", "--show"]).arg(&img))
        .trim()
        .to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let store = format!("file://{}", dir.path().join("store").display());
    let o = snapahead(
        dir.path(),
        &[
            "--store",
            &store,
            "create",
            "dev",
            "--block-size",
            "64KiB",
            "--source",
            &dev,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = snapahead_store(dir.path(), &store, &["inspect", "dev", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["volume_size"], vol.len() as u64);
    assert_eq!(j["zero_blocks"], 12);
    let o = snapahead_store(dir.path(), &store, &["verify", "dev"]);
    assert!(o.status.success(), "{}", text(&o));
}

fn snapahead_store(dir: &Path, store: &str, args: &[&str]) -> Output {
    snapahead(dir, &[&["--store", store], args].concat())
}

#[test]
fn trace_import_and_show() {
    let dir = tempfile::tempdir().unwrap();
    // A fio v3 iolog: 64 sequential 128 KiB reads then 4 writes.
    let mut log = String::from("fio version 3 iolog\n0 /dev/vdb add\n1 /dev/vdb open\n");
    for i in 0..64u64 {
        log += &format!(
            "{} /dev/vdb read {} 131072\n",
            1000 + i * 20_000,
            i * 131_072
        );
    }
    for i in 0..4u64 {
        log += &format!("{} /dev/vdb write {} 4096\n", 2_000_000 + i, i * 4096);
    }
    std::fs::write(dir.path().join("seq.log"), log).unwrap();
    let o = snapahead(
        dir.path(),
        &[
            "trace",
            "import",
            "--format",
            "fio",
            "seq.log",
            "--out",
            "seq.trace",
            "--volume-size",
            "64MiB",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("imported 68 records"), "{}", text(&o));
    let o = snapahead(dir.path(), &["trace", "show", "seq.trace", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["reads"], 64);
    assert_eq!(j["writes"], 4);
    assert_eq!(j["read_bytes"], 64 * 131_072);
    assert_eq!(j["distinct_blocks"], 16);
    assert_eq!(j["classification"]["class"], "sequential");
    assert_eq!(j["header"]["volume_size"], 64 << 20);
    assert_eq!(j["timeline"][0]["reads"], 50);
    // A corrupt trace: a clear error, non-zero exit, no panic.
    let mut bytes = std::fs::read(dir.path().join("seq.trace")).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(dir.path().join("bad.trace"), bytes).unwrap();
    let o = snapahead(dir.path(), &["trace", "show", "bad.trace"]);
    assert!(
        !o.status.success() && text(&o).contains("checksum"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("panicked"));
    // Accesses beyond the given volume size are refused.
    let o = snapahead(
        dir.path(),
        &[
            "trace",
            "import",
            "--format",
            "fio",
            "seq.log",
            "--out",
            "x.trace",
            "--volume-size",
            "1MiB",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("beyond"),
        "{}",
        text(&o)
    );
}

/// With the real secret, a create, list and verify against Garage at
/// RUST_LOG=trace never print the secret (nor does any error path).
#[test]
fn the_secret_never_appears_in_trace_logs() {
    let test = "the_secret_never_appears_in_trace_logs";
    let Some((endpoint, bucket)) = common::s3_server(test) else {
        return;
    };
    let Ok(secret) = std::env::var("AWS_SECRET_ACCESS_KEY") else {
        common::skip(
            test,
            "no AWS_SECRET_ACCESS_KEY (source `scripts/garage.sh env`)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::write(
        &dir.path().join("v.img"),
        &common::random_bytes(8, 256 * 1024),
    );
    let prefix = format!("secret-test-{}", std::process::id());
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        format!("store: s3://{bucket}/{prefix}\ns3: {{ endpoint: {endpoint}, region: garage, allow_http: true }}\n"),
    )
    .unwrap();
    let mut all = String::new();
    for args in [
        vec!["create", "s", "--source", "v.img", "--block-size", "64KiB"],
        vec!["list"],
        vec!["verify", "s"],
        vec!["inspect", "nope"],
        vec!["delete", "s"],
        vec!["gc", "--grace", "0s"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_snapahead"))
            .args(&args)
            .current_dir(dir.path())
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        all += &text(&o);
    }
    assert!(
        all.contains("created s"),
        "{}",
        &all[all.len().saturating_sub(2000)..]
    );
    assert!(
        all.contains(" TRACE ") && all.contains(" DEBUG "),
        "trace logging did not happen"
    );
    assert!(!all.contains(&secret), "the secret appears in the logs");
}

/// S3 credentials from an AWS CLI profile: with no AWS_* keys in the
/// environment, AWS_PROFILE and AWS_SHARED_CREDENTIALS_FILE lead to Garage's
/// key, and a profile that does not exist is named in the error.
#[test]
fn s3_credentials_come_from_an_aws_profile() {
    let test = "s3_credentials_come_from_an_aws_profile";
    let Some((endpoint, bucket)) = common::s3_server(test) else {
        return;
    };
    let (Ok(key), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        common::skip(
            test,
            "no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (source `scripts/garage.sh env`)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::write(
        &dir.path().join("v.img"),
        &common::random_bytes(9, 256 * 1024),
    );
    std::fs::write(
        dir.path().join("creds"),
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[garage]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config"),
        "[profile garage]\nregion = garage\n",
    )
    .unwrap();
    let prefix = format!("profile-test-{}", std::process::id());
    // No region in the config: it comes from the profile.
    std::fs::write(
        dir.path().join("snapshots.yaml"),
        format!("store: s3://{bucket}/{prefix}\ns3: {{ endpoint: {endpoint}, allow_http: true, max_retries: 1, retry_timeout: 5s }}\n"),
    )
    .unwrap();
    let run = |args: &[&str], profile: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_snapahead"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_PROFILE", profile)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("creds"))
            .env("AWS_CONFIG_FILE", dir.path().join("config"))
            // Should anything fall through to instance metadata, it stays
            // on loopback.
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1")
            .output()
            .unwrap();
        (o.status.success(), text(&o))
    };
    let (ok, t) = run(
        &["create", "s", "--source", "v.img", "--block-size", "64KiB"],
        "garage",
    );
    assert!(ok, "{t}");
    let (ok, t) = run(&["list"], "garage");
    assert!(ok && t.contains("s "), "{t}");
    let (ok, t) = run(&["list"], "missing");
    assert!(!ok && t.contains("AWS_PROFILE=missing"), "{t}");
    // The default profile's wrong key is refused by the server.
    let (ok, t) = run(&["list"], "");
    assert!(!ok, "the wrong default key was accepted: {t}");
    let (ok, _) = run(&["delete", "s"], "garage");
    assert!(ok);
}
