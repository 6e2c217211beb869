//! The OTLP trace messages the exporter sends and the response it reads, as
//! `prost` messages with the field numbers of the OTLP protocol
//! (`opentelemetry/proto/{common,resource,trace,collector/trace}/v1`).
//!
//! Why not the `opentelemetry-proto` crate (which the collector uses): its
//! trace messages come only with its `trace` feature, and the crate depends
//! on `opentelemetry_sdk` unconditionally — a service depending on ferrotrace
//! would compile a second tracing SDK. These few messages keep the SDK free of
//! it. The tests check the wire format against `opentelemetry-proto`: bytes
//! encoded here decode with its types into the same request, and the OTLP/JSON
//! body (see [`super::json`]) deserializes with its serde mapping to the same.
//!
//! Only what a trace exporter needs is here; fields a client never sets
//! (`*_strindex`, `entity_refs`) are left out, which protobuf allows.

/// `opentelemetry.proto.common.v1`.
pub mod common {
    /// Version 1.
    pub mod v1 {
        /// `AnyValue`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct AnyValue {
            /// The value.
            #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
            pub value: ::core::option::Option<any_value::Value>,
        }
        /// `AnyValue.value`.
        pub mod any_value {
            /// The kinds of value.
            #[derive(Clone, PartialEq, ::prost::Oneof)]
            pub enum Value {
                /// `string_value = 1`.
                #[prost(string, tag = "1")]
                StringValue(::prost::alloc::string::String),
                /// `bool_value = 2`.
                #[prost(bool, tag = "2")]
                BoolValue(bool),
                /// `int_value = 3`.
                #[prost(int64, tag = "3")]
                IntValue(i64),
                /// `double_value = 4`.
                #[prost(double, tag = "4")]
                DoubleValue(f64),
                /// `array_value = 5`.
                #[prost(message, tag = "5")]
                ArrayValue(super::ArrayValue),
                /// `kvlist_value = 6`.
                #[prost(message, tag = "6")]
                KvlistValue(super::KeyValueList),
                /// `bytes_value = 7`.
                #[prost(bytes, tag = "7")]
                BytesValue(::prost::alloc::vec::Vec<u8>),
            }
        }
        /// `ArrayValue`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct ArrayValue {
            /// `values = 1`.
            #[prost(message, repeated, tag = "1")]
            pub values: ::prost::alloc::vec::Vec<AnyValue>,
        }
        /// `KeyValueList`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct KeyValueList {
            /// `values = 1`.
            #[prost(message, repeated, tag = "1")]
            pub values: ::prost::alloc::vec::Vec<KeyValue>,
        }
        /// `KeyValue`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct KeyValue {
            /// `key = 1`.
            #[prost(string, tag = "1")]
            pub key: ::prost::alloc::string::String,
            /// `value = 2`.
            #[prost(message, optional, tag = "2")]
            pub value: ::core::option::Option<AnyValue>,
        }
        /// `InstrumentationScope`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct InstrumentationScope {
            /// `name = 1`.
            #[prost(string, tag = "1")]
            pub name: ::prost::alloc::string::String,
            /// `version = 2`.
            #[prost(string, tag = "2")]
            pub version: ::prost::alloc::string::String,
            /// `attributes = 3`.
            #[prost(message, repeated, tag = "3")]
            pub attributes: ::prost::alloc::vec::Vec<KeyValue>,
            /// `dropped_attributes_count = 4`.
            #[prost(uint32, tag = "4")]
            pub dropped_attributes_count: u32,
        }
    }
}

/// `opentelemetry.proto.resource.v1`.
pub mod resource {
    /// Version 1.
    pub mod v1 {
        /// `Resource`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct Resource {
            /// `attributes = 1`.
            #[prost(message, repeated, tag = "1")]
            pub attributes: ::prost::alloc::vec::Vec<super::super::common::v1::KeyValue>,
            /// `dropped_attributes_count = 2`.
            #[prost(uint32, tag = "2")]
            pub dropped_attributes_count: u32,
        }
    }
}

