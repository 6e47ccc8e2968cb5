//! Restoring a gateway from a snapshot, safely (see `docs/recovery.md`):
//!
//! 1. integrity: every blob the snapshot needs is read and re-hashed; any damage refuses the restore;
//! 2. plan: the live gateway is captured and compared entity by entity with the snapshot;
//! 3. rollback point: the live capture is stored as a snapshot tagged `BackupType=pre-restore`;
//! 4. apply: through the gateway's atomic primitive where it has one, else entity by entity in
//!    dependency order, journaling each step so that a failed restore can be resumed;
//! 5. verify: the gateway is captured again and compared with the snapshot;
//! 6. probes: real requests through the restored gateway (optional).
//!
//! Every restore ends with a [`report::Report`] (Markdown and JSON): the Go-Live report.
//!
//! Each gateway kind with a writable API implements [`Target`].

pub mod aws;
pub mod caddy;
pub mod drill;
pub mod kong;
pub mod plan;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backup::{backup, BackupOptions, NoProgress};
use crate::error::{Error, Result};
use crate::format::{NodeType, Snapshot};
use crate::gateway::{Capture, GatewayOptions};
use crate::id::SnapshotId;
use crate::repo::Repository;

pub use plan::{Op, Plan, Rewrite, Step};
pub use report::{Report, Status};

/// Value of the `BackupType` tag of the snapshot taken before a restore.
pub const PRE_RESTORE: &str = "pre-restore";

/// Value of the `BackupType` tag of the snapshot taken before a rollback.
pub const PRE_ROLLBACK: &str = "pre-rollback";

/// What [`Target::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// How the change was made (`POST /load`, `entity by entity`, `put-rest-api (overwrite)`).
    pub method: String,
    /// The steps applied, described (`create service orders`).
    pub steps: Vec<String>,
    /// Anything else worth reporting (a new deployment id, a stage moved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A gateway that a snapshot can be restored into.
pub trait Target {
    /// The gateway kind (`caddy`); snapshots of other kinds are refused.
    fn kind(&self) -> &str;

    /// Reads the live configuration, as a backup would.
    ///
    /// # Errors
    /// [`Error::Gateway`] when the gateway cannot be read.
    fn capture(&self) -> Result<Capture>;

    /// Dependency rank of an entity kind: lower ranks are created first and deleted last.
    fn rank(&self, _kind: &str) -> u32 {
        0
    }

    /// Adapts the snapshot's entities to this target where it differs from the captured gateway
    /// (account ids, regions, ARNs, admin addresses), returning what was rewritten.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the snapshot cannot be adapted to this target.
    fn adapt(&self, _desired: &mut Capture, _live: &Capture) -> Result<Vec<Rewrite>> {
        Ok(vec![])
    }

    /// Makes the gateway match `desired`. `plan` was computed against `live`; `done` is called after
    /// each step that has durably taken effect (for the journal).
    ///
    /// # Errors
    /// [`Error::Gateway`] naming the entity that failed and why; steps already reported through
    /// `done` stay applied.
    fn apply(
        &self,
        desired: &Capture,
        live: &Capture,
        plan: &Plan,
        done: &mut dyn FnMut(&Step),
    ) -> Result<Applied>;

    /// Reorders the planned steps where the gateway needs another order than the ranks give (Kong:
    /// a parent still used by a child that the restore moves is deleted after the move), so that
    /// the printed plan is the order the steps run in.
    fn schedule(&self, _steps: &mut Vec<Step>, _live: &Capture, _desired: &Capture) {}

    /// Whether differences in entities of `kind` are expected after a restore and are not drift
    /// (AWS deployments, which a restore creates anew).
    fn volatile(&self, _kind: &str) -> bool {
        false
    }

    /// Whether a difference at `pointer` in an entity of `kind` is expected after a restore and is
    /// not drift (the deployment an AWS stage points at, which a restore creates anew).
    fn volatile_field(&self, _kind: &str, _pointer: &str) -> bool {
        false
    }
}

/// Removes from `steps` what is not drift for `target`: entities of volatile kinds, and updates whose
/// every changed field is volatile (the other fields of an update stay listed).
fn settle(steps: &mut Vec<Step>, target: &dyn Target) {
    steps.retain_mut(|s| {
        if target.volatile(&s.kind) {
            return false;
        }
        if s.op != Op::Update || s.fields.is_empty() {
            return true;
        }
        s.fields
            .retain(|f| !target.volatile_field(&s.kind, &f.pointer));
        !s.fields.is_empty()
    });
}

