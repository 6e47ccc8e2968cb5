//! The repository: opening and creating it, key slots, snapshots, trees and blobs.
//!
//! Commit order is packs, then the index file naming them, then the snapshot naming the tree; so a
//! snapshot only ever refers to blobs that an index lists, and an interrupted job leaves at most
//! unreferenced packs behind (which `check` reports as harmless and `prune` removes).

pub mod lock;
pub mod rotation;
pub mod saver;
mod snapcache;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::backend::{Backend, FileType};
use crate::crypto::keyslot::{Credential, KdfParams, KeySlot, Role};
use crate::crypto::{Cipher, Kind, MasterKey, RepoKeys};
use crate::error::{Error, Result};
use crate::format::{
    BlobType, ChunkerParams, ConfigHead, RepoConfig, Snapshot, Tree, REPO_VERSION,
};
use crate::id::{BlobId, KeyId, RepoId, SnapshotId};
use crate::index::{LocalIndex, SyncReport};

/// Default target size of a pack.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

/// The secrets a user offers to open a repository.
#[derive(Default)]
pub struct Credentials {
    /// A password for password slots.
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// The 32 bytes of a key file for key-file slots.
    pub key_file: Option<Zeroizing<[u8; 32]>>,
}

/// Options of `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Cipher of new objects.
    pub cipher: Cipher,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level, 0 = off.
    pub compression: i32,
    /// Argon2id parameters for the password slot (`None`: the defaults).
    pub kdf: Option<KdfParams>,
    /// Target pack size.
    pub pack_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            cipher: Cipher::XChaCha20Poly1305,
            chunker: ChunkerParams::config(),
            compression: 3,
            kdf: None,
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    keys: Arc<RepoKeys>,
    key_id: KeyId,
    role: Role,
    cache_dir: Option<PathBuf>,
    index: OnceLock<(LocalIndex, SyncReport)>,
    /// Serializes the first sync: RocksDB allows one open handle per process.
    index_init: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.backend.location())
            .field("id", &self.config.id)
            .finish()
    }
}

fn read_config(backend: &dyn Backend) -> Result<RepoConfig> {
    let location = backend.location();
    let bytes = match backend.read(FileType::Config, "") {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => {
            let reason = match std::fs::metadata(&location) {
                Err(_) if location != "memory" && !location.contains(':') => {
                    "the path does not exist".to_string()
                }
                _ => "it has no config object, so it is not a gatevault repository".to_string(),
            };
            return Err(Error::NoRepository { location, reason });
        }
        Err(e) => return Err(e),
    };
    let head: ConfigHead = serde_json::from_slice(&bytes).map_err(|e| Error::NoRepository {
        location: location.clone(),
        reason: format!("its config is not a gatevault config ({e})"),
    })?;
    if head.version > REPO_VERSION {
        return Err(Error::NewerFormat {
            location,
            found: head.version,
            supported: REPO_VERSION,
        });
    }
    let config: RepoConfig =
        serde_json::from_slice(&bytes).map_err(|e| Error::format("config", e))?;
    config.chunker.validate()?;
    Ok(config)
}

/// Sorts snapshots by time, oldest first (ids break ties, so the order is stable across runs).
pub fn sort_oldest_first(snapshots: &mut [(SnapshotId, Snapshot)]) {
    // Each time parsed once, not once per comparison (10,000 snapshots: 30 ms less).
    snapshots.sort_by_cached_key(|(id, s)| (s.timestamp().ok(), *id));
}

