//! Several collectors agree on adaptive rates (`[sampling_api.adaptive]
//! source = "store"`): three real collector processes share one real
//! PostgreSQL — or a real two-shard ClickHouse cluster, each collector
//! entering through a different server, so the counts they write land on
//! different shards and are summed through the `Distributed` table; simulated SDK clients send their kept root spans unevenly
//! (60% / 30% / 10% of the traces to the three collectors) while sampling
//! at the served rate. Every collector must serve byte-identical strategies
//! at every moment checked (compared among answers computed from the same
//! period, which every answer names), computed from the *total* traffic (a collector
//! computing from its own share would serve ~1.7×, 3.3× and 10× the
//! probability), and a fourth collector started late serves the same
//! strategy from its first recomputation. Collectors on one store whose
//! adaptive settings differ are reported by every one of them.

mod fault;
mod ingest_util;
mod sampling_sim;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fault::proc::{Proc, Sink, Spec};
use sampling_sim::{body, fetch, fetch_with_period, send, Rng, Served, Source};
use support::clickhouse::{ChServer, CLUSTER};
use support::net::free_addr;
use support::postgres::PgServer;

const TARGET: f64 = 20.0;
const TICK: Duration = Duration::from_millis(100);

/// A collector with the sampling API on its own port, adaptive rates from
/// the store, 1 s periods.
fn spec(dir: &std::path::Path, sink: Sink, i: usize) -> (Spec, SocketAddr) {
    spec_with_target(dir, sink, i, TARGET)
}

