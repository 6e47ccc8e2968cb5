//! Corruption suite: seeded random damage (single-bit flips, truncations, zeroed blocks, deleted files)
//! over every stored kind of a small repository (packs, index files, snapshots, key slots, `config`,
//! audit entries) and over the local RocksDB index cache. Each case damages one object of a fresh copy
//! of a pristine repository, then:
//!
//! - `check --read-data` must fail and name the damaged object (the cache is a copy of the index files:
//!   damage to it is harmless when the cache is rebuilt or the damaged part is not read, and is then
//!   required to leave every command correct);
//! - no command panics;
//! - every snapshot restores byte-identical to its source, or its restore fails with an error, leaving
//!   no file with wrong bytes behind;
//! - every snapshot that does not depend on the damaged object (found by deleting each object of the
//!   pristine repository once) still restores byte-identical.
//!
//! `GATEVAULT_STRESS_CASES=N` raises the number of cases (default 1,000), `GATEVAULT_STRESS_SEED` changes
//! the seed; the outcome table is printed (run with `--nocapture` to see it).
//!
//! Run with `cargo test --release --test corruption` (after `source scripts/env`).

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use util::*;

/// What a case damages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Pack,
    Index,
    Snapshot,
    KeySlot,
    Config,
    Audit,
    Cache,
}

/// How it is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Damage {
    /// Flip bit `bit` of byte `at`.
    BitFlip { at: u64, bit: u8 },
    /// Cut the file to `len` bytes.
    Truncate { len: u64 },
    /// Overwrite `len` bytes from `at` with zeros.
    Zero { at: u64, len: u64 },
    /// Remove the file.
    Delete,
}

impl Damage {
    fn name(&self) -> &'static str {
        match self {
            Damage::BitFlip { .. } => "bit flip",
            Damage::Truncate { .. } => "truncation",
            Damage::Zero { .. } => "zeroed block",
            Damage::Delete => "deletion",
        }
    }
}

/// One stored file of the pristine repository (or cache) that cases may damage.
#[derive(Clone, Debug)]
struct Target {
    kind: Kind,
    /// Path relative to the repository folder (or, for `Cache`, to the cache folder).
    rel: PathBuf,
    /// The name a report must mention: the object id, `config`, or the key slot id.
    name: String,
    size: u64,
    /// Snapshots that fail to restore when this object is deleted.
    needed_by: BTreeSet<String>,
}

/// The pristine repository: three snapshots, of which the first two share most blobs and the third
/// shares none.
struct Pristine {
    repo: Repo,
    /// (snapshot id, source folder it was taken of)
    snapshots: Vec<(String, PathBuf)>,
    targets: Vec<Target>,
}

fn build_pristine() -> Pristine {
    let repo = Repo::new();
    // Small packs, so that there are several of each type.
    repo.run_ok(["init", "-q", "--pack-size", "64K"]);
    let root = repo.root().to_path_buf();
    let a = root.join("a");
    write_gateway_tree(&a, 1, 25);
    let mut rng = Rng::new(7);
    write(&a.join("certs/bundle.bin"), rng.bytes(40_000));
    write(&a.join("certs/extra.bin"), rng.bytes(25_000));
    let b = root.join("b");
    copy_dir(&a, &b);
    write(
        &b.join("plugins/route-0000.json"),
        "{\"changed\": true}\n".repeat(40),
    );
    write(&b.join("certs/extra.bin"), rng.bytes(30_000));
    let c = root.join("c");
    write_gateway_tree(&c, 99, 6);
    write(&c.join("keys/blob.bin"), rng.bytes(50_000));
    let mut snapshots = Vec::new();
    for src in [&a, &b, &c] {
        let v = repo.backup(&[src], &[]);
        let id = v["snapshot_id"].as_str().expect("snapshot_id").to_string();
        snapshots.push((id, src.clone()));
    }
    // Warm the cache, as a client that backs up has one.
    repo.run_ok(["check", "--read-data", "--no-record"]);

    let mut targets = Vec::new();
    let kinds = [
        ("data", Kind::Pack),
        ("index", Kind::Index),
        ("snapshots", Kind::Snapshot),
        ("keys", Kind::KeySlot),
        ("audit", Kind::Audit),
    ];
    for (folder, kind) in kinds {
        for f in files_under(&repo.path.join(folder)) {
            let rel = f.strip_prefix(&repo.path).unwrap().to_path_buf();
            targets.push(Target {
                kind,
                name: file_name(&f),
                size: fs::metadata(&f).unwrap().len(),
                rel,
                needed_by: BTreeSet::new(),
            });
        }
    }
    targets.push(Target {
        kind: Kind::Config,
        rel: PathBuf::from("config"),
        name: "config".into(),
        size: fs::metadata(repo.path.join("config")).unwrap().len(),
        needed_by: BTreeSet::new(),
    });
    for f in files_under(&repo.cache) {
        let rel = f.strip_prefix(&repo.cache).unwrap().to_path_buf();
        let size = fs::metadata(&f).unwrap().len();
        // Lock files are empty: nothing to damage but their presence.
        if size == 0 {
            continue;
        }
        targets.push(Target {
            kind: Kind::Cache,
            name: file_name(&f),
            rel,
            size,
            needed_by: BTreeSet::new(),
        });
    }
    let p = Pristine {
        repo,
        snapshots,
        targets,
    };
    // Which snapshots each repository object is needed by: delete it and try every restore.
    let needed: Vec<BTreeSet<String>> = p
        .targets
        .iter()
        .map(|t| {
            if t.kind == Kind::Cache {
                return BTreeSet::new();
            }
            let c = p.copy();
            fs::remove_file(c.path.join(&t.rel)).unwrap();
            p.snapshots
                .iter()
                .enumerate()
                .filter(|(i, (id, src))| {
                    let target = c.root().join(format!("dep-{i}"));
                    let out = c.run(["restore", "-q", id, "--target", s(&target)]);
                    out.status.code() != Some(code::OK)
                        || tree_eq(src, &restored(&target, src)).is_err()
                })
                .map(|(_, (id, _))| id.clone())
                .collect()
        })
        .collect();
    let mut p = p;
    for (t, n) in p.targets.iter_mut().zip(needed) {
        t.needed_by = n;
    }
    p
}

