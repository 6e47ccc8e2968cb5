//! Reading gateway snapshots back: their manifest and entities, entity-level diffs with secrets
//! masked, the history of one entity, and export to the gateway's own format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{canonical, Manifest, ManifestEntry, MANIFEST, SECRET_PLACEHOLDER};
use crate::diff::Change;
use crate::error::{Error, Result};
use crate::format::{NodeType, Snapshot};
use crate::id::SnapshotId;
use crate::repo::Repository;

/// The bytes of the file at `path` (relative or absolute) in `snap`, or `None` when there is none.
///
/// # Errors
/// Errors loading trees or blobs.
pub fn read(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Option<Vec<u8>>> {
    let path = format!("/{}", path.trim_start_matches('/'));
    match crate::walk::find(repo, &snap.tree, &path)? {
        Some(n) if n.node_type == NodeType::File => {
            let mut out = Vec::with_capacity(n.size as usize);
            crate::restore::dump(repo, snap, &path, &mut out)?;
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

/// The manifest of a gateway snapshot; `None` for a snapshot of files.
///
/// # Errors
/// Errors reading it, and [`Error::Format`] for a damaged manifest.
pub fn manifest(repo: &Repository, snap: &Snapshot) -> Result<Option<Manifest>> {
    if snap.source.is_none() {
        return Ok(None);
    }
    read(repo, snap, MANIFEST)?
        .map(|b| Manifest::parse(&b))
        .transpose()
}

/// One changed field of an entity (values masked where secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// JSON pointer of the field (`/config/minute`).
    pub pointer: String,
    /// Value before (absent when the field was added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// Value after (absent when the field was removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// One added, removed or changed entity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntityChange {
    /// Document path (`kong/routes/orders-get.json`).
    pub path: String,
    /// Entity kind (`route`); `raw` for raw exports.
    pub kind: String,
    /// Natural key.
    pub key: String,
    /// Added, removed or modified.
    pub change: Change,
    /// For changed JSON entities: the fields that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// For changed text entities: lines only in the old and only in the new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
}

/// Whether `p` is a secret pointer or lies below one.
fn under(p: &str, secrets: &[String]) -> bool {
    secrets
        .iter()
        .any(|s| s.is_empty() || p == s || p.starts_with(&format!("{s}/")))
}

/// `v` (found at pointer `at`) with the secrets below `at` masked.
fn masked_at(v: &Value, at: &str, secrets: &[String]) -> Value {
    if under(at, secrets) {
        return Value::String(SECRET_PLACEHOLDER.into());
    }
    let inner: Vec<String> = secrets
        .iter()
        .filter_map(|s| s.strip_prefix(at).filter(|r| r.starts_with('/')))
        .map(str::to_string)
        .collect();
    super::mask(v, &inner)
}

/// The fields that differ between `old` and `new`, with values masked by the secret pointers of each
/// side unless `show_secrets`.
pub fn field_changes(
    old: &Value,
    new: &Value,
    old_secrets: &[String],
    new_secrets: &[String],
    show_secrets: bool,
) -> Vec<FieldChange> {
    let mut raw = vec![];
    walk_diff(old, new, String::new(), &mut raw);
    raw.into_iter()
        .map(|(pointer, o, n)| {
            if show_secrets {
                return FieldChange {
                    pointer,
                    old: o,
                    new: n,
                };
            }
            FieldChange {
                old: o.map(|v| masked_at(&v, &pointer, old_secrets)),
                new: n.map(|v| masked_at(&v, &pointer, new_secrets)),
                pointer,
            }
        })
        .collect()
}

type RawChange = (String, Option<Value>, Option<Value>);

fn walk_diff(a: &Value, b: &Value, at: String, out: &mut Vec<RawChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => walk_diff(u, v, p, out),
                    (u, v) => out.push((p, u.cloned(), v.cloned())),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                walk_diff(u, v, format!("{at}/{i}"), out);
            }
        }
        _ => out.push((at, Some(a.clone()), Some(b.clone()))),
    }
}

