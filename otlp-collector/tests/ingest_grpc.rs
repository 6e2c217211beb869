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
