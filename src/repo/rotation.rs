//! Changing the master key: rotation (`key rotate`: a new epoch becomes current) and retirement of the
//! old epochs (`rewrite --reencrypt --retire`), with the key slots rewrapped.
//!
//! Every key slot wraps the whole master key, and only the holder of a slot's password or key file can
//! rewrap it. A change therefore rewraps the slot in use and every other slot whose password or key
//! file is given; the slots nobody can rewrap are either listed in a refusal (before anything changes)
//! or, when asked, removed. A slot left on the old master key could not read what is sealed under the
//! new epoch, and it would keep the old key alive, which is what a rotation after a compromise or a
//! departure is meant to end.
//!
//! New slots are written before any old one is removed, and the slot in use is removed last. A new slot
//! gets the [`successor_id`] of the slot it replaces, so a change that was interrupted is recognised:
//! run again from a session of the old slot, it reads the new master key back from the successor of
//! the slot in use (instead of drawing another epoch key, which would orphan anything already sealed
//! under the first), keeps the successors already written and removes the old slots they replace.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use super::{Credentials, Repository};
use crate::backend::FileType;
use crate::crypto::keyslot::{successor_id, Credential, KeySlot, Role, SlotKind};
use crate::crypto::{MasterKey, RepoKeys};
use crate::error::{Error, Result};
use crate::id::KeyId;
use crate::repo::lock::LockGuard;

/// What happens to the master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterChange {
    /// Add an epoch and make it current; the old ones stay readable.
    Rotate,
    /// Drop every epoch but the current one (nothing may be sealed under them any more).
    Retire,
}

impl MasterChange {
    fn doing(self) -> &'static str {
        match self {
            MasterChange::Rotate => "rotating the master key",
            MasterChange::Retire => "retiring the old key epochs",
        }
    }
}

/// A key slot as reports name it.
#[derive(Clone, Debug, Serialize)]
pub struct SlotSummary {
    /// The slot.
    pub id: KeyId,
    /// Password or key file.
    pub kind: SlotKind,
    /// Its role.
    pub role: Role,
    /// Who made it, on which host.
    pub username: String,
    /// On which host.
    pub hostname: String,
}

impl SlotSummary {
    fn of(id: &KeyId, s: &KeySlot) -> Self {
        Self {
            id: *id,
            kind: s.kind,
            role: s.role,
            username: s.username.clone(),
            hostname: s.hostname.clone(),
        }
    }

    fn describe(&self) -> String {
        let kind = match self.kind {
            SlotKind::Password => "password",
            SlotKind::KeyFile => "key file",
        };
        format!(
            "{} ({kind}, role {}, made by {}@{})",
            self.id.short(),
            format!("{:?}", self.role).to_lowercase(),
            self.username,
            self.hostname
        )
    }
}

/// One slot rewrapped: the old one is replaced by `new`.
#[derive(Clone, Debug, Serialize)]
pub struct Rewrapped {
    /// The slot replaced (removed).
    pub old: SlotSummary,
    /// The slot written in its place.
    pub new: KeyId,
}

/// What a change of the master key did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MasterChangeReport {
    /// The current epoch afterwards.
    pub current_epoch: u32,
    /// The epochs the master key holds afterwards.
    pub epochs: Vec<u32>,
    /// An interrupted change of the same kind was found and completed instead of starting anew.
    pub resumed: bool,
    /// Slots rewrapped, the one in use first (when it needed it).
    pub rewrapped: Vec<Rewrapped>,
    /// Slots removed because no password or key file for them was given (`--retire-other-slots`).
    pub retired: Vec<SlotSummary>,
    /// Old slots removed whose successor an interrupted run had already written.
    pub superseded: Vec<KeyId>,
    /// Slots that already wrap the new master key (they say so; see [`KeySlot::states_epochs`]).
    pub up_to_date: Vec<KeyId>,
}

/// A change of the master key, planned: nothing is written until [`Repository::apply_master_change`].
pub struct MasterChangePlan<'c> {
    target: MasterKey,
    resumed: bool,
    /// The slot in use and its credential, when it needs rewrapping (a retirement of a key that
    /// already holds the current epoch alone does not).
    own: Option<(KeyId, KeySlot, Credential<'c>)>,
    rewrap: Vec<(KeyId, KeySlot, Credential<'c>)>,
    up_to_date: Vec<KeyId>,
    superseded: Vec<KeyId>,
    left: Vec<(KeyId, KeySlot)>,
    retire_others: bool,
}

impl MasterChangePlan<'_> {
    /// The master key after the change.
    pub fn target(&self) -> &MasterKey {
        &self.target
    }

    /// Whether it completes an interrupted change: the new master key is stored already (in the
    /// successor of the slot in use), so sessions opened through a new slot may have sealed objects
    /// (audit entries too) under its epoch.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Whether applying it would change any key slot.
    pub fn changes_anything(&self) -> bool {
        self.own.is_some()
            || !self.rewrap.is_empty()
            || !self.superseded.is_empty()
            || (self.retire_others && !self.left.is_empty())
    }
}

