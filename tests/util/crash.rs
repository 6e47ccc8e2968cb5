//! Helpers of the crash suites (`tests/crash.rs`, run bigger by `scripts/stress crash`): stopping a
//! command at every durable step or at a random moment, the invariants checked after each stop, and a
//! tally per command that `scripts/stress` turns into its summary table.
//!
//! - [`stress_points`], [`stress_seed`]: how many random kills a suite makes (the CI figure, or
//!   `GATEVAULT_STRESS_POINTS`) and from which seed (`GATEVAULT_STRESS_SEED`);
//! - [`Expected`]: every snapshot of a repository restored once, before the command, as the
//!   reference its restores after a crash are compared with;
//! - [`assert_invariants`]: `check` passes, no snapshot committed before is lost, every listed
//!   snapshot restores completely and byte-identical;
//! - [`every_step`], [`random_kills`]: the two ways of stopping a command, each point verified through
//!   a [`Tally`] that counts failures instead of stopping at the first.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

/// The number of random kill points of a suite: `GATEVAULT_STRESS_POINTS` when set (by
/// `scripts/stress`), else `ci`.
pub fn stress_points(ci: usize) -> usize {
    stress_env("GATEVAULT_STRESS_POINTS", ci)
}

/// The seed of the random kill points: `GATEVAULT_STRESS_SEED` when set, else 1.
pub fn stress_seed() -> u64 {
    stress_env("GATEVAULT_STRESS_SEED", 1)
}

/// What the points of one suite found. Dropped after [`Tally::finish`] only.
pub struct Tally {
    command: String,
    kind: &'static str,
    pub points: usize,
    pub crashes: usize,
    failures: Vec<String>,
}

impl Tally {
    pub fn new(command: &str, kind: &'static str) -> Self {
        Self {
            command: command.to_string(),
            kind,
            points: 0,
            crashes: 0,
            failures: vec![],
        }
    }

    /// Verifies one point with `verify`, recording a panic as a failure (with its message) instead
    /// of ending the suite; `crashed`: the command was stopped before it finished.
    pub fn point(&mut self, crashed: bool, what: &str, verify: impl FnOnce()) {
        let r = run_point(verify);
        self.record(crashed, what, r);
    }

    /// Records the result of a point verified with [`run_point`].
    pub fn record(&mut self, crashed: bool, what: &str, result: Result<(), String>) {
        self.points += 1;
        if crashed {
            self.crashes += 1;
        }
        if let Err(msg) = result {
            self.failures.push(format!("{what}: {msg}"));
        }
    }

    /// Prints the summary line `scripts/stress` collects and fails on any invariant failure, or when
    /// no point stopped the command (`need_crash`).
    pub fn finish(self, need_crash: bool) {
        eprintln!(
            "CRASH-SUMMARY\t{}\t{}\t{}\t{}\t{}",
            self.command,
            self.kind,
            self.points,
            self.crashes,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{} {}: {} of {} points broke an invariant:\n{}",
            self.command,
            self.kind,
            self.failures.len(),
            self.points,
            self.failures.join("\n---\n")
        );
        assert!(
            self.points > 0,
            "{} {}: no point ran",
            self.command,
            self.kind
        );
        if need_crash {
            assert!(
                self.crashes > 0,
                "{} {}: no point stopped the command before it finished",
                self.command,
                self.kind
            );
        }
    }
}

/// Runs `verify`, turning a panic into `Err` with its message.
pub fn run_point(verify: impl FnOnce()) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(verify)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Points verified at once: the commands and checks mostly wait on fsync, not on the CPU.
const PARALLEL: u64 = 3;

/// Every snapshot of a repository, restored once as the reference for later restores.
pub struct Expected {
    /// Snapshot id to its restore.
    pub refs: BTreeMap<String, PathBuf>,
}

impl Expected {
    /// Restores every snapshot of `r` into `<tmp>/ref-<id>`.
    pub fn of(r: &Repo) -> Self {
        let mut refs = BTreeMap::new();
        for id in r.snapshot_ids() {
            let t = r.root().join(format!("ref-{id}"));
            if !t.exists() {
                r.restore(&id, &t, &[]);
            }
            refs.insert(id, t);
        }
        Self { refs }
    }

    /// No snapshot (a repository that starts empty).
    pub fn none() -> Self {
        Self {
            refs: BTreeMap::new(),
        }
    }

    /// Ids, in no particular order.
    pub fn ids(&self) -> Vec<String> {
        self.refs.keys().cloned().collect()
    }
}

/// Snapshots a command may add, and what they must restore to.
#[derive(Clone, Copy)]
pub enum Added<'a> {
    /// None may appear.
    None,
    /// Any new snapshot holds this folder (a backup of it).
    Source(&'a Path),
    /// New snapshots only need to restore completely (copies, rollback points).
    Any,
}

