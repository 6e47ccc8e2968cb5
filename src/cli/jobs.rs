//! `gatevault jobs`: lists the records of the daemon's job runs, newest first.

use std::path::PathBuf;

use clap::Args;

use super::{exit, print_json, Global};
use crate::jobs::config::{default_state_dir, JobsConfig};
use crate::jobs::store::RecordStore;

#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    /// Only the runs of this job; repeat for several.
    #[arg(long = "job", value_name = "NAME")]
    jobs: Vec<String>,
    /// Only the newest N runs.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// Read the records from this state folder instead of the config file's `[daemon] state_dir`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub(crate) fn run(g: &Global, a: JobsArgs) -> anyhow::Result<u8> {
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => {
            // Without a config file the records are in the default state folder; a config file
            // that exists must be valid.
            let explicit = g.config.is_some();
            match g.load_config() {
                Ok(c) => JobsConfig::from_config(&c)?.daemon.state_dir,
                Err(e) if !explicit && !config_exists(g) => {
                    tracing::debug!("no config file ({e:#}); using the default state folder");
                    default_state_dir()
                }
                Err(e) => return Err(e),
            }
        }
    };
    let mut list = RecordStore::new(&state_dir).list()?;
    if !a.jobs.is_empty() {
        list.retain(|r| a.jobs.contains(&r.job));
    }
    if let Some(n) = a.last {
        list.truncate(n);
    }
    if g.json {
        print_json(&list)?;
        return Ok(exit::OK);
    }
    println!(
        "{:<20}  {:<7}  {:<12}  {:<8}  {:<19}  {:>9}  {:>10}  Error",
        "Job", "Type", "Repository", "Status", "Started", "Duration", "Added"
    );
    println!("{}", "-".repeat(110));
    for r in &list {
        println!(
            "{:<20}  {:<7}  {:<12}  {:<8}  {:<19}  {:>9}  {:>10}  {}",
            r.job,
            r.kind,
            r.repository,
            r.status.as_str(),
            r.started
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            r.duration_ms
                .map(|d| format!("{:.1} s", d as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            r.bytes_added
                .map(crate::util::bytes)
                .unwrap_or_else(|| "-".into()),
            r.error.as_deref().unwrap_or("")
        );
    }
    println!("{} run(s)", list.len());
    Ok(exit::OK)
}

fn config_exists(g: &Global) -> bool {
    g.config
        .clone()
        .or_else(crate::profile::default_config_path)
        .is_some_and(|p| p.exists())
}
