//! `gatevault cat`.

use clap::{Args, ValueEnum};

use super::{exit, Global};
use crate::backend::FileType;
use crate::format::BlobType;
use crate::id::{BlobId, IndexId, KeyId, PackId};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Object {
    Config,
    Snapshot,
    Index,
    Pack,
    Key,
    Tree,
    Blob,
}

#[derive(Args, Debug)]
pub(crate) struct CatArgs {
    /// What to print.
    #[arg(value_enum)]
    object: Object,
    /// Its id (a prefix or `latest` for snapshots; for `tree`, a snapshot then `:/path` is allowed).
    id: Option<String>,
}

fn full_id(
    g: &Global,
    repo: &crate::repo::Repository,
    t: FileType,
    p: &str,
) -> anyhow::Result<String> {
    let _ = g;
    let m: Vec<String> = repo
        .backend()
        .list(t)?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with(&p.to_ascii_lowercase()))
        .collect();
    match m.len() {
        1 => Ok(m[0].clone()),
        0 => anyhow::bail!(crate::Error::NotFound {
            kind: t.to_string(),
            id: p.into()
        }),
        n => anyhow::bail!(crate::Error::InvalidInput(format!(
            "{p:?} matches {n} {t} objects; give more digits"
        ))),
    }
}

pub(crate) fn run(g: &Global, a: CatArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let need = || {
        a.id.clone().ok_or_else(|| {
            anyhow::Error::new(crate::Error::InvalidInput("this object needs an id".into()))
        })
    };
    let v: serde_json::Value = match a.object {
        Object::Config => {
            // The stored config, plus (not stored in it) the epochs of the master key in use.
            let mut v = serde_json::to_value(repo.config())?;
            let m = repo.keys().master();
            v["master_key"] = serde_json::json!({
                "current_epoch": m.current_epoch(),
                "epochs": m.epoch_numbers(),
            });
            v
        }
        Object::Snapshot => {
            let (id, s) = crate::select::resolve(&repo, Some(&need()?), &Default::default(), None)?;
            let mut v = serde_json::to_value(s)?;
            v["id"] = serde_json::json!(id);
            v
        }
        Object::Index => {
            let id = IndexId::from_hex(&full_id(g, &repo, FileType::Index, &need()?)?)?;
            serde_json::to_value(crate::index::load_index_file(
                repo.backend(),
                repo.keys(),
                &id,
            )?)?
        }
        Object::Pack => {
            let id = PackId::from_hex(&full_id(g, &repo, FileType::Pack, &need()?)?)?;
            let bytes = repo.backend().read(FileType::Pack, &id.to_hex())?;
            serde_json::json!({"id": id, "size": bytes.len(), "blobs": crate::pack::read_header(repo.keys(), &id, &bytes)?})
        }
        Object::Key => {
            let name = full_id(g, &repo, FileType::Key, &need()?)?;
            let id = KeyId::from_hex(&name)?;
            let mut slot = crate::crypto::keyslot::KeySlot::parse(
                &repo.backend().read(FileType::Key, &name)?,
                &format!("key {}", id.short()),
            )?;
            slot.wrapped = "(sealed master key, not shown)".into();
            serde_json::to_value(slot)?
        }
        Object::Tree => {
            let spec = need()?;
            let (snap, path) = spec.split_once(':').unwrap_or((&spec, "/"));
            let tree = match BlobId::from_hex(snap) {
                Ok(id) if path == "/" => id,
                _ => {
                    let (_, s) =
                        crate::select::resolve(&repo, Some(snap), &Default::default(), None)?;
                    if crate::walk::components(path).is_empty() {
                        s.tree
                    } else {
                        let n = crate::walk::find(&repo, &s.tree, path)?.ok_or_else(|| {
                            crate::Error::NotFound {
                                kind: "path".into(),
                                id: path.into(),
                            }
                        })?;
                        n.subtree.ok_or_else(|| {
                            crate::Error::InvalidInput(format!("{path} is not a folder"))
                        })?
                    }
                }
            };
            serde_json::to_value(repo.load_tree(&tree)?)?
        }
        Object::Blob => {
            let id = BlobId::from_hex(&need()?)?;
            let data = repo.load_blob(BlobType::Data, &id)?;
            use std::io::Write;
            std::io::stdout().write_all(&data)?;
            return Ok(exit::OK);
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(exit::OK)
}
