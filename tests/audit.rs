//! End-to-end tests of the audit log: which commands leave entries and what the entries say, the hash
//! chain under deletion, reordering, alteration and truncation (`audit verify` and `check`), role
//! refusals, concurrent appends, masking of secrets, and repositories made before the log existed.
//!
//! Run with `cargo test --release --test audit` (after `source scripts/env`).

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use util::*;

/// Every entry as `audit --json` prints it, by seq.
fn entries(r: &Repo) -> Vec<Value> {
    match r.run_json(["audit"]) {
        Value::Array(a) => a,
        v => panic!("audit --json is not an array: {v}"),
    }
}

fn commands(r: &Repo) -> Vec<String> {
    entries(r)
        .iter()
        .map(|e| e["command"].as_str().unwrap().to_string())
        .collect()
}

/// The entry files under `audit/`, by seq.
fn entry_files(r: &Repo) -> Vec<PathBuf> {
    r.objects("audit")
}

fn entry_file(r: &Repo, seq: u64) -> PathBuf {
    r.path.join("audit").join(format!("{seq:064x}"))
}

/// The id of the key slot the repository's own key file opens.
fn current_key(r: &Repo) -> String {
    let v = r.run_json(["key", "list"]);
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .expect("a current key")["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A repository with entries init, backup, backup, forget (of the first snapshot).
fn repo_with_history() -> (Repo, Vec<String>) {
    let r = Repo::init();
    let src = r.root().join("src");
    write(&src.join("kong.yaml"), "services: [orders]\n");
    let a = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&src.join("kong.yaml"), "services: [orders, billing]\n");
    let b = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    r.run_ok(["forget", &a[..8]]);
    (r, vec![a, b])
}

/// `audit verify` exiting 1; returns its stdout.
#[track_caller]
fn verify_broken(r: &Repo) -> String {
    let out = r.run_code(code::FAILURE, ["audit", "verify"]);
    stdout(&out)
}

#[test]
fn init_backup_and_forget_are_recorded_in_order_with_key_and_objects() {
    let (r, ids) = repo_with_history();
    let key = current_key(&r);
    let e = entries(&r);
    assert_eq!(commands(&r), ["init", "backup", "backup", "forget"]);
    for (i, entry) in e.iter().enumerate() {
        assert_eq!(entry["seq"], i as u64 + 1, "{entry}");
        assert_eq!(entry["key"], key.as_str(), "{entry}");
        assert_eq!(entry["role"], "admin");
        assert_eq!(entry["result"], "success");
        assert_eq!(entry["exit"], 0);
        assert_eq!(
            entry["object"],
            format!("audit/{:064x}", i + 1).as_str(),
            "{entry}"
        );
        assert!(!entry["user"].as_str().unwrap().is_empty());
        assert!(!entry["host"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        e[0]["prev"],
        "0".repeat(64).as_str(),
        "entry 1 links to zeros"
    );
    assert!(e[1..].iter().all(|x| x["prev"] != "0".repeat(64).as_str()));
    // init wrote its key slot and the config.
    assert_eq!(strings(&e[0]["objects"]["key"]["added"]), [key.as_str()]);
    assert_eq!(strings(&e[0]["objects"]["config"]["added"]), ["config"]);
    // Each backup lists its snapshot, index file and packs as added.
    for (entry, id) in e[1..3].iter().zip(&ids) {
        assert_eq!(
            strings(&entry["objects"]["snapshot"]["added"]),
            [id.as_str()]
        );
        assert_eq!(strings(&entry["objects"]["index"]["added"]).len(), 1);
        let packs = strings(&entry["objects"]["pack"]["added"]);
        assert!(!packs.is_empty(), "{entry}");
        for p in packs {
            assert!(
                r.path.join("data").join(&p[..2]).join(&p).is_file(),
                "pack {p} is stored"
            );
        }
        assert!(entry["objects"]["lock"].is_null(), "locks are not listed");
        assert_eq!(
            strings(&entry["args"]).first().map(String::as_str),
            Some("-r")
        );
        assert!(strings(&entry["args"]).contains(&"backup".to_string()));
    }
    // forget lists the snapshot it removed, and nothing added.
    assert_eq!(
        strings(&e[3]["objects"]["snapshot"]["removed"]),
        [ids[0].clone()]
    );
    assert!(e[3]["objects"]["snapshot"]["added"].is_null());

    // The text listing shows the same, and --last N the newest N.
    let text = r.run_ok(["audit"]);
    assert!(text.contains("Seq") && text.contains("4 entries"), "{text}");
    assert!(text.contains("-1 snapshot"), "{text}");
    assert!(text.contains(&key[..8]), "{text}");
    let last: Vec<Value> = r
        .run_json(["audit", "--last", "2"])
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(last.len(), 2);
    assert_eq!(last[0]["seq"], 3);
}

#[test]
fn read_only_commands_append_nothing() {
    let (r, ids) = repo_with_history();
    let before = entry_files(&r);
    let target = r.scratch("restored");
    let src = r.root().join("src");
    let kept = &ids[1][..8];
    for args in [
        vec!["snapshots"],
        vec!["ls", kept],
        vec!["cat", "config"],
        vec!["stats"],
        vec!["check", "--no-record", "--read-data"],
        vec!["diff", kept, kept],
        vec!["key", "list"],
        vec!["restore", kept, "--target", s(&target)],
        vec!["dump", kept, s(&src.join("kong.yaml"))],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["audit"],
        vec!["audit", "verify"],
        vec!["audit", "head"],
        vec!["unlock"],
    ] {
        r.run_ok(&args);
    }
    // A failed read-only command leaves none either.
    r.run_code(code::FAILURE, ["ls", "ffffffff"]);
    assert_eq!(
        entry_files(&r),
        before,
        "read-only commands appended entries"
    );
}

#[test]
fn verify_passes_on_an_intact_chain_and_matches_audit_head() {
    let (r, _) = repo_with_history();
    let out = r.run_ok(["audit", "verify"]);
    assert!(out.contains("audit log intact: 4 entries"), "{out}");
    let head = r.run_ok(["audit", "head"]).trim().to_string();
    assert!(head.starts_with("4:") && head.len() == 2 + 64, "{head}");
    let v = r.run_json(["audit", "verify", "--head", &head]);
    assert_eq!(v["status"], "intact");
    assert_eq!(v["entries"], 4);
    assert_eq!(v["head"]["head"], head.as_str());
    assert!(v["broken"].is_null());
    // An older head kept elsewhere is still part of the chain after more commands.
    let src = r.root().join("src");
    r.backup(&[&src], &["--force"]);
    r.run_ok(["audit", "verify", "--head", &head]);
    // A head that never was fails, naming the entry.
    let bogus = format!("3:{}", "ab".repeat(32));
    let out = r.run_code(code::FAILURE, ["audit", "verify", "--head", &bogus]);
    assert!(
        stdout(&out).contains("BROKEN at entry 3"),
        "{}",
        describe(&out)
    );
    r.run_code(code::USAGE, ["audit", "verify", "--head", "nonsense"]);
    // check agrees and counts the entries.
    let out = r.run_ok(["check", "--no-record"]);
    assert!(out.contains("5 audit entries"), "{out}");
}

#[test]
fn a_deleted_entry_is_reported_as_a_gap() {
    let (r, _) = repo_with_history();
    fs::remove_file(entry_file(&r, 2)).unwrap();
    let out = verify_broken(&r);
    assert!(out.contains("BROKEN at entry 2"), "{out}");
    assert!(out.contains("entry 2 is missing"), "{out}");
    assert!(out.contains("next step: restore"), "{out}");
    assert!(out.contains("entries 1 to 1 verified"), "{out}");
}

#[test]
fn swapped_entries_are_reported_at_the_first_of_them() {
    let (r, _) = repo_with_history();
    let (f2, f3) = (entry_file(&r, 2), entry_file(&r, 3));
    let (b2, b3) = (fs::read(&f2).unwrap(), fs::read(&f3).unwrap());
    fs::write(&f2, &b3).unwrap();
    fs::write(&f3, &b2).unwrap();
    let out = verify_broken(&r);
    assert!(out.contains("BROKEN at entry 2"), "{out}");
    assert!(
        out.contains(&format!("audit/{:064x}", 2)),
        "names the object: {out}"
    );
    let v = r.run_json_code(code::FAILURE, ["audit", "verify"]);
    assert_eq!(v["status"], "broken");
    assert_eq!(v["broken"]["seq"], 2);
}

#[test]
fn one_altered_byte_is_reported() {
    let (r, _) = repo_with_history();
    let f = entry_file(&r, 3);
    let mut b = fs::read(&f).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    fs::write(&f, &b).unwrap();
    let out = verify_broken(&r);
    assert!(out.contains("BROKEN at entry 3"), "{out}");
    assert!(out.contains("altered"), "{out}");
    // The listing still shows the readable entries and flags the damaged one (exit 3).
    let out = r.run_code(3, ["audit"]);
    assert!(stdout(&out).contains("DAMAGED"), "{}", describe(&out));
}

#[test]
fn a_deleted_last_entry_is_detected_through_the_remembered_head() {
    let (r, _) = repo_with_history();
    let head = r.run_ok(["audit", "head"]).trim().to_string();
    fs::remove_file(entry_file(&r, 4)).unwrap();
    let out = verify_broken(&r);
    assert!(out.contains("BROKEN at entry 4"), "{out}");
    assert!(
        out.contains("the chain ends at seq 3 but this machine saw seq 4 with hash"),
        "{out}"
    );
    // check reports it too.
    let out = r.run_code(code::FAILURE, ["check", "--no-record"]);
    assert!(
        stdout(&out).contains("audit log broken at entry 4"),
        "{}",
        describe(&out)
    );
    // A command run meanwhile is recorded (as entry 4 again) but warns, and does not make this
    // machine forget what it saw.
    let src = r.root().join("src");
    let out = r
        .cmd()
        .args(["backup", "-q", "--force", s(&src)])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert!(
        stderr(&out).contains("no longer contains entry 4"),
        "{}",
        describe(&out)
    );
    let out = verify_broken(&r);
    assert!(out.contains("was rewritten"), "{out}");

    // Another machine (an empty cache) sees an intact chain, but not the head kept elsewhere.
    let other = r.root().join("other-cache");
    let on_other = |args: &[&str]| {
        r.bare()
            .args(["-r", s(&r.path), "--cache-dir", s(&other)])
            .args(["--key-file", s(r.key.as_ref().unwrap())])
            .args(args)
            .output()
            .unwrap()
    };
    assert_code(&on_other(&["audit", "verify"]), code::OK);
    let out = on_other(&["audit", "verify", "--head", &head]);
    assert_code(&out, code::FAILURE);
    assert!(
        stdout(&out).contains("BROKEN at entry 4"),
        "{}",
        describe(&out)
    );

    // After investigating, --reset-head accepts the current chain on this machine.
    let out = r.run_ok(["audit", "verify", "--reset-head"]);
    assert!(out.contains("now remembers head 4:"), "{out}");
    r.run_ok(["audit", "verify"]);
}

#[test]
fn a_role_refusal_is_recorded_as_refused() {
    let r = Repo::init();
    let backup_key = r.root().join("backup-key");
    r.run_ok([
        "key",
        "add",
        "--role",
        "backup",
        "--new-key-file",
        s(&backup_key),
    ]);
    let src = r.root().join("src");
    write(&src.join("f"), "x\n");
    r.backup(&[&src], &[]);
    let with_backup_key = |args: &[&str]| {
        r.cmd_no_creds()
            .args(["--key-file", s(&backup_key)])
            .args(args)
            .output()
            .unwrap()
    };
    let out = with_backup_key(&["forget", "latest"]);
    assert_code(&out, code::NOT_ALLOWED);
    let out = with_backup_key(&["--json", "key", "list"]);
    let backup_id = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A backup key may back up: recorded as its own.
    assert_code(
        &with_backup_key(&["backup", "-q", "--force", s(&src)]),
        code::OK,
    );

    let e = entries(&r);
    assert_eq!(
        commands(&r),
        ["init", "key add", "backup", "forget", "backup"]
    );
    let refused = &e[3];
    assert!(
        refused["result"].as_str().unwrap().starts_with("refused: "),
        "{refused}"
    );
    assert!(refused["result"].as_str().unwrap().contains("may not"));
    assert_eq!(refused["exit"], 13);
    assert_eq!(refused["role"], "backup");
    assert_eq!(refused["key"], backup_id.as_str());
    assert!(refused["objects"].as_object().unwrap().is_empty());
    assert_eq!(e[4]["role"], "backup");
    assert_eq!(e[4]["result"], "success");
    // key add recorded the new slot.
    assert_eq!(strings(&e[1]["objects"]["key"]["added"]), [backup_id]);
    // Every role may read the log.
    let out = with_backup_key(&["audit", "verify"]);
    assert_code(&out, code::OK);
}

#[test]
fn failed_always_audited_commands_are_recorded() {
    let r = Repo::init();
    // forget of an unknown snapshot fails before changing anything, but is recorded.
    let out = r.run_code(code::FAILURE, ["forget", "deadbeef"]);
    assert!(stderr(&out).contains("not found"), "{}", describe(&out));
    // So is removing the key in use.
    let key = current_key(&r);
    r.run_code(code::FAILURE, ["key", "remove", &key[..8]]);
    // A restore into a gateway that fails is recorded; its dry run is not.
    let src = r.root().join("src");
    write(&src.join("f"), "x\n");
    r.backup(&[&src], &[]);
    let into_gateway = [
        "restore",
        "latest",
        "--to-gateway",
        "caddy",
        "--endpoint",
        "http://127.0.0.1:9",
    ];
    r.run_code(code::FAILURE, into_gateway);
    let mut dry_run = into_gateway.to_vec();
    dry_run.push("--dry-run");
    r.run_code(code::FAILURE, &dry_run);
    let e = entries(&r);
    assert_eq!(
        commands(&r),
        ["init", "forget", "key remove", "backup", "restore"]
    );
    assert!(
        e[4]["result"].as_str().unwrap().starts_with("failed: "),
        "{}",
        e[4]
    );
    assert!(
        e[1]["result"].as_str().unwrap().starts_with("failed: "),
        "{}",
        e[1]
    );
    assert!(e[1]["result"].as_str().unwrap().contains("deadbeef"));
    assert_eq!(e[1]["exit"], 1);
    assert!(
        e[2]["result"].as_str().unwrap().contains("in use"),
        "{}",
        e[2]
    );
}

#[test]
fn concurrent_backups_never_fork_the_chain() {
    let r = Repo::init();
    let srcs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let d = r.root().join(format!("src{i}"));
            write(&d.join("f"), format!("gateway {i}\n"));
            d
        })
        .collect();
    let children: Vec<_> = srcs
        .iter()
        .map(|d| r.spawn(&["backup", "-q", s(d)], Stdio::null()))
        .collect();
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a concurrent backup failed: {status}");
    }
    let e = entries(&r);
    assert_eq!(e.len(), 5, "{e:?}");
    let seqs: Vec<u64> = e.iter().map(|x| x["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let mut prevs: Vec<&str> = e.iter().map(|x| x["prev"].as_str().unwrap()).collect();
    prevs.sort();
    prevs.dedup();
    assert_eq!(
        prevs.len(),
        5,
        "no two entries name the same predecessor (a fork)"
    );
    let mut snaps: Vec<String> = e[1..]
        .iter()
        .flat_map(|x| strings(&x["objects"]["snapshot"]["added"]))
        .collect();
    snaps.sort();
    let mut want = r.snapshot_ids();
    want.sort();
    assert_eq!(snaps, want, "each backup's entry names its own snapshot");
    r.run_ok(["audit", "verify"]);
}

#[test]
fn check_reports_a_broken_chain() {
    let (r, _) = repo_with_history();
    r.run_ok(["check", "--no-record"]);
    fs::remove_file(entry_file(&r, 2)).unwrap();
    let out = r.run_code(code::FAILURE, ["check", "--no-record"]);
    let text = stdout(&out);
    assert!(
        text.contains("error: audit log broken at entry 2"),
        "{}",
        describe(&out)
    );
    assert!(text.contains("status: Failed"), "{text}");
    let v = r.run_json_code(code::FAILURE, ["check", "--no-record"]);
    assert_eq!(v["audit_entries"], 1);
}

#[test]
fn an_entry_that_cannot_be_appended_makes_a_successful_command_partial() {
    let (r, _) = repo_with_history();
    // The last entry is damaged: a new entry cannot name its hash.
    fs::write(entry_file(&r, 4), b"damaged").unwrap();
    let src = r.root().join("src");
    let out = r
        .cmd()
        .args(["backup", "-q", "--force", s(&src)])
        .output()
        .unwrap();
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("its audit log entry could not be written"),
        "{}",
        describe(&out)
    );
    assert_eq!(r.snapshot_ids().len(), 2, "the backup itself was saved");
}

#[test]
fn secrets_never_reach_the_log() {
    const PASSWORD: &str = "Tr0ub4dor&3-gatevault";
    const TOKEN: &str = "tok-5ecr3t-value";
    const BEARER: &str = "abc.def.ghi-bearer";
    const URL_PW: &str = "s3cretpw";
    const NEW_PASSWORD: &str = "new-pass-phrase-9";
    let r = Repo::init_with_password(PASSWORD, false);
    let src = r.root().join("src");
    write(&src.join("f"), "x\n");
    let new_pw = r.root().join("new-password");
    fs::write(&new_pw, format!("{NEW_PASSWORD}\n")).unwrap();
    let with_command = |args: &[&str]| {
        let out = r
            .cmd_no_creds()
            .args(["--password-command", &format!("printf '%s' '{PASSWORD}'")])
            .args(args)
            .output()
            .unwrap();
        assert_code(&out, code::OK);
    };
    with_command(&[
        "backup",
        "-q",
        "--tag",
        &format!("api_token={TOKEN}"),
        "--description",
        &format!("Authorization: Bearer {BEARER}"),
        "--label",
        &format!("https://admin:{URL_PW}@kong.internal:8001"),
        s(&src),
    ]);
    with_command(&["key", "add", "--new-password-file", s(&new_pw)]);

    let out = r.cmd().args(["--json", "audit"]).output().unwrap();
    assert_code(&out, code::OK);
    let text = stdout(&out);
    for secret in [PASSWORD, TOKEN, BEARER, URL_PW, NEW_PASSWORD] {
        assert!(
            !text.contains(secret),
            "{secret} is in the audit log:\n{text}"
        );
    }
    let e: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(e.len(), 3, "{text}");
    let args = strings(&e[1]["args"]);
    for want in [
        "--password-command",
        "<secret>",
        "api_token=<secret>",
        "Authorization: <secret>",
        "https://admin:<secret>@kong.internal:8001",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    let args = strings(&e[2]["args"]);
    let i = args
        .iter()
        .position(|a| a == "--new-password-file")
        .unwrap();
    assert_eq!(args[i + 1], "<secret>");
    // init ran with --password-file, whose path is masked as well.
    let init_args = strings(&e[0]["args"]);
    let pw_path = s(r.password.as_ref().unwrap()).to_string();
    assert!(!init_args.contains(&pw_path), "{init_args:?}");
    assert!(init_args.contains(&"<secret>".to_string()), "{init_args:?}");
}

#[test]
fn a_repository_made_before_the_log_starts_it_at_seq_1() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    let repo = tmp.path().join("repo");
    copy_dir(&fixture.join("repo"), &repo);
    assert!(!repo.join("audit").exists(), "the fixture predates the log");
    let run = |args: &[&str]| {
        gatevault(tmp.path())
            .args(["-r", s(&repo), "--cache-dir", s(&tmp.path().join("cache"))])
            .args(["--key-file", s(&fixture.join("key"))])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--json", "audit"]);
    assert_code(&out, code::OK);
    assert_eq!(stdout(&out).trim(), "[]");
    let out = run(&["audit", "verify"]);
    assert_code(&out, code::OK);
    assert!(stdout(&out).contains("0 entries"), "{}", describe(&out));
    assert_eq!(
        stdout(&run(&["audit", "head"])).trim(),
        format!("0:{}", "0".repeat(64))
    );
    let src = tmp.path().join("src");
    write(&src.join("f"), "x\n");
    assert_code(&run(&["backup", "-q", s(&src)]), code::OK);
    let out = run(&["--json", "audit"]);
    let e: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["seq"], 1);
    assert_eq!(e[0]["prev"], "0".repeat(64).as_str());
    assert_code(&run(&["check", "--no-record"]), code::OK);
}

#[test]
fn prune_is_recorded_with_the_packs_it_deleted_and_its_dry_run_is_not() {
    let (r, _) = repo_with_history();
    r.run_ok(["prune", "--dry-run", "--max-unused", "0%"]);
    assert_eq!(entries(&r).len(), 4, "a dry run is a read");
    let before: Vec<String> = r.pack_files().iter().map(|p| file_name(p)).collect();
    r.run_ok(["prune", "--max-unused", "0%"]);
    let after: Vec<String> = r.pack_files().iter().map(|p| file_name(p)).collect();
    let e = entries(&r);
    assert_eq!(e.len(), 5);
    assert_eq!(e[4]["command"], "prune");
    let mut removed = strings(&e[4]["objects"]["pack"]["removed"]);
    removed.sort();
    let mut gone: Vec<String> = before
        .iter()
        .filter(|p| !after.contains(p))
        .cloned()
        .collect();
    gone.sort();
    assert!(
        !gone.is_empty(),
        "prune deleted a pack of the forgotten snapshot"
    );
    assert_eq!(removed, gone, "the entry lists exactly the packs deleted");
    r.run_ok(["audit", "verify"]);
}
