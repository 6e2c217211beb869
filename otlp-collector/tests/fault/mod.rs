//! The in-repository fault harness (issue 11): the real collector binary as
//! a child process that can be `kill -9`ed, stopped with SIGTERM or starved
//! of its database or disk ([`proc`]); concurrent senders of official-shaped
//! OTLP exports over HTTP/protobuf and gRPC that record every acknowledged
//! request ([`load`]); and the exactly-once check that reads everything
//! acknowledged back through the store API ([`verify`]).

#![allow(dead_code)]

pub mod cpu;
pub mod load;
pub mod proc;
pub mod verify;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A small random number generator for the moments faults are injected
/// (xorshift; seeded from `FERROTRACE_FAULT_SEED` or at random, and the seed
/// is printed so a failing run can be repeated).
pub struct Rng(u64);

impl Rng {
    /// Seeded from `FERROTRACE_FAULT_SEED`, or at random.
    pub fn from_env() -> Rng {
        let seed = std::env::var("FERROTRACE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let mut h = RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                h.finish()
            })
            | 1;
        eprintln!("fault seed {seed} (repeat with FERROTRACE_FAULT_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration uniformly drawn in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// A number from the environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// GET `http://addr{path}` with a `timeout`: the status, the body and how
/// long it took, or `None` when nothing answered in time.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<(u16, String, Duration)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let start = Instant::now();
    let answer = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
    .ok()??;
    Some((answer.0, answer.1, start.elapsed()))
}

/// Sum of a metric's series (all label sets, or the one spelled out in
/// `series`) in the collector's `/metrics`; `None` when it did not answer.
pub async fn metric(query: SocketAddr, series: &str) -> Option<u64> {
    let (_, text, _) = get(query, "/metrics", Duration::from_secs(5)).await?;
    Some(
        text.lines()
            .filter(|l| {
                l.starts_with(series)
                    && matches!(l.as_bytes().get(series.len()), Some(b' ') | Some(b'{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum(),
    )
}

/// The value of one series (spelled out with its labels) in the
/// collector's `/metrics` as a float; `None` when it did not answer or the
/// series is missing.
pub async fn metric_f64(query: SocketAddr, series: &str) -> Option<f64> {
    let (_, text, _) = get(query, "/metrics", Duration::from_secs(5)).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Percentile `p` (0..=100) of `xs` (sorted here); zero when empty.
pub fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    xs.sort();
    let i = ((xs.len() - 1) as f64 * p / 100.0).round() as usize;
    xs[i]
}
