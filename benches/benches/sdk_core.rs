//! SDK core: ferrotrace beside opentelemetry_sdk 0.33 in the same run.
//!
//! Both sides use a simple (synchronous) processor with an exporter that
//! discards, so the numbers compare span bookkeeping, not I/O.
//!
//! Time is measured as the benchmark thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the benchmark machine is shared
//! (2 cores, other builds running), and wall time would mostly measure how long
//! the thread waited for a core. Both libraries are measured the same way.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Throughput};

type Criterion = criterion::Criterion<ThreadCpuTime>;

/// The calling thread's CPU time.
pub struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e3, "µs")
        } else {
            (1e6, "ms")
        };
        for v in values {
            *v /= div;
        }
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            _ => 1.0,
        };
        for v in values {
            *v = n * 1e9 / *v;
        }
        "/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

mod ft {
    pub use ferrotrace::context::{Baggage, Context};
    pub use ferrotrace::export::{ExportResult, SpanData, SpanExporter};
    pub use ferrotrace::propagation::{
        BaggagePropagator, TextMapPropagator, TraceContextPropagator,
    };
    pub use ferrotrace::trace::{Sampler, TracerProvider};

    pub struct Discard;
    impl SpanExporter for Discard {
        fn export(&self, batch: Vec<SpanData>) -> ExportResult {
            drop(batch);
            Ok(())
        }
    }

    pub fn provider(sampler: Sampler, watchdog: bool) -> TracerProvider {
        let mut b = TracerProvider::builder()
            .with_simple_exporter(Discard)
            .with_sampler(sampler)
            .with_service_name("bench");
        if !watchdog {
            b = b.with_unended_span_age(None);
        }
        b.build()
    }
}

mod ot {
    pub use opentelemetry::propagation::TextMapPropagator;
    pub use opentelemetry::trace::{Span, TraceContextExt, Tracer, TracerProvider};
    pub use opentelemetry::{Context, KeyValue};
    pub use opentelemetry_sdk::error::OTelSdkResult;
    pub use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    pub use opentelemetry_sdk::trace::{
        Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    };

    #[derive(Debug)]
    pub struct Discard;
    impl SpanExporter for Discard {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            drop(batch);
            Ok(())
        }
    }

    pub fn provider(sampler: Sampler) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_simple_exporter(Discard)
            .with_sampler(sampler)
            .build()
    }

    pub fn tracer(p: &SdkTracerProvider) -> SdkTracer {
        p.tracer("bench")
    }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const BAGGAGE5: &str =
    "user.id=42,tenant=acme,region=eu-west-1,feature.flag=checkout%20v2,session=7f3a9c21";

