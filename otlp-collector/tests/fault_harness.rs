//! The fault harness of issue 11: the reliability promises of
//! docs/collector.md made executable against the real collector binary, with
//! concurrent senders that record every acknowledged trace and an
//! exactly-once check through the store API at the end of each scenario.
//! docs/reliability.md lists the scenarios, the commands for the long runs
//! (the `#[ignore]`d tests, sized by environment variables) and their results.
//!
//! The scenarios run one at a time (a process-wide lock): each one loads the
//! machine, and on two cores they would disturb each other's timing.

mod fault;
mod ingest_util;
mod support;

use std::time::{Duration, Instant};

use fault::cpu::CpuSnapshot;
use fault::load::{
    acked_traces, acked_with_start, counts, export, Event, Load, LoadShape, Outcome,
};
use fault::proc::{Sink, Spec};
use fault::{env_u64, get, metric, percentile, verify, Rng};
use support::postgres::PgServer;
use support::smallfs::SmallFs;

// A tokio lock: each test has its own runtime, and the guard is held across awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Spans per request (and per trace) in the crash, shutdown, outage and
/// disk scenarios: a typical SDK batch is a few hundred spans of many
/// traces; one trace per request keeps the bookkeeping exact.
const SPANS: u32 = 20;

/// Acknowledgements among `events` answered in `[from, to)`.
fn acked_between(events: &[Event], from: Instant, to: Instant) -> usize {
    events
        .iter()
        .filter(|e| e.outcome == Outcome::Acked && e.at >= from && e.at < to)
        .count()
}

