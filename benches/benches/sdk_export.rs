//! SDK export path: ferrotrace's batch span processor and OTLP encoding beside
//! opentelemetry_sdk 0.33's `BatchSpanProcessor` and opentelemetry-proto's
//! transform, in the same run.
//!
//! - `on_end`: one finished span handed to the batch processor (the
//!   producer-side cost of `span.end()`); spans are cloned outside the timed
//!   region and the queue never fills.
//! - `span_end`: only `span.end()` of a live span into the batch processor
//!   (the application's producer-side cost), from 1 and from 2 producer
//!   threads at once; spans are started and the processor flushed outside the
//!   timed region, so the queue never fills. The figure is the time per
//!   `end()` on one producer thread (the slowest thread's total / its spans).
//! - `span_start_end`: a span started and ended through each SDK's tracer into
//!   its batch processor, from 1 and from 2 producer threads at once.
//! - `throughput`: 10,000 spans through the processor into a discarding
//!   exporter, timed until `force_flush` returns (every span is exported).
//! - `otlp_encode`: a 512-span batch converted to OTLP protobuf bytes.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const QUEUE: usize = 1 << 16;
const BATCH: usize = 512;
const THROUGHPUT_SPANS: u64 = 10_000;

mod ft {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    pub use ferrotrace::export::batch::BatchSpanProcessor;
    pub use ferrotrace::export::otlp::encode_protobuf;
    pub use ferrotrace::export::stats::ExportStats;
    pub use ferrotrace::export::{ExportResult, SpanData, SpanExporter, SpanProcessor};
    use ferrotrace::trace::span_data::{Event, InstrumentationScope, SpanKind, Status};
    pub use ferrotrace::trace::TracerProvider;
    use ferrotrace::{KeyValue, Resource, SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    /// Discards batches, counting spans.
    #[derive(Clone, Default)]
    pub struct Counting(pub Arc<AtomicU64>);
    impl SpanExporter for Counting {
        fn export(&self, batch: Vec<SpanData>) -> ExportResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    pub fn processor(exporter: Counting) -> BatchSpanProcessor {
        BatchSpanProcessor::builder(exporter)
            .with_max_queue_size(super::QUEUE)
            .with_max_export_batch_size(super::BATCH)
            .with_stats(ExportStats::new())
            .build()
    }

    /// With the default un-ended span watchdog, as users get it.
    pub fn provider(exporter: Counting) -> TracerProvider {
        TracerProvider::builder()
            .with_span_processor(processor(exporter))
            .with_service_name("bench")
            .build()
    }

    /// A span with 4 attributes and one event.
    pub fn span(i: u64) -> SpanData {
        let resource = Arc::new(Resource::new([KeyValue::new("service.name", "bench")]));
        let scope = Arc::new(InstrumentationScope {
            name: Cow::Borrowed("bench"),
            ..Default::default()
        });
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes((u128::from(i) + 1).to_be_bytes()),
                SpanId::from_bytes((i + 1).to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from_bytes((i + 7).to_be_bytes()),
            parent_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("GET /api/orders"),
            start_time_ns: 1_700_000_000_000_000_000,
            end_time_ns: 1_700_000_000_001_000_000,
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 200i64),
                KeyValue::new("url.path", "/api/orders"),
                KeyValue::new("server.port", 8080i64),
            ],
            dropped_attributes_count: 0,
            events: vec![Event {
                name: Cow::Borrowed("cache.miss"),
                timestamp_ns: 1_700_000_000_000_500_000,
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            }],
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Status::Ok,
            resource: resource.into(),
            scope: scope.into(),
        }
    }
}

