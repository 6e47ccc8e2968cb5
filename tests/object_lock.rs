//! S3 Object Lock against moto (started on a free loopback port; skipped when `moto_server` is not
//! installed, unless `GATEVAULT_REQUIRE_SERVICES=1`): the raw signed requests of
//! `gatevault::backend::s3lock`, and the repository cycle with `-o s3.object-lock=governance:1d`.
//!
//! Run with `cargo test --release --test object_lock` (after `source scripts/env`).

mod util;

use std::sync::Arc;

use chrono::{Duration, Utc};
use gatevault::backend::s3lock::{LockClient, RetentionMode};
use gatevault::Error;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use util::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn client(port: u16, bucket: &str) -> LockClient {
    let cred = Arc::new(object_store::StaticCredentialProvider::new(AwsCredential {
        key_id: "testing".into(),
        secret_key: "testing".into(),
        token: None,
    }));
    LockClient::new(
        bucket,
        &format!("http://127.0.0.1:{port}/{bucket}"),
        "us-east-1",
        cred,
    )
    .expect("a client")
}

fn store(port: u16, bucket: &str) -> object_store::aws::AmazonS3 {
    gatevault::backend::s3lock::install_crypto_provider();
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .expect("an S3 client")
}

#[test]
fn raw_lock_requests_follow_s3_semantics() {
    let Some(moto) = moto(&[]) else { return };
    let rt = runtime();
    let locked = client(moto.port, "locked");
    let plain = client(moto.port, "plain");
    rt.block_on(async {
        locked.create_bucket(true).await.unwrap();
        plain.create_bucket(false).await.unwrap();
        let l = locked.bucket_lock().await.unwrap();
        assert!(l.enabled, "{l:?}");
        assert!(locked.versioned().await.unwrap());
        let p = plain.bucket_lock().await.unwrap();
        assert!(!p.enabled, "{p:?}");
        assert!(!plain.versioned().await.unwrap());

        let s = store(moto.port, "locked");
        for k in ["a/held", "a/free"] {
            s.put(&k.into(), PutPayload::from_static(b"data"))
                .await
                .unwrap();
        }
        let until = Utc::now() + Duration::days(1);
        locked
            .put_retention("a/held", RetentionMode::Governance, until)
            .await
            .unwrap();
        let got = locked
            .locked_until("a/held")
            .await
            .unwrap()
            .expect("locked");
        assert!((got - until).num_seconds().abs() <= 1, "{got} vs {until}");
        assert_eq!(locked.locked_until("a/free").await.unwrap(), None);
        assert!(matches!(
            locked.locked_until("a/none").await,
            Err(Error::NotFound { .. })
        ));

        // A plain DELETE only hides the data behind a delete marker: the version stays.
        s.delete(&"a/free".into()).await.unwrap();
        let v = locked.versions("a/free").await.unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v.iter().filter(|v| v.delete_marker).count(), 1, "{v:?}");
        // Removing every version removes it physically.
        locked.remove_all_versions("a/free").await.unwrap();
        assert!(locked.versions("a/free").await.unwrap().is_empty());

        // A retained key refuses, names its date, and nothing of it is deleted.
        match locked.remove_all_versions("a/held").await {
            Err(Error::Retained { object, until: u }) => {
                assert_eq!(object, "a/held");
                assert!((u - until).num_seconds().abs() <= 1);
            }
            other => panic!("expected Retained, got {other:?}"),
        }
        let v = locked.versions("a/held").await.unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        // And deleting the version directly is refused by the store as retained.
        assert!(matches!(
            locked.delete_version("a/held", &v[0].version_id).await,
            Err(Error::Retained { .. })
        ));

        // A retention on a bucket without Object Lock is refused.
        let ps = store(moto.port, "plain");
        ps.put(&"k".into(), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert!(plain
            .put_retention("k", RetentionMode::Governance, until)
            .await
            .is_err());
    });
}

