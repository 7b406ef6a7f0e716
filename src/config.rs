//! `snapshots.yaml`: where the store is, how to reach it, where the cache
//! lives, and which volumes are snapshotted under which names.
//!
//! The file is parsed strictly (unknown keys, wrong types, bad sizes, invalid
//! or duplicate names are errors) and every error names the file, line and
//! column, because a typo in a storage tool's config silently falling back to
//! a default is how data ends up in the wrong place. Relative paths in the
//! file (`file://` stores, sources, the cache dir) resolve against the
//! directory holding the file, so the config means the same thing from any
//! working directory.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use bytesize::ByteSize;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::format::{validate_block_size, MAX_GROUP_SIZE};
use crate::name::SnapshotName;
pub use crate::store::S3Config;

/// The default config file, looked up in the working directory.
pub const DEFAULT_CONFIG: &str = "snapshots.yaml";
/// The embedded default store: a directory beside the config, no server.
pub const DEFAULT_STORE: &str = "file://./.snapahead/store";
pub const DEFAULT_CACHE_DIR: &str = "./.snapahead/cache";
/// 8 GiB: room for the working set of a typical boot or database warm-up.
pub const DEFAULT_CACHE_SIZE: u64 = 8 << 30;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    dir: Option<PathBuf>,
    size: Option<ByteSize>,
    memory: Option<ByteSize>,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    /// Bound of the disk tier.
    pub size: u64,
    /// Bound of the memory tier.
    pub memory: u64,
}

/// A validated block size (power of two, 64 KiB–4 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize(pub u32);

impl<'de> Deserialize<'de> for BlockSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = ByteSize::deserialize(d)?;
        validate_block_size(b.as_u64())
            .map(BlockSize)
            .map_err(de::Error::custom)
    }
}

impl std::str::FromStr for BlockSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b: ByteSize = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        validate_block_size(b.as_u64()).map(BlockSize)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub name: SnapshotName,
    pub source: Option<PathBuf>,
    pub block_size: Option<BlockSize>,
    pub group_size: Option<u32>,
}

/// The `snapshots:` list; duplicates are refused while parsing so that the
/// error carries the position.
#[derive(Debug, Clone, Default)]
struct SnapshotList(Vec<SnapshotConfig>);

impl<'de> Deserialize<'de> for SnapshotList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SnapshotList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of snapshots")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SnapshotList, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<SnapshotConfig>()? {
                    if !seen.insert(s.name.clone()) {
                        return Err(de::Error::custom(format!(
                            "duplicate snapshot name {:?}",
                            s.name.as_str()
                        )));
                    }
                    if let Some(g) = s.group_size {
                        if g == 0 || g > MAX_GROUP_SIZE {
                            return Err(de::Error::custom(format!(
                                "snapshot {:?}: group_size {g} not in 1..={MAX_GROUP_SIZE}",
                                s.name.as_str()
                            )));
                        }
                    }
                    out.push(s);
                }
                Ok(SnapshotList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    store: Option<String>,
    #[serde(default)]
    s3: S3Config,
    cache: Option<CacheFile>,
    #[serde(default)]
    snapshots: SnapshotList,
    #[serde(default)]
    prefetch: crate::prefetch::PrefetchConfig,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Where relative paths resolve.
    pub base_dir: PathBuf,
    pub store: String,
    pub s3: S3Config,
    pub cache: CacheConfig,
    pub snapshots: Vec<SnapshotConfig>,
    pub prefetch: crate::prefetch::PrefetchConfig,
}

