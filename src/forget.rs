//! Retention: which snapshots a policy keeps, and removing the others (`gatevault forget`).
//!
//! The rules are restic's `forget` rules, so that a policy means here what it means there: snapshots
//! are grouped (by default by host and paths) and the policy applies to each group; every `--keep-*`
//! rule names snapshots to keep and a snapshot kept by any rule is kept. Counted rules
//! (`--keep-daily 7`) keep the newest snapshot of each of the N most recent days (hours, ISO weeks,
//! months, years) *that have snapshots*, in the time zone recorded with the snapshot (gatevault records
//! UTC); while a counted rule has counts left when it reaches the oldest snapshot of a group, that one is
//! kept too ("oldest daily snapshot"). Duration rules (`--keep-within 2y5m7d3h`) are relative to the
//! group's newest snapshot, not to the clock.
//!
//! Two rules of our own guard against forged or skewed times (a back-dated or future-dated snapshot
//! could otherwise fill the buckets and push real snapshots out): a snapshot whose time lies after
//! `now` is kept, reported, and left out of every rule (it is not counted and is not the "latest" that
//! durations are measured from); and the newest remaining snapshot of each group is never removed.
//!
//! Removing a snapshot deletes its snapshot object only; the data it referenced stays in the repository
//! until a later prune removes what no snapshot needs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;
use crate::repo::lock::LockGuard;
use crate::repo::Repository;
use crate::select::SnapshotFilter;

// ------------------------------------------------------------------------------------------ policy

/// How many snapshots a counted rule (`--keep-daily N` ...) keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Keep {
    /// The rule is not used (also what a count of 0 means).
    #[default]
    Off,
    /// The newest snapshot of each of the N most recent periods that have snapshots.
    Count(u32),
    /// The newest snapshot of every period (`unlimited`, or `-1` as restic accepted it).
    Unlimited,
}

impl Keep {
    /// Whether the rule keeps anything.
    pub fn is_active(self) -> bool {
        !matches!(self, Keep::Off | Keep::Count(0))
    }
}

impl FromStr for Keep {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "unlimited" | "-1" => Ok(Keep::Unlimited),
            t => match t.parse::<i64>() {
                Ok(0) => Ok(Keep::Off),
                Ok(n) if n > 0 => u32::try_from(n).map(Keep::Count).map_err(|_| {
                    Error::InvalidInput(format!("count {s:?} is too large; use `unlimited`"))
                }),
                Ok(_) => Err(Error::InvalidInput(format!(
                    "count {s:?}: negative counts other than -1 are not allowed; use `unlimited` to keep all"
                ))),
                Err(_) => Err(Error::InvalidInput(format!(
                    "count {s:?} is not a number of snapshots; use a number or `unlimited`"
                ))),
            },
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Off => f.write_str("0"),
            Keep::Count(n) => write!(f, "{n}"),
            Keep::Unlimited => f.write_str("all"),
        }
    }
}

/// A calendar duration as restic writes it: years, months, days and hours (`2y5m7d3h`).
///
/// It is subtracted from a time the way restic (Go's `AddDate`) does: years, months and days on the
/// calendar date, an out-of-range day rolling over into the next month (one month before March 31 is
/// March 3 in a non-leap year), then hours as elapsed time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalendarDuration {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl CalendarDuration {
    /// Whether every part is zero (the rule is then not used).
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The time this duration before `t`; `None` when that is out of the representable range (every
    /// snapshot is then within it).
    pub fn before(&self, t: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let local = t.naive_local();
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(months.div_euclid(12)).ok()?;
        let month0 = u32::try_from(months.rem_euclid(12)).ok()?;
        let first = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
        let date = first.checked_add_signed(TimeDelta::try_days(
            i64::from(local.day0()) - i64::from(self.days),
        )?)?;
        let naive = date
            .and_time(local.time())
            .checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)?;
        t.offset().from_local_datetime(&naive).single()
    }
}

impl FromStr for CalendarDuration {
    type Err = Error;

    /// Parses `<number><unit>...` with units `y`, `m`, `d`, `h` (a repeated unit replaces the earlier
    /// one, as in restic).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "duration {s:?}: {why}; write years, months, days and hours like 2y5m7d3h (1w is not a unit: use 7d)"
            ))
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut d = CalendarDuration::default();
        let mut rest = s;
        while !rest.is_empty() {
            if rest.starts_with('-') {
                return Err(bad("negative values are not allowed"));
            }
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("a number is too large"))?;
            let unit = rest[digits..].chars().next();
            match unit {
                Some('y') => d.years = n,
                Some('m') => d.months = n,
                Some('d') => d.days = n,
                Some('h') => d.hours = n,
                Some(u) => return Err(bad(&format!("unknown unit {u:?}"))),
                None => return Err(bad(&format!("no unit after {n}"))),
            }
            rest = &rest[digits + 1..];
        }
        Ok(d)
    }
}

impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Tags a snapshot must all carry to be kept by `--keep-tag` (`KEY=VALUE` or a bare `KEY` for any
/// value). An empty list (`--keep-tag ''`) matches only snapshots without tags, as in restic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagList(pub Vec<String>);

impl TagList {
    /// Whether `s` carries every tag of the list (for an empty list: no tags at all).
    pub fn matches(&self, s: &Snapshot) -> bool {
        if self.0.is_empty() {
            return s.tags.is_empty();
        }
        self.0.iter().all(|t| match t.split_once('=') {
            Some((k, v)) => s.tags.get(k).is_some_and(|x| x == v),
            None => s.tags.contains_key(t.as_str()),
        })
    }
}

impl FromStr for TagList {
    type Err = Error;

    /// Comma-separated tags; spaces around them are ignored.
    fn from_str(s: &str) -> Result<Self> {
        Ok(TagList(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

impl fmt::Display for TagList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

/// What snapshots are grouped by before the policy applies to each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// The host name.
    pub host: bool,
    /// The backed-up paths (as a set).
    pub paths: bool,
    /// The tags (as a set).
    pub tags: bool,
    /// The gateway source (its snapshot path, e.g. `kong:http://host:8001#default`); snapshots of
    /// files have none and form one group.
    pub source: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic.
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
            source: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// A comma-separated list of `host`, `paths`, `tags`, `source`; empty for no grouping.
    fn from_str(s: &str) -> Result<Self> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
            source: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "source" => g.source = true,
                other => {
                    return Err(Error::InvalidInput(format!(
                        "--group-by {other:?} is not a grouping: use host, paths, tags and/or source separated by commas, or '' for no grouping"
                    )))
                }
            }
        }
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
            (self.source, "source"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&parts.join(","))
    }
}

/// A retention policy: which snapshots of each group to keep (restic's `--keep-*` options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`: the N newest snapshots.
    pub last: Keep,
    /// `--keep-hourly`.
    pub hourly: Keep,
    /// `--keep-daily`.
    pub daily: Keep,
    /// `--keep-weekly` (ISO weeks, Monday to Sunday).
    pub weekly: Keep,
    /// `--keep-monthly`.
    pub monthly: Keep,
    /// `--keep-yearly`.
    pub yearly: Keep,
    /// `--keep-within`: every snapshot newer than this before the group's newest one.
    pub within: CalendarDuration,
    /// `--keep-within-hourly`: the newest snapshot of each hour within this of the newest one.
    pub within_hourly: CalendarDuration,
    /// `--keep-within-daily`.
    pub within_daily: CalendarDuration,
    /// `--keep-within-weekly`.
    pub within_weekly: CalendarDuration,
    /// `--keep-within-monthly`.
    pub within_monthly: CalendarDuration,
    /// `--keep-within-yearly`.
    pub within_yearly: CalendarDuration,
    /// `--keep-tag`: snapshots carrying all tags of any of these lists.
    pub keep_tags: Vec<TagList>,
    /// How snapshots are grouped.
    pub group_by: GroupBy,
}

impl Policy {
    /// `--policy standard`: 30 daily, 12 weekly and 12 monthly snapshots.
    pub fn standard() -> Self {
        Self {
            daily: Keep::Count(30),
            weekly: Keep::Count(12),
            monthly: Keep::Count(12),
            ..Self::default()
        }
    }

    /// Whether no rule keeps anything (such a policy would remove every snapshot, so it is refused).
    pub fn is_empty(&self) -> bool {
        self.counted().iter().all(|(k, _)| !k.is_active())
            && self.within.is_zero()
            && self.within_buckets().iter().all(|(d, _)| d.is_zero())
            && self.keep_tags.is_empty()
    }

    fn counted(&self) -> [(Keep, Bucket); 6] {
        [
            (self.last, Bucket::Last),
            (self.hourly, Bucket::Hourly),
            (self.daily, Bucket::Daily),
            (self.weekly, Bucket::Weekly),
            (self.monthly, Bucket::Monthly),
            (self.yearly, Bucket::Yearly),
        ]
    }

    fn within_buckets(&self) -> [(CalendarDuration, Bucket); 5] {
        [
            (self.within_hourly, Bucket::Hourly),
            (self.within_daily, Bucket::Daily),
            (self.within_weekly, Bucket::Weekly),
            (self.within_monthly, Bucket::Monthly),
            (self.within_yearly, Bucket::Yearly),
        ]
    }
}

impl fmt::Display for Policy {
    /// As restic says it: `keep 30 daily, 12 weekly, 12 monthly snapshots and ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self
            .counted()
            .iter()
            .filter(|(k, _)| k.is_active())
            .map(|(k, b)| format!("{k} {}", b.adjective()))
            .collect();
        let mut parts = Vec::new();
        if !counts.is_empty() {
            parts.push(format!("{} snapshots", counts.join(", ")));
        }
        for (d, b) in self.within_buckets() {
            if !d.is_zero() {
                parts.push(format!("{} snapshots within {d}", b.adjective()));
            }
        }
        for t in &self.keep_tags {
            parts.push(format!("all snapshots with tags {t}"));
        }
        if !self.within.is_zero() {
            parts.push(format!(
                "all snapshots within {} of the newest",
                self.within
            ));
        }
        if parts.is_empty() {
            return f.write_str("no policy");
        }
        write!(f, "keep {}", parts.join(" and "))
    }
}

// ------------------------------------------------------------------------------------------ decisions

/// The period a counted rule keeps one snapshot of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Every snapshot is its own period (`--keep-last`).
    Last,
    /// Clock hours.
    Hourly,
    /// Calendar days.
    Daily,
    /// ISO weeks (Monday to Sunday; 2024-12-30 is in 2025-W01).
    Weekly,
    /// Calendar months.
    Monthly,
    /// Calendar years.
    Yearly,
}

impl Bucket {
    /// The period of `t` (in its own offset) as a number; `nr` numbers the snapshots for `Last`.
    fn period(self, t: &DateTime<FixedOffset>, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Bucket::Last => nr as i64,
            Bucket::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Bucket::Daily => (y * 100 + m) * 100 + d,
            Bucket::Weekly => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Bucket::Monthly => y * 100 + m,
            Bucket::Yearly => y,
        }
    }

    fn adjective(self) -> &'static str {
        match self {
            Bucket::Last => "latest",
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }
}

