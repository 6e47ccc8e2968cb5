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
//!
//! The gateway targets (`gw_*`, `canonical`) feed the importers what a gateway, an export or a config
//! file gives them: the same functions a capture calls, without the HTTP or file reading around them.
//! Beyond "no panic" they check what must hold of every capture: the output is deterministic, every
//! entity document is canonical JSON (or verbatim text) at a well-formed path, every secret or personal
//! mark points at something, the documents read back into the same capture (as a restore reads them),
//! and a restore's inverse (decK export, Caddy config) reads back into the same entities.
#![doc(hidden)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::sync::OnceLock;

use serde_json::Value;

use crate::crypto::keyslot::{Credential, KeySlot};
use crate::crypto::{Cipher, Kind, MasterKey, RepoKeys};
use crate::format::{self, IndexFile, Snapshot, Tree};
use crate::gateway::{self, aws, caddy, canonical, files, kong, nginx, Capture, Entity, Manifest};
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
pub const TARGETS: [Target; 14] = [
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
    Target {
        name: "canonical",
        run: canonical,
        check: check_canonical,
    },
    Target {
        name: "gw_kong",
        run: gw_kong,
        check: check_gw_kong,
    },
    Target {
        name: "gw_aws",
        run: gw_aws,
        check: check_gw_aws,
    },
    Target {
        name: "gw_caddy",
        run: gw_caddy,
        check: check_gw_caddy,
    },
    Target {
        name: "gw_nginx",
        run: gw_nginx,
        check: check_gw_nginx,
    },
    Target {
        name: "gw_files",
        run: gw_files,
        check: check_gw_files,
    },
    Target {
        name: "gw_manifest",
        run: gw_manifest,
        check: check_gw_manifest,
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

// ------------------------------------------------------------------------------------------ gateways

/// Fuzz target `canonical`; see [`check_canonical`].
pub fn canonical(data: &[u8]) {
    check_canonical(data);
}

/// The canonicalizer. `data` (as text) is a natural key: its [`canonical::file_name`] must be a
/// portable name that [`canonical::key_of_file_name`] turns back into the key. Then `data` is parsed
/// with [`canonical::parse_json_or_yaml`]; returns whether it parsed. The canonical bytes of a parsed
/// value must parse to the value with sorted keys and give the same bytes again (canonicalizing twice
/// gives the bytes of once), volatile fields must be gone after [`canonical::strip`] and every pointer
/// [`canonical::field_pointers`] gives must point at a field that [`gateway::mask`] then hides.
pub fn check_canonical(data: &[u8]) -> bool {
    let key = String::from_utf8_lossy(data);
    let name = canonical::file_name(&key);
    assert!(
        !name.is_empty() && !name.starts_with('.'),
        "file name {name:?}"
    );
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@=+,:-%".contains(&b)),
        "file name {name:?} has a character outside the portable set"
    );
    assert_eq!(
        canonical::key_of_file_name(&name).as_deref(),
        Some(&*key),
        "the file name {name:?} does not give its key back"
    );
    if let Some(k) = canonical::key_of_file_name(&key) {
        // Another spelling of a name may decode, but only to a key whose own name decodes to it too.
        assert_eq!(
            canonical::key_of_file_name(&canonical::file_name(&k)),
            Some(k)
        );
    }
    let Ok(v) = canonical::parse_json_or_yaml(data) else {
        return false;
    };
    let bytes = canonical::to_bytes(&v);
    let sorted = canonical::sort_keys(&v);
    let back: Value = serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
    assert_eq!(back, sorted, "canonical bytes parse to another value");
    assert!(
        canonical::to_bytes(&back) == bytes,
        "canonicalizing twice does not give the bytes of once"
    );
    assert_eq!(
        canonical::parse_json_or_yaml(&bytes),
        Ok(back),
        "canonical bytes read back differently as a document"
    );
    let mut stripped = v.clone();
    canonical::strip(&mut stripped, canonical::VOLATILE);
    assert!(
        canonical::field_pointers(&stripped, canonical::VOLATILE).is_empty(),
        "a volatile field survived strip"
    );
    let secret = ["password", "secret", "key", "token"];
    let pointers = canonical::field_pointers(&v, &secret);
    let masked = gateway::mask(&v, &pointers);
    for p in &pointers {
        assert!(v.pointer(p).is_some(), "pointer {p:?} points at nothing");
        assert_eq!(
            masked.pointer(p),
            Some(&Value::String(gateway::SECRET_PLACEHOLDER.into())),
            "pointer {p:?} was not masked"
        );
    }
    true
}

/// Fuzz target `gw_kong`; see [`check_gw_kong`].
pub fn gw_kong(data: &[u8]) {
    check_gw_kong(data);
}

/// The Kong importer: `data` is a decK file (YAML or JSON), as `--file` or DB-less `GET /config` give
/// it. The parsed document also stands for the Admin API's answers (a list page, a group's members, a
/// `GET /config` answer, a whole listing for [`kong::admin_ids`]). Returns whether a capture of the
/// file would succeed: it parses, [`kong::from_deck`] accepts it and no two entities share a path.
///
/// A relative `next` link must stay in the workspace. [`kong::from_deck`] must be deterministic, give
/// derivable paths and canonical documents ([`check_capture`]), and [`kong::admin_ids`] must succeed
/// exactly when it does, keyed by its paths. The decK file [`kong::to_deck`] makes of the entities
/// must read back into the same entities, and exporting those gives the same file again.
pub fn check_gw_kong(data: &[u8]) -> bool {
    let Ok(doc) = canonical::parse_json_or_yaml(data) else {
        return false;
    };
    for ws in ["", "/team-a"] {
        if let Some((items, next)) = kong::admin_page(ws, &doc) {
            assert_eq!(Some(&Value::Array(items)), doc.get("data"), "page items");
            let raw_next = doc.get("next").and_then(Value::as_str);
            if let (Some(n), Some(r)) = (&next, raw_next) {
                if r.starts_with('/') {
                    assert!(
                        n.starts_with(&format!("{ws}/")),
                        "next link {r:?} leaves workspace {ws:?}: {n:?}"
                    );
                }
            }
        }
    }
    if let Some(members) = kong::group_members(&doc) {
        assert!(doc.get("data").is_none() && members.len() <= list_len(&doc, "consumers"));
    }
    if let Ok((config, _)) = kong::dbless_config(&doc) {
        let _ = kong::from_deck(&config, &[]);
    }
    let _ = kong::from_deck(&doc, &["fuzz".into()]);
    let entities = match kong::from_deck(&doc, &[]) {
        Ok(e) => e,
        Err(_) => {
            assert!(
                kong::admin_ids(&doc).is_err(),
                "admin_ids accepts what from_deck refuses"
            );
            return false;
        }
    };
    assert_eq!(
        kong::from_deck(&doc, &[]).as_ref(),
        Ok(&entities),
        "from_deck is not deterministic"
    );
    for e in &entities {
        assert!(
            gateway::derived(&e.path).is_some_and(|(_, k)| k == e.key),
            "{}: the path does not give the key {:?}",
            e.path,
            e.key
        );
    }
    let ids = kong::admin_ids(&doc).expect("admin_ids accepts what from_deck accepts");
    let paths: BTreeSet<&str> = entities.iter().map(|e| e.path.as_str()).collect();
    assert!(
        ids.keys().all(|p| paths.contains(p.as_str())),
        "admin_ids names a document from_deck does not make"
    );
    let capture = Capture {
        source: gateway::Source::new("kong", "file:/fuzz/kong.yaml"),
        raw: BTreeMap::from([("kong.yaml".to_string(), data.to_vec())]),
        entities,
    };
    if !check_capture(&capture, "kong/") {
        return false;
    }
    let deck = kong::to_deck(&kind_values(&capture.entities));
    let again = kong::from_deck(&deck, &[]).expect("an exported decK file reads back");
    // The export names the format version where the file did not.
    let mut want = capture.entities.clone();
    for e in want.iter_mut().filter(|e| e.kind == "deck") {
        if let Value::Object(m) = &mut e.value {
            m.entry("_format_version")
                .or_insert_with(|| Value::String("3.0".into()));
        }
    }
    assert_eq!(
        path_values(&again),
        path_values(&want),
        "decK export and import give other entities"
    );
    assert_eq!(
        kong::to_deck(&kind_values(&again)),
        deck,
        "decK export is not stable"
    );
    true
}

fn list_len(v: &Value, field: &str) -> usize {
    v.get(field).and_then(Value::as_array).map_or(0, Vec::len)
}

fn kind_values(es: &[Entity]) -> Vec<(String, Value)> {
    es.iter()
        .map(|e| (e.kind.clone(), e.value.clone()))
        .collect()
}

fn path_values(es: &[Entity]) -> BTreeMap<&str, (&str, &Value)> {
    es.iter()
        .map(|e| (e.path.as_str(), (e.kind.as_str(), &e.value)))
        .collect()
}

/// What must hold of every capture, whatever the gateway: every entity path lies under `prefix` and is
/// made of plain segments; a JSON entity's marks point at fields of its value and a verbatim one's at
/// its lines; and, unless two entities share a path (then returns false, as [`Capture::documents`]
/// refuses it), the documents read back with [`Capture::from_documents`] into the same entities and the
/// same documents. Returns whether the capture could be stored.
pub fn check_capture(capture: &Capture, prefix: &str) -> bool {
    for e in &capture.entities {
        assert!(e.path.starts_with(prefix), "{}: not under {prefix}", e.path);
        assert!(
            e.path
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{}: an empty, `.` or `..` segment",
            e.path
        );
        let marks = e.secrets.iter().chain(&e.personal);
        match &e.text {
            None => {
                for p in marks {
                    assert!(
                        e.value.pointer(p).is_some(),
                        "{}: mark {p:?} points at nothing",
                        e.path
                    );
                }
            }
            Some(t) => {
                let lines = t.split(|&b| b == b'\n').count();
                for p in marks {
                    let ok = p.is_empty()
                        || p.strip_prefix('/')
                            .and_then(|i| i.parse::<usize>().ok())
                            .is_some_and(|i| i < lines);
                    assert!(ok, "{}: mark {p:?} is not one of {lines} lines", e.path);
                }
            }
        }
    }
    let Ok(docs) = capture.documents() else {
        let mut seen = BTreeSet::new();
        assert!(
            !capture.entities.iter().all(|e| seen.insert(&e.path)),
            "documents() refused a capture whose paths are distinct"
        );
        return false;
    };
    for e in &capture.entities {
        if e.text.is_none() {
            assert!(
                docs[&e.path] == canonical::to_bytes(&e.value),
                "{}: not stored canonical",
                e.path
            );
        }
    }
    let back = Capture::from_documents(docs.clone()).expect("the documents of a capture read back");
    assert_eq!(back.source, capture.source, "source read back");
    assert_eq!(back.raw, capture.raw, "raw exports read back");
    let want: BTreeMap<&str, &Entity> = capture
        .entities
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    assert_eq!(
        back.entities.len(),
        want.len(),
        "entities read back: {:?}",
        back.entities.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
    for b in &back.entities {
        let e = want[b.path.as_str()];
        assert_eq!(
            (&b.kind, &b.key, &b.secrets, &b.personal, &b.subject),
            (&e.kind, &e.key, &e.secrets, &e.personal, &e.subject),
            "{}: entry read back",
            b.path
        );
        if e.text.is_none() {
            assert_eq!(b.value, e.value, "{}: value read back", b.path);
        }
    }
    assert!(
        back.documents().expect("documents read back store again") == docs,
        "the documents read back store differently"
    );
    true
}

/// Fuzz target `gw_aws`; see [`check_gw_aws`].
pub fn gw_aws(data: &[u8]) {
    check_gw_aws(data);
}

/// The JSON the AWS importer reads itself (the AWS SDK only signs and sends the requests): `data` as the
/// body of a stage export (`get-export`, OpenAPI or Swagger with the `x-amazon-apigateway-*`
/// extensions) and as a list page (`item`, `position`) of authorizers and of resources with their
/// methods embedded. Returns whether either was accepted.
///
/// An accepted export must be canonical and without `info.version`; a page's items must get unique
/// keys (unless two share key and id), and the resource and method entities made from them must be
/// free of nulls and surrogate ids and read back as a capture does ([`check_capture`]).
pub fn check_gw_aws(data: &[u8]) -> bool {
    let export = match aws::canonical_export(data) {
        Ok((fmt, bytes)) => {
            let v: Value = serde_json::from_slice(&bytes).expect("the export is JSON");
            assert!(
                canonical::to_bytes(&v) == bytes,
                "the stored export is not canonical"
            );
            assert!(
                v.pointer("/info/version").is_none(),
                "info.version was kept"
            );
            assert_eq!(fmt == "openapi", v.get("openapi").is_some(), "format");
            true
        }
        Err(_) => false,
    };
    let Ok(page) = serde_json::from_slice::<Value>(data) else {
        return export;
    };
    let items = match aws::list_items(page) {
        Ok(items) if !items.is_empty() => items,
        _ => return export,
    };
    let (named, names, account_entities) = match aws::keyed(items.clone(), "name", "authorizer") {
        Ok((keyed, names)) => {
            assert_unique_keys(&keyed);
            let keys: BTreeSet<&str> = keyed.iter().map(|(k, _)| k.as_str()).collect();
            for (_, k) in names.iter() {
                assert!(keys.contains(k), "an id maps to a key that is not listed");
            }
            let entities = account_level_entities(&keyed, &items, &names);
            (true, names, entities)
        }
        Err(_) => (false, aws::Names::default(), vec![]),
    };
    let authorizer_names = names;
    let Ok((resources, _)) = aws::keyed(items, "path", "resource") else {
        // The account-level entities alone must pass the capture checks too.
        let capture = Capture {
            source: gateway::Source::new("aws", "aws"),
            raw: BTreeMap::new(),
            entities: account_entities,
        };
        check_capture(&capture, "aws/");
        return export || named;
    };
    assert_unique_keys(&resources);
    let refs = aws::MethodRefs {
        authorizers: &authorizer_names,
        validators: &authorizer_names,
        vpc_links: &authorizer_names,
    };
    let mut entities = aws::resource_entities("aws/rest-apis/fuzz", resources, &refs);
    for e in &entities {
        assert!(!has_null(&e.value), "{}: a null survived", e.path);
        if e.kind == "method" && e.value.is_object() {
            let path = e.value.get("resourcePath").and_then(Value::as_str);
            assert!(
                path.is_some_and(|p| e.key.ends_with(&format!(" {p}"))),
                "{}: resourcePath {path:?}",
                e.path
            );
            for id in ["authorizerId", "requestValidatorId"] {
                if let Some(i) = e.value.get(id).and_then(Value::as_str) {
                    assert!(
                        authorizer_names.get(i).is_none(),
                        "{}: a known {id} was kept",
                        e.path
                    );
                }
            }
        } else if e.kind == "resource" {
            for f in ["id", "parentId", "resourceMethods"] {
                assert!(e.value.get(f).is_none(), "{}: {f} was kept", e.path);
            }
        }
    }
    entities.extend(account_entities);
    let capture = Capture {
        source: gateway::Source::new("aws", "aws"),
        raw: BTreeMap::new(),
        entities,
    };
    check_capture(&capture, "aws/") || export || named
}

/// The keyed items of a page read as API keys, as usage plans (every item of the page a member) and
/// as custom domain names (every item a base path mapping), at most 8 of each: no nulls, no ids (a
/// domain name has none: its name is its key), no key value (the capture here leaves secret values out), member and mapping lists sorted, and no
/// mapping repeating its domain.
fn account_level_entities(
    keyed: &[(String, Value)],
    items: &[Value],
    names: &aws::Names,
) -> Vec<gateway::Entity> {
    let mut out = vec![];
    for (k, v) in keyed.iter().take(8) {
        out.push(aws::api_key_entity(k, v.clone(), names, false));
        out.push(aws::usage_plan_entity(k, v.clone(), items, names, names));
        out.push(aws::domain_name_entity(k, v.clone(), items.to_vec(), names));
    }
    let sorted_by = |list: Option<&Value>, field: &str| {
        list.and_then(Value::as_array).is_none_or(|a| {
            a.windows(2).all(|w| {
                w[0].get(field).and_then(Value::as_str) <= w[1].get(field).and_then(Value::as_str)
            })
        })
    };
    for e in &out {
        assert!(!has_null(&e.value), "{}: a null survived", e.path);
        if e.kind != "domain-name" {
            assert!(e.value.get("id").is_none(), "{}: the id was kept", e.path);
        }
        match e.kind.as_str() {
            "api-key" => {
                assert!(
                    e.value.get("value").is_none(),
                    "{}: the key value was kept",
                    e.path
                );
                assert!(e.secrets.is_empty(), "{}: {:?}", e.path, e.secrets);
            }
            "usage-plan" => {
                let members = e.value.get("apiKeys");
                assert!(sorted_by(members, "name"), "{}: members not sorted", e.path);
                for m in members.and_then(Value::as_array).into_iter().flatten() {
                    assert!(
                        m.as_object()
                            .is_some_and(|o| o.keys().all(|f| f == "name" || f == "type")),
                        "{}: member {m}",
                        e.path
                    );
                }
            }
            _ => {
                let mappings = e.value.get("basePathMappings");
                assert!(
                    sorted_by(mappings, "basePath"),
                    "{}: mappings not sorted",
                    e.path
                );
                for m in mappings.and_then(Value::as_array).into_iter().flatten() {
                    assert!(
                        m.get("domainName").is_none() && m.get("domain_name").is_none(),
                        "{}: a mapping repeats its domain",
                        e.path
                    );
                }
            }
        }
    }
    out
}

/// Keys must be unique, unless two objects share key and id (a service that lists one object twice).
fn assert_unique_keys(keyed: &[(String, Value)]) {
    for w in keyed.windows(2) {
        if w[0].0 == w[1].0 {
            let id = |v: &Value| v.get("id").cloned();
            assert_eq!(
                id(&w[0].1),
                id(&w[1].1),
                "two objects keyed {:?} with different ids",
                w[0].0
            );
        }
    }
}

/// Whether a field anywhere in `v` is null (a null element of a list is a value, kept as it is).
fn has_null(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(|x| x.is_null() || has_null(x)),
        _ => false,
    }
}

/// Fuzz target `gw_caddy`; see [`check_gw_caddy`].
pub fn gw_caddy(data: &[u8]) {
    check_gw_caddy(data);
}

/// The Caddy importer: `data` is a Caddy JSON config as a file gives it, or (starting with `HTTP/`)
/// the admin API's whole answer to `GET /config/`, read as the capture reads it
/// (`caddy::parse_response`, then `caddy::config_body`); the config is split by
/// [`caddy::entities`]. Returns whether a capture would succeed (an answer with status 200 holding a
/// config in which no two routes share an `@id`). An answer's body must be the bytes after its head,
/// as long as its `Content-Length` where it has one. The split must be deterministic and pass
/// [`check_capture`]; the config a restore rebuilds ([`crate::recovery::caddy::join`]) must hold
/// every non-null scalar of the original at the same place and split again into the same entities.
pub fn check_gw_caddy(data: &[u8]) -> bool {
    if !data.starts_with(b"HTTP/") {
        let source = gateway::Source::new("caddy", "file:/fuzz/caddy.json");
        return check_caddy_config(&source, data);
    }
    let Ok(resp) = caddy::parse_response(data.to_vec()) else {
        return false;
    };
    let head_end = data.len() - resp.body.len();
    assert!(
        data.ends_with(&resp.body) && data[..head_end].ends_with(b"\r\n\r\n"),
        "the body is not what follows the head"
    );
    if let Some(n) = resp
        .header("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        assert_eq!(
            resp.body.len(),
            n,
            "the body disagrees with its Content-Length"
        );
    }
    let mut source = gateway::Source::new("caddy", "http://127.0.0.1:2019");
    let server = resp.header("server").map(str::to_string);
    let status = resp.status;
    match caddy::config_body(&mut source, "http://127.0.0.1:2019/config/", resp) {
        Ok(body) => {
            assert_eq!(status, 200, "a config from an answer that was not OK");
            assert_eq!(
                source.version, server,
                "the version is not the Server header"
            );
            check_caddy_config(&source, &body)
        }
        Err(e) => {
            assert_ne!(status, 200);
            assert!(
                e.to_string().contains(&status.to_string()),
                "{e}: no status"
            );
            false
        }
    }
}

