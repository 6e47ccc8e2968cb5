//! Builds large repositories for the scale benchmarks (`scripts/bench index|large-history|growth`)
//! through the library's own writers, without chunking gigabytes of real data.
//!
//! ```text
//! synth_repo index   --repo DIR --key-file FILE --chunks N [--per-pack P] [--per-index F] [--seed S]
//! synth_repo history --repo DIR --key-file FILE --source DIR --snapshots N [--services K] [--cache-dir DIR]
//! synth_repo history --source DIR --write-only V [--services K]
//! ```
//!
//! `index` adds N data blobs to an existing repository (made by `gatevault init`): real packs of P
//! tiny blobs each (16 bytes of plaintext, sealed like any blob, so `check --read-data` verifies them)
//! and one index file per F blobs, as F-blob backups would leave them. No snapshot names them: they
//! stand for the chunks of earlier backups, which is all a backup of new data and `check` (structure)
//! look at. The local index cache is not touched, so that the first command builds it and can be timed.
//!
//! `history` runs real backups (the library's `backup`, as the CLI does, minus process start-up) of a
//! small gateway export folder, one changed service per version, until the repository holds N
//! snapshots. Version v is dated 2024-01-01T00:00:00Z + v hours; each backup names the previous
//! snapshot as its parent, so that building 10,000 snapshots does not read the history 10,000 times.
//! Run again with a larger N, it carries on from the newest snapshot. `--write-only V` only writes the
//! export of version V into the source folder (for a backup by the command line).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rayon::prelude::*;
use zeroize::Zeroizing;

use gatevault::backend::local::LocalBackend;
use gatevault::backend::Backend;
use gatevault::backup::{backup, BackupOptions, NoProgress};
use gatevault::format::{BlobType, IndexFile, IndexPack};
use gatevault::pack::{encode_blob, PackBuilder};
use gatevault::repo::{Credentials, Repository};

fn usage() -> ! {
    eprintln!(
        "usage: synth_repo index --repo DIR --key-file FILE --chunks N [--per-pack P] [--per-index F] [--seed S]\n       synth_repo history --repo DIR --key-file FILE --source DIR --snapshots N [--services K] [--cache-dir DIR]\n       synth_repo history --source DIR --write-only V [--services K]"
    );
    std::process::exit(2)
}

struct Args {
    mode: String,
    opts: std::collections::HashMap<String, String>,
}

impl Args {
    fn parse() -> Self {
        let mut it = std::env::args().skip(1);
        let mode = it.next().unwrap_or_else(|| usage());
        let mut opts = std::collections::HashMap::new();
        while let Some(k) = it.next() {
            let Some(k) = k.strip_prefix("--") else {
                usage()
            };
            let v = it.next().unwrap_or_else(|| usage());
            opts.insert(k.to_string(), v);
        }
        Self { mode, opts }
    }

    fn get(&self, k: &str) -> anyhow::Result<&str> {
        self.opts
            .get(k)
            .map(String::as_str)
            .with_context(|| format!("--{k} is required"))
    }

    fn num(&self, k: &str, default: u64) -> anyhow::Result<u64> {
        match self.opts.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .with_context(|| format!("--{k} {v:?}: not a number")),
        }
    }
}

/// Reads a key file as `gatevault` does: 32 raw bytes or 64 hex digits.
fn key_file(path: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let raw = Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {path}"))?);
    let mut k = Zeroizing::new([0u8; 32]);
    let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
    if text.len() == 64 && hex::decode_to_slice(text, &mut k[..]).is_ok() {
        return Ok(k);
    }
    if raw.len() != 32 {
        bail!("key file {path}: expected 32 bytes or 64 hex digits");
    }
    k.copy_from_slice(&raw);
    Ok(k)
}

fn open(a: &Args) -> anyhow::Result<Repository> {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(a.get("repo")?));
    let creds = Credentials {
        password: None,
        key_file: Some(key_file(a.get("key-file")?)?),
    };
    let cache = a.opts.get("cache-dir").map(PathBuf::from);
    Repository::open(backend, &creds, cache).context("opening the repository")
}

