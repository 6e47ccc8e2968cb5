//! `gatevault prune`: removes data no snapshot needs (see `crate::prune`).

use clap::Args;

use super::{exit, print_json, Bar, Global};
use crate::prune::{MaxUnused, PruneOptions, PruneReport};
use crate::util::bytes;

/// Options shared by `prune` and `forget --prune`.
#[derive(Args, Debug, Clone)]
pub(crate) struct PruneArgs {
    /// Unused data to tolerate in kept packs: a percentage of the pack data (5%), a size (100M) or
    /// 'unlimited' (then only packs holding nothing needed are deleted).
    #[arg(long, value_name = "LIMIT", default_value = "5%", value_parser = parse_max_unused)]
    max_unused: MaxUnused,
    /// Repack at most this much pack data (e.g. 2G) to reach --max-unused.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_repack_size: Option<u64>,
}

fn parse_max_unused(s: &str) -> Result<MaxUnused, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    crate::prune::parse_size(s).ok_or_else(|| format!("{s:?} is not a size (use 500M, 2G, ...)"))
}

impl PruneArgs {
    pub(crate) fn options(&self, dry_run: bool) -> PruneOptions {
        PruneOptions {
            max_unused: self.max_unused,
            max_repack_bytes: self.max_repack_size,
            dry_run,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct PruneCmdArgs {
    #[command(flatten)]
    prune: PruneArgs,
    /// Only show what would be deleted and repacked.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

pub(crate) fn run(g: &Global, a: PruneCmdArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    run_with(g, &repo, &a.prune.options(a.dry_run))
}

/// Prunes `repo` and prints the report.
pub(crate) fn run_with(
    g: &Global,
    repo: &crate::repo::Repository,
    opts: &PruneOptions,
) -> anyhow::Result<u8> {
    if !opts.dry_run {
        repo.require_admin("prune")?;
    }
    let report = if opts.dry_run {
        // A dry run only reads: any key may run it, and it takes a shared lock.
        let lock = crate::repo::lock::LockGuard::acquire(
            repo.backend_arc(),
            repo.keys().clone(),
            false,
            "prune --dry-run",
        )?;
        crate::prune::prune_locked(repo, &lock, opts, &Default::default(), &Bar(None))?
    } else {
        crate::prune::prune(repo, opts, &Bar::new(g, "repacking"))?
    };
    if g.json {
        print_json(&report)?;
    } else if !g.quiet {
        print_report(&report);
    }
    Ok(exit::OK)
}

/// The figures, restic-style.
pub(crate) fn print_report(r: &PruneReport) {
    let pct = |n: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            n as f64 * 100.0 / of as f64
        }
    };
    println!(
        "{} snapshots; {} packs, {}",
        r.snapshots,
        r.packs,
        bytes(r.pack_bytes)
    );
    println!("used:     {} blobs, {}", r.used_blobs, bytes(r.used_bytes));
    println!(
        "unused:   {} ({:.1}% of the pack data)",
        bytes(r.unused_bytes),
        pct(r.unused_bytes, r.pack_bytes)
    );
    let verb = if r.dry_run { "would " } else { "" };
    if r.unreferenced_packs > 0 {
        println!(
            "{verb}delete {} unreferenced packs ({}) left by interrupted jobs",
            r.unreferenced_packs,
            bytes(r.unreferenced_bytes)
        );
    }
    println!(
        "{verb}delete {} packs holding nothing needed ({})",
        r.packs_deleted,
        bytes(r.bytes_deleted)
    );
    let forced = if r.packs_forced > 0 {
        format!(
            ", {} of them required by erasure or re-encryption",
            r.packs_forced
        )
    } else {
        String::new()
    };
    println!(
        "{verb}repack {} packs ({}), moving {} blobs{forced}",
        r.packs_repacked,
        bytes(r.bytes_repacked),
        r.blobs_moved
    );
    if r.deltas_resolved > 0 {
        println!(
            "{verb}store {} delta blobs self-contained (their base goes)",
            r.deltas_resolved
        );
    }
    if r.missing_packs_dropped > 0 {
        println!(
            "{verb}drop {} missing packs that held nothing needed from the index",
            r.missing_packs_dropped
        );
    }
    if let (Some(first), Some(last)) = (r.locked_until_earliest, r.locked_until_latest) {
        let day = |d: chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%d %H:%M UTC").to_string();
        let until = if day(first) == day(last) {
            day(first)
        } else {
            format!("{} (earliest) .. {} (latest)", day(first), day(last))
        };
        println!(
            "{} packs ({}) kept: object lock until {until}; a prune after that removes them",
            r.locked_packs,
            bytes(r.locked_bytes)
        );
    }
    if r.locked_index_files > 0 {
        println!(
            "{} old index files kept: object lock (superseded by the new one, so ignored)",
            r.locked_index_files
        );
    }
    println!(
        "unused afterwards: {} ({:.1}%); pack data afterwards: {}{}",
        bytes(r.unused_after),
        pct(r.unused_after, r.pack_bytes_after),
        bytes(r.pack_bytes_after),
        if r.dry_run { " (estimated)" } else { "" }
    );
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}