impl Pristine {
    /// A copy of the repository with a copy of its warm cache.
    fn copy(&self) -> Repo {
        let c = self.repo.copy();
        copy_dir(&self.repo.cache, &c.cache);
        c
    }
}

/// Draws one case: a target and a damage that changes its bytes.
fn draw(rng: &mut Rng, targets: &[Target]) -> (usize, Damage) {
    // Pick the kind first (so that the few key slots and the config get their share), then the file.
    let kinds: Vec<Kind> = targets
        .iter()
        .map(|t| t.kind)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let kind = *rng.pick(&kinds);
    let of_kind: Vec<usize> = (0..targets.len())
        .filter(|i| targets[*i].kind == kind)
        .collect();
    let t = *rng.pick(&of_kind);
    let size = targets[t].size;
    let d = match rng.below(10) {
        0..=4 => Damage::BitFlip {
            at: rng.below(size),
            bit: rng.below(8) as u8,
        },
        5 | 6 => Damage::Truncate {
            len: rng.below(size),
        },
        7 | 8 => {
            let len = (1 + rng.below(4096)).min(size);
            Damage::Zero {
                at: rng.below(size - len + 1),
                len,
            }
        }
        _ => Damage::Delete,
    };
    (t, d)
}

/// Applies `d` to `path`; false when it changed nothing (zeros over zeros).
fn apply(path: &Path, d: Damage) -> bool {
    match d {
        Damage::Delete => fs::remove_file(path).unwrap(),
        Damage::Truncate { len } => {
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len).unwrap();
        }
        Damage::BitFlip { at, bit } => {
            let mut b = fs::read(path).unwrap();
            b[at as usize] ^= 1 << bit;
            fs::write(path, b).unwrap();
        }
        Damage::Zero { at, len } => {
            let mut b = fs::read(path).unwrap();
            let r = at as usize..(at + len) as usize;
            if b[r.clone()].iter().all(|x| *x == 0) {
                return false;
            }
            b[r].fill(0);
            fs::write(path, b).unwrap();
        }
    }
    true
}

fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// What happened in one case.
#[derive(Default, Debug)]
struct Outcome {
    /// `check --read-data` failed and named the object.
    detected: bool,
    /// The damage was harmless: check passed and every snapshot restored byte-identical.
    harmless: bool,
    /// Restores that failed (with an error) and that succeeded byte-identical.
    restores_failed: usize,
    restores_ok: usize,
    /// Restores refused because of a damaged cache while check passed (each restored on the next
    /// run, after the automatic rebuild).
    cache_refusals: bool,
    /// Violations of the invariants (empty when the case passed).
    problems: Vec<String>,
}

fn no_panic(out: &Output, what: &str, problems: &mut Vec<String>) {
    if stderr(out).contains("panicked") {
        problems.push(format!("{what} panicked: {}", describe(out)));
    }
}

