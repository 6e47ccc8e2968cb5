//! The audit log: one encrypted, hash-chained entry for every command that changed the repository or
//! was refused by a role check.
//!
//! Entry `n` is the object `audit/<n as 64 hex digits>`, sealed with [`Kind::Audit`] under that name, so
//! a ciphertext cannot be moved to another position. Its plaintext ([`AuditEntry`]) names the BLAKE3
//! hash of entry `n - 1`'s plaintext, so an entry cannot be altered, replaced or reordered without
//! breaking the link after it. Appending is a create-only write of the next name: when a concurrent
//! command wrote it first, the appender reads that entry and tries the name after it, so the chain
//! never forks. A key holder could still rewrite the whole log consistently, or drop its last entries;
//! that is detected against a head (sequence number and hash) kept outside the repository, in the
//! local cache ([`head::HeadFile`]) or wherever `gatevault audit head` output is stored.
//!
//! - [`AuditLog`]: reading, appending and verifying the chain;
//! - [`reseal`]: sealing entries again under the current key epoch (`rewrite --reencrypt`), through a
//!   copy kept in a record, so that an interruption loses nothing;
//! - [`head`]: the head remembered by this machine;
//! - [`mask`]: removing secret values from a command line before it is recorded;
//! - [`session`]: what the command line collects while a command runs, and the rule for recording it.
//!
//! The format is specified in `docs/design.md`, section 10b.

pub mod head;
pub mod mask;
pub mod reseal;
pub mod session;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Backend, FileType};
use crate::crypto::{Kind, RepoKeys};
use crate::error::{Error, Result};
use crate::format::{AuditEntry, AuditEntryCopy, TouchedObjects, AUDIT_VERSION};
use crate::id::KeyId;

pub use head::{HeadFile, Remembered};

/// How often an append tries the next name after losing a race to a concurrent appender.
pub const MAX_APPEND_ATTEMPTS: usize = 64;

/// The object name of entry `seq`: the sequence number as 64 hex digits (so names sort by seq).
pub fn entry_name(seq: u64) -> String {
    hex::encode(entry_id(seq))
}

/// The 32-byte id entry `seq` is sealed under: the big-endian seq, zero-padded on the left.
fn entry_id(seq: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[24..].copy_from_slice(&seq.to_be_bytes());
    id
}

/// The seq of an object name, when it is the name of an entry.
pub fn parse_entry_name(name: &str) -> Option<u64> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(name, &mut id).ok()?;
    if name.bytes().any(|c| c.is_ascii_uppercase()) || id[..24].iter().any(|b| *b != 0) {
        return None;
    }
    let seq = u64::from_be_bytes(id[24..].try_into().ok()?);
    (seq > 0).then_some(seq)
}

/// `audit/<name>` of entry `seq`, for messages.
pub fn entry_path(seq: u64) -> String {
    FileType::Audit.path_of(&entry_name(seq))
}

/// The end of a chain: the last entry's seq and the hash of its plaintext. The empty log has seq 0 and
/// a hash of 32 zero bytes (which is what entry 1 names as `prev`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Seq of the last entry (0 for an empty log).
    pub seq: u64,
    /// BLAKE3 hash of its plaintext.
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: [0; 32],
    };

    /// The hash as 64 hex digits.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

impl fmt::Display for Head {
    /// `SEQ:HASH`, the form `audit head` prints and `audit verify --head` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash_hex())
    }
}

impl FromStr for Head {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "audit head {s:?}: expected SEQ:HASH, a number and 64 hex digits (as `gatevault audit head` prints)"
            ))
        };
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let mut h = [0u8; 32];
        hex::decode_to_slice(hash.to_ascii_lowercase(), &mut h).map_err(|_| bad())?;
        if seq == 0 && h != [0; 32] {
            return Err(bad());
        }
        Ok(Head { seq, hash: h })
    }
}

impl Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Head", 3)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("hash", &self.hash_hex())?;
        st.serialize_field("head", &self.to_string())?;
        st.end()
    }
}

