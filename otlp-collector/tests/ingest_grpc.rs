//! OTLP/gRPC receiver over a real socket with tonic's generated client.

mod ingest_util;

use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::codec::CompressionEncoding;

async fn client(addr: std::net::SocketAddr) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_plain_and_gzip_with_partial_success() {
    let tc = start(|_| {}).await;
    let addr = tc.collector.addrs.otlp_grpc.unwrap();
    let mut c = client(addr).await;
    let resp = c
        .export(request_with(1, 5))
        .await
        .expect("export")
        .into_inner();
    assert!(resp.partial_success.is_none());
    assert_eq!(wait_spans(tc.store.as_ref(), trace_id(1), 5).await.len(), 5);

    let mut gz = client(addr)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let mut req = request_with(2, 3);
    req.resource_spans[0].scope_spans[0].spans[2].trace_id = vec![0; 16];
    let resp = gz.export(req).await.expect("gzip export").into_inner();
    let ps = resp.partial_success.expect("partial success");
    assert_eq!(ps.rejected_spans, 1);
    assert!(
        ps.error_message.contains("all zeros"),
        "{}",
        ps.error_message
    );
    let spans = wait_spans(tc.store.as_ref(), trace_id(2), 2).await;
    assert_eq!(spans.len(), 2);
    let s = spans.iter().find(|s| s.name == "op-0").unwrap();
    assert_eq!(s.parent_span_id, None);
    assert_eq!(s.service_name, "svc-test");
    tc.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_is_invalid_argument_and_auth_is_unauthenticated() {
    let tc = start(|c| c.auth.receiver_tokens = vec!["t0k".into()]).await;
    let addr = tc.collector.addrs.otlp_grpc.unwrap();

    // Raw gRPC frame with garbage protobuf, sent with tonic's raw-bytes path via hyper.
    let payload = vec![0xffu8, 0xff, 0xff, 0x01];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", "Bearer t0k")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let resp = h2.request(req).await.expect("h2 request");
    use http_body_util::BodyExt;
    // An error before any message is a "trailers-only" response: status in the headers.
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.expect("body");
    let mut trailers = collected.trailers().cloned().unwrap_or_default();
    trailers.extend(headers);
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("3"),
        "{trailers:?}"
    );
    let msg = trailers
        .get("grpc-message")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("invalid%20OTLP%20protobuf") || msg.contains("invalid OTLP protobuf"),
        "{msg}"
    );

    // No token → UNAUTHENTICATED; right token → OK.
    let mut c = client(addr).await;
    let err = c.export(request_with(3, 1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(request_with(3, 1));
    req.metadata_mut()
        .insert("authorization", "Bearer t0k".parse().unwrap());
    c.export(req).await.expect("authorized export");
    assert_eq!(wait_spans(tc.store.as_ref(), trace_id(3), 1).await.len(), 1);
    tc.collector.shutdown().await;
}

/// Sends one raw gRPC frame (`flag`, payload) over HTTP/2; returns the
/// grpc-status, the grpc-message (percent-decoded) and the grpc-status-details-bin.
async fn raw_grpc(
    addr: std::net::SocketAddr,
    flag: u8,
    gzip_header: bool,
    payload: &[u8],
) -> (String, String) {
    let mut frame = vec![flag];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    raw_grpc_body(addr, gzip_header, frame).await
}

/// Sends `frame` as the whole body of an OTLP `Export` call (see [`raw_grpc`]).
async fn raw_grpc_body(
    addr: std::net::SocketAddr,
    gzip_header: bool,
    frame: Vec<u8>,
) -> (String, String) {
    use http_body_util::BodyExt;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if gzip_header {
        req = req.header("grpc-encoding", "gzip");
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let resp = h2.request(req).await.expect("h2 request");
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.expect("body");
    let mut trailers = collected.trailers().cloned().unwrap_or_default();
    trailers.extend(headers);
    let get = |k: &str| {
        trailers
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let msg = percent_encoding::percent_decode_str(&get("grpc-message"))
        .decode_utf8_lossy()
        .into_owned();
    (get("grpc-status"), msg)
}

/// Peak resident set size of this process (test and collector), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_gzip_bombs_are_refused_with_resource_exhausted() {
    use prost::Message;
    let tc = start(|c| {
        c.limits.max_request_bytes = Some(64 * 1024);
        c.limits.max_decompressed_bytes = Some(1024 * 1024);
    })
    .await;
    let addr = tc.collector.addrs.otlp_grpc.unwrap();
    let metrics = tc.collector.metrics.clone();
    let bad = || {
        metrics
            .source(ferrotrace_collector::metrics::Source::OtlpGrpc)
            .bad_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    // Over the compressed (as-sent) limit, uncompressed: tonic's generated client.
    let big = request_with(1, 1000);
    assert!(big.encoded_len() > 64 * 1024 && big.encoded_len() < 1024 * 1024);
    let err = client(addr).await.export(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("65536-byte limit (limits.max_request_bytes)"),
        "{}",
        err.message()
    );
    // The same batch gzipped fits both limits and is stored.
    let mut gz = client(addr)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    gz.export(big).await.expect("gzip export within the limits");
    assert_eq!(
        wait_spans(tc.store.as_ref(), trace_id(1), 1000).await.len(),
        1000
    );

    // Over the compressed limit while compressed: refused before inflating.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let noisy = gzip(&noise);
    assert!(noisy.len() > 64 * 1024);
    let (st, msg) = raw_grpc(addr, 1, true, &noisy).await;
    assert_eq!(st, "8", "{msg}");
    assert!(msg.contains("limits.max_request_bytes"), "{msg}");
    assert_eq!(bad(), 2);

    // A gzip bomb: 256 MiB of zeros in 256 one-MiB gzip members (~256 KiB,
    // under the request limit, so it is read), inflating past the 1 MiB limit.
    tc.collector.shutdown().await;
    let tc = start(|c| {
        c.limits.max_request_bytes = Some(2 * 1024 * 1024);
        c.limits.max_decompressed_bytes = Some(1024 * 1024);
    })
    .await;
    let addr = tc.collector.addrs.otlp_grpc.unwrap();
    let member = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 1024 * 1024]).unwrap();
        e.finish().unwrap()
    };
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 256)
        .collect();
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    let before = peak_rss();
    let (st, msg) = raw_grpc(addr, 1, true, &bomb).await;
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(st, "8", "{msg}");
    assert!(
        msg.contains("decompressed request message exceeds the 1048576-byte limit"),
        "{msg}"
    );
    // Inflating the bomb would take 256 MiB; the limit stops it at 1 MiB.
    assert!(grown < 64 * 1024 * 1024, "peak RSS grew by {grown} bytes");

    // Uncompressed but over the decompressed limit (the request limit allows it).
    let (st, msg) = raw_grpc(addr, 0, false, &vec![0u8; 1024 * 1024 + 1]).await;
    assert_eq!(st, "8", "{msg}");
    assert!(msg.contains("limits.max_decompressed_bytes"), "{msg}");
    // Corrupt gzip: INVALID_ARGUMENT naming the problem.
    let (st, msg) = raw_grpc(addr, 1, true, b"not gzip at all").await;
    assert_eq!(st, "3", "{msg}");
    assert!(msg.contains("invalid gzip"), "{msg}");
    let bad = tc
        .collector
        .metrics
        .source(ferrotrace_collector::metrics::Source::OtlpGrpc)
        .bad_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(bad, 3);
    tc.collector.shutdown().await;
}

