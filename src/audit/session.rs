//! What the command line collects while one command runs, and the rule for when it is recorded.
//!
//! A [`Session`] lives as long as the command. Every backend the command opens is wrapped by
//! [`Session::wrap`], so its writes and removals land in one [`ChangeLog`]; the first repository opened
//! with a key is attached ([`Session::attach`]) so that the entry can be sealed, signed by that key's
//! slot and role. When the command ends, [`Session::record`] appends one entry if the command
//!
//! - changed the repository (the change log is not empty: new commands are covered without any work),
//! - was refused by a role check, or
//! - is one that must always leave a trace, even when it failed early ([`always_audited`]).
//!
//! Read-only commands (and dry runs) leave none.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::mask::Masked;
use super::{AuditLog, Draft, Head, HeadFile};
use crate::backend::recording::{ChangeLog, RecordingBackend};
use crate::backend::{Backend, FileType};
use crate::crypto::keyslot::Role;
use crate::crypto::RepoKeys;
use crate::error::{Error, Result};
use crate::format::TouchedObjects;
use crate::id::KeyId;

/// Commands recorded whenever they run (not as dry runs), even if they failed before changing
/// anything: they change what the repository holds or who may open it. `key` stands for every `key`
/// subcommand but `key list`; a `restore` counts only into a gateway.
pub const ALWAYS_AUDITED: &[&str] = &[
    "init", "forget", "prune", "erase", "key", "rollback", "rewrite", "copy",
];

/// Whether `command` (`backup`, `key add`, ...) is recorded even when it changed nothing.
pub fn always_audited(command: &str, to_gateway: bool, dry_run: bool) -> bool {
    if dry_run {
        return false;
    }
    let first = command.split(' ').next().unwrap_or_default();
    match first {
        "key" => command != "key list",
        "restore" => to_gateway,
        _ => ALWAYS_AUDITED.contains(&first),
    }
}

/// The repository whose log records the command.
#[derive(Debug)]
pub struct Target {
    /// Its backend.
    pub backend: Arc<dyn Backend>,
    /// Its keys.
    pub keys: Arc<RepoKeys>,
    /// The key slot in use.
    pub key: KeyId,
    /// Its role.
    pub role: Role,
    /// Where this machine remembers the head (`None` without a cache folder).
    pub head_file: Option<HeadFile>,
}

/// One run of a command, as the audit log sees it.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// The command (`backup`, `key add`, `repair index`).
    pub command: String,
    /// The command line, masked.
    pub masked: Masked,
    /// Whether the command is recorded even when it changed nothing ([`always_audited`]).
    pub always: bool,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It returned this exit code.
    Exit(u8),
    /// A role check refused it (exit 13).
    Refused {
        /// The error message.
        message: String,
        /// The exit code.
        exit: u8,
    },
    /// It failed.
    Failed {
        /// The error message.
        message: String,
        /// The exit code.
        exit: u8,
    },
}

impl Outcome {
    /// The outcome of a command's result: a [`Error::NotAllowed`] anywhere in the chain is a refusal.
    pub fn of(result: &std::result::Result<u8, anyhow::Error>, exit_code: u8) -> Self {
        match result {
            Ok(code) => Outcome::Exit(*code),
            Err(e) => {
                let message = format!("{e:#}");
                if e.chain()
                    .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::NotAllowed { .. })))
                {
                    Outcome::Refused {
                        message,
                        exit: exit_code,
                    }
                } else {
                    Outcome::Failed {
                        message,
                        exit: exit_code,
                    }
                }
            }
        }
    }

    /// The exit code.
    pub fn exit(&self) -> u8 {
        match self {
            Outcome::Exit(c) => *c,
            Outcome::Refused { exit, .. } | Outcome::Failed { exit, .. } => *exit,
        }
    }

    /// The `result` field of an entry, secrets scrubbed from messages.
    fn result(&self, masked: &Masked) -> String {
        match self {
            Outcome::Exit(0) => "success".into(),
            Outcome::Exit(3) => "partial".into(),
            Outcome::Exit(c) => format!("failed: exit code {c}"),
            Outcome::Refused { message, .. } => format!("refused: {}", masked.scrub(message)),
            Outcome::Failed { message, .. } => format!("failed: {}", masked.scrub(message)),
        }
    }
}

