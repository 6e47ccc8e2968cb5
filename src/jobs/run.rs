//! Running one job: this same binary, as a child process, with the command lines the job implies
//! (`gatevault --config FILE --json -r config:NAME backup ...`), so that a job is exactly what a
//! user could run by hand. The child's `--json` summary gives the bytes added, the dedup ratio and
//! the snapshot; its exit code the status (0 Success, 3 Partial, anything else Failed, with the
//! last lines of its standard error as the error).
//!
//! A run past its `max_duration`, or a daemon shutting down, sends the child SIGTERM (a gatevault
//! command then stops at its next safe point, removes its lock and commits nothing half-done), and
//! SIGKILL after a grace period.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::jobs::config::{format_duration, JobConfig};
use crate::jobs::record::{JobRecord, JobStatus};
use crate::jobs::store::new_run_id;

/// How to start a job's command: the program and the global options every job gets.
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The gatevault binary (the daemon's own).
    pub exe: PathBuf,
    /// Global options before the job's own: `--config FILE`, `--json`, and those the daemon was
    /// given (`--cache-dir`, credentials).
    pub global: Vec<OsString>,
}

/// Why a run was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// It went past its `max_duration`.
    MaxDuration,
    /// The daemon was asked to stop.
    Shutdown,
}

/// What a run reports while it goes: the moment it goes past its `max_duration` (so that the
/// alert goes out at once, not when the child has finally stopped).
pub trait RunEvents: Send + Sync {
    /// The run went past `max_duration`; the child is being stopped.
    fn over_time(&self, rec: &JobRecord);
}

/// The record of a run about to start.
pub fn started_record(job: &JobConfig) -> JobRecord {
    let started = Utc::now();
    JobRecord {
        id: new_run_id(&job.name, started),
        job: job.name.clone(),
        kind: job.kind.as_str().to_string(),
        repository: job.repository.clone(),
        status: JobStatus::Started,
        started,
        finished: None,
        duration_ms: None,
        bytes_added: None,
        dedup_ratio: None,
        snapshot: None,
        exit_code: None,
        error: None,
    }
}

/// What one command of a run gave.
struct StepOutcome {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cut: Option<Cut>,
    /// The grace period after which the command, still running after SIGTERM, got SIGKILL.
    killed_after: Option<Duration>,
}

