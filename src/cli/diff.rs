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
}

pub(crate) fn run(g: &Global, a: DiffArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let (ia, sa) = crate::select::resolve(&repo, Some(&a.first), &Default::default(), None)?;
    let (ib, sb) = crate::select::resolve(&repo, Some(&a.second), &Default::default(), None)?;
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