/// Writes `chunks` tiny data blobs in packs of `per_pack`, one index file per `per_index` blobs.
fn synth_index(a: &Args) -> anyhow::Result<()> {
    let repo = open(a)?;
    let chunks = a.num("chunks", 1_000_000)?;
    let per_pack = a.num("per-pack", 10_000)?.max(1);
    let per_index = a.num("per-index", 50_000)?.max(per_pack);
    let seed = a.num("seed", 1)?;
    let keys = repo.keys();
    let backend = repo.backend();
    let started = std::time::Instant::now();
    let mut done = 0u64;
    while done < chunks {
        let n = per_index.min(chunks - done);
        let packs: Vec<(u64, u64)> = (0..n.div_ceil(per_pack))
            .map(|p| {
                let first = done + p * per_pack;
                (first, per_pack.min(done + n - first))
            })
            .collect();
        let written: Vec<anyhow::Result<IndexPack>> = packs
            .par_iter()
            .map(|&(first, count)| {
                let mut b = PackBuilder::new(BlobType::Data);
                for i in first..first + count {
                    // Unique per seed and number: the blob ids are the keyed hashes of these bytes.
                    let mut data = [0u8; 16];
                    data[..8].copy_from_slice(&seed.to_le_bytes());
                    data[8..].copy_from_slice(&i.to_le_bytes());
                    b.add(keys.blob_id(&data), 16, encode_blob(&data, 0)?);
                }
                let fp = b.finish(keys)?;
                let size = fp.bytes.len() as u64;
                backend.write_owned(
                    gatevault::backend::FileType::Pack,
                    &fp.id.to_hex(),
                    fp.bytes,
                )?;
                Ok(IndexPack {
                    id: fp.id,
                    size,
                    blobs: fp.entries,
                })
            })
            .collect();
        let packs = written.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let file = IndexFile {
            supersedes: vec![],
            packs,
        };
        gatevault::index::save_index_file(backend, keys, &file)?;
        done += n;
        eprintln!(
            "synth_repo: {done} of {chunks} blobs ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The export of version `v`: a decK-style Kong file of `services` services (service `v % services`
/// changed in version v) and a Caddy file that never changes.
fn export(v: u64, services: u64) -> (String, String) {
    let mut kong = String::from("_format_version: \"3.0\"\nservices:\n");
    for s in 0..services {
        // The version that last changed service s (0 before any change).
        let rev = if v >= s {
            (v - s) / services * services + s
        } else {
            0
        };
        kong.push_str(&format!(
            "- name: svc-{s:04}\n  url: http://backend-{s:04}.internal:8080/v1\n  retries: {}\n  connect_timeout: 60000\n  tags: [team-{}, rev-{rev}]\n  routes:\n  - name: route-{s:04}\n    paths: [/api/svc-{s:04}]\n    methods: [GET, POST, PUT]\n    strip_path: true\n  plugins:\n  - name: rate-limiting\n    config: {{minute: {}, policy: local}}\n",
            rev % 7,
            s % 13,
            100 + rev % 1000
        ));
    }
    let caddy = format!(
        "{{\"apps\":{{\"http\":{{\"servers\":{{\"api\":{{\"listen\":[\":443\"],\"routes\":[{}]}}}}}}}}}}\n",
        (0..services)
            .map(|s| format!("{{\"@id\":\"svc-{s:04}\",\"match\":[{{\"path\":[\"/svc-{s:04}/*\"]}}],\"handle\":[{{\"handler\":\"reverse_proxy\",\"upstreams\":[{{\"dial\":\"backend-{s:04}:8080\"}}]}}]}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    (kong, caddy)
}

/// Backs up versions of a small export until the repository holds `snapshots` snapshots.
fn synth_history(a: &Args) -> anyhow::Result<()> {
    let target = a.num("snapshots", 100)?;
    let services = a.num("services", 100)?.max(1);
    let source = PathBuf::from(a.get("source")?);
    std::fs::create_dir_all(&source).with_context(|| format!("creating {}", source.display()))?;
    let source = std::path::absolute(&source)?;
    if let Some(v) = a.opts.get("write-only") {
        // Only the export of one version, for a backup by the command line.
        let v: u64 = v.parse().context("--write-only VERSION")?;
        let (kong, caddy) = export(v, services);
        std::fs::write(source.join("kong.yaml"), kong)?;
        std::fs::write(source.join("caddy.json"), caddy)?;
        return Ok(());
    }
    let repo = open(a)?;
    let existing = repo.snapshots()?;
    let mut parent = existing.last().map(|(id, _)| *id);
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")?.to_utc();
    let started = std::time::Instant::now();
    for v in existing.len() as u64..target {
        let (kong, caddy) = export(v, services);
        std::fs::write(source.join("kong.yaml"), kong)?;
        if v == 0 || !source.join("caddy.json").exists() {
            std::fs::write(source.join("caddy.json"), caddy)?;
        }
        let r = backup(
            &repo,
            BackupOptions {
                paths: vec![source.clone()],
                parent,
                time: Some(start + chrono::Duration::hours(v as i64)),
                ..BackupOptions::default()
            },
            None,
            &NoProgress,
        )?;
        parent = Some(r.id);
        if (v + 1) % 1000 == 0 {
            eprintln!(
                "synth_repo: {} snapshots ({:.0} s)",
                v + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    match a.mode.as_str() {
        "index" => synth_index(&a),
        "history" => synth_history(&a),
        _ => usage(),
    }
}
