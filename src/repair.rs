//! `repair index`: rebuild the index files from the pack headers; `repair snapshots`: rewrite the
//! snapshots that need blobs which are gone or damaged, keeping everything still readable.
//!
//! Readable index files are reused for packs they describe correctly (unless every pack is to be read);
//! every other pack's header is read. Of a pack whose header is damaged, the blobs that old index files
//! list and whose bytes still authenticate are kept, so a truncated pack loses only what was cut. One new index file superseding all old ones is written first,
//! then the old ones are removed, so an interruption at any point leaves a complete index.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::Error;
use crate::error::Result;
use crate::format::{BlobType, IndexFile, IndexPack, NodeType, PackEntry, Snapshot, Tree};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::lock::LockGuard;
use crate::repo::saver::BlobSaver;
use crate::repo::Repository;

/// What `repair index` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Packs whose header was read.
    pub packs_read: usize,
    /// Packs in the new index.
    pub packs_indexed: usize,
    /// Blobs in the new index.
    pub blobs_indexed: usize,
    /// Packs whose header could not be read, with the reason.
    pub damaged_packs: Vec<String>,
    /// Blobs of damaged packs kept because old index files listed them and their bytes still
    /// authenticate (the rest of those packs' blobs are lost).
    pub salvaged_blobs: usize,
    /// Old index files removed.
    pub removed_index_files: usize,
}

/// Rebuilds the index under an exclusive lock.
///
/// # Errors
/// Lock and backend errors.
pub fn repair_index(repo: &Repository, read_all_packs: bool) -> Result<RepairReport> {
    let lock = LockGuard::acquire(
        repo.backend_arc(),
        repo.keys().clone(),
        true,
        "repair index",
    )?;
    let backend = repo.backend();
    let keys = repo.keys();
    let mut report = RepairReport::default();
    let stored: HashMap<PackId, u64> = backend
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|(n, s)| PackId::from_hex(&n).ok().map(|i| (i, s)))
        .collect();
    let old: Vec<IndexId> = backend
        .list(FileType::Index)?
        .into_iter()
        .filter_map(|(n, _)| IndexId::from_hex(&n).ok())
        .collect();
    // What the old index files say, for reuse (unless every pack is to be read) and for salvage.
    let mut listed: HashMap<PackId, IndexPack> = HashMap::new();
    for id in &old {
        if let Ok(f) = crate::index::load_index_file(backend, keys, id) {
            for p in f.packs {
                listed.entry(p.id).or_insert(p);
            }
        }
    }
    let mut known: HashMap<PackId, IndexPack> = HashMap::new();
    if !read_all_packs {
        for (id, p) in &listed {
            if stored.get(id) == Some(&p.size) {
                known.insert(*id, p.clone());
            }
        }
    }
    let todo: Vec<(PackId, u64)> = stored
        .iter()
        .filter(|(id, _)| !known.contains_key(id))
        .map(|(i, s)| (*i, *s))
        .collect();
    report.packs_read = todo.len();
    let read: Vec<(PackId, u64, Result<IndexPack>, Vec<PackEntry>)> = todo
        .par_iter()
        .map(|(id, size)| {
            let bytes = match backend.read(FileType::Pack, &id.to_hex()) {
                Ok(b) => b,
                Err(e) => return (*id, *size, Err(e), vec![]),
            };
            match crate::pack::read_header(keys, id, &bytes) {
                Ok(blobs) => (
                    *id,
                    *size,
                    Ok(IndexPack {
                        id: *id,
                        size: *size,
                        blobs,
                    }),
                    vec![],
                ),
                Err(e) => {
                    // The header is damaged: keep what old index files list and still authenticates.
                    let salvaged = listed
                        .get(id)
                        .map(|p| {
                            p.blobs
                                .iter()
                                .filter(|b| {
                                    let end = b.offset as usize + b.length as usize;
                                    end <= bytes.len()
                                        && crate::pack::authenticate(
                                            keys,
                                            id,
                                            b,
                                            &bytes[b.offset as usize..end],
                                        )
                                        .is_ok()
                                })
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default();
                    (*id, *size, Err(e), salvaged)
                }
            }
        })
        .collect();
    for (id, size, r, salvaged) in read {
        match r {
            Ok(p) => {
                known.insert(id, p);
            }
            Err(e) => {
                let total = listed.get(&id).map(|p| p.blobs.len()).unwrap_or(0);
                report.damaged_packs.push(format!(
                    "pack {id}: {e}; kept {} of the {total} blobs old index files listed",
                    salvaged.len()
                ));
                if !salvaged.is_empty() {
                    report.salvaged_blobs += salvaged.len();
                    known.insert(
                        id,
                        IndexPack {
                            id,
                            size,
                            blobs: salvaged,
                        },
                    );
                }
            }
        }
    }
    let mut packs: Vec<IndexPack> = known.into_values().collect();
    packs.sort_by_key(|p| p.id);
    report.packs_indexed = packs.len();
    report.blobs_indexed = packs.iter().map(|p| p.blobs.len()).sum();
    lock.check()?;
    let file = IndexFile {
        supersedes: old.clone(),
        packs,
    };
    crate::index::save_index_file(backend, keys, &file)?;
    for id in &old {
        backend.remove(FileType::Index, &id.to_hex())?;
        report.removed_index_files += 1;
    }
    Ok(report)
}

// ------------------------------------------------------------------------------ repair snapshots

/// Options of `repair snapshots`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RepairSnapshotsOptions {
    /// Remove each original after its repaired copy is stored.
    pub forget: bool,
    /// Report what would be done; write nothing.
    pub dry_run: bool,
}

