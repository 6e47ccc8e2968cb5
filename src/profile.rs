//! Profiles: the TOML config file that names repositories (with their medium, site and region) and
//! profiles (a primary repository and the repositories it is copied to); the region policy; and the
//! 3-2-1 rule evaluated over what each repository of a profile holds.
//!
//! The file is read only by the commands that need it (`backup --profile`, `status --3-2-1`,
//! `-r config:NAME`), so a broken or absent config file never gets in the way of the others. The
//! 3-2-1 verdict is a pure function ([`evaluate`]) of constructed inputs, so that every way the rule
//! can break is unit tested without a store. See `docs/profiles.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::check::Status;
use crate::error::{Error, Result};
use crate::format::{Origin, Snapshot};
use crate::id::SnapshotId;

/// The environment variable naming the config file (the `--config` option wins over it).
pub const CONFIG_ENV: &str = "GATEVAULT_CONFIG";

/// The prefix of a `-r` location that names a configured repository (`-r config:offsite`).
pub const CONFIG_LOCATION_PREFIX: &str = "config:";

/// Where the config file is looked for when neither `--config` nor `GATEVAULT_CONFIG` names one:
/// `$XDG_CONFIG_HOME/gatevault/config.toml`, else `~/.config/gatevault/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("gatevault").join("config.toml"))
}

/// The kind of storage a repository is on; the 3-2-1 rule wants copies on at least two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Medium {
    /// A disk (a local or mounted folder).
    #[serde(rename = "disk")]
    Disk,
    /// An object store (S3, Azure Blob, S3-compatible).
    #[serde(rename = "object-store")]
    ObjectStore,
    /// A tape or another medium kept offline.
    #[serde(rename = "tape/offline")]
    TapeOffline,
}

impl Medium {
    /// The name used in the config file and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Disk => "disk",
            Medium::ObjectStore => "object-store",
            Medium::TapeOffline => "tape/offline",
        }
    }
}

/// Whether a repository is on the site of the data it protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    /// On the same site.
    Onsite,
    /// Elsewhere: a disaster at the site does not reach it.
    Offsite,
}

impl Site {
    /// The name used in the config file and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Onsite => "onsite",
            Site::Offsite => "offsite",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    repositories: BTreeMap<String, RawRepository>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
    // Scheduled jobs (`[daemon]`, `[alerts]`, `[jobs.NAME]`): kept as TOML here and validated by
    // `crate::jobs::config`, so that a command that does not run jobs is not stopped by them.
    daemon: Option<toml::Table>,
    alerts: Option<toml::Table>,
    jobs: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    location: String,
    medium: Option<Medium>,
    site: Option<Site>,
    region: Option<String>,
    #[serde(alias = "password-file")]
    password_file: Option<PathBuf>,
    #[serde(alias = "password-command")]
    password_command: Option<String>,
    #[serde(alias = "key-file")]
    key_file: Option<PathBuf>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(alias = "require-region")]
    require_region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    primary: String,
    #[serde(default)]
    copies: Vec<String>,
    #[serde(alias = "require-region")]
    require_region: Option<String>,
}

/// A repository named in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryConfig {
    /// Its name in the file (`[repositories.NAME]`).
    pub name: String,
    /// Its location, as `-r` takes it; a relative folder is resolved against the config file's folder.
    pub location: String,
    /// Its medium (default: `object-store` for `s3:`/`azure:` locations, `disk` otherwise).
    pub medium: Medium,
    /// Its site (default: `onsite`, so that nothing is taken for offsite unless declared).
    pub site: Site,
    /// The region it declares, used when the store does not tell its own.
    pub region: Option<String>,
    /// Password file (resolved against the config file's folder).
    pub password_file: Option<PathBuf>,
    /// Command printing the password.
    pub password_command: Option<String>,
    /// Key file (resolved against the config file's folder).
    pub key_file: Option<PathBuf>,
    /// Backend options, as `-o KEY=VALUE` gives them.
    pub options: BTreeMap<String, String>,
    /// The region pattern this repository must be in.
    pub require_region: Option<RegionPattern>,
}

impl RepositoryConfig {
    /// Whether the config gives credentials of its own (they replace those of the command line).
    pub fn has_credentials(&self) -> bool {
        self.password_file.is_some() || self.password_command.is_some() || self.key_file.is_some()
    }
}

/// A profile: where a backup is written first and where it is copied afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Its name (`[profiles.NAME]`).
    pub name: String,
    /// The repository backed up to.
    pub primary: String,
    /// The repositories each new snapshot is copied to, in order.
    pub copies: Vec<String>,
    /// The region pattern every repository of the profile must be in.
    pub require_region: Option<RegionPattern>,
}

impl Profile {
    /// The primary, then the copies.
    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.primary.as_str()).chain(self.copies.iter().map(String::as_str))
    }
}

/// The parsed, validated config file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Repositories by name.
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// The `[daemon]`, `[alerts]` and `[jobs]` tables as written (validated by
    /// `crate::jobs::config::JobsConfig::from_config`).
    pub automation: Automation,
}