/// [`check_gw_caddy`] for a config `data` from `source`.
fn check_caddy_config(source: &gateway::Source, data: &[u8]) -> bool {
    let source = source.clone();
    let Ok(entities) = caddy::entities(&source, data) else {
        return false;
    };
    assert_eq!(
        caddy::entities(&source, data).ok().as_ref(),
        Some(&entities),
        "the split is not deterministic"
    );
    let capture = Capture {
        source: source.clone(),
        raw: BTreeMap::from([("caddy.json".to_string(), data.to_vec())]),
        entities,
    };
    if !check_capture(&capture, "caddy/") {
        return false;
    }
    let config =
        crate::recovery::caddy::join(&capture.entities).expect("a split config joins again");
    let original: Value = serde_json::from_slice(data).expect("the split parsed it");
    assert_eq!(
        scalars(&config),
        scalars(&original),
        "the rebuilt config lost or moved a value"
    );
    let body = serde_json::to_vec(&config).expect("a config serializes");
    let again = caddy::entities(&source, &body).expect("a rebuilt config splits");
    assert_eq!(
        path_values(&again),
        path_values(&capture.entities),
        "the rebuilt config splits into other entities"
    );
    true
}

/// The non-null scalars of `v` by JSON pointer, leaving out `route_keys` (which the split writes
/// into each server, overwriting a field of that name, and a restore removes).
fn scalars(v: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, at: String, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Null => {}
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{at}/{i}"), out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    if k != "route_keys" {
                        let k = k.replace('~', "~0").replace('/', "~1");
                        walk(x, format!("{at}/{k}"), out);
                    }
                }
            }
            x => {
                out.insert(at, x.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}

/// Fuzz target `gw_nginx`; see [`check_gw_nginx`].
pub fn gw_nginx(data: &[u8]) {
    check_gw_nginx(data);
}

/// The nginx and HAProxy importers without the file reading: `data` is a main config file (read as
/// text the way the capture reads it) given to the nginx tokenizer and reference finder, to the
/// HAProxy one, and as a HAProxy crt-list. Returns whether the nginx or the HAProxy reading of it found
/// a file or a line to mark.
///
/// Every reference must be an absolute, normalized path at a line of the text (for nginx, the line
/// holding the directive); directives must come in line order; and the entity of the file, with its
/// lines marked, must mark only lines it has ([`check_capture`]).
pub fn check_gw_nginx(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let base = Path::new("/etc/gw");
    let main = base.join("main.conf");
    let directives = nginx::nginx_directives(&text);
    for w in directives.windows(2) {
        assert!(w[0].line <= w[1].line, "directives out of line order");
    }
    for d in &directives {
        assert!(
            d.line >= 1 && d.line <= lines.len(),
            "directive line {}",
            d.line
        );
    }
    let refs = nginx::nginx_references(&main, &text, base);
    let h = nginx::haproxy_references(&main, &text, base);
    let list = nginx::crt_list_references(&text, &h.crt_base, &h.ca_base);
    for (kind, found, whole) in [
        ("nginx", &refs, true),
        ("haproxy", &h.refs, true),
        ("haproxy", &list, false),
    ] {
        for r in &found.files {
            assert!(
                r.line >= 1 && r.line <= lines.len(),
                "{kind}: reference at line {} of {}",
                r.line,
                lines.len()
            );
            assert!(
                r.path.is_absolute()
                    && r.path
                        .components()
                        .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
                "{kind}: {} is not absolute and normalized",
                r.path.display()
            );
            if kind == "nginx" {
                assert!(
                    lines[r.line - 1].contains(&r.directive),
                    "line {} does not hold `{}`",
                    r.line,
                    r.directive
                );
            }
            // (Not for the crt-list reading, where every line is a reference: the same check again.)
            if r.path.parent().is_some() && whole {
                let e = nginx::file_entity(kind, &r.path, r.role, b"x\n".to_vec(), &[]);
                let c = Capture {
                    source: gateway::Source::new(kind, "file:/etc/gw/main.conf"),
                    raw: BTreeMap::new(),
                    entities: vec![e],
                };
                check_capture(&c, &format!("{kind}/files/"));
            }
        }
        for m in &found.marks {
            assert!(
                m.line >= 1 && m.line <= lines.len(),
                "{kind}: mark at line {}",
                m.line
            );
        }
    }
    for (kind, marks, role) in [
        ("nginx", &refs.marks, "config"),
        ("haproxy", &h.refs.marks, "config"),
        ("nginx", &vec![], "htpasswd"),
    ] {
        let e = nginx::file_entity(kind, &main, role, data.to_vec(), marks);
        let c = Capture {
            source: gateway::Source::new(kind, "file:/etc/gw/main.conf"),
            raw: BTreeMap::new(),
            entities: vec![e],
        };
        assert!(check_capture(&c, &format!("{kind}/files/")), "one file");
    }
    let found = |r: &nginx::References| !r.files.is_empty() || !r.marks.is_empty();
    found(&refs) || found(&h.refs)
}

/// Fuzz target `gw_files`; see [`check_gw_files`].
pub fn gw_files(data: &[u8]) {
    check_gw_files(data);
}

/// The files importer: `data` is a relative path (the first line) and the file's bytes (the rest),
/// classified as the capture classifies each file of a folder. A path that no folder walk gives (empty
/// or hidden segments) is turned away. Returns whether the file was read as a JSON or YAML document
/// (else it is stored verbatim). The result must be deterministic and pass [`check_capture`], and the
/// unrestorable named values must be entities of the capture.
pub fn check_gw_files(data: &[u8]) -> bool {
    let (rel, bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(rel) = std::str::from_utf8(rel) else {
        return false;
    };
    if rel
        .split('/')
        .any(|s| s.is_empty() || s.starts_with('.') || s.contains('\0'))
    {
        return false;
    }
    let classify = || {
        let mut c = Capture {
            source: gateway::Source::new("files", "file:/fuzz"),
            raw: BTreeMap::new(),
            entities: vec![],
        };
        files::classify(&mut c, rel, bytes.to_vec());
        c
    };
    let capture = classify();
    let again = classify();
    assert_eq!(again.entities, capture.entities, "not deterministic");
    assert_eq!(again.raw, capture.raw, "not deterministic");
    assert!(!capture.entities.is_empty(), "a file gave no entity");
    let keys: BTreeSet<&str> = capture.entities.iter().map(|e| e.key.as_str()).collect();
    for k in files::unrestorable(&capture) {
        assert!(keys.contains(k.as_str()), "unrestorable {k:?} is no entity");
    }
    assert!(
        check_capture(&capture, "files/"),
        "one file's entities share a path"
    );
    capture.entities.iter().any(|e| e.text.is_none())
}

/// Fuzz target `gw_manifest`; see [`check_gw_manifest`].
pub fn gw_manifest(data: &[u8]) {
    check_gw_manifest(data);
}

/// The manifest (`gateway.json`) of a gateway snapshot, as a restore, an export or an erasure reads it:
/// [`Manifest::parse`]. Returns whether it parsed. A parsed manifest must serialize to one that parses
/// equal, give every listed entity back from [`Manifest::entry`], and a capture with its entities must
/// pass [`check_capture`] (store, read back, store again to the same documents).
pub fn check_gw_manifest(data: &[u8]) -> bool {
    let Ok(m) = Manifest::parse(data) else {
        return false;
    };
    let json = serde_json::to_vec(&m).expect("a manifest serializes");
    assert_eq!(
        Manifest::parse(&json).expect("a serialized manifest parses"),
        m,
        "manifest round trip"
    );
    for (path, e) in &m.entities {
        assert_eq!(m.entry(path).as_ref(), Some(e), "{path}: entry");
        let _ = m.entry(&format!("{path}/x.json"));
    }
    for dir in m.kinds.keys() {
        let _ = m.entry(&format!("{dir}/a.json"));
    }
    // The scope of a Kong source (its workspace and select tags, which a restore keeps to) reads
    // back through the function a capture writes it with.
    if m.source.kind == "kong" {
        let (ws, tags) = kong::scope_parts(m.source.scope.as_deref());
        if let Ok(s) = kong::scope(ws.as_deref(), &tags) {
            assert_eq!(
                kong::scope_parts(s.as_deref()),
                (ws, tags),
                "the Kong scope {s:?} reads back as another"
            );
        }
    }
    // The listed entities, as a capture would hold them (stored documents, not raw exports or the
    // manifest itself).
    let entities: Vec<Entity> = m
        .entities
        .iter()
        .filter(|(p, _)| !p.starts_with("raw/") && p.as_str() != gateway::MANIFEST)
        .map(|(path, e)| {
            let mut value = serde_json::json!({ "path": path });
            for p in e.secrets.iter().chain(&e.personal) {
                if let Some(x) = value.pointer_mut(p) {
                    *x = Value::String("marked".into());
                }
            }
            let marks_resolve = e
                .secrets
                .iter()
                .chain(&e.personal)
                .all(|p| value.pointer(p).is_some());
            Entity {
                path: path.clone(),
                kind: e.kind.clone(),
                key: e.key.clone(),
                value: if marks_resolve { value } else { Value::Null },
                secrets: if marks_resolve {
                    e.secrets.clone()
                } else {
                    vec![]
                },
                personal: if marks_resolve {
                    e.personal.clone()
                } else {
                    vec![]
                },
                subject: e.subject.clone(),
                text: None,
            }
        })
        .filter(|e| {
            e.path
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..")
        })
        .collect();
    let capture = Capture {
        source: m.source.clone(),
        raw: BTreeMap::new(),
        entities,
    };
    check_capture(&capture, "");
    true
}
