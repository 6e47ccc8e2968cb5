//! Crash points and power loss: every command that changes a repository (or a gateway) is stopped at
//! each of its durable steps (`GATEVAULT_CRASH_AT=N`: the process aborts like `kill -9` right after its
//! N-th durable write or removal, or entity applied to a gateway) and at random moments with a real
//! SIGKILL; the library's backup, forget and prune are cut by a simulated power loss that drops what
//! was not yet fsynced. After each stop: `check` passes, no snapshot committed before is lost, every
//! listed snapshot restores completely and byte-identical, and running the command again finishes
//! the job. See `docs/reliability-crash.md`.
//!
//! The number of random kills per command is 20 here; `scripts/stress crash --points N` runs the same
//! tests with `GATEVAULT_STRESS_POINTS=N`. Commands already stopped at every durable step elsewhere
//! (prune in `tests/prune.rs`, erase in `tests/erase.rs`, copy in `tests/copy.rs`, key rotate and
//! rewrite in `tests/keys.rs`, backup killed at random in `tests/cli.rs`) get the other half here.

mod util;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatevault::backend::local::LocalBackend;
use gatevault::backend::powercut::{self, Cut, OpLog};
use gatevault::backend::Backend;
use gatevault::repo::{Credentials, Repository};
use serde_json::Value;
use util::crash::*;
use util::*;

/// Random kill points per command in CI.
const CI_KILLS: usize = 20;

/// A repository with `n` backups of a small gateway tree (changed between backups) and the tree.
fn history(n: usize) -> (Repo, PathBuf) {
    let r = Repo::init();
    let src = r.root().join("src");
    write_gateway_tree(&src, 0xC4A5, 12);
    for v in 0..n {
        change(&src, v as u64);
        r.backup(&[&src], &[]);
    }
    (r, src)
}

