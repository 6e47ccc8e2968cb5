//! Sealing audit entries again under the current key epoch, for `rewrite --reencrypt`.
//!
//! Snapshots and records are re-sealed as new objects under new ids, but an audit entry is named by its
//! position in the log, and objects are write-once: the entry has to be removed and written again under
//! the same name. In between, the entry exists nowhere in `audit/`, so each entry goes through a copy:
//!
//! 1. its plaintext is stored in a record (`type` `audit-reseal`, [`AuditEntryCopy`]) sealed under the
//!    current epoch, named [`RepoKeys::audit_copy_id`] of its seq;
//! 2. `audit/<seq>` is removed;
//! 3. `audit/<seq>` is written again, the same plaintext sealed under the current epoch;
//! 4. the copy is removed.
//!
//! The plaintext does not change, so neither does its hash: the chain, and every head remembered from it,
//! stay valid. Interrupted at any step, the entry exists as the entry, as the copy, or both; a re-run
//! finds the copy by its name (derived from the seq, whatever epoch the key holds) and finishes the
//! steps. While only the copy exists, [`AuditLog::verify`] verifies the chain through it, and
//! [`AuditLog::append`] puts the entry back from it before appending after it, so that no new entry can
//! take the name of the one being re-sealed (appenders only ever write the name after the last one).
//!
//! If step 3 still finds the name taken by a different entry (a client that does not know the copies,
//! or one whose key cannot read them), the copy is kept and the re-seal fails naming it: nothing is lost,
//! but the log now holds another entry in that place, which [`AuditLog::verify`] reports as a broken
//! link until someone decides what to keep.
//!
//! [`RepoKeys::audit_copy_id`]: crate::crypto::RepoKeys::audit_copy_id

use std::collections::BTreeSet;

use serde::Serialize;

use super::{copy_hash, displaced, entry_id, entry_name, entry_path, AuditLog};
use crate::backend::FileType;
use crate::crypto::{envelope_epoch, Kind, ENVELOPE_EPOCH_PREFIX};
use crate::error::{Error, Result};
use crate::format::AuditEntryCopy;

/// How often step 3 writes the entry again after finding it put back under an old epoch (by an
/// appender holding an older key) before giving up.
const MAX_PUT_BACK_ATTEMPTS: usize = 3;

/// What [`AuditLog::reseal`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResealReport {
    /// Entries sealed again under the current epoch, by seq.
    pub resealed: Vec<u64>,
    /// Of those, the ones an interrupted run had started (a copy of them was found).
    pub resumed: Vec<u64>,
    /// Copies found for entries already under the current epoch (left by a run interrupted after
    /// step 3), removed.
    pub leftover_copies: Vec<u64>,
    /// The records that held copies, created or found (all of them are gone afterwards).
    #[serde(skip)]
    pub copy_records: BTreeSet<String>,
}

