//! The Jaeger receivers (gRPC `PostSpans`, Thrift over HTTP, agent UDP
//! compact and binary) and Zipkin's protobuf and v1 JSON endpoints against a
//! running collector: what lands in the store, limits and hostile input,
//! tokens, UDP drops under backpressure, and WAL replay of every new record
//! format. Bodies are built by the test's own Thrift encoder
//! (`jaeger_util`) and prost; clients nobody here wrote are in
//! `interop_jaeger_zipkin.rs`.

mod ingest_util;
mod jaeger_util;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrotrace_collector::config::Config;
use ferrotrace_collector::model::{AttrValue, KeyValue, SpanKind, StatusCode};
use ferrotrace_collector::receiver::jaeger::proto::pb as jpb;
use ferrotrace_collector::receiver::zipkin_proto::pb as zpb;
use ingest_util::*;
use jaeger_util::*;
use prost::Message;

fn jaeger_on(c: &mut Config) {
    c.jaeger.grpc_addr = "127.0.0.1:0".into();
    c.jaeger.thrift_http_addr = "127.0.0.1:0".into();
    c.jaeger.agent_compact_addr = "127.0.0.1:0".into();
    c.jaeger.agent_binary_addr = "127.0.0.1:0".into();
}

fn trace_of(high: i64, low: i64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&high.to_be_bytes());
    t[8..].copy_from_slice(&low.to_be_bytes());
    t
}

fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.into())
}

/// A batch with one span carrying every tag type, a log, a reference and
/// the special tags, from service `svc`.
fn rich_batch(high: i64, low: i64, svc: &str) -> TBatch {
    let mut span = simple_span(high, low, 0x11, 1_700_000_000_000_000, 1_500, "GET /x");
    span.parent = 0x10;
    span.refs = Some(vec![
        TRef {
            kind: 0,
            low,
            high,
            span: 0x10,
        },
        TRef {
            kind: 1,
            low: 7,
            high: 0,
            span: 0x77,
        },
    ]);
    span.tags = Some(vec![
        tag("span.kind", TVal::Str("server".into())),
        tag("error", TVal::Bool(true)),
        tag("otel.status_description", TVal::Str("boom".into())),
        tag("sampler.type", TVal::Str("probabilistic".into())),
        tag("sampler.param", TVal::Double(0.5)),
        tag("http.status_code", TVal::Long(503)),
        tag("payload", TVal::Binary(vec![1, 2, 3])),
        tag("cached", TVal::Bool(false)),
    ]);
    span.logs = Some(vec![TLog {
        ts: 1_700_000_000_000_700,
        fields: vec![
            tag("event", TVal::Str("retry".into())),
            tag("attempt", TVal::Long(2)),
        ],
    }]);
    TBatch {
        process: TProcess {
            service: svc.into(),
            tags: Some(vec![
                tag("hostname", TVal::Str("h1".into())),
                tag("jaeger.version", TVal::Str("Test-1.0".into())),
            ]),
        },
        spans: vec![span],
        seq_no: Some(3),
    }
}

