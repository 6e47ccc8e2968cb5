//! A local cache of a remote repository's metadata objects.
//!
//! Key slots, snapshots and index files are written once and read by almost every command; on an object
//! store each read is a round trip. [`CachedBackend`] wraps a remote backend, writes through, and keeps
//! a copy of those objects in a local folder that it serves later reads from. Packs (too big, read by
//! range), locks, records and audit entries (short-lived or rarely read) and the config (read once per
//! command, and the thing that tells two repositories apart) are never cached.
//!
//! A cached copy is served only when the store still lists an object of that name with the same size:
//! from the last listing of that type in this process when there is one, else from a `stat` (a HEAD,
//! which is cheaper than the download). An entry whose name is gone from a listing, or whose size
//! differs, is dropped. The cache folder is keyed by the location and by the bytes of the config, so a
//! repository deleted and created again at the same location never sees the old one's objects.
//! Everything read from the cache is still authenticated by the repository layer above, like any
//! read from the store.
//!
//! Layout: `<cache dir>/remote/<hash of location>/<hash of config>/<FileType::path_of(name)>`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, Capabilities, FileType};
use crate::error::Result;

/// Listings seen in this process: name to size, by type.
type Listings = HashMap<FileType, HashMap<String, u64>>;

/// A backend whose write-once metadata objects are also kept in a local folder.
#[derive(Debug)]
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    /// `<cache dir>/remote/<hash of location>`.
    root: PathBuf,
    /// `<root>/<hash of config>`, known once the config was read or written.
    dir: Mutex<Option<PathBuf>>,
    listed: Mutex<Listings>,
}