/// The target for `--to-gateway KIND` with these options.
///
/// # Errors
/// [`Error::InvalidInput`] for a kind that cannot be restored through an API.
pub fn target(opts: &GatewayOptions) -> Result<Box<dyn Target>> {
    match opts.kind.as_str() {
        "caddy" => Ok(Box::new(caddy::CaddyTarget::new(opts)?)),
        "kong" => Ok(Box::new(kong::KongTarget::new(opts)?)),
        "aws" => Ok(Box::new(aws::AwsTarget::new(opts)?)),
        "nginx" | "haproxy" | "files" => Err(Error::InvalidInput(format!(
            "{} is configured by files: restore them with `gatevault restore SNAPSHOT --target DIR --verify`, check them with the gateway's own checker and reload it (`gatevault drill` does this in a temporary folder)",
            opts.kind
        ))),
        k => Err(Error::InvalidInput(format!(
            "gatevault cannot restore into a {k:?} gateway: use one of caddy, kong, aws"
        ))),
    }
}

/// The base URL of the live admin API `opts` names (`default` when none), for a target that needs
/// one: `--file` is refused with `instead`, the way to get a file.
fn admin_url(opts: &GatewayOptions, default: &str, what: &str, instead: &str) -> Result<String> {
    if opts.file.is_some() {
        return Err(Error::InvalidInput(format!(
            "a restore into {what} needs its admin API (--endpoint), not --file; {instead}"
        )));
    }
    Ok(crate::gateway::http::base_url(
        opts.endpoint.as_deref().unwrap_or(default),
    ))
}

/// Reads every document of a gateway snapshot back into a [`Capture`], re-hashing every blob on the
/// way. Damage does not stop the reading: every damaged document is listed in the second value.
///
/// # Errors
/// [`Error::InvalidInput`] for a snapshot of files; a damaged manifest or root tree.
pub fn load(repo: &Repository, snap: &Snapshot) -> Result<(Capture, Vec<String>)> {
    snap.source.as_ref().ok_or_else(|| {
        Error::InvalidInput(
            "this is a snapshot of files, not of a gateway: restore it with --target DIR".into(),
        )
    })?;
    let mut docs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut damaged = vec![];
    crate::walk::walk(repo, &snap.tree, &mut |path, node| {
        if node.node_type != NodeType::File {
            return Ok(true);
        }
        let p = path.trim_start_matches('/').to_string();
        if let Some(d) = &node.inline {
            docs.insert(p, d.clone().into_bytes());
            return Ok(true);
        }
        let mut bytes = Vec::with_capacity(node.size as usize);
        for id in &node.content {
            match repo.load_blob(crate::format::BlobType::Data, id) {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => {
                    damaged.push(format!("{p}: {e}"));
                    return Ok(true);
                }
            }
        }
        docs.insert(p, bytes);
        Ok(true)
    })?;
    Ok((Capture::from_documents(docs)?, damaged))
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Stop after the plan.
    pub dry_run: bool,
    /// Go on with the restore the journal records for this target instead of starting anew.
    pub resume: bool,
    /// Show secret values in the plan.
    pub show_secrets: bool,
    /// Probes to run through the restored gateway, and the base URL they go to.
    pub probes: Option<(PathBuf, String)>,
    /// Folder of restore journals (one per target); `None` keeps no journal (no `--resume`).
    pub journal_dir: Option<PathBuf>,
    /// `BackupType` of the rollback point ([`PRE_RESTORE`] by default).
    pub rollback_tag: Option<String>,
    /// Take no rollback point (restore drills into a staging gateway).
    pub no_rollback_point: bool,
}

/// The journal of a restore in progress: enough to resume it or roll it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The snapshot being restored.
    pub snapshot: SnapshotId,
    /// The target (`caddy:http://127.0.0.1:2019`).
    pub target: String,
    /// The rollback point taken before the first change (none in a drill).
    pub rollback_point: Option<SnapshotId>,
    /// When the restore started (RFC 3339).
    pub started: String,
    /// Steps applied so far, described.
    pub applied: Vec<String>,
    /// Whether the restore finished (applied completely).
    pub finished: bool,
}

fn journal_path(dir: &Path, repo: &Repository, target: &str) -> PathBuf {
    let h = blake3::hash(format!("{}\0{target}", repo.config().id).as_bytes()).to_hex();
    dir.join(format!("{}.json", &h.as_str()[..24]))
}

/// Reads the journal of `target`, if any.
///
/// # Errors
/// [`Error::Io`] or [`Error::Format`] for an unreadable journal.
pub fn read_journal(dir: &Path, repo: &Repository, target: &str) -> Result<Option<Journal>> {
    let p = journal_path(dir, repo, target);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::format(p.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
    }
}

fn write_journal(dir: &Path, repo: &Repository, j: &Journal) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let p = journal_path(dir, repo, &j.target);
    let tmp = p.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(j).expect("journal serializes");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| Error::io(format!("writing restore journal {}", p.display()), e))
}

