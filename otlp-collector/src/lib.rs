//! # ferrotrace-collector
//!
//! Receives OTLP (gRPC, HTTP protobuf/JSON) and Zipkin v2 JSON, acknowledges only
//! what is in the write-ahead log, samples, enriches, redacts and batches spans
//! into a sink (embedded SQLite by default), and serves a query API and web UI.

pub mod auth;
pub mod config;
pub mod disk;
pub mod health;
pub mod listener;
pub mod log_limit;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod rollup;
pub mod route;
pub mod sampling_api;
pub mod server;
pub mod storage;
pub mod tls;
pub mod ui;
