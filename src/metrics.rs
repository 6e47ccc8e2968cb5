//! Prometheus metrics of the daemon and of one-shot runs.
//!
//! [`Metrics`] holds what the daemon knows: the last run of every job (fed by
//! [`Metrics::observe_job`]) and the figures of every configured repository and profile (collected by
//! [`Metrics::refresh_repositories`], which reads snapshots, records and object listings, never pack
//! data). [`Metrics::render`] writes the Prometheus text exposition format (version 0.0.4), ages being
//! computed at that moment; [`serve`] answers `GET /metrics` with it on a thread of its own.
//! [`command_exposition`] and [`push`] send the figures of one CLI command to a Pushgateway.
//!
//! The encoder is written here rather than taken from the `prometheus-client` crate: that crate
//! writes the OpenMetrics format (with `# EOF` and its own suffix rules) and wants every series
//! registered up front, while these families are rebuilt from records at each scrape. See
//! `docs/metrics.md` for every metric.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::jobs::record::{JobRecord, JobStatus};
use crate::profile::{
    evaluate, last_check, origin_of, source_of, CheckRecord, Config, Medium, RepositoryConfig,
    RepositoryContents, RepositoryState, Rule, Site, SnapshotInfo, CHECK_RECORD,
};
use crate::repo::{Credentials, Repository};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How many of each source's newest backups the 3-2-1 gauges judge (as `status --3-2-1` does by
/// default).
pub const RULE_LAST: usize = 3;

// ------------------------------------------------------------------------------ exposition format

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (reset when the process restarts).
    Counter,
}

struct Family {
    name: String,
    help: String,
    kind: MetricType,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

/// A Prometheus text exposition being built: families keep the order of their first sample, each
/// name is written once with its `# HELP` and `# TYPE`, and a second sample with the same labels
/// replaces the first (so there is never a duplicate series).
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample of family `name`. `help` and `kind` are taken from the family's first sample.
    pub fn sample(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        let f = &mut self.families[i];
        match f.samples.iter_mut().find(|(l, _)| *l == labels) {
            Some(s) => s.1 = value,
            None => f.samples.push((labels, value)),
        }
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, help, MetricType::Gauge, labels, value);
    }

    /// The text.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in &self.families {
            out.push_str(&format!("# HELP {} {}\n", f.name, escape_help(&f.help)));
            out.push_str(&format!(
                "# TYPE {} {}\n",
                f.name,
                match f.kind {
                    MetricType::Gauge => "gauge",
                    MetricType::Counter => "counter",
                }
            ));
            for (labels, v) in &f.samples {
                out.push_str(&f.name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!("{k}=\"{}\"", escape_label_value(v)));
                    }
                    out.push('}');
                }
                out.push(' ');
                out.push_str(&format_value(*v));
                out.push('\n');
            }
        }
        out
    }
}

/// Escapes a label value: `\` as `\\`, `"` as `\"`, a newline as `\n`.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escapes a `# HELP` text: `\` as `\\`, a newline as `\n`.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format writes it (`+Inf`, `-Inf`, `NaN`, integers without a fraction).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Seconds since the epoch, with milliseconds.
fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The dedup ratio of a backup: logical bytes over the plaintext bytes it added; `+Inf` when it
/// added nothing (everything was already stored), `None` for an empty backup.
pub fn dedup_ratio(logical: u64, added: u64) -> Option<f64> {
    match (logical, added) {
        (0, _) => None,
        (_, 0) => Some(f64::INFINITY),
        (l, a) => Some(l as f64 / a as f64),
    }
}

const JOB_STATUSES: [JobStatus; 4] = [
    JobStatus::Started,
    JobStatus::Success,
    JobStatus::Partial,
    JobStatus::Failed,
];

const END_STATUSES: [JobStatus; 3] = [JobStatus::Success, JobStatus::Partial, JobStatus::Failed];

// ------------------------------------------------------------------------------------ the model

/// What is known of one job.
#[derive(Clone, Debug)]
struct JobState {
    /// The newest record observed (its start, or its end).
    current: JobRecord,
    /// The newest ended run.
    last_ended: Option<JobRecord>,
    /// When the newest successful run ended.
    last_success: Option<DateTime<Utc>>,
    /// Ended runs by status (Success, Partial, Failed).
    runs: [u64; 3],
    /// The id of the last run counted, so that observing an end twice counts it once.
    counted: Option<String>,
}

/// A repository's newest drill record, as the metrics need it.
#[derive(Clone, Debug, Deserialize)]
struct DrillSummary {
    time: String,
    status: crate::recovery::Status,
    #[serde(default)]
    recovery_ms: u64,
}

/// What a readable repository holds.
#[derive(Clone, Debug, Default)]
struct RepositoryFigures {
    size_bytes: u64,
    packs: u64,
    logical_bytes: u64,
    snapshots: u64,
    /// Snapshots and the newest snapshot time, by source.
    by_source: BTreeMap<String, (u64, Option<DateTime<Utc>>)>,
    last_snapshot: Option<DateTime<Utc>>,
    last_check: Option<CheckRecord>,
    last_drill: Option<(DateTime<Utc>, DrillSummary)>,
    /// For the 3-2-1 evaluation.
    infos: Vec<SnapshotInfo>,
}

