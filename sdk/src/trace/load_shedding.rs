//! Load-based protection: when the export pipeline is persistently
//! overloaded (the batch queue keeps dropping spans, or the exporter's
//! circuit breaker is open), sample less — consistently, with the lowered
//! probability recorded in `th` — instead of letting the queue drop random
//! spans that were already sampled (which breaks traces and makes every
//! count wrong). Recovers step by step when the pressure is gone.
//!
//! A controller thread reads an [`ExportStats`] handle every tick. Pressure
//! in `raise_after` consecutive ticks raises the shed level `k` by one (the
//! inner sampler's probability is multiplied by `2^-k`); `recover_after`
//! consecutive calm ticks lower it by one. Roots and spans with a remote
//! parent are shed; a span with a local parent follows that parent (which
//! was already shed), so traces stay whole inside the service.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::context::{SpanContext, TraceState};
use crate::export::stats::{BreakerState, ExportStats};
use crate::ids::TraceId;
use crate::trace::consistent::{randomness, OtState, Threshold, MAX_ADJUSTED_COUNT};
use crate::trace::diagnostics::{self, Diagnostic};
use crate::trace::sampler::{Sampler, SamplingDecision, SamplingResult};

/// Default tick of the controller.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// Default consecutive pressured ticks before the level rises.
pub const DEFAULT_RAISE_AFTER: u32 = 2;
/// Default consecutive calm ticks before the level falls.
pub const DEFAULT_RECOVER_AFTER: u32 = 10;
/// Default highest level (probability multiplied by at most 2^-10 = 1/1024).
pub const DEFAULT_MAX_LEVEL: u8 = 10;

/// Counters of a [`LoadShedding`] sampler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSheddingStats {
    /// The current level `k`: the inner probability is multiplied by `2^-k`.
    pub level: u8,
    /// How many times the level rose.
    pub raised: u64,
    /// How many times the level fell.
    pub lowered: u64,
    /// Spans the inner sampler kept that shedding dropped.
    pub spans_shed: u64,
}

struct State {
    level: AtomicU8,
    raised: AtomicU64,
    lowered: AtomicU64,
    spans_shed: AtomicU64,
}

/// Wraps a sampler with load-based shedding; see the module docs. Build it
/// with [`LoadShedding::builder`]; it is a [`Sampler`] through
/// [`Sampler::LoadShedding`].
pub struct LoadShedding {
    inner: Sampler,
    state: Arc<State>,
    _stop: crossbeam_channel::Sender<()>,
}

impl std::fmt::Debug for LoadShedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedding")
            .field("inner", &self.inner)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures [`LoadShedding`].
#[derive(Debug)]
pub struct LoadSheddingBuilder {
    inner: Sampler,
    stats: ExportStats,
    tick: Duration,
    raise_after: u32,
    recover_after: u32,
    max_level: u8,
}

impl LoadShedding {
    /// Wraps `inner`, watching the process-wide [`ExportStats::global`]
    /// (what the batch processor and OTLP exporters write by default).
    pub fn builder(inner: Sampler) -> LoadSheddingBuilder {
        LoadSheddingBuilder {
            inner,
            stats: ExportStats::global().clone(),
            tick: DEFAULT_TICK,
            raise_after: DEFAULT_RAISE_AFTER,
            recover_after: DEFAULT_RECOVER_AFTER,
            max_level: DEFAULT_MAX_LEVEL,
        }
    }

    /// The counters.
    pub fn stats(&self) -> LoadSheddingStats {
        LoadSheddingStats {
            level: self.state.level.load(Ordering::Relaxed),
            raised: self.state.raised.load(Ordering::Relaxed),
            lowered: self.state.lowered.load(Ordering::Relaxed),
            spans_shed: self.state.spans_shed.load(Ordering::Relaxed),
        }
    }

    /// The wrapped sampler.
    pub fn inner(&self) -> &Sampler {
        &self.inner
    }

    /// The current level (0: no shedding).
    #[inline]
    pub(crate) fn level(&self) -> u8 {
        self.state.level.load(Ordering::Relaxed)
    }

    /// True when this span is subject to shedding (a root or a remote parent).
    #[inline]
    pub(crate) fn applies(parent: Option<&SpanContext>) -> bool {
        parent.is_none_or(SpanContext::is_remote)
    }

    /// Applies the current level to the inner sampler's result.
    pub(crate) fn shed(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        mut result: SamplingResult,
    ) -> SamplingResult {
        let level = self.level();
        if level == 0
            || result.decision != SamplingDecision::RecordAndSample
            || !Self::applies(parent)
        {
            return result;
        }
        let base = match (&result.trace_state, parent) {
            (Some(ts), _) => ts.clone(),
            (None, Some(p)) => p.trace_state().clone(),
            (None, None) => TraceState::NONE,
        };
        let mut ot = OtState::of(&base);
        // A kept span without a threshold was kept with probability 1 as
        // far as this SDK knows (AlwaysOn, a rate limiter): shed from there.
        let t_s = ot.th.unwrap_or(Threshold::ALWAYS_SAMPLE);
        let kept = (MAX_ADJUSTED_COUNT - t_s.to_u64()) >> level;
        let r = randomness(parent, &ot, trace_id);
        match Threshold::from_u64(MAX_ADJUSTED_COUNT - kept).filter(|_| kept > 0) {
            Some(t_o) if t_o.keeps(r) => {
                ot.th = Some(t_o);
                result.trace_state = Some(ot.apply_to(&base));
            }
            _ => {
                self.state.spans_shed.fetch_add(1, Ordering::Relaxed);
                result.decision = SamplingDecision::Drop;
                if ot.th.take().is_some() {
                    result.trace_state = Some(ot.apply_to(&base));
                }
            }
        }
        result
    }
}

