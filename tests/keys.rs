//! End-to-end tests of master-key rotation (`key rotate`), re-encryption (`rewrite --reencrypt`) and
//! the retirement of old key epochs (`--retire`): which epoch each stored file is sealed under (read
//! from the envelope header bytes of the files themselves), what other key slots become, who may do
//! it, what the audit log records and that its chain verifies after each of them (its entries are
//! re-sealed under their own names), and both commands stopped at every durable step, the audit log's
//! re-seal and append included.
//!
//! Run with `cargo test --release --test keys` (after `source scripts/env`).

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use util::*;

// ------------------------------------------------------------------------------------ helpers

/// The key epoch of an envelope: `version u8 | cipher u8 | epoch u32 LE | ...`.
#[track_caller]
fn epoch_of(env: &[u8]) -> u32 {
    assert!(env.len() >= 6 && env[0] == 1, "not an envelope");
    u32::from_le_bytes(env[2..6].try_into().unwrap())
}

/// The epoch of a pack's header envelope (found through the 4-byte trailer).
fn pack_header_epoch(path: &Path) -> u32 {
    let b = fs::read(path).unwrap();
    let n = b.len();
    let hl = u32::from_le_bytes(b[n - 4..].try_into().unwrap()) as usize;
    epoch_of(&b[n - 4 - hl..])
}

/// The epochs of a pack: its header's and every blob's (offsets from `cat pack`).
fn pack_epochs(r: &Repo, path: &Path) -> BTreeSet<u32> {
    let b = fs::read(path).unwrap();
    let mut out = BTreeSet::from([pack_header_epoch(path)]);
    for blob in r.cat_pack(&file_name(path))["blobs"].as_array().unwrap() {
        out.insert(epoch_of(&b[blob["offset"].as_u64().unwrap() as usize..]));
    }
    out
}

/// The epoch of every single-envelope object file of `folder` (index, snapshots, records).
fn object_epochs(r: &Repo, folder: &str) -> BTreeMap<String, u32> {
    if !r.path.join(folder).is_dir() {
        return BTreeMap::new();
    }
    r.objects(folder)
        .iter()
        .map(|p| (file_name(p), epoch_of(&fs::read(p).unwrap())))
        .collect()
}

/// Every epoch found in the repository's files: pack headers and blobs (blobs only with
/// `with_blobs`: one `cat pack` per pack), index files, snapshots, records and audit entries.
fn all_epochs(r: &Repo, with_blobs: bool) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for p in r.pack_files() {
        if with_blobs {
            out.extend(pack_epochs(r, &p));
        } else {
            out.insert(pack_header_epoch(&p));
        }
    }
    for folder in ["index", "snapshots", "records", "audit"] {
        out.extend(object_epochs(r, folder).into_values());
    }
    out
}

/// A repository listing without the audit log (which records refusals and key changes).
fn without_audit(listing: BTreeMap<String, Option<Vec<u8>>>) -> BTreeMap<String, Option<Vec<u8>>> {
    listing
        .into_iter()
        .filter(|(k, _)| !k.starts_with("audit/"))
        .collect()
}

/// Every audit entry as `audit --json` prints it, by seq.
fn audit_entries(r: &Repo) -> Vec<Value> {
    r.run_json(["audit"]).as_array().unwrap().clone()
}

/// The entries appended since the log had `before` entries.
fn audit_since(r: &Repo, before: usize) -> Vec<Value> {
    audit_entries(r).split_off(before)
}

/// `audit verify` passes: the chain is intact and holds the head this machine remembers. Returns the
/// number of entries.
#[track_caller]
fn assert_audit_intact(r: &Repo) -> u64 {
    let v = r.run_json(["audit", "verify"]);
    assert_eq!(v["status"], "intact", "{v}");
    v["entries"].as_u64().unwrap()
}

/// The epoch of the newest audit entry's file.
fn last_audit_epoch(r: &Repo) -> u32 {
    let files = r.objects("audit");
    epoch_of(&fs::read(files.last().expect("an audit entry")).unwrap())
}

