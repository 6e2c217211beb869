//! Benchmarks live in `benches/benches/` (and the `hotpath` example); this
//! library holds only what both measure alike.

/// The remote parent the HTTP client measurements run under (the `overhead`
/// bench's `http_client` group and `hotpath http_client_*`): a fixed trace
/// and span id, sampled or not by `flags`.
pub fn remote_parent(flags: ferrotrace::TraceFlags) -> ferrotrace::Context {
    ferrotrace::Context::new().with_span_context(ferrotrace::SpanContext::new(
        ferrotrace::TraceId::from_bytes([7; 16]),
        ferrotrace::SpanId::from_bytes([7; 8]),
        flags,
        true,
        ferrotrace::TraceState::NONE,
    ))
}
