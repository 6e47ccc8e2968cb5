//! `gatevault copy`: copies snapshots from a source repository (`--from-repo`) into the destination
//! (`--to-repo`, or `-r/--repo` as in restic), re-encrypted under the destination's keys
//! (see `crate::copy`). The destination is the repository whose audit log records the command.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{exit, print_json, Bar, FilterArgs, Global, SecretOptions};
use crate::copy::{copy_with_progress, CopyOptions, CopyReport};
use crate::error::Error;
use crate::repo::Repository;
use crate::util::bytes;

#[derive(Args, Debug)]
pub(crate) struct CopyArgs {
    /// Snapshots to copy: ids, unique id prefixes or `latest` (default: every snapshot passing the
    /// filters).
    snapshots: Vec<String>,
    /// The source repository.
    #[arg(long, env = "GATEVAULT_FROM_REPOSITORY", value_name = "LOCATION")]
    from_repo: Option<String>,
    /// The destination repository (default: -r/--repo); opened with the global credentials and -o
    /// options.
    #[arg(long, value_name = "LOCATION")]
    to_repo: Option<String>,
    /// File holding the source repository's password (first line).
    #[arg(long, env = "GATEVAULT_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Command printing the source repository's password.
    #[arg(long, env = "GATEVAULT_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    from_password_command: Option<String>,
    /// Key file of the source repository.
    #[arg(long, env = "GATEVAULT_FROM_KEY_FILE", value_name = "FILE")]
    from_key_file: Option<PathBuf>,
    /// Backend option KEY=VALUE of the source repository (-o applies to the destination); repeat for
    /// several.
    #[arg(long = "from-option", value_name = "KEY=VALUE")]
    from_options: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only show what would be copied; write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

impl CopyArgs {
    fn source_secrets(&self) -> SecretOptions<'_> {
        SecretOptions {
            password_file: self.from_password_file.as_deref(),
            password_command: self.from_password_command.as_deref(),
            key_file: self.from_key_file.as_deref(),
            password_env: "GATEVAULT_FROM_PASSWORD",
            what: "source repository",
            missing: "no password or key file for the source repository: use --from-key-file, --from-password-file, --from-password-command or GATEVAULT_FROM_PASSWORD (or run on a terminal to be asked)",
        }
    }
}

pub(crate) fn run(g: &Global, a: CopyArgs) -> anyhow::Result<u8> {
    let to = match (&a.to_repo, &g.repo) {
        (Some(t), Some(r)) if t != r => anyhow::bail!(Error::InvalidInput(format!(
            "two destinations: --to-repo {t} and -r/--repo {r}; give one (-r is the destination of copy)"
        ))),
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => anyhow::bail!(Error::InvalidInput(
            "no destination repository: use --to-repo or -r/--repo".into()
        )),
    };
    let from = a.from_repo.clone().ok_or_else(|| {
        Error::InvalidInput(
            "no source repository: use --from-repo or set GATEVAULT_FROM_REPOSITORY".into(),
        )
    })?;
    // The destination first: it is the repository whose audit log records the command.
    let dst_global = Global {
        repo: Some(to.clone()),
        ..g.clone()
    };
    // `--to-repo config:NAME` names a configured repository (docs/profiles.md).
    let dst_global = dst_global.resolved()?;
    let dst = dst_global
        .open()
        .with_context(|| format!("opening the destination repository {to}"))?;
    let src = open_source(g, &a, &from)?;
    let opts = CopyOptions {
        filter: a.filter.filter(),
        ids: a.snapshots.clone(),
        dry_run: a.dry_run,
    };
    let report = copy_with_progress(&src, &dst, &opts, &Bar::new(g, "copy"))
        .with_context(|| format!("copying from {from} to {to}"))?;
    if !a.dry_run {
        g.figures.bytes_added(report.bytes_added);
        g.audit.note(serde_json::json!({"copy": {
            "from": report.from,
            "copied": report.copied,
            "already_present": report.already_present.len(),
            "blobs_copied": report.blobs_copied,
            "bytes_added": report.bytes_added,
        }}));
    }
    if g.json {
        print_json(&report)?;
    } else if !g.quiet {
        print_report(&report);
    }
    Ok(exit::OK)
}

/// Opens the source with the `--from-*` credentials and options; its backend is not wrapped for the
/// audit log, which only records what the command changes (the source is only read).
fn open_source(g: &Global, a: &CopyArgs, from: &str) -> anyhow::Result<Repository> {
    if let Some(name) = from.strip_prefix(crate::profile::CONFIG_LOCATION_PREFIX) {
        // A configured repository, with its own options and credentials; read only, so its session
        // records nothing.
        let config = g.load_config()?;
        let rc = config.repository(name)?;
        let sg = g.for_repository(rc, vec![], false, Default::default());
        return sg
            .open()
            .with_context(|| format!("opening the source repository {from}"));
    }
    let opts = crate::backend::BackendOptions::parse(&a.from_options)?;
    let backend = crate::backend::open(from, &opts)
        .with_context(|| format!("opening the source repository {from}"))?;
    let creds = a.source_secrets().credentials()?;
    Repository::open(backend, &creds, g.cache_dir())
        .with_context(|| format!("opening the source repository {from}"))
}

fn print_report(r: &CopyReport) {
    for c in &r.already_present {
        println!(
            "snapshot {} already present as {}",
            c.source.short(),
            c.target.short()
        );
    }
    for c in &r.copied {
        println!(
            "snapshot {} copied as {}",
            c.source.short(),
            c.target.short()
        );
    }
    if r.dry_run {
        for id in &r.would_copy {
            println!("would copy snapshot {}", id.short());
        }
        println!(
            "would copy {} snapshots ({} already present), {} blobs ({} before compression), {} present",
            r.would_copy.len(),
            r.already_present.len(),
            r.blobs_copied,
            bytes(r.data_added),
            r.blobs_present
        );
    } else {
        println!(
            "copied {} snapshots ({} already present), {} blobs copied, {} present, {} added",
            r.copied.len(),
            r.already_present.len(),
            r.blobs_copied,
            r.blobs_present,
            bytes(r.bytes_added)
        );
    }
}
