//! `gatevault drill` and `gatevault drills`.

use clap::Args;

use super::restore::{print_plan, AfterArgs, TargetArgs};
use super::{exit, print_json, FilterArgs, Global};
use crate::recovery::drill::{drill, list, pick, DrillOptions};
use crate::recovery::Status;

#[derive(Args, Debug)]
pub(crate) struct DrillArgs {
    /// Drill this snapshot (id prefix or `latest`) instead of the newest matching one.
    #[arg(long, conflicts_with = "random")]
    snapshot: Option<String>,
    /// Pick the recovery point at random among the snapshots matching the filters.
    #[arg(long)]
    random: bool,
    /// Seed of the random pick (printed and recorded, so that a drill can be repeated).
    #[arg(long, requires = "random")]
    seed: Option<u64>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    after: AfterArgs,
}

pub(crate) fn run(g: &Global, a: DrillArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let snapshot = match a.snapshot.as_deref() {
        Some(s) => Some(crate::select::resolve(&repo, Some(s), &a.filter.filter(), None)?.0),
        None => None,
    };
    let opts = DrillOptions {
        filter: a.filter.filter(),
        snapshot,
        random: a.random,
        seed: a.seed,
        target: a
            .target
            .to_gateway
            .as_deref()
            .map(|k| a.target.gateway_options(k)),
        probes: a.after.probes(),
    };
    let (id, snap, seed, candidates) = pick(&repo, &opts)?;
    if !g.quiet && !g.json {
        match seed {
            Some(s) => println!(
                "drilling snapshot {} (picked at random among {candidates} with seed {s})",
                id.short()
            ),
            None => println!("drilling snapshot {}", id.short()),
        }
    }
    let rec = drill(&repo, &id, &snap, seed, candidates, &opts)?;
    if g.json {
        print_json(&rec)?;
    } else if !g.quiet {
        print_plan(&rec.report);
    }
    let (md, _) = rec.report.write(&a.after.report_dir, "drill")?;
    if !g.quiet && !g.json {
        println!(
            "drill {:?}: recovery time {:.3} s; recorded in the repository; report: {}",
            rec.status,
            rec.recovery_ms as f64 / 1000.0,
            md.display()
        );
    }
    Ok(match rec.status {
        Status::Success => exit::OK,
        Status::Partial => exit::PARTIAL,
        Status::Failed => {
            if let Some(e) = &rec.report.error {
                eprintln!("error: {e}");
            }
            exit::FAILURE
        }
    })
}

#[derive(Args, Debug)]
pub(crate) struct DrillsArgs {}

pub(crate) fn run_list(g: &Global, _a: DrillsArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let (drills, bad) = list(&repo)?;
    for b in &bad {
        eprintln!("warning: {b}");
    }
    if g.json {
        let rows: Vec<serde_json::Value> = drills
            .iter()
            .map(|d| {
                serde_json::json!({
                    "time": d.time, "hostname": d.hostname, "snapshot": d.report.snapshot,
                    "snapshot_time": d.report.snapshot_time, "target": d.report.target,
                    "seed": d.seed, "candidates": d.candidates, "status": d.status,
                    "recovery_ms": d.recovery_ms, "error": d.report.error,
                })
            })
            .collect();
        print_json(&rows)?;
        return Ok(if bad.is_empty() {
            exit::OK
        } else {
            exit::PARTIAL
        });
    }
    println!(
        "{:<23}  {:<8}  {:<8}  {:>10}  Target",
        "Time", "Snapshot", "Status", "Recovery"
    );
    println!("{}", "-".repeat(93));
    for d in &drills {
        println!(
            "{:<23}  {:<8}  {:<8}  {:>8.3} s  {}",
            d.time.replace('T', " ").trim_end_matches('Z'),
            d.report.snapshot.short(),
            format!("{:?}", d.status),
            d.recovery_ms as f64 / 1000.0,
            d.report.target
        );
    }
    println!("{}", "-".repeat(93));
    println!("{} drills", drills.len());
    Ok(if bad.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}