mod ot {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    pub use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::error::OTelSdkResult;
    pub use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanProcessor};
    use opentelemetry_sdk::trace::{
        SdkTracerProvider, SpanData, SpanEvents, SpanExporter, SpanLinks,
    };
    use opentelemetry_sdk::Resource;
    use prost::Message;

    #[derive(Clone, Debug, Default)]
    pub struct Counting(pub Arc<AtomicU64>);
    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    pub fn processor(exporter: Counting) -> BatchSpanProcessor {
        BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(super::QUEUE)
                    .with_max_export_batch_size(super::BATCH)
                    .build(),
            )
            .build()
    }

    pub fn provider(exporter: Counting) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(processor(exporter))
            .with_resource(Resource::builder().with_service_name("bench").build())
            .build()
    }

    pub fn span(i: u64) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000);
        let mut events = SpanEvents::default();
        events.events.push(opentelemetry::trace::Event::new(
            "cache.miss",
            start + Duration::from_micros(500),
            Vec::new(),
            0,
        ));
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(i) + 1),
                SpanId::from(i + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(i + 7),
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("GET /api/orders"),
            start_time: start,
            end_time: start + Duration::from_millis(1),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 200i64),
                KeyValue::new("url.path", "/api/orders"),
                KeyValue::new("server.port", 8080i64),
            ],
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: Status::Ok,
            instrumentation_scope: InstrumentationScope::builder("bench").build(),
        }
    }

    pub fn resource() -> ResourceAttributesWithSchema {
        (&Resource::builder().with_service_name("bench").build()).into()
    }

    pub fn encode(batch: Vec<SpanData>, resource: &ResourceAttributesWithSchema) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, resource),
        }
        .encode_to_vec()
    }
}

/// Times only `on_end` calls: spans are cloned before the timed region and the
/// processor is flushed (untimed) after every chunk, so the queue never fills
/// and the figure is the enqueue path, not the drop path.
fn on_end(c: &mut Criterion) {
    const CHUNK: u64 = 1024;
    let mut g = c.benchmark_group("sdk_export/on_end");
    {
        let p = ft::processor(ft::Counting::default());
        let template = ft::span(1);
        g.bench_function("ferrotrace", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let spans: Vec<_> = (0..n).map(|_| template.clone()).collect();
                    let t = Instant::now();
                    for s in spans {
                        ft::SpanProcessor::on_end(&p, s);
                    }
                    total += t.elapsed();
                    ft::SpanProcessor::force_flush(&p, Duration::from_secs(30)).expect("flush");
                    left -= n;
                }
                total
            })
        });
        let _ = ft::SpanProcessor::shutdown(&p, Duration::from_secs(10));
        eprintln!("ferrotrace on_end counters: {}", p.stats().snapshot());
    }
    {
        let p = ot::processor(ot::Counting::default());
        let template = ot::span(1);
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let spans: Vec<_> = (0..n).map(|_| template.clone()).collect();
                    let t = Instant::now();
                    for s in spans {
                        ot::SpanProcessor::on_end(&p, s);
                    }
                    total += t.elapsed();
                    ot::SpanProcessor::force_flush(&p).expect("flush");
                    left -= n;
                }
                total
            })
        });
        let _ = ot::SpanProcessor::shutdown(&p);
    }
    g.finish();
}

/// Runs `per_thread(iters)` on `threads` threads released together; returns
/// the wall time of the slowest.
fn concurrent(threads: usize, iters: u64, work: impl Fn(u64) + Send + Sync + 'static) -> Duration {
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (work, barrier) = (Arc::clone(&work), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                work(iters);
                t.elapsed()
            })
        })
        .collect();
    barrier.wait();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

/// Like [`concurrent`], but each thread reports the time it measured itself
/// (`work` returns it); returns the largest.
fn concurrent_self_timed(
    threads: usize,
    iters: u64,
    work: impl Fn(u64) -> Duration + Send + Sync + 'static,
) -> Duration {
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (work, barrier) = (Arc::clone(&work), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                work(iters)
            })
        })
        .collect();
    barrier.wait();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

/// Spans ended per timed chunk; with 2 producers, 2 chunks stay far below
/// `QUEUE`, and each thread flushes (untimed) after its chunk, so `end()`
/// always takes the enqueue path, never the queue-full drop path.
const END_CHUNK: u64 = 1024;

