//! The committed repository `tests/fixtures/repo-v1` was written by the first release of format
//! version 1 (two snapshots of sample gateway configs, the second with delta blobs; a key-file slot and
//! a password slot). Every later build must still open, check and restore it byte for byte, and must
//! detect damage to a copy of it. Never regenerate it once a release has shipped: a failure here means
//! the format changed. (It was made with the CLI: `init --key-file`, `key add --new-password-file`,
//! `backup` of `examples/kong/kong.yaml`, `examples/aws/orders-api-openapi.json` and a small file, one
//! edit of two rate limits in the Kong file, `backup` again; `expected.json` holds SHA-256 of each
//! version's files.)

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use util::{assert_code, describe, gatevault, s, stdout};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1")
}

/// A private copy of the fixture repository (tests must never write to the committed one).
fn copy(tmp: &Path) -> PathBuf {
    let dst = tmp.join("repo");
    util::copy_dir(&fixture().join("repo"), &dst);
    dst
}

fn files_under(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, hex::encode(Sha256::digest(fs::read(&p).unwrap())));
            }
        }
    }
    out
}

fn run(tmp: &Path, repo: &Path, creds: &[&str], args: &[&str]) -> std::process::Output {
    gatevault(tmp)
        .args(["-r", s(repo), "--cache-dir", s(&tmp.join("cache"))])
        .args(creds)
        .args(args)
        .output()
        .expect("run gatevault")
}

#[test]
fn v1_fixture_opens_checks_and_restores_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = copy(tmp.path());
    let key = fixture().join("key");
    let key_args = ["--key-file", s(&key)];
    let expected: Value =
        serde_json::from_slice(&fs::read(fixture().join("expected.json")).unwrap()).unwrap();

    let out = run(tmp.path(), &repo, &key_args, &["check", "--read-data"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out).lines().last(),
        Some("status: Success"),
        "{}",
        describe(&out)
    );

    for label in ["v1", "v2"] {
        let e = &expected[label];
        let target = tmp.path().join(label);
        let out = run(
            tmp.path(),
            &repo,
            &key_args,
            &[
                "restore",
                e["snapshot_prefix"].as_str().unwrap(),
                "--target",
                s(&target),
            ],
        );
        assert_code(&out, 0);
        let src = e["source"].as_str().unwrap().trim_start_matches('/');
        let got = files_under(&target.join(src));
        let want: BTreeMap<String, String> = e["files"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(got, want, "snapshot {label} restores byte for byte");
    }

    // The password slot opens too; the wrong password does not (exit 12).
    let pw = fixture().join("password");
    let out = run(
        tmp.path(),
        &repo,
        &["--password-file", s(&pw)],
        &["snapshots", "--json"],
    );
    assert_code(&out, 0);
    let snaps: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().map(|a| a.len()), Some(2));
    assert_eq!(snaps[0]["tags"]["Environment"], "prod");
    assert_eq!(snaps[1]["label"], "v2");
    let bad = tmp.path().join("bad");
    fs::write(&bad, "not the password\n").unwrap();
    let out = run(
        tmp.path(),
        &repo,
        &["--password-file", s(&bad)],
        &["snapshots"],
    );
    assert_code(&out, 12);
}

#[test]
fn every_single_byte_flip_in_a_fixture_pack_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = copy(tmp.path());
    let key = fixture().join("key");
    let mut packs: Vec<PathBuf> = Vec::new();
    for d in fs::read_dir(repo.join("data")).unwrap() {
        for p in fs::read_dir(d.unwrap().path()).unwrap() {
            packs.push(p.unwrap().path());
        }
    }
    packs.sort();
    assert!(packs.len() >= 3, "the fixture has data and tree packs");
    // A flip at 16 positions spread over each pack (blobs and header): check --read-data names the pack.
    for pack in &packs {
        let orig = fs::read(pack).unwrap();
        for k in 0..16 {
            let pos = k * (orig.len() - 1) / 15;
            let mut b = orig.clone();
            b[pos] ^= 0x20;
            fs::write(pack, &b).unwrap();
            let out = run(
                tmp.path(),
                &repo,
                &["--key-file", s(&key)],
                &["check", "--read-data"],
            );
            assert_code(&out, 1);
            let name = pack.file_name().unwrap().to_string_lossy();
            assert!(
                stdout(&out).contains(name.as_ref()),
                "flip at {pos} of {name}\n{}",
                describe(&out)
            );
        }
        fs::write(pack, &orig).unwrap();
    }
}