/// Waits until `load` has more than `n` acknowledgements.
async fn wait_acked_beyond(load: &Load, n: usize, within: Duration) {
    let start = Instant::now();
    while load.acked() <= n {
        assert!(
            start.elapsed() < within,
            "no acknowledgement within {within:?} (stuck at {n})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- crash cycles

/// `cycles` times: load → `kill -9` at a random moment → restart on the same
/// data dir and ports; then every acknowledged trace stored exactly once.
async fn crash_cycles(sink: Sink, cycles: u64) {
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(&dir.path().join("data"), dir.path(), sink, "");
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(4, SPANS));
    let mut restarts = Vec::new();
    for cycle in 1..=cycles {
        // Under load: this incarnation has acknowledged something, then a
        // random moment later it dies.
        wait_acked_beyond(&load, load.acked(), Duration::from_secs(30)).await;
        tokio::time::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(2500)))
            .await;
        c.kill9();
        let acked_at_kill = load.acked();
        tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(500))).await;
        c = spec.spawn();
        let ready = c.wait_ready(Duration::from_secs(60)).await;
        restarts.push(ready);
        eprintln!("cycle {cycle}: killed after {acked_at_kill} acknowledged requests, ready again in {ready:?}");
    }
    wait_acked_beyond(&load, load.acked(), Duration::from_secs(30)).await;
    let events = load.stop().await;
    let acked = acked_traces(&events);
    let [ok, exhausted, unavailable, transport] = counts(&events);
    let took = verify::exactly_once(
        &spec.store_config(),
        &acked,
        SPANS,
        Duration::from_secs(120),
    )
    .await;
    restarts.sort();
    eprintln!(
        "{cycles} kill -9 cycles: {ok} requests ({} spans) acknowledged, {exhausted} refused 429, \
         {unavailable} 503, {transport} without answer; all stored exactly once \
         ({took:?} after the load stopped); restart to ready: median {:?}, max {:?}",
        acked.len() as u64 * u64::from(SPANS),
        restarts[restarts.len() / 2],
        restarts.last().unwrap()
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success(), "clean exit after the test: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_cycles_sqlite() {
    let _serial = SERIAL.lock().await;
    crash_cycles(Sink::Sqlite, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_cycles_postgres() {
    let _serial = SERIAL.lock().await;
    let Some(pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("crash").await;
    crash_cycles(Sink::Postgres(url), 3).await;
}

/// The documented run: `FERROTRACE_CRASH_CYCLES` (default 20) cycles on each sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run (minutes); see docs/reliability.md"]
async fn crash_cycles_long() {
    let _serial = SERIAL.lock().await;
    let n = env_u64("FERROTRACE_CRASH_CYCLES", 20);
    crash_cycles(Sink::Sqlite, n).await;
    if let Some(pg) = PgServer::start() {
        let url = pg.fresh_db("crash").await;
        crash_cycles(Sink::Postgres(url), n).await;
    }
}

// ------------------------------------------------------- graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_in_time_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(&dir.path().join("data"), dir.path(), Sink::Sqlite, "");
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    // Larger requests than the crash test, so that the sink has a backlog
    // to drain when the signal comes.
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(8, 100));
    wait_acked_beyond(&load, 0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = metric(spec.query, "ferrotrace_queue_spans")
        .await
        .unwrap_or(0);
    let (status, took) = c.sigterm(Duration::from_secs(30));
    // The senders keep going through the shutdown (503s, then refused
    // connections), as real clients would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = load.stop().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // shutdown.drain_timeout_ms (10 s by default) bounds the drain; the
    // rest of the exit (closing listeners, syncing the WAL) is quick.
    assert!(
        took < Duration::from_secs(15),
        "SIGTERM to exit took {took:?}"
    );

    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let replayed = metric(
        spec.query,
        "ferrotrace_receiver_spans_accepted_total{receiver=\"wal\",protocol=\"replay\"}",
    )
    .await
    .unwrap_or(0);
    let acked = acked_traces(&events);
    let [ok, exhausted, unavailable, transport] = counts(&events);
    verify::exactly_once(&spec.store_config(), &acked, 100, Duration::from_secs(60)).await;
    eprintln!(
        "SIGTERM with {queued} spans queued: exit 0 after {took:?}; {ok} requests acknowledged \
         ({exhausted} 429, {unavailable} 503, {transport} without answer); {replayed} spans \
         replayed from the WAL at restart; all stored exactly once"
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
}

// ------------------------------------------------------------- sink outage

/// PostgreSQL stopped for `outage` under load and started again, with a WAL
/// of `wal_max_bytes` (`None`: the default, 1 GiB).
async fn sink_outage(outage: Duration, wal_max_bytes: Option<u64>) {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("outage").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = wal_max_bytes
        .map(|b| {
            format!(
                "[wal]\nmax_bytes = {b}\nsegment_bytes = {}\n",
                (b / 8).max(65536)
            )
        })
        .unwrap_or_default();
    let spec = Spec::new(
        &dir.path().join("data"),
        dir.path(),
        Sink::Postgres(url),
        &wal,
    );
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(4, SPANS));
    wait_acked_beyond(&load, 0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.stop_fast();
    let down = Instant::now();
    let mut not_ready_at = None;
    let mut readyz_while_down = Vec::new();
    let (mut wal_peak, mut queue_peak) = (0, 0);
    while down.elapsed() < outage {
        let answer = get(spec.query, "/readyz", Duration::from_secs(2)).await;
        if let Some((503, body, _)) = &answer {
            if not_ready_at.is_none() && body.contains("postgres") {
                not_ready_at = Some(down.elapsed());
            }
        }
        if not_ready_at.is_some() {
            readyz_while_down.push(answer.map(|a| (a.0, a.1)));
        }
        wal_peak = wal_peak.max(
            metric(spec.query, "ferrotrace_wal_bytes")
                .await
                .unwrap_or(0),
        );
        queue_peak = queue_peak.max(
            metric(spec.query, "ferrotrace_queue_spans")
                .await
                .unwrap_or(0),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pg.restart();
    let up = Instant::now();
    let ready_after = c.wait_ready(Duration::from_secs(60)).await;
    wait_acked_beyond(&load, load.acked(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = load.stop().await;

    let not_ready_at = not_ready_at.expect("/readyz never reported the lost PostgreSQL");
    let detected = down + not_ready_at;
    for r in &readyz_while_down {
        assert!(
            matches!(r, Some((503, _))),
            "/readyz during the outage, after reporting it: {r:?}"
        );
    }
    let acked_while_down = acked_between(&events, detected, up);
    let refusals: Vec<&Event> = events
        .iter()
        .filter(|e| e.at >= detected && e.at < up && matches!(e.outcome, Outcome::Exhausted(_)))
        .collect();
    let others: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.at >= down
                && e.at < up
                && matches!(e.outcome, Outcome::Unavailable(_) | Outcome::Transport(_))
        })
        .take(3)
        .collect();
    assert!(
        others.is_empty(),
        "answers other than 200/429 during the outage: {others:?}"
    );
    assert!(
        acked_while_down > 0,
        "nothing acknowledged into the WAL while PostgreSQL was down"
    );
    let first_refusal = refusals.first().map(|e| (e.at - down, e.outcome.clone()));
    if wal_max_bytes.is_some() {
        let (_, why) = first_refusal.clone().expect("the small WAL never filled");
        assert!(
            matches!(&why, Outcome::Exhausted(m) if m.contains("write-ahead log full")),
            "{why:?}"
        );
    }
    if wal_max_bytes.is_none() {
        // The WAL, not the in-memory queue, is the outage budget: with the
        // default WAL the queue filling up refuses nothing.
        let queue_full: Vec<&Event> = refusals
            .iter()
            .copied()
            .filter(|e| matches!(&e.outcome, Outcome::Exhausted(m) if m.contains("queue full")))
            .take(3)
            .collect();
        assert!(
            queue_full.is_empty(),
            "refused for a full queue while the WAL had room: {queue_full:?}"
        );
    }
    let acked = acked_traces(&events);
    let took = verify::exactly_once(
        &spec.store_config(),
        &acked,
        SPANS,
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "PostgreSQL down {outage:?}: /readyz 503 after {not_ready_at:?}; {acked_while_down} requests \
         ({} spans) acknowledged while down; first refusal {first_refusal:?}; {} refusals while \
         down; WAL peak {} MiB, queue peak {queue_peak} spans; ready {ready_after:?} after \
         PostgreSQL was back; all {} acknowledged traces stored exactly once ({took:?} after \
         the load stopped)",
        acked_while_down as u64 * u64::from(SPANS),
        refusals.len(),
        wal_peak >> 20,
        acked.len()
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_under_load_quick() {
    let _serial = SERIAL.lock().await;
    // The default WAL (1 GiB), not a small one: with closed-loop senders a
    // small WAL is already held full by the sink's backlog when the database
    // stops on a machine where the senders outrun the sink (a quiet CI
    // machine), and then nothing can be acknowledged during the outage
    // although the collector behaves as designed. The refusal with
    // "write-ahead log full" is covered by `pipeline::wal`'s unit tests and
    // by the long run with `FERROTRACE_OUTAGE_WAL_BYTES`.
    sink_outage(Duration::from_secs(10), None).await;
}

/// The documented run: `FERROTRACE_OUTAGE_SECS` (default 60) seconds with
/// the default WAL limit (`FERROTRACE_OUTAGE_WAL_BYTES` to set one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run (about 2 minutes); see docs/reliability.md"]
async fn postgres_outage_under_load_long() {
    let _serial = SERIAL.lock().await;
    let wal = std::env::var("FERROTRACE_OUTAGE_WAL_BYTES")
        .ok()
        .and_then(|v| v.parse().ok());
    sink_outage(
        Duration::from_secs(env_u64("FERROTRACE_OUTAGE_SECS", 60)),
        wal,
    )
    .await;
}

// ---------------------------------------------------------- hung database

/// A database that accepts connections and never answers (PostgreSQL frozen
/// with SIGSTOP mid-load): each stalled write is abandoned after
/// `batcher.write_timeout_ms`, counted as `timeout` and retried; `/readyz`
/// reports the sink; acknowledgements continue into the WAL; once the
/// server runs again every acknowledged span is stored exactly once, the
/// abandoned writes that the server then finishes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_database_writes_time_out_are_retried_and_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("hung").await;
    let dir = tempfile::tempdir().expect("tempdir");
    const TIMEOUT_MS: u64 = 1500;
    let spec = Spec::new(
        &dir.path().join("data"),
        dir.path(),
        Sink::Postgres(url),
        // Continues the shared settings' `[batcher]` table (fault/proc.rs).
        &format!("write_timeout_ms = {TIMEOUT_MS}\n"),
    );
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(4, SPANS));
    wait_acked_beyond(&load, 0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let timeouts = |q| async move {
        metric(q, "ferrotrace_sink_errors_total{kind=\"timeout\"}")
            .await
            .unwrap_or(0)
    };
    let timeouts_before = timeouts(spec.query).await;

    pg.freeze();
    let frozen = Instant::now();
    let hang = Duration::from_secs(8);
    let mut not_ready_at = None;
    let mut healthz = Vec::new();
    while frozen.elapsed() < hang {
        let t = Instant::now();
        let h = get(spec.query, "/healthz", Duration::from_secs(2)).await;
        healthz.push((h.map(|a| a.0), t.elapsed()));
        if not_ready_at.is_none() {
            if let Some((503, body, _)) = get(spec.query, "/readyz", Duration::from_secs(2)).await {
                if body.contains("sink:") {
                    not_ready_at = Some(frozen.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let timed_out = timeouts(spec.query).await - timeouts_before;
    let acked_while_hung = load.acked();
    pg.thaw();
    let thawed = Instant::now();
    let ready_after = c.wait_ready(Duration::from_secs(60)).await;
    wait_acked_beyond(&load, load.acked(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = load.stop().await;

    let not_ready_at =
        not_ready_at.expect("/readyz never reported the timed-out writes to the hung database");
    assert!(
        not_ready_at < Duration::from_millis(TIMEOUT_MS) * 3 + Duration::from_secs(2),
        "/readyz reported the hung database only after {not_ready_at:?}"
    );
    assert!(timed_out > 0, "no sink write was counted as timed out");
    assert!(
        healthz.iter().all(|(s, _)| *s == Some(200)),
        "/healthz while the database hung: {healthz:?}"
    );
    let acked_during = acked_between(&events, frozen, thawed);
    assert!(
        acked_during > 0,
        "nothing acknowledged into the WAL while the database hung ({acked_while_hung} in all)"
    );
    let others: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Unavailable(_) | Outcome::Transport(_)))
        .take(3)
        .collect();
    assert!(others.is_empty(), "answers other than 200/429: {others:?}");
    let acked = acked_traces(&events);
    let took = verify::exactly_once(
        &spec.store_config(),
        &acked,
        SPANS,
        Duration::from_secs(180),
    )
    .await;
    let mut lat: Vec<Duration> = healthz.iter().map(|h| h.1).collect();
    eprintln!(
        "PostgreSQL frozen {hang:?}: {timed_out} writes abandoned after {TIMEOUT_MS} ms; /readyz \
         503 after {not_ready_at:?}; {acked_during} requests acknowledged while it hung; \
         /healthz p50 {:?} max {:?}; ready {ready_after:?} after the thaw; all {} acknowledged \
         traces stored exactly once ({took:?} after the load stopped)",
        percentile(&mut lat, 50.0),
        percentile(&mut lat, 100.0),
        acked.len()
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
}

// --------------------------------------------------------------- disk full

/// The data dir (WAL and SQLite store, with the default size budget: half
/// the disk, and the default free-space reserve: a quarter of it) on a
/// 64 MiB file system, filled to the last byte under load and freed again.
/// Writes are refused with 503 / `UNAVAILABLE` while the disk is full, the
/// collector resumes by itself, and every acknowledged trace is stored
/// exactly once unless it is older than what size retention evicted
/// (oldest first) to keep the store in its budget and the disk usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_filled_under_load_refuses_then_recovers_dropping_only_the_oldest() {
    let _serial = SERIAL.lock().await;
    let Some(fs) = SmallFs::mount(64) else {
        return;
    };
    let conf = tempfile::tempdir().expect("tempdir");
    // Small segments, so that space comes back in small steps as the sink
    // commits; the SQLite store shares the small file system.
    let spec = Spec::new(
        &fs.path().join("data"),
        conf.path(),
        Sink::Sqlite,
        "[wal]\nsegment_bytes = 4194304\n",
    );
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, LoadShape::closed(4, SPANS));
    wait_acked_beyond(&load, 0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let fill_start = Instant::now();
    let filled = fs.fill();
    let full = Instant::now();
    let mut reported = None;
    while full.elapsed() < Duration::from_secs(4) {
        if let Some((503, body, _)) = get(spec.query, "/readyz", Duration::from_secs(2)).await {
            if reported.is_none() && body.contains("disk full") {
                reported = Some(full.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let free_when_full = fs.available();
    fs.unfill();
    let freed = Instant::now();
    wait_acked_beyond(&load, load.acked(), Duration::from_secs(30)).await;
    let resumed = freed.elapsed();
    let ready_again = c.wait_ready(Duration::from_secs(30)).await + resumed;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = load.stop().await;

    let while_full = |e: &&Event| e.at >= full && e.at < freed;
    let refused: Vec<&Event> = events
        .iter()
        .filter(while_full)
        .filter(|e| matches!(&e.outcome, Outcome::Unavailable(m) if m.contains("No space left on device")))
        .collect();
    let acked_full = events
        .iter()
        .filter(while_full)
        .filter(|e| e.outcome == Outcome::Acked)
        .count();
    let [ok, exhausted, unavailable, transport] = counts(&events);
    assert_eq!(transport, 0, "the collector kept answering");
    assert!(
        reported.is_some(),
        "/readyz did not report the full disk within 4 s"
    );
    assert!(
        !refused.is_empty(),
        "no write refused with 503 / UNAVAILABLE (No space left on device) on the full disk"
    );
    let acked = acked_with_start(&events);
    let by_reason = |r: &'static str| {
        let q = spec.query;
        async move {
            metric(
                q,
                &format!("ferrotrace_storage_evicted_spans_total{{reason=\"{r}\"}}"),
            )
            .await
            .unwrap_or(0)
        }
    };
    let (size, disk_full) = (by_reason("size").await, by_reason("disk_full").await);
    let found = verify::exactly_once_unless_evicted(
        &spec.store_config(),
        spec.query,
        0,
        &acked,
        SPANS,
        Duration::from_secs(30),
    )
    .await;
    // Nothing acknowledged was lost or corrupted on disk either: a crash
    // now, and everything is still there after the restart. Evictions go on
    // while the disk is under its reserve; the restarted collector does not
    // know what its predecessor evicted, so the floor is taken once they stop.
    let floor = verify::settled_eviction_cutoff_ns(
        spec.query,
        Duration::from_secs(3),
        Duration::from_secs(30),
    )
    .await
    .max(found.cutoff_ns);
    c.kill9();
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(30)).await;
    let after = verify::exactly_once_unless_evicted(
        &spec.store_config(),
        spec.query,
        floor,
        &acked,
        SPANS,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        after.whole > 0,
        "the newest acknowledged traces are stored: {after:?}"
    );
    eprintln!(
        "disk full on a 64 MiB {} ({filled} filler bytes in {:?}, {free_when_full} bytes free \
         at the end of the full phase): /readyz reported it after {reported:?}; {} writes refused \
         with 503/UNAVAILABLE and {acked_full} acknowledged while full; acknowledging again \
         {resumed:?} and ready {ready_again:?} after space was freed; overall {ok} acknowledged, \
         {exhausted} 429, {unavailable} 503; of {} acknowledged traces {} stored exactly once \
         and {} older than the eviction cutoff evicted (spans evicted for size {size}, for the \
         full disk {disk_full}); after kill -9 and restart {} whole, {} evicted",
        fs.kind,
        full - fill_start,
        refused.len(),
        acked.len(),
        found.whole,
        found.evicted,
        after.whole,
        after.evicted,
    );
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
}

// ---------------------------------------------------------------- overload

/// Spans per request in the overload scenario (the load generator's default).
const OVERLOAD_SPANS: u32 = 200;

/// Spans per second the sink writes, measured over `window` after a `warmup`.
async fn sink_rate(spec: &Spec, warmup: Duration, window: Duration) -> f64 {
    tokio::time::sleep(warmup).await;
    let series = "ferrotrace_sink_spans_written_total";
    let (a, t0) = (
        metric(spec.query, series).await.expect("metrics"),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (b, t1) = (
        metric(spec.query, series).await.expect("metrics"),
        Instant::now(),
    );
    (b - a) as f64 / (t1 - t0).as_secs_f64()
}

/// Latencies of `GET path` every 200 ms until `stop`; `None` for no answer
/// (or not 200) within 5 s.
async fn probe(
    spec_query: std::net::SocketAddr,
    path: &'static str,
    until: Instant,
) -> Vec<Option<Duration>> {
    let mut out = Vec::new();
    while Instant::now() < until {
        let r = get(spec_query, path, Duration::from_secs(5)).await;
        out.push(r.filter(|r| r.0 == 200).map(|r| r.2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out
}

fn summary(name: &str, xs: &[Option<Duration>]) -> String {
    let mut ok: Vec<Duration> = xs.iter().flatten().copied().collect();
    let n = ok.len();
    format!(
        "{name}: {n}/{} answered, p50 {:?} p99 {:?} max {:?}",
        xs.len(),
        percentile(&mut ok, 50.0),
        percentile(&mut ok, 99.0),
        ok.last().copied().unwrap_or_default()
    )
}

/// One sample of the overloaded collector's pipeline.
struct Sample {
    at: Instant,
    /// Spans in the in-memory queue, and the bytes charged for them.
    queued: u64,
    queue_bytes: u64,
    /// Spans the sink has written in total.
    written: u64,
    wal_bytes: u64,
    cpu: CpuSnapshot,
}

/// Samples of the queue, the sink, the WAL and CPU time every 500 ms until `until`.
async fn sample_pipeline(query: std::net::SocketAddr, pid: u32, until: Instant) -> Vec<Sample> {
    let mut out = Vec::new();
    while Instant::now() < until {
        let queued = metric(query, "ferrotrace_queue_spans").await.unwrap_or(0);
        let queue_bytes = metric(query, "ferrotrace_queue_bytes").await.unwrap_or(0);
        let wal_bytes = metric(query, "ferrotrace_wal_bytes").await.unwrap_or(0);
        if let Some(written) = metric(query, "ferrotrace_sink_spans_written_total").await {
            out.push(Sample {
                at: Instant::now(),
                queued,
                queue_bytes,
                written,
                wal_bytes,
                cpu: CpuSnapshot::take(pid),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out
}

/// "name/tid 0.42" for the busiest threads.
fn thread_list(threads: &[(String, u32, f64)]) -> String {
    threads
        .iter()
        .map(|(n, tid, c)| format!("{n}/{tid} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `seconds` of 3x the sustainable rate at a 256 MiB memory limit, with
/// `extra_toml` added to the overloaded collector's configuration.
async fn overload(seconds: u64, extra_toml: &str, segment_bytes: u64) {
    // The sustainable rate: what the collector stores per second, end to
    // end, when 8 closed-loop senders give it all it takes (the queue then
    // fills when the sink is the bottleneck), under the default (large)
    // memory limit.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(&dir.path().join("data"), dir.path(), Sink::Sqlite, "");
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let load = Load::start(
        spec.otlp_http,
        spec.otlp_grpc,
        LoadShape::closed(8, OVERLOAD_SPANS),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = CpuSnapshot::take(c.pid);
    let t0 = Instant::now();
    let sustainable = sink_rate(&spec, Duration::ZERO, Duration::from_secs(5)).await;
    let (collector, own, threads) =
        cpu0.cores_until(&CpuSnapshot::take(c.pid), t0.elapsed().as_secs_f64(), 6);
    let calibration_queue = metric(spec.query, "ferrotrace_queue_spans")
        .await
        .unwrap_or(0);
    // Where the cores went while the sink set the pace (issue 11: under
    // overload the sink wrote a fraction of this rate).
    eprintln!(
        "calibration: sink {sustainable:.0} spans/s; cores: collector {collector:.2} \
         ({:.1} CPU-s per 1M written), load generator (this process) {own:.2}; \
         busiest collector threads: {}",
        collector * 1e6 / sustainable.max(1.0),
        thread_list(&threads)
    );
    load.stop().await;
    c.kill9();
    drop(dir);

    // The calibration can underestimate the sink when other work shares the
    // cores during it and not later (seen in CI: 3,303 spans/s calibrated,
    // 8,089 written under "3x"): then the run was no overload and nothing
    // had to be refused. Such a run is repeated at 3x the rate the sink
    // actually wrote in it, at most twice; every run must keep every other
    // promise, and the last one must have been refused.
    let mut offered = 3.0 * sustainable;
    for attempt in 1..=3 {
        let run = overload_run(
            seconds,
            extra_toml,
            segment_bytes,
            sustainable,
            calibration_queue,
            offered,
        )
        .await;
        if run.exhausted > 0 {
            return;
        }
        assert!(
            attempt < 3 && run.offered_rate < 2.0 * run.sink_rate,
            "{:.0} spans/s ({:.1}x what the sink wrote) was never refused",
            run.offered_rate,
            run.offered_rate / run.sink_rate
        );
        eprintln!(
            "  no overload: offered {:.0} spans/s while the sink wrote {:.0}; again at 3x that",
            run.offered_rate, run.sink_rate
        );
        offered = 3.0 * run.sink_rate;
    }
}

/// The least fraction of what the sink writes that admission must let
/// through in the second half of an overload run (beyond one WAL segment of
/// lag). Ten runs of the quick version after the admission fixes: 89% at the
/// least, 83-113% after the last one (docs/reliability.md); 0.8 leaves room
/// for the machine's noise without letting a collector that refuses while
/// its pipeline has room pass a longer run.
const ADMITTED_OF_WRITTEN: f64 = 0.8;

/// What one overload run found.
struct OverloadRun {
    exhausted: usize,
    offered_rate: f64,
    sink_rate: f64,
}

/// `offered` spans/s open-loop by 24 senders to a collector limited to 256
/// MiB; asserts everything but that requests were refused.
async fn overload_run(
    seconds: u64,
    extra_toml: &str,
    segment_bytes: u64,
    sustainable: f64,
    calibration_queue: u64,
    offered: f64,
) -> OverloadRun {
    const LIMIT_MIB: u64 = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(
        &dir.path().join("data"),
        dir.path(),
        Sink::Sqlite,
        &format!("[limits]\nmemory_limit_mib = {LIMIT_MIB}\n{extra_toml}"),
    );
    let mut c = spec.spawn();
    c.wait_ready(Duration::from_secs(60)).await;
    let senders = 24u32;
    let interval = Duration::from_secs_f64(f64::from(senders * OVERLOAD_SPANS) / offered);
    let shape = LoadShape {
        senders,
        spans: OVERLOAD_SPANS,
        interval: Some(interval),
        retry_pause: Duration::ZERO,
        base: 0,
    };
    let load = Load::start(spec.otlp_http, spec.otlp_grpc, shape);
    let until = Instant::now() + Duration::from_secs(seconds);
    let (health, query, samples) = tokio::join!(
        probe(spec.query, "/healthz", until),
        probe(spec.query, "/api/services", until),
        sample_pipeline(spec.query, c.pid, until)
    );
    let peak_kib = c.peak_rss_kib();
    let refused_memory = metric(
        spec.query,
        "ferrotrace_requests_failed_total{status=\"memory_limit\"}",
    )
    .await
    .unwrap_or(0);
    let started = load.started;
    let end = Instant::now();
    let events = load.stop().await;
    let [ok, exhausted, unavailable, transport] = counts(&events);
    let rate =
        |n: usize, from: Instant| n as f64 * f64::from(OVERLOAD_SPANS) / (end - from).as_secs_f64();
    let offered_rate = rate(events.len(), started);
    // Steady state: the second half of the run (the queue absorbs the
    // excess at first).
    let half = &samples[samples.len() / 2];
    let (mid, queued_mid, written_mid, wal_mid) =
        (half.at, half.queued, half.written, half.wal_bytes);
    let end_sample = samples.last().expect("samples");
    let (last, written_last, wal_last) = (end_sample.at, end_sample.written, end_sample.wal_bytes);
    // Both over the same window, between the two samples.
    let admitted_late = acked_between(&events, mid, last) as f64 * f64::from(OVERLOAD_SPANS)
        / (last - mid).as_secs_f64();
    let sink_late = (written_last - written_mid) as f64 / (last - mid).as_secs_f64();
    let queue_peak = samples.iter().map(|s| s.queued).max().unwrap_or(0);
    let wal_peak = samples.iter().map(|s| s.wal_bytes).max().unwrap_or(0);
    // Bytes the queue charges per span it holds, at its fullest sample.
    let per_queued_span = samples
        .iter()
        .max_by_key(|s| s.queued)
        .filter(|s| s.queued > 0)
        .map_or(0, |s| s.queue_bytes / s.queued);
    let (cores_collector, cores_own, busiest) =
        half.cpu
            .cores_until(&end_sample.cpu, (last - mid).as_secs_f64(), 6);
    let refused_late = events
        .iter()
        .filter(|e| e.at >= mid && e.at < last && matches!(e.outcome, Outcome::Exhausted(_)))
        .count() as f64
        / (last - mid).as_secs_f64();
    let rollup_flushes = metric(spec.query, "ferrotrace_rollup_wal_full_flushes_total")
        .await
        .unwrap_or(0);
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for e in &events {
        if let Outcome::Exhausted(m) = &e.outcome {
            match reasons.iter_mut().find(|r| &r.0 == m) {
                Some(r) => r.1 += 1,
                None => reasons.push((m.clone(), 1)),
            }
        }
    }
    eprintln!(
        "overload for {seconds} s at a {LIMIT_MIB} MiB limit: sustainable rate {sustainable:.0} \
         spans/s (queue {calibration_queue} spans at the end of the calibration); offered \
         {offered_rate:.0} spans/s ({:.1}x); admitted {:.0} spans/s overall, {admitted_late:.0} \
         in the second half ({:.0}% of the sustainable rate) while the sink wrote {sink_late:.0} \
         spans/s ({:.0}%; admitted/written {:.0}%); queue peak {queue_peak} spans ({queued_mid} \
         at half time); WAL {} KiB at half time, {} KiB at the end, peak {} KiB; \
         {rollup_flushes} rollup flushes for a nearly full WAL; {ok} \
         requests acknowledged, {exhausted} refused with retry hints ({refused_memory} for the \
         memory limit; reasons {reasons:?}), {unavailable} 503, {transport} without answer; \
         peak RSS {} MiB\n  {}\n  {}",
        offered_rate / sustainable,
        rate(ok, started),
        100.0 * admitted_late / sustainable,
        100.0 * sink_late / sustainable,
        100.0 * admitted_late / sink_late,
        wal_mid / 1024,
        wal_last / 1024,
        wal_peak / 1024,
        peak_kib / 1024,
        summary("/healthz", &health),
        summary("/api/services", &query)
    );
    eprintln!(
        "  second half: cores: collector {cores_collector:.2} ({:.1} CPU-s per 1M written), \
         load generator (this process) {cores_own:.2}; {refused_late:.0} refusals/s; busiest \
         collector threads: {}; queue charged {per_queued_span} bytes per queued span at its \
         peak; load average {}",
        cores_collector * 1e6 / sink_late.max(1.0),
        thread_list(&busiest),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert!(
        peak_kib < LIMIT_MIB * 1024,
        "peak RSS {peak_kib} KiB over the {LIMIT_MIB} MiB limit"
    );
    // Admission lets the sink's rate through: in the steady state every
    // span the sink writes frees room for one more, so what is admitted
    // keeps up with what is written. The WAL frees room a whole segment at
    // a time, so over a window of a few seconds admission may lag by up to
    // one segment of spans (seen: the WAL 1.2 MiB under its peak at the
    // last sample, a segment just deleted and not yet refilled).
    if exhausted > 0 {
        let window = (last - mid).as_secs_f64();
        let record = prost::Message::encoded_len(&export(0, OVERLOAD_SPANS)) as f64;
        let segment_spans = segment_bytes as f64 / record * f64::from(OVERLOAD_SPANS);
        assert!(
            admitted_late * window + segment_spans >= ADMITTED_OF_WRITTEN * sink_late * window,
            "admitted {admitted_late:.0} spans/s in the second half while the sink wrote \
             {sink_late:.0}: under {:.0}% of it, even allowing one WAL segment ({segment_spans:.0} \
             spans) over the {window:.1} s",
            100.0 * ADMITTED_OF_WRITTEN
        );
    }
    assert_eq!(
        unavailable + transport,
        0,
        "every request answered 200 or 429"
    );
    for (name, xs) in [("/healthz", &health), ("/api/services", &query)] {
        assert!(
            xs.iter().all(Option::is_some),
            "{name} did not answer 200 within 5 s during the overload: {}",
            summary(name, xs)
        );
    }
    let acked = acked_traces(&events);
    verify::exactly_once(
        &spec.store_config(),
        &acked,
        OVERLOAD_SPANS,
        Duration::from_secs(300),
    )
    .await;
    let (status, _) = c.sigterm(Duration::from_secs(30));
    assert!(status.success());
    OverloadRun {
        exhausted,
        offered_rate,
        sink_rate: sink_late,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_at_three_times_the_sustainable_rate_quick() {
    let _serial = SERIAL.lock().await;
    // A quarter of the queue budget the limit gives by default (64 MiB,
    // about 33,000 of these spans), so that the queue fills within the short
    // run even when the calibration underestimates the sink's rate on a
    // noisy machine (seen: 2,600 spans/s calibrated, 4,700 written under
    // overload), and refusals are certain to be seen. The long run keeps
    // the default.
    // Requests beyond the queue wait in the WAL only (the outage budget),
    // so a small WAL makes the refusals certain here too (seen: 17 MB of
    // excess over the 12 s, debug build).
    // `FERROTRACE_OVERLOAD_WAL_BYTES` replaces the 6 MiB WAL for a
    // measurement (how the WAL's size bounds what the sink gets to write).
    let wal_bytes = env_u64("FERROTRACE_OVERLOAD_WAL_BYTES", 6 << 20);
    overload(
        12,
        &format!(
            "[queue]\nmax_bytes = 16777216\n[wal]\nmax_bytes = {wal_bytes}\nsegment_bytes = 1048576\n"
        ),
        1 << 20,
    )
    .await;
}

/// The documented run: `FERROTRACE_OVERLOAD_SECS` (default 60) of overload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run; see docs/reliability.md"]
async fn overload_at_three_times_the_sustainable_rate_long() {
    let _serial = SERIAL.lock().await;
    // Default budgets, except the WAL: requests beyond the queue wait in
    // the WAL only, and 1 GiB would absorb the whole excess of the run.
    overload(
        env_u64("FERROTRACE_OVERLOAD_SECS", 60),
        "[wal]\nmax_bytes = 33554432\nsegment_bytes = 4194304\n",
        4 << 20,
    )
    .await;
}
