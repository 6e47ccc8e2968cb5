//! Walking snapshot trees: every node with its path, and lookups by path.

use crate::error::{Error, Result};
use crate::format::{Node, NodeType, Tree};
use crate::id::BlobId;
use crate::repo::Repository;

/// Joins a snapshot path and a name ("/" is the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Calls `f` for every node below tree `root` (depth first, sorted by name) with its absolute path.
/// Returning `false` from `f` for a directory skips its contents.
///
/// # Errors
/// Errors loading trees, and whatever `f` returns.
pub fn walk(
    repo: &Repository,
    root: &BlobId,
    f: &mut dyn FnMut(&str, &Node) -> Result<bool>,
) -> Result<()> {
    walk_at(repo, root, "/", f)
}

fn walk_at(
    repo: &Repository,
    tree: &BlobId,
    dir: &str,
    f: &mut dyn FnMut(&str, &Node) -> Result<bool>,
) -> Result<()> {
    let t = repo.load_tree(tree)?;
    for n in &t.nodes {
        let path = join(dir, &n.name);
        let descend = f(&path, n)?;
        if descend && n.node_type == NodeType::Dir {
            if let Some(sub) = &n.subtree {
                walk_at(repo, sub, &path, f)?;
            }
        }
    }
    Ok(())
}

/// The components of a snapshot path ("/a/b" -> ["a", "b"]).
pub fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Finds the node at `path` below `root`; `Ok(None)` when there is none. The root itself has no node.
///
/// # Errors
/// Errors loading trees.
pub fn find(repo: &Repository, root: &BlobId, path: &str) -> Result<Option<Node>> {
    let comps = components(path);
    let mut tree: Tree = repo.load_tree(root)?;
    for (i, c) in comps.iter().enumerate() {
        let Some(n) = tree.nodes.iter().find(|n| n.name == *c).cloned() else {
            return Ok(None);
        };
        if i + 1 == comps.len() {
            return Ok(Some(n));
        }
        match (&n.node_type, &n.subtree) {
            (NodeType::Dir, Some(sub)) => tree = repo.load_tree(sub)?,
            _ => return Ok(None),
        }
    }
    Err(Error::InvalidInput(
        "the snapshot root is a directory, not a file; name a path inside it".into(),
    ))
}
