//! Typed errors of the library.
//!
//! Every variant is something a caller can act on; the binary maps them to documented exit codes
//! (see `docs/cli.md`). Messages name the object that failed and, where there is one, the next step.

use crate::backend::FileType;

/// The result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository location holds no repository.
    #[error("no repository at {location}: {reason} (create one with `gatevault init`)")]
    NoRepository { location: String, reason: String },

    /// The repository was written by a newer gatevault.
    #[error("repository at {location} has format version {found}; this gatevault reads up to version {supported}: upgrade gatevault")]
    NewerFormat {
        location: String,
        found: u32,
        supported: u32,
    },

    /// No key slot opened with the given password or key file.
    #[error("wrong password or key file: no key slot in the repository opens with it (if the password or key file is right, the key slot or the repository id in `config` is damaged: compare `config` and `keys/` with a copy of the repository)")]
    WrongPassword,

    /// No key slot opened with the given password or key file, and some slots are malformed: if the
    /// credential is right, its slot is among them.
    #[error("no key slot opens with the given password or key file, and these key slots are damaged: {slots}; if the password or key file is right, its slot is one of them: open the repository with another key and add a new one (`gatevault key add`), or put back a copy of the slot")]
    KeySlotDamaged { slots: String },

    /// No password or key file was given and none could be asked for.
    #[error("{0}")]
    NoCredentials(String),

    /// An object is absent from the repository.
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },

    /// A write-once object already exists.
    #[error("{file_type} {name} already exists")]
    AlreadyExists { file_type: FileType, name: String },

    /// Stored bytes do not match what the repository says they must be.
    #[error("integrity error in {object}: {reason}")]
    IntegrityMismatch { object: String, reason: String },

    /// A sealed object is stored under a name it was not sealed for: it authenticates as another object
    /// of the repository (`actual`), so it was copied or moved there.
    #[error("{object} is stored under the wrong name: it is {actual}, copied or moved there by someone with write access to the storage; remove {object} (the object it copies is unaffected)")]
    WrongName { object: String, actual: String },

    /// An object authenticates as another type of object than the one read (type confusion).
    #[error("{object} is not a {expected}: it authenticates as {actual}, placed there by someone with write access to the storage; remove {object}")]
    WrongType {
        object: String,
        expected: String,
        actual: String,
    },

    /// Snapshots this machine saw are gone and no audit log entry records their removal: someone with
    /// write access to the storage deleted them or put back an older state.
    #[error("rollback detected: {count} snapshot(s) this machine saw before are gone and no audit log entry records their removal (forget, prune, erase or repair would): {ids}; restore them from a copy of the repository, or, if their removal was intended, delete that file")]
    Rollback { count: usize, ids: String },

    /// A lock held by another process prevents the operation.
    #[error("repository is locked {detail}; if that process is gone, run `gatevault unlock` (locks go stale after 30 minutes without refresh)")]
    Locked { detail: String },

    /// Our own lock could not be refreshed, so the job must not go on.
    #[error("lost the repository lock: {0}; the job was aborted before committing anything")]
    LockLost(String),

    /// A parse error of an on-disk structure that authenticated correctly (a bug or a future format).
    #[error("cannot parse {object}: {reason}")]
    Format { object: String, reason: String },

    /// Bad input from the user.
    #[error("{0}")]
    InvalidInput(String),

    /// An operation on the local index cache failed.
    #[error("local index cache {path}: {reason}")]
    Cache { path: String, reason: String },

    /// An I/O error, with the path or object it happened on.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A gateway could not be read or its export could not be understood; `reason` ends with the next
    /// step to take.
    #[error("{gateway}: {reason}")]
    Gateway { gateway: String, reason: String },

    /// The key in use has a role that does not allow the operation (see `docs/design.md`, key slots).
    #[error("the key in use has role {role}, which may not {action}: open the repository with an admin key (`gatevault key list` shows the roles)")]
    NotAllowed { role: String, action: String },

    /// An object cannot be removed yet: a retention lock (S3 Object Lock) keeps it until `until`.
    #[error("{object} is under an object lock until {until}: it stays until then, and a prune after that date removes it")]
    Retained {
        object: String,
        until: chrono::DateTime<chrono::Utc>,
    },

    /// The storage service refused the credentials or the permission (HTTP 401 or 403).
    #[error("access denied by {location}: {detail}; check the storage credentials and that they may list, read and write there (see docs/backends.md)")]
    AccessDenied { location: String, detail: String },

    /// The operation was interrupted by the user.
    #[error("interrupted")]
    Interrupted,

    /// A region policy (`require_region`) refuses to write to a repository outside its region.
    #[error("refusing to write to repository {repository}: its region {region} does not match {pattern:?}: {reason}")]
    RegionRefused {
        repository: String,
        region: String,
        pattern: String,
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done and on which path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds a gateway error about `gateway` (as [`crate::format::Source::describe`] puts it).
    pub fn gateway(gateway: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Gateway {
            gateway: gateway.into(),
            reason: reason.into(),
        }
    }

    /// Builds an integrity error for `object`.
    pub fn integrity(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::IntegrityMismatch {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// Builds a format error for `object`.
    pub fn format(object: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Format {
            object: object.into(),
            reason: reason.to_string(),
        }
    }
}