fn span_start_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_start_end/sampled");
    {
        let p = ft::provider(ft::Sampler::AlwaysOn, true);
        let t = p.tracer("bench");
        g.bench_function("ferrotrace", |b| b.iter(|| drop(black_box(t.start("foo")))));
    }
    {
        let p = ft::provider(ft::Sampler::AlwaysOn, false);
        let t = p.tracer("bench");
        g.bench_function("ferrotrace_no_watchdog", |b| {
            b.iter(|| drop(black_box(t.start("foo"))))
        });
    }
    {
        use ot::{Span, Tracer};
        let p = ot::provider(ot::Sampler::AlwaysOn);
        let t = ot::tracer(&p);
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| black_box(t.start("foo")).end())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("span_start_end/sampled_4_attrs");
    {
        let p = ft::provider(ft::Sampler::AlwaysOn, true);
        let t = p.tracer("bench");
        g.bench_function("ferrotrace", |b| {
            b.iter(|| {
                let mut s = t.start("foo");
                s.set_attribute("key1", false);
                s.set_attribute("key2", "hello");
                s.set_attribute("key3", 123i64);
                s.set_attribute("key4", 123.456);
                s.end();
            })
        });
    }
    {
        use ot::{Span, Tracer};
        let p = ot::provider(ot::Sampler::AlwaysOn);
        let t = ot::tracer(&p);
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| {
                let mut s = t.start("foo");
                s.set_attribute(ot::KeyValue::new("key1", false));
                s.set_attribute(ot::KeyValue::new("key2", "hello"));
                s.set_attribute(ot::KeyValue::new("key3", 123i64));
                s.set_attribute(ot::KeyValue::new("key4", 123.456));
                s.end();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("span_start_end/unsampled");
    {
        let p = ft::provider(ft::Sampler::AlwaysOff, true);
        let t = p.tracer("bench");
        g.bench_function("ferrotrace", |b| {
            b.iter(|| {
                let mut s = t.start("foo");
                s.set_attribute("key1", false);
                s.end();
            })
        });
    }
    {
        use ot::{Span, Tracer};
        let p = ot::provider(ot::Sampler::AlwaysOff);
        let t = ot::tracer(&p);
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| {
                let mut s = t.start("foo");
                s.set_attribute(ot::KeyValue::new("key1", false));
                s.end();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("span_start_end/child_of_active_parent");
    {
        let p = ft::provider(ft::Sampler::default(), true);
        let t = p.tracer("bench");
        let parent = t.start("parent");
        let _guard = parent.make_current();
        g.bench_function("ferrotrace", |b| {
            b.iter(|| drop(black_box(t.start("child"))))
        });
    }
    {
        use ot::{Span, TraceContextExt, Tracer};
        let p = ot::provider(ot::Sampler::ParentBased(Box::new(ot::Sampler::AlwaysOn)));
        let t = ot::tracer(&p);
        let parent = t.start("parent");
        let _guard = ot::Context::current_with_span(parent).attach();
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| black_box(t.start("child")).end())
        });
    }
    g.finish();
}

fn propagation(c: &mut Criterion) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), TRACEPARENT.into());

    let mut g = c.benchmark_group("traceparent/extract");
    {
        use ft::TextMapPropagator;
        let prop = ft::TraceContextPropagator::new();
        let cx = ft::Context::new();
        g.bench_function("ferrotrace", |b| {
            b.iter(|| black_box(prop.extract_with_context(&cx, black_box(&carrier))))
        });
    }
    {
        use ot::TextMapPropagator;
        let prop = ot::TraceContextPropagator::new();
        let cx = ot::Context::new();
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| black_box(prop.extract_with_context(&cx, black_box(&carrier))))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("traceparent/inject");
    {
        use ft::TextMapPropagator;
        let prop = ft::TraceContextPropagator::new();
        let cx = prop.extract_with_context(&ft::Context::new(), &carrier);
        let mut out: HashMap<String, String> = HashMap::new();
        g.bench_function("ferrotrace", |b| {
            b.iter(|| {
                out.clear();
                prop.inject_context(black_box(&cx), &mut out);
            })
        });
    }
    {
        use ot::TextMapPropagator;
        let prop = ot::TraceContextPropagator::new();
        let cx = prop.extract_with_context(&ot::Context::new(), &carrier);
        let mut out: HashMap<String, String> = HashMap::new();
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| {
                out.clear();
                prop.inject_context(black_box(&cx), &mut out);
            })
        });
    }
    g.finish();

    let mut bag: HashMap<String, String> = HashMap::new();
    bag.insert("baggage".into(), BAGGAGE5.into());
    let mut g = c.benchmark_group("baggage/extract_5_members");
    {
        use ft::TextMapPropagator;
        let prop = ft::BaggagePropagator::new();
        let cx = ft::Context::new();
        g.bench_function("ferrotrace", |b| {
            b.iter(|| black_box(prop.extract_with_context(&cx, black_box(&bag))))
        });
    }
    {
        use ot::TextMapPropagator;
        let prop = ot::BaggagePropagator::new();
        let cx = ot::Context::new();
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| black_box(prop.extract_with_context(&cx, black_box(&bag))))
        });
    }
    g.finish();
    let _ = ft::Baggage::new();
}

criterion_group! {
    name = benches;
    config = criterion::Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = span_start_end, propagation
}
criterion_main!(benches);
