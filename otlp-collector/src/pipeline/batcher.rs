//! Groups spans into sink batches by count or age, remembering how many spans
//! of each WAL segment a batch holds so the segments can be released once the
//! sink has committed it.

use std::time::{Duration, Instant};

use crate::model::Span;

/// A batch ready for the sink.
#[derive(Debug, Default)]
pub struct SinkBatch {
    /// Spans to write.
    pub spans: Vec<Span>,
    /// `(segment, spans)` to release after the write commits.
    pub segments: Vec<(u64, u64)>,
}

/// Accumulates spans until `max_spans` or `max_delay` is reached.
#[derive(Debug)]
pub struct Batcher {
    max_spans: usize,
    max_delay: Duration,
    current: SinkBatch,
    first_at: Option<Instant>,
}

impl Batcher {
    /// A batcher with the given bounds.
    pub fn new(max_spans: usize, max_delay: Duration) -> Self {
        Batcher {
            max_spans: max_spans.max(1),
            max_delay,
            current: SinkBatch::default(),
            first_at: None,
        }
    }

    /// Adds one span from `segment`.
    pub fn add(&mut self, span: Span, segment: u64) {
        if self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
        self.current.spans.push(span);
        self.count(segment, 1);
    }

    /// Accounts spans of `segment` without adding spans (used when a later stage
    /// will release them with this batch).
    fn count(&mut self, segment: u64, n: u64) {
        match self.current.segments.last_mut() {
            Some((s, c)) if *s == segment => *c += n,
            _ => self.current.segments.push((segment, n)),
        }
    }

    /// True when the batch is full or its oldest span has waited `max_delay`.
    pub fn ready(&self) -> bool {
        self.current.spans.len() >= self.max_spans
            || self.first_at.is_some_and(|t| t.elapsed() >= self.max_delay)
    }

    /// Time until the age bound triggers (`None` when empty).
    pub fn time_left(&self) -> Option<Duration> {
        self.first_at
            .map(|t| self.max_delay.saturating_sub(t.elapsed()))
    }

    /// True when no span is waiting.
    pub fn is_empty(&self) -> bool {
        self.current.spans.is_empty()
    }

    /// Takes the current batch.
    pub fn take(&mut self) -> SinkBatch {
        self.first_at = None;
        std::mem::take(&mut self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanKind, StatusCode};

    pub(crate) fn span(i: u8) -> Span {
        Span {
            trace_id: [i; 16],
            span_id: [i; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: "op".into(),
            kind: SpanKind::Server,
            start_ns: 1,
            end_ns: 2,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: vec![],
            dropped_events_count: 0,
            links: vec![],
            dropped_links_count: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: "s".into(),
            resource_attributes: vec![],
            scope_name: String::new(),
            scope_version: String::new(),
        }
    }

    #[test]
    fn batches_by_count_and_tracks_segments() {
        let mut b = Batcher::new(3, Duration::from_secs(60));
        b.add(span(1), 4);
        b.add(span(2), 4);
        assert!(!b.ready());
        b.add(span(3), 5);
        assert!(b.ready());
        let batch = b.take();
        assert_eq!(batch.spans.len(), 3);
        assert_eq!(batch.segments, vec![(4, 2), (5, 1)]);
        assert!(b.is_empty() && b.time_left().is_none());
    }

    #[test]
    fn batches_by_age() {
        let mut b = Batcher::new(100, Duration::from_millis(1));
        b.add(span(1), 1);
        std::thread::sleep(Duration::from_millis(3));
        assert!(b.ready());
    }
}
