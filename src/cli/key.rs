//! `gatevault key`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::{exit, print_json, Global};
use crate::crypto::keyslot::{Credential, KdfParams, Role, SlotKind};
use crate::id::KeyId;
use crate::repo::rotation::{MasterChange, MasterChangeReport};

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
    /// List key slots.
    List,
    /// Add a key slot (a password, or a key file created if missing).
    Add(AddArgs),
    /// Remove a key slot.
    Remove {
        /// Key id (prefix).
        id: String,
    },
    /// Change the password of the key slot in use (adds a new slot, removes the old one).
    Passwd(NewPassword),
    /// Rotate the master key: a new key epoch becomes current for new data, old data stays readable;
    /// every key slot is rewrapped (or, with --retire-other-slots, removed).
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RotateArgs {
    #[command(flatten)]
    others: OtherKeys,
}

/// Passwords and key files of the other key slots, for a change of the master key.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct OtherKeys {
    /// Password file (first line) of another key slot to rewrap as well; repeat for several.
    #[arg(long = "also-password-file", value_name = "FILE")]
    also_password_files: Vec<PathBuf>,
    /// Key file of another key slot to rewrap as well; repeat for several.
    #[arg(long = "also-key-file", value_name = "FILE")]
    also_key_files: Vec<PathBuf>,
    /// Remove the other key slots whose password or key file is not given, instead of refusing.
    #[arg(long)]
    pub(crate) retire_other_slots: bool,
}

/// The secrets read from [`OtherKeys`].
pub(crate) struct OtherSecrets {
    passwords: Vec<Zeroizing<Vec<u8>>>,
    key_files: Vec<Zeroizing<[u8; 32]>>,
}

impl OtherKeys {
    /// Whether any option was given.
    pub(crate) fn given(&self) -> bool {
        !self.also_password_files.is_empty()
            || !self.also_key_files.is_empty()
            || self.retire_other_slots
    }

    /// Reads the files.
    pub(crate) fn read(&self) -> anyhow::Result<OtherSecrets> {
        let mut passwords = Vec::new();
        for f in &self.also_password_files {
            let s = Zeroizing::new(
                std::fs::read(f)
                    .with_context(|| format!("reading password file {}", f.display()))?,
            );
            let line = s.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            passwords.push(Zeroizing::new(line.to_vec()));
        }
        let mut key_files = Vec::new();
        for f in &self.also_key_files {
            let b = Zeroizing::new(
                std::fs::read(f).with_context(|| format!("reading key file {}", f.display()))?,
            );
            key_files.push(crate::crypto::keyslot::parse_key_file(
                &b,
                &f.display().to_string(),
            )?);
        }
        Ok(OtherSecrets {
            passwords,
            key_files,
        })
    }
}

impl OtherSecrets {
    /// The secrets as credentials to try on the other slots.
    pub(crate) fn credentials(&self) -> Vec<Credential<'_>> {
        self.passwords
            .iter()
            .map(|p| Credential::Password(p.as_slice()))
            .chain(self.key_files.iter().map(|k| Credential::KeyFile(k)))
            .collect()
    }
}

/// Prints what a change of the master key did.
pub(crate) fn print_master_change(r: &MasterChangeReport) {
    if r.resumed {
        println!("completed an interrupted change of the master key");
    }
    for w in &r.rewrapped {
        println!(
            "rewrapped key {} as {} ({}, role {})",
            w.old.id.short(),
            w.new.short(),
            kind_name(w.old.kind),
            role_name(w.old.role)
        );
    }
    for s in &r.retired {
        println!(
            "removed key {} ({}, role {}, made by {}@{}): no password or key file was given for it",
            s.id.short(),
            kind_name(s.kind),
            role_name(s.role),
            s.username,
            s.hostname
        );
    }
    for id in &r.superseded {
        println!("removed key {}, replaced by an interrupted run", id.short());
    }
    for id in &r.up_to_date {
        println!("key {} already wraps the new master key", id.short());
    }
}

fn kind_name(k: SlotKind) -> &'static str {
    match k {
        SlotKind::Password => "password",
        SlotKind::KeyFile => "key-file",
    }
}

fn role_name(r: Role) -> String {
    format!("{r:?}").to_lowercase()
}

fn epoch_list(e: &[u32]) -> String {
    e.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Args, Debug)]
