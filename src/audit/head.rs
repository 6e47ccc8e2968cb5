//! The audit chain head this machine last saw, kept outside the repository.
//!
//! Anyone holding a key could rewrite the whole log consistently, and anyone who can delete objects can
//! drop its last entries; neither breaks a link inside the chain. So every machine remembers the newest
//! head it appended or verified in `<cache dir>/<repo id>/audit-head` (JSON `{"seq","hash","seen"}`),
//! and `audit verify` and `check` require the chain to still contain it. The file only ever moves
//! forward along the chain: a head the chain no longer contains is kept (and reported) until the user
//! runs `audit verify --reset-head`. Updates are serialized by a lock on `audit-head.lock` and written
//! through a temporary file and a rename.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{entry_path, BrokenLink, Head};
use crate::error::{Error, Result};
use crate::id::RepoId;

/// A head the chain must still contain: remembered by this machine, or given by the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remembered {
    /// Seq of the entry.
    pub seq: u64,
    /// Hex BLAKE3 hash of its plaintext.
    pub hash: String,
    /// When this machine saw it (RFC 3339), if known.
    pub seen: Option<String>,
    /// `this machine` or `--head`.
    pub origin: String,
}

impl Remembered {
    /// A head this machine saw at `seen`.
    pub fn this_machine(head: Head, seen: &str) -> Self {
        Self {
            seq: head.seq,
            hash: head.hash_hex(),
            seen: Some(seen.to_string()),
            origin: "this machine".into(),
        }
    }

    /// A head the user gave (`audit verify --head SEQ:HASH`).
    pub fn given(head: Head) -> Self {
        Self {
            seq: head.seq,
            hash: head.hash_hex(),
            seen: None,
            origin: "--head".into(),
        }
    }

    fn who(&self) -> String {
        match (&self.seen, self.origin.as_str()) {
            (Some(date), "this machine") => format!(
                "this machine saw seq {} with hash {} on {date}",
                self.seq,
                short(&self.hash)
            ),
            (_, origin) => format!(
                "the head given with {origin} is seq {} with hash {}",
                self.seq,
                short(&self.hash)
            ),
        }
    }

    /// Where a chain ending at `head`, whose entry `n` hashes to `hashes[n - 1]`, fails to contain this
    /// head (`None` when it contains it).
    pub(crate) fn missing_from(&self, head: Head, hashes: &[[u8; 32]]) -> Option<BrokenLink> {
        const ACCEPT: &str = "if the log was knowingly replaced (a repository restored from an older copy), `gatevault audit verify --reset-head` makes this machine remember the current head instead";
        if self.seq == 0 {
            return None;
        }
        if self.seq > head.seq {
            let missing = head.seq + 1;
            return Some(BrokenLink {
                seq: missing,
                object: entry_path(missing),
                problem: format!(
                    "the chain ends at seq {} but {}: its last entries were deleted, or the log was rolled back",
                    head.seq,
                    self.who()
                ),
                next_step: format!("restore the missing entries from another copy of the repository (a replica, or a backup of its audit/ folder); {ACCEPT}"),
            });
        }
        let have = hex::encode(hashes.get(self.seq as usize - 1)?);
        (have != self.hash).then(|| BrokenLink {
            seq: self.seq,
            object: entry_path(self.seq),
            problem: format!(
                "entry {} hashes to {} but {}: the log was rewritten since",
                self.seq,
                short(&have),
                self.who()
            ),
            next_step: format!("find out who rewrote it (the storage's access log, other copies of the repository); {ACCEPT}"),
        })
    }
}