fn span_end(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("sdk_export/span_end/{threads}_thread"));
        {
            let provider = Arc::new(ft::provider(ft::Counting::default()));
            let tracer = Arc::new(provider.tracer("bench"));
            g.bench_function("ferrotrace", |b| {
                b.iter_custom(|iters| {
                    let (tracer, provider) = (Arc::clone(&tracer), Arc::clone(&provider));
                    concurrent_self_timed(threads, iters, move |n| {
                        let mut timed = Duration::ZERO;
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(END_CHUNK);
                            let mut spans: Vec<_> = (0..k).map(|_| tracer.start("op")).collect();
                            let t = Instant::now();
                            for s in spans.iter_mut() {
                                s.end();
                            }
                            timed += t.elapsed();
                            black_box(&spans);
                            drop(spans);
                            provider
                                .force_flush(Duration::from_secs(30))
                                .expect("flush");
                            left -= k;
                        }
                        timed
                    })
                })
            });
            let _ = provider.shutdown(Duration::from_secs(10));
        }
        {
            use ot::{Tracer, TracerProvider};
            let provider = Arc::new(ot::provider(ot::Counting::default()));
            let tracer = Arc::new(provider.tracer("bench"));
            g.bench_function("opentelemetry_sdk", |b| {
                b.iter_custom(|iters| {
                    let (tracer, provider) = (Arc::clone(&tracer), Arc::clone(&provider));
                    concurrent_self_timed(threads, iters, move |n| {
                        let mut timed = Duration::ZERO;
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(END_CHUNK);
                            let mut spans: Vec<_> = (0..k).map(|_| tracer.start("op")).collect();
                            let t = Instant::now();
                            for s in spans.iter_mut() {
                                opentelemetry::trace::Span::end(s);
                            }
                            timed += t.elapsed();
                            black_box(&spans);
                            drop(spans);
                            provider.force_flush().expect("flush");
                            left -= k;
                        }
                        timed
                    })
                })
            });
            let _ = provider.shutdown();
        }
        g.finish();
    }
}

fn span_start_end(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("sdk_export/span_start_end/{threads}_thread"));
        {
            let provider = ft::provider(ft::Counting::default());
            let tracer = Arc::new(provider.tracer("bench"));
            g.bench_function("ferrotrace", |b| {
                b.iter_custom(|iters| {
                    let tracer = Arc::clone(&tracer);
                    concurrent(threads, iters, move |n| {
                        for _ in 0..n {
                            let mut s = tracer.start("op");
                            s.end();
                            black_box(&s);
                        }
                    })
                })
            });
            let _ = provider.shutdown(Duration::from_secs(10));
        }
        {
            use ot::{Tracer, TracerProvider};
            let provider = ot::provider(ot::Counting::default());
            let tracer = Arc::new(provider.tracer("bench"));
            g.bench_function("opentelemetry_sdk", |b| {
                b.iter_custom(|iters| {
                    let tracer = Arc::clone(&tracer);
                    concurrent(threads, iters, move |n| {
                        for _ in 0..n {
                            let mut s = tracer.start("op");
                            opentelemetry::trace::Span::end(&mut s);
                            black_box(&s);
                        }
                    })
                })
            });
            let _ = provider.shutdown();
        }
        g.finish();
    }
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("sdk_export/throughput_10k");
    g.throughput(Throughput::Elements(THROUGHPUT_SPANS));
    {
        let counter = ft::Counting::default();
        let p = ft::processor(counter.clone());
        let spans: Vec<_> = (0..THROUGHPUT_SPANS).map(ft::span).collect();
        let mut sent = 0u64;
        g.bench_function("ferrotrace", |b| {
            b.iter_batched(
                || spans.clone(),
                |batch| {
                    for s in batch {
                        ft::SpanProcessor::on_end(&p, s);
                    }
                    sent += THROUGHPUT_SPANS;
                    ft::SpanProcessor::force_flush(&p, Duration::from_secs(30)).expect("flush");
                },
                BatchSize::PerIteration,
            )
        });
        assert_eq!(
            counter.0.load(Ordering::Relaxed),
            sent,
            "every span exported"
        );
        let _ = ft::SpanProcessor::shutdown(&p, Duration::from_secs(10));
    }
    {
        let counter = ot::Counting::default();
        let p = ot::processor(counter.clone());
        let spans: Vec<_> = (0..THROUGHPUT_SPANS).map(ot::span).collect();
        let mut sent = 0u64;
        g.bench_function("opentelemetry_sdk", |b| {
            b.iter_batched(
                || spans.clone(),
                |batch| {
                    for s in batch {
                        ot::SpanProcessor::on_end(&p, s);
                    }
                    sent += THROUGHPUT_SPANS;
                    ot::SpanProcessor::force_flush(&p).expect("flush");
                },
                BatchSize::PerIteration,
            )
        });
        assert_eq!(
            counter.0.load(Ordering::Relaxed),
            sent,
            "every span exported"
        );
        let _ = ot::SpanProcessor::shutdown(&p);
    }
    g.finish();
}

