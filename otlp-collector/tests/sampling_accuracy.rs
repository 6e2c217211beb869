//! Adaptive sampling accuracy, measured end to end: simulated SDK clients
//! that know the true traffic sample consistently at the probability the
//! collector serves (polled like a remote sampler), traffic shifts between
//! services and one operation spikes 10×, and the test measures
//!
//! - kept (stored) traces per second per operation against the target, in
//!   windows after each change has settled,
//! - the time until the served probability answers the spike (and the end
//!   of it),
//! - the error of the request counts the collector estimates from the kept
//!   traces (rollups weighted by adjusted count) against the true counts.
//!
//! The collector runs with `source = "store"` on its SQLite store (the
//! single-collector form of the shared computation).
//!
//! Tolerances. A window of `W` seconds keeps about `T·W` traces of an
//! operation with target `T`; given the served probabilities the count is
//! binomial (relative variance `1/(T·W)`), and the probability itself
//! follows the smoothed rate, whose noise (relative variance
//! `α/((2-α)·T·Δ)` for periods of `Δ` seconds, `α = 1/smoothing_periods`)
//! is correlated over about `2/α` periods, adding about `2/((2-α)·T·W)`.
//! So the kept rate's relative standard deviation is
//! `σ = sqrt((1 + 2/(2-α)) / (T·W))`; assertions are at 4σ. Estimated
//! request counts are Horvitz–Thompson sums with variance `Σ (1-p)/p` over
//! true traces (accumulated by the generator), asserted at 5σ plus the
//! rollups' random rounding.
//!
//! The quick version (`accuracy_quick`, ~60 s) runs in the suite with 1 s
//! periods; the 10-minute version with 10 s periods is `#[ignore]`d:
//! `cargo test -p ferrotrace-collector --test sampling_accuracy -- --ignored --nocapture`
//! (`FERROTRACE_ACCURACY_SECS` scales its length; results in docs/benchmarks.md).

mod ingest_util;
mod sampling_sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace_collector::config::Config;
use ferrotrace_collector::sampling_api::adaptive::AdaptiveSource;
use sampling_sim::{body, fetch, send, Rng, Served, Source};

/// The three operations: two of `shop`, one of `search`.
const OPS: [(&str, &str); 3] = [
    ("shop", "checkout"),
    ("shop", "browse"),
    ("search", "query"),
];

struct Phase {
    name: &'static str,
    secs: f64,
    /// True traces per second of each of [`OPS`].
    rates: [f64; 3],
    /// Seconds after the phase starts before kept rates are measured.
    settle: f64,
}

struct Scenario {
    interval_secs: u64,
    smoothing: u32,
    target: f64,
    tick: Duration,
    poll: Duration,
    phases: Vec<Phase>,
}

/// Kept traces of one operation over one measured window.
struct Window {
    phase: &'static str,
    op: usize,
    kept: u64,
    secs: f64,
}

struct Outcome {
    windows: Vec<Window>,
    /// Seconds from the spike's start until the spiking operation was
    /// served at most 1.1 × target / rate, and from its end until at least
    /// 0.9 × target / rate.
    spike_answered: Option<f64>,
    spike_end_answered: Option<f64>,
    sources: Vec<Source>,
    sent_spans: u64,
    start_ns: u64,
    end_ns: u64,
}

fn config(sc: &Scenario) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        let s = &mut c.sampling_api;
        s.enabled = true;
        s.addr = "127.0.0.1:0".into();
        s.default_probability = 0.01;
        s.adaptive.enabled = true;
        s.adaptive.source = AdaptiveSource::Store;
        s.adaptive.target_traces_per_second = sc.target;
        s.adaptive.interval_secs = sc.interval_secs;
        s.adaptive.smoothing_periods = sc.smoothing;
        s.adaptive.min_probability = 0.0001;
    }
}

