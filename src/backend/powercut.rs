//! Power-loss simulation for tests: what a repository folder holds after the machine lost power in
//! the middle of a command.
//!
//! A [`super::local::LocalBackend`] made with `with_op_log` records every file-system operation it
//! performs, in order, into an [`OpLog`]: folder creations, file creations and writes, the fsync of a
//! file, hard links and renames, removals, and the fsync of a folder. [`survivor`] then replays a
//! prefix of that log over a copy of the folder as it was before the command, under the rules of a
//! POSIX file system that loses power after the last operation of the prefix:
//!
//! - a file's bytes are durable once the file was fsynced (before that it survives empty, if at all);
//! - a name added to or removed from a folder (create, link, rename, unlink, mkdir) is durable once
//!   that folder was fsynced;
//! - what was not durable is lost ([`Cut::DropUnsynced`]), or each pending change of a folder's
//!   names survives or not independently, in order ([`Cut::Random`]: a file system may have
//!   written some of its journal).
//!
//! A test then opens the survivor as a repository and checks it. This module only models the file
//! system; it knows nothing of repositories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One file-system operation, with paths relative to the repository folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsOp {
    /// A folder was created.
    Mkdir(PathBuf),
    /// An empty file was created.
    Create(PathBuf),
    /// Bytes were appended to a file.
    Write(PathBuf, Vec<u8>),
    /// A file was fsynced.
    SyncFile(PathBuf),
    /// A second name was given to a file.
    Link(PathBuf, PathBuf),
    /// A file was renamed.
    Rename(PathBuf, PathBuf),
    /// A name was removed.
    Unlink(PathBuf),
    /// A folder was fsynced.
    SyncDir(PathBuf),
}

/// The operations a backend performed, in order.
#[derive(Debug, Default)]
pub struct OpLog {
    ops: Mutex<Vec<FsOp>>,
}

impl OpLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation.
    pub fn record(&self, op: FsOp) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Every operation so far.
    pub fn ops(&self) -> Vec<FsOp> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What survives of the operations that were not yet durable at the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nothing: every write not fsynced, every name change whose folder was not fsynced, is lost.
    DropUnsynced,
    /// Each pending name change of a folder survives or not (seeded coin flips, in order); the bytes
    /// of a file not fsynced survive as an empty file.
    Random(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    Add(String, usize),
    Remove(String),
}

#[derive(Clone, Debug, Default)]
struct Folder {
    durable: BTreeMap<String, usize>,
    current: BTreeMap<String, usize>,
    pending: Vec<Change>,
}

#[derive(Clone, Debug)]
enum Inode {
    Dir(PathBuf),
    File { durable: Vec<u8>, current: Vec<u8> },
}

/// The simulated file system.
#[derive(Debug, Default)]
struct Fs {
    inodes: Vec<Inode>,
    folders: BTreeMap<PathBuf, Folder>,
}

fn split(p: &Path) -> (PathBuf, String) {
    let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

impl Fs {
    fn load(&mut self, root: &Path, rel: &Path) -> std::io::Result<()> {
        self.folders.entry(rel.to_path_buf()).or_default();
        for e in std::fs::read_dir(root.join(rel))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = rel.join(&name);
            let ino = if e.file_type()?.is_dir() {
                self.load(root, &child)?;
                self.inodes.push(Inode::Dir(child));
                self.inodes.len() - 1
            } else {
                let bytes = std::fs::read(e.path())?;
                self.inodes.push(Inode::File {
                    durable: bytes.clone(),
                    current: bytes,
                });
                self.inodes.len() - 1
            };
            let f = self.folders.entry(rel.to_path_buf()).or_default();
            f.durable.insert(name.clone(), ino);
            f.current.insert(name, ino);
        }
        Ok(())
    }

    fn change(&mut self, dir: &Path, c: Change) {
        let f = self.folders.entry(dir.to_path_buf()).or_default();
        match &c {
            Change::Add(n, i) => {
                f.current.insert(n.clone(), *i);
            }
            Change::Remove(n) => {
                f.current.remove(n);
            }
        }
        f.pending.push(c);
    }

    fn lookup(&self, p: &Path) -> Option<usize> {
        let (dir, name) = split(p);
        self.folders.get(&dir)?.current.get(&name).copied()
    }

    fn apply(&mut self, op: &FsOp) {
        match op {
            FsOp::Mkdir(p) => {
                self.inodes.push(Inode::Dir(p.clone()));
                let ino = self.inodes.len() - 1;
                self.folders.insert(p.clone(), Folder::default());
                let (dir, name) = split(p);
                self.change(&dir, Change::Add(name, ino));
            }
            FsOp::Create(p) => {
                self.inodes.push(Inode::File {
                    durable: vec![],
                    current: vec![],
                });
                let ino = self.inodes.len() - 1;
                let (dir, name) = split(p);
                self.change(&dir, Change::Add(name, ino));
            }
            FsOp::Write(p, bytes) => {
                if let Some(Inode::File { current, .. }) =
                    self.lookup(p).and_then(|i| self.inodes.get_mut(i))
                {
                    current.extend_from_slice(bytes);
                }
            }
            FsOp::SyncFile(p) => {
                if let Some(Inode::File { durable, current }) =
                    self.lookup(p).and_then(|i| self.inodes.get_mut(i))
                {
                    *durable = current.clone();
                }
            }
            FsOp::Link(from, to) => {
                if let Some(ino) = self.lookup(from) {
                    let (dir, name) = split(to);
                    self.change(&dir, Change::Add(name, ino));
                }
            }
            FsOp::Rename(from, to) => {
                if let Some(ino) = self.lookup(from) {
                    let (dir, name) = split(from);
                    self.change(&dir, Change::Remove(name));
                    let (dir, name) = split(to);
                    self.change(&dir, Change::Add(name, ino));
                }
            }
            FsOp::Unlink(p) => {
                let (dir, name) = split(p);
                self.change(&dir, Change::Remove(name));
            }
            FsOp::SyncDir(p) => {
                let f = self.folders.entry(p.clone()).or_default();
                f.durable = f.current.clone();
                f.pending.clear();
            }
        }
    }

    /// The names of each folder after the power loss.
    fn after_cut(&self, cut: Cut) -> BTreeMap<PathBuf, BTreeMap<String, usize>> {
        let mut rng = match cut {
            Cut::Random(seed) => Some(seed ^ 0x9E37_79B9_7F4A_7C15),
            Cut::DropUnsynced => None,
        };
        let mut coin = move || match &mut rng {
            // SplitMix64: deterministic for a seed, independent of any crate's algorithm.
            Some(s) => {
                *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) & 1 == 1
            }
            None => false,
        };
        let mut out = BTreeMap::new();
        for (p, f) in &self.folders {
            let mut names = f.durable.clone();
            for c in &f.pending {
                if coin() {
                    match c {
                        Change::Add(n, i) => {
                            names.insert(n.clone(), *i);
                        }
                        Change::Remove(n) => {
                            names.remove(n);
                        }
                    }
                }
            }
            out.insert(p.clone(), names);
        }
        out
    }

    fn write_out(
        &self,
        names: &BTreeMap<PathBuf, BTreeMap<String, usize>>,
        rel: &Path,
        out: &Path,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(out.join(rel))?;
        let Some(entries) = names.get(rel) else {
            return Ok(());
        };
        for (name, ino) in entries {
            match &self.inodes[*ino] {
                Inode::Dir(p) => self.write_out(names, p, out)?,
                Inode::File { durable, .. } => std::fs::write(out.join(rel).join(name), durable)?,
            }
        }
        Ok(())
    }
}

