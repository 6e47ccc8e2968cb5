//! A backend wrapper that remembers which objects a command wrote and removed, for the audit log.
//!
//! The command line wraps every backend it opens in a [`RecordingBackend`]; when the command ends, the
//! [`ChangeLog`] says whether it changed the repository and which objects it touched, without any
//! command having to report it. Locks are not recorded: every command that takes a lock writes and
//! removes one. Audit entries are (the command's own entry is appended after its record is drafted, so
//! it never lists itself): a command that rewrites entries, as `rewrite --reencrypt` re-seals them,
//! says so in its own entry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, Capabilities, FileType};
use crate::error::Result;

/// The names of objects of one type that were written and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Objects written, in the order they were written.
    pub added: Vec<String>,
    /// Objects removed, in the order they were removed.
    pub removed: Vec<String>,
}

/// What the backends of one command changed, by file type; shared between the wrappers of a command.
#[derive(Debug, Default)]
pub struct ChangeLog {
    changes: Mutex<BTreeMap<FileType, Changes>>,
}

impl ChangeLog {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<FileType, Changes>> {
        // Every mutation is one push: a panic elsewhere cannot leave the map half-updated.
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a type's writes and removals are recorded (not locks).
    pub fn records(t: FileType) -> bool {
        t != FileType::Lock
    }

    fn note(&self, t: FileType, name: &str, added: bool) {
        if !Self::records(t) {
            return;
        }
        // The config's name is empty; the audit log shows it as `config`.
        let name = if name.is_empty() { t.dir() } else { name }.to_string();
        let mut map = self.lock();
        let c = map.entry(t).or_default();
        if added {
            c.added.push(name);
        } else {
            c.removed.push(name);
        }
    }

    /// Whether nothing was written or removed.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A copy of everything recorded so far.
    pub fn changes(&self) -> BTreeMap<FileType, Changes> {
        self.lock().clone()
    }
}

/// Forwards every call to the wrapped backend and notes successful writes and removals in a
/// [`ChangeLog`].
#[derive(Debug)]
pub struct RecordingBackend {
    inner: Arc<dyn Backend>,
    log: Arc<ChangeLog>,
}

impl RecordingBackend {
    /// Wraps `inner`, noting its changes in `log`.
    pub fn new(inner: Arc<dyn Backend>, log: Arc<ChangeLog>) -> Self {
        Self { inner, log }
    }
}

impl Backend for RecordingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        self.inner.list(t)
    }

    fn list_names(&self, t: FileType) -> Result<Vec<String>> {
        self.inner.list_names(t)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.inner.read(t, name)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }

    fn read_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.read_range_into(t, name, offset, len, buf)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(t, name, data)?;
        self.log.note(t, name, true);
        Ok(())
    }

    fn write_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let back = self.inner.write_owned(t, name, data)?;
        self.log.note(t, name, true);
        Ok(back)
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        self.inner.remove(t, name)?;
        self.log.note(t, name, false);
        Ok(())
    }

    fn stat(&self, t: FileType, name: &str) -> Result<u64> {
        self.inner.stat(t, name)
    }

    fn exists(&self, t: FileType, name: &str) -> Result<bool> {
        self.inner.exists(t, name)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn region(&self) -> Result<Option<String>> {
        self.inner.region()
    }

    fn locked_until(
        &self,
        t: FileType,
        name: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.locked_until(t, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn conformance() {
        let log = Arc::new(ChangeLog::default());
        let b = RecordingBackend::new(Arc::new(MemoryBackend::new()), log.clone());
        super::super::conformance::run_all(&b);
        assert!(!log.is_empty(), "the conformance suite writes objects");
    }

    #[test]
    fn records_successful_changes_but_not_locks() {
        let log = Arc::new(ChangeLog::default());
        let b = RecordingBackend::new(Arc::new(MemoryBackend::new()), log.clone());
        let (a, c) = ("aa".repeat(32), "cc".repeat(32));
        b.read(FileType::Snapshot, &a).unwrap_err();
        assert!(log.is_empty(), "reads are not changes");
        b.write(FileType::Lock, &a, b"l").unwrap();
        b.remove(FileType::Lock, &a).unwrap();
        assert!(log.is_empty(), "locks are not recorded");
        b.write(FileType::Audit, &a, b"e").unwrap();
        assert_eq!(log.changes()[&FileType::Audit].added, vec![a.clone()]);

        b.write(FileType::Snapshot, &a, b"s").unwrap();
        b.write(FileType::Snapshot, &a, b"again").unwrap_err();
        b.write(FileType::Config, "", b"{}").unwrap();
        b.write(FileType::Pack, &c, b"p").unwrap();
        b.remove(FileType::Snapshot, &a).unwrap();
        b.remove(FileType::Snapshot, &a).unwrap_err();
        let got = log.changes();
        assert_eq!(
            got[&FileType::Snapshot],
            Changes {
                added: vec![a.clone()],
                removed: vec![a.clone()]
            },
            "a refused write and a failed removal are not recorded"
        );
        assert_eq!(got[&FileType::Config].added, vec!["config".to_string()]);
        assert_eq!(got[&FileType::Pack].added, vec![c]);
        assert_eq!(got.len(), 4);
    }
}
