//! `gatevault stats`.

use clap::Args;

use super::{exit, print_json, Global};
use crate::util::bytes;

#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    /// Only these snapshots (id prefixes or `latest`); default all.
    snapshots: Vec<String>,
}

pub(crate) fn run(g: &Global, a: StatsArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let mut ids = Vec::new();
    for s in &a.snapshots {
        ids.push(crate::select::resolve(&repo, Some(s), &Default::default(), None)?.0);
    }
    let st = crate::stats::stats(&repo, &ids)?;
    if g.json {
        print_json(&st)?;
    } else {
        println!("Snapshots:          {}", st.snapshots);
        println!("Files (all snaps):  {}", st.total_files);
        println!("Logical size:       {}", bytes(st.logical_size));
        println!(
            "Unique data:        {} in {} blobs",
            bytes(st.unique_size),
            st.unique_blobs
        );
        println!(
            "Stored size:        {} in {} packs",
            bytes(st.stored_size),
            st.packs
        );
        println!("Dedup ratio:        {:.2}x", st.dedup_ratio);
        println!("Compression ratio:  {:.2}x", st.compression_ratio);
    }
    Ok(exit::OK)
}
