//! The snapshots this machine has seen, to detect a rolled-back snapshot list.
//!
//! Snapshots are separate write-once objects, so someone with write access to the storage (and no key)
//! can delete recent ones or put back an older copy of `snapshots/`: every object left still
//! authenticates. What they cannot do is make a removal look legitimate: `forget`, `prune`, `erase`,
//! `rewrite` and `repair snapshots` record every snapshot they remove in the hash-chained audit log
//! (`docs/design.md`, section 10b), whose truncation the remembered audit head already reveals. So each
//! machine keeps the ids of the snapshots it has seen in `<cache dir>/<repo id>/snapshots-seen` (added
//! when it writes a snapshot, dropped just before it removes one, replaced by the listing at each
//! `check`), and `check` reports every seen
//! snapshot that is gone without an audit entry naming its removal as [`Error::Rollback`].
//!
//! Limits: a machine only knows what it saw (a rollback before its first check or backup is not
//! detected), and an attacker who also removes the audit entries is caught by the audit head, not here.
//! A removal by another machine that was killed before it wrote its audit entry is reported here as a
//! rollback; when that is what happened, deleting the file accepts it.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::AuditLog;
use crate::backend::Backend;
use crate::crypto::RepoKeys;
use crate::error::{Error, Result};
use crate::id::{RepoId, SnapshotId};

/// Version of the file's format.
const SEEN_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// Snapshot ids, hex.
    snapshots: BTreeSet<String>,
}

/// The file holding the snapshot ids this machine has seen in one repository.
#[derive(Clone, Debug)]
pub struct SeenSnapshots {
    path: PathBuf,
}

impl SeenSnapshots {
    /// `<cache_dir>/<repo id>/snapshots-seen`.
    pub fn in_cache(cache_dir: &Path, repo: &RepoId) -> Self {
        Self {
            path: cache_dir.join(repo.to_hex()).join("snapshots-seen"),
        }
    }

    /// Where the ids are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", self.path.display()), e)
    }

    /// The ids remembered; `Ok(None)` when there is no file or it does not parse (it is only
    /// evidence kept by this machine: a damaged file is replaced by the next listing).
    fn load(&self) -> Result<Option<BTreeSet<String>>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("reading", e)),
        };
        Ok(serde_json::from_slice::<Stored>(&bytes)
            .ok()
            .filter(|s| s.version == SEEN_VERSION)
            .map(|s| s.snapshots))
    }

    fn store(&self, ids: BTreeSet<String>) -> Result<()> {
        let s = Stored {
            version: SEEN_VERSION,
            snapshots: ids,
        };
        crate::util::replace_file(&self.path, &serde_json::to_vec(&s).expect("ids serialize"))
    }

    /// Holds the update lock while `f` runs.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        crate::util::with_file_lock(&self.path, f)
    }

    /// Remembers a snapshot this machine has just written.
    ///
    /// # Errors
    /// I/O errors of the cache.
    pub fn add(&self, id: &SnapshotId) -> Result<()> {
        self.locked(|| {
            let mut ids = self.load()?.unwrap_or_default();
            ids.insert(id.to_hex());
            self.store(ids)
        })
    }

    /// Forgets a snapshot this machine is about to remove (before it removes it: a removal cut short
    /// afterwards is then no rollback here, whether or not its audit entry was written).
    ///
    /// # Errors
    /// I/O errors of the cache.
    pub fn forget(&self, id: &SnapshotId) -> Result<()> {
        self.locked(|| match self.load()? {
            Some(mut ids) => {
                if ids.remove(&id.to_hex()) {
                    self.store(ids)?;
                }
                Ok(())
            }
            None => Ok(()),
        })
    }

    /// Compares the snapshots listed now with those seen before. Seen snapshots that are gone (not
    /// listed, and `exists` says they are not there now either: one written after the listing is not
    /// gone) must be named as removed by an audit log entry (`removed()` gives those names; it is only
    /// called when something is gone). When every disappearance is explained, the listing becomes the new seen
    /// set; otherwise the file is left as it is, so the rollback keeps being reported.
    ///
    /// # Errors
    /// [`Error::Rollback`] naming the snapshots gone without a record; I/O errors of the cache; the
    /// errors of `removed`.
    pub fn verify(
        &self,
        listed: &[SnapshotId],
        exists: impl Fn(&str) -> Result<bool>,
        removed: impl FnOnce() -> Result<HashSet<String>>,
    ) -> Result<()> {
        self.locked(|| {
            let mut now: BTreeSet<String> = listed.iter().map(SnapshotId::to_hex).collect();
            if let Some(seen) = self.load()? {
                // A snapshot written (and added here) after the listing was taken is not gone.
                for id in seen.difference(&now).cloned().collect::<Vec<_>>() {
                    if exists(&id)? {
                        now.insert(id);
                    }
                }
                let gone: Vec<&String> = seen.difference(&now).collect();
                if !gone.is_empty() {
                    let removed = removed()?;
                    let unexplained: Vec<&String> = gone
                        .into_iter()
                        .filter(|id| !removed.contains(*id))
                        .collect();
                    if !unexplained.is_empty() {
                        let ids: Vec<String> = unexplained
                            .iter()
                            .map(|s| s.chars().take(8).collect())
                            .collect();
                        return Err(Error::Rollback {
                            count: unexplained.len(),
                            ids: format!(
                                "{} (to accept their removal, delete {})",
                                ids.join(", "),
                                self.path.display()
                            ),
                        });
                    }
                }
            }
            self.store(now)
        })
    }
}

