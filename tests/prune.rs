//! End-to-end tests of `gatevault prune` and `forget --prune`: what is freed, what is kept, the
//! `--max-unused` rule, dry runs that predict the run, refusals, and a prune stopped at every durable
//! step (the process aborts as `kill -9` would) and at random moments.
//!
//! Run with `cargo test --release --test prune` (after `source scripts/env`).

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use util::*;

/// A repository with small packs (64 KiB) holding `versions` snapshots of a changing folder: gateway
/// documents of which a fifth change each version, plus one incompressible file per version (so that
/// forgetting old versions frees whole packs). Returns the repository and a copy of each version.
fn history(versions: usize) -> (Repo, PathBuf, Vec<PathBuf>) {
    let r = Repo::new();
    r.run_ok(["init", "-q", "--pack-size", "64K"]);
    let src = r.root().join("src");
    write_gateway_tree(&src, 7, 120);
    let mut rng = Rng::new(11);
    let mut copies = Vec::new();
    for v in 0..versions {
        for i in (0..120).filter(|i| (i + v) % 5 == 0) {
            let dir = src.join("services").join(format!("changed-{}", i % 4));
            write(
                &dir.join(format!("route-{i:04}.json")),
                gateway_route(&mut rng, i),
            );
        }
        write(&src.join(format!("blob-{v}.bin")), rng.bytes(90_000));
        if v > 0 {
            fs::remove_file(src.join(format!("blob-{}.bin", v - 1))).unwrap();
        }
        r.backup(&[&src], &[]);
        let copy = r.root().join(format!("v{v}"));
        copy_dir(&src, &copy);
        copies.push(copy);
    }
    (r, src, copies)
}

fn prune_json(r: &Repo, args: &[&str]) -> Value {
    let mut a = vec!["prune"];
    a.extend_from_slice(args);
    r.run_json(&a)
}