async fn run(sc: &Scenario) -> (Outcome, ingest_util::TestCollector) {
    let tc = ingest_util::start(config(sc)).await;
    let otlp = tc.collector.addrs.otlp_http.expect("otlp http");
    let sampling = tc.collector.addrs.sampling.expect("sampling");
    let mut sources: Vec<Source> = OPS.iter().map(|(s, o)| Source::new(s, o)).collect();
    let mut rng = Rng(0xacc0_4a7e);
    let mut served: BTreeMap<&str, Served> = BTreeMap::new();
    let mut windows = Vec::new();
    let mut sent_spans = 0u64;
    let mut spike_answered = None;
    let mut spike_end_answered = None;
    let start_ns = ferrotrace_collector::model::now_ns();
    let t0 = Instant::now();
    let mut phase_start = 0.0;
    let mut last_poll: Option<Instant> = None;
    let mut prev_rates: Option<[f64; 3]> = None;
    for ph in &sc.phases {
        // Which operation spikes up (10×) or comes back down in this phase.
        let change: Option<(usize, f64)> = prev_rates.and_then(|prev| {
            (0..3)
                .find(|&i| ph.rates[i] >= 10.0 * prev[i] || prev[i] >= 10.0 * ph.rates[i])
                .map(|i| (i, ph.rates[i] / prev[i]))
        });
        let mut kept_at_settle: Option<[u64; 3]> = None;
        let mut last_t = t0.elapsed().as_secs_f64();
        loop {
            let t = t0.elapsed().as_secs_f64();
            let in_phase = t - phase_start;
            if in_phase >= ph.secs {
                break;
            }
            if last_poll.is_none_or(|at| at.elapsed() >= sc.poll) {
                for svc in ["shop", "search"] {
                    served.insert(svc, fetch(sampling, svc).await.1);
                }
                last_poll = Some(Instant::now());
                if let Some((i, ratio)) = change {
                    let p = served.get(OPS[i].0).map_or(1.0, |s| s.p(OPS[i].1));
                    let want = (sc.target / ph.rates[i]).min(1.0);
                    if ratio > 1.0 && spike_answered.is_none() && p <= 1.1 * want {
                        spike_answered = Some(in_phase);
                    }
                    if ratio < 1.0 && spike_end_answered.is_none() && p >= 0.9 * want {
                        spike_end_answered = Some(in_phase);
                    }
                }
            }
            if in_phase >= ph.settle && kept_at_settle.is_none() {
                kept_at_settle = Some([sources[0].kept, sources[1].kept, sources[2].kept]);
            }
            // Traffic for the time elapsed since the last tick (a busy
            // machine stretches ticks; the true rate stays exact).
            let dt = t - last_t;
            last_t = t;
            let now = ferrotrace_collector::model::now_ns();
            let mut by_service: BTreeMap<&'static str, Vec<_>> = BTreeMap::new();
            for (i, src) in sources.iter_mut().enumerate() {
                let p = served.get(src.service).map_or(0.01, |s| s.p(src.op));
                let spans = src.tick(&mut rng, ph.rates[i], dt, p, now);
                sent_spans += spans.len() as u64;
                by_service.entry(src.service).or_default().extend(spans);
            }
            send(otlp, body(by_service)).await;
            tokio::time::sleep(sc.tick).await;
        }
        let end = t0.elapsed().as_secs_f64();
        if let Some(k) = kept_at_settle {
            for (i, src) in sources.iter().enumerate() {
                windows.push(Window {
                    phase: ph.name,
                    op: i,
                    kept: src.kept - k[i],
                    secs: end - (phase_start + ph.settle),
                });
            }
        }
        phase_start = end;
        prev_rates = Some(ph.rates);
    }
    let end_ns = ferrotrace_collector::model::now_ns();
    (
        Outcome {
            windows,
            spike_answered,
            spike_end_answered,
            sources,
            sent_spans,
            start_ns,
            end_ns,
        },
        tc,
    )
}

/// The relative standard deviation of a kept rate over `secs` (module
/// documentation).
fn sigma(sc: &Scenario, secs: f64) -> f64 {
    let alpha = 1.0 / sc.smoothing as f64;
    ((1.0 + 2.0 / (2.0 - alpha)) / (sc.target * secs)).sqrt()
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let r = ingest_util::request("GET", addr, path, &[], Bytes::new()).await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).expect("json")
}

