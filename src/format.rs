//! Every on-disk structure, with its version constant, serialization and parser.
//!
//! This module is the reference for `docs/design.md`: nothing else serializes a stored object. Binary
//! formats are little-endian. The parsers run on authenticated plaintext, but are still written to
//! reject any malformed input without panicking (they are fuzz targets, see `fuzz/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::id::{BlobId, KeyId, PackId, RepoId, SnapshotId};

/// The repository format version this build writes and the newest it reads.
pub const REPO_VERSION: u32 = 1;
/// Version of pack headers.
pub const PACK_HEADER_VERSION: u8 = 1;
/// Version of index files.
pub const INDEX_VERSION: u8 = 1;
/// Version of tree blobs.
pub const TREE_VERSION: u32 = 1;
/// Version of snapshots.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Version of audit entries.
pub const AUDIT_VERSION: u32 = 1;

// ------------------------------------------------------------------------------------------ config

/// Chunker parameters, fixed at `init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// The preset these values came from ("config" or "bulk").
    pub preset: String,
    /// Minimum chunk size in bytes.
    pub min_size: u32,
    /// Average chunk size in bytes.
    pub avg_size: u32,
    /// Maximum chunk size in bytes.
    pub max_size: u32,
}

impl ChunkerParams {
    /// Small chunks for gateway configurations: 2 KiB / 8 KiB / 64 KiB.
    pub fn config() -> Self {
        Self {
            preset: "config".into(),
            min_size: 2 * 1024,
            avg_size: 8 * 1024,
            max_size: 64 * 1024,
        }
    }

    /// Large chunks for bulk data: 512 KiB / 2 MiB / 8 MiB.
    pub fn bulk() -> Self {
        Self {
            preset: "bulk".into(),
            min_size: 512 * 1024,
            avg_size: 2 * 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }

    /// Checks the limits of the FastCDC implementation.
    ///
    /// # Errors
    /// [`Error::Format`] when a value is out of range.
    pub fn validate(&self) -> Result<()> {
        let ok = (64..=1_048_576).contains(&self.min_size)
            && (256..=4_194_304).contains(&self.avg_size)
            && (1024..=16_777_216).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size;
        if ok {
            Ok(())
        } else {
            Err(Error::format(
                "config",
                format!("chunker parameters out of range: {self:?}"),
            ))
        }
    }
}

/// The `config` object: cleartext, authenticated by a MAC under a key derived from the master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Repository format version ([`REPO_VERSION`]).
    pub version: u32,
    /// The repository id.
    pub id: RepoId,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Cipher of new objects.
    pub cipher: Cipher,
    /// zstd level of new blobs; 0 turns compression off.
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// When `init` ran (RFC 3339).
    pub created: String,
    /// Hex MAC over the other fields (see [`RepoConfig::mac_input`]).
    #[serde(default)]
    pub mac: String,
}

impl RepoConfig {
    /// The bytes the MAC covers: the JSON of every field but `mac`.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.mac.clear();
        serde_json::to_vec(&c).expect("config serializes")
    }
}

/// Reads only the version and id of a config, before any key is known.
#[derive(Deserialize)]
pub struct ConfigHead {
    /// Format version.
    pub version: u32,
}

// ------------------------------------------------------------------------------------------ blobs

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content.
    Data,
    /// A directory listing (JSON [`Tree`]).
    Tree,
}

impl BlobType {
    /// The byte stored in pack headers and index files.
    pub fn byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    /// Parses [`BlobType::byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// Where one blob lives inside its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackEntry {
    /// Data or tree.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// The blob id.
    pub id: BlobId,
    /// Offset of its envelope in the pack.
    pub offset: u32,
    /// Length of its envelope.
    pub length: u32,
    /// Length of the plaintext before compression.
    pub raw_length: u32,
    /// For a delta blob: the blob of the same type whose plaintext is its compression dictionary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BlobId>,
}

/// Shortest entry (no base).
const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Bit of the type byte saying a base id follows the entry.
const HAS_BASE: u8 = 0x80;

fn put_entry(out: &mut Vec<u8>, e: &PackEntry) {
    out.push(e.blob_type.byte() | if e.base.is_some() { HAS_BASE } else { 0 });
    out.extend_from_slice(&e.id.0);
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.length.to_le_bytes());
    out.extend_from_slice(&e.raw_length.to_le_bytes());
    if let Some(b) = &e.base {
        out.extend_from_slice(&b.0);
    }
}

