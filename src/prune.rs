//! `prune`: removes the data no snapshot needs any more.
//!
//! Under an exclusive lock, prune reads the index files (never the local cache) and every snapshot,
//! marks the blobs the snapshots need (with the bases of delta blobs), and then:
//! - deletes packs that hold nothing needed, and packs no index file names (left by interrupted jobs);
//! - repacks packs that hold some unneeded data, most wasteful first, until the unused share left is at
//!   most `--max-unused` (restic's rule and default: 5%); `erase` and `rewrite --reencrypt` force the
//!   repack of given packs whatever that share is;
//! - writes one new index file that supersedes all others, and only then deletes the old index files,
//!   then the packs.
//!
//! Interrupted at any point, it leaves a repository that `check` passes: before the new index is stored
//! the new packs are merely unreferenced; after it, every old index file still present names only packs
//! that still exist (packs are deleted last), and leftover packs are unreferenced. Running it again
//! finishes the job.
//!
//! On a store with object lock ([`crate::backend::Capabilities::object_lock`]) prune asks
//! [`crate::backend::Backend::locked_until`] about every pack it would delete or repack and every old
//! index file before changing anything. A locked pack is not deleted: one that would only have been
//! deleted or repacked to save space stays as it is, indexed like a kept pack (so nothing it holds is
//! lost); one that `erase` or `rewrite` forces to be repacked is still copied out, and then stays in
//! place unreferenced. Either way a later prune removes it once its lock has expired. Locked old index
//! files stay too: the new index file supersedes them, and readers ignore superseded files. The report
//! lists what was kept and until when (see `docs/object-lock.md`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileType;
use crate::backup::Progress;
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, IndexPack, NodeType, PackEntry};
use crate::id::{BlobId, PackId};
use crate::index::IndexState;
use crate::repo::lock::LockGuard;
use crate::repo::saver::BlobSaver;
use crate::repo::Repository;

/// A blob by type and id.
pub type BlobKey = (BlobType, BlobId);

/// How much unused data may stay in packs that are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// A share of the repository's pack data, in percent (below 100).
    Percent(f64),
    /// An absolute number of bytes.
    Bytes(u64),
    /// Any amount: only packs with nothing needed are deleted.
    Unlimited,
}

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused::Percent(5.0)
    }
}

impl std::str::FromStr for MaxUnused {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "--max-unused {s:?}: use a percentage below 100 (5%), a size (100M, 2G) or 'unlimited'"
            ))
        };
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            return if (0.0..100.0).contains(&v) {
                Ok(MaxUnused::Percent(v))
            } else {
                Err(bad())
            };
        }
        parse_size(s).map(MaxUnused::Bytes).ok_or_else(bad)
    }
}

/// Parses a size with an optional binary suffix (`500`, `100k`, `100M`, `2G`, `1T`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_lowercase() {
                'b' => 1,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                _ => return None,
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Options of a prune.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Unused data allowed to stay.
    pub max_unused: MaxUnused,
    /// At most this many bytes of packs are repacked to reach `max_unused` (forced repacks do not count).
    pub max_repack_bytes: Option<u64>,
    /// Only compute and report.
    pub dry_run: bool,
}

/// What `erase` and `rewrite --reencrypt` add to a prune.
#[derive(Clone, Debug, Default)]
pub struct Forced {
    /// Packs to repack whatever their unused share (their needed blobs move to new packs).
    pub packs: HashSet<PackId>,
    /// Blobs that must not survive even as the base of a needed delta blob: such deltas are stored
    /// again self-contained.
    pub blobs: HashSet<BlobKey>,
    /// Write the superseding index file even when no pack changes (`rewrite --reencrypt`: the old
    /// index files are sealed under an old key epoch).
    pub index: bool,
}

/// A pack prune would have deleted but an object lock keeps for now.
#[derive(Clone, Debug, Serialize)]
pub struct LockedPack {
    /// The pack.
    pub pack: PackId,
    /// Its size.
    pub bytes: u64,
    /// The end of its lock.
    pub until: chrono::DateTime<chrono::Utc>,
    /// Its needed blobs were copied to new packs (a repack `erase` or `rewrite` forced), so it is no
    /// longer indexed; otherwise it stays indexed as it was.
    pub copied: bool,
}

