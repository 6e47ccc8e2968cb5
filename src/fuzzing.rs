//! Fuzz targets: one function per target of the `fuzz/` crate, shared with `tests/fuzz_seeds.rs`.
//!
//! Each target feeds arbitrary bytes to a real parser of the storage format, or to decryption under
//! fixed keys, and must not panic whatever the input. Where a parsed value has an encoding, the target
//! also checks the round trip: re-encoded and parsed again, it equals what was parsed (the fixed-width
//! binary formats even re-encode to the very input bytes). A panic, in the library or in one of the
//! assertions here, is a finding.
//!
//! Every target comes twice: `name(data)` returns nothing, as `libfuzzer_sys::fuzz_target!` wants, and
//! `check_name(data)` returns whether the input went all the way down the success path, so that the seed
//! test can tell valid seeds from malformed ones. [`TARGETS`] lists them all.
//!
//! The keys here are fixed and public. They exist so that seeds can be sealed and opened; never use them
//! for a repository.
#![doc(hidden)]

use std::sync::OnceLock;

use crate::crypto::keyslot::{Credential, KeySlot};
use crate::crypto::{Cipher, Kind, MasterKey, RepoKeys};
use crate::format::{self, IndexFile, Snapshot, Tree};
use crate::id::{KeyId, PackId, RepoId};
use crate::pack;

/// The repository id bound into every ciphertext of the fixed keys.
pub const REPO_ID: RepoId = RepoId([0x52; 32]);
/// The key file (32 raw bytes) whose slot the `key_slot` target tries to open.
pub const KEY_FILE: [u8; 32] = [0x4b; 32];
/// The slot id the `key_slot` target unwraps under (it is bound into the slot's associated data).
pub const SLOT_ID: KeyId = KeyId([0x53; 32]);
/// The kind of the single-item object the `envelope` target opens.
pub const ENVELOPE_KIND: Kind = Kind::Snapshot;
/// The id of the single-item object the `envelope` target opens.
pub const ENVELOPE_ID: [u8; 32] = [0x45; 32];
/// The blob-area length the `pack_header` target checks entries against when its input is shorter than
/// the 8-byte length prefix.
pub const PACK_HEADER_BOUND: u64 = 1 << 20;

/// The fixed master key: repository secret and two epochs, 0 and 1, of which `current` seals new objects.
///
/// # Panics
/// When `current` is neither 0 nor 1.
pub fn master_key(current: u32) -> MasterKey {
    let mut b = vec![1u8]; // serialization format of `MasterKey::to_bytes`
    b.extend_from_slice(&[0x11; 32]);
    b.extend_from_slice(&current.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    for (epoch, key) in [(0u32, 0x30u8), (1, 0x31)] {
        b.extend_from_slice(&epoch.to_le_bytes());
        b.extend_from_slice(&[key; 32]);
    }
    MasterKey::from_bytes(&b).expect("the fixed master key parses with epoch 0 or 1 current")
}

/// The fixed keys of repository [`REPO_ID`], sealing new objects with `cipher` under epoch `current`.
/// All of them open what any of them sealed.
///
/// # Panics
/// When `current` is neither 0 nor 1.
pub fn keys_with(cipher: Cipher, current: u32) -> RepoKeys {
    RepoKeys::new(master_key(current), REPO_ID, cipher)
}

/// The keys the targets open with: [`keys_with`] XChaCha20-Poly1305 and epoch 1.
pub fn keys() -> &'static RepoKeys {
    static KEYS: OnceLock<RepoKeys> = OnceLock::new();
    KEYS.get_or_init(|| keys_with(Cipher::XChaCha20Poly1305, 1))
}

/// One fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Its name: `fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`.
    pub name: &'static str,
    /// The entry point `fuzz_target!` calls.
    pub run: fn(&[u8]),
    /// The same, returning whether the input went all the way down the success path.
    pub check: fn(&[u8]) -> bool,
}

/// Every fuzz target, in the order of `fuzz/Cargo.toml`.
pub const TARGETS: [Target; 7] = [
    Target {
        name: "pack_header",
        run: pack_header,
        check: check_pack_header,
    },
    Target {
        name: "index_file",
        run: index_file,
        check: check_index_file,
    },
    Target {
        name: "snapshot",
        run: snapshot,
        check: check_snapshot,
    },
    Target {
        name: "tree",
        run: tree,
        check: check_tree,
    },
    Target {
        name: "key_slot",
        run: key_slot,
        check: check_key_slot,
    },
    Target {
        name: "envelope",
        run: envelope,
        check: check_envelope,
    },
    Target {
        name: "pack_file",
        run: pack_file,
        check: check_pack_file,
    },
];