impl LoadSheddingBuilder {
    /// The export counters watched (the batch processor's `with_stats` handle).
    pub fn with_stats(mut self, stats: ExportStats) -> Self {
        self.stats = stats;
        self
    }
    /// How often the counters are read (default 1 s, at least 1 ms).
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(1));
        self
    }
    /// Consecutive pressured ticks before the level rises (default 2, at least 1).
    pub fn with_raise_after(mut self, ticks: u32) -> Self {
        self.raise_after = ticks.max(1);
        self
    }
    /// Consecutive calm ticks before the level falls (default 10, at least 1).
    pub fn with_recover_after(mut self, ticks: u32) -> Self {
        self.recover_after = ticks.max(1);
        self
    }
    /// The highest level (default 10, at most 56).
    pub fn with_max_level(mut self, level: u8) -> Self {
        self.max_level = level.min(56);
        self
    }

    /// Starts the controller thread and returns the sampler.
    pub fn build(self) -> Sampler {
        let state = Arc::new(State {
            level: AtomicU8::new(0),
            raised: AtomicU64::new(0),
            lowered: AtomicU64::new(0),
            spans_shed: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut controller = Controller {
            state: state.clone(),
            stats: self.stats,
            raise_after: self.raise_after,
            recover_after: self.recover_after,
            max_level: self.max_level,
            last_dropped: None,
            pressured: 0,
            calm: 0,
        };
        let tick = self.tick;
        let started = std::thread::Builder::new()
            .name("ferrotrace-load-shedding".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(tick)
                {
                    controller.tick();
                }
            });
        if let Err(e) = started {
            diagnostics::report(Diagnostic::Config(format!(
                "cannot start the load-shedding thread ({e}); sampling is not lowered under load"
            )));
        }
        Sampler::LoadShedding(Arc::new(LoadShedding {
            inner: self.inner,
            state,
            _stop: stop_tx,
        }))
    }
}

/// The level's state machine (on the controller thread).
struct Controller {
    state: Arc<State>,
    stats: ExportStats,
    raise_after: u32,
    recover_after: u32,
    max_level: u8,
    last_dropped: Option<u64>,
    pressured: u32,
    calm: u32,
}

impl Controller {
    fn tick(&mut self) {
        let snap = self.stats.snapshot();
        let dropped = snap.dropped_queue_full;
        let grew = self.last_dropped.is_some_and(|last| dropped > last);
        self.last_dropped = Some(dropped);
        self.step(grew || snap.breaker_state == BreakerState::Open);
    }

    fn step(&mut self, pressure: bool) {
        let level = self.state.level.load(Ordering::Relaxed);
        if pressure {
            self.calm = 0;
            self.pressured += 1;
            if self.pressured >= self.raise_after && level < self.max_level {
                self.pressured = 0;
                self.set(level + 1, true);
            }
        } else {
            self.pressured = 0;
            self.calm += 1;
            if self.calm >= self.recover_after && level > 0 {
                self.calm = 0;
                self.set(level - 1, false);
            }
        }
    }

    fn set(&self, level: u8, raised: bool) {
        self.state.level.store(level, Ordering::Relaxed);
        let counter = if raised {
            &self.state.raised
        } else {
            &self.state.lowered
        };
        counter.fetch_add(1, Ordering::Relaxed);
        diagnostics::report(Diagnostic::LoadShedding {
            level,
            raised,
            spans_shed: self.state.spans_shed.load(Ordering::Relaxed),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(stats: ExportStats) -> Controller {
        Controller {
            state: Arc::new(State {
                level: AtomicU8::new(0),
                raised: AtomicU64::new(0),
                lowered: AtomicU64::new(0),
                spans_shed: AtomicU64::new(0),
            }),
            stats,
            raise_after: 2,
            recover_after: 3,
            max_level: 2,
            last_dropped: None,
            pressured: 0,
            calm: 0,
        }
    }

    #[test]
    fn level_rises_on_persistent_pressure_and_recovers_stepwise() {
        let stats = ExportStats::new();
        let mut c = controller(stats.clone());
        let level = |c: &Controller| c.state.level.load(Ordering::Relaxed);
        c.tick(); // baseline
        stats.add_dropped_queue_full(5);
        c.tick();
        assert_eq!(level(&c), 0, "one pressured tick is not persistent");
        stats.add_dropped_queue_full(5);
        c.tick();
        assert_eq!(level(&c), 1);
        for _ in 0..10 {
            stats.add_dropped_queue_full(1);
            c.tick();
        }
        assert_eq!(level(&c), 2, "capped at max_level");
        // Calm: one step down per 3 calm ticks.
        for _ in 0..3 {
            c.tick();
        }
        assert_eq!(level(&c), 1);
        // Pressure in between resets the calm streak.
        c.tick();
        c.tick();
        stats.add_dropped_queue_full(1);
        c.tick();
        c.tick();
        c.tick();
        assert_eq!(level(&c), 1);
        c.tick();
        assert_eq!(level(&c), 0);
        assert_eq!(c.state.raised.load(Ordering::Relaxed), 2);
        assert_eq!(c.state.lowered.load(Ordering::Relaxed), 2);
        // An open breaker is pressure too.
        stats.set_breaker_state(BreakerState::Open);
        c.tick();
        c.tick();
        assert_eq!(level(&c), 1);
    }
}