/// Why a snapshot is kept (shown as restic shows it: `daily snapshot`, `oldest weekly snapshot`,
/// `monthly within 1y`, `within 7d`, `has tags [...]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A counted rule (`--keep-last`, `--keep-daily` ...); `oldest` when it is the group's oldest
    /// snapshot, kept because the rule still had counts left.
    Counted {
        /// Which rule.
        bucket: Bucket,
        /// Kept as the oldest snapshot.
        oldest: bool,
    },
    /// `--keep-within`.
    Within(CalendarDuration),
    /// `--keep-within-hourly` ... `--keep-within-yearly`.
    WithinPeriod {
        /// Which period.
        bucket: Bucket,
        /// The duration of the rule.
        within: CalendarDuration,
        /// Kept as the oldest snapshot within the duration.
        oldest: bool,
    },
    /// `--keep-tag`.
    Tags(TagList),
    /// The newest snapshot of its group, which is never removed.
    Newest,
    /// Its time lies after `now` (clock skew or forgery): kept and not counted.
    Future,
    /// Its time cannot be read: kept and not counted.
    UnreadableTime,
    /// No rule was given, so nothing is removed.
    NoPolicy,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let oldest = |o: bool| if o { "oldest " } else { "" };
        match self {
            Reason::Counted {
                bucket: Bucket::Last,
                oldest: o,
            } => write!(f, "{}last snapshot", oldest(*o)),
            Reason::Counted { bucket, oldest: o } => {
                write!(f, "{}{} snapshot", oldest(*o), bucket.adjective())
            }
            Reason::Within(d) => write!(f, "within {d}"),
            Reason::WithinPeriod {
                bucket,
                within,
                oldest: o,
            } => write!(f, "{}{} within {within}", oldest(*o), bucket.adjective()),
            Reason::Tags(t) if t.0.is_empty() => f.write_str("has no tags"),
            Reason::Tags(t) => write!(f, "has tags {t}"),
            Reason::Newest => f.write_str("newest of its group"),
            Reason::Future => f.write_str("time in the future"),
            Reason::UnreadableTime => f.write_str("unreadable time"),
            Reason::NoPolicy => f.write_str("no policy"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The group a snapshot belongs to: the values of the fields grouped by (a field not grouped by is
/// left out of JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey {
    /// Host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Paths, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Tags as `KEY=VALUE` (or `KEY`), sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The gateway source path, `Some(None)` for snapshots of files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Option<String>>,
    /// Rollback points taken by restores form groups of their own, so that a rollback point never
    /// takes the place of a backup in a period (nor a backup the place of a rollback point).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rollback_points: bool,
}

impl GroupKey {
    /// The group of `s` under `by`.
    pub fn of(s: &Snapshot, by: GroupBy) -> Self {
        Self {
            host: by.host.then(|| s.hostname.clone()),
            paths: by.paths.then(|| {
                let mut p = s.paths.clone();
                p.sort();
                p
            }),
            tags: by.tags.then(|| {
                s.tags
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() {
                            k.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect()
            }),
            source: by.source.then(|| s.source.as_ref().map(|x| x.path())),
            rollback_points: crate::recovery::is_rollback_point(s),
        }
    }
}

impl fmt::Display for GroupKey {
    /// `host h, paths [/a, /b], tags [], source kong:...`, or `all snapshots` without grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        match &self.source {
            Some(Some(s)) => parts.push(format!("source {s}")),
            Some(None) => parts.push("no gateway source".into()),
            None => {}
        }
        if self.rollback_points {
            parts.push("rollback points".into());
        }
        if parts.is_empty() {
            return f.write_str("all snapshots");
        }
        f.write_str(&parts.join(", "))
    }
}

/// What the policy decided for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its group.
    pub group: GroupKey,
    /// Kept (`true`) or removed.
    pub keep: bool,
    /// The rules that keep it (empty for a removed snapshot: no rule keeps it).
    pub reasons: Vec<Reason>,
}

/// Applies `policy` to `snapshots` at time `now`: one decision per snapshot, grouped (groups in key
/// order, each oldest first).
///
/// A policy with no rule ([`Policy::is_empty`]) keeps everything ([`Reason::NoPolicy`]).
pub fn apply_policy(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    type Member<'a> = (SnapshotId, Option<DateTime<FixedOffset>>, &'a Snapshot);
    let mut groups: BTreeMap<GroupKey, Vec<Member<'_>>> = BTreeMap::new();
    for (id, s) in snapshots {
        let t = DateTime::parse_from_rfc3339(&s.time).ok();
        groups
            .entry(GroupKey::of(s, policy.group_by))
            .or_default()
            .push((*id, t, s));
    }
    let mut out = Vec::with_capacity(snapshots.len());
    for (key, mut members) in groups {
        members.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let verdicts = decide_group(
            &members.iter().map(|m| (m.1, m.2)).collect::<Vec<_>>(),
            policy,
            now,
        );
        for ((id, ..), (keep, reasons)) in members.into_iter().zip(verdicts) {
            out.push(Decision {
                id,
                group: key.clone(),
                keep,
                reasons,
            });
        }
    }
    out
}