/// Restores `id` into a new folder and compares with `src`; `Ok(true)` when byte-identical,
/// `Ok(false)` when the restore failed cleanly (every file it left is correct), `Err` for a violation.
fn restore_one(c: &Repo, n: usize, id: &str, src: &Path) -> Result<bool, String> {
    let target = c.root().join(format!("restore-{n}"));
    let out = c.run(["restore", "-q", id, "--target", s(&target)]);
    if stderr(&out).contains("panicked") {
        return Err(format!("restore {id} panicked: {}", describe(&out)));
    }
    let got = restored(&target, src);
    if out.status.code() == Some(code::OK) {
        return tree_eq(src, &got)
            .map(|_| true)
            .map_err(|e| format!("restore {id} succeeded with wrong content: {e}"));
    }
    if text(&out).trim().is_empty() {
        return Err(format!("restore {id} failed without saying why"));
    }
    // Every file the failed restore left must hold the right bytes.
    if got.is_dir() {
        for f in files_under(&got) {
            let rel = f.strip_prefix(&got).unwrap();
            let want = fs::read(src.join(rel)).ok();
            if want.as_deref() != Some(&fs::read(&f).unwrap()[..]) {
                return Err(format!(
                    "restore {id} failed but left {} with wrong bytes\n{}",
                    rel.display(),
                    describe(&out)
                ));
            }
        }
    }
    Ok(false)
}

/// Whether a damaged key slot still parses and differs from the pristine one only in the fields that
/// are not authenticated (`username`, `hostname`, `created`: descriptive, see the docs).
fn slot_metadata_only(p: &Pristine, t: &Target, c: &Repo) -> bool {
    let parse = |path: &Path| -> Option<serde_json::Map<String, Value>> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    };
    let (Some(mut a), Some(mut b)) = (
        parse(&p.repo.path.join(&t.rel)),
        parse(&c.path.join(&t.rel)),
    ) else {
        return false;
    };
    for f in ["username", "hostname", "created"] {
        a.remove(f);
        b.remove(f);
    }
    a == b
}

fn run_case(p: &Pristine, t: &Target, d: Damage) -> Option<Outcome> {
    let c = p.copy();
    let base = if t.kind == Kind::Cache {
        &c.cache
    } else {
        &c.path
    };
    if !apply(&base.join(&t.rel), d) {
        return None;
    }
    let mut o = Outcome::default();
    let check = c.run(["check", "--read-data", "--no-record"]);
    no_panic(&check, "check", &mut o.problems);
    let check_ok = check.status.code() == Some(code::OK);
    let mut named =
        text(&check).contains(&t.name) || text(&check).contains(&t.name[..8.min(t.name.len())]);
    // A deleted index file cannot be named (nothing remembers it): check names the blobs and
    // snapshots it leaves without an index entry instead.
    if t.kind == Kind::Index && d == Damage::Delete {
        named = text(&check).contains("in no index") || text(&check).contains("not found");
    }
    // A key slot or config that no longer fits: the repository refuses to open (exit 12), and the
    // message points at `config` and `keys/`: no AEAD can tell a damaged slot from a wrong key.
    if matches!(t.kind, Kind::KeySlot | Kind::Config)
        && check.status.code() == Some(code::WRONG_PASSWORD)
    {
        named = named || text(&check).contains("`config` and `keys/`");
    }
    o.detected = !check_ok && named;
    if !check_ok && !named && t.kind != Kind::Cache {
        o.problems.push(format!(
            "check failed without naming {}\n{}",
            t.name,
            describe(&check)
        ));
    }
    for (n, (id, src)) in p.snapshots.iter().enumerate() {
        match restore_one(&c, n, id, src) {
            Ok(true) => o.restores_ok += 1,
            Ok(false) => {
                o.restores_failed += 1;
                if t.kind != Kind::Cache
                    && t.kind != Kind::KeySlot
                    && t.kind != Kind::Config
                    && !t.needed_by.contains(id)
                {
                    o.problems.push(format!(
                        "snapshot {id} does not need {} but no longer restores",
                        t.name
                    ));
                }
            }
            Err(e) => o.problems.push(e),
        }
    }
    if check_ok {
        if o.restores_failed == 0 {
            o.harmless = true;
            if t.kind != Kind::Cache && !(t.kind == Kind::KeySlot && slot_metadata_only(p, t, &c)) {
                o.problems.push(format!(
                    "undetected damage to {} ({d:?}): check passed",
                    t.rel.display()
                ));
            }
        } else if t.kind != Kind::Cache {
            o.problems.push(format!(
                "check passed but {} restore(s) failed\n{}",
                o.restores_failed,
                describe(&check)
            ));
        }
    }
    if t.kind == Kind::Cache && !o.harmless && o.problems.is_empty() {
        if check_ok {
            o.cache_refusals = true;
        }
        // A restore that read a damaged block marked the cache: the next run rebuilds it, and every
        // snapshot restores again.
        if o.restores_failed > 0 {
            for (n, (id, src)) in p.snapshots.iter().enumerate() {
                match restore_one(&c, p.snapshots.len() + n, id, src) {
                    Ok(true) => {}
                    Ok(false) => o.problems.push(format!(
                        "snapshot {id} still does not restore on the run after the cache damage"
                    )),
                    Err(e) => o.problems.push(e),
                }
            }
        }
        // The cache is only a copy: without it, the repository must be whole.
        let fresh = c
            .cmd()
            .arg("--no-cache")
            .args(["check", "--read-data", "--no-record"])
            .output()
            .unwrap();
        if fresh.status.code() != Some(code::OK) {
            o.problems.push(format!(
                "damage to the cache damaged the repository\n{}",
                describe(&fresh)
            ));
        }
    }
    Some(o)
}

