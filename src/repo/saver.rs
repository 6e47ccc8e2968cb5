//! Saving blobs during a job: deduplication against the index, compression, packing and upload.
//!
//! Workers call [`BlobSaver::save`] concurrently. Hashing and compression run on the calling thread;
//! a full pack is taken out of the shared builder and sealed by the worker that filled it, then handed
//! to a writer thread (one, or as many as the backend's concurrency for an object store), so sealing,
//! writing and the next packs' CPU work overlap while memory stays bounded by about one pack per worker
//! plus one per writer thread. A pack written to a backend that gives its bytes back (a local disk)
//! leaves its buffer for the next pack to be sealed into.

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

/// The most writer threads a saver starts, whatever a backend asks for: each holds a whole pack.
const MAX_WRITERS: usize = 32;

/// At most this many buffers of written packs are kept for reuse (a backend that keeps the bytes it
/// writes, an object store, gives none back). Sealed into a fresh pack-sized block each, the packs
/// left glibc's per-thread arenas holding more: 8 alternating backups of 2 GiB to a local disk
/// peaked at a median of 164 MiB RSS with fresh blocks, 139 MiB with reused ones.
const POOLED_BUFFERS: usize = 2;

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

/// Writes finished packs on threads of their own, so that waiting for the store (a local pack is
/// fsynced; a remote one waits on round trips) overlaps with the CPU work of the next packs. There are
/// as many writer threads as the backend's [`crate::backend::Capabilities::concurrency`] (one for a
/// local disk). The hand-over is a rendezvous: at most `concurrency` packs are being written and one
/// waits with each worker that finished one, so memory stays bounded.
struct PackWriter {
    tx: Mutex<Option<SyncSender<FinishedPack>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    written: Arc<Mutex<Vec<IndexPack>>>,
    error: Arc<Mutex<Option<Error>>>,
    packed: Arc<AtomicU64>,
    /// Buffers of written packs that the backend gave back, for the next packs to be sealed into.
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl PackWriter {
    fn start(backend: Arc<dyn Backend>) -> Self {
        let (tx, rx) = sync_channel::<FinishedPack>(0);
        let rx = Arc::new(Mutex::new(rx));
        let written = Arc::new(Mutex::new(Vec::new()));
        let error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let packed = Arc::new(AtomicU64::new(0));
        let pool: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
        let writers = backend.capabilities().concurrency.clamp(1, MAX_WRITERS);
        let threads = (0..writers)
            .map(|_| {
                let (backend, rx) = (backend.clone(), rx.clone());
                let (w, e, n) = (written.clone(), error.clone(), packed.clone());
                let pool = pool.clone();
                std::thread::spawn(move || loop {
                    // One thread at a time waits for the next pack; the others are writing.
                    let next = rx.lock().unwrap_or_else(|x| x.into_inner()).recv();
                    let Ok(fp) = next else { break };
                    if e.lock().unwrap_or_else(|x| x.into_inner()).is_some() {
                        continue; // a write failed: drain the queue without writing more
                    }
                    let size = fp.bytes.len() as u64;
                    match backend.write_owned(FileType::Pack, &fp.id.to_hex(), fp.bytes) {
                        Ok(back) => {
                            if let Some(buf) = back {
                                let mut p = pool.lock().unwrap_or_else(|x| x.into_inner());
                                if p.len() < POOLED_BUFFERS {
                                    p.push(buf);
                                }
                            }
                            n.fetch_add(size, Ordering::Relaxed);
                            w.lock().unwrap_or_else(|x| x.into_inner()).push(IndexPack {
                                id: fp.id,
                                size,
                                blobs: fp.entries,
                            });
                        }
                        Err(err) => {
                            // The first failure is the one to report; later ones follow from it.
                            e.lock()
                                .unwrap_or_else(|x| x.into_inner())
                                .get_or_insert(err);
                        }
                    }
                })
            })
            .collect();
        Self {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            written,
            error,
            packed,
            pool,
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

    /// Waits until every queued pack is written (by all writer threads); returns them.
    fn finish(&self) -> Result<Vec<IndexPack>> {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let mut panicked = false;
        for t in threads {
            panicked |= t.join().is_err();
        }
        if panicked {
            return Err(Error::InvalidInput("a pack writer thread panicked".into()));
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
        // A safe point: a stop leaves the packs written so far unreferenced, nothing else.
        crate::signals::check()?;
        let buffer = self
            .writer
            .pool
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .pop()
            .unwrap_or_default();
        self.writer.send(p.finish_into(self.repo.keys(), buffer)?)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Capabilities;
    use crate::repo::{Credentials, InitOptions};

    /// A memory store that reports `concurrency`, takes a while for each pack write, records how many
    /// overlapped, and fails the `fail_at`-th pack write.
    #[derive(Debug)]
    struct SlowStore {
        inner: MemoryBackend,
        concurrency: usize,
        fail_at: Option<usize>,
        pack_writes: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl SlowStore {
        fn new(concurrency: usize, fail_at: Option<usize>) -> Arc<Self> {
            Arc::new(Self {
                inner: MemoryBackend::new(),
                concurrency,
                fail_at,
                pack_writes: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            })
        }
    }

    impl Backend for SlowStore {
        fn location(&self) -> String {
            "slow-memory".into()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
            self.inner.list(t)
        }
        fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
            self.inner.read(t, name)
        }
        fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, offset, len)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
            if t != FileType::Pack {
                return self.inner.write(t, name, data);
            }
            let n = self.pack_writes.fetch_add(1, Ordering::SeqCst) + 1;
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(40));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if Some(n) == self.fail_at {
                return Err(Error::io(
                    format!("writing pack {name}"),
                    std::io::Error::other("injected failure"),
                ));
            }
            self.inner.write(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> Result<()> {
            self.inner.remove(t, name)
        }
        fn stat(&self, t: FileType, name: &str) -> Result<u64> {
            self.inner.stat(t, name)
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                concurrency: self.concurrency,
                ..self.inner.capabilities()
            }
        }
    }

    fn repo(store: Arc<SlowStore>, cache: &std::path::Path) -> Repository {
        let creds = Credentials {
            password: None,
            key_file: Some(zeroize::Zeroizing::new([7u8; 32])),
        };
        let opts = InitOptions {
            compression: 0,
            pack_size: 64 * 1024,
            ..InitOptions::default()
        };
        Repository::init(store, &opts, &creds, Some(cache.to_path_buf())).expect("init")
    }

    /// Incompressible, distinct blobs of 16 KiB: four make a pack.
    fn blob(i: u64) -> Vec<u8> {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..16 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn save_all(saver: &BlobSaver<'_>, n: u64) -> Result<()> {
        (0..n).try_for_each(|i| saver.save(BlobType::Data, &blob(i)).map(|_| ()))
    }

    #[test]
    fn packs_are_written_concurrently_and_all_indexed() {
        let cache = tempfile::tempdir().unwrap();
        let store = SlowStore::new(4, None);
        let repo = repo(store.clone(), cache.path());
        let saver = BlobSaver::new(&repo);
        save_all(&saver, 64).unwrap();
        let packs = saver.flush().unwrap();
        let writes = store.pack_writes.load(Ordering::SeqCst);
        assert!(writes >= 10, "{writes} pack writes");
        assert_eq!(packs.len(), writes, "every written pack is returned");
        assert_eq!(store.inner.list(FileType::Pack).unwrap().len(), writes);
        let blobs: usize = packs.iter().map(|p| p.blobs.len()).sum();
        assert_eq!(blobs, 64);
        let max = store.max_in_flight.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&max),
            "{max} pack writes overlapped at most"
        );
        assert_eq!(store.in_flight.load(Ordering::SeqCst), 0, "flush waited");
    }

    #[test]
    fn one_writer_for_a_backend_without_concurrency_and_its_buffers_reused() {
        let cache = tempfile::tempdir().unwrap();
        let store = SlowStore::new(1, None);
        let repo = repo(store.clone(), cache.path());
        let saver = BlobSaver::new(&repo);
        save_all(&saver, 24).unwrap();
        let packs = saver.flush().unwrap();
        assert_eq!(packs.len(), store.pack_writes.load(Ordering::SeqCst));
        assert_eq!(store.max_in_flight.load(Ordering::SeqCst), 1);
        assert!(packs.len() >= 5, "{} packs", packs.len());
        // The memory store gave each buffer back; the pool kept a bounded number of them.
        let pooled = saver.writer.pool.lock().unwrap().len();
        assert!((1..=POOLED_BUFFERS).contains(&pooled), "{pooled} pooled");
        // A pack sealed into a reused buffer holds only its own bytes.
        for p in &packs {
            let bytes = store.inner.read(FileType::Pack, &p.id.to_hex()).unwrap();
            assert_eq!(bytes.len() as u64, p.size);
            let header = crate::pack::read_header(repo.keys(), &p.id, &bytes).unwrap();
            assert_eq!(header, p.blobs);
        }
    }

    #[test]
    fn an_error_from_any_writer_fails_the_save() {
        let cache = tempfile::tempdir().unwrap();
        let store = SlowStore::new(4, Some(3));
        let repo = repo(store.clone(), cache.path());
        let saver = BlobSaver::new(&repo);
        let saved = save_all(&saver, 64);
        let flushed = saver.flush();
        let err = saved.and(flushed.map(|_| ())).unwrap_err();
        assert!(
            err.to_string().contains("injected failure"),
            "unexpected error: {err}"
        );
        assert_eq!(store.in_flight.load(Ordering::SeqCst), 0, "writers stopped");
        // Saving stopped soon after the failure instead of writing every pack.
        assert!(store.pack_writes.load(Ordering::SeqCst) < 16);
    }
}
