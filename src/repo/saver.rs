//! Saving blobs during a job: deduplication against the index, compression, packing and upload.
//!
//! Workers call [`BlobSaver::save`] concurrently. Hashing and compression run on the calling thread;
//! a full pack is taken out of the shared builder and sealed by the worker that filled it, then handed
//! to a writer thread, so sealing, writing and the next packs' CPU work overlap while memory stays
//! bounded by about one pack per worker plus two in the writer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::{Backend, FileType};
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, IndexPack};
use crate::id::{BlobId, IndexId};
use crate::pack::{encode_blob, FinishedPack, PackBuilder};
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
    blobs_added: AtomicU64,
    data_added: AtomicU64,
    writer: PackWriter,
}

/// Writes finished packs on a thread of its own, so that waiting for the disk (each pack is fsynced)
/// overlaps with the CPU work of the next packs. The hand-over is a rendezvous: at most one pack is
/// being written and one waits with the worker that finished it, so memory stays bounded.
struct PackWriter {
    tx: Mutex<Option<SyncSender<FinishedPack>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    written: Arc<Mutex<Vec<IndexPack>>>,
    error: Arc<Mutex<Option<Error>>>,
    packed: Arc<AtomicU64>,
}

impl PackWriter {
    fn start(backend: Arc<dyn Backend>) -> Self {
        let (tx, rx) = sync_channel::<FinishedPack>(0);
        let written = Arc::new(Mutex::new(Vec::new()));
        let error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let packed = Arc::new(AtomicU64::new(0));
        let (w, e, n) = (written.clone(), error.clone(), packed.clone());
        let thread = std::thread::spawn(move || {
            for fp in rx {
                if e.lock().unwrap_or_else(|x| x.into_inner()).is_some() {
                    continue; // a write failed: drain the queue without writing more
                }
                match backend.write(FileType::Pack, &fp.id.to_hex(), &fp.bytes) {
                    Ok(()) => {
                        n.fetch_add(fp.bytes.len() as u64, Ordering::Relaxed);
                        w.lock().unwrap_or_else(|x| x.into_inner()).push(IndexPack {
                            id: fp.id,
                            size: fp.bytes.len() as u64,
                            blobs: fp.entries,
                        });
                    }
                    Err(err) => *e.lock().unwrap_or_else(|x| x.into_inner()) = Some(err),
                }
            }
        });
        Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            written,
            error,
            packed,
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn send(&self, fp: FinishedPack) -> Result<()> {
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) if tx.send(fp).is_ok() => Ok(()),
            _ => Err(self.take_error().unwrap_or(Error::Interrupted)),
        }
    }

    /// Waits until every queued pack is written; returns them.
    fn finish(&self) -> Result<Vec<IndexPack>> {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.join()
                .map_err(|_| Error::InvalidInput("the pack writer thread panicked".into()))?;
        }
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        Ok(std::mem::take(
            &mut *self.written.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
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
            blobs_added: AtomicU64::new(0),
            data_added: AtomicU64::new(0),
            writer: PackWriter::start(repo.backend_arc()),
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
    /// the previous version of the same directory's tree). A new blob is then stored as a delta against
    /// `similar` when that saves at least a quarter and the chain stays within
    /// [`crate::pack::MAX_DELTA_DEPTH`] (see `docs/design.md`, section 6).
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
        let mut base = None;
        if let Some(sim) = similar {
            if let Some(d) = self.delta(t, data, level, &stored, &sim)? {
                stored = d;
                base = Some(sim);
            }
        }
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.data_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.add_to_pack(t, id, data.len() as u32, stored, base)?;
        Ok(id)
    }

    /// Adds a blob in its stored form (as [`crate::pack::unseal`] returns it) to a new pack, without
    /// looking at the index: prune uses this to move blobs out of packs it repacks. `base` must be given
    /// exactly for a delta.
    ///
    /// # Errors
    /// Backend errors writing a full pack.
    pub fn add_stored(
        &self,
        t: BlobType,
        id: BlobId,
        raw_length: u32,
        stored: Vec<u8>,
        base: Option<BlobId>,
    ) -> Result<()> {
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((t, id))
        {
            return Ok(());
        }
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.data_added
            .fetch_add(raw_length as u64, Ordering::Relaxed);
        self.add_to_pack(t, id, raw_length, stored, base)
    }

    fn add_to_pack(
        &self,
        t: BlobType,
        id: BlobId,
        raw_length: u32,
        stored: Vec<u8>,
        base: Option<BlobId>,
    ) -> Result<()> {
        let full = {
            let mut b = self.builders[slot(t)]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            b.add_with_base(id, raw_length, stored, base);
            if b.size() >= self.repo.config().pack_size as usize {
                Some(std::mem::replace(&mut *b, PackBuilder::new(t)))
            } else {
                None
            }
        };
        match full {
            Some(p) => self.write_pack(p),
            None => Ok(()),
        }
    }

    /// The delta encoding of `data` against `similar`, if it pays. A base that cannot be
    /// read is only a lost opportunity: the blob is then stored self-contained.
    fn delta(
        &self,
        t: BlobType,
        data: &[u8],
        level: i32,
        plain: &[u8],
        similar: &BlobId,
    ) -> Result<Option<Vec<u8>>> {
        // Chain onto `similar` itself (its plaintext is the closest dictionary) unless the chain would
        // grow too deep; then this blob starts a new chain, self-contained.
        match self.repo.delta_depth(t, similar) {
            Ok(d) if d < crate::pack::MAX_DELTA_DEPTH => {}
            _ => return Ok(None),
        }
        match self.repo.load_blob(t, similar) {
            Ok(b) => crate::pack::encode_delta(data, level, plain, similar, &b),
            Err(e) => {
                tracing::debug!("no delta against {}: {e}", similar.short());
                Ok(None)
            }
        }
    }

    fn write_pack(&self, p: PackBuilder) -> Result<()> {
        self.writer.send(p.finish(self.repo.keys())?)
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
        self.writer.finish()
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
            data_added_packed: self.writer.packed.load(Ordering::Relaxed),
        }
    }
}
