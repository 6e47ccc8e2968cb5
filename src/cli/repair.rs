//! `gatevault repair`.

use clap::Subcommand;

use super::{exit, print_json, Global};

#[derive(Subcommand, Debug)]
pub(crate) enum RepairCommand {
    /// Rebuild the index files from the pack headers.
    Index {
        /// Read every pack's header, not only those no readable index lists.
        #[arg(long)]
        read_all_packs: bool,
    },
    /// Rewrite snapshots that need missing or damaged blobs, leaving out (and naming) the files and
    /// folders that cannot be read; run `repair index` first.
    Snapshots {
        /// Remove each damaged original once its repaired copy is stored.
        #[arg(long)]
        forget: bool,
        /// Only report what would be repaired and lost.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn run(g: &Global, c: RepairCommand) -> anyhow::Result<u8> {
    let read_all_packs = match c {
        RepairCommand::Index { read_all_packs } => read_all_packs,
        RepairCommand::Snapshots { forget, dry_run } => return snapshots(g, forget, dry_run),
    };
    let repo = g.open()?;
    let r = crate::repair::repair_index(&repo, read_all_packs)?;
    if g.json {
        print_json(&r)?;
    } else {
        for d in &r.damaged_packs {
            println!("damaged: {d}");
        }
        println!(
            "read {} pack header(s); new index lists {} packs with {} blobs; removed {} old index file(s)",
            r.packs_read, r.packs_indexed, r.blobs_indexed, r.removed_index_files
        );
        if !r.damaged_packs.is_empty() {
            println!("kept {} blob(s) of damaged packs that still authenticate; the rest are lost from the index, and `gatevault check` names the snapshots that need them", r.salvaged_blobs);
        }
    }
    Ok(if r.damaged_packs.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

fn snapshots(g: &Global, forget: bool, dry_run: bool) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let opts = crate::repair::RepairSnapshotsOptions { forget, dry_run };
    let r = crate::repair::repair_snapshots(&repo, opts)?;
    if g.json {
        print_json(&r)?;
    } else if !g.quiet {
        for u in &r.unreadable {
            println!("unreadable, nothing recovered: {u}");
        }
        for s in &r.repaired {
            let what = match (s.new, dry_run) {
                (_, true) => "would be repaired".to_string(),
                (Some(n), _) => format!("repaired as {}", n.short()),
                (None, _) => "nothing readable, no copy written".to_string(),
            };
            let gone = if s.forgotten {
                "; original removed"
            } else {
                ""
            };
            println!(
                "snapshot {} ({}) {what}{gone}; lost {} path(s):",
                s.original.short(),
                s.time,
                s.lost.len()
            );
            for p in &s.lost {
                println!("  {p}");
            }
        }
        println!(
            "{} snapshot(s): {} intact, {} {}, {} unreadable",
            r.snapshots,
            r.intact,
            r.repaired.len(),
            if dry_run { "to repair" } else { "repaired" },
            r.unreadable.len()
        );
        if !r.repaired.is_empty() && !forget && !dry_run {
            println!("the damaged originals are kept: remove them with `gatevault forget ID` (or run again with --forget)");
        }
    }
    Ok(if r.unreadable.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}