/// Fuzz target `pack_header`; see [`check_pack_header`].
pub fn pack_header(data: &[u8]) {
    check_pack_header(data);
}

/// Parses a pack header's plaintext with [`format::decode_pack_header`]. The first 8 bytes (u64 LE) are
/// the blob-area length the entries must fit in, the rest is the header; an input shorter than 8 bytes is
/// parsed whole against [`PACK_HEADER_BOUND`]. Returns whether it parsed; a parsed header must lie inside
/// the blob area and re-encode to the same bytes.
pub fn check_pack_header(data: &[u8]) -> bool {
    let (blobs_len, header) = match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len), rest),
        None => (PACK_HEADER_BOUND, data),
    };
    let Ok(entries) = format::decode_pack_header(header, blobs_len) else {
        return false;
    };
    for e in &entries {
        assert!(
            u64::from(e.offset) + u64::from(e.length) <= blobs_len,
            "accepted entry {e:?} outside a blob area of {blobs_len} bytes"
        );
    }
    let again = format::encode_pack_header(&entries);
    assert!(
        again == header,
        "a decoded pack header re-encodes to other bytes"
    );
    let back = format::decode_pack_header(&again, blobs_len).expect("re-encoded header parses");
    assert_eq!(back, entries, "pack header round trip");
    true
}

/// Fuzz target `index_file`; see [`check_index_file`].
pub fn index_file(data: &[u8]) {
    check_index_file(data);
}

/// Parses an index file's plaintext with [`IndexFile::decode`]. Returns whether it parsed; a parsed file
/// must re-encode to the same bytes and parse again to an equal value.
pub fn check_index_file(data: &[u8]) -> bool {
    let Ok(f) = IndexFile::decode(data) else {
        return false;
    };
    for p in &f.packs {
        for e in &p.blobs {
            assert!(
                u64::from(e.offset) + u64::from(e.length) <= p.size,
                "accepted entry {e:?} outside pack {} of {} bytes",
                p.id,
                p.size
            );
        }
    }
    let again = f.encode();
    assert!(
        again == data,
        "a decoded index file re-encodes to other bytes"
    );
    let back = IndexFile::decode(&again).expect("re-encoded index file parses");
    assert_eq!(back, f, "index file round trip");
    true
}

/// Fuzz target `snapshot`; see [`check_snapshot`].
pub fn snapshot(data: &[u8]) {
    check_snapshot(data);
}

/// Parses a snapshot's plaintext with [`Snapshot::decode`]. Returns whether it parsed; a parsed snapshot
/// must re-encode to JSON that parses to an equal snapshot and encodes to the same bytes again.
pub fn check_snapshot(data: &[u8]) -> bool {
    let Ok(s) = Snapshot::decode(data) else {
        return false;
    };
    let enc = s.encode();
    let back = Snapshot::decode(&enc).expect("re-encoded snapshot parses");
    assert_eq!(back, s, "snapshot round trip");
    assert!(back.encode() == enc, "snapshot encoding is not stable");
    true
}

/// Fuzz target `tree`; see [`check_tree`].
pub fn tree(data: &[u8]) {
    check_tree(data);
}

/// Parses a tree blob with [`Tree::decode`]. Returns whether it parsed; a parsed tree must re-encode to
/// JSON that parses to an equal tree, and its encoding must be canonical (encoding the re-parsed tree gives
/// the same bytes), since equal trees must get equal blob ids.
pub fn check_tree(data: &[u8]) -> bool {
    let Ok(t) = Tree::decode(data) else {
        return false;
    };
    let enc = t.encode();
    let back = Tree::decode(&enc).expect("re-encoded tree parses");
    assert_eq!(back, t, "tree round trip");
    assert!(back.encode() == enc, "tree encoding is not canonical");
    true
}

/// Fuzz target `key_slot`; see [`check_key_slot`].
pub fn key_slot(data: &[u8]) {
    check_key_slot(data);
}

