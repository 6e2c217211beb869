//! The gRPC query service, served by the query router over HTTP/2 on a real
//! socket and called with the generated tonic client.

mod query_support;

use ferrotrace_collector::query::grpc::pb;
use ferrotrace_collector::query::grpc::QueryServiceClient;
use query_support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_query_service() {
    let sv = start().await;
    let fx = &sv.fx;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", sv.addr))
        .unwrap()
        .connect()
        .await
        .expect("connect over HTTP/2");
    let mut c = QueryServiceClient::new(channel);
    let range = Some(pb::TimeRange {
        start_ns: fx.base_ns - 60_000 * MS,
        end_ns: fx.base_ns + 600_000 * MS,
    });

    let t = c
        .get_trace(pb::GetTraceRequest {
            trace_id: hex(&fx.checkout),
            raw: false,
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = t.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "GET /checkout",
            "POST checkout",
            "PlaceOrder",
            "INSERT orders"
        ]
    );
    assert_eq!(t.spans[0].parent_index, -1);
    assert_eq!(t.spans[3].parent_index, 2);
    assert_eq!(t.spans[0].self_ns, 20 * MS);
    assert!(t.spans[0].attributes.iter().any(
        |a| a.key == "http.status_code" && a.value == Some(pb::attribute::Value::IntValue(200))
    ));

    let o = c
        .get_trace(pb::GetTraceRequest {
            trace_id: hex(&fx.orphaned),
            raw: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(o.partial && o.root_missing);
    assert!(o.spans[0].orphan);

    let d = c
        .get_trace(pb::GetTraceRequest {
            trace_id: hex(&fx.deep),
            raw: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.spans.len(), DEEP_N as usize);

    let err = c
        .get_trace(pb::GetTraceRequest {
            trace_id: hex(&tid(5555)),
            raw: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .get_trace(pb::GetTraceRequest {
            trace_id: "zz".into(),
            raw: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let page = c
        .search_traces(pb::SearchTracesRequest {
            service: "pager".into(),
            attributes: vec!["http.status_code=500".into()],
            range,
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.traces.len(), 4);
    assert_eq!(page.traces[0].trace_id, hex(&fx.pager[27]));
    assert!(!page.next_cursor.is_empty());
    let err = c
        .search_traces(pb::SearchTracesRequest {
            service: "pager".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("range"), "{}", err.message());
    let err = c
        .search_traces(pb::SearchTracesRequest {
            range,
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let s = c
        .get_services(pb::GetServicesRequest { range })
        .await
        .unwrap()
        .into_inner();
    assert!(s.services.contains(&"checkout".to_string()));
    let ops = c
        .get_operations(pb::GetOperationsRequest {
            service: "checkout".into(),
            range,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ops
        .operations
        .iter()
        .any(|o| o.name == "PlaceOrder" && o.span_kind == "server"));
    let deps = c
        .get_dependencies(pb::GetDependenciesRequest { range })
        .await
        .unwrap()
        .into_inner();
    assert!(deps
        .edges
        .iter()
        .any(|e| e.caller == "frontend" && e.callee == "checkout" && e.calls == 1));
    let lat = c
        .get_latency(pb::GetLatencyRequest {
            service: "pager".into(),
            range,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lat.points.iter().map(|p| p.count).sum::<u64>(), 30);
}
