//! The SDK's own OTLP messages (`export::otlp::proto`, which keep
//! `opentelemetry_sdk` out of a service's build) against the official
//! `opentelemetry-proto` crate: protobuf bytes and OTLP/JSON bodies decode
//! into the same request with the official types, for a rich batch and for
//! arbitrary text and numbers; the official responses decode with ours.
#![cfg(feature = "otlp-http")]

mod export_support;

use std::borrow::Cow;

use export_support::{resource, rich_batch, scope, small_span};
use ferrotrace::export::otlp::proto::collector::trace::v1 as ours;
use ferrotrace::export::otlp::{encode_json, encode_protobuf, encode_request};
use ferrotrace::export::SpanData;
use ferrotrace::KeyValue;
use opentelemetry_proto::tonic::collector::trace::v1 as official;
use proptest::prelude::*;
use prost::Message;

fn official_from_protobuf(batch: Vec<SpanData>) -> official::ExportTraceServiceRequest {
    official::ExportTraceServiceRequest::decode(encode_protobuf(batch).as_slice())
        .expect("decodes with opentelemetry-proto")
}

fn official_from_json(batch: Vec<SpanData>) -> official::ExportTraceServiceRequest {
    let body = encode_json(&encode_request(batch)).unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "opentelemetry-proto cannot read the JSON: {e}\n{}",
            String::from_utf8_lossy(&body)
        )
    })
}

#[test]
fn protobuf_and_json_match_the_official_messages() {
    let pb = official_from_protobuf(rich_batch());
    let json = official_from_json(rich_batch());
    assert_eq!(pb, json);
    assert_eq!(pb.resource_spans.len(), 2);
    // Re-encoding with the official types gives our bytes back.
    assert_eq!(pb.encode_to_vec(), encode_protobuf(rich_batch()));
}

#[test]
fn official_responses_decode_with_ours() {
    let resp = official::ExportTraceServiceResponse {
        partial_success: Some(official::ExportTracePartialSuccess {
            rejected_spans: 7,
            error_message: "too old".into(),
        }),
    };
    let back = ours::ExportTraceServiceResponse::decode(resp.encode_to_vec().as_slice()).unwrap();
    let ps = back.partial_success.unwrap();
    assert_eq!(
        (ps.rejected_spans, ps.error_message.as_str()),
        (7, "too old")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_text_and_numbers_survive_both_encodings(
        name in "(?s).{0,20}",
        key in "[a-z.]{1,10}",
        text in "(?s).{0,30}",
        int in any::<i64>(),
        float in any::<f64>().prop_filter("finite", |f| f.is_finite()),
        start in any::<u64>(),
    ) {
        let mut span = small_span(1);
        span.name = Cow::Owned(name);
        span.start_time_ns = start;
        span.end_time_ns = start;
        span.attributes = vec![
            KeyValue::new(key.clone(), text.clone()),
            KeyValue::new("i", int),
            KeyValue::new("f", float),
        ];
        span.resource = resource("prop").into();
        span.scope = scope("prop").into();
        let mut pb = official_from_protobuf(vec![span.clone()]);
        let mut json = official_from_json(vec![span]);
        // Read with serde_json's exact float parser (`float_roundtrip`, see
        // sdk/Cargo.toml): the text is the shortest exact form, so the double
        // comes back bit for bit.
        let take_f = |r: &mut official::ExportTraceServiceRequest| -> f64 {
            let a = &mut r.resource_spans[0].scope_spans[0].spans[0].attributes[2];
            match a.value.take().and_then(|v| v.value) {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(d)) => d,
                other => panic!("not a double: {other:?}"),
            }
        };
        let (a, b) = (take_f(&mut pb), take_f(&mut json));
        prop_assert_eq!(a, float);
        prop_assert_eq!(a.to_bits(), b.to_bits(), "{:e} vs {:e}", a, b);
        let text = serde_json::to_string(&float).unwrap();
        prop_assert_eq!(text.parse::<f64>().unwrap(), float);
        prop_assert_eq!(pb, json);
    }
}
