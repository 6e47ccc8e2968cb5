//! End-to-end tests of the `gatevault` command line: every test runs the real binary against a
//! repository in a temporary folder (helpers in `tests/util/mod.rs`).
//!
//! Run with `cargo test --release --test cli` (after `source scripts/env`).

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use util::*;

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// The lines of `diff` output that describe a change (`+`, `-`, `M`, `U` then spaces).
fn change_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            let mut c = l.chars();
            matches!(c.next(), Some('+' | '-' | 'M' | 'U')) && c.next() == Some(' ')
        })
        .map(str::to_string)
        .collect()
}

/// A small tree with nested folders, an empty file, an empty folder, symbolic links, a 3 MiB file of
/// random bytes and a 12 MiB file (above the 8 MiB streaming threshold) of mixed random and JSON bytes.
fn small_tree(src: &Path) {
    let mut rng = Rng::new(1);
    write(
        &src.join("etc/gateway/routes/orders.json"),
        gateway_route(&mut rng, 0),
    );
    write(
        &src.join("etc/gateway/routes/users.json"),
        gateway_route(&mut rng, 1),
    );
    write(
        &src.join("etc/gateway/plugins/a/b/c/cors.json"),
        gateway_route(&mut rng, 2),
    );
    write(&src.join("etc/gateway/empty.conf"), b"");
    fs::create_dir_all(src.join("var/empty-dir")).unwrap();
    symlink("etc/gateway/routes/orders.json", src.join("current.json")).unwrap();
    symlink("../nowhere", src.join("etc/dangling")).unwrap();
    write(&src.join("blobs/random-3m.bin"), rng.bytes(3 << 20));
    let mut big = rng.bytes(6 << 20);
    big.extend_from_slice(&json_lines(&mut rng, 6 << 20));
    write(&src.join("blobs/big-12m.bin"), big);
    fs::set_permissions(
        src.join("etc/gateway/routes/users.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(
        src.join("blobs/random-3m.bin"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
}

// ------------------------------------------------------------------------------------ 1. round trip

#[test]
fn init_backup_snapshots_restore_round_trip() {
    let r = Repo::init();
    let src = r.root().join("src");
    small_tree(&src);

    let sum = r.backup(&[&src], &[]);
    assert_eq!(u(&sum, "files_new"), 6, "{sum}");
    assert_eq!(u(&sum, "files_failed"), 0, "{sum}");
    assert_eq!(
        u(&sum, "total_bytes_processed"),
        (3 << 20) + (12 << 20) + manifest_bytes_below(&src.join("etc")),
        "{sum}"
    );
    assert!(u(&sum, "data_added") >= 15 << 20, "{sum}");

    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!([s(&src)]));
    assert_eq!(
        snaps[0]["id"].as_str().unwrap().len(),
        64,
        "full ids are 64 hex digits"
    );
    let text = r.run_ok(["snapshots"]);
    assert!(
        text.contains(snaps[0]["short_id"].as_str().unwrap()) && text.contains("1 snapshots"),
        "{text}"
    );

    let target = r.scratch("target");
    r.restore("latest", &target, &[]);
    let back = restored(&target, &src);
    assert_tree_eq(&src, &back);
    // Only the ancestors of the source path are created above it.
    let first = Path::new(s(&src).trim_start_matches('/'))
        .components()
        .next()
        .unwrap();
    assert_eq!(
        read_dir_sorted(&target),
        vec![target.join(first)],
        "restore places files at target + absolute path"
    );
    // Modification times are restored too.
    for f in ["blobs/big-12m.bin", "etc/gateway/empty.conf"] {
        let a = fs::metadata(src.join(f)).unwrap().modified().unwrap();
        let b = fs::metadata(back.join(f)).unwrap().modified().unwrap();
        assert_eq!(a, b, "mtime of {f}");
    }
}

/// Bytes of the regular files below `dir`.
fn manifest_bytes_below(dir: &Path) -> u64 {
    manifest(dir)
        .values()
        .map(|e| match e {
            Entry::File { len, .. } => *len,
            _ => 0,
        })
        .sum()
}

// ------------------------------------------------------------------------------------ 2. JSON, tags

#[test]
fn snapshots_json_has_tags_label_and_description() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 2, 10);
    r.run_ok([
        "backup",
        "-q",
        "--tag",
        "Environment=prod",
        "--tag",
        "BackupType=full",
        "--label",
        "v2.3.1",
        "--description",
        "before the orders migration",
        s(&src),
    ]);
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let sn = &snaps[0];
    assert_eq!(
        sn["tags"],
        serde_json::json!({"Environment": "prod", "BackupType": "full"}),
        "{sn}"
    );
    assert_eq!(sn["label"], "v2.3.1");
    assert_eq!(sn["description"], "before the orders migration");
    assert_eq!(sn["short_id"].as_str().unwrap().len(), 8);
    assert!(sn["id"]
        .as_str()
        .unwrap()
        .starts_with(sn["short_id"].as_str().unwrap()));

    // Tag filters select by KEY=VALUE.
    let prod = r.run_json(["snapshots", "--tag", "Environment=prod"]);
    assert_eq!(prod.as_array().unwrap().len(), 1, "{prod}");
    let dev = r.run_json(["snapshots", "--tag", "Environment=dev"]);
    assert_eq!(dev.as_array().unwrap().len(), 0, "{dev}");
    let text = r.run_ok(["snapshots"]);
    assert!(
        text.contains("Environment=prod") && text.contains("v2.3.1"),
        "{text}"
    );
}

// ------------------------------------------------------------------------------------ 3. dedup

#[test]
fn unchanged_data_is_deduplicated_and_skipped() {
    let r = Repo::init();
    let src = r.root().join("src");
    let n = 1200;
    let total = write_gateway_tree(&src, 3, n);
    assert!(total > 1_800_000, "about 2 MB of JSON: {total}");

    let first = r.backup(&[&src], &[]);
    assert_eq!(u(&first, "files_new"), n as u64, "{first}");
    assert_eq!(u(&first, "total_bytes_processed"), total);
    assert!(u(&first, "data_added") >= total * 9 / 10, "{first}");

    let forced = r.backup(&[&src], &["--force"]);
    assert_eq!(
        u(&forced, "total_files_processed"),
        n as u64,
        "--force reads every file: {forced}"
    );
    assert_eq!(u(&forced, "files_unchanged"), 0, "{forced}");
    assert!(
        u(&forced, "data_added_packed") * 100 < total,
        "a forced backup of unchanged data stores < 1% of it: {forced}"
    );

    // Without --force the parent is used and nothing is read.
    let out = r.run_ok(["backup", s(&src)]);
    assert!(
        out.contains(&format!("Files:       0 new, 0 changed, {n} unchanged")),
        "{out}"
    );
    let again = r.backup(&[&src], &[]);
    assert_eq!(u(&again, "files_unchanged"), n as u64, "{again}");
    assert_eq!(u(&again, "files_new") + u(&again, "files_changed"), 0);
    assert_only_ancestor_trees_added(&again, &src);
    assert_eq!(r.snapshot_ids().len(), 4);
}

