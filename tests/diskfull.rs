//! A full disk: the repository on a small tmpfs (mounting one needs root; the test is skipped, with a
//! note, otherwise). A filler file leaves little room, at several sizes so that the space runs out in
//! different phases of the backup (packs, index, snapshot); each backup fails with an error that
//! names the file and says the disk is full, nothing stored earlier is damaged (`check --read-data`
//! passes, every earlier snapshot restores byte-identical), and once the filler is gone the same
//! backup succeeds.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(unused_imports)]
use util::Runner;
use util::*;

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        if !out.status.success() {
            assert!(
                std::env::var("GATEVAULT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "mount -t tmpfs failed as root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "SKIPPED: mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Self(at.to_path_buf()))
    }

    /// Free bytes on the file system.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_cleanly_and_the_next_one_succeeds() {
    let holder = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&holder.path().join("mnt"), "64m") else {
        return;
    };
    // The repository on the tmpfs; key, cache and sources elsewhere.
    let key = holder.path().join("key");
    let cache = holder.path().join("cache");
    let repo = fs.0.join("repo");
    let run = |args: &[&str]| {
        gatevault_std(holder.path())
            .arg("-r")
            .arg(&repo)
            .arg("--key-file")
            .arg(&key)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["init", "-q", "--pack-size", "1M"]);
    let small = holder.path().join("small");
    write_gateway_tree(&small, 5, 60);
    ok(&["backup", "-q", s(&small)]);
    let small_id = snapshot_ids(&ok(&["--json", "snapshots"])).remove(0);
    let restores_as = |id: &str, src: &Path| {
        let target = holder.path().join("restore");
        let _ = std::fs::remove_dir_all(&target);
        ok(&["restore", "-q", id, "--target", s(&target)]);
        assert_tree_eq(&restored(&target, src), src);
    };
    // 8 MiB of incompressible data plus a gateway tree: packs, an index file and a snapshot.
    let big = holder.path().join("big");
    write_gateway_tree(&big, 6, 80);
    let filler = fs.0.join("filler");
    let mut rng = Rng::new(9);
    let mut failures = 0;
    // Leave this much room (KiB), then back up `big`.
    for room_kib in [0u64, 64, 1024, 4096, 7168, 8256, 8320, 8384, 8416, 8448] {
        // New data each round (what the repository holds already would only be deduplicated).
        write(&big.join("blob.bin"), rng.bytes(8 << 20));
        let free = fs.free();
        let fill = free.saturating_sub(room_kib * 1024);
        write(&filler, rng.bytes(fill as usize));
        let before = snapshot_ids(&ok(&["--json", "snapshots"]));
        let out = run(&["backup", "-q", s(&big)]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        if out.status.success() {
            // Enough room after all: a committed snapshot, which must be whole.
            eprintln!("room {room_kib} KiB: the backup fit");
        } else {
            failures += 1;
            assert_eq!(out.status.code(), Some(code::FAILURE), "{err}");
            assert!(
                err.contains("the disk is full: free space, then run the command again"),
                "room {room_kib} KiB: {err}"
            );
            assert!(err.contains(s(&repo)), "the error names the file: {err}");
            let after = snapshot_ids(&ok(&["--json", "snapshots"]));
            assert_eq!(after, before, "no snapshot was committed");
            eprintln!("room {room_kib} KiB: failed cleanly: {}", err.trim());
        }
        // Nothing stored earlier is damaged.
        std::fs::remove_file(&filler).unwrap();
        let check: serde_json::Value =
            serde_json::from_str(&ok(&["--json", "check", "--no-record", "--read-data"])).unwrap();
        assert_eq!(check["status"], "Success", "{check}");
        restores_as(&small_id, &small);
        assert!(
            !std::fs::read_dir(repo.join("locks")).unwrap().any(|_| true),
            "no lock left behind"
        );
        // With the space back, the backup succeeds and every snapshot restores.
        ok(&["backup", "-q", s(&big)]);
        restores_as("latest", &big);
        // Keep the repository small for the next round.
        ok(&[
            "forget",
            "-q",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "0",
        ]);
    }
    assert!(failures >= 3, "only {failures} backups ran out of space");
    restores_as(&small_id, &small);
}

fn snapshot_ids(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).expect("snapshots --json");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}
