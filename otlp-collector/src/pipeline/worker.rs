//! The pipeline's worker thread: pops queue items, runs them through the
//! [`Stages`], releases dropped spans from the WAL, batches kept spans and
//! hands batches and rollups to the sink task over a bounded channel (a full
//! channel blocks the worker, the queue fills, receivers push back).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batcher::{Batcher, BatcherConfig};
use super::queue::Queue;
use super::sink::{SinkMsg, SinkTx};
use super::stages::Stages;
use super::wal::Wal;
use crate::metrics::Metrics;
use crate::model::Span;
use crate::rollup::WrittenOrigins;

/// How often rollups are drained while the WAL is nearly full, instead of
/// every `rollup_flush_ms` (2 s by default). The WAL deletes a segment only
/// once the rollups counting its spans are written; under overload two
/// seconds of spans held that way filled a small WAL, so admission refused
/// requests the sink could have taken (seen: about four 1 MiB segments of a
/// 6 MiB WAL held, admission at 73% of what the sink wrote).
const FULL_WAL_ROLLUP_EVERY: Duration = Duration::from_millis(200);

/// Runs until `stop` is set and the queue is empty (or the sink task is gone).
// Everything the worker owns, moved in once; a struct would only name them twice.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    queue: Arc<Queue>,
    wal: Wal,
    metrics: Arc<Metrics>,
    cfg: BatcherConfig,
    mut stages: Stages,
    written_rx: crossbeam_channel::Receiver<WrittenOrigins>,
    tx: SinkTx,
    stop: Arc<AtomicBool>,
) {
    let mut batcher = Batcher::new(
        cfg.max_spans.unwrap_or(8_192),
        Duration::from_millis(cfg.max_delay_ms),
    );
    let rollup_every = Duration::from_millis(cfg.rollup_flush_ms.max(1));
    let mut last_rollup = Instant::now();
    let mut last_tick = Instant::now();
    let mut kept: Vec<(Span, u64)> = Vec::new();
    let mut released: Vec<(u64, u64)> = Vec::new();
    loop {
        let wait = batcher
            .time_left()
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        let mut stopping = false;
        match queue.pop(wait) {
            Some(item) => {
                // Sent before replay pushes anything, so it is here
                // before the first replayed item.
                if let Ok(w) = written_rx.try_recv() {
                    stages.rollups.set_written(w);
                }
                // A router's request forwarded as bytes runs through no
                // stage (a router has none) and goes to the batch as it is.
                if let Some(w) = item.wire {
                    batcher.add_wire(w, item.segment);
                }
                if !item.spans.is_empty() {
                    stages.process(
                        item.segment,
                        item.first_span,
                        item.spans,
                        &mut kept,
                        &mut released,
                    )
                }
            }
            None if stop.load(Relaxed) && queue.is_empty() => stopping = true,
            None => {}
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            last_tick = Instant::now();
            stages.tick(&mut kept, &mut released);
            stages.publish(&metrics);
        }
        stages.apply_rollup_holds(&wal);
        for (seg, n) in released.drain(..) {
            wal.release(seg, n);
        }
        for (span, seg) in kept.drain(..) {
            batcher.add(span, seg);
            // Full only: the age is checked once below, not per span.
            if batcher.is_full()
                && tx
                    .spans
                    .blocking_send(SinkMsg::Spans(batcher.take()))
                    .is_err()
            {
                return;
            }
        }
        if (stopping || batcher.ready())
            && !batcher.is_empty()
            && tx
                .spans
                .blocking_send(SinkMsg::Spans(batcher.take()))
                .is_err()
        {
            return;
        }
        let since_rollup = last_rollup.elapsed();
        // Early only while the sink has room for another rollup batch: one
        // waiting behind a slow or failing sink frees nothing sooner, and a
        // full channel would block the worker.
        if stopping
            || since_rollup >= rollup_every
            || (since_rollup >= FULL_WAL_ROLLUP_EVERY
                && tx.rollups.capacity() > 0
                && wal.nearly_full())
        {
            last_rollup = Instant::now();
            let mut r = stages.take_rollups(stopping, wal.nearly_full());
            r.wal_instance = wal.instance();
            // The batch's holds are taken before the aggregator's are let go.
            stages.apply_rollup_holds(&wal);
            if !r.is_empty() && tx.rollups.blocking_send(SinkMsg::Rollups(r)).is_err() {
                return;
            }
        }
        if stopping {
            // Spans still held by tail sampling stay in the WAL and are replayed at next start.
            stages.publish(&metrics);
            return;
        }
    }
}