// ------------------------------------------------------------------------------------ 4. parent, diff

#[test]
fn parent_detection_and_diff() {
    let r = Repo::init();
    let src = r.root().join("src");
    let n = 50;
    write_gateway_tree(&src, 4, n);
    r.backup(&[&src], &[]);

    let changed = src.join("services/orders/routes/route-0012.json");
    assert!(changed.is_file());
    let mut v = fs::read(&changed).unwrap();
    v.extend_from_slice(b"\n");
    fs::write(&changed, &v).unwrap();

    let sum = r.backup(&[&src], &[]);
    assert_eq!(u(&sum, "files_changed"), 1, "{sum}");
    assert_eq!(u(&sum, "files_unchanged"), n as u64 - 1, "{sum}");
    assert_eq!(u(&sum, "files_new"), 0, "{sum}");

    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2);
    let (a, b) = (
        snaps[0]["id"].as_str().unwrap(),
        snaps[1]["id"].as_str().unwrap(),
    );
    assert_eq!(snaps[1]["parent"], a, "the first snapshot is the parent");

    let out = r.run_ok(["diff", a, b]);
    let lines = change_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with(&format!("M    {}", s(&changed))),
        "{out}"
    );
    assert!(out.contains("1 changed"), "{out}");

    let j = r.run_json(["diff", a, b]);
    let changes = j["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{j}");
    assert_eq!(changes[0]["path"], s(&changed));
    assert_eq!(changes[0]["change"], "modified");
    assert_eq!(u(&changes[0], "new_size"), u(&changes[0], "old_size") + 1);
    assert_eq!(u(&j["stats"], "modified"), 1, "{j}");

    // Comparing a snapshot with itself shows nothing.
    let same = r.run_json(["diff", b, "latest"]);
    assert_eq!(same["changes"], serde_json::json!([]), "{same}");
}

// ------------------------------------------------------------------------------------ 5. --at, globs

#[test]
fn restore_at_time_and_include_exclude() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 5, 40);
    write(&src.join("services/orders/routes/old.json.bak"), b"{}");
    write(&src.join("services/users/routes/notes.bak"), b"old");
    let v1 = r.root().join("src-v1");
    copy_dir(&src, &v1);
    r.backup(&[&src], &[]);

    write(
        &src.join("services/orders/routes/route-0002.json"),
        b"{\"v\":2}",
    );
    write(&src.join("plugins/new.json"), b"{\"new\":true}");
    r.backup(&[&src], &[]);

    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2);
    let t1 = snaps[0]["time"].as_str().unwrap();
    let t2 = snaps[1]["time"].as_str().unwrap();
    assert!(t1 < t2, "{t1} {t2}");

    let at1 = r.scratch("at1");
    r.restore_at(t1, &at1);
    assert_tree_eq(&v1, &restored(&at1, &src));

    let at2 = r.scratch("at2");
    r.restore_at(t2, &at2);
    assert_tree_eq(&src, &restored(&at2, &src));

    let before = chrono::DateTime::parse_from_rfc3339(t1).unwrap() - chrono::Duration::seconds(1);
    let out = r.run_code(
        code::FAILURE,
        [
            "restore",
            "--at",
            &before.to_rfc3339(),
            "--target",
            s(&r.scratch("none")),
        ],
    );
    assert!(stderr(&out).contains("not found"), "{}", describe(&out));

    // --include restores only matching paths (and what lies below them), minus --exclude.
    let inc = r.scratch("inc");
    r.restore(
        "latest",
        &inc,
        &["--include", "**/routes", "--exclude", "*.bak"],
    );
    let got = manifest(&restored(&inc, &src));
    let want: BTreeSet<String> = manifest(&src)
        .into_iter()
        .filter(|(k, e)| {
            matches!(e, Entry::File { .. }) && k.contains("/routes/") && !k.ends_with(".bak")
        })
        .map(|(k, _)| k)
        .collect();
    assert!(want.len() > 10, "{want:?}");
    let got_files: BTreeSet<String> = got
        .iter()
        .filter(|(_, e)| !matches!(e, Entry::Dir))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(got_files, want);
    for (k, e) in &got {
        if matches!(e, Entry::Dir) {
            assert!(
                want.iter().any(|f| f.starts_with(&format!("{k}/"))),
                "folder {k} holds nothing restored"
            );
        } else {
            assert_eq!(
                fs::read(restored(&inc, &src).join(k)).unwrap(),
                fs::read(src.join(k)).unwrap(),
                "{k}"
            );
        }
    }

    let exc = r.scratch("exc");
    r.restore("latest", &exc, &["--exclude", "**/plugins"]);
    let mut want = manifest(&src);
    want.retain(|k, _| k != "plugins" && !k.starts_with("plugins/"));
    if let Err(e) = manifest_eq(&want, &manifest(&restored(&exc, &src))) {
        panic!("--exclude: {e}");
    }
}

// ------------------------------------------------------------------------------------ 6. dump, ls, cat, stats

#[test]
fn dump_ls_cat_and_stats() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 6, 20);
    let mut rng = Rng::new(6);
    let bin = src.join("bin/random.bin");
    write(&bin, rng.bytes(1_500_000));
    write(&src.join("bin/empty"), b"");
    r.backup(&[&src], &[]);
    let id = r.snapshot_ids().remove(0);

    let out = r.cmd().args(["dump", &id, s(&bin)]).output().unwrap();
    assert_code(&out, code::OK);
    assert!(
        out.stdout == fs::read(&bin).unwrap(),
        "dump writes the exact bytes"
    );
    let json = src.join("plugins/route-0005.json");
    let out = r.cmd().args(["dump", &id[..8], s(&json)]).output().unwrap();
    assert_code(&out, code::OK);
    assert!(out.stdout == fs::read(&json).unwrap());
    let out = r
        .cmd()
        .args(["dump", "latest", s(&src.join("bin/empty"))])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert!(out.stdout.is_empty());
    let out = r.run_code(
        code::FAILURE,
        ["dump", "latest", s(&src.join("no/such/file"))],
    );
    assert!(stderr(&out).contains("not found"), "{}", describe(&out));

    // ls lists every path of the snapshot: the ancestors of the source, then everything below it.
    let ls = r.run_ok(["ls", "latest"]);
    let mut lines = ls.lines();
    assert!(lines.next().unwrap().starts_with("snapshot "), "{ls}");
    let listed: BTreeSet<String> = lines.map(str::to_string).collect();
    let mut want: BTreeSet<String> = manifest(&src)
        .keys()
        .map(|k| format!("{}/{k}", s(&src)))
        .collect();
    for a in src.ancestors().filter(|a| *a != Path::new("/")) {
        want.insert(s(a).to_string());
    }
    assert_eq!(listed, want);
    let sub = r.run_ok(["ls", "latest", s(&src.join("bin"))]);
    assert!(
        sub.contains(s(&bin)) && !sub.contains("route-0005"),
        "{sub}"
    );

    let config: Value = serde_json::from_str(&r.run_ok(["cat", "config"])).unwrap();
    assert_eq!(config["version"], 1, "{config}");
    assert_eq!(config["id"].as_str().unwrap().len(), 64);

    r.backup(&[&src], &["--force"]);
    let st = r.run_json(["stats"]);
    assert_eq!(u(&st, "snapshots"), 2, "{st}");
    let ratio = st["dedup_ratio"].as_f64().unwrap();
    assert!(
        ratio > 1.9,
        "two snapshots of the same data dedup about 2x: {st}"
    );
    assert!(u(&st, "logical_size") > u(&st, "unique_size"), "{st}");
    let one = r.run_json(["stats", "latest"]);
    assert_eq!(u(&one, "snapshots"), 1, "{one}");
    assert!(
        (one["dedup_ratio"].as_f64().unwrap() - 1.0).abs() < 0.01,
        "{one}"
    );
}

