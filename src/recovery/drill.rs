//! Restore drills: pick a recovery point (at random, seeded, or named), restore it into a staging
//! gateway (or, for gateways configured by files, into a temporary folder checked with the
//! gateway's own checker), run the probes, and record the outcome in the repository so that
//! `gatevault drills` lists past drills with their status and recovery time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::report::{Report, Status, Verification};
use super::{Applied, RestoreOptions};
use crate::error::{Error, Result};
use crate::format::Snapshot;
use crate::gateway::{Capture, GatewayOptions};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::select::SnapshotFilter;

/// Record type of a drill (see [`Repository::save_record`]).
pub const RECORD_TYPE: &str = "drill";

/// Which recovery point to drill, and where.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Only snapshots passing this filter.
    pub filter: SnapshotFilter,
    /// This snapshot (instead of the newest or a random one).
    pub snapshot: Option<SnapshotId>,
    /// Pick at random among the candidates.
    pub random: bool,
    /// Seed of the random pick (a fresh one when `None`; the record keeps it).
    pub seed: Option<u64>,
    /// The staging gateway; `None` restores into a temporary folder and runs the gateway's checker.
    pub target: Option<GatewayOptions>,
    /// Probes and the base URL they go to.
    pub probes: Option<(PathBuf, String)>,
}

/// One drill, as recorded in the repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Always [`RECORD_TYPE`].
    #[serde(rename = "type")]
    pub record_type: String,
    /// When the drill ran (RFC 3339).
    pub time: String,
    /// The host it ran on.
    pub hostname: String,
    /// The seed of a random pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Among how many candidates the snapshot was picked.
    pub candidates: usize,
    /// The outcome.
    pub status: Status,
    /// The recovery time in milliseconds.
    pub recovery_ms: u64,
    /// The full report.
    pub report: Report,
}

/// Picks the snapshot to drill: the named one, a random one (seeded) or the newest, among gateway
/// snapshots passing the filter (rollback points are not recovery points and are left out).
/// Returns it, the seed used and the number of candidates.
///
/// # Errors
/// [`Error::NotFound`] when no snapshot qualifies.
pub fn pick(
    repo: &Repository,
    opts: &DrillOptions,
) -> Result<(SnapshotId, Snapshot, Option<u64>, usize)> {
    if let Some(id) = opts.snapshot {
        let s = repo.load_snapshot(&id)?;
        return Ok((id, s, None, 1));
    }
    let candidates: Vec<(SnapshotId, Snapshot)> = crate::select::filtered(repo, &opts.filter)?
        .into_iter()
        .filter(|(_, s)| s.source.is_some() && !super::is_rollback_point(s))
        .collect();
    let n = candidates.len();
    if n == 0 {
        return Err(Error::NotFound {
            kind: "recovery point".into(),
            id: "(no gateway snapshot matches the filters)".into(),
        });
    }
    let (i, seed) = if opts.random {
        let seed = opts.seed.unwrap_or_else(rand::random);
        (
            rand::rngs::StdRng::seed_from_u64(seed).gen_range(0..n),
            Some(seed),
        )
    } else {
        (n - 1, None)
    };
    let (id, s) = candidates.into_iter().nth(i).expect("index in range");
    Ok((id, s, seed, n))
}

/// Runs a drill of `id` and records it in the repository; returns the record.
///
/// # Errors
/// Errors that prevent the drill from running at all (a read-only key, a snapshot of files, an
/// unknown gateway kind, a file-based gateway whose checker is not installed); the record is then
/// not written.
pub fn drill(
    repo: &Repository,
    id: &SnapshotId,
    snap: &Snapshot,
    seed: Option<u64>,
    candidates: usize,
    opts: &DrillOptions,
) -> Result<DrillRecord> {
    repo.require_write("record a drill")?;
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let report = match &opts.target {
        Some(g) => {
            let target = super::target(g)?;
            let ropts = RestoreOptions {
                probes: opts.probes.clone(),
                no_rollback_point: true,
                ..Default::default()
            };
            super::restore(repo, id, snap, target.as_ref(), &ropts)?
        }
        None => in_folder(repo, id, snap)?,
    };
    let record = DrillRecord {
        record_type: RECORD_TYPE.into(),
        time,
        hostname: crate::util::hostname(),
        seed,
        candidates,
        status: report.status,
        recovery_ms: report.total_ms,
        report,
    };
    repo.save_record(&serde_json::to_value(&record).expect("record serializes"))?;
    Ok(record)
}

/// Every recorded drill, oldest first, and the records that could not be read.
///
/// # Errors
/// Backend errors listing the records.
pub fn list(repo: &Repository) -> Result<(Vec<DrillRecord>, Vec<String>)> {
    let mut out = vec![];
    let mut bad = vec![];
    for r in repo.records(Some(RECORD_TYPE))? {
        match r.and_then(|v| {
            serde_json::from_value::<DrillRecord>(v).map_err(|e| Error::format("drill record", e))
        }) {
            Ok(d) => out.push(d),
            Err(e) => bad.push(e.to_string()),
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    Ok((out, bad))
}

/// The checker of a file-based gateway kind, and the file it checks in `dir`.
fn checker(kind: &str, capture: &Capture, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let bin_name = match kind {
        "nginx" | "haproxy" | "caddy" => kind,
        k => {
            return Err(Error::InvalidInput(format!(
                "a drill of a {k} snapshot needs a staging gateway: give --to-gateway {k} --endpoint URL"
            )))
        }
    };
    let bin = crate::gateway::nginx::find_binary(bin_name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{bin_name} is not installed here, so the drill cannot check the restored configuration: install it, or drill into a staging gateway with --to-gateway"
        ))
    })?;
    let main = match kind {
        "caddy" => dir.join("caddy.json"),
        _ => {
            let ep = &capture.source.endpoint;
            let abs = ep.strip_prefix("file:").ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the snapshot's source {ep:?} is not a config file path"
                ))
            })?;
            dir.join(format!("{kind}/files/{}", abs.trim_start_matches('/')))
        }
    };
    Ok((bin, main))
}

