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
        self.save_similar(t, self.repo.keys().blob_id(data), data, None)
    }

    /// [`BlobSaver::save`] for a blob with known id `id`, which is probably similar to the stored blob
    /// `similar` of the same type (the chunk at the same place in the previous version of the file, or
    /// the previous version of the same directory's tree). A new blob is
    /// then stored as a delta against `similar`'s self-contained base when that saves at least a quarter
    /// (see `docs/design.md`, section 6).
    ///
    /// # Errors
    /// Index, compression and backend errors.
    pub fn save_similar(
        &self,
        t: BlobType,
        id: BlobId,
        data: &[u8],
        similar: Option<BlobId>,
    ) -> Result<BlobId> {
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
        let level = self.repo.config().compression;
        let mut stored = encode_blob(data, level)?;
        if let Some(sim) = similar {
            if let Some(d) = self.delta(t, data, level, &stored, &sim)? {
                stored = d;
            }
        }
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

    /// The delta encoding of `data` against the base of `similar`, if it pays. A base that cannot be
    /// read is only a lost opportunity: the blob is then stored self-contained.
    fn delta(
        &self,
        t: BlobType,
        data: &[u8],
        level: i32,
        plain: &[u8],
        similar: &BlobId,
    ) -> Result<Option<Vec<u8>>> {
        let base = match self.repo.locate(t, similar) {
            Ok(loc) => loc.entry.base.unwrap_or(*similar),
            Err(_) => return Ok(None),
        };
        match self.repo.load_base(t, &base) {
            Ok(b) => crate::pack::encode_delta(data, level, plain, &base, &b),
            Err(e) => {
                tracing::debug!("no delta against {}: {e}", base.short());
                Ok(None)
            }
        }
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

    /// The keys of the repository (for blob ids).
    pub fn repo_keys(&self) -> &crate::crypto::RepoKeys {
        self.repo.keys()
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
