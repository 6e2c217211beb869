//! The registry and the text exposition, through `prometheus-client`.
//!
//! Every family on `/metrics` is written by a [`Collector`] registered in
//! one [`Registry`] ([`super::Metrics::register`]); the registry is encoded
//! in the Prometheus text format 0.0.4 (`prometheus_client::encoding::
//! prometheus_text`), which also escapes label values and help text.
//!
//! The values stay where the hot path already counts them — plain atomics
//! and small maps touched once per request or batch — and a collector reads
//! them at scrape time ([`Families`] writes one family at a time). So an
//! increment costs what it did before the registry existed, and an area
//! (the retention task, the cold tier, the router) registers its own
//! families when it starts, without `metrics` knowing its types.

use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::Registry;

/// What writing a family returns (writing into a `String` cannot fail).
pub type EncodeResult = Result<(), std::fmt::Error>;

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every family of `registry`, in the Prometheus text format 0.0.4.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Only the writer can fail, and a String never does.
    let _ = prometheus_text::encode(&mut out, registry);
    out
}

/// The name `prometheus-client` registers a counter under: it appends
/// `_total` itself, and our names are spelled with it (as users query them).
fn registered_name(name: &str, kind: MetricType) -> &str {
    match kind {
        MetricType::Counter => {
            debug_assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
            name.strip_suffix("_total").unwrap_or(name)
        }
        _ => name,
    }
}

/// A sample value: an integer or a float, written as a counter or a gauge.
pub trait Sample: Copy {
    /// Writes the value of one series.
    fn write(self, kind: MetricType, e: MetricEncoder<'_>) -> EncodeResult;
}

impl Sample for u64 {
    fn write(self, kind: MetricType, e: MetricEncoder<'_>) -> EncodeResult {
        match kind {
            MetricType::Counter => ConstCounter::new(self).encode(e),
            _ => ConstGauge::new(self).encode(e),
        }
    }
}

impl Sample for f64 {
    fn write(self, kind: MetricType, e: MetricEncoder<'_>) -> EncodeResult {
        match kind {
            MetricType::Counter => ConstCounter::new(self).encode(e),
            _ => ConstGauge::new(self).encode(e),
        }
    }
}

/// Writes metric families into one scrape: the `HELP` and `TYPE` lines,
/// then the series. Names are the exposed names (counters end in `_total`).
pub struct Families<'a>(DescriptorEncoder<'a>);

impl<'a> Families<'a> {
    /// Wraps the encoder a [`Collector`] is handed.
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Families(encoder)
    }

    /// A family of one series without labels.
    pub fn single(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        v: impl Sample,
    ) -> EncodeResult {
        let e = self
            .0
            .encode_descriptor(registered_name(name, kind), help, None, kind)?;
        v.write(kind, e)
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> EncodeResult {
        self.single(name, MetricType::Counter, help, v)
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, v: impl Sample) -> EncodeResult {
        self.single(name, MetricType::Gauge, help, v)
    }

    /// A labelled family: one series per `(labels, value)` row (none: only
    /// the `HELP` and `TYPE` lines, as before the first increment).
    pub fn family<L: EncodeLabelSet, V: Sample>(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        rows: impl IntoIterator<Item = (L, V)>,
    ) -> EncodeResult {
        let mut e = self
            .0
            .encode_descriptor(registered_name(name, kind), help, None, kind)?;
        for (labels, v) in rows {
            v.write(kind, e.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram without labels: `buckets` holds each finite upper bound
    /// with the observations in it alone (not cumulative); the `+Inf` bucket
    /// is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        sum: f64,
        count: u64,
        buckets: &[(f64, u64)],
    ) -> EncodeResult {
        let mut e = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        e.encode_histogram::<NoLabelSet>(sum, count, buckets, None)
    }
}
