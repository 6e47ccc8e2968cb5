//! `gatevault restore`: files into a folder, or a gateway snapshot into a live gateway.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{exit, print_json, Bar, FilterArgs, Global};
use crate::recovery::{Report, Status};
use crate::restore::{restore, RestoreOptions};

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// Snapshot id (prefix) or `latest` (default with --at).
    snapshot: Option<String>,
    /// Folder to restore into.
    #[arg(
        short,
        long,
        required_unless_present = "to_gateway",
        conflicts_with = "to_gateway"
    )]
    target: Option<PathBuf>,
    /// Restore only paths matching this glob (or below a match); repeat for several.
    #[arg(long)]
    include: Vec<String>,
    /// Skip paths matching this glob (or below a match); repeat for several.
    #[arg(long)]
    exclude: Vec<String>,
    /// The newest snapshot at or before this time (RFC 3339 or 'YYYY-MM-DD HH:MM:SS' local).
    #[arg(long)]
    at: Option<String>,
    /// After restoring files, read them back and compare them with the snapshot.
    #[arg(long, conflicts_with = "to_gateway")]
    verify: bool,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    gateway: ToGatewayArgs,
}

/// The live gateway to restore into (`restore --to-gateway`, `rollback`, `drill`).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct TargetArgs {
    /// Restore into a live gateway of this kind (caddy, kong, aws) instead of a folder.
    #[arg(long, value_name = "KIND")]
    pub(crate) to_gateway: Option<String>,
    /// The gateway's admin API (default: the kind's usual local address).
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// Kong workspace to restore into.
    #[arg(long)]
    pub(crate) workspace: Option<String>,
    /// Cloud region to restore into (AWS).
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Only entities carrying this tag (Kong; as the snapshot was captured); repeat for several.
    #[arg(long = "select-tag")]
    pub(crate) select_tags: Vec<String>,
}

impl TargetArgs {
    pub(crate) fn gateway_options(&self, kind: &str) -> crate::gateway::GatewayOptions {
        crate::gateway::GatewayOptions {
            kind: kind.into(),
            endpoint: self.endpoint.clone(),
            workspace: self.workspace.clone(),
            region: self.region.clone(),
            select_tags: self.select_tags.clone(),
            include_secret_values: true,
            no_validate: true,
            ..Default::default()
        }
    }
}

/// Probes run after a restore, and where its report goes.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct AfterArgs {
    /// Run these probes (TOML) through the restored gateway as the last step.
    #[arg(long, value_name = "FILE", requires = "probe_base_url")]
    pub(crate) probes: Option<PathBuf>,
    /// Where the probes send their requests (the gateway's proxy listener).
    #[arg(long, value_name = "URL", requires = "probes")]
    pub(crate) probe_base_url: Option<String>,
    /// Folder for the report (Markdown and JSON).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) report_dir: PathBuf,
}

impl AfterArgs {
    pub(crate) fn probes(&self) -> Option<(PathBuf, String)> {
        self.probes.clone().zip(self.probe_base_url.clone())
    }
}

/// Where and how to restore a gateway snapshot (`restore --to-gateway`, `rollback`).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct ToGatewayArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    #[command(flatten)]
    pub(crate) after: AfterArgs,
    /// Only print the plan; exit 2 when the gateway differs from the snapshot, 0 when not.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Go on with an unfinished restore of this snapshot into this gateway (keeps its rollback point).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Show secret values in the plan.
    #[arg(long)]
    pub(crate) show_secrets: bool,
}

impl ToGatewayArgs {
    pub(crate) fn restore_options(&self, g: &Global) -> crate::recovery::RestoreOptions {
        crate::recovery::RestoreOptions {
            dry_run: self.dry_run,
            resume: self.resume,
            show_secrets: self.show_secrets,
            probes: self.after.probes(),
            journal_dir: journal_dir(g),
            rollback_tag: None,
            no_rollback_point: false,
        }
    }
}

/// Where restore journals live: `restores/` in the cache folder.
pub(crate) fn journal_dir(g: &Global) -> Option<PathBuf> {
    g.cache_dir().map(|d| d.join("restores"))
}

