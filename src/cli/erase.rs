//! `gatevault erase` and `gatevault erasures` (see `crate::erase`).

use clap::Args;

use super::{exit, print_json, Bar, Global};
use crate::erase::{EraseOptions, EraseReport};

#[derive(Args, Debug)]
pub(crate) struct EraseArgs {
    /// A data subject as the adapters mark it, e.g. kong:consumer=alice, aws:customer=C123,
    /// apim:user=alice (repeat for several).
    #[arg(long = "subject", value_name = "SUBJECT")]
    subjects: Vec<String>,
    /// The subjects of entities whose personal field FIELD has VALUE, e.g. email=alice@example.com
    /// (the value is erased too; repeat for several).
    #[arg(long = "match", value_name = "FIELD=VALUE", value_parser = parse_match)]
    matches: Vec<(String, String)>,
    /// Only show which snapshots and documents would change.
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    prune: super::prune::PruneArgs,
}

fn parse_match(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((f, v)) if !f.is_empty() && !v.is_empty() => Ok((f.to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?}: use FIELD=VALUE, e.g. email=alice@example.com"
        )),
    }
}

pub(crate) fn run(g: &Global, a: EraseArgs) -> anyhow::Result<u8> {
    if a.subjects.is_empty() && a.matches.is_empty() {
        anyhow::bail!(crate::Error::InvalidInput(
            "say whom to erase: --subject KIND:FIELD=VALUE (e.g. kong:consumer=alice) or --match FIELD=VALUE"
                .into()
        ));
    }
    let repo = g.open()?;
    let opts = EraseOptions {
        subjects: a.subjects,
        matches: a.matches,
        dry_run: a.dry_run,
        prune: a.prune.options(false),
    };
    let report = crate::erase::erase(&repo, &opts, &Bar::new(g, "scanning"))?;
    if !report.dry_run {
        g.audit.note(report.audit_details());
    }
    let clean = report.scan.as_ref().is_none_or(|s| s.found.is_empty());
    if g.json {
        print_json(&report)?;
    } else if !g.quiet {
        print_report(&report);
    }
    if report.scan.as_ref().is_some_and(|s| s.status == "retained") {
        eprintln!(
            "erasure pending: packs holding the subject's values are under an object lock (listed \
             above); no snapshot needs them any more, and running the same erase again after the \
             date removes them and completes the proof"
        );
        return Ok(exit::PARTIAL);
    }
    if !clean {
        eprintln!(
            "error: the scan still found the subject's values (listed above); the repository was \
             rewritten as far as erase could: report this, and do not rely on the erasure"
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

fn print_report(r: &EraseReport) {
    if !r.already_erased.is_empty() {
        println!(
            "{} already erased ({}): no snapshot holds an entity of theirs; nothing was changed",
            r.subjects.join(", "),
            r.already_erased.join(", ")
        );
        return;
    }
    let verb = |done: &str, would: &str| {
        if r.dry_run {
            would.to_string()
        } else {
            done.to_string()
        }
    };
    println!(
        "subjects: {} ({} values searched{})",
        r.subjects.join(", "),
        r.values,
        if r.values_not_searched > 0 {
            format!(", {} too short to search for", r.values_not_searched)
        } else {
            String::new()
        }
    );
    for s in &r.snapshots {
        match s.new {
            Some(n) => println!(
                "snapshot {} ({}) -> {}",
                s.original.short(),
                s.time,
                n.short()
            ),
            None => println!("snapshot {} ({})", s.original.short(), s.time),
        }
        for d in &s.documents {
            let what = match d.change {
                crate::erase::DocChange::Removed => verb("removed", "would remove"),
                crate::erase::DocChange::Scrubbed => verb("scrubbed", "would scrub"),
            };
            if d.removed.is_empty() {
                println!("  {what} {}", d.path);
            } else {
                println!("  {what} {}: {}", d.path, d.removed.join(", "));
            }
        }
        for m in &s.metadata {
            println!("  {} {m}", verb("masked", "would mask"));
        }
    }
    println!(
        "{} {} snapshots, {} untouched",
        verb("rewrote", "would rewrite"),
        r.snapshots.len(),
        r.snapshots_untouched
    );
    if r.records_rewritten > 0 {
        println!("masked the values in {} records", r.records_rewritten);
    }
    if let Some(p) = &r.prune {
        println!(
            "prune: {} blobs held values; repacked {} packs ({} forced), deleted {}",
            r.blobs_with_values,
            p.packs_repacked,
            p.packs_forced,
            p.packs_deleted + p.unreferenced_packs
        );
    }
    if let Some(s) = &r.scan {
        println!(
            "scan: {} blobs in {} packs, {} snapshots, {} records decrypted and searched: {}",
            s.blobs,
            s.packs,
            s.snapshots,
            s.records,
            if s.found.is_empty() {
                "no value found".to_string()
            } else {
                format!("values still found in {}", s.found.join("; "))
            }
        );
    }
    if let Some(s) = r.scan.as_ref().filter(|s| !s.audit_entries.is_empty()) {
        println!(
            "note: {} audit log entries mention a value in their command lines (seq {}); the log is \
             append-only and hash-chained, so they stay (see docs/lifecycle.md)",
            s.audit_entries.len(),
            s.audit_entries
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(id) = &r.record {
        println!("erasure record {} stored in the repository", &id[..8]);
    }
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}

#[derive(Args, Debug)]
pub(crate) struct ErasuresArgs {}

pub(crate) fn run_list(g: &Global, _a: ErasuresArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let records = crate::erase::records(&repo)?;
    if g.json {
        print_json(&records)?;
        return Ok(exit::OK);
    }
    for r in &records {
        let n = r["snapshots"].as_array().map_or(0, Vec::len);
        println!(
            "{}  {}@{}  {}  {} snapshots rewritten  scan: {}",
            r["time"].as_str().unwrap_or("?"),
            r["username"].as_str().unwrap_or("?"),
            r["hostname"].as_str().unwrap_or("?"),
            r["subjects"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            n,
            r["scan"]["status"].as_str().unwrap_or("?"),
        );
    }
    if records.is_empty() {
        println!("no erasures recorded");
    }
    Ok(exit::OK)
}
