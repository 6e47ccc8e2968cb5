//! `erase`: removes one data subject's personal data from every snapshot, physically.
//!
//! 1. Select: the subject's entities are those the adapters marked with its subject id
//!    (`kong:consumer=alice`); `--match FIELD=VALUE` finds subjects through a personal field. The values
//!    to erase are the subject's key and the values of every personal field of its entities.
//! 2. Rewrite: every snapshot that holds the subject's data (an entity of the subject, a value in any
//!    document, in a file name or in its own metadata) is stored again without it, keeping its time,
//!    tags and labels and naming the original in `original`; the original is then removed. Records
//!    (drill reports) that mention a value are stored again with the value masked.
//! 3. Prune, forced: every pack that held a blob containing a value is repacked whatever `--max-unused`
//!    says, and needed delta blobs whose base held a value are stored self-contained.
//! 4. Scan: every blob of the repository is decrypted and searched for the values, and so are the pack
//!    files, snapshots and records; the result goes into the report and the erasure record.
//!
//! Re-running after an interruption finishes the job: a snapshot whose rewritten twin exists is only
//! removed, and the forced prune finds whatever still holds a value.

pub mod scrub;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::backend::FileType;
use crate::backup::Progress;
use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeType, Snapshot, Tree, AUDIT_COPY_RECORD_TYPE};
use crate::gateway::{canonical, Manifest, MANIFEST};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::IndexState;
use crate::prune::{BlobKey, Forced, PruneOptions, PruneReport};
use crate::repo::lock::LockGuard;
use crate::repo::saver::BlobSaver;
use crate::repo::Repository;
use scrub::{Removal, Scrubbed, Tokens};

/// What to erase.
#[derive(Clone, Debug, Default)]
pub struct EraseOptions {
    /// Subject ids as the adapters mark them (`kong:consumer=alice`).
    pub subjects: Vec<String>,
    /// `(field, value)`: the subjects of entities whose personal field `field` (the last part of its
    /// pointer) has `value`; the value itself is erased too.
    pub matches: Vec<(String, String)>,
    /// Only report what would change.
    pub dry_run: bool,
    /// The prune that follows (its `dry_run` is ignored).
    pub prune: PruneOptions,
}

/// How one document changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DocChange {
    /// The document goes (an entity of the subject, or one that is about the subject as a whole).
    Removed,
    /// The parts mentioning the subject go.
    Scrubbed,
}

/// One changed document (its path with erased values masked).
#[derive(Clone, Debug, Serialize)]
pub struct DocReport {
    /// Path in the snapshot, values masked.
    pub path: String,
    /// Removed or scrubbed.
    pub change: DocChange,
    /// For a scrubbed document: what was removed (JSON pointers of list items and keys, or `line N`),
    /// values masked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// One rewritten snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotReport {
    /// The snapshot removed.
    pub original: SnapshotId,
    /// Its replacement (none in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<SnapshotId>,
    /// Its time.
    pub time: String,
    /// Changed documents.
    pub documents: Vec<DocReport>,
    /// Metadata fields masked (`tag Owner`, `description`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<String>,
}

/// The final scan.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanReport {
    /// Packs read.
    pub packs: usize,
    /// Blobs decrypted and searched.
    pub blobs: u64,
    /// Snapshots searched.
    pub snapshots: usize,
    /// Records searched.
    pub records: usize,
    /// Where a value was still found (object names only).
    pub found: Vec<String>,
    /// `clean` when nothing was found.
    pub status: String,
    /// Audit log entries (by seq) whose command lines mention a value: the log is append-only and
    /// hash-chained, so erase cannot change them (see `docs/lifecycle.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_entries: Vec<u64>,
}

/// What `erase` did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct EraseReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Subjects erased, values masked (`kong:consumer=<erased>`).
    pub subjects: Vec<String>,
    /// Keyed BLAKE3 of each subject id, in the same order: whoever holds the repository key can
    /// confirm which subject was erased; nobody else can.
    pub subject_ids: Vec<String>,
    /// Values searched for.
    pub values: usize,
    /// Values too short to search for (only removed where they are marked fields).
    pub values_not_searched: usize,
    /// Rewritten snapshots.
    pub snapshots: Vec<SnapshotReport>,
    /// Snapshots left untouched.
    pub snapshots_untouched: usize,
    /// Records stored again with values masked.
    pub records_rewritten: usize,
    /// Blobs that held a value before the rewrite.
    pub blobs_with_values: usize,
    /// The forced prune.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneReport>,
    /// Replaced snapshots whose old version an object lock keeps (hidden behind a delete marker, so
    /// no listing shows them, but stored until the date): erase again after it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retained_snapshots: Vec<RetainedSnapshot>,
    /// The scan afterwards (none in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanReport>,
    /// The erasure record stored in the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// When the subjects were erased before (nothing of theirs is left; nothing was done).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub already_erased: Vec<String>,
}

/// A snapshot removed by erase whose stored version an object lock keeps until `until`.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// The end of its retention.
    pub until: chrono::DateTime<chrono::Utc>,
}

