//! `gatevault copy`: snapshots copied between repositories with different keys, ciphers and
//! passwords restore byte-identical, keep their metadata and first origin, deduplicate against what the
//! destination holds, and survive an interruption at every durable step.

mod util;

use std::path::Path;

use serde_json::Value;
use util::{
    assert_code, assert_tree_eq, code, s, stderr, write, write_gateway_tree, Repo, Rng, Runner,
};

/// `copy --json` from `src` into `dst` (with `dst` as `-r`), which must succeed.
#[track_caller]
fn copy(dst: &Repo, src: &Repo, extra: &[&str]) -> Value {
    let out = copy_cmd(dst, src, extra).arg("--json").output().unwrap();
    assert_code(&out, code::OK);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The command `gatevault -r DST ... copy --from-repo SRC <src credentials> EXTRA`.
fn copy_cmd(dst: &Repo, src: &Repo, extra: &[&str]) -> assert_cmd::Command {
    let mut c = dst.cmd();
    c.args(["copy", "--from-repo", s(&src.path)]);
    c.args(from_creds(src));
    c.args(extra);
    c
}

fn from_creds(src: &Repo) -> Vec<String> {
    match (&src.key, &src.password) {
        (Some(k), _) => vec!["--from-key-file".into(), s(k).into()],
        (None, Some(p)) => vec!["--from-password-file".into(), s(p).into()],
        _ => panic!("the source has no credentials"),
    }
}

fn ids(v: &Value, field: &str, side: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .iter()
        .map(|c| c[side].as_str().unwrap().to_string())
        .collect()
}

fn by_id(r: &Repo) -> std::collections::BTreeMap<String, Value> {
    r.snapshots()
        .into_iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s))
        .collect()
}

/// A source tree of gateway documents and one larger file of several chunks.
fn source_tree(root: &Path, seed: u64) {
    write_gateway_tree(root, seed, 60);
    write(
        &root.join("bulk/blob.bin"),
        Rng::new(seed).bytes(600 * 1024),
    );
}

/// Changes a few documents and a few bytes in the middle of the large file.
fn change(root: &Path, step: u64) {
    let routes = root.join("services/orders/routes");
    for f in util::read_dir_sorted(&routes).iter().take(2) {
        let mut v = std::fs::read(f).unwrap();
        v.extend_from_slice(format!("\n{{\"step\": {step}}}\n").as_bytes());
        write(f, v);
    }
    let big = root.join("bulk/blob.bin");
    let mut v = std::fs::read(&big).unwrap();
    let at = 300 * 1024 + step as usize * 1000;
    v[at..at + 16].copy_from_slice(&Rng::new(step).bytes(16));
    write(&big, v);
}

/// A source with `n` snapshots of a changing tree; returns it and the tree.
fn history(n: u64, tags: &[&str]) -> (Repo, std::path::PathBuf) {
    let a = Repo::init();
    let src = a.root().join("src");
    source_tree(&src, 41);
    for i in 0..n {
        if i > 0 {
            change(&src, i);
        }
        let mut extra = vec![];
        if let Some(t) = tags.get(i as usize) {
            extra = vec!["--tag", t];
        }
        extra.extend(["--label", "v", "--description", "nightly"]);
        a.backup(&[&src], &extra);
    }
    (a, src)
}

/// A second repository with a password, AES-256-GCM and a key of its own.
fn other_repo() -> Repo {
    let b = Repo::new();
    let mut b = b;
    let pw = b.root().join("password");
    std::fs::write(&pw, "another password\n").unwrap();
    b.password = Some(pw);
    b.key = None;
    b.run_ok([
        "init",
        "-q",
        "--cipher",
        "aes-256-gcm",
        "--kdf-memory-mib",
        "8",
        "--kdf-iterations",
        "1",
    ]);
    b
}

