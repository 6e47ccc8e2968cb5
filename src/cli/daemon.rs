//! `gatevault daemon`: runs the jobs of the config file on their schedules (see `crate::jobs`).

use std::ffi::OsString;
use std::net::SocketAddr;

use clap::Args;

use super::{exit, print_json, Global};
use crate::jobs::config::JobsConfig;
use crate::jobs::daemon::{run as run_daemon, DaemonOptions};
use crate::jobs::record::JobStatus;
use crate::jobs::run::Launcher;

#[derive(Args, Debug)]
pub(crate) struct DaemonArgs {
    /// Serve Prometheus metrics on this address (`GET /metrics`), for example 127.0.0.1:9184.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Run each job once, now, then exit (0: all succeeded, 3: some partial, 1: some failed).
    #[arg(long)]
    once: bool,
    /// Only this job; repeat for several (default: every job of the config file).
    #[arg(long = "job", value_name = "NAME")]
    jobs: Vec<String>,
}

pub(crate) fn run(g: &Global, a: DaemonArgs) -> anyhow::Result<u8> {
    let config = g.load_config()?;
    let jobs = JobsConfig::from_config(&config)?;
    if jobs.jobs.is_empty() {
        anyhow::bail!(crate::Error::InvalidInput(format!(
            "config file {}: no [jobs.NAME] table; add one (see docs/automation.md)",
            config.path.display()
        )));
    }
    let (metrics, _server) = match a.metrics_addr {
        Some(addr) => {
            let metrics = crate::metrics::Metrics::new();
            let s = crate::metrics::serve(addr, metrics.clone())?;
            tracing::info!("serving metrics on http://{}/metrics", s.local_addr());
            (Some(metrics), Some(s))
        }
        None => (None, None),
    };
    let exe = std::env::current_exe().map_err(|e| {
        crate::Error::InvalidInput(format!(
            "cannot find the gatevault program to run jobs with: {e}"
        ))
    })?;
    let launcher = Launcher {
        exe,
        global: child_options(g, &config.path),
    };
    let records = run_daemon(
        config,
        jobs,
        launcher,
        DaemonOptions {
            once: a.once,
            only: a.jobs,
            metrics,
        },
    )?;
    if !a.once {
        return Ok(exit::OK);
    }
    if g.json {
        print_json(&records)?;
    } else if !g.quiet {
        for r in &records {
            println!(
                "{:<20} {:<8} {:.1} s{}",
                r.job,
                r.status.as_str(),
                r.duration_ms.unwrap_or(0) as f64 / 1000.0,
                r.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let worst = |s: JobStatus| records.iter().any(|r| r.status == s);
    Ok(if worst(JobStatus::Failed) {
        exit::FAILURE
    } else if worst(JobStatus::Partial) {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

/// The global options every job's command gets: the config file, `--json`, and the daemon's own
/// cache, credential and backend options (a configured repository's credentials win over them).
fn child_options(g: &Global, config: &std::path::Path) -> Vec<OsString> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let mut v: Vec<OsString> = vec!["--config".into(), config.into(), "--json".into()];
    let mut opt = |name: &str, value: Option<&std::path::Path>| {
        if let Some(p) = value {
            v.push(name.into());
            v.push(p.into());
        }
    };
    opt("--cache-dir", g.cache_dir.as_deref());
    opt("--key-file", g.key_file.as_deref());
    opt("--password-file", g.password_file.as_deref());
    if let Some(c) = &g.password_command {
        v.extend(["--password-command".into(), c.into()]);
    }
    if g.no_cache {
        v.push("--no-cache".into());
    }
    for o in &g.options {
        v.extend(["-o".into(), o.into()]);
    }
    if let Some(r) = &g.require_region {
        v.extend(["--require-region".into(), r.into()]);
    }
    v
}
