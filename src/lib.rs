//! snapahead: snapshot block volumes into object storage and mount them
//! lazily, with prefetch learned from access traces.
//!
//! Modules follow the data flow of DESIGN.md:
//! - [`format`]: the on-store format (data objects, manifest pages, index);
//! - [`store`]: the object store (file://, s3://, memory://);
//! - [`create`]: volume → blocks → compressed data objects → manifest → index;
//! - [`snapshot`]: an opened snapshot: block lookup, fetch, verify, read;
//! - [`catalog`]: list, inspect, delete and garbage-collect snapshots;
//! - [`config`], [`name`], [`progress`]: the user-facing edges.

pub mod catalog;
pub mod config;
pub mod create;
pub mod format;
pub mod name;
pub mod progress;
pub mod snapshot;
pub mod store;