impl AuditLog<'_> {
    /// The epoch of every stored entry, by seq, from the envelope headers only (nothing is decrypted).
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] naming an entry that does not start with an envelope header;
    /// backend errors.
    pub fn epochs(&self) -> Result<Vec<(u64, u32)>> {
        use rayon::prelude::*;
        let (seqs, _) = self.list()?;
        seqs.par_iter()
            .map(|seq| {
                let head = self.backend.read_range(
                    FileType::Audit,
                    &entry_name(*seq),
                    0,
                    ENVELOPE_EPOCH_PREFIX as u64,
                )?;
                let epoch = envelope_epoch(&head).ok_or_else(|| {
                    Error::integrity(
                        format!("audit entry {seq} ({})", entry_path(*seq)),
                        "it does not start with an envelope header; run `gatevault audit verify`",
                    )
                })?;
                Ok((*seq, epoch))
            })
            .collect()
    }

    /// Re-seals under the current epoch the entries `old` (their seqs), and finishes every re-seal an
    /// interrupted run left (see the module documentation). `between` runs before each entry (the
    /// caller's lock check).
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] when an entry or its copy cannot be read, or when another entry took
    /// the name of one being re-sealed (the copy is kept, named in the message); errors of `between`;
    /// backend errors. Whatever was done before stays consistent.
    pub fn reseal(&self, old: &[u64], between: &dyn Fn() -> Result<()>) -> Result<ResealReport> {
        let (seqs, _) = self.list()?;
        let copies = self.copies(seqs.last().copied().unwrap_or(0))?;
        let mut todo: BTreeSet<u64> = old.iter().copied().collect();
        todo.extend(copies.keys());
        let mut report = ResealReport::default();
        for seq in todo {
            between()?;
            self.reseal_one(seq, &mut report)?;
        }
        Ok(report)
    }

    fn reseal_one(&self, seq: u64, report: &mut ResealReport) -> Result<()> {
        let current = self.keys.master().current_epoch();
        let name = entry_name(seq);
        let copy_name = self.copy_name(seq);
        let read_entry = || match self.backend.read(FileType::Audit, &name) {
            Ok(env) => Ok(Some(env)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let under_current = |env: &[u8]| envelope_epoch(env) == Some(current);
        let stored = read_entry()?;
        let found = self.load_copy(seq)?;
        let resumed = found.is_some();
        if resumed {
            report.copy_records.insert(copy_name.clone());
        }
        let copy = match (found, &stored) {
            (None, None) => return Ok(()),
            (None, Some(env)) => {
                if under_current(env) {
                    return Ok(());
                }
                let (_, _, plain) = self.open_entry(seq, env)?;
                let text = String::from_utf8(plain).map_err(|_| {
                    Error::integrity(entry_path(seq), "its plaintext is not UTF-8 JSON")
                })?;
                // Step 1: the copy.
                let copy = AuditEntryCopy::new(seq, &text);
                let id = self.keys.audit_copy_id(seq);
                let env = self.keys.seal_object(Kind::Record, &id, &copy.encode());
                report.copy_records.insert(copy_name.clone());
                match self.backend.write(FileType::Record, &copy_name, &env) {
                    Ok(()) => copy,
                    // Written meanwhile by another re-seal: use that one (it is checked below).
                    Err(Error::AlreadyExists { .. }) => self.load_copy(seq)?.ok_or_else(|| {
                        Error::integrity(&copy_name, "the copy vanished while it was written")
                    })?,
                    Err(e) => return Err(e),
                }
            }
            (Some(c), _) => c,
        };
        if let Some(env) = &stored {
            let (_, hash, _) = self.open_entry(seq, env).map_err(|e| {
                Error::integrity(
                    entry_path(seq),
                    format!(
                        "{e}; a copy of the entry made to re-seal it is kept in record {copy_name} \
                         (nothing was changed)"
                    ),
                )
            })?;
            if hash != copy_hash(&copy) {
                return Err(displaced_error(seq, &copy_name, &copy, &hash));
            }
            if under_current(env) {
                // Put back already (step 3 done, or an appender restored it): only step 4 is left.
                remove_if_present(self, FileType::Record, &copy_name)?;
                report.leftover_copies.push(seq);
                return Ok(());
            }
        }
        let mut present = stored.is_some();
        for _ in 0..MAX_PUT_BACK_ATTEMPTS {
            // Step 2.
            if present {
                remove_if_present(self, FileType::Audit, &name)?;
            }
            // Step 3.
            let env = self
                .keys
                .seal_object(Kind::Audit, &entry_id(seq), copy.entry.as_bytes());
            match self.backend.write(FileType::Audit, &name, &env) {
                Ok(()) => {
                    present = false;
                    break;
                }
                Err(Error::AlreadyExists { .. }) => {
                    // Put back meanwhile by an appender (from this copy), or taken by another entry.
                    let env = read_entry()?.unwrap_or_default();
                    let (_, hash, _) = self.open_entry(seq, &env)?;
                    if hash != copy_hash(&copy) {
                        return Err(displaced_error(seq, &copy_name, &copy, &hash));
                    }
                    if under_current(&env) {
                        present = false;
                        break;
                    }
                    present = true;
                }
                Err(e) => return Err(e),
            }
        }
        if present {
            return Err(Error::integrity(
                entry_path(seq),
                format!(
                    "it was put back under an old key epoch {MAX_PUT_BACK_ATTEMPTS} times by other \
                     commands while it was re-sealed; its copy is kept in record {copy_name}: run \
                     `gatevault rewrite --reencrypt` again"
                ),
            ));
        }
        // Step 4.
        remove_if_present(self, FileType::Record, &copy_name)?;
        report.resealed.push(seq);
        if resumed {
            report.resumed.push(seq);
        }
        Ok(())
    }
}

fn displaced_error(seq: u64, record: &str, copy: &AuditEntryCopy, stored: &[u8; 32]) -> Error {
    let b = displaced(seq, record, copy, stored);
    Error::integrity(b.object, format!("{}; {}", b.problem, b.next_step))
}

/// Removes an object; one already gone (a re-run after an interruption) is fine.
fn remove_if_present(log: &AuditLog<'_>, t: FileType, name: &str) -> Result<()> {
    match log.backend.remove(t, name) {
        Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Draft;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Backend;
    use crate::crypto::{Cipher, MasterKey, RepoKeys};
    use crate::id::{KeyId, RepoId};

    fn draft(command: &str) -> Draft {
        Draft {
            key: KeyId([7; 32]),
            role: "admin".into(),
            command: command.into(),
            result: "success".into(),
            ..Draft::default()
        }
    }

    /// A log of `n` entries sealed under epoch 0, and the keys after a rotation (epochs 0 and 1).
    fn rotated_log(n: usize) -> (MemoryBackend, RepoKeys, RepoKeys) {
        let mut m = MasterKey::generate();
        let id = RepoId::random();
        let old = RepoKeys::new(m.clone(), id, Cipher::XChaCha20Poly1305);
        let b = MemoryBackend::new();
        for i in 0..n {
            AuditLog::new(&b, &old)
                .append(&draft(&format!("c{i}")))
                .unwrap();
        }
        m.rotate();
        let new = RepoKeys::new(m, id, Cipher::XChaCha20Poly1305);
        (b, old, new)
    }

    fn epochs(b: &MemoryBackend, keys: &RepoKeys) -> Vec<u32> {
        AuditLog::new(b, keys)
            .epochs()
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    fn old_seqs(b: &MemoryBackend, keys: &RepoKeys) -> Vec<u64> {
        let current = keys.master().current_epoch();
        AuditLog::new(b, keys)
            .epochs()
            .unwrap()
            .into_iter()
            .filter(|(_, e)| *e != current)
            .map(|(s, _)| s)
            .collect()
    }

    #[test]
    fn reseal_moves_every_entry_to_the_current_epoch_and_keeps_the_chain() {
        let (b, old, new) = rotated_log(4);
        let head = AuditLog::new(&b, &old).head().unwrap();
        let log = AuditLog::new(&b, &new);
        let r = log.reseal(&old_seqs(&b, &new), &|| Ok(())).unwrap();
        assert_eq!(r.resealed, [1, 2, 3, 4]);
        assert!(r.resumed.is_empty() && r.leftover_copies.is_empty());
        assert_eq!(epochs(&b, &new), [1, 1, 1, 1]);
        assert!(b.list(FileType::Record).unwrap().is_empty(), "no copy left");
        assert_eq!(log.head().unwrap(), head, "same plaintext, same hashes");
        let seen = super::super::Remembered::this_machine(head, "2025-01-01T00:00:00Z");
        assert!(log.verify(&[seen]).unwrap().is_intact());
        let retired = RepoKeys::new(
            new.master().retain_current(),
            new.repo_id(),
            Cipher::XChaCha20Poly1305,
        );
        assert!(AuditLog::new(&b, &retired).verify(&[]).unwrap().is_intact());
        // Nothing left to do.
        let again = log.reseal(&old_seqs(&b, &new), &|| Ok(())).unwrap();
        assert_eq!(again, ResealReport::default());
    }

    /// Steps 1 and 2 of a re-seal of entry `seq`, as a run interrupted before step 3 leaves them.
    fn leave_only_the_copy(b: &MemoryBackend, keys: &RepoKeys, seq: u64) -> AuditEntryCopy {
        let log = AuditLog::new(b, keys);
        let (_, _, plain) = log
            .open_entry(seq, &b.read(FileType::Audit, &entry_name(seq)).unwrap())
            .unwrap();
        let c = AuditEntryCopy::new(seq, std::str::from_utf8(&plain).unwrap());
        let id = keys.audit_copy_id(seq);
        b.write(
            FileType::Record,
            &log.copy_name(seq),
            &keys.seal_object(Kind::Record, &id, &c.encode()),
        )
        .unwrap();
        b.remove(FileType::Audit, &entry_name(seq)).unwrap();
        c
    }

    #[test]
    fn an_entry_left_only_as_its_copy_verifies_and_a_rerun_puts_it_back() {
        let (b, _old, new) = rotated_log(3);
        let log = AuditLog::new(&b, &new);
        let head = log.head().unwrap();
        leave_only_the_copy(&b, &new, 2);
        let v = log.verify(&[]).unwrap();
        assert!(v.is_intact(), "{:?}", v.broken);
        assert_eq!((v.entries, v.head), (3, head));
        assert_eq!(v.pending.len(), 1);
        assert!(!v.pending[0].entry_stored && v.pending[0].seq == 2);
        let listed: Vec<String> = log
            .entries()
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.unwrap().command)
            .collect();
        assert_eq!(
            listed,
            ["c0", "c1", "c2"],
            "the listing reads entry 2 from its copy"
        );
        // An append goes after the last entry, never into the hole.
        let (h4, _) = log.append(&draft("backup")).unwrap();
        assert_eq!(h4.seq, 4);
        assert!(!b.exists(FileType::Audit, &entry_name(2)).unwrap());

        let r = log.reseal(&old_seqs(&b, &new), &|| Ok(())).unwrap();
        assert_eq!(r.resealed, [1, 2, 3]);
        assert_eq!(r.resumed, [2]);
        assert!(b.list(FileType::Record).unwrap().is_empty());
        assert_eq!(epochs(&b, &new), [1, 1, 1, 1]);
        let v = log.verify(&[]).unwrap();
        assert!(v.is_intact() && v.pending.is_empty(), "{:?}", v.broken);
        assert_eq!(v.head, h4);
    }

    #[test]
    fn the_last_entry_left_only_as_its_copy_is_put_back_by_the_next_append() {
        let (b, _old, new) = rotated_log(3);
        let log = AuditLog::new(&b, &new);
        let head = log.head().unwrap();
        leave_only_the_copy(&b, &new, 3);
        let v = log.verify(&[]).unwrap();
        assert!(v.is_intact(), "{:?}", v.broken);
        assert_eq!((v.entries, v.head), (3, head), "the copy stands in");
        assert_eq!(
            log.head().unwrap(),
            head,
            "the copy of the last entry counts"
        );

        // An append puts entry 3 back (it would otherwise take its name) and chains onto it.
        let (h4, prev) = log.append(&draft("backup")).unwrap();
        assert_eq!((h4.seq, prev), (4, head));
        assert!(b.exists(FileType::Audit, &entry_name(3)).unwrap());

        let r = log.reseal(&old_seqs(&b, &new), &|| Ok(())).unwrap();
        assert_eq!(r.resealed, [1, 2]);
        assert_eq!(r.leftover_copies, [3], "put back under epoch 1 already");
        assert!(b.list(FileType::Record).unwrap().is_empty());
        assert_eq!(epochs(&b, &new), [1, 1, 1, 1]);
        let v = log.verify(&[]).unwrap();
        assert!(v.is_intact() && v.pending.is_empty(), "{:?}", v.broken);
        assert_eq!(v.head, h4);
    }

    #[test]
    fn an_appender_that_cannot_read_the_copy_appends_nothing() {
        let (b, old, new) = rotated_log(2);
        leave_only_the_copy(&b, &new, 2);
        // A session opened with the key before the rotation cannot open the copy (epoch 1).
        let e = AuditLog::new(&b, &old)
            .append(&draft("backup"))
            .unwrap_err();
        assert!(e.to_string().contains("rewrite --reencrypt"), "{e}");
        assert_eq!(AuditLog::new(&b, &new).list().unwrap().0, [1]);
    }

    #[test]
    fn a_copy_must_hold_the_entry_it_names() {
        let (b, _old, new) = rotated_log(2);
        let log = AuditLog::new(&b, &new);
        let c = leave_only_the_copy(&b, &new, 2);
        let mut bad = c.clone();
        bad.entry = bad.entry.replace("\"c1\"", "\"c9\"");
        assert!(
            matches!(
                AuditEntryCopy::decode(&bad.encode()),
                Err(Error::Format { .. })
            ),
            "the hash no longer matches"
        );
        let wrong_seq = AuditEntryCopy::new(3, &c.entry);
        assert!(
            AuditEntryCopy::decode(&wrong_seq.encode()).is_err(),
            "a copy names the seq of the entry it holds"
        );
        // A copy stored under another seq's name does not open (it is sealed under its own id).
        b.remove(FileType::Record, &log.copy_name(2)).unwrap();
        let moved = new.seal_object(Kind::Record, &new.audit_copy_id(1), &c.encode());
        b.write(FileType::Record, &log.copy_name(2), &moved)
            .unwrap();
        assert!(matches!(
            log.load_copy(2),
            Err(Error::IntegrityMismatch { .. })
        ));
        let v = log.verify(&[]).unwrap();
        assert_eq!(v.broken.map(|b| b.seq), Some(2));
    }

    #[test]
    fn a_name_taken_by_another_entry_keeps_the_copy_and_fails() {
        let (b, old, new) = rotated_log(2);
        let log = AuditLog::new(&b, &new);
        let c = leave_only_the_copy(&b, &new, 2);
        // A client unaware of copies appends into the hole: write entry 2 by hand, chained on 1.
        let mut other = crate::format::AuditEntry::decode(c.entry.as_bytes()).unwrap();
        other.command = "forget".into();
        b.write(
            FileType::Audit,
            &entry_name(2),
            &old.seal_object(Kind::Audit, &entry_id(2), &other.encode()),
        )
        .unwrap();
        let e = log.reseal(&old_seqs(&b, &new), &|| Ok(())).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::IntegrityMismatch { .. })
                && msg.contains(&log.copy_name(2))
                && msg.contains("another command"),
            "{msg}"
        );
        assert!(
            b.exists(FileType::Record, &log.copy_name(2)).unwrap(),
            "the copy is kept"
        );
        let v = log.verify(&[]).unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(2), "{:?}", v.broken);
        let original = v.pending[0].original.as_ref().unwrap();
        assert_eq!(original.command, "c1", "the original is shown");
    }
}