/// One configured repository as last refreshed.
#[derive(Clone, Debug)]
struct RepositoryEntry {
    medium: Medium,
    site: Site,
    refreshed: DateTime<Utc>,
    figures: std::result::Result<RepositoryFigures, String>,
}

/// The 3-2-1 state of one profile.
#[derive(Clone, Debug, PartialEq)]
struct ProfileEntry {
    compliant: bool,
    copies: usize,
    media: usize,
    offsite: usize,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, JobState>,
    repositories: BTreeMap<String, RepositoryEntry>,
    profiles: BTreeMap<String, ProfileEntry>,
}

/// What the daemon exposes on `/metrics`: cheap to clone, shared between the scheduler and the
/// HTTP server.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is a plain assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in a job record, at the start of a run and again at its end. An ended run is counted
    /// in `gatevault_job_runs_total` once, however often its end is observed.
    pub fn observe_job(&self, record: &JobRecord) {
        let mut inner = self.lock();
        let st = inner
            .jobs
            .entry(record.job.clone())
            .or_insert_with(|| JobState {
                current: record.clone(),
                last_ended: None,
                last_success: None,
                runs: [0; 3],
                counted: None,
            });
        st.current = record.clone();
        if record.status == JobStatus::Started {
            return;
        }
        let end = record.finished.unwrap_or(record.started);
        if record.status == JobStatus::Success && st.last_success.is_none_or(|t| t <= end) {
            st.last_success = Some(end);
        }
        st.last_ended = Some(record.clone());
        if st.counted.as_deref() != Some(record.id.as_str()) {
            if let Some(i) = END_STATUSES.iter().position(|s| *s == record.status) {
                st.runs[i] += 1;
            }
            st.counted = Some(record.id.clone());
        }
    }

    /// Opens every repository of `config` and refreshes its figures (size, snapshot counts, last
    /// check and drill) and the 3-2-1 state of every profile. Blocking; the repositories are read
    /// in parallel. An unreachable repository is reported as such (`gatevault_repository_up 0`) and
    /// does not keep the others from being refreshed. Repositories and profiles no longer in the
    /// config disappear from the metrics.
    pub fn refresh_repositories(&self, config: &Config) {
        let entries: BTreeMap<String, RepositoryEntry> = std::thread::scope(|scope| {
            let handles: Vec<_> = config
                .repositories
                .values()
                .map(|rc| {
                    (
                        rc,
                        scope.spawn(move || {
                            open_configured(rc)
                                .and_then(|repo| collect(&repo))
                                .map_err(|e| e.to_string())
                        }),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(rc, h)| {
                    let figures = h
                        .join()
                        .unwrap_or_else(|_| Err("reading it panicked".to_string()));
                    if let Err(e) = &figures {
                        tracing::warn!("metrics: repository {}: {e}", rc.name);
                    }
                    (
                        rc.name.clone(),
                        RepositoryEntry {
                            medium: rc.medium,
                            site: rc.site,
                            refreshed: Utc::now(),
                            figures,
                        },
                    )
                })
                .collect()
        });
        let profiles = profiles_of(config, &entries, Utc::now());
        let mut inner = self.lock();
        inner.repositories = entries;
        inner.profiles = profiles;
    }

    /// The Prometheus text exposition of everything known.
    pub fn render(&self) -> String {
        self.render_at(Utc::now())
    }

    /// [`Metrics::render`] with ages computed at `now`.
    pub fn render_at(&self, now: DateTime<Utc>) -> String {
        let inner = self.lock();
        let mut x = Exposition::new();
        x.gauge(
            "gatevault_build_info",
            "The gatevault version serving these metrics (always 1).",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        for (name, st) in &inner.jobs {
            render_job(&mut x, name, st);
        }
        for (name, r) in &inner.repositories {
            render_repository(&mut x, name, r, now);
        }
        for (name, p) in &inner.profiles {
            let l = [("profile", name.as_str())];
            x.gauge(
                "gatevault_321_compliant",
                "1 when every recent backup of the profile has 3 copies on 2 media, 1 offsite, each in a recently and successfully checked repository.",
                &l,
                p.compliant as u8 as f64,
            );
            x.gauge(
                "gatevault_321_copies",
                "The fewest copies any recent backup of the profile has.",
                &l,
                p.copies as f64,
            );
            x.gauge(
                "gatevault_321_media",
                "The fewest distinct media any recent backup of the profile is on.",
                &l,
                p.media as f64,
            );
            x.gauge(
                "gatevault_321_offsite",
                "The fewest offsite copies any recent backup of the profile has.",
                &l,
                p.offsite as f64,
            );
        }
        x.finish()
    }
}

fn render_job(x: &mut Exposition, name: &str, st: &JobState) {
    let c = &st.current;
    let l = [
        ("job_name", name),
        ("kind", c.kind.as_str()),
        ("repository", c.repository.as_str()),
    ];
    x.gauge(
        "gatevault_job_running",
        "1 while a run of the job is in progress.",
        &l,
        (c.status == JobStatus::Started) as u8 as f64,
    );
    x.gauge(
        "gatevault_job_last_start_timestamp_seconds",
        "When the newest run of the job started.",
        &l,
        seconds(c.started),
    );
    x.gauge(
        "gatevault_job_last_success_timestamp_seconds",
        "When the newest successful run of the job ended (0: none known).",
        &l,
        st.last_success.map(seconds).unwrap_or(0.0),
    );
    for s in JOB_STATUSES {
        let mut ls = l.to_vec();
        ls.push(("status", s.as_str()));
        x.gauge(
            "gatevault_job_last_status",
            "1 for the status of the newest run of the job (Started while it runs), 0 for the others.",
            &ls,
            (c.status == s) as u8 as f64,
        );
    }
    if let Some(e) = &st.last_ended {
        if let Some(f) = e.finished {
            x.gauge(
                "gatevault_job_last_end_timestamp_seconds",
                "When the newest ended run of the job ended.",
                &l,
                seconds(f),
            );
        }
        if let Some(d) = e.duration_ms {
            x.gauge(
                "gatevault_job_last_duration_seconds",
                "Wall time of the newest ended run of the job.",
                &l,
                d as f64 / 1000.0,
            );
        }
        if let Some(b) = e.bytes_added {
            x.gauge(
                "gatevault_job_last_bytes_added",
                "Bytes the newest ended run of the job added to its repository.",
                &l,
                b as f64,
            );
        }
        if let Some(r) = e.dedup_ratio {
            x.gauge(
                "gatevault_job_last_dedup_ratio",
                "Logical bytes over bytes added of the newest ended backup run (+Inf: nothing new).",
                &l,
                r,
            );
        }
        if let Some(code) = e.exit_code {
            x.gauge(
                "gatevault_job_last_exit_code",
                "Exit code of the newest ended run of the job.",
                &l,
                code as f64,
            );
        }
    }
    for (i, s) in END_STATUSES.iter().enumerate() {
        let mut ls = l.to_vec();
        ls.push(("status", s.as_str()));
        x.sample(
            "gatevault_job_runs_total",
            "Ended runs of the job since the daemon started, by status.",
            MetricType::Counter,
            &ls,
            st.runs[i] as f64,
        );
    }
}

fn render_repository(x: &mut Exposition, name: &str, r: &RepositoryEntry, now: DateTime<Utc>) {
    let l = [
        ("repository", name),
        ("medium", r.medium.as_str()),
        ("site", r.site.as_str()),
    ];
    x.gauge(
        "gatevault_repository_up",
        "1 when the repository could be opened and read at the last refresh.",
        &l,
        r.figures.is_ok() as u8 as f64,
    );
    x.gauge(
        "gatevault_refresh_timestamp_seconds",
        "When the repository's figures were last collected.",
        &l,
        seconds(r.refreshed),
    );
    let Ok(f) = &r.figures else {
        return;
    };
    x.gauge(
        "gatevault_repository_size_bytes",
        "Bytes of every object stored in the repository (packs, indexes, snapshots, records, keys).",
        &l,
        f.size_bytes as f64,
    );
    x.gauge(
        "gatevault_repository_packs",
        "Pack files in the repository.",
        &l,
        f.packs as f64,
    );
    x.gauge(
        "gatevault_repository_logical_bytes",
        "Bytes a restore of every snapshot would write (before deduplication).",
        &l,
        f.logical_bytes as f64,
    );
    x.gauge(
        "gatevault_repository_snapshots",
        "Snapshots in the repository.",
        &l,
        f.snapshots as f64,
    );
    for (source, (n, last)) in &f.by_source {
        let mut ls = l.to_vec();
        ls.push(("source", source.as_str()));
        x.gauge(
            "gatevault_repository_source_snapshots",
            "Snapshots in the repository, by source (gateway, or host and paths).",
            &ls,
            *n as f64,
        );
        if let Some(t) = last {
            x.gauge(
                "gatevault_repository_source_last_snapshot_timestamp_seconds",
                "Time of the newest snapshot of the source in the repository.",
                &ls,
                seconds(*t),
            );
        }
    }
    if let Some(t) = f.last_snapshot {
        x.gauge(
            "gatevault_repository_last_snapshot_timestamp_seconds",
            "Time of the newest snapshot in the repository.",
            &l,
            seconds(t),
        );
    }
    if let Some(c) = &f.last_check {
        if let Some(t) = c.timestamp() {
            x.gauge(
                "gatevault_check_last_timestamp_seconds",
                "When the newest check of the repository ended.",
                &l,
                seconds(t),
            );
            x.gauge(
                "gatevault_check_age_seconds",
                "Seconds since the newest check of the repository ended.",
                &l,
                (now - t).num_milliseconds() as f64 / 1000.0,
            );
        }
        for s in [
            crate::check::Status::Success,
            crate::check::Status::Partial,
            crate::check::Status::Failed,
        ] {
            let mut ls = l.to_vec();
            let name = format!("{s:?}");
            ls.push(("status", name.as_str()));
            x.gauge(
                "gatevault_check_last_status",
                "1 for the verdict of the newest check of the repository, 0 for the others.",
                &ls,
                (c.status == s) as u8 as f64,
            );
        }
    }
    if let Some((t, d)) = &f.last_drill {
        x.gauge(
            "gatevault_drill_last_timestamp_seconds",
            "When the newest restore drill of the repository ran.",
            &l,
            seconds(*t),
        );
        x.gauge(
            "gatevault_drill_age_seconds",
            "Seconds since the newest restore drill of the repository ran.",
            &l,
            (now - *t).num_milliseconds() as f64 / 1000.0,
        );
        x.gauge(
            "gatevault_drill_last_recovery_seconds",
            "Recovery time measured by the newest restore drill of the repository.",
            &l,
            d.recovery_ms as f64 / 1000.0,
        );
        for s in [
            crate::recovery::Status::Success,
            crate::recovery::Status::Partial,
            crate::recovery::Status::Failed,
        ] {
            let mut ls = l.to_vec();
            let name = format!("{s:?}");
            ls.push(("status", name.as_str()));
            x.gauge(
                "gatevault_drill_last_status",
                "1 for the outcome of the newest restore drill of the repository, 0 for the others.",
                &ls,
                (d.status == s) as u8 as f64,
            );
        }
    }
}

// ------------------------------------------------------------------------------------ collection

/// Opens configured repository `rc` without asking anything: its own credentials when the config
/// gives some, else those of the environment (`GATEVAULT_KEY_FILE`, `GATEVAULT_PASSWORD_FILE`,
/// `GATEVAULT_PASSWORD_COMMAND`, `GATEVAULT_PASSWORD`); remote repositories use the metadata cache
/// (`GATEVAULT_CACHE_DIR`, else `$XDG_CACHE_HOME/gatevault`).
///
/// # Errors
/// [`Error::NoCredentials`] naming the repository when no credential is given; errors of the
/// backend and of opening the repository.
pub fn open_configured(rc: &RepositoryConfig) -> Result<Repository> {
    let env_path = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let own = rc.has_credentials();
    let (key_file, password_file, password_command) = if own {
        (
            rc.key_file.clone(),
            rc.password_file.clone(),
            rc.password_command.clone(),
        )
    } else {
        (
            env_path("GATEVAULT_KEY_FILE"),
            env_path("GATEVAULT_PASSWORD_FILE"),
            std::env::var("GATEVAULT_PASSWORD_COMMAND")
                .ok()
                .filter(|s| !s.is_empty()),
        )
    };
    let name = &rc.name;
    let what = format!("repository {name}");
    let source = crate::secrets::SecretSource {
        password_file: password_file.as_deref(),
        password_command: password_command.as_deref(),
        key_file: key_file.as_deref(),
        password_env: (!own).then_some("GATEVAULT_PASSWORD"),
        what: &what,
    };
    let (key_file, password) = (source.key()?, source.password()?);
    if key_file.is_none() && password.is_none() {
        return Err(Error::NoCredentials(format!(
            "repository {name}: no credentials: set key_file, password_file or password_command in [repositories.{name}] of the config file"
        )));
    }
    let mut opts: Vec<String> = rc.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    opts.sort();
    let opts = crate::backend::BackendOptions::parse(&opts)?;
    let cache = env_path("GATEVAULT_CACHE_DIR").or_else(crate::secrets::default_cache_dir);
    let backend = crate::backend::open_cached(&rc.location, &opts, cache.as_deref())?;
    Repository::open(backend, &Credentials { password, key_file }, cache)
}

/// Collects the figures of an open repository: object listings, snapshots and records; no pack
/// data is read and the index is not opened.
fn collect(repo: &Repository) -> Result<RepositoryFigures> {
    use crate::backend::FileType;
    let mut f = RepositoryFigures::default();
    for t in [
        FileType::Config,
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Record,
        FileType::Audit,
    ] {
        let objects = repo.backend().list(t)?;
        if t == FileType::Pack {
            f.packs = objects.len() as u64;
        }
        f.size_bytes += objects.iter().map(|(_, n)| n).sum::<u64>();
    }
    let id = repo.config().id.to_hex();
    let snapshots = repo.snapshots()?;
    let records = repo.records(None)?;
    add_snapshots(&mut f, &id, &snapshots);
    add_records(&mut f, records);
    Ok(f)
}

fn add_snapshots(
    f: &mut RepositoryFigures,
    repository_id: &str,
    snapshots: &[(crate::id::SnapshotId, crate::format::Snapshot)],
) {
    for (sid, s) in snapshots {
        f.snapshots += 1;
        f.logical_bytes += s.summary.total_bytes;
        let time = s.timestamp().ok();
        let source = source_of(s);
        let e = f.by_source.entry(source.clone()).or_insert((0, None));
        e.0 += 1;
        e.1 = e.1.max(time);
        f.last_snapshot = f.last_snapshot.max(time);
        if let Some(time) = time {
            f.infos.push(SnapshotInfo {
                id: *sid,
                time,
                source,
                origin: origin_of(repository_id, sid, s),
            });
        }
    }
}

fn add_records(f: &mut RepositoryFigures, records: Vec<Result<serde_json::Value>>) {
    let (checks, others): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| {
        r.as_ref()
            .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some(CHECK_RECORD))
    });
    f.last_check = last_check(checks);
    f.last_drill = others
        .into_iter()
        .filter_map(|r| r.ok())
        .filter(|v| {
            v.get("type").and_then(|t| t.as_str()) == Some(crate::recovery::drill::RECORD_TYPE)
        })
        .filter_map(|v| serde_json::from_value::<DrillSummary>(v).ok())
        .filter_map(|d| {
            DateTime::parse_from_rfc3339(&d.time)
                .ok()
                .map(|t| (t.with_timezone(&Utc), d))
        })
        .max_by(|a, b| a.0.cmp(&b.0));
}