impl Config {
    /// Loads `path`. When the file is missing and `required` is false
    /// (the default path was used), the defaults apply.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::defaults(PathBuf::from(".")));
            }
            Err(e) => return Err(anyhow!("cannot read config {}: {e}", path.display())),
        };
        Config::parse(&text, path)
    }

    /// The configuration when there is no file.
    pub fn defaults(base_dir: PathBuf) -> Config {
        Config {
            path: None,
            store: DEFAULT_STORE.into(),
            s3: S3Config::default(),
            cache: CacheConfig {
                dir: base_dir.join(DEFAULT_CACHE_DIR),
                size: DEFAULT_CACHE_SIZE,
                memory: crate::cache::DEFAULT_MEMORY_BYTES,
            },
            base_dir,
            snapshots: Vec::new(),
            prefetch: crate::prefetch::PrefetchConfig::default(),
        }
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        let file: ConfigFile = if text.trim().is_empty() {
            serde_yaml_ng::from_str("{}")
        } else {
            serde_yaml_ng::from_str(text)
        }
        .map_err(|e| match e.location() {
            Some(l) => anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
            None => anyhow!("{}: {e}", path.display()),
        })?;
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut cfg = Config::defaults(base_dir.clone());
        cfg.path = Some(path.to_path_buf());
        if let Some(s) = file.store {
            cfg.store = s;
        }
        file.s3
            .validate()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        cfg.s3 = file.s3;
        if let Some(c) = file.cache {
            if let Some(d) = c.dir {
                cfg.cache.dir = base_dir.join(d);
            }
            if let Some(s) = c.size {
                cfg.cache.size = s.as_u64();
            }
            if let Some(m) = c.memory {
                cfg.cache.memory = m.as_u64();
            }
        }
        cfg.snapshots = file.snapshots.0;
        let t = &file.prefetch.threshold;
        if !(0.0..=1.0).contains(&t.min)
            || !(0.0..=1.0).contains(&t.max)
            || t.min > t.max
            || t.step <= 0.0
        {
            anyhow::bail!(
                "{}: prefetch.threshold needs 0 <= min <= max <= 1 and step > 0 (got min {}, max {}, step {})",
                path.display(),
                t.min,
                t.max,
                t.step
            );
        }
        let p = &file.prefetch;
        if p.concurrency == 0 || p.demand_slots == 0 {
            anyhow::bail!(
                "{}: prefetch.concurrency and prefetch.demand_slots must be at least 1 (got {} and {}; disable prefetch with `enabled: false`)",
                path.display(),
                p.concurrency,
                p.demand_slots
            );
        }
        cfg.prefetch = file.prefetch;
        for s in &mut cfg.snapshots {
            if let Some(src) = &s.source {
                s.source = Some(base_dir.join(src));
            }
        }
        Ok(cfg)
    }

    pub fn snapshot(&self, name: &SnapshotName) -> Option<&SnapshotConfig> {
        self.snapshots.iter().find(|s| &s.name == name)
    }

    /// Opens the configured store (or `override_url`, relative to the
    /// working directory).
    pub fn open_store(&self, override_url: Option<&str>) -> anyhow::Result<crate::store::Store> {
        match override_url {
            Some(u) => crate::store::Store::open(u, &self.s3, Path::new(".")),
            None => crate::store::Store::open(&self.store, &self.s3, &self.base_dir),
        }
        .with_context(|| match &self.path {
            Some(p) => format!("store configured in {}", p.display()),
            None => "store".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(t: &str) -> anyhow::Result<Config> {
        Config::parse(t, Path::new("/etc/snap/snapshots.yaml"))
    }

    #[test]
    fn full_example_parses_and_resolves_paths() {
        let c = parse(
            "store: file://./.snapahead/store\n\
             s3: { endpoint: http://127.0.0.1:3900, region: garage, allow_http: true, request_timeout: 5s }\n\
             cache: { dir: ./.snapahead/cache, size: 8GiB }\n\
             snapshots:\n  - { name: demo, source: ./demo.img, block_size: 512KiB }\n",
        )
        .unwrap();
        assert_eq!(c.cache.size, 8 << 30);
        assert_eq!(c.s3.request_timeout, Duration::from_secs(5));
        assert_eq!(c.snapshots[0].block_size, Some(BlockSize(512 << 10)));
        assert_eq!(
            c.snapshots[0].source.as_deref(),
            Some(Path::new("/etc/snap/./demo.img"))
        );
        assert_eq!(c.base_dir, Path::new("/etc/snap"));
    }

    fn err(t: &str) -> String {
        format!("{:#}", parse(t).unwrap_err())
    }

    /// `t` is refused with a message holding every one of `needles`.
    fn err_has(t: &str, needles: &[&str]) {
        let e = err(t);
        for n in needles {
            assert!(e.contains(n), "{n:?} not in: {e}");
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        err_has(
            "store: file://x\nbogus: 1\n",
            &["snapshots.yaml:2:", "bogus"],
        );
        err_has(
            "snapshots:\n  - { name: a, block_size: 3KiB }\n",
            &["snapshots.yaml:2:", "block size"],
        );
        err_has(
            "snapshots:\n  - { name: a }\n  - { name: b }\n  - { name: a }\n",
            &["duplicate", "snapshots.yaml:"],
        );
        err_has(
            "snapshots:\n  - { name: ../etc }\n",
            &["snapshots.yaml:2:", "starts with '.'"],
        );
        err_has("snapshots:\n  - { name: a/b }\n", &["'/'"]);
        err_has("cache: { size: lots }\n", &["snapshots.yaml:1:"]);
        err_has("s3: { allow_http: maybe }\n", &["snapshots.yaml:1:"]);
        err_has(
            "snapshots: [ { name: a, group_size: 0 } ]\n",
            &["group_size"],
        );
        err_has("store: [1\n", &["snapshots.yaml:"]);
    }

    #[test]
    fn prefetch_section_parses_and_is_checked() {
        let c = parse(
            "prefetch:\n  windows: { random: 500ms, sequential: 30s }\n  concurrency: 8\n  demand_slots: 24\n",
        )
        .unwrap();
        let p = &c.prefetch;
        assert_eq!(p.windows.random, Duration::from_millis(500));
        assert_eq!(p.windows.mixed, Duration::from_secs(2), "default kept");
        assert_eq!(p.windows.sequential, Duration::from_secs(30));
        assert_eq!(
            (p.concurrency, p.demand_slots, p.fetch_slots()),
            (8, 24, 32)
        );
        let d = parse("").unwrap().prefetch;
        assert_eq!(d.fetch_slots(), crate::fetch::DEFAULT_FETCH_SLOTS);
        err_has(
            "prefetch: { demand_slots: 0 }\n",
            &["demand_slots", "snapshots.yaml"],
        );
        err_has(
            "prefetch: { windows: { random: soon } }\n",
            &["snapshots.yaml:1:", "duration"],
        );
        err_has(
            "prefetch: { windows: { slow: 1s } }\n",
            &["snapshots.yaml:1:", "slow"],
        );
        err_has(
            "prefetch: { threshold: { min: 0.9, max: 0.5 } }\n",
            &["prefetch.threshold"],
        );
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.store, DEFAULT_STORE);
        assert!(c.snapshots.is_empty());
    }
}
