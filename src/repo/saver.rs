//! Saving blobs during a job: deduplication against the index, compression, packing and upload.
//!
//! Workers call [`BlobSaver::save`] concurrently. Hashing and compression run on the calling thread;
//! a full pack is taken out of the shared builder and sealed and written by the worker that filled it,
//! so several packs can be finished in parallel while memory stays bounded by about one pack per worker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::{BlobType, IndexFile, IndexPack};
use crate::id::{BlobId, IndexId};
use crate::pack::{encode_blob, PackBuilder};
use crate::repo::Repository;

/// Counters of what a saver added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SaveStats {
    /// New blobs stored.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub data_added: u64,
    /// Their stored bytes (compressed and sealed), pack headers included.
    pub data_added_packed: u64,
}

/// Saves blobs into new packs of a repository.
pub struct BlobSaver<'a> {
    repo: &'a Repository,
    builders: [Mutex<PackBuilder>; 2],
    seen: Mutex<HashSet<(BlobType, BlobId)>>,
    packs: Mutex<Vec<IndexPack>>,
    blobs_added: AtomicU64,
    data_added: AtomicU64,
    data_added_packed: AtomicU64,
}

fn slot(t: BlobType) -> usize {
    match t {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl<'a> BlobSaver<'a> {
    /// A saver for `repo`.
    pub fn new(repo: &'a Repository) -> Self {
        Self {
            repo,
            builders: [
                Mutex::new(PackBuilder::new(BlobType::Data)),
                Mutex::new(PackBuilder::new(BlobType::Tree)),
            ],
            seen: Mutex::new(HashSet::new()),
            packs: Mutex::new(Vec::new()),
            blobs_added: AtomicU64::new(0),
            data_added: AtomicU64::new(0),
            data_added_packed: AtomicU64::new(0),
        }
    }

    /// Stores `data` as a blob of type `t` unless an identical blob is already stored; returns its id.
    ///
    /// # Errors
    /// Index, compression and backend errors.
    pub fn save(&self, t: BlobType, data: &[u8]) -> Result<BlobId> {
        let id = self.repo.keys().blob_id(data);
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((t, id))
        {
            return Ok(id);
        }
        if self.repo.index()?.contains(t, &id)? {
            return Ok(id);
        }
        let stored = encode_blob(data, self.repo.config().compression)?;
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.data_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let full = {
            let mut b = self.builders[slot(t)]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            b.add(id, data.len() as u32, stored);
            if b.size() >= self.repo.config().pack_size as usize {
                Some(std::mem::replace(&mut *b, PackBuilder::new(t)))
            } else {
                None
            }
        };
        if let Some(p) = full {
            self.write_pack(p)?;
        }
        Ok(id)
    }

    fn write_pack(&self, p: PackBuilder) -> Result<()> {
        let fp = p.finish(self.repo.keys())?;
        self.repo
            .backend()
            .write(FileType::Pack, &fp.id.to_hex(), &fp.bytes)?;
        self.data_added_packed
            .fetch_add(fp.bytes.len() as u64, Ordering::Relaxed);
        self.packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(IndexPack {
                id: fp.id,
                size: fp.bytes.len() as u64,
                blobs: fp.entries,
            });
        Ok(())
    }

    /// Writes the packs still open and returns what was stored.
    ///
    /// # Errors
    /// Backend errors.
    pub fn flush(&self) -> Result<Vec<IndexPack>> {
        for t in [BlobType::Data, BlobType::Tree] {
            let p = std::mem::replace(
                &mut *self.builders[slot(t)]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
                PackBuilder::new(t),
            );
            if !p.is_empty() {
                self.write_pack(p)?;
            }
        }
        Ok(std::mem::take(
            &mut *self.packs.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// Flushes, then stores one index file for the new packs and records it in the local index.
    ///
    /// # Errors
    /// Backend and cache errors.
    pub fn commit_index(&self) -> Result<Option<IndexId>> {
        let packs = self.flush()?;
        if packs.is_empty() {
            return Ok(None);
        }
        let file = IndexFile {
            supersedes: vec![],
            packs,
        };
        let id = crate::index::save_index_file(self.repo.backend(), self.repo.keys(), &file)?;
        self.repo.index()?.add_index_file(&id, &file)?;
        Ok(Some(id))
    }

    /// What was added so far.
    pub fn stats(&self) -> SaveStats {
        SaveStats {
            blobs_added: self.blobs_added.load(Ordering::Relaxed),
            data_added: self.data_added.load(Ordering::Relaxed),
            data_added_packed: self.data_added_packed.load(Ordering::Relaxed),
        }
    }
}
