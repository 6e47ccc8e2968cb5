//! The Go-Live report of a restore: what was restored, the integrity check, the plan, what was
//! applied, the verification, the probes, each step's time and the final status, as Markdown for
//! people and JSON for tools.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Applied, Op, Plan, Step};
use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;

/// The final status of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Applied, verified identical to the snapshot, every probe passed.
    Success,
    /// Applied, but the verification found differences or a probe failed.
    Partial,
    /// Refused or stopped: the reason says why and what to do.
    Failed,
}

/// The integrity step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Integrity {
    /// `Success` or `Failed`.
    pub status: crate::check::Status,
    /// Documents read and re-hashed.
    pub documents: usize,
    /// Damaged documents, with the damage.
    pub errors: Vec<String>,
}

/// The verification step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Whether the gateway matches the snapshot.
    pub matches: bool,
    /// What still differs (as the steps that would fix it).
    pub differences: Vec<Step>,
    /// Why the gateway could not be read back, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One step's duration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Step name (`integrity`, `plan`, `rollback point`, `apply`, `verify`, `probes`).
    pub step: String,
    /// Milliseconds.
    pub ms: u64,
}

/// Everything about one restore.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The final status.
    pub status: Status,
    /// Why it failed, and the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// Its time.
    pub snapshot_time: String,
    /// Where it was captured.
    pub source: String,
    /// The gateway restored into.
    pub target: String,
    /// When the restore started (RFC 3339).
    pub started: String,
    /// Only planned.
    pub dry_run: bool,
    /// Resumed from a journal.
    #[serde(default)]
    pub resumed: bool,
    /// The integrity check.
    pub integrity: Integrity,
    /// The plan.
    pub plan: Plan,
    /// The rollback point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_point: Option<SnapshotId>,
    /// What was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// The verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<crate::probe::ProbeReport>,
    /// Warnings that did not change the status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Each step's duration.
    pub timings: Vec<Timing>,
    /// Total recovery time in milliseconds.
    pub total_ms: u64,
}