/// The names in an entry's `objects[type][added|removed]`.
fn touched(entry: &Value, t: &str, how: &str) -> Vec<String> {
    entry["objects"][t][how]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// What identifies a snapshot's content whatever its id: everything but `id`, `short_id` and
/// `parent`, sorted.
fn fingerprints(r: &Repo) -> Vec<String> {
    let mut v: Vec<String> = r
        .snapshots()
        .into_iter()
        .map(|mut s| {
            let o = s.as_object_mut().unwrap();
            for k in ["id", "short_id", "parent"] {
                o.remove(k);
            }
            s.to_string()
        })
        .collect();
    v.sort();
    v
}

/// A repository with 64 KiB packs and a folder of gateway documents; `versions` records the copy of
/// the folder each backup saw, by snapshot time.
struct History {
    r: Repo,
    src: PathBuf,
    versions: BTreeMap<String, PathBuf>,
    rng: Rng,
}

impl History {
    fn new() -> Self {
        let r = Repo::new();
        r.run_ok(["init", "-q", "--pack-size", "64K"]);
        let src = r.root().join("src");
        write_gateway_tree(&src, 7, 60);
        Self {
            r,
            src,
            versions: BTreeMap::new(),
            rng: Rng::new(23),
        }
    }

    /// Changes a fifth of the documents and one incompressible file, and backs up.
    fn backup(&mut self) {
        let v = self.versions.len();
        for i in (0..60).filter(|i| (i + v).is_multiple_of(5)) {
            write(
                &self
                    .src
                    .join("services")
                    .join(format!("changed-{}", i % 3))
                    .join(format!("route-{i:04}.json")),
                gateway_route(&mut self.rng, i),
            );
        }
        write(
            &self.src.join(format!("blob-{v}.bin")),
            self.rng.bytes(40_000),
        );
        if v > 0 {
            let _ = fs::remove_file(self.src.join(format!("blob-{}.bin", v - 1)));
        }
        let summary = self.r.backup(&[&self.src], &[]);
        let id = summary["snapshot_id"].as_str().unwrap().to_string();
        let time = self
            .r
            .snapshots()
            .into_iter()
            .find(|s| s["id"] == id.as_str())
            .map(|s| s["time"].as_str().unwrap().to_string())
            .unwrap();
        let copy = self.r.root().join(format!("v{v}"));
        copy_dir(&self.src, &copy);
        self.versions.insert(time, copy);
    }
}

/// Every file snapshot of `r` restores byte-identical to the copy of its version (found by time);
/// all versions are there.
#[track_caller]
fn assert_restores(r: &Repo, src: &Path, versions: &BTreeMap<String, PathBuf>) {
    let mut seen = 0;
    for s in r.snapshots() {
        let Some(copy) = versions.get(s["time"].as_str().unwrap()) else {
            continue;
        };
        let id = s["id"].as_str().unwrap();
        let target = r.root().join(format!("restore-{}", &id[..8]));
        let _ = fs::remove_dir_all(&target);
        r.restore(id, &target, &[]);
        assert_tree_eq(&restored(&target, src), copy);
        fs::remove_dir_all(&target).unwrap();
        seen += 1;
    }
    assert_eq!(seen, versions.len(), "every version has its snapshot");
}

/// `check --read-data` reports Success.
#[track_caller]
fn assert_check_passes(r: &Repo) {
    let j = r.run_json(["check", "--no-record", "--read-data"]);
    assert_eq!(j["status"], "Success", "{j}");
}

/// A command with only the key file `key` as credential.
fn with_key(r: &Repo, key: &Path, args: &[&str]) -> std::process::Output {
    r.cmd_no_creds()
        .args(["--key-file", s(key)])
        .args(args)
        .output()
        .unwrap()
}

/// A command with only the password file `pw` as credential.
fn with_password(r: &Repo, pw: &Path, args: &[&str]) -> std::process::Output {
    r.cmd_no_creds()
        .args(["--password-file", s(pw)])
        .args(args)
        .output()
        .unwrap()
}

/// Writes a password file (first line).
fn password_file(r: &Repo, name: &str, password: &str) -> PathBuf {
    let p = r.root().join(name);
    fs::write(&p, format!("{password}\n")).unwrap();
    p
}

/// A repository with one snapshot of a generated gateway tree (`seed`) and, beside its key-file slot,
/// a `backup` password slot whose password file `name` holds `password`.
/// Returns the repository, the source folder and the password file.
fn with_password_slot(seed: u64, name: &str, password: &str) -> (Repo, PathBuf, PathBuf) {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, seed, 20);
    r.backup(&[&src], &[]);
    let pw = password_file(&r, name, password);
    r.run_ok([
        "key",
        "add",
        "--new-password-file",
        s(&pw),
        "--role",
        "backup",
    ]);
    (r, src, pw)
}

/// `key list --json` as seen with the repository's own credentials.
fn key_list(r: &Repo) -> Vec<Value> {
    r.run_json(["key", "list"]).as_array().unwrap().clone()
}

/// The ids of the key slot files.
fn slot_ids(r: &Repo) -> BTreeSet<String> {
    r.objects("keys").iter().map(|p| file_name(p)).collect()
}

