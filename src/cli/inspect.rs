//! `snapahead inspect NAME [--json]`: [`crate::catalog::inspect`] of the
//! snapshot's index.

use std::process::ExitCode;
use std::time::Duration;

use bytesize::ByteSize;

use super::{fmt_time, pct, Ctx};
use crate::catalog::InspectReport;
use crate::name::SnapshotName;
use crate::snapshot::Snapshot;

#[derive(clap::Args)]
pub struct Args {
    name: SnapshotName,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let snap = Snapshot::open(&ctx.store()?, &a.name).await?;
    let r = crate::catalog::inspect(snap.index(), snap.index().encode().len() as u64);
    if a.json {
        out!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print(&r)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print(r: &InspectReport) -> anyhow::Result<()> {
    out!("snapshot       {} (id {})", r.name, r.id);
    out!("format         version {}", r.format_version);
    out!("created        {}", fmt_time(r.created_ms));
    out!("parent         {}", r.parent.as_deref().unwrap_or("-"));
    out!(
        "volume size    {} ({} bytes)",
        ByteSize(r.volume_size),
        r.volume_size
    );
    out!(
        "block size     {}, {} blocks per group",
        ByteSize(r.block_size as u64),
        r.group_size
    );
    out!(
        "blocks         {} total, {} stored, {} zero ({:.1}% holes)",
        r.blocks,
        r.stored_blocks,
        r.zero_blocks,
        pct(r.zero_blocks, r.blocks)
    );
    out!(
        "stored         {} compressed for {} of data ({:.1}%); {} uploaded by its create",
        ByteSize(r.stored_bytes),
        ByteSize(r.logical_stored_bytes),
        pct(r.stored_bytes, r.logical_stored_bytes),
        ByteSize(r.uploaded_bytes)
    );
    out!(
        "index          {} groups, {} pages, {} bytes",
        r.groups,
        r.pages,
        r.index_bytes
    );
    for w in &r.windows {
        out!(
            "hints, window {}:",
            humantime::format_duration(Duration::from_millis(w.window_ms as u64))
        );
        let hist: Vec<String> = w
            .hint_histogram
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "[{:.1},{:.1}{}:{n}",
                    i as f32 / 10.0,
                    (i + 1) as f32 / 10.0,
                    if i == 9 { "]" } else { ")" }
                )
            })
            .collect();
        out!("  histogram    {}", hist.join(" "));
        let above: Vec<String> = w
            .groups_at_or_above
            .iter()
            .map(|(t, n)| format!(">={t}: {n}"))
            .collect();
        out!("  groups       {}", above.join(", "));
        out!(
            "  successors   {} groups have {} in all",
            w.groups_with_successors,
            w.successors_total
        );
        out!(
            "  block masks  {} groups; contexts {} (history {} groups)",
            w.groups_with_masks,
            w.contexts_total,
            r.history
        );
    }
    out!(
        "warm-up        core {} groups, {}; {} workload group(s)",
        r.warmup_groups,
        ByteSize(r.warmup_bytes),
        r.workloads.len()
    );
    for (i, w) in r.workloads.iter().enumerate() {
        out!(
            "  workload {i:<3} {} sessions, {} blocks in {} groups ({}), signature blocks {:?}",
            w.sessions,
            w.blocks,
            w.groups,
            ByteSize(w.bytes),
            w.signature
        );
    }
    if !r.probes.is_empty() {
        out!(
            "  probes       blocks {:?}, fetched with the core (each workload's first signature blocks)",
            r.probes
        );
    }
    match &r.prior {
        Some(p) => out!(
            "prior          {}: metadata {} blocks ({}), fetched at mount while there is no warm-up; {} multi-block files; {} directories, {} whose children sessions read whole (a miss in one brings it)",
            p.filesystem,
            p.metadata_blocks,
            ByteSize(p.metadata_bytes),
            p.files,
            p.directories,
            p.walked_parents
        ),
        None => out!("prior          none (no filesystem recognized)"),
    }
    out!(
        "located        {} blocks: what a mount fetches first, found in the index without a manifest page; {} of them ({} stored) carried inline, read with the index",
        r.located_blocks,
        r.inline_blocks,
        ByteSize(r.inline_bytes)
    );
    Ok(())
}
