//! Remote repositories under injected faults: the fault proxy itself (raw HTTP through it to moto),
//! then the whole backup cycle against S3 (moto) and Azure Blob (Azurite) through it.
//!
//! The servers are started on free loopback ports; a test skips with a message when one is not
//! installed, unless `GATEVAULT_REQUIRE_SERVICES=1`.

mod util;

use std::time::{Duration, Instant};

use util::faultproxy::{exchange, FaultProxy, Faults, Flavor, Forbid};

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
