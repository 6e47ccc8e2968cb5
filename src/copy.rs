//! Copying snapshots from one repository to another (`gatevault copy`, and the extra destinations of
//! `backup --profile`).
//!
//! The two repositories have different master keys, and possibly different ciphers, chunker
//! parameters and compression: blob ids are keyed hashes, so the same bytes have different ids in each.
//! A copy therefore goes blob by blob: each blob is read and decrypted from the source (a delta is
//! reconstructed), its id is computed with the destination's key, and it is stored through the
//! destination's [`BlobSaver`] unless the destination's index has it already. Trees are rewritten
//! bottom-up because the ids inside them change. The blob boundaries of the source are kept (as restic
//! does): the copy never re-chunks.
//!
//! Each snapshot is committed on its own, in the repository's commit order (packs, then an index file
//! naming them, then the snapshot), so an interrupted copy leaves only packs and index files behind and a
//! rerun finds the blobs already indexed. A copied snapshot carries an [`Origin`] naming the snapshot
//! first taken; a source snapshot whose origin is already among the destination's snapshots is not copied
//! again, which makes the copy idempotent.
//!
//! When the parent of a snapshot was copied before, the parent and its copy are walked side by side,
//! so that unchanged folders and chunks map to their copies without being read, and changed ones get
//! their copy's counterpart as a delta base, as the backup that made them did in the source.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backup::{NoProgress, Progress};
use crate::error::{Error, Result};
use crate::format::{BlobType, Node, NodeType, Origin, Snapshot, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repo::lock::LockGuard;
use crate::repo::saver::BlobSaver;
use crate::repo::Repository;
use crate::select::SnapshotFilter;

/// What to copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Snapshots of the source must pass this filter (without `ids`: every passing snapshot is
    /// copied; with them, the filter chooses what `latest` means).
    pub filter: SnapshotFilter,
    /// Snapshot ids, unique id prefixes or `latest`; empty for every snapshot passing the filter.
    pub ids: Vec<String>,
    /// Only find out what would be copied; write nothing (not even to the destination's index).
    pub dry_run: bool,
}

/// A source snapshot and its copy in the destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopiedSnapshot {
    /// The snapshot in the source repository.
    pub source: SnapshotId,
    /// Its copy in the destination repository.
    pub target: SnapshotId,
}

/// What a copy did (or, as a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    /// Repository id (hex) of the source.
    pub from: String,
    /// Repository id (hex) of the destination.
    pub to: String,
    /// Snapshots copied now, oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots whose copy the destination held already (by their origin), with that copy.
    pub already_present: Vec<CopiedSnapshot>,
    /// A dry run: the source snapshots that would be copied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_copy: Vec<SnapshotId>,
    /// Blobs stored in the destination (in a dry run: that would be stored).
    pub blobs_copied: u64,
    /// Blobs the destination had already (a folder found unchanged counts once, not its contents).
    pub blobs_present: u64,
    /// Stored bytes written to the destination's packs (compressed, sealed, pack headers included);
    /// 0 in a dry run.
    pub bytes_added: u64,
    /// Plaintext bytes of the blobs stored (in a dry run: that would be stored).
    pub data_added: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Copies the snapshots `opts` selects from `src` to `dst` (see the module documentation).
///
/// # Errors
/// As [`copy_with_progress`].
pub fn copy(src: &Repository, dst: &Repository, opts: &CopyOptions) -> Result<CopyReport> {
    copy_with_progress(src, dst, opts, &NoProgress)
}

