//! All cryptography of gatevault: the only module that names an AEAD, a hash or a KDF crate.
//!
//! One random [`MasterKey`] holds a fixed repository secret (from which the blob-id key, the chunker seed
//! and the config MAC key derive, so ids stay stable forever) and one data key per *epoch*. New objects are
//! sealed under the current epoch; rotating adds an epoch without touching stored data. Every stored
//! object gets its own subkey, derived from the epoch key and the object's id, so AES-256-GCM's random
//! 96-bit nonces never come near their per-key limit. The associated data binds the repository id, the
//! containing object (kind and id) and the item (kind and id) plus the envelope header, so a ciphertext
//! cannot be moved to another name, another repository, or be read as another type.
//!
//! Envelope layout (`docs/design.md`): `version u8 | cipher u8 | epoch u32 LE | nonce | ciphertext | tag`.

pub mod keyslot;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::id::{BlobId, RepoId};

/// Version byte of the envelope format.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of an AEAD tag (both ciphers).
pub const TAG_LEN: usize = 16;

/// The AEAD used for new objects of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Cipher {
    /// XChaCha20-Poly1305 with random 192-bit nonces (the default).
    #[serde(rename = "xchacha20-poly1305")]
    #[value(name = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// AES-256-GCM with random 96-bit nonces under a per-object subkey.
    #[serde(rename = "aes-256-gcm")]
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
}

impl Cipher {
    fn byte(self) -> u8 {
        match self {
            Cipher::XChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Cipher::XChaCha20Poly1305),
            2 => Some(Cipher::Aes256Gcm),
            _ => None,
        }
    }

    /// Nonce length in bytes.
    pub fn nonce_len(self) -> usize {
        match self {
            Cipher::XChaCha20Poly1305 => 24,
            Cipher::Aes256Gcm => 12,
        }
    }

    /// Bytes an envelope adds to its plaintext.
    pub fn overhead(self) -> usize {
        6 + self.nonce_len() + TAG_LEN
    }
}

/// What a sealed item or its container is; part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The config's MAC domain (never sealed).
    Config = 1,
    /// A key slot.
    KeySlot = 2,
    /// A pack as container, or its header as item.
    Pack = 3,
    /// A data blob inside a pack.
    DataBlob = 4,
    /// A tree blob inside a pack.
    TreeBlob = 5,
    /// An index file.
    Index = 6,
    /// A snapshot.
    Snapshot = 7,
    /// A lock.
    Lock = 8,
    /// A record (restore drill).
    Record = 9,
    /// An entry of the audit log.
    Audit = 10,
}

/// The unkeyed BLAKE3 hash of `data`: what links an audit entry to the one before it (a hash anyone
/// holding the plaintext can recompute, so that a chain head can be kept outside the repository).
pub fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// BLAKE3 in keyed mode: blob ids and the config MAC.
pub fn keyed_hash(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, data).as_bytes()
}

/// BLAKE3 in key-derivation mode: every key and derived id of `docs/design.md`, section 2.
pub fn derive_key(context: &str, material: &[u8]) -> [u8; 32] {
    blake3::derive_key(context, material)
}

/// The repository's master key material. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    repo_secret: [u8; 32],
    /// (epoch number, data key), ascending.
    epochs: Vec<(u32, [u8; 32])>,
    current: u32,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("epochs", &self.epoch_numbers())
            .field("current", &self.current)
            .finish()
    }
}

const MASTER_KEY_FORMAT: u8 = 1;

impl MasterKey {
    /// A new random master key with epoch 0.
    pub fn generate() -> Self {
        Self {
            repo_secret: rand::random(),
            epochs: vec![(0, rand::random())],
            current: 0,
        }
    }

    /// Epoch numbers this key can open.
    pub fn epoch_numbers(&self) -> Vec<u32> {
        self.epochs.iter().map(|(e, _)| *e).collect()
    }

    /// The epoch new objects are sealed under.
    pub fn current_epoch(&self) -> u32 {
        self.current
    }

    /// Adds a fresh epoch and makes it current (master-key rotation).
    pub fn rotate(&mut self) -> u32 {
        let next = self.epochs.iter().map(|(e, _)| *e).max().unwrap_or(0) + 1;
        self.epochs.push((next, rand::random()));
        self.current = next;
        next
    }