// ------------------------------------------------------------------------------------ 7. credentials

#[test]
fn wrong_password_or_key_file_is_refused_without_writing() {
    let r = Repo::init_with_password("correct horse battery staple", true);
    let src = r.root().join("src");
    write_gateway_tree(&src, 7, 10);
    r.backup(&[&src], &[]);
    // The key-file slot that init added opens the repository too.
    let ok = r
        .cmd_no_creds()
        .args(["--key-file", s(&r.root().join("key")), "snapshots"])
        .output()
        .unwrap();
    assert_code(&ok, code::OK);

    let before = r.listing();
    assert!(before.keys().any(|k| k.starts_with("keys/")));

    let wrong_pw = r.root().join("wrong-password");
    fs::write(&wrong_pw, "Correct horse battery staple\n").unwrap();
    let other_key = r.root().join("other-key");
    fs::write(&other_key, format!("{}\n", "ab".repeat(32))).unwrap();

    for args in [
        vec!["--password-file", s(&wrong_pw), "backup", s(&src)],
        vec!["--password-file", s(&wrong_pw), "snapshots"],
        vec!["--key-file", s(&other_key), "backup", s(&src)],
        vec!["--key-file", s(&other_key), "check"],
    ] {
        let out = r.cmd_no_creds().args(&args).output().unwrap();
        assert_code(&out, code::WRONG_PASSWORD);
        assert!(
            stderr(&out).contains("wrong password"),
            "{args:?}\n{}",
            describe(&out)
        );
    }
    r.cmd_no_creds()
        .args(["--key-file", s(&other_key), "unlock"])
        .assert()
        .code(code::WRONG_PASSWORD)
        .stderr(predicate::str::contains("wrong password or key file"));

    let after = r.listing();
    assert!(
        before == after,
        "wrong credentials changed the repository: {:?}",
        after
            .keys()
            .filter(|k| before.get(*k) != after.get(*k))
            .chain(before.keys().filter(|k| !after.contains_key(*k)))
            .collect::<Vec<_>>()
    );
    // The right password still works.
    r.run_ok(["check", "-q"]);
}

// ------------------------------------------------------------------------------------ 8. no repository

#[test]
fn missing_empty_and_newer_repositories_exit_10() {
    let r = Repo::init();
    let key = r.key.clone().unwrap();
    let cache = r.root().join("cache");

    let missing = r.root().join("does-not-exist");
    let out = r
        .bare()
        .args(["-r", s(&missing), "--key-file", s(&key)])
        .args(["--cache-dir", s(&cache), "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, code::NO_REPOSITORY);
    assert!(
        stderr(&out).contains("does not exist"),
        "{}",
        describe(&out)
    );
    assert!(!missing.exists(), "nothing was created");

    let empty = r.root().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = r
        .bare()
        .args(["-r", s(&empty), "--key-file", s(&key)])
        .args(["--cache-dir", s(&cache), "backup", s(&key)])
        .output()
        .unwrap();
    assert_code(&out, code::NO_REPOSITORY);
    assert!(
        stderr(&out).contains("not a gatevault repository"),
        "{}",
        describe(&out)
    );
    assert!(read_dir_sorted(&empty).is_empty(), "nothing was written");

    // A config of a newer format: refused before any key is tried.
    let cfg = r.path.join("config");
    let mut v: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(v["version"], 1);
    v["version"] = serde_json::json!(99);
    fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = r.run_code(code::NO_REPOSITORY, ["snapshots"]);
    let err = stderr(&out);
    assert!(
        err.contains("newer") || err.contains("upgrade"),
        "{}",
        describe(&out)
    );
    assert!(err.contains("99"), "{err}");

    // A config edited otherwise no longer matches its MAC: refused, not trusted.
    v["version"] = serde_json::json!(1);
    v["compression"] = serde_json::json!(19);
    fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = r.run_code(code::FAILURE, ["snapshots"]);
    assert!(stderr(&out).contains("config"), "{}", describe(&out));
}

// ------------------------------------------------------------------------------------ 9. corruption

#[test]
fn flipped_byte_is_found_by_read_data_and_restore_skips_only_that_file() {
    let b = broken_repo(Damage::FlipDataByte);
    let r = &b.repo;
    let pack = b.pack.as_deref().unwrap();
    let blob = b.blob.as_deref().unwrap();

    // The structure (index, pack sizes, trees) is intact: a plain check passes.
    let out = r.run(["check"]);
    assert_code(&out, code::OK);
    assert!(
        stdout(&out).contains("status: Success"),
        "{}",
        describe(&out)
    );

    let out = r.run(["check", "--read-data"]);
    assert_code(&out, code::FAILURE);
    let text = stdout(&out);
    assert!(
        text.contains(pack) && text.contains(blob),
        "names pack and blob\n{}",
        describe(&out)
    );
    assert_eq!(
        text.lines().last(),
        Some("status: Failed"),
        "{}",
        describe(&out)
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "only the damaged blob: {errors:?}");

    let j = r.run_json_code(code::FAILURE, ["check", "--read-data"]);
    assert_eq!(j["status"], "Failed", "{j}");
    assert!(j["errors"][0].as_str().unwrap().contains(blob), "{j}");

    // Restore: every other file comes back; the damaged one is named and not left behind.
    let target = r.scratch("target");
    let out = r.run(["restore", "latest", "--target", s(&target)]);
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains(s(&b.victim)),
        "names the damaged file\n{}",
        describe(&out)
    );
    let back = restored(&target, &b.src);
    assert!(!back.join("victim.json").exists(), "no wrong bytes left");
    let mut want = manifest(&b.src);
    assert!(want.remove("victim.json").is_some());
    if let Err(e) = manifest_eq(&want, &manifest(&back)) {
        panic!("the other files: {e}");
    }

    // dump of the damaged file fails with an integrity error naming the blob.
    let out = r.run_code(code::FAILURE, ["dump", "latest", s(&b.victim)]);
    assert!(stderr(&out).contains(blob), "{}", describe(&out));
}

#[test]
fn truncated_pack_is_named_by_check() {
    let b = broken_repo(Damage::TruncatePack);
    let r = &b.repo;
    let pack = b.pack.as_deref().unwrap();
    for args in [&["check"][..], &["check", "--read-data"][..]] {
        let out = r.run(args);
        assert_code(&out, code::FAILURE);
        let text = stdout(&out);
        assert!(
            text.lines()
                .any(|l| l.starts_with("error:") && l.contains(pack) && l.contains("truncated")),
            "{args:?}\n{}",
            describe(&out)
        );
        assert_eq!(text.lines().last(), Some("status: Failed"));
    }
    // A restore cannot produce the files of the lost half: it names them and leaves none behind.
    let target = r.scratch("t");
    let out = r.run(["restore", "latest", "--target", s(&target)]);
    assert_code(&out, code::FAILURE);
    let err = stderr(&out);
    assert!(
        err.contains(s(&b.victim)) && err.contains("truncated"),
        "{}",
        describe(&out)
    );
    assert!(!restored(&target, &b.src).join("victim.json").exists());

    // `repair index` cannot read the pack's header (it was at the end): it names the pack as damaged
    // and exits 3; the snapshot still needs the lost blobs, so check keeps failing.
    let out = r.run(["repair", "index"]);
    assert_code(&out, 3);
    assert!(
        stdout(&out).contains(&format!("damaged: pack {pack}")),
        "{}",
        describe(&out)
    );
    let out = r.run(["check"]);
    assert_code(&out, code::FAILURE);
    assert_eq!(stdout(&out).lines().last(), Some("status: Failed"));
}

/// The relative paths of the regular files below `root`.
fn file_set(root: &Path) -> BTreeSet<String> {
    manifest(root)
        .into_iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(k, _)| k)
        .collect()
}