/// Decides one group, given oldest first; returns (keep, reasons) in the same order.
fn decide_group(
    members: &[(Option<DateTime<FixedOffset>>, &Snapshot)],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<(bool, Vec<Reason>)> {
    let mut out: Vec<(bool, Vec<Reason>)> = vec![(false, Vec::new()); members.len()];
    // Snapshots from the future (or with no readable time) are kept and take part in nothing else.
    let mut counted: Vec<(usize, DateTime<FixedOffset>)> = Vec::new();
    for (i, (t, _)) in members.iter().enumerate() {
        match t {
            Some(t) if t.with_timezone(&Utc) <= now => counted.push((i, *t)),
            Some(_) => out[i] = (true, vec![Reason::Future]),
            None => out[i] = (true, vec![Reason::UnreadableTime]),
        }
    }
    counted.reverse(); // newest first, as the rules walk them
    if policy.is_empty() {
        for (i, _) in &counted {
            out[*i] = (true, vec![Reason::NoPolicy]);
        }
        return out;
    }
    let Some(&(_, latest)) = counted.first() else {
        return out;
    };
    // A cutoff of None: the duration reaches before any representable time, so everything is within.
    let within =
        |d: &CalendarDuration, t: &DateTime<FixedOffset>| d.before(latest).is_none_or(|c| *t > c);

    struct Counter {
        bucket: Bucket,
        left: Option<u32>, // None: unlimited
        last: Option<i64>,
    }
    let mut counters: Vec<Counter> = policy
        .counted()
        .iter()
        .filter(|(k, _)| k.is_active())
        .map(|(k, b)| Counter {
            bucket: *b,
            left: match k {
                Keep::Count(n) => Some(*n),
                _ => None,
            },
            last: None,
        })
        .collect();
    let mut periods: Vec<(Bucket, CalendarDuration, Option<i64>)> = policy
        .within_buckets()
        .iter()
        .filter(|(d, _)| !d.is_zero())
        .map(|(d, b)| (*b, *d, None))
        .collect();

    let n = counted.len();
    for (nr, &(i, t)) in counted.iter().enumerate() {
        let is_oldest = nr + 1 == n;
        let s = members[i].1;
        let reasons = &mut out[i].1;
        for tags in &policy.keep_tags {
            if tags.matches(s) {
                reasons.push(Reason::Tags(tags.clone()));
            }
        }
        if !policy.within.is_zero() && within(&policy.within, &t) {
            reasons.push(Reason::Within(policy.within));
        }
        for c in &mut counters {
            if c.left == Some(0) {
                continue;
            }
            let p = c.bucket.period(&t, nr);
            if c.last != Some(p) || is_oldest {
                reasons.push(Reason::Counted {
                    bucket: c.bucket,
                    oldest: c.last == Some(p),
                });
                c.last = Some(p);
                if let Some(left) = &mut c.left {
                    *left -= 1;
                }
            }
        }
        for (bucket, d, last) in &mut periods {
            if !within(d, &t) {
                continue;
            }
            let p = bucket.period(&t, nr);
            if *last != Some(p) || is_oldest {
                reasons.push(Reason::WithinPeriod {
                    bucket: *bucket,
                    within: *d,
                    oldest: *last == Some(p),
                });
                *last = Some(p);
            }
        }
        let keep = !reasons.is_empty();
        out[i].0 = keep;
    }
    let (newest, _) = counted[0];
    if !out[newest].0 {
        out[newest] = (true, vec![Reason::Newest]);
    }
    out
}

// ------------------------------------------------------------------------------------------ forgetting

/// Which snapshots `forget` removes.
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// Those the policy does not keep, among the snapshots passing the filter.
    Policy(&'a Policy, &'a SnapshotFilter),
    /// Exactly these (unique id prefixes, or `latest` among the snapshots passing the filter).
    Ids(&'a [String], &'a SnapshotFilter),
}

/// A snapshot in a [`GroupReport`].
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Why it is kept (empty in the remove list).
    pub reasons: Vec<Reason>,
}

/// What happened to one group.
#[derive(Clone, Debug)]
pub struct GroupReport {
    /// The group (`None` when snapshots were named on the command line).
    pub key: Option<GroupKey>,
    /// Snapshots kept, oldest first.
    pub keep: Vec<Entry>,
    /// Snapshots removed (or, in a dry run, to be removed), oldest first.
    pub remove: Vec<Entry>,
}

/// What `forget` did.
#[derive(Clone, Debug)]
pub struct ForgetReport {
    /// Per group.
    pub groups: Vec<GroupReport>,
    /// Snapshots removed (empty in a dry run).
    pub removed: Vec<SnapshotId>,
    /// Kept because their time lies after `now`: look at the clock of their host, or whether they
    /// are genuine.
    pub future: Vec<Entry>,
}