#[derive(Default)]
struct Tally {
    cases: usize,
    detected: usize,
    harmless: usize,
    restores_ok: usize,
    restores_failed: usize,
    cache_refusals: usize,
}

#[test]
fn random_damage_is_detected_and_never_restores_wrong_bytes() {
    let cases: usize = util::stress_env("GATEVAULT_STRESS_CASES", 1000);
    let seed: u64 = util::stress_env("GATEVAULT_STRESS_SEED", 0x5eed_c0de);
    let threads: usize = util::stress_env("GATEVAULT_STRESS_THREADS", 12);
    let p = Arc::new(build_pristine());
    for k in [
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
        Kind::KeySlot,
        Kind::Config,
        Kind::Audit,
        Kind::Cache,
    ] {
        assert!(
            p.targets.iter().any(|t| t.kind == k),
            "the pristine repository has objects of kind {k:?}"
        );
    }
    assert!(
        p.targets.iter().filter(|t| t.kind == Kind::Pack).count() >= 4,
        "several packs"
    );
    // Draw every case up front (deterministic whatever the thread timing).
    let mut rng = Rng::new(seed);
    let plan: Vec<(usize, Damage)> = (0..cases).map(|_| draw(&mut rng, &p.targets)).collect();
    let next = Arc::new(Mutex::new(0usize));
    let results = Arc::new(Mutex::new(Vec::new()));
    let plan = Arc::new(plan);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (p, next, results, plan) = (p.clone(), next.clone(), results.clone(), plan.clone());
            std::thread::spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(&(t, d)) = plan.get(i) else {
                    break;
                };
                let o = run_case(&p, &p.targets[t], d);
                results.lock().unwrap().push((t, d, o));
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let results = Arc::try_unwrap(results).unwrap().into_inner().unwrap();
    let mut table: BTreeMap<(Kind, &'static str), Tally> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut skipped = 0;
    for (t, d, o) in &results {
        let Some(o) = o else {
            skipped += 1;
            continue;
        };
        let tg = &p.targets[*t];
        let e = table.entry((tg.kind, d.name())).or_default();
        e.cases += 1;
        e.detected += o.detected as usize;
        e.harmless += o.harmless as usize;
        e.restores_ok += o.restores_ok;
        e.restores_failed += o.restores_failed;
        e.cache_refusals += o.cache_refusals as usize;
        for pr in &o.problems {
            problems.push(format!("{} {:?}: {pr}", tg.rel.display(), d));
        }
    }
    println!(
        "{} cases (seed {seed:#x}, {skipped} drawn cases changed nothing and were skipped)",
        results.len() - skipped
    );
    println!("| kind | damage | cases | detected by check | harmless | restores ok | restores refused | cases: check passed, restore refused once (cache; restored on the next run) |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((k, d), t) in &table {
        println!(
            "| {k:?} | {d} | {} | {} | {} | {} | {} | {} |",
            t.cases, t.detected, t.harmless, t.restores_ok, t.restores_failed, t.cache_refusals
        );
    }
    assert!(
        results.len() - skipped >= cases * 9 / 10,
        "most drawn cases damage something"
    );
    assert!(
        problems.is_empty(),
        "{} violation(s):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `repair index` then `repair snapshots --forget` after a pack is damaged: the repaired snapshots
/// restore everything but the files they name as lost, undamaged snapshots are left alone, and
/// `check --read-data` passes (after a bit flip inside a blob, whose pack keeps its size and header,
/// `prune` removes the damaged blob that nothing needs any more).
#[test]
fn repair_snapshots_keeps_what_is_readable_and_names_what_is_lost() {
    let p = build_pristine();
    let all: BTreeSet<String> = p.snapshots.iter().map(|(id, _)| id.clone()).collect();
    let pack = p
        .targets
        .iter()
        .find(|t| {
            t.kind == Kind::Pack
                && !t.needed_by.is_empty()
                && t.needed_by != all
                && p.repo.cat_pack(&t.name)["blobs"][0]["type"] == "data"
        })
        .expect("a data pack that some snapshots need and others do not");
    for damage in ["delete", "truncate", "flip"] {
        let c = p.copy();
        let file = c.path.join(&pack.rel);
        let before = c.listing();
        match damage {
            "delete" => fs::remove_file(&file).unwrap(),
            "truncate" => {
                let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
                f.set_len(pack.size / 2).unwrap();
            }
            _ => {
                let mut b = fs::read(&file).unwrap();
                b[100] ^= 0x10;
                fs::write(&file, b).unwrap();
            }
        }
        // A dry run reports and writes nothing.
        let dry = c.run_json(["repair", "snapshots", "--dry-run"]);
        let out = c.run(["repair", "index"]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            describe(&out)
        );
        let r = c.run_json(["repair", "snapshots", "--forget"]);
        let repaired: Vec<&Value> = r["repaired"].as_array().unwrap().iter().collect();
        let originals: BTreeSet<String> = repaired
            .iter()
            .map(|x| x["original"].as_str().unwrap().to_string())
            .collect();
        assert!(!originals.is_empty(), "{damage}: {r}");
        assert!(
            originals.is_subset(&pack.needed_by),
            "{damage}: only snapshots that need the pack are rewritten: {r}"
        );
        assert_eq!(
            dry["repaired"].as_array().unwrap().len(),
            repaired.len(),
            "{damage}: the dry run found the same: {dry}"
        );
        let now: BTreeSet<String> = c.snapshot_ids().into_iter().collect();
        for (id, src) in &p.snapshots {
            if originals.contains(id) {
                assert!(!now.contains(id), "{damage}: original {id} forgotten");
                continue;
            }
            assert!(now.contains(id), "{damage}: undamaged {id} kept as it was");
            let t = c.root().join(format!("untouched-{}", &id[..8]));
            c.restore(id, &t, &[]);
            assert_tree_eq(src, &restored(&t, src));
        }
        for rep in &repaired {
            let new = rep["new"].as_str().expect("a repaired copy was written");
            let lost: BTreeSet<String> = rep["lost"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect();
            assert!(!lost.is_empty(), "{damage}: {rep}");
            let (_, src) = p
                .snapshots
                .iter()
                .find(|(id, _)| id == rep["original"].as_str().unwrap())
                .unwrap();
            let t = c.root().join(format!("repaired-{}", &new[..8]));
            c.restore(new, &t, &[]);
            let got = restored(&t, src);
            let mut kept = 0;
            for f in files_under(src) {
                let there = got.join(f.strip_prefix(src).unwrap());
                let fp = s(&f);
                let is_lost = lost.contains(fp)
                    || lost
                        .iter()
                        .any(|l| l.ends_with('/') && fp.starts_with(l.as_str()));
                if is_lost {
                    assert!(
                        !there.exists(),
                        "{damage}: lost file {} restored",
                        f.display()
                    );
                } else {
                    assert_eq!(
                        fs::read(&f).unwrap(),
                        fs::read(&there).unwrap_or_default(),
                        "{damage}: {} restored byte-identical",
                        f.display()
                    );
                    kept += 1;
                }
            }
            assert_eq!(
                files_under(&got).len(),
                kept,
                "{damage}: nothing else restored"
            );
            let snap = c.run_json(["cat", "snapshot", new]);
            assert!(snap["tags"].get("repaired").is_some(), "{snap}");
            assert!(
                snap["description"]
                    .as_str()
                    .unwrap()
                    .contains("repaired from snapshot"),
                "{snap}"
            );
        }
        if damage != "delete" {
            // The damaged pack still holds blobs (salvaged, or intact beside the flipped one):
            // prune moves what is needed out of it and removes it.
            c.run_ok(["prune", "--max-unused", "0"]);
        }
        let out = c.run(["check", "--read-data", "--no-record"]);
        assert_code(&out, code::OK);
        // A second run finds nothing to do.
        let again = c.run_json(["repair", "snapshots"]);
        assert_eq!(again["repaired"].as_array().unwrap().len(), 0, "{again}");
        assert_ne!(before, c.listing());
    }
}
