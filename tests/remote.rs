//! S3 (moto_server) and Azure Blob (Azurite) repositories: the backend conformance suite against each
//! store, and the whole life of a repository through the binary (init, two backups, snapshots,
//! restore, check --read-data, forget --prune, check, restore), plus the errors a user meets first:
//! a wrong password, a missing bucket, refused credentials.
//!
//! Each test starts its own store on a free loopback port and uses a fresh bucket; without the store
//! installed it is skipped with a message (or fails under `GATEVAULT_REQUIRE_SERVICES=1`).
//! Run with `cargo test --release --test remote` (after `source scripts/env`).

mod util;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use gatevault::backend::{self, Backend, BackendOptions, FileType};
use gatevault::error::Error;
use serde_json::Value;

use util::remote::*;
use util::*;

fn backend_of(store: &RemoteStore, bucket: &str, prefix: &str) -> Arc<dyn Backend> {
    let opts = BackendOptions::parse(&store.options()).unwrap();
    backend::open(&store.location(bucket, prefix), &opts).expect("open the backend")
}

fn conformance(store: Option<RemoteStore>) {
    let Some(store) = store else { return };
    let bucket = store.new_bucket();
    // Under a prefix, with a neighbour prefix holding objects that must stay invisible.
    let neighbour = backend_of(&store, &bucket, "other");
    neighbour.create().unwrap();
    neighbour
        .write(FileType::Snapshot, &"ee".repeat(32), b"neighbour")
        .unwrap();
    let b = backend_of(&store, &bucket, "team/repo");
    backend::conformance::run_all(b.as_ref());
    assert_eq!(
        neighbour.list(FileType::Snapshot).unwrap().len(),
        1,
        "the other prefix saw only its own objects"
    );
    // And a repository at the root of its own bucket.
    let root = backend_of(&store, &store.new_bucket(), "");
    backend::conformance::run_all(root.as_ref());
    let caps = b.capabilities();
    assert!(caps.durable_writes && caps.atomic_create && caps.concurrency > 1);
}

#[test]
fn conformance_s3() {
    conformance(RemoteStore::s3());
}

#[test]
fn conformance_azure() {
    conformance(RemoteStore::azure());
}

/// More objects than one listing page (1000 on S3 and Azure) all come back.
fn listing_pages(store: Option<RemoteStore>) {
    let Some(store) = store else { return };
    let b = backend_of(&store, &store.new_bucket(), "many");
    b.create().unwrap();
    let n = 1_050u32;
    std::thread::scope(|s| {
        for part in 0..8u32 {
            let b = &b;
            s.spawn(move || {
                for i in (0..n).filter(|i| i % 8 == part) {
                    b.write(FileType::Index, &format!("{i:064x}"), &i.to_le_bytes())
                        .unwrap();
                }
            });
        }
    });
    let mut names: Vec<String> = b
        .list(FileType::Index)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n as usize);
    assert_eq!(names[1_049], format!("{:064x}", 1_049));
}

#[test]
fn listing_pages_s3() {
    listing_pages(RemoteStore::s3());
}

#[test]
fn listing_pages_azure() {
    listing_pages(RemoteStore::azure());
}

/// Writes a small gateway-like tree plus one 3 MiB incompressible file (several packs with
/// `--pack-size 1M`).
fn source_tree(src: &Path, seed: u64) {
    write_gateway_tree(src, seed, 40);
    let mut rng = Rng::new(seed ^ 0x55);
    let mut big = vec![0u8; 3 << 20];
    for b in big.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    fs::write(src.join("blob.bin"), big).unwrap();
}

fn check_read_data(r: &RemoteRepo) {
    let v = r.run_json(["check", "--read-data"]);
    assert_eq!(v["status"], "Success", "{v}");
}