/// Removes the snapshots `what` selects (or, with `dry_run`, only says which it would remove), at time
/// `now` (which decides what lies in the future). Removing needs an admin key and takes an exclusive
/// lock; a dry run needs neither. Only snapshot objects are deleted: their data stays until a prune.
///
/// # Errors
/// [`Error::NotAllowed`] for a key that is not admin (before anything is removed); [`Error::Locked`];
/// [`Error::NotFound`] or [`Error::InvalidInput`] for a snapshot id that does not resolve;
/// [`Error::LockLost`] and backend errors while removing (snapshots removed until then stay removed).
pub fn forget(
    repo: &Repository,
    what: Selection<'_>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<ForgetReport> {
    let lock = if dry_run {
        None
    } else {
        repo.require_admin("remove snapshots")?;
        Some(LockGuard::acquire(
            repo.backend_arc(),
            repo.keys().clone(),
            true,
            "forget",
        )?)
    };
    let groups = match what {
        Selection::Ids(specs, filter) => {
            let mut remove: Vec<Entry> = Vec::new();
            for spec in specs {
                let (id, snapshot) = crate::select::resolve(repo, Some(spec), filter, None)?;
                if !remove.iter().any(|e| e.id == id) {
                    remove.push(Entry {
                        id,
                        snapshot,
                        reasons: Vec::new(),
                    });
                }
            }
            remove.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
            vec![GroupReport {
                key: None,
                keep: Vec::new(),
                remove,
            }]
        }
        Selection::Policy(policy, filter) => {
            let list = crate::select::filtered(repo, filter)?;
            let decisions = apply_policy(&list, policy, now);
            // The snapshots move into the report (10,000 of them: no copy, no map of them).
            let at: HashMap<SnapshotId, usize> = list
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (*id, i))
                .collect();
            let mut slots: Vec<Option<Snapshot>> = list.into_iter().map(|(_, s)| Some(s)).collect();
            let mut groups: Vec<GroupReport> = Vec::new();
            for d in decisions {
                if groups.last().and_then(|g| g.key.as_ref()) != Some(&d.group) {
                    groups.push(GroupReport {
                        key: Some(d.group.clone()),
                        keep: Vec::new(),
                        remove: Vec::new(),
                    });
                }
                let Some(snapshot) = at.get(&d.id).and_then(|i| slots[*i].take()) else {
                    continue;
                };
                let g = groups.last_mut().expect("a group was pushed");
                let e = Entry {
                    id: d.id,
                    snapshot,
                    reasons: d.reasons,
                };
                if d.keep {
                    g.keep.push(e);
                } else {
                    g.remove.push(e);
                }
            }
            groups
        }
    };
    let future = groups
        .iter()
        .flat_map(|g| &g.keep)
        .filter(|e| e.reasons.contains(&Reason::Future))
        .cloned()
        .collect();
    let mut removed = Vec::new();
    if let Some(lock) = &lock {
        let todo: Vec<SnapshotId> = groups
            .iter()
            .flat_map(|g| g.remove.iter().map(|e| e.id))
            .collect();
        for id in &todo {
            let done = lock
                .check()
                .and_then(|()| crate::signals::check())
                .and_then(|()| repo.remove_snapshot(id));
            if let Err(e) = done {
                tracing::error!(
                    "removed {} of {} snapshots before failing on snapshot {}; run forget again to finish",
                    removed.len(),
                    todo.len(),
                    id.short()
                );
                return Err(e);
            }
            removed.push(*id);
        }
    }
    Ok(ForgetReport {
        groups,
        removed,
        future,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Source, SNAPSHOT_VERSION};
    use crate::id::BlobId;
    use proptest::prelude::*;

    const NOW: &str = "2025-06-01T00:00:00Z";

    fn now() -> DateTime<Utc> {
        NOW.parse().unwrap()
    }

    fn snap(time: &str, host: &str, path: &str, tags: &[&str]) -> Snapshot {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: time.into(),
            tree: BlobId::default(),
            paths: vec![path.into()],
            hostname: host.into(),
            username: "u".into(),
            tags: crate::select::parse_tags(&tags).unwrap(),
            label: None,
            description: None,
            parent: None,
            summary: Default::default(),
            program_version: "test".into(),
            source: None,
            original: None,
            origin: None,
        }
    }

    fn id(n: usize) -> SnapshotId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(n as u64).to_be_bytes());
        SnapshotId(b)
    }

    /// Snapshots at `times` (host h, path /p, untagged), ids numbered by position.
    fn at(times: &[&str]) -> Vec<(SnapshotId, Snapshot)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (id(i), snap(t, "h", "/p", &[])))
            .collect()
    }

    /// The kept snapshots as (position, reasons), in position order.
    fn kept(list: &[(SnapshotId, Snapshot)], p: &Policy) -> Vec<(usize, Vec<String>)> {
        let ds = apply_policy(list, p, now());
        assert_eq!(ds.len(), list.len(), "one decision per snapshot");
        let mut out: Vec<(usize, Vec<String>)> = ds
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                let pos = list.iter().position(|(i, _)| *i == d.id).unwrap();
                (pos, d.reasons.iter().map(|r| r.to_string()).collect())
            })
            .collect();
        out.sort();
        out
    }

    fn k(pos: usize, reasons: &[&str]) -> (usize, Vec<String>) {
        (pos, reasons.iter().map(|r| r.to_string()).collect())
    }

    fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::default();
        f(&mut p);
        p
    }

    fn dur(s: &str) -> CalendarDuration {
        s.parse().unwrap()
    }

    #[test]
    fn keep_last() {
        let list = at(&[
            "2025-01-01T10:00:00Z",
            "2025-01-02T10:00:00Z",
            "2025-01-03T10:00:00Z",
            "2025-01-04T10:00:00Z",
        ]);
        let p = policy(|p| p.last = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![k(2, &["last snapshot"]), k(3, &["last snapshot"])]
        );
        let p = policy(|p| p.last = Keep::Unlimited);
        assert_eq!(kept(&list, &p).len(), 4);
    }

    #[test]
    fn keep_daily_counts_days_that_have_snapshots() {
        let list = at(&[
            "2025-01-01T08:00:00Z",
            "2025-01-01T20:00:00Z",
            "2025-01-02T09:00:00Z",
            "2025-01-03T07:00:00Z",
            "2025-01-03T22:00:00Z",
        ]);
        let p = policy(|p| p.daily = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![k(2, &["daily snapshot"]), k(4, &["daily snapshot"])]
        );
        // More days asked for than there are: the oldest is kept too, as restic does.
        let p = policy(|p| p.daily = Keep::Count(5));
        assert_eq!(
            kept(&list, &p),
            vec![
                k(0, &["oldest daily snapshot"]),
                k(1, &["daily snapshot"]),
                k(2, &["daily snapshot"]),
                k(4, &["daily snapshot"]),
            ]
        );
        // Days without snapshots do not count: the 3 newest days that have one.
        let list = at(&[
            "2025-01-01T12:00:00Z",
            "2025-01-05T12:00:00Z",
            "2025-01-10T12:00:00Z",
            "2025-01-20T12:00:00Z",
        ]);
        let p = policy(|p| p.daily = Keep::Count(3));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 2, 3]);
        let p = policy(|p| p.daily = Keep::Unlimited);
        assert_eq!(kept(&list, &p).len(), 4);
    }

    #[test]
    fn keep_hourly() {
        let list = at(&[
            "2025-01-01T10:05:00Z",
            "2025-01-01T10:55:00Z",
            "2025-01-01T11:10:00Z",
            "2025-01-01T13:00:00Z",
        ]);
        let p = policy(|p| p.hourly = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![k(2, &["hourly snapshot"]), k(3, &["hourly snapshot"])]
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_across_the_year_end() {
        let list = at(&[
            "2024-12-28T12:00:00Z", // Saturday, 2024-W52
            "2024-12-29T12:00:00Z", // Sunday, 2024-W52
            "2024-12-30T12:00:00Z", // Monday, 2025-W01
            "2025-01-02T12:00:00Z", // Thursday, 2025-W01
            "2025-01-06T12:00:00Z", // Monday, 2025-W02
        ]);
        let p = policy(|p| p.weekly = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![k(3, &["weekly snapshot"]), k(4, &["weekly snapshot"])]
        );
        // December 30 shares 2025-W01 with January 2, so the third week is 2024-W52.
        let p = policy(|p| p.weekly = Keep::Count(3));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 3, 4]);
        // Sunday and the following Monday are different weeks.
        let list = at(&["2025-01-05T23:00:00Z", "2025-01-06T01:00:00Z"]);
        let p = policy(|p| p.weekly = Keep::Count(1));
        assert_eq!(kept(&list, &p), vec![k(1, &["weekly snapshot"])]);
        let p = policy(|p| p.weekly = Keep::Count(2));
        assert_eq!(kept(&list, &p).len(), 2);
    }

    #[test]
    fn keep_monthly_and_yearly() {
        let list = at(&[
            "2025-01-31T12:00:00Z",
            "2025-02-01T12:00:00Z",
            "2025-02-28T12:00:00Z",
            "2025-03-15T12:00:00Z",
        ]);
        let p = policy(|p| p.monthly = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![k(2, &["monthly snapshot"]), k(3, &["monthly snapshot"])]
        );
        let list = at(&[
            "2022-06-01T12:00:00Z",
            "2023-01-01T12:00:00Z",
            "2023-12-31T23:00:00Z",
            "2024-03-01T12:00:00Z",
        ]);
        let p = policy(|p| p.yearly = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![k(2, &["yearly snapshot"]), k(3, &["yearly snapshot"])]
        );
        let p = policy(|p| p.yearly = Keep::Unlimited);
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![0, 2, 3]);
    }

    #[test]
    fn combined_rules_are_ored() {
        let list = at(&[
            "2025-01-01T12:00:00Z", // W01
            "2025-01-03T12:00:00Z", // W01
            "2025-01-06T12:00:00Z", // W02
            "2025-01-08T12:00:00Z", // W02
            "2025-01-13T12:00:00Z", // W03
        ]);
        let p = policy(|p| {
            p.last = Keep::Count(1);
            p.daily = Keep::Count(2);
            p.weekly = Keep::Count(3);
        });
        assert_eq!(
            kept(&list, &p),
            vec![
                k(1, &["weekly snapshot"]),
                k(3, &["daily snapshot", "weekly snapshot"]),
                k(4, &["last snapshot", "daily snapshot", "weekly snapshot"]),
            ]
        );
        // A fourth week asked for: W01 is taken already, so the oldest snapshot is kept as such.
        let p = policy(|p| {
            p.last = Keep::Count(1);
            p.daily = Keep::Count(2);
            p.weekly = Keep::Count(4);
        });
        assert_eq!(kept(&list, &p)[0], k(0, &["oldest weekly snapshot"]));
        assert_eq!(kept(&list, &p).len(), 4);
    }

    #[test]
    fn durations_parse_as_restic_writes_them() {
        assert_eq!(
            dur("2y5m7d3h"),
            CalendarDuration {
                years: 2,
                months: 5,
                days: 7,
                hours: 3
            }
        );
        assert_eq!(dur("1m").months, 1);
        assert_eq!(dur("36h").hours, 36);
        assert_eq!(dur("2y5m7d3h").to_string(), "2y5m7d3h");
        assert_eq!(dur("7d1y").to_string(), "1y7d");
        for bad in ["", "5", "5x", "-1d", "1w", "d", "1d2"] {
            assert!(
                matches!(bad.parse::<CalendarDuration>(), Err(Error::InvalidInput(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn counts_parse_with_unlimited() {
        assert_eq!("3".parse::<Keep>().unwrap(), Keep::Count(3));
        assert_eq!("0".parse::<Keep>().unwrap(), Keep::Off);
        assert_eq!("unlimited".parse::<Keep>().unwrap(), Keep::Unlimited);
        assert_eq!("-1".parse::<Keep>().unwrap(), Keep::Unlimited);
        assert!(matches!("-2".parse::<Keep>(), Err(Error::InvalidInput(_))));
        assert!(matches!(
            "many".parse::<Keep>(),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn keep_within_is_relative_to_the_newest_snapshot() {
        let list = at(&[
            "2025-01-01T12:00:00Z",
            "2025-01-10T12:00:00Z", // exactly 10 days before the newest: not within
            "2025-01-10T13:00:00Z",
            "2025-01-20T12:00:00Z",
        ]);
        let p = policy(|p| p.within = dur("10d"));
        assert_eq!(
            kept(&list, &p),
            vec![k(2, &["within 10d"]), k(3, &["within 10d"])]
        );
        let list = at(&[
            "2025-01-01T09:00:00Z",
            "2025-01-01T09:01:00Z",
            "2025-01-01T12:00:00Z",
        ]);
        let p = policy(|p| p.within = dur("3h"));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 2]);
        // One month before March 31 is "February 31", which rolls over to March 3 (restic, Go).
        let list = at(&[
            "2025-03-02T12:00:00Z",
            "2025-03-04T12:00:00Z",
            "2025-03-31T12:00:00Z",
        ]);
        let p = policy(|p| p.within = dur("1m"));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 2]);
        // Years and months together.
        let list = at(&[
            "2024-01-15T11:00:00Z",
            "2024-01-15T13:00:00Z",
            "2025-03-15T12:00:00Z",
        ]);
        let p = policy(|p| p.within = dur("1y2m"));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 2]);
        // A duration reaching before any representable date keeps everything.
        let p = policy(|p| p.within = dur("4000000000y"));
        assert_eq!(kept(&list, &p).len(), 3);
    }

    #[test]
    fn keep_within_periods() {
        let list = at(&[
            "2025-01-07T12:00:00Z", // before the 3 days
            "2025-01-08T09:00:00Z",
            "2025-01-08T20:00:00Z",
            "2025-01-09T10:00:00Z",
            "2025-01-10T18:00:00Z",
        ]);
        let p = policy(|p| p.within_daily = dur("3d"));
        assert_eq!(
            kept(&list, &p),
            vec![
                k(2, &["daily within 3d"]),
                k(3, &["daily within 3d"]),
                k(4, &["daily within 3d"]),
            ]
        );
        // When the oldest snapshot is within the duration, it is kept as the oldest.
        let p = policy(|p| p.within_daily = dur("3d"));
        assert_eq!(kept(&list[1..], &p)[0], k(0, &["oldest daily within 3d"]));
        let list = at(&[
            "2024-10-05T12:00:00Z",
            "2024-11-02T12:00:00Z",
            "2024-11-20T12:00:00Z",
            "2025-01-03T12:00:00Z",
            "2025-01-10T12:00:00Z",
        ]);
        let p = policy(|p| {
            p.within_monthly = dur("3m");
            p.within_hourly = dur("1h");
        });
        assert_eq!(
            kept(&list, &p),
            vec![
                k(2, &["monthly within 3m"]),
                k(4, &["hourly within 1h", "monthly within 3m"]),
            ]
        );
        // All within a year: the oldest is kept as well, 2024 having been counted already.
        let p = policy(|p| p.within_yearly = dur("1y"));
        assert_eq!(
            kept(&list, &p),
            vec![
                k(0, &["oldest yearly within 1y"]),
                k(2, &["yearly within 1y"]),
                k(4, &["yearly within 1y"]),
            ]
        );
        // January 3 and 10 (Fridays) are in 2025-W01 and W02; seven days would exclude the 3rd.
        let p = policy(|p| p.within_weekly = dur("7d"));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![4]);
        let p = policy(|p| p.within_weekly = dur("8d"));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![3, 4]);
    }

    #[test]
    fn keep_tag() {
        let list = vec![
            (
                id(0),
                snap("2025-01-01T12:00:00Z", "h", "/p", &["BackupType=manual"]),
            ),
            (id(1), snap("2025-01-02T12:00:00Z", "h", "/p", &[])),
            (
                id(2),
                snap(
                    "2025-01-03T12:00:00Z",
                    "h",
                    "/p",
                    &["Environment=prod", "BackupType=full"],
                ),
            ),
            (id(3), snap("2025-01-04T12:00:00Z", "h", "/p", &[])),
        ];
        let tags = |s: &str| s.parse::<TagList>().unwrap();
        let p = policy(|p| {
            p.keep_tags = vec![tags("BackupType=manual")];
            p.last = Keep::Count(1);
        });
        assert_eq!(
            kept(&list, &p),
            vec![
                k(0, &["has tags [BackupType=manual]"]),
                k(3, &["last snapshot"]),
            ]
        );
        // All tags of one list; any of several lists; a bare key matches any value.
        let p = policy(|p| p.keep_tags = vec![tags("Environment=prod, BackupType=full")]);
        assert_eq!(kept(&list, &p)[0].0, 2);
        let p = policy(|p| p.keep_tags = vec![tags("Environment=prod,BackupType=other")]);
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![3], "only the newest, which is never removed");
        let p = policy(|p| p.keep_tags = vec![tags("Environment"), tags("BackupType=manual")]);
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![0, 2, 3]);
        // An empty list keeps untagged snapshots only.
        let p = policy(|p| p.keep_tags = vec![tags("")]);
        assert_eq!(
            kept(&list, &p),
            vec![k(1, &["has no tags"]), k(3, &["has no tags"])]
        );
    }

    #[test]
    fn the_newest_of_a_group_is_never_removed() {
        let list = at(&["2025-01-01T12:00:00Z", "2025-01-02T12:00:00Z"]);
        let p = policy(|p| p.keep_tags = vec!["nothing-has-this".parse().unwrap()]);
        assert_eq!(kept(&list, &p), vec![k(1, &["newest of its group"])]);
    }

    #[test]
    fn rollback_points_form_groups_of_their_own() {
        let mut list = at(&[
            "2025-01-01T12:00:00Z",
            "2025-01-02T12:00:00Z",
            "2025-01-02T13:00:00Z",
            "2025-01-03T12:00:00Z",
        ]);
        // A rollback point taken after the day's backup does not take the backup's place.
        list[2].1.tags = crate::select::parse_tags(&["BackupType=pre-restore".into()]).unwrap();
        assert!(crate::recovery::is_rollback_point(&list[2].1));
        let p = policy(|p| p.daily = Keep::Count(2));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(
            got,
            vec![1, 2, 3],
            "days 2 and 3 of the backups; the rollback point alone"
        );
        let groups: std::collections::BTreeSet<String> = apply_policy(&list, &p, now())
            .iter()
            .map(|d| d.group.to_string())
            .collect();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert!(groups.iter().any(|g| g.ends_with("rollback points")));
    }

    #[test]
    fn future_snapshots_are_kept_and_not_counted() {
        let list = at(&[
            "2025-05-01T12:00:00Z",
            "2025-05-02T12:00:00Z",
            "2025-05-03T12:00:00Z",
            "2025-06-05T12:00:00Z", // after NOW: a skewed clock
            "2030-01-01T00:00:00Z", // or a forgery
        ]);
        let p = policy(|p| p.daily = Keep::Count(2));
        assert_eq!(
            kept(&list, &p),
            vec![
                k(1, &["daily snapshot"]),
                k(2, &["daily snapshot"]),
                k(3, &["time in the future"]),
                k(4, &["time in the future"]),
            ]
        );
        // keep-last does not count them either, and durations run from the newest real snapshot.
        let p = policy(|p| p.last = Keep::Count(1));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![2, 3, 4]);
        let p = policy(|p| p.within = dur("2d"));
        let got: Vec<usize> = kept(&list, &p).into_iter().map(|x| x.0).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn groups() {
        let mut list = vec![
            (id(0), snap("2025-01-01T12:00:00Z", "a", "/p", &[])),
            (id(1), snap("2025-01-02T12:00:00Z", "a", "/p", &[])),
            (id(2), snap("2025-01-01T12:00:00Z", "b", "/p", &[])),
            (id(3), snap("2025-01-02T12:00:00Z", "b", "/p", &["x"])),
            (id(4), snap("2025-01-03T12:00:00Z", "a", "/q", &["x"])),
        ];
        let last1 = |g: &str| {
            policy(|p| {
                p.last = Keep::Count(1);
                p.group_by = g.parse().unwrap();
            })
        };
        let ids = |list: &[(SnapshotId, Snapshot)], p: &Policy| -> Vec<usize> {
            kept(list, p).into_iter().map(|x| x.0).collect()
        };
        assert_eq!(ids(&list, &last1("host,paths")), vec![1, 3, 4]);
        assert_eq!(ids(&list, &last1("host")), vec![3, 4]);
        assert_eq!(ids(&list, &last1("")), vec![4]);
        assert_eq!(ids(&list, &last1("tags")), vec![1, 4]);
        assert_eq!(ids(&list, &last1("paths,tags")), vec![1, 3, 4]);
        // Gateway sources: two Kong workspaces and a file snapshot.
        list[0].1.source = Some(Source::new("kong", "http://k:8001"));
        list[1].1.source = Some(Source::new("kong", "http://k:8001"));
        list[2].1.source = Some(Source {
            scope: Some("ws2".into()),
            ..Source::new("kong", "http://k:8001")
        });
        list[3].1.source = list[2].1.source.clone();
        assert_eq!(ids(&list, &last1("source")), vec![1, 3, 4]);
        let ds = apply_policy(&list, &last1("source"), now());
        let keys: Vec<String> = ds.iter().map(|d| d.group.to_string()).collect();
        assert!(keys.contains(&"no gateway source".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"source kong:http://k:8001#ws2".to_string()),
            "{keys:?}"
        );
        assert_eq!(
            GroupKey::of(&list[3].1, GroupBy::default()).to_string(),
            "host b, paths [/p]"
        );
        assert!(matches!(
            "host,colour".parse::<GroupBy>(),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn empty_and_standard_policies() {
        assert!(Policy::default().is_empty());
        assert!(policy(|p| p.last = Keep::Count(0)).is_empty());
        assert!(!policy(|p| p.keep_tags = vec![TagList::default()]).is_empty());
        let list = at(&["2025-01-01T12:00:00Z", "2025-01-02T12:00:00Z"]);
        assert_eq!(
            kept(&list, &Policy::default()),
            vec![k(0, &["no policy"]), k(1, &["no policy"])]
        );
        let s = Policy::standard();
        assert_eq!(
            (s.daily, s.weekly, s.monthly),
            (Keep::Count(30), Keep::Count(12), Keep::Count(12))
        );
        assert_eq!(
            s.to_string(),
            "keep 30 daily, 12 weekly, 12 monthly snapshots"
        );
        let p = policy(|p| {
            p.last = Keep::Unlimited;
            p.within_daily = dur("7d");
            p.within = dur("1y");
            p.keep_tags = vec!["a=b".parse().unwrap()];
        });
        assert_eq!(
            p.to_string(),
            "keep all latest snapshots and daily snapshots within 7d and all snapshots with tags [a=b] and all snapshots within 1y of the newest"
        );
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let count = prop_oneof![
            3 => Just(Keep::Off),
            4 => (1u32..5).prop_map(Keep::Count),
            1 => Just(Keep::Unlimited),
        ];
        let d = prop_oneof![
            3 => Just(CalendarDuration::default()),
            1 => (0u32..2, 0u32..3, 0u32..20, 0u32..30).prop_map(|(years, months, days, hours)| {
                CalendarDuration { years, months, days, hours }
            }),
        ];
        (
            proptest::collection::vec(count, 6),
            proptest::collection::vec(d, 6),
            0usize..3,
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(|(c, w, tags, (host, paths, tg, source))| Policy {
                last: c[0],
                hourly: c[1],
                daily: c[2],
                weekly: c[3],
                monthly: c[4],
                yearly: c[5],
                within: w[0],
                within_hourly: w[1],
                within_daily: w[2],
                within_weekly: w[3],
                within_monthly: w[4],
                within_yearly: w[5],
                keep_tags: match tags {
                    0 => vec![],
                    1 => vec!["t".parse().unwrap()],
                    _ => vec!["".parse().unwrap()],
                },
                group_by: GroupBy {
                    host,
                    paths,
                    tags: tg,
                    source,
                },
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn every_snapshot_decided_once_and_newest_kept(
            items in proptest::collection::vec(
                (-3 * 365 * 24 * 3600i64..10 * 24 * 3600, 0usize..2, 0usize..2, any::<bool>()),
                0..40,
            ),
            p in arb_policy(),
        ) {
            let list: Vec<(SnapshotId, Snapshot)> = items
                .iter()
                .enumerate()
                .map(|(i, (secs, host, path, tag))| {
                    let t = (now() + TimeDelta::seconds(*secs)).to_rfc3339();
                    let tags: &[&str] = if *tag { &["t"] } else { &[] };
                    (id(i), snap(&t, ["a", "b"][*host], ["/p", "/q"][*path], tags))
                })
                .collect();
            let ds = apply_policy(&list, &p, now());
            prop_assert_eq!(ds.len(), list.len());
            let mut seen: Vec<SnapshotId> = ds.iter().map(|d| d.id).collect();
            seen.sort();
            let mut want: Vec<SnapshotId> = list.iter().map(|x| x.0).collect();
            want.sort();
            prop_assert_eq!(seen, want, "every snapshot decided exactly once");
            for d in &ds {
                prop_assert_eq!(d.keep, !d.reasons.is_empty(), "kept iff a reason");
            }
            // Per group: the newest snapshot (future or not) and the newest one not in the future.
            let mut newest: BTreeMap<GroupKey, (DateTime<Utc>, SnapshotId)> = BTreeMap::new();
            let mut newest_past: BTreeMap<GroupKey, (DateTime<Utc>, SnapshotId)> = BTreeMap::new();
            for (i, s) in &list {
                let key = GroupKey::of(s, p.group_by);
                let t = s.timestamp().unwrap();
                let e = newest.entry(key.clone()).or_insert((t, *i));
                if (t, *i) > *e { *e = (t, *i); }
                if t <= now() {
                    let e = newest_past.entry(key).or_insert((t, *i));
                    if (t, *i) > *e { *e = (t, *i); }
                }
            }
            for (_, i) in newest.values().chain(newest_past.values()) {
                let d = ds.iter().find(|d| d.id == *i).unwrap();
                prop_assert!(d.keep, "newest of group {} removed", d.group);
            }
        }
    }
}