/// A cursor over bytes that fails instead of panicking.
struct Reader<'a> {
    b: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(Error::format(self.what, "truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| Error::format(self.what, "truncated"))?,
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?
                .try_into()
                .map_err(|_| Error::format(self.what, "truncated"))?,
        ))
    }
    fn id(&mut self) -> Result<[u8; 32]> {
        self.take(32)?
            .try_into()
            .map_err(|_| Error::format(self.what, "truncated"))
    }
    /// A count of items each at least `item_len` bytes long, checked against what is left.
    fn count(&mut self, item_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_len) > self.b.len() {
            return Err(Error::format(
                self.what,
                format!("count {n} exceeds the data"),
            ));
        }
        Ok(n)
    }
    fn entry(&mut self) -> Result<PackEntry> {
        let t = self.u8()?;
        let blob_type = BlobType::from_byte(t & !HAS_BASE)
            .ok_or_else(|| Error::format(self.what, format!("unknown blob type {t}")))?;
        let mut e = PackEntry {
            blob_type,
            id: BlobId(self.id()?),
            offset: self.u32()?,
            length: self.u32()?,
            raw_length: self.u32()?,
            base: None,
        };
        if t & HAS_BASE != 0 {
            e.base = Some(BlobId(self.id()?));
        }
        Ok(e)
    }
    fn end(&self) -> Result<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(Error::format(self.what, "trailing bytes"))
        }
    }
}

// ------------------------------------------------------------------------------------------ packs

/// Serializes a pack header's plaintext: `"GVPH" | version | count u32 | entries`.
pub fn encode_pack_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(b"GVPH");
    out.push(PACK_HEADER_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        put_entry(&mut out, e);
    }
    out
}

/// Parses a pack header's plaintext and checks that every entry lies inside `blobs_len` bytes and that
/// entries do not overlap.
///
/// # Errors
/// [`Error::Format`] on malformed input.
pub fn decode_pack_header(b: &[u8], blobs_len: u64) -> Result<Vec<PackEntry>> {
    let mut r = Reader {
        b,
        what: "pack header",
    };
    if r.take(4)? != b"GVPH" {
        return Err(Error::format("pack header", "bad magic"));
    }
    let v = r.u8()?;
    if v != PACK_HEADER_VERSION {
        return Err(Error::format("pack header", format!("unknown version {v}")));
    }
    let n = r.count(ENTRY_LEN)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(r.entry()?);
    }
    r.end()?;
    check_entries(&entries, blobs_len, "pack header")?;
    // The blobs fill the blob area (the pack writer leaves no gap): bytes between or after them,
    // inserted into the pack, are damage that no blob's tag would show.
    let covered: u64 = entries.iter().map(|e| e.length as u64).sum();
    if covered != blobs_len {
        return Err(Error::format(
            "pack header",
            format!(
                "{} bytes of the blob area belong to no blob (bytes were inserted into the pack)",
                blobs_len - covered
            ),
        ));
    }
    Ok(entries)
}

fn check_entries(entries: &[PackEntry], blobs_len: u64, what: &str) -> Result<()> {
    let mut spans: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| (e.offset as u64, e.offset as u64 + e.length as u64))
        .collect();
    spans.sort_unstable();
    let mut prev_end = 0;
    for (s, e) in spans {
        if s < prev_end || e > blobs_len || e == s {
            return Err(Error::format(
                what,
                "blob ranges overlap, are empty, or lie outside the pack",
            ));
        }
        prev_end = e;
    }
    Ok(())
}

/// Splits a pack file into (blob area length, header envelope) using its 4-byte trailer.
///
/// # Errors
/// [`Error::Format`] when the trailer points outside the file.
pub fn split_pack_trailer(pack: &[u8]) -> Result<(usize, &[u8])> {
    if pack.len() < 4 {
        return Err(Error::format("pack", "shorter than its trailer"));
    }
    let hl = u32::from_le_bytes(
        pack[pack.len() - 4..]
            .try_into()
            .map_err(|_| Error::format("pack", "trailer"))?,
    ) as usize;
    let end = pack.len() - 4;
    if hl > end {
        return Err(Error::format(
            "pack",
            format!("header length {hl} exceeds the pack"),
        ));
    }
    Ok((end - hl, &pack[end - hl..end]))
}

