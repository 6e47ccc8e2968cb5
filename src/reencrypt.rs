//! `rewrite --reencrypt`: moves everything sealed under an old key epoch to the current one, so that
//! the old epochs can be retired (`--retire`) and nobody holding only an old master key can read the
//! repository any more.
//!
//! Under an exclusive lock it first takes a census of the epoch of every sealed object, from envelope
//! headers only (nothing needs decrypting to see an epoch): the pack header and every blob of each
//! pack, every index file, every single-item object of [`SEALED_OBJECTS`] and every audit log entry.
//! Then:
//! - packs holding anything under an old epoch are repacked by prune (their needed blobs are sealed
//!   again in new packs under the current epoch; unneeded ones are dropped), and prune's one new index
//!   file, also under the current epoch, supersedes every old one;
//! - every other old object is opened and sealed again under the current epoch. An object cannot be
//!   rewritten in place (objects are write-once), so the copy gets a new id,
//!   [`RepoKeys::reencrypted_id`] of the old one, is written, and only then is the old one removed.
//!   That id is deterministic: after an interruption between the two steps a re-run finds the copy
//!   instead of making a second one. A snapshot whose `parent` is being moved too points to the
//!   parent's new id; snapshots already under the current epoch are not rewritten for that (the
//!   parent is only a hint for change detection).
//! - audit entries are named by their place in the log, so they keep their names: each is copied to a
//!   record, removed, written again under the current epoch and its copy removed
//!   ([`crate::audit::reseal`]); this runs before the records are re-sealed, so that a copy left by an
//!   interrupted run is finished rather than re-sealed as a record of its own.
//!
//! Interrupted at any point, the repository checks: prune's own guarantees hold for the packs and
//! index files, a snapshot or record exists at least once at every moment (twice, briefly, which
//! a re-run resolves), and an audit entry exists as itself, as its copy, or both. Retiring
//! (`--retire`) then requires a census with nothing left under an old epoch (audit entries included),
//! and rewraps the key slots with the master key reduced to its current epoch
//! ([`crate::repo::rotation`]).
//!
//! [`RepoKeys::reencrypted_id`]: crate::crypto::RepoKeys::reencrypted_id

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::audit::reseal::ResealReport;
use crate::audit::AuditLog;
use crate::backend::{Backend, FileType};
use crate::backup::Progress;
use crate::crypto::{envelope_epoch, Kind, RepoKeys, ENVELOPE_EPOCH_PREFIX};
use crate::error::{Error, Result};
use crate::id::{IndexId, PackId};
use crate::prune::{Forced, MaxUnused, PruneOptions, PruneReport};
use crate::repo::lock::LockGuard;
use crate::repo::rotation::{MasterChangePlan, MasterChangeReport};
use crate::repo::Repository;

/// The single-item sealed objects (container and item are the object itself) that a re-encryption
/// re-seals under a new id, with their kind and the name reports use. Packs, index files and locks
/// are not among them: prune rewrites the first two, and locks are short-lived (one left under an
/// old epoch is unreadable, which lock handling already treats as stale).
pub const SEALED_OBJECTS: &[(FileType, Kind, &str)] = &[
    (FileType::Snapshot, Kind::Snapshot, "snapshot"),
    (FileType::Record, Kind::Record, "record"),
];

/// The epochs found in one pack.
#[derive(Clone, Debug, Default)]
pub struct PackEpochs {
    /// The epoch of the pack header.
    pub header: u32,
    /// Blobs per epoch (empty when the header's epoch is no longer held, so its entries are unknown).
    pub blobs: BTreeMap<u32, u64>,
}

impl PackEpochs {
    fn only(&self, epoch: u32) -> bool {
        self.header == epoch && self.blobs.keys().all(|e| *e == epoch)
    }
}

/// The epoch of every sealed object of the repository.
#[derive(Clone, Debug, Default)]
pub struct Census {
    /// The current epoch of the key that took the census.
    pub current: u32,
    /// Every stored pack.
    pub packs: Vec<(PackId, PackEpochs)>,
    /// Every index file with the epoch it is sealed under.
    pub index_files: Vec<(IndexId, u32)>,
    /// Every object of [`SEALED_OBJECTS`]: type, name, epoch.
    pub objects: Vec<(FileType, String, u32)>,
    /// Every audit log entry: seq, epoch.
    pub audit: Vec<(u64, u32)>,
}

