//! The `tracing` bridge: `tracing` spans and events recorded as ferrotrace
//! spans, nesting with ferrotrace spans, and no spans from SDK threads.

use ferrotrace::context::Context;
use ferrotrace::export::InMemorySpanExporter;
use ferrotrace::integrations::tracing::FerrotraceLayer;
use ferrotrace::trace::{Sampler, SpanKind, Status, TracerProvider};
use ferrotrace::{SpanId, Value};
use tracing::instrument;
use tracing_subscriber::layer::SubscriberExt;

fn setup() -> (InMemorySpanExporter, TracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::AlwaysOn)
        .with_unended_span_age(None)
        .build();
    (exporter, provider)
}

fn attr<'a>(span: &'a ferrotrace::export::SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[instrument(fields(otel.kind = "server", otel.name = "GET /users/{id}", http.response.status_code = tracing::field::Empty))]
fn handle(user_id: u64, admin: bool) -> u32 {
    tracing::info!(cache = "miss", "loading user");
    let n = load(user_id);
    tracing::Span::current().record("http.response.status_code", 200);
    n
}

#[instrument(skip_all, fields(db.system = "sqlite", rows = tracing::field::Empty, ratio = 0.5))]
fn load(id: u64) -> u32 {
    tracing::Span::current().record("rows", 3_i64);
    if id == 0 {
        tracing::error!(error = "no such user", "lookup failed");
    }
    3
}

#[test]
fn instrumented_functions_become_nested_spans() {
    let (exporter, provider) = setup();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    tracing::subscriber::with_default(subscriber, || {
        handle(7, true);
        handle(0, false);
    });
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), 4);
    let (load, handle) = (&spans[0], &spans[1]);
    assert_eq!(handle.name, "GET /users/{id}");
    assert_eq!(handle.span_kind, SpanKind::Server);
    assert_eq!(handle.parent_span_id, SpanId::INVALID);
    assert_eq!(attr(handle, "user_id"), Some(&Value::I64(7)));
    assert_eq!(attr(handle, "admin"), Some(&Value::Bool(true)));
    assert_eq!(
        attr(handle, "http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert!(attr(handle, "code.line.number").is_some());
    assert_eq!(handle.events.len(), 1);
    assert_eq!(handle.events[0].name, "loading user");
    assert!(handle.events[0]
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "cache" && kv.value == Value::from("miss")));

    assert_eq!(load.name, "load");
    assert_eq!(load.parent_span_id, handle.span_context.span_id());
    assert_eq!(load.span_context.trace_id(), handle.span_context.trace_id());
    assert_eq!(attr(load, "db.system"), Some(&Value::from("sqlite")));
    assert_eq!(attr(load, "rows"), Some(&Value::I64(3)));
    assert_eq!(attr(load, "ratio"), Some(&Value::F64(0.5)));
    assert_eq!(load.status, Status::Unset);

    // Second call: the ERROR event with an `error` field marks `load` as failed.
    let failed = &spans[2];
    assert_eq!(failed.name, "load");
    assert!(matches!(failed.status, Status::Error { .. }));
    let ev = &failed.events[0];
    assert_eq!(ev.name, "lookup failed");
    assert!(ev.attributes.iter().any(
        |kv| kv.key.as_str() == "exception.message" && kv.value == Value::from("no such user")
    ));
}

