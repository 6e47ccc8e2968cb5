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
}

pub(crate) fn run(g: &Global, c: RepairCommand) -> anyhow::Result<u8> {
    let RepairCommand::Index { read_all_packs } = c;
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
