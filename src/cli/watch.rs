//! `gatevault watch`: continuous capture of one gateway (see `docs/watch.md`).

use clap::Args;

use super::backup::GatewayArgs;
use super::{exit, print_json, Global};
use crate::error::Error;
use crate::watch::{parse_interval, Poll, Stop, WatchOptions, Watcher};

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Time between the starts of two polls (`10s`, `500ms`, `1m`; `0s` polls again at once).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    interval: String,
    /// Tag the snapshots (KEY=VALUE); `BackupType=continuous` unless a BackupType is given.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record (default: this host).
    #[arg(long)]
    host: Option<String>,
    /// Version label of the snapshots.
    #[arg(long)]
    label: Option<String>,
    /// Stop after this many polls (default: run until SIGTERM or SIGINT).
    #[arg(long, value_name = "N")]
    max_polls: Option<u64>,
}

pub(crate) fn run(g: &Global, a: WatchArgs) -> anyhow::Result<u8> {
    let Some(kind) = a.gateway.gateway.clone() else {
        anyhow::bail!(Error::InvalidInput(
            "watch needs --gateway KIND (and --endpoint URL or --file PATH): the gateway to poll"
                .into()
        ));
    };
    let opts = WatchOptions {
        gateway: a.gateway.options(&kind),
        interval: parse_interval(&a.interval)?,
        tags: crate::select::parse_tags(&a.tags)?,
        host: a.host,
        label: a.label,
        max_polls: a.max_polls,
    };
    let repo = g.open()?;
    let mut watcher = Watcher::new(&repo, opts)?;
    let (json, quiet) = (g.json, g.quiet);
    let report = watcher.run(&mut |p| {
        match p {
            Poll::Unchanged => {}
            Poll::Committed(c) if json => {
                let mut v = serde_json::to_value(c).map_err(|e| Error::format("commit", e))?;
                v["message_type"] = "commit".into();
                println!("{v}");
            }
            Poll::Committed(c) if !quiet => println!(
                "{} snapshot {}: {} added, {} changed, {} removed (poll {})",
                c.time,
                c.snapshot_id.short(),
                c.added,
                c.changed,
                c.removed,
                c.poll
            ),
            Poll::Committed(_) => {}
            Poll::Failed { consecutive, error } => {
                tracing::warn!(
                    "poll failed ({consecutive} in a row): {error}; retrying at the next interval"
                );
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"message_type": "poll_failed", "consecutive": consecutive, "error": error})
                    );
                }
            }
        }
        Ok(())
    })?;
    let why = match report.stopped {
        Stop::MaxPolls => "after --max-polls".to_string(),
        Stop::Signal => format!("by {}", crate::signals::name()),
    };
    if report.abandoned_commit {
        eprintln!(
            "note: stopped {why} while committing a change: that change was not committed (nothing half-committed)"
        );
    }
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["message_type"] = "summary".into();
        print_json(&v)?;
    } else if !quiet {
        println!(
            "stopped {why}: {} polls, {} snapshots committed, {} unchanged, {} failed",
            report.polls, report.commits, report.unchanged, report.failed
        );
    }
    // Stopping is how a watch ends: a signal is not an error here.
    Ok(exit::OK)
}