/// The scheduled-jobs tables of the config file, unvalidated (see `docs/automation.md`).
#[derive(Clone, Debug, Default)]
pub struct Automation {
    /// `[daemon]`: state folder, default time zone, jitter, shutdown grace.
    pub daemon: Option<toml::Table>,
    /// `[alerts]`: the hooks run when a job fails, runs too long or misses its RPO.
    pub alerts: Option<toml::Table>,
    /// `[jobs.NAME]`: one table per job.
    pub jobs: Option<toml::Table>,
}

fn is_remote(location: &str) -> bool {
    match location.split_once(':') {
        Some((scheme, _)) => scheme != "local" && scheme.len() > 1 && !scheme.contains('/'),
        None => false,
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the file when it cannot be read, is not valid TOML, has a key
    /// this version does not know, or names what does not exist (see [`Config::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read config file {}: {e} (give another one with --config or {CONFIG_ENV})",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text read from `path` (relative paths in it are resolved against
    /// the folder of `path`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the file and the key: unknown keys, bad medium or site values,
    /// a profile naming an unknown repository, a repository both primary and copy, two password
    /// sources, an empty location, a bad region pattern.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let bad = |msg: String| Error::InvalidInput(format!("config file {file}: {msg}"));
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| bad(e.to_string().trim_end().replace('\n', "\n    ")))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let mut repositories = BTreeMap::new();
        for (name, r) in raw.repositories {
            let key = format!("repositories.{name}");
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "[{key}]: a repository name must be a non-empty word"
                )));
            }
            let loc = r.location.trim();
            if loc.is_empty() {
                return Err(bad(format!("{key}.location is empty")));
            }
            if loc.starts_with(CONFIG_LOCATION_PREFIX) {
                return Err(bad(format!(
                    "{key}.location {loc:?} names another configured repository; give a folder or store location"
                )));
            }
            let location = if is_remote(loc) {
                loc.to_string()
            } else {
                let folder = loc.strip_prefix("local:").unwrap_or(loc);
                resolve(PathBuf::from(folder)).display().to_string()
            };
            if r.password_file.is_some() && r.password_command.is_some() {
                return Err(bad(format!(
                    "{key}: give password_file or password_command, not both"
                )));
            }
            let require_region = r
                .require_region
                .as_deref()
                .map(|p| RegionPattern::new(p, format!("repository {name}")))
                .transpose()
                .map_err(|e| bad(format!("{key}.require_region: {e}")))?;
            let medium = r.medium.unwrap_or(if is_remote(&location) {
                Medium::ObjectStore
            } else {
                Medium::Disk
            });
            repositories.insert(
                name.clone(),
                RepositoryConfig {
                    name,
                    location,
                    medium,
                    site: r.site.unwrap_or(Site::Onsite),
                    region: r.region.filter(|s| !s.trim().is_empty()),
                    password_file: r.password_file.map(resolve),
                    password_command: r.password_command,
                    key_file: r.key_file.map(resolve),
                    options: r.options,
                    require_region,
                },
            );
        }
        let mut profiles = BTreeMap::new();
        for (name, p) in raw.profiles {
            let key = format!("profiles.{name}");
            let known = |r: &str, field: &str| -> Result<()> {
                if repositories.contains_key(r) {
                    Ok(())
                } else {
                    let names: Vec<&str> = repositories.keys().map(String::as_str).collect();
                    Err(bad(format!(
                        "{key}.{field} names repository {r:?}, which is not configured (configured: {}); add a [repositories.{r}] table",
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    )))
                }
            };
            known(&p.primary, "primary")?;
            let mut seen = BTreeSet::from([p.primary.as_str()]);
            for c in &p.copies {
                known(c, "copies")?;
                if !seen.insert(c.as_str()) {
                    return Err(bad(format!(
                        "{key}.copies names repository {c:?} twice, or the primary again"
                    )));
                }
            }
            let require_region = p
                .require_region
                .as_deref()
                .map(|r| RegionPattern::new(r, format!("profile {name}")))
                .transpose()
                .map_err(|e| bad(format!("{key}.require_region: {e}")))?;
            profiles.insert(
                name.clone(),
                Profile {
                    name,
                    primary: p.primary,
                    copies: p.copies,
                    require_region,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            repositories,
            profiles,
            automation: Automation {
                daemon: raw.daemon,
                alerts: raw.alerts,
                jobs: raw.jobs,
            },
        })
    }

    /// The repository called `name`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] listing the configured names.
    pub fn repository(&self, name: &str) -> Result<&RepositoryConfig> {
        self.repositories.get(name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "config file {}: no repository {name:?} (configured: {})",
                self.path.display(),
                list_or_none(self.repositories.keys())
            ))
        })
    }

    /// The profile called `name`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] listing the configured names.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "config file {}: no profile {name:?} (configured: {})",
                self.path.display(),
                list_or_none(self.profiles.keys())
            ))
        })
    }

    /// The region policies that apply to repository `name`: its own, and those of every profile
    /// that writes to it when `profile` is `None`, else only `profile`'s.
    pub fn policies_for(&self, name: &str, profile: Option<&Profile>) -> Vec<RegionPattern> {
        let mut out: Vec<RegionPattern> = self
            .repositories
            .get(name)
            .and_then(|r| r.require_region.clone())
            .into_iter()
            .collect();
        match profile {
            Some(p) => out.extend(p.require_region.clone()),
            None => out.extend(
                self.profiles
                    .values()
                    .filter(|p| p.repositories().any(|r| r == name))
                    .filter_map(|p| p.require_region.clone()),
            ),
        }
        out
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

// ---------------------------------------------------------------------------------- region policy

/// A region pattern a repository must match (`eu-*`, `westeurope`), with where it comes from.
#[derive(Clone, Debug)]
pub struct RegionPattern {
    /// The glob as written.
    pub pattern: String,
    /// Who asks for it (`profile prod`, `repository s3-eu`, `--require-region`), for messages.
    pub from: String,
    matcher: globset::GlobMatcher,
}

impl PartialEq for RegionPattern {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.from == other.from
    }
}