/// The 3-2-1 state of every profile, from the figures just collected (the rule of
/// [`crate::profile::evaluate`] with its defaults, over each source's [`RULE_LAST`] newest backups).
fn profiles_of(
    config: &Config,
    repos: &BTreeMap<String, RepositoryEntry>,
    now: DateTime<Utc>,
) -> BTreeMap<String, ProfileEntry> {
    let mut out = BTreeMap::new();
    for p in config.profiles.values() {
        let states: Vec<RepositoryState> = p
            .repositories()
            .map(|name| {
                let rc = config.repositories.get(name);
                let e = repos.get(name);
                RepositoryState {
                    name: name.to_string(),
                    location: rc.map(|r| r.location.clone()).unwrap_or_default(),
                    medium: rc.map(|r| r.medium).unwrap_or(Medium::Disk),
                    site: rc.map(|r| r.site).unwrap_or(Site::Onsite),
                    contents: match e.map(|e| &e.figures) {
                        Some(Ok(f)) => Ok(RepositoryContents {
                            snapshots: f.infos.clone(),
                            last_check: f.last_check.clone(),
                        }),
                        Some(Err(e)) => Err(e.clone()),
                        None => Err("not refreshed".into()),
                    },
                }
            })
            .collect();
        let r = evaluate(&p.name, &states, RULE_LAST, now, &Rule::default());
        let verdicts: Vec<_> = r.sources.iter().flat_map(|s| &s.snapshots).collect();
        let min = |g: &dyn Fn(&crate::profile::SnapshotVerdict) -> usize| {
            verdicts.iter().map(|v| g(v)).min().unwrap_or(0)
        };
        out.insert(
            p.name.clone(),
            ProfileEntry {
                compliant: r.compliant,
                copies: min(&|v| v.copies),
                media: min(&|v| v.media),
                offsite: min(&|v| {
                    v.locations
                        .iter()
                        .filter(|l| l.site == Site::Offsite)
                        .count()
                }),
            },
        );
    }
    out
}