    /// The key a retirement leaves: the current epoch only. Objects sealed under the others can no
    /// longer be opened by anyone holding the result, so `rewrite --reencrypt` must have moved them
    /// all first.
    pub fn retain_current(&self) -> Self {
        Self {
            repo_secret: self.repo_secret,
            epochs: self
                .epochs
                .iter()
                .filter(|(e, _)| *e == self.current)
                .copied()
                .collect(),
            current: self.current,
        }
    }

    /// Whether `other` is a version of this master key: the same repository secret and, for every epoch
    /// both hold, the same data key. A key slot that fails this belongs to a diverged master key (for
    /// example from a rotation that was never completed) and must not be rewrapped blindly.
    pub fn agrees_with(&self, other: &MasterKey) -> bool {
        self.repo_secret == other.repo_secret
            && self.epochs.iter().all(|(e, k)| {
                other
                    .epochs
                    .iter()
                    .find(|(o, _)| o == e)
                    .is_none_or(|(_, ok)| ok == k)
            })
    }

    /// Serialized form, as wrapped inside a key slot.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(41 + 36 * self.epochs.len()));
        out.push(MASTER_KEY_FORMAT);
        out.extend_from_slice(&self.repo_secret);
        out.extend_from_slice(&self.current.to_le_bytes());
        out.extend_from_slice(&(self.epochs.len() as u32).to_le_bytes());
        for (e, k) in &self.epochs {
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(k);
        }
        out
    }

    /// Parses [`MasterKey::to_bytes`] output.
    ///
    /// # Errors
    /// [`Error::Format`] on any malformed input.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::format("master key", why);
        if b.len() < 41 || b[0] != MASTER_KEY_FORMAT {
            return Err(bad("unknown version or too short"));
        }
        let mut repo_secret = [0u8; 32];
        repo_secret.copy_from_slice(&b[1..33]);
        let current = u32::from_le_bytes(b[33..37].try_into().map_err(|_| bad("short"))?);
        let n = u32::from_le_bytes(b[37..41].try_into().map_err(|_| bad("short"))?) as usize;
        if n == 0 || b.len() != 41 + 36 * n {
            return Err(bad("wrong length"));
        }
        let mut epochs = Vec::with_capacity(n);
        for i in 0..n {
            let o = 41 + 36 * i;
            let e = u32::from_le_bytes(b[o..o + 4].try_into().map_err(|_| bad("short"))?);
            let mut k = [0u8; 32];
            k.copy_from_slice(&b[o + 4..o + 36]);
            epochs.push((e, k));
        }
        if !epochs.iter().any(|(e, _)| *e == current) {
            return Err(bad("current epoch has no key"));
        }
        Ok(Self {
            repo_secret,
            epochs,
            current,
        })
    }
}

/// Everything derived from the master key for one repository; what the repository layer uses.
pub struct RepoKeys {
    repo_id: RepoId,
    cipher: Cipher,
    master: MasterKey,
    id_key: Zeroizing<[u8; 32]>,
    mac_key: Zeroizing<[u8; 32]>,
    chunker_seed: u64,
}