/// Restores snapshot `id` into `target`, step by step as the module documentation says. Failures
/// after the integrity check do not return `Err`: they end the report with status `Failed` and the
/// reason, so that the report is always written.
///
/// # Errors
/// Only errors that prevent a report: a read-only key (except for a dry run), a snapshot of another
/// gateway kind, a snapshot of files, no journal to resume, an invalid probe file.
pub fn restore(
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    target: &dyn Target,
    opts: &RestoreOptions,
) -> Result<Report> {
    let kind = snap.source.as_ref().map(|s| s.kind.clone());
    match kind.as_deref() {
        None => {
            return Err(Error::InvalidInput(format!(
                "snapshot {} is a snapshot of files, not of a gateway: restore it with --target DIR",
                id.short()
            )))
        }
        Some(k) if k != target.kind() => {
            return Err(Error::InvalidInput(format!(
                "snapshot {} holds a {k} gateway and cannot be restored into {}: pick a {} snapshot (`gatevault snapshots --path {}:...`) or restore to a {k} gateway",
                id.short(),
                target.kind(),
                target.kind(),
                target.kind(),
            )))
        }
        _ => {}
    }
    // A restore stores a rollback point: a read-only key may plan, not restore.
    if !opts.dry_run && !opts.no_rollback_point {
        repo.require_write("store the rollback point of a restore")?;
    }
    // A bad probe file is found before anything changes, not after the restore.
    let probes = match &opts.probes {
        Some((file, base)) => {
            crate::probe::check_base_url(base)?;
            Some((crate::probe::load(file)?, base.clone()))
        }
        None => None,
    };
    let mut r = Report::new(id, snap, opts.dry_run);
    let t0 = Instant::now();

    // 1. Integrity.
    let t = Instant::now();
    let loaded = load(repo, snap);
    let (mut desired, damaged) = match loaded {
        Ok(x) => x,
        Err(e) => (
            Capture {
                source: snap.source.clone().expect("checked above"),
                raw: BTreeMap::new(),
                entities: vec![],
            },
            vec![e.to_string()],
        ),
    };
    r.integrity.documents = desired.entities.len() + desired.raw.len();
    r.integrity.errors = damaged;
    r.time("integrity", t);
    if !r.integrity.errors.is_empty() {
        r.integrity.status = crate::check::Status::Failed;
        return Ok(r.fail(
            "the snapshot is damaged; nothing was changed: run `gatevault check --read-data` and restore an intact snapshot",
            t0,
        ));
    }

    // 2. Plan.
    let t = Instant::now();
    let live = match target.capture() {
        Ok(c) => c,
        Err(e) => return Ok(r.fail(&format!("reading the live gateway: {e}"), t0)),
    };
    r.target = live.source.describe();
    let journal_dir = opts.journal_dir.as_deref();
    let target_path = live.source.path();
    let journal = match (opts.resume, journal_dir) {
        (true, Some(dir)) => match read_journal(dir, repo, &target_path)? {
            Some(j) if !j.finished && j.snapshot == *id => Some(j),
            Some(j) if !j.finished => {
                return Err(Error::InvalidInput(format!(
                    "the unfinished restore into {} is of snapshot {}, not {}: resume that one, or roll back with `gatevault rollback`",
                    r.target,
                    j.snapshot.short(),
                    id.short()
                )))
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "no unfinished restore into {} to resume: run the restore without --resume",
                    r.target
                )))
            }
        },
        (true, None) => {
            return Err(Error::InvalidInput(
                "--resume needs the restore journal, which lives in the cache folder: do not combine it with --no-cache".into(),
            ))
        }
        _ => None,
    };
    r.plan.rewrites = match target.adapt(&mut desired, &live) {
        Ok(w) => w,
        Err(e) => return Ok(r.fail(&e.to_string(), t0)),
    };
    r.plan.steps = plan::plan(&live, &desired, &|k| target.rank(k), opts.show_secrets);
    target.schedule(&mut r.plan.steps, &live, &desired);
    settle(&mut r.plan.steps, target);
    r.time("plan", t);
    if opts.dry_run {
        r.status = Status::Success;
        r.total_ms = t0.elapsed().as_millis() as u64;
        return Ok(r);
    }

    // 3. Rollback point (a resumed restore keeps the one taken before its first change).
    let t = Instant::now();
    let mut journal = match journal {
        Some(j) => {
            r.resumed = true;
            j
        }
        None => {
            let rollback = match rollback_point(repo, id, snap, &live, opts) {
                Ok(s) => s,
                Err(e) => {
                    return Ok(r.fail(
                        &format!("storing the rollback point failed, nothing was changed: {e}"),
                        t0,
                    ))
                }
            };
            Journal {
                snapshot: *id,
                target: target_path.clone(),
                rollback_point: rollback,
                started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                applied: vec![],
                finished: false,
            }
        }
    };
    r.rollback_point = journal.rollback_point;
    if let Some(dir) = journal_dir {
        write_journal(dir, repo, &journal)?;
    }
    r.time("rollback point", t);

    // 4. Apply.
    let t = Instant::now();
    let mut journal_error = None;
    let result = if r.plan.is_empty() {
        Ok(Applied {
            method: "nothing to change".into(),
            ..Default::default()
        })
    } else {
        target.apply(&desired, &live, &r.plan, &mut |step| {
            journal.applied.push(step.describe());
            if let Some(dir) = journal_dir {
                if let Err(e) = write_journal(dir, repo, &journal) {
                    journal_error.get_or_insert(e);
                }
            }
            // An entity applied to the gateway is a durable step for crash tests.
            crate::backend::durable_step();
        })
    };
    r.time("apply", t);
    match result {
        Ok(a) => r.applied = Some(a),
        Err(e) => {
            r.applied = Some(Applied {
                method: "failed".into(),
                steps: journal.applied.clone(),
                notes: vec![],
            });
            let next = if journal_dir.is_some() {
                format!(
                    "fix the cause, then `gatevault restore {} --to-gateway {} ... --resume`, or return to the rollback point with `gatevault rollback --to-gateway {} ...`",
                    id.short(),
                    target.kind(),
                    target.kind()
                )
            } else {
                match journal.rollback_point {
                    Some(p) => format!(
                        "return to the rollback point with `gatevault restore {} --to-gateway {} ...`",
                        p.short(),
                        target.kind()
                    ),
                    None => "restore again once the cause is fixed".into(),
                }
            };
            return Ok(r.fail(&format!("{e}; {next}"), t0));
        }
    }
    if let Some(e) = journal_error {
        r.warnings
            .push(format!("the restore journal could not be updated: {e}"));
    }
    journal.finished = true;
    if let Some(dir) = journal_dir {
        write_journal(dir, repo, &journal)?;
    }

    // 5. Verify.
    let t = Instant::now();
    match target.capture() {
        Ok(after) => {
            let mut diffs = plan::plan(&after, &desired, &|k| target.rank(k), false);
            settle(&mut diffs, target);
            r.verification = Some(report::Verification {
                matches: diffs.is_empty(),
                differences: diffs,
                error: None,
            });
        }
        Err(e) => {
            r.verification = Some(report::Verification {
                matches: false,
                differences: vec![],
                error: Some(e.to_string()),
            })
        }
    }
    r.time("verify", t);

    // 6. Probes.
    if let Some((p, base)) = &probes {
        let t = Instant::now();
        r.probes = Some(crate::probe::run(p, base));
        r.time("probes", t);
    }
    r.finish(t0);
    Ok(r)
}