/// Lines only in `a` and only in `b` (as multisets).
pub fn line_changes(a: &[u8], b: &[u8]) -> (usize, usize) {
    let count = |t: &[u8]| {
        let mut m: BTreeMap<Vec<u8>, isize> = BTreeMap::new();
        for l in t.split(|c| *c == b'\n') {
            *m.entry(l.to_vec()).or_default() += 1;
        }
        m
    };
    let (ma, mb) = (count(a), count(b));
    let only = |x: &BTreeMap<Vec<u8>, isize>, y: &BTreeMap<Vec<u8>, isize>| -> usize {
        x.iter()
            .map(|(l, n)| (n - y.get(l).copied().unwrap_or(0)).max(0) as usize)
            .sum()
    };
    (only(&ma, &mb), only(&mb, &ma))
}

fn entry(m: Option<&Manifest>, path: &str) -> Option<ManifestEntry> {
    m.and_then(|m| m.entry(path))
}

/// The paths of every entity document in `snap`.
fn entity_paths(repo: &Repository, snap: &Snapshot, m: &Manifest) -> Result<Vec<String>> {
    let mut out = vec![];
    crate::walk::walk(repo, &snap.tree, &mut |path, node| {
        let p = path.trim_start_matches('/');
        if node.node_type == NodeType::File && m.entry(p).is_some() {
            out.push(p.to_string());
        }
        Ok(true)
    })?;
    Ok(out)
}

/// The entities that differ between gateway snapshots `a` and `b`.
///
/// # Errors
/// [`Error::InvalidInput`] when either is not a gateway snapshot; errors reading them.
pub fn diff(
    repo: &Repository,
    a: &Snapshot,
    b: &Snapshot,
    show_secrets: bool,
) -> Result<Vec<EntityChange>> {
    let (ma, mb) = (manifest(repo, a)?, manifest(repo, b)?);
    if ma.is_none() || mb.is_none() {
        return Err(Error::InvalidInput(
            "an entity diff needs two gateway snapshots (made with backup --gateway)".into(),
        ));
    }
    let (files, _) = crate::diff::diff(repo, &a.tree, &b.tree)?;
    let mut out = vec![];
    for f in files {
        if f.node_type != NodeType::File || f.change == Change::Metadata {
            continue;
        }
        let path = f.path.trim_start_matches('/').to_string();
        if path == MANIFEST {
            continue;
        }
        let (ea, eb) = (entry(ma.as_ref(), &path), entry(mb.as_ref(), &path));
        let Some(e) = eb.clone().or(ea.clone()) else {
            // Raw exports: reported by name only.
            out.push(EntityChange {
                kind: "raw".into(),
                key: path.clone(),
                path,
                change: f.change,
                fields: vec![],
                lines: None,
            });
            continue;
        };
        let mut change = EntityChange {
            path: path.clone(),
            kind: e.kind.clone(),
            key: e.key.clone(),
            change: f.change,
            fields: vec![],
            lines: None,
        };
        if f.change == Change::Modified {
            let old = read(repo, a, &path)?.unwrap_or_default();
            let new = read(repo, b, &path)?.unwrap_or_default();
            let secrets = |e: &Option<ManifestEntry>| {
                e.as_ref().map(|e| e.secrets.clone()).unwrap_or_default()
            };
            match (
                serde_json::from_slice::<Value>(&old),
                serde_json::from_slice::<Value>(&new),
                path.ends_with(".json"),
            ) {
                (Ok(o), Ok(n), true) => {
                    change.fields =
                        field_changes(&o, &n, &secrets(&ea), &secrets(&eb), show_secrets)
                }
                _ => change.lines = Some(line_changes(&old, &new)),
            }
        }
        out.push(change);
    }
    Ok(out)
}

/// One snapshot in the history of an entity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogEntry {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its time.
    pub time: String,
    /// Added, removed or modified relative to the previous snapshot listed.
    pub change: Change,
    /// Changed fields (JSON entities).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// When the entity at `path` (`kong/routes/orders-get`, with or without `.json`) changed across
