//! The local-disk backend.
//!
//! A write goes to a temporary file in the target folder, is fsynced, then linked to its final name
//! (`link` fails if the name exists, which makes the write create-only and atomic) and the folder is
//! fsynced. A crash leaves at most a `.tmp-*` file, which listings ignore. A folder it creates is made
//! durable in its parent before anything is written into it. Power-loss tests replay the file-system
//! operations it records (see [`super::powercut`]).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::powercut::{FsOp, OpLog};
use super::{not_found, Backend, Capabilities, FileType};
use crate::error::{Error, Result};

/// A repository in a folder on a local filesystem.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Records every file-system operation that changes the repository (power-loss tests).
    ops: Option<std::sync::Arc<OpLog>>,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            ops: None,
        }
    }

    /// A backend that also records its file-system operations into `log`, for power-loss tests.
    #[doc(hidden)]
    pub fn with_op_log(root: impl Into<PathBuf>, log: std::sync::Arc<OpLog>) -> Self {
        Self {
            root: root.into(),
            ops: Some(log),
        }
    }

    fn note(&self, op: impl FnOnce(&dyn Fn(&Path) -> PathBuf) -> FsOp) {
        if let Some(log) = &self.ops {
            let rel = |p: &Path| p.strip_prefix(&self.root).unwrap_or(p).to_path_buf();
            log.record(op(&rel));
        }
    }

    /// Creates folder `dir` and any missing parent; returns the folders whose entries changed, which
    /// the caller makes durable with [`LocalBackend::sync_dirs`] before writing into `dir`: otherwise an
    /// object written into a new folder could vanish with the folder at a power loss although its write
    /// returned.
    fn create_dirs(&self, dir: &Path, changed: &mut Vec<PathBuf>) -> Result<()> {
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.as_os_str().is_empty() && !d.exists() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        for m in missing.iter().rev() {
            match fs::create_dir(m) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io_err("creating", m, e)),
            }
            self.note(|r| FsOp::Mkdir(r(m)));
            // A relative root's parent is the current folder.
            let parent = match m.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !changed.iter().any(|c| c == parent) {
                changed.push(parent.to_path_buf());
            }
        }
        Ok(())
    }

    /// Fsyncs each folder of `dirs`, deepest first.
    fn sync_dirs(&self, mut dirs: Vec<PathBuf>) -> Result<()> {
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            sync_dir(d).map_err(|e| self.io_err("syncing", d, e))?;
            self.note(|r| FsOp::SyncDir(r(d)));
        }
        Ok(())
    }

    fn path(&self, t: FileType, name: &str) -> PathBuf {
        self.root.join(t.path_of(name))
    }

    fn io_err(&self, what: &str, path: &Path, e: std::io::Error) -> Error {
        let hint = match e.kind() {
            ErrorKind::StorageFull => " (the disk is full: free space, then run the command again; stored data is unharmed)",
            ErrorKind::PermissionDenied => " (check the permissions of the repository folder)",
            ErrorKind::ReadOnlyFilesystem => " (the filesystem is read-only)",
            _ => "",
        };
        Error::io(format!("{what} {}{hint}", path.display()), e)
    }

    fn map_read_err(&self, t: FileType, name: &str, path: &Path, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            not_found(t, name)
        } else {
            self.io_err("reading", path, e)
        }
    }
}