fn cycle(store: Option<RemoteStore>) {
    let Some(store) = store else { return };
    let r = store.repo();
    r.run_ok(["init", "-q", "--pack-size", "1M"]);
    let src = r.root().join("src");
    source_tree(&src, 3);
    let first_copy = r.root().join("first-copy");
    copy_dir(&src, &first_copy);

    let s1 = r.backup(&[&src], &[]);
    assert!(s1["data_added"].as_u64().unwrap() >= 3 << 20, "{s1}");
    // A change: one file edited, one added, one removed.
    fs::write(src.join("blob.bin"), b"now small").unwrap();
    fs::write(src.join("added.json"), b"{\"new\": true}").unwrap();
    let gone = fs::read_dir(src.join("plugins"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::remove_file(gone).unwrap();
    r.backup(&[&src], &[]);
    let ids = r.snapshot_ids();
    assert_eq!(ids.len(), 2);

    // Both snapshots restore byte for byte.
    for (id, want) in [(&ids[0], &first_copy), (&ids[1], &src)] {
        let target = r.root().join(format!("restore-{}", &id[..8]));
        r.run_ok(["restore", "-q", id, "--target", s(&target)]);
        assert_tree_eq(want, &restored(&target, &src));
    }
    check_read_data(&r);

    // The metadata cache holds the snapshots, the index files and the key slot.
    let cached = fs::read_dir(r.cache.join("remote"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(cached, 1, "one cached location");

    // Forget the first snapshot and prune: the 3 MiB blob's packs go.
    let before = pack_count(&store, &r);
    r.run_ok(["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(r.snapshot_ids(), vec![ids[1].clone()]);
    let after = pack_count(&store, &r);
    assert!(after < before, "prune removed packs ({before} -> {after})");
    check_read_data(&r);
    let target = r.root().join("restore-kept");
    r.run_ok(["restore", "-q", "latest", "--target", s(&target)]);
    assert_tree_eq(&src, &restored(&target, &src));

    // Without the metadata cache everything still works (and reads the store directly).
    let out = r.cmd().args(["--no-cache", "check"]).output().unwrap();
    assert_code(&out, code::OK);

    // A wrong key is refused with exit 12.
    let other = r.root().join("other-key");
    fs::write(&other, [7u8; 32]).unwrap();
    let out = r
        .cmd_no_creds()
        .arg("--key-file")
        .arg(&other)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_code(&out, code::WRONG_PASSWORD);
}

fn pack_count(store: &RemoteStore, r: &RemoteRepo) -> usize {
    let opts = BackendOptions::parse(&store.options()).unwrap();
    let b = backend::open(&r.location, &opts).unwrap();
    b.list(FileType::Pack).unwrap().len()
}

#[test]
fn full_cycle_s3() {
    cycle(RemoteStore::s3());
}

#[test]
fn full_cycle_azure() {
    cycle(RemoteStore::azure());
}

fn missing_bucket(store: Option<RemoteStore>) {
    let Some(store) = store else { return };
    let r = store.repo_at("no-such-bucket-here", "repo");
    let out = r.run_code(code::FAILURE, ["init", "-q"]);
    let err = stderr(&out);
    assert!(
        err.contains("does not exist") && err.contains("no-such-bucket-here"),
        "{}",
        describe(&out)
    );
    // Opening one (with some key) says there is no repository, exit 10, and names the bucket.
    fs::write(&r.key, [1u8; 32]).unwrap();
    let out = r.run_code(code::NO_REPOSITORY, ["snapshots"]);
    let err = stderr(&out);
    assert!(
        err.contains("does not exist") && err.contains("no-such-bucket-here"),
        "{}",
        describe(&out)
    );
    // An existing bucket without a repository: exit 10 too.
    let r = store.repo();
    fs::write(&r.key, [1u8; 32]).unwrap();
    let out = r.run_code(code::NO_REPOSITORY, ["snapshots"]);
    assert!(
        stderr(&out).contains("no config object"),
        "{}",
        describe(&out)
    );
}

#[test]
fn missing_bucket_s3() {
    missing_bucket(RemoteStore::s3());
}

#[test]
fn missing_container_azure() {
    missing_bucket(RemoteStore::azure());
}

/// Refused credentials fail at once (no retries), name the location and say what to check.
fn assert_denied(out: &std::process::Output, location: &str) {
    assert_code(out, code::FAILURE);
    let err = stderr(out);
    assert!(
        err.contains("access denied") && err.contains(location) && err.contains("credentials"),
        "{}",
        describe(out)
    );
    assert!(
        !err.contains("retries"),
        "a permanent error is not retried\n{}",
        describe(out)
    );
}

#[test]
fn refused_credentials_s3() {
    // With INITIAL_NO_AUTH_ACTION_COUNT=0 moto checks every request against its (empty) IAM: 403.
    let Some(store) = RemoteStore::s3_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else {
        return;
    };
    let r = store.repo_at("any-bucket", "repo");
    let out = r.run(["init", "-q"]);
    assert_denied(&out, &r.location);
}

#[test]
fn refused_credentials_azure() {
    let Some(store) = RemoteStore::azure() else {
        return;
    };
    let r = store.repo();
    r.init();
    let wrong_key =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let mut c = r.cmd();
    c.args(["-o", &format!("azure.account-key={wrong_key}"), "snapshots"]);
    let out = c.output().unwrap();
    assert_denied(&out, &r.location);
    // The library says the same with a typed error.
    let mut opts = BackendOptions::parse(&store.options()).unwrap();
    opts.values
        .insert("azure.account-key".into(), wrong_key.into());
    let b = backend::open(&r.location, &opts).unwrap();
    let e = b.read(FileType::Config, "").unwrap_err();
    assert!(matches!(e, Error::AccessDenied { .. }), "{e:?}");
}

#[test]
fn unknown_and_misplaced_options_are_refused() {
    let Some(store) = RemoteStore::s3() else {
        return;
    };
    let r = store.repo();
    let out = r
        .cmd()
        .args(["-o", "s3.regoin=eu-west-1", "init"])
        .output()
        .unwrap();
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("s3.regoin"), "{}", describe(&out));
}

#[test]
fn region_comes_from_the_option_or_the_bucket() {
    let Some(store) = RemoteStore::s3() else {
        return;
    };
    let bucket = format!("gv-eu-{}", std::process::id());
    store.create_bucket(&bucket, Some("eu-central-1"));
    let b = backend_of(&store, &bucket, "r");
    assert_eq!(b.region().unwrap().as_deref(), Some("eu-central-1"));
    let plain = backend_of(&store, &store.new_bucket(), "r");
    assert_eq!(plain.region().unwrap().as_deref(), Some("us-east-1"));
    let opts = BackendOptions::parse(&["s3.region=eu-west-3".to_string()]).unwrap();
    let declared = backend::open(&store.location(&bucket, "r"), &opts).unwrap();
    assert_eq!(declared.region().unwrap().as_deref(), Some("eu-west-3"));
    if let Some(az) = RemoteStore::azure() {
        let mut o = az.options();
        o.push("azure.region=westeurope".into());
        let opts = BackendOptions::parse(&o).unwrap();
        let b = backend::open(&az.location(&az.new_bucket(), "r"), &opts).unwrap();
        assert_eq!(b.region().unwrap().as_deref(), Some("westeurope"));
        let b = backend_of(&az, &az.new_bucket(), "r");
        assert_eq!(b.region().unwrap(), None, "Azure cannot tell its region");
    }
}

#[test]
fn json_of_init_names_the_remote_location() {
    let Some(store) = RemoteStore::s3() else {
        return;
    };
    let r = store.repo();
    let v: Value = serde_json::from_slice(
        &r.cmd()
            .args(["--json", "init"])
            .output()
            .expect("init")
            .stdout,
    )
    .expect("JSON");
    assert_eq!(v["repository"], r.location.as_str(), "{v}");
    // A second init is refused and leaves the first intact.
    let out = r.run(["init", "-q"]);
    assert_ne!(out.status.code(), Some(code::OK), "{}", describe(&out));
    r.run_ok(["snapshots"]);
}