/// The receiver hands a body that is exactly one uncompressed gRPC message to
/// the service itself (tonic decodes an empty frame in its place, saving a
/// copy); any other body still goes through tonic's own decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_messages_bypass_tonics_copy_and_other_frames_do_not() {
    use prost::Message;
    let tc = start(|_| {}).await;
    let addr = tc.collector.addrs.otlp_grpc.unwrap();
    let msg = request_with(7, 4).encode_to_vec();
    let (status, message) = raw_grpc(addr, 0, false, &msg).await;
    assert_eq!(status, "0", "{message}");
    assert_eq!(wait_spans(tc.store.as_ref(), trace_id(7), 4).await.len(), 4);
    // The same message under a length prefix that claims more than was sent.
    let other = request_with(8, 4).encode_to_vec();
    let mut cut = vec![0];
    cut.extend_from_slice(&(other.len() as u32 + 10).to_be_bytes());
    cut.extend_from_slice(&other);
    let (status, message) = raw_grpc_body(addr, false, cut).await;
    assert_ne!(status, "0", "a cut frame is not accepted: {message}");
    // An empty message is an empty request, answered as before.
    let (status, message) = raw_grpc(addr, 0, false, &[]).await;
    assert_eq!(status, "0", "{message}");
    let accepted = tc
        .collector
        .metrics
        .source(ferrotrace_collector::metrics::Source::OtlpGrpc)
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(accepted, 4);
    tc.collector.shutdown().await;
}