/// Builds in `out` (which must not exist) what the folder `before` holds after the first `cut`
/// operations of `ops` were performed on it and the power was lost, under the rules of `mode`.
///
/// # Errors
/// I/O errors reading `before` or writing `out`.
pub fn survivor(
    before: &Path,
    ops: &[FsOp],
    cut: usize,
    mode: Cut,
    out: &Path,
) -> std::io::Result<()> {
    let mut fs = Fs::default();
    fs.load(before, Path::new(""))?;
    for op in ops.iter().take(cut) {
        fs.apply(op);
    }
    let names = fs.after_cut(mode);
    fs.write_out(&names, Path::new(""), out)
}

/// The number of operations of `ops` after which something became durable (an fsync of a file or a
/// folder): the cuts worth making, since a cut between two of them gives the same survivor as a cut
/// at the earlier one under [`Cut::DropUnsynced`].
pub fn sync_points(ops: &[FsOp]) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        ops.iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, FsOp::SyncFile(_) | FsOp::SyncDir(_)))
            .map(|(i, _)| i + 1),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::{Backend, FileType};
    use std::sync::Arc;

    fn copy_dir(from: &Path, to: &Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir(&dest).unwrap();
                copy_dir(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), &dest).unwrap();
            }
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_survives_only_once_its_folder_was_fsynced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        LocalBackend::new(&root).create().unwrap();
        let before = tmp.path().join("before");
        std::fs::create_dir(&before).unwrap();
        copy_dir(&root, &before);
        let log = Arc::new(OpLog::new());
        let b = LocalBackend::with_op_log(&root, log.clone());
        let name = "ab".repeat(32);
        b.write(FileType::Index, &name, b"hello").unwrap();
        b.remove(FileType::Index, &name).unwrap();
        let ops = log.ops();
        let link = ops
            .iter()
            .position(|o| matches!(o, FsOp::Link(..)))
            .unwrap();
        let synced = ops
            .iter()
            .position(|o| matches!(o, FsOp::SyncDir(_)))
            .unwrap();
        assert!(link < synced, "{ops:?}");
        let at = |cut: usize, mode: Cut, n: &str| {
            let out = tmp.path().join(n);
            survivor(&before, &ops, cut, mode, &out).unwrap();
            names(&out.join("index"))
        };
        // Linked but the folder not yet fsynced: lost.
        assert!(at(link + 1, Cut::DropUnsynced, "a").is_empty());
        // Folder fsynced: there, with its bytes (the temporary name was durable too, and goes).
        let after = at(synced + 1, Cut::DropUnsynced, "b");
        assert!(after.contains(&name), "{after:?}");
        assert_eq!(
            std::fs::read(tmp.path().join("b/index").join(&name)).unwrap(),
            b"hello"
        );
        // Removed and fsynced: gone.
        assert!(!at(ops.len(), Cut::DropUnsynced, "c").contains(&name));
        // Removed but not yet fsynced: back.
        assert!(at(ops.len() - 1, Cut::DropUnsynced, "d").contains(&name));
        // With random survival, some seed keeps the unsynced link and some drops it.
        let kept: Vec<bool> = (0..16)
            .map(|s| at(link + 1, Cut::Random(s), &format!("r{s}")).contains(&name))
            .collect();
        assert!(kept.contains(&true) && kept.contains(&false), "{kept:?}");
    }

    #[test]
    fn a_file_not_fsynced_survives_without_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let before = tmp.path().join("before");
        std::fs::create_dir(&before).unwrap();
        let ops = vec![
            FsOp::Create("f".into()),
            FsOp::Write("f".into(), b"data".to_vec()),
            FsOp::SyncDir("".into()),
        ];
        let out = tmp.path().join("out");
        survivor(&before, &ops, 3, Cut::DropUnsynced, &out).unwrap();
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"");
        assert_eq!(sync_points(&ops), vec![0, 3]);
    }
}
