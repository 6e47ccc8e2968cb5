//! End-to-end tests of `gatevault forget`: a repository whose snapshots have controlled times
//! (`backup --time`), policies in dry runs and for real, removal by id, key roles, future times, and
//! restores of what is kept.
//!
//! Run with `cargo test --release --test forget` (after `source scripts/env`).

mod util;

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use util::*;

/// A repository with one snapshot of `<tmp>/src` per time, each with its own content of `src/f`
/// (`content(time)`); returns the repository, the source folder and the snapshot ids by time.
fn repo_at(times: &[&str], extra: &[&str]) -> (Repo, PathBuf, Vec<(String, String)>) {
    let r = Repo::init();
    let src = r.root().join("src");
    let mut ids = Vec::new();
    for t in times {
        write(&src.join("f"), content(t));
        let mut args = vec!["--time", t];
        args.extend_from_slice(extra);
        let v = r.backup(&[&src], &args);
        ids.push((
            t.to_string(),
            v["snapshot_id"].as_str().unwrap().to_string(),
        ));
    }
    (r, src, ids)
}

fn content(time: &str) -> String {
    format!("{{\"route\": \"orders\", \"captured\": \"{time}\"}}\n")
}

/// The ids of the snapshots listed, sorted.
fn listed(r: &Repo) -> Vec<String> {
    let mut v = r.snapshot_ids();
    v.sort();
    v
}

fn ids_of(ids: &[(String, String)], times: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = times
        .iter()
        .map(|t| ids.iter().find(|(x, _)| x == t).unwrap().1.clone())
        .collect();
    v.sort();
    v
}

/// A snapshot id with the reasons it is kept.
type Kept = (String, Vec<String>);

