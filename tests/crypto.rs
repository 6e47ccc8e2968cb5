//! Attacks on the repository's cryptography, through the command line and the library: a wrong key
//! or password, a damaged object, every byte of a pack header flipped, a ciphertext moved to another
//! name, a blob presented as a snapshot or as a blob of the other type (type confusion), and a rolled
//! back snapshot list. Each is rejected with its own error, and the tests assert that the messages are
//! distinct. (Known-answer tests of BLAKE3, the AEADs and Argon2id, and the nonce test, are unit tests
//! beside the code in `src/crypto/`.)
//!
//! Run with `cargo test --release --test crypto` (after `source scripts/env`).

mod util;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use gatevault::backend::{local::LocalBackend, Backend};
use gatevault::format::{BlobType, PackEntry};
use gatevault::id::{BlobId, PackId};
use gatevault::repo::{Credentials, Repository};
use gatevault::Error;
use serde_json::Value;

use util::*;

/// The distinct phrase of each rejection; every message must contain its own and no other.
const WRONG_KEY: &str = "wrong password or key file";
const DAMAGED: &str = "authentication failed";
const WRONG_NAME: &str = "stored under the wrong name";
const WRONG_TYPE: &str = "authenticates as";
const ROLLBACK: &str = "rollback detected";
const PHRASES: [&str; 5] = [WRONG_KEY, DAMAGED, WRONG_NAME, WRONG_TYPE, ROLLBACK];

/// Asserts that `msg` carries `phrase` and none of the other phrases.
#[track_caller]
fn assert_only(msg: &str, phrase: &str) {
    assert!(msg.contains(phrase), "expected {phrase:?} in:\n{msg}");
    for p in PHRASES {
        if p != phrase {
            assert!(!msg.contains(p), "{p:?} must not appear in:\n{msg}");
        }
    }
}

/// A repository with two snapshots of a gateway tree (file content in data blobs and in trees).
fn repo_with_snapshots() -> (Repo, Vec<String>) {
    let r = Repo::init();
    let src = r.root().join("gw");
    write_gateway_tree(&src, 3, 12);
    write(&src.join("certs/ca.bin"), Rng::new(1).bytes(20_000));
    let a = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&src.join("certs/ca.bin"), Rng::new(2).bytes(20_000));
    let b = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    (r, vec![a, b])
}

fn open_lib(r: &Repo) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&r.path));
    let key = fs::read(r.key.as_ref().unwrap()).unwrap();
    let creds = Credentials {
        password: None,
        key_file: Some(gatevault::crypto::keyslot::parse_key_file(&key, "key").unwrap()),
    };
    Repository::open(backend, &creds, None).unwrap()
}

fn err_text(out: &std::process::Output) -> String {
    assert!(
        !stderr(out).contains("panicked"),
        "no panic\n{}",
        describe(out)
    );
    format!("{}{}", stdout(out), stderr(out))
}

fn random_name(seed: u64) -> String {
    hex::encode(Rng::new(seed).bytes(32))
}

#[test]
fn a_wrong_key_file_or_password_is_refused_as_such() {
    let (r, _) = repo_with_snapshots();
    let other = r.root().join("other-key");
    fs::write(&other, hex::encode(Rng::new(9).bytes(32))).unwrap();
    let out = r.cmd_with_key(&other).args(["snapshots"]).output().unwrap();
    assert_code(&out, code::WRONG_PASSWORD);
    assert_only(&err_text(&out), WRONG_KEY);

    let p = Repo::init_with_password("correct horse", false);
    let wrong = p.root().join("wrong-password");
    fs::write(&wrong, "battery staple\n").unwrap();
    let out = p
        .cmd_no_creds()
        .arg("--password-file")
        .arg(&wrong)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, code::WRONG_PASSWORD);
    assert_only(&err_text(&out), WRONG_KEY);
    p.run_ok(["snapshots"]);
}

