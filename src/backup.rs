//! The backup job: scan paths, reuse unchanged files of the parent snapshot, chunk and save the rest,
//! write trees, then commit index and snapshot.
//!
//! Small files are read whole and processed in parallel (one file per worker); large files are read by
//! one thread that cuts chunks while the workers hash, compress and pack them, so that reading and the
//! CPU work overlap and memory stays bounded.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::{
    BlobType, Node, NodeType, Snapshot, Summary, Tree, SNAPSHOT_VERSION, TREE_VERSION,
};
use crate::id::{BlobId, SnapshotId};
use crate::repo::lock::LockGuard;
use crate::repo::saver::BlobSaver;
use crate::repo::Repository;

/// Files at least this large are streamed through the pipeline; smaller ones are read whole.
const STREAM_THRESHOLD: u64 = 8 * 1024 * 1024;

/// Text documents up to this size are kept inline in their tree node (see [`Node::inline`]) ...
const INLINE_MAX: usize = 1024 * 1024;

/// ... as long as their folder's tree holds at most this much inline text; the rest go to blobs.
const INLINE_FOLDER_MAX: usize = 8 * 1024 * 1024;

/// What to back up and how to describe it.
#[derive(Default)]
pub struct BackupOptions {
    /// Files and folders to back up.
    pub paths: Vec<PathBuf>,
    /// Read from standard input instead, storing it under this name.
    pub stdin_filename: Option<String>,
    /// Tags (key to value).
    pub tags: BTreeMap<String, String>,
    /// Host name to record (default: this host).
    pub host: Option<String>,
    /// Version label.
    pub label: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Read every file even if the parent says it is unchanged.
    pub force: bool,
    /// Compare against this snapshot instead of the latest one of the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Snapshot time (default: now).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Back up these in-memory documents (path to bytes) instead of files: a gateway capture.
    pub documents: Option<BTreeMap<String, Vec<u8>>>,
    /// The gateway the documents came from, recorded in the snapshot; its path names the snapshot.
    pub source: Option<crate::format::Source>,
}

/// Progress callbacks (the CLI shows a bar; tests pass [`NoProgress`]).
pub trait Progress: Sync {
    /// The total bytes to read is now known.
    fn start(&self, _total_bytes: u64, _files: u64) {}
    /// `n` more bytes were processed.
    fn bytes(&self, _n: u64) {}
    /// The job is done.
    fn finish(&self) {}
}

/// Progress that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a backup produced.
#[derive(Debug)]
pub struct BackupResult {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Files that could not be read, with the reason (the snapshot is partial when not empty).
    pub warnings: Vec<String>,
}

enum Item {
    /// `previous`: the content of the same path in the parent snapshot (delta bases for changed chunks).
    File {
        node: Node,
        path: PathBuf,
        read: bool,
        previous: Vec<BlobId>,
        /// The content, for in-memory documents (a gateway capture), with the parent's mtime.
        document: Option<(Vec<u8>, Option<i64>)>,
    },
    /// `previous`: the tree of the same path in the parent snapshot (delta base of the new tree).
    Dir {
        node: Node,
        children: BTreeMap<String, Item>,
        previous: Option<BlobId>,
    },
    Other {
        node: Node,
    },
}

fn meta_node(name: &str, t: NodeType, m: &fs::Metadata) -> Node {
    Node {
        mode: m.mode() & 0o7777,
        mtime_ns: m
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec()),
        size: if t == NodeType::File { m.len() } else { 0 },
        inode: m.ino(),
        device: m.dev(),
        ..Node::new(name, t)
    }
}

fn dir_node(name: &str) -> Node {
    Node {
        mode: 0o755,
        ..Node::new(name, NodeType::Dir)
    }
}

struct Scan<'a> {
    repo: &'a Repository,
    force: bool,
    warnings: Vec<String>,
    summary: Summary,
}

