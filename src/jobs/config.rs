//! The scheduled jobs of the config file: `[daemon]`, `[alerts]` and `[jobs.NAME]`, validated.
//!
//! `crate::profile::Config` keeps these tables as written so that commands that do not run jobs are
//! never stopped by them; [`JobsConfig::from_config`] validates them strictly for the commands that
//! do (`daemon`, `jobs`): unknown keys, keys of another job type, bad cron expressions, unknown time
//! zones and unknown repositories are refused with the job and the key named. Each job becomes the
//! command lines a user could type ([`JobConfig::steps`]). See `docs/automation.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::profile::Config;

/// The type of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    /// `gatevault backup` (files, or a gateway with `--gateway`), to a repository or a profile.
    Backup,
    /// `gatevault forget` with a keep-policy (and `--prune`).
    Forget,
    /// `gatevault copy` from the job's repository to each of `to`.
    Copy,
    /// `gatevault check`, with a data subset or a scrub cycle.
    Check,
    /// `gatevault drill`: a (random) restore drill with probes.
    Drill,
}

impl JobKind {
    /// The name used in the config file, records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Forget => "forget",
            JobKind::Copy => "copy",
            JobKind::Check => "check",
            JobKind::Drill => "drill",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "backup" => JobKind::Backup,
            "forget" => JobKind::Forget,
            "copy" => JobKind::Copy,
            "check" => JobKind::Check,
            "drill" => JobKind::Drill,
            _ => return None,
        })
    }

    /// The keys a job of this type may have besides the common ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            JobKind::Backup => &[
                "profile", "paths", "gateway", "endpoint", "file", "tags", "host", "label",
            ],
            JobKind::Forget => &[
                "tags",
                "keep_last",
                "keep_hourly",
                "keep_daily",
                "keep_weekly",
                "keep_monthly",
                "keep_yearly",
                "keep_within",
                "group_by",
                "prune",
            ],
            JobKind::Copy => &["to", "tags"],
            JobKind::Check => &["read_data", "read_data_subset", "scrub_cycle"],
            JobKind::Drill => &[
                "tags",
                "random",
                "to_gateway",
                "endpoint",
                "probes",
                "probe_base_url",
                "report_dir",
            ],
        }
    }
}

/// Keys every job may have.
const COMMON_KEYS: &[&str] = &[
    "type",
    "repository",
    "schedule",
    "timezone",
    "max_duration",
    "rpo",
    "args",
];

/// A cron schedule in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The expression as written.
    pub expr: String,
    /// The zone its fields are read in.
    pub tz: Tz,
    cron: Cron,
}

impl Schedule {
    /// Parses `expr` (5 fields, or 6 with seconds first; `@hourly`-style nicknames too) in `tz`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the expression and what is wrong with it.
    pub fn new(expr: &str, tz: Tz) -> Result<Self> {
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(Error::InvalidInput(format!(
                "cron expression {expr:?} has {fields} fields; give 5 (minute hour day month weekday) or 6 (with seconds first)"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| Error::InvalidInput(format!("cron expression {expr:?}: {e}")))?;
        Ok(Self {
            expr: expr.trim().to_string(),
            tz,
            cron,
        })
    }

    /// The first time strictly after `after` that the schedule names (wall-clock fields read in
    /// the schedule's zone: a time skipped by a DST change is not run, a repeated one runs once).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: the search keeps the fraction of its starting point.
        let after = after.with_nanosecond(0).unwrap_or(after);
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// `[daemon]`: how the daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    /// Where the job records are kept (`<state_dir>/jobs/`).
    pub state_dir: PathBuf,
    /// The default zone of schedules.
    pub timezone: Tz,
    /// Upper bound of the random delay added to each scheduled start.
    pub jitter: Duration,
    /// How long a SIGTERM to the daemon waits for running jobs before killing them.
    pub shutdown_grace: Duration,
    /// How long a job past its `max_duration` has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// Which events raise an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    /// A run ended Failed.
    Failed,
    /// A run went past its `max_duration`.
    MaxDuration,
    /// No successful run within the job's `rpo`.
    Rpo,
}

impl AlertKind {
    /// The name used in `[alerts] on` and in the alert's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failed => "failed",
            AlertKind::MaxDuration => "max_duration",
            AlertKind::Rpo => "rpo",
        }
    }
}

