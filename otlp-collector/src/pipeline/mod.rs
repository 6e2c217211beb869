//! The processing pipeline behind the receivers:
//!
//! ```text
//! queue ─► worker thread: rollups (every span) ─► sampling ─► enrich/redact ─► batcher
//!       ─► bounded channel ─► sink task: write with retry ─► release WAL segments
//! ```
//!
//! Spans dropped by sampling are released from the WAL at once; kept spans are
//! released only after the sink committed their batch. Independently, a
//! segment stays while rollup contributions of its spans are only in memory
//! (the aggregator's rollup holds, handed to each rollup batch and released
//! once the sink committed it), and each rollup batch carries the WAL
//! positions it accounts for, which the sink stores with it: at replay those
//! are not counted again (see `rollup::origins`). A slow or failed sink
//! blocks the worker (the channel is bounded) and the queue fills; receivers
//! then keep acknowledging into the WAL only ([`wal_only`]: read back into
//! the queue as it gets room) until the WAL is full, and only then answer
//! 429 / RESOURCE_EXHAUSTED: backpressure instead of memory growth.

pub mod batcher;
pub mod enrich;
mod origins;
pub mod queue;
pub mod redact;
mod replay;
pub mod sampling;
mod sink;
mod stages;
pub mod wal;
pub mod wal_only;
mod worker;

pub use origins::{load_written_origins, WrittenOriginsSender};
pub use replay::replay;
pub use stages::{StageError, Stages};

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::rollup::WrittenOrigins;
use crate::storage::SpanWriter;
use batcher::BatcherConfig;
use queue::Queue;
use wal::Wal;