/// Rewrites two files and adds one of fresh bytes, so that the next backup stores new blobs.
fn change(src: &Path, v: u64) {
    let mut rng = Rng::new(0xBEEF ^ v);
    write(
        &src.join(format!("plugins/added-{v}.json")),
        format!("{{\"v\": {v}, \"pad\": \"{}\"}}\n", hex(&rng.bytes(3000))),
    );
    write(
        &src.join("plugins/route-0000.json"),
        format!(
            "{{\"version\": {v}, \"r\": \"{}\"}}\n",
            hex(&rng.bytes(200))
        ),
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `prune --dry-run --max-unused 0%` finds nothing to delete: a prune (or forget --prune) finished.
#[track_caller]
fn assert_pruned(c: &Repo) {
    let again = c.run_json(["prune", "--dry-run", "--max-unused", "0%"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["unreferenced_packs"], 0, "{again}");
}

// ------------------------------------------------------------------------------ backup

#[test]
fn backup_stopped_at_every_durable_step_keeps_the_history_and_a_rerun_commits() {
    let (r, src) = history(2);
    let expected = Expected::of(&r);
    change(&src, 99);
    let args = ["backup", "-q", s(&src)];
    let steps = every_step("backup", &r, &args, |c, at| {
        assert_invariants(c, &expected, &[], Added::Source(&src), at % 4 == 0);
        c.run_ok(args);
        let ids = c.snapshot_ids();
        let t = c.scratch("after-rerun");
        c.restore(ids.last().unwrap(), &t, &[]);
        assert_tree_eq(&src, &restored(&t, &src));
    });
    eprintln!("backup: {steps} durable steps");
}

#[test]
fn backup_killed_at_random_moments_keeps_the_history_and_a_rerun_commits() {
    // `tests/cli.rs` kills a bigger backup at 20 random moments; a few more here, many under stress.
    let (r, src) = history(2);
    let expected = Expected::of(&r);
    change(&src, 99);
    let args = ["backup", "-q", s(&src)];
    random_kills(
        "backup",
        &r,
        &args,
        stress_points(3),
        stress_seed(),
        |c, _| {
            assert_invariants(c, &expected, &[], Added::Source(&src), false);
            c.run_ok(args);
            let j = c.run_json(["check", "--no-record"]);
            assert_eq!(j["status"], "Success", "{j}");
        },
    );
}

// ------------------------------------------------------------------------------ forget

/// After a stopped forget (with `--prune`: and prune): the invariants, then a rerun leaves exactly the
/// kept snapshots (and, with `--prune`, nothing to prune).
fn forget_recovers(c: &Repo, args: &[&str], expected: &Expected, keep: &[String], read_data: bool) {
    let gone: Vec<String> = expected
        .ids()
        .into_iter()
        .filter(|i| !keep.contains(i))
        .collect();
    assert_invariants(c, expected, &gone, Added::None, read_data);
    c.run_ok(args);
    let mut now = c.snapshot_ids();
    now.sort();
    let mut want = keep.to_vec();
    want.sort();
    assert_eq!(
        now, want,
        "the rerun removed exactly the forgotten snapshots"
    );
    if args.contains(&"--prune") {
        assert_pruned(c);
    }
    let j = c.run_json(["check", "--no-record"]);
    assert_eq!(j["status"], "Success", "{j}");
}

fn forget_suite(prune: bool) {
    let (r, _src) = history(4);
    let expected = Expected::of(&r);
    let keep: Vec<String> = r.snapshot_ids()[2..].to_vec();
    let mut args = vec!["forget", "--keep-last", "2"];
    if prune {
        args.extend(["--prune", "--max-unused", "0%"]);
    }
    let name = if prune { "forget --prune" } else { "forget" };
    let steps = every_step(name, &r, &args, |c, at| {
        forget_recovers(c, &args, &expected, &keep, at % 4 == 0)
    });
    assert!(steps >= 3, "{name}: only {steps} steps");
    random_kills(
        name,
        &r,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| forget_recovers(c, &args, &expected, &keep, false),
    );
}

#[test]
fn forget_stopped_at_every_step_and_killed_at_random_keeps_what_it_keeps_and_a_rerun_finishes() {
    forget_suite(false);
}

#[test]
fn forget_prune_stopped_at_every_step_and_killed_at_random_recovers_and_a_rerun_finishes() {
    forget_suite(true);
}

// ------------------------------------------------------------------------------ prune

#[test]
fn prune_killed_at_random_moments_recovers_and_a_rerun_finishes() {
    // Every durable step of prune: `tests/prune.rs`.
    let (r, _src) = history(4);
    r.run_ok(["forget", "--keep-last", "2"]);
    let expected = Expected::of(&r);
    let args = ["prune", "--max-unused", "0%"];
    random_kills(
        "prune",
        &r,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| {
            assert_invariants(c, &expected, &[], Added::None, false);
            c.run_ok(args);
            assert_pruned(c);
            let j = c.run_json(["check", "--no-record", "--read-data"]);
            assert_eq!(j["status"], "Success", "{j}");
        },
    );
}

// ------------------------------------------------------------------------------ erase

fn kong_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateways/kong/kong.yaml")
}

#[test]
fn erase_killed_at_random_moments_recovers_and_a_rerun_finishes() {
    // Durable steps across the whole job: `tests/erase.rs`.
    let r = Repo::init();
    let text = std::fs::read_to_string(kong_fixture()).unwrap();
    for v in 0..3 {
        let f = r.root().join(format!("kong-{v}.yaml"));
        std::fs::write(
            &f,
            text.replace("port: 8080", &format!("port: {}", 8080 + v)),
        )
        .unwrap();
        r.run_ok(["backup", "-q", "--gateway", "kong", "--file", s(&f)]);
    }
    let times: Vec<Value> = r.snapshots().iter().map(|s| s["time"].clone()).collect();
    let args = ["erase", "--subject", "kong:consumer=alice"];
    random_kills(
        "erase",
        &r,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| {
            let j = c.run_json(["check", "--no-record"]);
            assert_eq!(j["status"], "Success", "{j}");
            // Every snapshot is there: as the original, its rewrite, or both.
            let mut now: Vec<Value> = c.snapshots().iter().map(|s| s["time"].clone()).collect();
            now.dedup();
            assert_eq!(now, times);
            let again = c.run_json(args);
            let done = again["already_erased"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            assert!(done || again["scan"]["status"] == "clean", "{again}");
            assert_eq!(c.snapshots().len(), times.len());
            let j = c.run_json(["check", "--no-record", "--read-data"]);
            assert_eq!(j["status"], "Success", "{j}");
        },
    );
}

// ------------------------------------------------------------------------------ copy

#[test]
fn copy_killed_at_random_moments_leaves_a_destination_that_checks_and_a_rerun_finishes() {
    // Every durable step of copy: `tests/copy.rs`.
    let (a, _src) = history(2);
    let want = Expected::of(&a);
    let b = Repo::init();
    let key = a.key.clone().unwrap();
    let args = [
        "copy",
        "--from-repo",
        s(&a.path),
        "--from-key-file",
        s(&key),
    ];
    random_kills(
        "copy",
        &b,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| {
            assert_invariants(c, &Expected::none(), &[], Added::Any, false);
            c.run_ok(args);
            // One copy of each source snapshot, each restoring to the source's restore.
            let snaps = c.snapshots();
            let mut origins: Vec<String> = snaps
                .iter()
                .map(|s| s["origin"]["snapshot"].as_str().unwrap().to_string())
                .collect();
            origins.sort();
            assert_eq!(origins, want.ids());
            for s in &snaps {
                let t = c.scratch(&format!("copied-{}", &s["id"].as_str().unwrap()[..8]));
                c.restore(s["id"].as_str().unwrap(), &t, &[]);
                assert_tree_eq(&want.refs[s["origin"]["snapshot"].as_str().unwrap()], &t);
            }
            let j = c.run_json(["check", "--no-record", "--read-data"]);
            assert_eq!(j["status"], "Success", "{j}");
        },
    );
}

// ------------------------------------------------------------------------------ keys

fn key_ids(r: &Repo) -> Vec<String> {
    let v = r.run_json(["key", "list"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `key` opens the repository.
fn opens_with_key(r: &Repo, key: &Path) -> bool {
    let out = r.cmd_with_key(key).args(["snapshots"]).output().unwrap();
    match out.status.code() {
        Some(code::OK) => true,
        Some(code::WRONG_PASSWORD) => false,
        _ => panic!("{}", describe(&out)),
    }
}

#[test]
fn key_add_stopped_at_every_step_and_killed_at_random_recovers_and_a_rerun_adds_the_key() {
    let (r, _src) = history(1);
    let expected = Expected::of(&r);
    let slots = key_ids(&r).len();
    let new_key = r.root().join("added-key");
    let args = [
        "key",
        "add",
        "--new-key-file",
        s(&new_key),
        "--role",
        "backup",
    ];
    let verify = |c: &Repo| {
        assert_invariants(c, &expected, &[], Added::None, false);
        // The key file lives outside the repository: the copy's command created (or found) it.
        let n = key_ids(c).len();
        assert!(n == slots || n == slots + 1, "{n} slots");
        c.run_ok(args);
        assert!(opens_with_key(c, &new_key));
        assert!(key_ids(c).len() <= slots + 2);
    };
    let steps = every_step("key add", &r, &args, |c, _| verify(c));
    eprintln!("key add: {steps} durable steps");
    random_kills(
        "key add",
        &r,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| verify(c),
    );
}

#[test]
fn key_remove_stopped_at_every_step_and_killed_at_random_recovers_and_the_key_ends_removed() {
    let (r, _src) = history(1);
    let victim = r.add_key("backup");
    let expected = Expected::of(&r);
    let before = key_ids(&r);
    let gone = key_ids(&r)
        .into_iter()
        .find(|k| {
            let v = r.run_json(["key", "list"]);
            v.as_array()
                .unwrap()
                .iter()
                .any(|x| x["id"] == k.as_str() && x["role"] == "backup")
        })
        .expect("the backup key is listed");
    let args = ["key", "remove", &gone[..8]];
    let verify = |c: &Repo| {
        assert_invariants(c, &expected, &[], Added::None, false);
        let now = key_ids(c);
        let present = now.contains(&gone);
        assert_eq!(now.len(), before.len() - usize::from(!present), "{now:?}");
        assert_eq!(opens_with_key(c, &victim), present);
        // The rerun removes it; when it is already gone, the rerun says so.
        let out = c.run(args);
        if present {
            assert_code(&out, code::OK);
        } else {
            assert_code(&out, code::FAILURE);
            assert!(stderr(&out).contains(&gone[..8]), "{}", describe(&out));
        }
        assert!(!key_ids(c).contains(&gone));
        assert!(!opens_with_key(c, &victim));
    };
    every_step("key remove", &r, &args, |c, _| verify(c));
    random_kills(
        "key remove",
        &r,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| verify(c),
    );
}

/// Whether the password in file `pw` opens the repository.
fn opens_with_password(r: &Repo, pw: &Path) -> bool {
    let out = r
        .cmd_no_creds()
        .args(["--password-file", s(pw), "snapshots"])
        .output()
        .unwrap();
    match out.status.code() {
        Some(code::OK) => true,
        Some(code::WRONG_PASSWORD) => false,
        _ => panic!("{}", describe(&out)),
    }
}

#[test]
fn key_passwd_stopped_at_every_step_and_killed_at_random_never_locks_out_and_a_rerun_finishes() {
    let r = Repo::init_with_password("old password", false);
    let src = r.root().join("src");
    write_gateway_tree(&src, 3, 6);
    r.backup(&[&src], &[]);
    let expected = Expected::of(&r);
    let old = r.password.clone().unwrap();
    let new = r.root().join("new-password");
    std::fs::write(&new, "new password\n").unwrap();
    let args = ["key", "passwd", "--new-password-file", s(&new)];
    let verify = |c: &Repo| {
        // The old slot is removed only after the new one is stored: never neither.
        let (o, n) = (opens_with_password(c, &old), opens_with_password(c, &new));
        assert!(o || n, "neither password opens the repository");
        let mut d = c.copy();
        d.password = Some(if o { old.clone() } else { new.clone() });
        assert_invariants(&d, &expected, &[], Added::None, false);
        // The rerun (with the old password, as the command was given) finishes; with the old slot
        // already gone it is refused as a wrong password and there is nothing left to do.
        let out = c.run(args);
        assert_code(&out, if o { code::OK } else { code::WRONG_PASSWORD });
        assert!(opens_with_password(c, &new));
        assert!(!opens_with_password(c, &old));
    };
    every_step("key passwd", &r, &args, |c, _| verify(c));
    random_kills(
        "key passwd",
        &r,
        &args,
        stress_points(CI_KILLS),
        stress_seed(),
        |c, _| verify(c),
    );
}

// ------------------------------------------------------------------------------ gateway restore

/// Puts the fake Kong in the state a restore starts from: empty but for a stray service.
fn wreck(kong: &Service) {
    let out = http(&kong.url(), "POST", "/_fake/reset", "").unwrap();
    assert_eq!(out.0, 204, "{out:?}");
    kong_send(
        "POST",
        &format!("{}/services", kong.url()),
        &serde_json::json!({"name": "stray", "host": "stray.svc"}),
    );
}

#[test]
fn kong_restore_stopped_after_every_entity_and_killed_at_random_ends_in_the_snapshot_state() {
    let Some(kong) = fake_kong(&[]) else {
        return;
    };
    let deck: Value =
        gatevault::gateway::canonical::parse_json_or_yaml(&std::fs::read(kong_fixture()).unwrap())
            .unwrap();
    kong_load(&kong.url(), &deck);
    let r = Repo::init();
    let v = r.run_json(["backup", "--gateway", "kong", "--endpoint", &kong.url()]);
    let snap = v["snapshot_id"].as_str().unwrap().to_string();
    let before = r.snapshot_ids();
    let url = kong.url();
    let reports = r.root().join("reports");
    let args = [
        "restore",
        &snap,
        "--to-gateway",
        "kong",
        "--endpoint",
        &url,
        "--report-dir",
        s(&reports),
    ];
    let dry = [
        "restore",
        &snap,
        "--to-gateway",
        "kong",
        "--endpoint",
        &url,
        "--dry-run",
    ];
    let verify = |c: &Repo| {
        let j = c.run_json(["check", "--no-record"]);
        assert_eq!(j["status"], "Success", "{j}");
        let ids = c.snapshot_ids();
        for id in &before {
            assert!(ids.contains(id), "snapshot {id} was lost");
        }
        // At most the rollback point was added.
        assert!(ids.len() <= before.len() + 1, "{ids:?}");
        let rep = c.run_json(args);
        assert_eq!(rep["status"], "Success", "{rep}");
        assert_code(&c.run(dry), code::OK);
    };
    let mut t = Tally::new("restore --to-gateway kong", "every-step");
    for at in 1.. {
        wreck(&kong);
        let c = r.copy();
        let out = c
            .cmd()
            .env("GATEVAULT_CRASH_AT", at.to_string())
            .args(args)
            .output()
            .unwrap();
        if !stderr(&out).contains("GATEVAULT_CRASH_AT") {
            assert_code(&out, code::OK);
            assert_code(&c.run(dry), code::OK);
            break;
        }
        t.point(true, &format!("stopped after step {at}"), || verify(&c));
    }
    t.finish(true);
    // Random kills: the gateway is put back before each.
    wreck(&kong);
    let full = duration_of(&r, &args);
    let mut rng = Rng::new(stress_seed() ^ 0x6A7E);
    let mut t = Tally::new("restore --to-gateway kong", "kill-9");
    for i in 0..stress_points(CI_KILLS) {
        wreck(&kong);
        let delay = full.mul_f64(1.1 * rng.unit());
        let (c, finished) = killed_copy(&r, &args, delay);
        t.point(!finished, &format!("kill -9 {i} after {delay:?}"), || {
            verify(&c)
        });
    }
    t.finish(true);
}

// ------------------------------------------------------------------------------ power loss

/// The repository of `r` opened through the library over a local backend recording into `log`.
fn open_logged(r: &Repo, log: &Arc<OpLog>) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::with_op_log(&r.path, log.clone()));
    let key = std::fs::read(r.key.as_ref().unwrap()).unwrap();
    let creds = Credentials {
        password: None,
        key_file: Some(gatevault::crypto::keyslot::parse_key_file(&key, "key").unwrap()),
    };
    Repository::open(backend, &creds, Some(r.root().join("lib-cache"))).unwrap()
}

/// Runs `job` through the library on a copy of `r`, recording its file-system operations; then, for
/// each cut (every fsync, thinned to about `points`, both with what was not durable dropped and with
/// a random part of it kept), rebuilds what a power loss there leaves of `r` and verifies it with
/// `verify`. Returns the number of cuts made.
fn power_cuts(
    name: &str,
    r: &Repo,
    points: usize,
    job: impl FnOnce(&Repository),
    verify: impl Fn(&Repo) + Sync,
) -> usize {
    let run = r.copy();
    let log = Arc::new(OpLog::new());
    job(&open_logged(&run, &log));
    let ops = log.ops();
    let mut cuts = powercut::sync_points(&ops);
    assert!(cuts.len() > 2, "{name}: no fsync recorded: {ops:?}");
    // Just past the last operation too: the job finished, the last changes made durable.
    cuts.push(ops.len());
    let step = cuts.len().div_ceil(points.max(1)).max(1);
    let mut rng = Rng::new(stress_seed() ^ 0x90CE);
    let mut chosen = Vec::new();
    for (k, &cut) in cuts.iter().enumerate() {
        if k % step != 0 && k + 1 != cuts.len() {
            continue;
        }
        // Half the cuts land between two fsyncs, right after the operation before the next one.
        let cut = if k % 2 == 1 && cut < ops.len() {
            cut + 1
        } else {
            cut
        };
        chosen.push((cut, Cut::DropUnsynced));
        chosen.push((cut, Cut::Random(rng.next_u64())));
    }
    let t = std::sync::Mutex::new(Tally::new(name, "power-loss"));
    for chunk in chosen.chunks(3) {
        std::thread::scope(|sc| {
            for &(cut, mode) in chunk {
                let (t, ops, verify) = (&t, &ops, &verify);
                sc.spawn(move || {
                    let c = r.copy();
                    std::fs::remove_dir_all(&c.path).unwrap();
                    powercut::survivor(&r.path, ops, cut, mode, &c.path).unwrap();
                    let res = run_point(|| {
                        // After a power loss the job's process is gone; here it is this test, still
                        // alive, so its lock is not seen as stale: removed as after a reboot.
                        c.run_ok(["unlock", "--remove-all"]);
                        verify(&c)
                    });
                    t.lock().unwrap().record(
                        cut < ops.len(),
                        &format!(
                            "{name}: cut after operation {cut} of {} ({mode:?})",
                            ops.len()
                        ),
                        res,
                    );
                });
            }
        });
    }
    let t = t.into_inner().unwrap();
    let n = t.points;
    t.finish(true);
    n
}

#[test]
fn power_loss_during_backup_forget_and_prune_keeps_the_history_and_reruns_finish() {
    let (r, src) = history(4);
    let expected = Expected::of(&r);
    let ids = r.snapshot_ids();
    let points = stress_points(12).max(8) / 2;

    // Backup of a changed tree.
    let changed = r.root().join("changed");
    copy_dir(&src, &changed);
    change(&changed, 7);
    let n = power_cuts(
        "power loss: backup",
        &r,
        points,
        |repo| {
            let opts = gatevault::backup::BackupOptions {
                paths: vec![changed.clone()],
                ..Default::default()
            };
            gatevault::backup::backup(repo, opts, None, &gatevault::backup::NoProgress).unwrap();
        },
        |c| {
            assert_invariants(c, &expected, &[], Added::Source(&changed), false);
            c.run_ok(["backup", "-q", s(&changed)]);
            let ids = c.snapshot_ids();
            let t = c.scratch("after-rerun");
            c.restore(ids.last().unwrap(), &t, &[]);
            assert_tree_eq(&changed, &restored(&t, &changed));
        },
    );
    eprintln!("power loss: backup cut at {n} points");

    // Forget of the two oldest snapshots, then prune.
    let gone = ids[..2].to_vec();
    let forget = |repo: &Repository| {
        let filter = gatevault::select::SnapshotFilter::default();
        gatevault::forget::forget(
            repo,
            gatevault::forget::Selection::Ids(&gone, &filter),
            false,
            chrono::Utc::now(),
        )
        .unwrap();
    };
    let mut forget_args = vec!["forget"];
    forget_args.extend(gone.iter().map(String::as_str));
    power_cuts("power loss: forget", &r, points, forget, |c| {
        assert_invariants(c, &expected, &gone, Added::None, false);
        let left: Vec<String> = c.snapshot_ids();
        let still: Vec<&str> = gone
            .iter()
            .filter(|g| left.contains(g))
            .map(String::as_str)
            .collect();
        if !still.is_empty() {
            let mut a = vec!["forget"];
            a.extend(still);
            c.run_ok(&a);
        }
        assert_eq!(c.snapshot_ids(), ids[2..].to_vec());
    });

    let forgotten = r.copy();
    forgotten.run_ok(&forget_args);
    let prune = |repo: &Repository| {
        let opts = gatevault::prune::PruneOptions {
            max_unused: gatevault::prune::MaxUnused::Percent(0.0),
            ..Default::default()
        };
        gatevault::prune::prune(repo, &opts, &gatevault::backup::NoProgress).unwrap();
    };
    power_cuts("power loss: prune", &forgotten, points, prune, |c| {
        assert_invariants(c, &expected, &gone, Added::None, true);
        c.run_ok(["prune", "--max-unused", "0%"]);
        assert_pruned(c);
    });
}
