//! WAL replay at start: every record of the unfinished segments is decoded
//! again with its receiver's decoder and pushed into the queue, as if it had
//! just been received.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::queue::Queue;
use super::wal::{self, Wal};
use crate::metrics::{Metrics, Source};
use crate::receiver::limits::LimitsConfig;

/// Replays WAL segments into the queue (waiting for room, never dropping), then
/// seals them so they are deleted once committed. Returns the spans replayed.
pub fn replay(
    wal: &Wal,
    queue: &Arc<Queue>,
    segments: &[u64],
    limits: &LimitsConfig,
    metrics: &Metrics,
) -> u64 {
    let mut total = 0u64;
    for &seg in segments {
        let records = match wal.read_segment(seg) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(segment = seg, error = %e, "cannot read WAL segment; leaving it in place");
                continue;
            }
        };
        // Span ordinals follow the records' span counts, as when they were written.
        let (mut first_span, mut offset) = (0u64, 0u64);
        for rec in records {
            let pos = wal::WalPos {
                segment: seg,
                first_span,
                offset,
            };
            first_span += rec.spans as u64;
            offset += rec.encoded_len();
            match crate::receiver::decoding::decode(rec.format, &rec.payload, limits) {
                Ok(d) if !d.spans.is_empty() => {
                    let n = d.spans.len() as u64;
                    // Count before pushing so that a release can never precede the add.
                    wal.add_outstanding(seg, n);
                    queue.reserve_blocking(n, d.bytes).push(pos, d.spans);
                    metrics
                        .source(Source::WalReplay)
                        .accepted
                        .fetch_add(n, Relaxed);
                    total += n;
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.wal_corrupt_records.fetch_add(1, Relaxed);
                    tracing::warn!(segment = seg, error = %e, "undecodable WAL record skipped");
                }
            }
        }
        wal.finish_replay(seg);
    }
    total
}