/// What an audited command did, as the command line knows it; [`AuditLog::append`] adds the position in
/// the chain, the time, the user and the host.
#[derive(Clone, Debug, Default)]
pub struct Draft {
    /// The key slot in use.
    pub key: KeyId,
    /// Its role (`admin`, `backup`, `restore`).
    pub role: String,
    /// The command (`backup`, `key add`, ...).
    pub command: String,
    /// The command line after the program name, secrets masked (see [`mask`]).
    pub args: Vec<String>,
    /// `success`, `partial`, `failed: ...` or `refused: ...`.
    pub result: String,
    /// The exit code.
    pub exit: u8,
    /// Objects written and removed, by file type.
    pub objects: BTreeMap<String, TouchedObjects>,
    /// What the command reported about its work ([`AuditEntry::details`]).
    pub details: Option<serde_json::Value>,
}

/// The first broken link of a chain: where it is, what is wrong, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// Seq of the first entry that is missing, damaged or does not link.
    pub seq: u64,
    /// Its object (`audit/<name>`).
    pub object: String,
    /// What is wrong.
    pub problem: String,
    /// What the user can do.
    pub next_step: String,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit log broken at entry {} ({}): {}; {}",
            self.seq, self.object, self.problem, self.next_step
        )
    }
}

/// The result of [`AuditLog::verify`].
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// `intact` or `broken`.
    pub status: &'static str,
    /// Entries verified from seq 1 up to the first broken link (all of them when intact).
    pub entries: u64,
    /// The last entry of the intact part of the chain (the log's head when intact).
    pub head: Head,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
    /// The heads the chain was compared against (from this machine, or given by the user).
    pub compared: Vec<Remembered>,
    /// Objects in `audit/` whose names are not entry names (ignored: they cannot be part of the chain).
    pub foreign: Vec<String>,
    /// Copies of entries that re-seals keep in records (`rewrite --reencrypt`; an interrupted one
    /// leaves one until it is run again).
    pub pending: Vec<PendingCopy>,
    /// Hash of entry `n` at index `n - 1`, for the verified part.
    #[serde(skip)]
    hashes: Vec<[u8; 32]>,
}

impl Verification {
    /// The hash of verified entry `seq` (`None` past the verified part; seq 0 is the zero hash).
    pub fn hash_of(&self, seq: u64) -> Option<[u8; 32]> {
        match seq {
            0 => Some([0; 32]),
            s => self.hashes.get(s as usize - 1).copied(),
        }
    }

    /// Whether the chain is intact and contains every head it was compared against.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

const RESTORE_STEP: &str = "restore it from another copy of the repository (a replica, or a backup of its audit/ folder), then run `gatevault audit verify` again; gatevault never repairs the log itself";

/// Reading, appending and verifying the audit log of one repository.
pub struct AuditLog<'a> {
    backend: &'a dyn Backend,
    keys: &'a RepoKeys,
}

impl<'a> AuditLog<'a> {
    /// The log stored in `backend`, sealed with `keys`.
    pub fn new(backend: &'a dyn Backend, keys: &'a RepoKeys) -> Self {
        Self { backend, keys }
    }

    /// The seqs of the stored entries, ascending, and the names in `audit/` that are not entry names.
    ///
    /// # Errors
    /// Backend errors listing the folder.
    pub fn list(&self) -> Result<(Vec<u64>, Vec<String>)> {
        let mut seqs = Vec::new();
        let mut foreign = Vec::new();
        for (name, _) in self.backend.list(FileType::Audit)? {
            match parse_entry_name(&name) {
                Some(s) => seqs.push(s),
                None => foreign.push(FileType::Audit.path_of(&name)),
            }
        }
        seqs.sort_unstable();
        foreign.sort();
        Ok((seqs, foreign))
    }

