//! Graceful interruption: SIGTERM or SIGINT during a backup or a copy stops it at a safe point with
//! exit code 143 or 130, removes its lock, commits no snapshot, and leaves a repository that
//! `check --read-data` passes and that the next run completes.

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

/// Waits (bounded) until `repo` holds a pack file; panics when `child` ended first.
fn wait_for_pack(repo: &Path, child: &mut Child) {
    let t = Instant::now();
    loop {
        let data = repo.join("data");
        let any = std::fs::read_dir(&data)
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| {
                std::fs::read_dir(d.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| !f.file_name().to_string_lossy().starts_with('.'))
            });
        if any {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the command ended ({st}) before writing a pack");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no pack written within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

fn backup_cmd(r: &Repo, src: &Path) -> std::process::Command {
    let mut c = gatevault_std(r.root());
    c.arg("-r").arg(&r.path);
    c.arg("--key-file").arg(r.key.as_ref().unwrap());
    c.arg("--cache-dir").arg(&r.cache);
    c.arg("backup").arg(src);
    c
}

fn backup_stops_cleanly(signal: &str, want: i32) {
    let r = repo();
    let src = big_source(r.root(), 48);
    let mut child = spawn(backup_cmd(&r, &src));
    wait_for_pack(&r.path, &mut child);
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
    wait_for_pack(&dst.path, &mut child);
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