/// Restore must be at least as good as `dump`: a file whose blobs all lie before the cut of a truncated
/// pack is intact (`dump` writes it), so restore must write it too, as its module documentation promises
/// ("every other file is restored").
#[test]
fn restore_of_truncated_pack_keeps_the_intact_files() {
    let b = broken_repo(Damage::TruncatePack);
    let r = &b.repo;
    let files = file_set(&b.src);
    let mut intact = BTreeSet::new();
    for f in &files {
        let out = r.run(["dump", "latest", s(&b.src.join(f))]);
        if out.status.success() {
            assert!(out.stdout == fs::read(b.src.join(f)).unwrap(), "{f}");
            intact.insert(f.clone());
        }
    }
    // Usually some files lie before the cut; none do when the victim happens to be the pack's first blob.
    assert!(!intact.contains("victim.json"), "the victim is cut");
    assert!(intact.len() < files.len());
    let target = r.scratch("t");
    let out = r.run(["restore", "latest", "--target", s(&target)]);
    assert_code(&out, code::FAILURE);
    let got = file_set(&restored(&target, &b.src));
    assert_eq!(got, intact, "restore writes exactly the intact files");

    // `repair index` cannot read the cut pack's header, but keeps the blobs old index files listed
    // that still authenticate: after it, restore still writes every intact file.
    let out = r.run(["repair", "index"]);
    assert_code(&out, 3);
    assert!(stdout(&out).contains("kept"), "{}", describe(&out));
    let target = r.scratch("after-repair");
    let out = r.run(["restore", "latest", "--target", s(&target)]);
    assert_code(&out, code::FAILURE);
    let got = file_set(&restored(&target, &b.src));
    assert_eq!(
        got, intact,
        "after repair, restore still writes exactly the intact files"
    );
}

#[test]
fn deleted_index_is_reported_and_repaired() {
    let b = broken_repo(Damage::DeleteFirstIndex);
    let r = &b.repo;
    assert_eq!(b.snapshots.len(), 2);

    let out = r.run(["check"]);
    assert_code(&out, code::FAILURE);
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("error:")
            && (l.contains("is in no index") || l.contains("not found"))),
        "reports missing blobs\n{}",
        describe(&out)
    );
    assert!(
        text.contains("not referenced by any index"),
        "the packs of the deleted index are unreferenced\n{}",
        describe(&out)
    );
    assert_eq!(text.lines().last(), Some("status: Failed"));

    let out = r.run(["repair", "index"]);
    assert_code(&out, code::OK);
    assert!(
        stdout(&out).contains("removed 1 old index file"),
        "{}",
        describe(&out)
    );
    assert_eq!(r.objects("index").len(), 1);

    let out = r.run(["check", "--read-data"]);
    assert_code(&out, code::OK);
    let text = stdout(&out);
    assert_eq!(text.lines().last(), Some("status: Success"), "{text}");
    assert!(!text.contains("not referenced"), "{text}");

    for (i, id) in b.snapshots.iter().enumerate() {
        let t = r.scratch(&format!("t{i}"));
        r.restore(id, &t, &[]);
        let want = if i == 0 {
            b.first.clone()
        } else {
            manifest(&b.src)
        };
        if let Err(e) = manifest_eq(&want, &manifest(&restored(&t, &b.src))) {
            panic!("snapshot {i} after repair: {e}");
        }
    }
}

// ------------------------------------------------------------------------------------ 10. local cache

/// A forced backup of unchanged files stores no data blob and, of the trees, at most those of the
/// folders above `src` (their modification times change as tests create files next to `src`).
#[track_caller]
fn assert_only_ancestor_trees_added(sum: &Value, src: &Path) {
    let above = Path::new(s(src)).components().count() as u64 - 1;
    assert!(
        u(sum, "blobs_added") <= above && u(sum, "data_added") < 4096 * above,
        "only trees of the {above} folders above {} may be new: {sum}",
        src.display()
    );
}

#[test]
fn deleted_cache_is_rebuilt() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 10, 60);
    r.backup(&[&src], &[]);
    let id = r.repo_id();
    assert!(
        r.cache.join(&id).join("index").is_dir(),
        "cache at <cache-dir>/<repo id>/index"
    );

    fs::remove_dir_all(&r.cache).unwrap();
    let ls = r.run_ok(["ls", "latest"]);
    assert!(ls.contains("route-0059.json"), "{ls}");
    assert!(
        r.cache.join(&id).join("index").is_dir(),
        "the cache was rebuilt"
    );
    fs::remove_dir_all(&r.cache).unwrap();
    let again = r.backup(&[&src], &["--force"]);
    assert_eq!(u(&again, "files_new"), 60, "{again}");
    assert_only_ancestor_trees_added(&again, &src);
    fs::remove_dir_all(&r.cache).unwrap();
    let t = r.scratch("t");
    r.restore("latest", &t, &[]);
    assert_tree_eq(&src, &restored(&t, &src));
    fs::remove_dir_all(&r.cache).unwrap();
    r.run_ok(["check", "-q"]);
}

