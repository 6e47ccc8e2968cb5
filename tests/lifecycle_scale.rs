//! The lifecycle at scale: 1,000 hourly snapshots of generated Kong history
//! (`../shared/gen_gateway_history.py`), one consumer erased from all of them, a standard retention
//! policy with prune, then `check --read-data` and a restore of every kept snapshot compared with the
//! generator's own files.
//!
//! Run with `cargo test --release --test lifecycle_scale` (after `source scripts/env`).

mod util;

use std::fs;

use serde_json::Value;

use util::*;

const VERSIONS: usize = 1000;

fn yaml(b: &[u8]) -> Value {
    serde_yaml_ng::from_slice(b).unwrap()
}

fn without(mut v: Value, victim: &str) -> Value {
    if let Some(a) = v["consumers"].as_array_mut() {
        a.retain(|c| c["username"] != victim);
    }
    v
}

#[test]
fn forget_prune_and_erase_on_1000_snapshots_keep_every_kept_snapshot_restorable() {
    let r = Repo::init();
    let hist = r.root().join("hist");
    if !gen_history(&hist, 8, VERSIONS, 5, &[]) {
        return;
    }
    let file = |v: usize| hist.join(format!("v{v:04}")).join("kong.yaml");
    // The consumer present in most versions.
    let texts: Vec<String> = (0..VERSIONS)
        .map(|v| String::from_utf8(fs::read(file(v)).unwrap()).unwrap())
        .collect();
    let mut names: Vec<String> = (0..VERSIONS)
        .step_by(50)
        .flat_map(|v| {
            yaml(texts[v].as_bytes())["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["username"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    let holds = |t: &str, n: &str| t.contains(&format!("username: {n}\n"));
    let victim = names
        .iter()
        .max_by_key(|n| texts.iter().filter(|t| holds(t, n)).count())
        .unwrap()
        .clone();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let time = |v: usize| (start + chrono::Duration::hours(v as i64)).to_rfc3339();
    let mut with_victim = 0;
    for (v, text) in texts.iter().enumerate() {
        // One export path, overwritten by each version, as a scheduled export would.
        let f = r.root().join("live/kong.yaml");
        write(&f, text);
        with_victim += usize::from(holds(text, &victim));
        r.run_ok([
            "backup",
            "-q",
            "--gateway",
            "kong",
            "--file",
            s(&f),
            "--time",
            &time(v),
            "--tag",
            "Environment=prod",
        ]);
    }
    assert_eq!(r.snapshot_ids().len(), VERSIONS);
    assert!(
        with_victim >= 200,
        "the victim is in {with_victim} versions"
    );

    // Erase one consumer from every snapshot.
    let report = r.run_json(["erase", "--subject", &format!("kong:consumer={victim}")]);
    assert_eq!(report["scan"]["status"], "clean", "{}", report["scan"]);
    assert_eq!(
        report["snapshots"].as_array().unwrap().len(),
        with_victim,
        "every snapshot holding the consumer was rewritten"
    );

    // Retention: 7 daily, 4 weekly, 12 monthly of ~42 days of hourly snapshots, then prune.
    r.run_ok([
        "forget",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "12",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    let kept = r.snapshots();
    assert!(
        (10..=25).contains(&kept.len()),
        "{} snapshots kept",
        kept.len()
    );
    let j = r.run_json(["check", "--read-data"]);
    assert_eq!(j["status"], "Success", "{j}");

    // Every kept snapshot restores (and verifies) to the generator's file: byte for byte where the
    // consumer was not in it, and equal but for that consumer where it was.
    for s in &kept {
        let t = chrono::DateTime::parse_from_rfc3339(s["time"].as_str().unwrap()).unwrap();
        let v = (t - start).num_hours() as usize;
        let target = r.root().join("restore");
        r.restore(s["id"].as_str().unwrap(), &target, &["--verify"]);
        let got = fs::read(target.join("raw/kong.yaml")).unwrap();
        let want = fs::read(file(v)).unwrap();
        if s["original"].is_null() {
            assert!(got == want, "version {v} restores byte-identical");
        } else {
            assert_eq!(yaml(&got), without(yaml(&want), &victim), "version {v}");
            assert!(!String::from_utf8_lossy(&got).contains(&victim));
        }
        let consumers = fs::read_dir(target.join("kong/consumers")).unwrap().count();
        assert_eq!(
            consumers,
            without(yaml(&want), &victim)["consumers"]
                .as_array()
                .map_or(0, Vec::len),
            "version {v}: one entity per consumer"
        );
        fs::remove_dir_all(&target).unwrap();
    }
}
