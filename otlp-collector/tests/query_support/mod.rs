//! Shared fixture of the query, Jaeger and UI tests: a real `SqliteStore` in a
//! temp dir, filled with generated traces (deep 10,000-chain, wide, orphaned,
//! skewed, erroring, XSS-named, many small ones for paging), rollups computed by
//! the real `RollupAggregator`, and the query router served on 127.0.0.1:0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use ferrotrace_collector::model::{AttrValue, Event, KeyValue, Link, Span, SpanKind, StatusCode};
use ferrotrace_collector::query::{router, QueryState};
use ferrotrace_collector::rollup::{RollupAggregator, RollupConfig};
use ferrotrace_collector::storage::sqlite::SqliteStore;
use ferrotrace_collector::storage::{SpanStore, SpanWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod cdp;

pub const MS: u64 = 1_000_000;
pub const XSS: &str = "<img src=x onerror=alert(1)>";

pub fn tid(n: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[0] = 0xab;
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[allow(clippy::too_many_arguments)]
pub fn span(
    trace: [u8; 16],
    id: u64,
    parent: Option<u64>,
    svc: &str,
    name: &str,
    kind: SpanKind,
    start: u64,
    end: u64,
) -> Span {
    Span {
        trace_id: trace,
        span_id: id.to_be_bytes(),
        parent_span_id: parent.map(|p| p.to_be_bytes()),
        trace_state: String::new(),
        flags: 1,
        name: name.into(),
        kind,
        start_ns: start,
        end_ns: end,
        attributes: vec![],
        dropped_attributes_count: 0,
        events: vec![],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        service_name: svc.into(),
        resource_attributes: vec![
            KeyValue::new("service.name", AttrValue::Str(svc.into())),
            KeyValue::new(
                "host.name",
                AttrValue::Str(compact_str::format_compact!("{svc}-host")),
            ),
        ]
        .into(),
        scope_name: "fixture".into(),
        scope_version: "1.0".into(),
    }
}

/// Ids and times of the generated traces.
pub struct Fixture {
    pub base_ns: u64,
    pub checkout: [u8; 16],
    pub deep: [u8; 16],
    pub wide: [u8; 16],
    pub orphaned: [u8; 16],
    pub skewed: [u8; 16],
    pub erroring: [u8; 16],
    pub xss: [u8; 16],
    pub low_half: [u8; 16],
    /// The 30 `pager` traces, oldest first.
    pub pager: Vec<[u8; 16]>,
    pub total_spans: usize,
}

pub const DEEP_N: u64 = 10_000;
pub const WIDE_N: u64 = 2_000;

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn generate(base: u64) -> (Fixture, Vec<Span>) {
    let mut spans = Vec::new();
    // checkout: frontend → checkout → postgres (uninstrumented), with events, links, typed attributes.
    let checkout = tid(1);
    let b = base;
    let mut root = span(
        checkout,
        1,
        None,
        "frontend",
        "GET /checkout",
        SpanKind::Server,
        b,
        b + 120 * MS,
    );
    root.attributes = vec![
        KeyValue::new("http.method", AttrValue::Str("GET".into())),
        KeyValue::new("http.status_code", AttrValue::Int(200)),
        KeyValue::new("user.tier", AttrValue::Str("gold".into())),
        KeyValue::new("ratio", AttrValue::Double(0.5)),
        KeyValue::new("cached", AttrValue::Bool(false)),
        KeyValue::new("blob", AttrValue::Bytes(vec![1, 2, 3])),
    ];
    root.events = vec![Event {
        time_ns: b + 5 * MS,
        name: "cart.loaded".into(),
        attributes: vec![KeyValue::new("items", AttrValue::Int(3))],
        dropped_attributes_count: 0,
    }];
    root.links = vec![Link {
        trace_id: tid(99),
        span_id: 77u64.to_be_bytes(),
        trace_state: String::new(),
        attributes: vec![],
        dropped_attributes_count: 0,
        flags: 0,
    }];
    root.status_code = StatusCode::Ok;
    spans.push(root);
    spans.push(span(
        checkout,
        2,
        Some(1),
        "frontend",
        "POST checkout",
        SpanKind::Client,
        b + 10 * MS,
        b + 110 * MS,
    ));
    let mut srv = span(
        checkout,
        3,
        Some(2),
        "checkout",
        "PlaceOrder",
        SpanKind::Server,
        b + 12 * MS,
        b + 108 * MS,
    );
    srv.attributes = vec![KeyValue::new("order.id", AttrValue::Str("A-17".into()))];
    spans.push(srv);
    let mut db = span(
        checkout,
        4,
        Some(3),
        "checkout",
        "INSERT orders",
        SpanKind::Client,
        b + 20 * MS,
        b + 60 * MS,
    );
    db.attributes = vec![
        KeyValue::new("db.system", AttrValue::Str("postgresql".into())),
        KeyValue::new("peer.service", AttrValue::Str("orders-db".into())),
    ];
    spans.push(db);

    // deep: a 10,000-span chain.
    let deep = tid(2);
    for i in 0..DEEP_N {
        spans.push(span(
            deep,
            i + 1,
            if i == 0 { None } else { Some(i) },
            "deep",
            &format!("level-{i}"),
            SpanKind::Internal,
            b + 1_000 + i * 1_000,
            b + 1_000 + 2 * DEEP_N * 1_000 - i * 1_000,
        ));
    }

    // wide: one root with 2,000 children.
    let wide = tid(3);
    spans.push(span(
        wide,
        1,
        None,
        "wide",
        "fanout",
        SpanKind::Server,
        b + 2 * MS,
        b + 50 * MS,
    ));
    for i in 0..WIDE_N {
        spans.push(span(
            wide,
            i + 2,
            Some(1),
            "wide",
            "child",
            SpanKind::Internal,
            b + 3 * MS + i * 1_000,
            b + 4 * MS + i * 1_000,
        ));
    }

    // orphaned: the root never arrived; two spans point at missing parents.
    let orphaned = tid(4);
    spans.push(span(
        orphaned,
        10,
        Some(999),
        "orphans",
        "late-child",
        SpanKind::Server,
        b + 3 * MS,
        b + 9 * MS,
    ));
    spans.push(span(
        orphaned,
        11,
        Some(10),
        "orphans",
        "grandchild",
        SpanKind::Internal,
        b + 4 * MS,
        b + 8 * MS,
    ));
    spans.push(span(
        orphaned,
        12,
        Some(998),
        "orphans",
        "other-orphan",
        SpanKind::Internal,
        b + 5 * MS,
        b + 6 * MS,
    ));

    // skewed: a child on another host starts 500ms before its parent.
    let skewed = tid(5);
    spans.push(span(
        skewed,
        1,
        None,
        "edge",
        "GET /skew",
        SpanKind::Server,
        b + 4_000 * MS,
        b + 4_100 * MS,
    ));
    spans.push(span(
        skewed,
        2,
        Some(1),
        "backend",
        "skewed-child",
        SpanKind::Server,
        b + 3_500 * MS,
        b + 3_540 * MS,
    ));
    spans.push(span(
        skewed,
        3,
        Some(2),
        "backend",
        "skewed-grandchild",
        SpanKind::Internal,
        b + 3_510 * MS,
        b + 3_520 * MS,
    ));
    // Same service, out of bounds: never shifted.
    spans.push(span(
        skewed,
        4,
        Some(1),
        "edge",
        "same-host-late",
        SpanKind::Internal,
        b + 4_090 * MS,
        b + 4_200 * MS,
    ));

    // erroring: api → payments (error) → bank (error, the source).
    let erroring = tid(6);
    spans.push(span(
        erroring,
        1,
        None,
        "api",
        "POST /pay",
        SpanKind::Server,
        b + 6_000 * MS,
        b + 6_300 * MS,
    ));
    let mut pay = span(
        erroring,
        2,
        Some(1),
        "payments",
        "Charge",
        SpanKind::Server,
        b + 6_010 * MS,
        b + 6_200 * MS,
    );
    pay.status_code = StatusCode::Error;
    pay.status_message = "charge failed".into();
    spans.push(pay);
    let mut bank = span(
        erroring,
        3,
        Some(2),
        "payments",
        "CallBank",
        SpanKind::Client,
        b + 6_020 * MS,
        b + 6_150 * MS,
    );
    bank.status_code = StatusCode::Error;
    bank.attributes = vec![KeyValue::new(
        "server.address",
        AttrValue::Str("bank.example".into()),
    )];
    spans.push(bank);
    spans.push(span(
        erroring,
        4,
        Some(1),
        "api",
        "audit",
        SpanKind::Internal,
        b + 6_210 * MS,
        b + 6_250 * MS,
    ));

    // xss: attacker-controlled names and attribute values.
    let xss = tid(7);
    let mut x = span(
        xss,
        1,
        None,
        "xss-svc",
        XSS,
        SpanKind::Server,
        b + 7_000 * MS,
        b + 7_010 * MS,
    );
    x.attributes = vec![KeyValue::new(
        "payload",
        AttrValue::Str(compact_str::format_compact!(
            "{XSS}<script>alert(2)</script>"
        )),
    )];
    spans.push(x);

    // low_half: a trace id whose high half is zero (Jaeger prints 16 hex digits).
    let mut low_half = [0u8; 16];
    low_half[8..].copy_from_slice(&0x00c0ffee_u64.to_be_bytes());
    spans.push(span(
        low_half,
        1,
        None,
        "legacy",
        "old-client",
        SpanKind::Server,
        b + 8_000 * MS,
        b + 8_005 * MS,
    ));

    // pager: 30 one-span traces, 10s apart, durations 1..30ms; every third is an error
    // and carries http.status_code=500 (int) — others 200 — and a string "500" on one.
    let mut pager = Vec::new();
    for i in 0..30u64 {
        let t = tid(1000 + i);
        let start = b + 10_000 * MS + i * 10_000 * MS;
        let mut s = span(
            t,
            1,
            None,
            "pager",
            if i % 2 == 0 { "even" } else { "odd" },
            SpanKind::Server,
            start,
            start + (i + 1) * MS,
        );
        let code = if i % 3 == 0 { 500 } else { 200 };
        s.attributes = vec![KeyValue::new("http.status_code", AttrValue::Int(code))];
        if i == 1 {
            s.attributes.push(KeyValue::new(
                "http.status_text",
                AttrValue::Str("500".into()),
            ));
        }
        if i % 3 == 0 {
            s.status_code = StatusCode::Error;
        }
        spans.push(s);
        pager.push(t);
    }
    let total_spans = spans.len();
    (
        Fixture {
            base_ns: base,
            checkout,
            deep,
            wide,
            orphaned,
            skewed,
            erroring,
            xss,
            low_half,
            pager,
            total_spans,
        },
        spans,
    )
}

/// A filled store and the router serving it.
pub struct Served {
    pub _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub addr: SocketAddr,
    pub fx: Fixture,
}

pub async fn fill(store: &SqliteStore, spans: &[Span]) {
    let mut agg = RollupAggregator::new(RollupConfig::default());
    for s in spans {
        agg.observe(s);
    }
    for chunk in spans.chunks(5_000) {
        store.write_spans(chunk).await.expect("write spans");
    }
    let batch = agg.drain_all();
    store.write_rollups(&batch).await.expect("write rollups");
}

pub async fn serve_store(store: Arc<dyn SpanStore>) -> SocketAddr {
    let app = router(QueryState::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    addr
}

/// Starts everything; the fixture's traces begin 20 minutes ago.
pub async fn start() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).unwrap());
    let base = (now_ns() - 20 * 60 * 1_000_000_000) / 1_000_000_000 * 1_000_000_000;
    let (fx, spans) = generate(base);
    fill(&store, &spans).await;
    let addr = serve_store(store.clone()).await;
    Served {
        _dir: dir,
        store,
        addr,
        fx,
    }
}