/// `opentelemetry.proto.trace.v1`.
pub mod trace {
    /// Version 1.
    pub mod v1 {
        use super::super::common::v1::{InstrumentationScope, KeyValue};

        /// `ResourceSpans`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct ResourceSpans {
            /// `resource = 1`.
            #[prost(message, optional, tag = "1")]
            pub resource: ::core::option::Option<super::super::resource::v1::Resource>,
            /// `scope_spans = 2`.
            #[prost(message, repeated, tag = "2")]
            pub scope_spans: ::prost::alloc::vec::Vec<ScopeSpans>,
            /// `schema_url = 3`.
            #[prost(string, tag = "3")]
            pub schema_url: ::prost::alloc::string::String,
        }
        /// `ScopeSpans`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct ScopeSpans {
            /// `scope = 1`.
            #[prost(message, optional, tag = "1")]
            pub scope: ::core::option::Option<InstrumentationScope>,
            /// `spans = 2`.
            #[prost(message, repeated, tag = "2")]
            pub spans: ::prost::alloc::vec::Vec<Span>,
            /// `schema_url = 3`.
            #[prost(string, tag = "3")]
            pub schema_url: ::prost::alloc::string::String,
        }
        /// `Span`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct Span {
            /// `trace_id = 1` (16 bytes).
            #[prost(bytes = "vec", tag = "1")]
            pub trace_id: ::prost::alloc::vec::Vec<u8>,
            /// `span_id = 2` (8 bytes).
            #[prost(bytes = "vec", tag = "2")]
            pub span_id: ::prost::alloc::vec::Vec<u8>,
            /// `trace_state = 3` (the W3C header text).
            #[prost(string, tag = "3")]
            pub trace_state: ::prost::alloc::string::String,
            /// `parent_span_id = 4` (empty for a root span).
            #[prost(bytes = "vec", tag = "4")]
            pub parent_span_id: ::prost::alloc::vec::Vec<u8>,
            /// `flags = 16`: W3C trace flags and the is-remote bits.
            #[prost(fixed32, tag = "16")]
            pub flags: u32,
            /// `name = 5`.
            #[prost(string, tag = "5")]
            pub name: ::prost::alloc::string::String,
            /// `kind = 6` (`SPAN_KIND_*`).
            #[prost(int32, tag = "6")]
            pub kind: i32,
            /// `start_time_unix_nano = 7`.
            #[prost(fixed64, tag = "7")]
            pub start_time_unix_nano: u64,
            /// `end_time_unix_nano = 8`.
            #[prost(fixed64, tag = "8")]
            pub end_time_unix_nano: u64,
            /// `attributes = 9`.
            #[prost(message, repeated, tag = "9")]
            pub attributes: ::prost::alloc::vec::Vec<KeyValue>,
            /// `dropped_attributes_count = 10`.
            #[prost(uint32, tag = "10")]
            pub dropped_attributes_count: u32,
            /// `events = 11`.
            #[prost(message, repeated, tag = "11")]
            pub events: ::prost::alloc::vec::Vec<span::Event>,
            /// `dropped_events_count = 12`.
            #[prost(uint32, tag = "12")]
            pub dropped_events_count: u32,
            /// `links = 13`.
            #[prost(message, repeated, tag = "13")]
            pub links: ::prost::alloc::vec::Vec<span::Link>,
            /// `dropped_links_count = 14`.
            #[prost(uint32, tag = "14")]
            pub dropped_links_count: u32,
            /// `status = 15`.
            #[prost(message, optional, tag = "15")]
            pub status: ::core::option::Option<Status>,
        }
        /// `Span.Event` and `Span.Link`, and the `SpanKind` numbers.
        pub mod span {
            use super::KeyValue;

            /// `SPAN_KIND_INTERNAL`.
            pub const KIND_INTERNAL: i32 = 1;
            /// `SPAN_KIND_SERVER`.
            pub const KIND_SERVER: i32 = 2;
            /// `SPAN_KIND_CLIENT`.
            pub const KIND_CLIENT: i32 = 3;
            /// `SPAN_KIND_PRODUCER`.
            pub const KIND_PRODUCER: i32 = 4;
            /// `SPAN_KIND_CONSUMER`.
            pub const KIND_CONSUMER: i32 = 5;

            /// `Span.Event`.
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct Event {
                /// `time_unix_nano = 1`.
                #[prost(fixed64, tag = "1")]
                pub time_unix_nano: u64,
                /// `name = 2`.
                #[prost(string, tag = "2")]
                pub name: ::prost::alloc::string::String,
                /// `attributes = 3`.
                #[prost(message, repeated, tag = "3")]
                pub attributes: ::prost::alloc::vec::Vec<KeyValue>,
                /// `dropped_attributes_count = 4`.
                #[prost(uint32, tag = "4")]
                pub dropped_attributes_count: u32,
            }
            /// `Span.Link`.
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct Link {
                /// `trace_id = 1`.
                #[prost(bytes = "vec", tag = "1")]
                pub trace_id: ::prost::alloc::vec::Vec<u8>,
                /// `span_id = 2`.
                #[prost(bytes = "vec", tag = "2")]
                pub span_id: ::prost::alloc::vec::Vec<u8>,
                /// `trace_state = 3`.
                #[prost(string, tag = "3")]
                pub trace_state: ::prost::alloc::string::String,
                /// `attributes = 4`.
                #[prost(message, repeated, tag = "4")]
                pub attributes: ::prost::alloc::vec::Vec<KeyValue>,
                /// `dropped_attributes_count = 5`.
                #[prost(uint32, tag = "5")]
                pub dropped_attributes_count: u32,
                /// `flags = 6`.
                #[prost(fixed32, tag = "6")]
                pub flags: u32,
            }
        }
        /// `Status`.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct Status {
            /// `message = 2`.
            #[prost(string, tag = "2")]
            pub message: ::prost::alloc::string::String,
            /// `code = 3` (`STATUS_CODE_*`).
            #[prost(int32, tag = "3")]
            pub code: i32,
        }
        /// The `Status.StatusCode` numbers.
        pub mod status {
            /// `STATUS_CODE_UNSET`.
            pub const CODE_UNSET: i32 = 0;
            /// `STATUS_CODE_OK`.
            pub const CODE_OK: i32 = 1;
            /// `STATUS_CODE_ERROR`.
            pub const CODE_ERROR: i32 = 2;
        }
    }
}

/// `opentelemetry.proto.collector.trace.v1`.
pub mod collector {
    /// The trace service.
    pub mod trace {
        /// Version 1.
        pub mod v1 {
            /// The gRPC method path of `TraceService.Export`.
            pub const EXPORT_PATH: &str =
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

            /// `ExportTraceServiceRequest`.
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct ExportTraceServiceRequest {
                /// `resource_spans = 1`.
                #[prost(message, repeated, tag = "1")]
                pub resource_spans:
                    ::prost::alloc::vec::Vec<super::super::super::trace::v1::ResourceSpans>,
            }
            /// `ExportTraceServiceResponse`.
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct ExportTraceServiceResponse {
                /// `partial_success = 1`.
                #[prost(message, optional, tag = "1")]
                pub partial_success: ::core::option::Option<ExportTracePartialSuccess>,
            }
            /// `ExportTracePartialSuccess`.
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct ExportTracePartialSuccess {
                /// `rejected_spans = 1`.
                #[prost(int64, tag = "1")]
                pub rejected_spans: i64,
                /// `error_message = 2`.
                #[prost(string, tag = "2")]
                pub error_message: ::prost::alloc::string::String,
            }
        }
    }
}
