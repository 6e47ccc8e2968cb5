//! Key slots: the master key wrapped under a password (Argon2id) or a key file.
//!
//! A slot is a cleartext JSON document under `keys/<id>` (format in `docs/design.md`). Its `wrapped`
//! field is the serialized [`MasterKey`] sealed with XChaCha20-Poly1305 under a key-encryption key
//! (KEK); the associated data binds the repository id, the slot id, the slot kind and its role, so a
//! slot copied to another repository or with an edited role no longer opens.
//!
//! Slots written since key rotation exists also name, in clear, the epochs of the master key they wrap
//! (`current_epoch`, `epochs`), so that `key list` and `key rotate` can tell a slot left on an old
//! master key without its password; the associated data binds these fields too, so they cannot be
//! edited either. A rewrapped slot gets a [`successor_id`] derived from the old slot's id and the new
//! epochs, which lets an interrupted rotation be recognised and completed.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::MasterKey;
use crate::error::{Error, Result};
use crate::id::{KeyId, RepoId};

/// Version of the key-slot document.
pub const KEYSLOT_VERSION: u32 = 1;

/// How a slot's KEK is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    /// A password stretched with Argon2id.
    Password,
    /// A raw 32-byte key file kept apart from the repository.
    KeyFile,
}

/// What a key may do (enforced by the commands; see `docs/design.md` on its limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    #[default]
    Admin,
    /// Add snapshots and read the index.
    Backup,
    /// Read only.
    Restore,
}

/// Argon2id parameters, stored in the slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always "argon2id".
    pub algorithm: String,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// 16 random bytes, hex.
    pub salt: String,
}

impl KdfParams {
    /// The defaults of `docs/design.md`: t=3, m=64 MiB, p=4, with a fresh salt.
    pub fn new_default() -> Self {
        Self::new(64 * 1024, 3)
    }

    /// Parameters with a fresh salt; `memory_kib` is raised to at least 8 MiB and `iterations` to 1.
    pub fn new(memory_kib: u32, iterations: u32) -> Self {
        Self {
            algorithm: "argon2id".into(),
            memory_kib: memory_kib.max(8 * 1024),
            iterations: iterations.max(1),
            parallelism: 4,
            salt: hex::encode(rand::random::<[u8; 16]>()),
        }
    }

    fn derive(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        if self.algorithm != "argon2id" {
            return Err(Error::format(
                "key slot",
                format!("unknown KDF {:?}", self.algorithm),
            ));
        }
        // Bounds keep a forged slot from making us allocate without limit.
        if self.memory_kib > 4 * 1024 * 1024
            || self.iterations > 100
            || self.parallelism == 0
            || self.parallelism > 64
        {
            return Err(Error::format("key slot", "KDF parameters out of range"));
        }
        let salt =
            hex::decode(&self.salt).map_err(|_| Error::format("key slot", "salt is not hex"))?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::format("key slot", e))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, &salt, &mut *out)
            .map_err(|e| Error::format("key slot", e))?;
        Ok(out)
    }
}

/// A key slot document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySlot {
    /// [`KEYSLOT_VERSION`].
    pub version: u32,
    /// Password or key file.
    pub kind: SlotKind,
    /// What the key may do.
    #[serde(default)]
    pub role: Role,
    /// When the slot was made (RFC 3339).
    pub created: String,
    /// Who made it.
    pub username: String,
    /// On which host.
    pub hostname: String,
    /// The current epoch of the wrapped master key (absent in slots written before rotation existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<u32>,
    /// Every epoch the wrapped master key holds, ascending (present with `current_epoch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<Vec<u32>>,
    /// Argon2id parameters (password slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
    /// Nonce and sealed master key, base64.
    pub wrapped: String,
}

/// A secret that opens a slot.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// A password.
    Password(&'a [u8]),
    /// The 32 bytes of a key file.
    KeyFile(&'a [u8; 32]),
}

fn keyfile_kek(key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key("gatevault v1 key-file slot kek", key))
}