impl std::fmt::Debug for RepoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoKeys")
            .field("repo_id", &self.repo_id)
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl RepoKeys {
    /// Derives the working keys of repository `repo_id` sealing with `cipher`.
    pub fn new(master: MasterKey, repo_id: RepoId, cipher: Cipher) -> Self {
        let id_key = Zeroizing::new(derive_key("gatevault v1 blob id key", &master.repo_secret));
        let mac_key = Zeroizing::new(derive_key(
            "gatevault v1 config mac key",
            &master.repo_secret,
        ));
        let seed = derive_key("gatevault v1 chunker gear seed", &master.repo_secret);
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed[..8]);
        Self {
            repo_id,
            cipher,
            master,
            id_key,
            mac_key,
            chunker_seed: u64::from_le_bytes(s),
        }
    }

    /// The master key (for wrapping into new key slots).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The repository id bound into every ciphertext.
    pub fn repo_id(&self) -> RepoId {
        self.repo_id
    }

    /// The cipher for new objects.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The keyed BLAKE3 id of a blob's plaintext.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(keyed_hash(&self.id_key, data))
    }

    /// The secret seed of the chunker's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// A MAC over the config object's authenticated fields.
    pub fn config_mac(&self, bytes: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(&[Kind::Config as u8]);
        h.update(bytes);
        *h.finalize().as_bytes()
    }

    fn epoch_key(&self, epoch: u32) -> Result<&[u8; 32]> {
        self.master.epochs.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k).ok_or_else(|| {
            Error::integrity(
                format!("key epoch {epoch}"),
                "this master key has no such epoch (retired, or the object is from another repository)",
            )
        })
    }

    /// Why an envelope of `epoch` cannot be opened by this key, naming the object (`what`): the epoch
    /// was retired, or it is newer than any this key holds (a rotation that the key slot in use has not
    /// followed, typically an interrupted `key rotate`), or the object is from another repository.
    fn missing_epoch(&self, epoch: u32, what: &str) -> Error {
        let held = self.master.epoch_numbers();
        let list = held
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let why = if held.last().is_some_and(|last| epoch > *last) {
            "newer than any this key holds: a key rotation that the key slot in use has not followed \
             (run `gatevault key rotate` again to complete an interrupted one), or the object is from \
             another repository"
        } else {
            "retired, or the object is from another repository"
        };
        Error::integrity(
            what,
            format!(
                "sealed under key epoch {epoch}, but this master key has no such epoch (it holds {list}; {why})"
            ),
        )
    }

    /// The id of the record that holds a copy of audit entry `seq` while `rewrite --reencrypt` re-seals
    /// the entry (`docs/design.md`, section 10b). It derives from the repository secret, not from an
    /// epoch key, so that every key of the repository, whatever epochs it holds, finds the copy of a
    /// given entry without reading any other record; being keyed, it looks random to outsiders.
    pub fn audit_copy_id(&self, seq: u64) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("gatevault v1 audit entry copy id");
        h.update(&self.master.repo_secret);
        h.update(&seq.to_be_bytes());
        *h.finalize().as_bytes()
    }

    /// The id under which a local cache file named `name` is sealed (`src/repo/snapcache.rs`): derived
    /// from the repository secret, so every key of the repository opens it; no stored object has it.
    pub fn local_cache_id(&self, name: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("gatevault v1 local cache id");
        h.update(&self.master.repo_secret);
        h.update(name.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The id under which `rewrite --reencrypt` stores the re-sealed copy of object `old` of `kind`: a
    /// keyed hash of the old id under the current epoch's key. Being deterministic, a re-run after an
    /// interruption finds the copy it already wrote instead of making a second one; being keyed, it is
    /// as unpredictable to outsiders as a random id.
    pub fn reencrypted_id(&self, kind: Kind, old: &[u8; 32]) -> [u8; 32] {
        let ek = self
            .epoch_key(self.master.current)
            .expect("the current epoch always has a key");
        let mut h = blake3::Hasher::new_derive_key("gatevault v1 re-encrypted object id");
        h.update(ek);
        h.update(&[kind as u8]);
        h.update(old);
        *h.finalize().as_bytes()
    }

    /// The sealer for items of one stored object (a pack, snapshot, index file or lock), under the current
    /// epoch.
    pub fn object(&self, kind: Kind, id: &[u8; 32]) -> ObjectCipher {
        self.object_at(self.master.current, kind, id)
            .expect("the current epoch always has a key")
    }

    fn object_at(&self, epoch: u32, kind: Kind, id: &[u8; 32]) -> Result<ObjectCipher> {
        let ek = self.epoch_key(epoch)?;
        let mut h = blake3::Hasher::new_derive_key("gatevault v1 object subkey");
        h.update(ek);
        h.update(&[kind as u8]);
        h.update(id);
        let sub = Zeroizing::new(*h.finalize().as_bytes());
        let aead = Aead::new(self.cipher, &sub);
        Ok(ObjectCipher {
            repo_id: self.repo_id.0,
            kind,
            id: *id,
            epoch,
            cipher: self.cipher,
            aead,
        })
    }

    /// Opens one item of a stored object, whatever epoch and cipher sealed it.
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] naming `what` when the envelope is malformed or does not authenticate.
    pub fn open(
        &self,
        kind: Kind,
        id: &[u8; 32],
        item: Kind,
        item_id: &[u8; 32],
        envelope: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        self.opener(kind, id, envelope, what)?
            .open(item, item_id, envelope, what)
    }

    /// The cipher of object `id` for the epoch and cipher `envelope` was sealed under.
    fn opener(
        &self,
        kind: Kind,
        id: &[u8; 32],
        envelope: &[u8],
        what: &str,
    ) -> Result<ObjectCipher> {
        let (cipher, epoch) = parse_envelope_header(envelope, what)?;
        if self.epoch_key(epoch).is_err() {
            return Err(self.missing_epoch(epoch, what));
        }
        if cipher == self.cipher {
            return self.object_at(epoch, kind, id);
        }
        RepoKeys {
            repo_id: self.repo_id,
            cipher,
            master: self.master.clone(),
            id_key: self.id_key.clone(),
            mac_key: self.mac_key.clone(),
            chunker_seed: self.chunker_seed,
        }
        .object_at(epoch, kind, id)
    }

    /// [`RepoKeys::open`] without copying: decrypts inside `envelope` and returns the plaintext part.
    ///
    /// # Errors
    /// As [`RepoKeys::open`]; on error the envelope's bytes are unspecified.
    pub fn open_in_place<'b>(
        &self,
        kind: Kind,
        id: &[u8; 32],
        item: Kind,
        item_id: &[u8; 32],
        envelope: &'b mut [u8],
        what: &str,
    ) -> Result<&'b mut [u8]> {
        self.opener(kind, id, envelope, what)?
            .open_in_place(item, item_id, envelope, what)
    }

    /// Seals a single-item object (snapshot, index file, lock): the item is the object itself.
    pub fn seal_object(&self, kind: Kind, id: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        self.object(kind, id).seal(kind, id, plaintext)
    }

    /// Opens a single-item object sealed by [`RepoKeys::seal_object`].
    ///
    /// # Errors
    /// As [`RepoKeys::open`].
    pub fn open_object(
        &self,
        kind: Kind,
        id: &[u8; 32],
        envelope: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        self.open(kind, id, kind, id, envelope, what)
    }
}