/// `[alerts]`: the hooks.
#[derive(Clone, Debug, Default)]
pub struct AlertSettings {
    /// A command (program and arguments) run with the alert's JSON on standard input.
    pub command: Option<Vec<String>>,
    /// A URL the alert's JSON is POSTed to.
    pub webhook: Option<String>,
    /// The events that raise alerts (default: all).
    pub on: BTreeSet<AlertKind>,
    /// How long a hook may take.
    pub timeout: Duration,
}

/// One validated job.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Its name (`[jobs.NAME]`).
    pub name: String,
    /// Its type.
    pub kind: JobKind,
    /// The repository it is recorded under: its `repository`, or the primary of its `profile`.
    pub repository: String,
    /// Every repository it reads or writes: no other job touching one of them runs at once.
    pub touches: BTreeSet<String>,
    /// When it runs.
    pub schedule: Schedule,
    /// How long one run may take.
    pub max_duration: Option<Duration>,
    /// Alert when no run succeeded within this long.
    pub rpo: Option<Duration>,
    /// The command lines of one run (after the global options): run in turn, all must succeed.
    pub steps: Vec<Vec<String>>,
}

/// Everything the daemon needs from the config file.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// The config file they come from (passed to each job with `--config`).
    pub path: PathBuf,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[alerts]`.
    pub alerts: AlertSettings,
    /// `[jobs.NAME]` by name.
    pub jobs: BTreeMap<String, JobConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<PathBuf>,
    timezone: Option<String>,
    jitter: Option<String>,
    shutdown_grace: Option<String>,
    kill_grace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    command: Option<Vec<String>>,
    webhook: Option<String>,
    on: Option<Vec<String>>,
    timeout: Option<String>,
}

/// Every key any job type knows; which apply to which type is checked after parsing.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJob {
    #[serde(rename = "type")]
    kind: Option<String>,
    repository: Option<String>,
    profile: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    max_duration: Option<String>,
    rpo: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    // backup
    #[serde(default)]
    paths: Vec<PathBuf>,
    gateway: Option<String>,
    endpoint: Option<String>,
    file: Option<PathBuf>,
    #[serde(default)]
    tags: Vec<String>,
    host: Option<String>,
    label: Option<String>,
    // forget
    keep_last: Option<i64>,
    keep_hourly: Option<i64>,
    keep_daily: Option<i64>,
    keep_weekly: Option<i64>,
    keep_monthly: Option<i64>,
    keep_yearly: Option<i64>,
    keep_within: Option<String>,
    group_by: Option<String>,
    prune: Option<bool>,
    // copy
    #[serde(default)]
    to: Vec<String>,
    // check
    read_data: Option<bool>,
    read_data_subset: Option<String>,
    scrub_cycle: Option<String>,
    // drill
    random: Option<bool>,
    to_gateway: Option<String>,
    probes: Option<PathBuf>,
    probe_base_url: Option<String>,
    report_dir: Option<PathBuf>,
}

/// Parses a duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`, `w`), or several (`1h30m`).
///
/// # Errors
/// [`Error::InvalidInput`] for anything else.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::InvalidInput(format!(
            "duration {s:?}: give a number and a unit, like 30s, 10m, 1h, 7d or 1h30m"
        ))
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => return Err(bad()),
        };
        total += unit
            .checked_mul(u32::try_from(n).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Prints a duration the way the config file writes it (`10m`, `1h30m`, `1.5s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{}s", d.as_secs_f64());
    }
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

/// The default state folder: `$XDG_STATE_HOME/gatevault`, else `~/.local/state/gatevault`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("gatevault")
}

fn zone(s: &str) -> std::result::Result<Tz, String> {
    Tz::from_str(s.trim()).map_err(|_| {
        format!("unknown time zone {s:?}; give an IANA name like \"UTC\" or \"Europe/Berlin\"")
    })
}

impl JobsConfig {
    /// Validates the job tables of `config`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the config file, the job and the key.
    pub fn from_config(config: &Config) -> Result<Self> {
        let file = config.path.display().to_string();
        let bad = |msg: String| Error::InvalidInput(format!("config file {file}: {msg}"));
        let base = config
            .path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let toml_err = |what: &str, e: toml::de::Error| {
            bad(format!(
                "[{what}]: {}",
                e.message().trim_end().replace('\n', " ")
            ))
        };
        let a = &config.automation;
        let d: RawDaemon = match &a.daemon {
            Some(t) => t.clone().try_into().map_err(|e| toml_err("daemon", e))?,
            None => RawDaemon {
                state_dir: None,
                timezone: None,
                jitter: None,
                shutdown_grace: None,
                kill_grace: None,
            },
        };
        let dur = |key: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            match v {
                Some(s) => parse_duration(s).map_err(|e| bad(format!("{key}: {e}"))),
                None => Ok(default),
            }
        };
        let daemon = DaemonSettings {
            state_dir: d.state_dir.map(resolve).unwrap_or_else(default_state_dir),
            timezone: match &d.timezone {
                Some(z) => zone(z).map_err(|e| bad(format!("daemon.timezone: {e}")))?,
                None => Tz::UTC,
            },
            jitter: dur("daemon.jitter", &d.jitter, Duration::ZERO)?,
            shutdown_grace: dur(
                "daemon.shutdown_grace",
                &d.shutdown_grace,
                Duration::from_secs(60),
            )?,
            kill_grace: dur("daemon.kill_grace", &d.kill_grace, Duration::from_secs(10))?,
        };
        let al: Option<RawAlerts> = match &a.alerts {
            Some(t) => Some(t.clone().try_into().map_err(|e| toml_err("alerts", e))?),
            None => None,
        };
        let mut alerts = AlertSettings {
            on: [AlertKind::Failed, AlertKind::MaxDuration, AlertKind::Rpo].into(),
            timeout: Duration::from_secs(10),
            ..AlertSettings::default()
        };
        if let Some(al) = al {
            if let Some(c) = &al.command {
                if c.is_empty() || c[0].trim().is_empty() {
                    return Err(bad(
                        "alerts.command is empty; give the program and its arguments, like [\"/usr/local/bin/page\", \"--team\", \"ops\"]".into(),
                    ));
                }
            }
            if let Some(w) = &al.webhook {
                if !(w.starts_with("http://") || w.starts_with("https://")) {
                    return Err(bad(format!(
                        "alerts.webhook {w:?} is not an http:// or https:// URL"
                    )));
                }
            }
            if let Some(on) = &al.on {
                alerts.on.clear();
                for o in on {
                    alerts.on.insert(match o.as_str() {
                        "failed" => AlertKind::Failed,
                        "max_duration" => AlertKind::MaxDuration,
                        "rpo" => AlertKind::Rpo,
                        _ => {
                            return Err(bad(format!(
                                "alerts.on: unknown event {o:?}; give failed, max_duration or rpo"
                            )))
                        }
                    });
                }
            }
            alerts.timeout = dur("alerts.timeout", &al.timeout, alerts.timeout)?;
            alerts.command = al.command;
            alerts.webhook = al.webhook;
        }
        let mut jobs = BTreeMap::new();
        for (name, v) in a.jobs.iter().flatten() {
            let key = format!("jobs.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad(format!(
                    "[{key}]: a job name may hold only letters, digits, '-', '_' and '.'"
                )));
            }
            let Some(t) = v.as_table() else {
                return Err(bad(format!("{key} must be a table ([{key}])")));
            };
            let raw: RawJob = t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| toml_err(&key, e))?;
            let job = build_job(config, &daemon, name, t, raw, &resolve)
                .map_err(|msg| bad(format!("{key}.{msg}")))?;
            jobs.insert(name.clone(), job);
        }
        Ok(Self {
            path: config.path.clone(),
            daemon,
            alerts,
            jobs,
        })
    }
}

/// Validates one job; an error starts with the key at fault (`schedule: ...`).
fn build_job(
    config: &Config,
    daemon: &DaemonSettings,
    name: &str,
    table: &toml::Table,
    r: RawJob,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> std::result::Result<JobConfig, String> {
    let kind_s = r
        .kind
        .as_deref()
        .ok_or("type: missing; give backup, forget, copy, check or drill")?;
    let kind = JobKind::parse(kind_s).ok_or_else(|| {
        format!("type: unknown job type {kind_s:?}; give backup, forget, copy, check or drill")
    })?;
    for k in table.keys() {
        if !COMMON_KEYS.contains(&k.as_str()) && !kind.keys().contains(&k.as_str()) {
            return Err(format!(
                "{k}: not a key of {} jobs (they take: {})",
                kind.as_str(),
                COMMON_KEYS
                    .iter()
                    .chain(kind.keys())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let known_repo = |field: &str, repo: &str| -> std::result::Result<(), String> {
        if config.repositories.contains_key(repo) {
            Ok(())
        } else {
            Err(format!(
                "{field}: repository {repo:?} is not configured (configured: {}); add a [repositories.{repo}] table",
                if config.repositories.is_empty() {
                    "none".to_string()
                } else {
                    config.repositories.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        }
    };
    let tz = match &r.timezone {
        Some(z) => zone(z).map_err(|e| format!("timezone: {e}"))?,
        None => daemon.timezone,
    };
    let expr = r
        .schedule
        .as_deref()
        .ok_or("schedule: missing; give a cron expression like \"0 3 * * *\"")?;
    let schedule = Schedule::new(expr, tz).map_err(|e| format!("schedule: {}", inner(&e)))?;
    if schedule.next_after(Utc::now()).is_none() {
        return Err(format!("schedule: {expr:?} never runs"));
    }
    let dur = |k: &str, v: &Option<String>| -> std::result::Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| parse_duration(s).map_err(|e| format!("{k}: {}", inner(&e))))
            .transpose()
    };
    let max_duration = dur("max_duration", &r.max_duration)?;
    let rpo = dur("rpo", &r.rpo)?;
    if max_duration == Some(Duration::ZERO) || rpo == Some(Duration::ZERO) {
        return Err("max_duration/rpo: a duration of 0 never holds; give a positive one".into());
    }
    let mut touches = BTreeSet::new();
    let mut global: Vec<String> = Vec::new();
    let repository = match (&r.repository, &r.profile) {
        (Some(_), Some(_)) => return Err("profile: give repository or profile, not both".into()),
        (None, Some(p)) => {
            let prof = config.profiles.get(p).ok_or_else(|| {
                format!(
                    "profile: profile {p:?} is not configured (configured: {})",
                    if config.profiles.is_empty() {
                        "none".to_string()
                    } else {
                        config
                            .profiles
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            })?;
            touches.extend(prof.repositories().map(str::to_string));
            prof.primary.clone()
        }
        (Some(repo), None) => {
            known_repo("repository", repo)?;
            touches.insert(repo.clone());
            global.extend(["-r".into(), format!("config:{repo}")]);
            repo.clone()
        }
        (None, None) => {
            return Err(format!(
                "repository: missing; give the [repositories.NAME] the {} job works on{}",
                kind.as_str(),
                if kind == JobKind::Backup {
                    " (or a profile)"
                } else {
                    ""
                }
            ))
        }
    };
    let mut cmd: Vec<String> = vec![kind.as_str().to_string()];
    let tag_args = |cmd: &mut Vec<String>| {
        for t in &r.tags {
            cmd.extend(["--tag".into(), t.clone()]);
        }
    };
    let mut steps = Vec::new();
    match kind {
        JobKind::Backup => {
            if let Some(p) = &r.profile {
                cmd.extend(["--profile".into(), p.clone()]);
            }
            match (&r.gateway, r.paths.is_empty()) {
                (Some(_), false) => {
                    return Err("paths: give paths or gateway, not both".into());
                }
                (None, true) => {
                    return Err(
                        "paths: missing; give paths = [\"/etc/kong/kong.yml\"] or gateway = \"KIND\" with endpoint or file".into(),
                    )
                }
                (None, false) => {
                    if r.endpoint.is_some() || r.file.is_some() {
                        return Err("endpoint: endpoint and file go with gateway".into());
                    }
                }
                (Some(g), true) => {
                    cmd.extend(["--gateway".into(), g.clone()]);
                    if let Some(e) = &r.endpoint {
                        cmd.extend(["--endpoint".into(), e.clone()]);
                    }
                    if let Some(f) = &r.file {
                        cmd.extend(["--file".into(), path_arg(resolve(f.clone()))]);
                    }
                }
            }
            tag_args(&mut cmd);
            if let Some(h) = &r.host {
                cmd.extend(["--host".into(), h.clone()]);
            }
            if let Some(l) = &r.label {
                cmd.extend(["--label".into(), l.clone()]);
            }
            cmd.extend(r.args.iter().cloned());
            cmd.extend(r.paths.iter().map(|p| path_arg(resolve(p.clone()))));
            steps.push(with_global(&global, cmd));
        }
        JobKind::Forget => {
            let mut any = false;
            for (k, v) in [
                ("keep-last", r.keep_last),
                ("keep-hourly", r.keep_hourly),
                ("keep-daily", r.keep_daily),
                ("keep-weekly", r.keep_weekly),
                ("keep-monthly", r.keep_monthly),
                ("keep-yearly", r.keep_yearly),
            ] {
                if let Some(n) = v {
                    if n < -1 {
                        return Err(format!(
                            "{}: {n} is not a count; give N >= 0, or -1 for all",
                            k.replace('-', "_")
                        ));
                    }
                    cmd.extend([format!("--{k}"), n.to_string()]);
                    any = true;
                }
            }
            if let Some(w) = &r.keep_within {
                cmd.extend(["--keep-within".into(), w.clone()]);
                any = true;
            }
            if !any {
                return Err("keep_daily: no keep-policy; a forget job needs at least one keep_* key (keep_daily = 30, ...)".into());
            }
            if let Some(g) = &r.group_by {
                cmd.extend(["--group-by".into(), g.clone()]);
            }
            tag_args(&mut cmd);
            if r.prune.unwrap_or(false) {
                cmd.push("--prune".into());
            }
            cmd.extend(r.args.iter().cloned());
            steps.push(with_global(&global, cmd));
        }
        JobKind::Copy => {
            if r.to.is_empty() {
                return Err(
                    "to: missing; give the repositories to copy to, like to = [\"offsite\"]".into(),
                );
            }
            let mut seen = BTreeSet::new();
            for dst in &r.to {
                known_repo("to", dst)?;
                if dst == &repository || !seen.insert(dst) {
                    return Err(format!(
                        "to: repository {dst:?} is named twice, or is the source"
                    ));
                }
                touches.insert(dst.clone());
                let mut c = vec![
                    "-r".into(),
                    format!("config:{dst}"),
                    "copy".into(),
                    "--from-repo".into(),
                    format!("config:{repository}"),
                ];
                for t in &r.tags {
                    c.extend(["--tag".into(), t.clone()]);
                }
                c.extend(r.args.iter().cloned());
                steps.push(c);
            }
        }
        JobKind::Check => {
            let n = [
                r.read_data == Some(true),
                r.read_data_subset.is_some(),
                r.scrub_cycle.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n > 1 {
                return Err(
                    "read_data_subset: give one of read_data, read_data_subset and scrub_cycle"
                        .into(),
                );
            }
            if r.read_data == Some(true) {
                cmd.push("--read-data".into());
            }
            if let Some(s) = &r.read_data_subset {
                s.parse::<crate::check::ReadData>()
                    .map_err(|e| format!("read_data_subset: {}", inner(&e)))?;
                cmd.extend(["--read-data-subset".into(), s.clone()]);
            }
            if let Some(c) = &r.scrub_cycle {
                let d = parse_duration(c).map_err(|e| format!("scrub_cycle: {}", inner(&e)))?;
                let days = d.as_secs().div_ceil(86_400).max(1);
                cmd.extend(["--scrub-cycle".into(), format!("{days}d")]);
            }
            cmd.extend(r.args.iter().cloned());
            steps.push(with_global(&global, cmd));
        }
        JobKind::Drill => {
            if r.random.unwrap_or(true) {
                cmd.push("--random".into());
            }
            tag_args(&mut cmd);
            if let Some(g) = &r.to_gateway {
                cmd.extend(["--to-gateway".into(), g.clone()]);
                if let Some(e) = &r.endpoint {
                    cmd.extend(["--endpoint".into(), e.clone()]);
                }
            } else if r.endpoint.is_some() {
                return Err("endpoint: goes with to_gateway".into());
            }
            match (&r.probes, &r.probe_base_url) {
                (Some(p), Some(u)) => {
                    cmd.extend([
                        "--probes".into(),
                        path_arg(resolve(p.clone())),
                        "--probe-base-url".into(),
                        u.clone(),
                    ]);
                }
                (None, None) => {}
                _ => return Err("probes: probes and probe_base_url go together".into()),
            }
            let report = r
                .report_dir
                .clone()
                .map(resolve)
                .unwrap_or_else(|| daemon.state_dir.join("drills"));
            cmd.extend(["--report-dir".into(), path_arg(report)]);
            cmd.extend(r.args.iter().cloned());
            steps.push(with_global(&global, cmd));
        }
    }
    Ok(JobConfig {
        name: name.to_string(),
        kind,
        repository,
        touches,
        schedule,
        max_duration,
        rpo,
        steps,
    })
}

fn with_global(global: &[String], cmd: Vec<String>) -> Vec<String> {
    global.iter().cloned().chain(cmd).collect()
}

fn path_arg(p: PathBuf) -> String {
    p.display().to_string()
}

/// The message of an error without its variant's prefix.
fn inner(e: &Error) -> String {
    match e {
        Error::InvalidInput(m) => m.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<JobsConfig> {
        let c = Config::parse(text, Path::new("/etc/gatevault/config.toml"))?;
        JobsConfig::from_config(&c)
    }

    const REPOS: &str = r#"
[repositories.local]
location = "/srv/gv"
[repositories.offsite]
location = "/mnt/offsite"
[profiles.prod]
primary = "local"
copies = ["offsite"]
"#;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_full_job_file_parses_into_command_lines() {
        let text = format!(
            "{REPOS}\n{}",
            r#"
[daemon]
state_dir = "state"
timezone = "Europe/Berlin"
jitter = "30s"
shutdown_grace = "1m"

[alerts]
command = ["/usr/local/bin/page", "--team", "platform"]
webhook = "https://hooks.example/gatevault"
on = ["failed", "rpo"]

[jobs.kong]
type = "backup"
profile = "prod"
gateway = "kong"
endpoint = "http://kong:8001"
tags = ["Environment=prod"]
schedule = "0 */15 * * * *"
timezone = "UTC"
max_duration = "10m"
rpo = "1h"
args = ["--label", "nightly"]

[jobs.files]
type = "backup"
repository = "local"
paths = ["etc/kong.yml"]
schedule = "*/5 * * * *"

[jobs.retention]
type = "forget"
repository = "local"
keep_daily = 30
keep_weekly = 12
prune = true
schedule = "0 4 * * *"

[jobs.offsite]
type = "copy"
repository = "local"
to = ["offsite"]
schedule = "@hourly"

[jobs.scrub]
type = "check"
repository = "offsite"
scrub_cycle = "30d"
schedule = "0 2 * * *"

[jobs.drill]
type = "drill"
repository = "local"
schedule = "0 5 * * 1"
"#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.daemon.state_dir, Path::new("/etc/gatevault/state"));
        assert_eq!(c.daemon.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(c.daemon.jitter, Duration::from_secs(30));
        assert_eq!(c.alerts.on.len(), 2);
        let k = &c.jobs["kong"];
        assert_eq!(k.repository, "local");
        assert_eq!(
            k.touches.iter().map(String::as_str).collect::<Vec<_>>(),
            ["local", "offsite"]
        );
        assert_eq!(
            k.steps,
            [[
                "backup",
                "--profile",
                "prod",
                "--gateway",
                "kong",
                "--endpoint",
                "http://kong:8001",
                "--tag",
                "Environment=prod",
                "--label",
                "nightly"
            ]]
        );
        assert_eq!(k.max_duration, Some(Duration::from_secs(600)));
        assert_eq!(k.schedule.tz, Tz::UTC);
        let f = &c.jobs["files"];
        assert_eq!(
            f.steps[0],
            [
                "-r",
                "config:local",
                "backup",
                "/etc/gatevault/etc/kong.yml"
            ]
        );
        assert_eq!(f.schedule.tz, chrono_tz::Europe::Berlin, "the default zone");
        assert_eq!(
            c.jobs["retention"].steps[0],
            [
                "-r",
                "config:local",
                "forget",
                "--keep-daily",
                "30",
                "--keep-weekly",
                "12",
                "--prune"
            ]
        );
        assert_eq!(
            c.jobs["offsite"].steps[0],
            [
                "-r",
                "config:offsite",
                "copy",
                "--from-repo",
                "config:local"
            ]
        );
        assert_eq!(
            c.jobs["scrub"].steps[0],
            ["-r", "config:offsite", "check", "--scrub-cycle", "30d"]
        );
        assert!(c.jobs["drill"].steps[0].contains(&"--random".to_string()));
    }

    #[test]
    fn validation_names_the_job_and_the_key() {
        let cases = [
            ("type = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"61 * * * *\"", "jobs.j.schedule"),
            ("type = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"* * *\"", "jobs.j.schedule"),
            ("type = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"* * * * *\"\ntimezone = \"Mars/Olympus\"", "jobs.j.timezone"),
            ("type = \"backup\"\nrepository = \"nowhere\"\npaths = [\"/x\"]\nschedule = \"* * * * *\"", "jobs.j.repository"),
            ("type = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"* * * * *\"\ncolour = \"red\"", "colour"),
            ("type = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"* * * * *\"\nto = [\"offsite\"]", "jobs.j.to"),
            ("type = \"backup\"\nrepository = \"local\"\nschedule = \"* * * * *\"", "jobs.j.paths"),
            ("type = \"backup\"\nprofile = \"dev\"\npaths = [\"/x\"]\nschedule = \"* * * * *\"", "jobs.j.profile"),
            ("type = \"snapshot\"\nrepository = \"local\"\nschedule = \"* * * * *\"", "jobs.j.type"),
            ("type = \"copy\"\nrepository = \"local\"\nto = [\"local\"]\nschedule = \"* * * * *\"", "jobs.j.to"),
            ("type = \"forget\"\nrepository = \"local\"\nschedule = \"* * * * *\"", "jobs.j.keep_daily"),
            ("type = \"check\"\nrepository = \"local\"\nschedule = \"* * * * *\"\nread_data_subset = \"7/5\"", "jobs.j.read_data_subset"),
            ("type = \"check\"\nrepository = \"local\"\nschedule = \"* * * * *\"\nmax_duration = \"10 minutes\"", "jobs.j.max_duration"),
            ("type = \"check\"\nrepository = \"local\"", "jobs.j.schedule"),
        ];
        for (body, want) in cases {
            let e = parse(&format!("{REPOS}\n[jobs.j]\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want) && e.contains("/etc/gatevault/config.toml"),
                "{body}\n-> {e}"
            );
            if want == "colour" {
                assert!(e.contains("jobs.j"), "{e}");
            }
        }
        let e = parse(&format!("{REPOS}\n[daemon]\ntimezone = \"Nowhere\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("daemon.timezone"), "{e}");
        let e = parse(&format!("{REPOS}\n[alerts]\non = [\"sometimes\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("alerts.on") && e.contains("sometimes"), "{e}");
        let e = parse(&format!("{REPOS}\n[alerts]\nwebhook = \"ftp://x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("alerts.webhook"), "{e}");
    }

    #[test]
    fn an_old_config_file_still_parses_and_has_no_jobs() {
        let c = parse(REPOS).unwrap();
        assert!(c.jobs.is_empty());
        assert_eq!(c.daemon.timezone, Tz::UTC);
        assert_eq!(c.alerts.on.len(), 3);
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        for b in ["", "10", "m", "5y", "1.5h", "-3s"] {
            assert!(parse_duration(b).is_err(), "{b:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn schedules_follow_the_wall_clock_of_their_zone_across_dst() {
        let berlin = Schedule::new("30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        // Winter: 02:30 CET is 01:30 UTC.
        assert_eq!(
            berlin.next_after(utc("2025-01-10T12:00:00Z")),
            Some(utc("2025-01-11T01:30:00Z"))
        );
        // Summer: 02:30 CEST is 00:30 UTC.
        assert_eq!(
            berlin.next_after(utc("2025-07-10T12:00:00Z")),
            Some(utc("2025-07-11T00:30:00Z"))
        );
        // 2025-03-30: clocks go from 02:00 to 03:00, so 02:30 does not exist that day; the next
        // run is never before the gap and always a real instant after it.
        let n = berlin.next_after(utc("2025-03-29T12:00:00Z")).unwrap();
        assert!(n > utc("2025-03-30T00:59:59Z"), "{n}");
        assert!(n <= utc("2025-03-31T00:30:00Z"), "{n}");
        // An hourly schedule across the spring-forward hour: consecutive runs stay one real hour
        // apart in UTC.
        let hourly = Schedule::new("0 * * * *", chrono_tz::Europe::Berlin).unwrap();
        let a = hourly.next_after(utc("2025-03-30T00:30:00Z")).unwrap();
        let b = hourly.next_after(a).unwrap();
        assert_eq!(a, utc("2025-03-30T01:00:00Z"), "03:00 CEST");
        assert_eq!(b - a, chrono::Duration::hours(1));
        // Autumn: 02:30 happens twice on 2025-10-26; it runs once.
        let first = berlin.next_after(utc("2025-10-25T12:00:00Z")).unwrap();
        let second = berlin.next_after(first).unwrap();
        assert_eq!(first, utc("2025-10-26T00:30:00Z"), "02:30 CEST");
        assert_eq!(
            second,
            utc("2025-10-27T01:30:00Z"),
            "the next day, 02:30 CET"
        );
        // Six fields: seconds.
        let every2 = Schedule::new("*/2 * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            every2.next_after(utc("2025-01-01T00:00:01Z")),
            Some(utc("2025-01-01T00:00:02Z"))
        );
        assert_eq!(
            every2.next_after(utc("2025-01-01T00:00:02.750Z")),
            Some(utc("2025-01-01T00:00:04Z")),
            "on the second, not at the fraction of the starting point"
        );
        // New York, same expression, other offsets.
        let ny = Schedule::new("30 2 * * *", chrono_tz::America::New_York).unwrap();
        assert_eq!(
            ny.next_after(utc("2025-01-10T12:00:00Z")),
            Some(utc("2025-01-11T07:30:00Z"))
        );
    }
}
