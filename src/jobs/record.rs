//! The record of one run of a job: written when the run starts (`Started`) and replaced when it ends.
//! The daemon keeps them in its state folder; `gatevault jobs` lists them and the metrics are derived
//! from them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a run ended (or that it has not ended yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Running (or the daemon stopped before it could record the end).
    Started,
    /// Done, everything as asked.
    Success,
    /// Done, but not everything (a check that could not read every pack, a copy that failed for one
    /// of several destinations: exit code 3).
    Partial,
    /// Not done: the command failed, was stopped at its `max_duration`, or could not start.
    Failed,
}

impl JobStatus {
    /// The name used in records, listings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Started => "Started",
            JobStatus::Success => "Success",
            JobStatus::Partial => "Partial",
            JobStatus::Failed => "Failed",
        }
    }
}

/// One run of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Unique id of the run.
    pub id: String,
    /// The job's name (`[jobs.NAME]`).
    pub job: String,
    /// The job's type: `backup`, `forget`, `copy`, `check` or `drill`.
    pub kind: String,
    /// The repository the job works on (its name in the config file).
    pub repository: String,
    /// Current state.
    pub status: JobStatus,
    /// When the run started.
    pub started: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// Wall time in milliseconds, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bytes the run added to the repository (backup, copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    /// Logical bytes / bytes added of a backup (how much deduplication saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_ratio: Option<f64>,
    /// The snapshot a backup made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Exit code of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