impl LocalBackend {
    /// Reads exactly `len` bytes at `offset` of the open file `f` of object `obj` into `buf`.
    fn read_at(
        &self,
        f: &mut File,
        path: &Path,
        obj: (FileType, &str),
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let (t, name) = obj;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io_err("reading", path, e))?;
        let len_usize = usize::try_from(len).map_err(|_| {
            Error::integrity(t.path_of(name), format!("range length {len} too large"))
        })?;
        buf.clear();
        buf.reserve(len_usize);
        f.take(len)
            .read_to_end(buf)
            .map_err(|e| self.io_err("reading", path, e))?;
        if buf.len() != len_usize {
            return Err(Error::integrity(
                t.path_of(name),
                format!(
                    "truncated: wanted {len} bytes at offset {offset}, got {}",
                    buf.len()
                ),
            ));
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        if self.path(FileType::Config, "").exists() {
            return Err(Error::AlreadyExists {
                file_type: FileType::Config,
                name: self.location(),
            });
        }
        let mut changed = Vec::new();
        for t in FileType::ALL {
            if t == FileType::Config {
                continue;
            }
            self.create_dirs(&self.root.join(t.dir()), &mut changed)?;
        }
        for i in 0..=255u8 {
            self.create_dirs(&self.root.join("data").join(hex::encode([i])), &mut changed)?;
        }
        // The root too, as before: `init` ends with the config, written into it.
        if !changed.contains(&self.root) {
            changed.push(self.root.clone());
        }
        self.sync_dirs(changed)
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        if t == FileType::Config {
            return match fs::metadata(self.path(t, "")) {
                Ok(m) => Ok(vec![(String::new(), m.len())]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(vec![]),
                Err(e) => Err(self.io_err("reading", &self.path(t, ""), e)),
            };
        }
        let base = self.root.join(t.dir());
        let mut dirs = vec![base.clone()];
        if t == FileType::Pack {
            dirs.clear();
            match fs::read_dir(&base) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.map_err(|e| self.io_err("listing", &base, e))?;
                        if e.file_type().map(|f| f.is_dir()).unwrap_or(false) {
                            dirs.push(e.path());
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(self.io_err("listing", &base, e)),
            }
        }
        let mut out = Vec::new();
        for dir in dirs {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("listing", &dir, e)),
            };
            for e in rd {
                let e = e.map_err(|e| self.io_err("listing", &dir, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                match e.metadata() {
                    Ok(m) if m.is_file() => out.push((name, m.len())),
                    Ok(_) => {}
                    // Removed between listing and stat: a concurrent prune or unlock; not ours to report.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(err) => return Err(self.io_err("reading", &e.path(), err)),
                }
            }
        }
        Ok(out)
    }

    fn list_names(&self, t: FileType) -> Result<Vec<String>> {
        if matches!(t, FileType::Config | FileType::Pack) {
            return Ok(self.list(t)?.into_iter().map(|(n, _)| n).collect());
        }
        // The file type comes with the directory entry on the usual file systems: no stat per file.
        let dir = self.root.join(t.dir());
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.io_err("listing", &dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| self.io_err("listing", &dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.file_type().is_ok_and(|f| f.is_file()) {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let path = self.path(t, name);
        fs::read(&path).map_err(|e| self.map_read_err(t, name, &path, e))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_range_into(t, name, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let path = self.path(t, name);
        let mut f = File::open(&path).map_err(|e| self.map_read_err(t, name, &path, e))?;
        self.read_at(&mut f, &path, (t, name), offset, len, buf)
    }

    fn read_ranges(&self, t: FileType, name: &str, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        // One open for all ranges: `rewrite --reencrypt` reads the envelope header of every blob.
        let path = self.path(t, name);
        let mut f = File::open(&path).map_err(|e| self.map_read_err(t, name, &path, e))?;
        ranges
            .iter()
            .map(|&(offset, len)| {
                let mut buf = Vec::new();
                self.read_at(&mut f, &path, (t, name), offset, len, &mut buf)?;
                Ok(buf)
            })
            .collect()
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(t, name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        if !dir.exists() {
            let mut changed = Vec::new();
            self.create_dirs(&dir, &mut changed)?;
            self.sync_dirs(changed)?;
        }
        let tmp = dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| self.io_err("creating", &tmp, e))?;
            self.note(|r| FsOp::Create(r(&tmp)));
            crate::util::write_all(&mut f, data).map_err(|e| self.io_err("writing", &tmp, e))?;
            self.note(|r| FsOp::Write(r(&tmp), data.to_vec()));
            f.sync_all().map_err(|e| self.io_err("syncing", &tmp, e))?;
            self.note(|r| FsOp::SyncFile(r(&tmp)));
            drop(f);
            match fs::hard_link(&tmp, &path) {
                Ok(()) => self.note(|r| FsOp::Link(r(&tmp), r(&path))),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(Error::AlreadyExists {
                        file_type: t,
                        name: name.to_string(),
                    })
                }
                // Filesystems without hard links: check, then rename (not atomic against a racing writer
                // of the same random name, which does not happen).
                Err(_) => {
                    if path.exists() {
                        return Err(Error::AlreadyExists {
                            file_type: t,
                            name: name.to_string(),
                        });
                    }
                    fs::rename(&tmp, &path).map_err(|e| self.io_err("renaming", &tmp, e))?;
                    self.note(|r| FsOp::Rename(r(&tmp), r(&path)));
                }
            }
            sync_dir(&dir).map_err(|e| self.io_err("syncing", &dir, e))?;
            self.note(|r| FsOp::SyncDir(r(&dir)));
            Ok(())
        })();
        if fs::remove_file(&tmp).is_ok() {
            self.note(|r| FsOp::Unlink(r(&tmp)));
        }
        if result.is_ok() {
            super::crash_point(t);
        }
        result
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        let path = self.path(t, name);
        fs::remove_file(&path).map_err(|e| self.map_read_err(t, name, &path, e))?;
        self.note(|r| FsOp::Unlink(r(&path)));
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(|e| self.io_err("syncing", dir, e))?;
            self.note(|r| FsOp::SyncDir(r(dir)));
        }
        super::crash_point(t);
        Ok(())
    }

    fn stat(&self, t: FileType, name: &str) -> Result<u64> {
        let path = self.path(t, name);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| self.map_read_err(t, name, &path, e))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable_writes: true,
            atomic_create: true,
            ..Capabilities::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        super::super::conformance::run_all(&b);
    }

    #[test]
    fn leftover_temp_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        fs::write(dir.path().join("index/.tmp-1234"), b"partial").unwrap();
        b.write(FileType::Index, &"ab".repeat(32), b"x").unwrap();
        let names: Vec<_> = b
            .list(FileType::Index)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["ab".repeat(32)]);
    }
}