/// The AEAD of one object subkey. Both ciphers run on `ring` (its assembly is 2x RustCrypto's
/// speed for ChaCha20-Poly1305 and 6x for AES-256-GCM here); XChaCha20-Poly1305 is built from it as
/// draft-irtf-cfrg-xchacha specifies: HChaCha20 of the key and the nonce's first 16 bytes gives a
/// subkey for ChaCha20-Poly1305 with the nonce's last 8 bytes. The published vectors of both ciphers
/// are tested below.
enum Aead {
    X(Zeroizing<[u8; 32]>),
    A(Box<LessSafeKey>),
}

impl Aead {
    fn new(cipher: Cipher, key: &[u8; 32]) -> Self {
        match cipher {
            Cipher::XChaCha20Poly1305 => Aead::X(Zeroizing::new(*key)),
            Cipher::Aes256Gcm => Aead::A(Box::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key fits AES-256-GCM"),
            ))),
        }
    }

    /// The key and 96-bit nonce that `nonce` (24 or 12 bytes, as the cipher takes) stands for.
    fn key_and_nonce(&self, nonce: &[u8]) -> Option<(std::borrow::Cow<'_, LessSafeKey>, Nonce)> {
        match self {
            Aead::X(key) => {
                let (head, tail) = nonce.split_at_checked(16)?;
                let head: &[u8; 16] = head.try_into().ok()?;
                let tail: &[u8; 8] = tail.try_into().ok()?;
                let mut sub = Zeroizing::new([0u8; 32]);
                sub.copy_from_slice(&chacha20::hchacha::<chacha20::cipher::consts::U10>(
                    (&**key).into(),
                    head.into(),
                ));
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(tail);
                let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &*sub).ok()?);
                Some((std::borrow::Cow::Owned(k), Nonce::assume_unique_for_key(n)))
            }
            Aead::A(key) => Some((
                std::borrow::Cow::Borrowed(&**key),
                Nonce::try_assume_unique_for_key(nonce).ok()?,
            )),
        }
    }

    /// Encrypts `buf` in place under `nonce` (24 or 12 bytes, as the cipher takes); returns the tag.
    fn encrypt(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let (key, nonce) = self
            .key_and_nonce(nonce)
            .expect("the envelope writer gives the cipher's nonce length");
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .expect("AEAD encryption of an in-memory buffer cannot fail");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks `tag` and decrypts `buf` in place; `false` when it does not authenticate, and then
    /// `buf`'s bytes are unspecified (ring zeroes them): a caller that wants to try the bytes again
    /// keeps a copy.
    fn decrypt(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        let (Some((key, nonce)), Ok(tag)) = (self.key_and_nonce(nonce), Tag::try_from(tag)) else {
            return false;
        };
        key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, 0..)
            .is_ok()
    }
}

/// Seals and opens the items of one stored object under that object's subkey.
pub struct ObjectCipher {
    repo_id: [u8; 32],
    kind: Kind,
    id: [u8; 32],
    epoch: u32,
    cipher: Cipher,
    aead: Aead,
}