/// Runs `job` (each of its command lines in turn) and returns its finished record, and why it was
/// cut short if it was. `shutdown` turning true stops it: SIGTERM, then SIGKILL after
/// `shutdown_grace`.
pub async fn run_job(
    launcher: &Launcher,
    job: &JobConfig,
    mut rec: JobRecord,
    kill_grace: Duration,
    shutdown_grace: Duration,
    mut shutdown: watch::Receiver<bool>,
    events: &dyn RunEvents,
) -> (JobRecord, Option<Cut>) {
    let start = tokio::time::Instant::now();
    let deadline = job.max_duration.map(|d| start + d);
    let mut outcomes: Vec<(StepOutcome, Option<serde_json::Value>)> = Vec::new();
    let mut cut = None;
    for step in &job.steps {
        if cut.is_some() {
            break;
        }
        let mut cmd = tokio::process::Command::new(&launcher.exe);
        cmd.args(&launcher.global)
            .args(step)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that SIGKILL reaches what it started too (a password
            // command, say), which would otherwise hold its output pipes open.
            .process_group(0)
            .kill_on_drop(true);
        tracing::debug!("job {}: running {:?}", job.name, step);
        let o = match cmd.spawn() {
            Ok(child) => {
                wait_child(
                    child,
                    deadline,
                    kill_grace,
                    shutdown_grace,
                    &mut shutdown,
                    &rec,
                    events,
                )
                .await
            }
            Err(e) => StepOutcome {
                code: 127,
                stdout: Vec::new(),
                stderr: format!("cannot start {}: {e}", launcher.exe.display()).into_bytes(),
                cut: None,
                killed_after: None,
            },
        };
        cut = o.cut;
        let summary = last_json(&o.stdout);
        outcomes.push((o, summary));
    }
    let elapsed = start.elapsed();
    rec.finished = Some(Utc::now());
    rec.duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    let mut added: Option<u64> = None;
    let mut logical: Option<u64> = None;
    let mut errors = Vec::new();
    let mut ok = 0;
    for (o, summary) in &outcomes {
        if let Some(g) = o.killed_after {
            errors.push(format!(
                "still running {} after SIGTERM; killed (SIGKILL)",
                format_duration(g)
            ));
        }
        if let Some(v) = summary {
            if let Some(b) = bytes_added(v) {
                *added.get_or_insert(0) += b;
            }
            if let Some(l) = v["total_bytes_processed"].as_u64() {
                *logical.get_or_insert(0) += l;
            }
            if let Some(id) = v["snapshot_id"].as_str() {
                rec.snapshot = Some(id.to_string());
            }
        }
        match o.code {
            0 => ok += 1,
            3 => {
                ok += 1;
                errors.push(tail(&o.stderr).unwrap_or_else(|| "partial (exit code 3)".into()));
            }
            c => errors.push(tail(&o.stderr).unwrap_or_else(|| format!("exit code {c}"))),
        }
    }
    rec.bytes_added = added;
    rec.dedup_ratio = match (logical, added) {
        (Some(l), Some(a)) if a > 0 => Some(l as f64 / a as f64),
        _ => None,
    };
    rec.exit_code = outcomes
        .iter()
        .map(|(o, _)| o.code)
        .find(|c| *c != 0)
        .or(Some(0));
    let partial = outcomes.iter().any(|(o, _)| o.code == 3);
    rec.status = match cut {
        Some(Cut::MaxDuration) => {
            errors.insert(
                0,
                format!(
                    "ran longer than max_duration {}",
                    format_duration(job.max_duration.unwrap_or_default())
                ),
            );
            JobStatus::Failed
        }
        Some(Cut::Shutdown) if outcomes.last().is_some_and(|(o, _)| o.code != 0) => {
            errors.insert(0, "stopped by the daemon's shutdown (SIGTERM)".into());
            JobStatus::Failed
        }
        _ if ok == outcomes.len() && !partial => JobStatus::Success,
        _ if ok == outcomes.len() || ok > 0 => JobStatus::Partial,
        _ => JobStatus::Failed,
    };
    if !errors.is_empty() {
        rec.error = Some(errors.join("; "));
    }
    (rec, cut)
}

async fn wait_child(
    mut child: tokio::process::Child,
    deadline: Option<tokio::time::Instant>,
    kill_grace: Duration,
    shutdown_grace: Duration,
    shutdown: &mut watch::Receiver<bool>,
    rec: &JobRecord,
    events: &dyn RunEvents,
) -> StepOutcome {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = tokio::spawn(async move {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b).await;
        }
        b
    });
    let read_err = tokio::spawn(async move {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b).await;
        }
        b
    });
    let pid = child.id();
    let mut cut = None;
    let mut killed_after = None;
    let over = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let stopping = async {
        if *shutdown.borrow() {
            return;
        }
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                return;
            }
        }
        std::future::pending::<()>().await
    };
    let status = tokio::select! {
        st = child.wait() => Some(st),
        _ = over => { cut = Some(Cut::MaxDuration); None }
        _ = stopping => { cut = Some(Cut::Shutdown); None }
    };
    let status = match status {
        Some(st) => st,
        None => {
            if cut == Some(Cut::MaxDuration) {
                tracing::warn!(
                    "job {}: past its max_duration; stopping it (SIGTERM)",
                    rec.job
                );
                events.over_time(rec);
            } else {
                tracing::info!("job {}: forwarding SIGTERM", rec.job);
            }
            signal(pid, rustix::process::Signal::TERM, false);
            let grace = if cut == Some(Cut::MaxDuration) {
                kill_grace
            } else {
                shutdown_grace
            };
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(st) => st,
                Err(_) => {
                    tracing::warn!(
                        "job {}: still running {:?} after SIGTERM; killing it",
                        rec.job,
                        grace
                    );
                    signal(pid, rustix::process::Signal::KILL, true);
                    let _ = child.start_kill();
                    killed_after = Some(grace);
                    child.wait().await
                }
            }
        }
    };
    let code = match status {
        Ok(st) => st
            .code()
            .or_else(|| st.signal().map(|s| 128 + s))
            .unwrap_or(1),
        Err(_) => 1,
    };
    // Whatever the command left behind may still hold the pipes: read on briefly, then give up.
    let collect = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        let abort = h.abort_handle();
        match tokio::time::timeout(Duration::from_secs(2), h).await {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => {
                abort.abort();
                Vec::new()
            }
        }
    };
    let stdout = collect(read_out).await;
    let stderr = collect(read_err).await;
    StepOutcome {
        code,
        stdout,
        stderr,
        cut,
        killed_after,
    }
}

/// Sends `sig` to process `pid` (if it still runs), or to its whole process group.
fn signal(pid: Option<u32>, sig: rustix::process::Signal, group: bool) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let r = if group {
        rustix::process::kill_process_group(pid, sig)
    } else {
        rustix::process::kill_process(pid, sig)
    };
    if let Err(e) = r {
        tracing::debug!("{sig:?} to {pid:?} (group: {group}): {e}");
    }
}

/// The last line of `stdout` that is a JSON object (the command's `--json` summary).
fn last_json(stdout: &[u8]) -> Option<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
}

/// Bytes a command's summary says it added: a backup's stored bytes (plus those of its profile's
/// copies), a copy's `bytes_added`.
fn bytes_added(v: &serde_json::Value) -> Option<u64> {
    let own = v["data_added_packed"]
        .as_u64()
        .or_else(|| v["bytes_added"].as_u64());
    let copies: u64 = v["copies"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["bytes_added"].as_u64()).sum())
        .unwrap_or(0);
    own.map(|o| o + copies)
}

/// The last few non-empty lines of standard error, for the record.
fn tail(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let mut s = lines[lines.len().saturating_sub(3)..].join(" | ");
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_give_bytes_and_snapshot() {
        let out = b"captured 3 entities\n{\"message_type\":\"summary\",\"snapshot_id\":\"ab\",\"data_added_packed\":100,\"total_bytes_processed\":1000,\"copies\":[{\"bytes_added\":7}]}\n";
        let v = last_json(out).unwrap();
        assert_eq!(bytes_added(&v), Some(107));
        assert_eq!(v["snapshot_id"], "ab");
        assert_eq!(bytes_added(&serde_json::json!({"bytes_added": 5})), Some(5));
        assert_eq!(bytes_added(&serde_json::json!({"status": "Success"})), None);
        assert!(last_json(b"no json here\n").is_none());
    }

    #[test]
    fn the_error_is_the_last_lines_of_stderr() {
        assert_eq!(
            tail(b"warning: a\n\nerror: b\nerror: c\nerror: d\n").as_deref(),
            Some("error: b | error: c | error: d")
        );
        assert!(tail(b"\n \n").is_none());
    }
}
