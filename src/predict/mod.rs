//! The predictive manifest index: prefetch hints, successors and the warm-up
//! list, learned from recorded sessions (traces).
//!
//! Definitions (docs/design.md, "Prefetch hints"), for a group g and a window W:
//! - an **episode** of g starts at a read that touches g when no episode of
//!   g is open, and covers the W after it; a read of g after that window
//!   starts the next episode;
//! - `hint_W(g)` = mean over all episodes (all sessions) of the fraction of
//!   g's *stored* blocks read within the episode: the expected precision of
//!   prefetching the rest of g when it is touched. Holes are not blocks to
//!   read and do not count; writes are not reads and are ignored;
//! - successor h of g with strength p = the expected fraction of h's stored
//!   blocks read within W after g is touched (averaged over g's episodes):
//!   the probability that h follows, weighted by how much of h is then
//!   read. Like a hint it is the expected precision of prefetching h, so
//!   one threshold serves both; a plain "h is read at all" probability would
//!   make every group a likely successor of every other in a short random
//!   session. Kept when p ≥ [`MIN_SUCCESSOR_P`], the [`MAX_SUCCESSORS`]
//!   strongest;
//! - the **warm-up list** = the *blocks* first read within [`WARMUP_WINDOW`]
//!   of a session's start in more than [`WARMUP_SHARE`] of the sessions,
//!   listed by group, groups ordered by their median first-read time.
//!   Block-granular because a start-up reads scattered small files (whole
//!   groups would mostly be waste). Only when sessions repeat their early
//!   blocks (cross-session precision ≥ [`WARMUP_MIN_PRECISION`]): random
//!   workloads overlap by chance alone and warm up nothing.
//!
//! Version 3 of the index makes each of these finer (see [`model`] and
//! [`warmup`] for the reasons, `bench/hints_varied.sh` for the measurements):
//! - a hint and each successor carry a **block mask**: per block, the
//!   probability it is read (k of n episodes: k/(n+1)), so prefetch takes
//!   the likely blocks, not the group; the hint is the mask's mean;
//! - **entry masks**: the mask of the episodes that start at a given block
//!   of the group (the file opened says what follows), and **contexts**:
//!   successor lists that apply after a given group was read (history: the
//!   last [`DEFAULT_HISTORY`] distinct groups);
//! - the warm-up is a **core** plus a set per **workload group** of
//!   sessions, fetched once a session's first reads match its signature;
//! - a session teaches only when it overlaps some other session beyond
//!   chance (`model::patterned`): random readers teach nothing.
//!
//! Version 4 adds what sessions say of the filesystem's directories
//! ([`directory`]): per parent directory, how much of a child a session
//! reads once it reads some of it, so a walk into a directory no session
//! read brings that directory's files.
//!
//! Learning is offline and streaming per session: the reads of one session
//! (at most a few million) are held while it is processed, one session at a
//! time; the counters are per group.
//!
//! Layout: [`session`] turns a trace into the stored blocks a session read;
//! [`directory`] learns and applies directory affinities;
//! [`model`] is the learning itself, pure (sessions in, index out: testable
//! without a store); [`evaluate`] replays a held-out session against an
//! index; [`io`] connects them to snapshots and the store (reading stored
//! traces, committing a learned index).

pub mod directory;
pub mod evaluate;
pub mod io;
pub mod model;
pub mod rule;
pub mod session;
pub mod timeline;
pub mod warmup;

use std::time::Duration;

pub use io::{
    commit, evaluate_trace, learn_from, locate_start, plot_trace, store_sessions, stored_blocks,
    LearnReport, LearnRequest, DEFAULT_MAX_SESSIONS,
};
pub use model::{learn, learn_with, parse_windows, remaining_precision, LearnOptions, Recent};
pub use session::{load_session, Session, StoredBlocks};

/// Successors less likely than this are not worth a prefetch at any
/// sensible threshold, and would only grow the index.
pub const MIN_SUCCESSOR_P: f32 = 0.1;
/// Successors kept per group and window.
pub const MAX_SUCCESSORS: usize = 8;
/// Distinct groups read before an episode that a context looks at: the
/// value `bench/hints_varied.sh` measured best (docs/benchmarks.md,
/// "history length"): 0 lets a shared group bring every workload's
/// followers, longer histories match contexts that no longer matter.
pub const DEFAULT_HISTORY: u8 = 2;
/// A context is kept only when it changes some successor's strength by at
/// least this much (else the plain list says the same).
pub const CONTEXT_GAIN: f32 = 0.25;
/// Episodes a context needs: one is an event, not a pattern (a random
/// reader would learn a context from every read).
pub const MIN_CONTEXT_EPISODES: u64 = 2;
/// A session is learned from when its overlap with some other session goes
/// at least this far from chance towards identical (see
/// `model::patterned`): variants of one program start score 0.5–0.9,
/// random readers 0 ± 0.05.
pub const MATE_SCORE: f64 = 0.25;
/// Other sessions compared with each, at most (the test is quadratic).
pub const MATE_CANDIDATES: usize = 64;
/// Contexts kept per group and window, the most seen first.
pub const MAX_CONTEXTS: usize = 8;
/// Entry masks kept per group and window, the most seen first: a group of
/// 16 blocks holds at most a few files that sessions open.
pub const MAX_ENTRY_MASKS: usize = 8;
/// A successor scan stops after this many distinct groups or this many
/// touches, which bounds learning on long dense windows.
pub(crate) const SCAN_GROUPS: usize = 64;
pub(crate) const SCAN_TOUCHES: usize = 100_000;
/// "The first seconds of a session": what a boot or a service start reads.
pub const WARMUP_WINDOW: Duration = Duration::from_secs(10);
/// Early reads must repeat across sessions with at least this precision
/// (see `early_reads_repeat`): the same bar as a hint at the default
/// threshold.
pub const WARMUP_MIN_PRECISION: f64 = 0.5;
/// A block is warmed up when more than this share of the sessions read it
/// early (a strict majority: with two sessions, both). "At least half"
/// would let one of two sessions decide, and a random session's blocks
/// would all be warmed up.
pub const WARMUP_SHARE: f64 = 0.5;