#[test]
fn cache_of_another_repository_is_not_trusted() {
    let a = Repo::init();
    let b = Repo::init();
    let src_a = a.root().join("src");
    let src_b = b.root().join("src");
    write_gateway_tree(&src_a, 101, 80);
    write_gateway_tree(&src_b, 202, 80);
    a.backup(&[&src_a], &[]);
    b.backup(&[&src_b], &[]);
    let (ida, idb) = (a.repo_id(), b.repo_id());
    assert_ne!(ida, idb);

    // B's cache becomes a copy of A's database.
    let b_index = b.cache.join(&idb).join("index");
    fs::remove_dir_all(&b_index).unwrap();
    copy_dir(&a.cache.join(&ida).join("index"), &b_index);

    let t = b.scratch("t");
    b.restore("latest", &t, &[]);
    assert_tree_eq(&src_b, &restored(&t, &src_b));
    b.run_ok(["check", "-q"]);
    let again = b.backup(&[&src_b], &["--force"]);
    assert_only_ancestor_trees_added(&again, &src_b);
    // A is unaffected.
    let t = a.scratch("t");
    a.restore("latest", &t, &[]);
    assert_tree_eq(&src_a, &restored(&t, &src_a));
}

#[test]
fn stale_cache_sees_newer_snapshots() {
    let mut r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 11, 60);
    let c1 = r.cache.clone();
    let c2 = r.root().join("cache2");
    r.backup(&[&src], &[]);

    // A second client (cache C2) adds new data.
    let mut rng = Rng::new(11);
    write(&src.join("new/random.bin"), rng.bytes(400_000));
    write(&src.join("new/log.jsonl"), json_lines(&mut rng, 300_000));
    r.cache = c2;
    let second = r.backup(&[&src], &[]);
    assert!(u(&second, "blobs_added") > 10, "{second}");

    // C1 has not seen that index file: it must catch up.
    r.cache = c1;
    let t = r.scratch("t");
    r.restore("latest", &t, &[]);
    assert_tree_eq(&src, &restored(&t, &src));
    r.run_ok(["check", "-q"]);
    // C1 knows the blobs C2 added: a forced backup stores none of them again.
    let third = r.backup(&[&src], &["--force"]);
    assert_only_ancestor_trees_added(&third, &src);
}