impl Scan<'_> {
    fn parent_children(&self, parent: Option<&Node>) -> Option<Tree> {
        let sub = parent.filter(|n| n.node_type == NodeType::Dir)?.subtree?;
        match self.repo.load_tree(&sub) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "parent tree {} unreadable ({e}); reading files again",
                    sub.short()
                );
                None
            }
        }
    }

    /// Scans `path` (named `name` in its directory) against the parent's node of the same name.
    fn scan(&mut self, path: &Path, name: &str, parent: Option<&Node>) -> Option<Item> {
        let m = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warnings.push(format!("{}: {e}", path.display()));
                self.summary.files_failed += 1;
                return None;
            }
        };
        let ft = m.file_type();
        if ft.is_file() {
            let mut node = meta_node(name, NodeType::File, &m);
            self.summary.total_files += 1;
            self.summary.total_bytes += node.size;
            let unchanged = parent.filter(|p| {
                p.node_type == NodeType::File
                    && p.size == node.size
                    && p.mtime_ns == node.mtime_ns
                    && p.inode == node.inode
                    && (p.size == 0 || !p.content.is_empty())
            });
            match (unchanged, self.force) {
                (Some(p), false) => {
                    node.content = p.content.clone();
                    self.summary.files_unchanged += 1;
                    Some(Item::File {
                        node,
                        path: path.to_path_buf(),
                        read: false,
                        previous: vec![],
                        document: None,
                    })
                }
                _ => {
                    if parent.is_some() {
                        self.summary.files_changed += 1;
                    } else {
                        self.summary.files_new += 1;
                    }
                    let previous = parent
                        .filter(|p| p.node_type == NodeType::File)
                        .map(|p| p.content.clone())
                        .unwrap_or_default();
                    Some(Item::File {
                        node,
                        path: path.to_path_buf(),
                        read: true,
                        previous,
                        document: None,
                    })
                }
            }
        } else if ft.is_dir() {
            self.summary.dirs += 1;
            let node = meta_node(name, NodeType::Dir, &m);
            let ptree = self.parent_children(parent);
            let rd = match fs::read_dir(path) {
                Ok(rd) => rd,
                Err(e) => {
                    self.warnings.push(format!("{}: {e}", path.display()));
                    self.summary.files_failed += 1;
                    return None;
                }
            };
            let mut children = BTreeMap::new();
            for e in rd {
                let e = match e {
                    Ok(e) => e,
                    Err(err) => {
                        self.warnings.push(format!("{}: {err}", path.display()));
                        continue;
                    }
                };
                let Some(cname) = e.file_name().to_str().map(str::to_string) else {
                    self.warnings.push(format!(
                        "{}: file name is not UTF-8; skipped",
                        e.path().display()
                    ));
                    self.summary.files_failed += 1;
                    continue;
                };
                let pnode = ptree
                    .as_ref()
                    .and_then(|t| t.nodes.iter().find(|n| n.name == cname));
                if let Some(item) = self.scan(&e.path(), &cname, pnode) {
                    children.insert(cname, item);
                }
            }
            let previous = parent
                .filter(|p| p.node_type == NodeType::Dir)
                .and_then(|p| p.subtree);
            Some(Item::Dir {
                node,
                children,
                previous,
            })
        } else if ft.is_symlink() {
            let mut node = meta_node(name, NodeType::Symlink, &m);
            match fs::read_link(path) {
                Ok(t) => node.link_target = Some(t.to_string_lossy().into_owned()),
                Err(e) => {
                    self.warnings.push(format!("{}: {e}", path.display()));
                    return None;
                }
            }
            Some(Item::Other { node })
        } else {
            self.warnings.push(format!(
                "{}: not a regular file, folder or link; skipped",
                path.display()
            ));
            None
        }
    }
}

fn collect_files<'i>(item: &'i mut Item, out: &mut Vec<&'i mut Item>) {
    match item {
        Item::File { read: true, .. } => out.push(item),
        Item::Dir { children, .. } => children.values_mut().for_each(|c| collect_files(c, out)),
        _ => {}
    }
}

/// Chunks and saves one file, returning its content ids.
/// Saves the chunks of an in-memory file. A new chunk is offered to the saver as similar to the chunk
/// of the previous version that follows the last chunk both versions share (CDC keeps boundaries
/// outside an edit, so that is where the edited region was).
fn save_chunks(
    saver: &BlobSaver<'_>,
    chunker: &Chunker,
    data: &[u8],
    previous: &[BlobId],
) -> Result<Vec<BlobId>> {
    let position: std::collections::HashMap<BlobId, usize> = previous
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let mut next = 0usize;
    let mut ids = Vec::new();
    let mut pos = 0;
    for len in chunker.split(data) {
        let chunk = &data[pos..pos + len];
        pos += len;
        let id = saver.repo_keys().blob_id(chunk);
        let similar = match position.get(&id) {
            Some(&i) => {
                next = i + 1;
                None
            }
            None => {
                let s = previous
                    .get(next.min(previous.len().saturating_sub(1)))
                    .copied();
                next += 1;
                s
            }
        };
        ids.push(saver.save_similar(BlobType::Data, id, chunk, similar)?);
    }
    Ok(ids)
}