// ------------------------------------------------------------------------------------ /metrics

/// The `/metrics` HTTP server; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<futures::channel::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest request head read; a scrape needs a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long one connection may take, from accept to the last byte of the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `metrics` on `addr` (`GET /metrics`) on a thread of its own: a tokio current-thread
/// runtime, one task per connection, one request per connection (`Connection: close`).
///
/// # Errors
/// [`Error::Io`] naming the address when it cannot be bound.
pub fn serve(addr: SocketAddr, metrics: Metrics) -> Result<MetricsServer> {
    let bind_err = |e: std::io::Error| Error::Io {
        context: format!(
            "cannot serve metrics on {addr} (choose another address with --metrics-addr)"
        ),
        source: e,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::Io {
            context: "starting the metrics server's runtime".into(),
            source: e,
        })?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener).map_err(bind_err)?
    };
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            rt.block_on(async move {
                let accept = async {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                let m = metrics.clone();
                                tokio::spawn(async move {
                                    let _ =
                                        tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, m))
                                            .await;
                                });
                            }
                            Err(e) => {
                                // Out of descriptors and the like: wait rather than spin.
                                tracing::warn!("metrics server on {local}: accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                };
                let accept = std::pin::pin!(accept);
                futures::future::select(accept, stopped).await;
            });
        })
        .map_err(|e| Error::Io {
            context: "starting the metrics server's thread".into(),
            source: e,
        })?;
    Ok(MetricsServer {
        addr: local,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn answer(stream: tokio::net::TcpStream, m: Metrics) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        stream.readable().await?;
        match stream.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    let reply = respond(&head, &m);
    let mut sent = 0;
    while sent < reply.len() {
        stream.writable().await?;
        match stream.try_write(&reply[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The whole HTTP answer to a request head.
fn respond(head: &[u8], m: &Metrics) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let reply = |status: &str, ctype: &str, extra: &str, body: String, head_only: bool| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            r.extend_from_slice(body.as_bytes());
        }
        r
    };
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return reply(
            "400 Bad Request",
            "text/plain",
            "",
            "bad request\n".into(),
            false,
        );
    };
    if !version.starts_with("HTTP/1.") {
        return reply(
            "505 HTTP Version Not Supported",
            "text/plain",
            "",
            "HTTP/1.x only\n".into(),
            false,
        );
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            "only GET and HEAD\n".into(),
            false,
        );
    }
    match target.split('?').next().unwrap_or_default() {
        "/metrics" => reply("200 OK", CONTENT_TYPE, "", m.render(), head_only),
        "/" => reply(
            "200 OK",
            "text/html; charset=utf-8",
            "",
            "<html><head><title>gatevault</title></head><body><h1>gatevault daemon</h1><p><a href=\"/metrics\">Metrics</a> (Prometheus text format)</p></body></html>\n".into(),
            head_only,
        ),
        _ => reply(
            "404 Not Found",
            "text/plain",
            "",
            "not found: the metrics are at /metrics\n".into(),
            head_only,
        ),
    }
}