/// the gateway snapshots of its kind among `snapshots` (oldest first): its first appearance, each
/// change and its removal.
///
/// # Errors
/// Errors reading snapshots.
pub fn log(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    path: &str,
    show_secrets: bool,
) -> Result<Vec<LogEntry>> {
    let path = path.trim_start_matches('/');
    let mut out = vec![];
    let mut last: Option<(crate::format::Node, Value, Vec<String>)> = None;
    // Only snapshots of the gateway kind the path belongs to (`kong/...`: Kong snapshots).
    let kind = path.split('/').next().unwrap_or_default();
    for (id, snap) in snapshots {
        if snap.source.as_ref().is_none_or(|s| s.kind != kind) {
            continue;
        }
        // The path as given, or with `.json` added.
        let mut node = None;
        let mut found = path.to_string();
        for p in [path.to_string(), format!("{path}.json")] {
            if let Some(n) = crate::walk::find(repo, &snap.tree, &format!("/{p}"))?
                .filter(|n| n.node_type == NodeType::File)
            {
                node = Some(n);
                found = p;
                break;
            }
        }
        let entry = |change, fields| LogEntry {
            snapshot: *id,
            time: snap.time.clone(),
            change,
            fields,
        };
        match (node, &last) {
            (None, None) => {}
            (None, Some(_)) => {
                out.push(entry(Change::Removed, vec![]));
                last = None;
            }
            (Some(n), prev) => {
                if prev.as_ref().is_some_and(|p| p.0.same_data(&n)) {
                    continue;
                }
                let bytes = read(repo, snap, &found)?.unwrap_or_default();
                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let secrets = manifest(repo, snap)?
                    .and_then(|m| m.entry(&found).map(|e| e.secrets))
                    .unwrap_or_default();
                match prev {
                    None => out.push(entry(Change::Added, vec![])),
                    Some((_, old, old_secrets)) => out.push(entry(
                        Change::Modified,
                        field_changes(old, &value, old_secrets, &secrets, show_secrets),
                    )),
                }
                last = Some((n, value, secrets));
            }
        }
    }
    Ok(out)
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The gateway's JSON form.
    Json,
    /// The same as YAML.
    Yaml,
    /// A decK file (Kong; YAML).
    Deck,
}

/// The gateway's native configuration rebuilt from snapshot `snap`, and the file name to give it:
/// `<gateway>-<Environment>-<YYYYMMDD>-<HHMM>-<BackupType>.<ext>`.
///
/// Kong is rebuilt from its entities as a decK file. Gateways whose export is one document (Caddy,
/// AWS) give that document; file-based gateways give a JSON bundle of their files, path to text.
///
/// # Errors
/// [`Error::InvalidInput`] for a snapshot of files or a format the gateway has no form for.
pub fn export(
    repo: &Repository,
    snap: &Snapshot,
    format: ExportFormat,
) -> Result<(String, Vec<u8>)> {
    let m = manifest(repo, snap)?.ok_or_else(|| {
        Error::InvalidInput("export needs a gateway snapshot (made with backup --gateway)".into())
    })?;
    let kind = m.source.kind.as_str();
    if format == ExportFormat::Deck && kind != "kong" {
        return Err(Error::InvalidInput(format!(
            "--format deck is for Kong snapshots; this one is {kind}: use json or yaml"
        )));
    }
    let value = match kind {
        "kong" => {
            let mut entities = vec![];
            for path in entity_paths(repo, snap, &m)? {
                let e = m.entry(&path).expect("listed by entity_paths");
                let bytes = read(repo, snap, &path)?.ok_or_else(|| Error::NotFound {
                    kind: "entity document".into(),
                    id: path.clone(),
                })?;
                let v = serde_json::from_slice(&bytes).map_err(|err| Error::format(&path, err))?;
                entities.push((e.kind, v));
            }
            super::kong::to_deck(&entities)
        }
        _ => match m.raw.as_slice() {
            [one] => {
                let bytes = read(repo, snap, one)?.unwrap_or_default();
                canonical::parse_json_or_yaml(&bytes).map_err(|e| Error::format(one, e))?
            }
            _ => {
                let mut files = serde_json::Map::new();
                for path in entity_paths(repo, snap, &m)? {
                    let bytes = read(repo, snap, &path)?.unwrap_or_default();
                    files.insert(
                        path,
                        Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                    );
                }
                Value::Object(files)
            }
        },
    };
    let (bytes, ext) = match format {
        ExportFormat::Json => (canonical::to_bytes(&value), "json"),
        ExportFormat::Yaml | ExportFormat::Deck => (
            serde_yaml_ng::to_string(&canonical::sort_keys(&value))
                .map_err(|e| Error::InvalidInput(format!("cannot write YAML: {e}")))?
                .into_bytes(),
            "yaml",
        ),
    };
    Ok((export_name(snap, ext), bytes))
}