#[test]
fn damaged_cache_block_is_rebuilt_on_the_next_run() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 12, 60);
    r.backup(&[&src], &[]);
    // A cache built from the index files has its entries in table files (a backup's own entries
    // stay in the write-ahead log until then).
    fs::remove_dir_all(&r.cache).unwrap();
    r.run_ok(["ls", "latest"]);
    let db = r.cache.join(r.repo_id()).join("index");
    let marker = db.with_extension("damaged");
    // Damage the first data block of every table file: the blob entries sort first.
    let mut damaged = 0;
    for f in fs::read_dir(&db).unwrap().map(|e| e.unwrap().path()) {
        if f.extension().is_some_and(|e| e == "sst") {
            let mut bytes = fs::read(&f).unwrap();
            for b in &mut bytes[16..48] {
                *b ^= 0x5a;
            }
            fs::write(&f, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the cache has table files");

    let t = r.scratch("t");
    let first = r.run(["restore", "latest", "--target", s(&t)]);
    assert_ne!(first.status.code(), Some(code::OK), "{}", describe(&first));
    let msg = stderr(&first) + &stdout(&first);
    assert!(
        msg.contains("damaged") && msg.contains("run the command again"),
        "the error says the cache is damaged and what happens next: {}",
        describe(&first)
    );
    assert!(marker.is_file(), "the damage is recorded for the next run");
    // No file with wrong bytes was left behind.
    if t.exists() {
        let got = restored(&t, &src);
        for f in files_under(&got) {
            let rel = f.strip_prefix(&got).unwrap();
            assert_eq!(fs::read(&f).unwrap(), fs::read(src.join(rel)).unwrap());
        }
        fs::remove_dir_all(&t).unwrap();
    }

    r.restore("latest", &t, &[]);
    assert_tree_eq(&src, &restored(&t, &src));
    assert!(!marker.exists(), "the rebuild cleared the mark");
    r.run_ok(["check", "-q"]);
    let again = r.backup(&[&src], &["--force"]);
    assert_only_ancestor_trees_added(&again, &src);
}

// ------------------------------------------------------------------------------------ 11. kill -9

/// Writes the data set of the kill test: about 20 MiB of random bytes (two files above the streaming
/// threshold) and 20 MiB of repetitive JSON lines.
fn kill_data_set(src: &Path) {
    let mut rng = Rng::new(0x4B11);
    for i in 0..2 {
        write(&src.join(format!("random/big-{i}.bin")), rng.bytes(9 << 20));
    }
    for i in 0..4 {
        write(
            &src.join(format!("random/small-{i}.bin")),
            rng.bytes(512 << 10),
        );
    }
    for i in 0..20 {
        write(
            &src.join(format!("logs/access-{i:02}.jsonl")),
            json_lines(&mut rng, 1 << 20),
        );
    }
}

/// Changes a couple of files: 1 MiB of new random bytes inside a big file, JSON lines appended to a log.
fn kill_modify(src: &Path, rng: &mut Rng, i: usize) {
    let big = src.join(format!("random/big-{}.bin", i % 2));
    let mut v = fs::read(&big).unwrap();
    let off = rng.below((v.len() - (1 << 20)) as u64) as usize;
    v[off..off + (1 << 20)].copy_from_slice(&rng.bytes(1 << 20));
    fs::write(&big, v).unwrap();
    let log = src.join(format!("logs/access-{:02}.jsonl", i % 20));
    let mut v = fs::read(&log).unwrap();
    v.extend_from_slice(&json_lines(rng, 20_000));
    fs::write(&log, v).unwrap();
}

#[test]
fn kill_9_during_backup_never_damages_the_repository() {
    const ITERATIONS: usize = 30;
    let r = Repo::init();
    let src = r.root().join("src");
    kill_data_set(&src);
    let baseline = r.root().join("baseline");
    copy_dir(&src, &baseline);
    r.backup(&[&src], &[]);
    let s0 = r.snapshot_ids().remove(0);

    // Calibrate the delays on one forced backup, so that kills land all over its lifetime.
    let t = Instant::now();
    r.run_ok(["backup", "-q", "--force", s(&src)]);
    let span = t
        .elapsed()
        .mul_f64(1.25)
        .clamp(Duration::from_millis(50), Duration::from_millis(1500));
    // Snapshots committed by backups that finished before their kill, with the tree they saved.
    let mut committed = vec![(r.snapshot_ids()[1].clone(), manifest(&src))];
    let mut rng = Rng::new(0x5EED);
    let (mut killed, mut finished) = (0, 0);
    for i in 0..ITERATIONS {
        kill_modify(&src, &mut rng, i);
        let before = r.objects("snapshots");
        let mut child = r.spawn(&["backup", "-q", "--force", s(&src)], Stdio::null());
        std::thread::sleep(span.mul_f64(rng.unit()));
        let status = match child.try_wait().unwrap() {
            Some(st) => st,
            None => {
                child.kill().unwrap();
                child.wait().unwrap()
            }
        };
        assert!(
            status.signal() == Some(9) || status.code() == Some(0),
            "iteration {i}: a backup that was not killed succeeds: {status:?}"
        );
        let after = r.objects("snapshots");
        let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
        assert!(new.len() <= 1, "iteration {i}: {new:?}");
        if status.code() == Some(0) {
            assert_eq!(new.len(), 1, "iteration {i}: a finished backup commits");
        }
        if let Some(p) = new.first() {
            committed.push((file_name(p), manifest(&src)));
            finished += 1;
        } else {
            killed += 1;
        }
        let out = r.run(["check", "-q"]);
        assert_code(&out, code::OK);
        assert!(
            stdout(&out).contains("status: Success"),
            "iteration {i}\n{}",
            describe(&out)
        );
    }
    eprintln!("kill test: {killed} backups killed before committing, {finished} committed; delays up to {span:?}");

    let out = r.run(["check", "--read-data"]);
    assert_code(&out, code::OK);
    assert!(
        stdout(&out).contains("status: Success"),
        "{}",
        describe(&out)
    );

    // The snapshot made before the loop, and every snapshot committed since, restore byte-identical.
    let t = r.scratch("restore-s0");
    r.restore(&s0, &t, &[]);
    assert_tree_eq(&baseline, &restored(&t, &src));
    fs::remove_dir_all(&t).unwrap();
    for (n, (id, want)) in committed.iter().enumerate() {
        let t = r.scratch(&format!("restore-{n}"));
        r.restore(id, &t, &[]);
        if let Err(e) = manifest_eq(want, &manifest(&restored(&t, &src))) {
            panic!("snapshot {id}: {e}");
        }
        fs::remove_dir_all(&t).unwrap();
    }

    // A backup killed while it holds its lock leaves the lock behind; a dead process's lock on this host
    // is stale, so the next backup goes ahead.
    let locks = r.objects("locks").len();
    let mut child = r.spawn(
        &["backup", "--stdin", "--stdin-filename", "x"],
        Stdio::piped(),
    );
    r.wait_for_lock(locks + 1);
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert_eq!(
        r.objects("locks").len(),
        locks + 1,
        "the killed backup's lock is left"
    );

    kill_modify(&src, &mut rng, ITERATIONS);
    let (last_id, last) = committed.last().unwrap();
    let now = manifest(&src);
    let changed = now.iter().filter(|(k, e)| last.get(*k) != Some(*e)).count() as u64;
    assert!(changed >= 2, "{changed}");
    let sum = r.backup(&[&src], &[]);
    assert_eq!(
        u(&sum, "files_changed"),
        changed,
        "against the parent {last_id}: {sum}"
    );
    assert_eq!(
        u(&sum, "files_unchanged"),
        now.len() as u64 - 2 - changed,
        "{sum}"
    );
    let t = r.scratch("restore-final");
    r.restore("latest", &t, &[]);
    assert_tree_eq(&src, &restored(&t, &src));
    let out = r.run(["check"]);
    assert_code(&out, code::OK);
}

// ------------------------------------------------------------------------------------ 12. keys

#[test]
fn key_add_list_remove() {
    let r = Repo::init();
    let f1 = r.key.clone().unwrap();
    let f2 = r.root().join("key2");
    let out = r.run_ok(["key", "add", "--new-key-file", s(&f2)]);
    assert!(out.contains("added key"), "{out}");
    assert!(f2.is_file(), "key add created the new key file");

    let with = |key: &Path| {
        let mut c = r.cmd_no_creds();
        c.args(["--key-file", s(key)]);
        c
    };
    with(&f2).args(["snapshots", "-q"]).assert().success();

    let list = |key: &Path| -> Vec<Value> {
        let out = with(key).args(["--json", "key", "list"]).output().unwrap();
        assert_code(&out, code::OK);
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let slots = list(&f1);
    assert_eq!(slots.len(), 2, "{slots:?}");
    let current = |slots: &[Value]| -> String {
        let cur: Vec<_> = slots.iter().filter(|s| s["current"] == true).collect();
        assert_eq!(cur.len(), 1, "{slots:?}");
        cur[0]["id"].as_str().unwrap().to_string()
    };
    let id1 = current(&slots);
    let id2 = current(&list(&f2));
    assert_ne!(id1, id2);
    assert!(
        slots
            .iter()
            .all(|s| s["kind"] == "key-file" && s["role"] == "admin"),
        "{slots:?}"
    );

    // The slot in use cannot be removed.
    let out = with(&f1).args(["key", "remove", &id1]).output().unwrap();
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("in use"), "{}", describe(&out));
    assert_eq!(list(&f1).len(), 2);

    // The other one can; then its key file no longer opens the repository.
    with(&f1)
        .args(["key", "remove", &id2[..8]])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed key"));
    assert_eq!(list(&f1).len(), 1);
    let out = with(&f2).args(["snapshots"]).output().unwrap();
    assert_code(&out, code::WRONG_PASSWORD);
    assert!(
        stderr(&out).contains("wrong password"),
        "{}",
        describe(&out)
    );
}

// ------------------------------------------------------------------------------------ 13. unlock

#[test]
fn unlock_removes_the_lock_of_a_killed_backup() {
    let r = Repo::init();
    // A backup reading a standard input that never ends holds its lock until it is killed.
    let mut child = r.spawn(&["backup", "--stdin"], Stdio::piped());
    r.wait_for_lock(1);
    assert_eq!(r.objects("locks").len(), 1);

    // While it lives: its lock is not stale, and an exclusive job is refused.
    let out = r.run_ok(["unlock"]);
    assert!(out.contains("removed 0 stale lock(s)"), "{out}");
    assert_eq!(r.objects("locks").len(), 1);
    let out = r.run_code(code::LOCKED, ["repair", "index"]);
    assert!(stderr(&out).contains("locked"), "{}", describe(&out));

    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    drop(child);
    assert_eq!(r.objects("locks").len(), 1, "kill -9 leaves the lock");

    let out = r.run_ok(["unlock"]);
    assert!(out.contains("removed 1 stale lock(s)"), "{out}");
    assert!(r.objects("locks").is_empty());
    assert!(
        r.objects("snapshots").is_empty(),
        "the killed backup committed nothing"
    );
    let out = r.run_ok(["unlock"]);
    assert!(out.contains("removed 0 stale lock(s)"), "{out}");
    r.run_ok(["repair", "index", "-q"]);
}

// ------------------------------------------------------------------------------------ 14. stdin

#[test]
fn backup_stdin_then_dump() {
    let r = Repo::init();
    let mut rng = Rng::new(14);
    let mut data = json_lines(&mut rng, 700_000);
    data.extend_from_slice(&rng.bytes(300_000));
    let out = r
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-filename", "gw.json"])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&sum, "total_bytes_processed"), data.len() as u64, "{sum}");

    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/gw.json"]));
    let out = r
        .cmd()
        .args(["dump", "latest", "/gw.json"])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert!(out.stdout == data, "dump returns the bytes read from stdin");
    let ls = r.run_ok(["ls", "latest"]);
    assert!(ls.lines().any(|l| l == "/gw.json"), "{ls}");

    // An empty standard input makes an empty file.
    r.cmd()
        .args(["-q", "backup", "--stdin", "--stdin-filename", "empty.json"])
        .write_stdin("")
        .assert()
        .success();
    let out = r
        .cmd()
        .args(["dump", "latest", "empty.json"])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

// ------------------------------------------------------------------------------------ partial backups

#[test]
fn unreadable_file_makes_a_partial_snapshot_with_exit_3() {
    use std::os::unix::ffi::OsStrExt;
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 15, 10);
    // A name that is not UTF-8 cannot be stored (names are UTF-8): the file is left out with a warning.
    let bad = src.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name.json"));
    fs::write(&bad, b"{}").unwrap();
    let out = r.run(["--json", "backup", s(&src)]);
    assert_code(&out, 3);
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u(&sum, "files_failed"), 1, "{sum}");
    assert_eq!(u(&sum, "files_new"), 10, "{sum}");
    assert!(
        stderr(&out).contains("not UTF-8") && stderr(&out).contains("partial"),
        "{}",
        describe(&out)
    );
    // The snapshot was made, with everything else in it.
    assert_eq!(r.snapshot_ids().len(), 1);
    let t = r.scratch("t");
    r.restore("latest", &t, &[]);
    fs::remove_file(&bad).unwrap();
    assert_tree_eq(&src, &restored(&t, &src));
}

// ------------------------------------------------------------------------------------ concurrency

#[test]
fn concurrent_backups_of_one_repository() {
    let r = Repo::init();
    let (a, b) = (r.root().join("a"), r.root().join("b"));
    write_gateway_tree(&a, 16, 300);
    write_gateway_tree(&b, 17, 300);
    let mut rng = Rng::new(16);
    write(&a.join("blob.bin"), rng.bytes(3 << 20));
    write(&b.join("blob.bin"), rng.bytes(3 << 20));
    // Both share the cache folder: the second one finds the local index in use and works on a temporary
    // copy; both take shared locks.
    let children: Vec<_> = [&a, &b]
        .iter()
        .map(|p| r.spawn(&["backup", "-q", s(p)], Stdio::null()))
        .collect();
    for mut c in children {
        let st = c.wait().unwrap();
        assert!(st.success(), "{st:?}");
    }
    assert_eq!(r.snapshot_ids().len(), 2);
    assert!(r.objects("locks").is_empty(), "both released their locks");
    let out = r.run(["check", "--read-data"]);
    assert_code(&out, code::OK);
    assert!(
        !stdout(&out).contains("not referenced"),
        "{}",
        describe(&out)
    );
    for p in [&a, &b] {
        let t = r.scratch(&format!("restore-{}", file_name(p)));
        r.restore("latest", &t, &["--path", s(p)]);
        assert_tree_eq(p, &restored(&t, p));
    }
}

// ------------------------------------------------------------------------------------ the helpers

/// The comparison every round trip relies on must see each kind of difference.
#[test]
fn tree_comparison_sees_every_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    small_tree(&a);
    let fresh = |name: &str| {
        let b = tmp.path().join(name);
        copy_dir(&a, &b);
        assert_tree_eq(&a, &b);
        b
    };
    let b = fresh("byte");
    let mut v = fs::read(b.join("blobs/big-12m.bin")).unwrap();
    v[10 << 20] ^= 1;
    fs::write(b.join("blobs/big-12m.bin"), v).unwrap();
    assert!(tree_eq(&a, &b).is_err_and(|e| e.contains("big-12m.bin")));

    let b = fresh("missing");
    fs::remove_file(b.join("etc/gateway/empty.conf")).unwrap();
    assert!(tree_eq(&a, &b).is_err_and(|e| e.contains("only in the first: etc/gateway/empty.conf")));

    let b = fresh("extra");
    fs::create_dir(b.join("var/empty-dir/x")).unwrap();
    assert!(tree_eq(&a, &b).is_err_and(|e| e.contains("only in the second")));

    let b = fresh("link");
    fs::remove_file(b.join("current.json")).unwrap();
    symlink("etc/gateway/routes/users.json", b.join("current.json")).unwrap();
    assert!(tree_eq(&a, &b).is_err_and(|e| e.contains("current.json")));

    let b = fresh("mode");
    fs::set_permissions(
        b.join("etc/gateway/routes/orders.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert!(tree_eq(&a, &b).is_err_and(|e| e.contains("orders.json")));

    let b = fresh("type");
    fs::remove_dir(b.join("var/empty-dir")).unwrap();
    fs::write(b.join("var/empty-dir"), b"").unwrap();
    assert!(tree_eq(&a, &b).is_err_and(|e| e.contains("empty-dir")));
}

/// Gateway-like JSON lines whose values do not repeat (seeded), so that compression alone gains little.
fn config_lines(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .flat_map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            format!(
                "{{\"route\":\"r{i}\",\"upstream\":\"svc-{:x}\",\"key\":\"{:016x}\"}}\n",
                x >> 44,
                x
            )
            .into_bytes()
        })
        .collect()
}

