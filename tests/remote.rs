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
    let mut want = ids.clone();
    want.sort();
    assert_eq!(cached(&r, "snapshots"), want);
    assert_eq!(cached(&r, "keys").len(), 1);
    assert!(!cached(&r, "index").is_empty());

    // Forget the first snapshot and prune: the 3 MiB blob's packs go.
    let before = pack_count(&store, &r);
    r.run_ok(["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(r.snapshot_ids(), vec![ids[1].clone()]);
    assert_eq!(
        cached(&r, "snapshots"),
        vec![ids[1].clone()],
        "the forgotten snapshot left the cache"
    );
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

/// Names of the cached objects of one folder (`snapshots`, `index`, `keys`) of a repository's
/// metadata cache, sorted.
fn cached(r: &RemoteRepo, folder: &str) -> Vec<String> {
    let mut out = Vec::new();
    for loc in fs::read_dir(r.cache.join("remote")).unwrap().flatten() {
        for repo in fs::read_dir(loc.path()).unwrap().flatten() {
            if let Ok(rd) = fs::read_dir(repo.path().join(folder)) {
                out.extend(
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
    }
    out.sort();
    out
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
        err.contains("cannot create a repository")
            && err.contains("does not exist: create it first")
            && err.contains("\"no-such-bucket-here\""),
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

/// A loopback proxy in front of `upstream` that, for the first create-only PUT (`If-None-Match`)
/// it sees, passes the request on and then drops the connection instead of answering: the write
/// landed, but the client never heard so. Counts the create-only PUTs.
struct DroppingProxy {
    port: u16,
    creates: Arc<std::sync::atomic::AtomicUsize>,
}

impl DroppingProxy {
    fn start(upstream: u16) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let creates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&creates);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || -> std::io::Result<()> {
                    let mut reader = BufReader::new(client.try_clone()?);
                    let mut client = client;
                    // One request per connection: head, then a Content-Length body.
                    let mut head = Vec::new();
                    let mut len = 0usize;
                    let mut create = false;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line)? == 0 {
                            return Ok(());
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("if-none-match:") {
                            create = true;
                        }
                        if lower.starts_with("connection:") {
                            continue;
                        }
                        if line == "\r\n" {
                            head.extend_from_slice(b"Connection: close\r\n\r\n");
                            break;
                        }
                        head.extend_from_slice(line.as_bytes());
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body)?;
                    let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
                    up.write_all(&head)?;
                    up.write_all(&body)?;
                    let mut answer = Vec::new();
                    up.read_to_end(&mut answer)?;
                    if create && counter.fetch_add(1, Ordering::SeqCst) == 0 {
                        // Landed upstream; the client hears nothing.
                        return client.shutdown(std::net::Shutdown::Both);
                    }
                    // Tell the client this connection ends with the answer.
                    let text = String::from_utf8_lossy(&answer);
                    let (h, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                    let hlen = h.len() + 4;
                    let mut out = Vec::new();
                    for l in h.split("\r\n") {
                        if !l.to_ascii_lowercase().starts_with("connection:") {
                            out.extend_from_slice(l.as_bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                    out.extend_from_slice(b"Connection: close\r\n\r\n");
                    out.extend_from_slice(answer.get(hlen..).unwrap_or(&[]));
                    client.write_all(&out)?;
                    client.shutdown(std::net::Shutdown::Both)
                });
            }
        });
        Self { port, creates }
    }
}

#[test]
fn a_create_whose_answer_was_lost_is_sent_again_and_counts_as_done() {
    let Some(store) = RemoteStore::s3() else {
        return;
    };
    let bucket = store.new_bucket();
    let proxy = DroppingProxy::start(store.svc.port);
    let location = format!("s3:http://127.0.0.1:{}/{bucket}/r", proxy.port);
    let b = backend::open(&location, &BackendOptions::default()).unwrap();
    let name = "c3".repeat(32);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    b.write(FileType::Pack, &name, &data)
        .expect("the lost answer is recovered from");
    assert!(
        proxy.creates.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the PUT was sent again"
    );
    assert_eq!(b.read(FileType::Pack, &name).unwrap(), data);
    // Other bytes under the same name are still a conflict, and leave the object alone.
    let e = b.write(FileType::Pack, &name, b"other").unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert_eq!(b.read(FileType::Pack, &name).unwrap(), data);
}

/// Starts a listener that answers every request with 403 and returns the `Authorization` header
/// of the first one (through the receiver): which key a client signed with.
fn signer_of_first_request() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut auth = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
                line.clear();
            }
            let _ = tx.send(auth);
            let _ = conn.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, rx)
}