fn pack_bytes(r: &Repo) -> u64 {
    r.pack_files()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// `check --read-data` must report Success.
#[track_caller]
fn assert_check_passes(r: &Repo) {
    let j = r.run_json(["check", "--no-record", "--read-data"]);
    assert_eq!(j["status"], "Success", "{j}");
}

/// Each kept snapshot (newest `copies.len()` ones, oldest first) restores byte-identical to its copy.
#[track_caller]
fn assert_restores(r: &Repo, src: &Path, copies: &[PathBuf]) {
    let ids = r.snapshot_ids();
    assert_eq!(ids.len(), copies.len());
    for (id, copy) in ids.iter().zip(copies) {
        let target = r.root().join(format!("restore-{}", &id[..8]));
        let _ = fs::remove_dir_all(&target);
        r.restore(id, &target, &[]);
        assert_tree_eq(&restored(&target, src), copy);
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn prune_frees_what_only_forgotten_snapshots_needed_and_the_dry_run_predicts_it() {
    let (r, src, copies) = history(8);
    let ids = r.snapshot_ids();
    r.run_ok(["forget", "--keep-last", "3"]);
    let before = pack_bytes(&r);
    let listing = r.listing();

    let dry = prune_json(&r, &["--dry-run", "--max-unused", "0%"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(r.listing(), listing, "a dry run changes nothing");
    assert!(dry["packs_deleted"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["unused_bytes"].as_u64().unwrap() > 0, "{dry}");

    let run = prune_json(&r, &["--max-unused", "0%"]);
    for k in [
        "packs_deleted",
        "packs_repacked",
        "bytes_deleted",
        "bytes_repacked",
        "blobs_moved",
        "used_blobs",
        "used_bytes",
        "unused_bytes",
    ] {
        assert_eq!(dry[k], run[k], "the dry run predicts {k}");
    }
    assert_eq!(run["unused_after"], 0, "{run}");
    let after = pack_bytes(&r);
    assert_eq!(after, run["pack_bytes_after"].as_u64().unwrap());
    assert!(
        after * 10 < before * 7,
        "five of eight versions' own data is gone: {before} -> {after}"
    );
    assert_eq!(r.objects("index").len(), 1, "one index supersedes the rest");
    assert_eq!(r.snapshot_ids(), ids[5..].to_vec());
    assert_check_passes(&r);
    assert_restores(&r, &src, &copies[5..]);

    // Nothing is left to do.
    let again = prune_json(&r, &["--max-unused", "0%"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
}

#[test]
fn max_unused_bounds_the_waste_left_and_forget_prune_does_both() {
    let (r, src, copies) = history(6);
    r.run_ok(["forget", "--keep-last", "2"]);
    // Unlimited: only packs holding nothing needed go; partly used ones stay as they are.
    let lazy = prune_json(&r, &["--max-unused", "unlimited"]);
    assert_eq!(lazy["packs_repacked"], 0, "{lazy}");
    let left = lazy["unused_after"].as_u64().unwrap();
    assert!(left > 0, "partly used packs keep unused data: {lazy}");
    // 5% (the default) repacks until at most 5% of the pack data is unused.
    let strict = prune_json(&r, &[]);
    assert!(strict["packs_repacked"].as_u64().unwrap() > 0, "{strict}");
    let unused = strict["unused_after"].as_u64().unwrap() as f64;
    let used = strict["used_bytes"].as_u64().unwrap() as f64;
    assert!(unused <= used * 5.0 / 95.0 + 1.0, "{strict}");
    assert_check_passes(&r);
    assert_restores(&r, &src, &copies[4..]);

    // forget --prune: the snapshots go and so does their data.
    let before = pack_bytes(&r);
    let out = r.run_ok([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    assert!(out.contains("removed 1 snapshots"), "{out}");
    assert!(out.contains("unused afterwards: 0 B"), "{out}");
    assert!(pack_bytes(&r) < before);
    assert_check_passes(&r);
    assert_restores(&r, &src, &copies[5..]);
}

#[test]
fn bad_limits_other_roles_and_damaged_snapshots_are_refused_without_change() {
    let (r, _src, _copies) = history(3);
    r.run_ok(["forget", "--keep-last", "1"]);
    for bad in ["100%", "-1%", "lots", "5X"] {
        let out = r.run(["prune", &format!("--max-unused={bad}")]);
        assert_code(&out, code::USAGE);
        assert!(stderr(&out).contains("--max-unused"), "{}", describe(&out));
    }
    let listing = r.listing();
    let backup_key = r.add_key("backup");
    let listing_keys = r.listing();
    let with_backup_key = |args: &[&str]| r.cmd_with_key(&backup_key).args(args).output().unwrap();
    let out = with_backup_key(&["prune"]);
    assert_code(&out, code::NOT_ALLOWED);
    assert!(stderr(&out).contains("role backup"), "{}", describe(&out));
    let out = with_backup_key(&["forget", "--keep-last", "1", "--prune"]);
    assert_code(&out, code::NOT_ALLOWED);
    assert_code(&with_backup_key(&["prune", "--dry-run"]), code::OK);
    assert_eq!(
        without_audit(r.listing()),
        without_audit(listing_keys.clone()),
        "refusals and dry runs change nothing"
    );
    assert_eq!(
        audit_entries(&r) - audit_entries_in(&listing_keys),
        2,
        "the two refusals are recorded in the audit log, the dry run is not"
    );
    assert_eq!(
        without_audit(listing).len() + 1,
        without_audit(listing_keys).len(),
        "only the new key slot"
    );

    // A snapshot that does not decrypt: its data would look unused, so prune stops.
    let snap = r.objects("snapshots")[0].clone();
    let mut b = fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 5] ^= 0x40;
    fs::write(&snap, b).unwrap();
    let listing = r.listing();
    let out = r.run(["prune"]);
    assert_code(&out, code::FAILURE);
    let err = stderr(&out);
    assert!(
        err.contains("snapshot") && err.contains("prune stops without changing anything"),
        "{}",
        describe(&out)
    );
    // Only the audit log grows: a failed prune is recorded.
    assert_eq!(without_audit(r.listing()), without_audit(listing));
}

/// A repository listing without the audit log, which records refusals and failed prunes.
fn without_audit(listing: BTreeMap<String, Option<Vec<u8>>>) -> BTreeMap<String, Option<Vec<u8>>> {
    listing
        .into_iter()
        .filter(|(k, _)| !k.starts_with("audit/"))
        .collect()
}

fn audit_entries_in(listing: &BTreeMap<String, Option<Vec<u8>>>) -> usize {
    listing
        .keys()
        .filter(|k| k.starts_with("audit/") && k.len() > "audit/".len())
        .count()
}

fn audit_entries(r: &Repo) -> usize {
    audit_entries_in(&r.listing())
}

/// After a crash: `check` passes, the same snapshots are there, a re-run completes the job, and the
/// result checks and restores.
fn assert_recovers(c: &Repo, args: &[&str], ids: &[String], src: &Path, copies: &[PathBuf]) {
    let j = c.run_json(["check", "--no-record"]);
    assert_eq!(j["status"], "Success", "{j}");
    assert_eq!(c.snapshot_ids(), ids, "no snapshot was lost");
    c.run_ok(args);
    let again = c.run_json(["prune", "--dry-run", "--max-unused", "0%"]);
    assert_eq!(
        again["packs_deleted"], 0,
        "the re-run finished the job: {again}"
    );
    assert_eq!(again["unreferenced_packs"], 0, "{again}");
    assert_check_passes(c);
    assert_restores(c, src, copies);
}

#[test]
fn prune_stopped_at_every_durable_step_leaves_a_repository_that_checks_and_finishes_on_rerun() {
    let (r, src, copies) = history(8);
    r.run_ok(["forget", "--keep-last", "3"]);
    let ids = r.snapshot_ids();
    let args = ["prune", "--max-unused", "0%"];
    let mut points = 0;
    for at in 1.. {
        let (c, crashed) = r.crashed_copy(&args, at);
        if !crashed {
            break;
        }
        points += 1;
        assert_recovers(&c, &args, &ids, &src, &copies[5..]);
    }
    assert!(points >= 20, "only {points} durable steps");
}

#[test]
fn prune_killed_at_random_moments_leaves_a_repository_that_checks_and_finishes_on_rerun() {
    let (r, src, copies) = history(8);
    r.run_ok(["forget", "--keep-last", "3"]);
    let ids = r.snapshot_ids();
    let args = ["prune", "--max-unused", "0%"];
    let mut rng = Rng::new(5);
    for _ in 0..5 {
        let c = r.copy();
        let mut child = c.spawn(&args, std::process::Stdio::null());
        std::thread::sleep(std::time::Duration::from_millis(rng.below(150)));
        let _ = child.kill();
        let _ = child.wait();
        assert_recovers(&c, &args, &ids, &src, &copies[5..]);
    }
}