#[test]
fn status_fields_and_mixing_with_ferrotrace_spans() {
    let (exporter, provider) = setup();
    let tracer = provider.tracer("direct");
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    tracing::subscriber::with_default(subscriber, || {
        // A ferrotrace span made current (as the HTTP layer does) parents tracing spans...
        let request = tracer.start("request");
        let _g = request.make_current();
        let outer = tracing::info_span!(
            "outer",
            otel.status_code = "error",
            otel.status_message = "quota exceeded"
        );
        let _e = outer.enter();
        // ...and an entered tracing span parents ferrotrace spans.
        let inner = tracer.start("inner-direct");
        drop(inner);
        let ok = tracing::info_span!(
            "ok-span",
            otel.status_code = "ok",
            error = tracing::field::Empty
        );
        ok.record("error", "ignored after ok");
        drop(ok);
        // An explicit root ignores the current context.
        let root = tracing::info_span!(parent: None, "detached");
        drop(root);
    });
    let spans = exporter.finished_spans();
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    let request = by_name("request");
    let outer = by_name("outer");
    assert_eq!(outer.parent_span_id, request.span_context.span_id());
    assert_eq!(outer.status, Status::error("quota exceeded"));
    assert_eq!(
        by_name("inner-direct").parent_span_id,
        outer.span_context.span_id()
    );
    assert_eq!(by_name("ok-span").status, Status::Ok);
    assert_eq!(
        by_name("ok-span").parent_span_id,
        outer.span_context.span_id()
    );
    assert_eq!(by_name("detached").parent_span_id, SpanId::INVALID);
    assert_ne!(
        by_name("detached").span_context.trace_id(),
        request.span_context.trace_id()
    );
    // Entering/exiting restored the context.
    assert!(!Context::current().has_active_span());
}

#[test]
fn sdk_threads_and_suppressed_scopes_create_no_spans() {
    let (exporter, provider) = setup();
    let layer = FerrotraceLayer::new(provider.tracer("app"));
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    // The exporter/processor threads are named `ferrotrace-*`: whatever tonic
    // or hyper log there must not become spans (no feedback loop).
    let d = dispatch.clone();
    std::thread::Builder::new()
        .name("ferrotrace-otlp".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&d, || {
                let _s = tracing::info_span!("h2 send").entered();
                tracing::info!("sending");
            })
        })
        .unwrap()
        .join()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        let _guard = ferrotrace::integrations::suppress_instrumentation();
        let _s = tracing::info_span!("exporter internals").entered();
    });
    tracing::dispatcher::with_default(&dispatch, || {
        let _s = tracing::info_span!("user work").entered();
    });
    let spans = exporter.finished_spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["user work"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instrument_async_under_http_layer_nests() {
    use axum::routing::get;
    use ferrotrace::integrations::http::HttpServerLayer;
    use tracing::Instrument;

    let (exporter, provider) = setup();
    // Global default: tokio worker threads run the handler.
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    let _default = tracing::subscriber::set_default(subscriber);
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());

    let app = axum::Router::new()
        .route(
            "/work",
            get(move || {
                let dispatch = dispatch.clone();
                async move {
                    let span = tracing::dispatcher::with_default(&dispatch, || {
                        tracing::info_span!("db query")
                    });
                    async {
                        tokio::task::yield_now().await;
                    }
                    .instrument(span)
                    .await;
                    "done"
                }
            }),
        )
        .layer(HttpServerLayer::new(provider.tracer("http")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /work HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf).ends_with("done"));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while exporter.finished_spans().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let spans = exporter.finished_spans();
    let server = spans
        .iter()
        .find(|s| s.name == "GET /work")
        .expect("server span");
    let db = spans
        .iter()
        .find(|s| s.name == "db query")
        .expect("tracing span");
    assert_eq!(db.parent_span_id, server.span_context.span_id());
}

#[test]
fn non_string_error_fields_set_an_error_status() {
    let (exporter, provider) = setup();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    tracing::subscriber::with_default(subscriber, || {
        drop(tracing::info_span!("bool-true", error = true));
        drop(tracing::info_span!("int", error = 404_i64));
        drop(tracing::info_span!("float", error = 0.5));
        drop(tracing::info_span!("bool-false", error = false));
        let recorded = tracing::info_span!("recorded-later", error = tracing::field::Empty);
        recorded.record("error", true);
        drop(recorded);
        let s = tracing::info_span!("event-bool");
        s.in_scope(|| tracing::info!(error = true, "request failed"));
        drop(s);
        let s = tracing::info_span!("event-false");
        s.in_scope(|| tracing::info!(error = false, "all fine"));
        drop(s);
    });
    let spans = exporter.finished_spans();
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    assert_eq!(by_name("bool-true").status, Status::error(""));
    assert_eq!(
        attr(by_name("bool-true"), "error"),
        Some(&Value::Bool(true)),
        "the field stays a typed attribute"
    );
    assert_eq!(by_name("int").status, Status::error("404"));
    assert_eq!(attr(by_name("int"), "error"), Some(&Value::I64(404)));
    assert_eq!(by_name("float").status, Status::error("0.5"));
    assert_eq!(by_name("bool-false").status, Status::Unset);
    assert_eq!(by_name("recorded-later").status, Status::error(""));

    let ev = by_name("event-bool");
    assert_eq!(ev.status, Status::error(""));
    assert_eq!(ev.events[0].name, "request failed");
    assert!(
        ev.events[0]
            .attributes
            .iter()
            .all(|kv| kv.key.as_str() != "exception.message"),
        "a bare `true` has no message to report"
    );
    assert_eq!(by_name("event-false").status, Status::Unset);
}

