//! The cold tier (issue 18): immutable Parquet files in a local directory or
//! an S3-compatible bucket, written from the hot store as spans age past
//! `cold.hot_days` and deleted past `cold.cold_days`; reads fall through to
//! them transparently ([`TieredStore`]).
//!
//! - [`config`]: the `[cold]` section.
//! - [`format`](mod@format): the file format and its trace-id index (sorted ids,
//!   row-group min/max, bloom filters).
//! - [`location`]: where files live and how their names carry their time range.
//! - [`store`]: the catalog, the index cache and the bounded reads.
//! - [`tiered`]: the hot store and the cold tier behind one set of roles.
//! - [`tiering`]: the background task that moves aged spans.
//! - [`policy`]: which traces go cold.
//! - [`compact`]: merging each hour's small files.

pub mod compact;
pub mod config;
pub mod fence;
pub mod format;
pub mod location;
pub mod policy;
pub mod stats;
pub mod store;
pub mod tiered;
pub mod tiering;

pub use config::{ColdConfig, ColdPolicy};
pub use stats::ColdStats;
pub use store::ColdStore;
pub use tiered::TieredStore;