// ------------------------------------------------------------------------------------------ index

/// One pack as an index file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// Its total size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<PackEntry>,
}

/// An index file: which blobs lie in which packs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Index files this one replaces (written by `repair index` and prune); they may be deleted.
    pub supersedes: Vec<crate::id::IndexId>,
    /// The packs.
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// Serializes: `"GVIX" | version | n u32 | superseded ids | n u32 | packs`, each pack
    /// `id | size u64 | n u32 | entries`.
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(
            13 + 32 * self.supersedes.len() + 44 * self.packs.len() + ENTRY_LEN * blobs,
        );
        out.extend_from_slice(b"GVIX");
        out.push(INDEX_VERSION);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            out.extend_from_slice(&s.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for e in &p.blobs {
                put_entry(&mut out, e);
            }
        }
        out
    }

    /// Parses [`IndexFile::encode`] output.
    ///
    /// # Errors
    /// [`Error::Format`] on malformed input.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader {
            b,
            what: "index file",
        };
        if r.take(4)? != b"GVIX" {
            return Err(Error::format("index file", "bad magic"));
        }
        let v = r.u8()?;
        if v != INDEX_VERSION {
            return Err(Error::format("index file", format!("unknown version {v}")));
        }
        let ns = r.count(32)?;
        let mut supersedes = Vec::with_capacity(ns);
        for _ in 0..ns {
            supersedes.push(crate::id::IndexId(r.id()?));
        }
        let np = r.count(44)?;
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let id = PackId(r.id()?);
            let size = r.u64()?;
            let nb = r.count(ENTRY_LEN)?;
            let mut blobs = Vec::with_capacity(nb);
            for _ in 0..nb {
                blobs.push(r.entry()?);
            }
            check_entries(&blobs, size, "index file")?;
            packs.push(IndexPack { id, size, blobs });
        }
        r.end()?;
        Ok(Self { supersedes, packs })
    }
}

// ------------------------------------------------------------------------------------------ trees

/// The type of a tree node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name (one path component, valid UTF-8).
    pub name: String,
    /// File, directory or link.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// File size in bytes (0 for others).
    #[serde(default)]
    pub size: u64,
    /// Inode number at backup time (change detection).
    #[serde(default)]
    pub inode: u64,
    /// Device number at backup time (change detection).
    #[serde(default)]
    pub device: u64,
    /// Content chunks of a file, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// The tree of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// The target of a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// The whole content of a small UTF-8 file, kept in the tree instead of in data blobs (gateway
    /// entity documents): a change then costs only the tree's delta, not a blob of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

impl Node {
    /// A node of `node_type` named `name` with mode 0644 and every other field empty or zero.
    pub fn new(name: &str, node_type: NodeType) -> Self {
        Self {
            name: name.to_string(),
            node_type,
            mode: 0o644,
            mtime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            content: vec![],
            subtree: None,
            link_target: None,
            inline: None,
        }
    }

    /// Whether two file nodes hold the same data (same chunks, or the same inline content).
    pub fn same_data(&self, other: &Node) -> bool {
        self.content == other.content && self.inline == other.inline
    }
}

/// A directory listing, stored as a JSON tree blob.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// [`TREE_VERSION`].
    pub version: u32,
    /// Entries, sorted by name, names unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serializes to the canonical JSON (so equal trees get equal ids).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serializes")
    }

    /// Parses a tree blob and checks its invariants.
    ///
    /// # Errors
    /// [`Error::Format`] on bad JSON, an unknown version, unsorted or unsafe names, or a node whose
    /// fields do not fit its type.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let t: Tree = serde_json::from_slice(b).map_err(|e| Error::format("tree", e))?;
        if t.version != TREE_VERSION {
            return Err(Error::format(
                "tree",
                format!("unknown version {}", t.version),
            ));
        }
        for w in t.nodes.windows(2) {
            if w[0].name >= w[1].name {
                return Err(Error::format("tree", "names not sorted or not unique"));
            }
        }
        for n in &t.nodes {
            if n.name.is_empty()
                || n.name == "."
                || n.name == ".."
                || n.name.contains('/')
                || n.name.contains('\0')
            {
                return Err(Error::format("tree", format!("unsafe name {:?}", n.name)));
            }
            let fits = match n.node_type {
                NodeType::File => {
                    n.subtree.is_none()
                        && n.link_target.is_none()
                        && n.inline
                            .as_ref()
                            .is_none_or(|d| n.content.is_empty() && d.len() as u64 == n.size)
                }
                NodeType::Dir => n.subtree.is_some() && n.content.is_empty() && n.inline.is_none(),
                NodeType::Symlink => {
                    n.link_target.is_some()
                        && n.content.is_empty()
                        && n.subtree.is_none()
                        && n.inline.is_none()
                }
            };
            if !fits {
                return Err(Error::format(
                    "tree",
                    format!("node {:?} has fields of another type", n.name),
                ));
            }
        }
        Ok(t)
    }
}

