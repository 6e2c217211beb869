//! Jaeger's sampling messages (`jaeger.api_v2`, `proto/jaeger/api_v2/sampling.proto`).

/// Messages of `proto/jaeger/api_v2/sampling.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!("sampling_gen.rs");
}