impl Report {
    pub(super) fn new(id: &SnapshotId, snap: &Snapshot, dry_run: bool) -> Self {
        Self {
            status: Status::Failed,
            error: None,
            snapshot: *id,
            snapshot_time: snap.time.clone(),
            source: snap
                .source
                .as_ref()
                .map(|s| s.describe())
                .unwrap_or_default(),
            target: String::new(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            dry_run,
            resumed: false,
            integrity: Integrity {
                status: crate::check::Status::Success,
                documents: 0,
                errors: vec![],
            },
            plan: Plan::default(),
            rollback_point: None,
            applied: None,
            verification: None,
            probes: None,
            warnings: vec![],
            timings: vec![],
            total_ms: 0,
        }
    }

    pub(super) fn time(&mut self, step: &str, since: Instant) {
        self.timings.push(Timing {
            step: step.into(),
            ms: since.elapsed().as_millis() as u64,
        });
    }

    pub(super) fn fail(mut self, why: &str, t0: Instant) -> Self {
        self.status = Status::Failed;
        self.error = Some(why.into());
        self.total_ms = t0.elapsed().as_millis() as u64;
        self
    }

    pub(super) fn finish(&mut self, t0: Instant) {
        let verified = self.verification.as_ref().is_some_and(|v| v.matches);
        let probed = self.probes.as_ref().is_none_or(|p| p.passed());
        self.status = if verified && probed && self.warnings.is_empty() {
            Status::Success
        } else {
            Status::Partial
        };
        self.total_ms = t0.elapsed().as_millis() as u64;
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let title = if self.dry_run {
            "Restore plan"
        } else {
            "Go-Live report"
        };
        let _ = writeln!(m, "# {title}: {:?}\n", self.status);
        let _ = writeln!(m, "| | |\n|---|---|");
        let _ = writeln!(
            m,
            "| Snapshot | `{}` of {} |",
            self.snapshot.short(),
            self.snapshot_time
        );
        let _ = writeln!(m, "| Captured from | {} |", self.source);
        let _ = writeln!(m, "| Restored into | {} |", self.target);
        let _ = writeln!(m, "| Started | {} |", self.started);
        if let Some(p) = &self.rollback_point {
            let _ = writeln!(m, "| Rollback point | `{}` |", p.short());
        }
        let _ = writeln!(
            m,
            "| Recovery time | {:.3} s |",
            self.total_ms as f64 / 1000.0
        );
        if self.resumed {
            let _ = writeln!(m, "| Resumed | yes |");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(m, "\n**Failed:** {e}");
        }
        let _ = writeln!(
            m,
            "\n## Integrity\n\n{:?}: {} documents read and re-hashed.",
            self.integrity.status, self.integrity.documents
        );
        for e in &self.integrity.errors {
            let _ = writeln!(m, "- {e}");
        }
        let (c, u, d) = self.plan.counts();
        let _ = writeln!(
            m,
            "\n## Plan\n\n{c} to create, {u} to update, {d} to delete."
        );
        for w in &self.plan.rewrites {
            let _ = writeln!(
                m,
                "- rewrite {} `{}` -> `{}` ({} places)",
                w.what, w.from, w.to, w.count
            );
        }
        steps_md(&mut m, &self.plan.steps);
        if let Some(a) = &self.applied {
            let _ = writeln!(
                m,
                "\n## Applied\n\n{} step(s), method: {}.",
                a.steps.len(),
                a.method
            );
            for n in &a.notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(m, "\n## Verification\n");
            match (&v.error, v.matches) {
                (Some(e), _) => {
                    let _ = writeln!(m, "The gateway could not be read back: {e}");
                }
                (None, true) => {
                    let _ = writeln!(m, "The gateway matches the snapshot.");
                }
                (None, false) => {
                    let _ = writeln!(m, "{} entities still differ:", v.differences.len());
                    steps_md(&mut m, &v.differences);
                }
            }
        }
        if let Some(p) = &self.probes {
            let _ = writeln!(
                m,
                "\n## Probes\n\n{} of {} passed against {}.\n",
                p.results.len() - p.failures(),
                p.results.len(),
                p.base_url
            );
            let _ = writeln!(m, "| probe | result | detail |\n|---|---|---|");
            for r in &p.results {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} |",
                    r.name,
                    if r.passed { "pass" } else { "FAIL" },
                    r.detail.replace('|', "\\|")
                );
            }
        }
        for w in &self.warnings {
            let _ = writeln!(m, "\nWarning: {w}");
        }
        let _ = writeln!(m, "\n## Timings\n\n| step | ms |\n|---|---|");
        for t in &self.timings {
            let _ = writeln!(m, "| {} | {} |", t.step, t.ms);
        }
        let _ = writeln!(m, "| **total** | **{}** |", self.total_ms);
        m
    }

    /// Writes `<stem>.md` and `<stem>.json` into `dir` (created if missing), where the stem is
    /// `restore-<YYYYMMDD-HHMMSS>-<snapshot>` (with `-2`, `-3` ... when taken); returns both paths.
    ///
    /// # Errors
    /// [`Error::Io`] when the files cannot be written.
    pub fn write(&self, dir: &Path, prefix: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating report folder {}", dir.display()), e))?;
        let when = chrono::DateTime::parse_from_rfc3339(&self.started)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y%m%d-%H%M%S")
                    .to_string()
            })
            .unwrap_or_default();
        // Never overwrite an earlier report (two restores within a second): number the later ones.
        let mut stem = format!("{prefix}-{when}-{}", self.snapshot.short());
        let mut n = 2;
        while dir.join(format!("{stem}.json")).exists() || dir.join(format!("{stem}.md")).exists() {
            stem = format!("{prefix}-{when}-{}-{n}", self.snapshot.short());
            n += 1;
        }
        let (md, json) = (
            dir.join(format!("{stem}.md")),
            dir.join(format!("{stem}.json")),
        );
        let body = serde_json::to_vec_pretty(self).expect("report serializes");
        std::fs::write(&md, self.markdown())
            .and_then(|_| std::fs::write(&json, body))
            .map_err(|e| Error::io(format!("writing report {}", md.display()), e))?;
        Ok((md, json))
    }
}

fn steps_md(m: &mut String, steps: &[Step]) {
    for s in steps {
        let sign = match s.op {
            Op::Create => "+",
            Op::Update => "~",
            Op::Delete => "-",
        };
        let _ = writeln!(m, "- `{sign}` {} {} (`{}`)", s.kind, s.key, s.path);
        for f in &s.fields {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or("(absent)".to_string(), |v| v.to_string())
            };
            let _ = writeln!(
                m,
                "  - `{}`: {} -> {}",
                f.pointer,
                show(&f.old),
                show(&f.new)
            );
        }
        if let Some((a, b)) = s.lines {
            let _ = writeln!(m, "  - {a} line(s) only live, {b} only in the snapshot");
        }
    }
}
