//! `gatevault key`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::{exit, print_json, Global};
use crate::crypto::keyslot::{Credential, KdfParams, Role, SlotKind};
use crate::id::KeyId;

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
    let repo = g.open()?;
    let changes_keys = !matches!(c, KeyCommand::List);
    if changes_keys {
        repo.require_admin("change keys")?;
    }
    match c {
        KeyCommand::List => {
            let slots = repo.key_slots()?;
            if g.json {
                let v: Vec<_> = slots
                    .iter()
                    .map(|(id, s)| serde_json::json!({"id": id, "current": *id == repo.key_id(), "kind": s.kind, "role": s.role, "username": s.username, "hostname": s.hostname, "created": s.created}))
                    .collect();
                print_json(&v)?;
            } else {
                println!(
                    " {:<8}  {:<9}  {:<8}  {:<10}  {:<12}  Created",
                    "ID", "Kind", "Role", "User", "Host"
                );
                for (id, s) in &slots {
                    let kind = match s.kind {
                        SlotKind::Password => "password",
                        SlotKind::KeyFile => "key-file",
                    };
                    let cur = if *id == repo.key_id() { "*" } else { " " };
                    println!(
                        "{cur}{:<8}  {:<9}  {:<8}  {:<10}  {:<12}  {}",
                        id.short(),
                        kind,
                        format!("{:?}", s.role).to_lowercase(),
                        s.username,
                        s.hostname,
                        s.created
                    );
                }
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