/// One snapshot that needed repair.
#[derive(Debug, serde::Serialize)]
pub struct SnapshotRepair {
    /// The damaged snapshot.
    pub original: SnapshotId,
    /// Its time.
    pub time: String,
    /// The repaired snapshot written (none in a dry run, or when nothing of it is readable).
    pub new: Option<SnapshotId>,
    /// Paths (as in the snapshot) of the files and folders left out because their content or listing
    /// is missing or damaged.
    pub lost: Vec<String>,
    /// Whether the original was removed (`--forget`).
    pub forgotten: bool,
}

/// What `repair snapshots` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots examined.
    pub snapshots: usize,
    /// Snapshots whose every tree and file content is readable (left as they are).
    pub intact: usize,
    /// Snapshots rewritten (or, in a dry run, to rewrite).
    pub repaired: Vec<SnapshotRepair>,
    /// Snapshot objects that do not decrypt or parse, with the reason: nothing can be recovered from
    /// them; `forget` them by id.
    pub unreadable: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The tag a repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// Walks snapshots' trees once each, remembering what every tree and data blob turned out to be.
struct SnapshotMender<'a> {
    repo: &'a Repository,
    saver: Option<BlobSaver<'a>>,
    /// Data blob id -> readable and authentic.
    data: HashMap<BlobId, bool>,
    /// Tree id -> its repaired id (None: unreadable) and the paths lost below it, relative to it.
    trees: HashMap<BlobId, (Option<BlobId>, Vec<String>)>,
}

impl SnapshotMender<'_> {
    fn data_ok(&mut self, id: &BlobId) -> bool {
        if let Some(ok) = self.data.get(id) {
            return *ok;
        }
        let ok = self.repo.load_blob(BlobType::Data, id).is_ok();
        self.data.insert(*id, ok);
        ok
    }

    /// The repaired version of tree `id` (itself when nothing below it is lost; None when it cannot be
    /// read) and the paths lost below it.
    fn mend(&mut self, id: &BlobId) -> Result<(Option<BlobId>, Vec<String>)> {
        if let Some(r) = self.trees.get(id) {
            return Ok(r.clone());
        }
        let r = match self.repo.load_tree(id) {
            Err(
                Error::NotFound { .. } | Error::IntegrityMismatch { .. } | Error::Format { .. },
            ) => (None, vec![]),
            Err(e) => return Err(e),
            Ok(tree) => {
                let mut lost = Vec::new();
                let mut nodes = Vec::with_capacity(tree.nodes.len());
                let mut changed = false;
                for mut n in tree.nodes {
                    match n.node_type {
                        NodeType::File => {
                            if n.content.clone().iter().all(|b| self.data_ok(b)) {
                                nodes.push(n);
                            } else {
                                lost.push(n.name.clone());
                                changed = true;
                            }
                        }
                        NodeType::Dir => {
                            let sub = n.subtree.expect("a parsed dir node has a subtree");
                            let (new, below) = self.mend(&sub)?;
                            match new {
                                None => {
                                    lost.push(format!("{}/", n.name));
                                    changed = true;
                                }
                                Some(new) => {
                                    lost.extend(below.iter().map(|p| format!("{}/{p}", n.name)));
                                    if new != sub {
                                        changed = true;
                                        n.subtree = Some(new);
                                    }
                                    nodes.push(n);
                                }
                            }
                        }
                        NodeType::Symlink => nodes.push(n),
                    }
                }
                if changed {
                    let t = Tree {
                        version: tree.version,
                        nodes,
                    };
                    let bytes = t.encode();
                    let new = match &self.saver {
                        Some(s) => s.save(BlobType::Tree, &bytes)?,
                        None => self.repo.keys().blob_id(&bytes),
                    };
                    (Some(new), lost)
                } else {
                    (Some(*id), lost)
                }
            }
        };
        self.trees.insert(*id, r.clone());
        Ok(r)
    }
}