fn save_file(
    saver: &BlobSaver<'_>,
    chunker: &Chunker,
    path: &Path,
    size: u64,
    previous: &[BlobId],
    progress: &dyn Progress,
) -> Result<Vec<BlobId>> {
    let what = path.display().to_string();
    let mut f = File::open(path).map_err(|e| Error::io(format!("opening {what}"), e))?;
    if size < STREAM_THRESHOLD {
        let mut data = Vec::with_capacity(size as usize);
        f.read_to_end(&mut data)
            .map_err(|e| Error::io(format!("reading {what}"), e))?;
        let ids = save_chunks(saver, chunker, &data, previous)?;
        progress.bytes(data.len() as u64);
        return Ok(ids);
    }
    let (tx, rx) = sync_channel::<(usize, Vec<u8>)>(4);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut n = 0;
            chunker.stream(f, 2 * chunker.max_size(), &what, |batch| {
                crate::signals::check()?;
                for c in batch {
                    tx.send((n, c)).map_err(|_| Error::Interrupted)?;
                    n += 1;
                }
                Ok(())
            })
        });
        let saved: Vec<(usize, Result<BlobId>)> = rx
            .into_iter()
            .par_bridge()
            .map(|(i, c)| {
                let r = saver.save(BlobType::Data, &c);
                progress.bytes(c.len() as u64);
                (i, r)
            })
            .collect();
        let read = reader
            .join()
            .map_err(|_| Error::InvalidInput("reader thread panicked".into()))?;
        let mut saved = saved;
        saved.sort_by_key(|(i, _)| *i);
        let ids = saved
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Result<Vec<_>>>()?;
        read?;
        Ok(ids)
    })
}

/// Saves the trees below `children` bottom-up; `previous` is the same folder's tree in the parent.
fn save_trees(
    saver: &BlobSaver<'_>,
    children: BTreeMap<String, Item>,
    previous: Option<BlobId>,
) -> Result<BlobId> {
    let mut nodes = Vec::with_capacity(children.len());
    for (_, item) in children {
        nodes.push(match item {
            Item::File { node, .. } | Item::Other { node } => node,
            Item::Dir {
                mut node,
                children,
                previous,
            } => {
                node.subtree = Some(save_trees(saver, children, previous)?);
                node
            }
        });
    }
    let tree = Tree {
        version: TREE_VERSION,
        nodes,
    }
    .encode();
    saver.save_similar(
        BlobType::Tree,
        saver.repo_keys().blob_id(&tree),
        &tree,
        previous,
    )
}

/// The newest snapshot of `host` with exactly `paths`, the parent of a new backup.
///
/// # Errors
/// Backend errors listing snapshots.
pub fn find_parent(
    repo: &Repository,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(repo
        .snapshots()?
        .into_iter()
        .rev()
        .find(|(_, s)| s.hostname == host && s.paths == paths))
}