impl Eq for RegionPattern {}

impl RegionPattern {
    /// Compiles `pattern` (a glob: `*`, `?`, `[..]`, `{a,b}`; compared without regard to case).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or malformed glob.
    pub fn new(pattern: &str, from: impl Into<String>) -> Result<Self> {
        let p = pattern.trim();
        if p.is_empty() {
            return Err(Error::InvalidInput(
                "an empty region pattern; give one like \"eu-*\"".into(),
            ));
        }
        let glob = globset::GlobBuilder::new(p)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|e| Error::InvalidInput(format!("region pattern {p:?}: {e}")))?;
        Ok(Self {
            pattern: p.to_string(),
            from: from.into(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether `region` matches.
    pub fn matches(&self, region: &str) -> bool {
        self.matcher.is_match(region)
    }
}

/// Where a repository's region was learnt from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionSource {
    /// The store answered it.
    Store,
    /// The config (or an option) declared it.
    Declared,
}

/// Refuses to write to repository `name` at `location` when its region does not match every one of
/// `policies`. The region is the store's answer (`store`), else the `declared` one; a repository
/// whose region is unknown under a policy is refused too. Nothing is written by this function: call
/// it before the first byte is sent.
///
/// # Errors
/// [`Error::RegionRefused`] naming the repository, its region and the pattern.
pub fn enforce_region(
    name: &str,
    location: &str,
    store: Option<&str>,
    declared: Option<&str>,
    policies: &[RegionPattern],
) -> Result<Option<(String, RegionSource)>> {
    let region = match (store, declared) {
        (Some(r), _) => Some((r.to_string(), RegionSource::Store)),
        (None, Some(r)) => Some((r.to_string(), RegionSource::Declared)),
        (None, None) => None,
    };
    for p in policies {
        let refused = |region: String, how: &str| {
            Error::RegionRefused {
            repository: format!("{name} ({location})"),
            region,
            pattern: p.pattern.clone(),
            reason: format!(
                "{how}; the pattern is required by {}. Nothing was written: choose a repository in a matching region, or correct the declared region",
                p.from
            ),
        }
        };
        match &region {
            None => {
                return Err(refused(
                    "unknown".into(),
                    if is_remote(location) {
                        "the store does not tell its region and none is declared (set `region` in the config file, or the backend's region option)"
                    } else {
                        "a local folder has no region unless one is declared (set `region` in the config file)"
                    },
                ))
            }
            Some((r, src)) if !p.matches(r) => {
                return Err(refused(
                    r.clone(),
                    match src {
                        RegionSource::Store => "the store reports this region",
                        RegionSource::Declared => "this region is declared for it",
                    },
                ))
            }
            Some(_) => {}
        }
    }
    Ok(region)
}

// ---------------------------------------------------------------------------------- check records

/// The `type` of the record `check` stores after each run.
pub const CHECK_RECORD: &str = "check";

/// What a `check` run stores in the repository (a record of type `check`, `docs/design.md` 10a).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// `"check"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the check ended (RFC 3339, UTC).
    pub time: String,
    /// Host that ran it.
    #[serde(default)]
    pub hostname: String,
    /// Its verdict.
    pub status: Status,
    /// What pack data was re-read: `none`, `all`, `subset n/m` or `N%`.
    pub read_data: String,
    /// Damaged objects found.
    pub errors: u64,
    /// Objects that could not be examined.
    pub incomplete: u64,
    /// Snapshots checked.
    #[serde(default)]
    pub snapshots: u64,
    /// Packs in the index, and packs whose data was re-read.
    #[serde(default)]
    pub packs: u64,
    /// Packs re-read.
    #[serde(default)]
    pub packs_read: u64,
    /// Wall-clock time of the check.
    pub duration_ms: u64,
}

impl CheckRecord {
    /// The record's time.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The newest readable check record of `records` (values of [`crate::repo::Repository::records`]
/// of type `check`); damaged or unparsable ones are skipped.
pub fn last_check(records: Vec<Result<serde_json::Value>>) -> Option<CheckRecord> {
    records
        .into_iter()
        .filter_map(|r| r.ok())
        .filter_map(|v| serde_json::from_value::<CheckRecord>(v).ok())
        .filter(|c| c.kind == CHECK_RECORD)
        .filter_map(|c| c.timestamp().map(|t| (t, c)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, c)| c)
}

// ---------------------------------------------------------------------------------- 3-2-1

/// What the 3-2-1 rule asks of every recent snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Rule {
    /// Copies (repositories holding it), at least.
    pub copies: usize,
    /// Distinct media among them, at least.
    pub media: usize,
    /// Copies offsite, at least.
    pub offsite: usize,
    /// The newest check of each copy's repository must be a success at most this old.
    #[serde(serialize_with = "ser_duration")]
    pub max_check_age: chrono::Duration,
}

fn ser_duration<S: serde::Serializer>(
    d: &chrono::Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_age(*d))
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            copies: 3,
            media: 2,
            offsite: 1,
            max_check_age: chrono::Duration::days(7),
        }
    }
}

