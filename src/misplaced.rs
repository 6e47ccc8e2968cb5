//! Explaining a sealed object that does not authenticate under its own name.
//!
//! The associated data of every envelope binds the object's kind and id (`docs/design.md`, section 5),
//! so a ciphertext copied to another name, or presented as another type of object, fails to
//! authenticate exactly like a damaged one. When that happens the reader asks a few cheap questions
//! before reporting damage: does the envelope open as another single-item kind under the same id
//! (an index file presented as a snapshot), as the blob of that id in the pack the index names (a data
//! blob presented as a snapshot), or as another object of the same folder (a copy under a new name)?
//! Each answer is a distinct error; only an envelope that opens as nothing is reported as damaged.
//! Nothing here runs on the path of an object that opens.

use crate::backend::{Backend, FileType};
use crate::crypto::{Kind, RepoKeys};
use crate::error::Error;
use crate::id::PackId;

/// Single-item objects: what they are called and where they are stored.
const SINGLE: [(Kind, FileType, &str); 5] = [
    (Kind::Snapshot, FileType::Snapshot, "snapshot"),
    (Kind::Index, FileType::Index, "index file"),
    (Kind::Record, FileType::Record, "record"),
    (Kind::Lock, FileType::Lock, "lock"),
    (Kind::Audit, FileType::Audit, "audit log entry"),
];

fn name_of(kind: Kind) -> &'static str {
    SINGLE
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, _, n)| *n)
        .unwrap_or("object")
}

/// A blob the index places in a pack, as a candidate for what a misplaced envelope really is:
/// (item kind `DataBlob` or `TreeBlob`, pack, item id the blob is sealed under).
pub type BlobCandidate = (Kind, PackId, [u8; 32]);

/// Returns a better error than `err` for the single-item object `id` of `kind` whose envelope `env`
/// did not authenticate: [`Error::WrongType`] when it opens as another kind of object under the same
/// id or as one of `blobs` (the blobs the index knows under that id), [`Error::WrongName`] when it
/// opens as another object of the same folder; otherwise `err` unchanged.
pub fn explain(
    backend: &dyn Backend,
    keys: &RepoKeys,
    kind: Kind,
    id: &[u8; 32],
    env: &[u8],
    blobs: &[BlobCandidate],
    err: Error,
) -> Error {
    if !matches!(err, Error::IntegrityMismatch { .. }) {
        return err;
    }
    let what = format!("{} {}", name_of(kind), hex::encode(id));
    for (k, _, name) in SINGLE {
        if k != kind && keys.open_object(k, id, env, &what).is_ok() {
            return Error::WrongType {
                object: what,
                expected: name_of(kind).into(),
                actual: format!("a {name} sealed under the same id"),
            };
        }
    }
    for (item, pack, item_id) in blobs {
        if keys
            .open(Kind::Pack, &pack.0, *item, item_id, env, &what)
            .is_ok()
        {
            let t = if *item == Kind::TreeBlob {
                "tree"
            } else {
                "data"
            };
            return Error::WrongType {
                object: what,
                expected: name_of(kind).into(),
                actual: format!("the {t} blob {} of pack {pack}", hex::encode(id)),
            };
        }
    }
    let Some((_, ft, _)) = SINGLE.iter().find(|(k, _, _)| *k == kind) else {
        return err;
    };
    let Ok(names) = backend.list(*ft) else {
        return err;
    };
    for (n, _) in names {
        let Ok(b) = hex::decode(&n) else { continue };
        let Ok(other) = <[u8; 32]>::try_from(b.as_slice()) else {
            continue;
        };
        if other != *id && keys.open_object(kind, &other, env, &what).is_ok() {
            return Error::WrongName {
                object: what,
                actual: format!("{} {n}", name_of(kind)),
            };
        }
    }
    err
}
