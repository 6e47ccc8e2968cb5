//! `gatevault diff`.

use clap::Args;

use super::{exit, print_json, Global};
use crate::diff::Change;

#[derive(Args, Debug)]
pub(crate) struct DiffArgs {
    /// First snapshot (id prefix or `latest`).
    first: String,
    /// Second snapshot.
    second: String,
    /// Also list files whose metadata alone changed.
    #[arg(long)]
    metadata: bool,
    /// Compare gateway snapshots file by file instead of entity by entity.
    #[arg(long)]
    files: bool,
    /// Show secret values in entity diffs instead of masking them.
    #[arg(long)]
    show_secrets: bool,
}

/// A value for one line of output: JSON, cut short past 80 characters (`--json` shows it whole).
pub(crate) fn show(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => {
            let s = v.to_string();
            match s.char_indices().nth(80) {
                Some((i, _)) => format!("{}... ({} characters)", &s[..i], s.chars().count()),
                None => s,
            }
        }
    }
}

/// Prints the field changes of one entity, indented.
pub(crate) fn print_fields(fields: &[crate::gateway::stored::FieldChange]) {
    for f in fields {
        println!("      {}: {} -> {}", f.pointer, show(&f.old), show(&f.new));
    }
}

fn entity_diff(
    g: &Global,
    repo: &crate::repo::Repository,
    (ia, sa): (&crate::id::SnapshotId, &crate::format::Snapshot),
    (ib, sb): (&crate::id::SnapshotId, &crate::format::Snapshot),
    show_secrets: bool,
) -> anyhow::Result<u8> {
    let changes = crate::gateway::stored::diff(repo, sa, sb, show_secrets)?;
    let count = |c: Change| {
        changes
            .iter()
            .filter(|e| e.change == c && e.kind != "raw")
            .count()
    };
    let (added, removed, changed) = (
        count(Change::Added),
        count(Change::Removed),
        count(Change::Modified),
    );
    if g.json {
        print_json(&serde_json::json!({
            "first": ia, "second": ib, "entities": changes,
            "stats": {"added": added, "removed": removed, "changed": changed},
        }))?;
        return Ok(exit::OK);
    }
    println!(
        "comparing snapshot {} to {} entity by entity:",
        ia.short(),
        ib.short()
    );
    for e in &changes {
        let sign = match e.change {
            Change::Added => "+",
            Change::Removed => "-",
            _ => "~",
        };
        println!("{sign} {:<22} {:<40} {}", e.kind, e.key, e.path);
        print_fields(&e.fields);
        if let Some((old, new)) = e.lines {
            println!("      {old} line(s) removed, {new} added");
        }
    }
    println!();
    println!("Entities:  {added} added, {removed} removed, {changed} changed");
    Ok(exit::OK)
}

pub(crate) fn run(g: &Global, a: DiffArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let ((ia, sa), (ib, sb)) = repo.warming_index(|| -> crate::Result<_> {
        let none = Default::default();
        Ok((
            crate::select::resolve(&repo, Some(&a.first), &none, None)?,
            crate::select::resolve(&repo, Some(&a.second), &none, None)?,
        ))
    })?;
    if !a.files && sa.source.is_some() && sb.source.is_some() {
        return entity_diff(g, &repo, (&ia, &sa), (&ib, &sb), a.show_secrets);
    }
    let (entries, st) = crate::diff::diff(&repo, &sa.tree, &sb.tree)?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| a.metadata || e.change != Change::Metadata)
        .collect();
    if g.json {
        print_json(
            &serde_json::json!({"first": ia, "second": ib, "changes": entries, "stats": st}),
        )?;
        return Ok(exit::OK);
    }
    println!("comparing snapshot {} to {}:", ia.short(), ib.short());
    for e in &entries {
        let sign = match e.change {
            Change::Added => "+",
            Change::Removed => "-",
            Change::Modified => "M",
            Change::Metadata => "U",
        };
        let size = match (e.old_size, e.new_size) {
            (Some(o), Some(n)) => format!("  ({o} -> {n} bytes)"),
            (None, Some(n)) => format!("  ({n} bytes)"),
            (Some(o), None) => format!("  ({o} bytes)"),
            _ => String::new(),
        };
        println!("{sign}    {}{size}", e.path);
    }
    println!();
    println!(
        "Files:  {} new, {} removed, {} changed",
        st.added, st.removed, st.modified
    );
    println!(
        "Bytes:  {} added, {} removed",
        crate::util::bytes(st.bytes_added),
        crate::util::bytes(st.bytes_removed)
    );
    Ok(exit::OK)
}