/// Parses an age like `7d`, `36h`, `90m`, `2w` (a bare number is days).
///
/// # Errors
/// [`Error::InvalidInput`] for anything else.
pub fn parse_age(s: &str) -> Result<chrono::Duration> {
    let t = s.trim();
    let bad = || {
        Error::InvalidInput(format!(
            "age {s:?}: give a number with a unit, like 7d, 36h, 90m or 2w"
        ))
    };
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "d"),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n > 100_000 {
        return Err(bad());
    }
    Ok(match unit.trim() {
        "w" => chrono::Duration::weeks(n),
        "d" => chrono::Duration::days(n),
        "h" => chrono::Duration::hours(n),
        "m" | "min" => chrono::Duration::minutes(n),
        _ => return Err(bad()),
    })
}

/// An age for people: `3d 4h`, `5h 2m`, `40m`.
pub fn format_age(d: chrono::Duration) -> String {
    let m = d.num_minutes().max(0);
    let (days, hours, mins) = (m / 1440, (m % 1440) / 60, m % 60);
    match (days, hours) {
        (0, 0) => format!("{mins}m"),
        (0, h) => format!("{h}h {mins}m"),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d {h}h"),
    }
}

/// A snapshot as the 3-2-1 report sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its id in the repository holding it.
    pub id: SnapshotId,
    /// Backup time.
    pub time: DateTime<Utc>,
    /// The source it protects ([`source_of`]).
    pub source: String,
    /// The first snapshot of the backup ([`origin_of`]).
    pub origin: Origin,
}

/// The source a snapshot protects: the gateway (`kong http://host:8001 [scope]`) or host and paths.
pub fn source_of(s: &Snapshot) -> String {
    match &s.source {
        Some(src) => match &src.scope {
            Some(scope) => format!("{} {} [{scope}]", src.kind, src.endpoint),
            None => format!("{} {}", src.kind, src.endpoint),
        },
        None => {
            let mut paths = s.paths.clone();
            paths.sort();
            format!("{}:{}", s.hostname, paths.join(","))
        }
    }
}

/// The origin of snapshot `id` of the repository `repository_id`: the one it records (a copy), or
/// itself.
pub fn origin_of(repository_id: &str, id: &SnapshotId, s: &Snapshot) -> Origin {
    s.origin.clone().unwrap_or_else(|| Origin {
        repository: repository_id.to_string(),
        snapshot: *id,
    })
}

/// One repository of a profile, with what it holds or why it could not be read.
#[derive(Clone, Debug)]
pub struct RepositoryState {
    /// Its name in the config.
    pub name: String,
    /// Its location.
    pub location: String,
    /// Medium.
    pub medium: Medium,
    /// Site.
    pub site: Site,
    /// Its snapshots and last check, or the error that kept it from being read.
    pub contents: std::result::Result<RepositoryContents, String>,
}

/// What a readable repository holds.
#[derive(Clone, Debug, Default)]
pub struct RepositoryContents {
    /// Snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// Its newest check record.
    pub last_check: Option<CheckRecord>,
}

/// The state of one copy's repository check.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckVerdict {
    /// A successful check, recent enough.
    Ok,
    /// No check record.
    NeverChecked,
    /// The last check did not succeed.
    NotSuccessful,
    /// The last successful check is older than the rule allows.
    Stale,
}

/// One copy of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct CopyState {
    /// The repository's name.
    pub repository: String,
    /// The snapshot's id there.
    pub snapshot: SnapshotId,
    /// Medium.
    pub medium: Medium,
    /// Site.
    pub site: Site,
    /// The repository's newest check: status and time.
    pub last_check: Option<LastCheck>,
    /// How that check counts.
    pub check: CheckVerdict,
}

/// A repository's newest check, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct LastCheck {
    /// Its verdict.
    pub status: Status,
    /// When.
    pub time: String,
    /// What it re-read.
    pub read_data: String,
    /// How long ago (`3d 4h`).
    pub age: String,
}

