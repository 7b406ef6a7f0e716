//! `snapahead hints NAME`: [`crate::predict::learn_from`] (learn and
//! commit), or with `--evaluate` [`crate::predict::evaluate_trace`].

use std::path::PathBuf;
use std::process::ExitCode;

use bytesize::ByteSize;

use super::Ctx;
use crate::name::SnapshotName;
use crate::predict::LearnReport;

#[derive(clap::Args)]
pub struct Args {
    name: SnapshotName,
    /// Trace files to learn from (repeatable)
    #[arg(long = "trace")]
    traces: Vec<PathBuf>,
    /// Also learn from every trace stored under traces/<name>/ (and its parents'): all hosts' sessions
    #[arg(long)]
    from_store: bool,
    /// With --from-store: learn from at most N stored traces, the newest first (memory grows with
    /// the sessions held)
    #[arg(long, default_value_t = crate::predict::DEFAULT_MAX_SESSIONS, value_name = "N")]
    max_sessions: usize,
    /// Prefetch windows, e.g. 2s,10s [default: the index's]
    #[arg(long)]
    window: Option<String>,
    /// Distinct groups read before an episode that contexts look at (0: no contexts)
    #[arg(long, default_value_t = crate::predict::DEFAULT_HISTORY, value_name = "N",
          value_parser = clap::value_parser!(u8).range(0..=16))]
    history: u8,
    /// Learn the version-2 model (whole-group hints, no contexts, one warm-up list for every
    /// session), to compare against
    #[arg(long)]
    flat: bool,
    /// Replay this held-out trace against the current index instead of learning
    #[arg(long)]
    evaluate: Option<PathBuf>,
    /// Threshold for --evaluate: prefetch when hint or successor probability >= T
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// For --evaluate: replay without the warm-up list, to see what hints and successors
    /// alone predict (a session longer than the warm-up window relies on them)
    #[arg(long, requires = "evaluate")]
    no_warmup: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let Some(held_out) = a.evaluate else {
        let mut options = if a.flat {
            crate::predict::LearnOptions::flat()
        } else {
            crate::predict::LearnOptions::default()
        };
        if !a.flat {
            options.history = a.history;
        }
        let req = crate::predict::LearnRequest {
            traces: a.traces,
            from_store: a.from_store,
            max_sessions: a.max_sessions.max(1),
            windows: a.window,
            options,
        };
        let r = crate::predict::learn_from(&store, &a.name, &req).await?;
        print_learned(&a.name, &r)?;
        return Ok(ExitCode::SUCCESS);
    };
    let evals =
        crate::predict::evaluate_trace(&store, &a.name, &held_out, a.threshold, !a.no_warmup)
            .await?;
    if a.json {
        out!("{}", serde_json::to_string_pretty(&evals)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &evals {
        out!(
            "window {} ms, threshold {}: {} read",
            e.window_ms,
            e.threshold,
            ByteSize(e.read_bytes)
        );
        for (m, s) in [
            ("warm-up", &e.warmup),
            ("hint", &e.hint),
            ("successor", &e.successor),
            ("directory", &e.directory),
            ("overall", &e.overall),
        ] {
            out!(
                "  {m:<10} prefetched {:>10}  precision {:.3}  recall {:.3}",
                ByteSize(s.prefetched_bytes).to_string(),
                s.precision,
                s.recall
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a learning run produced, per window (shared with `create --trace`).
pub(super) fn print_learned(name: &SnapshotName, r: &LearnReport) -> anyhow::Result<()> {
    out!(
        "{name}: learned from {} session(s), {} block reads",
        r.sessions,
        r.block_reads
    );
    let ins = crate::catalog::inspect(&r.index, 0);
    for w in &ins.windows {
        out!(
            "  window {:>6} ms: {} of {} groups with hint >= 0.5, {} successors in {} groups",
            w.window_ms,
            w.groups_at_or_above
                .iter()
                .find(|(t, _)| *t == 0.5)
                .map_or(0, |x| x.1),
            ins.groups,
            w.successors_total,
            w.groups_with_successors
        );
    }
    let groups: Vec<String> = ins
        .workloads
        .iter()
        .map(|w| format!("{} sessions, {}", w.sessions, ByteSize(w.bytes)))
        .collect();
    out!(
        "  warm-up: core {} groups, {}; {} workload group(s){}{}",
        ins.warmup_groups,
        ByteSize(ins.warmup_bytes),
        groups.len(),
        if groups.is_empty() { "" } else { ": " },
        groups.join("; ")
    );
    Ok(())
}