/// Bytes of an envelope's header that name its epoch: `version | cipher | epoch u32`.
pub const ENVELOPE_EPOCH_PREFIX: usize = 6;

/// The key epoch an envelope was sealed under, from its first [`ENVELOPE_EPOCH_PREFIX`] bytes; `None`
/// when they are not the start of an envelope (too short, unknown version or cipher). Nothing is
/// authenticated: this only tells which objects `rewrite --reencrypt` has to re-seal.
pub fn envelope_epoch(prefix: &[u8]) -> Option<u32> {
    match prefix {
        [ENVELOPE_VERSION, c, a, b, d, e, ..] if Cipher::from_byte(*c).is_some() => {
            Some(u32::from_le_bytes([*a, *b, *d, *e]))
        }
        _ => None,
    }
}

fn parse_envelope_header(env: &[u8], what: &str) -> Result<(Cipher, u32)> {
    if env.len() < 6 {
        return Err(Error::integrity(what, "envelope too short"));
    }
    if env[0] != ENVELOPE_VERSION {
        return Err(Error::integrity(
            what,
            format!("unknown envelope version {}", env[0]),
        ));
    }
    let cipher = Cipher::from_byte(env[1])
        .ok_or_else(|| Error::integrity(what, format!("unknown cipher {}", env[1])))?;
    let epoch = u32::from_le_bytes([env[2], env[3], env[4], env[5]]);
    if env.len() < cipher.overhead() {
        return Err(Error::integrity(what, "envelope too short"));
    }
    Ok((cipher, epoch))
}

impl ObjectCipher {
    fn aad(&self, item: Kind, item_id: &[u8; 32], header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(13 + 32 * 3 + 2 + header.len());
        aad.extend_from_slice(b"gatevault-v1\0");
        aad.extend_from_slice(&self.repo_id);
        aad.push(self.kind as u8);
        aad.extend_from_slice(&self.id);
        aad.push(item as u8);
        aad.extend_from_slice(item_id);
        aad.extend_from_slice(header);
        aad
    }

    /// Seals one item with a fresh random nonce.
    pub fn seal(&self, item: Kind, item_id: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + self.cipher.overhead());
        self.seal_append(item, item_id, plaintext, &mut out);
        out
    }

    /// [`ObjectCipher::seal`] appending the envelope to `out` (packs are built this way, without a
    /// buffer per blob).
    pub fn seal_append(&self, item: Kind, item_id: &[u8; 32], plaintext: &[u8], out: &mut Vec<u8>) {
        let nl = self.cipher.nonce_len();
        let start = out.len();
        out.push(ENVELOPE_VERSION);
        out.push(self.cipher.byte());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        let mut nonce = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..nl]);
        out.extend_from_slice(&nonce[..nl]);
        let hl = out.len();
        let aad = self.aad(item, item_id, &out[start..hl]);
        out.extend_from_slice(plaintext);
        let tag = self.aead.encrypt(&nonce[..nl], &aad, &mut out[hl..]);
        out.extend_from_slice(&tag);
    }

    /// Opens one item sealed by [`ObjectCipher::seal`].
    ///
    /// # Errors
    /// [`Error::IntegrityMismatch`] naming `what` when the envelope is malformed, was sealed for another
    /// object, item, type or repository, or was altered.
    pub fn open(&self, item: Kind, item_id: &[u8; 32], env: &[u8], what: &str) -> Result<Vec<u8>> {
        let (cipher, epoch) = parse_envelope_header(env, what)?;
        if cipher != self.cipher || epoch != self.epoch {
            return Err(Error::integrity(
                what,
                "sealed under another cipher or key epoch",
            ));
        }
        let nl = cipher.nonce_len();
        let hl = 6 + nl;
        let tl = env.len() - TAG_LEN;
        let aad = self.aad(item, item_id, &env[..hl]);
        let mut buf = env[hl..tl].to_vec();
        let tag = &env[tl..];
        let ok = self
            .aead
            .decrypt(&env[6..hl], &aad, &mut buf, tag)
            .then_some(());
        ok.ok_or_else(|| {
            Error::integrity(
                what,
                "authentication failed (damaged, moved, or from another repository)",
            )
        })?;
        Ok(buf)
    }
}