// ------------------------------------------------------------------------------------------ snapshots

/// Figures of the backup that made a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Files not in the parent.
    pub files_new: u64,
    /// Files whose content or metadata changed.
    pub files_changed: u64,
    /// Files skipped as unchanged.
    pub files_unchanged: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Files that could not be read (a partial snapshot).
    #[serde(default)]
    pub files_failed: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes added.
    pub data_added: u64,
    /// Bytes added after compression and encryption.
    pub data_added_packed: u64,
    /// Files in the snapshot.
    pub total_files: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Start of the backup (RFC 3339).
    pub backup_start: String,
    /// End of the backup (RFC 3339).
    pub backup_end: String,
}

/// A snapshot: the root of one backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// Time of the backup (client clock, RFC 3339).
    pub time: String,
    /// The root tree.
    pub tree: BlobId,
    /// Backed-up paths, absolute.
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// Tags, key to value (a bare tag has an empty value).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Version label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The snapshot compared against for change detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// Backup figures.
    #[serde(default)]
    pub summary: Summary,
    /// The program that wrote it.
    pub program_version: String,
    /// The gateway captured, for gateway snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// For a snapshot rewritten by `erase`: the snapshot it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// For a copy made by `gatevault copy`: the snapshot first taken, in the repository that took it.
    /// A copy of a copy names the same origin, so that every copy of one backup shares it (the 3-2-1
    /// report counts copies by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The first snapshot of a backup, named by the repository that took it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// Repository id (hex) of the repository that took the snapshot.
    pub repository: String,
    /// Its snapshot id there.
    pub snapshot: SnapshotId,
}

/// The gateway a snapshot was captured from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Gateway kind (`kong`, `aws`, `caddy`, `nginx`, `haproxy`, `files`).
    pub kind: String,
    /// Admin API or service endpoint, or `file:` and the path of the export read.
    pub endpoint: String,
    /// Workspace, account and region, or server name, where the kind has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The gateway's version, where it tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Source {
    /// A source of `kind` at `endpoint` with no scope or version.
    pub fn new(kind: &str, endpoint: &str) -> Self {
        Self {
            kind: kind.into(),
            endpoint: endpoint.into(),
            scope: None,
            version: None,
        }
    }

    /// The snapshot path that stands for this source (`kong:http://host:8001#workspace`): snapshots
    /// of one source share it, so that each finds its parent.
    pub fn path(&self) -> String {
        match &self.scope {
            Some(s) => format!("{}:{}#{s}", self.kind, self.endpoint),
            None => format!("{}:{}", self.kind, self.endpoint),
        }
    }

    /// For messages: `kong at http://host:8001 (workspace default)`.
    pub fn describe(&self) -> String {
        match &self.scope {
            Some(s) => format!("{} at {} ({s})", self.kind, self.endpoint),
            None => format!("{} at {}", self.kind, self.endpoint),
        }
    }
}

impl Snapshot {
    /// Serializes to JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot serializes")
    }

    /// Parses a snapshot.
    ///
    /// # Errors
    /// [`Error::Format`] on bad JSON, an unknown version or an unparsable time.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let s: Snapshot = serde_json::from_slice(b).map_err(|e| Error::format("snapshot", e))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(Error::format(
                "snapshot",
                format!("unknown version {}", s.version),
            ));
        }
        s.timestamp()?;
        Ok(s)
    }

    /// The snapshot time.
    ///
    /// # Errors
    /// [`Error::Format`] when `time` is not RFC 3339.
    pub fn timestamp(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| Error::format("snapshot time", e))
    }
}

// ------------------------------------------------------------------------------------------ locks

