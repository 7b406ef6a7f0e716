//! snapahead: snapshot block volumes into object storage and mount them
//! lazily, with prefetch learned from access traces.
//!
//! Modules follow the data flow of docs/design.md, in layers. A module uses
//! modules of its own layer or of lower ones, never of a higher one, and
//! the import graph has no cycle (`tests/layers.rs` checks both):
//!
//! 1. [`name`] (validated snapshot names), [`units`] (durations in config
//!    files), [`progress`] (bars and log lines), [`ratelimit`] (logging of
//!    repeated failures): leaves.
//! 2. [`format`] (the on-store format: data objects, manifest pages, index,
//!    block arithmetic) and [`store`] (file://, s3://, memory://, with its
//!    own options).
//! 3. [`cache`] (memory tier + disk tier, verified reads), [`trace`] (the
//!    trace format, recording, import, classification, plots), [`snapshot`] (an
//!    opened snapshot: lookup, decode, verify), [`metrics`] (counters,
//!    histograms, the mount's stats as one type, Prometheus text, the HTTP
//!    endpoint).
//! 4. [`predict`] (the hint model, learning it from traces, and the rule
//!    that turns it into blocks to prefetch), [`fetch`]
//!    (cache-or-store block fetches, shared and coalesced), [`create`]
//!    (volume → blocks → objects → manifest → index), [`catalog`] (list,
//!    inspect, delete, gc).
//! 5. [`prefetch`]: the daemon (intake, decisions, scheduler, accounting,
//!    control loop).
//! 6. [`fs`]: the FUSE filesystems (snapshot mount, monitor) and the mount's
//!    lifecycle.
//! 7. [`config`]: `snapshots.yaml`, composing the options each module owns.
//! 8. [`cli`]: one file per command, each a thin map from arguments to one
//!    library call and its printed result.

pub mod cache;
pub mod catalog;
pub mod cli;
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
pub mod ratelimit;
pub mod snapshot;
pub mod store;
pub mod trace;
pub mod units;
