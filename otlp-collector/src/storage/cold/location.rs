//! Where cold files live (a local directory or an S3-compatible bucket,
//! both through `object_store`), and how a file's name carries its time
//! range so that a query picks its files from a listing, without opening any.
//!
//! Layout: `<prefix>/spans/<YYYY-MM-DD>/<HH>/<min>-<max>-<count>-<nonce>.parquet`,
//! where `min` and `max` are the first and last span start (ns, 20 digits)
//! and `count` the number of spans. Files are immutable: written once
//! (under a unique name), read, and deleted whole by retention.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, RetryConfig};

use super::config::ColdConfig;
use crate::storage::sink_common::civil_from_days;
use crate::storage::StorageError;

/// One cold file as the catalog knows it from its name and listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Object path.
    pub path: Path,
    /// Earliest span start in the file (ns).
    pub min_ns: u64,
    /// Latest span start in the file (ns).
    pub max_ns: u64,
    /// Spans in the file.
    pub spans: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Opens the configured location.
pub fn open(config: &ColdConfig) -> Result<(Arc<dyn ObjectStore>, Path), StorageError> {
    let prefix = Path::from(config.prefix.trim_matches('/'));
    if let Some(dir) = &config.dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Backend(format!("cold.dir {}: cannot create it: {e}", dir.display()))
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Backend(format!("cold.dir {}: {e}", dir.display())))?;
        return Ok((Arc::new(fs), prefix));
    }
    let bucket = config
        .bucket
        .as_deref()
        .ok_or_else(|| StorageError::Backend("the cold tier has no location".into()))?;
    // reqwest is built without a default TLS provider: use the ring one the
    // collector's listeners use (an error only means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(e) = &config.endpoint {
        b = b.with_endpoint(e.clone());
    }
    if let Some(r) = &config.region {
        b = b.with_region(r.clone());
    } else if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        b = b.with_region("us-east-1");
    }
    b = b.with_allow_http(config.allow_http);
    // Explicit bounds (not the library's defaults of 10 retries over up to
    // 3 minutes): a query waiting on the cold tier answers, or fails, in
    // about retry_timeout_ms + request_timeout_ms.
    let ms = |v: u64| format!("{v}ms");
    b = b
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            ms(config.request_timeout_ms),
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            ms(config.connect_timeout_ms),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: config.max_retries,
            retry_timeout: Duration::from_millis(config.retry_timeout_ms),
        });
    let s3 = b
        .build()
        .map_err(|e| StorageError::Backend(format!("cold.bucket {bucket}: {e}")))?;
    Ok((Arc::new(s3), prefix))
}

/// The directory of all span files under `prefix`.
pub fn spans_dir(prefix: &Path) -> Path {
    prefix.clone().join("spans")
}

/// The name of a new file holding `spans` spans starting in `[min_ns, max_ns]`.
pub fn file_path(prefix: &Path, min_ns: u64, max_ns: u64, spans: u64, nonce: u64) -> Path {
    let secs = min_ns / 1_000_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let hour = (secs % 86_400) / 3600;
    spans_dir(prefix)
        .join(format!("{y:04}-{m:02}-{d:02}"))
        .join(format!("{hour:02}"))
        .join(format!(
            "{min_ns:020}-{max_ns:020}-{spans}-{nonce:016x}.parquet"
        ))
}

/// Reads a file's time range and span count back from its name; `None` for
/// anything else found under the prefix (ignored, never deleted).
pub fn parse_name(path: &Path, size: u64) -> Option<FileEntry> {
    let name = path.filename()?.strip_suffix(".parquet")?;
    let mut parts = name.split('-');
    let min_ns = parts.next()?.parse().ok()?;
    let max_ns = parts.next()?.parse().ok()?;
    let spans = parts.next()?.parse().ok()?;
    let nonce = parts.next()?;
    if parts.next().is_some() || nonce.len() != 16 || min_ns > max_ns {
        return None;
    }
    Some(FileEntry {
        path: path.clone(),
        min_ns,
        max_ns,
        spans,
        size,
    })
}

/// One recorded merge: its output and inputs.
pub struct Manifest {
    pub path: Path,
    pub output: Path,
    pub inputs: Vec<Path>,
}

/// The directory of compaction manifests under `prefix` (`cold/compact.rs`).
pub fn manifests_dir(prefix: &Path) -> Path {
    prefix.clone().join("compactions")
}

/// The manifests under the cold tier's prefix (usually none). One that
/// cannot be parsed (not written by this code) is skipped, never deleted.
pub async fn manifests(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<Vec<Manifest>, StorageError> {
    use futures_util::StreamExt;
    let dir = manifests_dir(prefix);
    let mut listing = store.list(Some(&dir));
    let mut paths = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| manifest_err("listing", &dir, e))?;
        if meta.location.as_ref().ends_with(".manifest") {
            paths.push(meta.location);
        }
    }
    let mut out = Vec::new();
    for path in paths {
        let body = match store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| manifest_err("reading", &path, e))?,
            // Finished by its compactor since the listing.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(manifest_err("reading", &path, e)),
        };
        let text = String::from_utf8_lossy(&body);
        let mut lines = text.lines().filter(|l| !l.is_empty());
        let Some(output) = lines.next() else { continue };
        let inputs: Vec<Path> = lines.map(Path::from).collect();
        let output = Path::from(output);
        // Only cold span files are ever named (a damaged manifest must not
        // hide or delete anything else).
        let is_span_file = |p: &Path| parse_name(p, 0).is_some();
        if !is_span_file(&output) || inputs.is_empty() || !inputs.iter().all(is_span_file) {
            tracing::warn!(manifest = %path, "cold tier: unreadable compaction manifest ignored");
            continue;
        }
        out.push(Manifest {
            path,
            output,
            inputs,
        });
    }
    Ok(out)
}

fn manifest_err(what: &str, path: &Path, e: object_store::Error) -> StorageError {
    StorageError::Unavailable(format!("cold tier: {what} {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let p = Path::from("pre");
        let t = 1_700_000_000_123_456_789u64;
        let path = file_path(&p, t, t + 5, 42, 7);
        assert_eq!(
            path.as_ref(),
            "pre/spans/2023-11-14/22/01700000000123456789-01700000000123456794-42-0000000000000007.parquet"
        );
        let e = parse_name(&path, 99).expect("parse");
        assert_eq!((e.min_ns, e.max_ns, e.spans, e.size), (t, t + 5, 42, 99));
        for bad in [
            "x/readme.txt",
            "x/1-2-3.parquet",
            "x/2-1-3-0000000000000007.parquet",
            "x/a-2-3-0000000000000007.parquet",
            "x/1-2-3-0000000000000007-9.parquet",
        ] {
            assert!(parse_name(&Path::from(bad), 1).is_none(), "{bad}");
        }
    }
}