/// The associated data of a slot; the epoch fields are appended when the slot has them, so slots
/// written before they existed still open.
fn slot_aad(
    repo: &RepoId,
    slot: &KeyId,
    kind: SlotKind,
    role: Role,
    epochs: Option<(u32, &[u32])>,
) -> Vec<u8> {
    let mut aad = b"gatevault-v1 keyslot\0".to_vec();
    aad.extend_from_slice(&repo.0);
    aad.extend_from_slice(&slot.0);
    aad.push(kind as u8);
    aad.push(role as u8);
    if let Some((current, all)) = epochs {
        aad.extend_from_slice(b"epochs\0");
        aad.extend_from_slice(&current.to_le_bytes());
        aad.extend_from_slice(&(all.len() as u32).to_le_bytes());
        for e in all {
            aad.extend_from_slice(&e.to_le_bytes());
        }
    }
    aad
}

/// The id of the slot that replaces slot `old` when its master key is rewrapped to one with `current`
/// and `epochs`: `BLAKE3-derive_key("gatevault v1 successor key slot id", old id | current u32 | n u32 |
/// n × epoch u32)`. Deterministic, so that a rotation or retirement that was interrupted finds the
/// slots it already wrote (ids need not be secret: they are bound into the slot's associated data).
pub fn successor_id(old: &KeyId, current: u32, epochs: &[u32]) -> KeyId {
    let mut h = blake3::Hasher::new_derive_key("gatevault v1 successor key slot id");
    h.update(&old.0);
    h.update(&current.to_le_bytes());
    h.update(&(epochs.len() as u32).to_le_bytes());
    for e in epochs {
        h.update(&e.to_le_bytes());
    }
    KeyId(*h.finalize().as_bytes())
}

impl KeySlot {
    /// Wraps `master` into a new slot opened by `cred`.
    ///
    /// # Errors
    /// [`Error::Format`] when `kdf` parameters are invalid.
    pub fn wrap(
        master: &MasterKey,
        repo: &RepoId,
        slot: &KeyId,
        cred: Credential<'_>,
        role: Role,
        kdf: Option<KdfParams>,
    ) -> Result<Self> {
        let (kind, kek, kdf) = match cred {
            Credential::Password(p) => {
                let params = kdf.unwrap_or_else(KdfParams::new_default);
                (SlotKind::Password, params.derive(p)?, Some(params))
            }
            Credential::KeyFile(k) => (SlotKind::KeyFile, keyfile_kek(k), None),
        };
        let nonce: [u8; 24] = rand::random();
        let cipher = XChaCha20Poly1305::new((&*kek).into());
        let pt = master.to_bytes();
        let (current, epochs) = (master.current_epoch(), master.epoch_numbers());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &pt,
                    aad: &slot_aad(repo, slot, kind, role, Some((current, &epochs))),
                },
            )
            .map_err(|_| Error::format("key slot", "encryption failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(Self {
            version: KEYSLOT_VERSION,
            kind,
            role,
            created: chrono::Utc::now().to_rfc3339(),
            username: crate::util::username(),
            hostname: crate::util::hostname(),
            current_epoch: Some(current),
            epochs: Some(epochs),
            kdf,
            wrapped: base64::engine::general_purpose::STANDARD.encode(blob),
        })
    }

    /// Tries to open the slot. `Ok(None)` means the credential does not fit this slot.
    ///
    /// # Errors
    /// [`Error::Format`] when the slot itself is malformed.
    pub fn unwrap_key(
        &self,
        repo: &RepoId,
        slot: &KeyId,
        cred: &Credential<'_>,
    ) -> Result<Option<MasterKey>> {
        if self.version != KEYSLOT_VERSION {
            return Err(Error::format(
                format!("key slot {}", slot.short()),
                format!("unknown version {}", self.version),
            ));
        }
        let bound_epochs = match (self.current_epoch, &self.epochs) {
            (Some(c), Some(all)) => Some((c, all.as_slice())),
            (None, None) => None,
            _ => {
                return Err(Error::format(
                    format!("key slot {}", slot.short()),
                    "it names a current epoch without the epoch list, or the other way round",
                ))
            }
        };
        let kek = match (cred, self.kind) {
            (Credential::Password(p), SlotKind::Password) => {
                let params = self.kdf.as_ref().ok_or_else(|| {
                    Error::format("key slot", "password slot without KDF parameters")
                })?;
                params.derive(p)?
            }
            (Credential::KeyFile(k), SlotKind::KeyFile) => keyfile_kek(k),
            _ => return Ok(None),
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped)
            .map_err(|_| {
                Error::format(
                    format!("key slot {}", slot.short()),
                    "wrapped key is not base64",
                )
            })?;
        if blob.len() < 24 + 16 {
            return Err(Error::format(
                format!("key slot {}", slot.short()),
                "wrapped key too short",
            ));
        }
        let cipher = XChaCha20Poly1305::new((&*kek).into());
        let pt = match cipher.decrypt(
            XNonce::from_slice(&blob[..24]),
            Payload {
                msg: &blob[24..],
                aad: &slot_aad(repo, slot, self.kind, self.role, bound_epochs),
            },
        ) {
            Ok(pt) => Zeroizing::new(pt),
            Err(_) => return Ok(None),
        };
        let master = MasterKey::from_bytes(&pt)?;
        if let Some((c, all)) = bound_epochs {
            if master.current_epoch() != c || master.epoch_numbers() != all {
                return Err(Error::format(
                    format!("key slot {}", slot.short()),
                    "its epoch fields do not match the master key it wraps",
                ));
            }
        }
        Ok(Some(master))
    }

    /// Whether this slot says it wraps a master key with exactly `current` and `epochs` (always false for
    /// slots written before the fields existed). Only what the slot states: it is proven when the slot is
    /// opened, since the fields are bound into its associated data.
    pub fn states_epochs(&self, current: u32, epochs: &[u32]) -> bool {
        self.current_epoch == Some(current) && self.epochs.as_deref() == Some(epochs)
    }

    /// Parses a slot document.
    ///
    /// # Errors
    /// [`Error::Format`] when it is not a key slot.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::format(what, e))
    }
}

