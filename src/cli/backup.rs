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
    /// Record this time instead of now (RFC 3339, or 'YYYY-MM-DD HH:MM:SS' local time); for tests
    /// and imports of older backups, as restic's `--time`.
    #[arg(long, hide = true)]
    time: Option<String>,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Back up to this profile's primary repository (from the config file, replacing -r), then copy
    /// the new snapshot to each of its other repositories.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
}

/// Which gateway to capture (`backup --gateway`); credentials come from the environment, never from
/// here (see docs/gateways.md).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct GatewayArgs {
    /// Capture a gateway instead of files: kong, aws, caddy, nginx, haproxy or files.
    #[arg(long, value_name = "KIND")]
    pub(crate) gateway: Option<String>,
    /// The gateway's admin API or service endpoint.
    #[arg(long, value_name = "URL", requires = "gateway")]
    pub(crate) endpoint: Option<String>,
    /// Read this export or config file (a decK file, nginx.conf, a folder for `files`) instead of a
    /// live admin API.
    #[arg(long, value_name = "PATH", requires = "gateway")]
    pub(crate) file: Option<PathBuf>,
    /// Kong workspace.
    #[arg(long, requires = "gateway")]
    pub(crate) workspace: Option<String>,
    /// Only entities carrying this tag (Kong; repeat for several, all must match).
    #[arg(long = "select-tag", requires = "gateway")]
    pub(crate) select_tags: Vec<String>,
    /// Cloud region (AWS), instead of the configured one.
    #[arg(long, requires = "gateway")]
    pub(crate) region: Option<String>,
    /// Capture secret values the gateway only gives on request (AWS API key values).
    #[arg(long, requires = "gateway")]
    pub(crate) include_secret_values: bool,
    /// Do not validate file-based configurations with the gateway's checker (`nginx -t`).
    #[arg(long, requires = "gateway")]
    pub(crate) no_validate: bool,
}

impl GatewayArgs {
    pub(crate) fn options(&self, kind: &str) -> crate::gateway::GatewayOptions {
        crate::gateway::GatewayOptions {
            kind: kind.to_string(),
            endpoint: self.endpoint.clone(),
            file: self.file.clone(),
            workspace: self.workspace.clone(),
            select_tags: self.select_tags.clone(),
            region: self.region.clone(),
            include_secret_values: self.include_secret_values,
            no_validate: self.no_validate,
        }
    }
}

pub(crate) fn run(g: &Global, a: BackupArgs) -> anyhow::Result<u8> {
    match a.profile.clone() {
        Some(p) => super::profiles::backup_profile(g, &p, a),
        None => Ok(run_one(g, a, true)?.0),
    }
}

/// What one backup made: exit code, the repository and the snapshot's id, and the JSON summary.
pub(crate) type BackupDone = (u8, crate::repo::Repository, SnapshotId, serde_json::Value);

/// Backs up to the repository of `g`; prints the summary (as JSON too when `print_summary_json`).
pub(crate) fn run_one(
    g: &Global,
    a: BackupArgs,
    print_summary_json: bool,
) -> anyhow::Result<BackupDone> {
    if a.stdin && !a.paths.is_empty() {
        anyhow::bail!(crate::Error::InvalidInput("--stdin takes no paths".into()));
    }
    if a.gateway.gateway.is_some() && (a.stdin || !a.paths.is_empty()) {
        anyhow::bail!(crate::Error::InvalidInput(
            "--gateway takes no paths and no --stdin".into()
        ));
    }
    // Capture before opening the repository: an unreachable gateway should not wait for a lock.
    let capture = match &a.gateway.gateway {
        Some(kind) => Some(crate::gateway::capture(&a.gateway.options(kind))?),
        None => None,
    };
    let time = a
        .time
        .as_deref()
        .map(crate::select::parse_time)
        .transpose()?;
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
        time,
        documents: capture.as_ref().map(|c| c.documents()).transpose()?,
        source: capture.as_ref().map(|c| c.source.clone()),
    };
    if let (Some(c), false) = (&capture, g.quiet || g.json) {
        println!(
            "captured {} entities from {}",
            c.entities.len(),
            c.source.describe()
        );
    }
    let mut stdin = std::io::stdin().lock();
    let input: Option<&mut dyn std::io::Read> = if a.stdin { Some(&mut stdin) } else { None };
    let bar = Bar::new(g, "backup");
    let r = backup(&repo, opts, input, &bar)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let s = &r.snapshot.summary;
    g.figures
        .backup(s.total_bytes, s.data_added, s.data_added_packed);
    let summary = serde_json::json!({
        "message_type": "summary",
        "snapshot_id": r.id,
        "files_new": s.files_new, "files_changed": s.files_changed, "files_unchanged": s.files_unchanged,
        "files_failed": s.files_failed, "dirs": s.dirs, "blobs_added": s.blobs_added,
        "data_added": s.data_added, "data_added_packed": s.data_added_packed,
        "total_files_processed": s.total_files, "total_bytes_processed": s.total_bytes,
        "backup_start": s.backup_start, "backup_end": s.backup_end,
    });
    if g.json {
        if print_summary_json {
            print_json(&summary)?;
        }
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
    let code = if r.warnings.is_empty() {
        exit::OK
    } else {
        eprintln!(
            "warning: {} file(s) could not be read; snapshot {} is partial",
            r.warnings.len(),
            r.id.short()
        );
        exit::PARTIAL
    };
    Ok((code, repo, r.id, summary))
}
