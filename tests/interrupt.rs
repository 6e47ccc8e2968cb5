//! Graceful interruption: SIGTERM or SIGINT during a backup, copy, prune, `forget --prune` or
//! restore stops it at a safe point with exit code 143 or 130 and removes its lock. A backup or copy
//! commits no snapshot, a prune leaves a repository that `check --read-data` passes, a restore leaves
//! only complete files; the same command run again finishes the job.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use util::Runner;
use util::*;

/// Incompressible files enough for a backup of several seconds: `n` files of 4 MiB.
fn big_source(root: &Path, n: usize) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(7);
    for i in 0..n {
        std::fs::write(src.join(format!("blob-{i:03}.bin")), rng.bytes(4 << 20)).unwrap();
    }
    src
}

/// A repository with small packs, so that the first pack is written early.
fn repo() -> Repo {
    let r = Repo::new();
    r.run_ok(["init", "-q", "--pack-size", "1M", "--compression", "0"]);
    r
}

/// Waits (bounded) until `until` holds; panics when `child` ended first.
fn wait_while_running(child: &mut Child, what: &str, until: impl Fn() -> bool) {
    let t = Instant::now();
    while !until() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the command ended ({st}) before {what}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not within 60 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until `r` holds a pack file not in `before`; panics when `child` ended first.
fn wait_for_new_pack(r: &Repo, child: &mut Child, before: &[PathBuf]) {
    wait_while_running(child, "writing a pack", || {
        r.pack_files().iter().any(|p| !before.contains(p))
    });
}

/// Sends `signal` (`TERM`, `INT`) to `child` and returns its exit code and stderr.
fn stop(child: Child, signal: &str) -> (Option<i32>, String) {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{signal} failed");
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn(mut c: std::process::Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatevault")
}

/// `gatevault ARGS` on `r`, as a `std::process::Command` (to be signalled).
fn command(r: &Repo, args: &[&str]) -> std::process::Command {
    let mut c = gatevault_std(r.root());
    c.arg("-r").arg(&r.path);
    c.arg("--key-file").arg(r.key.as_ref().unwrap());
    c.arg("--cache-dir").arg(&r.cache);
    c.args(args);
    c
}

fn backup_stops_cleanly(signal: &str, want: i32) {
    let r = repo();
    let src = big_source(r.root(), 48);
    let mut child = spawn(command(&r, &["backup", s(&src)]));
    wait_for_new_pack(&r, &mut child, &[]);
    let (code, err) = stop(child, signal);
    assert_eq!(
        code,
        Some(want),
        "exit code after SIG{signal}; stderr:\n{err}"
    );
    assert!(
        err.contains(&format!(
            "interrupted by SIG{signal}: nothing was committed"
        )),
        "stderr says what happened: {err}"
    );
    assert!(r.objects("locks").is_empty(), "the lock was removed");
    assert!(r.snapshot_ids().is_empty(), "no snapshot was committed");
    assert!(
        !r.pack_files().is_empty(),
        "packs were written before the stop"
    );
    let out = r.run_code(code::OK, ["check", "--read-data", "--no-record"]);
    assert!(
        stdout(&out).contains("status: Success"),
        "{}",
        describe(&out)
    );
    let v = r.backup(&[&src], &[]);
    assert_eq!(v["files_new"], 48, "the next backup completes: {v}");
    assert_eq!(r.snapshot_ids().len(), 1);
    r.run_ok(["check", "--read-data", "--no-record"]);
}

#[test]
fn sigterm_during_a_backup_commits_nothing_and_exits_143() {
    backup_stops_cleanly("TERM", 143);
}

#[test]
fn sigint_during_a_backup_commits_nothing_and_exits_130() {
    backup_stops_cleanly("INT", 130);
}

#[test]
fn sigterm_during_a_copy_keeps_the_destination_consistent() {
    let src_repo = repo();
    let src = big_source(src_repo.root(), 40);
    src_repo.backup(&[&src], &[]);
    let dst = repo();
    let copy = || {
        let mut c = gatevault_std(dst.root());
        c.arg("-r").arg(&dst.path);
        c.arg("--key-file").arg(dst.key.as_ref().unwrap());
        c.arg("--cache-dir").arg(&dst.cache);
        c.args(["copy", "--from-repo", s(&src_repo.path), "--from-key-file"]);
        c.arg(src_repo.key.as_ref().unwrap());
        c
    };
    let mut child = spawn(copy());
    wait_for_new_pack(&dst, &mut child, &[]);
    let (code, err) = stop(child, "TERM");
    assert_eq!(code, Some(143), "stderr:\n{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(
        dst.objects("locks").is_empty(),
        "the destination's lock was removed"
    );
    assert!(
        src_repo.objects("locks").is_empty(),
        "the source's lock was removed"
    );
    assert!(dst.snapshot_ids().is_empty(), "no snapshot was committed");
    dst.run_ok(["check", "--read-data", "--no-record"]);
    let out = copy().output().unwrap();
    assert_code(&out, code::OK);
    assert_eq!(dst.snapshot_ids().len(), 1, "the rerun finished the copy");
    dst.run_ok(["check", "--read-data", "--no-record"]);
}

/// A repository (16 MiB packs of 4 MiB incompressible files, so that each pack holds several) with
/// two snapshots: all 48 files, then every other one. Forgetting the first leaves every pack half
/// used, so a prune with `--max-unused 0` repacks them all.
fn half_used_packs() -> (Repo, PathBuf) {
    let r = Repo::new();
    r.run_ok(["init", "-q", "--compression", "0"]);
    let src = big_source(r.root(), 48);
    r.backup(&[&src], &[]);
    for i in (0..48).step_by(2) {
        std::fs::remove_file(src.join(format!("blob-{i:03}.bin"))).unwrap();
    }
    r.backup(&[&src], &[]);
    (r, src)
}

/// SIGTERM while `args` repacks: exit 143, the lock removed, `check --read-data` passes, the kept
/// snapshot restores byte-identical, and the same command run again finishes the job.
fn prune_stops_cleanly(args: &[&str], forget_first: bool) {
    let (r, src) = half_used_packs();
    let ids = r.snapshot_ids();
    if forget_first {
        r.run_ok(["forget", &ids[0]]);
    }
    let before = r.pack_files();
    let mut child = spawn(command(&r, args));
    wait_for_new_pack(&r, &mut child, &before);
    let (code, err) = stop(child, "TERM");
    assert_eq!(code, Some(143), "stderr:\n{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(r.objects("locks").is_empty(), "the lock was removed");
    r.run_ok(["check", "--read-data", "--no-record"]);
    let kept = r.snapshot_ids();
    assert!(kept.contains(&ids[1]), "the newest snapshot is kept");
    let target = r.scratch("restored");
    r.restore(&ids[1], &target, &[]);
    assert_tree_eq(&restored(&target, &src), &src);
    // Run again: it finishes, and a third run has nothing left to repack.
    r.run_ok(args);
    assert_eq!(r.snapshot_ids(), vec![ids[1].clone()]);
    let again = r.run_json(["prune", "--dry-run", "--max-unused", "0"]);
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert_eq!(again["packs_deleted"], 0, "{again}");
    r.run_ok(["check", "--read-data", "--no-record"]);
}

#[test]
fn sigterm_during_a_prune_keeps_the_repository_consistent() {
    prune_stops_cleanly(&["prune", "--max-unused", "0"], true);
}

#[test]
fn sigterm_during_forget_prune_keeps_the_repository_consistent() {
    prune_stops_cleanly(
        &["forget", "--keep-last", "1", "--prune", "--max-unused", "0"],
        false,
    );
}

/// SIGTERM during a restore: exit 143, every file left in the target is complete and
/// byte-identical, the lock is removed, and a second restore completes the target.
#[test]
fn sigterm_during_a_restore_leaves_only_complete_files() {
    let r = repo();
    let src = big_source(r.root(), 48);
    r.backup(&[&src], &[]);
    let target = r.scratch("target");
    let mut child = spawn(command(&r, &["restore", "latest", "--target", s(&target)]));
    let files = |t: &Path| -> Vec<PathBuf> {
        let dir = restored(t, &src);
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    wait_while_running(&mut child, "creating a file", || !files(&target).is_empty());
    let (code, err) = stop(child, "TERM");
    assert_eq!(code, Some(143), "stderr:\n{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(r.objects("locks").is_empty(), "the lock was removed");
    let left = files(&target);
    assert!(
        left.len() < 48,
        "stopped before the end: {} files",
        left.len()
    );
    for f in &left {
        let want = std::fs::read(src.join(f.file_name().unwrap())).unwrap();
        assert!(
            std::fs::read(f).unwrap() == want,
            "{} is left incomplete or wrong",
            f.display()
        );
    }
    r.restore("latest", &target, &[]);
    assert_tree_eq(&restored(&target, &src), &src);
}
