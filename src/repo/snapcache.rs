//! The local snapshot cache: decrypted snapshots kept in one sealed file of the cache directory, so
//! that listing a long history reads one file instead of opening and decrypting thousands.
//!
//! It is a copy, never trusted blindly. It is sealed with the repository's keys (a file that does not
//! open, or that belongs to another repository, is ignored and rewritten), and on every use it is
//! compared with the repository's `snapshots/` listing: only snapshots listed now are taken from it
//! (snapshot objects are write-once, so a name always holds the same snapshot); listed snapshots it
//! lacks are read from the repository and added; entries of snapshots gone from the listing are
//! dropped. Only snapshots that decrypted and parsed are cached, so
//! a damaged one is read (and reported) again each time. `check`, `prune` and `erase` never use it
//! (they call [`crate::repo::Repository::load_all_snapshots`]).
//!
//! File `<cache dir>/<repo id>/snapshots`: an envelope ([`RepoKeys::seal_object`] of kind Snapshot under
//! the id [`RepoKeys::local_cache_id`]`("snapshots")`, which no stored snapshot has) around
//! `"GVSC" | version u8 (=1) | n u32 | n × (snapshot id[32] | len u32 | plaintext)`,
//! the plaintext being the snapshot's decrypted JSON as stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::crypto::{Kind, RepoKeys};
use crate::id::SnapshotId;

const MAGIC: &[u8; 4] = b"GVSC";
const VERSION: u8 = 1;

/// One cached snapshot: its decrypted plaintext.
pub(crate) struct Cached {
    pub(crate) plain: Vec<u8>,
}

/// The cache file of repository `keys` under `cache_root`.
pub(crate) fn path(cache_root: &Path, keys: &RepoKeys) -> PathBuf {
    cache_root.join(keys.repo_id().to_hex()).join("snapshots")
}

/// Reads the cache; anything unreadable (missing, damaged, another repository, another version)
/// gives an empty cache.
pub(crate) fn load(path: &Path, keys: &RepoKeys) -> HashMap<SnapshotId, Cached> {
    let Ok(env) = std::fs::read(path) else {
        return HashMap::new();
    };
    let id = keys.local_cache_id("snapshots");
    let what = format!("snapshot cache {}", path.display());
    match keys
        .open_object(Kind::Snapshot, &id, &env, &what)
        .ok()
        .and_then(|plain| decode(&plain))
    {
        Some(m) => m,
        None => {
            tracing::warn!("{what} is unreadable; rebuilding it from the repository");
            HashMap::new()
        }
    }
}

fn decode(b: &[u8]) -> Option<HashMap<SnapshotId, Cached>> {
    if b.get(..4)? != MAGIC || *b.get(4)? != VERSION {
        return None;
    }
    let n = u32::from_le_bytes(b.get(5..9)?.try_into().ok()?) as usize;
    let mut out = HashMap::with_capacity(n.min(1 << 20));
    let mut at = 9;
    for _ in 0..n {
        let id = SnapshotId(b.get(at..at + 32)?.try_into().ok()?);
        let len = u32::from_le_bytes(b.get(at + 32..at + 36)?.try_into().ok()?) as usize;
        let plain = b.get(at + 36..at + 36 + len)?.to_vec();
        at += 36 + len;
        out.insert(id, Cached { plain });
    }
    (at == b.len()).then_some(out)
}

/// Replaces the cache with `entries` (written to a temporary file and renamed, so a concurrent reader
/// sees the old or the new file). Failures only cost the next run the reads the cache would save.
pub(crate) fn store(path: &Path, keys: &RepoKeys, entries: &[(SnapshotId, &Cached)]) {
    let mut b = Vec::with_capacity(
        9 + entries
            .iter()
            .map(|(_, c)| 36 + c.plain.len())
            .sum::<usize>(),
    );
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, c) in entries {
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&(c.plain.len() as u32).to_le_bytes());
        b.extend_from_slice(&c.plain);
    }
    let env = keys.seal_object(Kind::Snapshot, &keys.local_cache_id("snapshots"), &b);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".snapshots-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        std::fs::write(&tmp, &env)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    if let Err(e) = write() {
        tracing::warn!("cannot write the snapshot cache {}: {e}", path.display());
    }
}