fn event_attr<'a>(e: &'a ferrotrace::trace::Event, key: &str) -> Option<&'a Value> {
    e.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outside_tracing_spans_attach_to_the_http_request_span() {
    use axum::routing::get;
    use ferrotrace::integrations::http::HttpServerLayer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (exporter, provider) = setup();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    let dispatch = tracing::Dispatch::new(subscriber);
    let app = axum::Router::new()
        .route(
            "/work",
            get(move || {
                let dispatch = dispatch.clone();
                async move {
                    tokio::task::yield_now().await;
                    // No `tracing` span anywhere: only the layer's ferrotrace span is current.
                    tracing::dispatcher::with_default(&dispatch, || {
                        tracing::warn!(user = 7_i64, "slow path");
                        tracing::info!(error = true, "cache write failed");
                    });
                    "done"
                }
            }),
        )
        .layer(HttpServerLayer::new(provider.tracer("http")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /work HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf).ends_with("done"));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while exporter.finished_spans().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), 1, "no extra spans: {spans:?}");
    let server = &spans[0];
    assert_eq!(server.name, "GET /work");
    let names: Vec<_> = server.events.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["slow path", "cache write failed"]);
    let slow = &server.events[0];
    assert_eq!(event_attr(slow, "user"), Some(&Value::I64(7)));
    assert_eq!(
        event_attr(slow, "level"),
        Some(&Value::String("WARN".into()))
    );
    assert!(slow.timestamp_ns >= server.start_time_ns && slow.timestamp_ns <= server.end_time_ns);
    // The 200 response leaves the status alone; the `error = true` event sets it.
    assert_eq!(server.status, Status::error(""));
}

#[test]
fn events_without_any_reachable_span_are_not_recorded() {
    use ferrotrace::trace::SpanInbox;

    let (exporter, provider) = setup();
    let tracer = provider.tracer("direct");
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    tracing::subscriber::with_default(subscriber, || {
        // Nothing current at all.
        tracing::error!("nowhere to go");
        // The request span offers an inbox; a child made current under it does
        // not, so its events must not land on the parent.
        let mut request = tracer.start("request");
        let inbox = request.inbox().expect("recording span");
        let cx = request.context().with_value(inbox.clone());
        let _g = cx.attach();
        tracing::info!("on request");
        let child = tracer.start("child");
        {
            let _c = child.make_current();
            assert!(SpanInbox::current().is_none());
            tracing::info!("under child");
        }
        drop(child);
        request.end();
        // After the end the inbox is closed.
        inbox.add_event("late", vec![]);
        tracing::info!("after end");
    });
    let spans = exporter.finished_spans();
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    let names: Vec<_> = request.events.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["on request"]);
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    assert!(child.events.is_empty());
    assert_eq!(spans.len(), 2);
}

