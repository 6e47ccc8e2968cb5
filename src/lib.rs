//! gatevault: a content-addressed, deduplicating, encrypted backup store for API-gateway configurations.
//!
//! Layers, each depending only on those below it:
//! - [`cli`]: one file per subcommand, each calling one library function;
//! - [`backup`], [`restore`], [`check`], [`diff`], [`stats`], [`walk`], [`forget`], [`prune`],
//!   [`reencrypt`]: the jobs;
//! - [`repo`]: opening a repository, keys, snapshots, trees, blobs, locks, saving;
//! - [`audit`]: the hash-chained audit log of the commands that changed the repository;
//! - [`index`], [`pack`], [`chunker`], [`crypto`], [`mod@format`]: storage format pieces;
//! - [`backend`]: opaque bytes by file type and name.
//!
//! The repository format is specified in `docs/design.md`.

pub mod audit;
pub mod backend;
pub mod backup;
pub mod check;
pub mod chunker;
pub mod cli;
pub mod copy;
pub mod crypto;
pub mod diff;
pub mod erase;
pub mod error;
pub mod forget;
pub mod format;
pub mod fuzzing;
pub mod gateway;
pub mod history;
pub mod id;
pub mod index;
pub mod jobs;
pub mod metrics;
pub mod misplaced;
pub mod pack;
pub mod probe;
pub mod profile;
pub mod prune;
pub mod recovery;
pub mod reencrypt;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod secrets;
pub mod select;
pub mod signals;
pub mod stats;
pub mod systemd;
pub mod util;
pub mod walk;
pub mod watch;

pub use error::{Error, Result};