/// What [`Session::record`] did.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The new entry's seq and hash.
    pub head: Head,
    /// Something to tell the user although the entry was written (the remembered head is no longer in
    /// the chain, or could not be updated).
    pub warning: Option<String>,
}

/// The audit state of one command run (see the module documentation).
#[derive(Debug, Default)]
pub struct Session {
    changes: Arc<ChangeLog>,
    target: Mutex<Option<Arc<Target>>>,
    details: Mutex<Option<serde_json::Value>>,
}

impl Session {
    /// `backend`, wrapped so that its changes are recorded for this command.
    pub fn wrap(&self, backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
        Arc::new(RecordingBackend::new(backend, self.changes.clone()))
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Target>>> {
        self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `target` the repository whose log records this command, unless one is attached already:
    /// the first repository opened is the audited one.
    pub fn attach(&self, target: Target) {
        self.slot().get_or_insert_with(|| Arc::new(target));
    }

    /// Makes `target` the audited repository, replacing the one attached: for a command that reads
    /// one repository and changes another (`copy` records in its destination's log).
    pub fn retarget(&self, target: Target) {
        *self.slot() = Some(Arc::new(target));
    }

    /// Replaces the keys the entry will be sealed with, when the attached repository is the one `keys`
    /// belong to: a command that changed the master key (`key rotate`, `rewrite --reencrypt --retire`)
    /// seals its entry under the new current epoch, with a key that reads every entry sealed since.
    /// The key slot and role recorded stay those the repository was opened with.
    pub fn rekey(&self, keys: Arc<RepoKeys>) {
        let mut slot = self.slot();
        if let Some(t) = slot.as_ref() {
            if t.keys.repo_id() == keys.repo_id() {
                *slot = Some(Arc::new(Target {
                    backend: t.backend.clone(),
                    keys,
                    key: t.key,
                    role: t.role,
                    head_file: t.head_file.clone(),
                }));
            }
        }
    }

    /// Adds what the command reports about its work to its entry (`details`); never a secret or a
    /// personal value: the caller masks them.
    pub fn note(&self, details: serde_json::Value) {
        *self.details.lock().unwrap_or_else(|e| e.into_inner()) = Some(details);
    }

    /// Whether a repository is attached.
    pub fn is_attached(&self) -> bool {
        self.slot().is_some()
    }

    /// What the command's backends changed so far.
    pub fn changes(&self) -> &ChangeLog {
        &self.changes
    }

    /// The head file of the attached repository, if any.
    pub fn head_file(&self) -> Option<PathBuf> {
        self.slot()
            .as_ref()
            .and_then(|t| t.head_file.as_ref())
            .map(|h| h.path().to_path_buf())
    }

    /// Appends the entry for `inv` ending in `outcome` when the rule of the module documentation asks
    /// for one; `Ok(None)` when none is due.
    ///
    /// # Errors
    /// When an entry is due but cannot be written: the repository was changed without being opened
    /// with a key, the log's last entry is damaged, or the backend failed.
    pub fn record(&self, inv: &Invocation, outcome: &Outcome) -> Result<Option<Recorded>> {
        let changed = !self.changes.is_empty();
        let refused = matches!(outcome, Outcome::Refused { .. });
        if !(changed || refused || inv.always) {
            return Ok(None);
        }
        let target = self.slot().clone();
        let Some(t) = target else {
            if changed {
                return Err(Error::InvalidInput(format!(
                    "`{}` changed the repository before it was opened with a key, so its audit entry cannot be sealed",
                    inv.command
                )));
            }
            // Nothing changed and no key opened the repository (wrong password, no repository):
            // there is nothing to record and nothing to seal it with.
            return Ok(None);
        };
        let objects: BTreeMap<String, TouchedObjects> = self
            .changes
            .changes()
            .into_iter()
            .map(|(t, c)| {
                (
                    match t {
                        FileType::Audit => "audit".to_string(),
                        t => t.to_string(),
                    },
                    TouchedObjects {
                        added: c.added,
                        removed: c.removed,
                    },
                )
            })
            .collect();
        let draft = Draft {
            key: t.key,
            role: format!("{:?}", t.role).to_lowercase(),
            command: inv.command.clone(),
            args: inv.masked.args.clone(),
            result: outcome.result(&inv.masked),
            exit: outcome.exit(),
            objects,
            details: self
                .details
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let log = AuditLog::new(t.backend.as_ref(), &t.keys);
        let (head, prev) = log.append(&draft)?;
        let warning = match &t.head_file {
            None => None,
            Some(f) => {
                let hash_at = |seq: u64| -> Result<Option<[u8; 32]>> {
                    if seq == head.seq {
                        return Ok(Some(head.hash));
                    }
                    if seq == prev.seq {
                        return Ok(Some(prev.hash));
                    }
                    log.hash_of(seq)
                };
                match f.advance(head, &hash_at) {
                    Ok(None) => None,
                    Ok(Some(old)) => Some(format!(
                        "the audit log no longer contains entry {} with hash {} that this machine saw on {}: it was cut short or rewritten; run `gatevault audit verify`",
                        old.seq,
                        old.hash.get(..8).unwrap_or(&old.hash),
                        old.seen.as_deref().unwrap_or("an earlier run")
                    )),
                    Err(e) => Some(format!(
                        "the audit entry was written, but this machine could not remember the new head: {e}"
                    )),
                }
            }
        };
        Ok(Some(Recorded { head, warning }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::mask::{mask_args, OptionInfo};
    use crate::backend::memory::MemoryBackend;
    use crate::crypto::{Cipher, MasterKey};
    use crate::id::RepoId;

    fn target(b: &Arc<dyn Backend>, head_file: Option<HeadFile>) -> Target {
        Target {
            backend: b.clone(),
            keys: Arc::new(RepoKeys::new(
                MasterKey::generate(),
                RepoId::random(),
                Cipher::Aes256Gcm,
            )),
            key: KeyId([3; 32]),
            role: Role::Backup,
            head_file,
        }
    }

    fn inv(command: &str, args: &[&str]) -> Invocation {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let lookup = |o: &str| {
            (o == "--password-file").then(|| OptionInfo {
                long: "password-file".into(),
                takes_value: true,
            })
        };
        Invocation {
            command: command.into(),
            masked: mask_args(&args, &lookup),
            always: always_audited(command, false, false),
        }
    }

    #[test]
    fn the_rule() {
        assert!(always_audited("init", false, false));
        assert!(always_audited("key add", false, false));
        assert!(always_audited("key rotate", false, false));
        assert!(!always_audited("key list", false, false));
        assert!(always_audited("prune", false, false));
        assert!(!always_audited("prune", false, true), "dry runs are reads");
        assert!(!always_audited("restore", false, false));
        assert!(always_audited("restore", true, false));
        assert!(!always_audited("backup", false, false));
        assert!(!always_audited("snapshots", false, false));

        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let s = Session::default();
        let b = s.wrap(mem.clone());
        let dir = tempfile::tempdir().unwrap();
        let t = target(&b, Some(HeadFile::in_cache(dir.path(), &RepoId([9; 32]))));
        let keys = t.keys.clone();
        s.attach(t);
        // A read-only command: nothing.
        b.list(FileType::Snapshot).unwrap();
        b.write(FileType::Lock, &"11".repeat(32), b"l").unwrap();
        assert!(s
            .record(&inv("snapshots", &[]), &Outcome::Exit(0))
            .unwrap()
            .is_none());
        // A refusal is recorded with its message.
        let r = s
            .record(
                &inv("forget", &["--password-file", "/run/pw", "latest"]),
                &Outcome::Refused {
                    message: "role backup may not forget (password file /run/pw)".into(),
                    exit: 13,
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.head.seq, 1);
        assert!(r.warning.is_none(), "{:?}", r.warning);
        // A change is recorded with its objects.
        b.write(FileType::Snapshot, &"22".repeat(32), b"s").unwrap();
        let r = s
            .record(&inv("backup", &["/etc"]), &Outcome::Exit(3))
            .unwrap()
            .unwrap();
        assert_eq!(r.head.seq, 2);
        let log = AuditLog::new(mem.as_ref(), &keys);
        let (e1, _) = log.load(1).unwrap();
        assert_eq!(
            e1.result,
            "refused: role backup may not forget (password file <secret>)"
        );
        assert_eq!(e1.args, ["--password-file", "<secret>", "latest"]);
        assert_eq!(
            (e1.role.as_str(), e1.key, e1.exit),
            ("backup", KeyId([3; 32]), 13)
        );
        let (e2, _) = log.load(2).unwrap();
        assert_eq!(e2.result, "partial");
        assert_eq!(e2.objects["snapshot"].added, ["22".repeat(32)]);
        assert!(!e2.objects.contains_key("lock"));
        assert_eq!(
            HeadFile::in_cache(dir.path(), &RepoId([9; 32]))
                .load()
                .unwrap()
                .unwrap()
                .seq,
            2,
            "the head file follows the appends"
        );
    }

    #[test]
    fn a_rekeyed_session_seals_under_the_new_epoch_and_reads_entries_sealed_under_it() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let s = Session::default();
        let b = s.wrap(mem.clone());
        let t = target(&b, None);
        let old = t.keys.clone();
        let mut m = old.master().clone();
        m.rotate();
        let new = Arc::new(RepoKeys::new(m, old.repo_id(), old.cipher()));
        s.attach(t);
        // Another session, opened through a rewrapped key slot, appended under the new epoch.
        AuditLog::new(mem.as_ref(), &new)
            .append(&crate::audit::Draft {
                command: "backup".into(),
                ..Default::default()
            })
            .unwrap();
        let rotate = inv("key rotate", &[]);
        let e = s.record(&rotate, &Outcome::Exit(0)).unwrap_err();
        assert!(e.to_string().contains("no such epoch"), "{e}");
        // Another repository's keys are ignored; this repository's new keys are used.
        s.rekey(Arc::new(RepoKeys::new(
            MasterKey::generate(),
            RepoId::random(),
            Cipher::Aes256Gcm,
        )));
        assert!(s.record(&rotate, &Outcome::Exit(0)).is_err());
        s.rekey(new.clone());
        let r = s.record(&rotate, &Outcome::Exit(0)).unwrap().unwrap();
        assert_eq!(r.head.seq, 2);
        let env = mem
            .read(FileType::Audit, &crate::audit::entry_name(2))
            .unwrap();
        assert_eq!(crate::crypto::envelope_epoch(&env), Some(1));
        let (e, _) = AuditLog::new(mem.as_ref(), &new).load(2).unwrap();
        assert_eq!(
            e.key,
            KeyId([3; 32]),
            "the slot in use is still the one recorded"
        );
    }

    #[test]
    fn changes_without_a_key_cannot_be_recorded() {
        let s = Session::default();
        let b = s.wrap(Arc::new(MemoryBackend::new()));
        assert!(s
            .record(
                &inv("init", &[]),
                &Outcome::Failed {
                    message: "wrong password".into(),
                    exit: 12
                }
            )
            .unwrap()
            .is_none());
        b.write(FileType::Key, &"33".repeat(32), b"k").unwrap();
        assert!(s.record(&inv("init", &[]), &Outcome::Exit(1)).is_err());
    }
}
