//! The routing tier (issue 13) with real processes: one router and three
//! backend collectors started from the built binary, each with its own data
//! directory and loopback ports. Traces are sent with the spans of each
//! trace in separate requests; every trace must end up whole on exactly one
//! backend, every acknowledged span stored (a client's resend absorbed by
//! the backend's idempotent write), and a backend killed with `kill -9`
//! under load must lose nothing: its share moves to the others once it
//! fails its health checks, and what it acknowledged is there when it
//! restarts. The fraction of traces rerouted by the removal is measured
//! against the rendezvous share (1/3).

mod fault;
mod ingest_util;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrotrace_collector::storage::{connecting, MAX_TRACES_PER_READ};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tonic::transport::Channel;

use fault::metric;
use fault::proc::{Proc, Sink, Spec};
use ingest_util::trace_id;

/// Traces sent; each gets spans 0..=8 over three phases.
const TRACES: u32 = 300;
/// Traces per request: a request holds one span of each of these traces.
const CHUNK: usize = 25;

/// One request with span `i` of each trace in `traces` (span 0 is the root).
fn request(traces: &[u32], i: u32) -> ExportTraceServiceRequest {
    ingest_util::span_i_of_each(traces, i, |_, _| false)
}

fn client(addr: SocketAddr) -> TraceServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    TraceServiceClient::new(ch)
}

/// Sends span `i` of every trace, `CHUNK` traces per request, pausing
/// `gap` between requests; every request must be acknowledged.
async fn send_phase(c: &mut TraceServiceClient<Channel>, i: u32, gap: Duration) {
    let all: Vec<u32> = (1..=TRACES).collect();
    for chunk in all.chunks(CHUNK) {
        let r = c.export(request(chunk, i)).await;
        assert!(r.is_ok(), "the router refused span {i}: {r:?}");
        let ps = r.unwrap().into_inner().partial_success;
        assert!(
            ps.as_ref().is_none_or(|p| p.rejected_spans == 0),
            "spans rejected: {ps:?}"
        );
        tokio::time::sleep(gap).await;
    }
}

/// Every stored span of the test's traces in one backend's store, as
/// `(trace, span index)` with the number of rows.
async fn stored(spec: &Spec) -> BTreeMap<(u32, u32), usize> {
    stored_upto(spec, TRACES).await
}

