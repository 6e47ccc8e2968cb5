//! Remote repositories under injected faults: the fault proxy itself (raw HTTP through it to moto),
//! then the whole backup cycle against S3 (moto) and Azure Blob (Azurite) through it.
//!
//! The servers are started on free loopback ports; a test skips with a message when one is not
//! installed, unless `GATEVAULT_REQUIRE_SERVICES=1`.

mod util;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use util::faultproxy::{exchange, FaultProxy, Faults, Flavor, Forbid, Injected};
use util::remote::{RemoteRepo, RemoteStore};
use util::Runner;
use util::{assert_code, assert_tree_eq, code, copy_dir, describe, restored, s, stderr};
use util::{stress_env, write_gateway_tree, Rng};

/// moto checks no signatures, but treats a request without credentials as anonymous (which may not
/// overwrite): every raw request carries a well-formed, unverified SigV4 header.
const AUTH: &[(&str, &str)] = &[(
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
)];

/// Creates `bucket` on the moto server on `port`.
fn make_bucket(port: u16, bucket: &str) {
    let (status, _, body) = exchange(port, "PUT", &format!("/{bucket}"), AUTH, b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn proxy_forwards_and_injects_each_fault() {
    let Some(moto) = util::moto(&[]) else { return };
    make_bucket(moto.port, "proxied");
    let payload = util::Rng::new(5).bytes(100_000);
    let proxy = FaultProxy::start(moto.port, Flavor::S3, Faults::none(1));

    // Faults off: a plain proxy.
    let (st, _, _) = exchange(proxy.port, "PUT", "/proxied/a", AUTH, &payload).unwrap();
    assert_eq!(st, 200);
    let (st, _, body) = exchange(proxy.port, "GET", "/proxied/a", AUTH, b"").unwrap();
    assert_eq!(st, 200);
    assert!(body == payload, "the object came back changed");
    let (st, head, _) = exchange(proxy.port, "HEAD", "/proxied/a", AUTH, b"").unwrap();
    assert_eq!(st, 200);
    assert_eq!(head.header("content-length"), Some("100000"));
    let n = proxy.injected();
    assert_eq!((n.requests, n.forwarded, n.failed()), (3, 3, 0));

    // An error before forwarding: the write never happened.
    proxy.set(Faults {
        error_before: 1.0,
        ..Faults::none(2)
    });
    let (st, _, body) = exchange(proxy.port, "PUT", "/proxied/b", AUTH, &payload).unwrap();
    assert!(st == 500 || st == 503, "status {st}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("<Error><Code>"), "{body}");
    let (st, _, _) = exchange(moto.port, "HEAD", "/proxied/b", AUTH, b"").unwrap();
    assert_eq!(
        st, 404,
        "an error before forwarding must not store the object"
    );

    // An error after forwarding: the write happened, the client saw an error.
    proxy.set(Faults {
        error_after: 1.0,
        ..Faults::none(3)
    });
    let (st, _, _) = exchange(proxy.port, "PUT", "/proxied/c", AUTH, &payload).unwrap();
    assert!(st == 500 || st == 503, "status {st}");
    let (st, _, body) = exchange(moto.port, "GET", "/proxied/c", AUTH, b"").unwrap();
    assert_eq!(st, 200, "an error after forwarding comes after the write");
    assert!(body == payload);

    // Resets, before (nothing stored) and after (stored) forwarding.
    proxy.set(Faults {
        reset_before: 1.0,
        ..Faults::none(4)
    });
    assert!(exchange(proxy.port, "PUT", "/proxied/d", AUTH, &payload).is_err());
    let (st, _, _) = exchange(moto.port, "HEAD", "/proxied/d", AUTH, b"").unwrap();
    assert_eq!(st, 404);
    proxy.set(Faults {
        reset_after: 1.0,
        ..Faults::none(5)
    });
    let e = exchange(proxy.port, "PUT", "/proxied/e", AUTH, &payload).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{e:?}"
    );
    let (st, _, _) = exchange(moto.port, "HEAD", "/proxied/e", AUTH, b"").unwrap();
    assert_eq!(st, 200);

    // A truncated body: the full Content-Length, then the end of the stream.
    proxy.set(Faults {
        truncate: 1.0,
        ..Faults::none(6)
    });
    let e = exchange(proxy.port, "GET", "/proxied/a", AUTH, b"").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e:?}");

    // A delay holds the response back, which then arrives whole.
    proxy.set(Faults {
        delay: 1.0,
        delay_for: Duration::from_millis(300),
        ..Faults::none(7)
    });
    let t = Instant::now();
    let (st, _, body) = exchange(proxy.port, "GET", "/proxied/a", AUTH, b"").unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(st, 200);
    assert!(body == payload);

    // Permanent 403 for writes: reads still pass.
    proxy.set(Faults::forbidden(8, Forbid::WritesTo(String::new())));
    let (st, _, body) = exchange(proxy.port, "PUT", "/proxied/f", AUTH, &payload).unwrap();
    assert_eq!(st, 403);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
    let (st, _, _) = exchange(proxy.port, "GET", "/proxied/a", AUTH, b"").unwrap();
    assert_eq!(st, 200);

    let n = proxy.injected();
    assert_eq!(
        (
            n.error_before,
            n.error_after,
            n.reset_before,
            n.reset_after,
            n.truncated,
            n.delayed,
            n.forbidden
        ),
        (1, 1, 1, 1, 1, 1, 1),
        "{n:?}"
    );
}

#[test]
fn proxy_mixed_faults_follow_the_seed_and_rate() {
    let Some(moto) = util::moto(&[]) else { return };
    make_bucket(moto.port, "mixed");
    let (st, _, _) = exchange(moto.port, "PUT", "/mixed/x", AUTH, b"0123456789").unwrap();
    assert_eq!(st, 200);
    let run = |seed| {
        let proxy = FaultProxy::start(
            moto.port,
            Flavor::S3,
            Faults {
                delay_for: Duration::from_millis(1),
                ..Faults::mixed(seed, 0.3)
            },
        );
        let outcomes: Vec<bool> = (0..200)
            .map(|_| exchange(proxy.port, "GET", "/mixed/x", AUTH, b"").is_ok_and(|r| r.0 == 200))
            .collect();
        (outcomes, proxy.injected())
    };
    let (a, na) = run(11);
    let (b, nb) = run(11);
    let (c, _) = run(12);
    assert_eq!(a, b, "the same seed injects the same faults");
    assert_eq!(na, nb);
    assert_ne!(a, c, "another seed injects other faults");
    assert_eq!(na.requests, 200);
    // 30% faulted in all, of which five sixths fail the request: about 50 of 200.
    let failed = a.iter().filter(|ok| !**ok).count() as u64;
    assert_eq!(failed, na.failed());
    assert!(
        (25..=80).contains(&failed),
        "{failed} of 200 failed: {na:?}"
    );
    for (kind, n) in [
        ("error_before", na.error_before),
        ("error_after", na.error_after),
        ("reset_before", na.reset_before),
        ("reset_after", na.reset_after),
        ("truncated", na.truncated),
        ("delayed", na.delayed),
    ] {
        assert!(n > 0, "no {kind} in 200 requests: {na:?}");
    }
}

// ------------------------------------------------------------------------ gatevault through faults

/// A repository in a fresh bucket of `store`, reached through a proxy in front of it.
fn proxied_repo(store: &RemoteStore, faults: Faults) -> (FaultProxy, RemoteRepo) {
    let port: u16 = store
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the store's port");
    let flavor = if store.scheme() == "s3" {
        Flavor::S3
    } else {
        Flavor::Azure
    };
    let proxy = FaultProxy::start(port, flavor, faults);
    let bucket = store.new_bucket();
    let mut r = store.repo_at(&bucket, "repo");
    let direct = store.endpoint();
    r.location = r.location.replace(&direct, &proxy.url());
    for o in &mut r.options {
        *o = o.replace(&direct, &proxy.url());
    }
    assert!(
        r.location.contains(&proxy.url()) || r.options.iter().any(|o| o.contains(&proxy.url())),
        "the repository goes through the proxy: {} {:?}",
        r.location,
        r.options
    );
    (proxy, r)
}

/// A small gateway-like tree plus one 3 MiB incompressible file (several packs at `--pack-size 1M`).
fn source_tree(src: &Path, seed: u64) {
    write_gateway_tree(src, seed, 40);
    fs::write(src.join("blob.bin"), Rng::new(seed ^ 0x55).bytes(3 << 20)).unwrap();
}

#[track_caller]
fn check_read_data(r: &RemoteRepo) {
    let v = r.run_json(["check", "--read-data"]);
    assert_eq!(v["status"], "Success", "{v}");
}

fn kinds(n: &Injected) -> [(&'static str, u64); 6] {
    [
        ("500/503 before forwarding", n.error_before),
        ("500/503 after forwarding", n.error_after),
        ("reset before forwarding", n.reset_before),
        ("reset after forwarding", n.reset_after),
        ("truncated body", n.truncated),
        ("delay", n.delayed),
    ]
}

/// `cycle_under_faults` in `GATEVAULT_STRESS_ROUNDS` (default 1) fresh buckets of `store`, seeds
/// counting up from `GATEVAULT_STRESS_SEED` (default `seed`). Each round that passes prints a
/// `FAULT-SUMMARY` line (store, seed, requests, then the faults of each kind) for `scripts/stress faults`.
fn cycles_under_faults(store: Option<RemoteStore>, seed: u64) {
    let Some(store) = store else { return };
    let rounds: u64 = stress_env("GATEVAULT_STRESS_ROUNDS", 1);
    let first: u64 = stress_env("GATEVAULT_STRESS_SEED", seed);
    for seed in first..first + rounds {
        eprintln!("{} round with seed {seed}", store.scheme());
        let n = cycle_under_faults(&store, seed);
        let counts: Vec<String> = kinds(&n).iter().map(|(_, c)| c.to_string()).collect();
        eprintln!(
            "FAULT-SUMMARY\t{}\t{seed}\t{}\t{}",
            store.scheme(),
            n.requests,
            counts.join("\t")
        );
    }
}

/// init, backup twice, restore both byte for byte, check --read-data, forget --prune, check
/// --read-data: all through a proxy faulting 30% of the requests. Returns what the proxy injected.
fn cycle_under_faults(store: &RemoteStore, seed: u64) -> Injected {
    let faults = Faults {
        delay_for: Duration::from_millis(200),
        ..Faults::mixed(seed, 0.3)
    };
    let (proxy, r) = proxied_repo(store, faults);
    r.run_ok(["init", "-q", "--pack-size", "512K"]);
    let src = r.root().join("src");
    source_tree(&src, seed);
    let first = r.root().join("first");
    copy_dir(&src, &first);
    let s1 = r.backup(&[&src], &[]);
    assert!(s1["data_added"].as_u64().unwrap() >= 3 << 20, "{s1}");
    fs::write(src.join("blob.bin"), Rng::new(seed).bytes(1 << 20)).unwrap();
    fs::write(src.join("added.json"), b"{\"new\": true}").unwrap();
    r.backup(&[&src], &[]);
    let ids = r.snapshot_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for (id, want) in [(&ids[0], &first), (&ids[1], &src)] {
        let target = r.root().join(format!("restore-{}", &id[..8]));
        r.run_ok(["restore", "-q", id, "--target", s(&target)]);
        assert_tree_eq(want, &restored(&target, &src));
    }
    check_read_data(&r);
    r.run_ok(["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(r.snapshot_ids(), vec![ids[1].clone()]);
    check_read_data(&r);
    let target = r.root().join("restore-kept");
    r.run_ok(["restore", "-q", "latest", "--target", s(&target)]);
    assert_tree_eq(&src, &restored(&target, &src));

    // Every kind of fault happened (a few more reads when one kind has not come up yet: the draw is
    // random per request, and which request gets which draw depends on how concurrent requests
    // interleave).
    for _ in 0..6 {
        if kinds(&proxy.injected()).iter().all(|(_, n)| *n > 0) {
            break;
        }
        check_read_data(&r);
    }
    let n = proxy.injected();
    eprintln!("{} through the proxy: {n:?}", store.scheme());
    for (kind, count) in kinds(&n) {
        assert!(count > 0, "no {kind} was injected: {n:?}");
    }
    let rate = (n.failed() + n.delayed) as f64 / n.requests as f64;
    assert!(
        (0.15..=0.45).contains(&rate),
        "{:.0}% of {} requests faulted: {n:?}",
        rate * 100.0,
        n.requests
    );
    n
}

#[test]
fn cycle_under_faults_s3() {
    cycles_under_faults(RemoteStore::s3(), 21);
}

#[test]
fn cycle_under_faults_azure() {
    cycles_under_faults(RemoteStore::azure(), 22);
}

/// Permanent 403s: a backup fails at once with exit 1 and a message naming the location, without
/// retrying; afterwards (403 lifted) the repository checks clean and no snapshot refers to anything
/// missing.
fn permanent_403(store: Option<RemoteStore>) {
    let Some(store) = store else { return };
    let (proxy, r) = proxied_repo(&store, Faults::none(31));
    r.run_ok(["init", "-q", "--pack-size", "512K"]);
    let src = r.root().join("src");
    source_tree(&src, 31);
    r.backup(&[&src], &[]);
    let before = r.snapshot_ids();
    fs::write(src.join("blob.bin"), Rng::new(32).bytes(2 << 20)).unwrap();

    for (forbid, what) in [
        (Forbid::WritesTo(String::new()), "every write"),
        (Forbid::WritesTo("/snapshots/".into()), "snapshot writes"),
        (Forbid::Everything, "every request"),
    ] {
        proxy.set(Faults::forbidden(33, forbid));
        let denied_before = proxy.injected().forbidden;
        let t = Instant::now();
        let out = r.cmd().args(["backup", "-q", s(&src)]).output().unwrap();
        let took = t.elapsed();
        assert_code(&out, code::FAILURE);
        let err = stderr(&out);
        assert!(
            err.contains("access denied") && err.contains(&r.location),
            "403 on {what}: the message names the location\n{}",
            describe(&out)
        );
        // Permanent: no retry loop. Each writer thread may have had one request refused.
        let denied = proxy.injected().forbidden - denied_before;
        assert!(
            (1..=10).contains(&denied),
            "403 on {what}: {denied} requests refused"
        );
        assert!(
            took < Duration::from_secs(60),
            "403 on {what}: took {took:?}"
        );

        proxy.set(Faults::none(34));
        // A credential that may not delete leaves the failed backup's lock behind: `unlock` clears it.
        r.run_ok(["unlock", "-q"]);
        assert_eq!(r.snapshot_ids(), before, "403 on {what}: no new snapshot");
        // Nothing a snapshot refers to is missing; packs left by the failed backup are only unused.
        let v = r.run_json(["check"]);
        assert_eq!(v["status"], "Success", "after 403 on {what}: {v}");
    }
    check_read_data(&r);
    // With the 403 lifted the same backup goes through.
    r.backup(&[&src], &[]);
    assert_eq!(r.snapshot_ids().len(), before.len() + 1);
    check_read_data(&r);
}

#[test]
fn permanent_403_s3() {
    permanent_403(RemoteStore::s3());
}

#[test]
fn permanent_403_azure() {
    permanent_403(RemoteStore::azure());
}
