//! `gatevault restore`.

use std::path::PathBuf;

use clap::Args;

use super::{exit, print_json, Bar, FilterArgs, Global};
use crate::restore::{restore, RestoreOptions};

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// Snapshot id (prefix) or `latest` (default with --at).
    snapshot: Option<String>,
    /// Folder to restore into.
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching this glob (or below a match); repeat for several.
    #[arg(long)]
    include: Vec<String>,
    /// Skip paths matching this glob (or below a match); repeat for several.
    #[arg(long)]
    exclude: Vec<String>,
    /// The newest snapshot at or before this time (RFC 3339 or 'YYYY-MM-DD HH:MM:SS' local).
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(crate) fn run(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    if a.snapshot.is_none() && a.at.is_none() {
        anyhow::bail!(crate::Error::InvalidInput(
            "name a snapshot (an id or `latest`) or give --at TIME".into()
        ));
    }
    let repo = g.open()?;
    let at = a.at.as_deref().map(crate::select::parse_time).transpose()?;
    let (id, snap) = crate::select::resolve(&repo, a.snapshot.as_deref(), &a.filter.filter(), at)?;
    if !g.quiet && !g.json {
        println!(
            "restoring snapshot {} of {:?} at {} to {}",
            id.short(),
            snap.paths,
            snap.time,
            a.target.display()
        );
    }
    let opts = RestoreOptions {
        target: a.target,
        include: a.include,
        exclude: a.exclude,
    };
    let bar = Bar::new(g, "restore");
    let r = restore(&repo, &snap, &opts, &bar)?;
    for (path, why) in &r.errors {
        eprintln!("error: {path}: {why}");
    }
    if g.json {
        print_json(
            &serde_json::json!({"message_type": "summary", "snapshot_id": id, "files_restored": r.files, "dirs": r.dirs, "bytes_restored": r.bytes, "errors": r.errors.len()}),
        )?;
    } else if !g.quiet {
        println!(
            "restored {} files, {} folders, {}",
            r.files,
            r.dirs,
            crate::util::bytes(r.bytes)
        );
    }
    if r.errors.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!("{} file(s) could not be restored (listed above); run `gatevault check --read-data` for details", r.errors.len());
        Ok(exit::FAILURE)
    }
}