/// Asserts, on a repository stopped in the middle of a command: `check` (with `read_data`, also
/// `--read-data`) ends `Success`; every snapshot of `expected` not in `may_go` is listed; every listed
/// snapshot restores completely, to its reference (byte-identical) or to what `added` says.
#[track_caller]
pub fn assert_invariants(
    c: &Repo,
    expected: &Expected,
    may_go: &[String],
    added: Added<'_>,
    read_data: bool,
) {
    let mut args = vec!["check", "--no-record"];
    if read_data {
        args.push("--read-data");
    }
    let j = c.run_json(&args);
    assert_eq!(j["status"], "Success", "check: {j}");
    let ids = c.snapshot_ids();
    for id in expected.refs.keys() {
        assert!(
            ids.contains(id) || may_go.contains(id),
            "committed snapshot {id} was lost: {ids:?}"
        );
    }
    for (n, id) in ids.iter().enumerate() {
        let t = c.root().join(format!("restore-{n}-{}", &id[..8]));
        let out = c.run(["restore", "-q", id, "--target", s(&t)]);
        assert_code(&out, code::OK);
        match (expected.refs.get(id), added) {
            (Some(r), _) => assert_tree_eq(r, &t),
            (None, Added::Source(src)) => assert_tree_eq(src, &restored(&t, src)),
            (None, Added::Any) => {}
            (None, Added::None) => panic!("snapshot {id} appeared: {ids:?}"),
        }
        let _ = std::fs::remove_dir_all(&t);
    }
}

/// Runs `args` on copies of `r` stopped after durable step 1, 2, 3, ... (`GATEVAULT_CRASH_AT`) until
/// the command finishes without reaching the step; verifies each stopped copy with `verify(copy,
/// step)`. Asserts that there was at least one step and that the run past the last one succeeded.
pub fn every_step(name: &str, r: &Repo, args: &[&str], verify: impl Fn(&Repo, u64) + Sync) -> u64 {
    let t = Mutex::new(Tally::new(name, "every-step"));
    let finished = Mutex::new(Vec::new());
    let mut first = 1;
    while finished.lock().unwrap().is_empty() {
        std::thread::scope(|sc| {
            for at in first..first + PARALLEL {
                let (t, finished, verify) = (&t, &finished, &verify);
                sc.spawn(move || {
                    // `crashed_copy` asserts that a run which did not stop finished successfully.
                    let (c, crashed) = r.crashed_copy(args, at);
                    if !crashed {
                        finished.lock().unwrap().push(at);
                        return;
                    }
                    let res = run_point(|| verify(&c, at));
                    t.lock().unwrap().record(
                        true,
                        &format!("{name}: stopped after step {at}"),
                        res,
                    );
                });
            }
        });
        first += PARALLEL;
    }
    // The steps past the end ran to completion; the points verified are the steps before it.
    let end = *finished.lock().unwrap().iter().min().unwrap();
    let t = t.into_inner().unwrap();
    assert_eq!(
        t.points as u64,
        end - 1,
        "{name}: a step before the end did not stop the command"
    );
    t.finish(true);
    end - 1
}

/// How long `args` takes on a copy of `r`, start to exit.
pub fn duration_of(r: &Repo, args: &[&str]) -> Duration {
    let c = r.copy();
    let t = Instant::now();
    let out = c.run(args);
    let d = t.elapsed();
    assert_code(&out, code::OK);
    d
}

/// Starts `args` on a copy of `r` and sends it SIGKILL after `delay`; returns the copy and whether
/// the command had already finished (successfully: a failure before the kill fails the test).
pub fn killed_copy(r: &Repo, args: &[&str], delay: Duration) -> (Repo, bool) {
    let c = r.copy();
    let mut child = c.spawn(args, std::process::Stdio::null());
    std::thread::sleep(delay);
    let _ = child.kill();
    let st = child.wait().expect("wait for gatevault");
    let finished = st.code().is_some();
    if finished {
        assert!(st.success(), "{args:?} failed before it was killed: {st}");
    }
    (c, finished)
}

/// Runs `args` on `n` copies of `r`, each killed (SIGKILL, as `kill -9`) after a random delay in
/// `[0, 1.1 x the command's duration)` (seeded by `seed`), and verifies each copy with
/// `verify(copy, finished)`. Asserts that at least one kill stopped the command.
pub fn random_kills(
    name: &str,
    r: &Repo,
    args: &[&str],
    n: usize,
    seed: u64,
    verify: impl Fn(&Repo, bool) + Sync,
) {
    let full = duration_of(r, args);
    let mut rng = Rng::new(seed ^ 0xC7A5);
    let delays: Vec<Duration> = (0..n).map(|_| full.mul_f64(1.1 * rng.unit())).collect();
    let t = Mutex::new(Tally::new(name, "kill-9"));
    for chunk in delays.chunks(PARALLEL as usize) {
        std::thread::scope(|sc| {
            for &delay in chunk {
                let (t, verify) = (&t, &verify);
                sc.spawn(move || {
                    let (c, finished) = killed_copy(r, args, delay);
                    let res = run_point(|| verify(&c, finished));
                    t.lock().unwrap().record(
                        !finished,
                        &format!("{name}: kill -9 after {delay:?} of {full:?}"),
                        res,
                    );
                });
            }
        });
    }
    t.into_inner().unwrap().finish(n > 0);
}
