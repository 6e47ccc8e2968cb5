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
use object_store::{ObjectStoreExt, PutPayload};

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