impl Repository {
    /// Creates a repository and one key slot for each credential given.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when a repository is there; [`Error::NoCredentials`] when neither a
    /// password nor a key file is given; backend errors.
    pub fn init(
        backend: Arc<dyn Backend>,
        opts: &InitOptions,
        creds: &Credentials,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        if creds.password.is_none() && creds.key_file.is_none() {
            return Err(Error::NoCredentials(
                "init needs a password or a key file".into(),
            ));
        }
        opts.chunker.validate()?;
        backend.create()?;
        let master = MasterKey::generate();
        let repo_id = RepoId::random();
        let keys = Arc::new(RepoKeys::new(master, repo_id, opts.cipher));
        let mut key_id = None;
        if let Some(k) = &creds.key_file {
            key_id = Some(write_slot(
                backend.as_ref(),
                &keys,
                Credential::KeyFile(k),
                Role::Admin,
                None,
            )?);
        }
        if let Some(p) = &creds.password {
            let id = write_slot(
                backend.as_ref(),
                &keys,
                Credential::Password(p),
                Role::Admin,
                opts.kdf.clone(),
            )?;
            key_id.get_or_insert(id);
        }
        let mut config = RepoConfig {
            version: REPO_VERSION,
            id: repo_id,
            chunker: opts.chunker.clone(),
            cipher: opts.cipher,
            compression: opts.compression,
            pack_size: opts.pack_size,
            created: chrono::Utc::now().to_rfc3339(),
            mac: String::new(),
        };
        config.mac = hex::encode(keys.config_mac(&config.mac_input()));
        // The config is written last: until it exists, the folder is not a repository.
        let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::format("config", e))?;
        backend.write(FileType::Config, "", &json)?;
        Ok(Self {
            backend,
            config,
            keys,
            key_id: key_id.expect("one slot was written"),
            role: Role::Admin,
            cache_dir,
            index: OnceLock::new(),
            index_init: Default::default(),
        })
    }

    /// Opens a repository with the first key slot the credentials fit (key-file slots first: they are
    /// cheap to try).
    ///
    /// # Errors
    /// [`Error::NoRepository`], [`Error::NewerFormat`], [`Error::WrongPassword`], [`Error::NoCredentials`],
    /// [`Error::IntegrityMismatch`] when the config's MAC does not verify; backend errors.
    pub fn open(
        backend: Arc<dyn Backend>,
        creds: &Credentials,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let config = read_config(backend.as_ref())?;
        if creds.password.is_none() && creds.key_file.is_none() {
            return Err(Error::NoCredentials("no password or key file given".into()));
        }
        let (slots, unreadable) = read_slots(backend.as_ref())?;
        let mut attempts: Vec<(KeyId, KeySlot, Credential<'_>)> = Vec::new();
        if let Some(k) = &creds.key_file {
            attempts.extend(
                slots
                    .iter()
                    .map(|(i, s)| (*i, s.clone(), Credential::KeyFile(k))),
            );
        }
        if let Some(p) = &creds.password {
            attempts.extend(
                slots
                    .iter()
                    .map(|(i, s)| (*i, s.clone(), Credential::Password(p))),
            );
        }
        // A malformed slot must not keep the others from opening (it may be another user's).
        let mut damaged: Vec<String> = unreadable;
        for (id, slot, cred) in attempts {
            let master = match slot.unwrap_key(&config.id, &id, &cred) {
                Ok(m) => m,
                Err(e @ Error::Format { .. }) => {
                    damaged.push(format!("{} ({e})", id.to_hex()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(master) = master {
                let keys = Arc::new(RepoKeys::new(master, config.id, config.cipher));
                let mac = hex::encode(keys.config_mac(&config.mac_input()));
                if mac != config.mac {
                    return Err(Error::integrity(
                        "config",
                        "its MAC does not verify: the config was altered",
                    ));
                }
                return Ok(Self {
                    backend,
                    config,
                    keys,
                    key_id: id,
                    role: slot.role,
                    cache_dir,
                    index: OnceLock::new(),
                    index_init: Default::default(),
                });
            }
        }
        if damaged.is_empty() {
            Err(Error::WrongPassword)
        } else {
            Err(Error::KeySlotDamaged {
                slots: damaged.join("; "),
            })
        }
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The backend, shared (for locks, which outlive a borrow).
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// The config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The working keys.
    pub fn keys(&self) -> &Arc<RepoKeys> {
        &self.keys
    }

    /// The local cache folder (`None` with `--no-cache`): the index cache and the audit head this
    /// machine remembers live in `<cache dir>/<repo id>/`.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache_dir.as_deref()
    }

    /// The key slot this session opened.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The role of that key slot.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Refuses a key whose role is not admin for `action` (said as "may not {action}"). Roles are
    /// enforced by the client, not by cryptography (see the threat model in `docs/design.md`).
    ///
    /// # Errors
    /// [`Error::NotAllowed`] for a backup or restore key.
    pub fn require_admin(&self, action: &str) -> Result<()> {
        match self.role {
            Role::Admin => Ok(()),
            role => Err(Error::NotAllowed {
                role: format!("{role:?}").to_lowercase(),
                action: action.into(),
            }),
        }
    }

    /// Refuses a `restore` (read-only) key for `action`, which writes to the repository.
    ///
    /// # Errors
    /// [`Error::NotAllowed`] for a restore key.
    pub fn require_write(&self, action: &str) -> Result<()> {
        match self.role {
            Role::Restore => Err(Error::NotAllowed {
                role: "restore".into(),
                action: format!("{action} (a backup or admin key may)"),
            }),
            _ => Ok(()),
        }
    }

    /// The local index, synced with the repository on first use.
    ///
    /// # Errors
    /// [`Error::Cache`] or backend errors.
    pub fn index(&self) -> Result<&LocalIndex> {
        Ok(&self.index_with_report()?.0)
    }

    /// Runs `f` (finding a snapshot, say) while another thread brings the local index up to date,
    /// for commands that then read the snapshot's blobs: at 10,000 snapshots and index files the
    /// two take about as long as each other. An error of that sync is not lost: the index is synced
    /// again on its first use, which then returns the error.
    pub fn warming_index<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        rayon::join(f, || {
            let _ = self.index();
        })
        .0
    }

    /// The local index and what its first sync did.
    ///
    /// # Errors
    /// As [`Repository::index`].
    pub fn index_with_report(&self) -> Result<&(LocalIndex, SyncReport)> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let _init = self.index_init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let idx = LocalIndex::open(self.cache_dir.as_deref(), &self.config.id)?;
        let report = idx.sync(self.backend.as_ref(), &self.keys)?;
        if let Some(why) = &report.rebuilt {
            tracing::info!("local index rebuilt: {why}");
        }
        for (id, e) in &report.unreadable {
            tracing::warn!("index file {id} is unreadable ({e}); run `gatevault check`, then `gatevault repair index`");
        }
        let _ = self.index.set((idx, report));
        Ok(self.index.get().expect("just set"))
    }

    // ---------------------------------------------------------------------------------- blobs

    /// Loads, decrypts and verifies a blob.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no index lists it; [`Error::IntegrityMismatch`] naming pack and blob when
    /// its bytes are damaged; backend errors.
    pub fn load_blob(&self, t: BlobType, id: &BlobId) -> Result<Vec<u8>> {
        self.load_blob_inner(t, id, crate::pack::MAX_DELTA_DEPTH)
    }

    /// Loads the base of a delta blob of type `t` (one level less of chain is allowed below it).
    ///
    /// # Errors
    /// As [`Repository::load_blob`].
    pub fn load_base(&self, t: BlobType, id: &BlobId) -> Result<Vec<u8>> {
        self.load_blob_inner(t, id, crate::pack::MAX_DELTA_DEPTH - 1)
    }

    /// Loads a blob whose delta chain may be at most `depth` deltas deep.
    fn load_blob_inner(&self, t: BlobType, id: &BlobId, depth: usize) -> Result<Vec<u8>> {
        let loc = self.locate(t, id)?;
        let env = self.backend.read_range(
            FileType::Pack,
            &loc.pack.to_hex(),
            loc.entry.offset as u64,
            loc.entry.length as u64,
        )?;
        crate::pack::open_blob_with(&self.keys, &loc.pack, &loc.entry, &env, &|b| match depth {
            0 => Err(Error::integrity(
                format!("blob {id}"),
                "its delta chain is longer than allowed",
            )),
            _ => self.load_blob_inner(t, b, depth - 1),
        })
    }

    /// How many deltas deep the chain of blob `id` is (0 for a self-contained blob), counting at most
    /// one past [`crate::pack::MAX_DELTA_DEPTH`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when a blob of the chain is in no index; cache errors.
    pub fn delta_depth(&self, t: BlobType, id: &BlobId) -> Result<usize> {
        let mut depth = 0;
        let mut cur = *id;
        while let Some(base) = self.locate(t, &cur)?.entry.base {
            depth += 1;
            if depth > crate::pack::MAX_DELTA_DEPTH {
                break;
            }
            cur = base;
        }
        Ok(depth)
    }

    /// Where a blob is stored, from the local index.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no index lists it; cache errors.
    pub fn locate(&self, t: BlobType, id: &BlobId) -> Result<crate::index::BlobLocation> {
        self.index()?.lookup(t, id)?.ok_or_else(|| Error::NotFound {
            kind: format!("{t:?} blob").to_lowercase(),
            id: id.to_hex(),
        })
    }

    /// Loads and parses a tree blob.
    ///
    /// # Errors
    /// As [`Repository::load_blob`], and [`Error::IntegrityMismatch`] when the tree does not parse.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let b = self.load_blob(BlobType::Tree, id)?;
        Tree::decode(&b).map_err(|e| Error::integrity(format!("tree {id}"), e.to_string()))
    }

    // ---------------------------------------------------------------------------------- snapshots

    /// Ids of all snapshots (from the listing; nothing is decrypted).
    ///
    /// # Errors
    /// Backend errors.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list_names(FileType::Snapshot)?
            .into_iter()
            .filter_map(|n| SnapshotId::from_hex(&n).ok())
            .collect())
    }

    /// Loads one snapshot.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::IntegrityMismatch`], backend errors.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let what = format!("snapshot {id}");
        let env = self.backend.read(FileType::Snapshot, &id.to_hex())?;
        let plain = self
            .keys
            .open_object(Kind::Snapshot, &id.0, &env, &what)
            .map_err(|e| self.explain(Kind::Snapshot, &id.0, &env, e))?;
        Snapshot::decode(&plain).map_err(|e| Error::integrity(what, e.to_string()))
    }

    /// Loads every snapshot in parallel, oldest first; unreadable ones come back as errors.
    ///
    /// # Errors
    /// Backend errors listing the snapshots.
    pub fn load_all_snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let ids = self.snapshot_ids()?;
        let mut all: Vec<(SnapshotId, Result<Snapshot>)> = ids
            .par_iter()
            .map(|id| (*id, self.load_snapshot(id)))
            .collect();
        all.sort_by(|a, b| match (&a.1, &b.1) {
            (Ok(x), Ok(y)) => x.time.cmp(&y.time).then(a.0.cmp(&b.0)),
            _ => a.0.cmp(&b.0),
        });
        Ok(all)
    }

    /// Every readable snapshot, oldest first; unreadable ones are logged as warnings.
    ///
    /// # Errors
    /// Backend errors listing the snapshots.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let loaded = match &self.cache_dir {
            Some(root) => self.load_snapshots_cached(root)?,
            None => self.load_all_snapshots()?,
        };
        let mut out = Vec::with_capacity(loaded.len());
        for (id, r) in loaded {
            match r {
                Ok(s) => out.push((id, s)),
                Err(e) => tracing::warn!("skipping snapshot {}: {e}", id.short()),
            }
        }
        sort_oldest_first(&mut out);
        Ok(out)
    }

    /// [`Repository::load_all_snapshots`] through the local snapshot cache (`snapcache`): snapshots
    /// listed now come from it when it has them, the others from the repository (and are added to
    /// it). Not sorted.
    fn load_snapshots_cached(
        &self,
        root: &std::path::Path,
    ) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        let listed = self.snapshot_ids()?;
        let path = snapcache::path(root, &self.keys);
        let cache = snapcache::load(&path, &self.keys);
        // A snapshot read from the repository comes with its encoding, to be added to the cache.
        let fetch = |id: &SnapshotId| -> (Result<Snapshot>, Option<Vec<u8>>) {
            let what = format!("snapshot {id}");
            let plain = self
                .backend
                .read(FileType::Snapshot, &id.to_hex())
                .and_then(|env| self.keys.open_object(Kind::Snapshot, &id.0, &env, &what));
            match plain {
                Ok(plain) => match Snapshot::decode(&plain) {
                    Ok(s) => {
                        let c = snapcache::encode_snapshot(&s);
                        (Ok(s), Some(c))
                    }
                    Err(e) => (Err(Error::integrity(what, e.to_string())), None),
                },
                Err(e) => (Err(e), None),
            }
        };
        let loaded: Vec<(SnapshotId, Result<Snapshot>, Option<Vec<u8>>)> = listed
            .par_iter()
            .map(|id| {
                let (r, c) = match cache.snapshot(id) {
                    Some(s) => (Ok(s), None),
                    None => fetch(id),
                };
                (*id, r, c)
            })
            .collect();
        let hits = loaded
            .iter()
            .filter(|(_, r, c)| r.is_ok() && c.is_none())
            .count();
        if hits != cache.len() || loaded.iter().any(|(_, _, c)| c.is_some()) {
            let entries: Vec<(SnapshotId, &[u8])> = loaded
                .iter()
                .filter_map(|(id, r, c)| match (r, c) {
                    (Ok(_), Some(c)) => Some((*id, c.as_slice())),
                    (Ok(_), None) => cache.get(id).map(|c| (*id, c)),
                    _ => None,
                })
                .collect();
            snapcache::store(&path, &self.keys, &entries);
        }
        Ok(loaded.into_iter().map(|(id, r, _)| (id, r)).collect())
    }

    /// Resolves a unique id prefix to a snapshot id.
    ///
    /// # Errors
    /// [`Error::NotFound`] or [`Error::InvalidInput`] when the prefix is ambiguous.
    pub fn resolve_snapshot_prefix(&self, prefix: &str) -> Result<SnapshotId> {
        let p = prefix.to_ascii_lowercase();
        if let Ok(id) = SnapshotId::from_hex(&p) {
            // A whole id names itself; loading it tells whether it exists.
            return Ok(id);
        }
        let matches: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&p))
            .collect();
        match matches.len() {
            0 => Err(Error::NotFound {
                kind: "snapshot".into(),
                id: prefix.into(),
            }),
            1 => Ok(matches[0]),
            n => Err(Error::InvalidInput(format!(
                "snapshot prefix {prefix:?} matches {n} snapshots; give more digits"
            ))),
        }
    }

    /// Encrypts and stores a snapshot, and remembers it among the snapshots this machine has seen
    /// (so that its later disappearance without a recorded removal is reported, see [`crate::history`]).
    ///
    /// # Errors
    /// Backend errors.
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<SnapshotId> {
        let id = SnapshotId::random();
        let env = self.keys.seal_object(Kind::Snapshot, &id.0, &s.encode());
        self.backend.write(FileType::Snapshot, &id.to_hex(), &env)?;
        if let Some(d) = self.cache_dir() {
            if let Err(e) = crate::history::SeenSnapshots::in_cache(d, &self.config().id).add(&id) {
                tracing::warn!("could not remember snapshot {} as seen: {e}", id.short());
            }
        }
        Ok(id)
    }

    /// Removes a snapshot object (one already gone is fine), first dropping it from the snapshots
    /// this machine has seen, so that a removal cut short is never mistaken for a rollback here.
    ///
    /// # Errors
    /// Backend errors (a retention lock among them).
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        if let Some(d) = self.cache_dir() {
            if let Err(e) = crate::history::SeenSnapshots::in_cache(d, &self.config().id).forget(id)
            {
                tracing::warn!(
                    "could not drop snapshot {} from those seen: {e}",
                    id.short()
                );
            }
        }
        crate::prune::remove(self.backend.as_ref(), FileType::Snapshot, &id.to_hex())
    }

    /// A better error for a single-item object that did not authenticate (see [`crate::misplaced`]):
    /// the blobs the index knows under the same id are candidates too.
    fn explain(&self, kind: Kind, id: &[u8; 32], env: &[u8], err: Error) -> Error {
        let mut blobs = Vec::new();
        if let Ok(idx) = self.index() {
            let bid = BlobId(*id);
            for (t, k) in [
                (BlobType::Data, Kind::DataBlob),
                (BlobType::Tree, Kind::TreeBlob),
            ] {
                if let Ok(Some(loc)) = idx.lookup(t, &bid) {
                    let item = crate::crypto::blob_item_id(&bid, loc.entry.base.as_ref());
                    blobs.push((k, loc.pack, item));
                }
            }
        }
        crate::misplaced::explain(
            self.backend.as_ref(),
            &self.keys,
            kind,
            id,
            env,
            &blobs,
            err,
        )
    }

    // ---------------------------------------------------------------------------------- records

    /// Encrypts and stores a record (JSON with a `type` field, see `docs/design.md`).
    ///
    /// # Errors
    /// Backend errors.
    pub fn save_record(&self, record: &serde_json::Value) -> Result<String> {
        let id = SnapshotId::random();
        let body = serde_json::to_vec(record).expect("a JSON value serializes");
        let env = self.keys.seal_object(Kind::Record, &id.0, &body);
        self.backend.write(FileType::Record, &id.to_hex(), &env)?;
        Ok(id.to_hex())
    }

    /// Every record of `kind` (the `type` field; every record for `None`), unordered; unreadable ones
    /// come back as errors naming the record.
    ///
    /// # Errors
    /// Backend errors listing the records.
    pub fn records(&self, kind: Option<&str>) -> Result<Vec<Result<serde_json::Value>>> {
        Ok(self
            .records_named(kind)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// [`Repository::records`] with the name of each record.
    ///
    /// # Errors
    /// Backend errors listing the records.
    pub fn records_named(
        &self,
        kind: Option<&str>,
    ) -> Result<Vec<(String, Result<serde_json::Value>)>> {
        let names = self.backend.list(FileType::Record)?;
        Ok(names
            .par_iter()
            .filter_map(|(name, _)| {
                let load = || -> Result<serde_json::Value> {
                    let what = format!("record {name}");
                    let id = SnapshotId::from_hex(name)
                        .map_err(|e| Error::integrity(&what, e.to_string()))?;
                    let env = self.backend.read(FileType::Record, name)?;
                    let plain = self.keys.open_object(Kind::Record, &id.0, &env, &what)?;
                    serde_json::from_slice(&plain)
                        .map_err(|e| Error::integrity(what, e.to_string()))
                };
                match load() {
                    Ok(v) if kind.is_some() && v.get("type").and_then(|t| t.as_str()) != kind => {
                        None
                    }
                    r => Some((name.clone(), r)),
                }
            })
            .collect())
    }

    // ---------------------------------------------------------------------------------- keys

    /// Every key slot with its id (unparsable slots are skipped with a warning).
    ///
    /// # Errors
    /// Backend errors.
    pub fn key_slots(&self) -> Result<Vec<(KeyId, KeySlot)>> {
        Ok(read_slots(self.backend.as_ref())?.0)
    }

    /// Adds a key slot for `cred` with `role`.
    ///
    /// # Errors
    /// Backend errors; [`Error::Format`] for bad KDF parameters.
    pub fn add_key(
        &self,
        cred: Credential<'_>,
        role: Role,
        kdf: Option<KdfParams>,
    ) -> Result<KeyId> {
        write_slot(self.backend.as_ref(), &self.keys, cred, role, kdf)
    }

    /// Removes key slot `id`; refuses the slot in use and the last slot.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for the slot in use or the last one; backend errors.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::InvalidInput(format!(
                "key {} is the one in use; open the repository with another key to remove it",
                id.short()
            )));
        }
        let slots = self.key_slots()?;
        if !slots.iter().any(|(k, _)| k == id) {
            return Err(Error::NotFound {
                kind: "key".into(),
                id: id.to_hex(),
            });
        }
        if slots.len() <= 1 {
            return Err(Error::InvalidInput(
                "refusing to remove the last key slot".into(),
            ));
        }
        self.backend.remove(FileType::Key, &id.to_hex())
    }
}

