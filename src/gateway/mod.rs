//! Gateway capture: one adapter per gateway kind reads the live configuration (or an export of it),
//! canonicalizes it and lays it out as a tree of documents, one entity per file. The adapters know
//! nothing of packs or keys; [`crate::backup`] stores the documents like files.
//!
//! The layout of a gateway snapshot (see `docs/gateways.md`):
//! - `<kind>/<entity kind>/<natural key>.json`: one canonical entity per file (sorted keys, lists sorted
//!   by natural key, volatile fields removed);
//! - `raw/<name>`: the export as the gateway gave it, for fidelity;
//! - `gateway.json`: the [`Manifest`]: where the capture came from, and per entity its kind, key,
//!   secret and personal fields and data subject.

pub mod aws;
pub mod caddy;
pub mod canonical;
pub mod files;
pub mod http;
pub mod kong;
pub mod nginx;
pub mod stored;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub use crate::format::Source;

/// Name of the manifest document at the root of a gateway snapshot.
pub const MANIFEST: &str = "gateway.json";

/// Version of [`Manifest`].
pub const MANIFEST_VERSION: u32 = 1;

/// Gateway kinds with an adapter.
pub const KINDS: &[&str] = &["kong", "caddy", "nginx", "haproxy", "files", "aws"];

/// One configuration entity in canonical form.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    /// Document path in the snapshot, e.g. `kong/services/orders.json`.
    pub path: String,
    /// Entity kind, e.g. `service`.
    pub kind: String,
    /// Natural key (or id where the id is the identity), e.g. `orders`.
    pub key: String,
    /// The canonical content.
    pub value: Value,
    /// JSON pointers of secret fields (keys, passwords, private keys).
    pub secrets: Vec<String>,
    /// JSON pointers of personal fields (user names, e-mail addresses).
    pub personal: Vec<String>,
    /// The data subject this entity belongs to, e.g. `kong:consumer=alice`.
    pub subject: Option<String>,
    /// Bytes stored verbatim instead of the canonical JSON of `value` (a config file that is not
    /// JSON: an nginx include, a PEM file, an htpasswd file). For such a document the marks point
    /// into it seen as a list of lines: `""` is the whole document, `/3` its fourth line.
    pub text: Option<Vec<u8>>,
}

impl Entity {
    /// An entity of `kind` keyed `key` under `dir` (`kong/services`), with no marks.
    pub fn new(dir: &str, kind: &str, key: &str, value: Value) -> Self {
        Self {
            path: format!("{dir}/{}.json", canonical::file_name(key)),
            kind: kind.into(),
            key: key.into(),
            value,
            secrets: vec![],
            personal: vec![],
            subject: None,
            text: None,
        }
    }

    /// An entity stored verbatim at `path` (no `.json` added), with no marks and a null `value`.
    pub fn verbatim(path: &str, kind: &str, key: &str, bytes: Vec<u8>) -> Self {
        Self {
            path: path.into(),
            kind: kind.into(),
            key: key.into(),
            value: Value::Null,
            secrets: vec![],
            personal: vec![],
            subject: None,
            text: Some(bytes),
        }
    }

    /// Marks the fields at these JSON pointers secret, where present.
    pub fn secret(mut self, pointers: &[&str]) -> Self {
        self.secrets.extend(present(&self.value, pointers));
        self
    }

    /// Marks the fields at these JSON pointers personal, where present.
    pub fn personal(mut self, pointers: &[&str]) -> Self {
        self.personal.extend(present(&self.value, pointers));
        self
    }

    /// Sets the data subject.
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }
}

/// The pointers among `pointers` that exist in `v`; a `*` segment stands for every list item.
fn present(v: &Value, pointers: &[&str]) -> Vec<String> {
    let mut out = vec![];
    for p in pointers {
        expand(v, "", p, &mut out);
    }
    out
}

fn expand(v: &Value, done: &str, rest: &str, out: &mut Vec<String>) {
    if rest.is_empty() {
        if !v.is_null() {
            out.push(done.to_string());
        }
        return;
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (seg, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match (seg, v) {
        ("*", Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                expand(item, &format!("{done}/{i}"), tail, out);
            }
        }
        (_, Value::Object(m)) => {
            if let Some(x) = m.get(seg) {
                expand(x, &format!("{done}/{}", pointer_escape(seg)), tail, out);
            }
        }
        _ => {}
    }
}

fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Where a capture came from and what it holds.
#[derive(Clone, Debug)]
pub struct Capture {
    /// The source, recorded in the snapshot.
    pub source: Source,
    /// Raw exports, name to bytes, stored under `raw/`.
    pub raw: BTreeMap<String, Vec<u8>>,
    /// The canonical entities.
    pub entities: Vec<Entity>,
}

/// One entity's line in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Entity kind.
    pub kind: String,
    /// Natural key.
    pub key: String,
    /// JSON pointers of secret fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// JSON pointers of personal fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<String>,
    /// The data subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// The `gateway.json` document of a gateway snapshot.
///
/// To stay small (it changes with every capture), it lists only entities whose kind and key cannot
/// be derived from their path or that carry marks; for the others, the folder's kind in `kinds` and
/// the file name (see [`canonical::file_name`]) give them. Use [`Manifest::entry`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Where the capture came from.
    pub source: Source,
    /// Folder of entity documents to the kind of the entities in it.
    #[serde(default)]
    pub kinds: BTreeMap<String, String>,
    /// Document path to entry, for the entities [`Manifest::kinds`] does not describe fully.
    pub entities: BTreeMap<String, ManifestEntry>,
    /// Raw export document paths.
    #[serde(default)]
    pub raw: Vec<String>,
}