/// A one-line edit of a large config is stored as a small delta against the previous version's chunk;
/// both versions restore byte-identical, `check --read-data` re-hashes it through its base, and damage to
/// the base is reported for the file that needs it.
#[test]
fn edited_config_is_stored_as_a_delta_and_restores() {
    let r = Repo::init();
    let src = r.root().join("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("kong.json");
    let v1 = config_lines(6000, 11);
    fs::write(&file, &v1).unwrap();
    r.backup(&[&src], &[]);
    let mut v2 = v1.clone();
    let at = v2.len() / 2;
    v2.splice(at..at + 8, b"EDITED!!".iter().copied());
    fs::write(&file, &v2).unwrap();
    let sum = r.backup(&[&src], &[]);
    assert!(
        u(&sum, "data_added_packed") < 4000,
        "one edit adds little: {sum}"
    );

    let ids = r.snapshot_ids();
    let blobs = r.file_blobs(&ids[1], &file);
    let deltas: Vec<(PathBuf, Value)> = blobs
        .iter()
        .map(|b| r.find_data_blob(b))
        .filter(|(_, e)| e.get("base").is_some())
        .collect();
    assert_eq!(deltas.len(), 1, "exactly the edited chunk is a delta");
    let base = deltas[0].1["base"].as_str().unwrap().to_string();
    assert!(
        r.file_blobs(&ids[0], &file).contains(&base),
        "its base is a chunk of the first version"
    );

    for (i, want) in [(0, &v1), (1, &v2)] {
        let t = r.scratch(&format!("v{i}"));
        r.restore(&ids[i], &t, &[]);
        assert!(
            fs::read(restored(&t, &src).join("kong.json")).unwrap() == *want,
            "version {i}"
        );
    }
    let out = r.run(["check", "--read-data"]);
    assert_code(&out, code::OK);

    // Damage the base: the check names it and the delta that needs it; restoring either version fails for
    // this file by name and leaves no wrong bytes.
    let (pack, entry) = r.find_data_blob(&base);
    let mut bytes = fs::read(&pack).unwrap();
    let off = entry["offset"].as_u64().unwrap() as usize + 40;
    bytes[off] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();
    let out = r.run(["check", "--read-data"]);
    assert_code(&out, code::FAILURE);
    let text = stdout(&out);
    assert!(text.contains(&base), "{}", describe(&out));
    assert!(
        text.contains(deltas[0].1["id"].as_str().unwrap()),
        "the delta is named too\n{}",
        describe(&out)
    );
    let t = r.scratch("after-damage");
    let out = r.run(["restore", &ids[1], "--target", s(&t)]);
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains(s(&file)), "{}", describe(&out));
    assert!(!restored(&t, &src).join("kong.json").exists());
}