#[track_caller]
fn assert_checks(r: &Repo, what: &str) {
    let j = r.run_json(["check", "--read-data", "--no-record"]);
    assert_eq!(j["status"], "Success", "{what}: {j}");
}

/// Restores `a_id` from `a` and `b_id` from `b` and compares the two trees.
#[track_caller]
fn assert_same_restore(a: &Repo, a_id: &str, b: &Repo, b_id: &str) {
    let (ta, tb) = (
        a.scratch(&format!("ra-{a_id}")),
        b.scratch(&format!("rb-{b_id}")),
    );
    a.restore(a_id, &ta, &[]);
    b.restore(b_id, &tb, &[]);
    assert_tree_eq(&ta, &tb);
}

#[test]
fn copy_all_into_another_cipher_and_password_restores_identically_and_runs_once() {
    let (a, src) = history(3, &[]);
    let b = other_repo();
    let before_a = a.objects("audit").len();
    let rep = copy(&b, &a, &[]);
    assert_eq!(rep["from"], a.repo_id());
    assert_eq!(rep["to"], b.repo_id());
    let sources = ids(&rep, "copied", "source");
    let targets = ids(&rep, "copied", "target");
    assert_eq!(sources, a.snapshot_ids(), "every snapshot, oldest first");
    assert!(rep["blobs_copied"].as_u64().unwrap() > 60, "{rep}");
    assert!(rep["bytes_added"].as_u64().unwrap() > 600 * 1024, "{rep}");
    assert_checks(&b, "after the copy");

    let (sa, sb) = (by_id(&a), by_id(&b));
    assert_eq!(sb.len(), 3);
    for (i, (x, y)) in sources.iter().zip(&targets).enumerate() {
        assert_same_restore(&a, x, &b, y);
        let (o, c) = (&sa[x], &sb[y]);
        for f in [
            "time",
            "hostname",
            "username",
            "paths",
            "tags",
            "label",
            "description",
            "summary",
            "program_version",
        ] {
            assert_eq!(o[f], c[f], "snapshot {i}: {f}");
        }
        assert_ne!(o["tree"], c["tree"], "tree ids are keyed per repository");
        assert_eq!(c["origin"]["repository"], a.repo_id());
        assert_eq!(c["origin"]["snapshot"], x.as_str());
        // The parent of a copy is the copy of the parent.
        match i {
            0 => assert!(c.get("parent").is_none() || c["parent"].is_null(), "{c}"),
            _ => assert_eq!(c["parent"], targets[i - 1].as_str(), "snapshot {i}"),
        }
    }
    // The latest restores to the backed-up files themselves.
    let t = b.scratch("latest");
    b.restore("latest", &t, &[]);
    assert_tree_eq(&src, &util::restored(&t, &src));

    // The destination's audit log records the copy; the source's does not change.
    let log = b.run_json(["audit"]);
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["command"], "copy", "{last}");
    assert_eq!(last["result"], "success");
    assert_eq!(
        last["objects"]["snapshot"]["added"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(last["details"]["copy"]["from"], a.repo_id(), "{last}");
    assert_eq!(last["details"]["copy"]["copied"], rep["copied"], "{last}");
    assert_eq!(a.objects("audit").len(), before_a);

    // A second run copies nothing and writes nothing but its audit entry.
    let listing = b.listing();
    let again = copy(&b, &a, &[]);
    assert_eq!(ids(&again, "copied", "source").len(), 0, "{again}");
    assert_eq!(ids(&again, "already_present", "target"), targets);
    assert_eq!(again["blobs_copied"], 0);
    let now = b.listing();
    let changed: Vec<&String> = now
        .keys()
        .filter(|k| {
            listing.get(*k) != now.get(*k) && !k.starts_with("audit/") && !k.starts_with("locks/")
        })
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
}

#[test]
fn copies_a_subset_by_filter_or_id_and_a_dry_run_writes_nothing() {
    let (a, _) = history(4, &["env=prod", "env=test", "env=prod", "env=test"]);
    let all = a.snapshot_ids();
    let b = Repo::init();
    // A dry run says what it would copy and changes nothing.
    let listing = b.listing();
    let dry = copy(&b, &a, &["--dry-run", "--tag", "env=prod"]);
    assert_eq!(dry["dry_run"], true);
    let would: Vec<&str> = dry["would_copy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(would, [all[0].as_str(), all[2].as_str()]);
    assert!(dry["blobs_copied"].as_u64().unwrap() > 0, "{dry}");
    let now = b.listing();
    assert!(
        now.iter()
            .all(|(k, v)| k.starts_with("locks/") || listing.get(k) == Some(v)),
        "a dry run wrote to the destination"
    );
    assert!(b.snapshot_ids().is_empty());

    // By tag.
    let rep = copy(&b, &a, &["--tag", "env=prod"]);
    assert_eq!(
        ids(&rep, "copied", "source"),
        [all[0].clone(), all[2].clone()]
    );
    // By id prefix and `latest` (with --to-repo naming the destination instead of -r).
    let mut c = util::gatevault(b.root());
    c.args(["--cache-dir", s(&b.cache)]);
    c.args(["--key-file", s(b.key.as_ref().unwrap())]);
    c.args([
        "--json",
        "copy",
        "--to-repo",
        s(&b.path),
        "--from-repo",
        s(&a.path),
    ]);
    c.args(from_creds(&a));
    c.args([&all[1][..10], "latest"]);
    let out = c.output().unwrap();
    assert_code(&out, code::OK);
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ids(&rep, "copied", "source"),
        [all[1].clone(), all[3].clone()]
    );
    assert_eq!(b.snapshot_ids().len(), 4);
    assert_checks(&b, "after the subsets");
    // A snapshot the source lacks is named.
    let out = copy_cmd(&b, &a, &["deadbeef"]).output().unwrap();
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("snapshot deadbeef not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_second_snapshot_uploads_only_what_changed_and_keeps_deltas() {
    let (a, _) = history(2, &[]);
    let sa = a.snapshots();
    let b = Repo::init();
    let first = copy(&b, &a, &[sa[0]["id"].as_str().unwrap()]);
    assert_eq!(ids(&first, "copied", "source").len(), 1);
    let second = copy(&b, &a, &[sa[1]["id"].as_str().unwrap()]);
    assert_eq!(ids(&second, "copied", "source").len(), 1);
    // The same blobs are new as in the source's second backup: the changed chunks and folders.
    assert_eq!(
        second["blobs_copied"], sa[1]["summary"]["blobs_added"],
        "{second}"
    );
    assert!(second["blobs_present"].as_u64().unwrap() > 0, "{second}");
    let (st_a, st_b) = (a.run_json(["stats"]), b.run_json(["stats"]));
    assert_eq!(st_a["unique_blobs"], st_b["unique_blobs"]);
    assert_eq!(st_a["logical_size"], st_b["logical_size"]);
    // Stored as compactly as in the source: the changed blobs are deltas there, and here against
    // the copies of the same bases (stored whole, they would take about ten times as much).
    let (x, y) = (
        sa[1]["summary"]["data_added_packed"].as_u64().unwrap(),
        second["bytes_added"].as_u64().unwrap(),
    );
    assert!(y <= x + x / 4 + 512, "source {x} bytes, copy {y} bytes");
    assert!(
        second["bytes_added"].as_u64().unwrap() < first["bytes_added"].as_u64().unwrap() / 4,
        "{first} {second}"
    );
    assert_same_restore(
        &a,
        sa[1]["id"].as_str().unwrap(),
        &b,
        &ids(&second, "copied", "target")[0],
    );
    assert_checks(&b, "after two copies");
}

#[test]
fn a_copy_of_a_copy_keeps_the_first_origin_and_does_not_come_back() {
    let (a, _) = history(2, &[]);
    let b = other_repo();
    let c = Repo::init();
    copy(&b, &a, &[]);
    let rep = copy(&c, &b, &[]);
    assert_eq!(ids(&rep, "copied", "source").len(), 2);
    let a_ids = a.snapshot_ids();
    for (i, snap) in c.snapshots().iter().enumerate() {
        assert_eq!(snap["origin"]["repository"], a.repo_id());
        assert_eq!(snap["origin"]["snapshot"], a_ids[i].as_str());
    }
    // A already holds these backups (their origins are its own snapshots): nothing comes back.
    let back = copy(&a, &c, &[]);
    assert_eq!(ids(&back, "copied", "source").len(), 0, "{back}");
    assert_eq!(ids(&back, "already_present", "target"), a_ids);
    // C has the backups B has: copying B into C again copies nothing either.
    let again = copy(&c, &b, &[]);
    assert_eq!(ids(&again, "copied", "source").len(), 0, "{again}");
    assert_checks(&c, "the copy of a copy");
    assert_same_restore(&a, &a_ids[1], &c, &c.snapshot_ids()[1]);
}

#[test]
fn gateway_snapshots_keep_their_source_so_diff_and_export_work_in_the_copy() {
    let a = Repo::init();
    let dir = a.scratch("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("kong.yaml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kong/kong.yaml"),
    )
    .unwrap();
    for version in [text.clone(), text.replace("minute: 300", "minute: 450")] {
        std::fs::write(&f, version).unwrap();
        a.run_ok([
            "backup",
            "-q",
            "--gateway",
            "kong",
            "--tag",
            "Environment=prod",
            "--file",
            s(&f),
        ]);
    }
    let b = other_repo();
    let rep = copy(&b, &a, &[]);
    let (x, y) = (ids(&rep, "copied", "source"), ids(&rep, "copied", "target"));
    assert_eq!(y.len(), 2);
    let (sa, sb) = (by_id(&a), by_id(&b));
    assert!(sa[&x[1]]["source"].is_object());
    assert_eq!(sa[&x[1]]["source"], sb[&y[1]]["source"]);
    let da = a.run_json(["diff", &x[0], &x[1]]);
    let db = b.run_json(["diff", &y[0], &y[1]]);
    assert!(!da["entities"].as_array().unwrap().is_empty(), "{da}");
    assert_eq!(da["entities"], db["entities"]);
    for (r, id) in [(&a, &x[1]), (&b, &y[1])] {
        let out = r.scratch(&format!("export-{}", &id[..8]));
        std::fs::create_dir_all(&out).unwrap();
        r.run_ok(["export", id, "--format", "deck", "-o", s(&out)]);
    }
    let read_one = |r: &Repo, id: &str| {
        let d = r.root().join(format!("export-{}", &id[..8]));
        let files = util::read_dir_sorted(&d);
        assert_eq!(files.len(), 1);
        std::fs::read(&files[0]).unwrap()
    };
    assert_eq!(read_one(&a, &x[1]), read_one(&b, &y[1]));
    assert_checks(&b, "gateway copies");
}

#[test]
fn refuses_a_wrong_source_password_the_same_repository_and_a_restore_key() {
    let (a, _) = history(1, &[]);
    let b = other_repo();
    // Wrong source key: named as the source.
    let wrong = a.root().join("wrong-key");
    std::fs::write(&wrong, "11".repeat(32)).unwrap();
    let out = b
        .cmd()
        .args([
            "copy",
            "--from-repo",
            s(&a.path),
            "--from-key-file",
            s(&wrong),
        ])
        .output()
        .unwrap();
    assert_code(&out, code::WRONG_PASSWORD);
    assert!(
        stderr(&out).contains("source repository"),
        "{}",
        stderr(&out)
    );
    // No source credentials at all.
    let out = b
        .cmd()
        .args(["copy", "--from-repo", s(&a.path)])
        .output()
        .unwrap();
    assert_code(&out, code::WRONG_PASSWORD);
    assert!(
        stderr(&out).contains("--from-password-file"),
        "{}",
        stderr(&out)
    );
    // The same repository under two names.
    let out = copy_cmd(&a, &a, &[]).output().unwrap();
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("same repository"), "{}", stderr(&out));
    // A restore key may read the source but not write the destination; the refusal is logged there.
    let restore_key = b.add_key("restore");
    let out = b
        .cmd_with_key(&restore_key)
        .args(["copy", "--from-repo", s(&a.path)])
        .args(from_creds(&a))
        .output()
        .unwrap();
    assert_code(&out, code::NOT_ALLOWED);
    let log = b.run_json(["audit"]);
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["command"], "copy");
    assert!(
        last["result"].as_str().unwrap().starts_with("refused"),
        "{last}"
    );
    assert!(b.snapshot_ids().is_empty());
    // A backup key may copy.
    let backup_key = b.add_key("backup");
    let out = b
        .cmd_with_key(&backup_key)
        .args(["copy", "--from-repo", s(&a.path)])
        .args(from_creds(&a))
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert_eq!(b.snapshot_ids().len(), 1);
}