impl ObjectCipher {
    /// [`ObjectCipher::open`] without copying: decrypts the ciphertext inside `env` and returns it.
    ///
    /// # Errors
    /// As [`ObjectCipher::open`].
    pub fn open_in_place<'b>(
        &self,
        item: Kind,
        item_id: &[u8; 32],
        env: &'b mut [u8],
        what: &str,
    ) -> Result<&'b mut [u8]> {
        let (cipher, epoch) = parse_envelope_header(env, what)?;
        if cipher != self.cipher || epoch != self.epoch {
            return Err(Error::integrity(
                what,
                "sealed under another cipher or key epoch",
            ));
        }
        let hl = 6 + cipher.nonce_len();
        let tl = env.len() - TAG_LEN;
        let aad = self.aad(item, item_id, &env[..hl]);
        let (head, rest) = env.split_at_mut(hl);
        let (body, tag) = rest.split_at_mut(tl - hl);
        let nonce = &head[6..];
        let ok = self.aead.decrypt(nonce, &aad, body, tag).then_some(());
        ok.ok_or_else(|| {
            Error::integrity(
                what,
                "authentication failed (damaged, moved, or from another repository)",
            )
        })?;
        Ok(body)
    }
}

/// The item id a blob is sealed under: the blob id itself, or for a delta a hash of the blob id and
/// its base's id, so that the base an entry names is authenticated without being stored in the blob.
pub fn blob_item_id(id: &BlobId, base: Option<&BlobId>) -> [u8; 32] {
    match base {
        None => id.0,
        Some(b) => {
            let mut h = blake3::Hasher::new_derive_key("gatevault v1 delta blob item id");
            h.update(&id.0);
            h.update(&b.0);
            *h.finalize().as_bytes()
        }
    }
}

