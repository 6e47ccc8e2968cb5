//! `gatevault ls`.

use clap::Args;

use super::{exit, FilterArgs, Global};
use crate::format::NodeType;

#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// Snapshot id (prefix) or `latest`.
    snapshot: String,
    /// Only entries at or below this path.
    path: Option<String>,
    /// Show mode, size and time.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) fn run(g: &Global, a: LsArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let (id, snap) = repo.warming_index(|| {
        crate::select::resolve(&repo, Some(&a.snapshot), &a.filter.filter(), None)
    })?;
    let prefix = a
        .path
        .as_deref()
        .map(|p| format!("/{}", p.trim_matches('/')));
    if !g.json {
        println!(
            "snapshot {} of {:?} at {}:",
            id.short(),
            snap.paths,
            snap.time
        );
    }
    crate::walk::walk(&repo, &snap.tree, &mut |path, n| {
        let under = match &prefix {
            None => true,
            Some(p) => path == p || path.starts_with(&format!("{p}/")),
        };
        let above = prefix
            .as_ref()
            .is_some_and(|p| p.starts_with(&format!("{path}/")));
        if under {
            if g.json {
                let t = format!("{:?}", n.node_type).to_lowercase();
                println!(
                    "{}",
                    serde_json::json!({"path": path, "name": n.name, "type": t, "size": n.size, "mode": n.mode, "mtime_ns": n.mtime_ns})
                );
            } else if a.long {
                let kind = match n.node_type {
                    NodeType::Dir => 'd',
                    NodeType::Symlink => 'l',
                    NodeType::File => '-',
                };
                let t = chrono::DateTime::from_timestamp_nanos(n.mtime_ns)
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S");
                println!("{kind}{:04o} {:>12} {t} {path}", n.mode, n.size);
            } else {
                println!("{path}");
            }
        }
        Ok(under || above)
    })?;
    Ok(exit::OK)
}
