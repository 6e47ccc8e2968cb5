//! Helpers of the end-to-end tests in `tests/cli.rs` (in the style of ripgrep's `tests/util.rs`).
//!
//! - [`Repo`]: a temporary folder holding a repository, its key file (or password file) and a private
//!   index cache, with [`Repo::cmd`] returning a preconfigured `gatevault` command;
//! - [`manifest`], [`tree_eq`], [`assert_tree_eq`]: recursive comparison of folders;
//! - [`Rng`] and the `write_*` functions: seeded, deterministic test data;
//! - [`broken_repo`]: a damaged repository built deterministically at test time.
//!
//! Every command gets a scrubbed environment (no `GATEVAULT_*` variables, a private `XDG_CACHE_HOME`)
//! and `--cache-dir <tempdir>/cache`, so the tests never touch the real home cache.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

pub mod crash;
pub mod faultproxy;
pub mod remote;
#[allow(unused_imports)]
pub use remote::*;

/// Variables that would change how gatevault runs; removed from every command.
const SCRUBBED_ENV: &[&str] = &[
    "GATEVAULT_REPOSITORY",
    "GATEVAULT_PASSWORD",
    "GATEVAULT_PASSWORD_FILE",
    "GATEVAULT_PASSWORD_COMMAND",
    "GATEVAULT_KEY_FILE",
    "GATEVAULT_CACHE_DIR",
    "GATEVAULT_LOG",
];

/// A size or seed of a stress suite: environment variable `name` (`GATEVAULT_STRESS_*`, set by
/// `scripts/stress`) when it is set and parses, else `default` (the CI size).
pub fn stress_env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Exit codes of the CLI (`src/cli/mod.rs`, `exit`).
pub mod code {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NO_REPOSITORY: i32 = 10;
    pub const LOCKED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const NOT_ALLOWED: i32 = 13;
}

/// A path as `&str` (test paths are always UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The gatevault binary with a scrubbed environment whose home cache points into `home`.
pub fn gatevault(home: &Path) -> Command {
    Command::from_std(gatevault_std(home))
}

/// The same as a `std::process::Command` (for children that get killed).
pub fn gatevault_std(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("gatevault"));
    for v in SCRUBBED_ENV {
        c.env_remove(v);
    }
    c.env("XDG_CACHE_HOME", home.join("xdg-cache"));
    c
}

/// stdout and stderr of a command, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the exit code of `out`.
#[track_caller]
pub fn assert_code(out: &Output, want: i32) {
    assert_eq!(
        out.status.code(),
        Some(want),
        "unexpected exit code\n{}",
        describe(out)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A repository in a temporary folder, with its credentials and its own index cache.
pub struct Repo {
    /// Holds everything; removed on drop.
    pub tmp: tempfile::TempDir,
    /// The repository folder (`<tmp>/repo`).
    pub path: PathBuf,
    /// The key file, if the repository is opened with one.
    pub key: Option<PathBuf>,
    /// The password file, if the repository is opened with a password.
    pub password: Option<PathBuf>,
    /// The `--cache-dir` of every command.
    pub cache: PathBuf,
}

/// Running gatevault against one repository: an implementor gives the command that opens it; the
/// rest follows.
pub trait Runner {
    /// `gatevault` with the repository's location, options and credentials.
    fn cmd(&self) -> Command;

    /// Runs a command and returns its output, whatever its exit code.
    fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd().args(args).output().expect("run gatevault")
    }

    /// Runs a command that must succeed; returns its stdout.
    #[track_caller]
    fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert_code(&out, code::OK);
        stdout(&out)
    }

    /// Runs a command that must exit with `want`; returns its output.
    #[track_caller]
    fn run_code<I, S>(&self, want: i32, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert_code(&out, want);
        out
    }

    /// Runs a command with `--json` that must succeed; parses its stdout.
    #[track_caller]
    fn run_json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_json_code(code::OK, args)
    }

    /// Runs a command with `--json` that must exit with `want`; parses its stdout.
    #[track_caller]
    fn run_json_code<I, S>(&self, want: i32, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .cmd()
            .arg("--json")
            .args(args)
            .output()
            .expect("run gatevault");
        assert_code(&out, want);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", describe(&out)))
    }

    /// `backup --json` of `paths` (plus `extra` options); returns the summary.
    #[track_caller]
    fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut args: Vec<&str> = vec!["backup"];
        args.extend_from_slice(extra);
        args.extend(paths.iter().map(|p| s(p)));
        let v = self.run_json(&args);
        assert_eq!(v["message_type"], "summary", "{v}");
        v
    }

    /// Every snapshot as `snapshots --json` prints it, oldest first.
    fn snapshots(&self) -> Vec<Value> {
        match self.run_json(["snapshots"]) {
            Value::Array(a) => a,
            v => panic!("snapshots --json is not an array: {v}"),
        }
    }

    /// Ids of every snapshot, oldest first.
    fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots()
            .iter()
            .map(|s| s["id"].as_str().expect("snapshot id").to_string())
            .collect()
    }
}