/// `forget --json` groups: (keep ids with reasons, remove ids) of each.
fn groups(v: &Value) -> Vec<(Vec<Kept>, Vec<String>)> {
    v.as_array()
        .expect("a list of groups")
        .iter()
        .map(|g| {
            let keep = g["keep"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let reasons = s["reasons"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect();
                    (s["id"].as_str().unwrap().to_string(), reasons)
                })
                .collect();
            let remove = g["remove"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect();
            (keep, remove)
        })
        .collect()
}

const YEAR_END: &[&str] = &[
    "2024-12-28T12:00:00Z", // 2024-W52
    "2024-12-29T12:00:00Z", // 2024-W52
    "2024-12-30T12:00:00Z", // 2025-W01
    "2025-01-02T12:00:00Z", // 2025-W01
    "2025-01-06T12:00:00Z", // 2025-W02
];

#[test]
fn dry_run_shows_the_policy_and_changes_nothing() {
    let (r, _src, ids) = repo_at(YEAR_END, &[]);
    let before = listed(&r);
    let out = r.run_ok(["forget", "--keep-weekly", "2", "--dry-run"]);
    assert!(
        out.contains("Applying policy: keep 2 weekly snapshots"),
        "{out}"
    );
    assert!(out.contains("keep 2 snapshots:"), "{out}");
    assert!(out.contains("remove 3 snapshots:"), "{out}");
    assert!(out.contains("weekly snapshot"), "{out}");
    assert!(out.contains("would remove 3 snapshots"), "{out}");
    for (_, id) in &ids[3..] {
        assert!(out.contains(&id[..8]), "{id} listed\n{out}");
    }
    assert_eq!(listed(&r), before, "a dry run removes nothing");

    // JSON: one group (host and paths) with the kept snapshots and their reasons.
    let v = r.run_json(["forget", "--keep-weekly", "3", "-n"]);
    let g = groups(&v);
    assert_eq!(g.len(), 1, "{v}");
    let mut keep: Vec<String> = g[0].0.iter().map(|(id, _)| id.clone()).collect();
    keep.sort();
    // December 30 shares the ISO week 2025-W01 with January 2.
    assert_eq!(keep, ids_of(&ids, &[YEAR_END[1], YEAR_END[3], YEAR_END[4]]));
    assert!(g[0].0.iter().all(|(_, r)| r == &["weekly snapshot"]), "{v}");
    let mut remove = g[0].1.clone();
    remove.sort();
    assert_eq!(remove, ids_of(&ids, &[YEAR_END[0], YEAR_END[2]]));
    assert!(v[0]["group"]["host"].is_string(), "{v}");
    assert_eq!(listed(&r), before);
}

#[test]
fn removal_keeps_what_the_policy_says_and_kept_snapshots_restore() {
    let times = [
        "2025-01-01T08:00:00Z",
        "2025-01-01T20:00:00Z",
        "2025-01-02T09:00:00Z",
        "2025-01-03T07:00:00Z",
        "2025-01-03T22:00:00Z",
        "2025-02-10T10:00:00Z",
    ];
    let (r, src, ids) = repo_at(&times, &[]);
    let out = r.run_ok(["forget", "--keep-daily", "3", "--keep-monthly", "2"]);
    assert!(out.contains("removed 3 snapshots"), "{out}");
    assert!(
        out.contains("prune"),
        "the output says data stays until a prune\n{out}"
    );
    // Daily: February 10, January 3 (the 22:00 one), January 2; monthly: February 10 and January 3
    // again. Both counts are used up before the oldest snapshot, so it is not kept as "oldest".
    let kept_daily_monthly = [times[2], times[4], times[5]];
    assert_eq!(listed(&r), ids_of(&ids, &kept_daily_monthly), "{out}");
    assert!(
        r.objects("locks").is_empty(),
        "the exclusive lock is released"
    );
    // Every kept snapshot still restores, with its own content; data was not touched.
    for t in kept_daily_monthly {
        let id = &ids_of(&ids, &[t])[0];
        let target = r.scratch(&format!("restore-{}", &id[..8]));
        r.restore(id, &target, &[]);
        let got = fs::read_to_string(restored(&target, &src).join("f")).unwrap();
        assert_eq!(got, content(t), "snapshot of {t}");
    }
    r.run_ok(["check", "-q"]);
    // Running the same policy again removes nothing more.
    let out = r.run_ok(["forget", "--keep-daily", "3", "--keep-monthly", "2"]);
    assert!(out.contains("no snapshots to remove"), "{out}");
}

#[test]
fn snapshots_named_by_id_are_removed_exactly() {
    let (r, _src, ids) = repo_at(&YEAR_END[..3], &[]);
    let out = r.run_ok(["forget", &ids[0].1[..10], &ids[2].1]);
    assert!(out.contains("removed 2 snapshots"), "{out}");
    assert_eq!(listed(&r), vec![ids[1].1.clone()]);
    // Ids and a policy together are refused.
    let out = r.run_code(code::FAILURE, ["forget", &ids[1].1, "--keep-last", "1"]);
    assert!(stderr(&out).contains("not both"), "{}", describe(&out));
    // An unknown id names itself.
    let out = r.run_code(code::FAILURE, ["forget", "ffffffff"]);
    assert!(stderr(&out).contains("ffffffff"), "{}", describe(&out));
    assert_eq!(listed(&r), vec![ids[1].1.clone()]);
}

#[test]
fn empty_and_invalid_policies_are_refused() {
    let (r, _src, ids) = repo_at(&YEAR_END[..2], &[]);
    for args in [&["forget"][..], &["forget", "--keep-last", "0"]] {
        let out = r.run_code(code::FAILURE, args);
        assert!(stderr(&out).contains("no policy"), "{}", describe(&out));
    }
    for args in [
        &["forget", "--keep-within", "1w"][..],
        &["forget", "--keep-daily", "-2"],
        &["forget", "--keep-last", "1", "--group-by", "colour"],
    ] {
        r.run_code(code::USAGE, args);
    }
    assert_eq!(listed(&r).len(), ids.len());
    // -1 and `unlimited` keep everything.
    for n in ["-1", "unlimited"] {
        let out = r.run_ok(["forget", "--keep-last", n]);
        assert!(out.contains("no snapshots to remove"), "{out}");
    }
}

#[test]
fn a_key_that_is_not_admin_is_refused_before_anything_is_removed() {
    let (r, _src, ids) = repo_at(YEAR_END, &[]);
    let backup_key = r.add_key("backup");
    let with_backup_key = |args: &[&str]| r.cmd_with_key(&backup_key).args(args).output().unwrap();
    let out = with_backup_key(&["forget", "--keep-last", "1"]);
    assert_code(&out, code::NOT_ALLOWED);
    let err = stderr(&out);
    assert!(
        err.contains("role backup") && err.contains("admin key"),
        "{}",
        describe(&out)
    );
    let out = with_backup_key(&["forget", &ids[0].1]);
    assert_code(&out, code::NOT_ALLOWED);
    assert_eq!(listed(&r).len(), ids.len(), "nothing was removed");
    assert!(r.objects("locks").is_empty(), "no lock was taken");
    // A dry run only reads, so it is allowed.
    let out = with_backup_key(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_code(&out, code::OK);
    assert!(
        stdout(&out).contains("would remove 4 snapshots"),
        "{}",
        describe(&out)
    );
    // Changing keys is refused the same way.
    let out = with_backup_key(&["key", "add", "--new-key-file", s(&r.root().join("k3"))]);
    assert_code(&out, code::NOT_ALLOWED);
    // The admin key may.
    r.run_ok(["forget", "--keep-last", "1"]);
    assert_eq!(listed(&r), vec![ids[4].1.clone()]);
}

#[test]
fn future_snapshots_are_kept_reported_and_not_counted() {
    let (r, _src, ids) = repo_at(
        &[
            "2025-01-01T12:00:00Z",
            "2025-01-02T12:00:00Z",
            "2999-01-01T00:00:00Z",
        ],
        &[],
    );
    let out = r.run(["forget", "--keep-last", "1"]);
    assert_code(&out, code::OK);
    assert!(
        stderr(&out).contains("in the future") && stderr(&out).contains(&ids[2].1[..8]),
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains("time in the future"),
        "{}",
        describe(&out)
    );
    // The forged snapshot did not take the one slot of --keep-last: the newest real one is kept.
    assert_eq!(
        listed(&r),
        ids_of(&ids, &["2025-01-02T12:00:00Z", "2999-01-01T00:00:00Z"])
    );
}

#[test]
fn policies_apply_per_group_and_standard_combines() {
    let r = Repo::init();
    let src = r.root().join("src");
    write(&src.join("f"), "x");
    let mut by_host: Vec<(String, String)> = Vec::new();
    for (host, t) in [
        ("a", "2025-01-01T12:00:00Z"),
        ("b", "2025-01-02T12:00:00Z"),
        ("a", "2025-01-03T12:00:00Z"),
        ("b", "2025-01-04T12:00:00Z"),
    ] {
        let v = r.backup(
            &[&src],
            &["--host", host, "--time", t, "--tag", "Environment=prod"],
        );
        by_host.push((host.into(), v["snapshot_id"].as_str().unwrap().into()));
    }
    let v = r.run_json(["forget", "--keep-last", "1", "-n"]);
    assert_eq!(groups(&v).len(), 2, "one group per host: {v}");
    let v = r.run_json(["forget", "--keep-last", "1", "--group-by", "", "-n"]);
    let g = groups(&v);
    assert_eq!(g.len(), 1, "{v}");
    assert_eq!(g[0].0.len(), 1, "{v}");
    // Filters narrow what the policy sees.
    let v = r.run_json(["forget", "--keep-last", "1", "--host", "a", "-n"]);
    let g = groups(&v);
    assert_eq!((g.len(), g[0].0.len(), g[0].1.len()), (1, 1, 1), "{v}");
    // --policy standard with --keep-daily overriding its 30 daily.
    let out = r.run_ok(["forget", "--policy", "standard", "--keep-daily", "1", "-n"]);
    assert!(
        out.contains("Applying policy: keep 1 daily, 12 weekly, 12 monthly snapshots"),
        "{out}"
    );
    let v = r.run_json(["forget", "--policy", "standard", "--keep-daily", "1", "-n"]);
    for (keep, remove) in groups(&v) {
        assert!(remove.is_empty(), "{v}");
        assert_eq!(keep.len(), 2, "{v}");
        assert!(keep[1].1.contains(&"daily snapshot".to_string()), "{v}");
        // Both snapshots of a host are in 2025-W01: the older is kept as the oldest, since the
        // weekly and monthly counts are not used up.
        assert_eq!(
            keep[0].1,
            ["oldest weekly snapshot", "oldest monthly snapshot"],
            "{v}"
        );
    }
    // --keep-tag keeps the tagged snapshots of each group.
    let out = r.run_ok(["forget", "--keep-tag", "Environment=prod", "-n"]);
    assert!(out.contains("no snapshots to remove"), "{out}");
    assert!(out.contains("has tags [Environment=prod]"), "{out}");
}

#[test]
fn a_read_only_key_may_restore_files_but_not_back_up() {
    let (r, src, ids) = repo_at(YEAR_END, &[]);
    let restore_key = r.root().join("restore-key");
    r.run_ok([
        "key",
        "add",
        "--new-key-file",
        s(&restore_key),
        "--role",
        "restore",
    ]);
    let with_key = |args: &[&str]| {
        r.cmd_no_creds()
            .args(["--key-file", s(&restore_key)])
            .args(args)
            .output()
            .unwrap()
    };
    let out = with_key(&["backup", s(&src)]);
    assert_code(&out, code::NOT_ALLOWED);
    assert!(stderr(&out).contains("role restore"), "{}", describe(&out));
    assert_eq!(listed(&r).len(), ids.len(), "no snapshot was added");
    let target = r.root().join("restored");
    assert_code(
        &with_key(&["restore", "latest", "--target", s(&target)]),
        code::OK,
    );
}