/// The folder of a document path and the key its file name stands for (`None` for `a.json` at the
/// top or a name that is not an encoded key).
pub(crate) fn derived(path: &str) -> Option<(&str, String)> {
    let (dir, file) = path.rsplit_once('/')?;
    let stem = file.strip_suffix(".json")?;
    let key = canonical::key_of_file_name(stem)?;
    (canonical::file_name(&key) == stem).then_some((dir, key))
}

impl Manifest {
    /// Parses a manifest.
    ///
    /// # Errors
    /// [`Error::Format`] when it is not a manifest this version understands.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let m: Self = serde_json::from_slice(bytes).map_err(|e| Error::format(MANIFEST, e))?;
        if m.version > MANIFEST_VERSION {
            return Err(Error::format(
                MANIFEST,
                format!(
                    "version {} is newer than this gatevault reads ({MANIFEST_VERSION}): upgrade gatevault",
                    m.version
                ),
            ));
        }
        Ok(m)
    }

    /// The entry of the entity document at `path`, listed or derived; `None` for other documents
    /// (raw exports, the manifest).
    pub fn entry(&self, path: &str) -> Option<ManifestEntry> {
        if let Some(e) = self.entities.get(path) {
            return Some(e.clone());
        }
        let (dir, key) = derived(path)?;
        Some(ManifestEntry {
            kind: self.kinds.get(dir)?.clone(),
            key,
            secrets: vec![],
            personal: vec![],
            subject: None,
        })
    }
}

impl Capture {
    /// The documents to store: entities, raw exports and the manifest, path to bytes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when two entities map to one path.
    pub fn documents(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut docs = BTreeMap::new();
        let mut entries = BTreeMap::new();
        let mut kinds: BTreeMap<String, String> = BTreeMap::new();
        // In path order, so that which kind a folder gets (the first derivable entity's) does not
        // depend on the order the entities came in: a capture read back stores the same manifest.
        let mut by_path: Vec<&Entity> = self.entities.iter().collect();
        by_path.sort_by(|a, b| a.path.cmp(&b.path));
        for e in by_path {
            let bytes = match &e.text {
                Some(t) => t.clone(),
                None => canonical::to_bytes(&e.value),
            };
            if docs.insert(e.path.clone(), bytes).is_some() {
                return Err(Error::InvalidInput(format!(
                    "{}: two {} entities have the key {:?}",
                    self.source.describe(),
                    e.kind,
                    e.key
                )));
            }
            let entry = ManifestEntry {
                kind: e.kind.clone(),
                key: e.key.clone(),
                secrets: e.secrets.clone(),
                personal: e.personal.clone(),
                subject: e.subject.clone(),
            };
            // Listed only when the folder's kind and the file name do not already say it all.
            let plain =
                entry.secrets.is_empty() && entry.personal.is_empty() && entry.subject.is_none();
            let derivable = derived(&e.path).is_some_and(|(dir, key)| {
                key == e.key
                    && kinds
                        .entry(dir.to_string())
                        .or_insert_with(|| e.kind.clone())
                        == &e.kind
            });
            if !(plain && derivable) {
                entries.insert(e.path.clone(), entry);
            }
        }
        let mut raw = vec![];
        for (name, bytes) in &self.raw {
            let p = format!("raw/{}", canonical::file_name(name));
            if docs.insert(p.clone(), bytes.clone()).is_some() {
                return Err(Error::InvalidInput(format!(
                    "{}: the raw export {name:?} and an entity share the path {p}",
                    self.source.describe()
                )));
            }
            raw.push(p);
        }
        if docs.contains_key(MANIFEST) {
            return Err(Error::InvalidInput(format!(
                "{}: an entity has the manifest's path {MANIFEST}",
                self.source.describe()
            )));
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            source: self.source.clone(),
            kinds,
            entities: entries,
            raw,
        };
        let m = serde_json::to_value(&manifest).expect("manifest serializes");
        docs.insert(MANIFEST.into(), canonical::to_bytes(&m));
        Ok(docs)
    }
}