fn short_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..32].to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a lookup or one insert: a panic cannot leave the data half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CachedBackend {
    /// Wraps `inner`, caching under `cache_dir` (the folder of `--cache-dir`).
    pub fn new(inner: Arc<dyn Backend>, cache_dir: &Path) -> Self {
        let root = cache_dir
            .join("remote")
            .join(short_hash(inner.location().as_bytes()));
        Self {
            inner,
            root,
            dir: Mutex::new(None),
            listed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether objects of type `t` are cached.
    pub fn caches(t: FileType) -> bool {
        matches!(t, FileType::Key | FileType::Snapshot | FileType::Index)
    }

    /// The folder of this repository's cached objects, once the config is known.
    pub fn folder(&self) -> Option<PathBuf> {
        lock(&self.dir).clone()
    }

    fn learn_config(&self, config: &[u8]) {
        *lock(&self.dir) = Some(self.root.join(short_hash(config)));
    }

    fn path(&self, t: FileType, name: &str) -> Option<PathBuf> {
        if !Self::caches(t) {
            return None;
        }
        Some(lock(&self.dir).as_ref()?.join(t.path_of(name)))
    }

    /// Stores a copy; a cache that cannot be written only costs speed.
    fn store(&self, t: FileType, name: &str, data: &[u8]) {
        let Some(path) = self.path(t, name) else {
            return;
        };
        let r = (|| -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&self.root);
            fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
            fs::write(&tmp, data)?;
            fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        })();
        if let Err(e) = r {
            tracing::debug!("metadata cache: cannot store {}: {e}", path.display());
        }
    }

    fn drop_entry(&self, t: FileType, name: &str) {
        if let Some(p) = self.path(t, name) {
            let _ = fs::remove_file(p);
        }
    }

    /// The cached copy of an object, if there is one the store still has with the same size.
    fn cached(&self, t: FileType, name: &str) -> Option<Vec<u8>> {
        let path = self.path(t, name)?;
        let local = fs::metadata(&path).ok()?.len();
        let remote = match lock(&self.listed).get(&t) {
            Some(names) => names.get(name).copied(),
            None => self.inner.stat(t, name).ok(),
        };
        if remote != Some(local) {
            let _ = fs::remove_file(&path);
            return None;
        }
        let data = fs::read(&path).ok()?;
        (data.len() as u64 == local).then_some(data)
    }

    /// Drops cached entries of type `t` that a fresh listing no longer has, or has with another size.
    fn reconcile(&self, t: FileType, listing: &[(String, u64)]) {
        let names: HashMap<String, u64> = listing.iter().cloned().collect();
        if let Some(dir) = lock(&self.dir).as_ref() {
            if let Ok(rd) = fs::read_dir(dir.join(t.dir())) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let keep = names.get(&name).is_some_and(|&size| {
                        e.metadata().map(|m| m.len() == size).unwrap_or(false)
                    });
                    if !keep {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        lock(&self.listed).insert(t, names);
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        let l = self.inner.list(t)?;
        if Self::caches(t) {
            self.reconcile(t, &l);
        }
        Ok(l)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        if t == FileType::Config {
            let data = self.inner.read(t, name)?;
            self.learn_config(&data);
            return Ok(data);
        }
        if let Some(data) = self.cached(t, name) {
            return Ok(data);
        }
        let data = self.inner.read(t, name)?;
        self.store(t, name, &data);
        Ok(data)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if !Self::caches(t) {
            return self.inner.read_range(t, name, offset, len);
        }
        // Metadata objects are small: read (or serve) the whole object and cut the range from it.
        let all = self.read(t, name)?;
        slice(t, name, &all, offset, len)
    }

    fn read_ranges(&self, t: FileType, name: &str, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        if !Self::caches(t) {
            return self.inner.read_ranges(t, name, ranges);
        }
        let all = self.read(t, name)?;
        ranges
            .iter()
            .map(|&(o, l)| slice(t, name, &all, o, l))
            .collect()
    }

    fn write_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<Option<Vec<u8>>> {
        if Self::caches(t) || t == FileType::Config {
            self.write(t, name, &data)?; // kept in the cache too
            return Ok(Some(data));
        }
        let len = data.len() as u64;
        let back = self.inner.write_owned(t, name, data)?;
        if let Some(names) = lock(&self.listed).get_mut(&t) {
            names.insert(name.to_string(), len);
        }
        Ok(back)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(t, name, data)?;
        if t == FileType::Config {
            self.learn_config(data);
        } else {
            self.store(t, name, data);
            if let Some(names) = lock(&self.listed).get_mut(&t) {
                names.insert(name.to_string(), data.len() as u64);
            }
        }
        Ok(())
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        // Dropped first: an entry must never outlive its object, even when the removal fails halfway.
        self.drop_entry(t, name);
        if let Some(names) = lock(&self.listed).get_mut(&t) {
            names.remove(name);
        }
        self.inner.remove(t, name)
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

fn slice(t: FileType, name: &str, all: &[u8], offset: u64, len: u64) -> Result<Vec<u8>> {
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= all.len() as u64 => Ok(all[offset as usize..end as usize].to_vec()),
        _ => Err(crate::error::Error::integrity(
            t.path_of(name),
            format!(
                "truncated: wanted {len} bytes at offset {offset}, the object has {}",
                all.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    fn setup() -> (tempfile::TempDir, MemoryBackend, CachedBackend) {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryBackend::new();
        let c = CachedBackend::new(Arc::new(mem.clone()), dir.path());
        (dir, mem, c)
    }

    #[test]
    fn conformance() {
        let (_d, _m, c) = setup();
        crate::backend::conformance::run_all(&c);
        assert!(c.folder().is_some(), "the config write named the folder");
    }

    #[test]
    fn serves_metadata_from_the_cache_and_drops_what_the_store_lost() {
        let (_d, mem, c) = setup();
        c.create().unwrap();
        c.write(FileType::Config, "", b"{\"id\":1}").unwrap();
        let n = "5a".repeat(32);
        c.write(FileType::Snapshot, &n, b"snapshot-1").unwrap();
        let file = c.folder().unwrap().join(FileType::Snapshot.path_of(&n));
        assert_eq!(fs::read(&file).unwrap(), b"snapshot-1");

        // Served locally: a different byte in the store (same size) is not seen while the listing agrees.
        mem.corrupt(FileType::Snapshot, &n, b"snapshot-X".to_vec());
        assert_eq!(c.list(FileType::Snapshot).unwrap().len(), 1);
        assert_eq!(c.read(FileType::Snapshot, &n).unwrap(), b"snapshot-1");
        assert_eq!(c.read_range(FileType::Snapshot, &n, 9, 1).unwrap(), b"1");
        assert!(c.read_range(FileType::Snapshot, &n, 9, 2).is_err());

        // Removed and created again with another size: the listing drops the stale copy.
        mem.remove(FileType::Snapshot, &n).unwrap();
        mem.write(FileType::Snapshot, &n, b"a longer snapshot")
            .unwrap();
        c.list(FileType::Snapshot).unwrap();
        assert!(!file.exists(), "a size mismatch drops the entry");
        assert_eq!(
            c.read(FileType::Snapshot, &n).unwrap(),
            b"a longer snapshot"
        );

        // Gone from the store: the listing drops it, and the read is NotFound.
        mem.remove(FileType::Snapshot, &n).unwrap();
        assert!(c.list(FileType::Snapshot).unwrap().is_empty());
        assert!(!file.exists());
        assert!(matches!(
            c.read(FileType::Snapshot, &n),
            Err(crate::error::Error::NotFound { .. })
        ));
    }

    #[test]
    fn without_a_listing_a_stat_guards_the_copy() {
        let (d, mem, c) = setup();
        c.create().unwrap();
        c.write(FileType::Config, "", b"cfg").unwrap();
        let n = "6b".repeat(32);
        c.write(FileType::Index, &n, b"idx").unwrap();
        // A new process (no listing yet) whose store lost the object.
        let c2 = CachedBackend::new(Arc::new(mem.clone()), d.path());
        c2.read(FileType::Config, "").unwrap();
        assert_eq!(
            c2.folder(),
            c.folder(),
            "same location and config, same folder"
        );
        mem.remove(FileType::Index, &n).unwrap();
        assert!(matches!(
            c2.read(FileType::Index, &n),
            Err(crate::error::Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_new_repository_at_the_same_location_gets_a_new_folder() {
        let (d, mem, c) = setup();
        c.write(FileType::Config, "", b"first").unwrap();
        let n = "7c".repeat(32);
        c.write(FileType::Key, &n, b"key").unwrap();
        let first = c.folder().unwrap();
        mem.remove(FileType::Config, "").unwrap();
        mem.write(FileType::Config, "", b"second").unwrap();
        let c2 = CachedBackend::new(Arc::new(mem.clone()), d.path());
        c2.read(FileType::Config, "").unwrap();
        assert_ne!(c2.folder().unwrap(), first);
    }

    #[test]
    fn reads_of_cached_objects_do_not_reach_the_store() {
        let d = tempfile::tempdir().unwrap();
        let mem = MemoryBackend::new();
        let counted = Arc::new(Counting::new(Arc::new(mem.clone())));
        let c = CachedBackend::new(counted.clone(), d.path());
        c.write(FileType::Config, "", b"cfg").unwrap();
        let n = "8d".repeat(32);
        c.write(FileType::Index, &n, b"index bytes").unwrap();
        c.list(FileType::Index).unwrap();
        let before = counted.reads();
        for _ in 0..3 {
            assert_eq!(c.read(FileType::Index, &n).unwrap(), b"index bytes");
        }
        assert_eq!(counted.reads(), before, "served from the cache");
        let p = "9e".repeat(32);
        c.write(FileType::Pack, &p, b"pack").unwrap();
        c.read(FileType::Pack, &p).unwrap();
        assert_eq!(
            counted.reads(),
            before + 1,
            "packs always come from the store"
        );
    }

    /// Counts whole-object reads.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn Backend>,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl Counting {
        fn new(inner: Arc<dyn Backend>) -> Self {
            Self {
                inner,
                reads: Default::default(),
            }
        }
        fn reads(&self) -> usize {
            self.reads.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Backend for Counting {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
            self.inner.list(t)
        }
        fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.read(t, name)
        }
        fn read_range(&self, t: FileType, name: &str, o: u64, l: u64) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, o, l)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> Result<()> {
            self.inner.remove(t, name)
        }
        fn stat(&self, t: FileType, name: &str) -> Result<u64> {
            self.inner.stat(t, name)
        }
    }
}
