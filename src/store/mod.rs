//! The object store every snapshot lives in.
//!
//! A thin wrapper over the `object_store` crate that fixes three things the
//! rest of the code should not think about:
//! - **where**: `file://PATH` (the embedded default; relative paths resolve
//!   against a base directory, the config file's), `s3://BUCKET[/PREFIX]`
//!   (AWS S3 or any compatible server, path-style requests when an
//!   endpoint is set), `memory://` (tests);
//! - **who**: credentials as the AWS CLI finds them, in this order: the
//!   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`)
//!   environment; web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`,
//!   `AWS_ROLE_ARN`); the profile `AWS_PROFILE` (or `default`) of the
//!   shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!   `~/.aws/credentials`) and config file (`AWS_CONFIG_FILE`, else
//!   `~/.aws/config`); ECS container credentials; the EC2 instance
//!   metadata service. The region: `s3.region`, else `AWS_REGION` /
//!   `AWS_DEFAULT_REGION`, else the profile's. (object_store does the
//!   environment, web identity, container and instance sources; the
//!   profile files are read in `profile.rs`, [`aws_profile`].)
//! - **how long**: S3 requests get a per-request timeout and retries with
//!   exponential backoff bounded in total time (object_store's own
//!   `RetryConfig`: transient errors and 5xx are retried, 4xx such as a bad
//!   credential are not, so a wrong secret fails at once with a clear message);
//! - **what an error says**: every error names the operation, the key and the
//!   store (never a credential).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use serde::Deserialize;

mod profile;
pub use profile::{aws_profile, AwsProfile};

/// How S3 requests are bounded. Defaults suit an in-region S3 or a local
/// server: a request that has not answered in 30 s is dead; retries stop
/// after 60 s in all, so a read fails with EIO instead of hanging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    #[serde(deserialize_with = "crate::units::duration")]
    pub request_timeout: Duration,
    #[serde(deserialize_with = "crate::units::duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "crate::units::duration")]
    pub retry_timeout: Duration,
    pub max_retries: usize,
    /// Server-side encryption asked for on every upload: `AES256` (SSE-S3),
    /// `aws:kms` or `aws:kms:dsse` (SSE-KMS; with `kms_key_id`, or the
    /// bucket's default key without). Unset: the bucket's default applies.
    pub sse: Option<String>,
    /// The KMS key for `sse: aws:kms` / `aws:kms:dsse`.
    pub kms_key_id: Option<String>,
}

/// The `s3.sse` values (the `x-amz-server-side-encryption` header).
pub const SSE_VALUES: [&str; 3] = ["AES256", "aws:kms", "aws:kms:dsse"];

impl S3Config {
    /// Checks the encryption settings; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(sse) = &self.sse {
            if !SSE_VALUES.contains(&sse.as_str()) {
                return Err(format!(
                    "s3.sse {sse:?} is not one of {}",
                    SSE_VALUES.join(", ")
                ));
            }
        }
        if self.kms_key_id.is_some()
            && !self
                .sse
                .as_deref()
                .is_some_and(|s| s.starts_with("aws:kms"))
        {
            return Err("s3.kms_key_id needs s3.sse: aws:kms (or aws:kms:dsse)".into());
        }
        Ok(())
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: None,
            allow_http: false,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(60),
            max_retries: 5,
            sse: None,
            kms_key_id: None,
        }
    }
}

