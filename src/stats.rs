//! Repository statistics: logical size, unique and stored sizes, dedup and compression ratios.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::format::{BlobType, NodeType};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;

/// Figures of `gatevault stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files over all snapshots (a file in two snapshots counts twice).
    pub total_files: u64,
    /// Bytes a restore of every snapshot would write.
    pub logical_size: u64,
    /// Plaintext bytes of the distinct data blobs those snapshots use.
    pub unique_size: u64,
    /// Distinct data blobs they use.
    pub unique_blobs: u64,
    /// Bytes of all pack files in the index.
    pub stored_size: u64,
    /// Packs in the index.
    pub packs: u64,
    /// logical_size / unique_size.
    pub dedup_ratio: f64,
    /// unique_size / stored bytes of those blobs.
    pub compression_ratio: f64,
}

/// Computes statistics over `snapshots` (all when empty).
///
/// # Errors
/// Errors loading snapshots, trees or the index.
pub fn stats(repo: &Repository, snapshots: &[SnapshotId]) -> Result<Stats> {
    let all = repo.snapshots()?;
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(id, _)| snapshots.is_empty() || snapshots.contains(id))
        .collect();
    let index = repo.index()?;
    let mut st = Stats {
        snapshots: chosen.len() as u64,
        ..Default::default()
    };
    // Per tree: (files, bytes) below it, so shared subtrees are walked once.
    let mut tree_totals: HashMap<BlobId, (u64, u64)> = HashMap::new();
    let mut blobs: HashSet<BlobId> = HashSet::new();
    let mut stored_of_unique = 0u64;
    fn totals(
        repo: &Repository,
        id: &BlobId,
        memo: &mut HashMap<BlobId, (u64, u64)>,
        blobs: &mut HashSet<BlobId>,
    ) -> Result<(u64, u64)> {
        if let Some(t) = memo.get(id) {
            return Ok(*t);
        }
        let tree = repo.load_tree(id)?;
        let (mut files, mut bytes) = (0, 0);
        for n in &tree.nodes {
            match n.node_type {
                NodeType::File => {
                    files += 1;
                    bytes += n.size;
                    blobs.extend(n.content.iter().copied());
                }
                NodeType::Dir => {
                    if let Some(s) = &n.subtree {
                        let (f, b) = totals(repo, s, memo, blobs)?;
                        files += f;
                        bytes += b;
                    }
                }
                NodeType::Symlink => {}
            }
        }
        memo.insert(*id, (files, bytes));
        Ok((files, bytes))
    }
    for (_, s) in &chosen {
        let (f, b) = totals(repo, &s.tree, &mut tree_totals, &mut blobs)?;
        st.total_files += f;
        st.logical_size += b;
    }
    for b in &blobs {
        if let Some(loc) = index.lookup(BlobType::Data, b)? {
            st.unique_size += loc.entry.raw_length as u64;
            stored_of_unique += loc.entry.length as u64;
        }
    }
    st.unique_blobs = blobs.len() as u64;
    let packs = index.packs()?;
    st.packs = packs.len() as u64;
    st.stored_size = packs.values().sum();
    st.dedup_ratio = if st.unique_size > 0 {
        st.logical_size as f64 / st.unique_size as f64
    } else {
        0.0
    };
    st.compression_ratio = if stored_of_unique > 0 {
        st.unique_size as f64 / stored_of_unique as f64
    } else {
        0.0
    };
    Ok(st)
}
