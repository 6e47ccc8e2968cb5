//! `repair index`: rebuild the index files from the pack headers.
//!
//! Readable index files are reused for packs they describe correctly (unless every pack is to be read);
//! every other pack's header is read. Of a pack whose header is damaged, the blobs that old index files
//! list and whose bytes still authenticate are kept, so a truncated pack loses only what was cut. One new index file superseding all old ones is written first,
//! then the old ones are removed, so an interruption at any point leaves a complete index.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::{IndexFile, IndexPack, PackEntry};
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
