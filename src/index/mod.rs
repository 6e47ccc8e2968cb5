//! The blob index: authoritative encrypted index files in the repository, and a local RocksDB copy.
//!
//! The RocksDB database lives in the cache directory (one per repository id) and is never trusted
//! blindly: it records which index files it has absorbed and the repository id it belongs to. On every
//! open it is compared with the repository's `index/` listing: new index files are added, and if one it
//! absorbed is gone (repair, prune) or the database belongs to another repository, cannot be opened or
//! has another layout version, it is rebuilt from the index files. A read that finds a damaged block
//! (RocksDB checksums every block) marks the database, and the next open rebuilds it. Only point
//! lookups and small batches touch it, so memory stays bounded whatever the repository size.
//!
//! [`IndexState`] is the other reader of the index files: what they say, held compactly in memory for
//! `check`, `prune` and `erase`, which never trust the local database.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rocksdb::{BlockBasedOptions, Options, WriteBatch, DB};

use crate::backend::{Backend, FileType};
use crate::crypto::{Kind, RepoKeys};
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, PackEntry};
use crate::id::{BlobId, IndexId, PackId, RepoId};

mod state;
pub use state::{IndexState, IndexedPack};

/// Layout version of the local database; a mismatch triggers a rebuild.
const CACHE_LAYOUT: &[u8] = b"gatevault-index-cache-2";

const META_REPO: &[u8] = b"m:repo";
const META_LAYOUT: &[u8] = b"m:layout";

fn blob_key(t: BlobType, id: &BlobId) -> [u8; 34] {
    let mut k = [0u8; 34];
    k[0] = b'b';
    k[1] = t.byte();
    k[2..].copy_from_slice(&id.0);
    k
}

fn index_key(id: &IndexId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'i';
    k[1..].copy_from_slice(&id.0);
    k
}

fn superseded_key(id: &IndexId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b's';
    k[1..].copy_from_slice(&id.0);
    k
}

fn pack_key(id: &PackId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'p';
    k[1..].copy_from_slice(&id.0);
    k
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

/// `pack id | offset | length | raw length [| base id]`: 44 or 76 bytes.
fn encode_location(pack: &PackId, e: &PackEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(76);
    v.extend_from_slice(&pack.0);
    v.extend_from_slice(&e.offset.to_le_bytes());
    v.extend_from_slice(&e.length.to_le_bytes());
    v.extend_from_slice(&e.raw_length.to_le_bytes());
    if let Some(b) = &e.base {
        v.extend_from_slice(&b.0);
    }
    v
}

/// What [`LocalIndex::sync`] did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Index files added to the local database.
    pub added: usize,
    /// Whether the database was rebuilt from scratch, and why.
    pub rebuilt: Option<String>,
    /// Index files that could not be read (named; the blobs they list are missing from the index).
    pub unreadable: Vec<(IndexId, String)>,
}

/// The local RocksDB index of one repository.
pub struct LocalIndex {
    db: DB,
    path: PathBuf,
    /// Set when the database is a private temporary copy to delete on drop.
    temporary: bool,
}

impl std::fmt::Debug for LocalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIndex")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for LocalIndex {
    fn drop(&mut self) {
        if self.temporary {
            let _ = DB::destroy(&Options::default(), &self.path);
            let _ = std::fs::remove_dir_all(&self.path);
            let _ = std::fs::remove_file(damaged_marker(&self.path));
        }
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    // Bounded memory: small memtables and block cache, few open files.
    o.set_write_buffer_size(16 << 20);
    o.set_max_write_buffer_number(2);
    o.set_max_open_files(256);
    o.set_keep_log_file_num(2);
    o.set_max_total_wal_size(64 << 20);
    let mut bo = BlockBasedOptions::default();
    bo.set_bloom_filter(10.0, false);
    bo.set_block_cache(&rocksdb::Cache::new_lru_cache(16 << 20));
    o.set_block_based_table_factory(&bo);
    o
}

