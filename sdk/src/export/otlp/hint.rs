//! The most likely fix for a failed export, from the protocol, the endpoint
//! and the error text: what a person reading the error would have to know
//! about OTLP ports, paths and variables to fix it.

use super::config::Protocol;

/// The port of `endpoint` (explicit, else the scheme's default).
fn port(endpoint: &str) -> Option<u16> {
    let uri: http::Uri = endpoint.parse().ok()?;
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

fn host_port(endpoint: &str) -> String {
    endpoint
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| endpoint.to_string())
}

/// A sentence saying what most likely fixes `error`, or `None` when the
/// error does not point at a configuration problem.
///
/// ```
/// use ferrotrace::export::otlp::{hint::likely_fix, Protocol};
/// let fix = likely_fix(Protocol::HttpProtobuf, "http://localhost:4317/v1/traces", "HTTP 404").unwrap();
/// assert!(fix.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{fix}");
/// ```
pub fn likely_fix(protocol: Protocol, endpoint: &str, error: &str) -> Option<String> {
    let e = error.to_ascii_lowercase();
    let port = port(endpoint);
    let http = protocol != Protocol::Grpc;
    let name = protocol.as_str();
    // HTTP/1.1 sent to a gRPC (HTTP/2-only) listener: the reply is an HTTP/2
    // frame, which an HTTP/1 client cannot parse.
    let http_to_grpc = http
        && (port == Some(4317)
            || e.contains("invalid http version")
            || e.contains("http2 preface")
            || e.contains("received invalid response")
            // The HTTP/2 server's SETTINGS/GOAWAY frame arrived before the
            // HTTP/1 client had written its request (timing-dependent twin of
            // "invalid http version").
            || e.contains("received unexpected message from connection")
            || (e.contains("connection closed before message completed") && port == Some(4317)));
    if http_to_grpc {
        return Some(format!(
            "{name} was sent to a gRPC port{}: set OTEL_EXPORTER_OTLP_PROTOCOL=grpc, or send to the OTLP/HTTP port (4318 by default)",
            port.map(|p| format!(" ({p})")).unwrap_or_default()
        ));
    }
    // gRPC (HTTP/2) sent to an HTTP/1 listener such as OTLP/HTTP's 4318.
    let grpc_to_http = !http
        && (port == Some(4318)
            || e.contains("frame with invalid size")
            || e.contains("invalid http version")
            || (e.contains("h2 protocol error") && e.contains("frame"))
            // An HTTP/1 server answers the HTTP/2 preface by closing the connection.
            || (e.contains("transport error")
                && (e.contains("broken pipe")
                    || e.contains("connection reset")
                    || e.contains("connection closed"))));
    if grpc_to_http {
        return Some(format!(
            "gRPC was sent to an OTLP/HTTP port{}: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, or send to the gRPC port (4317 by default)",
            port.map(|p| format!(" ({p})")).unwrap_or_default()
        ));
    }
    if e.contains("connection refused") || e.contains("tcp connect error") {
        return Some(format!(
            "nothing accepts connections at {}: start the collector, or point OTEL_EXPORTER_OTLP_ENDPOINT at it (the default is http://localhost:4318 for http/protobuf, http://localhost:4317 for grpc)",
            host_port(endpoint)
        ));
    }
    if e.contains("dns error")
        || e.contains("failed to lookup address")
        || e.contains("name or service not known")
    {
        return Some(format!(
            "the host of {} does not resolve: check OTEL_EXPORTER_OTLP_ENDPOINT",
            host_port(endpoint)
        ));
    }
    if e.contains("unknownissuer")
        || e.contains("invalid peer certificate")
        || e.contains("certificate verify failed")
    {
        return Some("the collector's TLS certificate is not trusted: set OTEL_EXPORTER_OTLP_CERTIFICATE to the CA bundle that signed it".into());
    }
    if e.contains("certificate required") || e.contains("certificaterequired") {
        return Some("the collector requires a client certificate (mTLS): set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY".into());
    }
    if e.contains("invalidcontenttype")
        || e.contains("corrupt message")
        || e.contains("wrong version number")
    {
        return Some(format!(
            "the collector at {} does not speak TLS: use an http:// endpoint (or OTEL_EXPORTER_OTLP_INSECURE=true for a scheme-less gRPC endpoint)",
            host_port(endpoint)
        ));
    }
    let status =
        |code: &str| e.starts_with(&format!("http {code}")) || e.contains(&format!("http {code} "));
    if http && status("404") {
        return Some(format!(
            "the server has no OTLP/HTTP traces endpoint at {endpoint}: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as-is and must include the path (/v1/traces); OTEL_EXPORTER_OTLP_ENDPOINT is a base address the SDK appends /v1/traces to"
        ));
    }
    if http && status("415") {
        return Some(format!(
            "the server does not accept {name} bodies: try OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (or http/json)"
        ));
    }
    if status("413")
        || e.contains("message length too large")
        || (e.contains("outofrange") && e.contains("size"))
    {
        return Some("the batch is larger than the collector accepts: lower OTEL_BSP_MAX_EXPORT_BATCH_SIZE or set OTEL_EXPORTER_OTLP_COMPRESSION=gzip".into());
    }
    if status("401")
        || status("403")
        || e.contains("unauthenticated")
        || e.contains("permissiondenied")
    {
        return Some("the collector refused the request's credentials: set its token with OTEL_EXPORTER_OTLP_HEADERS (e.g. authorization=Bearer%20<token>)".into());
    }
    if !http && e.contains("unimplemented") {
        return Some(format!(
            "the server at {} does not implement the OTLP trace service: check that it is an OTLP collector and that this is its gRPC port (4317 by default)",
            host_port(endpoint)
        ));
    }
    if status("429") || e.contains("resourceexhausted") || status("503") {
        return Some("the collector is overloaded and asked to back off: spans are dropped once retries run out; scale the collector or sample less (OTEL_TRACES_SAMPLER)".into());
    }
    if e.contains("timed out") || e.contains("deadlineexceeded") {
        return Some(format!(
            "the collector at {} did not answer within the export timeout: check that it is reachable, or raise OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds)",
            host_port(endpoint)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_sent_to_the_other_port() {
        let fix = likely_fix(
            Protocol::HttpProtobuf,
            "http://localhost:4317/v1/traces",
            "cannot reach http://localhost:4317/v1/traces: client error (SendRequest): connection closed before message completed",
        )
        .unwrap();
        assert_eq!(fix, "http/protobuf was sent to a gRPC port (4317): set OTEL_EXPORTER_OTLP_PROTOCOL=grpc, or send to the OTLP/HTTP port (4318 by default)");
        // hyper's wording when the gRPC server speaks first, on any port.
        let fix = likely_fix(
            Protocol::HttpProtobuf,
            "http://127.0.0.1:35683/v1/traces",
            "cannot reach http://127.0.0.1:35683/v1/traces: client error (SendRequest): received unexpected message from connection (gave up after 1 attempts)",
        )
        .unwrap();
        assert!(fix.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{fix}");
        let fix = likely_fix(
            Protocol::Grpc,
            "http://localhost:4318",
            "gRPC Unavailable: error trying to connect",
        )
        .unwrap();
        assert!(
            fix.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"),
            "{fix}"
        );
        // What tonic reports when an HTTP/1 server hangs up on the HTTP/2 preface.
        let fix = likely_fix(
            Protocol::Grpc,
            "http://c:9000",
            "gRPC Unknown: transport error: connection error: stream closed because of a broken pipe (not retryable)",
        )
        .unwrap();
        assert!(
            fix.starts_with("gRPC was sent to an OTLP/HTTP port (9000)"),
            "{fix}"
        );
        // Recognised by the error alone on another port.
        let fix = likely_fix(
            Protocol::HttpJson,
            "http://c:9000/v1/traces",
            "client error: invalid HTTP version parsed",
        )
        .unwrap();
        assert!(
            fix.starts_with("http/json was sent to a gRPC port (9000):"),
            "{fix}"
        );
    }

    #[test]
    fn other_causes() {
        let cases = [
            (
                Protocol::Grpc,
                "http://c:4317",
                "gRPC Unavailable: tcp connect error: Connection refused (os error 111)",
                "nothing accepts connections at c:4317",
            ),
            (
                Protocol::HttpProtobuf,
                "http://c:4318/v1/traces",
                "HTTP 404 from http://c:4318/v1/traces: not found",
                "must include the path",
            ),
            (
                Protocol::HttpProtobuf,
                "http://c:4318/v1/traces",
                "HTTP 401 from x: no token",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                Protocol::Grpc,
                "http://c:4317",
                "gRPC Unauthenticated: no token",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                Protocol::HttpProtobuf,
                "http://c:4318/v1/traces",
                "HTTP 413 from x: too big",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            ),
            (
                Protocol::Grpc,
                "https://c:4317",
                "gRPC Unavailable: invalid peer certificate: UnknownIssuer",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            (
                Protocol::HttpProtobuf,
                "http://c:4318/v1/traces",
                "export timed out after 10s",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                Protocol::Grpc,
                "http://c:4317",
                "gRPC Unimplemented: unknown service",
                "does not implement the OTLP trace service",
            ),
        ];
        for (p, endpoint, err, want) in cases {
            let fix = likely_fix(p, endpoint, err).unwrap_or_default();
            assert!(fix.contains(want), "{err}: {fix}");
        }
        assert_eq!(
            likely_fix(
                Protocol::HttpProtobuf,
                "http://c:4318/v1/traces",
                "HTTP 500 from x: bug"
            ),
            None
        );
    }
}