#[test]
fn s3_credentials_come_from_an_aws_profile() {
    let Some(store) = RemoteStore::s3() else {
        return;
    };
    let mut r = store.repo();
    let files = r.tmp.path().join("aws");
    fs::create_dir_all(&files).unwrap();
    fs::write(
        files.join("credentials"),
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = d\n\n\
         [backup]\naws_access_key_id = AKIDBACKUP\naws_secret_access_key = b\n",
    )
    .unwrap();
    fs::write(
        files.join("config"),
        "[profile backup]\nregion = us-east-1\n",
    )
    .unwrap();
    // No key in the environment: without the shared files nothing would sign the requests.
    r.env.retain(|(k, _)| !k.starts_with("AWS_"));
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    ] {
        r.env.push((k.into(), REMOVED.into()));
    }
    for (k, v) in [
        ("AWS_SHARED_CREDENTIALS_FILE", files.join("credentials")),
        ("AWS_CONFIG_FILE", files.join("config")),
    ] {
        r.env.push((k.into(), v.to_string_lossy().into_owned()));
    }
    r.env
        .push(("AWS_EC2_METADATA_DISABLED".into(), "true".into()));
    r.env.push(("AWS_PROFILE".into(), "backup".into()));
    r.init();
    let src = r.tmp.path().join("src");
    source_tree(&src, 7);
    r.backup(&[&src], &[]);
    check_read_data(&r);

    // Which key signs: the named profile's, `-o s3.profile` over AWS_PROFILE, the default profile
    // without a name, and keys in the environment over AWS_PROFILE (as in the AWS CLI).
    let signer = |r: &mut RemoteRepo, extra: &[&str]| {
        let (port, rx) = signer_of_first_request();
        let real = std::mem::replace(
            &mut r.location,
            format!("s3:http://127.0.0.1:{port}/b/repo"),
        );
        let mut c = r.cmd();
        c.args(["-o", "s3.retries=0"]).args(extra).arg("snapshots");
        let out = c.output().unwrap();
        r.location = real;
        assert_code(&out, code::FAILURE);
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no request reached the listener\n{}", describe(&out)))
    };
    assert!(signer(&mut r, &[]).contains("Credential=AKIDBACKUP/"));
    r.env.retain(|(k, _)| k != "AWS_PROFILE");
    assert!(signer(&mut r, &[]).contains("Credential=AKIDDEFAULT/"));
    assert!(signer(&mut r, &["-o", "s3.profile=backup"]).contains("Credential=AKIDBACKUP/"));
    r.env.push(("AWS_PROFILE".into(), "backup".into()));
    r.env
        .retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    r.env.push(("AWS_ACCESS_KEY_ID".into(), "AKIDENV".into()));
    r.env.push(("AWS_SECRET_ACCESS_KEY".into(), "e".into()));
    assert!(signer(&mut r, &[]).contains("Credential=AKIDENV/"));

    // A profile that does not exist is named in the error.
    let out = r.run(["-o", "s3.profile=nosuch", "snapshots"]);
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("\"nosuch\"") && stderr(&out).contains(&r.location),
        "{}",
        describe(&out)
    );
}
