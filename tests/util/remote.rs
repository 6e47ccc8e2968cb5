//! Remote stores for the tests: S3 through moto_server and Azure Blob through Azurite, both started on
//! a free loopback port, plus repositories in them driven through the real binary.
//!
//! - [`RemoteStore::s3`], [`RemoteStore::azure`]: start a store (`None`, after saying why, when the
//!   emulator is not installed and `GATEVAULT_REQUIRE_SERVICES` is not 1);
//! - [`RemoteStore::new_bucket`] / [`RemoteStore::create_bucket`]: a fresh bucket or container;
//! - [`RemoteStore::location`], [`RemoteStore::options`], [`RemoteStore::env`]: the `-r` location,
//!   the `-o KEY=VALUE` options and the environment a gatevault command needs for it;
//! - [`RemoteStore::repo`]: a [`RemoteRepo`] (key file, cache, commands) in a fresh bucket.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use assert_cmd::Command;

use super::{aws_test_env, find_tool, free_port, gatevault_std, have_all, moto, Runner, Service};

/// Azurite's published development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Which emulator a [`RemoteStore`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// S3 through moto_server.
    S3,
    /// Azure Blob through Azurite.
    Azure,
}

/// A store emulator running on loopback, stopped when dropped.
pub struct RemoteStore {
    /// Which one.
    pub kind: Kind,
    /// The process.
    pub svc: Service,
    /// Azurite's data folder.
    _data: Option<tempfile::TempDir>,
}

/// Where `azurite-blob` is: on PATH, or where `scripts/test` installs it (`target/test-node`).
pub fn azurite_bin() -> Option<PathBuf> {
    find_tool("azurite-blob").or_else(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-node/node_modules/.bin/azurite-blob");
        p.is_file().then_some(p)
    })
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        rand_suffix()
    )
}

fn rand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:08x}")
}

impl RemoteStore {
    /// moto_server with `env` (for example `INITIAL_NO_AUTH_ACTION_COUNT=0` to make it check
    /// credentials), with the test AWS credentials in this process's environment.
    pub fn s3_with(env: &[(&str, &str)]) -> Option<Self> {
        let svc = moto(env)?;
        Some(Self {
            kind: Kind::S3,
            svc,
            _data: None,
        })
    }

    /// moto_server.
    pub fn s3() -> Option<Self> {
        Self::s3_with(&[])
    }

    /// Azurite's blob service with its data in a temporary folder.
    pub fn azure() -> Option<Self> {
        let bin = match azurite_bin() {
            Some(b) => b,
            None => {
                // Reports the skip (or fails under GATEVAULT_REQUIRE_SERVICES=1).
                have_all(&["azurite-blob"]);
                return None;
            }
        };
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut c = std::process::Command::new(bin);
        c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"])
            .stdin(std::process::Stdio::null());
        let svc = Service::start(c, port);
        Some(Self {
            kind: Kind::Azure,
            svc,
            _data: Some(data),
        })
    }

    /// Both stores, each only when installed.
    pub fn all() -> Vec<Self> {
        [Self::s3(), Self::azure()].into_iter().flatten().collect()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.svc.url()
    }

