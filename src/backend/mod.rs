//! Storage backends: opaque bytes by (file type, name).
//!
//! A backend knows nothing of encryption, packs or snapshots: the repository layer wraps it from outside.
//! Objects are write-once: [`Backend::write`] fails with [`Error::AlreadyExists`] instead of replacing an
//! object, so that a crashed or concurrent writer can never damage what is stored. Every backend runs
//! the same [`conformance`] suite.

mod awsprofile;
pub mod cache;
pub mod conformance;
pub mod local;
pub mod memory;
pub mod object;
#[doc(hidden)]
pub mod powercut;
pub mod recording;
pub mod s3lock;

use std::fmt;

use crate::error::{Error, Result};

/// The kinds of object a repository stores, each in its own folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FileType {
    /// The single `config` object.
    Config,
    /// Key slots under `keys/`.
    Key,
    /// Packs under `data/<2 hex>/`.
    Pack,
    /// Index files under `index/`.
    Index,
    /// Snapshots under `snapshots/`.
    Snapshot,
    /// Locks under `locks/`.
    Lock,
    /// Records of jobs run against the repository (restore drills) under `records/`.
    Record,
    /// Entries of the hash-chained audit log under `audit/`.
    Audit,
}

impl FileType {
    /// Every file type, in the order `init` creates their folders.
    pub const ALL: [FileType; 8] = [
        FileType::Config,
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Lock,
        FileType::Record,
        FileType::Audit,
    ];

    /// The folder (or, for the config, the file name) of this type.
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Key => "keys",
            FileType::Pack => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Lock => "locks",
            FileType::Record => "records",
            FileType::Audit => "audit",
        }
    }

    /// The path of object `name` inside the repository, with `/` separators.
    pub fn path_of(self, name: &str) -> String {
        match self {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("00")),
            _ => format!("{}/{name}", self.dir()),
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileType::Config => "config",
            FileType::Key => "key",
            FileType::Pack => "pack",
            FileType::Index => "index",
            FileType::Snapshot => "snapshot",
            FileType::Lock => "lock",
            FileType::Record => "record",
            FileType::Audit => "audit entry",
        })
    }
}

/// A testing aid for crash tests: when the variable `GATEVAULT_CRASH_AT` holds N, the process aborts
/// (like `kill -9`: no destructors, no cleanup) right after its N-th durable write or removal of a
/// repository object other than a lock. Crash tests run a command with N = 1, 2, 3, ... to stop it at
/// every durable step it takes.
pub fn crash_point(t: FileType) {
    if t != FileType::Lock {
        durable_step();
    }
}

/// Counts one durable step that is not a backend write (an entity applied to a live gateway by a
/// restore) towards `GATEVAULT_CRASH_AT`, aborting when it is the one named: see [`crash_point`].
/// Steps of both kinds share one count, so that a crash test enumerates them all. Without the variable
/// this costs one atomic load.
pub fn durable_step() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static DONE: AtomicU64 = AtomicU64::new(0);
    let Some(at) = *AT.get_or_init(|| {
        std::env::var("GATEVAULT_CRASH_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    }) else {
        return;
    };
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == at {
        eprintln!("GATEVAULT_CRASH_AT={at}: aborting after durable step {at}");
        std::process::abort();
    }
}

/// What a backend can promise.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// A write is durable (fsynced) when it returns.
    pub durable_writes: bool,
    /// Create-only writes are atomic against a concurrent writer of the same name.
    pub atomic_create: bool,
    /// How many writes (and reads) pay to have in flight at once: 1 for a local disk, several for an
    /// object store where each request waits on a round trip.
    pub concurrency: usize,
    /// Objects may be under a retention lock (S3 Object Lock) that forbids removing them before a
    /// date: callers that remove ask [`Backend::locked_until`] first.
    pub object_lock: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            durable_writes: false,
            atomic_create: false,
            concurrency: 1,
            object_lock: false,
        }
    }
}

/// Options of a backend given as `-o KEY=VALUE` (restic's convention: `s3.region=eu-west-1`,
/// `azure.account-name=...`) or by a profile; a backend reads the keys with its own prefix and
/// refuses unknown ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// Key to value.
    pub values: std::collections::BTreeMap<String, String>,
}

