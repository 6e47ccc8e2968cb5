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
//! `"GVSC" | version u8 (=2) | n u32 | n × (snapshot id[32] | len u32 | encoded snapshot)`, each
//! snapshot in the binary encoding of [`encode_snapshot`] (version 1 held the stored JSON; parsing
//! 10,000 JSON documents was most of the time of `snapshots` on a long history). The encoding is this
//! program's own: a cache of another version is rebuilt.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::crypto::{Kind, RepoKeys, TAG_LEN};
use crate::format::{Origin, Snapshot, Source, Summary};
use crate::id::{BlobId, SnapshotId};

const MAGIC: &[u8; 4] = b"GVSC";
const VERSION: u8 = 2;

/// The snapshots read from the cache file: its decrypted buffer, and where in it each snapshot's
/// plaintext lies (no copy per snapshot).
#[derive(Default)]
pub(crate) struct Cache {
    buf: Vec<u8>,
    entries: HashMap<SnapshotId, Range<usize>>,
}

impl Cache {
    /// The encoding of snapshot `id`, when the cache has it.
    pub(crate) fn get(&self, id: &SnapshotId) -> Option<&[u8]> {
        self.entries.get(id).map(|r| &self.buf[r.clone()])
    }

    /// Snapshot `id`, when the cache has it and its entry decodes.
    pub(crate) fn snapshot(&self, id: &SnapshotId) -> Option<Snapshot> {
        decode_snapshot(self.get(id)?)
    }