/// What a prune found and did (or would do, for a dry run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose data is kept.
    pub snapshots: usize,
    /// Packs the index names.
    pub packs: usize,
    /// Their bytes.
    pub pack_bytes: u64,
    /// Blobs the snapshots need (stored once).
    pub used_blobs: u64,
    /// Their stored bytes.
    pub used_bytes: u64,
    /// Stored bytes nothing needs (unneeded blobs, duplicates).
    pub unused_bytes: u64,
    /// Packs no index names (left by interrupted jobs): deleted.
    pub unreferenced_packs: usize,
    /// Their bytes.
    pub unreferenced_bytes: u64,
    /// Packs holding nothing needed: deleted.
    pub packs_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Packs repacked (their needed blobs moved to new packs, then deleted).
    pub packs_repacked: usize,
    /// Their bytes.
    pub bytes_repacked: u64,
    /// Of those, packs repacked because `erase` or `rewrite` required it.
    pub packs_forced: usize,
    /// Blobs moved to new packs.
    pub blobs_moved: u64,
    /// Delta blobs stored again self-contained because their base was removed.
    pub deltas_resolved: u64,
    /// New packs written.
    pub new_packs: usize,
    /// Their bytes.
    pub new_pack_bytes: u64,
    /// Packs the index named that were missing and held nothing needed: dropped from the index.
    pub missing_packs_dropped: usize,
    /// Unused bytes left in kept packs afterwards.
    pub unused_after: u64,
    /// Pack bytes afterwards.
    pub pack_bytes_after: u64,
    /// Index files replaced by the new one.
    pub index_files_replaced: usize,
    /// Packs kept in place because an object lock forbids deleting them yet (not counted as
    /// deleted or unreferenced above).
    pub locked_packs: usize,
    /// Their bytes.
    pub locked_bytes: u64,
    /// The earliest end of their locks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until_earliest: Option<chrono::DateTime<chrono::Utc>>,
    /// The latest end of their locks: a prune after it can remove them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until_latest: Option<chrono::DateTime<chrono::Utc>>,
    /// Each of them, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<LockedPack>,
    /// Old index files kept because they are locked (superseded by the new one, so ignored).
    pub locked_index_files: usize,
}

impl PruneReport {
    fn add_locked(
        &mut self,
        pack: PackId,
        bytes: u64,
        until: chrono::DateTime<chrono::Utc>,
        copied: bool,
    ) {
        self.locked_packs += 1;
        self.locked_bytes += bytes;
        self.locked_until_earliest =
            Some(self.locked_until_earliest.map_or(until, |e| e.min(until)));
        self.locked_until_latest = Some(self.locked_until_latest.map_or(until, |e| e.max(until)));
        self.locked.push(LockedPack {
            pack,
            bytes,
            until,
            copied,
        });
    }
}