#[test]
fn debug_and_trace_are_not_recorded_by_default() {
    let (exporter, provider) = setup();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    tracing::subscriber::with_default(subscriber, || {
        let _req = tracing::info_span!("request").entered();
        tracing::debug!("library detail");
        tracing::trace!("frame sent");
        {
            // A library's debug span: not recorded; an info event inside it
            // goes to the nearest recorded ancestor.
            let _lib = tracing::debug_span!("h2 stream").entered();
            tracing::info!("inside library span");
            let _inner = tracing::info_span!("handler step").entered();
        }
        tracing::info!("done");
    });
    let spans = exporter.finished_spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["handler step", "request"]);
    let (step, request) = (&spans[0], &spans[1]);
    assert_eq!(step.parent_span_id, request.span_context.span_id());
    let events: Vec<_> = request.events.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(events, ["inside library span", "done"]);

    // Opting in records debug too.
    let (exporter, provider) = setup();
    let subscriber = tracing_subscriber::registry().with(
        FerrotraceLayer::new(provider.tracer("app"))
            .with_max_level(tracing::level_filters::LevelFilter::DEBUG),
    );
    tracing::subscriber::with_default(subscriber, || {
        let _s = tracing::debug_span!("debug span").entered();
        tracing::debug!("detail");
        tracing::trace!("still not");
    });
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_during_a_client_call_belong_to_the_client_span() {
    use axum::routing::get;
    use ferrotrace::integrations::http::{HttpClientLayer, HttpServerLayer};
    use http_body_util::{BodyExt, Full};
    use tower::{Service, ServiceExt};

    let (exporter, provider) = setup();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    let dispatch = tracing::Dispatch::new(subscriber);

    // Downstream service (untraced).
    let down = axum::Router::new().route("/down", get(|| async { "ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, down).await.unwrap() });

    // The client stack logs (as hyper or a retry layer would) below the client layer.
    let d2 = dispatch.clone();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let traced = tower::ServiceBuilder::new()
        .layer(HttpClientLayer::new(provider.tracer("http-client")))
        .map_request(move |r: http::Request<Full<bytes::Bytes>>| {
            tracing::dispatcher::with_default(&d2, || tracing::info!("client stack: sending"));
            r
        })
        .service(client);

    let app = axum::Router::new()
        .route(
            "/front",
            get(move || {
                let (dispatch, mut traced) = (dispatch.clone(), traced.clone());
                async move {
                    tracing::dispatcher::with_default(&dispatch, || {
                        tracing::info!("handler: before")
                    });
                    let req = http::Request::get(format!("http://{down_addr}/down"))
                        .body(Full::new(bytes::Bytes::new()))
                        .unwrap();
                    let resp = traced.ready().await.unwrap().call(req).await.unwrap();
                    let _ = resp.into_body().collect().await;
                    tracing::dispatcher::with_default(&dispatch, || {
                        tracing::info!("handler: after")
                    });
                    "done"
                }
            }),
        )
        .layer(HttpServerLayer::new(provider.tracer("http")));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let resp = client
        .oneshot(
            http::Request::get(format!("http://{addr}/front"))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"done");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while exporter.finished_spans().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let spans = exporter.finished_spans();
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    let names = |s: &ferrotrace::export::SpanData| -> Vec<String> {
        s.events.iter().map(|e| e.name.to_string()).collect()
    };
    assert_eq!(names(client), ["client stack: sending"]);
    assert_eq!(names(server), ["handler: before", "handler: after"]);
}

/// Remembers the name, kind and attribute keys it is asked about; samples
/// spans named `keep`.
#[derive(Debug, Default)]
struct AskedSampler(std::sync::Mutex<Vec<(String, SpanKind, Vec<String>)>>);

impl ferrotrace::trace::ShouldSample for AskedSampler {
    fn should_sample(
        &self,
        _parent: Option<&ferrotrace::SpanContext>,
        _trace_id: ferrotrace::TraceId,
        name: &str,
        kind: SpanKind,
        attributes: &[ferrotrace::KeyValue],
        _links: &[ferrotrace::trace::Link],
    ) -> ferrotrace::trace::SamplingResult {
        self.0.lock().unwrap().push((
            name.to_string(),
            kind,
            attributes
                .iter()
                .map(|a| a.key.as_str().to_string())
                .collect(),
        ));
        ferrotrace::trace::SamplingResult {
            decision: if name == "keep" {
                ferrotrace::trace::SamplingDecision::RecordAndSample
            } else {
                ferrotrace::trace::SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: None,
        }
    }
}

/// The bridge lets the sampler decide before it records a span's fields
/// (issue 16): an unsampled span records nothing, yet its context still
/// reaches the code inside it and its children; a custom sampler still sees
/// the fields, `otel.name` and `otel.kind`.
#[test]
fn unsampled_spans_keep_their_context_and_custom_samplers_see_fields() {
    let exporter = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::AlwaysOff)
        .with_unended_span_age(None)
        .build();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    let (outer, inner) = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            "request",
            user.id = 7,
            route = "/a",
            late = tracing::field::Empty
        );
        let _e = span.enter();
        span.record("late", "value");
        let outer = Context::current().span_context().clone();
        let child = tracing::info_span!("db");
        let _c = child.enter();
        tracing::info!("inside");
        (outer, Context::current().span_context().clone())
    });
    assert!(outer.is_valid() && !outer.is_sampled());
    assert!(inner.is_valid() && !inner.is_sampled());
    assert_eq!(
        inner.trace_id(),
        outer.trace_id(),
        "the child continues the trace"
    );
    assert_ne!(inner.span_id(), outer.span_id());
    assert!(exporter.finished_spans().is_empty());

    let asked = std::sync::Arc::new(AskedSampler::default());
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(Sampler::Custom(asked.clone()))
        .with_unended_span_age(None)
        .build();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    tracing::subscriber::with_default(subscriber, || {
        let _a =
            tracing::info_span!("drop", otel.name = "keep", otel.kind = "client", n = 1).entered();
        let _b = tracing::info_span!("other", m = 2).entered();
    });
    let asked = asked.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].0, "keep");
    assert_eq!(asked[0].1, SpanKind::Client);
    assert!(asked[0].2.contains(&"n".to_string()), "{asked:?}");
    assert!(
        asked[0].2.contains(&"code.line.number".to_string()),
        "{asked:?}"
    );
    assert_eq!(asked[1].0, "other");
    assert!(asked[1].2.contains(&"m".to_string()));
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "keep");
    assert_eq!(spans[0].span_kind, SpanKind::Client);
    assert_eq!(attr(&spans[0], "n"), Some(&Value::I64(1)));
}