    /// Loads, decrypts and parses entry `seq`; returns it with the hash of its plaintext.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::IntegrityMismatch`] when it does not decrypt under its name, does not
    /// parse, or names another seq; backend errors.
    pub fn load(&self, seq: u64) -> Result<(AuditEntry, [u8; 32])> {
        let env = self.backend.read(FileType::Audit, &entry_name(seq))?;
        let (entry, hash, _) = self.open_entry(seq, &env)?;
        Ok((entry, hash))
    }

    /// Decrypts and parses the stored envelope `env` of entry `seq`; returns the entry, the hash of its
    /// plaintext and the plaintext.
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] as for [`AuditLog::load`].
    fn open_entry(&self, seq: u64, env: &[u8]) -> Result<(AuditEntry, [u8; 32], Vec<u8>)> {
        let what = format!("audit entry {seq} ({})", entry_path(seq));
        let plain = self
            .keys
            .open_object(Kind::Audit, &entry_id(seq), env, &what)?;
        let entry =
            AuditEntry::decode(&plain).map_err(|e| Error::integrity(&what, e.to_string()))?;
        if entry.seq != seq {
            return Err(Error::integrity(
                what,
                format!("its content says it is entry {}", entry.seq),
            ));
        }
        let hash = crate::crypto::hash(&plain);
        Ok((entry, hash, plain))
    }

    /// The name of the record that holds a copy of entry `seq` while it is re-sealed ([`reseal`]).
    pub fn copy_name(&self, seq: u64) -> String {
        hex::encode(self.keys.audit_copy_id(seq))
    }

    /// The hash of entry `seq`, read from the entry or, when an interrupted re-seal left only its copy,
    /// from the copy; `None` when neither exists or opens.
    ///
    /// # Errors
    /// Backend errors other than a missing object.
    pub fn hash_of(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        match self.load(seq) {
            Ok((_, h)) => Ok(Some(h)),
            Err(Error::IntegrityMismatch { .. }) => Ok(None),
            Err(Error::NotFound { .. }) => match self.load_copy(seq) {
                Ok(c) => Ok(c.as_ref().map(copy_hash)),
                Err(Error::IntegrityMismatch { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The copy of entry `seq` that a re-seal keeps in a record, if there is one ([`reseal`]).
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] when the record does not decrypt or is not a copy of entry `seq`;
    /// backend errors.
    pub fn load_copy(&self, seq: u64) -> Result<Option<AuditEntryCopy>> {
        let name = self.copy_name(seq);
        let what = format!("record {name} (the copy of audit entry {seq})");
        let env = match self.backend.read(FileType::Record, &name) {
            Ok(env) => env,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain =
            self.keys
                .open_object(Kind::Record, &self.keys.audit_copy_id(seq), &env, &what)?;
        let copy =
            AuditEntryCopy::decode(&plain).map_err(|e| Error::integrity(&what, e.to_string()))?;
        if copy.seq != seq {
            return Err(Error::integrity(
                what,
                format!("it holds a copy of entry {}", copy.seq),
            ));
        }
        Ok(Some(copy))
    }

    /// The copies of entries that re-seals keep in records, by seq, for entries 1 to `last + 1` (an
    /// interrupted re-seal of the last entry leaves the log one entry short, with the copy).
    ///
    /// # Errors
    /// Backend errors listing the records.
    pub fn copies(&self, last: u64) -> Result<BTreeMap<u64, String>> {
        let records: std::collections::HashSet<String> = self
            .backend
            .list(FileType::Record)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if records.is_empty() {
            return Ok(BTreeMap::new());
        }
        Ok((1..=last.saturating_add(1))
            .into_par_iter()
            .filter_map(|seq| {
                let name = self.copy_name(seq);
                records.contains(&name).then_some((seq, name))
            })
            .collect())
    }

    /// Every stored entry, ascending by seq; damaged ones come back as errors naming the entry. An entry
    /// that an interrupted re-seal left only as its copy ([`reseal`]) is read from the copy.
    ///
    /// # Errors
    /// Backend errors listing the folder or the records.
    pub fn entries(&self) -> Result<Vec<(u64, Result<AuditEntry>)>> {
        let (seqs, _) = self.list()?;
        let mut out: Vec<(u64, Result<AuditEntry>)> = seqs
            .par_iter()
            .map(|s| (*s, self.load(*s).map(|(e, _)| e)))
            .collect();
        let stored: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        for seq in self.copies(seqs.last().copied().unwrap_or(0))?.into_keys() {
            if stored.contains(&seq) {
                continue;
            }
            let from_copy = match self.load_copy(seq) {
                Ok(Some(c)) => AuditEntry::decode(c.entry.as_bytes()),
                // Put back and the copy removed since the listing.
                Ok(None) => self.load(seq).map(|(e, _)| e),
                Err(e) => Err(e),
            };
            out.push((seq, from_copy));
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }

    /// The last stored entry's seq and hash ([`Head::EMPTY`] for an empty log). Only that entry is read:
    /// this is not a verification.
    ///
    /// # Errors
    /// As [`AuditLog::load`] for the last entry.
    ///
    /// An entry that an interrupted re-seal left only as its copy ([`reseal`]) counts as stored: when
    /// the copy of the entry after the last one exists, that entry is the head.
    pub fn head(&self) -> Result<Head> {
        let (seqs, _) = self.list()?;
        let last = match seqs.last() {
            None => Head::EMPTY,
            Some(&seq) => Head {
                seq,
                hash: self.load(seq)?.1,
            },
        };
        Ok(match self.load_copy(last.seq + 1)? {
            Some(c) => Head {
                seq: c.seq,
                hash: copy_hash(&c),
            },
            None => last,
        })
    }

    /// The last stored entry, after putting back an entry that an interrupted re-seal left only as its
    /// copy: an append must chain onto that entry, never take its name.
    fn head_for_append(&self) -> Result<Head> {
        let (seqs, _) = self.list()?;
        let last = match seqs.last() {
            None => Head::EMPTY,
            Some(&seq) => Head {
                seq,
                hash: self.load(seq)?.1,
            },
        };
        let mut head = last;
        loop {
            let seq = head.seq + 1;
            let copy = self.load_copy(seq).map_err(|e| {
                Error::integrity(
                    entry_path(seq),
                    format!(
                        "`gatevault rewrite --reencrypt` was re-sealing this entry and was \
                         interrupted; its copy cannot be read with this key ({e}), so no entry can be \
                         appended after it: run `gatevault rewrite --reencrypt` with a key that holds \
                         the current epoch"
                    ),
                )
            })?;
            let Some(c) = copy else {
                return Ok(head);
            };
            let env = self
                .keys
                .seal_object(Kind::Audit, &entry_id(seq), c.entry.as_bytes());
            head = match self.backend.write(FileType::Audit, &entry_name(seq), &env) {
                Ok(()) => Head {
                    seq,
                    hash: copy_hash(&c),
                },
                // Put back meanwhile (by the re-seal, or another appender): chain onto what is stored.
                Err(Error::AlreadyExists { .. }) => Head {
                    seq,
                    hash: self.load(seq)?.1,
                },
                Err(e) => return Err(e),
            };
        }
    }

    /// Appends an entry for `draft` after the current last entry; returns the new head and the one
    /// before it.
    ///
    /// The write is create-only: when a concurrent command took the name first, its entry becomes the
    /// head and the next name is tried, up to [`MAX_APPEND_ATTEMPTS`] times.
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] when the last entry (which the new one must name) is damaged;
    /// [`Error::Locked`] when every attempt lost a race; backend errors.
    pub fn append(&self, draft: &Draft) -> Result<(Head, Head)> {
        let mut prev = self.head_for_append().map_err(|e| append_err(&e))?;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let seq = prev.seq + 1;
            let entry = AuditEntry {
                version: AUDIT_VERSION,
                seq,
                prev: prev.hash_hex(),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                user: crate::util::username(),
                host: crate::util::hostname(),
                key: draft.key,
                role: draft.role.clone(),
                command: draft.command.clone(),
                args: draft.args.clone(),
                result: draft.result.clone(),
                exit: draft.exit,
                objects: draft.objects.clone(),
                details: draft.details.clone(),
            };
            let plain = entry.encode();
            let env = self.keys.seal_object(Kind::Audit, &entry_id(seq), &plain);
            match self.backend.write(FileType::Audit, &entry_name(seq), &env) {
                Ok(()) => {
                    let head = Head {
                        seq,
                        hash: crate::crypto::hash(&plain),
                    };
                    return Ok((head, prev));
                }
                // A concurrent command appended first: chain onto its entry.
                Err(Error::AlreadyExists { .. }) => {
                    prev = Head {
                        seq,
                        hash: self.load(seq).map_err(|e| append_err(&e))?.1,
                    };
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Locked {
            detail: format!(
                "for the audit log: {MAX_APPEND_ATTEMPTS} attempts to append lost to concurrent commands"
            ),
        })
    }

    /// Verifies the chain: every entry from 1 to the last is present, decrypts under its name, and names
    /// the hash of the entry before it; then that every head in `compared` is still part of it. Stops at
    /// the first broken link. An entry that an interrupted re-seal left only as its copy ([`reseal`]) is
    /// verified from the copy, and every copy found is listed in [`Verification::pending`]; a copy whose
    /// entry was replaced by another one is a broken link.
    ///
    /// # Errors
    /// Backend errors listing the folder (damage goes into the result).
    pub fn verify(&self, compared: &[Remembered]) -> Result<Verification> {
        let (seqs, foreign) = self.list()?;
        let last = seqs.last().copied().unwrap_or(0);
        let copies = self.copies(last)?;
        let mut loaded: BTreeMap<u64, Result<(AuditEntry, [u8; 32])>> =
            seqs.par_iter().map(|s| (*s, self.load(*s))).collect();
        let mut head = Head::EMPTY;
        let mut hashes = Vec::with_capacity(loaded.len());
        let mut broken = None;
        let mut pending = Vec::new();
        for seq in 1.. {
            let stored = loaded.remove(&seq);
            let copy = copies.get(&seq);
            let (entry, hash) = match (stored, copy) {
                (None, None) => {
                    // Past the end, or a gap: the next stored entry is the smallest one left.
                    let Some(&next) = loaded.keys().next() else {
                        break;
                    };
                    let range = if next - seq == 1 {
                        format!("entry {seq} is missing")
                    } else {
                        format!("entries {seq} to {} are missing", next - 1)
                    };
                    broken = Some(BrokenLink {
                        seq,
                        object: entry_path(seq),
                        problem: format!(
                            "{range}: the log goes from entry {} to entry {next} (deleted)",
                            head.seq
                        ),
                        next_step: RESTORE_STEP
                            .replace("restore it", "restore the missing entries"),
                    });
                    break;
                }
                (Some(Err(e)), _) => {
                    let problem = match &e {
                        Error::IntegrityMismatch { reason, .. } => format!(
                            "it does not verify ({reason}): it was altered, or moved here from another entry"
                        ),
                        other => format!("it cannot be read: {other}"),
                    };
                    broken = Some(BrokenLink {
                        seq,
                        object: entry_path(seq),
                        problem,
                        next_step: RESTORE_STEP.into(),
                    });
                    break;
                }
                (Some(Ok((entry, hash))), Some(record)) => {
                    // A re-seal was interrupted before or after it put the entry back: harmless, unless
                    // the entry stored is not the one copied (a command took its name meanwhile).
                    match self.load_copy(seq) {
                        Ok(Some(c)) if copy_hash(&c) != hash => {
                            let original = AuditEntry::decode(c.entry.as_bytes()).ok();
                            broken = Some(displaced(seq, record, &c, &hash));
                            pending.push(PendingCopy {
                                seq,
                                record: record.clone(),
                                entry_stored: true,
                                note: "the stored entry differs from this copy".into(),
                                original,
                            });
                            break;
                        }
                        Ok(_) => pending.push(PendingCopy {
                            seq,
                            record: record.clone(),
                            entry_stored: true,
                            note: "left by an interrupted re-seal; the stored entry is the same"
                                .into(),
                            original: None,
                        }),
                        Err(e) => pending.push(PendingCopy {
                            seq,
                            record: record.clone(),
                            entry_stored: true,
                            note: format!("it cannot be read ({e}); the stored entry was verified"),
                            original: None,
                        }),
                    }
                    (entry, hash)
                }
                (Some(Ok(x)), None) => x,
                (None, Some(record)) => {
                    // An interrupted re-seal removed the entry and had not put it back yet: its copy
                    // stands in for it.
                    let from_copy = match self.load_copy(seq) {
                        Ok(Some(c)) => AuditEntry::decode(c.entry.as_bytes())
                            .map(|e| (e, copy_hash(&c)))
                            .map_err(|e| e.to_string()),
                        // The re-seal finished between the listing and now.
                        Ok(None) => self.load(seq).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match from_copy {
                        Ok(x) => {
                            pending.push(PendingCopy {
                                seq,
                                record: record.clone(),
                                entry_stored: false,
                                note: "the entry is missing: a re-seal was interrupted; verified from this copy; `gatevault rewrite --reencrypt` puts it back".into(),
                                original: None,
                            });
                            x
                        }
                        Err(e) => {
                            broken = Some(BrokenLink {
                                seq,
                                object: entry_path(seq),
                                problem: format!(
                                    "it is missing, and the copy that an interrupted re-seal keeps in record {record} cannot be read: {e}"
                                ),
                                next_step: RESTORE_STEP.into(),
                            });
                            break;
                        }
                    }
                }
            };
            if entry.prev != head.hash_hex() {
                broken = Some(BrokenLink {
                    seq,
                    object: entry_path(seq),
                    problem: format!(
                        "it names {} as the hash of entry {}, which hashes to {}: entries were reordered, replaced or rewritten",
                        short(&entry.prev),
                        head.seq,
                        short(&head.hash_hex())
                    ),
                    next_step: RESTORE_STEP.replace("restore it", "restore the entries from here on"),
                });
                break;
            }
            hashes.push(hash);
            head = Head { seq, hash };
        }
        if broken.is_none() {
            broken = compared.iter().find_map(|r| r.missing_from(head, &hashes));
        }
        Ok(Verification {
            status: if broken.is_none() { "intact" } else { "broken" },
            entries: head.seq,
            head,
            broken,
            compared: compared.to_vec(),
            foreign,
            pending,
            hashes,
        })
    }
}

/// The hash of the entry a copy holds (checked against the copy's `hash` when it was decoded).
fn copy_hash(c: &AuditEntryCopy) -> [u8; 32] {
    crate::crypto::hash(c.entry.as_bytes())
}

/// The broken link of entry `seq` whose name another entry took while a re-seal held it in a copy.
fn displaced(seq: u64, record: &str, c: &AuditEntryCopy, stored: &[u8; 32]) -> BrokenLink {
    let what = AuditEntry::decode(c.entry.as_bytes())
        .map(|e| format!(" (`{}` by {}@{} at {})", e.command, e.user, e.host, e.time))
        .unwrap_or_default();
    BrokenLink {
        seq,
        object: entry_path(seq),
        problem: format!(
            "while `gatevault rewrite --reencrypt` re-sealed entry {seq}, another command wrote a different \
             entry {seq} (hash {}) in its place; the original{what}, hash {}, is kept in record {record}",
            short(&hex::encode(stored)),
            short(&c.hash)
        ),
        next_step: format!(
            "nothing was deleted, but the log now holds another entry in its place: keep the original as \
             evidence (`gatevault audit verify --json` prints it under `pending`), then delete the object \
             records/{record} from the storage by hand; if this machine had seen the original, `gatevault \
             audit verify --reset-head` then accepts the log as it is"
        ),
    }
}

/// A copy of an entry that a re-seal keeps in a record ([`reseal`]), as a verification found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingCopy {
    /// The entry's seq.
    pub seq: u64,
    /// The record holding the copy.
    pub record: String,
    /// Whether the entry itself is stored (false: the copy stood in for it).
    pub entry_stored: bool,
    /// What it means.
    pub note: String,
    /// The entry the copy holds, when another entry took its place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<AuditEntry>,
}

/// The first 8 hex digits of a hash, for messages.
fn short(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

fn append_err(e: &Error) -> Error {
    match e {
        Error::IntegrityMismatch { object, reason } => Error::integrity(
            object,
            format!(
                "{reason}; a new audit entry must name its hash, so none can be appended: run `gatevault audit verify`"
            ),
        ),
        other => Error::integrity("audit log", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::crypto::{Cipher, MasterKey};
    use crate::id::RepoId;

    fn setup() -> (MemoryBackend, RepoKeys) {
        let keys = RepoKeys::new(
            MasterKey::generate(),
            RepoId::random(),
            Cipher::XChaCha20Poly1305,
        );
        (MemoryBackend::new(), keys)
    }

    fn draft(command: &str) -> Draft {
        Draft {
            key: KeyId([7; 32]),
            role: "admin".into(),
            command: command.into(),
            result: "success".into(),
            ..Draft::default()
        }
    }

    fn broken_at(v: &Verification) -> u64 {
        v.broken.as_ref().map(|b| b.seq).unwrap_or(0)
    }

    #[test]
    fn names_round_trip_and_sort_by_seq() {
        assert_eq!(entry_name(1), format!("{:064x}", 1));
        for seq in [1, 9, 10, 255, 256, u64::MAX] {
            assert_eq!(parse_entry_name(&entry_name(seq)), Some(seq));
        }
        assert!(entry_name(9) < entry_name(10) && entry_name(255) < entry_name(256));
        assert_eq!(parse_entry_name(&entry_name(0)), None, "seq 0 is no entry");
        assert_eq!(parse_entry_name(&"ff".repeat(32)), None);
        assert_eq!(parse_entry_name("1"), None);
        let head = Head {
            seq: 3,
            hash: [0xab; 32],
        };
        assert_eq!(head.to_string().parse::<Head>().unwrap(), head);
        assert!(matches!("3".parse::<Head>(), Err(Error::InvalidInput(_))));
        assert!(matches!(
            "x:00".parse::<Head>(),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn appends_chain_and_verify() {
        let (b, keys) = setup();
        let log = AuditLog::new(&b, &keys);
        let v = log.verify(&[]).unwrap();
        assert!(v.is_intact() && v.entries == 0, "an empty log is intact");
        let (h1, p1) = log.append(&draft("init")).unwrap();
        assert_eq!((h1.seq, p1), (1, Head::EMPTY));
        let (h2, p2) = log.append(&draft("backup")).unwrap();
        assert_eq!((h2.seq, p2), (2, h1));
        let (e2, hash2) = log.load(2).unwrap();
        assert_eq!(e2.prev, h1.hash_hex(), "entry 2 names entry 1's hash");
        assert_eq!(hash2, h2.hash);
        assert_eq!(log.head().unwrap(), h2);
        let v = log.verify(&[]).unwrap();
        assert!(v.is_intact(), "{:?}", v.broken);
        assert_eq!((v.entries, v.head), (2, h2));
        let cmds: Vec<String> = log
            .entries()
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.unwrap().command)
            .collect();
        assert_eq!(cmds, ["init", "backup"]);
    }

    #[test]
    fn deletion_reordering_alteration_and_truncation_are_detected() {
        let (b, keys) = setup();
        let log = AuditLog::new(&b, &keys);
        for c in ["init", "backup", "backup", "forget", "backup"] {
            log.append(&draft(c)).unwrap();
        }
        let orig: Vec<Vec<u8>> = (1..=5)
            .map(|s| b.read(FileType::Audit, &entry_name(s)).unwrap())
            .collect();
        let put =
            |seq: u64, bytes: &[u8]| b.corrupt(FileType::Audit, &entry_name(seq), bytes.to_vec());
        let put_back = || (1..=5).for_each(|s| put(s, &orig[s as usize - 1]));
        let head = log.head().unwrap();

        // A deleted entry is a gap.
        b.remove(FileType::Audit, &entry_name(3)).unwrap();
        let v = log.verify(&[]).unwrap();
        assert_eq!(broken_at(&v), 3);
        assert!(v.broken.unwrap().problem.contains("missing"));
        put_back();
        assert!(log.verify(&[]).unwrap().is_intact());

        // Swapped entries do not decrypt under each other's names.
        put(3, &orig[3]);
        put(4, &orig[2]);
        assert_eq!(broken_at(&log.verify(&[]).unwrap()), 3);
        put_back();

        // One altered byte.
        let mut bad = orig[1].clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        put(2, &bad);
        let v = log.verify(&[]).unwrap();
        assert_eq!(broken_at(&v), 2);
        assert!(v.broken.unwrap().problem.contains("altered"));
        assert_eq!(v.entries, 1, "entry 1 verified before the break");
        put_back();

        // A key holder who re-seals entry 3 with other content breaks the link of entry 4.
        let mut forged = log.load(3).unwrap().0;
        forged.command = "snapshots".into();
        put(3, &seal(&keys, 3, &forged.encode()));
        let v = log.verify(&[]).unwrap();
        assert_eq!(broken_at(&v), 4, "{:?}", v.broken);
        assert!(v.broken.unwrap().problem.contains("reordered"));
        put_back();
        assert!(log.verify(&[]).unwrap().is_intact());

        // Deleting the last entry leaves an intact but shorter chain: only a remembered head shows it.
        b.remove(FileType::Audit, &entry_name(5)).unwrap();
        assert!(log.verify(&[]).unwrap().is_intact());
        let seen = Remembered::this_machine(head, "2025-01-01T00:00:00Z");
        let v = log.verify(std::slice::from_ref(&seen)).unwrap();
        assert_eq!(broken_at(&v), 5);
        let msg = v.broken.unwrap().problem;
        assert!(
            msg.contains("ends at seq 4") && msg.contains("saw seq 5"),
            "{msg}"
        );
        // A rewritten log of the same length does not contain the remembered hash either.
        put(
            5,
            &seal(&keys, 5, &{
                let mut e = AuditLog::new(&b, &keys).load(4).unwrap().0;
                e.seq = 5;
                e.prev = log.head().unwrap().hash_hex();
                e.encode()
            }),
        );
        assert!(log.verify(&[]).unwrap().is_intact());
        assert_eq!(broken_at(&log.verify(&[seen]).unwrap()), 5);
    }

    fn seal(keys: &RepoKeys, seq: u64, plain: &[u8]) -> Vec<u8> {
        keys.seal_object(Kind::Audit, &entry_id(seq), plain)
    }

    #[test]
    fn concurrent_appends_never_fork() {
        let (b, keys) = setup();
        let b: Arc<dyn Backend> = Arc::new(b);
        let keys = Arc::new(keys);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (b, keys) = (b.clone(), keys.clone());
                std::thread::spawn(move || {
                    let log = AuditLog::new(b.as_ref(), &keys);
                    for _ in 0..5 {
                        log.append(&draft(&format!("backup {i}"))).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let v = AuditLog::new(b.as_ref(), &keys).verify(&[]).unwrap();
        assert!(v.is_intact(), "{:?}", v.broken);
        assert_eq!(v.entries, 40);
    }

    #[test]
    fn a_damaged_last_entry_stops_appends() {
        let (b, keys) = setup();
        let log = AuditLog::new(&b, &keys);
        log.append(&draft("init")).unwrap();
        b.corrupt(FileType::Audit, &entry_name(1), b"garbage".to_vec());
        let e = log.append(&draft("backup")).unwrap_err();
        assert!(
            matches!(&e, Error::IntegrityMismatch { reason, .. } if reason.contains("audit verify")),
            "{e}"
        );
    }
}