/// The end of the lock on each object of type `t` in `names` that is locked, asked in parallel
/// (nothing is asked unless the backend has object lock). An object already gone is not locked.
///
/// # Errors
/// Errors of the store: prune stops before changing anything.
fn locks<'a>(
    backend: &dyn crate::backend::Backend,
    t: FileType,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
    if !backend.capabilities().object_lock {
        return Ok(HashMap::new());
    }
    let names: Vec<&String> = names.into_iter().collect();
    let found: Vec<Option<(String, chrono::DateTime<chrono::Utc>)>> = names
        .par_iter()
        .map(|n| match backend.locked_until(t, n) {
            Ok(Some(u)) => Ok(Some(((*n).clone(), u))),
            Ok(None) | Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .collect::<Result<_>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// Prunes the repository under an exclusive lock.
///
/// # Errors
/// [`Error::Locked`]; [`Error::IntegrityMismatch`] or [`Error::NotFound`] when a snapshot, an index file or a
/// needed blob cannot be read (prune then changes nothing); backend errors.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    repo.require_admin("prune")?;
    let lock = LockGuard::acquire(repo.backend_arc(), repo.keys().clone(), true, "prune")?;
    prune_locked(repo, &lock, opts, &Forced::default(), progress)
}

/// The stored size of a pack's header and trailer listing `entries`.
fn header_bytes(entries: &[PackEntry], overhead: usize) -> u64 {
    let body: usize = entries
        .iter()
        .map(|e| if e.base.is_some() { 77 } else { 45 })
        .sum();
    (4 + overhead + 9 + body) as u64
}

/// The blobs the snapshots need: their trees, the data of their files, and the base of every needed
/// delta blob, except bases in `stop` (whose deltas prune then stores self-contained).
///
/// # Errors
/// Any snapshot or tree that cannot be read, or a needed blob no index file lists: prune must not go on.
pub fn used_blobs(
    repo: &Repository,
    state: &IndexState,
    stop: &HashSet<BlobKey>,
) -> Result<(usize, HashSet<BlobKey>)> {
    let backend = repo.backend();
    let keys = repo.keys();
    let refuse = |what: String, e: &dyn std::fmt::Display| {
        Error::integrity(
            what,
            format!(
                "{e}; prune stops without changing anything, because going on could delete data \
                 this snapshot still needs: run `gatevault check`, then `gatevault repair index` \
                 or forget the damaged snapshot"
            ),
        )
    };
    let mut used: HashSet<BlobKey> = HashSet::new();
    let mut snapshots = 0;
    let mut trees: Vec<BlobId> = Vec::new();
    for (id, s) in repo.load_all_snapshots()? {
        let s = s.map_err(|e| refuse(format!("snapshot {id}"), &e))?;
        snapshots += 1;
        trees.push(s.tree);
    }
    // Trees level by level, each level loaded in parallel; a tree shared by many snapshots once.
    let mut seen: HashSet<BlobId> = HashSet::new();
    trees.retain(|t| seen.insert(*t));
    while !trees.is_empty() {
        let loaded: Vec<(BlobId, Result<crate::format::Tree>)> = trees
            .par_iter()
            .map(|t| (*t, state.load_tree(backend, keys, t)))
            .collect();
        let mut next = Vec::new();
        for (tid, t) in loaded {
            let t = t.map_err(|e| refuse(format!("tree {tid}"), &e))?;
            used.insert((BlobType::Tree, tid));
            for n in &t.nodes {
                match n.node_type {
                    NodeType::Dir => {
                        if let Some(sub) = n.subtree {
                            if seen.insert(sub) {
                                next.push(sub);
                            }
                        }
                    }
                    NodeType::File => {
                        for b in &n.content {
                            used.insert((BlobType::Data, *b));
                        }
                    }
                    NodeType::Symlink => {}
                }
            }
        }
        trees = next;
    }
    // Every needed blob must be indexed; bases of deltas are needed too.
    let mut todo: Vec<BlobKey> = used.iter().copied().collect();
    while let Some(k) = todo.pop() {
        let Some((_, e)) = state.blob(k.0, &k.1) else {
            return Err(refuse(
                format!(
                    "{} blob {}",
                    if k.0 == BlobType::Tree {
                        "tree"
                    } else {
                        "data"
                    },
                    k.1
                ),
                &"a snapshot needs it but no index file lists it",
            ));
        };
        if let Some(b) = e.base {
            let bk = (k.0, b);
            if !stop.contains(&bk) && used.insert(bk) {
                todo.push(bk);
            }
        }
    }
    Ok((snapshots, used))
}

/// One pack: the entries it keeps (needed, and this is the copy the index points to) and its waste.
struct PackInfo {
    size: u64,
    keep: Vec<PackEntry>,
    unused: u64,
    needs_resolve: bool,
}

/// One pack's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Delete,
    Repack { forced: bool },
}