/// The verdict for one recent snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotVerdict {
    /// The first snapshot of the backup.
    pub origin: Origin,
    /// Backup time.
    pub time: String,
    /// Repositories holding it.
    pub copies: usize,
    /// Distinct media among them.
    pub media: usize,
    /// Whether one is offsite.
    pub offsite: bool,
    /// Each copy.
    pub locations: Vec<CopyState>,
    /// Whether it satisfies the rule.
    pub compliant: bool,
    /// Why not, one line each.
    pub problems: Vec<String>,
}

/// The recent snapshots of one source.
#[derive(Clone, Debug, Serialize)]
pub struct SourceVerdict {
    /// The source ([`source_of`]).
    pub source: String,
    /// Its newest snapshots, newest first.
    pub snapshots: Vec<SnapshotVerdict>,
}

/// A repository of the profile as reported.
#[derive(Clone, Debug, Serialize)]
pub struct RepositoryReport {
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Medium.
    pub medium: Medium,
    /// Site.
    pub site: Site,
    /// Whether it could be read.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// Snapshots it holds.
    pub snapshots: usize,
    /// Its newest check.
    pub last_check: Option<LastCheck>,
}

/// The 3-2-1 report of one profile.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    /// The profile.
    pub profile: String,
    /// Whether every recent snapshot satisfies the rule and every repository could be read.
    pub compliant: bool,
    /// The repositories.
    pub repositories: Vec<RepositoryReport>,
    /// The sources and their recent snapshots.
    pub sources: Vec<SourceVerdict>,
    /// Problems of the profile as a whole (unreadable repositories, no snapshot at all).
    pub problems: Vec<String>,
}

fn last_check_of(c: &CheckRecord, now: DateTime<Utc>) -> LastCheck {
    LastCheck {
        status: c.status,
        time: c.time.clone(),
        read_data: c.read_data.clone(),
        age: c
            .timestamp()
            .map(|t| format_age(now - t))
            .unwrap_or_else(|| "?".into()),
    }
}

fn verdict_of(c: Option<&CheckRecord>, now: DateTime<Utc>, rule: &Rule) -> CheckVerdict {
    match c {
        None => CheckVerdict::NeverChecked,
        Some(c) if c.status != Status::Success => CheckVerdict::NotSuccessful,
        Some(c) => match c.timestamp() {
            Some(t) if now - t < rule.max_check_age => CheckVerdict::Ok,
            _ => CheckVerdict::Stale,
        },
    }
}

/// One backup (by origin) with the time of its earliest snapshot and its copies.
type Backup = (Origin, DateTime<Utc>, Vec<CopyState>);

