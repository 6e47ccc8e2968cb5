//! `repair index`: rebuild the index files from the pack headers.
//!
//! Readable index files are reused for packs they describe correctly (unless every pack is to be read);
//! every other pack's header is read. One new index file superseding all old ones is written first,
//! then the old ones are removed, so an interruption at any point leaves a complete index.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::{IndexFile, IndexPack};
use crate::id::{IndexId, PackId};
use crate::repo::lock::LockGuard;
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
    /// Packs whose header could not be read, with the reason (their blobs are lost).
    pub damaged_packs: Vec<String>,
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
    let mut known: HashMap<PackId, IndexPack> = HashMap::new();
    if !read_all_packs {
        for id in &old {
            if let Ok(f) = crate::index::load_index_file(backend, keys, id) {
                for p in f.packs {
                    if stored.get(&p.id) == Some(&p.size) {
                        known.insert(p.id, p);
                    }
                }
            }
        }
    }
    let todo: Vec<(PackId, u64)> = stored
        .iter()
        .filter(|(id, _)| !known.contains_key(id))
        .map(|(i, s)| (*i, *s))
        .collect();
    report.packs_read = todo.len();
    let read: Vec<(PackId, Result<IndexPack>)> = todo
        .par_iter()
        .map(|(id, size)| {
            let r = backend
                .read(FileType::Pack, &id.to_hex())
                .and_then(|b| crate::pack::read_header(keys, id, &b))
                .map(|blobs| IndexPack {
                    id: *id,
                    size: *size,
                    blobs,
                });
            (*id, r)
        })
        .collect();
    for (id, r) in read {
        match r {
            Ok(p) => {
                known.insert(id, p);
            }
            Err(e) => report.damaged_packs.push(format!("pack {id}: {e}")),
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