/// Prunes with the exclusive lock `lock` already held (by `prune`, `erase` or `rewrite`), repacking the
/// packs in `forced` whatever their unused share.
///
/// # Errors
/// As [`prune`].
pub fn prune_locked(
    repo: &Repository,
    lock: &LockGuard,
    opts: &PruneOptions,
    forced: &Forced,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let backend = repo.backend();
    let keys = repo.keys();
    let state = IndexState::read(backend, keys)?;
    if let Some((id, e)) = state.unreadable.first() {
        return Err(Error::integrity(
            format!("index file {id}"),
            format!(
                "{e}; prune stops without changing anything, because the blobs it lists would look \
                 unused: run `gatevault repair index` first"
            ),
        ));
    }
    let (snapshots, used) = used_blobs(repo, &state, &forced.blobs)?;
    let stored: HashMap<PackId, u64> = backend
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|(n, s)| PackId::from_hex(&n).ok().map(|id| (id, s)))
        .collect();
    let overhead = keys.cipher().overhead();
    let mut r = PruneReport {
        dry_run: opts.dry_run,
        snapshots,
        ..PruneReport::default()
    };

    let mut info: HashMap<PackId, PackInfo> = HashMap::new();
    for p in state.packs() {
        let (pid, size) = (&p.id, p.size);
        let entries: Vec<PackEntry> = p.entries().collect();
        let keep: Vec<PackEntry> = entries
            .iter()
            .filter(|e| {
                used.contains(&(e.blob_type, e.id))
                    && state
                        .blob(e.blob_type, &e.id)
                        .is_some_and(|(p, _)| p == *pid)
            })
            .copied()
            .collect();
        if !stored.contains_key(pid) {
            if let Some(e) = keep.first() {
                return Err(Error::integrity(
                    format!("pack {pid}"),
                    format!(
                        "missing, but it holds blob {} that a snapshot needs; prune stops without \
                         changing anything: run `gatevault check` and `gatevault repair index`",
                        e.id
                    ),
                ));
            }
            r.missing_packs_dropped += 1;
            continue;
        }
        let kept: u64 = keep.iter().map(|e| e.length as u64).sum();
        let unused = size.saturating_sub(kept + header_bytes(&entries, overhead));
        let needs_resolve = keep
            .iter()
            .any(|e| e.base.is_some_and(|b| !used.contains(&(e.blob_type, b))));
        r.packs += 1;
        r.pack_bytes += size;
        r.used_blobs += keep.len() as u64;
        r.used_bytes += kept;
        r.unused_bytes += unused;
        info.insert(
            *pid,
            PackInfo {
                size,
                keep,
                unused,
                needs_resolve,
            },
        );
    }
    for (pid, size) in &stored {
        if !state.contains_pack(pid) {
            r.unreferenced_packs += 1;
            r.unreferenced_bytes += size;
        }
    }

    // Decide each pack's fate.
    let mut fate: HashMap<PackId, Fate> = HashMap::new();
    let mut unused_left = 0u64;
    let mut candidates: Vec<(&PackId, &PackInfo)> = Vec::new();
    for (pid, p) in &info {
        let f = if p.keep.is_empty() {
            Fate::Delete
        } else if forced.packs.contains(pid) || p.needs_resolve {
            Fate::Repack { forced: true }
        } else {
            if p.unused > 0 {
                candidates.push((pid, p));
            }
            unused_left += p.unused;
            Fate::Keep
        };
        fate.insert(*pid, f);
    }
    // Object lock: packs that would go but may not be deleted yet. Those that would only be deleted
    // stay as kept packs; those forced to be repacked are still copied out, then stay unreferenced.
    let mut locked: HashMap<PackId, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let ask = |ids: &[PackId]| -> Result<HashMap<PackId, chrono::DateTime<chrono::Utc>>> {
        let names: Vec<String> = ids.iter().map(PackId::to_hex).collect();
        Ok(locks(backend, FileType::Pack, &names)?
            .into_iter()
            .filter_map(|(n, u)| PackId::from_hex(&n).ok().map(|p| (p, u)))
            .collect())
    };
    let doomed_now: Vec<PackId> = fate
        .iter()
        .filter(|(_, f)| **f != Fate::Keep)
        .map(|(p, _)| *p)
        .collect();
    for (pid, until) in ask(&doomed_now)? {
        if fate[&pid] == Fate::Delete {
            fate.insert(pid, Fate::Keep);
            unused_left += info[&pid].unused;
        }
        locked.insert(pid, until);
    }
    let kept_used: u64 = r.used_bytes;
    let limit = match opts.max_unused {
        MaxUnused::Unlimited => u64::MAX,
        MaxUnused::Bytes(b) => b,
        MaxUnused::Percent(p) => (p / (100.0 - p) * kept_used as f64) as u64,
    };
    // Most wasteful first (by share, then by size), ties by id so that a dry run predicts the run.
    candidates.sort_by(|a, b| {
        let share = |p: &PackInfo| p.unused as f64 / p.size.max(1) as f64;
        share(b.1)
            .total_cmp(&share(a.1))
            .then(b.1.unused.cmp(&a.1.unused))
            .then(a.0.cmp(b.0))
    });
    // Choose, then ask the chosen packs' locks; a locked one stays as it is and the choice is made
    // again without it, until no chosen pack is locked.
    let (unused_base, fate_base) = (unused_left, fate.clone());
    loop {
        let (mut left, mut f) = (unused_base, fate_base.clone());
        let mut repack_budget = opts.max_repack_bytes.unwrap_or(u64::MAX);
        let mut chosen = Vec::new();
        for (pid, p) in candidates.iter().filter(|(p, _)| !locked.contains_key(*p)) {
            if left <= limit {
                break;
            }
            if p.size > repack_budget {
                continue;
            }
            repack_budget -= p.size;
            left -= p.unused;
            f.insert(**pid, Fate::Repack { forced: false });
            chosen.push(**pid);
        }
        let found = ask(&chosen)?;
        if found.is_empty() {
            (unused_left, fate) = (left, f);
            break;
        }
        // Locked for waste only: not worth copying, since the pack cannot go anyway.
        locked.extend(found);
    }
    for (pid, f) in &fate {
        let p = &info[pid];
        match f {
            Fate::Keep => {}
            Fate::Delete => {
                r.packs_deleted += 1;
                r.bytes_deleted += p.size;
            }
            Fate::Repack { forced } => {
                r.packs_repacked += 1;
                r.bytes_repacked += p.size;
                r.packs_forced += usize::from(*forced);
                r.blobs_moved += p.keep.len() as u64;
                r.deltas_resolved += p
                    .keep
                    .iter()
                    .filter(|e| e.base.is_some_and(|b| !used.contains(&(e.blob_type, b))))
                    .count() as u64;
            }
        }
    }
    r.unused_after = unused_left;
    // Unreferenced packs that are locked stay; so do locked old index files.
    let unreferenced: Vec<PackId> = stored
        .keys()
        .filter(|p| !state.contains_pack(p))
        .copied()
        .collect();
    locked.extend(ask(&unreferenced)?);
    let mut locked_ids: Vec<&PackId> = locked.keys().collect();
    locked_ids.sort();
    for pid in locked_ids {
        let until = locked[pid];
        match (fate.get(pid), info.get(pid)) {
            (Some(Fate::Repack { .. }), Some(p)) => r.add_locked(*pid, p.size, until, true),
            (Some(_), Some(p)) => r.add_locked(*pid, p.size, until, false),
            _ => {
                let size = stored.get(pid).copied().unwrap_or(0);
                r.unreferenced_packs -= 1;
                r.unreferenced_bytes -= size;
                r.add_locked(*pid, size, until, true);
            }
        }
    }
    let index_names: Vec<String> = state.files.iter().map(|i| i.to_hex()).collect();
    let locked_index = locks(backend, FileType::Index, &index_names)?;
    r.locked_index_files = locked_index.len();
    let nothing_to_do = !forced.index
        && r.packs_deleted == 0
        && r.packs_repacked == 0
        && r.unreferenced_packs == 0
        && r.missing_packs_dropped == 0;
    if opts.dry_run || nothing_to_do {
        // Estimated: kept packs, plus the blobs moved out of repacked ones.
        r.pack_bytes_after = fate
            .iter()
            .map(|(p, f)| match f {
                Fate::Keep => info[p].size,
                Fate::Delete => 0,
                Fate::Repack { .. } => info[p].keep.iter().map(|e| e.length as u64).sum(),
            })
            .sum();
        return Ok(r);
    }

    // Repack: move the kept blobs of each repacked pack into new packs.
    let repack: Vec<PackId> = {
        let mut v: Vec<PackId> = fate
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Repack { .. }))
            .map(|(p, _)| *p)
            .collect();
        v.sort();
        v
    };
    let saver = BlobSaver::new(repo);
    let level = repo.config().compression;
    progress.start(
        repack.iter().map(|p| info[p].size).sum(),
        repack.len() as u64,
    );
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    repack.par_iter().for_each(|pid| {
        if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return;
        }
        let result = (|| -> Result<()> {
            lock.check()?;
            crate::signals::check()?;
            let p = &info[pid];
            let bytes = backend.read(FileType::Pack, &pid.to_hex())?;
            for e in &p.keep {
                let end = e.offset as usize + e.length as usize;
                let env = bytes.get(e.offset as usize..end).ok_or_else(|| {
                    Error::integrity(
                        format!("pack {pid}"),
                        format!("blob {} lies beyond its end (truncated)", e.id),
                    )
                })?;
                let resolve = e.base.is_some_and(|b| !used.contains(&(e.blob_type, b)));
                if resolve || e.base.is_none() {
                    // Decoded and re-hashed; a delta whose base goes is stored self-contained.
                    let plain = crate::pack::open_blob_with(keys, pid, e, env, &|b| {
                        state.load_base(backend, keys, e.blob_type, b)
                    })?;
                    let stored = if resolve {
                        crate::pack::encode_blob(&plain, level)?
                    } else {
                        crate::pack::unseal(keys, pid, e, env)?
                    };
                    saver.add_stored(e.blob_type, e.id, e.raw_length, stored, None)?;
                } else {
                    // A delta whose base stays: moved as it is (its AEAD proves it intact).
                    let stored = crate::pack::unseal(keys, pid, e, env)?;
                    saver.add_stored(e.blob_type, e.id, e.raw_length, stored, e.base)?;
                }
            }
            progress.bytes(p.size);
            Ok(())
        })();
        if let Err(e) = result {
            failure
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .get_or_insert(e);
        }
    });
    progress.finish();
    if let Some(e) = failure.into_inner().unwrap_or_else(|x| x.into_inner()) {
        return Err(e);
    }
    let new_packs = saver.flush()?;
    r.new_packs = new_packs.len();
    r.new_pack_bytes = new_packs.iter().map(|p| p.size).sum();

    // One index file naming every kept pack and the new ones, superseding all others.
    let mut packs: Vec<IndexPack> = Vec::new();
    for p in state.packs() {
        if fate.get(&p.id) != Some(&Fate::Keep) {
            continue;
        }
        // Unneeded self-contained blobs stay listed (a later backup may use them again); unneeded
        // deltas do not, since their bases may be gone.
        let blobs: Vec<PackEntry> = p
            .entries()
            .filter(|e| {
                let k = (e.blob_type, e.id);
                !forced.blobs.contains(&k) && (e.base.is_none() || info[&p.id].keep.contains(e))
            })
            .collect();
        packs.push(IndexPack {
            id: p.id,
            size: p.size,
            blobs,
        });
    }
    packs.extend(new_packs);
    packs.sort_by_key(|p| p.id);
    r.pack_bytes_after = packs.iter().map(|p| p.size).sum();
    lock.check()?;
    crate::signals::check()?;
    let file = IndexFile {
        supersedes: state.files.clone(),
        packs,
    };
    crate::index::save_index_file(backend, keys, &file)?;
    r.index_files_replaced = state.files.len();
    for id in &state.files {
        let name = id.to_hex();
        if locked_index.contains_key(&name) {
            continue;
        }
        match remove(backend, FileType::Index, &name) {
            // Locked since it was asked: superseded, so it stays harmlessly.
            Err(Error::Retained { .. }) => r.locked_index_files += 1,
            other => other?,
        }
    }
    let mut doomed: Vec<PackId> = fate
        .iter()
        .filter(|(_, f)| **f != Fate::Keep)
        .map(|(p, _)| *p)
        .chain(unreferenced)
        .filter(|p| !locked.contains_key(p))
        .collect();
    doomed.sort();
    for pid in doomed {
        // Safe: the new index names none of them (an unreferenced pack is harmless).
        crate::signals::check()?;
        match remove(backend, FileType::Pack, &pid.to_hex()) {
            // Locked since it was asked (the new index no longer names it): it stays unreferenced
            // until a later prune.
            Err(Error::Retained { until, .. }) => {
                let size = stored.get(&pid).copied().unwrap_or(0);
                r.add_locked(pid, size, until, true);
            }
            other => other?,
        }
    }
    Ok(r)
}

