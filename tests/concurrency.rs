//! Concurrency under fire: four clients back up into one repository at once while
//! `forget --prune` and a scrub (`check --read-data-subset`) run in loops, and random processes
//! among them get `kill -9`. Afterwards `check --read-data` passes, every snapshot a client saw
//! committed restores byte-identical to what it backed up unless the forget policy removed it (the
//! newest two of each client never are), and every listed snapshot restores to a tree its client
//! backed up (none is half-written).
//!
//! The run lasts `GATEVAULT_STRESS_SECONDS` (default 30) seconds; `scripts/stress concurrency` runs
//! it for longer.

mod util;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use util::Runner;
use util::*;

const CLIENTS: usize = 4;

/// What a slot runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Role {
    Backup(usize),
    Forget,
    Scrub,
}

/// One running process and what it was started for.
struct Running {
    role: Role,
    child: Child,
    /// For a backup: the copy of the source it backs up.
    copy: Option<PathBuf>,
}

/// Outcome counts per role.
#[derive(Default, Debug)]
struct Tally {
    ok: u32,
    locked: u32,
    killed: u32,
}

fn seconds() -> u64 {
    util::stress_env("GATEVAULT_STRESS_SECONDS", 30)
}

fn host(k: usize) -> String {
    format!("client-{k}")
}

/// Changes a few files of client `k`'s source (new, changed and removed routes).
fn mutate(src: &Path, rng: &mut Rng, round: usize) {
    for _ in 0..3 {
        let i = rng.below(40) as usize;
        let f = src.join(format!("routes/route-{i:03}.json"));
        if rng.below(4) == 0 {
            let _ = std::fs::remove_file(&f);
        } else {
            write(&f, gateway_route(rng, i + round));
        }
    }
}