pub(crate) fn run(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    if a.snapshot.is_none() && a.at.is_none() {
        anyhow::bail!(crate::Error::InvalidInput(
            "name a snapshot (an id or `latest`) or give --at TIME".into()
        ));
    }
    let repo = g.open()?;
    let at = a.at.as_deref().map(crate::select::parse_time).transpose()?;
    // Into a gateway, `latest` and `--at` mean the newest backup, not a rollback point a restore
    // took (unless the filter asks for those by their BackupType tag).
    let filter = a.filter.filter();
    let skip_rollback_points = a.gateway.target.to_gateway.is_some()
        && !filter.tags.iter().any(|t| t.starts_with("BackupType"));
    let keep = |s: &crate::format::Snapshot| {
        !(skip_rollback_points && crate::recovery::is_rollback_point(s))
    };
    let (id, snap) = repo.warming_index(|| {
        crate::select::resolve_where(&repo, a.snapshot.as_deref(), &filter, at, &keep)
    })?;
    if let Some(kind) = &a.gateway.target.to_gateway {
        let target = crate::recovery::target(&a.gateway.target.gateway_options(kind))?;
        let opts = a.gateway.restore_options(g);
        let r = crate::recovery::restore(&repo, &id, &snap, target.as_ref(), &opts)?;
        return finish(g, &r, &a.gateway.after.report_dir, "restore");
    }
    let target = a
        .target
        .expect("clap requires --target without --to-gateway");
    if !g.quiet && !g.json {
        println!(
            "restoring snapshot {} of {:?} at {} to {}",
            id.short(),
            snap.paths,
            snap.time,
            target.display()
        );
    }
    let opts = RestoreOptions {
        target: target.clone(),
        include: a.include,
        exclude: a.exclude,
    };
    let bar = Bar::new(g, "restore");
    let mut r = restore(&repo, &snap, &opts, &bar)?;
    let mut verified = None;
    if a.verify {
        let bad = crate::restore::verify(&repo, &snap, &opts)?;
        verified = Some(r.files.saturating_sub(bad.len() as u64));
        r.errors.extend(bad);
    }
    for (path, why) in &r.errors {
        eprintln!("error: {path}: {why}");
    }
    if g.json {
        print_json(
            &serde_json::json!({"message_type": "summary", "snapshot_id": id, "files_restored": r.files, "dirs": r.dirs, "bytes_restored": r.bytes, "files_verified": verified, "errors": r.errors.len()}),
        )?;
    } else if !g.quiet {
        println!(
            "restored {} files, {} folders, {}",
            r.files,
            r.dirs,
            crate::util::bytes(r.bytes)
        );
        if let Some(v) = verified {
            println!("verified {v} files against the snapshot");
        }
    }
    if r.errors.is_empty() {
        Ok(exit::OK)
    } else {
        eprintln!("{} file(s) could not be restored or verified (listed above); run `gatevault check --read-data` for details", r.errors.len());
        Ok(exit::FAILURE)
    }
}

/// Prints a gateway restore's plan and outcome, writes its report, and gives its exit code: 0
/// success (or no drift in a dry run), 2 drift in a dry run, 3 partial, 1 failed.
pub(crate) fn finish(g: &Global, r: &Report, dir: &Path, prefix: &str) -> anyhow::Result<u8> {
    if g.json {
        print_json(r)?;
    } else if !g.quiet {
        print_plan(r);
    }
    if r.dry_run {
        return Ok(match (r.status, r.plan.is_empty()) {
            (Status::Failed, _) => {
                eprintln!("error: {}", r.error.as_deref().unwrap_or("failed"));
                exit::FAILURE
            }
            (_, true) => exit::OK,
            (_, false) => exit::USAGE,
        });
    }
    let (md, json) = r.write(dir, prefix)?;
    if !g.quiet && !g.json {
        println!(
            "{:?} in {:.3} s; report: {} and {}",
            r.status,
            r.total_ms as f64 / 1000.0,
            md.display(),
            json.display()
        );
    }
    Ok(match r.status {
        Status::Success => exit::OK,
        Status::Partial => {
            eprintln!("warning: the gateway was restored but does not fully match or a probe failed: see {}", md.display());
            exit::PARTIAL
        }
        Status::Failed => {
            eprintln!("error: {}", r.error.as_deref().unwrap_or("failed"));
            exit::FAILURE
        }
    })
}

pub(crate) fn print_plan(r: &Report) {
    println!(
        "snapshot {} ({}) of {} -> {}",
        r.snapshot.short(),
        r.snapshot_time,
        r.source,
        r.target
    );
    println!(
        "integrity: {:?}, {} documents re-hashed",
        r.integrity.status, r.integrity.documents
    );
    for e in &r.integrity.errors {
        println!("  damaged: {e}");
    }
    for w in &r.plan.rewrites {
        println!(
            "rewrite {}: {} -> {} ({} places)",
            w.what, w.from, w.to, w.count
        );
    }
    let (c, u, d) = r.plan.counts();
    println!("plan: {c} to create, {u} to update, {d} to delete");
    for s in &r.plan.steps {
        let sign = match s.op {
            crate::recovery::Op::Create => '+',
            crate::recovery::Op::Update => '~',
            crate::recovery::Op::Delete => '-',
        };
        println!("  {sign} {} {}", s.kind, s.key);
        for f in &s.fields {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or("(absent)".into(), |v| v.to_string())
            };
            println!("      {}: {} -> {}", f.pointer, show(&f.old), show(&f.new));
        }
        if let Some((a, b)) = s.lines {
            println!("      {a} line(s) only live, {b} only in the snapshot");
        }
    }
    if let Some(p) = &r.rollback_point {
        println!("rollback point: snapshot {}", p.short());
    }
    if let Some(a) = &r.applied {
        println!("applied: {}, {} step(s)", a.method, a.steps.len());
        for n in &a.notes {
            println!("  {n}");
        }
    }
    if let Some(v) = &r.verification {
        match (&v.error, v.matches) {
            (Some(e), _) => println!("verify: could not read the gateway back: {e}"),
            (None, true) => println!("verify: the gateway matches the snapshot"),
            (None, false) => {
                println!("verify: {} entities still differ", v.differences.len());
                for s in &v.differences {
                    println!("  {}", s.describe());
                }
            }
        }
    }
    if let Some(p) = &r.probes {
        println!(
            "probes: {} of {} passed",
            p.results.len() - p.failures(),
            p.results.len()
        );
        for x in &p.results {
            println!(
                "  {} {}: {}",
                if x.passed { "pass" } else { "FAIL" },
                x.name,
                x.detail
            );
        }
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
}