fn type_name(t: FileType) -> &'static str {
    SEALED_OBJECTS
        .iter()
        .find(|(ft, _, _)| *ft == t)
        .map(|(_, _, n)| *n)
        .unwrap_or("object")
}

impl Census {
    /// Reads the envelope headers of every sealed object (packs in parallel).
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] naming an object whose envelope header or pack header cannot be
    /// read (nothing may be changed then: run `check`); backend errors.
    pub fn take(repo: &Repository) -> Result<Self> {
        let backend = repo.backend();
        let keys = repo.keys();
        let packs: Vec<(String, u64)> = backend.list(FileType::Pack)?;
        let packs = packs
            .par_iter()
            .filter_map(|(n, size)| PackId::from_hex(n).ok().map(|id| (id, *size)))
            .map(|(id, size)| Ok((id, scan_pack(backend, keys, &id, size)?)))
            .collect::<Result<Vec<_>>>()?;
        let index_files = backend
            .list(FileType::Index)?
            .par_iter()
            .filter_map(|(n, _)| IndexId::from_hex(n).ok())
            .map(|id| Ok((id, object_epoch(backend, FileType::Index, &id.to_hex())?)))
            .collect::<Result<Vec<_>>>()?;
        let mut objects = Vec::new();
        for (t, _, _) in SEALED_OBJECTS {
            let names: Vec<String> = backend
                .list(*t)?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| object_id(n).is_some())
                .collect();
            let found = names
                .par_iter()
                .map(|n| Ok((*t, n.clone(), object_epoch(backend, *t, n)?)))
                .collect::<Result<Vec<_>>>()?;
            objects.extend(found);
        }
        let audit = AuditLog::new(backend, keys).epochs()?;
        Ok(Self {
            current: keys.master().current_epoch(),
            packs,
            index_files,
            objects,
            audit,
        })
    }

    /// Objects per type (`pack`, `blob`, `index`, `snapshot`, `record`, `audit`) and epoch.
    pub fn counts(&self) -> BTreeMap<String, BTreeMap<u32, u64>> {
        let mut out: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
        for name in ["pack", "blob", "index"]
            .into_iter()
            .chain(SEALED_OBJECTS.iter().map(|(_, _, n)| *n))
            .chain(["audit"])
        {
            out.insert(name.into(), BTreeMap::new());
        }
        let mut add = |t: &str, e: u32, n: u64| {
            *out.entry(t.into()).or_default().entry(e).or_default() += n;
        };
        for (_, p) in &self.packs {
            add("pack", p.header, 1);
            for (e, n) in &p.blobs {
                add("blob", *e, *n);
            }
        }
        for (_, e) in &self.index_files {
            add("index", *e, 1);
        }
        for (t, _, e) in &self.objects {
            add(type_name(*t), *e, 1);
        }
        for (_, e) in &self.audit {
            add("audit", *e, 1);
        }
        out
    }

    /// The audit entries sealed under another epoch than the current one, by seq.
    pub fn old_audit_entries(&self) -> Vec<u64> {
        self.audit
            .iter()
            .filter(|(_, e)| *e != self.current)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Packs holding anything under another epoch than the current one.
    pub fn old_packs(&self) -> HashSet<PackId> {
        self.packs
            .iter()
            .filter(|(_, p)| !p.only(self.current))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many packs, blobs, index files and other objects are sealed under an old epoch.
    pub fn old_count(&self) -> u64 {
        self.counts()
            .values()
            .flat_map(|m| m.iter())
            .filter(|(e, _)| **e != self.current)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The old objects counted by type, for messages: `3 packs, 120 blobs under epoch 0`.
    pub fn describe_old(&self) -> String {
        let mut parts = Vec::new();
        for (t, m) in self.counts() {
            for (e, n) in m {
                if e != self.current {
                    parts.push(format!("{n} {t}(s) under epoch {e}"));
                }
            }
        }
        parts.join(", ")
    }
}

/// The 32-byte id an object name stands for.
fn object_id(name: &str) -> Option<[u8; 32]> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(name, &mut id).ok().map(|_| id)
}

/// The epoch of a single-envelope object (an index file, a snapshot, a record).
fn object_epoch(backend: &dyn Backend, t: FileType, name: &str) -> Result<u32> {
    let head = backend.read_range(t, name, 0, ENVELOPE_EPOCH_PREFIX as u64)?;
    envelope_epoch(&head).ok_or_else(|| {
        Error::integrity(
            format!("{t} {name}"),
            "it does not start with an envelope header; run `gatevault check`",
        )
    })
}

/// The epochs of a pack: its header's, and each blob's from the first bytes of its envelope.
fn scan_pack(backend: &dyn Backend, keys: &RepoKeys, id: &PackId, size: u64) -> Result<PackEpochs> {
    let name = id.to_hex();
    let what = format!("header of pack {id}");
    let bad = |why: &str| {
        Error::integrity(
            &what,
            format!("{why}; run `gatevault check` (nothing was changed)"),
        )
    };
    if size < 4 {
        return Err(bad("the pack is shorter than its trailer"));
    }
    let trailer = backend.read_range(FileType::Pack, &name, size - 4, 4)?;
    let hl = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as u64;
    if hl < ENVELOPE_EPOCH_PREFIX as u64 || hl > size - 4 {
        return Err(bad("its length in the trailer does not fit the pack"));
    }
    let blobs_len = size - 4 - hl;
    let env = backend.read_range(FileType::Pack, &name, blobs_len, hl)?;
    let header = envelope_epoch(&env).ok_or_else(|| bad("it is not an envelope"))?;
    let mut out = PackEpochs {
        header,
        blobs: BTreeMap::new(),
    };
    if !keys.master().epoch_numbers().contains(&header) {
        // Sealed under a retired epoch: its entries cannot be read, and it is old anyway.
        return Ok(out);
    }
    let plain = keys.open(Kind::Pack, &id.0, Kind::Pack, &id.0, &env, &what)?;
    let entries =
        crate::format::decode_pack_header(&plain, blobs_len).map_err(|e| bad(&e.to_string()))?;
    let ranges: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| {
            (
                e.offset as u64,
                (e.length as u64).min(ENVELOPE_EPOCH_PREFIX as u64),
            )
        })
        .collect();
    for (e, head) in entries
        .iter()
        .zip(backend.read_ranges(FileType::Pack, &name, &ranges)?)
    {
        let epoch = envelope_epoch(&head).ok_or_else(|| {
            Error::integrity(
                format!("blob {} in pack {id}", e.id),
                "it does not start with an envelope header; run `gatevault check`",
            )
        })?;
        *out.blobs.entry(epoch).or_default() += 1;
    }
    Ok(out)
}