/// Restores the configuration files of a file-based gateway snapshot into a temporary folder, with
/// absolute paths between them pointed into that folder, and runs the gateway's checker there.
fn in_folder(repo: &Repository, id: &SnapshotId, snap: &Snapshot) -> Result<Report> {
    let kind = snap
        .source
        .as_ref()
        .map(|s| s.kind.clone())
        .unwrap_or_default();
    let t0 = Instant::now();
    let mut r = Report::new(id, snap, false);
    let t = Instant::now();
    let (capture, damaged) = super::load(repo, snap)?;
    r.integrity.documents = capture.entities.len() + capture.raw.len();
    r.time("integrity", t);
    if !damaged.is_empty() {
        r.integrity.status = crate::check::Status::Failed;
        r.integrity.errors = damaged;
        return Ok(r.fail("the snapshot is damaged", t0));
    }
    let dir = tempfile::Builder::new()
        .prefix("gatevault-drill-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary folder for the drill", e))?;
    let (bin, main) = checker(&kind, &capture, dir.path())?;
    r.target = format!("temporary folder checked with {}", bin.display());
    let t = Instant::now();
    let files = if kind == "caddy" {
        let config = super::caddy::join(&capture.entities)?;
        BTreeMap::from([(main.clone(), crate::gateway::canonical::to_bytes(&config))])
    } else {
        rebased(&capture, &kind, dir.path())
    };
    for (path, bytes) in &files {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        }
        std::fs::write(path, bytes)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    r.applied = Some(Applied {
        method: format!("written to a temporary folder ({} files)", files.len()),
        steps: vec![],
        notes: vec![],
    });
    r.time("restore", t);
    let t = Instant::now();
    let checked = if kind == "caddy" {
        caddy_validate(&bin, &main)
    } else {
        crate::gateway::nginx::validate(&capture.source, &kind, &bin, &main)
    };
    r.time("check", t);
    r.verification = Some(Verification {
        matches: checked.is_ok(),
        differences: vec![],
        error: checked.err().map(|e| e.to_string()),
    });
    r.finish(t0);
    if r.status != Status::Success {
        r.status = Status::Failed;
        r.error = Some("the restored configuration does not pass the gateway's checker".into());
    }
    Ok(r)
}

/// `caddy validate --config FILE`.
fn caddy_validate(bin: &Path, config: &Path) -> Result<()> {
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg("--config")
        .arg(config)
        .output()
        .map_err(|e| Error::io(format!("running {}", bin.display()), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::gateway(
        format!("caddy config {}", config.display()),
        format!(
            "`caddy validate` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// The files of a captured file-based gateway, placed under `dir`, with every absolute path that
/// points into the captured folders rewritten to point under `dir` too (so that `include
/// /etc/nginx/conf.d/*.conf` reads the restored copies, not the live ones).
fn rebased(capture: &Capture, kind: &str, dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let prefix = format!("{kind}/files/");
    let originals: Vec<String> = capture
        .entities
        .iter()
        .filter_map(|e| e.path.strip_prefix(&prefix))
        .map(|p| format!("/{p}"))
        .collect();
    // The folders holding captured files, without those inside another one.
    let mut roots: Vec<String> = originals
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|(d, _)| format!("{d}/")))
        .collect();
    roots.sort();
    roots.dedup();
    let roots: Vec<String> = roots
        .iter()
        .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o.as_str())))
        .cloned()
        .collect();
    let base = dir.join(kind).join("files");
    let base = base.to_string_lossy();
    let mut out = BTreeMap::new();
    for e in &capture.entities {
        if e.path.starts_with(&prefix) {
            let bytes = super::plan::document(e);
            out.insert(dir.join(&e.path), rebase(&bytes, &roots, &base));
        }
    }
    out
}

/// `text` with every occurrence of a root (`/etc/nginx/`) prefixed by `base`, in one pass.
fn rebase(text: &[u8], roots: &[String], base: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match roots.iter().find(|r| text[i..].starts_with(r.as_bytes())) {
            Some(r) => {
                out.extend_from_slice(base.as_bytes());
                out.extend_from_slice(r.as_bytes());
                i += r.len();
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_rewrites_each_occurrence_once() {
        let roots = vec!["/etc/nginx/".to_string(), "/srv/ssl/".to_string()];
        let got = rebase(
            b"include /etc/nginx/conf.d/*.conf; ssl_certificate /srv/ssl/a.pem; root /var/www/;",
            &roots,
            "/tmp/d/nginx/files",
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "include /tmp/d/nginx/files/etc/nginx/conf.d/*.conf; ssl_certificate /tmp/d/nginx/files/srv/ssl/a.pem; root /var/www/;"
        );
    }
}