/// `<gateway>-<Environment>-<YYYYMMDD>-<HHMM>-<BackupType>.<ext>`, e.g.
/// `apigateway-prod-20250818-1430-full.json` (AWS API Gateway is `apigateway`).
pub fn export_name(snap: &Snapshot, ext: &str) -> String {
    let kind = snap.source.as_ref().map_or("files", |s| s.kind.as_str());
    let gateway = if kind == "aws" { "apigateway" } else { kind };
    let tag = |k: &str, d: &str| {
        snap.tags
            .get(k)
            .filter(|v| !v.is_empty())
            .map_or(d.to_string(), |v| canonical::file_name(&v.to_lowercase()))
    };
    let time = chrono::DateTime::parse_from_rfc3339(&snap.time)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y%m%d-%H%M")
                .to_string()
        })
        .unwrap_or_else(|_| "00000000-0000".into());
    format!(
        "{gateway}-{}-{time}-{}.{ext}",
        tag("Environment", "default"),
        tag("BackupType", "full")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_changes_name_pointers_and_mask_secrets() {
        let old = json!({"config": {"minute": 60, "redis_password": "a"}, "name": "rl"});
        let new =
            json!({"config": {"minute": 100, "redis_password": "b"}, "name": "rl", "tags": ["x"]});
        let s = vec!["/config/redis_password".to_string()];
        let c = field_changes(&old, &new, &s, &s, false);
        assert_eq!(
            c,
            vec![
                FieldChange {
                    pointer: "/config/minute".into(),
                    old: Some(json!(60)),
                    new: Some(json!(100))
                },
                FieldChange {
                    pointer: "/config/redis_password".into(),
                    old: Some(json!(SECRET_PLACEHOLDER)),
                    new: Some(json!(SECRET_PLACEHOLDER))
                },
                FieldChange {
                    pointer: "/tags".into(),
                    old: None,
                    new: Some(json!(["x"]))
                },
            ]
        );
        let shown = field_changes(&old, &new, &s, &s, true);
        assert_eq!(shown[1].new, Some(json!("b")));
    }

    #[test]
    fn a_replaced_container_masks_the_secrets_inside() {
        let old = json!({"creds": [{"key": "k1"}]});
        let new = json!({"creds": [{"key": "k2"}, {"key": "k3"}]});
        let c = field_changes(
            &old,
            &new,
            &["/creds/0/key".into()],
            &["/creds/0/key".into(), "/creds/1/key".into()],
            false,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].new,
            Some(json!([{"key": SECRET_PLACEHOLDER}, {"key": SECRET_PLACEHOLDER}]))
        );
        assert!(!serde_json::to_string(&c).unwrap().contains("k1"));
    }

    #[test]
    fn line_changes_count_both_sides() {
        assert_eq!(line_changes(b"a\nb\nc", b"a\nc\nd\ne"), (1, 2));
        assert_eq!(line_changes(b"x", b"x"), (0, 0));
    }

    #[test]
    fn export_names_follow_the_convention() {
        let snap = Snapshot {
            version: crate::format::SNAPSHOT_VERSION,
            time: "2025-08-18T14:30:12Z".into(),
            tree: crate::id::BlobId([0; 32]),
            paths: vec![],
            hostname: "h".into(),
            username: "u".into(),
            tags: [("Environment".to_string(), "Prod".to_string())].into(),
            label: None,
            description: None,
            parent: None,
            summary: Default::default(),
            program_version: "gatevault".into(),
            source: Some(crate::format::Source::new("aws", "aws")),
            original: None,
            origin: None,
        };
        assert_eq!(
            export_name(&snap, "json"),
            "apigateway-prod-20250818-1430-full.json"
        );
    }
}