/// Stores `live` as the rollback point of a restore of `id` (unless `opts` says not to).
fn rollback_point(
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    live: &Capture,
    opts: &RestoreOptions,
) -> Result<Option<SnapshotId>> {
    if opts.no_rollback_point {
        return Ok(None);
    }
    let mut tags: BTreeMap<String, String> = snap
        .tags
        .iter()
        .filter(|(k, _)| ["Environment", "Application", "Owner"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.insert(
        "BackupType".into(),
        opts.rollback_tag
            .clone()
            .unwrap_or_else(|| PRE_RESTORE.into()),
    );
    let r = backup(
        repo,
        BackupOptions {
            tags,
            description: Some(format!(
                "{} before restoring snapshot {}",
                live.source.describe(),
                id.short()
            )),
            documents: Some(live.documents()?),
            source: Some(live.source.clone()),
            ..Default::default()
        },
        None,
        &NoProgress,
    )?;
    Ok(Some(r.id))
}

/// Whether `s` is a rollback point taken by a restore or a rollback (`BackupType=pre-restore` or
/// `pre-rollback`) rather than a backup: `latest`, `--at` and drills pass over them.
pub fn is_rollback_point(s: &Snapshot) -> bool {
    s.tags
        .get("BackupType")
        .is_some_and(|t| t == PRE_RESTORE || t == PRE_ROLLBACK)
}

/// The newest rollback point of the gateway `target` describes (by its source path), for
/// `gatevault rollback`.
///
/// # Errors
/// [`Error::NotFound`] when no restore into that gateway left one.
pub fn find_rollback_point(repo: &Repository, live: &Capture) -> Result<(SnapshotId, Snapshot)> {
    let path = live.source.path();
    repo.snapshots()?
        .into_iter()
        .rev()
        .find(|(_, s)| {
            s.paths == [path.clone()]
                && s.tags.get("BackupType").map(String::as_str) == Some(PRE_RESTORE)
        })
        .ok_or_else(|| Error::NotFound {
            kind: "rollback point (a snapshot tagged BackupType=pre-restore)".into(),
            id: format!("for {}", live.source.describe()),
        })
}
