//! `check --scrub-cycle`: repeated runs (on a test clock, the hidden `--now`) read the buckets of packs
//! that are due, so that every pack is re-read within the cycle; each run's check record names the
//! buckets it read, and the next run plans from those records.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use gatevault::backend::{local::LocalBackend, Backend};
use gatevault::repo::{Credentials, Repository};
use serde_json::Value;
#[allow(unused_imports)]
use util::Runner;
use util::*;

fn open(r: &Repo) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&r.path));
    let key = std::fs::read(r.key.as_ref().unwrap()).unwrap();
    let creds = Credentials {
        password: None,
        key_file: Some(gatevault::crypto::keyslot::parse_key_file(&key, "key").unwrap()),
    };
    Repository::open(backend, &creds, None).unwrap()
}

/// The scrub bucket of a pack (of 64 by pack id: the top six bits of its first byte).
fn bucket(pack: &str) -> u32 {
    u32::from(u8::from_str_radix(&pack[..2], 16).unwrap() >> 2)
}

#[test]
fn every_pack_is_reread_within_the_cycle_and_records_name_the_buckets() {
    let r = Repo::new();
    r.run_ok(["init", "-q", "--pack-size", "64K", "--compression", "0"]);
    let src = r.root().join("src");
    let mut rng = Rng::new(11);
    for i in 0..40 {
        write(&src.join(format!("f{i:02}.bin")), rng.bytes(48 << 10));
    }
    r.backup(&[&src], &[]);
    let packs: Vec<String> = r.pack_files().iter().map(|p| file_name(p)).collect();
    assert!(packs.len() >= 20, "enough packs: {}", packs.len());
    let buckets_with_packs: BTreeSet<u32> = packs.iter().map(|p| bucket(p)).collect();

    let cycle = Duration::days(7);
    let start = Utc::now() + Duration::hours(1);
    let mut last_read: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    let mut records: Vec<(String, Vec<u32>)> = vec![];
    let created = Utc::now();
    for day in 0..16 {
        let now = start + Duration::days(day);
        let t = now.to_rfc3339();
        let v: Value = r.run_json(["check", "--scrub-cycle", "7d", "--now", &t]);
        assert_eq!(v["status"], "Success", "{v}");
        let read: Vec<u32> = v["scrub"]["read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect();
        assert!(!read.is_empty(), "at least one bucket per run: {v}");
        let in_read: Vec<&String> = packs.iter().filter(|p| read.contains(&bucket(p))).collect();
        assert_eq!(
            v["packs_read"].as_u64().unwrap() as usize,
            in_read.len(),
            "the packs read are those of the buckets named: {v}"
        );
        for p in in_read {
            last_read.insert(p, now);
        }
        records.push((v["record"].as_str().unwrap().to_string(), read));
        // Once a cycle has passed since the repository was made, no pack is older than the cycle.
        if now - created >= cycle {
            for p in &packs {
                let l = last_read.get(p.as_str()).copied().unwrap_or(created);
                assert!(
                    now - l <= cycle,
                    "pack {p} (bucket {}) not read for {} h on day {day}",
                    bucket(p),
                    (now - l).num_hours()
                );
            }
        }
    }
    assert_eq!(
        last_read.len(),
        packs.len(),
        "every pack was read at least once"
    );
    // Daily runs do not read everything every day.
    let total: usize = records.iter().map(|(_, b)| b.len()).sum();
    assert!(total < 16 * 64 / 2, "{total} bucket reads in 16 runs");
    assert!(buckets_with_packs.len() > 1);

    // The records in the repository name the buckets each run read.
    let repo = open(&r);
    let stored: BTreeMap<String, Value> = repo
        .records_named(Some("check"))
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, v.unwrap()))
        .collect();
    for (id, read) in &records {
        let rec = &stored[id];
        assert_eq!(rec["read_data"], "scrub", "{rec}");
        assert_eq!(rec["scrub"]["buckets"], 64, "{rec}");
        assert_eq!(rec["scrub"]["cycle"], "7d", "{rec}");
        let got: Vec<u32> = rec["scrub"]["read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(&got, read, "{rec}");
    }
}

#[test]
fn a_bad_cycle_is_refused_and_conflicts_with_other_reads() {
    let r = Repo::init();
    let out = r.run_code(code::FAILURE, ["check", "--scrub-cycle", "soon"]);
    assert!(stderr(&out).contains("--scrub-cycle"), "{}", describe(&out));
    r.run_code(code::USAGE, ["check", "--scrub-cycle", "7d", "--read-data"]);
    r.run_code(
        code::USAGE,
        ["check", "--scrub-cycle", "7d", "--read-data-subset", "1/2"],
    );
}