/// Adds a record (a restore drill of an nginx snapshot into a temporary folder) when nginx is
/// installed; returns whether it did.
fn add_drill_record(r: &Repo) -> bool {
    if !have_all(&["nginx"]) {
        return false;
    }
    let ng = r.root().join("nginx");
    let conf_d = ng.join("conf.d");
    write(
        &ng.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{\n  include {}/*.conf;\n}}\n",
            conf_d.display()
        ),
    );
    write(
        &conf_d.join("api.conf"),
        format!(
            "server {{ listen 127.0.0.1:{}; location / {{ return 200 ok; }} }}\n",
            free_port()
        ),
    );
    let main = ng.join("nginx.conf");
    r.run_json(["backup", "--gateway", "nginx", "--file", s(&main)]);
    let path = format!("nginx:file:{}", main.display());
    let reports = r.root().join("reports");
    let d = r.run_json(["drill", "--path", &path, "--report-dir", s(&reports)]);
    assert_eq!(d["status"], "Success", "{d}");
    assert_eq!(r.objects("records").len(), 1);
    true
}

// ------------------------------------------------------------------------------------ rotation

#[test]
fn rotate_seals_new_data_under_the_new_epoch_while_old_data_stays_readable() {
    let mut h = History::new();
    for _ in 0..3 {
        h.backup();
    }
    let r = &h.r;
    assert_eq!(all_epochs(r, true), BTreeSet::from([0]));
    let second = r.root().join("second-key");
    r.run_ok(["key", "add", "--new-key-file", s(&second)]);
    let before_packs: BTreeSet<PathBuf> = r.pack_files().into_iter().collect();
    let before_listing = r.listing();
    let logged = audit_entries(r).len();

    let out = r.run_code(code::FAILURE, ["key", "rotate"]);
    assert!(
        stderr(&out).contains("--retire-other-slots"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        without_audit(r.listing()),
        without_audit(before_listing.clone()),
        "a refusal changes nothing but the audit log"
    );
    let added = audit_since(r, logged);
    assert_eq!(
        added.len(),
        1,
        "the refused rotation is recorded: {added:?}"
    );
    assert_eq!(added[0]["command"], "key rotate");
    assert!(
        added[0]["result"].as_str().unwrap().starts_with("failed: "),
        "{}",
        added[0]
    );
    assert_eq!(last_audit_epoch(r), 0);

    let rep = r.run_json(["key", "rotate", "--also-key-file", s(&second)]);
    // Its entry is sealed under the new epoch and names the slots it replaced.
    let added = audit_since(r, logged + 1);
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(
        (&added[0]["command"], &added[0]["result"]),
        (&Value::from("key rotate"), &Value::from("success"))
    );
    assert_eq!(
        touched(&added[0], "key", "removed").len(),
        2,
        "{}",
        added[0]
    );
    assert_eq!(touched(&added[0], "key", "added").len(), 2, "{}", added[0]);
    assert_eq!(
        last_audit_epoch(r),
        1,
        "the rotation's entry is under epoch 1"
    );
    assert_audit_intact(r);
    assert_eq!(rep["current_epoch"], 1, "{rep}");
    assert_eq!(rep["epochs"], serde_json::json!([0, 1]), "{rep}");
    assert_eq!(rep["rewrapped"].as_array().unwrap().len(), 2, "{rep}");
    assert_eq!(rep["retired"].as_array().unwrap().len(), 0, "{rep}");
    let config: Value = serde_json::from_str(&r.run_ok(["cat", "config"])).unwrap();
    assert_eq!(
        config["master_key"],
        serde_json::json!({"current_epoch": 1, "epochs": [0, 1]}),
        "{config}"
    );
    for slot in key_list(r) {
        assert_eq!(slot["current_epoch"], 1, "{slot}");
        assert_eq!(slot["epochs"], serde_json::json!([0, 1]), "{slot}");
        assert_eq!(slot["up_to_date"], true, "{slot}");
    }
    // `key list` and `cat config` only read: they are not recorded.
    assert_eq!(audit_entries(r).len(), logged + 2);
    // Stored data is untouched by a rotation (earlier audit entries too).
    let after_listing = r.listing();
    for (name, bytes) in &before_listing {
        if !name.starts_with("keys/") && !name.starts_with("locks/") {
            assert_eq!(after_listing.get(name), Some(bytes), "{name} unchanged");
        }
    }

    h.backup();
    h.backup();
    let r = &h.r;
    for p in r.pack_files() {
        let want = if before_packs.contains(&p) { 0 } else { 1 };
        assert_eq!(
            pack_epochs(r, &p),
            BTreeSet::from([want]),
            "{}",
            p.display()
        );
    }
    let snaps = object_epochs(r, "snapshots");
    assert_eq!(snaps.values().filter(|e| **e == 0).count(), 3, "{snaps:?}");
    assert_eq!(snaps.values().filter(|e| **e == 1).count(), 2, "{snaps:?}");
    let index = object_epochs(r, "index");
    assert!(index.values().any(|e| *e == 0) && index.values().any(|e| *e == 1));
    assert_check_passes(r);
    assert_restores(r, &h.src, &h.versions);
    assert_audit_intact(r);

    // The other slot, rewrapped, opens and reads what was sealed under the new epoch.
    let target = r.root().join("restore-second");
    let out = with_key(
        r,
        &second,
        &["restore", "-q", "latest", "--target", s(&target)],
    );
    assert_code(&out, code::OK);
    let newest = h.versions.values().last().unwrap();
    assert_tree_eq(&restored(&target, &h.src), newest);
}

#[test]
fn rotate_refuses_to_leave_other_slots_on_the_old_key_unless_told_to_retire_them() {
    let (r, src, pw) = with_password_slot(3, "backup-password", "hunter2 hunter2");
    let reader = r.root().join("reader-key");
    r.run_ok([
        "key",
        "add",
        "--new-key-file",
        s(&reader),
        "--role",
        "restore",
    ]);
    let id_of = |out: std::process::Output| -> String {
        assert_code(&out, code::OK);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["current"] == true)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let pw_slot = id_of(with_password(&r, &pw, &["--json", "key", "list"]));
    let reader_slot = id_of(with_key(&r, &reader, &["--json", "key", "list"]));
    let listing = without_audit(r.listing());
    let logged = audit_entries(&r).len();

    // Both other slots are named, and nothing changes but the audit log, which records the refusal.
    let out = r.run_code(code::FAILURE, ["key", "rotate"]);
    let err = stderr(&out);
    assert!(
        err.contains(&pw_slot[..8]) && err.contains(&reader_slot[..8]),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(without_audit(r.listing()), listing);
    // With the password of one, only the other is named.
    let out = r.run_code(
        code::FAILURE,
        ["key", "rotate", "--also-password-file", s(&pw)],
    );
    let err = stderr(&out);
    assert!(
        err.contains(&reader_slot[..8]) && !err.contains(&pw_slot[..8]),
        "{err}"
    );
    assert_eq!(without_audit(r.listing()), listing);
    let refused = audit_since(&r, logged);
    assert_eq!(refused.len(), 2, "{refused:?}");
    for e in &refused {
        assert_eq!(e["command"], "key rotate", "{e}");
        let result = e["result"].as_str().unwrap();
        assert!(
            result.starts_with("failed: ") && result.contains(&reader_slot[..8]),
            "{e}"
        );
        assert!(e["objects"].as_object().unwrap().is_empty(), "{e}");
    }
    // The password file of the other slot is masked in the recorded command line.
    assert!(
        !refused[1]["args"].to_string().contains(s(&pw)),
        "{}",
        refused[1]
    );

    let rep = r.run_json([
        "key",
        "rotate",
        "--also-password-file",
        s(&pw),
        "--retire-other-slots",
    ]);
    let retired: Vec<&str> = rep["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(retired, vec![reader_slot.as_str()], "{rep}");
    let rewrapped: Vec<&str> = rep["rewrapped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["old"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(rewrapped.len(), 2, "{rep}");
    assert!(rewrapped.contains(&pw_slot.as_str()), "{rep}");

    // The retired slot is gone and its key file opens nothing; the old slots are replaced.
    let ids = slot_ids(&r);
    assert_eq!(ids.len(), 2, "{ids:?}");
    for old in [&pw_slot, &reader_slot] {
        assert!(!ids.contains(old.as_str()), "{old} removed");
    }
    assert_code(&with_key(&r, &reader, &["snapshots"]), code::WRONG_PASSWORD);
    // The password slot keeps its role and backs up under the new epoch; the admin key reads it.
    let out = with_password(&r, &pw, &["--json", "key", "list"]);
    assert_code(&out, code::OK);
    let slots: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine = slots
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap();
    assert_eq!(mine["role"], "backup", "{mine}");
    assert_eq!(mine["epochs"], serde_json::json!([0, 1]), "{mine}");
    write(&src.join("new.json"), "{\"route\": \"new\"}\n");
    let out = with_password(&r, &pw, &["backup", "-q", s(&src)]);
    assert_code(&out, code::OK);
    let snaps = object_epochs(&r, "snapshots");
    assert_eq!(
        snaps.values().copied().collect::<BTreeSet<u32>>(),
        BTreeSet::from([0, 1])
    );
    let t = r.root().join("restore");
    r.restore("latest", &t, &[]);
    assert_tree_eq(&restored(&t, &src), &src);
    assert_check_passes(&r);
    assert_audit_intact(&r);
    // The backup made with the rewrapped password slot is recorded under its slot and the new epoch.
    let last = audit_entries(&r).pop().unwrap();
    assert_eq!(
        (&last["command"], &last["role"]),
        (&Value::from("backup"), &Value::from("backup"))
    );
    assert_eq!(last_audit_epoch(&r), 1);
}

#[test]
fn backup_and_restore_keys_may_not_rotate_or_re_encrypt() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 5, 10);
    r.backup(&[&src], &[]);
    let mut keys = Vec::new();
    for role in ["backup", "restore"] {
        let k = r.root().join(format!("{role}-key"));
        r.run_ok(["key", "add", "--new-key-file", s(&k), "--role", role]);
        keys.push((role, k));
    }
    r.run_ok(["key", "rotate", "--retire-other-slots"]);
    assert_eq!(slot_ids(&r).len(), 1);
    for (role, _) in &keys {
        let k = r.root().join(format!("{role}-key-2"));
        r.run_ok(["key", "add", "--new-key-file", s(&k), "--role", role]);
    }
    let listing = r.listing();
    let logged = audit_entries(&r).len();
    for role in ["backup", "restore"] {
        let k = r.root().join(format!("{role}-key-2"));
        for args in [
            &["key", "rotate", "--retire-other-slots"][..],
            &["rewrite", "--reencrypt"],
            &["rewrite", "--reencrypt", "--retire"],
        ] {
            let out = with_key(&r, &k, args);
            assert_code(&out, code::NOT_ALLOWED);
            assert!(
                stderr(&out).contains(&format!("role {role}")),
                "{}",
                describe(&out)
            );
        }
        // A dry run only reads.
        let out = with_key(&r, &k, &["--json", "rewrite", "--reencrypt", "--dry-run"]);
        assert_code(&out, code::OK);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["left_on_old_epochs"].as_u64().unwrap() > 0, "{v}");
    }
    assert_eq!(
        without_audit(r.listing()),
        without_audit(listing),
        "refusals and dry runs change nothing but the audit log"
    );
    // Each refusal is recorded with the role that tried; the dry runs are not.
    let refused = audit_since(&r, logged);
    let got: Vec<(String, String)> = refused
        .iter()
        .map(|e| {
            assert_eq!(e["exit"], 13, "{e}");
            assert!(
                e["result"].as_str().unwrap().starts_with("refused: "),
                "{e}"
            );
            (
                e["role"].as_str().unwrap().to_string(),
                e["command"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["backup", "restore"]
        .iter()
        .flat_map(|role| {
            ["key rotate", "rewrite", "rewrite"].map(|c| (role.to_string(), c.to_string()))
        })
        .collect();
    assert_eq!(got, want);
    assert_audit_intact(&r);
    // The options for other slots go with --retire only.
    let out = r.run(["rewrite", "--reencrypt", "--retire-other-slots"]);
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("--retire"), "{}", describe(&out));
}

// ------------------------------------------------------------------------------------ re-encryption

#[test]
fn reencrypt_leaves_nothing_under_the_old_epoch_and_retire_makes_it_unreadable() {
    let mut h = History::new();
    for _ in 0..4 {
        h.backup();
    }
    let with_record = add_drill_record(&h.r);
    eprintln!("with a drill record: {with_record}");
    h.r.run_ok(["key", "rotate"]);
    h.backup();
    h.backup();
    let r = &h.r;
    // An old snapshot file, kept aside.
    let (old_name, old_bytes) = {
        let p = r
            .objects("snapshots")
            .into_iter()
            .find(|p| epoch_of(&fs::read(p).unwrap()) == 0)
            .unwrap();
        (file_name(&p), fs::read(&p).unwrap())
    };
    let prints = fingerprints(r);
    let current_before: BTreeSet<String> = object_epochs(r, "snapshots")
        .into_iter()
        .filter(|(_, e)| *e == 1)
        .map(|(n, _)| n)
        .collect();
    let old_snapshot_names: BTreeSet<String> = object_epochs(r, "snapshots")
        .into_iter()
        .filter(|(_, e)| *e == 0)
        .map(|(n, _)| n)
        .collect();
    // The audit entries: those before the rotation under epoch 0, the rotation's and later under 1.
    let audit_before = object_epochs(r, "audit");
    let old_audit: Vec<String> = audit_before
        .iter()
        .filter(|(_, e)| **e == 0)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!old_audit.is_empty() && audit_before.values().any(|e| *e == 1));
    assert_audit_intact(r);
    let head_before = r.run_ok(["audit", "head"]).trim().to_string();

    let listing = r.listing();
    let dry = r.run_json(["rewrite", "--reencrypt", "--dry-run"]);
    assert_eq!(
        r.listing(),
        listing,
        "a dry run changes nothing and is not recorded"
    );
    assert!(dry["left_on_old_epochs"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["before"]["blob"]["0"].as_u64().unwrap() > 0, "{dry}");
    let old_snapshots = dry["before"]["snapshot"]["0"].as_u64().unwrap();
    assert_eq!(old_snapshots, 4 + u64::from(with_record), "{dry}");
    assert_eq!(dry["before"]["audit"]["0"], old_audit.len(), "{dry}");
    assert_eq!(
        dry["before"]["audit"]["1"],
        audit_before.len() - old_audit.len(),
        "{dry}"
    );

    let logged = audit_before.len();
    let rep = r.run_json(["rewrite", "--reencrypt"]);
    assert_eq!(rep["left_on_old_epochs"], 0, "{rep}");
    assert_eq!(
        rep["audit"]["resealed"].as_array().unwrap().len(),
        old_audit.len(),
        "{rep}"
    );
    // The audit entries keep their names and contents (so their hashes): the chain, and the head
    // remembered before, verify with the key reduced to the current epoch later on.
    let audit_after = object_epochs(r, "audit");
    for name in audit_before.keys() {
        assert_eq!(audit_after.get(name), Some(&1), "{name}");
    }
    assert_audit_intact(r);
    assert_code(
        &r.run(["audit", "verify", "--head", &head_before]),
        code::OK,
    );
    // The rewrite's own entry names the snapshots it replaced and the ones replacing them, and the
    // audit entries it re-sealed; no copy of an entry is left in records/.
    let entry = audit_since(r, logged).pop().unwrap();
    assert_eq!(
        (&entry["command"], &entry["result"]),
        (&Value::from("rewrite"), &Value::from("success")),
        "{entry}"
    );
    let removed: BTreeSet<String> = touched(&entry, "snapshot", "removed").into_iter().collect();
    assert_eq!(removed, old_snapshot_names, "{entry}");
    let added: BTreeSet<String> = touched(&entry, "snapshot", "added").into_iter().collect();
    let now: BTreeSet<String> = r.snapshot_ids().into_iter().collect();
    assert_eq!(added.len(), old_snapshot_names.len(), "{entry}");
    assert!(added.is_subset(&now), "{entry}");
    let resealed: Vec<String> = touched(&entry, "audit", "removed");
    assert_eq!(resealed, old_audit, "{entry}");
    assert_eq!(touched(&entry, "audit", "added"), old_audit, "{entry}");
    assert_eq!(
        touched(&entry, "record", "added").len(),
        old_audit.len() + usize::from(with_record),
        "one copy per audit entry, and the re-sealed drill record: {entry}"
    );
    assert_eq!(
        r.objects("records").len(),
        usize::from(with_record),
        "no copy is left"
    );
    assert_eq!(
        rep["objects_reencrypted"]["snapshot"], old_snapshots,
        "{rep}"
    );
    assert_eq!(
        rep["objects_reencrypted"]["record"],
        u64::from(with_record),
        "{rep}"
    );
    assert!(rep["packs_reencrypted"].as_u64().unwrap() > 0, "{rep}");
    assert!(
        rep["index_files_reencrypted"].as_u64().unwrap() > 0,
        "{rep}"
    );
    // The first file snapshot has no parent; the three after it had old parents, which moved too.
    assert_eq!(rep["parents_remapped"], 3, "{rep}");

    assert_eq!(all_epochs(r, true), BTreeSet::from([1]));
    assert_eq!(r.objects("index").len(), 1, "one index supersedes the rest");
    assert_eq!(fingerprints(r), prints, "same snapshots, times and tags");
    let ids: BTreeSet<String> = r.snapshot_ids().into_iter().collect();
    for snap in r.snapshots() {
        let id = snap["id"].as_str().unwrap();
        match snap["parent"].as_str() {
            // A snapshot written after the rotation is not rewritten for its parent's sake: when
            // that was an old snapshot, it keeps naming the old id (a hint for change detection).
            Some(p) if current_before.contains(id) => {
                assert_eq!(ids.contains(p), current_before.contains(p), "{snap}")
            }
            // The rewritten ones name their parent's new id.
            Some(p) => assert!(ids.contains(p), "{snap}"),
            None => {}
        }
    }
    assert!(!ids.contains(&old_name));
    assert_check_passes(r);
    assert_restores(r, &h.src, &h.versions);
    if with_record {
        assert_eq!(r.run_json(["drills"]).as_array().unwrap().len(), 1);
    }

    // Nothing left to do.
    let again = r.run_json(["rewrite", "--reencrypt"]);
    assert_eq!(again["packs_reencrypted"], 0, "{again}");
    assert_eq!(again["objects_reencrypted"]["snapshot"], 0, "{again}");
    assert_eq!(again["audit"]["resealed"], serde_json::json!([]), "{again}");

    // Retire: the master key keeps epoch 1 only.
    let ret = r.run_json(["rewrite", "--reencrypt", "--retire"]);
    assert_eq!(ret["retired"]["epochs"], serde_json::json!([1]), "{ret}");
    let config: Value = serde_json::from_str(&r.run_ok(["cat", "config"])).unwrap();
    assert_eq!(config["master_key"]["epochs"], serde_json::json!([1]));
    let slots = key_list(r);
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0]["epochs"], serde_json::json!([1]), "{slots:?}");
    // The retirement's own entry was written with the reduced key, and the whole log reads with it.
    let entry = audit_entries(r).pop().unwrap();
    assert_eq!(
        (&entry["command"], &entry["result"]),
        (&Value::from("rewrite"), &Value::from("success")),
        "{entry}"
    );
    assert_eq!(touched(&entry, "key", "added").len(), 1, "{entry}");
    assert_eq!(all_epochs(r, false), BTreeSet::from([1]));
    assert_audit_intact(r);
    assert_code(
        &r.run(["audit", "verify", "--head", &head_before]),
        code::OK,
    );

    // The old snapshot put back is refused by everyone: its epoch is gone.
    fs::write(r.path.join("snapshots").join(&old_name), &old_bytes).unwrap();
    let out = r.run_code(code::FAILURE, ["cat", "snapshot", &old_name]);
    assert!(stderr(&out).contains("no such epoch"), "{}", describe(&out));
    let j = r.run_json_code(code::FAILURE, ["check", "--no-record"]);
    assert_eq!(j["status"], "Failed", "{j}");
    let errors = j["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{j}");
    assert!(errors[0].as_str().unwrap().contains(&old_name[..8]), "{j}");
    let out = r.run_code(code::FAILURE, ["rewrite", "--reencrypt"]);
    assert!(stderr(&out).contains("no such epoch"), "{}", describe(&out));
    // Everything current still checks and restores.
    fs::remove_file(r.path.join("snapshots").join(&old_name)).unwrap();
    assert_check_passes(r);
    assert_restores(r, &h.src, &h.versions);
    assert_audit_intact(r);
}

#[test]
fn reencrypt_and_retire_stopped_at_every_durable_step_check_and_finish_on_rerun() {
    let mut h = History::new();
    for _ in 0..3 {
        h.backup();
    }
    add_drill_record(&h.r);
    h.r.run_ok(["key", "rotate"]);
    h.backup();
    let prints = fingerprints(&h.r);
    let records = h.r.objects("records").len();
    let entries = assert_audit_intact(&h.r);
    let head = h.r.run_ok(["audit", "head"]).trim().to_string();
    let args = ["rewrite", "--reencrypt", "--retire"];
    let mut points = 0;
    // Stops inside the audit log's re-seal: with a copy of an entry and the entry, and with the copy
    // alone (between the removal of the entry and its new write).
    let (mut with_copy, mut copy_alone) = (0, 0);
    for at in 1.. {
        let (c, crashed) = h.r.crashed_copy(&args, at);
        if !crashed {
            break;
        }
        points += 1;
        // Interrupted: the repository checks and no snapshot is lost (one may be there twice).
        let j = c.run_json(["check", "--no-record"]);
        assert_eq!(j["status"], "Success", "after step {at}: {j}");
        let now: BTreeSet<String> = fingerprints(&c).into_iter().collect();
        assert_eq!(
            now,
            prints.iter().cloned().collect(),
            "after step {at}: every snapshot is there"
        );
        // The audit log verifies, through the copy of an entry being re-sealed if need be, and still
        // holds the head seen before.
        let v = c.run_json(["audit", "verify", "--head", &head]);
        assert_eq!(v["status"], "intact", "after step {at}: {v}");
        assert!(
            v["entries"].as_u64().unwrap() >= entries,
            "after step {at}: {v}"
        );
        let pending = v["pending"].as_array().unwrap();
        assert!(
            pending.len() <= 1,
            "after step {at}: one entry at a time: {v}"
        );
        if let Some(p) = pending.first() {
            with_copy += 1;
            assert!(
                j["hints"].to_string().contains("rewrite --reencrypt"),
                "after step {at}: {j}"
            );
            if p["entry_stored"] == false {
                copy_alone += 1;
                // Another command appending now goes after the last entry: when the entry being
                // re-sealed was the last one, it puts it back from its copy and chains onto it (it
                // must not take its name); the re-run then finishes as well.
                let d = c.copy();
                let seq = p["seq"].as_u64().unwrap();
                let last = v["entries"].as_u64().unwrap();
                let out = d
                    .cmd()
                    .args(["key", "add", "--new-key-file"])
                    .arg(d.root().join("k"))
                    .output()
                    .unwrap();
                assert_code(&out, code::OK);
                assert_eq!(
                    d.path.join("audit").join(format!("{seq:064x}")).is_file(),
                    seq == last,
                    "after step {at}: entry {seq} of {last} put back only when it was the last"
                );
                let v = d.run_json(["audit", "verify", "--head", &head]);
                assert_eq!(v["status"], "intact", "after step {at} and an append: {v}");
                assert_eq!(v["entries"], last + 1, "after step {at} and an append: {v}");
                let out = d
                    .cmd()
                    .args(["rewrite", "--reencrypt", "--retire", "--retire-other-slots"])
                    .output()
                    .unwrap();
                assert_code(&out, code::OK);
                assert_eq!(
                    all_epochs(&d, false),
                    BTreeSet::from([1]),
                    "after step {at}"
                );
                assert_eq!(d.objects("records").len(), records, "after step {at}");
                assert_audit_intact(&d);
            }
        }
        // A re-run finishes the job.
        c.run_ok(args);
        assert_eq!(fingerprints(&c), prints, "after step {at} and a re-run");
        assert_eq!(
            all_epochs(&c, false),
            BTreeSet::from([1]),
            "after step {at}"
        );
        let dry = c.run_json(["rewrite", "--reencrypt", "--dry-run"]);
        assert_eq!(dry["left_on_old_epochs"], 0, "after step {at}: {dry}");
        let config: Value = serde_json::from_str(&c.run_ok(["cat", "config"])).unwrap();
        assert_eq!(
            config["master_key"]["epochs"],
            serde_json::json!([1]),
            "after step {at}"
        );
        assert_eq!(slot_ids(&c).len(), 1, "after step {at}");
        assert_eq!(
            c.objects("records").len(),
            records,
            "after step {at}: no copy of an audit entry is left"
        );
        assert_check_passes(&c);
        assert_restores(&c, &h.src, &h.versions);
        // The log holds every entry from before, the head seen before, and reads with the key
        // reduced to the current epoch.
        let v = c.run_json(["audit", "verify", "--head", &head]);
        assert_eq!(v["status"], "intact", "after step {at} and a re-run: {v}");
        assert!(
            v["pending"].as_array().unwrap().is_empty(),
            "after step {at}: {v}"
        );
        let last = audit_entries(&c).pop().unwrap();
        assert_eq!(
            (&last["command"], &last["result"]),
            (&Value::from("rewrite"), &Value::from("success")),
            "after step {at}: {last}"
        );
    }
    eprintln!(
        "rewrite --reencrypt --retire stopped at each of {points} durable steps, {with_copy} of them \
         with a copy of an audit entry ({copy_alone} with the copy alone)"
    );
    assert!(points >= 20, "only {points} durable steps");
    assert!(
        with_copy >= 2 && copy_alone >= 1,
        "stops inside the audit re-seal: {with_copy} with a copy, {copy_alone} with the copy alone"
    );
}

#[test]
fn rotate_stopped_at_every_durable_step_completes_on_rerun_without_losing_new_data() {
    let (r, src, pw) = with_password_slot(9, "other-password", "open sesame");
    let args = ["key", "rotate", "--also-password-file", s(&pw)];
    let mut points = 0;
    for at in 1.. {
        let (c, crashed) = r.crashed_copy(&args, at);
        if !crashed {
            break;
        }
        points += 1;
        let j = c.run_json(["check", "--no-record"]);
        assert_eq!(j["status"], "Success", "after step {at}: {j}");
        // Both keys still open; the other one backs up (under whichever master key it finds).
        let changed = c.root().join("src");
        copy_dir(&src, &changed);
        write(
            &changed.join("after-crash.json"),
            format!("{{\"step\": {at}}}\n"),
        );
        let out = with_password(&c, &pw, &["backup", "-q", s(&changed)]);
        assert_code(&out, code::OK);
        // The re-run completes the rotation (or, when the crash came after its last step, rotates
        // once more), and whatever was written in between stays readable. Its audit entry is
        // written under the new epoch and chains onto the backup's, which the other slot may have
        // sealed under the new epoch already (so the entries are counted as files: the key in use
        // before the re-run cannot read that one).
        let logged = c.objects("audit").len();
        let rep = c.run_json(args);
        let want = if at < 4 { 1 } else { 2 };
        assert_eq!(rep["current_epoch"], want, "after step {at}: {rep}");
        assert_eq!(rep["resumed"], at < 4, "after step {at}: {rep}");
        assert_eq!(slot_ids(&c).len(), 2, "after step {at}");
        for slot in key_list(&c) {
            assert_eq!(slot["current_epoch"], want, "after step {at}: {slot}");
        }
        let added = audit_since(&c, logged);
        assert_eq!(added.len(), 1, "after step {at}: {added:?}");
        assert_eq!(
            (&added[0]["command"], &added[0]["result"]),
            (&Value::from("key rotate"), &Value::from("success")),
            "after step {at}"
        );
        assert_eq!(last_audit_epoch(&c), want, "after step {at}");
        assert_audit_intact(&c);
        assert_code(&with_password(&c, &pw, &["snapshots"]), code::OK);
        assert_check_passes(&c);
        let t = c.root().join("restore");
        c.restore("latest", &t, &[]);
        assert_tree_eq(&restored(&t, &changed), &changed);
    }
    assert_eq!(
        points, 5,
        "two slots written, two removed, and the audit entry written"
    );
}