/// [`copy`], reporting progress: the total is the bytes of the selected snapshots, and each snapshot
/// counts when it is done.
///
/// # Errors
/// [`Error::InvalidInput`] when both are the same repository; [`Error::NotAllowed`] when the
/// destination's key is a restore key (not for a dry run); [`Error::NotFound`] for a snapshot that
/// is not in the source; [`Error::Locked`] when either repository is locked exclusively; errors reading
/// the source (a damaged blob is named) and writing the destination. What was committed before an
/// error stays valid: every copied snapshot names only indexed blobs.
pub fn copy_with_progress(
    src: &Repository,
    dst: &Repository,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let (from, to) = (src.config().id, dst.config().id);
    if from == to {
        return Err(Error::InvalidInput(format!(
            "source {} and destination {} are the same repository (id {}): give two different repositories",
            src.backend().location(),
            dst.backend().location(),
            from.short()
        )));
    }
    if !opts.dry_run {
        dst.require_write("copy snapshots into the repository")?;
    }
    let src_lock = LockGuard::acquire(src.backend_arc(), src.keys().clone(), false, "copy")?;
    let dst_lock = LockGuard::acquire(dst.backend_arc(), dst.keys().clone(), false, "copy")?;
    let selected = select(src, opts)?;

    let (from_hex, to_hex) = (from.to_hex(), to.to_hex());
    let key_of = |id: SnapshotId, s: &Snapshot| {
        s.origin.clone().unwrap_or(Origin {
            repository: from_hex.clone(),
            snapshot: id,
        })
    };
    // Every snapshot of the destination by the backup it copies (its own id for one taken there).
    let mut in_dst: HashMap<Origin, Vec<(SnapshotId, Snapshot)>> = HashMap::new();
    for (id, s) in dst.snapshots()? {
        let key = s.origin.clone().unwrap_or(Origin {
            repository: to_hex.clone(),
            snapshot: id,
        });
        in_dst.entry(key).or_default().push((id, s));
    }

    let mut report = CopyReport {
        from: from_hex.clone(),
        to: to_hex.clone(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    progress.start(
        selected.iter().map(|(_, s)| s.summary.total_bytes).sum(),
        selected.len() as u64,
    );
    let copier = Copier::new(src, dst);
    for (id, snap) in selected {
        crate::signals::check()?;
        let key = key_of(id, &snap);
        if let Some((target, _)) = in_dst.get(&key).and_then(|v| v.first()) {
            report.already_present.push(CopiedSnapshot {
                source: id,
                target: *target,
            });
            progress.bytes(snap.summary.total_bytes);
            continue;
        }
        // The parent's copy: the new snapshot's parent, and the guide for walking its tree.
        let (parent, pair) = match snap.parent {
            None => (None, None),
            Some(p) => {
                let ps = src.load_snapshot(&p).ok();
                let pkey = match &ps {
                    Some(s) => key_of(p, s),
                    None => Origin {
                        repository: from_hex.clone(),
                        snapshot: p,
                    },
                };
                let copies = in_dst.get(&pkey).map(Vec::as_slice).unwrap_or_default();
                // A copy rewritten in the destination afterwards (by `erase`, which names what it
                // replaced in `original`) no longer holds what the parent holds: no guide then.
                let pair = ps.as_ref().and_then(|ps| {
                    copies
                        .iter()
                        .find(|(_, c)| c.original == ps.original)
                        .map(|(_, c)| (ps.tree, c.tree))
                });
                (copies.first().map(|(cid, _)| *cid), pair)
            }
        };
        if opts.dry_run {
            copier.tree(None, &snap.tree, pair)?;
            report.would_copy.push(id);
            progress.bytes(snap.summary.total_bytes);
            continue;
        }
        let saver = BlobSaver::new(dst);
        let tree = copier.tree(Some(&saver), &snap.tree, pair)?;
        src_lock.check()?;
        dst_lock.check()?;
        crate::signals::check()?;
        saver.commit_index()?;
        let stats = saver.stats();
        report.blobs_copied += stats.blobs_added;
        report.data_added += stats.data_added;
        report.bytes_added += stats.data_added_packed;
        let copy = Snapshot {
            tree,
            parent,
            origin: Some(key.clone()),
            ..snap.clone()
        };
        dst_lock.check()?;
        let target = dst.save_snapshot(&copy)?;
        tracing::info!("copied snapshot {} as {}", id.short(), target.short());
        report.copied.push(CopiedSnapshot { source: id, target });
        in_dst.entry(key).or_default().push((target, copy));
        progress.bytes(snap.summary.total_bytes);
    }
    progress.finish();
    report.blobs_present = copier.present.load(Ordering::Relaxed);
    if opts.dry_run {
        report.blobs_copied = copier.planned.load(Ordering::Relaxed);
        report.data_added = copier.planned_bytes.load(Ordering::Relaxed);
    }
    Ok(report)
}

/// The source snapshots to copy, oldest first (so that a parent is copied before its children).
fn select(src: &Repository, opts: &CopyOptions) -> Result<Vec<(SnapshotId, Snapshot)>> {
    if opts.ids.is_empty() {
        return crate::select::filtered(src, &opts.filter);
    }
    let mut out: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for spec in &opts.ids {
        let (id, s) = crate::select::resolve(src, Some(spec), &opts.filter, None)?;
        if !out.iter().any(|(x, _)| *x == id) {
            out.push((id, s));
        }
    }
    crate::repo::sort_oldest_first(&mut out);
    Ok(out)
}

/// The blob-by-blob work of a copy, shared by the snapshots of one run.
struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    /// Source blob to destination blob, for every blob the destination has (or the current saver
    /// holds): a blob shared by several files or snapshots is read once.
    done: Mutex<HashMap<(BlobType, BlobId), BlobId>>,
    /// Source blob to the destination blob at the same place in the parent's copy: used, once the
    /// destination's index confirms the blob, instead of reading it, and as delta bases.
    hints: Mutex<HashMap<(BlobType, BlobId), BlobId>>,
    /// Destination blobs counted as present or planned, so that each counts once.
    counted: Mutex<HashSet<(BlobType, BlobId)>>,
    present: AtomicU64,
    planned: AtomicU64,
    planned_bytes: AtomicU64,
}

fn get(m: &Mutex<HashMap<(BlobType, BlobId), BlobId>>, t: BlobType, id: &BlobId) -> Option<BlobId> {
    m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(t, *id))
        .copied()
}

