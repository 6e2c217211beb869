//! `[cold]` configuration: where the cold tier lives, how long each tier
//! keeps data, which traces go cold, and the limits of a cold read.

use serde::Deserialize;

/// Which traces the tiering task copies to the cold tier (the rest are
/// only deleted from the hot store when they age past `hot_days`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColdPolicy {
    /// Every trace.
    #[default]
    All,
    /// Traces with at least one span with status `Error`.
    Errors,
    /// Traces with at least one span lasting `slow_threshold_ms` or more.
    Slow,
    /// Traces with an error or a slow span.
    ErrorsOrSlow,
    /// A fraction (`sample_fraction`) of traces, chosen by trace id so that
    /// every span of a trace gets the same decision in every run.
    Sampled,
}

/// `[cold]`: the cold tier (`storage::cold`). Off unless `dir` or `bucket` is set.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColdConfig {
    /// A local directory (may be a mounted network file system) for the cold files.
    pub dir: Option<std::path::PathBuf>,
    /// An S3 bucket for the cold files (instead of `dir`). Credentials and
    /// region come from the standard `AWS_*` variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`).
    pub bucket: Option<String>,
    /// S3-compatible endpoint (`http://127.0.0.1:9000` for a local server);
    /// default: `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Key prefix inside the bucket (or sub-directory of `dir`).
    pub prefix: String,
    /// Allow a plain-http endpoint (a local test server); off by default.
    pub allow_http: bool,
    /// Days a span stays in the hot store before it is moved (default 7).
    pub hot_days: u64,
    /// Age in days after which a span is deleted from the cold tier (default
    /// 90, counted from the span's start; must exceed `hot_days`).
    pub cold_days: u64,
    /// Which traces go cold (default `all`).
    pub policy: ColdPolicy,
    /// `slow`: a span this long (ms) makes its trace slow (default 1000).
    pub slow_threshold_ms: u64,
    /// `sampled`: the fraction of traces kept, 0..=1 (default 0.1).
    pub sample_fraction: f64,
    /// How often the tiering task runs, in seconds (default 300).
    pub interval_secs: u64,
    /// Most spans one cold file holds (a run writes several files per hour
    /// when more spans age out; default 100,000: a run holds that many in memory).
    pub max_spans_per_file: usize,
    /// Merge each hour's small cold files (under half of
    /// `max_spans_per_file` spans) into fewer, larger ones after each
    /// tiering run (default on; `storage::cold::compact`).
    pub compaction: bool,
    /// Most small files one compaction pass merges (default 1,024): the
    /// rest wait for the next run. A merged file holds at most
    /// `max_spans_per_file` spans, so that is what one merge holds in memory.
    pub compaction_max_files: usize,
    /// Most files one cold query may open (default 256): a lookup by id
    /// opens only the files whose trace-id index may hold it; a search opens
    /// every file overlapping its window.
    pub max_files_per_query: usize,
    /// Most bytes one cold query may read (default 1 GiB).
    pub max_bytes_per_query: u64,
    /// File indexes (footer and trace-id bloom filters) kept in memory (default 16,384 files).
    pub index_cache_files: usize,
    /// S3: most time one request may take, connecting to the last byte of
    /// the answer, in ms (default 30,000); a request past it fails and is
    /// retried. A local directory has no timeout (a hung network mount
    /// hangs the reads that touch it).
    pub request_timeout_ms: u64,
    /// S3: most time to establish a connection, in ms (default 5,000).
    pub connect_timeout_ms: u64,
    /// S3: retries of a failed request (connection errors, timeouts of
    /// reads, 5xx and throttling answers), with exponential backoff from
    /// 100 ms (default 3; 0 = none).
    pub max_retries: usize,
    /// S3: no retry starts later than this after the first attempt, in ms
    /// (default 60,000): with `request_timeout_ms`, it bounds how long one
    /// cold read or file write can take.
    pub retry_timeout_ms: u64,
}

impl Default for ColdConfig {
    fn default() -> Self {
        ColdConfig {
            dir: None,
            bucket: None,
            endpoint: None,
            region: None,
            prefix: String::new(),
            allow_http: false,
            hot_days: 7,
            cold_days: 90,
            policy: ColdPolicy::All,
            slow_threshold_ms: 1000,
            sample_fraction: 0.1,
            interval_secs: 300,
            max_spans_per_file: 100_000,
            compaction: true,
            compaction_max_files: 1_024,
            max_files_per_query: 256,
            max_bytes_per_query: 1 << 30,
            index_cache_files: 16_384,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            max_retries: 3,
            retry_timeout_ms: 60_000,
        }
    }
}

/// Most retries `cold.max_retries` accepts.
pub const MAX_RETRIES: usize = 20;