// ------------------------------------------------------------------------------------ Pushgateway

/// One CLI command's run, as pushed to a Pushgateway.
#[derive(Clone, Debug)]
pub struct CommandRun {
    /// The subcommand (`backup`, `check`, ...).
    pub command: String,
    /// The repository it worked on (its configured name, else its location).
    pub repository: String,
    /// Start and end.
    pub started: DateTime<Utc>,
    /// End.
    pub ended: DateTime<Utc>,
    /// Its exit code.
    pub exit_code: u8,
    /// Bytes it added to the repository (backup, copy).
    pub bytes_added: Option<u64>,
    /// Dedup ratio of a backup ([`dedup_ratio`]).
    pub dedup_ratio: Option<f64>,
}

impl CommandRun {
    /// Success for exit code 0, Partial for 3, Failed otherwise.
    pub fn status(&self) -> JobStatus {
        match self.exit_code {
            0 => JobStatus::Success,
            3 => JobStatus::Partial,
            _ => JobStatus::Failed,
        }
    }
}

/// The exposition pushed for one command run.
pub fn command_exposition(run: &CommandRun) -> String {
    let mut x = Exposition::new();
    let l = [
        ("command", run.command.as_str()),
        ("repository", run.repository.as_str()),
    ];
    x.gauge(
        "gatevault_build_info",
        "The gatevault version that ran the command (always 1).",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    x.gauge(
        "gatevault_command_last_start_timestamp_seconds",
        "When the command started.",
        &l,
        seconds(run.started),
    );
    x.gauge(
        "gatevault_command_last_end_timestamp_seconds",
        "When the command ended.",
        &l,
        seconds(run.ended),
    );
    x.gauge(
        "gatevault_command_last_duration_seconds",
        "Wall time of the command.",
        &l,
        (run.ended - run.started).num_milliseconds().max(0) as f64 / 1000.0,
    );
    let status = run.status();
    for s in END_STATUSES {
        let mut ls = l.to_vec();
        ls.push(("status", s.as_str()));
        x.gauge(
            "gatevault_command_last_status",
            "1 for how the command ended (Success: exit 0, Partial: exit 3, Failed: any other), 0 for the others.",
            &ls,
            (s == status) as u8 as f64,
        );
    }
    x.gauge(
        "gatevault_command_last_exit_code",
        "Exit code of the command.",
        &l,
        run.exit_code as f64,
    );
    if status == JobStatus::Success {
        x.gauge(
            "gatevault_command_last_success_timestamp_seconds",
            "When the command last ended successfully.",
            &l,
            seconds(run.ended),
        );
    }
    if let Some(b) = run.bytes_added {
        x.gauge(
            "gatevault_command_last_bytes_added",
            "Bytes the command added to the repository.",
            &l,
            b as f64,
        );
    }
    if let Some(r) = run.dedup_ratio {
        x.gauge(
            "gatevault_command_last_dedup_ratio",
            "Logical bytes over bytes added of the backup (+Inf: nothing new).",
            &l,
            r,
        );
    }
    x.finish()
}

/// One grouping-key segment `/NAME/VALUE`; a value that is empty or holds anything but letters,
/// digits, `.`, `_` and `-` is sent base64url-encoded (`/NAME@base64/...`), as the Pushgateway reads it.
fn grouping_segment(name: &str, value: &str) -> String {
    use base64::Engine;
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        format!("/{name}/{value}")
    } else if value.is_empty() {
        format!("/{name}@base64/=")
    } else {
        format!(
            "/{name}@base64/{}",
            base64::engine::general_purpose::URL_SAFE.encode(value)
        )
    }
}