/// Repeated edits of one region chain deltas onto the previous version, never deeper than
/// `MAX_DELTA_DEPTH`; every version restores byte-identical and `check --read-data` resolves every
/// chain.
#[test]
fn delta_chains_stay_bounded_and_every_version_restores() {
    let r = Repo::init();
    let src = r.root().join("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("routes.json");
    let mut content = config_lines(4000, 5);
    let mut versions = Vec::new();
    let max = gatevault::pack::MAX_DELTA_DEPTH;
    // Enough versions that a chain reaches the limit and a new one starts.
    let n = max + 4;
    for v in 0..n {
        let at = content.len() / 3 + v * 40;
        content[at..at + 6].copy_from_slice(format!("EDIT{v:02}").as_bytes());
        fs::write(&file, &content).unwrap();
        r.backup(&[&src], &[]);
        versions.push(content.clone());
    }
    let ids = r.snapshot_ids();
    // Follow the chains of every version's chunks through the pack headers. Where an edit lands in
    // another chunk than the version before depends on the (random) chunk boundaries, so the
    // deepest chain over all versions is what must stay within the limit: without restarts it
    // would reach n - 1.
    let mut base_of: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut deepest = 0;
    for id in &ids {
        for blob in r.file_blobs(id, &file) {
            let mut depth = 0;
            let mut cur = blob;
            loop {
                let base = base_of
                    .entry(cur.clone())
                    .or_insert_with(|| {
                        r.find_data_blob(&cur)
                            .1
                            .get("base")
                            .and_then(|b| b.as_str())
                            .map(str::to_string)
                    })
                    .clone();
                let Some(base) = base else { break };
                depth += 1;
                cur = base;
            }
            deepest = deepest.max(depth);
        }
    }
    assert!(
        (2..=max).contains(&deepest),
        "chains form, stay within {max} deltas and restart: {deepest}"
    );
    for (i, want) in versions.iter().enumerate() {
        let t = r.scratch(&format!("v{i}"));
        r.restore(&ids[i], &t, &[]);
        assert!(
            fs::read(restored(&t, &src).join("routes.json")).unwrap() == *want,
            "version {i}"
        );
    }
    assert_code(&r.run(["check", "--read-data"]), code::OK);
}

/// A gateway export piped in twice, with one edit, is stored the second time as a small delta against
/// the first (the same stream name in the parent snapshot), and both versions dump byte for byte; a
/// stream larger than the in-memory limit still round-trips through the streaming path.
#[test]
fn stdin_exports_get_deltas_against_the_previous_export() {
    let r = Repo::init();
    let stdin_backup = |data: &[u8]| -> Value {
        let out = r
            .cmd()
            .args([
                "--json",
                "backup",
                "--stdin",
                "--stdin-filename",
                "deck.json",
            ])
            .write_stdin(data.to_vec())
            .output()
            .unwrap();
        assert_code(&out, code::OK);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v1 = config_lines(5000, 21);
    let first = stdin_backup(&v1);
    assert_eq!(u(&first, "files_new"), 1, "{first}");
    let mut v2 = v1.clone();
    let at = v2.len() / 2;
    v2[at..at + 6].copy_from_slice(b"EDITED");
    let second = stdin_backup(&v2);
    assert_eq!(u(&second, "files_changed"), 1, "{second}");
    assert!(
        u(&second, "data_added_packed") < 3000,
        "one edit of a piped export adds little: {second}"
    );
    let unchanged = stdin_backup(&v2);
    assert_eq!(u(&unchanged, "files_unchanged"), 1, "{unchanged}");
    let ids = r.snapshot_ids();
    assert_eq!(
        r.snapshots()[1]["parent"],
        ids[0].as_str(),
        "the first export is the parent"
    );
    for (i, want) in [(0, &v1), (1, &v2)] {
        let out = r
            .cmd()
            .args(["dump", &ids[i], "/deck.json"])
            .output()
            .unwrap();
        assert_code(&out, code::OK);
        assert!(out.stdout == *want, "version {i}");
    }
    // Over 8 MiB goes through the streaming path.
    let big = config_lines(160_000, 3);
    assert!(big.len() > 8 << 20);
    stdin_backup(&big);
    let out = r
        .cmd()
        .args(["dump", "latest", "/deck.json"])
        .output()
        .unwrap();
    assert!(out.stdout == big, "a large stream round-trips");
}

#[test]
fn restore_verify_reads_every_file_back() {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 9, 30);
    let mut rng = Rng::new(3);
    write(&src.join("big.bin"), rng.bytes(3 << 20));
    r.backup(&[&src], &[]);
    let out = r.scratch("out");
    let v = r.run_json(["restore", "latest", "--target", s(&out), "--verify"]);
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["files_verified"], v["files_restored"], "{v}");
    assert!(v["files_restored"].as_u64().unwrap() >= 31);
    assert_tree_eq(&src, &restored(&out, &src));
}
