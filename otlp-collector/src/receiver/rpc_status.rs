//! `google.rpc.Status` carrying `google.rpc.RetryInfo`, the messages from
//! `tonic-types` (the gRPC project's own), for gRPC error details and for
//! OTLP/HTTP protobuf error bodies.

use prost::Message;
use prost_types::{Any, Duration};
pub use tonic_types::pb::{RetryInfo, Status as RpcStatus};

/// gRPC code numbers used here.
pub mod code {
    /// INVALID_ARGUMENT.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// RESOURCE_EXHAUSTED.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// UNAVAILABLE.
    pub const UNAVAILABLE: i32 = 14;
    /// `UNIMPLEMENTED` (no such endpoint or method).
    pub const UNIMPLEMENTED: i32 = 12;
    /// UNAUTHENTICATED.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// An encoded `google.rpc.Status` without details.
pub fn status(code: i32, message: &str) -> Vec<u8> {
    RpcStatus {
        code,
        message: message.to_string(),
        details: Vec::new(),
    }
    .encode_to_vec()
}

/// An encoded `google.rpc.Status` carrying a `RetryInfo` with `secs` delay.
pub fn status_with_retry(code: i32, message: &str, secs: u64) -> Vec<u8> {
    let retry = RetryInfo {
        retry_delay: Some(Duration {
            seconds: secs as i64,
            nanos: 0,
        }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let b = status_with_retry(code::RESOURCE_EXHAUSTED, "full", 2);
        let s = RpcStatus::decode(b.as_slice()).unwrap();
        assert_eq!(s.code, 8);
        let r = RetryInfo::decode(s.details[0].value.as_slice()).unwrap();
        assert_eq!(r.retry_delay.unwrap().seconds, 2);
    }
}
