//! `gatevault log --entity PATH`.

use clap::Args;

use super::{exit, print_json, FilterArgs, Global};
use crate::diff::Change;

#[derive(Args, Debug)]
pub(crate) struct LogArgs {
    /// The entity's document path, e.g. kong/routes/orders-get (`.json` may be left out).
    #[arg(long)]
    entity: String,
    /// Show secret values in field changes instead of masking them.
    #[arg(long)]
    show_secrets: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) fn run(g: &Global, a: LogArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let snaps = crate::select::filtered(&repo, &a.filter.filter())?;
    let log = crate::gateway::stored::log(&repo, &snaps, &a.entity, a.show_secrets)?;
    if g.json {
        print_json(&serde_json::json!({"entity": a.entity, "history": log}))?;
        return Ok(exit::OK);
    }
    if log.is_empty() {
        eprintln!("{} is in no gateway snapshot", a.entity);
        return Ok(exit::FAILURE);
    }
    for e in &log {
        let what = match e.change {
            Change::Added => "added",
            Change::Removed => "removed",
            _ => "changed",
        };
        println!("{}  {}  {what}", e.snapshot.short(), e.time);
        super::diff::print_fields(&e.fields);
    }
    Ok(exit::OK)
}