/// Parses a key-slot document with [`KeySlot::parse`] and, when it parses, unwraps it under [`REPO_ID`]
/// and [`SLOT_ID`] with the key file [`KEY_FILE`]. Returns whether it opened. A parsed slot must
/// re-serialize stably, and a slot that opens must yield the fixed master key ([`master_key`]`(1)`, which
/// the seeds wrap): anything else would be a forgery.
pub fn check_key_slot(data: &[u8]) -> bool {
    let Ok(slot) = KeySlot::parse(data, "fuzzed key slot") else {
        return false;
    };
    let json = serde_json::to_vec(&slot).expect("key slot serializes");
    let back = KeySlot::parse(&json, "re-encoded key slot").expect("re-encoded key slot parses");
    assert!(
        serde_json::to_vec(&back).expect("key slot serializes") == json,
        "key slot round trip"
    );
    match slot.unwrap_key(&REPO_ID, &SLOT_ID, &Credential::KeyFile(&KEY_FILE)) {
        Ok(Some(m)) => {
            assert!(
                m.to_bytes() == master_key(1).to_bytes(),
                "a key slot opened to a master key nobody wrapped"
            );
            true
        }
        Ok(None) | Err(_) => false,
    }
}

/// Fuzz target `envelope`; see [`check_envelope`].
pub fn envelope(data: &[u8]) {
    check_envelope(data);
}

/// Opens `data` as the envelope of object [`ENVELOPE_KIND`] [`ENVELOPE_ID`] with [`keys`]. Returns whether
/// it opened. An envelope that opens must have the documented length, must not open under another object
/// id or kind, must not open with its last tag byte flipped, and its plaintext must survive a new seal.
pub fn check_envelope(data: &[u8]) -> bool {
    let k = keys();
    let open =
        |env: &[u8], kind: Kind, id: &[u8; 32]| k.open_object(kind, id, env, "fuzzed envelope");
    let Ok(plain) = open(data, ENVELOPE_KIND, &ENVELOPE_ID) else {
        return false;
    };
    let cipher = match data[1] {
        1 => Cipher::XChaCha20Poly1305,
        2 => Cipher::Aes256Gcm,
        c => panic!("an envelope with cipher byte {c} opened"),
    };
    assert_eq!(
        plain.len() + cipher.overhead(),
        data.len(),
        "envelope length"
    );
    assert!(
        open(data, ENVELOPE_KIND, &[0x46; 32]).is_err(),
        "an envelope opened under another object id"
    );
    assert!(
        open(data, Kind::Index, &ENVELOPE_ID).is_err(),
        "an envelope opened as another kind of object"
    );
    let mut flipped = data.to_vec();
    if let Some(b) = flipped.last_mut() {
        *b ^= 1;
    }
    assert!(
        open(&flipped, ENVELOPE_KIND, &ENVELOPE_ID).is_err(),
        "an envelope with a flipped tag opened"
    );
    let resealed = k.seal_object(ENVELOPE_KIND, &ENVELOPE_ID, &plain);
    let back = open(&resealed, ENVELOPE_KIND, &ENVELOPE_ID).expect("a fresh seal opens");
    assert!(back == plain, "seal/open round trip");
    true
}

/// Fuzz target `pack_file`; see [`check_pack_file`].
pub fn pack_file(data: &[u8]) {
    check_pack_file(data);
}

/// Reads `data` as a pack id (32 bytes) followed by a whole pack file: [`pack::read_header`] with
/// [`keys`], then [`pack::open_blob`] on every entry. (The id is part of the input because packs get
/// random ids that their ciphertexts are bound to.) Returns whether the header and every blob opened.
/// Header entries must lie inside the blob area, and an opened blob must have its recorded length.
pub fn check_pack_file(data: &[u8]) -> bool {
    let Some((id, pack_bytes)) = data.split_first_chunk::<32>() else {
        return false;
    };
    let id = PackId(*id);
    let k = keys();
    let Ok(entries) = pack::read_header(k, &id, pack_bytes) else {
        return false;
    };
    let (blobs_len, _) =
        format::split_pack_trailer(pack_bytes).expect("read_header accepted this trailer");
    let mut all = true;
    for e in &entries {
        let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
        assert!(
            end <= blobs_len,
            "header entry {e:?} outside a blob area of {blobs_len} bytes"
        );
        match pack::open_blob(k, &id, e, &pack_bytes[start..end]) {
            Ok(blob) => assert_eq!(blob.len(), e.raw_length as usize, "blob length"),
            Err(_) => all = false,
        }
    }
    all
}
