//! Clock-skew correction. Spans of one service share a clock; spans of
//! different services may not. A child on another service that starts before
//! its parent or ends after it is shifted to sit inside the parent (centred,
//! splitting the unknown network time evenly, as Jaeger does), and the shift is
//! recorded on the span. Children on the same service inherit their parent's
//! shift, so a service's own spans keep their relative timings.

use crate::model::Span;

use super::node::NodeInfo;

/// Shifts the spans in place (display order: parents before children) and
/// records the shifts in `nodes`. Returns how many spans were corrected.
pub fn adjust(spans: &mut [Span], nodes: &mut [NodeInfo]) -> usize {
    let mut corrected = 0;
    for i in 0..spans.len() {
        let Some(p) = nodes[i].parent else { continue };
        let shift = if spans[i].service_name == spans[p].service_name {
            nodes[p].clock_shift_ns
        } else {
            let (ps, pe) = (spans[p].start_ns as i128, spans[p].end_ns as i128);
            let (cs, ce) = (spans[i].start_ns as i128, spans[i].end_ns as i128);
            if cs >= ps && ce <= pe {
                0
            } else {
                let (pd, cd) = (pe - ps, ce - cs);
                let delta = if cd <= pd {
                    ps + (pd - cd) / 2 - cs
                } else {
                    ps - cs
                };
                nodes[i].skew_shift_ns = clamp_i64(delta);
                if delta != 0 {
                    corrected += 1;
                }
                clamp_i64(delta)
            }
        };
        nodes[i].clock_shift_ns = shift;
        if shift != 0 {
            shift_span(&mut spans[i], shift);
        }
    }
    corrected
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn shift_time(t: u64, by: i64) -> u64 {
    (t as i128 + by as i128).clamp(0, u64::MAX as i128) as u64
}

fn shift_span(s: &mut Span, by: i64) {
    s.start_ns = shift_time(s.start_ns, by);
    s.end_ns = shift_time(s.end_ns, by);
    for e in &mut s.events {
        e.time_ns = shift_time(e.time_ns, by);
    }
}