/// Removes an object; one already gone (a re-run after an interruption) is fine.
pub(crate) fn remove(backend: &dyn crate::backend::Backend, t: FileType, name: &str) -> Result<()> {
    match backend.remove(t, name) {
        Err(Error::NotFound { .. }) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::backend::s3lock::simulated::Retaining;
    use crate::backend::Backend;
    use crate::backup::{BackupOptions, NoProgress};
    use crate::repo::{Credentials, InitOptions};

    /// A repository over a simulated object-lock store.
    fn repo() -> (Arc<Retaining>, Repository) {
        let b = Arc::new(Retaining::new());
        let creds = Credentials {
            password: None,
            key_file: Some(zeroize::Zeroizing::new([7u8; 32])),
        };
        let opts = InitOptions {
            pack_size: 64 << 10,
            ..InitOptions::default()
        };
        let r = Repository::init(b.clone(), &opts, &creds, None).unwrap();
        (b, r)
    }

    fn docs(seed: u8, n: usize) -> BTreeMap<String, Vec<u8>> {
        (0..n)
            .map(|i| {
                let body: Vec<u8> = (0..40_000u32)
                    .map(|j| {
                        (j.wrapping_mul(2654435761).wrapping_add(i as u32 * 97) >> 7) as u8 ^ seed
                    })
                    .collect();
                (format!("doc{i}.bin"), body)
            })
            .collect()
    }

    fn backup(r: &Repository, d: BTreeMap<String, Vec<u8>>) -> crate::id::SnapshotId {
        crate::backup::backup(
            r,
            BackupOptions {
                documents: Some(d),
                ..BackupOptions::default()
            },
            None,
            &NoProgress,
        )
        .unwrap()
        .id
    }

    fn packs(b: &Retaining) -> HashSet<String> {
        b.list(FileType::Pack)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn locked_packs_and_index_files_stay_until_the_lock_ends_and_nothing_is_lost() {
        let (b, r) = repo();
        let first = backup(&r, docs(1, 6));
        let until = chrono::Utc::now() + chrono::Duration::days(3);
        let locked = b.lock_all(FileType::Pack, until);
        let locked_index = b.lock_all(FileType::Index, until);
        assert!(!locked.is_empty() && !locked_index.is_empty());
        let second = backup(&r, docs(2, 6));
        b.remove(FileType::Snapshot, &first.to_hex()).unwrap();
        // The locked packs prune would remove or repack: those holding a blob no longer needed. The
        // first snapshot's tree pack may stay needed, when the second snapshot's tree is stored as a
        // delta against it (which happens when the delta pays, so not in every run).
        let state = IndexState::read(r.backend(), r.keys()).unwrap();
        let (_, used) = used_blobs(&r, &state, &HashSet::new()).unwrap();
        let to_remove = state
            .packs()
            .filter(|p| locked.contains(&p.id.to_hex()))
            .filter(|p| p.entries().any(|e| !used.contains(&(e.blob_type, e.id))))
            .count();
        assert!(to_remove > 0);

        let opts = PruneOptions {
            max_unused: MaxUnused::Percent(0.0),
            ..PruneOptions::default()
        };
        let dry = prune_locked_for_test(
            &r,
            &PruneOptions {
                dry_run: true,
                ..opts.clone()
            },
        );
        assert_eq!(dry.locked_packs, to_remove, "{dry:?}");
        assert_eq!(dry.packs_deleted, 0, "{dry:?}");
        let rep = prune(&r, &opts, &NoProgress).unwrap();
        assert_eq!(rep.locked_packs, to_remove, "{rep:?}");
        assert_eq!(rep.locked_bytes, dry.locked_bytes);
        assert_eq!(rep.locked_until_latest, Some(until));
        assert_eq!(rep.locked_index_files, locked_index.len());
        // Every locked pack is still there; the snapshot left restores.
        let now = packs(&b);
        assert!(
            locked.iter().all(|p| now.contains(p)),
            "a locked pack was deleted"
        );
        let check = crate::check::check(&r, crate::check::ReadData::All, 1, &NoProgress).unwrap();
        assert_eq!(check.status, crate::check::Status::Success, "{check:?}");
        assert!(r.load_snapshot(&second).is_ok());

        // A second prune while locked changes nothing and says the same.
        let again = prune(&r, &opts, &NoProgress).unwrap();
        assert_eq!(again.locked_packs, to_remove, "{again:?}");
        assert_eq!(packs(&b), now);

        // Once the locks end, prune removes the packs only the forgotten snapshot needed.
        b.expire_all();
        let after = prune(&r, &opts, &NoProgress).unwrap();
        assert_eq!(after.locked_packs, 0, "{after:?}");
        assert!(after.packs_deleted + after.packs_repacked > 0, "{after:?}");
        let gone = locked.iter().filter(|p| !packs(&b).contains(*p)).count();
        assert!(gone > 0, "no locked pack was removed after expiry");
        assert_eq!(b.list(FileType::Index).unwrap().len(), 1);
        let check = crate::check::check(&r, crate::check::ReadData::All, 1, &NoProgress).unwrap();
        assert_eq!(check.status, crate::check::Status::Success, "{check:?}");
    }

    #[test]
    fn locked_old_index_files_naming_deleted_packs_are_superseded_and_ignored() {
        let (b, r) = repo();
        let first = backup(&r, docs(3, 6));
        let old_packs = packs(&b);
        let second = backup(&r, docs(4, 6));
        let until = chrono::Utc::now() + chrono::Duration::days(1);
        let locked_index = b.lock_all(FileType::Index, until);
        assert_eq!(locked_index.len(), 2);
        // The local index has absorbed both files before the prune.
        r.index().unwrap();
        b.remove(FileType::Snapshot, &first.to_hex()).unwrap();
        let rep = prune(&r, &PruneOptions::default(), &NoProgress).unwrap();
        assert_eq!(rep.locked_index_files, 2, "{rep:?}");
        assert_eq!(rep.locked_packs, 0, "{rep:?}");
        // The first backup's packs are gone, but the locked index files naming them stay.
        // (At least the first backup's tree pack: its data may stay as delta bases of the second.)
        assert!(old_packs.iter().any(|p| !packs(&b).contains(p)));
        assert_eq!(b.list(FileType::Index).unwrap().len(), 3);
        let state = IndexState::read(&*b, r.keys()).unwrap();
        assert_eq!(state.superseded.len(), 2);
        assert!(state.packs().all(|p| packs(&b).contains(&p.id.to_hex())));
        let check = crate::check::check(&r, crate::check::ReadData::All, 1, &NoProgress).unwrap();
        assert_eq!(check.status, crate::check::Status::Success, "{check:?}");
        // A repository opened afresh (its local index synced with the superseded files present)
        // reads the snapshot left and backs up again.
        let creds = Credentials {
            password: None,
            key_file: Some(zeroize::Zeroizing::new([7u8; 32])),
        };
        let r2 = Repository::open(b.clone(), &creds, None).unwrap();
        let s = r2.load_snapshot(&second).unwrap();
        for n in &r2.load_tree(&s.tree).unwrap().nodes {
            for blob in &n.content {
                assert!(r2
                    .index()
                    .unwrap()
                    .lookup(BlobType::Data, blob)
                    .unwrap()
                    .is_some());
            }
        }
        // The deleted packs are in no index; those kept (as delta bases) still are.
        let stored = packs(&b);
        let indexed = r2.index().unwrap().packs().unwrap();
        for p in &old_packs {
            let id = PackId::from_hex(p).unwrap();
            assert_eq!(indexed.contains_key(&id), stored.contains(p), "pack {p}");
        }
        backup(&r2, docs(5, 2));
        let check = crate::check::check(&r2, crate::check::ReadData::All, 1, &NoProgress).unwrap();
        assert_eq!(check.status, crate::check::Status::Success, "{check:?}");
    }

    fn prune_locked_for_test(r: &Repository, opts: &PruneOptions) -> PruneReport {
        let lock = LockGuard::acquire(r.backend_arc(), r.keys().clone(), false, "test").unwrap();
        prune_locked(r, &lock, opts, &Forced::default(), &NoProgress).unwrap()
    }
}
