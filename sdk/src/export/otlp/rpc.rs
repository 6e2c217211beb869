//! The few `google.rpc` messages OTLP uses to carry retry hints: a gRPC status's
//! binary details (`google.rpc.Status` holding `google.rpc.RetryInfo`), also
//! usable by servers that want to send such a hint.
//!
//! Declared here rather than taken from `tonic-types` (as the collector does)
//! because that crate depends on tonic, which the default, HTTP-only SDK
//! build does not compile; like the OTLP messages in `proto`, they are two
//! small prost messages.

use std::time::Duration;

use prost::Message;

/// The `type_url` of `google.rpc.RetryInfo` inside `google.protobuf.Any`.
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    /// Identifies the message type in `value`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    /// How long the client should wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanosecond fraction.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Encodes a `google.rpc.Status` carrying a `RetryInfo` with `delay`, as a
/// server puts into a gRPC status's details (or an HTTP error body).
pub fn encode_retry_status(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.to_string(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

/// The `RetryInfo` delay in encoded `google.rpc.Status` details, if any.
/// Malformed input yields `None` (never a panic).
pub fn retry_delay_from_status_details(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_TYPE_URL)
        .find_map(|a| RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay)
        .and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
            Some(Duration::new(secs, nanos))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let b = encode_retry_status(8, "slow down", Duration::from_millis(1500));
        assert_eq!(
            retry_delay_from_status_details(&b),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_delay_from_status_details(b"\xff\xff\xff"), None);
        assert_eq!(retry_delay_from_status_details(&[]), None);
    }
}
