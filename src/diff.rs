//! Differences between two snapshots: files added, removed and changed, with sizes.
//! Identical subtrees (same tree id) are skipped without being loaded.

use serde::Serialize;

use crate::error::Result;
use crate::format::{Node, NodeType, Tree};
use crate::id::BlobId;
use crate::repo::Repository;

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// Content or type differs.
    Modified,
    /// Only metadata (mode, time) differs.
    Metadata,
}

/// One differing path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// Absolute path in the snapshots.
    pub path: String,
    /// The kind of change.
    pub change: Change,
    /// File, dir or symlink (of the newer side when both exist).
    pub node_type: NodeType,
    /// Size in the first snapshot.
    pub old_size: Option<u64>,
    /// Size in the second snapshot.
    pub new_size: Option<u64>,
}

/// Totals of a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffStats {
    /// Files added.
    pub added: u64,
    /// Files removed.
    pub removed: u64,
    /// Files modified.
    pub modified: u64,
    /// Bytes of added and modified files in the second snapshot.
    pub bytes_added: u64,
    /// Bytes of removed and modified files in the first snapshot.
    pub bytes_removed: u64,
}

/// Compares trees `a` and `b`.
///
/// # Errors
/// Errors loading trees.
pub fn diff(repo: &Repository, a: &BlobId, b: &BlobId) -> Result<(Vec<DiffEntry>, DiffStats)> {
    let mut out = Vec::new();
    diff_trees(repo, Some(*a), Some(*b), "/", &mut out)?;
    let mut st = DiffStats::default();
    for e in out.iter().filter(|e| e.node_type == NodeType::File) {
        match e.change {
            Change::Added => st.added += 1,
            Change::Removed => st.removed += 1,
            Change::Modified => st.modified += 1,
            Change::Metadata => {}
        }
        if e.change != Change::Metadata {
            st.bytes_added += e.new_size.unwrap_or(0);
            st.bytes_removed += e.old_size.unwrap_or(0);
        }
    }
    Ok((out, st))
}

fn load(repo: &Repository, t: Option<BlobId>) -> Result<Tree> {
    match t {
        Some(id) => repo.load_tree(&id),
        None => Ok(Tree::default()),
    }
}

fn size(n: &Node) -> Option<u64> {
    (n.node_type == NodeType::File).then_some(n.size)
}

fn diff_trees(
    repo: &Repository,
    a: Option<BlobId>,
    b: Option<BlobId>,
    dir: &str,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (load(repo, a)?, load(repo, b)?);
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let ord = match (na, nb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                let x = na.expect("less means a has a node");
                side(repo, x, dir, Change::Removed, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = nb.expect("greater means b has a node");
                side(repo, y, dir, Change::Added, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("equal"), nb.expect("equal"));
                let path = crate::walk::join(dir, &x.name);
                if x.node_type != y.node_type {
                    side(repo, x, dir, Change::Removed, out)?;
                    side(repo, y, dir, Change::Added, out)?;
                } else if x.node_type == NodeType::Dir {
                    diff_trees(repo, x.subtree, y.subtree, &path, out)?;
                } else {
                    let change =
                        if !x.same_data(y) || x.link_target != y.link_target || x.size != y.size {
                            Some(Change::Modified)
                        } else if x.mode != y.mode || x.mtime_ns != y.mtime_ns {
                            Some(Change::Metadata)
                        } else {
                            None
                        };
                    if let Some(change) = change {
                        out.push(DiffEntry {
                            path,
                            change,
                            node_type: y.node_type,
                            old_size: size(x),
                            new_size: size(y),
                        });
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Reports `n` and, for a directory, everything below it as added or removed.
fn side(
    repo: &Repository,
    n: &Node,
    dir: &str,
    change: Change,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let path = crate::walk::join(dir, &n.name);
    let (old, new) = if change == Change::Added {
        (None, size(n))
    } else {
        (size(n), None)
    };
    out.push(DiffEntry {
        path: path.clone(),
        change,
        node_type: n.node_type,
        old_size: old,
        new_size: new,
    });
    if n.node_type == NodeType::Dir {
        let (a, b) = if change == Change::Added {
            (None, n.subtree)
        } else {
            (n.subtree, None)
        };
        diff_trees(repo, a, b, &path, out)?;
    }
    Ok(())
}