pub(crate) struct NewPassword {
    /// Read the new password from this file.
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct AddArgs {
    #[command(flatten)]
    password: NewPassword,
    /// Add a key-file slot for this file (created with a random key if it does not exist).
    #[arg(long, conflicts_with = "new_password_file")]
    new_key_file: Option<PathBuf>,
    /// What the new key may do.
    #[arg(long, value_enum, default_value = "admin")]
    role: Role,
}

fn new_password(p: &NewPassword) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = &p.new_password_file {
        let s =
            Zeroizing::new(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
        let line = s.split(|b| *b == b'\n').next().unwrap_or(&[]);
        return Ok(Zeroizing::new(line.to_vec()));
    }
    let a = Zeroizing::new(
        rpassword::prompt_password("enter new password: ")
            .context("reading the new password (use --new-password-file when not on a terminal)")?,
    );
    let b = Zeroizing::new(rpassword::prompt_password("enter new password again: ")?);
    if *a != *b {
        anyhow::bail!(crate::Error::InvalidInput(
            "the passwords do not match".into()
        ));
    }
    Ok(Zeroizing::new(a.as_bytes().to_vec()))
}

fn resolve(repo: &crate::repo::Repository, prefix: &str) -> anyhow::Result<KeyId> {
    let m: Vec<KeyId> = repo
        .key_slots()?
        .into_iter()
        .map(|(i, _)| i)
        .filter(|i| i.to_hex().starts_with(&prefix.to_ascii_lowercase()))
        .collect();
    match m.len() {
        1 => Ok(m[0]),
        0 => anyhow::bail!(crate::Error::NotFound {
            kind: "key".into(),
            id: prefix.into()
        }),
        _ => anyhow::bail!(crate::Error::InvalidInput(format!(
            "key prefix {prefix:?} is ambiguous"
        ))),
    }
}

pub(crate) fn run(g: &Global, c: KeyCommand) -> anyhow::Result<u8> {
    let (repo, creds) = g.open_keeping_credentials()?;
    let changes_keys = !matches!(c, KeyCommand::List);
    if changes_keys {
        repo.require_admin("change keys")?;
    }
    match c {
        KeyCommand::List => {
            let slots = repo.key_slots()?;
            let master = repo.keys().master();
            let (cur, all) = (master.current_epoch(), master.epoch_numbers());
            // The epochs each slot wraps: known for the slot in use, stated by the others (slots
            // written before rotation existed do not say). `up_to_date`: it wraps the same master
            // key epochs as the one in use.
            let epochs = |id: &KeyId, s: &crate::crypto::keyslot::KeySlot| {
                if *id == repo.key_id() {
                    (Some(cur), Some(all.clone()), Some(true))
                } else {
                    let known = s.current_epoch.is_some() && s.epochs.is_some();
                    (
                        s.current_epoch,
                        s.epochs.clone(),
                        known.then(|| s.states_epochs(cur, &all)),
                    )
                }
            };
            if g.json {
                let v: Vec<_> = slots
                    .iter()
                    .map(|(id, s)| {
                        let (c, e, up) = epochs(id, s);
                        serde_json::json!({"id": id, "current": *id == repo.key_id(), "kind": s.kind, "role": s.role, "username": s.username, "hostname": s.hostname, "created": s.created, "current_epoch": c, "epochs": e, "up_to_date": up})
                    })
                    .collect();
                print_json(&v)?;
            } else {
                println!(
                    " {:<8}  {:<9}  {:<8}  {:<10}  {:<12}  {:<22}  Created",
                    "ID", "Kind", "Role", "User", "Host", "Epochs"
                );
                for (id, s) in &slots {
                    let mark = if *id == repo.key_id() { "*" } else { " " };
                    let ep = match epochs(id, s) {
                        (Some(c), Some(e), up) => format!(
                            "{} (current {c}){}",
                            epoch_list(&e),
                            if up == Some(false) { " old" } else { "" }
                        ),
                        _ => "not stated".into(),
                    };
                    println!(
                        "{mark}{:<8}  {:<9}  {:<8}  {:<10}  {:<12}  {:<22}  {}",
                        id.short(),
                        kind_name(s.kind),
                        role_name(s.role),
                        s.username,
                        s.hostname,
                        ep,
                        s.created
                    );
                }
                println!(
                    "master key in use: epochs {} (current {cur})",
                    epoch_list(&all)
                );
            }
        }
        KeyCommand::Rotate(a) => {
            let secrets = a.others.read()?;
            let lock = crate::repo::lock::LockGuard::acquire(
                repo.backend_arc(),
                repo.keys().clone(),
                true,
                "key rotate",
            )?;
            let others = secrets.credentials();
            let plan = repo.plan_master_change(
                MasterChange::Rotate,
                &creds,
                &others,
                a.others.retire_other_slots,
            )?;
            // The audit entry goes under the new epoch. When an interrupted rotation is completed,
            // the new key is stored already and entries may have been sealed under it since: the
            // entry must be able to read them even if this run fails again.
            let new_keys = repo.keys_after(&plan);
            if plan.resumed() {
                super::audit::rekey(g, &new_keys);
            }
            let report = repo.apply_master_change(&lock, plan)?;
            super::audit::rekey(g, &new_keys);
            if g.json {
                print_json(&report)?;
            } else if !g.quiet {
                println!(
                    "rotated the master key: epoch {} is current (the key holds epochs {}); new data \
                     is sealed under it, older data stays readable",
                    report.current_epoch,
                    epoch_list(&report.epochs)
                );
                print_master_change(&report);
                println!(
                    "run `gatevault rewrite --reencrypt --retire` to move older data to epoch {} \
                     and retire the older epochs",
                    report.current_epoch
                );
            }
        }
        KeyCommand::Add(a) => {
            let id = if let Some(f) = &a.new_key_file {
                if !f.exists() {
                    super::init::create_key_file(f)?;
                }
                let bytes = Zeroizing::new(
                    std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
                );
                let k = crate::crypto::keyslot::parse_key_file(&bytes, &f.display().to_string())?;
                repo.add_key(Credential::KeyFile(&k), a.role, None)?
            } else {
                let p = new_password(&a.password)?;
                repo.add_key(
                    Credential::Password(&p),
                    a.role,
                    Some(KdfParams::new_default()),
                )?
            };
            println!("added key {} ({:?})", id.short(), a.role);
        }
        KeyCommand::Remove { id } => {
            let id = resolve(&repo, &id)?;
            repo.remove_key(&id)?;
            println!("removed key {}", id.short());
        }
        KeyCommand::Passwd(p) => {
            let pw = new_password(&p)?;
            let role = repo.role();
            let new = repo.add_key(
                Credential::Password(&pw),
                role,
                Some(KdfParams::new_default()),
            )?;
            repo.backend()
                .remove(crate::backend::FileType::Key, &repo.key_id().to_hex())?;
            println!(
                "saved new key {} and removed the old one {}",
                new.short(),
                repo.key_id().short()
            );
        }
    }
    Ok(exit::OK)
}