impl Capture {
    /// The capture whose [`Capture::documents`] are `docs` (path to bytes, the manifest included): the
    /// inverse of that function, as a restore reads a snapshot back. A document is taken as JSON when
    /// it is exactly the canonical form of its parse, else as verbatim text; documents that are neither
    /// raw exports nor entities of the manifest are left out.
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] without a manifest; [`Error::Format`] for a manifest that does not
    /// parse.
    pub fn from_documents(mut docs: BTreeMap<String, Vec<u8>>) -> Result<Self> {
        let manifest = match docs.remove(MANIFEST) {
            Some(b) => Manifest::parse(&b)?,
            None => return Err(Error::integrity(
                MANIFEST,
                "the snapshot has no gateway manifest (damaged, or not made by backup --gateway)",
            )),
        };
        let mut raw = BTreeMap::new();
        let mut entities = vec![];
        for (path, bytes) in docs {
            if manifest.raw.contains(&path) {
                // Stored under its file name: the name the export had is the key it stands for.
                let stored = path.strip_prefix("raw/").unwrap_or(&path);
                let name = canonical::key_of_file_name(stored).unwrap_or_else(|| stored.into());
                raw.insert(name, bytes);
                continue;
            }
            let Some(entry) = manifest.entry(&path) else {
                continue;
            };
            let parsed = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .filter(|v| canonical::to_bytes(v) == bytes);
            let (value, text) = match parsed {
                Some(v) => (v, None),
                None => (Value::Null, Some(bytes)),
            };
            entities.push(Entity {
                path,
                kind: entry.kind,
                key: entry.key,
                value,
                secrets: entry.secrets,
                personal: entry.personal,
                subject: entry.subject,
                text,
            });
        }
        Ok(Self {
            source: manifest.source,
            raw,
            entities,
        })
    }
}

/// What the user said about the gateway to capture.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Gateway kind (one of [`KINDS`]).
    pub kind: String,
    /// Admin API or service endpoint.
    pub endpoint: Option<String>,
    /// An export file to read instead of a live gateway (decK file, config file).
    pub file: Option<std::path::PathBuf>,
    /// Kong workspace.
    pub workspace: Option<String>,
    /// Only entities carrying one of these tags (Kong `--select-tag`).
    pub select_tags: Vec<String>,
    /// Cloud region (AWS), overriding the usual configuration chain.
    pub region: Option<String>,
    /// Capture secret values the gateway only gives on request (AWS API key values).
    pub include_secret_values: bool,
    /// Skip validating file-based configurations with the gateway's own checker (`nginx -t`).
    pub no_validate: bool,
}

/// Captures the gateway `opts` names.
///
/// # Errors
/// [`Error::Gateway`] for an unreachable gateway, refused credentials or a malformed export;
/// [`Error::InvalidInput`] for an unknown kind or missing options.
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    match opts.kind.as_str() {
        "aws" => aws::capture(opts),
        "kong" => kong::capture(opts),
        "caddy" => caddy::capture(opts),
        "nginx" | "haproxy" => nginx::capture(opts),
        "files" => files::capture(opts),
        k => Err(Error::InvalidInput(format!(
            "unknown gateway kind {k:?}: use one of {}",
            KINDS.join(", ")
        ))),
    }
}

/// Replaces the values at `pointers` in `v` by a placeholder.
pub fn mask(v: &Value, pointers: &[String]) -> Value {
    let mut v = v.clone();
    for p in pointers {
        if let Some(x) = v.pointer_mut(p) {
            *x = Value::String(SECRET_PLACEHOLDER.into());
        }
    }
    v
}

/// What a masked secret shows.
pub const SECRET_PLACEHOLDER: &str = "<secret>";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_expand_list_items_and_skip_missing_fields() {
        let v =
            json!({"creds": [{"key": "a"}, {"key": "b"}, {"other": 1}], "name": "x", "n": null});
        assert_eq!(
            present(&v, &["/creds/*/key", "/missing", "/n", "/name"]),
            vec!["/creds/0/key", "/creds/1/key", "/name"]
        );
    }

    #[test]
    fn mask_hides_only_marked_fields() {
        let v = json!({"key": "s3cret", "name": "alice"});
        let m = mask(&v, &["/key".into()]);
        assert_eq!(m, json!({"key": SECRET_PLACEHOLDER, "name": "alice"}));
    }

    #[test]
    fn documents_reject_two_entities_on_one_path() {
        let e = Entity::new("kong/services", "service", "a", json!({}));
        let c = Capture {
            source: Source::new("kong", "file:/x"),
            raw: BTreeMap::new(),
            entities: vec![e.clone(), e],
        };
        assert!(matches!(c.documents(), Err(Error::InvalidInput(_))));
    }
}
