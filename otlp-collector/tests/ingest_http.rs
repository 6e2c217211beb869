//! OTLP/HTTP and Zipkin receivers over real sockets into a real SQLite store:
//! encodings, partial success, malformed/oversized/truncated/gzip-bomb bodies,
//! chunked bodies, status codes and authentication.

mod ingest_util;

use ferrotrace_collector::model::{AttrValue, SpanKind, StatusCode};
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

const PROTO: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_and_gzip_are_stored_field_for_field() {
    let tc = start(|_| {}).await;
    let addr = tc.collector.addrs.otlp_http.unwrap();

    // Protobuf.
    let r = post(
        addr,
        "/v1/traces",
        &[PROTO],
        request_with(1, 3).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(r.body.as_ref()).unwrap();
    assert!(resp.partial_success.is_none());
    let spans = wait_spans(tc.store.as_ref(), trace_id(1), 3).await;
    assert_eq!(spans.len(), 3);
    let s = spans.iter().find(|s| s.name == "op-1").unwrap();
    assert_eq!(s.parent_span_id, Some(span_id(1, 0)));
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.service_name, "svc-test");
    assert_eq!(s.scope_name, "scope");
    assert_eq!(s.scope_version, "1.0");
    assert_eq!(s.trace_state, "k=v");
    assert_eq!(s.flags, 0x101);
    assert_eq!(s.start_ns, 1_700_000_000_000_001_000);
    assert_eq!(s.attribute("http.status_code"), Some(&AttrValue::Int(200)));
    assert_eq!(s.attribute("ratio"), Some(&AttrValue::Double(0.5)));
    assert_eq!(s.attribute("ok"), Some(&AttrValue::Bool(true)));
    assert_eq!(s.events[0].name, "evt");
    assert_eq!(s.links[0].trace_id, trace_id(2));
    assert_eq!(s.status_code, StatusCode::Ok);
    assert_eq!(s.status_message, "fine");

    // Gzip protobuf.
    let body = gzip(&request_with(10, 2).encode_to_vec());
    let r = post(
        addr,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        wait_spans(tc.store.as_ref(), trace_id(10), 2).await.len(),
        2
    );

    // JSON per the spec's rules: uppercase hex ids, 64-bit ints as strings, enum numbers.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},
      "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "name":"json-op","kind":3,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000000000100,
      "attributes":[{"key":"n","value":{"intValue":"7"}}],"someFutureField":{"x":1}}]}]}]}"#;
    let r = post(addr, "/v1/traces", &[JSON], json).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(&r.body[..], b"{}");
    let mut tid = [0u8; 16];
    tid.copy_from_slice(&[
        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6,
        0x0c,
    ]);
    let spans = wait_spans(tc.store.as_ref(), tid, 1).await;
    assert_eq!(spans[0].name, "json-op");
    assert_eq!(spans[0].kind, SpanKind::Client);
    assert_eq!(spans[0].service_name, "json-svc");
    assert_eq!(spans[0].attribute("n"), Some(&AttrValue::Int(7)));

    // Empty request is a success.
    assert_eq!(post(addr, "/v1/traces", &[JSON], "{}").await.status, 200);
    assert_eq!(
        post(addr, "/v1/traces", &[PROTO], Vec::new()).await.status,
        200
    );
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_reports_invalid_spans_and_keeps_the_rest() {
    let tc = start(|_| {}).await;
    let addr = tc.collector.addrs.otlp_http.unwrap();
    let mut req = request_with(3, 4);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[1].trace_id = vec![1; 15]; // wrong length
    spans[2].span_id = vec![0; 8]; // zero id
    spans[3].end_time_unix_nano = spans[3].start_time_unix_nano - 1; // ends before it starts
    let r = post(addr, "/v1/traces", &[PROTO], req.encode_to_vec()).await;
    assert_eq!(r.status, 200);
    let ps = ExportTraceServiceResponse::decode(r.body.as_ref())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(ps.rejected_spans, 3);
    assert!(
        ps.error_message.contains("trace_id must be 16 bytes"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message.contains("all zeros"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message.contains("before start"),
        "{}",
        ps.error_message
    );
    let stored = wait_spans(tc.store.as_ref(), trace_id(3), 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, "op-0");

    // JSON partial success is JSON.
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":"0102030405060708"}]}]}]}"#;
    let r = post(addr, "/v1/traces", &[JSON], json).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");
    // An id that is there but not hex of the right length refuses the whole
    // request (a bad parent id must never make a child a root).
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"nothex","spanId":"0102030405060708"}]}]}]}"#;
    let r = post(addr, "/v1/traces", &[JSON], json).await;
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("hex digits"), "{v}");
    let metrics = tc.collector.metrics.render();
    assert!(metrics.contains("ferrotrace_receiver_spans_rejected_total{receiver=\"otlp\",protocol=\"http/protobuf\"} 3"), "{metrics}");
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_status_codes() {
    let tc = start(|c| {
        c.limits.max_request_bytes = Some(64 * 1024);
        c.limits.max_decompressed_bytes = Some(256 * 1024);
        c.limits.max_spans_per_request = 100;
    })
    .await;
    let addr = tc.collector.addrs.otlp_http.unwrap();

    // Undecodable protobuf → 400 with a google.rpc.Status in protobuf naming the problem.
    let r = post(addr, "/v1/traces", &[PROTO], vec![0xff, 0xff, 0xff]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let st =
        ferrotrace_collector::receiver::rpc_status::RpcStatus::decode(r.body.as_ref()).unwrap();
    assert_eq!(st.code, 3);
    assert!(
        st.message.contains("invalid OTLP protobuf"),
        "{}",
        st.message
    );

    // Truncated protobuf → 400.
    let full = request_with(4, 3).encode_to_vec();
    let r = post(
        addr,
        "/v1/traces",
        &[PROTO],
        full[..full.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);

    // Malformed JSON → 400 with a JSON status.
    let r = post(addr, "/v1/traces", &[JSON], "{\"resourceSpans\": [").await;
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("invalid OTLP/JSON"));

    // Bad gzip → 400.
    let r = post(
        addr,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        "not gzip",
    )
    .await;
    assert_eq!(r.status, 400);

    // Over the compressed limit → 413.
    let r = post(addr, "/v1/traces", &[PROTO], vec![0u8; 100 * 1024]).await;
    assert_eq!(r.status, 413);

    // Gzip bomb: 20 KB that inflates to 10 MB → 413 without inflating it all.
    let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let r = post(
        addr,
        "/v1/traces",
        &[PROTO, ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(String::from_utf8_lossy(&r.body).contains("decompressed"));

    // Too many spans → 413.
    let r = post(
        addr,
        "/v1/traces",
        &[PROTO],
        request_with(5, 101).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 413);

    // Unsupported content type / encoding → 415; wrong method → 405; unknown path → 404.
    assert_eq!(
        post(addr, "/v1/traces", &[("content-type", "text/plain")], "x")
            .await
            .status,
        415
    );
    assert_eq!(
        post(
            addr,
            "/v1/traces",
            &[PROTO, ("content-encoding", "br")],
            "x"
        )
        .await
        .status,
        415
    );
    let r = request("GET", addr, "/v1/traces", &[], bytes::Bytes::new()).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    // Signals this collector does not take: 404 with a google.rpc.Status in
    // the request's encoding.
    for path in ["/v1/logs", "/v1/metrics"] {
        let r = post(addr, path, &[PROTO], "").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        let st =
            ferrotrace_collector::receiver::rpc_status::RpcStatus::decode(r.body.as_ref()).unwrap();
        assert_eq!(st.code, 12);
        assert!(st.message.contains(path), "{}", st.message);
        let r = post(addr, path, &[JSON], "{}").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], 12);
    }

    // A chunked body with no Content-Length is accepted...
    let body = request_with(6, 2).encode_to_vec();
    let mut raw = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in body.chunks(50) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let out = raw_http(addr, &raw).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(wait_spans(tc.store.as_ref(), trace_id(6), 2).await.len(), 2);

    // ...and its size limit is enforced while reading.
    let mut raw = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        raw.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        raw.extend_from_slice(&[0u8; 8192]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let out = raw_http(addr, &raw).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_v2_json_is_mapped_and_stored() {
    let tc = start(|_| {}).await;
    let addr = tc.collector.addrs.zipkin.unwrap();
    let body = r#"[{"traceId":"86154a4ba6e91385","parentId":"86154a4ba6e91386","id":"4d1e00c0db9010db",
        "kind":"SERVER","name":"get /api","timestamp":1700000000000000,"duration":207000,
        "localEndpoint":{"serviceName":"frontend","ipv4":"127.0.0.1"},
        "remoteEndpoint":{"serviceName":"browser","ipv4":"10.0.0.1","port":443},
        "annotations":[{"timestamp":1700000000001000,"value":"wr"}],
        "tags":{"http.path":"/api","error":"boom"},"shared":true}]"#;
    let r = post(addr, "/api/v2/spans", &[JSON], body).await;
    assert_eq!(r.status, 202);
    let mut tid = [0u8; 16];
    tid[8..].copy_from_slice(&[0x86, 0x15, 0x4a, 0x4b, 0xa6, 0xe9, 0x13, 0x85]);
    let spans = wait_spans(tc.store.as_ref(), tid, 1).await;
    let s = &spans[0];
    assert_eq!(s.service_name, "frontend");
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.duration_ns(), 207_000_000);
    assert_eq!(s.status_code, StatusCode::Error);
    assert_eq!(s.status_message, "boom");
    assert_eq!(s.events[0].time_ns, 1_700_000_000_001_000_000);
    assert_eq!(
        s.attribute("peer.service"),
        Some(&AttrValue::Str("browser".into()))
    );
    assert_eq!(
        s.attribute("http.path"),
        Some(&AttrValue::Str("/api".into()))
    );
    assert_eq!(
        post(addr, "/api/v2/spans", &[JSON], "{oops").await.status,
        400
    );
    // Protobuf is Zipkin's other encoding (a ListOfSpans): "x" is not one.
    let r = post(addr, "/api/v2/spans", &[PROTO], "x").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Zipkin protobuf ListOfSpans"));
    assert_eq!(
        post(
            addr,
            "/api/v2/spans",
            &[("content-type", "text/plain")],
            "x"
        )
        .await
        .status,
        415
    );
    // What a web page can send cross-origin without a CORS preflight: no
    // Content-Type, or text/plain. Refused, nothing stored.
    let forged = body.replace("4d1e00c0db9010db", "4d1e00c0db9010dc");
    assert_eq!(
        post(addr, "/api/v2/spans", &[], forged.clone())
            .await
            .status,
        415
    );
    assert_eq!(
        post(
            addr,
            "/api/v2/spans",
            &[("content-type", "text/plain")],
            forged
        )
        .await
        .status,
        415
    );
    // A span without a timestamp is rejected, never stored in 1970.
    use ferrotrace_collector::storage::TraceReader as _;
    let untimed = r#"[{"traceId":"86154a4ba6e91399","id":"4d1e00c0db9010dd","name":"x"}]"#;
    assert_eq!(
        post(addr, "/api/v2/spans", &[JSON], untimed).await.status,
        202
    );
    let mut untimed_tid = [0u8; 16];
    untimed_tid[8..].copy_from_slice(&[0x86, 0x15, 0x4a, 0x4b, 0xa6, 0xe9, 0x13, 0x99]);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(tc
        .store
        .get_trace(untimed_tid, None)
        .await
        .unwrap()
        .is_empty());
    let spans = tc.store.get_trace(tid, None).await.unwrap();
    assert_eq!(spans.len(), 1, "the forged span was not stored");
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_receivers_and_query_api_separately() {
    let tc = start(|c| {
        c.auth.receiver_tokens = vec!["ingest-token".into()];
        c.auth.query_tokens = vec!["query-token".into()];
    })
    .await;
    let addr = tc.collector.addrs.otlp_http.unwrap();
    let body = request_with(7, 1).encode_to_vec();
    assert_eq!(
        post(addr, "/v1/traces", &[PROTO], body.clone())
            .await
            .status,
        401
    );
    assert_eq!(
        post(
            addr,
            "/v1/traces",
            &[PROTO, ("authorization", "Bearer query-token")],
            body.clone()
        )
        .await
        .status,
        401
    );
    let ok = post(
        addr,
        "/v1/traces",
        &[PROTO, ("authorization", "Bearer ingest-token")],
        body,
    )
    .await;
    assert_eq!(ok.status, 200);
    let z = tc.collector.addrs.zipkin.unwrap();
    assert_eq!(post(z, "/api/v2/spans", &[JSON], "[]").await.status, 401);

    let q = tc.collector.addrs.http.unwrap();
    let r = request("GET", q, "/api/services", &[], bytes::Bytes::new()).await;
    assert_eq!(r.status, 401);
    let r = request(
        "GET",
        q,
        "/api/services",
        &[("authorization", "Bearer ingest-token")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = request(
        "GET",
        q,
        "/api/services",
        &[("authorization", "Bearer query-token")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Probes and metrics stay open.
    assert_eq!(
        request("GET", q, "/healthz", &[], bytes::Bytes::new())
            .await
            .status,
        200
    );
    assert_eq!(
        request("GET", q, "/readyz", &[], bytes::Bytes::new())
            .await
            .status,
        200
    );
    let m = request("GET", q, "/metrics", &[], bytes::Bytes::new()).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("ferrotrace_auth_failures_total{listener=\"receiver\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("ferrotrace_auth_failures_total{listener=\"query\"} 2"),
        "{text}"
    );
    assert!(!text.contains("ingest-token"));
    tc.collector.shutdown().await;
}

/// Request bodies in flight share one memory budget across every receiver:
/// while uploads in progress hold it (with the bytes they have sent), another
/// request gets 429 + Retry-After (HTTP) or RESOURCE_EXHAUSTED + RetryInfo
/// (gRPC); once they end, it is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_bodies_share_a_memory_budget() {
    use ferrotrace_collector::receiver::rpc_status::{RetryInfo, RpcStatus};
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::AsyncWriteExt;
    const LIMIT: usize = 64 * 1024;
    // The smallest budget allowed: 2 × (64 KiB + 64 KiB) + 1024.
    let budget = 2 * (LIMIT + LIMIT) + 1024;
    let tc = start(|c| {
        c.limits.max_request_bytes = Some(LIMIT);
        c.limits.max_decompressed_bytes = Some(LIMIT);
        c.limits.max_inflight_bytes = Some(budget);
    })
    .await;
    let http = tc.collector.addrs.otlp_http.unwrap();
    let metrics = tc.collector.metrics.clone();

    // Four uploads announce 64 KiB bodies and send all but 10 bytes of them.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        let mut req = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
             Content-Length: {LIMIT}\r\n\r\n"
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b'x', LIMIT - 10));
        s.write_all(&req).await.unwrap();
        slow.push(s);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.inflight_bytes.load(Relaxed) < 4 * (LIMIT - 10) as u64 {
        assert!(std::time::Instant::now() < deadline, "uploads not charged");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Charged for what arrived, never more than the announced length.
    assert!(metrics.inflight_bytes.load(Relaxed) <= 4 * LIMIT as u64);

    // More than the 1024 bytes the uploads leave.
    let body = request_with(1, 20).encode_to_vec();
    assert!(body.len() > 1024);
    let r = post(http, "/v1/traces", &[PROTO], body.clone()).await;
    assert_eq!(r.status, 429, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.contains_key("retry-after"));
    let st = RpcStatus::decode(r.body.as_ref()).unwrap();
    assert_eq!(st.code, 8);
    assert!(
        st.message.contains("limits.max_inflight_bytes"),
        "{}",
        st.message
    );

    // The budget is shared with the gRPC receiver.
    let grpc = tc.collector.addrs.otlp_grpc.unwrap();
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let err = client.export(request_with(2, 20)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let details = RpcStatus::decode(err.details()).unwrap();
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert!(RetryInfo::decode(details.details[0].value.as_slice()).is_ok());
    assert_eq!(metrics.requests_failed.get("inflight_full"), 2);

    // The slow uploads give up: their share returns to the budget.
    drop(slow);
    while metrics.inflight_bytes.load(Relaxed) != 0 {
        assert!(std::time::Instant::now() < deadline, "budget not returned");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(post(http, "/v1/traces", &[PROTO], body).await.status, 200);
    client.export(request_with(2, 20)).await.expect("export");
    assert_eq!(
        wait_spans(tc.store.as_ref(), trace_id(1), 20).await.len(),
        20
    );
    assert_eq!(
        wait_spans(tc.store.as_ref(), trace_id(2), 20).await.len(),
        20
    );
    tc.collector.shutdown().await;
}