/// The URL a command's metrics are pushed to:
/// `URL/metrics/job/gatevault/instance/<host>/command/<command>`.
pub fn push_url(base: &str, instance: &str, command: &str) -> String {
    format!(
        "{}/metrics{}{}{}",
        base.trim_end_matches('/'),
        grouping_segment("job", "gatevault"),
        grouping_segment("instance", instance),
        grouping_segment("command", command)
    )
}

/// PUTs `body` (text exposition) to the Pushgateway at `base` under the grouping key of `command`
/// on `instance`, replacing what that group held.
///
/// # Errors
/// [`Error::InvalidInput`] for a URL that is not http(s); [`Error::Io`] naming the URL when the
/// Pushgateway cannot be reached or does not accept the push.
pub fn push(base: &str, instance: &str, command: &str, body: &str) -> Result<()> {
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::InvalidInput(format!(
            "Pushgateway URL {base:?} is not http:// or https://; give one like http://pushgateway:9091"
        )));
    }
    let url = push_url(base, instance, command);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let failed = |detail: String| Error::Io {
        context: format!("pushing metrics to {url}"),
        source: std::io::Error::other(detail),
    };
    match agent
        .put(&url)
        .set("Content-Type", CONTENT_TYPE)
        .send_string(body)
    {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            Err(failed(format!(
                "the Pushgateway answered {code}: {}",
                text.trim()
            )))
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn record(job: &str, id: &str, status: JobStatus) -> JobRecord {
        JobRecord {
            id: id.into(),
            job: job.into(),
            kind: "backup".into(),
            repository: "local".into(),
            status,
            started: t("2025-06-01T12:00:00Z"),
            finished: (status != JobStatus::Started).then(|| t("2025-06-01T12:00:02.500Z")),
            duration_ms: (status != JobStatus::Started).then_some(2500),
            bytes_added: (status != JobStatus::Started).then_some(1234),
            dedup_ratio: (status == JobStatus::Success).then_some(4.5),
            snapshot: None,
            exit_code: None,
            error: None,
        }
    }

    /// The value of the one line starting with `series` (name and labels as written).
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(String::from))
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut x = Exposition::new();
        x.gauge("m", "a \\ help\nline", &[("l", "a\"b\\c\nd")], 1.0);
        let out = x.finish();
        assert!(out.contains("# HELP m a \\\\ help\\nline\n"), "{out}");
        assert!(out.contains("m{l=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }

    #[test]
    fn one_family_per_name_and_no_duplicate_series() {
        let mut x = Exposition::new();
        x.gauge("a", "A.", &[("k", "1")], 1.0);
        x.gauge("b", "B.", &[], 2.0);
        x.gauge("a", "A.", &[("k", "2")], 3.0);
        x.gauge("a", "A.", &[("k", "1")], 4.0);
        let out = x.finish();
        assert_eq!(out.matches("# TYPE a gauge").count(), 1, "{out}");
        assert_eq!(
            out,
            "# HELP a A.\n# TYPE a gauge\na{k=\"1\"} 4\na{k=\"2\"} 3\n# HELP b B.\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn values_are_formatted_as_the_format_wants() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1717243200.5), "1717243200.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(dedup_ratio(100, 0), Some(f64::INFINITY));
        assert_eq!(dedup_ratio(100, 25), Some(4.0));
        assert_eq!(dedup_ratio(0, 0), None);
    }

    #[test]
    fn a_job_run_is_reported_while_running_and_after_its_end() {
        let m = Metrics::new();
        m.observe_job(&record("nightly", "r1", JobStatus::Started));
        let out = m.render();
        let l = "job_name=\"nightly\",kind=\"backup\",repository=\"local\"";
        assert_eq!(
            value(&out, &format!("gatevault_job_running{{{l}}}")).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &out,
                &format!("gatevault_job_last_status{{{l},status=\"Started\"}}")
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &out,
                &format!("gatevault_job_last_success_timestamp_seconds{{{l}}}")
            )
            .as_deref(),
            Some("0")
        );
        assert!(
            !out.contains("gatevault_job_last_duration_seconds"),
            "{out}"
        );
        m.observe_job(&record("nightly", "r1", JobStatus::Success));
        // The same end observed twice counts once.
        m.observe_job(&record("nightly", "r1", JobStatus::Success));
        let out = m.render();
        for (series, want) in [
            (format!("gatevault_job_running{{{l}}}"), "0"),
            (
                format!("gatevault_job_last_status{{{l},status=\"Success\"}}"),
                "1",
            ),
            (
                format!("gatevault_job_last_status{{{l},status=\"Started\"}}"),
                "0",
            ),
            (format!("gatevault_job_last_duration_seconds{{{l}}}"), "2.5"),
            (
                format!("gatevault_job_last_start_timestamp_seconds{{{l}}}"),
                "1748779200",
            ),
            (
                format!("gatevault_job_last_success_timestamp_seconds{{{l}}}"),
                "1748779202.5",
            ),
            (format!("gatevault_job_last_bytes_added{{{l}}}"), "1234"),
            (format!("gatevault_job_last_dedup_ratio{{{l}}}"), "4.5"),
            (
                format!("gatevault_job_runs_total{{{l},status=\"Success\"}}"),
                "1",
            ),
            (
                format!("gatevault_job_runs_total{{{l},status=\"Failed\"}}"),
                "0",
            ),
        ] {
            assert_eq!(
                value(&out, &series).as_deref(),
                Some(want),
                "{series}\n{out}"
            );
        }
        // A later failure keeps the last success time.
        m.observe_job(&record("nightly", "r2", JobStatus::Started));
        m.observe_job(&record("nightly", "r2", JobStatus::Failed));
        let out = m.render();
        assert_eq!(
            value(
                &out,
                &format!("gatevault_job_runs_total{{{l},status=\"Failed\"}}")
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &out,
                &format!("gatevault_job_last_success_timestamp_seconds{{{l}}}")
            )
            .as_deref(),
            Some("1748779202.5")
        );
        assert_eq!(
            out.matches("# TYPE gatevault_job_runs_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn check_and_drill_ages_are_computed_at_render_time() {
        let mut f = RepositoryFigures::default();
        add_records(
            &mut f,
            vec![
                Ok(
                    serde_json::json!({"type": "check", "time": "2025-06-01T10:00:00Z", "status": "Success",
                    "read_data": "none", "errors": 0, "incomplete": 0, "duration_ms": 1}),
                ),
                Ok(
                    serde_json::json!({"type": "check", "time": "2025-06-01T11:00:00Z", "status": "Failed",
                    "read_data": "none", "errors": 1, "incomplete": 0, "duration_ms": 1}),
                ),
                Ok(
                    serde_json::json!({"type": "drill", "time": "2025-06-01T09:00:00Z", "status": "Partial",
                    "recovery_ms": 1500}),
                ),
                Err(Error::integrity("record x", "bad")),
            ],
        );
        let m = Metrics::new();
        m.lock().repositories.insert(
            "r\"1".into(),
            RepositoryEntry {
                medium: Medium::Disk,
                site: Site::Offsite,
                refreshed: t("2025-06-01T12:00:00Z"),
                figures: Ok(f),
            },
        );
        let out = m.render_at(t("2025-06-01T12:00:00Z"));
        let l = "repository=\"r\\\"1\",medium=\"disk\",site=\"offsite\"";
        for (series, want) in [
            (format!("gatevault_check_age_seconds{{{l}}}"), "3600"),
            (
                format!("gatevault_check_last_status{{{l},status=\"Failed\"}}"),
                "1",
            ),
            (
                format!("gatevault_check_last_status{{{l},status=\"Success\"}}"),
                "0",
            ),
            (format!("gatevault_drill_age_seconds{{{l}}}"), "10800"),
            (
                format!("gatevault_drill_last_status{{{l},status=\"Partial\"}}"),
                "1",
            ),
            (
                format!("gatevault_drill_last_recovery_seconds{{{l}}}"),
                "1.5",
            ),
            (format!("gatevault_repository_up{{{l}}}"), "1"),
        ] {
            assert_eq!(
                value(&out, &series).as_deref(),
                Some(want),
                "{series}\n{out}"
            );
        }
    }

    #[test]
    fn the_http_answers() {
        let m = Metrics::new();
        let ok = String::from_utf8(respond(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", &m)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE) && ok.contains("gatevault_build_info{version="));
        let head = String::from_utf8(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &m)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && !head.contains("gatevault_build_info"));
        let nf = String::from_utf8(respond(b"GET /nope HTTP/1.1\r\n\r\n", &m)).unwrap();
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let post = String::from_utf8(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &m)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let bad = String::from_utf8(respond(b"garbage\r\n\r\n", &m)).unwrap();
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    }

    #[test]
    fn grouping_key_values_that_are_not_plain_are_base64url() {
        assert_eq!(
            push_url("http://pg:9091/", "host-1.lan", "backup"),
            "http://pg:9091/metrics/job/gatevault/instance/host-1.lan/command/backup"
        );
        assert_eq!(
            push_url("http://pg:9091", "a/b", "backup"),
            "http://pg:9091/metrics/job/gatevault/instance@base64/YS9i/command/backup"
        );
        assert_eq!(
            push_url("http://pg", "", "check"),
            "http://pg/metrics/job/gatevault/instance@base64/=/command/check"
        );
    }

    #[test]
    fn a_command_run_says_how_it_ended() {
        let run = CommandRun {
            command: "backup".into(),
            repository: "/r".into(),
            started: t("2025-06-01T12:00:00Z"),
            ended: t("2025-06-01T12:00:01.250Z"),
            exit_code: 1,
            bytes_added: None,
            dedup_ratio: None,
        };
        let out = command_exposition(&run);
        let l = "command=\"backup\",repository=\"/r\"";
        assert_eq!(
            value(
                &out,
                &format!("gatevault_command_last_status{{{l},status=\"Failed\"}}")
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &out,
                &format!("gatevault_command_last_duration_seconds{{{l}}}")
            )
            .as_deref(),
            Some("1.25")
        );
        assert!(!out.contains("gatevault_command_last_success_timestamp_seconds"));
        assert!(!out.contains("gatevault_command_last_bytes_added"));
    }
}