#[test]
fn interrupted_at_every_durable_step_the_destination_checks_and_a_rerun_finishes() {
    let a = Repo::init();
    let src = a.root().join("src");
    write_gateway_tree(&src, 7, 20);
    a.backup(&[&src], &[]);
    change_small(&src);
    a.backup(&[&src], &[]);
    let a_ids = a.snapshot_ids();
    let b = Repo::init();
    let mut args = vec!["copy".to_string(), "--from-repo".into(), s(&a.path).into()];
    args.extend(from_creds(&a));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let want = a.scratch("want");
    a.restore("latest", &want, &[]);
    let full = copy(&b.copy(), &a, &[]);
    let total = full["blobs_copied"].as_u64().unwrap();
    let mut points = 0;
    for at in 1.. {
        let (c, crashed) = b.crashed_copy(&args, at);
        if !crashed {
            break;
        }
        points += 1;
        let j = c.run_json(["check", "--read-data", "--no-record"]);
        assert_eq!(j["status"], "Success", "after step {at}: {j}");
        let had_index = !c.objects("index").is_empty();
        let rerun = copy(&c, &a, &[]);
        let done =
            ids(&rerun, "copied", "source").len() + ids(&rerun, "already_present", "source").len();
        assert_eq!(done, 2, "after step {at}: {rerun}");
        let copied = rerun["blobs_copied"].as_u64().unwrap();
        if had_index {
            assert!(
                copied < total,
                "after step {at}: indexed blobs were uploaded again: {rerun}"
            );
        } else {
            assert_eq!(copied, total, "after step {at}: {rerun}");
        }
        let origins: std::collections::BTreeSet<String> = c
            .snapshots()
            .iter()
            .map(|s| s["origin"]["snapshot"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(origins, a_ids.iter().cloned().collect(), "after step {at}");
        assert_eq!(c.snapshot_ids().len(), 2, "after step {at}: one copy each");
        let j = c.run_json(["check", "--read-data", "--no-record"]);
        assert_eq!(j["status"], "Success", "after step {at} and a rerun: {j}");
        let t = c.scratch("latest");
        c.restore("latest", &t, &[]);
        assert_tree_eq(&want, &t);
    }
    // Two snapshots: at least packs, an index and a snapshot each, and the audit entry.
    assert!(points >= 7, "only {points} durable steps");
}

fn change_small(root: &Path) {
    let routes = root.join("services/orders/routes");
    let f = &util::read_dir_sorted(&routes)[0];
    let mut v = std::fs::read(f).unwrap();
    v.extend_from_slice(b"\n{\"changed\": true}\n");
    write(f, v);
}