/// The credential among `own` that fits a slot of `kind`.
fn own_credential(own: &Credentials, kind: SlotKind) -> Option<Credential<'_>> {
    match kind {
        SlotKind::Password => own
            .password
            .as_deref()
            .map(|p| Credential::Password(p.as_slice())),
        SlotKind::KeyFile => own.key_file.as_deref().map(Credential::KeyFile),
    }
}

fn cred_kind(c: &Credential<'_>) -> SlotKind {
    match c {
        Credential::Password(_) => SlotKind::Password,
        Credential::KeyFile(_) => SlotKind::KeyFile,
    }
}

impl Repository {
    /// Plans a change of the master key (see the module documentation). `own` are the credentials this
    /// session was opened with; `others` the passwords and key files given for the other slots (each is
    /// tried on each slot of its kind, as is the credential in use).
    ///
    /// # Errors
    /// [`Error::NotAllowed`] for a key that is not admin; [`Error::InvalidInput`] listing the slots that
    /// would be left on the old master key when `retire_others` is false; [`Error::IntegrityMismatch`]
    /// when a slot holds a master key this change would lose epochs of, or the successor of the slot in
    /// use does not open; backend errors.
    pub fn plan_master_change<'c>(
        &self,
        change: MasterChange,
        own: &'c Credentials,
        others: &[Credential<'c>],
        retire_others: bool,
    ) -> Result<MasterChangePlan<'c>> {
        self.require_admin("change keys")?;
        let repo_id = self.config.id;
        let master = self.keys.master();
        let slots = self.key_slots()?;
        let ids: HashSet<KeyId> = slots.iter().map(|(i, _)| *i).collect();
        let mine = slots
            .iter()
            .find(|(i, _)| *i == self.key_id)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::NotFound {
                kind: "key slot in use".into(),
                id: self.key_id.to_hex(),
            })?;
        let own_cred = own_credential(own, mine.kind).ok_or_else(|| {
            Error::NoCredentials(
                "the password or key file of the key in use is needed to rewrap its slot".into(),
            )
        })?;

        let fresh = match change {
            MasterChange::Rotate => {
                let mut m = master.clone();
                m.rotate();
                m
            }
            MasterChange::Retire => master.retain_current(),
        };
        let (tc, te) = (fresh.current_epoch(), fresh.epoch_numbers());
        let own_changes = (master.current_epoch(), master.epoch_numbers()) != (tc, te.clone());
        let own_succ = successor_id(&self.key_id, tc, &te);
        let mut resumed = false;
        let target = match slots.iter().find(|(i, _)| own_changes && *i == own_succ) {
            Some((_, s)) => {
                let what = format!("key slot {}", own_succ.short());
                let m = s
                    .unwrap_key(&repo_id, &own_succ, &own_cred)?
                    .ok_or_else(|| {
                        Error::integrity(
                            &what,
                            format!(
                                "it is named as the successor of the key in use ({}) but does not \
                                 open with its password or key file; remove it with `gatevault key \
                                 remove {}` and run again",
                                self.key_id.short(),
                                own_succ.short()
                            ),
                        )
                    })?;
                if m.current_epoch() != tc || m.epoch_numbers() != te || !m.agrees_with(master) {
                    return Err(Error::integrity(
                        what,
                        "it holds another master key than the interrupted change would have written",
                    ));
                }
                resumed = true;
                m
            }
            None => fresh,
        };

        let mut candidates: Vec<Credential<'c>> = others.to_vec();
        candidates.push(own_cred);
        let mut used = vec![false; candidates.len()];
        let mut plan = MasterChangePlan {
            resumed,
            own: own_changes.then(|| (self.key_id, mine.clone(), own_cred)),
            rewrap: Vec::new(),
            up_to_date: Vec::new(),
            superseded: Vec::new(),
            left: Vec::new(),
            retire_others,
            target,
        };
        for (id, s) in &slots {
            if *id == self.key_id || (own_changes && *id == own_succ) {
                continue;
            }
            if s.states_epochs(tc, &te) {
                plan.up_to_date.push(*id);
                continue;
            }
            if ids.contains(&successor_id(id, tc, &te)) {
                plan.superseded.push(*id);
                continue;
            }
            let mut fits = None;
            for (ci, c) in candidates.iter().enumerate() {
                if cred_kind(c) != s.kind {
                    continue;
                }
                match s.unwrap_key(&repo_id, id, c) {
                    Ok(Some(m)) => {
                        fits = Some((ci, m));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("key slot {}: {e}", id.short()),
                }
            }
            let Some((ci, m)) = fits else {
                plan.left.push((*id, s.clone()));
                continue;
            };
            // A slot holding epochs newer than ours (a diverged rotation) or other keys for the same
            // epochs must not be rewrapped: what is sealed under them would become unreadable.
            let lost = m
                .epoch_numbers()
                .into_iter()
                .find(|e| !te.contains(e) && *e > master.current_epoch());
            if !plan.target.agrees_with(&m) || lost.is_some() {
                return Err(Error::integrity(
                    format!("key slot {}", id.short()),
                    format!(
                        "it holds a master key with epochs {:?} (current {}) that {} would lose; \
                         open the repository with that slot's password or key file and run again \
                         (nothing was changed)",
                        m.epoch_numbers(),
                        m.current_epoch(),
                        change.doing()
                    ),
                ));
            }
            used[ci] = true;
            plan.rewrap.push((*id, s.clone(), candidates[ci]));
        }
        for (i, u) in used.iter().enumerate().take(others.len()) {
            if !u {
                tracing::warn!(
                    "the {} given as other credential number {} opened no key slot that needed \
                     rewrapping",
                    match cred_kind(&others[i]) {
                        SlotKind::Password => "password",
                        SlotKind::KeyFile => "key file",
                    },
                    i + 1
                );
            }
        }
        if !plan.left.is_empty() && !retire_others {
            let list: Vec<String> = plan
                .left
                .iter()
                .map(|(i, s)| SlotSummary::of(i, s).describe())
                .collect();
            return Err(Error::InvalidInput(format!(
                "{} would leave {} other key slot(s) on the old master key: {}; give the password \
                 or key file of each with --also-password-file / --also-key-file, or remove them \
                 with --retire-other-slots (nothing was changed)",
                change.doing(),
                list.len(),
                list.join(", ")
            )));
        }
        Ok(plan)
    }

    /// The working keys of this repository under the master key `plan` leads to: what a command that
    /// changes the master key seals with afterwards (its audit entry, `docs/audit.md`).
    pub fn keys_after(&self, plan: &MasterChangePlan<'_>) -> Arc<RepoKeys> {
        Arc::new(RepoKeys::new(
            plan.target.clone(),
            self.config.id,
            self.config.cipher,
        ))
    }

    /// Carries out a plan: writes the new slots (the one in use first), then removes the slots left
    /// behind (when asked), the old slots replaced, and last the old slot in use.
    ///
    /// # Errors
    /// [`Error::LockLost`]; backend errors (what is written before stays consistent: see the module
    /// documentation).
    pub fn apply_master_change(
        &self,
        lock: &LockGuard,
        plan: MasterChangePlan<'_>,
    ) -> Result<MasterChangeReport> {
        let backend = self.backend();
        let repo_id = self.config.id;
        let (tc, te) = (plan.target.current_epoch(), plan.target.epoch_numbers());
        let mut report = MasterChangeReport {
            current_epoch: tc,
            epochs: te.clone(),
            resumed: plan.resumed,
            up_to_date: plan.up_to_date.clone(),
            superseded: plan.superseded.clone(),
            ..Default::default()
        };
        lock.check()?;
        for (id, old, cred) in plan.own.iter().chain(&plan.rewrap) {
            let new = successor_id(id, tc, &te);
            if !backend.exists(FileType::Key, &new.to_hex())? {
                let kdf = old.kdf.clone().map(|mut k| {
                    k.salt = hex::encode(rand::random::<[u8; 16]>());
                    k
                });
                let mut slot = KeySlot::wrap(&plan.target, &repo_id, &new, *cred, old.role, kdf)?;
                // The slot still belongs to whoever made it; `created` says when it was rewrapped.
                slot.username = old.username.clone();
                slot.hostname = old.hostname.clone();
                let json =
                    serde_json::to_vec_pretty(&slot).map_err(|e| Error::format("key slot", e))?;
                backend.write(FileType::Key, &new.to_hex(), &json)?;
            }
            report.rewrapped.push(Rewrapped {
                old: SlotSummary::of(id, old),
                new,
            });
        }
        lock.check()?;
        if plan.retire_others {
            for (id, s) in &plan.left {
                remove_slot(self, id)?;
                report.retired.push(SlotSummary::of(id, s));
            }
        }
        for id in plan
            .rewrap
            .iter()
            .map(|(i, _, _)| i)
            .chain(&plan.superseded)
        {
            remove_slot(self, id)?;
        }
        if let Some((id, _, _)) = &plan.own {
            remove_slot(self, id)?;
        }
        Ok(report)
    }

    /// Plans and applies a change of the master key under `lock` (see
    /// [`Repository::plan_master_change`]).
    ///
    /// # Errors
    /// As [`Repository::plan_master_change`] and [`Repository::apply_master_change`].
    pub fn change_master_key(
        &self,
        lock: &LockGuard,
        change: MasterChange,
        own: &Credentials,
        others: &[Credential<'_>],
        retire_others: bool,
    ) -> Result<MasterChangeReport> {
        let plan = self.plan_master_change(change, own, others, retire_others)?;
        self.apply_master_change(lock, plan)
    }
}

/// Removes a key slot; one already gone (a re-run after an interruption) is fine.
fn remove_slot(repo: &Repository, id: &KeyId) -> Result<()> {
    match repo.backend().remove(FileType::Key, &id.to_hex()) {
        Err(Error::NotFound { .. }) => Ok(()),
        r => r,
    }
}