    /// How many snapshots it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The cache file of repository `keys` under `cache_root`.
pub(crate) fn path(cache_root: &Path, keys: &RepoKeys) -> PathBuf {
    cache_root.join(keys.repo_id().to_hex()).join("snapshots")
}

/// Reads the cache; anything unreadable (missing, damaged, another repository, another version)
/// gives an empty cache.
pub(crate) fn load(path: &Path, keys: &RepoKeys) -> Cache {
    let Ok(mut buf) = std::fs::read(path) else {
        return Cache::default();
    };
    let id = keys.local_cache_id("snapshots");
    let what = format!("snapshot cache {}", path.display());
    let total = buf.len();
    let entries = keys
        .open_in_place(Kind::Snapshot, &id, Kind::Snapshot, &id, &mut buf, &what)
        .ok()
        .and_then(|plain| {
            // Decrypted in place: the plaintext lies just before the tag.
            let base = total - TAG_LEN - plain.len();
            decode(plain, base)
        });
    match entries {
        Some(entries) => Cache { buf, entries },
        None => {
            tracing::warn!("{what} is unreadable; rebuilding it from the repository");
            Cache::default()
        }
    }
}

/// The entries of plaintext `b`, as ranges of the buffer in which `b` starts at `base`.
fn decode(b: &[u8], base: usize) -> Option<HashMap<SnapshotId, Range<usize>>> {
    if b.get(..4)? != MAGIC || *b.get(4)? != VERSION {
        return None;
    }
    let n = u32::from_le_bytes(b.get(5..9)?.try_into().ok()?) as usize;
    let mut out = HashMap::with_capacity(n.min(1 << 20));
    let mut at = 9;
    for _ in 0..n {
        let id = SnapshotId(b.get(at..at + 32)?.try_into().ok()?);
        let len = u32::from_le_bytes(b.get(at + 32..at + 36)?.try_into().ok()?) as usize;
        let start = at + 36;
        b.get(start..start + len)?;
        out.insert(id, base + start..base + start + len);
        at = start + len;
    }
    (at == b.len()).then_some(out)
}

/// Replaces the cache with `entries` (written to a temporary file and renamed, so a concurrent reader
/// sees the old or the new file). Failures only cost the next run the reads the cache would save.
pub(crate) fn store(path: &Path, keys: &RepoKeys, entries: &[(SnapshotId, &[u8])]) {
    let mut b = Vec::with_capacity(9 + entries.iter().map(|(_, p)| 36 + p.len()).sum::<usize>());
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, plain) in entries {
        b.extend_from_slice(&id.0);
        b.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        b.extend_from_slice(plain);
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

/// The cache's binary encoding of a snapshot: every field in declaration order; strings, lists and
/// maps prefixed by their length (u32), options by a presence byte, ids as 32 raw bytes. The
/// destructuring patterns name every field, so that a field added to a snapshot does not compile
/// until it is encoded here too.
pub(crate) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let Snapshot {
        version,
        time,
        tree,
        paths,
        hostname,
        username,
        tags,
        label,
        description,
        parent,
        summary,
        program_version,
        source,
        original,
        origin,
    } = s;
    let Summary {
        files_new,
        files_changed,
        files_unchanged,
        dirs,
        files_failed,
        blobs_added,
        data_added,
        data_added_packed,
        total_files,
        total_bytes,
        backup_start,
        backup_end,
    } = summary;
    let mut w = Writer(Vec::with_capacity(512));
    w.u64(u64::from(*version));
    w.str(time);
    w.id(&tree.0);
    w.u32(paths.len());
    paths.iter().for_each(|p| w.str(p));
    w.str(hostname);
    w.str(username);
    w.u32(tags.len());
    for (k, v) in tags {
        w.str(k);
        w.str(v);
    }
    w.opt(label.as_ref(), |w, l| w.str(l));
    w.opt(description.as_ref(), |w, d| w.str(d));
    w.opt(parent.as_ref(), |w, p| w.id(&p.0));
    for n in [
        files_new,
        files_changed,
        files_unchanged,
        dirs,
        files_failed,
        blobs_added,
        data_added,
        data_added_packed,
        total_files,
        total_bytes,
    ] {
        w.u64(*n);
    }
    w.str(backup_start);
    w.str(backup_end);
    w.str(program_version);
    w.opt(source.as_ref(), |w, s| {
        let Source {
            kind,
            endpoint,
            scope,
            version,
        } = s;
        w.str(kind);
        w.str(endpoint);
        w.opt(scope.as_ref(), |w, x| w.str(x));
        w.opt(version.as_ref(), |w, x| w.str(x));
    });
    w.opt(original.as_ref(), |w, o| w.id(&o.0));
    w.opt(origin.as_ref(), |w, o| {
        let Origin {
            repository,
            snapshot,
        } = o;
        w.str(repository);
        w.id(&snapshot.0);
    });
    w.0
}

/// Decodes [`encode_snapshot`]; `None` for anything else (the entry is then read from the repository).
pub(crate) fn decode_snapshot(b: &[u8]) -> Option<Snapshot> {
    let mut r = Reader(b);
    let version = u32::try_from(r.u64()?).ok()?;
    let time = r.str()?;
    let tree = BlobId(r.id()?);
    let paths = (0..r.u32()?).map(|_| r.str()).collect::<Option<_>>()?;
    let hostname = r.str()?;
    let username = r.str()?;
    let tags = (0..r.u32()?)
        .map(|_| Some((r.str()?, r.str()?)))
        .collect::<Option<_>>()?;
    let label = r.opt(Reader::str)?;
    let description = r.opt(Reader::str)?;
    let parent = r.opt(|r| r.id().map(SnapshotId))?;
    let mut n = [0u64; 10];
    for x in &mut n {
        *x = r.u64()?;
    }
    let [files_new, files_changed, files_unchanged, dirs, files_failed, blobs_added, data_added, data_added_packed, total_files, total_bytes] =
        n;
    let summary = Summary {
        files_new,
        files_changed,
        files_unchanged,
        dirs,
        files_failed,
        blobs_added,
        data_added,
        data_added_packed,
        total_files,
        total_bytes,
        backup_start: r.str()?,
        backup_end: r.str()?,
    };
    let program_version = r.str()?;
    let source = r.opt(|r| {
        Some(Source {
            kind: r.str()?,
            endpoint: r.str()?,
            scope: r.opt(Reader::str)?,
            version: r.opt(Reader::str)?,
        })
    })?;
    let original = r.opt(|r| r.id().map(SnapshotId))?;
    let origin = r.opt(|r| {
        Some(Origin {
            repository: r.str()?,
            snapshot: SnapshotId(r.id()?),
        })
    })?;
    r.0.is_empty().then_some(Snapshot {
        version,
        time,
        tree,
        paths,
        hostname,
        username,
        tags,
        label,
        description,
        parent,
        summary,
        program_version,
        source,
        original,
        origin,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, n: usize) {
        let n = u32::try_from(n).expect("a snapshot field shorter than 4 GiB");
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn id(&mut self, id: &[u8; 32]) {
        self.0.extend_from_slice(id);
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        self.0.push(u8::from(v.is_some()));
        if let Some(v) = v {
            f(self, v);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn id(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
    /// `Some(None)` for an absent value, `None` when the input is malformed.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.take(1)? {
            [0] => Some(None),
            [1] => f(self).map(Some),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Snapshot {
        Snapshot {
            version: 1,
            time: "2026-01-02T03:04:05.000000006Z".into(),
            tree: BlobId([7; 32]),
            paths: vec!["/etc/kong".into(), "kong:http://127.0.0.1:8001".into()],
            hostname: "gw-1".into(),
            username: "ops".into(),
            tags: [("Environment", "prod"), ("Owner", ""), ("Ünïcode", "✓")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            label: Some("v2.3".into()),
            description: Some("before the \"cut-over\"".into()),
            parent: Some(SnapshotId([1; 32])),
            summary: Summary {
                files_new: 1,
                files_changed: 2,
                files_unchanged: 3,
                dirs: 4,
                files_failed: 5,
                blobs_added: 6,
                data_added: 7,
                data_added_packed: 8,
                total_files: 9,
                total_bytes: u64::MAX,
                backup_start: "2026-01-02T03:04:05Z".into(),
                backup_end: "2026-01-02T03:04:06Z".into(),
            },
            program_version: "gatevault 0.1.0".into(),
            source: Some(Source {
                kind: "kong".into(),
                endpoint: "http://127.0.0.1:8001".into(),
                scope: Some("default".into()),
                version: Some("3.9".into()),
            }),
            original: Some(SnapshotId([2; 32])),
            origin: Some(Origin {
                repository: "ab".repeat(32),
                snapshot: SnapshotId([3; 32]),
            }),
        }
    }

    #[test]
    fn snapshots_round_trip_with_every_field_set_and_unset() {
        let full = full();
        assert_eq!(decode_snapshot(&encode_snapshot(&full)), Some(full.clone()));
        let mut bare = full.clone();
        bare.tags.clear();
        bare.paths.clear();
        bare.label = None;
        bare.description = None;
        bare.parent = None;
        bare.source = Some(Source::new("caddy", "http://[::1]:2019"));
        bare.original = None;
        bare.origin = None;
        assert_eq!(decode_snapshot(&encode_snapshot(&bare)), Some(bare.clone()));
        bare.source = None;
        assert_eq!(decode_snapshot(&encode_snapshot(&bare)), Some(bare));
    }

    #[test]
    fn malformed_entries_do_not_decode() {
        let b = encode_snapshot(&full());
        // Every truncation, and anything after the end.
        for n in 0..b.len() {
            assert_eq!(decode_snapshot(&b[..n]), None, "truncated to {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(decode_snapshot(&longer), None);
        // A presence byte other than 0 or 1 (the label's, after the fixed-size start), and a string
        // that is not UTF-8.
        let mut bad = b.clone();
        let label_at = b
            .windows(5)
            .position(|w| w == [1, 4, 0, 0, 0])
            .expect("label");
        bad[label_at] = 2;
        assert_eq!(decode_snapshot(&bad), None);
        let mut bad = b.clone();
        let host_at = b.windows(4).position(|w| w == b"gw-1").expect("host");
        bad[host_at] = 0xff;
        assert_eq!(decode_snapshot(&bad), None);
    }

    #[test]
    fn the_cache_file_holds_what_was_stored_and_only_that() {
        let keys = crate::fuzzing::keys_with(crate::crypto::Cipher::XChaCha20Poly1305, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshots");
        let (a, b) = (SnapshotId([0xa; 32]), SnapshotId([0xb; 32]));
        let sa = encode_snapshot(&full());
        let sb = b"not a snapshot".to_vec();
        store(&path, &keys, &[(a, &sa), (b, &sb)]);
        let c = load(&path, &keys);
        assert_eq!(c.len(), 2);
        assert_eq!(c.snapshot(&a), Some(full()));
        assert_eq!(c.get(&b), Some(&sb[..]));
        assert_eq!(
            c.snapshot(&b),
            None,
            "an entry that does not decode is no snapshot"
        );
        assert_eq!(c.get(&SnapshotId([0xc; 32])), None);
        // A flipped byte anywhere: the whole file is ignored.
        let mut env = std::fs::read(&path).unwrap();
        let last = env.len() - 1;
        env[last] ^= 1;
        std::fs::write(&path, &env).unwrap();
        assert_eq!(load(&path, &keys).len(), 0);
        // Another repository's keys do not open it.
        store(&path, &keys, &[(a, &sa)]);
        let other = crate::crypto::RepoKeys::new(
            crate::fuzzing::master_key(1),
            crate::id::RepoId([9; 32]),
            crate::crypto::Cipher::XChaCha20Poly1305,
        );
        assert_eq!(load(&path, &other).len(), 0);
        assert_eq!(load(&path, &keys).len(), 1);
    }
}