/// Every snapshot name that an audit log entry records as removed (entries that do not open are
/// skipped: the audit verification reports them).
///
/// # Errors
/// Backend errors listing the log.
pub fn removed_snapshots(backend: &dyn Backend, keys: &RepoKeys) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for (_, e) in AuditLog::new(backend, keys).entries()? {
        if let Ok(e) = e {
            if let Some(t) = e.objects.get("snapshot") {
                out.extend(t.removed.iter().cloned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exists` for a store that holds nothing beyond the listing.
    fn none(_: &str) -> Result<bool> {
        Ok(false)
    }

    #[test]
    fn a_snapshot_written_after_the_listing_is_not_gone() {
        let dir = tempfile::tempdir().unwrap();
        let seen = SeenSnapshots::in_cache(dir.path(), &RepoId::random());
        let (a, b) = (SnapshotId::random(), SnapshotId::random());
        seen.verify(&[a], none, || panic!("nothing is gone"))
            .unwrap();
        // A backup adds b between the check's listing (which lacks it) and its verification.
        seen.add(&b).unwrap();
        let bh = b.to_hex();
        seen.verify(&[a], |id| Ok(id == bh), || panic!("b is there"))
            .unwrap();
        // ... and b stays remembered: gone later without a record, it is a rollback.
        let err = seen.verify(&[a], none, || Ok(HashSet::new())).unwrap_err();
        assert!(err.to_string().contains(&bh[..8]), "{err}");
    }

    #[test]
    fn a_snapshot_gone_without_a_record_is_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let seen = SeenSnapshots::in_cache(dir.path(), &RepoId::random());
        let (a, b, c) = (
            SnapshotId::random(),
            SnapshotId::random(),
            SnapshotId::random(),
        );
        // Nothing seen yet: anything goes, and becomes the seen set.
        seen.verify(&[a, b], none, || panic!("nothing is gone"))
            .unwrap();
        seen.add(&c).unwrap();
        // c is gone and nobody recorded its removal.
        let err = seen
            .verify(&[a, b], none, || Ok(HashSet::new()))
            .unwrap_err();
        assert!(matches!(err, Error::Rollback { count: 1, .. }), "{err}");
        assert!(err.to_string().contains(&c.to_hex()[..8]), "{err}");
        // Still reported: the file was kept.
        assert!(seen.verify(&[a, b], none, || Ok(HashSet::new())).is_err());
        // Recorded as removed: accepted, and the seen set follows.
        seen.verify(&[a], none, || Ok([b.to_hex(), c.to_hex()].into()))
            .unwrap();
        seen.verify(&[a], none, || panic!("nothing is gone any more"))
            .unwrap();
        // A damaged file is replaced, not an error.
        fs::write(seen.path(), b"{garbage").unwrap();
        seen.verify(&[a], none, || panic!("nothing remembered"))
            .unwrap();
    }
}