#[test]
fn a_damaged_snapshot_fails_authentication_naming_it() {
    let (r, ids) = repo_with_snapshots();
    let path = r.path.join("snapshots").join(&ids[0]);
    let mut b = fs::read(&path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    fs::write(&path, b).unwrap();
    let out = r.run(["cat", "snapshot", &ids[0]]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert_only(&msg, DAMAGED);
    assert!(msg.contains(&ids[0]), "{msg}");
    // The other snapshot is unaffected.
    r.run_ok(["cat", "snapshot", &ids[1]]);
}

#[test]
fn every_byte_of_a_pack_header_flipped_is_rejected() {
    let (r, _) = repo_with_snapshots();
    let repo = open_lib(&r);
    let mut checked = 0;
    for p in r.pack_files() {
        let id = PackId::from_hex(&file_name(&p)).unwrap();
        let bytes = fs::read(&p).unwrap();
        assert!(gatevault::pack::read_header(repo.keys(), &id, &bytes).is_ok());
        let n = bytes.len();
        let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        // The header envelope and the length that follows it.
        for i in n - 4 - hlen..n {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let e = gatevault::pack::read_header(repo.keys(), &id, &b)
                    .expect_err("a flipped header byte is rejected");
                assert!(
                    matches!(e, Error::IntegrityMismatch { .. }),
                    "byte {i}: {e}"
                );
                assert!(e.to_string().contains(&id.to_hex()), "{e}");
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "{checked} flips");
}

#[test]
fn a_snapshot_or_index_file_copied_to_another_name_is_rejected_as_misplaced() {
    let (r, ids) = repo_with_snapshots();
    let copy = random_name(11);
    fs::copy(
        r.path.join("snapshots").join(&ids[0]),
        r.path.join("snapshots").join(&copy),
    )
    .unwrap();
    let out = r.run(["cat", "snapshot", &copy]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert_only(&msg, WRONG_NAME);
    assert!(msg.contains(&copy) && msg.contains(&ids[0]), "{msg}");

    let index = r.objects("index");
    let icopy = random_name(12);
    fs::copy(&index[0], r.path.join("index").join(&icopy)).unwrap();
    let out = r.run(["cat", "index", &icopy]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert_only(&msg, WRONG_NAME);
    assert!(
        msg.contains(&icopy) && msg.contains(&file_name(&index[0])),
        "{msg}"
    );
    // check reports both, each by name.
    let out = r.run(["check", "--no-record"]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert!(
        msg.contains(&format!("snapshot {copy} is {WRONG_NAME}")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("index file {icopy} is {WRONG_NAME}")),
        "{msg}"
    );
}

/// The envelope of data blob `blob` cut out of its pack.
fn blob_envelope(r: &Repo, pack: &Path, entry: &Value) -> Vec<u8> {
    let bytes = fs::read(pack).unwrap();
    let off = entry["offset"].as_u64().unwrap() as usize;
    let len = entry["length"].as_u64().unwrap() as usize;
    let _ = r;
    bytes[off..off + len].to_vec()
}

#[test]
fn a_data_blob_presented_as_a_snapshot_or_a_tree_is_rejected_as_the_wrong_type() {
    let (r, ids) = repo_with_snapshots();
    let blobs = r.file_blobs(&ids[0], &r.root().join("gw/certs/ca.bin"));
    let (pack, entry) = r.find_data_blob(&blobs[0]);
    // As a snapshot, under the blob's id.
    fs::write(
        r.path.join("snapshots").join(&blobs[0]),
        blob_envelope(&r, &pack, &entry),
    )
    .unwrap();
    let out = r.run(["cat", "snapshot", &blobs[0]]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert_only(&msg, WRONG_TYPE);
    assert!(
        msg.contains("is not a snapshot") && msg.contains("data blob"),
        "{msg}"
    );

    // As a tree: an index or pack header entry that calls the data blob a tree.
    let repo = open_lib(&r);
    let pack_id = PackId::from_hex(&file_name(&pack)).unwrap();
    let e = PackEntry {
        blob_type: BlobType::Tree,
        id: BlobId::from_hex(&blobs[0]).unwrap(),
        offset: entry["offset"].as_u64().unwrap() as u32,
        length: entry["length"].as_u64().unwrap() as u32,
        raw_length: entry["raw_length"].as_u64().unwrap() as u32,
        base: None,
    };
    let env = blob_envelope(&r, &pack, &entry);
    let err = gatevault::pack::open_blob(repo.keys(), &pack_id, &e, &env).unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
    assert_only(&err.to_string(), WRONG_TYPE);
    assert!(err.to_string().contains("not a tree blob"), "{err}");
    // Read as what it is, it opens.
    let data = PackEntry {
        blob_type: BlobType::Data,
        ..e
    };
    gatevault::pack::open_blob(repo.keys(), &pack_id, &data, &env).unwrap();
    // Damaged instead of retyped: an authentication failure, not a type error.
    let mut bad = env.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = gatevault::pack::open_blob(repo.keys(), &pack_id, &e, &bad).unwrap_err();
    assert!(matches!(err, Error::IntegrityMismatch { .. }), "{err}");
    assert_only(&err.to_string(), DAMAGED);
}

#[test]
fn a_rolled_back_snapshot_list_is_detected_by_a_client_that_saw_the_newer_one() {
    let (r, ids) = repo_with_snapshots();
    let src = r.root().join("gw");
    let old = r.root().join("snapshots-then");
    copy_dir(&r.path.join("snapshots"), &old);
    write(&src.join("plugins/new.json"), "{\"x\":1}");
    let newest = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    r.run_ok(["check", "--no-record"]);

    // A legitimate removal is recorded in the audit log: no alarm.
    r.run_ok(["forget", &ids[0]]);
    r.run_ok(["check", "--no-record"]);

    // The attacker puts back the older snapshot list (which also lacks the newest snapshot).
    let folder = r.path.join("snapshots");
    fs::remove_dir_all(&folder).unwrap();
    copy_dir(&old, &folder);
    let out = r.run(["check", "--no-record"]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert!(msg.contains(ROLLBACK), "{msg}");
    assert!(msg.contains(&newest[..8]), "{msg}");
    for p in [WRONG_KEY, DAMAGED, WRONG_NAME, WRONG_TYPE] {
        assert!(!msg.contains(p), "{p:?} in {msg}");
    }
    // It keeps being reported until the snapshot is back.
    assert_code(&r.run(["check", "--no-record"]), code::FAILURE);

    // A client without that memory (another cache) cannot know: the limit of the design.
    let fresh = r.root().join("other-cache");
    let out = r
        .cmd_no_creds()
        .arg("--key-file")
        .arg(r.key.as_ref().unwrap())
        .arg("--cache-dir")
        .arg(&fresh)
        .args(["check", "--no-record"])
        .output()
        .unwrap();
    assert!(!err_text(&out).contains(ROLLBACK), "{}", describe(&out));
}

#[test]
fn the_newest_snapshot_deleted_is_a_rollback() {
    let (r, ids) = repo_with_snapshots();
    r.run_ok(["check", "--no-record"]);
    fs::remove_file(r.path.join("snapshots").join(&ids[1])).unwrap();
    let out = r.run(["check", "--no-record"]);
    assert_code(&out, code::FAILURE);
    let msg = err_text(&out);
    assert!(
        msg.contains(ROLLBACK) && msg.contains(&ids[1][..8]),
        "{msg}"
    );
    // Snapshots written by this machine are remembered without a check in between.
    let src = r.root().join("gw");
    write(&src.join("plugins/more.json"), "{}");
    let id = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(r.path.join("snapshots").join(&id)).unwrap();
    let msg = err_text(&r.run(["check", "--no-record"]));
    assert!(msg.contains(&id[..8]), "{msg}");
}