impl Runner for Repo {
    /// `gatevault -r <repo> [--key-file K] [--password-file P] --cache-dir <cache>`.
    fn cmd(&self) -> Command {
        Command::from_std(self.cmd_std())
    }
}

impl Repo {
    /// A temporary folder with a key file path (not created) and no repository yet.
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("gatevault-test-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        Self {
            path: root.join("repo"),
            key: Some(root.join("key")),
            password: None,
            cache: root.join("cache"),
            tmp,
        }
    }

    /// A new repository opened with a key file (created by `init`).
    pub fn init() -> Self {
        let r = Self::new();
        r.run_ok(["init", "-q"]);
        assert!(
            r.key.as_ref().is_some_and(|k| k.is_file()),
            "init created the key file"
        );
        assert!(r.path.join("config").is_file(), "init wrote the config");
        r
    }

    /// A new repository with a password slot (cheap KDF) and, with `with_key_file`, a key-file slot too.
    /// Commands use the password only; the key file (if any) stays at `<tmp>/key`.
    pub fn init_with_password(password: &str, with_key_file: bool) -> Self {
        let mut r = Self::new();
        let pw = r.tmp.path().join("password");
        fs::write(&pw, format!("{password}\n")).expect("write password file");
        r.password = Some(pw);
        if !with_key_file {
            r.key = None;
        }
        r.run_ok([
            "init",
            "-q",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ]);
        r.key = None;
        r
    }

    /// A copy of this repository (and of its key or password file) in a new temporary folder, with a
    /// cache of its own: for running one command many times on the same starting state.
    pub fn copy(&self) -> Self {
        let mut c = Self::new();
        copy_dir(&self.path, &c.path);
        c.key = self.key.as_ref().map(|k| {
            let to = c.tmp.path().join("key");
            fs::copy(k, &to).unwrap();
            to
        });
        c.password = self.password.as_ref().map(|p| {
            let to = c.tmp.path().join("password");
            fs::copy(p, &to).unwrap();
            to
        });
        c
    }

    /// Adds a key-file slot with `role` (`admin`, `backup`, `restore`); returns the key file.
    pub fn add_key(&self, role: &str) -> PathBuf {
        let key = self.root().join(format!("{role}-key"));
        self.run_ok(["key", "add", "--new-key-file", s(&key), "--role", role]);
        key
    }

    /// A command opening the repository with `key` instead of its own credentials.
    pub fn cmd_with_key(&self, key: &Path) -> Command {
        let mut c = self.cmd_no_creds();
        c.arg("--key-file").arg(key);
        c
    }

    /// Runs `args` on a copy of this repository with `GATEVAULT_CRASH_AT=at` (the process aborts like
    /// `kill -9` right after its `at`-th durable step); returns the copy and whether it crashed (false:
    /// the command finished, successfully, before reaching that step).
    pub fn crashed_copy(&self, args: &[&str], at: u64) -> (Self, bool) {
        let c = self.copy();
        let out = c
            .cmd()
            .env("GATEVAULT_CRASH_AT", at.to_string())
            .args(args)
            .output()
            .expect("run gatevault");
        let crashed = stderr(&out).contains("GATEVAULT_CRASH_AT");
        if !crashed {
            assert_code(&out, code::OK);
        }
        (c, crashed)
    }

    /// The temporary folder, for source trees and restore targets.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A fresh (not yet existing) path `<tmp>/<name>`.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.root().join(name);
        assert!(!p.exists(), "{} is already used", p.display());
        p
    }

    /// A command with no repository options at all (only the scrubbed environment).
    pub fn bare(&self) -> Command {
        gatevault(self.root())
    }

    /// [`Repo::cmd`] as a `std::process::Command` (for children that get killed).
    pub fn cmd_std(&self) -> std::process::Command {
        let mut c = gatevault_std(self.root());
        c.arg("-r").arg(&self.path);
        if let Some(k) = &self.key {
            c.arg("--key-file").arg(k);
        }
        if let Some(p) = &self.password {
            c.arg("--password-file").arg(p);
        }
        c.arg("--cache-dir").arg(&self.cache);
        c
    }

    /// `gatevault -r <repo> --cache-dir <cache>` with no credentials (add your own).
    pub fn cmd_no_creds(&self) -> Command {
        let mut c = self.bare();
        c.arg("-r")
            .arg(&self.path)
            .arg("--cache-dir")
            .arg(&self.cache);
        c
    }

    /// The repository id (from `cat config`).
    pub fn repo_id(&self) -> String {
        let v: Value = serde_json::from_str(&self.run_ok(["cat", "config"])).expect("config JSON");
        v["id"].as_str().expect("config id").to_string()
    }

    /// `restore <snapshot> --target <target>` (plus `extra`), which must succeed.
    #[track_caller]
    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) {
        let mut args = vec!["restore", "-q", snapshot, "--target", s(target)];
        args.extend_from_slice(extra);
        self.run_ok(&args);
    }

    /// `restore --at <time> --target <target>`, which must succeed.
    #[track_caller]
    pub fn restore_at(&self, time: &str, target: &Path) {
        self.run_ok(["restore", "-q", "--at", time, "--target", s(target)]);
    }

    /// Pack files under `data/*/`, sorted by name.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in read_dir_sorted(&self.path.join("data")) {
            if d.is_dir() {
                out.extend(read_dir_sorted(&d).into_iter().filter(|p| is_object(p)));
            }
        }
        out.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        out
    }

    /// Object files in `index/`, `snapshots/`, `locks/` or `keys/`.
    pub fn objects(&self, folder: &str) -> Vec<PathBuf> {
        read_dir_sorted(&self.path.join(folder))
            .into_iter()
            .filter(|p| is_object(p))
            .collect()
    }

    /// `cat pack <id>` parsed.
    pub fn cat_pack(&self, id: &str) -> Value {
        serde_json::from_str(&self.run_ok(["cat", "pack", id])).expect("cat pack prints JSON")
    }

    /// The pack holding data blob `blob`: (pack file, header entry of the blob).
    pub fn find_data_blob(&self, blob: &str) -> (PathBuf, Value) {
        for p in self.pack_files() {
            let v = self.cat_pack(&file_name(&p));
            for b in v["blobs"].as_array().expect("blobs") {
                if b["type"] == "data" && b["id"] == blob {
                    return (p, b.clone());
                }
            }
        }
        panic!("no pack holds data blob {blob}");
    }

    /// The content blob ids of the file at snapshot path `path` (via `cat tree`).
    pub fn file_blobs(&self, snapshot: &str, path: &Path) -> Vec<String> {
        let dir = path.parent().expect("file has a folder");
        let name = file_name(path);
        let tree: Value =
            serde_json::from_str(&self.run_ok(["cat", "tree", &format!("{snapshot}:{}", s(dir))]))
                .expect("cat tree prints JSON");
        let node = tree["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in tree {tree}"));
        node["content"]
            .as_array()
            .map(|a| a.iter().map(|b| b.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Every file and folder of the repository with its bytes, for before/after comparisons.
    pub fn listing(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
            for p in read_dir_sorted(dir) {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    out.insert(rel + "/", None);
                    walk(root, &p, out);
                } else {
                    out.insert(rel, Some(fs::read(&p).unwrap()));
                }
            }
        }
        walk(&self.path, &self.path, &mut out);
        out
    }

    /// Spawns `gatevault <args>` (with this repository's options) as a child that may be killed.
    pub fn spawn(&self, args: &[&str], stdin: Stdio) -> Child {
        self.cmd_std()
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gatevault")
    }

    /// Waits (bounded) until `locks/` holds at least `n` locks; panics after 60 s.
    pub fn wait_for_lock(&self, n: usize) {
        let t = Instant::now();
        while self.objects("locks").len() < n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no lock appeared within 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Runs `../shared/gen_gateway_history.py history` into `out` with `--services`, `--versions`, `--seed`
/// and `extra` arguments; `false` (and a note) when python3 is missing, so that the caller skips.
pub fn gen_history(out: &Path, services: u32, versions: usize, seed: u64, extra: &[&str]) -> bool {
    if !have("python3") {
        eprintln!("skipping: python3 is not installed");
        return false;
    }
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/gen_gateway_history.py");
    let o = std::process::Command::new("python3")
        .arg(&gen)
        .arg("history")
        .args(["--services", &services.to_string()])
        .args(["--versions", &versions.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run the generator");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    true
}

/// Whether `p` names a repository object (not a `.tmp-*` leftover of an interrupted write).
fn is_object(p: &Path) -> bool {
    p.is_file() && !file_name(p).starts_with('.')
}

/// The last component of `p` as a `String`.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// The entries of `dir`, sorted (empty when it does not exist).
pub fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

/// Every regular file below `dir` (not hidden ones), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in read_dir_sorted(dir) {
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.is_file() && !file_name(&p).starts_with('.') {
            out.push(p);
        }
    }
    out
}

/// Where restore puts `source` (an absolute path) below `target`: restic-style, target + absolute path.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    assert!(source.is_absolute(), "{} is absolute", source.display());
    target.join(source.strip_prefix("/").unwrap())
}