/// Evaluates the 3-2-1 rule for profile `profile` over its repositories (`repos`, the primary
/// first): for each source, its newest `last` backups (by origin, across every readable repository)
/// are counted in every repository holding a snapshot of that origin.
pub fn evaluate(
    profile: &str,
    repos: &[RepositoryState],
    last: usize,
    now: DateTime<Utc>,
    rule: &Rule,
) -> ProfileReport {
    let mut problems = Vec::new();
    let mut repositories = Vec::new();
    // origin -> (source, time of the earliest copy seen, copies)
    let mut by_origin: BTreeMap<Origin, (String, DateTime<Utc>, Vec<CopyState>)> = BTreeMap::new();
    for r in repos {
        match &r.contents {
            Err(e) => {
                problems.push(format!(
                    "repository {} ({}) could not be read: {e}",
                    r.name, r.location
                ));
                repositories.push(RepositoryReport {
                    name: r.name.clone(),
                    location: r.location.clone(),
                    medium: r.medium,
                    site: r.site,
                    reachable: false,
                    error: Some(e.clone()),
                    snapshots: 0,
                    last_check: None,
                });
            }
            Ok(c) => {
                repositories.push(RepositoryReport {
                    name: r.name.clone(),
                    location: r.location.clone(),
                    medium: r.medium,
                    site: r.site,
                    reachable: true,
                    error: None,
                    snapshots: c.snapshots.len(),
                    last_check: c.last_check.as_ref().map(|l| last_check_of(l, now)),
                });
                let check = verdict_of(c.last_check.as_ref(), now, rule);
                for s in &c.snapshots {
                    let e = by_origin
                        .entry(s.origin.clone())
                        .or_insert_with(|| (s.source.clone(), s.time, Vec::new()));
                    e.1 = e.1.min(s.time);
                    // A repository holding the same backup twice still is one copy.
                    if !e.2.iter().any(|x| x.repository == r.name) {
                        e.2.push(CopyState {
                            repository: r.name.clone(),
                            snapshot: s.id,
                            medium: r.medium,
                            site: r.site,
                            last_check: c.last_check.as_ref().map(|l| last_check_of(l, now)),
                            check: check.clone(),
                        });
                    }
                }
            }
        }
    }
    let mut sources: BTreeMap<String, Vec<Backup>> = BTreeMap::new();
    for (origin, (source, time, copies)) in by_origin {
        sources
            .entry(source)
            .or_default()
            .push((origin, time, copies));
    }
    let unreachable: Vec<&RepositoryState> = repos.iter().filter(|r| r.contents.is_err()).collect();
    let mut out_sources = Vec::new();
    let mut all_ok = problems.is_empty();
    for (source, mut backups) in sources {
        backups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        backups.truncate(last);
        let mut verdicts = Vec::new();
        for (origin, time, copies) in backups {
            let media: BTreeSet<Medium> = copies.iter().map(|c| c.medium).collect();
            let offsite = copies.iter().filter(|c| c.site == Site::Offsite).count();
            let mut p = Vec::new();
            if copies.len() < rule.copies {
                p.push(format!(
                    "{} copies, the rule wants {} (missing from: {})",
                    copies.len(),
                    rule.copies,
                    list_missing(repos, &copies)
                ));
            }
            if media.len() < rule.media {
                p.push(format!(
                    "{} medium ({}), the rule wants {}",
                    media.len(),
                    media
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    rule.media
                ));
            }
            if offsite < rule.offsite {
                p.push("no copy is offsite".to_string());
            }
            for c in &copies {
                match c.check {
                    CheckVerdict::Ok => {}
                    CheckVerdict::NeverChecked => p.push(format!(
                        "repository {} was never checked (run `gatevault -r config:{} check`)",
                        c.repository, c.repository
                    )),
                    CheckVerdict::NotSuccessful => p.push(format!(
                        "the last check of repository {} ended {:?} (see `gatevault -r config:{} check`)",
                        c.repository,
                        c.last_check.as_ref().map(|l| l.status).unwrap_or(Status::Failed),
                        c.repository
                    )),
                    CheckVerdict::Stale => p.push(format!(
                        "the last check of repository {} is {} old, more than {}",
                        c.repository,
                        c.last_check.as_ref().map(|l| l.age.as_str()).unwrap_or("?"),
                        format_age(rule.max_check_age)
                    )),
                }
            }
            for u in &unreachable {
                p.push(format!("repository {} could not be read", u.name));
            }
            let compliant = p.is_empty();
            all_ok &= compliant;
            verdicts.push(SnapshotVerdict {
                origin,
                time: time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                copies: copies.len(),
                media: media.len(),
                offsite: offsite > 0,
                locations: copies,
                compliant,
                problems: p,
            });
        }
        out_sources.push(SourceVerdict {
            source,
            snapshots: verdicts,
        });
    }
    if out_sources.is_empty() {
        problems.push("no snapshot in any repository of the profile".into());
        all_ok = false;
    }
    ProfileReport {
        profile: profile.to_string(),
        compliant: all_ok,
        repositories,
        sources: out_sources,
        problems,
    }
}

