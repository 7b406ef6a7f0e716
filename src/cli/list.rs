//! `snapahead list [--json]`: [`crate::catalog::list`]; a snapshot whose
//! index cannot be read is named on stderr and makes the exit non-zero,
//! the others are still listed.

use std::process::ExitCode;

use bytesize::ByteSize;
use serde::Serialize;

use super::{fmt_time, Ctx};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    volume_size: u64,
    block_size: u32,
    stored_bytes: u64,
    parent: Option<String>,
    created: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut bad = false;
    for (name, ix) in crate::catalog::list(&ctx.store()?).await? {
        match ix {
            Ok(ix) => {
                let h = &ix.header;
                rows.push(Row {
                    name: name.to_string(),
                    volume_size: h.volume_size,
                    block_size: h.block_size,
                    stored_bytes: h.stored_bytes,
                    parent: h.parent.as_ref().map(|p| p.0.to_string()),
                    created: fmt_time(h.created_ms),
                });
            }
            Err(e) => {
                bad = true;
                eprintln!("warning: snapshot {:?}: {e:#}", name.as_str());
            }
        }
    }
    if a.json {
        out!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        out!(
            "{:<24} {:>12} {:>10} {:>12} {:<16} CREATED",
            "NAME",
            "SIZE",
            "BLOCK",
            "STORED",
            "PARENT"
        );
        for r in &rows {
            out!(
                "{:<24} {:>12} {:>10} {:>12} {:<16} {}",
                r.name,
                ByteSize(r.volume_size).to_string(),
                ByteSize(r.block_size as u64).to_string(),
                ByteSize(r.stored_bytes).to_string(),
                r.parent.as_deref().unwrap_or("-"),
                r.created
            );
        }
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