/// Checks the span `rich_batch` made, as stored.
fn check_rich(spans: &[ferrotrace_collector::model::Span], svc: &str) {
    assert_eq!(spans.len(), 1, "{spans:?}");
    let sp = &spans[0];
    assert_eq!(sp.service_name, svc);
    assert_eq!(sp.name, "GET /x");
    assert_eq!(sp.span_id, 0x11u64.to_be_bytes());
    assert_eq!(sp.parent_span_id, Some(0x10u64.to_be_bytes()));
    assert_eq!(sp.start_ns, 1_700_000_000_000_000_000);
    assert_eq!(sp.end_ns - sp.start_ns, 1_500_000);
    assert_eq!(sp.kind, SpanKind::Server);
    assert_eq!(
        (sp.status_code, sp.status_message.as_str()),
        (StatusCode::Error, "boom")
    );
    assert_eq!(sp.flags, 1);
    let a = |k: &str| sp.attribute(k).cloned();
    assert_eq!(a("sampler.type"), Some(s("probabilistic")));
    assert_eq!(a("sampler.param"), Some(AttrValue::Double(0.5)));
    assert_eq!(a("http.status_code"), Some(AttrValue::Int(503)));
    assert_eq!(a("payload"), Some(AttrValue::Bytes(vec![1, 2, 3])));
    assert_eq!(a("cached"), Some(AttrValue::Bool(false)));
    assert!(a("error").is_none() && a("span.kind").is_none());
    let r = |k: &str| {
        sp.resource_attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(r("service.name"), Some(s(svc)));
    assert_eq!(r("host.name"), Some(s("h1")));
    assert_eq!(r("opencensus.exporterversion"), Some(s("Jaeger-Test-1.0")));
    assert_eq!(sp.events.len(), 1);
    assert_eq!(sp.events[0].name, "retry");
    assert_eq!(sp.events[0].time_ns, 1_700_000_000_000_700_000);
    assert_eq!(
        sp.events[0].attributes,
        vec![KeyValue::new("attempt", AttrValue::Int(2))]
    );
    assert_eq!(sp.links.len(), 1, "the CHILD_OF parent is not a link");
    assert_eq!(sp.links[0].span_id, 0x77u64.to_be_bytes());
    assert_eq!(sp.links[0].trace_id, trace_of(0, 7));
    assert_eq!(sp.links[0].attributes[0].value, s("follows_from"));
}

async fn post_thrift(addr: SocketAddr, body: Vec<u8>, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/vnd.apache.thrift.binary")];
    h.extend_from_slice(extra);
    post(addr, "/api/traces", &h, body).await
}

async fn send_udp(to: SocketAddr, datagram: &[u8]) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(datagram, to).await.unwrap();
}

async fn grpc_post(
    addr: SocketAddr,
    req: jpb::PostSpansRequest,
    token: Option<&str>,
) -> Result<jpb::PostSpansResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut r = tonic::Request::new(req);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let path = http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
    grpc.unary(r, path, tonic_prost::ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

fn proto_batch(high: i64, low: i64, svc: &str) -> jpb::PostSpansRequest {
    let trace = trace_of(high, low).to_vec();
    let kv = |k: &str, t: jpb::ValueType| jpb::KeyValue {
        key: k.into(),
        v_type: t as i32,
        ..Default::default()
    };
    jpb::PostSpansRequest {
        batch: Some(jpb::Batch {
            process: Some(jpb::Process {
                service_name: svc.into(),
                tags: vec![jpb::KeyValue {
                    v_str: "p".into(),
                    ..kv("pod", jpb::ValueType::String)
                }],
            }),
            spans: vec![
                jpb::Span {
                    trace_id: trace.clone(),
                    span_id: 0x21u64.to_be_bytes().to_vec(),
                    operation_name: "child".into(),
                    references: vec![jpb::SpanRef {
                        trace_id: trace.clone(),
                        span_id: 0x20u64.to_be_bytes().to_vec(),
                        ref_type: jpb::SpanRefType::ChildOf as i32,
                    }],
                    flags: 1,
                    start_time: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 5,
                    }),
                    duration: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 2_000,
                    }),
                    tags: vec![
                        jpb::KeyValue {
                            v_str: "client".into(),
                            ..kv("span.kind", jpb::ValueType::String)
                        },
                        jpb::KeyValue {
                            v_int64: -4,
                            ..kv("n", jpb::ValueType::Int64)
                        },
                        jpb::KeyValue {
                            v_str: "lib".into(),
                            ..kv("otel.scope.name", jpb::ValueType::String)
                        },
                    ],
                    logs: vec![jpb::Log {
                        timestamp: Some(prost_types::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 1_000,
                        }),
                        fields: vec![jpb::KeyValue {
                            v_str: "cache miss".into(),
                            ..kv("event", jpb::ValueType::String)
                        }],
                    }],
                    // A span's own process wins over the batch's.
                    process: Some(jpb::Process {
                        service_name: format!("{svc}-own"),
                        tags: vec![],
                    }),
                    ..Default::default()
                },
                jpb::Span {
                    trace_id: trace.clone(),
                    span_id: 0x20u64.to_be_bytes().to_vec(),
                    operation_name: "root".into(),
                    start_time: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                    duration: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ],
        }),
    }
}