/// Every key under `prefix` in `bucket` (current versions only, as a plain listing shows them).
fn keys(port: u16, bucket: &str, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let s = store(port, bucket);
    runtime().block_on(async {
        s.list(Some(&prefix.into()))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
}

#[test]
fn a_locked_repository_prunes_around_retained_packs_and_refuses_a_bucket_without_lock() {
    let Some(s3) = RemoteStore::s3() else {
        return;
    };
    let port = s3.svc.port;
    let bucket = "gv-locked";
    let raw = client(port, bucket);
    let rt = runtime();
    rt.block_on(raw.create_bucket(true)).unwrap();
    let mut repo = s3.repo_at(bucket, "repo");
    repo.options.push("s3.object-lock=governance:1d".into());
    repo.init();

    let data = repo.root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = Rng::new(7);
    std::fs::write(data.join("old.bin"), rng.bytes(600_000)).unwrap();
    std::fs::write(data.join("keep.json"), gateway_route(&mut rng, 1)).unwrap();
    repo.backup(&[&data], &[]);
    let first_packs = keys(port, bucket, "repo/data");
    assert!(!first_packs.is_empty());
    // Packs, index files and snapshots are retained; the config and keys are not.
    for k in first_packs
        .iter()
        .chain(&keys(port, bucket, "repo/index"))
        .chain(&keys(port, bucket, "repo/snapshots"))
    {
        let until = rt.block_on(raw.locked_until(k)).unwrap();
        assert!(
            until.is_some_and(|u| u > Utc::now() + Duration::hours(23)),
            "{k}: {until:?}"
        );
    }
    assert_eq!(rt.block_on(raw.locked_until("repo/config")).unwrap(), None);

    std::fs::remove_file(data.join("old.bin")).unwrap();
    std::fs::write(data.join("new.bin"), rng.bytes(600_000)).unwrap();
    repo.backup(&[&data], &[]);

    // forget + prune: the forgotten snapshot goes, its packs are retained and reported.
    let out = repo.run_code(code::OK, ["forget", "--keep-last", "1", "--prune"]);
    let text = stdout(&out);
    assert!(
        text.contains("kept: object lock until")
            && text.contains("a prune after that removes them"),
        "{}",
        describe(&out)
    );
    assert_eq!(repo.snapshot_ids().len(), 1);
    let now = keys(port, bucket, "repo/data");
    for p in &first_packs {
        assert!(now.contains(p), "retained pack {p} was deleted");
    }
    let dry = repo.run_json(["prune", "--dry-run"]);
    assert!(dry["locked_packs"].as_u64().unwrap() >= 1, "{dry}");
    assert!(dry["locked_until_latest"].is_string(), "{dry}");
    assert_eq!(dry["packs_deleted"], 0, "{dry}");

    let check = repo.run_ok(["check", "--read-data"]);
    assert!(
        check.contains("Success") || check.contains("no errors"),
        "{check}"
    );
    let target = repo.root().join("restored");
    repo.run_ok(["restore", "latest", "--target", s(&target)]);
    assert_eq!(
        std::fs::read(restored(&target, &data).join("new.bin")).unwrap(),
        std::fs::read(data.join("new.bin")).unwrap()
    );

    // Re-encryption would replace retained objects: refused before anything is rewritten.
    repo.run_ok(["key", "rotate"]);
    let before = repo.snapshot_ids();
    let objects = keys(port, bucket, "repo");
    let out = repo.run_code(code::FAILURE, ["rewrite", "--reencrypt"]);
    assert!(
        stderr(&out).contains("Object Lock") && stderr(&out).contains("Nothing was rewritten"),
        "{}",
        describe(&out)
    );
    assert_eq!(repo.snapshot_ids(), before);
    let after: Vec<String> = keys(port, bucket, "repo")
        .into_iter()
        .filter(|k| !k.starts_with("repo/audit/") && !k.starts_with("repo/locks/"))
        .collect();
    let objects: Vec<String> = objects
        .into_iter()
        .filter(|k| !k.starts_with("repo/audit/") && !k.starts_with("repo/locks/"))
        .collect();
    assert_eq!(after, objects, "nothing written or removed");

    // Lock files are never retained: a lock written and removed leaves no version behind.
    let opts = gatevault::backend::BackendOptions::parse(&repo.options).unwrap();
    let b = gatevault::backend::open(&repo.location, &opts).unwrap();
    assert!(b.capabilities().object_lock);
    b.write(gatevault::backend::FileType::Lock, "ab12", b"{}")
        .unwrap();
    assert_eq!(
        rt.block_on(raw.versions("repo/locks/ab12")).unwrap().len(),
        1
    );
    b.remove(gatevault::backend::FileType::Lock, "ab12")
        .unwrap();
    assert!(rt
        .block_on(raw.versions("repo/locks/ab12"))
        .unwrap()
        .is_empty());
    repo.run_ok(["unlock", "--remove-all"]);
    assert!(keys(port, bucket, "repo/locks").is_empty());

    // A bucket without Object Lock is refused at init, before anything is written.
    let plain = s3.new_bucket();
    let mut refused = s3.repo_at(&plain, "repo");
    refused.options.push("s3.object-lock=governance:1d".into());
    let out = refused.run_code(code::FAILURE, ["init", "-q"]);
    assert!(
        stderr(&out).contains("Object Lock")
            && stderr(&out).contains("object-lock-enabled-for-bucket"),
        "{}",
        describe(&out)
    );
    assert!(keys(port, &plain, "").is_empty());
}
