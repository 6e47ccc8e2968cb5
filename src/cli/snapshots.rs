//! `gatevault snapshots`.

use std::io::Write;

use chrono::{Datelike, Timelike};
use clap::Args;

use super::{exit, print_json, FilterArgs, Global};

#[derive(Args, Debug)]
pub(crate) struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the newest N snapshots.
    #[arg(long)]
    latest: Option<usize>,
}

pub(crate) fn run(g: &Global, a: SnapshotsArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let mut list = crate::select::filtered(&repo, &a.filter.filter())?;
    if let Some(n) = a.latest {
        let skip = list.len().saturating_sub(n);
        list.drain(..skip);
    }
    if g.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| {
                let mut j = serde_json::to_value(s).unwrap_or_default();
                j["id"] = serde_json::json!(id);
                j["short_id"] = serde_json::json!(id.short());
                j
            })
            .collect();
        print_json(&v)?;
        return Ok(exit::OK);
    }
    // One write per screenful, not per line: 10,000 snapshots print in a few milliseconds.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{:<8}  {:<25}  {:<12}  {:<30}  {:<10}  Paths",
        "ID", "Time", "Host", "Tags", "Label"
    )?;
    writeln!(out, "{}", "-".repeat(110))?;
    for (id, s) in &list {
        // Written field by field: chrono's `format` parses its pattern on every call.
        let time = s
            .timestamp()
            .map(|t| {
                let t = t.with_timezone(&chrono::Local);
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    t.year(),
                    t.month(),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_else(|_| s.time.clone());
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        writeln!(
            out,
            "{:<8}  {:<25}  {:<12}  {:<30}  {:<10}  {}",
            id.short(),
            time,
            s.hostname,
            tags.join(","),
            s.label.clone().unwrap_or_default(),
            s.paths.join(" ")
        )?;
    }
    writeln!(out, "{}", "-".repeat(110))?;
    writeln!(out, "{} snapshots", list.len())?;
    out.flush()?;
    Ok(exit::OK)
}