fn list_missing(repos: &[RepositoryState], copies: &[CopyState]) -> String {
    let v: Vec<&str> = repos
        .iter()
        .filter(|r| !copies.iter().any(|c| c.repository == r.name))
        .map(|r| r.name.as_str())
        .collect();
    if v.is_empty() {
        "no other repository in the profile".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/gatevault/config.toml"))
    }

    const GOOD: &str = r#"
[repositories.local]
location = "backups/gv"
medium = "disk"
site = "onsite"
region = "eu-central-1"
password_file = "pw"

[repositories.s3-eu]
location = "s3:https://s3.example/bucket/gv"
site = "offsite"
key-file = "/keys/s3"
options = { "s3.region" = "eu-central-1" }
require_region = "eu-*"

[repositories.tape]
location = "/mnt/tape"
medium = "tape/offline"
site = "offsite"

[profiles.prod]
primary = "local"
copies = ["s3-eu", "tape"]
require_region = "eu-*"
"#;

    #[test]
    fn a_full_config_parses_with_defaults_and_resolved_paths() {
        let c = parse(GOOD).unwrap();
        let l = c.repository("local").unwrap();
        assert_eq!(l.location, "/etc/gatevault/backups/gv");
        assert_eq!(
            l.password_file.as_deref(),
            Some(Path::new("/etc/gatevault/pw"))
        );
        let s3 = c.repository("s3-eu").unwrap();
        assert_eq!(s3.medium, Medium::ObjectStore, "inferred from the location");
        assert_eq!(s3.site, Site::Offsite);
        assert_eq!(s3.location, "s3:https://s3.example/bucket/gv");
        assert_eq!(s3.key_file.as_deref(), Some(Path::new("/keys/s3")));
        assert_eq!(
            s3.options.get("s3.region").map(String::as_str),
            Some("eu-central-1")
        );
        assert_eq!(c.repository("tape").unwrap().medium, Medium::TapeOffline);
        let p = c.profile("prod").unwrap();
        assert_eq!(
            p.repositories().collect::<Vec<_>>(),
            ["local", "s3-eu", "tape"]
        );
        let pol = c.policies_for("s3-eu", Some(p));
        assert_eq!(pol.len(), 2);
        assert_eq!(c.policies_for("tape", None).len(), 1, "from the profile");
    }

    #[test]
    fn strict_validation_names_file_and_key() {
        let e = parse("[repositories.a]\nlocation = \"/x\"\ncolour = \"red\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/gatevault/config.toml") && e.contains("colour"),
            "{e}"
        );
        let e = parse("[repositories.a]\nlocation = \"/x\"\nmedium = \"floppy\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("floppy") && e.contains("tape/offline"), "{e}");
        let e = parse("[repositories.a]\nlocation = \"/x\"\nsite = \"moon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("moon"), "{e}");
        let e = parse("[repositories.a]\nlocation = \"/x\"\n[profiles.p]\nprimary = \"a\"\ncopies = [\"b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profiles.p.copies") && e.contains("\"b\""),
            "{e}"
        );
        let e = parse("[repositories.a]\nlocation = \"/x\"\n[profiles.p]\nprimary = \"a\"\ncopies = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse("[repositories.a]\nlocation = \"/x\"\npassword_file = \"p\"\npassword_command = \"echo\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = parse("[repositories.a]\nlocation = \"/x\"\nrequire_region = \"eu-[\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("repositories.a.require_region"), "{e}");
        let e = parse("[profile.p]\nprimary = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("profile"), "{e}");
        let e = parse("[repositories.a]\n").unwrap_err().to_string();
        assert!(e.contains("location"), "{e}");
    }

    #[test]
    fn region_policy_compares_the_store_first_then_the_declared_region() {
        let eu = [RegionPattern::new("eu-*", "profile prod").unwrap()];
        assert!(enforce_region("a", "s3:x", Some("eu-west-1"), Some("us-east-1"), &eu).is_ok());
        let e = enforce_region("a", "s3:x", Some("us-east-1"), Some("eu-west-1"), &eu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("us-east-1") && e.contains("eu-*") && e.contains("profile prod"),
            "{e}"
        );
        assert!(enforce_region("a", "/srv", None, Some("EU-north-1"), &eu).is_ok());
        let e = enforce_region("a", "/srv", None, Some("ap-south-1"), &eu).unwrap_err();
        assert!(matches!(e, Error::RegionRefused { .. }), "{e}");
        let e = enforce_region("a", "s3:x", None, None, &eu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown"), "{e}");
        assert!(
            enforce_region("a", "s3:x", None, None, &[]).is_ok(),
            "no policy"
        );
    }

    #[test]
    fn ages_parse_and_print() {
        assert_eq!(parse_age("7d").unwrap(), chrono::Duration::days(7));
        assert_eq!(parse_age("36h").unwrap(), chrono::Duration::hours(36));
        assert_eq!(parse_age("2w").unwrap(), chrono::Duration::days(14));
        assert_eq!(parse_age("3").unwrap(), chrono::Duration::days(3));
        assert!(parse_age("soon").is_err() && parse_age("5y").is_err());
        assert_eq!(
            format_age(chrono::Duration::minutes(3 * 1440 + 4 * 60 + 5)),
            "3d 4h"
        );
        assert_eq!(format_age(chrono::Duration::minutes(65)), "1h 5m");
    }

    // ------------------------------------------------------------------ 3-2-1 over constructed inputs

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(status: Status, hours_ago: i64) -> Option<CheckRecord> {
        Some(CheckRecord {
            kind: CHECK_RECORD.into(),
            time: (now() - chrono::Duration::hours(hours_ago))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hostname: "h".into(),
            status,
            read_data: "all".into(),
            errors: 0,
            incomplete: 0,
            snapshots: 1,
            packs: 1,
            packs_read: 1,
            duration_ms: 5,
        })
    }

    fn origin(n: u8) -> Origin {
        Origin {
            repository: "aa".repeat(32),
            snapshot: SnapshotId([n; 32]),
        }
    }

    fn snap(n: u8, copy_id: u8, hours_ago: i64) -> SnapshotInfo {
        SnapshotInfo {
            id: SnapshotId([copy_id; 32]),
            time: now() - chrono::Duration::hours(hours_ago),
            source: "host:/etc/kong".into(),
            origin: origin(n),
        }
    }

    fn repo(
        name: &str,
        medium: Medium,
        site: Site,
        snaps: &[u8],
        c: Option<CheckRecord>,
    ) -> RepositoryState {
        RepositoryState {
            name: name.into(),
            location: format!("/{name}"),
            medium,
            site,
            contents: Ok(RepositoryContents {
                snapshots: snaps.iter().map(|n| snap(*n, n + 100, *n as i64)).collect(),
                last_check: c,
            }),
        }
    }

    fn good() -> Vec<RepositoryState> {
        vec![
            repo(
                "local",
                Medium::Disk,
                Site::Onsite,
                &[1, 2],
                check(Status::Success, 1),
            ),
            repo(
                "s3",
                Medium::ObjectStore,
                Site::Offsite,
                &[1, 2],
                check(Status::Success, 2),
            ),
            repo(
                "azure",
                Medium::ObjectStore,
                Site::Offsite,
                &[1, 2],
                check(Status::Success, 3),
            ),
        ]
    }

    fn problems(r: &ProfileReport) -> String {
        let mut v = r.problems.clone();
        for s in &r.sources {
            for x in &s.snapshots {
                v.extend(x.problems.iter().cloned());
            }
        }
        v.join("\n")
    }

    #[test]
    fn three_copies_on_two_media_one_offsite_all_checked_is_compliant() {
        let r = evaluate("prod", &good(), 3, now(), &Rule::default());
        assert!(r.compliant, "{}", problems(&r));
        let s = &r.sources[0].snapshots;
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].copies, s[0].media, s[0].offsite), (3, 2, true));
        assert_eq!(s[0].origin, origin(1), "newest first");
    }

    #[test]
    fn two_copies_break_the_rule() {
        let mut repos = good();
        repos[2] = repo(
            "azure",
            Medium::ObjectStore,
            Site::Offsite,
            &[2],
            check(Status::Success, 3),
        );
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant);
        let s1 = &r.sources[0].snapshots[0];
        assert_eq!(s1.copies, 2);
        assert!(
            !s1.compliant && s1.problems[0].contains("missing from: azure"),
            "{:?}",
            s1.problems
        );
        assert!(
            r.sources[0].snapshots[1].compliant,
            "the older one has its three copies"
        );
    }

    #[test]
    fn the_same_medium_everywhere_breaks_the_rule() {
        let mut repos = good();
        repos[0].medium = Medium::ObjectStore;
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant);
        assert_eq!(r.sources[0].snapshots[0].media, 1);
        assert!(problems(&r).contains("1 medium"), "{}", problems(&r));
    }

    #[test]
    fn no_offsite_copy_breaks_the_rule() {
        let mut repos = good();
        for r in &mut repos {
            r.site = Site::Onsite;
        }
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant);
        assert!(!r.sources[0].snapshots[0].offsite);
        assert!(problems(&r).contains("no copy is offsite"));
    }

    #[test]
    fn a_failed_check_breaks_the_rule() {
        let mut repos = good();
        repos[1] = repo(
            "s3",
            Medium::ObjectStore,
            Site::Offsite,
            &[1, 2],
            check(Status::Failed, 1),
        );
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant);
        let l = &r.sources[0].snapshots[0].locations[1];
        assert_eq!(l.check, CheckVerdict::NotSuccessful);
        assert!(
            problems(&r).contains("repository s3 ended Failed"),
            "{}",
            problems(&r)
        );
    }

    #[test]
    fn a_stale_or_missing_check_breaks_the_rule() {
        let mut repos = good();
        repos[2] = repo(
            "azure",
            Medium::ObjectStore,
            Site::Offsite,
            &[1, 2],
            check(Status::Success, 8 * 24),
        );
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant);
        assert!(problems(&r).contains("8d old"), "{}", problems(&r));
        // Within a longer allowance it passes.
        let rule = Rule {
            max_check_age: chrono::Duration::days(9),
            ..Rule::default()
        };
        assert!(evaluate("prod", &repos, 3, now(), &rule).compliant);
        repos[2] = repo("azure", Medium::ObjectStore, Site::Offsite, &[1, 2], None);
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(problems(&r).contains("never checked"), "{}", problems(&r));
    }

    #[test]
    fn an_unreachable_repository_is_reported_and_breaks_the_rule() {
        let mut repos = good();
        repos[1].contents = Err("connection refused".into());
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant);
        assert!(!r.repositories[1].reachable);
        assert!(r.problems[0].contains("s3") && r.problems[0].contains("connection refused"));
        assert_eq!(r.sources[0].snapshots[0].copies, 2);
    }

    #[test]
    fn only_the_newest_backups_of_each_source_count() {
        let mut repos = good();
        // An old backup held only by the primary is beyond --last 2.
        if let Ok(c) = &mut repos[0].contents {
            c.snapshots.push(snap(9, 109, 100));
        }
        assert!(evaluate("prod", &repos, 2, now(), &Rule::default()).compliant);
        assert!(!evaluate("prod", &repos, 3, now(), &Rule::default()).compliant);
    }

    #[test]
    fn an_empty_profile_is_not_compliant() {
        let repos = vec![repo(
            "local",
            Medium::Disk,
            Site::Onsite,
            &[],
            check(Status::Success, 1),
        )];
        let r = evaluate("prod", &repos, 3, now(), &Rule::default());
        assert!(!r.compliant && r.problems[0].contains("no snapshot"));
    }

    #[test]
    fn the_newest_check_record_wins_and_damaged_ones_are_skipped() {
        let old = serde_json::to_value(check(Status::Success, 50).unwrap()).unwrap();
        let new = serde_json::to_value(check(Status::Failed, 1).unwrap()).unwrap();
        let drill = serde_json::json!({"type": "drill", "time": "2030-01-01T00:00:00Z"});
        let got = last_check(vec![
            Ok(old),
            Err(Error::integrity("record x", "bad")),
            Ok(new),
            Ok(drill),
        ])
        .unwrap();
        assert_eq!(got.status, Status::Failed);
        assert!(last_check(vec![]).is_none());
    }
}