/// Reads a key file: 32 raw bytes, or 64 hex digits with optional surrounding white space.
///
/// # Errors
/// [`Error::InvalidInput`] when the content is neither.
pub fn parse_key_file(bytes: &[u8], path: &str) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        out.copy_from_slice(bytes);
        return Ok(out);
    }
    let text = std::str::from_utf8(bytes).unwrap_or("").trim();
    if text.len() == 64 && hex::decode_to_slice(text, &mut *out).is_ok() {
        return Ok(out);
    }
    Err(Error::InvalidInput(format!(
        "key file {path} is not a gatevault key file (32 raw bytes or 64 hex digits)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_and_keyfile_slots() {
        let m = MasterKey::generate();
        let (repo, id) = (RepoId::random(), KeyId::random());
        let weak = Some(KdfParams::new(8 * 1024, 1));
        let s = KeySlot::wrap(
            &m,
            &repo,
            &id,
            Credential::Password(b"pw"),
            Role::Admin,
            weak,
        )
        .unwrap();
        let back = s
            .unwrap_key(&repo, &id, &Credential::Password(b"pw"))
            .unwrap()
            .unwrap();
        assert_eq!(back.to_bytes(), m.to_bytes());
        assert!(s
            .unwrap_key(&repo, &id, &Credential::Password(b"wrong"))
            .unwrap()
            .is_none());
        assert!(s
            .unwrap_key(&repo, &KeyId::random(), &Credential::Password(b"pw"))
            .unwrap()
            .is_none());

        let kf = [3u8; 32];
        let s2 =
            KeySlot::wrap(&m, &repo, &id, Credential::KeyFile(&kf), Role::Backup, None).unwrap();
        let json = serde_json::to_vec(&s2).unwrap();
        let mut parsed = KeySlot::parse(&json, "t").unwrap();
        assert!(parsed
            .unwrap_key(&repo, &id, &Credential::KeyFile(&kf))
            .unwrap()
            .is_some());
        assert!(parsed
            .unwrap_key(&repo, &id, &Credential::KeyFile(&[4u8; 32]))
            .unwrap()
            .is_none());
        assert!(parsed
            .unwrap_key(&repo, &id, &Credential::Password(b"pw"))
            .unwrap()
            .is_none());
        parsed.role = Role::Admin; // an edited role no longer opens
        assert!(parsed
            .unwrap_key(&repo, &id, &Credential::KeyFile(&kf))
            .unwrap()
            .is_none());
    }

    #[test]
    fn epoch_fields_are_bound_and_old_slots_without_them_still_open() {
        let mut m = MasterKey::generate();
        m.rotate();
        let (repo, id) = (RepoId::random(), KeyId::random());
        let kf = [5u8; 32];
        let cred = Credential::KeyFile(&kf);
        let s = KeySlot::wrap(&m, &repo, &id, Credential::KeyFile(&kf), Role::Admin, None).unwrap();
        assert_eq!(s.current_epoch, Some(1));
        assert_eq!(s.epochs.as_deref(), Some(&[0, 1][..]));
        assert!(s.states_epochs(1, &[0, 1]));
        assert!(!s.states_epochs(1, &[1]));
        assert!(s.unwrap_key(&repo, &id, &cred).unwrap().is_some());
        let mut edited = s.clone();
        edited.epochs = Some(vec![1]);
        assert!(
            edited.unwrap_key(&repo, &id, &cred).unwrap().is_none(),
            "an edited epoch list does not open"
        );
        let mut half = s.clone();
        half.current_epoch = None;
        assert!(matches!(
            half.unwrap_key(&repo, &id, &cred),
            Err(Error::Format { .. })
        ));

        // A slot written before the fields existed: associated data without them.
        let nonce: [u8; 24] = rand::random();
        let ct = XChaCha20Poly1305::new((&*keyfile_kek(&kf)).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &m.to_bytes(),
                    aad: &slot_aad(&repo, &id, SlotKind::KeyFile, Role::Admin, None),
                },
            )
            .unwrap();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        let mut old = s.clone();
        old.current_epoch = None;
        old.epochs = None;
        old.wrapped = base64::engine::general_purpose::STANDARD.encode(blob);
        let back = old.unwrap_key(&repo, &id, &cred).unwrap().unwrap();
        assert_eq!(back.epoch_numbers(), vec![0, 1]);
        assert!(!old.states_epochs(1, &[0, 1]));

        let a = successor_id(&id, 1, &[0, 1]);
        assert_eq!(a, successor_id(&id, 1, &[0, 1]));
        assert_ne!(a, successor_id(&id, 1, &[1]));
        assert_ne!(a, successor_id(&KeyId::random(), 1, &[0, 1]));
    }

    #[test]
    fn key_file_formats() {
        assert_eq!(*parse_key_file(&[1u8; 32], "f").unwrap(), [1u8; 32]);
        let hex = format!("{}\n", "ab".repeat(32));
        assert_eq!(*parse_key_file(hex.as_bytes(), "f").unwrap(), [0xab; 32]);
        assert!(matches!(
            parse_key_file(b"short", "f"),
            Err(Error::InvalidInput(_))
        ));
    }

    /// The Argon2id answer of the reference implementation's tests (`phc-winner-argon2`
    /// `src/test.c`: version 0x13, t=2, m=2^16 KiB, p=1, "password", "somesalt"), through the
    /// derivation a password slot uses.
    #[test]
    fn argon2id_reference_vector_through_the_slot_kdf() {
        let p = KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: 1 << 16,
            iterations: 2,
            parallelism: 1,
            salt: hex::encode(b"somesalt"),
        };
        let out = p.derive(b"password").unwrap();
        assert_eq!(
            hex::encode(*out),
            "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7"
        );
    }

    /// RFC 9106, section 5.3 (Argon2id with a secret and associated data, which the slot KDF does not
    /// use): the same crate, algorithm and version as the slot KDF.
    #[test]
    fn argon2id_rfc9106_vector() {
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .output_len(32)
            .data(argon2::AssociatedData::new(&[4u8; 12]).unwrap())
            .build()
            .unwrap();
        let a = Argon2::new_with_secret(&[3u8; 8], Algorithm::Argon2id, Version::V0x13, params)
            .unwrap();
        let mut out = [0u8; 32];
        a.hash_password_into(&[1u8; 32], &[2u8; 16], &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }
}