    /// `s3` or `azure`.
    pub fn scheme(&self) -> &'static str {
        match self.kind {
            Kind::S3 => "s3",
            Kind::Azure => "azure",
        }
    }

    /// Creates bucket (or container) `name`; S3 buckets in `region` when given (moto answers HEAD
    /// bucket with it in `x-amz-bucket-region`). Panics when the store refuses.
    pub fn create_bucket(&self, name: &str, region: Option<&str>) {
        match self.kind {
            Kind::S3 => {
                let url = format!("{}/{name}", self.endpoint());
                let body = region.map_or(String::new(), |r| {
                    format!("<CreateBucketConfiguration><LocationConstraint>{r}</LocationConstraint></CreateBucketConfiguration>")
                });
                let r = ureq::put(&url).send_string(&body);
                assert!(r.is_ok(), "creating bucket {name}: {r:?}");
            }
            Kind::Azure => {
                assert!(region.is_none(), "Azurite has no regions");
                let (status, body) = azurite_request(&self.endpoint(), "PUT", name, AZURITE_KEY);
                assert_eq!(status, 201, "creating container {name}: {body}");
            }
        }
    }

    /// A fresh bucket (or container) with a unique name; returns the name.
    pub fn new_bucket(&self) -> String {
        let name = unique("gv");
        self.create_bucket(&name, None);
        name
    }

    /// The `-r` location of a repository at `prefix` (may be empty) in `bucket`.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        let tail = if prefix.is_empty() {
            bucket.to_string()
        } else {
            format!("{bucket}/{prefix}")
        };
        match self.kind {
            Kind::S3 => format!("s3:{}/{tail}", self.endpoint()),
            Kind::Azure => format!("azure:{tail}"),
        }
    }

    /// The `-o KEY=VALUE` options a command needs for this store (without the `-o`).
    pub fn options(&self) -> Vec<String> {
        match self.kind {
            Kind::S3 => vec![],
            Kind::Azure => vec![
                format!("azure.endpoint={}/{AZURITE_ACCOUNT}", self.endpoint()),
                format!("azure.account-name={AZURITE_ACCOUNT}"),
                format!("azure.account-key={AZURITE_KEY}"),
            ],
        }
    }

    /// Environment variables a command needs for this store: the test AWS credentials for S3 and no
    /// AWS configuration of the host.
    pub fn env(&self) -> Vec<(String, String)> {
        aws_test_env();
        let nowhere = std::env::temp_dir().join("gatevault-test-no-aws-config");
        let nowhere = nowhere.to_string_lossy().into_owned();
        match self.kind {
            Kind::S3 => [
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_CONFIG_FILE", nowhere.as_str()),
                ("AWS_SHARED_CREDENTIALS_FILE", nowhere.as_str()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            Kind::Azure => vec![],
        }
    }

    /// A repository (not yet created) in a fresh bucket, at prefix `repo`.
    pub fn repo(&self) -> RemoteRepo {
        let bucket = self.new_bucket();
        self.repo_at(&bucket, "repo")
    }

    /// A repository (not yet created) at `prefix` in an existing `bucket`.
    pub fn repo_at(&self, bucket: &str, prefix: &str) -> RemoteRepo {
        let tmp = tempfile::Builder::new()
            .prefix("gatevault-remote-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        RemoteRepo {
            location: self.location(bucket, prefix),
            options: self.options(),
            env: self.env(),
            key: root.join("key"),
            cache: root.join("cache"),
            tmp,
        }
    }
}

/// A signed Azure Blob request on a container (`PUT`: create it, `DELETE`: delete it) with Shared Key
/// authorization for Azurite's account and `key`: status and body.
pub fn azurite_request(endpoint: &str, method: &str, container: &str, key: &str) -> (u16, String) {
    use base64::Engine;
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let path = format!("/{AZURITE_ACCOUNT}/{container}");
    let to_sign = format!(
        "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}\nrestype:container"
    );
    let k = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("a base64 key");
    let sig = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&k, to_sign.as_bytes()));
    let url = format!("{endpoint}{path}?restype=container");
    let r = ureq::request(method, &url)
        .set("x-ms-date", &date)
        .set("x-ms-version", version)
        .set(
            "Authorization",
            &format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
        )
        .call();
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, resp)) => (s, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// HMAC-SHA256 (RFC 2104) over the `sha2` digest.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The value of an [`RemoteRepo::env`] entry that removes the variable from the command's environment
/// (the test process sets some for every command, see [`aws_test_env`]).
pub const REMOVED: &str = "\0removed";

/// A repository in a remote store, with its key file and local cache in a temporary folder.
pub struct RemoteRepo {
    /// Holds the key file, the cache and scratch folders.
    pub tmp: tempfile::TempDir,
    /// The `-r` location.
    pub location: String,
    /// `-o` options.
    pub options: Vec<String>,
    /// Environment of every command ([`REMOVED`] as a value removes the variable).
    pub env: Vec<(String, String)>,
    /// The key file (created by `init`).
    pub key: PathBuf,
    /// The `--cache-dir`.
    pub cache: PathBuf,
}

impl RemoteRepo {
    /// The temporary folder.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// `gatevault` with the location, options and environment but no credentials.
    pub fn cmd_no_creds(&self) -> Command {
        let mut c = gatevault_std(self.root());
        c.arg("-r").arg(&self.location);
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        c.arg("--cache-dir").arg(&self.cache);
        for (k, v) in &self.env {
            match v.as_str() {
                REMOVED => c.env_remove(k),
                v => c.env(k, v),
            };
        }
        Command::from_std(c)
    }

    /// `init` (creating the key file).
    #[track_caller]
    pub fn init(&self) {
        self.run_ok(["init", "-q"]);
        assert!(self.key.is_file(), "init created the key file");
    }
}

impl Runner for RemoteRepo {
    /// `gatevault` opening this repository with its key file.
    fn cmd(&self) -> Command {
        let mut c = self.cmd_no_creds();
        c.arg("--key-file").arg(&self.key);
        c
    }
}