fn otlp_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("sdk_export/otlp_encode_512");
    g.throughput(Throughput::Elements(BATCH as u64));
    let ft_batch: Vec<_> = (0..BATCH as u64).map(ft::span).collect();
    g.bench_function("ferrotrace", |b| {
        b.iter_batched(
            || ft_batch.clone(),
            |batch| black_box(ft::encode_protobuf(batch)),
            BatchSize::SmallInput,
        )
    });
    let ot_batch: Vec<_> = (0..BATCH as u64).map(ot::span).collect();
    let resource = ot::resource();
    g.bench_function("opentelemetry_sdk", |b| {
        b.iter_batched(
            || ot_batch.clone(),
            |batch| black_box(ot::encode(batch, &resource)),
            BatchSize::SmallInput,
        )
    });
    // Same input, comparable output size (sanity check that both encode the same data).
    let a = ft::encode_protobuf(ft_batch.clone()).len();
    let b = ot::encode(ot_batch.clone(), &resource).len();
    eprintln!("otlp_encode_512 body sizes: ferrotrace {a} B, opentelemetry {b} B");
    g.finish();
}

/// Process CPU time (all threads) from `/proc/self/stat`, in clock ticks of
/// 10 ms; `None` where that file does not exist.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time per span for pushing spans through each processor into a
/// discarding exporter, summed over all threads. Unlike wall time this hardly
/// depends on how busy the machine is, so it is printed beside the criterion
/// figures.
fn cpu_per_span(_c: &mut Criterion) {
    const N: u64 = 2_000_000;
    const CHUNK: u64 = 10_000;
    fn run(mut end: impl FnMut(u64), mut flush: impl FnMut()) -> Option<f64> {
        let before = process_cpu()?;
        let mut i = 0;
        while i < N {
            for j in 0..CHUNK {
                end(i + j);
            }
            flush();
            i += CHUNK;
        }
        let after = process_cpu()?;
        Some((after - before).as_nanos() as f64 / N as f64)
    }
    let ft_counter = ft::Counting::default();
    let ft_p = ft::processor(ft_counter.clone());
    let ft_tpl = ft::span(1);
    let ft_ns = run(
        |_| ft::SpanProcessor::on_end(&ft_p, ft_tpl.clone()),
        || ft::SpanProcessor::force_flush(&ft_p, Duration::from_secs(30)).expect("flush"),
    );
    assert_eq!(ft_counter.0.load(Ordering::Relaxed), N);
    let ot_counter = ot::Counting::default();
    let ot_p = ot::processor(ot_counter.clone());
    let ot_tpl = ot::span(1);
    let ot_ns = run(
        |_| ot::SpanProcessor::on_end(&ot_p, ot_tpl.clone()),
        || ot::SpanProcessor::force_flush(&ot_p).expect("flush"),
    );
    assert_eq!(ot_counter.0.load(Ordering::Relaxed), N);
    if let (Some(f), Some(o)) = (ft_ns, ot_ns) {
        eprintln!(
            "cpu_per_span (clone + on_end + batch + export + drop, all threads, {N} spans): \
             ferrotrace {f:.0} ns, opentelemetry_sdk {o:.0} ns, ferrotrace / opentelemetry_sdk {:.2}",
            f / o
        );
    }
}

criterion_group!(
    benches,
    on_end,
    span_end,
    span_start_end,
    throughput,
    otlp_encode,
    cpu_per_span
);
criterion_main!(benches);
