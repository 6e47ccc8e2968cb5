//! Choosing snapshots: filters by tag, host and path, `latest`, id prefixes and points in time.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::id::SnapshotId;
use crate::repo::Repository;

/// Filters a snapshot must pass (every given criterion; tags all of theirs).
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// `key=value` (or bare `key`) tags that must all be present.
    pub tags: Vec<String>,
    /// Host names, any of which may match.
    pub hosts: Vec<String>,
    /// Paths that must all be among the snapshot's paths.
    pub paths: Vec<String>,
}

/// Parses `KEY=VALUE` tags (a bare `KEY` gets an empty value).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty key.
pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in tags {
        let (k, v) = t.split_once('=').unwrap_or((t.as_str(), ""));
        if k.trim().is_empty() {
            return Err(Error::InvalidInput(format!(
                "tag {t:?} has no key; use KEY=VALUE"
            )));
        }
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let tags_ok = self.tags.iter().all(|t| match t.split_once('=') {
            Some((k, v)) => s.tags.get(k).is_some_and(|x| x == v),
            None => s.tags.contains_key(t.as_str()),
        });
        let host_ok = self.hosts.is_empty() || self.hosts.contains(&s.hostname);
        let paths_ok = self.paths.iter().all(|p| {
            let abs = std::path::absolute(p)
                .ok()
                .and_then(|a| a.to_str().map(|x| x.trim_end_matches('/').to_string()));
            s.paths
                .iter()
                .any(|sp| sp == p.trim_end_matches('/') || Some(sp) == abs.as_ref())
        });
        tags_ok && host_ok && paths_ok
    }
}

/// Parses a point in time: RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in the local time zone.
///
/// # Errors
/// [`Error::InvalidInput`] when it is none of these.
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(23, 59, 59))
    });
    naive
        .and_then(|n| Local.from_local_datetime(&n).earliest())
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok_or_else(|| Error::InvalidInput(format!("time {s:?}: use RFC 3339 (2025-08-18T14:30:00Z) or 'YYYY-MM-DD HH:MM:SS' (local time)")))
}

/// Snapshots passing `filter`, oldest first.
///
/// # Errors
/// Backend errors.
pub fn filtered(repo: &Repository, filter: &SnapshotFilter) -> Result<Vec<(SnapshotId, Snapshot)>> {
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect())
}

/// Resolves `spec` (`latest`, a unique id prefix) among snapshots passing `filter`; with `at`, the
/// newest passing snapshot at or before that time.
///
/// # Errors
/// [`Error::NotFound`] when nothing matches; [`Error::InvalidInput`] for an ambiguous prefix.
pub fn resolve(
    repo: &Repository,
    spec: Option<&str>,
    filter: &SnapshotFilter,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(SnapshotId, Snapshot)> {
    resolve_where(repo, spec, filter, at, &|_| true)
}

/// [`resolve`], where `latest` and `at` consider only the snapshots `keep` accepts (an id given
/// explicitly is taken as it is).
///
/// # Errors
/// As [`resolve`].
pub fn resolve_where(
    repo: &Repository,
    spec: Option<&str>,
    filter: &SnapshotFilter,
    at: Option<chrono::DateTime<chrono::Utc>>,
    keep: &dyn Fn(&Snapshot) -> bool,
) -> Result<(SnapshotId, Snapshot)> {
    match (spec, at) {
        (Some(s), None) if s != "latest" => {
            let id = repo.resolve_snapshot_prefix(s)?;
            Ok((id, repo.load_snapshot(&id)?))
        }
        (Some(s), Some(_)) if s != "latest" => Err(Error::InvalidInput(
            "give either a snapshot id or --at, not both".into(),
        )),
        _ => {
            let all = filtered(repo, filter)?.into_iter().filter(|(_, s)| keep(s));
            let found = match at {
                None => all.last(),
                Some(t) => all
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rfind(|(_, s)| s.timestamp().map(|x| x <= t).unwrap_or(false)),
            };
            found.ok_or_else(|| Error::NotFound {
                kind: "snapshot".into(),
                id: match at {
                    Some(t) => format!("at or before {} matching the filters", t.to_rfc3339()),
                    None => "latest matching the filters".into(),
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_times() {
        let t = parse_tags(&[
            "Environment=prod".into(),
            "BackupType=full".into(),
            "x".into(),
        ])
        .unwrap();
        assert_eq!(t["Environment"], "prod");
        assert_eq!(t["x"], "");
        assert!(parse_tags(&["=v".into()]).is_err());
        assert_eq!(
            parse_time("2025-08-18T14:30:00Z").unwrap().timestamp(),
            1_755_527_400
        );
        assert!(parse_time("2025-08-18 14:30").is_ok());
        assert!(matches!(
            parse_time("yesterday"),
            Err(Error::InvalidInput(_))
        ));
    }
}