/// Rewrites every snapshot that needs a tree or data blob which is missing from the index or does not
/// authenticate: unreadable files and folders are left out (and named), the rest is kept, and the
/// result is stored as a new snapshot tagged `repaired` whose description says what was lost. With
/// `forget`, each original is removed after its repaired copy is stored; a snapshot of which nothing
/// is readable (its root tree is gone) is then removed without a copy. Snapshots that need nothing
/// missing are not touched. Like restic's `repair snapshots`, run `repair index` first, so that the
/// index lists what the packs still hold.
///
/// Every data blob a snapshot needs is read and authenticated once (shared blobs once for all).
///
/// # Errors
/// Lock, backend and cache errors (damaged objects are reported, not errors).
pub fn repair_snapshots(
    repo: &Repository,
    opts: RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let lock = if opts.dry_run {
        None
    } else {
        if opts.forget {
            repo.require_admin("repair snapshots --forget")?;
        } else {
            repo.require_write("repair snapshots")?;
        }
        Some(LockGuard::acquire(
            repo.backend_arc(),
            repo.keys().clone(),
            true,
            "repair snapshots",
        )?)
    };
    let mut report = RepairSnapshotsReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut mender = SnapshotMender {
        repo,
        saver: (!opts.dry_run).then(|| BlobSaver::new(repo)),
        data: HashMap::new(),
        trees: HashMap::new(),
    };
    let mut plans: Vec<(SnapshotId, Snapshot, Option<BlobId>, Vec<String>)> = Vec::new();
    for (id, r) in repo.load_all_snapshots()? {
        report.snapshots += 1;
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                report.unreadable.push(e.to_string());
                continue;
            }
        };
        let (root, lost) = mender.mend(&s.tree)?;
        if root == Some(s.tree) {
            report.intact += 1;
            continue;
        }
        let lost = match root {
            None => vec!["/ (the root tree)".to_string()],
            Some(_) => lost.into_iter().map(|p| format!("/{p}")).collect(),
        };
        plans.push((id, s, root, lost));
    }
    if let Some(saver) = &mender.saver {
        saver.commit_index()?;
    }
    if let Some(lock) = &lock {
        lock.check()?;
    }
    let mut renamed: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (id, s, root, lost) in plans {
        let mut done = SnapshotRepair {
            original: id,
            time: s.time.clone(),
            new: None,
            lost,
            forgotten: false,
        };
        if !opts.dry_run {
            if let Some(root) = root {
                let mut new = s.clone();
                new.tree = root;
                new.tags.insert(REPAIRED_TAG.to_string(), String::new());
                let note = format!(
                    "repaired from snapshot {} at {now}: {} path(s) lost: {}",
                    id.short(),
                    done.lost.len(),
                    done.lost.join(", ")
                );
                new.description = Some(match &s.description {
                    Some(d) if !d.is_empty() => format!("{d}\n{note}"),
                    _ => note,
                });
                new.parent = s.parent.map(|p| renamed.get(&p).copied().unwrap_or(p));
                let nid = repo.save_snapshot(&new)?;
                renamed.insert(id, nid);
                done.new = Some(nid);
            }
            if opts.forget {
                repo.remove_snapshot(&id)?;
                done.forgotten = true;
            }
        }
        report.repaired.push(done);
    }
    Ok(report)
}