/// [`stored`] for traces `1..=last`.
async fn stored_upto(spec: &Spec, last: u32) -> BTreeMap<(u32, u32), usize> {
    let store = connecting::open(&spec.store_config()).expect("open a backend's store");
    let ids: Vec<u32> = (1..=last).collect();
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(MAX_TRACES_PER_READ) {
        let tids: Vec<_> = chunk.iter().map(|t| trace_id(*t)).collect();
        for (id, spans) in store.get_traces(&tids, None).await.expect("read") {
            let t = u32::from_be_bytes([id[12], id[13], id[14], id[15]]);
            for s in spans {
                let i =
                    u32::from_be_bytes([s.span_id[4], s.span_id[5], s.span_id[6], s.span_id[7]])
                        - 1;
                *out.entry((t, i)).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Reads all backends until `want` distinct spans are stored (or fails after `within`).
async fn wait_stored(
    specs: &[Spec],
    want: usize,
    within: Duration,
) -> Vec<BTreeMap<(u32, u32), usize>> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        for s in specs {
            all.push(stored(s).await);
        }
        let distinct: BTreeSet<(u32, u32)> = all.iter().flat_map(|m| m.keys().copied()).collect();
        if distinct.len() >= want {
            return all;
        }
        assert!(
            start.elapsed() < within,
            "only {} of {want} spans stored after {within:?}",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_metric(addr: SocketAddr, series: &str, ok: impl Fn(u64) -> bool, within: Duration) {
    let start = Instant::now();
    loop {
        let v = metric(addr, series).await;
        if v.is_some_and(&ok) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{series} = {v:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The backend index owning each trace, from spans `0..spans` in `stored`;
/// fails unless each trace is whole on exactly one backend.
fn owners(stored: &[BTreeMap<(u32, u32), usize>], spans: u32) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for t in 1..=TRACES {
        let holders: Vec<usize> = (0..stored.len())
            .filter(|b| (0..spans).any(|i| stored[*b].contains_key(&(t, i))))
            .collect();
        assert_eq!(holders.len(), 1, "trace {t} is on backends {holders:?}");
        let b = holders[0];
        for i in 0..spans {
            assert_eq!(
                stored[b].get(&(t, i)),
                Some(&1),
                "trace {t} span {i} on backend {b}: stored once"
            );
        }
        out.insert(t, b);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_stay_whole_on_one_backend_and_a_killed_backend_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_toml = "[wal]\nfsync = \"never\"\n";
    let specs: Vec<Spec> = (0..3)
        .map(|b| {
            let d = dir.path().join(format!("backend{b}"));
            std::fs::create_dir_all(&d).expect("dir");
            Spec::new(&d, &d, Sink::Sqlite, backend_toml)
        })
        .collect();
    let mut procs: Vec<Option<Proc>> = specs.iter().map(|s| Some(s.spawn())).collect();
    for p in procs.iter_mut().flatten() {
        p.wait_ready(Duration::from_secs(20)).await;
    }
    let backends: Vec<String> = specs
        .iter()
        .map(|s| format!("\"{}@{}\"", s.otlp_grpc, s.query.port()))
        .collect();
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&rdir).expect("dir");
    let router = Spec::new(
        &rdir,
        &rdir,
        Sink::Sqlite,
        &format!(
            "[route]\nbackends = [{}]\nhealth_interval_ms = 100\nhealth_timeout_ms = 500\n\
             unhealthy_after = 3\nforward_timeout_ms = 2000\n",
            backends.join(", ")
        ),
    );
    let mut rproc = router.spawn();
    rproc.wait_ready(Duration::from_secs(20)).await;
    let q = router.query;
    wait_metric(
        q,
        "ferrotrace_route_ring_size",
        |v| v == 3,
        Duration::from_secs(10),
    )
    .await;
    let mut c = client(router.otlp_grpc);

    // Phase 1: spans 0..4 of every trace, each span index in its own
    // requests; then the first requests again, as a client that did not
    // see the acknowledgement would resend them.
    for i in 0..4 {
        send_phase(&mut c, i, Duration::ZERO).await;
    }
    let first: Vec<u32> = (1..=CHUNK as u32).collect();
    for i in 0..4 {
        c.export(request(&first, i))
            .await
            .expect("resend acknowledged");
    }
    let s1 = wait_stored(&specs, (TRACES * 4) as usize, Duration::from_secs(20)).await;
    let owner1 = owners(&s1, 4);
    let share: Vec<usize> = (0..3)
        .map(|b| owner1.values().filter(|o| **o == b).count())
        .collect();
    eprintln!("traces per backend: {share:?}");
    for n in &share {
        assert!(*n > 60, "rendezvous spread the traces: {share:?}");
    }
    assert_eq!(
        metric(q, "ferrotrace_route_split_traces_total").await,
        Some(0)
    );

    // Phase 2, under load: spans 4..8 sent while backend 2 is killed with
    // `kill -9`. Every request is acknowledged by the router (its WAL).
    let killed = 2usize;
    let sender = {
        let mut c = c.clone();
        tokio::spawn(async move {
            for i in 4..8 {
                send_phase(&mut c, i, Duration::from_millis(15)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    procs[killed].take().expect("running").kill9();
    let killed_at = Instant::now();
    sender.await.expect("sender");
    wait_metric(
        q,
        "ferrotrace_route_ring_size",
        |v| v == 2,
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "backend out of the ring {:?} after kill -9",
        killed_at.elapsed()
    );
    // The kill happened under load: forwards to the killed backend failed
    // (and were retried from the router's WAL).
    let failures = metric(q, "ferrotrace_route_forward_failures_total")
        .await
        .unwrap();
    eprintln!("forward requests failed meanwhile: {failures}");
    assert!(failures > 0, "no forward to the killed backend failed");

    // Phase 3, with the ring at two backends: span 8 of every trace shows
    // where each trace goes now.
    send_phase(&mut c, 8, Duration::ZERO).await;
    let expected_forwards = u64::from(TRACES * 9) + 4 * CHUNK as u64;
    // Everything acknowledged has been forwarded and acknowledged by a
    // backend (the resent first requests count again: they were forwarded again).
    wait_metric(
        q,
        "ferrotrace_route_forwarded_spans_total",
        |v| v >= expected_forwards,
        Duration::from_secs(30),
    )
    .await;

    // The killed backend comes back on its ports: it replays its WAL.
    let mut p = specs[killed].spawn();
    p.wait_ready(Duration::from_secs(20)).await;
    procs[killed] = Some(p);
    let s = wait_stored(&specs, (TRACES * 9) as usize, Duration::from_secs(30)).await;

    // Nothing acknowledged is lost, no backend holds a span twice.
    let mut cross_dups = 0usize;
    let mut rerouted = BTreeSet::new();
    for t in 1..=TRACES {
        let o = owner1[&t];
        for i in 0..9 {
            let on: Vec<usize> = (0..3).filter(|b| s[*b].contains_key(&(t, i))).collect();
            assert!(!on.is_empty(), "trace {t} span {i} lost");
            for b in &on {
                assert_eq!(s[*b][&(t, i)], 1, "trace {t} span {i} twice on backend {b}");
            }
            if o != killed {
                // Minimal movement: a trace of a surviving backend never moves.
                assert_eq!(
                    on,
                    vec![o],
                    "trace {t} (backend {o}) span {i} went to {on:?}"
                );
            } else {
                if i < 4 {
                    assert!(
                        on.contains(&killed),
                        "trace {t} span {i} acknowledged by the killed backend"
                    );
                }
                if i == 8 {
                    assert!(
                        !on.contains(&killed),
                        "trace {t} span 8 sent with the backend out"
                    );
                }
                cross_dups += on.len() - 1;
            }
        }
        // Phase 3's span shows the trace's backend after the removal.
        let now = (0..3)
            .find(|b| s[*b].contains_key(&(t, 8)))
            .expect("span 8");
        if now != o {
            rerouted.insert(t);
        }
    }
    let of_killed: BTreeSet<u32> = owner1
        .iter()
        .filter(|(_, b)| **b == killed)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        rerouted, of_killed,
        "exactly the removed backend's traces moved"
    );
    let fraction = rerouted.len() as f64 / f64::from(TRACES);
    eprintln!(
        "rerouted {} of {TRACES} traces ({fraction:.3}; rendezvous share 1/3); \
         spans stored on two backends (acknowledged by the killed one but resent): {cross_dups}",
        rerouted.len()
    );
    assert!(
        (0.22..=0.45).contains(&fraction),
        "fraction rerouted {fraction} is far from 1/3"
    );
    let splits = metric(q, "ferrotrace_route_split_traces_total")
        .await
        .unwrap();
    assert_eq!(
        splits,
        rerouted.len() as u64,
        "every moved trace counted as split once"
    );

    // The restarted backend passed its health check: it is back in the
    // ring and takes its traces back (the router reconnects to it).
    wait_metric(
        q,
        "ferrotrace_route_ring_size",
        |v| v == 3,
        Duration::from_secs(10),
    )
    .await;
    send_phase(&mut c, 9, Duration::ZERO).await;
    let s = wait_stored(&specs, (TRACES * 10) as usize, Duration::from_secs(30)).await;
    for t in 1..=TRACES {
        let on: Vec<usize> = (0..3).filter(|b| s[*b].contains_key(&(t, 9))).collect();
        assert_eq!(
            on,
            vec![owner1[&t]],
            "trace {t} span 9 after the backend returned"
        );
    }
    let back = metric(q, "ferrotrace_route_split_traces_total")
        .await
        .unwrap()
        - splits;
    assert_eq!(back, of_killed.len() as u64, "moving back is a split too");

    // A surviving backend received each span once, except the client's own
    // resend: while a batch was retried because the killed backend failed,
    // the parts the survivors had acknowledged were not sent again (with
    // `acked_spans = 0` this fails: 1309 received for 1267 stored in one run).
    for b in (0..3).filter(|b| *b != killed) {
        let accepted = metric(specs[b].query, "ferrotrace_receiver_spans_accepted_total")
            .await
            .unwrap();
        let resent = first.iter().filter(|t| owner1[*t] == b).count() * 4;
        assert_eq!(
            accepted,
            (s[b].len() + resent) as u64,
            "backend {b} received spans more than once"
        );
    }
    rproc.sigterm(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_finds_its_backends_through_dns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bdir = dir.path().join("backend");
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&bdir).expect("dir");
    std::fs::create_dir_all(&rdir).expect("dir");
    let backend = Spec::new(&bdir, &bdir, Sink::Sqlite, "");
    let mut bp = backend.spawn();
    bp.wait_ready(Duration::from_secs(20)).await;
    // `localhost` resolves to 127.0.0.1 (and perhaps ::1, where nothing
    // listens: that backend stays out of the ring).
    let router = Spec::new(
        &rdir,
        &rdir,
        Sink::Sqlite,
        &format!(
            "[route]\ndns_name = \"localhost:{}\"\nhealth_port = {}\nhealth_interval_ms = 100\n",
            backend.otlp_grpc.port(),
            backend.query.port()
        ),
    );
    let mut rp = router.spawn();
    rp.wait_ready(Duration::from_secs(20)).await;
    assert!(
        metric(router.query, "ferrotrace_route_backends")
            .await
            .unwrap()
            >= 1
    );
    assert_eq!(
        metric(router.query, "ferrotrace_route_ring_size").await,
        Some(1)
    );
    let traces: Vec<u32> = (1..=10).collect();
    client(router.otlp_grpc)
        .export(request(&traces, 0))
        .await
        .expect("acknowledged");
    let start = Instant::now();
    while stored(&backend).await.len() < 10 {
        assert!(start.elapsed() < Duration::from_secs(20), "not forwarded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = rp.sigterm(Duration::from_secs(10));
    let _ = bp.sigterm(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_without_a_healthy_backend_refuses_with_unavailable_once_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on the backend's ports.
    let nobody = support::net::free_addr();
    let router = Spec::new(
        dir.path(),
        dir.path(),
        Sink::Sqlite,
        &format!(
            "[route]\nbackends = [\"{nobody}@{}\"]\nhealth_interval_ms = 50\n\
             [queue]\nmax_spans = 100\nwal_only_max_records = 10\n[shutdown]\ndrain_timeout_ms = 1000\n",
            nobody.port()
        ),
    );
    let mut p = router.spawn();
    // Not ready: no backend in the ring; the reason is spelled out.
    let start = Instant::now();
    let body = loop {
        if let Some((503, body, _)) =
            fault::get(router.query, "/readyz", Duration::from_secs(1)).await
        {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "router did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("no backend is in the ring"), "{body}");
    let mut c = client(router.otlp_grpc);
    // Acknowledged until the queue and the WAL-only allowance (10 requests)
    // are full, then UNAVAILABLE.
    let mut acked = 0;
    let refusal = loop {
        let traces: Vec<u32> = (acked * 40 + 1..=acked * 40 + 40).collect();
        match c.export(request(&traces, 0)).await {
            Ok(_) => acked += 1,
            Err(s) => break s,
        }
        // The queue (100 spans) and the few batches the pipeline holds
        // beyond it fill within a few hundred requests.
        assert!(
            acked < 2_000,
            "the router kept acknowledging with nowhere to send"
        );
    };
    assert!(acked >= 1, "the first request fits the queue");
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(refusal.message().contains("no backend"), "{refusal:?}");
    // What it holds stays in its WAL; shutdown does not wait for a backend.
    let _ = p.sigterm(Duration::from_secs(10));
}

/// The binary refuses a router configuration it cannot use, at start, with
/// exit code 2 and a message naming the problem.
#[test]
fn bad_router_configurations_fail_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("c.toml");
    let run = |toml: &str, args: &[&str]| {
        std::fs::write(&conf, toml).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrotrace-collector"))
            .arg("--config")
            .arg(&conf)
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    for (toml, args, needle) in [
        ("", vec!["--route-to", ""], "lists no backend"),
        ("", vec!["--route-to", " , "], "lists no backend"),
        ("", vec!["--route-to", "backend-1"], "expected host:port"),
        ("", vec!["--route-to", "a:4317,b:notaport"], "not a port"),
        ("", vec!["--route-to", "a:4317@x"], "not an HTTP port"),
        ("", vec!["--route-to", "a:4317,a:4317"], "twice"),
        ("[route]\nbackends = [\"\"]\n", vec![], "expected host:port"),
        (
            "[route]\nbackends = [\"a:1\"]\nunhealthy_after = 0\n",
            vec![],
            "unhealthy_after",
        ),
        ("[route]\nbakends = [\"a:1\"]\n", vec![], "bakends"),
        (
            "[sampling.tail]\nenabled = true\n",
            vec!["--route-to", "a:4317"],
            "on the backends",
        ),
        (
            "",
            vec!["--route-to", "a:4317", "check-config"],
            "router: forwards to a:4317",
        ),
    ] {
        let (code, text) = run(toml, &args);
        assert!(text.contains(needle), "{toml:?} {args:?}: {text}");
        let want = if args.contains(&"check-config") { 0 } else { 2 };
        assert_eq!(code, Some(want), "{toml:?} {args:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_sends_its_token_to_backends_that_require_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bdir = dir.path().join("backend");
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&bdir).expect("dir");
    std::fs::create_dir_all(&rdir).expect("dir");
    let backend = Spec::new(
        &bdir,
        &bdir,
        Sink::Sqlite,
        "[auth]\nreceiver_tokens = [\"s3cret-token\"]\n",
    );
    let mut bp = backend.spawn();
    bp.wait_ready(Duration::from_secs(20)).await;
    let token = rdir.join("backend.token");
    std::fs::write(&token, "# for the backends\n\ns3cret-token\n").expect("token");
    let router = Spec::new(
        &rdir,
        &rdir,
        Sink::Sqlite,
        &format!(
            "[route]\nbackends = [\"{}@{}\"]\nhealth_interval_ms = 100\ntoken_file = \"{}\"\n",
            backend.otlp_grpc,
            backend.query.port(),
            token.display()
        ),
    );
    let mut rp = router.spawn();
    rp.wait_ready(Duration::from_secs(20)).await;
    let traces: Vec<u32> = (1..=10).collect();
    client(router.otlp_grpc)
        .export(request(&traces, 0))
        .await
        .expect("acknowledged");
    let start = Instant::now();
    loop {
        if stored(&backend).await.len() == 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not forwarded; router failures: {:?}",
            metric(router.query, "ferrotrace_route_forward_failures_total").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(router.query, "ferrotrace_route_forward_failures_total").await,
        Some(0)
    );
    let _ = rp.sigterm(Duration::from_secs(10));
    let _ = bp.sigterm(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_backend_makes_the_router_hold_and_push_back_then_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bdir = dir.path().join("backend");
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&bdir).expect("dir");
    std::fs::create_dir_all(&rdir).expect("dir");
    // A backend over its memory limit (8 MiB: any collector process is
    // above its 80% soft limit) refuses every request with
    // RESOURCE_EXHAUSTED, and stays ready: saturated, not broken.
    let backend = Spec::new(
        &bdir,
        &bdir,
        Sink::Sqlite,
        "[limits]\nmemory_limit_mib = 8\n",
    );
    let mut bp = backend.spawn();
    bp.wait_ready(Duration::from_secs(20)).await;
    let router = Spec::new(
        &rdir,
        &rdir,
        Sink::Sqlite,
        &format!(
            "[route]\nbackends = [\"{}@{}\"]\nhealth_interval_ms = 100\n\
             [queue]\nmax_spans = 200\nwal_only_max_records = 10\n[shutdown]\ndrain_timeout_ms = 1000\n",
            backend.otlp_grpc,
            backend.query.port()
        ),
    );
    let mut rp = router.spawn();
    rp.wait_ready(Duration::from_secs(20)).await;
    let mut c = client(router.otlp_grpc);
    let mut acked: Vec<u32> = Vec::new();
    let refusal = loop {
        let n = acked.len() as u32;
        let traces: Vec<u32> = (n + 1..=n + 25).collect();
        match c.export(request(&traces, 0)).await {
            Ok(_) => acked.extend(traces),
            Err(s) => break s,
        }
        assert!(acked.len() < 50_000, "the router never pushed back");
    };
    // The backend is in the ring, so this is backpressure (429), not 503.
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert_eq!(
        metric(router.query, "ferrotrace_route_ring_size").await,
        Some(1)
    );
    assert_eq!(
        metric(router.query, "ferrotrace_route_forwarded_spans_total").await,
        Some(0)
    );
    let (_, text, _) = fault::get(router.query, "/metrics", Duration::from_secs(5))
        .await
        .expect("metrics");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferrotrace_route_forward_failures_total")
                && l.contains("code=\"ResourceExhausted\"")),
        "no RESOURCE_EXHAUSTED forward counted"
    );

    // The backend restarts with room: everything the router acknowledged
    // (held in its WAL meanwhile) drains to it, each span once.
    bp.kill9();
    std::fs::write(&backend.config_file, "[batcher]\nmax_delay_ms = 20\n").expect("config");
    let mut bp = backend.spawn();
    bp.wait_ready(Duration::from_secs(20)).await;
    wait_metric(
        router.query,
        "ferrotrace_route_forwarded_spans_total",
        |v| v >= acked.len() as u64,
        Duration::from_secs(30),
    )
    .await;
    let last = *acked.last().expect("some acknowledged");
    let start = Instant::now();
    loop {
        let got = stored_upto(&backend, last).await;
        assert!(got.values().all(|n| *n == 1), "a span stored twice");
        if got.len() == acked.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {} stored",
            got.len(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("held and drained {} acknowledged spans", acked.len());
    let _ = rp.sigterm(Duration::from_secs(10));
    let _ = bp.sigterm(Duration::from_secs(10));
}

/// A router forwards OTLP protobuf as bytes (`route.reslice`, the default):
/// what the backend stores is exactly what decoding the client's request
/// gives (every field, resources and scopes included, for spans of two
/// resources and three scopes), and the router answers an invalid span as
/// a collector does (partial success with the decoder's reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_forwards_protobuf_bytes_that_decode_as_the_clients_request() {
    use ferrotrace_collector::receiver::{decode, LimitsConfig, RecordFormat};
    use opentelemetry_proto::tonic::trace::v1::Span as PSpan;
    use prost::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let bdir = dir.path().join("backend");
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&bdir).expect("dir");
    std::fs::create_dir_all(&rdir).expect("dir");
    let backend = Spec::new(&bdir, &bdir, Sink::Sqlite, "");
    let mut bp = backend.spawn();
    bp.wait_ready(Duration::from_secs(20)).await;
    let router = Spec::new(
        &rdir,
        &rdir,
        Sink::Sqlite,
        &format!(
            "[route]\nbackends = [\"{}@{}\"]\nhealth_interval_ms = 100\n",
            backend.otlp_grpc,
            backend.query.port()
        ),
    );
    let mut rp = router.spawn();
    rp.wait_ready(Duration::from_secs(20)).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        - 60_000_000_000;
    let at_now = |mut r: ExportTraceServiceRequest| {
        for s in r
            .resource_spans
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
        {
            s.start_time_unix_nano = now + (s.start_time_unix_nano % 1_000_000);
            s.end_time_unix_nano = now + (s.end_time_unix_nano % 1_000_000);
            for e in &mut s.events {
                e.time_unix_nano = now + 1;
            }
        }
        r
    };
    let mut req = at_now(ingest_util::request_with(1, 3));
    let second = at_now(ingest_util::request_with(2, 2));
    let mut other = second.resource_spans[0].clone();
    other.resource.as_mut().expect("resource").attributes[0]
        .value
        .as_mut()
        .expect("value")
        .value = Some(
        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("svc-other".into()),
    );
    // A second scope in the first resource, holding one span of trace 2.
    let mut scope2 = req.resource_spans[0].scope_spans[0].clone();
    scope2.scope.as_mut().expect("scope").name = "scope-2".into();
    scope2.spans = vec![other.scope_spans[0].spans.remove(1)];
    req.resource_spans[0].scope_spans.push(scope2);
    // An invalid span (a 3-byte trace id) among the valid ones.
    let invalid = PSpan {
        trace_id: vec![1, 2, 3],
        ..req.resource_spans[0].scope_spans[0].spans[0].clone()
    };
    req.resource_spans[0].scope_spans[0]
        .spans
        .insert(1, invalid);
    req.resource_spans.push(other);
    let body = req.encode_to_vec();
    let want = decode(RecordFormat::OtlpProto, &body, &LimitsConfig::default()).expect("decodes");
    assert_eq!((want.spans.len(), want.rejected), (5, 1));

    let answer = client(router.otlp_grpc)
        .export(req)
        .await
        .expect("acknowledged")
        .into_inner();
    let ps = answer
        .partial_success
        .expect("the invalid span is reported");
    assert_eq!(ps.rejected_spans, 1);
    assert_eq!(ps.error_message, want.error_message());

    let store = connecting::open(&backend.store_config()).expect("open the backend's store");
    let start = Instant::now();
    let stored = loop {
        let got = store
            .get_traces(&[trace_id(1), trace_id(2)], None)
            .await
            .expect("read");
        let n: usize = got.iter().map(|(_, s)| s.len()).sum();
        if n == 5 {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{n} of 5 spans stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut got: Vec<_> = stored.into_iter().flat_map(|(_, s)| s).collect();
    let mut want = want.spans;
    got.sort_by_key(|s| (s.trace_id, s.span_id));
    want.sort_by_key(|s| (s.trace_id, s.span_id));
    assert_eq!(got, want, "stored as the client's request decodes");
    wait_metric(
        router.query,
        "ferrotrace_route_forwarded_spans_total",
        |v| v == 5,
        Duration::from_secs(5),
    )
    .await;
    let _ = rp.sigterm(Duration::from_secs(10));
    let _ = bp.sigterm(Duration::from_secs(10));
}

/// Router → backend TLS (`route.tls_ca_file`) with a bearer token: a
/// backend serving TLS (a throwaway CA and certificate made with
/// `openssl`) and requiring a token passes the router's health checks over
/// HTTPS and receives every span over gRPC with TLS; a router trusting
/// another CA never lets it into its ring (the handshake fails, counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_forwards_over_tls_and_refuses_a_backend_its_ca_did_not_sign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = support::certs::make(dir.path());
    let bdir = dir.path().join("backend");
    std::fs::create_dir_all(&bdir).expect("dir");
    let backend = Spec::new(
        &bdir,
        &bdir,
        Sink::Sqlite,
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [auth]\nreceiver_tokens = [\"s3cret-token\"]\n",
            certs.cert.display(),
            certs.key.display()
        ),
    );
    let mut bp = backend.spawn();
    let token = dir.path().join("backend.token");
    std::fs::write(&token, "s3cret-token\n").expect("token");
    let router_with = |name: &str, ca: &std::path::Path| {
        let rdir = dir.path().join(name);
        std::fs::create_dir_all(&rdir).expect("dir");
        Spec::new(
            &rdir,
            &rdir,
            Sink::Sqlite,
            &format!(
                "[route]\nbackends = [\"{}@{}\"]\nhealth_interval_ms = 100\n\
                 token_file = \"{}\"\ntls_ca_file = \"{}\"\n",
                backend.otlp_grpc,
                backend.query.port(),
                token.display(),
                ca.display()
            ),
        )
    };
    let router = router_with("router", &certs.ca);
    let mut rp = router.spawn();
    // Ready only once the backend passed a health check, over HTTPS.
    rp.wait_ready(Duration::from_secs(30)).await;
    let traces: Vec<u32> = (1..=10).collect();
    client(router.otlp_grpc)
        .export(request(&traces, 0))
        .await
        .expect("acknowledged");
    let start = Instant::now();
    while stored(&backend).await.len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not forwarded over TLS; router failures: {:?}",
            metric(router.query, "ferrotrace_route_forward_failures_total").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(router.query, "ferrotrace_route_forward_failures_total").await,
        Some(0)
    );

    let wrong = router_with("router-other-ca", &certs.other_ca);
    let mut wp = wrong.spawn();
    wait_metric(
        wrong.query,
        "ferrotrace_route_health_check_failures_total",
        |n| n >= 5,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        metric(wrong.query, "ferrotrace_route_ring_size").await,
        Some(0),
        "a backend whose certificate the router cannot verify stays out of the ring"
    );
    let _ = wp.sigterm(Duration::from_secs(10));
    let _ = rp.sigterm(Duration::from_secs(10));
    let _ = bp.sigterm(Duration::from_secs(10));
}

/// A TCP relay in front of a backend that can start swallowing everything
/// the backend answers (`blackhole`), on open connections and new ones:
/// the backend still receives and stores, its answers never arrive.
struct Relay {
    addr: SocketAddr,
    blackhole: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn relay(upstream: SocketAddr) -> Relay {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let blackhole = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hole = blackhole.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            let hole = hole.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !hole.load(Relaxed) && cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Relay { addr, blackhole }
}

/// The one case in which a span is stored by two backends: a backend
/// stores a forwarded part but its acknowledgement never reaches the
/// router (here a relay swallows its answers), and the backend leaves the
/// ring (its health checks stop answering) before the router's retry,
/// which then goes to the trace's next owner. Nothing is lost (at least
/// once); each of the first backend's traces ends up with that span in
/// both stores. Separate SQLite stores show it; a shared PostgreSQL store
/// absorbs it by its key, a shared ClickHouse store keeps a second row
/// until a merge (docs/scaling.md, "Guarantees").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_and_a_ring_change_store_a_span_on_two_backends() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("tempdir");
    let specs: Vec<Spec> = ["a", "b"]
        .iter()
        .map(|n| {
            let d = dir.path().join(n);
            std::fs::create_dir_all(&d).expect("dir");
            Spec::new(&d, &d, Sink::Sqlite, "")
        })
        .collect();
    let mut procs = Vec::new();
    for s in &specs {
        let mut p = s.spawn();
        p.wait_ready(Duration::from_secs(20)).await;
        procs.push(p);
    }
    let grpc = relay(specs[0].otlp_grpc).await;
    let health = relay(specs[0].query).await;
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&rdir).expect("dir");
    let router = Spec::new(
        &rdir,
        &rdir,
        Sink::Sqlite,
        &format!(
            "[route]\nbackends = [\"{}@{}\", \"{}@{}\"]\nhealth_interval_ms = 100\n\
             health_timeout_ms = 200\nunhealthy_after = 3\nforward_timeout_ms = 1000\n",
            grpc.addr,
            health.addr.port(),
            specs[1].otlp_grpc,
            specs[1].query.port()
        ),
    );
    let mut rp = router.spawn();
    rp.wait_ready(Duration::from_secs(20)).await;
    wait_metric(
        router.query,
        "ferrotrace_route_ring_size",
        |n| n == 2,
        Duration::from_secs(10),
    )
    .await;
    let traces: Vec<u32> = (1..=40).collect();
    let mut c = client(router.otlp_grpc);
    // Span 0 of every trace, answered normally: each trace has one owner.
    c.export(request(&traces, 0)).await.expect("acknowledged");
    let before = wait_stored(&specs, 40, Duration::from_secs(20)).await;
    let on_a: BTreeSet<u32> = before[0].keys().map(|(t, _)| *t).collect();
    assert!(
        !on_a.is_empty() && on_a.len() < 40,
        "both backends own traces"
    );
    // Backend a's answers are swallowed from now on; span 1 reaches it.
    grpc.blackhole.store(true, Relaxed);
    c.export(request(&traces, 1)).await.expect("acknowledged");
    let has = |m: &BTreeMap<(u32, u32), usize>, t: u32| m.contains_key(&(t, 1));
    let start = Instant::now();
    loop {
        let a = stored(&specs[0]).await;
        if on_a.iter().all(|t| has(&a, *t)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "backend a did not store span 1 of its traces"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its acknowledgement never came; now its health checks go unanswered
    // too: it leaves the ring, and the retry goes to each trace's next owner.
    health.blackhole.store(true, Relaxed);
    let start = Instant::now();
    let (a, b) = loop {
        let (a, b) = (stored(&specs[0]).await, stored(&specs[1]).await);
        if on_a.iter().all(|t| has(&b, *t)) {
            break (a, b);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the retry did not reach backend b; router failures: {:?}",
            metric(router.query, "ferrotrace_route_forward_failures_total").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for t in &traces {
        assert!(has(&a, *t) || has(&b, *t), "span 1 of trace {t} lost");
    }
    let twice: Vec<u32> = traces
        .iter()
        .copied()
        .filter(|t| has(&a, *t) && has(&b, *t))
        .collect();
    println!(
        "span 1 stored on both backends for {} of 40 traces (backend a owned {})",
        twice.len(),
        on_a.len()
    );
    assert_eq!(twice, on_a.iter().copied().collect::<Vec<_>>());
    assert!(
        a.values().chain(b.values()).all(|&n| n == 1),
        "within one store every span is one row"
    );
    assert!(
        metric(router.query, "ferrotrace_route_split_traces_total")
            .await
            .unwrap_or(0)
            >= on_a.len() as u64,
        "the moved traces are counted as split"
    );
    let _ = rp.sigterm(Duration::from_secs(10));
    for mut p in procs {
        let _ = p.sigterm(Duration::from_secs(10));
    }
}