/// A store operation failed. Its message names the operation, the key and
/// the store, then the root cause once (object_store's own errors repeat
/// their whole chain), with a hint when the store refused our credentials.
#[derive(Debug)]
pub struct StoreError {
    pub op: &'static str,
    pub key: String,
    pub store: String,
    pub source: Box<object_store::Error>,
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(*self.source, object_store::Error::NotFound { .. })
    }

    /// Whether the store refused the request's credentials or permissions.
    pub fn is_auth(&self) -> bool {
        let msg = self.root_cause();
        matches!(
            *self.source,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || msg.contains("403 Forbidden")
            || msg.contains("InvalidAccessKeyId")
            || msg.contains("SignatureDoesNotMatch")
    }

    fn root_cause(&self) -> String {
        let mut e: &dyn std::error::Error = &*self.source;
        while let Some(next) = e.source() {
            e = next;
        }
        e.to_string()
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} in store {}: {}",
            self.op,
            self.key,
            self.store,
            self.root_cause()
        )?;
        if self.is_auth() {
            write!(
                f,
                " (access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch (gc's grace period needs only this).
    pub last_modified_ms: i64,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Human-readable location, without credentials.
    url: String,
    /// Added to every GET (see [`Store::with_latency`]).
    latency: Option<std::time::Duration>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Store {
    /// Opens the store at `url`. Relative `file://` paths resolve against
    /// `base_dir`; the directory is created when missing.
    pub fn open(url: &str, s3: &S3Config, base_dir: &Path) -> anyhow::Result<Store> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                anyhow::bail!("store URL {url:?} has no path (try file://./.snapahead/store)");
            }
            let path = base_dir.join(path);
            std::fs::create_dir_all(&path).map_err(|e| {
                anyhow::anyhow!("cannot create store directory {}: {e}", path.display())
            })?;
            let path = path
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("store directory {}: {e}", path.display()))?;
            let fs = LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| anyhow::anyhow!("store directory {}: {e}", path.display()))?;
            return Ok(Store {
                inner: Arc::new(fs),
                url: format!("file://{}", path.display()),
                latency: None,
            });
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Store::memory());
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("store URL {url:?} has no bucket (expected s3://BUCKET[/PREFIX])");
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(5),
                        base: 2.0,
                    },
                    max_retries: s3.max_retries,
                    retry_timeout: s3.retry_timeout,
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(s3.request_timeout)
                        .with_connect_timeout(s3.connect_timeout)
                        .with_allow_http(s3.allow_http),
                );
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let profile = aws_profile(&env)?;
            if let Some(p) = &profile {
                // Environment keys and web identity come first.
                let ahead = env("AWS_ACCESS_KEY_ID").is_some()
                    || env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some();
                if let (Some((id, secret, token)), false) = (&p.keys, ahead) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(t) = token {
                        b = b.with_token(t);
                    }
                    log::debug!("S3 credentials from AWS profile {}", p.name);
                }
                let region_set = s3.region.is_some()
                    || env("AWS_REGION").is_some()
                    || env("AWS_DEFAULT_REGION").is_some();
                if let (Some(r), false) = (&p.region, region_set) {
                    b = b.with_region(r);
                }
            }
            s3.validate()
                .map_err(|e| anyhow::anyhow!("store {url}: {e}"))?;
            for (key, value) in [
                ("aws_server_side_encryption", &s3.sse),
                ("aws_sse_kms_key_id", &s3.kms_key_id),
            ] {
                if let Some(v) = value {
                    let k: object_store::aws::AmazonS3ConfigKey = key
                        .parse()
                        .map_err(|e| anyhow::anyhow!("store {url}: {key}: {e}"))?;
                    b = b.with_config(k, v);
                }
            }
            if let Some(endpoint) = &s3.endpoint {
                // Local servers (Garage, MinIO) want path-style requests.
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            let s3store = b
                .build()
                .map_err(|e| anyhow::anyhow!("cannot configure store {url}: {e}"))?;
            let inner: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(s3store)
            } else {
                Arc::new(PrefixStore::new(s3store, prefix.trim_matches('/')))
            };
            let shown = match &s3.endpoint {
                Some(e) => format!("{url} (endpoint {e})"),
                None => url.to_string(),
            };
            return Ok(Store {
                inner,
                url: shown,
                latency: None,
            });
        }
        anyhow::bail!("store URL {url:?} is not supported: use file://PATH, s3://BUCKET[/PREFIX] or memory://")
    }

    /// A fresh in-memory store (tests, experiments).
    pub fn memory() -> Store {
        Store {
            inner: Arc::new(InMemory::new()),
            url: "memory://".into(),
            latency: None,
        }
    }

    /// The same store with `latency` added to every GET: benchmarks of
    /// prefetching, a local store standing in for a remote one's first-byte
    /// latency. (object_store's `ThrottledStore` cannot wrap `file://`: it
    /// panics on file payloads.)
    pub fn with_latency(self, latency: std::time::Duration) -> Store {
        Store {
            url: format!("{} (+{} ms per GET)", self.url, latency.as_millis()),
            latency: Some(latency),
            ..self
        }
    }

    /// Wraps any object store (e.g. a throttled one in tests).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, url: impl Into<String>) -> Store {
        Store {
            inner,
            url: url.into(),
            latency: None,
        }
    }

    /// Whether the store is this machine's own memory or disk (file://,
    /// memory:// without added latency): no round trip to hide.
    pub fn is_local(&self) -> bool {
        self.latency.is_none() && (self.url.starts_with("file://") || self.url == "memory://")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        StoreError {
            op,
            key: key.to_string(),
            store: self.url.clone(),
            source: Box::new(source),
        }
    }

    fn path(&self, op: &'static str, key: &str) -> Result<ObjPath, StoreError> {
        ObjPath::parse(key).map_err(|e| self.err(op, key, e.into()))
    }

    async fn delay(&self) {
        if let Some(l) = self.latency {
            tokio::time::sleep(l).await;
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let p = self.path("get", key)?;
        self.delay().await;
        let r = self
            .inner
            .get(&p)
            .await
            .map_err(|e| self.err("get", key, e))?;
        r.bytes().await.map_err(|e| self.err("get", key, e))
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let p = self.path("get range of", key)?;
        self.delay().await;
        let b = self
            .inner
            .get_range(&p, range.clone())
            .await
            .map_err(|e| self.err("get range of", key, e))?;
        if b.len() as u64 != range.end - range.start {
            return Err(self.err(
                "get range of",
                key,
                object_store::Error::Generic {
                    store: "snapahead",
                    source: format!(
                        "asked for bytes {}..{}, got {} bytes (object truncated?)",
                        range.start,
                        range.end,
                        b.len()
                    )
                    .into(),
                },
            ));
        }
        Ok(b)
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let p = self.path("put", key)?;
        self.inner
            .put(&p, PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let p = self.path("head", key)?;
        match self.inner.head(&p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("head", key, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let p = self.path("delete", key)?;
        match self.inner.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    /// Every object under `prefix` (a folder, without trailing slash).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let p = self.path("list", prefix)?;
        let metas: Vec<ObjectMeta> = self
            .inner
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| self.err("list", prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                key: m.location.to_string(),
                size: m.size,
                last_modified_ms: m.last_modified.timestamp_millis(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trip_and_errors_name_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open("file://st", &S3Config::default(), dir.path()).unwrap();
        assert!(dir.path().join("st").is_dir());
        s.put("data/x", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(&s.get_range("data/x", 6..11).await.unwrap()[..], b"world");
        assert!(s.exists("data/x").await.unwrap());
        assert_eq!(s.list("data").await.unwrap().len(), 1);
        let e = s.get("data/missing").await.unwrap_err();
        assert!(e.is_not_found());
        let msg = e.to_string();
        assert!(
            msg.contains("data/missing") && msg.contains("file://"),
            "{msg}"
        );
        let e = s.get_range("data/x", 6..50).await.unwrap_err().to_string();
        assert!(e.contains("data/x"), "{e}");
        s.delete("data/x").await.unwrap();
        s.delete("data/x").await.unwrap();
        assert!(!s.exists("data/x").await.unwrap());
    }

    #[test]
    fn bad_urls_are_refused() {
        let d = Path::new("/tmp");
        for u in ["ftp://x", "s3://", "file://", "bucket"] {
            assert!(Store::open(u, &S3Config::default(), d).is_err(), "{u}");
        }
    }
}
