//! snapahead: snapshot block volumes into object storage and mount them
//! lazily, with prefetch learned from access traces.
//!
//! Modules follow the data flow of DESIGN.md:
//! - [`format`]: the on-store format (data objects, manifest pages, index);
//! - [`store`]: the object store (file://, s3://, memory://);
//! - [`create`]: volume → blocks → compressed data objects → manifest → index;
//! - [`snapshot`]: an opened snapshot: block lookup, fetch, verify, read;
//! - [`catalog`]: list, inspect, delete and garbage-collect snapshots;
//! - [`cache`]: the mount's block cache (memory tier + disk tier);
//! - [`fetch`]: cache-or-store block fetches, shared and coalesced;
//! - [`fs`]: the FUSE filesystem and the mount's lifecycle;
//! - [`metrics`]: counters and histograms, Prometheus and JSON;
//! - [`config`], [`name`], [`progress`]: the user-facing edges.

pub mod cache;
pub mod catalog;
pub mod config;
pub mod create;
pub mod fetch;
pub mod format;
pub mod fs;
pub mod metrics;
pub mod name;
pub mod predict;
pub mod prefetch;
pub mod progress;
pub mod snapshot;
pub mod store;
pub mod trace;
