//! The response body wrapper shared by the HTTP and gRPC layers: it keeps the
//! span open until the body is finished (streaming bodies included), and for
//! gRPC reads `grpc-status` from the trailers.

use std::fmt::Display;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame, SizeHint};

use crate::trace::{Span, Status};

/// What the span needs to learn from the end of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Grpc,
}

/// gRPC status code names (index = code), for error descriptions.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Records a `grpc-status` header value on `span`: `rpc.grpc.status_code`
/// and, for any non-OK code, an error status with the code name and the
/// `grpc-message` (if given). Returns false if the value is not a code.
pub(crate) fn record_grpc_status(span: &mut Span, code: &str, message: Option<&str>) -> bool {
    let Ok(code) = code.trim().parse::<u16>() else {
        return false;
    };
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    if code != 0 {
        let name = GRPC_CODES
            .get(usize::from(code))
            .copied()
            .unwrap_or("UNKNOWN");
        let description = match message {
            Some(m) if !m.is_empty() => {
                let m = percent_encoding::percent_decode_str(m).decode_utf8_lossy();
                format!("{name}: {m}")
            }
            _ => name.to_string(),
        };
        span.set_status(Status::error(description));
    }
    true
}

/// Reads `grpc-status`/`grpc-message` from a header or trailer map.
pub(crate) fn grpc_status_from(map: &http::HeaderMap, span: &mut Span) -> bool {
    match map.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some(code) => {
            let message = map.get("grpc-message").and_then(|v| v.to_str().ok());
            record_grpc_status(span, code, message)
        }
        None => false,
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's span when the last frame has
    /// been read, when the body fails, or when it is dropped (client gone).
    pub struct TracedBody<B> {
        #[pin]
        inner: Option<B>,
        span: Option<Span>,
        protocol: Protocol,
        // gRPC: the status already arrived in the response headers (trailers-only).
        status_seen: bool,
    }
}

impl<B> std::fmt::Debug for TracedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedBody")
            .field("finished", &self.span.is_none())
            .finish()
    }
}

impl<B> TracedBody<B> {
    pub(crate) fn new(inner: B, span: Span, protocol: Protocol, status_seen: bool) -> Self {
        TracedBody {
            inner: Some(inner),
            span: Some(span),
            protocol,
            status_seen,
        }
    }

    /// A body passed through untraced (instrumentation was suppressed).
    pub(crate) fn passthrough(inner: B) -> Self {
        TracedBody {
            inner: Some(inner),
            span: None,
            protocol: Protocol::Http,
            status_seen: true,
        }
    }

    /// A body with no frames (the response built after a caught panic); the
    /// span has already been ended.
    pub(crate) fn empty() -> Self {
        TracedBody {
            inner: None,
            span: None,
            protocol: Protocol::Http,
            status_seen: true,
        }
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body,
    B::Error: Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        if this.span.is_none() {
            // Untraced, or the span has ended: nothing to look at.
            return inner.poll_frame(cx);
        }
        let result = std::task::ready!(inner.poll_frame(cx));
        match &result {
            Some(Ok(frame)) => {
                if let (Protocol::Grpc, Some(trailers), Some(span)) =
                    (*this.protocol, frame.trailers_ref(), this.span.as_mut())
                {
                    *this.status_seen |= grpc_status_from(trailers, span);
                }
            }
            Some(Err(e)) => {
                if let Some(mut span) = this.span.take() {
                    span.set_attribute("error.type", "body");
                    span.set_status(Status::error(format!("response body failed: {e}")));
                    span.end();
                }
            }
            None => {
                if let Some(mut span) = this.span.take() {
                    if *this.protocol == Protocol::Grpc && !*this.status_seen {
                        span.set_status(Status::error(
                            "gRPC response ended without a grpc-status trailer",
                        ));
                    }
                    span.end();
                }
            }
        }
        Poll::Ready(result)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