/// A lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// When it was written (refresh writes a new lock).
    pub time: String,
    /// Exclusive or shared.
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// User of the holder.
    pub username: String,
    /// Process id of the holder.
    pub pid: u32,
    /// What the holder is doing.
    #[serde(default)]
    pub command: String,
}

// ------------------------------------------------------------------------------------------ audit

/// The objects of one file type that an audited command wrote and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchedObjects {
    /// Names of the objects written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Names of the objects removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// One entry of the audit log, stored as `audit/<seq as 64 hex digits>` (see `docs/design.md`,
/// section 10b). Entries are chained: `prev` is the BLAKE3 hash of the previous entry's stored
/// plaintext, so that the bytes hashed are exactly the bytes decrypted, whatever serializer wrote them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// [`AUDIT_VERSION`].
    pub version: u32,
    /// Position in the log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Hex BLAKE3 hash of the plaintext of entry `seq - 1` (64 zeros for entry 1).
    pub prev: String,
    /// When the entry was written, at the end of the command (client clock, RFC 3339).
    pub time: String,
    /// User name of the process.
    pub user: String,
    /// Host name.
    pub host: String,
    /// The key slot the repository was opened with.
    pub key: KeyId,
    /// The role of that key slot (`admin`, `backup`, `restore`).
    pub role: String,
    /// The command (`backup`, `key add`, ...).
    pub command: String,
    /// The command line after the program name, with secret values replaced by `<secret>`.
    pub args: Vec<String>,
    /// `success`, `partial`, `failed: <message>` or `refused: <message>` (a role check).
    pub result: String,
    /// The exit code of the command.
    pub exit: u8,
    /// What the command wrote and removed, by file type (`snapshot`, `pack`, `index`, `key`, ...).
    #[serde(default)]
    pub objects: BTreeMap<String, TouchedObjects>,
    /// What the command itself reports about its work, where it has more to say than the objects
    /// (`erase`: what was removed, masked, and the scan's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Record type of an [`AuditEntryCopy`].
pub const AUDIT_COPY_RECORD_TYPE: &str = "audit-reseal";

/// The record holding a copy of one audit entry while `rewrite --reencrypt` re-seals it under the current
/// key epoch (the entry is removed and written again under the same name, and the copy is what survives
/// an interruption in between; see `docs/design.md`, section 10b). Stored as the record
/// [`RepoKeys::audit_copy_id`] of the entry's seq.
///
/// [`RepoKeys::audit_copy_id`]: crate::crypto::RepoKeys::audit_copy_id
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryCopy {
    /// [`AUDIT_COPY_RECORD_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The seq of the entry.
    pub seq: u64,
    /// Hex BLAKE3 hash of `entry` (what the next entry names as `prev`).
    pub hash: String,
    /// The entry's plaintext, exactly as it decrypted (audit entries are UTF-8 JSON).
    pub entry: String,
    /// When the copy was made (RFC 3339).
    pub time: String,
}

impl AuditEntryCopy {
    /// A copy of the plaintext `entry` of entry `seq`.
    pub fn new(seq: u64, entry: &str) -> Self {
        Self {
            kind: AUDIT_COPY_RECORD_TYPE.into(),
            seq,
            hash: hex::encode(crate::crypto::hash(entry.as_bytes())),
            entry: entry.to_string(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// Serializes to JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit entry copy serializes")
    }

    /// Parses a copy and checks it against itself: the type, the hash of the plaintext, and that the
    /// plaintext is an audit entry with the copy's seq.
    ///
    /// # Errors
    /// [`Error::Format`] when any of these does not hold.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let c: AuditEntryCopy =
            serde_json::from_slice(b).map_err(|e| Error::format("audit entry copy", e))?;
        if c.kind != AUDIT_COPY_RECORD_TYPE {
            return Err(Error::format(
                "audit entry copy",
                format!("record type {:?}, not {AUDIT_COPY_RECORD_TYPE:?}", c.kind),
            ));
        }
        if hex::encode(crate::crypto::hash(c.entry.as_bytes())) != c.hash {
            return Err(Error::format(
                "audit entry copy",
                "the entry does not hash to the hash the copy states",
            ));
        }
        let e = AuditEntry::decode(c.entry.as_bytes())?;
        if e.seq != c.seq {
            return Err(Error::format(
                "audit entry copy",
                format!(
                    "it says it copies entry {} but holds entry {}",
                    c.seq, e.seq
                ),
            ));
        }
        Ok(c)
    }
}

impl AuditEntry {
    /// Serializes to JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit entry serializes")
    }