/// Copies a folder recursively (files, folders, symbolic links).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for p in read_dir_sorted(from) {
        let dest = to.join(p.file_name().unwrap());
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            copy_dir(&p, &dest);
        } else if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&p).unwrap(), &dest).unwrap();
        } else {
            fs::copy(&p, &dest).unwrap();
        }
    }
}

// ------------------------------------------------------------------------------ tree comparison

/// One entry of a folder tree as [`manifest`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    /// A regular file: size, BLAKE3 of its bytes and permission bits.
    File {
        len: u64,
        hash: String,
        mode: u32,
    },
    Symlink(PathBuf),
}

/// Every entry below `root`, by path relative to it.
pub fn manifest(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for p in read_dir_sorted(dir) {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            if ft.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &p, out);
            } else if ft.is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(&p).unwrap()));
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    rel,
                    Entry::File {
                        len: bytes.len() as u64,
                        hash: blake3::hash(&bytes).to_hex().to_string(),
                        mode: m.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    assert!(root.is_dir(), "{} is a folder", root.display());
    walk(root, root, &mut out);
    out
}

/// Compares two manifests; `Err` names every difference (up to 20).
pub fn manifest_eq(a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (k, va) in a {
        match b.get(k) {
            None => diffs.push(format!("only in the first: {k}")),
            Some(vb) if vb != va => diffs.push(format!("{k}: {va:?} != {vb:?}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diffs.push(format!("only in the second: {k}"));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        diffs.truncate(20);
        Err(diffs.join("\n"))
    }
}

/// Recursive comparison of two folders: same names, types, file bytes and modes, link targets.
pub fn tree_eq(a: &Path, b: &Path) -> Result<(), String> {
    manifest_eq(&manifest(a), &manifest(b))
        .map_err(|e| format!("{} and {} differ:\n{e}", a.display(), b.display()))
}

#[track_caller]
pub fn assert_tree_eq(a: &Path, b: &Path) {
    if let Err(e) = tree_eq(a, b) {
        panic!("{e}");
    }
}

// ------------------------------------------------------------------------------ test data

/// A small seeded generator (SplitMix64): deterministic data without depending on `rand`'s algorithms.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

const SERVICES: &[&str] = &[
    "orders",
    "payments",
    "users",
    "catalog",
    "search",
    "billing",
    "auth",
    "inventory",
    "shipping",
    "reviews",
    "notifications",
    "analytics",
];
const PLUGINS: &[&str] = &[
    "rate-limiting",
    "jwt",
    "cors",
    "request-transformer",
    "response-transformer",
    "ip-restriction",
    "prometheus",
    "proxy-cache",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One API-gateway route configuration as pretty JSON (a few KiB), different for every `(seed, i)`.
pub fn gateway_route(rng: &mut Rng, i: usize) -> String {
    let svc = *rng.pick(SERVICES);
    let plugins: Vec<Value> = (0..2 + rng.below(4))
        .map(|k| {
            serde_json::json!({
                "name": rng.pick(PLUGINS),
                "enabled": rng.below(5) != 0,
                "config": {
                    "minute": 60 + rng.below(5000),
                    "policy": "local",
                    "header_name": format!("X-{svc}-{k}"),
                    "allowed": (0..3 + rng.below(6)).map(|_| format!("10.{}.{}.0/24", rng.below(256), rng.below(256))).collect::<Vec<_>>(),
                }
            })
        })
        .collect();
    let paths: Vec<String> = (0..2 + rng.below(6))
        .map(|k| {
            format!(
                "/api/v{}/{svc}/{}/{k}",
                1 + rng.below(3),
                rng.next_u64() % 100_000
            )
        })
        .collect();
    let v = serde_json::json!({
        "id": format!("{:016x}-{i}", rng.next_u64()),
        "name": format!("{svc}-route-{i}"),
        "protocols": ["http", "https"],
        "methods": (0..1 + rng.below(3)).map(|_| *rng.pick(METHODS)).collect::<Vec<_>>(),
        "paths": paths,
        "strip_path": rng.below(2) == 0,
        "preserve_host": false,
        "service": {
            "name": svc,
            "host": format!("{svc}.svc.cluster.local"),
            "port": 8000 + rng.below(1000),
            "retries": rng.below(6),
            "connect_timeout": 60000,
        },
        "plugins": plugins,
        "tags": [format!("team-{}", rng.below(20)), "managed-by-gatevault-test".to_string()],
        "updated_at": 1_700_000_000 + rng.below(30_000_000),
    });
    serde_json::to_string_pretty(&v).expect("JSON")
}

/// Writes `n` gateway route files below `root` (in `services/<svc>/routes/`, `plugins/`, `consumers/`);
/// returns the total bytes written.
pub fn write_gateway_tree(root: &Path, seed: u64, n: usize) -> u64 {
    let mut rng = Rng::new(seed);
    let mut total = 0;
    for i in 0..n {
        let dir = match i % 5 {
            0 => root.join("plugins"),
            1 => root.join("consumers").join(format!("group-{}", i % 3)),
            _ => root
                .join("services")
                .join(SERVICES[i % SERVICES.len()])
                .join("routes"),
        };
        fs::create_dir_all(&dir).unwrap();
        let body = gateway_route(&mut rng, i);
        total += body.len() as u64;
        fs::write(dir.join(format!("route-{i:04}.json")), body).unwrap();
    }
    total
}

/// `n` bytes of JSON log lines drawn from a few templates (highly compressible and repetitive).
pub fn json_lines(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 256);
    while out.len() < n {
        let line = format!(
            "{{\"route\":\"{}\",\"method\":\"{}\",\"status\":{},\"latency_ms\":{},\"upstream\":\"{}.svc:8080\"}}\n",
            rng.pick(SERVICES),
            rng.pick(METHODS),
            [200, 200, 200, 201, 204, 404, 500][rng.below(7) as usize],
            rng.below(50),
            rng.pick(SERVICES),
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

/// Writes a file, creating its folder.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

// ------------------------------------------------------------------------------ broken repositories

/// How [`broken_repo`] damages its repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// One byte in the middle of the victim file's data blob envelope is flipped.
    FlipDataByte,
    /// The pack holding the victim file's data blob is cut in the middle of that blob (blobs before it
    /// stay intact; the order of blobs in a pack is random).
    TruncatePack,
    /// The index file written by the first of the two backups is deleted.
    DeleteFirstIndex,
}

/// A damaged repository, with what is needed to verify the damage.
pub struct Broken {
    pub repo: Repo,
    /// The backed-up folder (its state at the last backup).
    pub src: PathBuf,
    /// The file whose only data blob is damaged (`FlipDataByte`, `TruncatePack`).
    pub victim: PathBuf,
    /// The damaged pack (hex id) for `FlipDataByte` and `TruncatePack`.
    pub pack: Option<String>,
    /// The damaged blob (hex id) for `FlipDataByte`.
    pub blob: Option<String>,
    /// The deleted index file (hex id) for `DeleteFirstIndex`.
    pub index: Option<String>,
    /// Snapshot ids, oldest first.
    pub snapshots: Vec<String>,
    /// The source tree as the first backup saw it.
    pub first: BTreeMap<String, Entry>,
}

/// Builds a damaged repository at test time.
///
/// This replaces a committed binary fixture on purpose: repositories are encrypted under random keys and
/// use random pack ids, so a committed one would be opaque and tied to today's format. The build is
/// deterministic in everything that matters: the source tree is generated from a fixed seed, the victim
/// is always `src/victim.json` (1 KiB of unique bytes: below the chunker's 2 KiB minimum, so exactly one
/// blob that no other file shares), and the damage is placed relative to that blob's header entry.
///
/// `DeleteFirstIndex` makes two backups (the second after changing `src/services/orders/routes/` files)
/// and deletes the index file of the first; the other kinds make one backup.
pub fn broken_repo(damage: Damage) -> Broken {
    let repo = Repo::init();
    let src = repo.root().join("src");
    write_gateway_tree(&src, 0xB40E, 60);
    let victim = src.join("victim.json");
    let mut rng = Rng::new(0x71C7);
    let mut body = format!("{{\"victim\":\"{:x}\",\"pad\":\"", rng.next_u64()).into_bytes();
    while body.len() < 1000 {
        body.extend_from_slice(format!("{:016x}", rng.next_u64()).as_bytes());
    }
    body.extend_from_slice(b"\"}\n");
    write(&victim, &body);
    let first = manifest(&src);
    repo.backup(&[&src], &[]);
    let first_index = repo.objects("index");
    assert_eq!(first_index.len(), 1, "one backup wrote one index file");
    let mut b = Broken {
        snapshots: vec![],
        first,
        pack: None,
        blob: None,
        index: None,
        victim,
        src,
        repo,
    };
    match damage {
        Damage::FlipDataByte | Damage::TruncatePack => {
            let blobs = b.repo.file_blobs("latest", &b.victim);
            assert_eq!(blobs.len(), 1, "the victim is one blob: {blobs:?}");
            let (pack, entry) = b.repo.find_data_blob(&blobs[0]);
            let mut bytes = fs::read(&pack).unwrap();
            // The middle of the victim's blob envelope: a flipped byte there fails its authentication;
            // a cut there loses it, every blob after it, and the pack header at the end.
            let mid = entry["offset"].as_u64().unwrap() + entry["length"].as_u64().unwrap() / 2;
            if damage == Damage::FlipDataByte {
                bytes[mid as usize] ^= 0x40;
            } else {
                bytes.truncate(mid as usize);
            }
            fs::write(&pack, &bytes).unwrap();
            b.pack = Some(file_name(&pack));
            b.blob = Some(blobs[0].clone());
        }
        Damage::DeleteFirstIndex => {
            let routes = b.src.join("services/orders/routes");
            for (i, f) in read_dir_sorted(&routes).iter().enumerate() {
                let mut v = fs::read(f).unwrap();
                v.extend_from_slice(format!("\n{{\"changed\": {i}}}\n").as_bytes());
                fs::write(f, v).unwrap();
            }
            b.repo.backup(&[&b.src], &[]);
            assert_eq!(b.repo.objects("index").len(), 2);
            fs::remove_file(&first_index[0]).unwrap();
            b.index = Some(file_name(&first_index[0]));
        }
    }
    b.snapshots = b.repo.snapshot_ids();
    b
}

/// A free TCP port on loopback (bound, read and released; good enough for a test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Where the program `tool` is: on `PATH`, or in the system folders (`nginx` and `haproxy` live in
/// `/usr/sbin`, which a user's `PATH` may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether the external programs `tools` can run here. When one cannot, the test says so and is
/// skipped, unless `GATEVAULT_REQUIRE_SERVICES=1` (set by `scripts/test`, which installs them): then it
/// fails.
pub fn have_all(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("GATEVAULT_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{missing:?} required (GATEVAULT_REQUIRE_SERVICES=1) but not installed: run scripts/test"
    );
    eprintln!("SKIPPED: {missing:?} not installed (scripts/test installs them)");
    false
}

/// [`have_all`] for one program.
pub fn have(tool: &str) -> bool {
    have_all(&[tool])
}

/// A real self-signed certificate and its private key (PEM), made with openssl in `dir`.
pub fn real_cert(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let (k, c) = (dir.join("k.pem"), dir.join("c.pem"));
    let out = std::process::Command::new(find_tool("openssl").expect("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=api.example.com",
            "-keyout",
        ])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (fs::read(c).unwrap(), fs::read(k).unwrap())
}

/// A server child process on a loopback port, killed when dropped.
pub struct Service {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Service {
    /// Starts `cmd` (which must listen on `port`) and waits until the port accepts connections.
    pub fn start(mut cmd: std::process::Command, port: u16) -> Self {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a test server");
        let mut svc = Service { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = svc.child.try_wait() {
                panic!("test server on port {port} exited at start: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "test server on port {port} never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        svc
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the fake Kong Admin API (`tests/fixtures/fake_kong.py`) with extra arguments.
pub fn fake_kong(extra: &[&str]) -> Option<Service> {
    if !have("python3") {
        return None;
    }
    let port = free_port();
    let mut c = std::process::Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_kong.py"))
        .args(["--port", &port.to_string()])
        .args(extra);
    Some(Service::start(c, port))
}

/// A real `caddy run` on loopback with its admin API on a free port and no other config; the
/// folder holds its home and data. Returns the service and the admin URL.
pub fn caddy(dir: &Path) -> (Service, String) {
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let init = dir.join("caddy-init.json");
    fs::write(
        &init,
        serde_json::json!({"admin": {"listen": admin}}).to_string(),
    )
    .unwrap();
    let mut c = std::process::Command::new(find_tool("caddy").expect("caddy"));
    c.args(["run", "--config"])
        .arg(&init)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    let svc = Service::start(c, port);
    let url = format!("http://{admin}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(&url, "GET", "/config/", "").map_or(true, |(s, _)| s != 200) {
        assert!(
            Instant::now() < deadline,
            "caddy's admin API did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (svc, url)
}

/// A plain HTTP/1.0 request to `base` (`http://127.0.0.1:port`) with a JSON body: status and body.
pub fn http(base: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let authority = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(authority)?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// A JSON request to the (fake) Kong Admin API that must succeed; the answer.
pub fn kong_send(method: &str, url: &str, body: &Value) -> Value {
    match ureq::request(method, url).send_json(body.clone()) {
        Ok(r) => r.into_json().unwrap_or(Value::Null),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// The items of the list `f` of `v`.
pub fn json_list<'a>(v: &'a Value, f: &str) -> Vec<&'a Value> {
    v.get(f)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// `v` without the nested lists `fields`.
pub fn without(v: &Value, fields: &[&str]) -> Value {
    let mut v = v.clone();
    for f in fields {
        v.as_object_mut().unwrap().remove(*f);
    }
    v
}

/// Loads a nested decK document into the Admin API at `base` through the API itself, as an operator
/// (or decK sync) would.
pub fn kong_load(base: &str, doc: &Value) {
    for c in json_list(doc, "certificates") {
        let cert = kong_send(
            "POST",
            &format!("{base}/certificates"),
            &without(c, &["snis"]),
        );
        for s in json_list(c, "snis") {
            let mut s = s.clone();
            s["certificate"] = serde_json::json!({"id": cert["id"]});
            kong_send("POST", &format!("{base}/snis"), &s);
        }
    }
    for s in json_list(doc, "services") {
        let name = s["name"].as_str().unwrap();
        kong_send(
            "POST",
            &format!("{base}/services"),
            &without(s, &["routes", "plugins"]),
        );
        for r in json_list(s, "routes") {
            kong_send(
                "POST",
                &format!("{base}/services/{name}/routes"),
                &without(r, &["plugins"]),
            );
            for p in json_list(r, "plugins") {
                kong_send(
                    "POST",
                    &format!("{base}/routes/{}/plugins", r["name"].as_str().unwrap()),
                    p,
                );
            }
        }
        for p in json_list(s, "plugins") {
            kong_send("POST", &format!("{base}/services/{name}/plugins"), p);
        }
    }
    let creds = [
        ("keyauth_credentials", "key-auths"),
        ("basicauth_credentials", "basic-auths"),
        ("jwt_secrets", "jwts"),
        ("acls", "acls"),
    ];
    for c in json_list(doc, "consumers") {
        let u = c["username"].as_str().unwrap();
        let mut fields: Vec<&str> = creds.iter().map(|c| c.0).collect();
        fields.push("plugins");
        kong_send("POST", &format!("{base}/consumers"), &without(c, &fields));
        for (field, path) in creds {
            for x in json_list(c, field) {
                kong_send("POST", &format!("{base}/consumers/{u}/{path}"), x);
            }
        }
        for p in json_list(c, "plugins") {
            kong_send("POST", &format!("{base}/consumers/{u}/plugins"), p);
        }
    }
    for g in json_list(doc, "consumer_groups") {
        let name = g["name"].as_str().unwrap();
        kong_send(
            "POST",
            &format!("{base}/consumer_groups"),
            &without(g, &["consumers"]),
        );
        for m in json_list(g, "consumers") {
            kong_send(
                "POST",
                &format!("{base}/consumer_groups/{name}/consumers"),
                &serde_json::json!({"consumer": m["username"]}),
            );
        }
    }
    for p in json_list(doc, "plugins") {
        kong_send("POST", &format!("{base}/plugins"), p);
    }
    for u in json_list(doc, "upstreams") {
        let name = u["name"].as_str().unwrap();
        kong_send(
            "POST",
            &format!("{base}/upstreams"),
            &without(u, &["targets"]),
        );
        for t in json_list(u, "targets") {
            kong_send("POST", &format!("{base}/upstreams/{name}/targets"), t);
        }
    }
    for v in json_list(doc, "vaults") {
        kong_send("POST", &format!("{base}/vaults"), v);
    }
}

/// Test credentials for the emulator, and no profile, metadata service or shared files of the host.
pub fn aws_test_env() {
    static ENV: std::sync::Once = std::sync::Once::new();
    ENV.call_once(|| {
        let nowhere = std::env::temp_dir().join("gatevault-test-no-aws-config");
        for v in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"] {
            std::env::remove_var(v);
        }
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", &nowhere);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &nowhere);
    });
}

/// Starts moto_server on a free port with extra environment variables, after [`aws_test_env`]; `None`
/// (after saying why) when it is not installed and the services are not required.
pub fn moto(env: &[(&str, &str)]) -> Option<Service> {
    aws_test_env();
    if !have("moto_server") {
        return None;
    }
    let port = free_port();
    let mut c = std::process::Command::new("moto_server");
    c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    Some(Service::start(c, port))
}