async fn metric(addr: SocketAddr, series: &str) -> u64 {
    let m = request("GET", addr, "/metrics", &[], Bytes::new()).await;
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_metric(addr: SocketAddr, series: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = metric(addr, series).await;
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_jaeger_and_zipkin_transport_lands_in_the_store() {
    let t = start(jaeger_on).await;
    let a = t.collector.addrs.clone();
    let store = &*t.store;

    // Thrift over HTTP.
    let r = post_thrift(
        a.jaeger_thrift_http.unwrap(),
        encode_batch(&rich_batch(1, 101, "http-svc"), Proto::Binary),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    check_rich(&wait_spans(store, trace_of(1, 101), 1).await, "http-svc");

    // Agent UDP, compact and binary.
    send_udp(
        a.jaeger_agent_compact.unwrap(),
        &encode_emit_batch(&rich_batch(2, 102, "compact-svc"), Proto::Compact),
    )
    .await;
    check_rich(&wait_spans(store, trace_of(2, 102), 1).await, "compact-svc");
    send_udp(
        a.jaeger_agent_binary.unwrap(),
        &encode_emit_batch(&rich_batch(3, 103, "binary-svc"), Proto::Binary),
    )
    .await;
    check_rich(&wait_spans(store, trace_of(3, 103), 1).await, "binary-svc");

    // gRPC.
    grpc_post(
        a.jaeger_grpc.unwrap(),
        proto_batch(4, 104, "grpc-svc"),
        None,
    )
    .await
    .expect("PostSpans");
    let spans = wait_spans(store, trace_of(4, 104), 2).await;
    assert_eq!(spans.len(), 2);
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    let root = spans.iter().find(|s| s.name == "root").unwrap();
    assert_eq!(child.service_name, "grpc-svc-own");
    assert_eq!(root.service_name, "grpc-svc");
    assert_eq!(
        root.resource_attributes,
        vec![
            KeyValue::new("service.name", s("grpc-svc")),
            KeyValue::new("pod", s("p"))
        ]
    );
    assert_eq!(child.parent_span_id, Some(root.span_id));
    assert!(child.links.is_empty());
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(child.scope_name, "lib");
    assert_eq!(child.start_ns, 1_700_000_000_000_000_005);
    assert_eq!(child.end_ns - child.start_ns, 2_000);
    assert_eq!(child.attribute("n"), Some(&AttrValue::Int(-4)));
    assert_eq!(child.events[0].name, "cache miss");
    assert_eq!(child.events[0].time_ns, 1_700_000_000_000_001_000);
    assert_eq!(root.end_ns - root.start_ns, 1_000_000_000);

    // Zipkin protobuf and v1 JSON on the Zipkin listener.
    let z = a.zipkin.unwrap();
    let list = zpb::ListOfSpans {
        spans: vec![zpb::Span {
            trace_id: trace_of(5, 105).to_vec(),
            id: vec![5; 8],
            kind: zpb::span::Kind::Client as i32,
            name: "zp".into(),
            timestamp: 1_700_000_000_000_000,
            duration: 10,
            local_endpoint: Some(zpb::Endpoint {
                service_name: "zipkin-proto".into(),
                ..Default::default()
            }),
            tags: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        }],
    };
    let r = post(
        z,
        "/api/v2/spans",
        &[("content-type", "application/x-protobuf")],
        list.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let got = wait_spans(store, trace_of(5, 105), 1).await;
    assert_eq!(
        (
            got[0].service_name.as_str(),
            got[0].kind,
            got[0].name.as_str()
        ),
        ("zipkin-proto", SpanKind::Client, "zp")
    );
    assert_eq!(got[0].attribute("k"), Some(&s("v")));
    let v1 = r#"[{"traceId":"0000000000000006000000000000006a","id":"0606060606060606","name":"v1",
        "annotations":[{"timestamp":1700000000000000,"value":"sr","endpoint":{"serviceName":"zipkin-v1"}},
                       {"timestamp":1700000000000040,"value":"ss","endpoint":{"serviceName":"zipkin-v1"}}],
        "binaryAnnotations":[{"key":"http.path","value":"/v1"}]}]"#;
    let r = post(
        z,
        "/api/v1/spans",
        &[("content-type", "application/json")],
        v1,
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let got = wait_spans(store, trace_of(6, 106), 1).await;
    assert_eq!(
        (
            got[0].service_name.as_str(),
            got[0].kind,
            got[0].end_ns - got[0].start_ns
        ),
        ("zipkin-v1", SpanKind::Server, 40_000)
    );

    // The metrics name each transport.
    let q = a.http.unwrap();
    for (protocol, n) in [
        ("http/thrift", 1),
        ("udp/thrift-compact", 1),
        ("udp/thrift-binary", 1),
        ("grpc", 2),
    ] {
        let series = format!(
            "ferrotrace_receiver_spans_accepted_total{{receiver=\"jaeger\",protocol=\"{protocol}\"}}"
        );
        assert_eq!(metric(q, &series).await, n, "{series}");
    }
    for (protocol, n) in [("http/protobuf", 1), ("http/json-v1", 1)] {
        let series = format!(
            "ferrotrace_receiver_spans_accepted_total{{receiver=\"zipkin\",protocol=\"{protocol}\"}}"
        );
        assert_eq!(metric(q, &series).await, n, "{series}");
    }
    assert_eq!(
        metric(
            q,
            "ferrotrace_udp_datagrams_received_total{listener=\"jaeger_compact\"}"
        )
        .await,
        1
    );
    assert!(t.collector.shutdown().await);
}

#[tokio::test]
async fn hostile_input_is_refused_counted_and_harms_nothing_else() {
    let t = start(|c| {
        jaeger_on(c);
        c.limits.max_request_bytes = Some(64 * 1024);
        c.jaeger.agent_max_packet_bytes = 2_000;
    })
    .await;
    let a = t.collector.addrs.clone();
    let h = a.jaeger_thrift_http.unwrap();
    let q = a.http.unwrap();

    // HTTP: garbage, a list declaring 2^31-1 spans, trailing bytes, a wrong
    // type, a body over the limit, nested too deep.
    let r = post_thrift(h, b"\xff\xfe\xfd".to_vec(), &[]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("invalid Jaeger Thrift"));
    let mut huge = vec![12u8, 0, 1, 11, 0, 1, 0, 0, 0, 1, b'x', 0];
    huge.extend_from_slice(&[15, 0, 2, 12, 0x7f, 0xff, 0xff, 0xff]);
    let r = post_thrift(h, huge, &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("declares 2147483647 elements"));
    let mut trailing = encode_batch(&rich_batch(9, 9, "x"), Proto::Binary);
    trailing.push(0);
    assert_eq!(post_thrift(h, trailing, &[]).await.status, 400);
    let r = post(
        h,
        "/api/traces",
        &[("content-type", "application/json")],
        "[]",
    )
    .await;
    assert_eq!(r.status, 415);
    let big = encode_batch(
        &TBatch {
            process: TProcess {
                service: "x".repeat(70_000),
                tags: None,
            },
            ..TBatch::default()
        },
        Proto::Binary,
    );
    assert_eq!(post_thrift(h, big, &[]).await.status, 413);
    let mut deep = vec![12u8, 0, 1, 11, 0, 1, 0, 0, 0, 1, b'x'];
    for _ in 0..200 {
        deep.extend_from_slice(&[12, 0, 9]);
    }
    deep.extend(std::iter::repeat_n(0u8, 202));
    let r = post_thrift(h, deep, &[]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("deeper than 64"));

    // gRPC: not a PostSpansRequest.
    let g = a.jaeger_grpc.unwrap();
    let bad = jpb::PostSpansRequest {
        batch: Some(jpb::Batch {
            spans: vec![jpb::Span {
                trace_id: vec![1; 16],
                span_id: vec![1; 8],
                ..Default::default()
            }],
            process: None,
        }),
    };
    // A span without a start time is rejected (no partial success in Jaeger): OK, nothing stored.
    grpc_post(g, bad, None).await.expect("PostSpans");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{g}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // Another message's bytes where a PostSpansRequest belongs.
    let status = grpc
        .unary(
            tonic::Request::new(jpb::KeyValue {
                key: "not a request".into(),
                v_type: 77,
                ..Default::default()
            }),
            http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans"),
            tonic_prost::ProstCodec::<jpb::KeyValue, jpb::PostSpansResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("PostSpansRequest"), "{status:?}");

    // UDP: garbage, truncated, too large, Zipkin through the agent: each dropped and counted.
    let u = a.jaeger_agent_compact.unwrap();
    let good = encode_emit_batch(&rich_batch(8, 108, "udp-after"), Proto::Compact);
    send_udp(u, b"\x00\x01garbage").await;
    send_udp(u, &good[..good.len() / 2]).await;
    send_udp(u, &[0u8; 2_500]).await;
    send_udp(u, b"").await;
    let mut zipkin_call = Writer::new(Proto::Compact);
    zipkin_call.message("emitZipkinBatch", 4, 1);
    zipkin_call.struct_begin();
    zipkin_call.struct_end();
    send_udp(u, &zipkin_call.buf).await;
    // ... and the listener still takes a good datagram.
    send_udp(u, &good).await;
    check_rich(
        &wait_spans(&*t.store, trace_of(8, 108), 1).await,
        "udp-after",
    );
    let dropped = |r: &str| {
        format!(
            "ferrotrace_udp_datagrams_dropped_total{{listener=\"jaeger_compact\",reason=\"{r}\"}}"
        )
    };
    assert_eq!(wait_metric(q, &dropped("undecodable"), 4).await, 4);
    assert_eq!(metric(q, &dropped("too_large")).await, 1);
    assert_eq!(
        metric(
            q,
            "ferrotrace_udp_datagrams_received_total{listener=\"jaeger_compact\"}"
        )
        .await,
        6
    );
    assert_eq!(
        metric(
            q,
            "ferrotrace_receiver_bad_requests_total{receiver=\"jaeger\",protocol=\"udp/thrift-compact\"}"
        )
        .await,
        4
    );
    assert!(t.collector.shutdown().await);
}

#[tokio::test]
async fn tokens_protect_the_jaeger_http_and_grpc_receivers() {
    let t = start(|c| {
        jaeger_on(c);
        c.auth.receiver_tokens = vec!["s3cret".into()];
    })
    .await;
    let a = t.collector.addrs.clone();
    let body = encode_batch(&rich_batch(10, 110, "auth"), Proto::Binary);
    let h = a.jaeger_thrift_http.unwrap();
    assert_eq!(post_thrift(h, body.clone(), &[]).await.status, 401);
    assert_eq!(
        post_thrift(h, body.clone(), &[("authorization", "Bearer nope")])
            .await
            .status,
        401
    );
    assert_eq!(
        post_thrift(h, body, &[("authorization", "Bearer s3cret")])
            .await
            .status,
        202
    );
    let g = a.jaeger_grpc.unwrap();
    let e = grpc_post(g, proto_batch(11, 111, "auth"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    grpc_post(g, proto_batch(11, 111, "auth"), Some("s3cret"))
        .await
        .expect("with the token");
    assert_eq!(wait_spans(&*t.store, trace_of(11, 111), 2).await.len(), 2);
    assert!(t.collector.shutdown().await);
}

#[tokio::test]
async fn udp_under_backpressure_drops_and_counts_and_http_answers_429() {
    // A WAL of one 8 KiB segment: it fills after a few datagrams and stays
    // full (the segment being written is never deleted), so every later
    // batch is refused.
    let t = start(|c| {
        jaeger_on(c);
        c.wal.segment_bytes = 8 * 1024;
        c.wal.max_bytes = 8 * 1024;
    })
    .await;
    let a = t.collector.addrs.clone();
    let q = a.http.unwrap();
    let mut two = rich_batch(12, 112, "bp");
    let mut second = two.spans[0].clone();
    second.span_id = 0x12;
    two.spans.push(second);
    let datagram = encode_emit_batch(&two, Proto::Binary);
    let fit = 8 * 1024 / (datagram.len() + 13);
    let sent = fit + 5;
    let received = "ferrotrace_udp_datagrams_received_total{listener=\"jaeger_binary\"}";
    let refused =
        "ferrotrace_udp_datagrams_dropped_total{listener=\"jaeger_binary\",reason=\"refused\"}";
    let accepted = "ferrotrace_receiver_spans_accepted_total{receiver=\"jaeger\",protocol=\"udp/thrift-binary\"}";
    for i in 0..sent {
        send_udp(a.jaeger_agent_binary.unwrap(), &datagram).await;
        // One at a time, so the socket buffer and the queue never drop any.
        let done = (i + 1) as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(q, accepted).await / 2 + metric(q, refused).await < done {
            assert!(Instant::now() < deadline, "datagram {i} not processed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(metric(q, received).await, sent as u64);
    let (ok, dropped) = (metric(q, accepted).await / 2, metric(q, refused).await);
    assert_eq!(ok, fit as u64, "datagrams that fit in the WAL");
    assert_eq!(dropped, 5);
    assert_eq!(
        metric(
            q,
            "ferrotrace_receiver_spans_refused_total{receiver=\"jaeger\",protocol=\"udp/thrift-binary\"}"
        )
        .await,
        10
    );
    // The acknowledging transports are told to retry.
    let r = post_thrift(
        a.jaeger_thrift_http.unwrap(),
        encode_batch(&two, Proto::Binary),
        &[],
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    assert!(String::from_utf8_lossy(&r.body).contains("write-ahead log full"));
    // (A batch larger than the room left in the WAL.)
    let mut big = proto_batch(13, 113, "bp");
    big.batch.as_mut().unwrap().process.as_mut().unwrap().tags[0].v_str = "p".repeat(2_000);
    let e = grpc_post(a.jaeger_grpc.unwrap(), big, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    t.collector.shutdown().await;
}

#[tokio::test]
async fn the_wal_replays_every_new_record_format() {
    use ferrotrace_collector::metrics::Metrics;
    use ferrotrace_collector::pipeline::wal::Wal;
    use ferrotrace_collector::receiver::RecordFormat;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let zipkin_v1 = br#"[{"traceId":"0000000000000019000000000000010e","id":"1919191919191919","name":"v1",
        "timestamp":1700000000000000,"duration":5,
        "annotations":[{"timestamp":1700000000000000,"value":"cs","endpoint":{"serviceName":"r-v1"}}]}]"#;
    let zipkin_proto = zpb::ListOfSpans {
        spans: vec![zpb::Span {
            trace_id: trace_of(20, 270).to_vec(),
            id: vec![20; 8],
            name: "zp".into(),
            timestamp: 1_700_000_000_000_000,
            duration: 1,
            ..Default::default()
        }],
    }
    .encode_to_vec();
    // (format, spans in the record, body, trace, spans stored)
    type Record = (RecordFormat, u32, Vec<u8>, [u8; 16], usize);
    let records: Vec<Record> = vec![
        (
            RecordFormat::JaegerThrift,
            1,
            encode_batch(&rich_batch(21, 121, "r-http"), Proto::Binary),
            trace_of(21, 121),
            1,
        ),
        (
            RecordFormat::JaegerAgentCompact,
            1,
            encode_emit_batch(&rich_batch(22, 122, "r-compact"), Proto::Compact),
            trace_of(22, 122),
            1,
        ),
        (
            RecordFormat::JaegerAgentBinary,
            1,
            encode_emit_batch(&rich_batch(23, 123, "r-binary"), Proto::Binary),
            trace_of(23, 123),
            1,
        ),
        (
            RecordFormat::JaegerProto,
            2,
            proto_batch(24, 124, "r-grpc").encode_to_vec(),
            trace_of(24, 124),
            2,
        ),
        (
            RecordFormat::ZipkinProto,
            1,
            zipkin_proto,
            trace_of(20, 270),
            1,
        ),
        (
            RecordFormat::ZipkinV1Json,
            1,
            zipkin_v1.to_vec(),
            trace_of(25, 270),
            1,
        ),
    ];
    {
        let (wal, _) = Wal::open(&cfg.wal_dir(), &cfg.wal, Arc::new(Metrics::default())).unwrap();
        for (f, n, body, _, _) in &records {
            wal.append(*f, *n, Bytes::from(body.clone())).await.unwrap();
        }
        let w = wal.clone();
        tokio::task::spawn_blocking(move || w.close())
            .await
            .unwrap();
    }
    // A collector over the same directory replays them: the same decoders
    // run on the same bytes.
    let store = Arc::new(
        ferrotrace_collector::storage::sqlite::SqliteStore::open(dir.path().join("spans.db"))
            .unwrap(),
    );
    let mut collector = ferrotrace_collector::server::Collector::start(
        cfg,
        store.clone() as Arc<dyn ferrotrace_collector::storage::SpanStore>,
    )
    .await
    .unwrap();
    assert_eq!(collector.wait_ready().await, 7);
    for (f, _, _, trace, n) in &records {
        let got = wait_spans(&*store, *trace, *n).await;
        assert_eq!(got.len(), *n, "{f:?}");
    }
    check_rich(
        &wait_spans(&*store, trace_of(22, 122), 1).await,
        "r-compact",
    );
    assert!(collector.shutdown().await);
}