/// The file beside database `path` that marks it damaged: the next open rebuilds the database.
fn damaged_marker(path: &Path) -> PathBuf {
    path.with_extension("damaged")
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl LocalIndex {
    /// Opens (or creates) the index of repository `repo` under `cache_root`, or a temporary one when
    /// `cache_root` is `None` or the cache is held by another process.
    ///
    /// # Errors
    /// [`Error::Cache`] when no database can be created at all.
    pub fn open(cache_root: Option<&Path>, repo: &RepoId) -> Result<Self> {
        if let Some(root) = cache_root {
            let path = root.join(repo.to_hex()).join("index");
            if let Err(e) = std::fs::create_dir_all(&path) {
                tracing::warn!(
                    "cannot create cache {}: {e}; using a temporary index",
                    path.display()
                );
            } else {
                match Self::open_at(&path, repo, false) {
                    Ok(i) => return Ok(i),
                    Err(e) => tracing::warn!("{e}; using a temporary index for this run"),
                }
            }
        }
        let path = std::env::temp_dir().join(format!(
            "gatevault-index-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        Self::open_at(&path, repo, true)
    }

    fn open_at(path: &Path, repo: &RepoId, temporary: bool) -> Result<Self> {
        let opts = db_options();
        let marker = damaged_marker(path);
        if marker.exists() {
            // Found damaged by an earlier run. Destroying takes the database's lock, so one that
            // another process has open is left alone (and this run uses a temporary index).
            DB::destroy(&opts, path).map_err(|e| {
                cache_err(path, format!("damaged, and cannot be rebuilt now ({e})"))
            })?;
            tracing::warn!(
                "local index {} was found damaged by an earlier run; rebuilding it",
                path.display()
            );
            let _ = std::fs::remove_file(&marker);
        }
        let db = match DB::open(&opts, path) {
            Ok(db) => db,
            Err(e) if e.to_string().contains("lock") => {
                return Err(cache_err(
                    path,
                    format!("in use by another gatevault process ({e})"),
                ))
            }
            Err(e) => {
                // A damaged database is only a cache: remove it and start over.
                tracing::warn!(
                    "local index {} cannot be opened ({e}); rebuilding it",
                    path.display()
                );
                let _ = DB::destroy(&opts, path);
                let _ = std::fs::remove_dir_all(path);
                DB::open(&opts, path).map_err(|e| cache_err(path, e))?
            }
        };
        let idx = Self {
            db,
            path: path.to_path_buf(),
            temporary,
        };
        let repo_ok =
            idx.db.get(META_REPO).map_err(|e| idx.db_err(e))?.as_deref() == Some(&repo.0[..]);
        let layout_ok = idx
            .db
            .get(META_LAYOUT)
            .map_err(|e| idx.db_err(e))?
            .as_deref()
            == Some(CACHE_LAYOUT);
        if !repo_ok || !layout_ok {
            idx.clear()?;
            let mut b = WriteBatch::default();
            b.put(META_REPO, repo.0);
            b.put(META_LAYOUT, CACHE_LAYOUT);
            idx.db.write(b).map_err(|e| idx.db_err(e))?;
        }
        Ok(idx)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A database error. A damaged block (a checksum that does not match) marks the database
    /// damaged, so that the next run rebuilds it.
    fn db_err(&self, e: rocksdb::Error) -> Error {
        if e.kind() == rocksdb::ErrorKind::Corruption {
            self.damaged(e)
        } else {
            cache_err(&self.path, e)
        }
    }

    /// Marks the database damaged (see [`damaged_marker`]) and says what happens next.
    fn damaged(&self, why: impl std::fmt::Display) -> Error {
        let next = match std::fs::write(damaged_marker(&self.path), why.to_string()) {
            Ok(()) => "it is rebuilt from the repository's index files at the next run: run the command again",
            Err(_) => "delete the cache directory (or use --no-cache) and run the command again",
        };
        cache_err(&self.path, format!("damaged ({why}); {next}"))
    }

    fn clear(&self) -> Result<()> {
        let mut b = WriteBatch::default();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            b.delete(k);
        }
        self.db.write(b).map_err(|e| self.db_err(e))
    }

    fn ids_with_prefix(&self, prefix: u8) -> Result<Vec<[u8; 32]>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator([prefix]) {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            if k.first() != Some(&prefix) {
                break;
            }
            if let Ok(id) = <[u8; 32]>::try_from(&k[1..]) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Index files the database has absorbed.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database error.
    pub fn absorbed(&self) -> Result<HashSet<IndexId>> {
        Ok(self
            .ids_with_prefix(b'i')?
            .into_iter()
            .map(IndexId)
            .collect())
    }

    /// Index files some absorbed index file supersedes.
    fn superseded(&self) -> Result<HashSet<IndexId>> {
        Ok(self
            .ids_with_prefix(b's')?
            .into_iter()
            .map(IndexId)
            .collect())
    }

    /// Empties the database and marks it as belonging to this repository.
    fn reset(&self, keys: &RepoKeys) -> Result<()> {
        self.clear()?;
        let mut b = WriteBatch::default();
        b.put(META_REPO, keys.repo_id().0);
        b.put(META_LAYOUT, CACHE_LAYOUT);
        self.db.write(b).map_err(|e| self.db_err(e))
    }

    /// Brings the database in line with the repository's index files.
    ///
    /// An index file that another one present supersedes is absorbed without its entries: it only
    /// stays because it could not be deleted yet (an object lock), and the packs it names may be gone.
    ///
    /// # Errors
    /// Backend errors listing `index/`; [`Error::Cache`] on database errors. Unreadable index files are
    /// reported in [`SyncReport::unreadable`], not as errors, so that `check` and `repair` still work.
    pub fn sync(&self, backend: &dyn Backend, keys: &RepoKeys) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let listed: HashSet<IndexId> = backend
            .list_names(FileType::Index)?
            .into_iter()
            .filter_map(|n| IndexId::from_hex(&n).ok())
            .collect();
        let absorbed = self.absorbed()?;
        let mut superseded = self.superseded()?;
        let gone = absorbed.difference(&listed).count();
        let (todo, mut with_entries): (Vec<IndexId>, HashSet<IndexId>) = if gone > 0 {
            report.rebuilt = Some(format!(
                "{gone} index file(s) it had absorbed are gone from the repository"
            ));
            self.reset(keys)?;
            superseded.clear();
            (listed.iter().copied().collect(), HashSet::new())
        } else {
            (
                listed.difference(&absorbed).copied().collect(),
                absorbed.difference(&superseded).copied().collect(),
            )
        };
        with_entries.extend(self.absorb(backend, keys, &todo, &mut superseded, &mut report)?);
        if with_entries.iter().any(|id| superseded.contains(id)) {
            // A file was absorbed with its entries before the file superseding it was seen: start
            // over, now knowing what every file supersedes.
            report.rebuilt = Some("an absorbed index file turned out superseded".into());
            report.added = 0;
            report.unreadable.clear();
            self.reset(keys)?;
            let all: Vec<IndexId> = listed.into_iter().collect();
            self.absorb(backend, keys, &all, &mut superseded, &mut report)?;
        }
        if report.added > 0 || report.rebuilt.is_some() {
            self.settle(!self.temporary && (report.added >= 32 || report.rebuilt.is_some()))?;
        }
        Ok(report)
    }

    /// Writes what a sync added to table files, and after a big one compacts the database: otherwise
    /// every later process replays the write-ahead log of the sync (up to 64 MiB) when it opens the
    /// database and compacts what it replayed, which made each backup into a repository of 10 million
    /// chunks take twice as long as into an empty one (`docs/scale.md`).
    fn settle(&self, compact: bool) -> Result<()> {
        self.db.flush().map_err(|e| self.db_err(e))?;
        if compact {
            self.db.compact_range::<&[u8], &[u8]>(None, None);
        }
        Ok(())
    }

    /// Downloads and absorbs index files `todo` in parallel, in bounded groups, each file's entries as
    /// one batch; files in `superseded` (which grows with what the files read supersede) are recorded
    /// without their entries. Returns the files absorbed with their entries.
    fn absorb(
        &self,
        backend: &dyn Backend,
        keys: &RepoKeys,
        todo: &[IndexId],
        superseded: &mut HashSet<IndexId>,
        report: &mut SyncReport,
    ) -> Result<HashSet<IndexId>> {
        let mut added = HashSet::new();
        for group in todo.chunks(32) {
            let loaded: Vec<(IndexId, Result<IndexFile>)> = group
                .par_iter()
                .map(|id| (*id, load_index_file(backend, keys, id)))
                .collect();
            let mut b = WriteBatch::default();
            for (_, f) in &loaded {
                if let Ok(f) = f {
                    for s in &f.supersedes {
                        superseded.insert(*s);
                        b.put(superseded_key(s), []);
                    }
                }
            }
            self.db.write(b).map_err(|e| self.db_err(e))?;
            for (id, r) in loaded {
                match r {
                    _ if superseded.contains(&id) => {
                        self.db
                            .put(index_key(&id), [])
                            .map_err(|e| self.db_err(e))?;
                    }
                    Ok(f) => {
                        self.add_index_file(&id, &f)?;
                        added.insert(id);
                        report.added += 1;
                    }
                    Err(e) => report.unreadable.push((id, e.to_string())),
                }
            }
        }
        Ok(added)
    }

    /// Records the entries of index file `id` (one that supersedes nothing, as backups write them;
    /// superseding files come in through [`LocalIndex::sync`]).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database error.
    pub fn add_index_file(&self, id: &IndexId, f: &IndexFile) -> Result<()> {
        let mut b = WriteBatch::default();
        for p in &f.packs {
            b.put(pack_key(&p.id), p.size.to_le_bytes());
            for e in &p.blobs {
                b.put(blob_key(e.blob_type, &e.id), encode_location(&p.id, e));
            }
        }
        b.put(index_key(id), []);
        self.db.write(b).map_err(|e| self.db_err(e))
    }

    /// Where blob `id` of type `t` is stored, if anywhere.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database error or a malformed value.
    pub fn lookup(&self, t: BlobType, id: &BlobId) -> Result<Option<BlobLocation>> {
        let Some(v) = self
            .db
            .get_pinned(blob_key(t, id))
            .map_err(|e| self.db_err(e))?
        else {
            return Ok(None);
        };
        if v.len() != 44 && v.len() != 76 {
            return Err(self.damaged(format!("blob {id} has a malformed entry")));
        }
        let u = |o: usize| u32::from_le_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
        let mut pack = [0u8; 32];
        pack.copy_from_slice(&v[..32]);
        Ok(Some(BlobLocation {
            pack: PackId(pack),
            entry: PackEntry {
                blob_type: t,
                id: *id,
                offset: u(32),
                length: u(36),
                raw_length: u(40),
                base: v
                    .get(44..76)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .map(BlobId),
            },
        }))
    }

    /// Whether blob `id` of type `t` is stored.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database error.
    pub fn contains(&self, t: BlobType, id: &BlobId) -> Result<bool> {
        Ok(self
            .db
            .get_pinned(blob_key(t, id))
            .map_err(|e| self.db_err(e))?
            .is_some())
    }

    /// Every indexed pack with its size.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database error.
    pub fn packs(&self) -> Result<HashMap<PackId, u64>> {
        let mut out = HashMap::new();
        for item in self.db.prefix_iterator([b'p']) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if k.first() != Some(&b'p') {
                break;
            }
            if let (Ok(id), Ok(size)) = (<[u8; 32]>::try_from(&k[1..]), <[u8; 8]>::try_from(&v[..]))
            {
                out.insert(PackId(id), u64::from_le_bytes(size));
            }
        }
        Ok(out)
    }
}

/// Reads, decrypts and parses index file `id`.
///
/// # Errors
/// Backend errors; [`Error::IntegrityMismatch`] when it does not decrypt or parse.
pub fn load_index_file(backend: &dyn Backend, keys: &RepoKeys, id: &IndexId) -> Result<IndexFile> {
    let what = format!("index file {id}");
    let env = backend.read(FileType::Index, &id.to_hex())?;
    let plain = keys
        .open_object(Kind::Index, &id.0, &env, &what)
        .map_err(|e| crate::misplaced::explain(backend, keys, Kind::Index, &id.0, &env, &[], e))?;
    IndexFile::decode(&plain).map_err(|e| Error::integrity(what, e.to_string()))
}

/// Encrypts and stores a new index file.
///
/// # Errors
/// Backend errors.
pub fn save_index_file(backend: &dyn Backend, keys: &RepoKeys, f: &IndexFile) -> Result<IndexId> {
    let id = IndexId::random();
    let env = keys.seal_object(Kind::Index, &id.0, &f.encode());
    backend.write(FileType::Index, &id.to_hex(), &env)?;
    Ok(id)
}
