//! The remote sampler's poller: its own thread with a current-thread tokio
//! runtime for the hyper client (the same client stack as the OTLP/HTTP
//! exporter), so it never enters the application's runtime and works from
//! plain threads too. Between requests it waits on the stop channel, so
//! dropping the last sampler handle ends it at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;

use super::compiled::Compiled;
use super::strategy::{parse_strategy, StrategyResponse};
use super::Shared;
use crate::trace::diagnostics::{self, Diagnostic};

pub(super) struct Poller {
    pub(super) shared: Arc<Shared>,
    pub(super) uri: Uri,
    pub(super) interval: Duration,
    pub(super) jitter: f64,
    pub(super) max_response_bytes: usize,
    pub(super) max_operations: usize,
    pub(super) timeout: Duration,
}

pub(super) fn start(p: Poller, stop: crossbeam_channel::Receiver<()>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ferrotrace-remote-sampler".into())
        .spawn(move || run(p, stop))
        .map(|_| ())
}

fn run(p: Poller, stop: crossbeam_channel::Receiver<()>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            fail(&p, format!("cannot start the poller's runtime: {e}"));
            return;
        }
    };
    let client = {
        let _guard = rt.enter();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(p.timeout.min(Duration::from_secs(5))));
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build::<_, Empty<Bytes>>(http)
    };
    let mut last = None;
    loop {
        match rt.block_on(fetch(&client, &p)) {
            Ok(body) => apply(&p, &body, &mut last),
            Err(e) => fail(&p, e),
        }
        let wait = jittered(p.interval, p.jitter);
        match stop.recv_timeout(wait) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            // The last sampler handle is gone (or a stop was sent).
            _ => return,
        }
    }
}

fn jittered(interval: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return interval;
    }
    let f = rand::rng().random_range(1.0 - jitter..=1.0 + jitter);
    interval.mul_f64(f)
}

async fn fetch(client: &Client<HttpConnector, Empty<Bytes>>, p: &Poller) -> Result<Bytes, String> {
    let request = Request::get(p.uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("ferrotrace/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), p.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    format!(
                        "the response is larger than {} bytes (raise the remote sampler's max response bytes if this is expected)",
                        p.max_response_bytes
                    )
                } else {
                    format!("reading the response failed: {e}")
                }
            })?
            .to_bytes();
        if status != StatusCode::OK {
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(format!("HTTP {status}: {text}"));
        }
        Ok(body)
    };
    match tokio::time::timeout(p.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no complete response within {:?}", p.timeout)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Installs a new strategy. An unchanged one is not reinstalled: the rate
/// limiters keep their state (no extra burst per poll) and the per-thread
/// caches stay valid. A changed one continues the lower bounds' counts.
fn apply(p: &Poller, body: &[u8], last: &mut Option<StrategyResponse>) {
    match parse_strategy(body, p.max_operations) {
        Ok(response) => {
            if let StrategyResponse::PerOperation(po) = &response {
                p.shared
                    .counters
                    .operations_dropped
                    .fetch_add(po.operations_dropped as u64, Ordering::Relaxed);
            }
            if last.as_ref() != Some(&response) {
                let previous = p.shared.current.lock().clone();
                p.shared
                    .install(Compiled::following(&response, Some(&previous)));
                *last = Some(response);
            }
            *p.shared.counters.last_error.lock() = None;
            p.shared.counters.fetches.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => fail(p, e.to_string()),
    }
}

/// Counts and reports a failed fetch; the strategy in force stays.
fn fail(p: &Poller, error: String) {
    let failures = p
        .shared
        .counters
        .fetch_failures
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    *p.shared.counters.last_error.lock() = Some(error.clone());
    diagnostics::report(Diagnostic::RemoteSamplingFailed {
        url: p.shared.url.clone(),
        error,
        failures,
    });
}