/// Removes snapshot `id`, noting in `retained` when an object lock keeps its stored version (the
/// backend then only hides it).
fn remove_snapshot(
    repo: &Repository,
    id: &SnapshotId,
    retained: &mut Vec<RetainedSnapshot>,
) -> Result<()> {
    let name = id.to_hex();
    let until = match repo.backend().locked_until(FileType::Snapshot, &name) {
        Err(Error::NotFound { .. }) => return Ok(()),
        r => r?,
    };
    match until {
        // Hidden already by an earlier run: nothing to do before the date.
        Some(until) if repo.backend().exists(FileType::Snapshot, &name)? => {
            repo.remove_snapshot(id)?;
            retained.push(RetainedSnapshot { id: *id, until });
        }
        Some(until) => retained.push(RetainedSnapshot { id: *id, until }),
        None => repo.remove_snapshot(id)?,
    }
    Ok(())
}

/// Trees and file contents read during one erase, each once.
struct Reader<'a> {
    repo: &'a Repository,
    trees: Mutex<HashMap<BlobId, Arc<Tree>>>,
}

impl<'a> Reader<'a> {
    fn new(repo: &'a Repository) -> Self {
        Self {
            repo,
            trees: Mutex::new(HashMap::new()),
        }
    }

    fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.repo.load_tree(id)?);
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id, t.clone());
        Ok(t)
    }

    /// Every file of tree `root` as (path without the leading `/`, node).
    fn files(&self, root: &BlobId) -> Result<Vec<(String, Node)>> {
        let mut out = Vec::new();
        let mut stack = vec![(*root, String::new())];
        while let Some((id, dir)) = stack.pop() {
            for n in &self.tree(&id)?.nodes {
                let path = if dir.is_empty() {
                    n.name.clone()
                } else {
                    format!("{dir}/{}", n.name)
                };
                match (n.node_type, n.subtree) {
                    (NodeType::Dir, Some(sub)) => stack.push((sub, path)),
                    (NodeType::File, _) => out.push((path, n.clone())),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    fn content(&self, n: &Node) -> Result<Vec<u8>> {
        if let Some(t) = &n.inline {
            return Ok(t.clone().into_bytes());
        }
        let mut out = Vec::with_capacity(n.size as usize);
        for b in &n.content {
            out.extend_from_slice(&self.repo.load_blob(BlobType::Data, b)?);
        }
        Ok(out)
    }
}

fn pointer_value(v: &Value, p: &str) -> Option<String> {
    match v.pointer(p)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The subjects and values to erase, from the manifests of the gateway snapshots.
fn select(
    reader: &Reader<'_>,
    snaps: &[(SnapshotId, Snapshot)],
    opts: &EraseOptions,
) -> Result<(BTreeSet<String>, BTreeSet<String>, Vec<String>)> {
    let mut subjects: BTreeSet<String> = opts.subjects.iter().cloned().collect();
    let mut values: BTreeSet<String> = opts.matches.iter().map(|(_, v)| v.clone()).collect();
    for s in &subjects {
        if let Some((_, key)) = s.split_once('=') {
            values.insert(key.to_string());
        }
    }
    // Entities carrying marks, read once per (path, content).
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut marked: Vec<(Option<String>, Vec<String>, Value)> = Vec::new();
    for (_, snap) in snaps {
        if snap.source.is_none() {
            continue;
        }
        let files = reader.files(&snap.tree)?;
        let Some((_, mnode)) = files.iter().find(|(p, _)| p == MANIFEST) else {
            continue;
        };
        let m = Manifest::parse(&reader.content(mnode)?)?;
        for (path, e) in &m.entities {
            if e.personal.is_empty() && e.subject.is_none() {
                continue;
            }
            let Some((_, node)) = files.iter().find(|(p, _)| p == path) else {
                continue;
            };
            let key = (
                path.clone(),
                node.inline
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", node.content)),
            );
            if !seen.insert(key) {
                continue;
            }
            let v = serde_json::from_slice(&reader.content(node)?).unwrap_or(Value::Null);
            marked.push((e.subject.clone(), e.personal.clone(), v));
        }
    }
    // Selectors that found nothing (by position, so that no value is repeated in a message).
    let mut unmatched = Vec::new();
    for (i, s) in opts.subjects.iter().enumerate() {
        if !marked
            .iter()
            .any(|(subject, _, _)| subject.as_ref() == Some(s))
        {
            unmatched.push(format!("--subject #{}", i + 1));
        }
    }
    for (i, (field, value)) in opts.matches.iter().enumerate() {
        let mut found = false;
        for (subject, personal, v) in &marked {
            let hit = personal.iter().any(|p| {
                p.rsplit('/').next() == Some(field.as_str())
                    && pointer_value(v, p).as_deref() == Some(value.as_str())
            });
            if hit {
                found = true;
                if let Some(s) = subject {
                    subjects.insert(s.clone());
                }
            }
        }
        if !found {
            unmatched.push(format!("--match #{} (field {field})", i + 1));
        }
    }
    for (subject, personal, v) in &marked {
        if subject.as_ref().is_some_and(|s| subjects.contains(s)) {
            values.extend(personal.iter().filter_map(|p| pointer_value(v, p)));
        }
    }
    Ok((subjects, values, unmatched))
}

/// The plan for one snapshot: what happens to each changed file, the new manifest, masked metadata.
#[derive(Default)]
struct SnapPlan {
    /// Path to new bytes (`None`: removed).
    files: BTreeMap<String, Option<Vec<u8>>>,
    docs: Vec<DocReport>,
    metadata: Vec<String>,
}

fn describe_removals(removals: &[Removal], t: &Tokens) -> Vec<String> {
    removals
        .iter()
        .map(|r| match r {
            Removal::Item(at, i) if at.is_empty() => format!("line {}", i + 1),
            Removal::Item(at, i) => t.mask(&format!("{at}/{i}")),
            Removal::Key(at, k) => t.mask(&format!("{at}/{k}")),
        })
        .collect()
}

fn plan_snapshot(
    reader: &Reader<'_>,
    snap: &Snapshot,
    subjects: &BTreeSet<String>,
    t: &Tokens,
) -> Result<SnapPlan> {
    let mut plan = SnapPlan::default();
    let files = reader.files(&snap.tree)?;
    let manifest = match (&snap.source, files.iter().find(|(p, _)| p == MANIFEST)) {
        (Some(_), Some((_, n))) => Some(Manifest::parse(&reader.content(n)?)?),
        _ => None,
    };
    let mut moved: HashMap<String, Vec<Removal>> = HashMap::new();
    for (path, node) in &files {
        if path == MANIFEST && manifest.is_some() {
            continue;
        }
        let entry = manifest.as_ref().and_then(|m| m.entry(path));
        let of_subject = entry
            .as_ref()
            .and_then(|e| e.subject.as_ref())
            .is_some_and(|s| subjects.contains(s));
        if of_subject || t.found(path.as_bytes()) {
            plan.files.insert(path.clone(), None);
            plan.docs.push(DocReport {
                path: t.mask(path),
                change: DocChange::Removed,
                removed: vec![],
            });
            continue;
        }
        let bytes = reader.content(node)?;
        let canonical = entry.is_some() && path.ends_with(".json");
        match scrub::scrub_document(&bytes, canonical, t) {
            Scrubbed::Clean => {}
            Scrubbed::Removed => {
                plan.files.insert(path.clone(), None);
                plan.docs.push(DocReport {
                    path: t.mask(path),
                    change: DocChange::Removed,
                    removed: vec![],
                });
            }
            Scrubbed::Changed(new, removals) => {
                plan.docs.push(DocReport {
                    path: t.mask(path),
                    change: DocChange::Scrubbed,
                    removed: describe_removals(&removals, t),
                });
                plan.files.insert(path.clone(), Some(new));
                moved.insert(path.clone(), removals);
            }
        }
    }
    if let Some(mut m) = manifest {
        let before = m.clone();
        m.entities.retain(|p, _| plan.files.get(p) != Some(&None));
        m.raw.retain(|p| plan.files.get(p) != Some(&None));
        for (p, e) in m.entities.iter_mut() {
            if let Some(r) = moved.get(p) {
                e.secrets = e
                    .secrets
                    .iter()
                    .filter_map(|x| scrub::remap(x, r))
                    .collect();
                e.personal = e
                    .personal
                    .iter()
                    .filter_map(|x| scrub::remap(x, r))
                    .collect();
            }
        }
        let mut bytes =
            canonical::to_bytes(&serde_json::to_value(&m).expect("manifest serializes"));
        if t.found(&bytes) {
            // A value in the manifest outside the entities' entries (the source's scope, say).
            if let Scrubbed::Changed(b, _) = scrub::scrub_document(&bytes, true, t) {
                bytes = b;
            }
        }
        if m != before || t.found(&bytes) {
            plan.files.insert(MANIFEST.to_string(), Some(bytes));
            plan.docs.push(DocReport {
                path: MANIFEST.into(),
                change: DocChange::Scrubbed,
                removed: vec![],
            });
        }
    }
    let mut meta = |name: String, v: &str| {
        if t.found(v.as_bytes()) {
            plan.metadata.push(name);
        }
    };
    for (k, v) in &snap.tags {
        meta(format!("tag {}", t.mask(k)), &format!("{k}={v}"));
    }
    for (name, v) in [
        ("label", snap.label.as_deref()),
        ("description", snap.description.as_deref()),
        ("hostname", Some(snap.hostname.as_str())),
        ("username", Some(snap.username.as_str())),
    ] {
        if let Some(v) = v {
            meta(name.to_string(), v);
        }
    }
    for p in &snap.paths {
        meta("paths".into(), p);
    }
    Ok(plan)
}

/// `snap` with every erased value in its metadata masked.
fn masked_metadata(snap: &Snapshot, t: &Tokens) -> Snapshot {
    let mut s = snap.clone();
    s.tags = snap
        .tags
        .iter()
        .map(|(k, v)| (t.mask(k), t.mask(v)))
        .collect();
    s.label = snap.label.as_ref().map(|v| t.mask(v));
    s.description = snap.description.as_ref().map(|v| t.mask(v));
    s.hostname = t.mask(&snap.hostname);
    s.username = t.mask(&snap.username);
    s.paths = snap.paths.iter().map(|p| t.mask(p)).collect();
    s
}

/// Stores tree `id` (at `dir`, no leading `/`) again with the planned file changes; returns the new id,
/// or `None` when nothing below it changes.
fn rebuild(
    reader: &Reader<'_>,
    saver: &BlobSaver<'_>,
    chunker: &crate::chunker::Chunker,
    id: &BlobId,
    dir: &str,
    files: &BTreeMap<String, Option<Vec<u8>>>,
) -> Result<Option<BlobId>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    if !files.keys().any(|p| p.starts_with(&prefix)) {
        return Ok(None);
    }
    let tree = reader.tree(id)?;
    let mut nodes = Vec::with_capacity(tree.nodes.len());
    let mut changed = false;
    for n in &tree.nodes {
        let path = format!("{prefix}{}", n.name);
        match (n.node_type, n.subtree, files.get(&path)) {
            (NodeType::Dir, Some(sub), _) => {
                match rebuild(reader, saver, chunker, &sub, &path, files)? {
                    Some(new) => {
                        changed = true;
                        nodes.push(Node {
                            subtree: Some(new),
                            ..n.clone()
                        });
                    }
                    None => nodes.push(n.clone()),
                }
            }
            (NodeType::File, _, Some(None)) => changed = true,
            (NodeType::File, _, Some(Some(bytes))) => {
                changed = true;
                let mut node = Node {
                    size: bytes.len() as u64,
                    ..n.clone()
                };
                match (&n.inline, std::str::from_utf8(bytes)) {
                    (Some(_), Ok(text)) => node.inline = Some(text.to_string()),
                    _ => {
                        node.inline = None;
                        let mut at = 0;
                        node.content = Vec::new();
                        for len in chunker.split(bytes) {
                            // Self-contained: a delta base may hold the erased values.
                            node.content
                                .push(saver.save(BlobType::Data, &bytes[at..at + len])?);
                            at += len;
                        }
                    }
                }
                nodes.push(node);
            }
            _ => nodes.push(n.clone()),
        }
    }
    if !changed {
        return Ok(None);
    }
    let t = Tree {
        nodes,
        ..(*tree).clone()
    };
    Ok(Some(saver.save(BlobType::Tree, &t.encode())?))
}

/// What [`scan_blobs`] found.
struct BlobScan {
    /// Blobs whose plaintext holds a value, with their packs.
    found: Vec<(BlobKey, PackId)>,
    /// Packs read.
    packs: usize,
    /// Blobs decrypted.
    blobs: u64,
    /// Pack files whose stored bytes hold a value.
    raw: Vec<String>,
}

/// Decrypts every blob the index names and searches it for the values; pack files themselves are
/// searched as stored bytes too.
fn scan_blobs(
    repo: &Repository,
    state: &IndexState,
    t: &Tokens,
    progress: &dyn Progress,
) -> Result<BlobScan> {
    let backend = repo.backend();
    let keys = repo.keys();
    let bases: HashSet<BlobKey> = state.delta_bases().collect();
    let cache: Mutex<HashMap<BlobKey, Arc<Vec<u8>>>> = Mutex::new(HashMap::new());
    fn plain(
        state: &IndexState,
        repo: &Repository,
        bases: &HashSet<BlobKey>,
        cache: &Mutex<HashMap<BlobKey, Arc<Vec<u8>>>>,
        k: BlobKey,
        depth: usize,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&k) {
            return Ok(p.clone());
        }
        let (pack, e) = state.blob(k.0, &k.1).ok_or_else(|| Error::NotFound {
            kind: "blob".into(),
            id: k.1.to_hex(),
        })?;
        let env = repo.backend().read_range(
            FileType::Pack,
            &pack.to_hex(),
            e.offset as u64,
            e.length as u64,
        )?;
        let data = Arc::new(crate::pack::open_blob_with(
            repo.keys(),
            &pack,
            &e,
            &env,
            &|b| match depth {
                0 => Err(Error::integrity(
                    format!("blob {b}"),
                    "delta chain too long",
                )),
                _ => plain(state, repo, bases, cache, (k.0, *b), depth - 1).map(|p| (*p).clone()),
            },
        )?);
        if bases.contains(&k) {
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k, data.clone());
        }
        Ok(data)
    }
    let packs: Vec<crate::index::IndexedPack<'_>> = state.packs().collect();
    progress.start(packs.iter().map(|p| p.size).sum(), packs.len() as u64);
    let found: Mutex<Vec<(BlobKey, PackId)>> = Mutex::new(Vec::new());
    let raw_found: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let blobs = std::sync::atomic::AtomicU64::new(0);
    packs
        .par_iter()
        .map(|p| -> Result<()> {
            let pid = &p.id;
            let bytes = match backend.read(FileType::Pack, &pid.to_hex()) {
                Ok(b) => b,
                Err(Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if t.found(&bytes) {
                raw_found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("pack file {pid}"));
            }
            for e in p.entries() {
                let k = (e.blob_type, e.id);
                let data = if e.base.is_some() || bases.contains(&k) {
                    plain(state, repo, &bases, &cache, k, crate::pack::MAX_DELTA_DEPTH)?
                } else {
                    let end = e.offset as usize + e.length as usize;
                    let env = bytes
                        .get(e.offset as usize..end)
                        .ok_or_else(|| Error::integrity(format!("pack {pid}"), "truncated"))?;
                    Arc::new(crate::pack::open_blob(keys, pid, &e, env)?)
                };
                blobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if t.found(&data) {
                    found
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((k, *pid));
                }
            }
            progress.bytes(p.size);
            Ok(())
        })
        .collect::<Result<Vec<()>>>()?;
    progress.finish();
    Ok(BlobScan {
        found: found.into_inner().unwrap_or_else(|e| e.into_inner()),
        packs: packs.len(),
        blobs: blobs.into_inner(),
        raw: raw_found.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// Searches every blob, pack file, snapshot and record (but the `pending` ones) for the values.
fn final_scan(
    repo: &Repository,
    t: &Tokens,
    pending: &[&str],
    progress: &dyn Progress,
) -> Result<ScanReport> {
    let state = IndexState::read(repo.backend(), repo.keys())?;
    let scan = scan_blobs(repo, &state, t, progress)?;
    let mut r = ScanReport {
        packs: scan.packs,
        blobs: scan.blobs,
        found: scan.raw,
        ..ScanReport::default()
    };
    for ((ty, id), pack) in scan.found {
        r.found.push(format!(
            "{} blob {id} in pack {pack}",
            if ty == BlobType::Tree { "tree" } else { "data" }
        ));
    }
    for (id, s) in repo.load_all_snapshots()? {
        r.snapshots += 1;
        match s {
            Ok(s) if t.found(&s.encode()) => r.found.push(format!("snapshot {id}")),
            Ok(_) => {}
            Err(e) => r.found.push(format!("{e} (it cannot be searched)")),
        }
    }
    for (name, rec) in repo.records_named(None)? {
        if pending.contains(&name.as_str()) {
            continue;
        }
        r.records += 1;
        match rec {
            // A copy of an audit entry being re-sealed (`rewrite --reencrypt` was interrupted) is
            // part of the log: reported as its entry, never rewritten.
            Ok(v) if v["type"] == AUDIT_COPY_RECORD_TYPE => {
                if t.found(&serde_json::to_vec(&v).unwrap_or_default()) {
                    if let Some(seq) = v["seq"].as_u64() {
                        r.audit_entries.push(seq);
                    }
                }
            }
            Ok(v) if t.found(&serde_json::to_vec(&v).unwrap_or_default()) => {
                r.found.push(format!("record {name}"))
            }
            Ok(_) => {}
            Err(e) => r.found.push(format!("{e} (it cannot be searched)")),
        }
    }
    for (seq, e) in crate::audit::AuditLog::new(repo.backend(), repo.keys()).entries()? {
        if e.is_ok_and(|e| t.found(&serde_json::to_vec(&e).unwrap_or_default())) {
            r.audit_entries.push(seq);
        }
    }
    r.audit_entries.sort_unstable();
    r.audit_entries.dedup();
    r.status = if r.found.is_empty() { "clean" } else { "found" }.into();
    Ok(r)
}

fn mask_value(v: &Value, t: &Tokens) -> Value {
    match v {
        Value::String(s) => Value::String(t.mask(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| mask_value(x, t)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (t.mask(k), mask_value(x, t)))
                .collect(),
        ),
        x => x.clone(),
    }
}

/// Type of the record holding the values of an erase in progress.
const PENDING: &str = "erasure-pending";

/// The strings of a JSON array (none for anything else).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The pending records of interrupted or retained erases of any of `subject_ids`, by name.
fn pending_of(repo: &Repository, subject_ids: &[String]) -> Result<Vec<(String, Value)>> {
    Ok(repo
        .records_named(Some(PENDING))?
        .into_iter()
        .filter_map(|(name, r)| r.ok().map(|v| (name, v)))
        .filter(|(_, v)| {
            strings(&v["subject_ids"])
                .iter()
                .any(|i| subject_ids.contains(i))
        })
        .collect())
}

/// Records of interrupted erases of any of `subject_ids`: (record name, values).
fn pending_records(
    repo: &Repository,
    subject_ids: &[String],
) -> Result<Vec<(String, Vec<String>)>> {
    Ok(pending_of(repo, subject_ids)?
        .into_iter()
        .map(|(name, v)| (name, strings(&v["values"])))
        .collect())
}

/// Packs that interrupted or retained erases of any of `subject_ids` could not remove (object lock).
fn retained_packs(repo: &Repository, subject_ids: &[String]) -> Result<HashSet<PackId>> {
    Ok(retained_from_pending(repo, subject_ids, "retained_packs")?
        .iter()
        .filter_map(|p| PackId::from_hex(p).ok())
        .collect())
}

/// The names listed under `field` in the pending records of earlier erases of any of `subject_ids`.
fn retained_from_pending(
    repo: &Repository,
    subject_ids: &[String],
    field: &str,
) -> Result<Vec<String>> {
    Ok(pending_of(repo, subject_ids)?
        .iter()
        .flat_map(|(_, v)| strings(&v[field]))
        .collect())
}

/// Stores again, with the values masked, every record that mentions one; returns how many.
fn rewrite_records(repo: &Repository, t: &Tokens) -> Result<usize> {
    let mut n = 0;
    for (name, r) in repo.records_named(None)? {
        // An unreadable record is reported by the final scan.
        let Ok(v) = r else {
            continue;
        };
        // The copy of an audit entry being re-sealed is the entry: the log is append-only, so erase
        // does not change it (the scan reports it with the audit entries).
        if v["type"] == PENDING
            || v["type"] == AUDIT_COPY_RECORD_TYPE
            || !t.found(&serde_json::to_vec(&v).unwrap_or_default())
        {
            continue;
        }
        repo.save_record(&mask_value(&v, t))?;
        repo.backend().remove(FileType::Record, &name)?;
        n += 1;
    }
    Ok(n)
}

/// Erases the subjects of `opts` (see the module documentation).
///
/// # Errors
/// [`Error::NotAllowed`] for a key that is not admin (unless a dry run); [`Error::InvalidInput`] when
/// nothing matches; errors reading snapshots (erase then changes nothing) and backend errors.
pub fn erase(
    repo: &Repository,
    opts: &EraseOptions,
    progress: &dyn Progress,
) -> Result<EraseReport> {
    if !opts.dry_run {
        repo.require_admin("erase personal data")?;
    }
    let lock = LockGuard::acquire(
        repo.backend_arc(),
        repo.keys().clone(),
        !opts.dry_run,
        if opts.dry_run {
            "erase --dry-run"
        } else {
            "erase"
        },
    )?;
    let mut snaps = Vec::new();
    for (id, s) in repo.load_all_snapshots()? {
        let s = s.map_err(|e| {
            Error::integrity(
                format!("snapshot {id}"),
                format!(
                    "{e}; erase stops without changing anything (it could not tell whether this \
                     snapshot holds the subject's data): run `gatevault check`"
                ),
            )
        })?;
        snaps.push((id, s));
    }
    let reader = Reader::new(repo);
    let (subjects, mut values, unmatched) = select(&reader, &snaps, opts)?;
    let subject_ids: Vec<String> = subjects
        .iter()
        .map(|s| repo.keys().blob_id(s.as_bytes()).to_hex())
        .collect();
    // An interrupted erase of the same subjects left its values: once its snapshots are rewritten,
    // they can no longer be found from the entities.
    let pending = pending_records(repo, &subject_ids)?;
    for (_, v) in &pending {
        values.extend(v.iter().cloned());
    }
    // A subject erased before: say when, and change nothing.
    if !unmatched.is_empty() && pending.is_empty() && opts.matches.is_empty() {
        let given: Vec<String> = opts
            .subjects
            .iter()
            .map(|s| repo.keys().blob_id(s.as_bytes()).to_hex())
            .collect();
        let done: Vec<Value> = records(repo)?
            .into_iter()
            .filter(|r| {
                r["subject_ids"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| given.iter().any(|g| i == g)))
            })
            .collect();
        if !done.is_empty() && subjects.iter().all(|s| opts.subjects.contains(s)) {
            return Ok(EraseReport {
                dry_run: opts.dry_run,
                subjects: subjects
                    .iter()
                    .map(|s| Tokens::new(values.iter().cloned()).mask(s))
                    .collect(),
                subject_ids: given,
                already_erased: done
                    .iter()
                    .filter_map(|r| r["time"].as_str().map(str::to_string))
                    .collect(),
                ..EraseReport::default()
            });
        }
    }
    if !unmatched.is_empty() && pending.is_empty() {
        return Err(Error::InvalidInput(format!(
            "nothing to erase: {} matched no entity in any snapshot (already erased? see \
             `gatevault erasures`; subjects are named as the adapters mark them, e.g. \
             kong:consumer=NAME, see docs/lifecycle.md)",
            unmatched.join(", ")
        )));
    }
    let values: Vec<String> = values.into_iter().collect();
    let t = Tokens::new(values.iter().cloned());
    let mut report = EraseReport {
        dry_run: opts.dry_run,
        subjects: subjects.iter().map(|s| t.mask(s)).collect(),
        subject_ids: subject_ids.clone(),
        values: t.values().len(),
        values_not_searched: Tokens::too_short(&values).len(),
        ..EraseReport::default()
    };

    // Snapshots rewritten by an earlier, interrupted run: their originals only need removing.
    let twins: HashMap<SnapshotId, SnapshotId> = snaps
        .iter()
        .filter_map(|(id, s)| s.original.map(|o| (o, *id)))
        .collect();
    let mut plans: Vec<(SnapshotId, Snapshot, SnapPlan)> = Vec::new();
    let mut finish: Vec<SnapshotId> = Vec::new();
    // Planned in parallel (reading and scrubbing the documents is most of the work), kept in order.
    let planned: Vec<(SnapshotId, Snapshot, Option<SnapPlan>)> = snaps
        .par_iter()
        .map(|(id, s)| -> Result<_> {
            if twins.contains_key(id) {
                return Ok((*id, s.clone(), None));
            }
            Ok((
                *id,
                s.clone(),
                Some(plan_snapshot(&reader, s, &subjects, &t)?),
            ))
        })
        .collect::<Result<_>>()?;
    for (id, s, plan) in planned {
        match plan {
            None => finish.push(id),
            Some(p) if p.files.is_empty() && p.metadata.is_empty() => {
                report.snapshots_untouched += 1
            }
            Some(p) => plans.push((id, s, p)),
        }
    }
    if opts.dry_run {
        report.snapshots = plans
            .into_iter()
            .map(|(id, s, p)| SnapshotReport {
                original: id,
                new: None,
                time: s.time,
                documents: p.docs,
                metadata: p.metadata,
            })
            .collect();
        return Ok(report);
    }

    // The values, kept (encrypted, like everything) until the scan has proved them gone, so that a
    // re-run after an interruption still knows what to look for.
    let pending_id = repo.save_record(&serde_json::json!({
        "type": PENDING,
        "subject_ids": subject_ids,
        "values": t.values(),
    }))?;

    // Rewrite: new blobs, their index, then each new snapshot before its original goes.
    let saver = BlobSaver::new(repo);
    let chunker =
        crate::chunker::Chunker::new(repo.config().chunker.clone(), repo.keys().chunker_seed())?;
    let mut roots = Vec::with_capacity(plans.len());
    for (_, s, p) in &plans {
        roots.push(rebuild(&reader, &saver, &chunker, &s.tree, "", &p.files)?.unwrap_or(s.tree));
    }
    saver.commit_index()?;
    lock.check()?;
    let mut renamed: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    for ((id, s, p), root) in plans.into_iter().zip(roots) {
        let mut new = masked_metadata(&s, &t);
        new.tree = root;
        new.original = Some(id);
        new.parent = s.parent.map(|p| renamed.get(&p).copied().unwrap_or(p));
        let nid = repo.save_snapshot(&new)?;
        renamed.insert(id, nid);
        remove_snapshot(repo, &id, &mut report.retained_snapshots)?;
        report.snapshots.push(SnapshotReport {
            original: id,
            new: Some(nid),
            time: s.time,
            documents: p.docs,
            metadata: p.metadata,
        });
    }
    for id in finish {
        remove_snapshot(repo, &id, &mut report.retained_snapshots)?;
    }
    // Snapshots an earlier run could only hide: removed now if their lock ended.
    for id in retained_from_pending(repo, &subject_ids, "retained_snapshots")? {
        if let Ok(id) = SnapshotId::from_hex(&id) {
            if !report.retained_snapshots.iter().any(|r| r.id == id) {
                remove_snapshot(repo, &id, &mut report.retained_snapshots)?;
            }
        }
    }
    report.records_rewritten = rewrite_records(repo, &t)?;

    // Forced prune of every pack that holds a value.
    let state = IndexState::read(repo.backend(), repo.keys())?;
    let tainted = scan_blobs(repo, &state, &t, progress)?.found;
    report.blobs_with_values = tainted.len();
    // Packs an earlier run could not remove because of an object lock still hold values.
    let earlier_locked: HashSet<PackId> = retained_packs(repo, &subject_ids)?;
    let mut forced_packs: HashSet<PackId> = tainted.iter().map(|(_, p)| *p).collect();
    forced_packs.extend(earlier_locked.iter().copied());
    let forced = Forced {
        packs: forced_packs.clone(),
        blobs: tainted.iter().map(|(k, _)| *k).collect(),
        index: false,
    };
    let prune_opts = PruneOptions {
        dry_run: false,
        ..opts.prune.clone()
    };
    report.prune = Some(crate::prune::prune_locked(
        repo,
        &lock,
        &prune_opts,
        &forced,
        progress,
    )?);

    // Proof. The pending records are the only objects allowed to hold the values, until the erasure
    // record is stored: then they go.
    let pending_ids: Vec<&str> = pending
        .iter()
        .map(|(id, _)| id.as_str())
        .chain([pending_id.as_str()])
        .collect();
    let mut scan = final_scan(repo, &t, &pending_ids, progress)?;
    // A pack holding values that an object lock keeps: the proof waits for its date.
    let locked: Vec<crate::prune::LockedPack> = report
        .prune
        .as_ref()
        .map(|p| {
            p.locked
                .iter()
                .filter(|l| forced_packs.contains(&l.pack))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for l in &locked {
        scan.found.push(format!(
            "pack {} (object lock until {}: erase again after that date)",
            l.pack,
            l.until.to_rfc3339()
        ));
    }
    for r in &report.retained_snapshots {
        scan.found.push(format!(
            "snapshot {} (replaced; its stored version is under an object lock until {}, hidden from listings: erase again after that date)",
            r.id,
            r.until.to_rfc3339()
        ));
    }
    if !locked.is_empty() || !report.retained_snapshots.is_empty() {
        scan.status = "retained".into();
    }
    report.scan = Some(scan);
    let mut record = serde_json::to_value(&report).expect("a report serializes");
    if let Value::Object(m) = &mut record {
        m.insert("type".into(), Value::String("erasure".into()));
        m.insert(
            "time".into(),
            Value::String(chrono::Utc::now().to_rfc3339()),
        );
        m.insert("username".into(), Value::String(crate::util::username()));
        m.insert("hostname".into(), Value::String(crate::util::hostname()));
        m.insert("key".into(), Value::String(repo.key_id().to_hex()));
    }
    // Paths and pointers are masked already; this makes sure no value slips into the record.
    report.record = Some(repo.save_record(&mask_value(&record, &t))?);
    if !locked.is_empty() || !report.retained_snapshots.is_empty() {
        // The values stay (encrypted) with the locked objects' names, so that a run after the
        // locks' end finds them and finishes the erasure.
        let snaps = &report.retained_snapshots;
        repo.save_record(&serde_json::json!({
            "type": PENDING,
            "subject_ids": subject_ids,
            "values": t.values(),
            "retained_packs": locked.iter().map(|l| l.pack.to_hex()).collect::<Vec<_>>(),
            "retained_snapshots": snaps.iter().map(|r| r.id.to_hex()).collect::<Vec<_>>(),
            "retained_until": locked.iter().map(|l| l.until).chain(snaps.iter().map(|r| r.until)).max(),
        }))?;
    }
    for id in pending_ids {
        crate::prune::remove(repo.backend(), FileType::Record, id)?;
    }
    Ok(report)
}

impl EraseReport {
    /// The summary the audit log entry of an erase carries: the erasure record, the subjects (masked,
    /// with their keyed ids), each rewritten snapshot's old and new id, the distinct documents removed or
    /// scrubbed with what was removed (masked), and the scan's result. Never an erased value.
    pub fn audit_details(&self) -> Value {
        let mut docs: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for s in &self.snapshots {
            for d in &s.documents {
                let change = serde_json::to_value(&d.change)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                *docs
                    .entry((d.path.clone(), change, d.removed.join(", ")))
                    .or_default() += 1;
            }
        }
        serde_json::json!({
            "erasure": {
                "record": self.record,
                "subjects": self.subjects,
                "subject_ids": self.subject_ids,
                "snapshots": self.snapshots.iter().map(|s| serde_json::json!({"original": s.original, "new": s.new})).collect::<Vec<_>>(),
                "documents": docs.into_iter().map(|((path, change, removed), n)| serde_json::json!({
                    "path": path, "change": change, "removed": removed, "snapshots": n,
                })).collect::<Vec<_>>(),
                "records_rewritten": self.records_rewritten,
                "scan": self.scan.as_ref().map(|s| serde_json::json!({
                    "status": s.status, "blobs": s.blobs, "packs": s.packs, "snapshots": s.snapshots,
                    "records": s.records, "found": s.found, "audit_entries": s.audit_entries,
                })),
                "already_erased": self.already_erased,
            }
        })
    }
}

/// The erasure records of the repository, oldest first.
///
/// # Errors
/// Backend errors listing the records.
pub fn records(repo: &Repository) -> Result<Vec<Value>> {
    let mut v: Vec<Value> = repo
        .records(Some("erasure"))?
        .into_iter()
        .filter_map(|r| r.map_err(|e| tracing::warn!("{e}")).ok())
        .collect();
    v.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::s3lock::simulated::Retaining;
    use crate::backend::Backend;
    use crate::backup::{BackupOptions, NoProgress};
    use crate::repo::{Credentials, InitOptions};

    #[test]
    fn a_locked_pack_holding_the_subject_leaves_the_erasure_pending_until_a_rerun_after_expiry() {
        let b = Arc::new(Retaining::new());
        let creds = Credentials {
            password: None,
            key_file: Some(zeroize::Zeroizing::new([9u8; 32])),
        };
        let repo = Repository::init(b.clone(), &InitOptions::default(), &creds, None).unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gateways/kong/kong.yaml");
        let c = crate::gateway::capture(&crate::gateway::GatewayOptions {
            kind: "kong".into(),
            file: Some(fixture),
            ..Default::default()
        })
        .unwrap();
        crate::backup::backup(
            &repo,
            BackupOptions {
                documents: Some(c.documents().unwrap()),
                source: Some(c.source.clone()),
                ..BackupOptions::default()
            },
            None,
            &NoProgress,
        )
        .unwrap();
        let until = chrono::Utc::now() + chrono::Duration::days(2);
        let locked = b.lock_all(FileType::Pack, until);
        let snapshots = b.lock_all(FileType::Snapshot, until);
        let opts = EraseOptions {
            subjects: vec!["kong:consumer=alice".into()],
            ..EraseOptions::default()
        };
        let r = erase(&repo, &opts, &NoProgress).unwrap();
        let scan = r.scan.as_ref().unwrap();
        assert_eq!(scan.status, "retained", "{scan:?}");
        assert!(
            scan.found.iter().any(|f| f.contains("object lock until")),
            "{scan:?}"
        );
        assert!(r.prune.as_ref().unwrap().locked_packs > 0);
        // The replaced snapshot is hidden (listed no more) but kept, and the proof says so.
        assert_eq!(r.retained_snapshots.len(), snapshots.len(), "{r:?}");
        assert_eq!(b.hidden(), snapshots.len());
        assert!(repo
            .snapshots()
            .unwrap()
            .iter()
            .all(|(id, _)| !snapshots.contains(&id.to_hex())));
        assert!(
            scan.found.iter().any(|f| f.starts_with("snapshot ")
                && f.contains(&snapshots[0])
                && f.contains("object lock until")),
            "{scan:?}"
        );
        let packs: HashSet<String> = b
            .list(FileType::Pack)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            locked.iter().all(|p| packs.contains(p)),
            "a locked pack went"
        );
        assert_eq!(repo.records_named(Some(PENDING)).unwrap().len(), 1);
        let record = records(&repo).unwrap();
        assert_eq!(record.last().unwrap()["scan"]["status"], "retained");

        // After the locks end, the same erase removes the packs and proves the subject gone.
        b.expire_all();
        let again = erase(&repo, &opts, &NoProgress).unwrap();
        let scan = again.scan.as_ref().unwrap();
        assert_eq!(scan.status, "clean", "{scan:?}");
        let packs: HashSet<String> = b
            .list(FileType::Pack)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(
            locked.iter().any(|p| !packs.contains(p)),
            "no retained pack was removed"
        );
        assert_eq!(b.hidden(), 0, "the hidden snapshot versions were removed");
        assert!(again.retained_snapshots.is_empty(), "{again:?}");
        assert!(repo.records_named(Some(PENDING)).unwrap().is_empty());
        let check =
            crate::check::check(&repo, crate::check::ReadData::All, 1, &NoProgress).unwrap();
        assert_eq!(check.status, crate::check::Status::Success, "{check:?}");
    }
}
