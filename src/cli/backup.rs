//! `gatevault backup`.

use std::path::PathBuf;

use clap::Args;

use super::{exit, print_json, Bar, Global};
use crate::backup::{backup, BackupOptions};
use crate::id::SnapshotId;

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// Files and folders to back up.
    paths: Vec<PathBuf>,
    /// Tag the snapshot (KEY=VALUE, e.g. Environment=prod); repeat for several.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record (default: this host).
    #[arg(long)]
    host: Option<String>,
    /// Version label.
    #[arg(long)]
    label: Option<String>,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Read every file, even those the parent snapshot shows unchanged.
    #[arg(long)]
    force: bool,
    /// Compare against this snapshot (default: the latest of this host and these paths).
    #[arg(long)]
    parent: Option<String>,
    /// Back up standard input.
    #[arg(long)]
    stdin: bool,
    /// File name for standard input in the snapshot.
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
}

pub(crate) fn run(g: &Global, a: BackupArgs) -> anyhow::Result<u8> {
    if a.stdin && !a.paths.is_empty() {
        anyhow::bail!(crate::Error::InvalidInput("--stdin takes no paths".into()));
    }
    let repo = g.open()?;
    let parent = match &a.parent {
        Some(p) => Some(repo.resolve_snapshot_prefix(p)?),
        None => None,
    };
    let opts = BackupOptions {
        paths: a.paths,
        stdin_filename: a.stdin.then_some(a.stdin_filename),
        tags: crate::select::parse_tags(&a.tags)?,
        host: a.host,
        label: a.label,
        description: a.description,
        force: a.force,
        parent: parent.map(|p: SnapshotId| p),
        time: None,
        ..BackupOptions::default()
    };
    let mut stdin = std::io::stdin().lock();
    let input: Option<&mut dyn std::io::Read> = if a.stdin { Some(&mut stdin) } else { None };
    let bar = Bar::new(g, "backup");
    let r = backup(&repo, opts, input, &bar)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let s = &r.snapshot.summary;
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": r.id,
            "files_new": s.files_new, "files_changed": s.files_changed, "files_unchanged": s.files_unchanged,
            "files_failed": s.files_failed, "dirs": s.dirs, "blobs_added": s.blobs_added,
            "data_added": s.data_added, "data_added_packed": s.data_added_packed,
            "total_files_processed": s.total_files, "total_bytes_processed": s.total_bytes,
            "backup_start": s.backup_start, "backup_end": s.backup_end,
        }))?;
    } else if !g.quiet {
        println!(
            "Files:       {} new, {} changed, {} unchanged",
            s.files_new, s.files_changed, s.files_unchanged
        );
        println!("Dirs:        {}", s.dirs);
        println!(
            "Added to the repository: {} ({} stored)",
            crate::util::bytes(s.data_added),
            crate::util::bytes(s.data_added_packed)
        );
        println!(
            "processed {} files, {}",
            s.total_files,
            crate::util::bytes(s.total_bytes)
        );
        println!("snapshot {} saved", r.id.short());
    }
    if r.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "warning: {} file(s) could not be read; snapshot {} is partial",
            r.warnings.len(),
            r.id.short()
        );
        Ok(exit::PARTIAL)
    }
}