/// [`spec`] with another target.
fn spec_with_target(
    dir: &std::path::Path,
    sink: Sink,
    i: usize,
    target: f64,
) -> (Spec, SocketAddr) {
    let data = dir.join(format!("data{i}"));
    let conf = dir.join(format!("conf{i}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let sampling = free_addr();
    let toml = format!(
        "[sampling_api]\nenabled = true\naddr = \"{sampling}\"\ndefault_probability = 0.01\n\
         [sampling_api.adaptive]\nenabled = true\nsource = \"store\"\n\
         target_traces_per_second = {target}\ninterval_secs = 1\nsmoothing_periods = 4\n\
         min_probability = 0.0001\n"
    );
    (Spec::new(&data, &conf, sink, &toml), sampling)
}

/// How many times [`all_strategies`] fetches again when the answers name
/// different periods, [`REFETCH_AFTER`] apart (re-aimed into the next
/// period's fetch window when that passes the window's end): about three
/// periods in all.
const REFETCHES: usize = 10;
const REFETCH_AFTER: Duration = Duration::from_millis(100);

/// Fetches `service`'s strategy from every collector near the middle of a
/// wall-clock period (far from the recomputation, which happens half a
/// period after each boundary), with the period each answer was computed
/// from. Answers are only comparable when they name the same period: when
/// a recomputation fell between the fetches, or one collector published
/// late (the machine stalled this loop or a collector), all are fetched
/// again, at most [`REFETCHES`] times; returns the answers and how many
/// fetch rounds had to be repeated.
async fn all_strategies(
    sampling: &[SocketAddr],
    service: &str,
) -> (Vec<(bytes::Bytes, Served, u64)>, usize) {
    let mut periods = Vec::new();
    for again in 0..=REFETCHES {
        let now = ferrotrace_collector::model::now_ns();
        let into = now % 1_000_000_000;
        // Aim for 0.05–0.35 s into a period (the recomputation is at 0.5 s).
        let wait = if into < 50_000_000 {
            50_000_000 - into
        } else if into > 350_000_000 {
            1_050_000_000 - into
        } else {
            0
        };
        tokio::time::sleep(Duration::from_nanos(wait)).await;
        let mut out = Vec::new();
        for s in sampling {
            let (b, served, period) = fetch_with_period(*s, service).await;
            let period = period.expect("a strategy computed from the store names its period");
            out.push((b, served, period));
        }
        periods = out.iter().map(|a| a.2).collect::<Vec<_>>();
        if periods.iter().all(|p| *p == periods[0]) {
            return (out, again);
        }
        eprintln!("{service}: answers computed from different periods {periods:?}; fetching again");
        tokio::time::sleep(REFETCH_AFTER).await;
    }
    panic!(
        "{service}: {} fetch rounds in a row got answers computed from different periods \
         (last {periods:?}): a collector serves stale rates",
        REFETCHES + 1
    );
}

/// The two scenarios run one after the other: each is four collector
/// processes, a database and a simulated client fleet on the machine's
/// cores, and the rates they check follow the traffic the client loop
/// manages to send each period — two at once starve that loop into bursts
/// (seen as a served rate 46% off under outside load), which the adaptive
/// rule rightly answers as spikes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_sharing_postgres_serve_identical_rates_from_the_total_traffic() {
    let _serial = SERIAL.lock().await;
    let Some(pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("agree").await;
    agree(|_| Sink::Postgres(url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_sharing_a_clickhouse_cluster_serve_identical_rates_from_the_total_traffic() {
    let _serial = SERIAL.lock().await;
    let Some(servers) = ChServer::start_cluster(2) else {
        return;
    };
    let cluster = ferrotrace_collector::storage::clickhouse::ClusterOptions {
        name: CLUSTER.into(),
        shard_urls: servers.iter().map(|s| s.url("traces")).collect(),
        ..Default::default()
    };
    // Collectors enter through alternate servers.
    agree(|i| Sink::ClickHouse {
        url: servers[i % 2].url("traces"),
        cluster: cluster.clone(),
    })
    .await;
}

/// Two collectors on one PostgreSQL database with the same settings see no
/// conflict; a third with another target is reported by all three
/// (`ferrotrace_sampling_adaptive_settings_conflicts` 1; the error log
/// names `target_traces_per_second` with both values, checked by the unit
/// tests of `sampling_api::settings`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_sharing_postgres_with_different_settings_are_reported() {
    let _serial = SERIAL.lock().await;
    let Some(pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("settings").await;
    let dir = tempfile::tempdir().unwrap();
    let conflicts = |s: &Spec| {
        let q = s.query;
        async move {
            fault::metric(q, "ferrotrace_sampling_adaptive_settings_conflicts")
                .await
                .expect("metrics")
        }
    };
    let mut specs = Vec::new();
    let mut procs = Vec::new();
    for i in 0..2 {
        let (s, _) = spec(dir.path(), Sink::Postgres(url.clone()), i);
        procs.push(s.spawn());
        specs.push(s);
    }
    for p in &mut procs {
        p.wait_ready(Duration::from_secs(60)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &specs {
        loop {
            let n = fault::metric(s.query, "ferrotrace_sampling_adaptive_recomputations_total")
                .await
                .expect("metrics");
            if n >= 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{n} recomputations");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for s in &specs {
        assert_eq!(conflicts(s).await, 0, "the same settings agree");
    }
    let (odd, _) = spec_with_target(dir.path(), Sink::Postgres(url.clone()), 2, TARGET / 4.0);
    let mut p = odd.spawn();
    p.wait_ready(Duration::from_secs(60)).await;
    procs.push(p);
    specs.push(odd);
    for (i, s) in specs.iter().enumerate() {
        loop {
            let n = conflicts(s).await;
            if n == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "collector {i} counts {n} other settings"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let errors = fault::metric(s.query, "ferrotrace_sampling_adaptive_store_errors_total")
            .await
            .expect("metrics");
        assert_eq!(errors, 0, "collector {i} had store errors");
    }
    drop(procs);
}

/// The scenario on the store `sink(i)` gives collector `i`.
async fn agree(sink: impl Fn(usize) -> Sink) {
    let begun = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    let mut procs: Vec<Proc> = Vec::new();
    for i in 0..3 {
        let (s, sampling) = spec(dir.path(), sink(i), i);
        procs.push(s.spawn());
        specs.push((s, sampling));
    }
    for p in &mut procs {
        p.wait_ready(Duration::from_secs(60)).await;
    }
    eprintln!(
        "collectors ready after {:.1} s",
        begun.elapsed().as_secs_f64()
    );
    let otlp: Vec<SocketAddr> = specs.iter().map(|(s, _)| s.otlp_http).collect();
    let mut sampling: Vec<SocketAddr> = specs.iter().map(|(_, a)| *a).collect();

    // True traffic: shop/hot 2000 traces/s, shop/warm 400/s, search/query
    // 100/s, shop/cold 2/s (under the target: probability 1).
    let rates: Rates = [
        ("shop", "hot", 2_000.0),
        ("shop", "warm", 400.0),
        ("search", "query", 100.0),
        ("shop", "cold", 2.0),
    ];
    // What clients were served per operation over the last 8 s of traffic.
    let mut history: BTreeMap<(&str, &str), Vec<(Instant, f64)>> = BTreeMap::new();
    let started = Instant::now();
    let served: Arc<Mutex<BTreeMap<&'static str, Served>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The clients' traffic runs in a task of its own: in the first version
    // it shared this loop with the checks, whose wait for the middle of a
    // period (up to a second) stopped the traffic and sent what was due
    // for the pause as one burst — a real spike to the adaptive rule,
    // answered by lowering the served rates (CI saw shop/warm served 37%
    // under target/rate for a whole run).
    let traffic = tokio::spawn(traffic(otlp, rates, served.clone(), stop.clone()));
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let mut late: Option<(Spec, SocketAddr, Proc, Instant)> = None;
    let mut checks = 0;
    let mut matched_total = 0;
    let mut refetched = 0;
    let mut last_check = Instant::now();
    // 26 s, or up to 40 s until 18 checks are done (fetch rounds repeated
    // across a recomputation take time of their own on a loaded machine).
    while started.elapsed() < Duration::from_secs(26)
        || (checks < 18 && started.elapsed() < Duration::from_secs(40))
    {
        // Clients poll every 250 ms, from collector 0 (all serve the same).
        if last_poll.elapsed() >= Duration::from_millis(250) {
            for svc in ["shop", "search"] {
                let got = fetch(sampling[0], svc).await.1;
                served.lock().unwrap().insert(svc, got);
            }
            last_poll = Instant::now();
            if started.elapsed() >= Duration::from_secs(18) {
                let served = served.lock().unwrap();
                for (svc, op, _) in rates {
                    if let Some(s) = served.get(svc) {
                        history
                            .entry((svc, op))
                            .or_default()
                            .push((Instant::now(), s.p(op)));
                    }
                }
            }
        }
        tokio::time::sleep(TICK).await;

        // A fourth collector joins after 10 s (without stopping the
        // traffic); it is compared with the others from 4 s after its start.
        if late.is_none() && started.elapsed() >= Duration::from_secs(10) {
            let (s, a) = spec(dir.path(), sink(3), 3);
            let p = s.spawn();
            late = Some((s, a, p, Instant::now()));
        }
        if let Some((_, a, p, at)) = &mut late {
            if !sampling.contains(a) && at.elapsed() >= Duration::from_secs(4) {
                p.wait_ready(Duration::from_secs(60)).await;
                sampling.push(*a);
            }
        }
        // From 8 s on, every 2 s: all collectors serve the same bytes.
        if started.elapsed() >= Duration::from_secs(8)
            && last_check.elapsed() >= Duration::from_secs(2)
        {
            last_check = Instant::now();
            for svc in ["shop", "search"] {
                let (got, again) = all_strategies(&sampling, svc).await;
                refetched += again;
                checks += 1;
                let first = &got[0].0;
                let same = got.iter().filter(|(b, _, _)| b == first).count();
                matched_total += same;
                assert_eq!(
                    same,
                    got.len(),
                    "{svc}: collectors disagree on the strategy of period ending {}: {:#?}",
                    got[0].2,
                    got.iter()
                        .map(|(b, _, _)| String::from_utf8_lossy(b).into_owned())
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (sources, sent_for) = traffic.await.expect("the traffic task");
    let traffic_ended = Instant::now();
    assert!(checks >= 16, "{checks} checks");
    assert_eq!(sampling.len(), 4, "the late collector was compared too");
    eprintln!(
        "{checks} checks, {matched_total} strategies identical across collectors \
         ({refetched} fetch rounds repeated because a recomputation fell between the fetches)"
    );

    // The rates answer the total traffic: target / true rate for the busy
    // operations, 1 for the quiet one. The estimate of a 1 s period rests
    // on ~TARGET kept traces (relative noise 1/sqrt(20) = 22%), smoothed
    // over 4 periods (~9% left); 35% is about 4σ. Computing from one
    // collector's share instead would be 1.7×–10× too high.
    // Checked on the median of what clients were served over the last 8 s,
    // not on one instant: when the machine stalls this test's client loop,
    // the traffic of the stall arrives as one burst, which the adaptive rule
    // rightly answers as a spike for a period or two (seen in CI as one
    // operation 40% off at the final instant while the other three were
    // right); a rule that followed the total traffic wrongly would be off
    // in every poll.
    let shop = &all_strategies(&sampling, "shop").await.0[0].1;
    let search = &all_strategies(&sampling, "search").await.0[0].1;
    for (svc, op, rate) in rates {
        let now = if svc == "shop" {
            shop.p(op)
        } else {
            search.p(op)
        };
        // The last 8 s (the run may have been extended for its checks).
        let polls: Vec<f64> = history
            .get(&(svc, op))
            .map(|h| {
                h.iter()
                    .filter(|(at, _)| traffic_ended.duration_since(*at) <= Duration::from_secs(8))
                    .map(|(_, p)| *p)
                    .collect()
            })
            .unwrap_or_default();
        assert!(polls.len() >= 8, "{svc}/{op}: {} polls", polls.len());
        let mut sorted = polls.clone();
        sorted.sort_by(f64::total_cmp);
        let p = sorted[sorted.len() / 2];
        let want = (TARGET / rate).min(1.0);
        eprintln!(
            "{svc}/{op}: true {rate}/s, served {now:.5} at the end, median {p:.5} over {} polls \
             (range {:.5}–{:.5}), target/rate {want:.5}",
            polls.len(),
            sorted[0],
            sorted[sorted.len() - 1]
        );
        assert!(
            (p - want).abs() <= 0.35 * want,
            "{svc}/{op}: served a median {p} over the last 8 s, want {want} (from the total traffic)"
        );
    }
    for (s, src) in sources.iter().zip(rates) {
        eprintln!(
            "{}/{}: {} true traces, {} kept ({:.1}/s)",
            src.0,
            src.1,
            s.true_count,
            s.kept,
            s.kept as f64 / sent_for
        );
    }
    // Each collector wrote its share of the counts; none failed.
    for (i, (s, _)) in specs.iter().enumerate() {
        let errors = fault::metric(s.query, "ferrotrace_sampling_adaptive_store_errors_total")
            .await
            .expect("metrics");
        assert_eq!(errors, 0, "collector {i} had store errors");
        let recomputed =
            fault::metric(s.query, "ferrotrace_sampling_adaptive_recomputations_total")
                .await
                .expect("metrics");
        assert!(
            recomputed >= 15,
            "collector {i}: {recomputed} recomputations"
        );
    }
    drop(late);
    drop(procs);
    eprintln!("done after {:.1} s", begun.elapsed().as_secs_f64());
}

/// Operations with their true traces per second.
type Rates = [(&'static str, &'static str, f64); 4];

/// The simulated SDK clients: every [`TICK`], the traces due for the time
/// since the last tick (ticks stretch on a busy machine; the true rate
/// stays exact), kept at the probability last `served` for their operation
/// and sent to the collector their randomness picks (60/30/10), until
/// `stop`. Returns the sources (true and kept counts) and the seconds the
/// traffic ran.
async fn traffic(
    otlp: Vec<SocketAddr>,
    rates: Rates,
    served: Arc<Mutex<BTreeMap<&'static str, Served>>>,
    stop: Arc<AtomicBool>,
) -> (Vec<Source>, f64) {
    let mut sources: Vec<Source> = rates.iter().map(|(s, o, _)| Source::new(s, o)).collect();
    let mut rng = Rng(0x5eed_a9ee);
    let shares = [0.6, 0.3, 0.1];
    let started = Instant::now();
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = ferrotrace_collector::model::now_ns();
        let dt = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        let mut per: Vec<BTreeMap<&'static str, Vec<_>>> = vec![BTreeMap::new(); 3];
        for (src, (_, _, rate)) in sources.iter_mut().zip(rates) {
            // The quiet operation's clients keep everything (an always-on
            // sampler): an operation never seen gets the service's
            // probability, at which 2 traces/s might not be seen in this
            // short run (Jaeger's answer is the per-operation lower bound).
            let p = match served.lock().unwrap().get(src.service) {
                _ if src.op == "cold" => 1.0,
                Some(s) => s.p(src.op),
                None => 0.01,
            };
            for span in src.tick(&mut rng, rate, dt, p, now) {
                let u = (span.trace_id[15] as f64 + 0.5) / 256.0;
                let c = if u < shares[0] {
                    0
                } else if u < shares[0] + shares[1] {
                    1
                } else {
                    2
                };
                per[c].entry(src.service).or_default().push(span);
            }
        }
        for (c, b) in per.into_iter().enumerate() {
            send(otlp[c], body(b)).await;
        }
        tokio::time::sleep(TICK).await;
    }
    (sources, started.elapsed().as_secs_f64())
}