fn short(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

#[derive(Serialize, Deserialize)]
struct Stored {
    seq: u64,
    hash: String,
    seen: String,
}

/// The file holding the head this machine remembers for one repository.
#[derive(Clone, Debug)]
pub struct HeadFile {
    path: PathBuf,
}

impl HeadFile {
    /// `<cache_dir>/<repo id>/audit-head`.
    pub fn in_cache(cache_dir: &Path, repo: &RepoId) -> Self {
        Self {
            path: cache_dir.join(repo.to_hex()).join("audit-head"),
        }
    }

    /// Where the head is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", self.path.display()), e)
    }

    /// The remembered head, if any.
    ///
    /// # Errors
    /// I/O errors other than absence; [`Error::Cache`] when the file does not parse (it is not
    /// repaired: a damaged head file is worth a look).
    pub fn load(&self) -> Result<Option<Remembered>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("reading", e)),
        };
        let s: Stored = serde_json::from_slice(&bytes).map_err(|e| Error::Cache {
            path: self.path.display().to_string(),
            reason: format!("not a remembered audit head ({e}); if it cannot be explained, `gatevault audit verify --reset-head` replaces it"),
        })?;
        let head: Head = format!("{}:{}", s.seq, s.hash)
            .parse()
            .map_err(|e: Error| Error::Cache {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Some(Remembered::this_machine(head, &s.seen)))
    }

    /// Holds the update lock while `f` runs.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        crate::util::with_file_lock(&self.path, f)
    }

    fn store(&self, head: Head) -> Result<()> {
        let s = Stored {
            seq: head.seq,
            hash: head.hash_hex(),
            seen: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        crate::util::replace_file(
            &self.path,
            &serde_json::to_vec(&s).expect("a head serializes"),
        )
    }

    /// Remembers `new` if the chain it ends still contains the remembered head; `hash_at(seq)` gives the
    /// hash of the chain's entry `seq` (`None` when there is none). Returns the remembered head when the
    /// chain does not contain it (it is then kept, not replaced).
    ///
    /// # Errors
    /// I/O errors of the cache, and those of `hash_at`.
    pub fn advance(
        &self,
        new: Head,
        hash_at: &dyn Fn(u64) -> Result<Option<[u8; 32]>>,
    ) -> Result<Option<Remembered>> {
        self.locked(|| {
            let old = self.load()?;
            if let Some(old) = &old {
                let contained =
                    old.seq == 0 || hash_at(old.seq)?.is_some_and(|h| hex::encode(h) == old.hash);
                if !contained {
                    return Ok(Some(old.clone()));
                }
                if old.seq >= new.seq {
                    return Ok(None);
                }
            }
            self.store(new)?;
            Ok(None)
        })
    }

    /// Replaces the remembered head by `new`; returns the one replaced.
    ///
    /// # Errors
    /// I/O errors of the cache.
    pub fn reset(&self, new: Head) -> Result<Option<Remembered>> {
        self.locked(|| {
            let old = self.load().unwrap_or(None);
            self.store(new)?;
            Ok(old)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, b: u8) -> Head {
        Head { seq, hash: [b; 32] }
    }

    #[test]
    fn moves_forward_along_the_chain_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = HeadFile::in_cache(dir.path(), &RepoId([1; 32]));
        assert_eq!(f.load().unwrap(), None);
        // The chain: entry n hashes to [n; 32].
        let chain = |len: u64| move |s: u64| Ok((s >= 1 && s <= len).then_some([s as u8; 32]));
        assert_eq!(f.advance(head(2, 2), &chain(2)).unwrap(), None);
        assert_eq!(f.load().unwrap().unwrap().seq, 2);
        assert_eq!(f.advance(head(5, 5), &chain(5)).unwrap(), None);
        // An older head (a concurrent appender finished later) does not move it back.
        assert_eq!(f.advance(head(4, 4), &chain(5)).unwrap(), None);
        let r = f.load().unwrap().unwrap();
        assert_eq!((r.seq, r.hash.clone()), (5, hex::encode([5; 32])));
        // A chain that no longer contains it (truncated, or rewritten) leaves it in place.
        let conflict = f.advance(head(3, 3), &chain(3)).unwrap().unwrap();
        assert_eq!(conflict.seq, 5);
        let rewritten = |s: u64| Ok((s <= 6).then_some([0xee; 32]));
        assert!(f.advance(head(6, 0xee), &rewritten).unwrap().is_some());
        assert_eq!(f.load().unwrap().unwrap().seq, 5);
        // Until it is reset.
        assert_eq!(f.reset(head(3, 3)).unwrap().unwrap().seq, 5);
        assert_eq!(f.load().unwrap().unwrap().seq, 3);
        fs::write(f.path(), b"{").unwrap();
        assert!(matches!(f.load(), Err(Error::Cache { .. })));
    }

    #[test]
    fn missing_from_names_the_first_missing_entry() {
        let seen = Remembered::this_machine(head(3, 3), "2025-02-03T04:05:06Z");
        let hashes = [[1; 32], [2; 32], [3; 32]];
        assert_eq!(seen.missing_from(head(3, 3), &hashes), None);
        let b = seen.missing_from(head(2, 2), &hashes[..2]).unwrap();
        assert_eq!(b.seq, 3);
        assert!(
            b.problem.contains("the chain ends at seq 2 but this machine saw seq 3 with hash 03030303 on 2025-02-03T04:05:06Z"),
            "{}",
            b.problem
        );
        let b = seen
            .missing_from(head(4, 4), &[[1; 32], [2; 32], [9; 32], [4; 32]])
            .unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.problem.contains("rewritten"), "{}", b.problem);
    }
}