/// Runs a backup under a shared lock and commits a snapshot.
///
/// # Errors
/// [`Error::InvalidInput`] for a missing path; [`Error::NotAllowed`] for a read-only (`restore`)
/// key; lock, backend and cache errors. Unreadable files are not errors: they are left out and listed
/// in [`BackupResult::warnings`].
pub fn backup(
    repo: &Repository,
    mut opts: BackupOptions,
    stdin: Option<&mut dyn Read>,
    progress: &dyn Progress,
) -> Result<BackupResult> {
    repo.require_write("add snapshots")?;
    let lock = LockGuard::acquire(repo.backend_arc(), repo.keys().clone(), false, "backup")?;
    let start = chrono::Utc::now();
    let host = opts.host.clone().unwrap_or_else(crate::util::hostname);
    let chunker = Chunker::new(repo.config().chunker.clone(), repo.keys().chunker_seed())?;
    let saver = BlobSaver::new(repo);
    let mut scan = Scan {
        repo,
        force: opts.force,
        warnings: vec![],
        summary: Summary::default(),
    };

    let documents = opts.documents.take();
    let from_documents = documents.is_some();
    let now = start.timestamp_nanos_opt().unwrap_or(0);
    let (paths, parent, root_children) = if let Some(docs) = documents {
        let paths = vec![opts
            .source
            .as_ref()
            .map_or_else(|| "documents".to_string(), |s| s.path())];
        let parent = match &opts.parent {
            Some(id) => Some((*id, repo.load_snapshot(id)?)),
            None if opts.force => None,
            None => find_parent(repo, &host, &paths)?,
        };
        let root = documents_tree(&mut scan, docs, parent.as_ref().map(|(_, s)| s.tree), now)?;
        (paths, parent, root)
    } else if let Some(name) = &opts.stdin_filename {
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidInput(format!(
                "--stdin-filename {name:?} must be a plain file name"
            )));
        }
        let input = stdin.ok_or_else(|| Error::InvalidInput("no standard input to read".into()))?;
        let paths = vec![format!("/{name}")];
        // The same stream name in the parent snapshot gives delta candidates, as for a file.
        let parent = match &opts.parent {
            Some(id) => Some((*id, repo.load_snapshot(id)?)),
            None if opts.force => None,
            None => find_parent(repo, &host, &paths)?,
        };
        let previous: Option<Vec<BlobId>> = match &parent {
            Some((_, s)) => crate::walk::find(repo, &s.tree, &paths[0])?
                .filter(|n| n.node_type == NodeType::File)
                .map(|n| n.content),
            None => None,
        };
        // Small input (a gateway export piped in) is read whole; larger input is streamed.
        let mut head = Vec::new();
        input
            .take(STREAM_THRESHOLD)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("reading standard input", e))?;
        let (ids, size) = if (head.len() as u64) < STREAM_THRESHOLD {
            let ids = save_chunks(&saver, &chunker, &head, previous.as_deref().unwrap_or(&[]))?;
            (ids, head.len() as u64)
        } else {
            let mut ids = Vec::new();
            let mut size = 0u64;
            let rest = std::io::Cursor::new(head).chain(input);
            chunker.stream(rest, 4 * chunker.max_size(), "standard input", |batch| {
                for c in batch {
                    size += c.len() as u64;
                    ids.push(saver.save(BlobType::Data, &c)?);
                }
                Ok(())
            })?;
            (ids, size)
        };
        match &previous {
            None => scan.summary.files_new = 1,
            Some(p) if *p == ids => scan.summary.files_unchanged = 1,
            Some(_) => scan.summary.files_changed = 1,
        }
        let node = Node {
            mtime_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            size,
            content: ids,
            ..Node::new(name, NodeType::File)
        };
        scan.summary.total_files = 1;
        scan.summary.total_bytes = size;
        let mut children = BTreeMap::new();
        children.insert(name.clone(), Item::Other { node });
        (paths, parent, children)
    } else {
        if opts.paths.is_empty() {
            return Err(Error::InvalidInput(
                "nothing to back up: give one or more paths, or --stdin".into(),
            ));
        }
        let mut abs = Vec::new();
        for p in &opts.paths {
            let a = std::path::absolute(p)
                .map_err(|e| Error::io(format!("resolving {}", p.display()), e))?;
            if fs::symlink_metadata(&a).is_err() {
                return Err(Error::InvalidInput(format!(
                    "{} does not exist",
                    p.display()
                )));
            }
            let s = a
                .to_str()
                .ok_or_else(|| Error::InvalidInput(format!("{} is not UTF-8", a.display())))?;
            abs.push(s.trim_end_matches('/').to_string());
        }
        abs.sort();
        abs.dedup();
        // As in restic, --force overrides the parent: every file is read and reported as new.
        let parent = match &opts.parent {
            Some(id) => Some((*id, repo.load_snapshot(id)?)),
            None if opts.force => None,
            None => find_parent(repo, &host, &abs)?,
        };
        // The parent's root as a directory node, so that the walk below can descend into it.
        let parent_root = parent.as_ref().map(|(_, s)| Node {
            subtree: Some(s.tree),
            ..dir_node("")
        });
        // Build the virtual root: each path's ancestors become directories holding it.
        let mut root = Item::Dir {
            node: dir_node(""),
            children: BTreeMap::new(),
            previous: None,
        };
        for p in &abs {
            let comps: Vec<&str> = crate::walk::components(p);
            let mut cur = &mut root;
            let mut pnode = parent_root.clone();
            let mut fs_path = PathBuf::from("/");
            for (i, c) in comps.iter().enumerate() {
                fs_path.push(c);
                let ptree = scan.parent_children(pnode.as_ref());
                let child_parent = ptree
                    .as_ref()
                    .and_then(|t| t.nodes.iter().find(|n| n.name == *c))
                    .cloned();
                let Item::Dir { children, .. } = cur else {
                    break;
                };
                if i + 1 == comps.len() {
                    if let Some(item) = scan.scan(&fs_path, c, child_parent.as_ref()) {
                        children.insert(c.to_string(), item);
                    }
                    break;
                }
                if !children.contains_key(*c) {
                    let m = fs::metadata(&fs_path)
                        .map_err(|e| Error::io(format!("reading {}", fs_path.display()), e))?;
                    children.insert(
                        c.to_string(),
                        Item::Dir {
                            node: meta_node(c, NodeType::Dir, &m),
                            children: BTreeMap::new(),
                            previous: child_parent.as_ref().and_then(|n| n.subtree),
                        },
                    );
                }
                cur = children.get_mut(*c).expect("inserted above");
                pnode = child_parent;
            }
        }
        let Item::Dir { children, .. } = root else {
            unreachable!("root is a directory")
        };
        (abs, parent, children)
    };

    // Read the files that changed: small ones in parallel, large ones streamed one at a time.
    let mut root_children = root_children;
    let mut files: Vec<&mut Item> = Vec::new();
    root_children
        .values_mut()
        .for_each(|c| collect_files(c, &mut files));
    let total: u64 = files
        .iter()
        .map(|i| {
            if let Item::File { node, .. } = i {
                node.size
            } else {
                0
            }
        })
        .sum();
    progress.start(total, files.len() as u64);
    let (mut large, small): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|i| matches!(i, Item::File { node, .. } if node.size >= STREAM_THRESHOLD));
    let failures = Mutex::new(Vec::new());
    let fail = |item: &mut Item, e: Error| {
        if let Item::File { node, path, .. } = item {
            failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((path.clone(), e.to_string()));
            node.content.clear();
            node.name.clear(); // marks the item for removal
        }
    };
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    small.into_par_iter().for_each(|item| {
        if crate::signals::interrupted() {
            *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(Error::Interrupted);
            return;
        }
        if let Item::File {
            node,
            path,
            previous,
            document,
            ..
        } = item
        {
            let saved = match document {
                Some((data, _)) => save_chunks(&saver, &chunker, data, previous).inspect(|_| {
                    progress.bytes(data.len() as u64);
                }),
                None => save_file(&saver, &chunker, path, node.size, previous, progress),
            };
            match saved {
                Ok(ids) => node.content = ids,
                Err(e @ Error::Io { .. }) => fail(item, e),
                Err(e) => *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
            }
        }
    });
    if let Some(e) = fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    for item in large.iter_mut() {
        crate::signals::check()?;
        if let Item::File { node, path, .. } = item {
            match save_file(&saver, &chunker, path, node.size, &[], progress) {
                Ok(ids) => node.content = ids,
                Err(e @ Error::Io { .. }) => fail(item, e),
                Err(e) => return Err(e),
            }
        }
    }
    progress.finish();
    for (p, e) in failures.into_inner().unwrap_or_else(|e| e.into_inner()) {
        tracing::debug!("{}: {e}", p.display());
        scan.warnings.push(e);
        scan.summary.files_failed += 1;
    }
    prune_failed(&mut root_children);
    if from_documents {
        settle_documents(&mut root_children, now, &mut scan.summary);
    }

    let tree = save_trees(&saver, root_children, parent.as_ref().map(|(_, s)| s.tree))?;
    lock.check()?;
    crate::signals::check()?;
    saver.commit_index()?;
    let stats = saver.stats();
    let mut summary = scan.summary;
    summary.blobs_added = stats.blobs_added;
    summary.data_added = stats.data_added;
    summary.data_added_packed = stats.data_added_packed;
    summary.backup_start = start.to_rfc3339();
    summary.backup_end = chrono::Utc::now().to_rfc3339();
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: opts
            .time
            .unwrap_or(start)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        tree,
        paths,
        hostname: host,
        username: crate::util::username(),
        tags: opts.tags,
        label: opts.label,
        description: opts.description,
        parent: parent.map(|(id, _)| id),
        summary,
        program_version: format!("gatevault {}", env!("CARGO_PKG_VERSION")),
        source: opts.source,
        original: None,
        origin: None,
    };
    lock.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupResult {
        id,
        snapshot,
        warnings: scan.warnings,
    })
}