/// Checks and prints everything; returns the pooled kept/target ratio.
async fn report(sc: &Scenario, o: &Outcome, tc: &ingest_util::TestCollector) -> f64 {
    eprintln!(
        "{:<8} {:<16} {:>8} {:>7} {:>9} {:>8} {:>8}",
        "phase", "operation", "kept", "secs", "kept/s", "err %", "4σ %"
    );
    let (mut kept_all, mut expect_all) = (0.0, 0.0);
    for w in &o.windows {
        let rate = w.kept as f64 / w.secs;
        let err = rate / sc.target - 1.0;
        let bound = 4.0 * sigma(sc, w.secs);
        eprintln!(
            "{:<8} {:<16} {:>8} {:>7.1} {:>9.2} {:>+8.2} {:>8.2}",
            w.phase,
            format!("{}/{}", OPS[w.op].0, OPS[w.op].1),
            w.kept,
            w.secs,
            rate,
            100.0 * err,
            100.0 * bound
        );
        assert!(
            err.abs() <= bound,
            "{} {}/{}: kept {rate:.2}/s against a target of {} (bound {:.1}%)",
            w.phase,
            OPS[w.op].0,
            OPS[w.op].1,
            sc.target,
            100.0 * bound
        );
        kept_all += w.kept as f64;
        expect_all += sc.target * w.secs;
    }
    let secs_all = expect_all / sc.target;
    let pooled = kept_all / expect_all;
    let pooled_bound = 4.0 * sigma(sc, secs_all);
    eprintln!(
        "pooled: kept/target {pooled:.4} ({:+.2}%, 1σ {:.2}%, bound 4σ {:.2}%)",
        100.0 * (pooled - 1.0),
        100.0 * pooled_bound / 4.0,
        100.0 * pooled_bound
    );
    assert!((pooled - 1.0).abs() <= pooled_bound, "pooled {pooled}");
    eprintln!(
        "10x spike answered after {:?} s, its end after {:?} s (interval {} s)",
        o.spike_answered, o.spike_end_answered, sc.interval_secs
    );

    // Everything sent was stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = &tc.collector.metrics;
    while m
        .sink_spans_written
        .load(std::sync::atomic::Ordering::Relaxed)
        < o.sent_spans
    {
        assert!(Instant::now() < deadline, "not all kept spans were stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The collector's estimate of each operation's requests, from the kept
    // traces' adjusted counts, against the truth. Rollups of the last spans
    // are written within `[rollup] max_hold_secs` (5 s) of them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let api = tc.collector.addrs.http.expect("query api");
    let w = format!(
        "start={}&end={}",
        ferrotrace_collector::query::params::format_rfc3339(o.start_ns - 120_000_000_000),
        ferrotrace_collector::query::params::format_rfc3339(o.end_ns + 120_000_000_000),
    );
    for (i, src) in o.sources.iter().enumerate() {
        let path = format!(
            "/api/native/latency?service={}&operation={}&{w}",
            OPS[i].0, OPS[i].1
        );
        // The rollups reach the store at least every `max_hold_secs` (5 s,
        // waited for once above): read until two reads a second apart
        // agree, so a partial total is not taken.
        let deadline = Instant::now() + Duration::from_secs(40);
        let truth = src.true_count as f64;
        let bound = 5.0 * src.estimate_var.sqrt() + 30.0;
        let mut last = f64::NAN;
        let est = loop {
            let est = get_json(api, &path).await["count"].as_f64().expect("count");
            if est == last || Instant::now() > deadline {
                break est;
            }
            last = est;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        eprintln!(
            "{}/{}: true requests {truth}, estimated {est} ({:+.3}%, 5σ bound {:.3}%), kept {}",
            OPS[i].0,
            OPS[i].1,
            100.0 * (est / truth - 1.0),
            100.0 * bound / truth,
            src.kept
        );
        assert!(
            (est - truth).abs() <= bound,
            "{}/{}: estimated {est}, truth {truth}, bound {bound}",
            OPS[i].0,
            OPS[i].1
        );
    }
    pooled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_quick() {
    // 1 s periods: a time-compressed run of the 10-minute scenario.
    let sc = Scenario {
        interval_secs: 1,
        smoothing: 4,
        target: 200.0,
        tick: Duration::from_millis(50),
        poll: Duration::from_millis(250),
        phases: vec![
            Phase {
                name: "base",
                secs: 20.0,
                rates: [2_000.0, 1_000.0, 500.0],
                settle: 8.0,
            },
            Phase {
                name: "spike",
                secs: 15.0,
                rates: [20_000.0, 1_000.0, 500.0],
                settle: 6.0,
            },
            Phase {
                name: "shift",
                secs: 20.0,
                rates: [2_000.0, 500.0, 1_500.0],
                settle: 10.0,
            },
        ],
    };
    let (o, tc) = run(&sc).await;
    report(&sc, &o, &tc).await;
    // One period of the spike, the recomputation half a period later, the
    // client's next poll, and the lag of a debug collector taking 20k spans/s
    // on two cores: 2.1-2.6 s in the branch's runs, 4.5 s in one CI run of
    // the whole suite, so the bound is 8 periods. The 10-minute run measures
    // the answer time properly; this catches a rule that needs tens of periods.
    let answered = o.spike_answered.expect("the spike was never answered");
    assert!(answered <= 8.0, "spike answered after {answered} s");
    let end = o
        .spike_end_answered
        .expect("the spike's end was never answered");
    // Halved per period while beyond the noise, then averaged: ~7 periods.
    assert!(end <= 12.0, "spike end answered after {end} s");
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10 minutes: cargo test -p ferrotrace-collector --test sampling_accuracy -- --ignored --nocapture"]
async fn accuracy_ten_minutes() {
    let secs: f64 = std::env::var("FERROTRACE_ACCURACY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600.0);
    let k = secs / 600.0;
    let sc = Scenario {
        interval_secs: 10,
        smoothing: 6,
        target: 100.0,
        tick: Duration::from_millis(50),
        poll: Duration::from_millis(2_500),
        phases: vec![
            Phase {
                name: "base",
                secs: 180.0 * k,
                rates: [2_000.0, 1_000.0, 500.0],
                settle: 60.0 * k,
            },
            Phase {
                name: "shift",
                secs: 150.0 * k,
                rates: [2_000.0, 300.0, 2_000.0],
                settle: 60.0 * k,
            },
            Phase {
                name: "spike",
                secs: 120.0 * k,
                rates: [20_000.0, 300.0, 2_000.0],
                settle: 40.0 * k,
            },
            Phase {
                name: "after",
                secs: 150.0 * k,
                rates: [2_000.0, 1_000.0, 500.0],
                settle: 80.0 * k,
            },
        ],
    };
    let (o, tc) = run(&sc).await;
    let pooled = report(&sc, &o, &tc).await;
    eprintln!(
        "pooled kept/target {pooled:.4}: {} the 1% goal",
        if (pooled - 1.0).abs() <= 0.01 {
            "within"
        } else {
            "outside"
        }
    );
    tc.collector.shutdown().await;
}