/// Every parsable key slot, oldest first (others are skipped with a warning).
/// Key slots that parse, oldest first.
type Slots = Vec<(KeyId, KeySlot)>;

/// The key slots that parse, oldest first, and the names (with the reason) of those that do not.
fn read_slots(backend: &dyn Backend) -> Result<(Slots, Vec<String>)> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for (name, _) in backend.list(FileType::Key)? {
        let Ok(id) = KeyId::from_hex(&name) else {
            continue;
        };
        match backend
            .read(FileType::Key, &name)
            .and_then(|b| KeySlot::parse(&b, &format!("key slot {}", id.short())))
        {
            Ok(s) => out.push((id, s)),
            Err(e @ (Error::Format { .. } | Error::IntegrityMismatch { .. })) => {
                tracing::warn!("skipping key slot {name}: {e}");
                unreadable.push(format!("{name} ({e})"));
            }
            Err(e) => tracing::warn!("skipping key slot {name}: {e}"),
        }
    }
    out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
    Ok((out, unreadable))
}

fn write_slot(
    backend: &dyn Backend,
    keys: &RepoKeys,
    cred: Credential<'_>,
    role: Role,
    kdf: Option<KdfParams>,
) -> Result<KeyId> {
    let id = KeyId::random();
    let slot = KeySlot::wrap(keys.master(), &keys.repo_id(), &id, cred, role, kdf)?;
    let json = serde_json::to_vec_pretty(&slot).map_err(|e| Error::format("key slot", e))?;
    backend.write(FileType::Key, &id.to_hex(), &json)?;
    Ok(id)
}
