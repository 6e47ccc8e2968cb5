//! Alerts: a job that failed, ran past its `max_duration`, or has no success within its `rpo` is
//! reported to the hooks of `[alerts]`: a command that reads the alert's JSON on standard input,
//! and/or an HTTP webhook that receives it as a POST. A hook that fails or hangs is logged and
//! given up after the timeout; it never stops the daemon.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::jobs::config::{AlertKind, AlertSettings};

/// The JSON body of an alert.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// `failed`, `max_duration` or `rpo`.
    pub alert: &'static str,
    /// The job's name.
    pub job: String,
    /// The repository it is recorded under.
    pub repository: String,
    /// The job's type.
    pub kind: String,
    /// When the run started (none for an RPO breach with no run going).
    pub started: Option<DateTime<Utc>>,
    /// How long the run took, or has taken so far, in seconds.
    pub duration_s: Option<f64>,
    /// What went wrong.
    pub error: Option<String>,
    /// The job's last successful run, if any.
    pub last_success: Option<DateTime<Utc>>,
    /// The host the daemon runs on.
    pub host: String,
    /// When the alert was raised.
    pub time: DateTime<Utc>,
}

/// Sends `alert` to every configured hook if `[alerts] on` lists its kind; blocking (run it off
/// the scheduler). Returns what failed, for the log.
pub fn send(settings: &AlertSettings, kind: AlertKind, alert: &Alert) -> Vec<String> {
    let mut failures = Vec::new();
    if !settings.on.contains(&kind) {
        return failures;
    }
    let body = match serde_json::to_vec(alert) {
        Ok(b) => b,
        Err(e) => return vec![format!("encoding the alert: {e}")],
    };
    if let Some(cmd) = &settings.command {
        if let Err(e) = run_command(cmd, &body, settings.timeout) {
            failures.push(format!("alert command {:?}: {e}", cmd[0]));
        }
    }
    if let Some(url) = &settings.webhook {
        let agent = ureq::AgentBuilder::new().timeout(settings.timeout).build();
        if let Err(e) = agent
            .post(url)
            .set("Content-Type", "application/json")
            .send_bytes(&body)
        {
            failures.push(format!("alert webhook {url}: {e}"));
        }
    }
    failures
}

fn run_command(cmd: &[String], body: &[u8], timeout: Duration) -> Result<(), String> {
    let mut child = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is not an error.
        let _ = stdin.write_all(body);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("exited with {st}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {timeout:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}