#[test]
fn four_clients_with_forget_prune_scrub_and_kill_9() {
    let r = Repo::new();
    // Small packs, so that prune has packs to delete and repack while backups run.
    r.run_ok(["init", "-q", "--pack-size", "64K"]);
    let mut rng = Rng::new(util::stress_env("GATEVAULT_STRESS_SEED", 2026));
    let srcs: Vec<PathBuf> = (0..CLIENTS)
        .map(|k| {
            let src = r.root().join(format!("src-{k}"));
            for i in 0..40 {
                write(
                    &src.join(format!("routes/route-{i:03}.json")),
                    gateway_route(&mut rng, i),
                );
            }
            src
        })
        .collect();
    let copies = r.root().join("copies");
    let mut round = 0usize;
    // Snapshot id -> (client, copy of what it backed up), for backups that reported success.
    let mut committed: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
    // Every copy a client started a backup of (a killed backup may still have committed).
    let mut attempted: HashMap<usize, Vec<PathBuf>> = HashMap::new();
    let mut tally: BTreeMap<Role, Tally> = BTreeMap::new();
    let mut running: Vec<Running> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let mut next_kill = Instant::now() + Duration::from_millis(500);
    // When each role may start again: backups pause a little between runs (so the exclusive
    // forget --prune finds a moment with no backup), a forget refused by a lock retries at once.
    let mut not_before: BTreeMap<Role, Instant> = BTreeMap::new();

    let start = |role: Role, round: &mut usize, rng: &mut Rng| -> Running {
        let (args, copy): (Vec<String>, Option<PathBuf>) = match role {
            Role::Backup(k) => {
                *round += 1;
                mutate(&srcs[k], rng, *round);
                let copy = copies.join(format!("{k}-{round}"));
                copy_dir(&srcs[k], &copy);
                (
                    vec![
                        "--json".into(),
                        "backup".into(),
                        "--host".into(),
                        host(k),
                        s(&srcs[k]).into(),
                    ],
                    Some(copy),
                )
            }
            Role::Forget => (
                ["--json", "forget", "--keep-last", "2", "--prune"]
                    .map(String::from)
                    .to_vec(),
                None,
            ),
            Role::Scrub => (
                ["check", "--no-record", "--read-data-subset", "20%"]
                    .map(String::from)
                    .to_vec(),
                None,
            ),
        };
        let child = r
            .cmd_std()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatevault");
        Running { role, child, copy }
    };

    let roles: Vec<Role> = (0..CLIENTS)
        .map(Role::Backup)
        .chain([Role::Forget, Role::Scrub])
        .collect();
    loop {
        let now = Instant::now();
        let ending = now >= deadline;
        // Reap what ended.
        let mut i = 0;
        while i < running.len() {
            let Some(st) = running[i].child.try_wait().unwrap() else {
                i += 1;
                continue;
            };
            let run = running.swap_remove(i);
            let out = run.child.wait_with_output().unwrap();
            let t = tally.entry(run.role).or_default();
            let pause = match run.role {
                Role::Forget if st.code() == Some(code::LOCKED) => 0,
                Role::Backup(_) => rng.below(800),
                _ => 500 + rng.below(1000),
            };
            not_before.insert(run.role, Instant::now() + Duration::from_millis(pause));
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (None, Some(9)) => t.killed += 1,
                (Some(0), _) => {
                    t.ok += 1;
                    if let Role::Backup(k) = run.role {
                        let text = String::from_utf8_lossy(&out.stdout);
                        let v: serde_json::Value = text
                            .lines()
                            .rev()
                            .find_map(|l| serde_json::from_str(l).ok())
                            .unwrap_or_else(|| panic!("backup printed no JSON: {text}"));
                        let id = v["snapshot_id"].as_str().expect("snapshot_id").to_string();
                        committed.insert(id, (k, run.copy.clone().unwrap()));
                    }
                }
                (Some(c), _) if c == code::LOCKED => t.locked += 1,
                _ => panic!(
                    "{:?} ended {st}:\n{}\n{}",
                    run.role,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
            if let (Role::Backup(k), Some(c)) = (run.role, run.copy) {
                attempted.entry(k).or_default().push(c);
            }
        }
        if ending {
            if running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Start what is idle.
        for role in &roles {
            if running.iter().any(|x| x.role == *role)
                || not_before.get(role).is_some_and(|t| now < *t)
            {
                continue;
            }
            running.push(start(*role, &mut round, &mut rng));
        }
        // Now and then, kill -9 one of them.
        if now >= next_kill && !running.is_empty() {
            let victim = rng.below(running.len() as u64) as usize;
            let _ = running[victim].child.kill();
            next_kill = now + Duration::from_millis(200 + rng.below(1500));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("outcomes per role: {tally:#?}");
    for k in 0..CLIENTS {
        let t = &tally[&Role::Backup(k)];
        assert!(t.ok > 0, "client {k} never committed a backup: {t:?}");
    }
    assert!(
        tally.values().map(|t| t.killed).sum::<u32>() > 0,
        "nothing was killed"
    );
    assert!(tally.get(&Role::Forget).is_some_and(|t| t.ok > 0));

    // The repository is whole.
    let j = r.run_json(["check", "--no-record", "--read-data"]);
    assert_eq!(j["status"], "Success", "{j}");
    let listed: Vec<serde_json::Value> = r.snapshots();
    let present: BTreeMap<String, String> = listed
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["hostname"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    // Every listed snapshot restores to a tree its client backed up; committed ones to their own.
    // Which backup round each listed snapshot came from (rounds order each client's backups).
    let round_of = |copy: &Path| -> usize {
        let name = copy.file_name().unwrap().to_string_lossy().into_owned();
        name.split_once('-').unwrap().1.parse().unwrap()
    };
    let mut present_rounds: Vec<(usize, usize)> = Vec::new();
    for (id, hostname) in &present {
        let target = r.root().join(format!("restore-{}", &id[..12]));
        r.restore(id, &target, &[]);
        let k: usize = hostname
            .strip_prefix("client-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("snapshot {id} of unknown host {hostname}"));
        let got = restored(&target, &srcs[k]);
        let copy = match committed.get(id) {
            Some((_, copy)) => {
                assert_tree_eq(&got, copy);
                copy.clone()
            }
            // A backup killed after its commit: its tree is one the client backed up.
            None => attempted[&k]
                .iter()
                .find(|c| tree_eq(&got, c).is_ok())
                .unwrap_or_else(|| panic!("snapshot {id} matches nothing client {k} backed up"))
                .clone(),
        };
        present_rounds.push((k, round_of(&copy)));
        std::fs::remove_dir_all(&target).unwrap();
    }
    // No committed snapshot vanished unless two newer ones of its client remain (forget keeps the
    // last two of each client, so what it removed always had two newer ones, and so on).
    for (id, (k, copy)) in &committed {
        if present.contains_key(id) {
            continue;
        }
        let mine = round_of(copy);
        let newer = present_rounds
            .iter()
            .filter(|(c, round)| c == k && *round > mine)
            .count();
        assert!(
            newer >= 2,
            "snapshot {id} of client {k} is gone but only {newer} of its snapshots remain"
        );
    }
    eprintln!(
        "{} snapshots committed, {} listed at the end, all restored",
        committed.len(),
        present.len()
    );
}