/// Nanoseconds in a day.
pub const DAY_NS: u64 = 86_400 * 1_000_000_000;

impl ColdConfig {
    /// True when a location is configured.
    pub fn enabled(&self) -> bool {
        self.dir.is_some() || self.bucket.is_some()
    }

    /// Checks the section; the error names the key and what is expected.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.dir.is_some() && self.bucket.is_some() {
            return Err("cold.dir and cold.bucket are both set: choose one location".into());
        }
        if self.bucket.as_deref() == Some("") {
            return Err("cold.bucket is empty".into());
        }
        if self.hot_days == 0 {
            return Err("cold.hot_days must be at least 1".into());
        }
        if self.cold_days <= self.hot_days {
            return Err(format!(
                "cold.cold_days ({}) must exceed cold.hot_days ({}): spans stay hot for hot_days, \
                 then cold until cold_days",
                self.cold_days, self.hot_days
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_fraction) || self.sample_fraction.is_nan() {
            return Err(format!(
                "cold.sample_fraction = {} must be between 0 and 1",
                self.sample_fraction
            ));
        }
        if self.max_spans_per_file == 0
            || self.max_files_per_query == 0
            || self.compaction_max_files == 0
            || self.max_bytes_per_query == 0
            || self.index_cache_files == 0
            || self.interval_secs == 0
            || self.request_timeout_ms == 0
            || self.connect_timeout_ms == 0
            || self.retry_timeout_ms == 0
        {
            return Err("cold.max_spans_per_file, cold.max_files_per_query, \
                 cold.compaction_max_files, cold.max_bytes_per_query, cold.index_cache_files, cold.interval_secs, \
                 cold.request_timeout_ms, cold.connect_timeout_ms and cold.retry_timeout_ms \
                 must be above 0"
                .into());
        }
        if self.max_retries > MAX_RETRIES {
            return Err(format!(
                "cold.max_retries = {} is above {MAX_RETRIES}: bound the time a cold read \
                 can take with cold.retry_timeout_ms instead",
                self.max_retries
            ));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "cold.endpoint = {e:?} must start with http:// or https://"
                ));
            }
            if e.starts_with("http://") && !self.allow_http {
                return Err(format!(
                    "cold.endpoint = {e:?} is plain http: set cold.allow_http = true to allow it"
                ));
            }
        }
        if self.prefix.split('/').any(|s| s == "..") {
            return Err("cold.prefix must not contain `..`".into());
        }
        Ok(())
    }

    /// Spans that started before this (ns) leave the hot store at `now_ns`.
    pub fn hot_cutoff(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.hot_days.saturating_mul(DAY_NS))
    }

    /// Cold files whose spans all started before this (ns) are deleted at `now_ns`.
    pub fn cold_cutoff(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.cold_days.saturating_mul(DAY_NS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> ColdConfig {
        ColdConfig {
            dir: Some("/tmp/x".into()),
            ..ColdConfig::default()
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert!(ColdConfig::default().validate().is_ok());
        assert!(on().validate().is_ok());
        let cases = [
            (
                ColdConfig {
                    bucket: Some("b".into()),
                    ..on()
                },
                "choose one",
            ),
            (
                ColdConfig {
                    cold_days: 7,
                    ..on()
                },
                "cold.cold_days",
            ),
            (
                ColdConfig {
                    sample_fraction: 1.5,
                    ..on()
                },
                "sample_fraction",
            ),
            (
                ColdConfig {
                    dir: None,
                    bucket: Some("b".into()),
                    endpoint: Some("http://127.0.0.1:1".into()),
                    ..on()
                },
                "allow_http",
            ),
            (
                ColdConfig {
                    max_files_per_query: 0,
                    ..on()
                },
                "cold.max_files_per_query",
            ),
            (
                ColdConfig {
                    request_timeout_ms: 0,
                    ..on()
                },
                "cold.request_timeout_ms",
            ),
            (
                ColdConfig {
                    max_retries: 1_000,
                    ..on()
                },
                "cold.max_retries",
            ),
        ];
        for (c, key) in cases {
            let e = c.validate().expect_err(key);
            assert!(e.contains(key), "{e} should name {key}");
        }
    }

    #[test]
    fn parses_policy_and_rejects_unknown_keys() {
        let c: ColdConfig =
            toml::from_str("dir = \"/d\"\npolicy = \"errors\"\nhot_days = 1\n").expect("parse");
        assert_eq!(c.policy, ColdPolicy::Errors);
        assert_eq!(c.hot_days, 1);
        assert!(toml::from_str::<ColdConfig>("bogus = 1").is_err());
        assert!(toml::from_str::<ColdConfig>("policy = \"some\"").is_err());
    }
}