/// Issue 16: string values are recorded without a copy when they repeat at
/// their callsite, and copied otherwise; either way each span and event
/// carries exactly the value it was given — constant, varying (past the
/// shared values of a field), long, `?debug`/`%display`, as a message or
/// as `otel.name`.
#[test]
fn repeated_and_varying_string_values_are_recorded_exactly() {
    let (exporter, provider) = setup();
    let subscriber =
        tracing_subscriber::registry().with(FerrotraceLayer::new(provider.tracer("app")));
    let long = "L".repeat(300);
    let n = 12;
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..n {
            let user = format!("user-{i}");
            let span = tracing::info_span!(
                "op",
                otel.name = %format_args!("op {}", i % 2),
                route = "/orders/{id}",
                user = user.as_str(),
                who = ?user,
                long = long.as_str(),
            );
            let _e = span.enter();
            tracing::info!("constant message");
            tracing::info!("message for {}", user);
        }
    });
    let spans = exporter.finished_spans();
    assert_eq!(spans.len(), n);
    for (i, s) in spans.iter().enumerate() {
        let user = format!("user-{i}");
        assert_eq!(s.name, format!("op {}", i % 2));
        assert_eq!(attr(s, "route"), Some(&Value::from("/orders/{id}")));
        assert_eq!(attr(s, "user"), Some(&Value::from(user.clone())));
        assert_eq!(attr(s, "who"), Some(&Value::from(format!("{user:?}"))));
        assert_eq!(attr(s, "long"), Some(&Value::from(long.clone())));
        let names: Vec<_> = s.events.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["constant message", &format!("message for {user}")]);
    }
    assert!(ferrotrace::integrations::tracing::interned_value_count() > 0);
    assert!(
        ferrotrace::integrations::tracing::interned_value_count()
            <= ferrotrace::integrations::tracing::MAX_INTERNED
    );
}
