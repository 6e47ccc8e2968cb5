//! `gatevault systemd`: service and timer units for the jobs of the config file, for users who let
//! systemd schedule them instead of `gatevault daemon` (see `crate::systemd`).

use std::path::PathBuf;

use clap::Args;

use super::{exit, Global};
use crate::jobs::config::JobsConfig;
use crate::systemd::{units, UnitJob};

#[derive(Args, Debug)]
pub(crate) struct SystemdArgs {
    /// Write the unit files into this folder (for example /etc/systemd/system) instead of printing
    /// them.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Only this job; repeat for several (default: every job of the config file).
    #[arg(long = "job", value_name = "NAME")]
    jobs: Vec<String>,
}

pub(crate) fn run(g: &Global, a: SystemdArgs) -> anyhow::Result<u8> {
    let config = g.load_config()?;
    let jobs = JobsConfig::from_config(&config)?;
    for name in &a.jobs {
        if !jobs.jobs.contains_key(name) {
            anyhow::bail!(crate::Error::InvalidInput(format!(
                "config file {}: no job {name:?}",
                config.path.display()
            )));
        }
    }
    let exe = std::env::current_exe()?;
    let config_path = std::path::absolute(&config.path).unwrap_or(config.path.clone());
    let selected: Vec<UnitJob> = jobs
        .jobs
        .values()
        .filter(|j| a.jobs.is_empty() || a.jobs.contains(&j.name))
        .map(|j| UnitJob {
            name: j.name.clone(),
            schedule: j.schedule.expr.clone(),
            timezone: j.schedule.tz.name().to_string(),
            // The job runs exactly as the daemon runs it: recorded, with its alerts.
            command: vec![
                exe.display().to_string(),
                "--config".into(),
                config_path.display().to_string(),
                "daemon".into(),
                "--once".into(),
                "--job".into(),
                j.name.clone(),
            ],
            description: format!("{} on {}", j.kind.as_str(), j.repository),
            max_duration: j.max_duration,
            jitter: Some(jobs.daemon.jitter),
        })
        .collect();
    let units = units(&selected)?;
    match &a.output {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for u in &units {
                let path = dir.join(&u.file_name);
                std::fs::write(&path, &u.text)
                    .map_err(|e| crate::Error::io(format!("writing {}", path.display()), e))?;
                if !g.quiet {
                    println!("wrote {}", path.display());
                }
            }
            if !g.quiet {
                let timers: Vec<&str> = units
                    .iter()
                    .filter(|u| u.file_name.ends_with(".timer"))
                    .map(|u| u.file_name.as_str())
                    .collect();
                println!(
                    "then: systemctl daemon-reload && systemctl enable --now {}",
                    timers.join(" ")
                );
            }
        }
        None => {
            for u in &units {
                println!("# {}\n{}", u.file_name, u.text);
            }
        }
    }
    Ok(exit::OK)
}