impl BackendOptions {
    /// Parses `KEY=VALUE` strings.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a string without `=`.
    pub fn parse(items: &[String]) -> Result<Self> {
        let mut values = std::collections::BTreeMap::new();
        for it in items {
            let (k, v) = it.split_once('=').ok_or_else(|| {
                Error::InvalidInput(format!(
                    "backend option {it:?} is not KEY=VALUE (for example -o s3.region=eu-west-1)"
                ))
            })?;
            values.insert(k.trim().to_string(), v.to_string());
        }
        Ok(Self { values })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Opens the backend of a repository location: a folder (optionally `local:PATH`), an S3 bucket
/// (`s3:https://host/bucket/prefix`, `s3:bucket/prefix`) or an Azure Blob container
/// (`azure:container/prefix`); see `docs/backends.md`.
///
/// # Errors
/// [`Error::InvalidInput`] for a location or option this build cannot serve.
pub fn open(location: &str, opts: &BackendOptions) -> Result<std::sync::Arc<dyn Backend>> {
    if let Some((scheme, _)) = location.split_once(':') {
        if matches!(scheme, "s3" | "azure") {
            return Ok(std::sync::Arc::new(object::ObjectBackend::open(
                location, opts,
            )?));
        }
        if matches!(scheme, "gs" | "sftp" | "rest" | "b2" | "swift") {
            return Err(Error::InvalidInput(format!(
                "repository location {location:?}: backend {scheme:?} is not supported by this build"
            )));
        }
    }
    if let Some(k) = opts.values.keys().next() {
        return Err(Error::InvalidInput(format!(
            "backend option {k:?} does not apply to a local repository"
        )));
    }
    let path = location.strip_prefix("local:").unwrap_or(location);
    Ok(std::sync::Arc::new(local::LocalBackend::new(path)))
}

/// Whether a location names a remote store (whose metadata is worth caching locally).
pub fn is_remote(location: &str) -> bool {
    location.starts_with("s3:") || location.starts_with("azure:")
}

/// [`open`], with the metadata of a remote repository cached under `cache_dir` (see [`cache`]);
/// `None` (as with `--no-cache`) or a local location opens it bare.
///
/// # Errors
/// As [`open`].
pub fn open_cached(
    location: &str,
    opts: &BackendOptions,
    cache_dir: Option<&std::path::Path>,
) -> Result<std::sync::Arc<dyn Backend>> {
    let b = open(location, opts)?;
    Ok(match cache_dir {
        Some(dir) if is_remote(location) => std::sync::Arc::new(cache::CachedBackend::new(b, dir)),
        _ => b,
    })
}

/// An object store holding opaque bytes by file type and name.
///
/// Names are what the repository layer chose (64 hex digits, or empty for the config); a backend
/// must not interpret them beyond laying them out.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the repository lives, for messages.
    fn location(&self) -> String;

    /// Creates the folders of an empty repository.
    ///
    /// # Errors
    /// I/O errors, and [`Error::AlreadyExists`] when a config object is already there.
    fn create(&self) -> Result<()>;

    /// Lists the objects of type `t` with their sizes, in no particular order.
    ///
    /// # Errors
    /// I/O errors of the store.
    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>>;

    /// The names of the objects of type `t`, in no particular order: [`Backend::list`] without the
    /// sizes, which a backend may answer more cheaply (a local folder without a `stat` per file).
    ///
    /// # Errors
    /// I/O errors of the store.
    fn list_names(&self, t: FileType) -> Result<Vec<String>> {
        Ok(self.list(t)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it does not exist; I/O errors.
    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>>;

    /// Reads `len` bytes at `offset`; fewer bytes than asked is an error.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::IntegrityMismatch`] when the object is shorter than the range.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// [`Backend::read_range`] into `buf` (cleared first), so that a caller reading many ranges can
    /// reuse one buffer instead of faulting in fresh memory for each.
    ///
    /// # Errors
    /// As [`Backend::read_range`].
    fn read_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        *buf = self.read_range(t, name, offset, len)?;
        Ok(())
    }

    /// Reads several `(offset, len)` ranges of one object, in the order given. The default reads them
    /// one by one; a backend for which each read costs an open or a round trip may do better.
    ///
    /// # Errors
    /// As [`Backend::read_range`], for the first range that fails.
    fn read_ranges(&self, t: FileType, name: &str, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|&(offset, len)| self.read_range(t, name, offset, len))
            .collect()
    }

    /// Stores a new object; never replaces an existing one.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the name is taken; I/O errors (a full disk among them).
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()>;

    /// [`Backend::write`] taking the bytes by value, so that a backend which hands them to another
    /// task (an object store upload) need not copy them: with several packs in flight a copy each
    /// would double the memory they hold. A backend that did not keep the bytes (a local disk)
    /// gives them back, so that the caller can reuse the buffer for the next pack. Wrappers forward
    /// it.
    ///
    /// # Errors
    /// As [`Backend::write`].
    fn write_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<Option<Vec<u8>>> {
        self.write(t, name, &data)?;
        Ok(Some(data))
    }

    /// Removes an object.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it does not exist; I/O errors.
    fn remove(&self, t: FileType, name: &str) -> Result<()>;

    /// The size of an object.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it does not exist; I/O errors.
    fn stat(&self, t: FileType, name: &str) -> Result<u64>;

    /// Whether an object exists.
    ///
    /// # Errors
    /// I/O errors other than absence.
    fn exists(&self, t: FileType, name: &str) -> Result<bool> {
        match self.stat(t, name) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What this backend promises.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The region the data lives in, where the store tells (or the options declare) one: a region
    /// policy compares it before any data is written.
    ///
    /// # Errors
    /// Errors of the store while finding out.
    fn region(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// The end of the retention lock on an object, when one forbids removing it now (S3 Object
    /// Lock); `None` when it may be removed. Only backends whose [`Capabilities::object_lock`] is set
    /// ever answer `Some`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; errors of the store.
    fn locked_until(
        &self,
        _t: FileType,
        _name: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(None)
    }
}

pub(crate) fn not_found(t: FileType, name: &str) -> Error {
    Error::NotFound {
        kind: t.to_string(),
        id: if name.is_empty() {
            t.dir().to_string()
        } else {
            name.to_string()
        },
    }
}