fn put(m: &Mutex<HashMap<(BlobType, BlobId), BlobId>>, t: BlobType, a: BlobId, b: BlobId) {
    m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((t, a), b);
}

impl<'a> Copier<'a> {
    fn new(src: &'a Repository, dst: &'a Repository) -> Self {
        Self {
            src,
            dst,
            done: Mutex::default(),
            hints: Mutex::default(),
            counted: Mutex::default(),
            present: AtomicU64::new(0),
            planned: AtomicU64::new(0),
            planned_bytes: AtomicU64::new(0),
        }
    }

    fn count_present(&self, t: BlobType, b: BlobId) {
        if self
            .counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((t, b))
        {
            self.present.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The destination blob of source blob `a` from the parent's copy, when the destination's index
    /// has it.
    fn hinted(&self, t: BlobType, a: &BlobId) -> Result<Option<BlobId>> {
        match get(&self.hints, t, a) {
            Some(b) if self.dst.index()?.contains(t, &b)? => {
                self.count_present(t, b);
                put(&self.done, t, *a, b);
                Ok(Some(b))
            }
            _ => Ok(None),
        }
    }

    /// The destination's counterpart of the delta base of source blob `a`, if known: the saver then
    /// tries a delta against it (it checks the chain and the base itself, so a wrong guess only
    /// costs the saving).
    fn similar(&self, t: BlobType, a: &BlobId) -> Result<Option<BlobId>> {
        let Some(base) = self.src.locate(t, a)?.entry.base else {
            return Ok(None);
        };
        Ok(get(&self.done, t, &base).or_else(|| get(&self.hints, t, &base)))
    }

    /// Stores `plain` (destination id `b`) unless the destination has it; without a saver (a dry run),
    /// only counts it.
    fn store(
        &self,
        saver: Option<&BlobSaver<'_>>,
        t: BlobType,
        a: &BlobId,
        b: BlobId,
        plain: &[u8],
    ) -> Result<()> {
        if self.dst.index()?.contains(t, &b)? {
            self.count_present(t, b);
            return Ok(());
        }
        match saver {
            Some(s) => {
                let similar = self.similar(t, a)?;
                s.save_similar(t, b, plain, similar)?;
            }
            None => {
                if self
                    .counted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((t, b))
                {
                    self.planned.fetch_add(1, Ordering::Relaxed);
                    self.planned_bytes
                        .fetch_add(plain.len() as u64, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Copies data blob `a`; returns its destination id.
    fn data(&self, saver: Option<&BlobSaver<'_>>, a: &BlobId) -> Result<BlobId> {
        if let Some(b) = get(&self.done, BlobType::Data, a) {
            return Ok(b);
        }
        if let Some(b) = self.hinted(BlobType::Data, a)? {
            return Ok(b);
        }
        let plain = self.src.load_blob(BlobType::Data, a)?;
        let b = self.dst.keys().blob_id(&plain);
        self.store(saver, BlobType::Data, a, b, &plain)?;
        put(&self.done, BlobType::Data, *a, b);
        Ok(b)
    }

    /// Copies tree `a` and everything below it; returns the destination id of the rewritten tree.
    /// `pair` is the same folder in the parent snapshot and in the parent's copy.
    fn tree(
        &self,
        saver: Option<&BlobSaver<'_>>,
        a: &BlobId,
        pair: Option<(BlobId, BlobId)>,
    ) -> Result<BlobId> {
        if let Some(b) = get(&self.done, BlobType::Tree, a) {
            return Ok(b);
        }
        if let Some((pa, pb)) = pair {
            put(&self.hints, BlobType::Tree, pa, pb);
            if let Some(b) = self.hinted(BlobType::Tree, a)? {
                return Ok(b); // unchanged since the parent: its copy is the copy
            }
        }
        let tree = self.src.load_tree(a)?;
        // The parent's version of this folder and its copy, to pair the children by name.
        let (before, copied) = match pair {
            Some((pa, pb)) if pa != *a => {
                match (self.src.load_tree(&pa), self.dst.load_tree(&pb)) {
                    (Ok(x), Ok(y)) => (Some(x), Some(y)),
                    _ => (None, None),
                }
            }
            _ => (None, None),
        };
        let find = |t: &Option<Tree>, name: &str| -> Option<Node> {
            let t = t.as_ref()?;
            t.nodes
                .binary_search_by(|n| n.name.as_str().cmp(name))
                .ok()
                .map(|i| t.nodes[i].clone())
        };
        let nodes = tree
            .nodes
            .into_par_iter()
            .map(|mut n| -> Result<Node> {
                let (p, c) = (find(&before, &n.name), find(&copied, &n.name));
                match n.node_type {
                    NodeType::Dir => {
                        let sub = n.subtree.ok_or_else(|| {
                            Error::integrity(
                                format!("tree {a}"),
                                format!("folder {:?} has no subtree", n.name),
                            )
                        })?;
                        let child = match (p, c) {
                            (Some(p), Some(c))
                                if p.node_type == NodeType::Dir && c.node_type == NodeType::Dir =>
                            {
                                p.subtree.zip(c.subtree)
                            }
                            _ => None,
                        };
                        n.subtree = Some(self.tree(saver, &sub, child)?);
                    }
                    NodeType::File if !n.content.is_empty() => {
                        if let (Some(p), Some(c)) = (p, c) {
                            if p.node_type == NodeType::File
                                && c.node_type == NodeType::File
                                && p.size == c.size
                                && p.content.len() == c.content.len()
                            {
                                let mut h = self.hints.lock().unwrap_or_else(|e| e.into_inner());
                                for (x, y) in p.content.iter().zip(&c.content) {
                                    h.insert((BlobType::Data, *x), *y);
                                }
                            }
                        }
                        n.content = n
                            .content
                            .par_iter()
                            .map(|c| self.data(saver, c))
                            .collect::<Result<Vec<_>>>()?;
                    }
                    _ => {}
                }
                Ok(n)
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = Tree {
            version: tree.version,
            nodes,
        }
        .encode();
        let b = self.dst.keys().blob_id(&bytes);
        self.store(saver, BlobType::Tree, a, b, &bytes)?;
        put(&self.done, BlobType::Tree, *a, b);
        Ok(b)
    }
}