/// The item tree of in-memory documents (`a/b/c.json` to bytes), each file paired with the same path
/// of the parent snapshot's tree `parent` (delta bases, and the mtime kept when unchanged). Small
/// text documents are inlined into their node; `now` is their mtime when new or changed.
fn documents_tree(
    scan: &mut Scan<'_>,
    docs: BTreeMap<String, Vec<u8>>,
    parent: Option<BlobId>,
    now: i64,
) -> Result<BTreeMap<String, Item>> {
    let mut root: BTreeMap<String, Item> = BTreeMap::new();
    let mut trees: std::collections::HashMap<String, Option<Tree>> =
        std::collections::HashMap::new();
    let parent_root = parent.map(|t| Node {
        subtree: Some(t),
        ..dir_node("")
    });
    trees.insert(String::new(), scan.parent_children(parent_root.as_ref()));
    let mut inlined: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (path, data) in docs {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let Some((name, dirs)) = comps.split_last() else {
            continue;
        };
        let mut children = &mut root;
        let mut at = String::new();
        for d in dirs {
            let parent_dir = trees
                .get(&at)
                .and_then(|t| t.as_ref())
                .and_then(|t| t.nodes.iter().find(|n| n.name == *d))
                .cloned();
            let sub = crate::walk::join(&at, d);
            if !trees.contains_key(&sub) {
                let t = scan.parent_children(parent_dir.as_ref());
                trees.insert(sub.clone(), t);
                scan.summary.dirs += 1;
            }
            let item = children.entry(d.to_string()).or_insert_with(|| Item::Dir {
                node: dir_node(d),
                children: BTreeMap::new(),
                previous: parent_dir.and_then(|n| n.subtree),
            });
            let Item::Dir { children: c, .. } = item else {
                return Err(Error::InvalidInput(format!(
                    "document {path}: {d} is also a document, not a folder"
                )));
            };
            children = c;
            at = sub;
        }
        let prev = trees
            .get(&at)
            .and_then(|t| t.as_ref())
            .and_then(|t| t.nodes.iter().find(|n| n.name == *name))
            .filter(|n| n.node_type == NodeType::File);
        scan.summary.total_files += 1;
        scan.summary.total_bytes += data.len() as u64;
        let node = Node {
            size: data.len() as u64,
            ..Node::new(name, NodeType::File)
        };
        let folder = inlined.entry(at.clone()).or_default();
        let item = match String::from_utf8(data) {
            // Small text documents (entities) live in the tree itself; see `Node::inline`.
            Ok(text) if text.len() <= INLINE_MAX && *folder + text.len() <= INLINE_FOLDER_MAX => {
                *folder += text.len();
                let mut node = Node {
                    inline: Some(text),
                    ..node
                };
                node.mtime_ns = match prev {
                    Some(p) if p.same_data(&node) => {
                        scan.summary.files_unchanged += 1;
                        p.mtime_ns
                    }
                    Some(_) => {
                        scan.summary.files_changed += 1;
                        now
                    }
                    None => {
                        scan.summary.files_new += 1;
                        now
                    }
                };
                Item::Other { node }
            }
            data => Item::File {
                node,
                path: PathBuf::from(&path),
                read: true,
                previous: prev.map(|n| n.content.clone()).unwrap_or_default(),
                document: Some((
                    data.map_or_else(|e| e.into_bytes(), String::into_bytes),
                    prev.map(|n| n.mtime_ns),
                )),
            },
        };
        children.insert(name.to_string(), item);
    }
    Ok(root)
}

/// After saving documents: an unchanged document keeps the parent's mtime (so the tree does not
/// change and the mtime tells when the entity last changed), a new or changed one gets `now`.
fn settle_documents(children: &mut BTreeMap<String, Item>, now: i64, summary: &mut Summary) {
    for item in children.values_mut() {
        match item {
            Item::File {
                node,
                previous,
                document: Some((_, prev_mtime)),
                ..
            } => match prev_mtime {
                Some(t) if *previous == node.content => {
                    node.mtime_ns = *t;
                    summary.files_unchanged += 1;
                }
                Some(_) => {
                    node.mtime_ns = now;
                    summary.files_changed += 1;
                }
                None => {
                    node.mtime_ns = now;
                    summary.files_new += 1;
                }
            },
            Item::Dir { children, .. } => settle_documents(children, now, summary),
            _ => {}
        }
    }
}

fn prune_failed(children: &mut BTreeMap<String, Item>) {
    children.retain(|_, item| match item {
        Item::File { node, .. } => !node.name.is_empty(),
        Item::Dir { children, .. } => {
            prune_failed(children);
            true
        }
        Item::Other { .. } => true,
    });
}
