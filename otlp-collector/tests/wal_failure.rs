//! Acknowledged means durable: when the WAL cannot write a request, the
//! request is refused (HTTP 503 + `google.rpc.Status` UNAVAILABLE, gRPC
//! UNAVAILABLE), counted, and its spans never reach the store. The write
//! failure is a real one from the kernel: the next WAL segment is a symlink to
//! `/dev/full`, where every write fails with ENOSPC, as on a full disk.

mod ingest_util;

use std::time::Duration;

use ferrotrace_collector::receiver::rpc_status::RpcStatus;
use ferrotrace_collector::storage::TraceReader;
use ingest_util::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

fn segment(dir: &std::path::Path, id: u64) -> std::path::PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn fill_next_segment(dir: &std::path::Path, id: u64) {
    std::os::unix::fs::symlink("/dev/full", segment(dir, id)).expect("symlink to /dev/full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_wal_write_is_refused_not_acknowledged() {
    assert!(
        std::path::Path::new("/dev/full").exists(),
        "this test needs /dev/full"
    );
    // One record per segment: every request opens the next segment file.
    // Segments created when needed (no prepared spare): the fault is put at
    // the next segment's path before the segment exists.
    let tc = start(|c| {
        c.wal.segment_bytes = 1;
        c.wal.preallocate = false;
    })
    .await;
    let wal_dir = tc.dir.path().join("wal");
    let http = tc.collector.addrs.otlp_http.unwrap();
    let grpc = tc.collector.addrs.otlp_grpc.unwrap();
    let proto = [("content-type", "application/x-protobuf")];
    let send = |t: u32| {
        post(
            http,
            "/v1/traces",
            &proto,
            request_with(t, 2).encode_to_vec(),
        )
    };

    assert_eq!(send(1).await.status, 200);
    fill_next_segment(&wal_dir, 2);
    let r = send(2).await;
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.contains_key("retry-after"));
    let st = RpcStatus::decode(r.body.as_ref()).expect("google.rpc.Status body");
    assert_eq!(st.code, 14, "UNAVAILABLE");
    assert!(
        st.message.contains("No space left on device"),
        "{}",
        st.message
    );
    // The WAL moved on to a fresh segment: the collector works again.
    assert_eq!(send(3).await.status, 200);

    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    fill_next_segment(&wal_dir, 4);
    let err = client.export(request_with(4, 2)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("No space left"), "{}", err.message());
    client.export(request_with(5, 2)).await.expect("export");

    for t in [1, 3, 5] {
        assert_eq!(wait_spans(tc.store.as_ref(), trace_id(t), 2).await.len(), 2);
    }
    // Give the pipeline time to (wrongly) deliver anything else, then check
    // that the refused requests' spans never reached the store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in [2, 4] {
        let spans = tc.store.get_trace(trace_id(t), None).await.unwrap();
        assert!(spans.is_empty(), "refused trace {t} was stored: {spans:?}");
    }
    let m = &tc.collector.metrics;
    assert_eq!(m.requests_failed.get("wal_error"), 2);
    assert_eq!(m.wal_io_errors.get("write"), 2);
    let text = m.render();
    assert!(
        text.contains("ferrotrace_wal_io_errors_total{op=\"write\"} 2"),
        "{text}"
    );
    // The failed segments hold nothing outstanding, so they are gone.
    assert!(std::fs::symlink_metadata(segment(&wal_dir, 2)).is_err());
    assert!(std::fs::symlink_metadata(segment(&wal_dir, 4)).is_err());
    assert!(tc.collector.shutdown().await);
}
