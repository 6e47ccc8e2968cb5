//! `gatevault dump`.

use std::io::Write;

use clap::Args;

use super::{exit, FilterArgs, Global};

#[derive(Args, Debug)]
pub(crate) struct DumpArgs {
    /// Snapshot id (prefix) or `latest`.
    snapshot: String,
    /// Path of the file inside the snapshot.
    file: String,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) fn run(g: &Global, a: DumpArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let (_, snap) = repo.warming_index(|| {
        crate::select::resolve(&repo, Some(&a.snapshot), &a.filter.filter(), None)
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let path = format!("/{}", a.file.trim_start_matches('/'));
    crate::restore::dump(&repo, &snap, &path, &mut out)?;
    out.flush()?;
    Ok(exit::OK)
}
