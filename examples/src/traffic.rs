//! A bounded traffic generator for the demo: a fixed number of requests or a
//! time limit (whichever comes first), at a target rate, to a loopback
//! gateway only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace::trace::Tracer;
use http_body_util::{BodyExt, Full};
use rand::seq::IndexedRandom;
use tower::ServiceExt;

use crate::traced_http_client;

/// How much traffic to send.
#[derive(Clone, Debug)]
pub struct TrafficConfig {
    /// Total requests at most.
    pub requests: u64,
    /// Time limit.
    pub duration: Duration,
    /// Concurrent request loops.
    pub concurrency: usize,
    /// Target requests per second over all loops (0 = as fast as possible).
    pub rate_per_sec: f64,
    /// Tenants to pick from (one per request, put into the baggage by the gateway).
    pub tenants: Vec<String>,
    /// Items to pick from (`sold-out` makes orders answer 409).
    pub items: Vec<String>,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            requests: 200,
            duration: Duration::from_secs(60),
            concurrency: 4,
            rate_per_sec: 20.0,
            tenants: vec!["acme".into(), "globex".into(), "initech".into()],
            items: vec!["widget".into(), "gadget".into(), "sold-out".into()],
        }
    }
}

/// What the generator saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficReport {
    /// Requests sent.
    pub sent: u64,
    /// Responses by status code (`0` = transport error).
    pub by_status: BTreeMap<u16, u64>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// The generator refuses non-loopback targets.
#[derive(Debug, thiserror::Error)]
#[error(
    "traffic target {0} is not a loopback address: the generator only drives local demo services"
)]
pub struct NotLoopback(pub SocketAddr);

/// Status-code counters shared by the request loops.
#[derive(Default)]
struct Counts(std::sync::Mutex<BTreeMap<u16, u64>>);

impl Counts {
    fn add(&self, status: u16) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(status).or_default() += 1;
        }
    }
    fn take(&self) -> BTreeMap<u16, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Sends `GET /checkout?tenant=..&item=..` to `gateway` per `config`; each
/// request is a root `CLIENT` span recorded with `tracer`.
pub async fn run(
    gateway: SocketAddr,
    config: TrafficConfig,
    tracer: Tracer,
) -> Result<TrafficReport, NotLoopback> {
    if !gateway.ip().is_loopback() {
        return Err(NotLoopback(gateway));
    }
    let client = traced_http_client(tracer);
    let started = Instant::now();
    let deadline = started + config.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Counts::default());
    let loops = config.concurrency.max(1);
    // Each loop paces itself so that all loops together hit the target rate.
    let interval = (config.rate_per_sec > 0.0)
        .then(|| Duration::from_secs_f64(loops as f64 / config.rate_per_sec));
    let config = Arc::new(config);
    let mut handles = Vec::with_capacity(loops);
    for _ in 0..loops {
        let (client, issued, counts, config) = (
            client.clone(),
            issued.clone(),
            counts.clone(),
            config.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut next = Instant::now();
            loop {
                if Instant::now() >= deadline
                    || issued.fetch_add(1, Ordering::Relaxed) >= config.requests
                {
                    break;
                }
                let (tenant, item) = {
                    let mut rng = rand::rng();
                    (
                        config
                            .tenants
                            .choose(&mut rng)
                            .cloned()
                            .unwrap_or_else(|| "default".into()),
                        config
                            .items
                            .choose(&mut rng)
                            .cloned()
                            .unwrap_or_else(|| "widget".into()),
                    )
                };
                let url = format!("http://{gateway}/checkout?tenant={tenant}&item={item}");
                let status = match http::Request::get(&url).body(Full::new(Bytes::new())) {
                    Ok(req) => match client.clone().oneshot(req).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            // Read the body so the client span ends with the response.
                            let _ = resp.into_body().collect().await;
                            status
                        }
                        Err(_) => 0,
                    },
                    Err(_) => 0,
                };
                counts.add(status);
                if let Some(interval) = interval {
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep_until(next.min(deadline).into()).await;
                    } else {
                        next = now;
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let by_status = counts.take();
    Ok(TrafficReport {
        sent: by_status.values().sum(),
        by_status,
        elapsed: started.elapsed(),
    })
}