/// The fixture behind a real `Collector` (the auth middleware included) with
/// a query token configured; receivers are disabled.
pub struct ServedCollector {
    pub collector: ferrotrace_collector::server::Collector,
    pub store: Arc<SqliteStore>,
    pub addr: SocketAddr,
    pub fx: Fixture,
    pub _dir: tempfile::TempDir,
}

/// Starts a collector whose query API and UI require `token`; the fixture's
/// traces begin 20 minutes ago.
pub async fn start_collector_with_query_token(token: &str) -> ServedCollector {
    let token = token.to_string();
    start_collector_with(move |cfg| cfg.auth.query_tokens = vec![token]).await
}

/// Starts a collector over the fixture with `tweak` applied to its config.
pub async fn start_collector_with(
    tweak: impl FnOnce(&mut ferrotrace_collector::config::Config),
) -> ServedCollector {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("spans.db")).unwrap());
    let base = (now_ns() - 20 * 60 * 1_000_000_000) / 1_000_000_000 * 1_000_000_000;
    let (fx, spans) = generate(base);
    fill(&store, &spans).await;
    let mut cfg = ferrotrace_collector::config::Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    cfg.server.otlp_grpc_addr = String::new();
    cfg.server.otlp_http_addr = String::new();
    cfg.server.zipkin_addr = String::new();
    cfg.server.http_addr = "127.0.0.1:0".into();
    tweak(&mut cfg);
    let mut collector =
        ferrotrace_collector::server::Collector::start(cfg, store.clone() as Arc<dyn SpanStore>)
            .await
            .expect("collector starts");
    collector.wait_ready().await;
    let addr = collector.addrs.http.expect("query listener");
    ServedCollector {
        collector,
        store,
        addr,
        fx,
        _dir: dir,
    }
}

/// GET over a fresh connection; returns status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with(addr, path, &[]).await
}

/// GET with extra request headers; returns status and body.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET expecting JSON; returns status and parsed body.
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (st, body) = get(addr, path).await;
    let v =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (st, v)
}

/// RFC 3339 for a nanosecond time, percent-safe in a query string.
pub fn rfc(ns: u64) -> String {
    ferrotrace_collector::query::params::format_rfc3339(ns)
}