/// A running pipeline.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    written_tx: crossbeam_channel::Sender<WrittenOrigins>,
    worker: Option<std::thread::JoinHandle<()>>,
    sink: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the worker thread and the sink task (on the current tokio
    /// runtime). Sink write results are reported to `health` (`/readyz`).
    pub fn start(
        queue: Arc<Queue>,
        wal: Wal,
        store: Arc<dyn SpanWriter>,
        metrics: Arc<Metrics>,
        health: Arc<crate::health::Health>,
        cfg: BatcherConfig,
        stages: Stages,
    ) -> std::io::Result<Pipeline> {
        let stop = Arc::new(AtomicBool::new(false));
        let (written_tx, written_rx) = crossbeam_channel::bounded::<WrittenOrigins>(1);
        let (tx, rx) = sink::channels(cfg.max_pending_batches);
        let sink = tokio::spawn(sink::sink_task(
            rx,
            store,
            wal.clone(),
            metrics.clone(),
            health,
            cfg.clone(),
        ));
        let stop2 = stop.clone();
        let worker = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || worker::run(queue, wal, metrics, cfg, stages, written_rx, tx, stop2))?;
        Ok(Pipeline {
            stop,
            written_tx,
            worker: Some(worker),
            sink: Some(sink),
        })
    }

    /// Starts the thread that reads spans kept in the WAL only back into
    /// the queue; it stops with the pipeline ([`Pipeline::drain`]), leaving
    /// what still waits in the WAL for the next start's replay.
    pub fn start_wal_only_reader(
        &self,
        wal_only: Arc<wal_only::WalOnly>,
        queue: Arc<Queue>,
        wal: Wal,
        limits: crate::receiver::limits::LimitsConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<()> {
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name("wal-only-reader".into())
            .spawn(move || wal_only::run(wal_only, queue, wal, limits, metrics, stop))?;
        Ok(())
    }

    /// Where to hand the rollup origins a sink already stored for the
    /// segments about to be replayed. Send before replay pushes anything.
    pub fn written_origins_sender(&self) -> WrittenOriginsSender {
        WrittenOriginsSender(self.written_tx.clone())
    }

    /// Drains the queue into the sink, waiting at most `timeout`. Whatever is
    /// not committed by then stays in the WAL and is replayed at next start.
    /// Returns true if everything drained.
    pub async fn drain(&mut self, timeout: Duration) -> bool {
        self.stop.store(true, Relaxed);
        let deadline = tokio::time::Instant::now() + timeout;
        let worker = self.worker.take();
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(w) = worker {
                let _ = w.join();
            }
        });
        if tokio::time::timeout_at(deadline, joined).await.is_err() {
            return false;
        }
        match self.sink.take() {
            Some(s) => tokio::time::timeout_at(deadline, s).await.is_ok(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{now_ns, AttrValue, KeyValue, Span};

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, attrs: Vec<KeyValue>) -> Span {
        let start_ns = now_ns() - 1_000_000;
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            name: name.into(),
            start_ns,
            end_ns: start_ns + 1_000,
            attributes: attrs,
            ..Span::test(0)
        }
    }

    /// Scrapes one sample line, e.g. `name{label="x"}`, from the rendered text.
    fn sample(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    }

    #[test]
    fn spans_a_held_stage_passes_on_later_run_through_the_stages_after_it() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
            [sampling.tail]
            enabled = true
            decision_wait_ms = 0
            policies = [{ name = "all", rule = "always" }]
            [redact]
            drop_keys = ["password"]
            "#,
        )
        .expect("config");
        let mut stages = Stages::from_config(&cfg).expect("stages");
        let (mut kept, mut released) = (Vec::new(), Vec::new());
        let attrs = vec![
            KeyValue::new("password", AttrValue::Str("pw".into())),
            KeyValue::new("note", AttrValue::Str("x".into())),
        ];
        stages.process(
            4,
            0,
            vec![span(1, 1, None, "a", attrs)],
            &mut kept,
            &mut released,
        );
        assert!(kept.is_empty(), "tail sampling holds the trace");
        std::thread::sleep(Duration::from_millis(2));
        stages.tick(&mut kept, &mut released);
        assert_eq!(kept.len(), 1, "decided at the tick");
        let (s, seg) = &kept[0];
        assert_eq!(*seg, 4, "the WAL segment travels with the span");
        let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            ["note"],
            "redaction ran after tail sampling let it go"
        );
        assert!(released.is_empty());
    }

    /// At rate 1 (the default) the head stage passes each item's spans on
    /// whole: in order, with their segments, behind spans already kept,
    /// and counted as kept by the rate.
    #[test]
    fn rate_one_passes_every_span_on_in_order_and_counts_it() {
        let cfg: crate::config::Config = toml::from_str("").expect("config");
        let mut stages = Stages::from_config(&cfg).expect("stages");
        let (mut kept, mut released) = (Vec::new(), Vec::new());
        let spans = (1..=4).map(|t| span(t, 1, None, "a", vec![])).collect();
        stages.process(3, 0, spans, &mut kept, &mut released);
        stages.process(
            4,
            4,
            vec![span(9, 1, None, "b", vec![])],
            &mut kept,
            &mut released,
        );
        let got: Vec<(u8, u64)> = kept.iter().map(|(s, seg)| (s.trace_id[0], *seg)).collect();
        assert_eq!(got, [(1, 3), (2, 3), (3, 3), (4, 3), (9, 4)]);
        assert!(released.is_empty());
        let metrics = Metrics::default();
        stages.publish(&metrics);
        assert_eq!(metrics.sampling_decisions.get("head:keep:rate"), 5);
        assert_eq!(metrics.dropped.get("sampled_out_head"), 0);
    }

    #[test]
    fn head_drops_release_their_segment_once_per_item() {
        let cfg: crate::config::Config =
            toml::from_str("[sampling.head]\nrate = 0.0\n").expect("config");
        let mut stages = Stages::from_config(&cfg).expect("stages");
        let (mut kept, mut released) = (Vec::new(), Vec::new());
        let spans = (1..=5).map(|t| span(t, 1, None, "a", vec![])).collect();
        stages.process(7, 0, spans, &mut kept, &mut released);
        assert!(kept.is_empty());
        assert_eq!(released, vec![(7, 5)]);
        let metrics = Metrics::default();
        stages.publish(&metrics);
        assert_eq!(metrics.dropped.get("sampled_out_head"), 5);
        assert_eq!(metrics.sampling_decisions.get("head:drop:rate"), 5);
    }

    /// A failed span passes a rate-0 head sampler, with the spans of its
    /// trace after it, counted as `head:keep:error`; with a budget of one
    /// trace a second, the second failed trace is dropped and counted.
    #[test]
    fn head_keeps_failed_spans_and_counts_them() {
        let cfg: crate::config::Config =
            toml::from_str("[sampling.head]\nrate = 0.0\nmax_error_traces_per_second = 1.0\n")
                .expect("config");
        let mut stages = Stages::from_config(&cfg).expect("stages");
        let (mut kept, mut released) = (Vec::new(), Vec::new());
        let failed = |trace: u8, id: u8| {
            let mut s = span(trace, id, Some(1), "db", vec![]);
            s.status_code = crate::model::StatusCode::Error;
            s
        };
        let spans = vec![
            span(1, 2, Some(1), "cache", vec![]),
            failed(1, 3),
            span(1, 1, None, "root", vec![]),
            failed(2, 3),
            span(3, 1, None, "other", vec![]),
        ];
        stages.process(7, 0, spans, &mut kept, &mut released);
        let names: Vec<_> = kept.iter().map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, ["db", "root"]);
        assert_eq!(released, vec![(7, 3)]);
        let metrics = Metrics::default();
        stages.publish(&metrics);
        assert_eq!(metrics.sampling_decisions.get("head:keep:error"), 2);
        assert_eq!(metrics.sampling_decisions.get("head:keep:rate"), 0);
        assert_eq!(metrics.sampling_decisions.get("head:drop:rate"), 2);
        assert_eq!(metrics.sampling_decisions.get("head:drop:error_limit"), 1);
        assert_eq!(metrics.dropped.get("sampled_out_head"), 3);
    }

    #[test]
    fn internal_counters_reach_metrics() {
        let cfg: crate::config::Config = toml::from_str(
            r#"
            [sampling.tail]
            enabled = true
            max_traces = 1
            decision_cache_entries = 1
            policies = [{ name = "all", rule = "always" }]
            [redact]
            drop_keys = ["password"]
            hash_keys = ["user.id"]
            builtin = ["email"]
            action = "mask"
            hash_key = "k"
            [rollups]
            max_series = 1
            pending_children = 0
            "#,
        )
        .expect("config");
        let mut stages = Stages::from_config(&cfg).expect("stages");
        let metrics = Metrics::default();
        let (mut kept, mut released) = (Vec::new(), Vec::new());
        let attrs = || {
            vec![
                KeyValue::new("password", AttrValue::Str("pw".into())),
                KeyValue::new("user.id", AttrValue::Int(7)),
                KeyValue::new("note", AttrValue::Str("a@b.io and c@d.io".into())),
            ]
        };
        // Trace 1 is held; trace 2 overflows max_traces = 1, deciding 1 early.
        stages.process(
            1,
            0,
            vec![span(1, 1, None, "a", attrs())],
            &mut kept,
            &mut released,
        );
        stages.process(
            1,
            0,
            vec![span(2, 1, None, "b", vec![])],
            &mut kept,
            &mut released,
        );
        // Trace 3 decides 2 early and evicts 1's decision from the 1-entry cache.
        stages.process(
            1,
            0,
            vec![span(3, 1, None, "c", vec![])],
            &mut kept,
            &mut released,
        );
        // A late span of trace 2 follows its cached decision; its parent is
        // unknown to the rollups and pending_children = 0 gives it up.
        stages.process(
            1,
            0,
            vec![span(2, 2, Some(9), "b", vec![])],
            &mut kept,
            &mut released,
        );
        assert_eq!(kept.len(), 3, "traces 1, 2 and the late span of 2");
        stages.publish(&metrics);
        let t = metrics.render();
        assert_eq!(
            sample(
                &t,
                "ferrotrace_tail_sampling_early_decisions_total{bound=\"max_traces\"}"
            ),
            2
        );
        assert_eq!(sample(&t, "ferrotrace_tail_sampling_late_spans_total"), 1);
        assert_eq!(
            sample(
                &t,
                "ferrotrace_tail_sampling_decision_cache_evictions_total"
            ),
            1
        );
        assert_eq!(sample(&t, "ferrotrace_tail_sampling_held_traces"), 1);
        assert!(sample(&t, "ferrotrace_tail_sampling_held_bytes") > 0);
        assert_eq!(
            sample(&t, "ferrotrace_redact_values_total{action=\"mask\"}"),
            2
        );
        assert_eq!(
            sample(&t, "ferrotrace_redact_values_total{action=\"hash\"}"),
            1
        );
        assert_eq!(sample(&t, "ferrotrace_redact_attributes_dropped_total"), 1);
        assert_eq!(sample(&t, "ferrotrace_rollup_spans_observed_total"), 4);
        // Operations a, b, c with max_series = 1: b flushes a early, c is dropped.
        assert_eq!(sample(&t, "ferrotrace_rollup_early_flushes_total"), 1);
        assert!(
            sample(
                &t,
                "ferrotrace_rollup_observations_dropped_total{reason=\"series_limit\"}"
            ) >= 1
        );
        assert_eq!(
            sample(
                &t,
                "ferrotrace_rollup_observations_dropped_total{reason=\"pending_full\"}"
            ),
            1
        );
        assert!(
            t.contains("# HELP ferrotrace_tail_sampling_late_spans_total Spans that arrived after")
        );
        assert!(t.contains("# TYPE ferrotrace_redact_values_total counter"));

        // Publishing again adds only what happened since: trace 4 (redacted
        // once kept) is decided early by trace 5.
        for trace in [4, 5] {
            stages.process(
                1,
                0,
                vec![span(trace, 1, None, "c", attrs())],
                &mut kept,
                &mut released,
            );
        }
        stages.publish(&metrics);
        let t = metrics.render();
        assert_eq!(
            sample(
                &t,
                "ferrotrace_tail_sampling_early_decisions_total{bound=\"max_traces\"}"
            ),
            4
        );
        assert_eq!(sample(&t, "ferrotrace_tail_sampling_late_spans_total"), 1);
        assert_eq!(
            sample(&t, "ferrotrace_redact_values_total{action=\"mask\"}"),
            4
        );
        assert_eq!(sample(&t, "ferrotrace_redact_attributes_dropped_total"), 2);
        assert_eq!(sample(&t, "ferrotrace_rollup_spans_observed_total"), 6);
    }
}