    /// Parses an audit entry.
    ///
    /// # Errors
    /// [`Error::Format`] on bad JSON, an unknown version, a `prev` that is not 64 hex digits, a seq of 0
    /// or an unparsable time.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let e: AuditEntry =
            serde_json::from_slice(b).map_err(|e| Error::format("audit entry", e))?;
        if e.version != AUDIT_VERSION {
            return Err(Error::format(
                "audit entry",
                format!("unknown version {}", e.version),
            ));
        }
        if e.seq == 0 {
            return Err(Error::format("audit entry", "seq 0 (entries count from 1)"));
        }
        if e.prev.len() != 64
            || !e
                .prev
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(Error::format(
                "audit entry",
                format!("prev {:?} is not 64 lowercase hex digits", e.prev),
            ));
        }
        chrono::DateTime::parse_from_rfc3339(&e.time)
            .map_err(|err| Error::format("audit entry time", err))?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u32, off: u32, len: u32) -> PackEntry {
        PackEntry {
            blob_type: if i.is_multiple_of(2) {
                BlobType::Data
            } else {
                BlobType::Tree
            },
            id: BlobId([i as u8; 32]),
            offset: off,
            length: len,
            raw_length: len * 2,
            // Every third data blob is a delta, so both entry forms are covered.
            base: i.is_multiple_of(6).then_some(BlobId([0xbb; 32])),
        }
    }

    #[test]
    fn pack_header_round_trip_and_rejects() {
        let e = vec![entry(0, 0, 10), entry(1, 10, 5)];
        let b = encode_pack_header(&e);
        assert_eq!(decode_pack_header(&b, 15).unwrap(), e);
        assert!(
            decode_pack_header(&b, 14).is_err(),
            "entry past the blob area"
        );
        assert!(decode_pack_header(&b[..b.len() - 1], 15).is_err());
        let overlap = encode_pack_header(&[entry(0, 0, 10), entry(1, 5, 5)]);
        assert!(decode_pack_header(&overlap, 15).is_err());
        let err = decode_pack_header(&b, 16).unwrap_err().to_string();
        assert!(
            err.contains("1 bytes of the blob area belong to no blob"),
            "{err}"
        );
        let gap = encode_pack_header(&[entry(0, 0, 10), entry(1, 11, 4)]);
        assert!(decode_pack_header(&gap, 15).is_err(), "a gap between blobs");
        let mut huge = b.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_pack_header(&huge, 15).is_err());
    }

    #[test]
    fn tree_invariants() {
        let n = |name: &str| Node::new(name, NodeType::File);
        let t = Tree {
            version: 1,
            nodes: vec![n("a"), n("b")],
        };
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        let inline = |d: &str, size: u64| Node {
            inline: Some(d.into()),
            size,
            ..n("i")
        };
        let t = Tree {
            version: 1,
            nodes: vec![inline("{}\n", 3)],
        };
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        for bad in [
            vec![n("b"), n("a")],
            vec![n("a"), n("a")],
            vec![n("..")],
            vec![n("x/y")],
            vec![inline("abc", 4)],
            vec![Node {
                content: vec![BlobId([1; 32])],
                ..inline("abc", 3)
            }],
            vec![Node {
                inline: Some("x".into()),
                subtree: Some(BlobId([1; 32])),
                ..Node::new("d", NodeType::Dir)
            }],
        ] {
            assert!(Tree::decode(
                &Tree {
                    version: 1,
                    nodes: bad
                }
                .encode()
            )
            .is_err());
        }
    }

    proptest! {
        #[test]
        fn index_round_trip(sizes in proptest::collection::vec(1u32..5000, 0..40), sup in 0usize..3) {
            let mut off = 0;
            let blobs: Vec<_> = sizes.iter().enumerate().map(|(i, &l)| { let e = entry(i as u32, off, l); off += l; e }).collect();
            let f = IndexFile {
                supersedes: (0..sup).map(|i| crate::id::IndexId([i as u8; 32])).collect(),
                packs: vec![IndexPack { id: PackId([1; 32]), size: off as u64 + 100, blobs }],
            };
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn index_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexFile::decode(&b);
            let _ = decode_pack_header(&b, 1000);
        }
    }
}