/// Options of a re-encryption.
#[derive(Clone, Debug, Default)]
pub struct ReencryptOptions {
    /// Only take the census and report.
    pub dry_run: bool,
}

/// What a re-encryption found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReencryptReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The epoch everything is sealed under afterwards.
    pub current_epoch: u32,
    /// Objects per type and epoch before.
    pub before: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Packs that held something under an old epoch (repacked, or deleted when nothing in them was
    /// needed).
    pub packs_reencrypted: usize,
    /// Index files under an old epoch (replaced by one new index file).
    pub index_files_reencrypted: usize,
    /// Other objects sealed again under new ids, by type.
    pub objects_reencrypted: BTreeMap<String, u64>,
    /// Audit log entries sealed again under the current epoch (under their own names, through a copy),
    /// with the re-seals an interrupted run had left and this one finished.
    pub audit: ResealReport,
    /// Of the snapshots, those whose `parent` now names the parent's new id.
    pub parents_remapped: u64,
    /// What the prune that rewrote the packs and the index did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneReport>,
    /// Objects still under an old epoch afterwards (for a dry run: before), counted as in `before`.
    pub left_on_old_epochs: u64,
    /// The retirement of the old epochs, with `--retire`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<MasterChangeReport>,
}

/// Re-encryption writes a new copy of every old object and then removes the old one. On a bucket with
/// S3 Object Lock a retained old object cannot be removed and would stay next to its new copy (two
/// snapshots for one, say), so the retention of every object to be replaced is checked first and
/// nothing is rewritten while any is retained.
///
/// # Errors
/// [`Error::InvalidInput`] naming how many objects are retained and until when; errors of the store.
fn refuse_retained(backend: &dyn Backend, census: &Census) -> Result<()> {
    if !backend.capabilities().object_lock {
        return Ok(());
    }
    let old = |e: u32| e != census.current;
    let mut names: Vec<(FileType, String)> = census
        .old_packs()
        .iter()
        .map(|p| (FileType::Pack, p.to_hex()))
        .collect();
    names.extend(
        (census.index_files.iter())
            .filter(|(_, e)| old(*e))
            .map(|(id, _)| (FileType::Index, id.to_hex())),
    );
    names.extend(
        (census.objects.iter())
            .filter(|(_, _, e)| old(*e))
            .map(|(t, n, _)| (*t, n.clone())),
    );
    names.extend(
        (census.audit.iter())
            .filter(|(_, e)| old(*e))
            .map(|(seq, _)| (FileType::Audit, crate::audit::entry_name(*seq))),
    );
    let retained: Vec<chrono::DateTime<chrono::Utc>> = names
        .par_iter()
        .map(|(t, n)| match backend.locked_until(*t, n) {
            Err(Error::NotFound { .. }) => Ok(None),
            r => r,
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    match retained.iter().max() {
        None => Ok(()),
        Some(until) => Err(Error::InvalidInput(format!(
            "{} of the {} objects sealed under an older key epoch are under an S3 Object Lock, the last until {until}: re-encryption cannot remove them and would leave their old copies next to the new ones. Nothing was rewritten; run `rewrite --reencrypt` after that date (until then the old key epoch stays needed to read them)",
            retained.len(),
            names.len()
        ))),
    }
}

/// Re-seals every object sealed under an old epoch under the current one, with the exclusive lock
/// `lock` held (or a shared one for a dry run). With `retire`, a plan made beforehand (so that a
/// refusal comes before anything changed), the old epochs are then retired.
///
/// # Errors
/// [`Error::NotAllowed`] for a key that is not admin (a dry run is allowed to any key);
/// [`Error::IntegrityMismatch`] when an object or a needed blob cannot be read (the packs' part stops
/// before changing anything, as prune does); [`Error::InvalidInput`] when `retire` is asked and
/// something is still sealed under an old epoch, or when objects to replace are under an S3 Object
/// Lock; backend errors.
pub fn reencrypt(
    repo: &Repository,
    lock: &LockGuard,
    opts: &ReencryptOptions,
    retire: Option<MasterChangePlan<'_>>,
    progress: &dyn Progress,
) -> Result<ReencryptReport> {
    if !opts.dry_run {
        repo.require_admin("re-encrypt the repository")?;
    }
    let census = Census::take(repo)?;
    let mut r = ReencryptReport {
        dry_run: opts.dry_run,
        current_epoch: census.current,
        before: census.counts(),
        ..Default::default()
    };
    if opts.dry_run {
        r.left_on_old_epochs = census.old_count();
        return Ok(r);
    }

    refuse_retained(repo.backend(), &census)?;
    let old_packs = census.old_packs();
    let old_index = census
        .index_files
        .iter()
        .filter(|(_, e)| *e != census.current)
        .count();
    if !old_packs.is_empty() || old_index > 0 {
        let opts = PruneOptions {
            max_unused: MaxUnused::Unlimited,
            max_repack_bytes: None,
            dry_run: false,
        };
        let forced = Forced {
            packs: old_packs.clone(),
            blobs: HashSet::new(),
            index: true,
        };
        r.prune = Some(crate::prune::prune_locked(
            repo, lock, &opts, &forced, progress,
        )?);
        r.packs_reencrypted = old_packs.len();
        r.index_files_reencrypted = old_index;
    }

    // Audit entries, before the records: a copy an interrupted run left is a record, and is finished
    // here (the entry put back, the copy removed) rather than re-sealed as a record of its own.
    r.audit = AuditLog::new(repo.backend(), repo.keys())
        .reseal(&census.old_audit_entries(), &|| lock.check())?;
    let copies = &r.audit.copy_records;

    let present: HashSet<(FileType, &str)> = census
        .objects
        .iter()
        .map(|(t, n, _)| (*t, n.as_str()))
        .collect();
    for (t, kind, type_name) in SEALED_OBJECTS {
        let moving: BTreeSet<&str> = census
            .objects
            .iter()
            .filter(|(ot, _, e)| ot == t && *e != census.current)
            .filter(|(ot, n, _)| !(*ot == FileType::Record && copies.contains(n)))
            .map(|(_, n, _)| n.as_str())
            .collect();
        let mut n = 0;
        for name in &moving {
            lock.check()?;
            let remapped = reseal(repo, *t, *kind, name, &|parent: &str| {
                // The parent moves now, or moved in an interrupted run (it is gone and its copy is
                // there): name its copy.
                let new =
                    object_id(parent).map(|p| hex::encode(repo.keys().reencrypted_id(*kind, &p)));
                new.filter(|new| {
                    moving.contains(parent)
                        || (!present.contains(&(*t, parent))
                            && present.contains(&(*t, new.as_str())))
                })
            })?;
            r.parents_remapped += u64::from(remapped);
            n += 1;
        }
        r.objects_reencrypted.insert((*type_name).into(), n);
    }

    let after = Census::take(repo)?;
    r.left_on_old_epochs = after.old_count();
    if let Some(plan) = retire {
        if r.left_on_old_epochs > 0 {
            return Err(Error::InvalidInput(format!(
                "cannot retire the old key epochs: {} still sealed under them ({}); run \
                 `gatevault check`, then `gatevault rewrite --reencrypt` again (no key was changed)",
                r.left_on_old_epochs,
                after.describe_old()
            )));
        }
        r.retired = Some(repo.apply_master_change(lock, plan)?);
    }
    Ok(r)
}

/// Re-seals object `name` of type `t` under the current epoch as its [`RepoKeys::reencrypted_id`],
/// then removes it. For snapshots, `new_parent` maps the parent's id to its new one when that moves.
/// Returns whether the parent was remapped.
fn reseal(
    repo: &Repository,
    t: FileType,
    kind: Kind,
    name: &str,
    new_parent: &dyn Fn(&str) -> Option<String>,
) -> Result<bool> {
    let backend = repo.backend();
    let keys = repo.keys();
    let what = format!("{t} {name}");
    let id = object_id(name).ok_or_else(|| Error::integrity(&what, "its name is not an id"))?;
    let env = backend.read(t, name)?;
    let mut plain = keys.open_object(kind, &id, &env, &what)?;
    let mut remapped = false;
    if kind == Kind::Snapshot {
        // Edited as JSON, so that fields this version does not know survive.
        let mut v: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|e| Error::integrity(&what, e.to_string()))?;
        let parent = v.get("parent").and_then(|p| p.as_str()).map(str::to_owned);
        if let Some(new) = parent.as_deref().and_then(new_parent) {
            v["parent"] = serde_json::Value::String(new);
            plain = serde_json::to_vec(&v).map_err(|e| Error::integrity(&what, e.to_string()))?;
            remapped = true;
        }
    }
    let new_id = keys.reencrypted_id(kind, &id);
    let new_name = hex::encode(new_id);
    if backend.exists(t, &new_name)? {
        // Written by an interrupted run: it must open before the original may go.
        let env = backend.read(t, &new_name)?;
        keys.open_object(kind, &new_id, &env, &format!("{t} {new_name}"))?;
    } else {
        backend.write(t, &new_name, &keys.seal_object(kind, &new_id, &plain))?;
    }
    match backend.remove(t, name) {
        Ok(()) | Err(Error::NotFound { .. }) => Ok(remapped),
        Err(e) => Err(e),
    }
}