/// Keyed hash used by the tamper-evident chains and tests: plain BLAKE3 of `data`.
pub fn content_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cipher: Cipher) -> RepoKeys {
        RepoKeys::new(MasterKey::generate(), RepoId::random(), cipher)
    }

    #[test]
    fn seal_open_round_trip_both_ciphers() {
        for c in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let k = keys(c);
            let pack = [7u8; 32];
            let blob = [9u8; 32];
            let oc = k.object(Kind::Pack, &pack);
            let env = oc.seal(Kind::DataBlob, &blob, b"hello");
            assert_eq!(env.len(), 5 + c.overhead());
            assert_eq!(
                k.open(Kind::Pack, &pack, Kind::DataBlob, &blob, &env, "t")
                    .unwrap(),
                b"hello"
            );
        }
    }

    #[test]
    fn binding_rejects_moved_or_retyped_ciphertext() {
        let k = keys(Cipher::XChaCha20Poly1305);
        let (p, b) = ([1u8; 32], [2u8; 32]);
        let env = k.object(Kind::Pack, &p).seal(Kind::DataBlob, &b, b"data");
        let bad = |r: Result<Vec<u8>>| assert!(matches!(r, Err(Error::IntegrityMismatch { .. })));
        bad(k.open(Kind::Pack, &p, Kind::TreeBlob, &b, &env, "t")); // type confusion
        bad(k.open(Kind::Pack, &[3u8; 32], Kind::DataBlob, &b, &env, "t")); // moved to another pack
        bad(k.open(Kind::Pack, &p, Kind::DataBlob, &[4u8; 32], &env, "t")); // other blob id
        let other_repo = RepoKeys::new(
            k.master().clone(),
            RepoId::random(),
            Cipher::XChaCha20Poly1305,
        );
        bad(other_repo.open(Kind::Pack, &p, Kind::DataBlob, &b, &env, "t"));
        for i in 0..env.len() {
            let mut e = env.clone();
            e[i] ^= 0x40;
            assert!(
                k.open(Kind::Pack, &p, Kind::DataBlob, &b, &e, "t").is_err(),
                "flip at {i} detected"
            );
        }
        bad(k.open(
            Kind::Pack,
            &p,
            Kind::DataBlob,
            &b,
            &env[..env.len() - 1],
            "t",
        ));
    }

    #[test]
    fn rotation_keeps_old_epochs_readable() {
        let mut m = MasterKey::generate();
        let id = RepoId::random();
        let k0 = RepoKeys::new(m.clone(), id, Cipher::Aes256Gcm);
        let env0 = k0.seal_object(Kind::Snapshot, &[5u8; 32], b"old");
        assert_eq!(m.rotate(), 1);
        let k1 = RepoKeys::new(
            MasterKey::from_bytes(&m.to_bytes()).unwrap(),
            id,
            Cipher::Aes256Gcm,
        );
        let env1 = k1.seal_object(Kind::Snapshot, &[5u8; 32], b"new");
        assert_eq!(u32::from_le_bytes(env1[2..6].try_into().unwrap()), 1);
        assert_eq!(
            k1.open_object(Kind::Snapshot, &[5u8; 32], &env0, "t")
                .unwrap(),
            b"old"
        );
        assert!(
            k0.open_object(Kind::Snapshot, &[5u8; 32], &env1, "t")
                .is_err(),
            "old key cannot read new epoch"
        );
        assert_eq!(
            k0.blob_id(b"x"),
            k1.blob_id(b"x"),
            "blob ids survive rotation"
        );
    }

    #[test]
    fn audit_copy_ids_follow_the_repository_not_the_epoch() {
        let mut m = MasterKey::generate();
        let id = RepoId::random();
        let k0 = RepoKeys::new(m.clone(), id, Cipher::XChaCha20Poly1305);
        m.rotate();
        let k1 = RepoKeys::new(m.clone(), id, Cipher::XChaCha20Poly1305);
        let k2 = RepoKeys::new(m.retain_current(), id, Cipher::Aes256Gcm);
        assert_eq!(k0.audit_copy_id(5), k1.audit_copy_id(5));
        assert_eq!(k1.audit_copy_id(5), k2.audit_copy_id(5));
        assert_ne!(k0.audit_copy_id(5), k0.audit_copy_id(6));
        let other = RepoKeys::new(MasterKey::generate(), id, Cipher::XChaCha20Poly1305);
        assert_ne!(k0.audit_copy_id(5), other.audit_copy_id(5));

        // An object of an epoch newer than the key's is named, and the likely cause given.
        let env = k1.seal_object(Kind::Snapshot, &[1u8; 32], b"new");
        let err = k0
            .open_object(Kind::Snapshot, &[1u8; 32], &env, "snapshot 0101")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("snapshot 0101")
                && err.contains("key epoch 1")
                && err.contains("no such epoch")
                && err.contains("key rotate"),
            "{err}"
        );
        let old = k0.seal_object(Kind::Snapshot, &[1u8; 32], b"old");
        let err = k2
            .open_object(Kind::Snapshot, &[1u8; 32], &old, "snapshot 0101")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retired") && !err.contains("key rotate"),
            "{err}"
        );
    }

    #[test]
    fn retirement_keeps_only_the_current_epoch_and_reencrypted_ids_follow_it() {
        let mut m = MasterKey::generate();
        let id = RepoId::random();
        let k0 = RepoKeys::new(m.clone(), id, Cipher::XChaCha20Poly1305);
        let env0 = k0.seal_object(Kind::Record, &[1u8; 32], b"old");
        assert_eq!(envelope_epoch(&env0[..ENVELOPE_EPOCH_PREFIX]), Some(0));
        assert_eq!(envelope_epoch(&env0[..5]), None);
        m.rotate();
        assert!(m.agrees_with(&k0.master().clone()));
        let retired = m.retain_current();
        assert_eq!(retired.epoch_numbers(), vec![1]);
        assert!(
            retired.agrees_with(&m),
            "a retirement is a version of the same key"
        );
        let k1 = RepoKeys::new(retired, id, Cipher::XChaCha20Poly1305);
        let err = k1
            .open_object(Kind::Record, &[1u8; 32], &env0, "t")
            .unwrap_err();
        assert!(err.to_string().contains("no such epoch"), "{err}");
        assert!(
            !MasterKey::generate().agrees_with(&m),
            "another repository's key"
        );
        let mut diverged = k0.master().clone();
        diverged.rotate();
        assert!(!diverged.agrees_with(&m), "two rotations of one key differ");

        let km = RepoKeys::new(m, id, Cipher::XChaCha20Poly1305);
        let a = km.reencrypted_id(Kind::Snapshot, &[7u8; 32]);
        assert_eq!(
            a,
            km.reencrypted_id(Kind::Snapshot, &[7u8; 32]),
            "deterministic"
        );
        assert_ne!(a, km.reencrypted_id(Kind::Record, &[7u8; 32]));
        assert_ne!(
            a,
            k0.reencrypted_id(Kind::Snapshot, &[7u8; 32]),
            "per epoch"
        );
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = keys(Cipher::XChaCha20Poly1305);
        let b = keys(Cipher::XChaCha20Poly1305);
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_ne!(a.blob_id(b"same").0, *blake3::hash(b"same").as_bytes());
    }

    #[test]
    fn master_key_parsing_rejects_garbage() {
        assert!(MasterKey::from_bytes(&[]).is_err());
        let m = MasterKey::generate();
        let b = m.to_bytes();
        assert!(MasterKey::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(!format!("{m:?}").contains(&hex::encode(m.repo_secret)));
    }

    // ---------------------------------------------------------------- known answers and nonces

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// The input of the official BLAKE3 test vectors (`test_vectors.json`): byte i is i mod 251.
    fn blake3_input(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn blake3_official_vectors() {
        let key: [u8; 32] = *b"whats the Elvish word for friend";
        let ctx = "BLAKE3 2019-12-27 16:29:52 test vectors context";
        // (input length, hash, keyed_hash, derive_key), first 32 bytes of each.
        let vectors = [
            (
                0,
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
                "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26",
                "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d",
            ),
            (
                1,
                "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
                "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b",
                "b3e2e340a117a499c6cf2398a19ee0d29cca2bb7404c73063382693bf66cb06c",
            ),
        ];
        for (n, h, k, d) in vectors {
            let input = blake3_input(n);
            assert_eq!(hex::encode(hash(&input)), h, "hash, length {n}");
            assert_eq!(
                hex::encode(content_hash(&input)),
                h,
                "content_hash, length {n}"
            );
            assert_eq!(
                hex::encode(keyed_hash(&key, &input)),
                k,
                "keyed, length {n}"
            );
            assert_eq!(
                hex::encode(derive_key(ctx, &input)),
                d,
                "derive_key, length {n}"
            );
        }
    }

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    #[test]
    fn xchacha20_poly1305_draft_vector() {
        let key: [u8; 32] =
            unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .try_into()
                .unwrap();
        let nonce = unhex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let want = unhex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
             21f9664c97637da9768812f615c68b13b52e",
        );
        let want_tag = unhex("c0875924c1c7987947deafd8780acf49");
        let aead = Aead::new(Cipher::XChaCha20Poly1305, &key);
        let mut buf = plaintext.to_vec();
        let tag = aead.encrypt(&nonce, &aad, &mut buf);
        assert_eq!(hex::encode(&buf), hex::encode(&want));
        assert_eq!(hex::encode(tag), hex::encode(&want_tag));
        assert!(aead.decrypt(&nonce, &aad, &mut buf, &tag));
        assert_eq!(buf, plaintext);
        let mut bad = tag;
        bad[0] ^= 1;
        let mut ct = want.clone();
        assert!(!aead.decrypt(&nonce, &aad, &mut ct, &bad));
        assert!(!aead.decrypt(&nonce[..23], &aad, &mut want.clone(), &tag));
    }

    /// The GCM specification (McGrew and Viega), test case 16: AES-256 with associated data, as in
    /// NIST's GCM validation vectors.
    #[test]
    fn aes_256_gcm_published_vector() {
        let key: [u8; 32] =
            unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
                .try_into()
                .unwrap();
        let iv = unhex("cafebabefacedbaddecaf888");
        let plaintext = unhex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let want = unhex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let want_tag = unhex("76fc6ece0f4e1768cddf8853bb2d551b");
        let aead = Aead::new(Cipher::Aes256Gcm, &key);
        let mut buf = plaintext.clone();
        let tag = aead.encrypt(&iv, &aad, &mut buf);
        assert_eq!(hex::encode(&buf), hex::encode(&want));
        assert_eq!(hex::encode(tag), hex::encode(&want_tag));
        assert!(aead.decrypt(&iv, &aad, &mut buf, &tag));
        assert_eq!(buf, plaintext);
        assert!(!aead.decrypt(&iv, &aad[1..], &mut want.clone(), &tag));
    }

    /// 10^6 envelopes sealed by one object cipher (the worst case: one subkey) carry 10^6 distinct
    /// nonces, for both ciphers.
    #[test]
    fn no_nonce_repeats_over_a_million_seals() {
        for c in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let k = keys(c);
            let oc = k.object(Kind::Pack, &[1u8; 32]);
            let nl = c.nonce_len();
            let mut seen = std::collections::HashSet::with_capacity(1_000_000);
            let mut env = Vec::with_capacity(64);
            for _ in 0..1_000_000 {
                env.clear();
                oc.seal_append(Kind::DataBlob, &[2u8; 32], b"", &mut env);
                let mut n = [0u8; 24];
                n[..nl].copy_from_slice(&env[6..6 + nl]);
                assert!(seen.insert(n), "nonce repeated under {c:?}");
            }
            assert_eq!(seen.len(), 1_000_000);
        }
    }
}
