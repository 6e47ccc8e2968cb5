//! Continuous capture (`gatevault watch`): poll a gateway and commit a snapshot only when its canonical
//! configuration changed, so that `restore --at TIME` finds the configuration of any second at almost
//! no storage cost.
//!
//! Each poll captures the gateway through the same adapters as `backup --gateway` and fingerprints the
//! capture: a BLAKE3 hash per document, leaving out the raw exports under `raw/` (they may carry
//! volatile fields the canonical entities drop). The fingerprint of the newest snapshot of the same
//! source and host is kept in memory; it is read from the repository (its trees, with the entities
//! inlined in them) only when the watch starts or when the list of snapshots changed behind its back
//! (another backup of the same source). So a poll of an unchanged gateway costs one capture, one hash
//! and one listing of `snapshots/`, and writes nothing.
//!
//! A changed configuration is committed with [`crate::backup::backup`], which takes the shared lock
//! for the commit only. A poll that fails (an unreachable gateway, a lock held by `prune`) is counted
//! and retried at the next interval; the watch ends after `max_polls` polls or when SIGTERM/SIGINT
//! arrives ([`crate::signals`]), which is its normal end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::backup::{backup, find_parent, BackupOptions, NoProgress};
use crate::error::{Error, Result};
use crate::format::{NodeType, Snapshot};
use crate::gateway::{GatewayOptions, MANIFEST};
use crate::id::SnapshotId;
use crate::repo::Repository;

/// The tag a watch puts on its snapshots unless the user gives a `BackupType`.
pub const BACKUP_TYPE: &str = "continuous";

/// What to watch and how to describe the snapshots.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// The gateway to capture, as for `backup --gateway`.
    pub gateway: GatewayOptions,
    /// Time from the start of one poll to the start of the next (zero: poll again at once).
    pub interval: Duration,
    /// Tags of the snapshots (`BackupType=continuous` is added unless a `BackupType` is given).
    pub tags: BTreeMap<String, String>,
    /// Host name to record (default: this host).
    pub host: Option<String>,
    /// Version label of the snapshots.
    pub label: Option<String>,
    /// Stop after this many polls (`None`: until a signal).
    pub max_polls: Option<u64>,
}

/// A committed change.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Commit {
    /// The poll (1-based) that found it.
    pub poll: u64,
    /// The snapshot's time (RFC 3339).
    pub time: String,
    /// The new snapshot.
    pub snapshot_id: SnapshotId,
    /// Entity documents new, changed and gone since the previous snapshot of the source.
    pub added: usize,
    /// See `added`.
    pub changed: usize,
    /// See `added`.
    pub removed: usize,
    /// Stored bytes the commit added (packed).
    pub bytes_added: u64,
}

/// What one poll found.
#[derive(Clone, Debug)]
pub enum Poll {
    /// The configuration equals the newest snapshot's.
    Unchanged,
    /// A snapshot was committed.
    Committed(Commit),
    /// The poll failed; it is retried at the next interval.
    Failed {
        /// Failed polls in a row, this one included.
        consecutive: u64,
        /// Why.
        error: String,
    },
}

/// Why a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// `max_polls` polls were made.
    MaxPolls,
    /// SIGTERM or SIGINT (or [`crate::signals::request_stop`]).
    Signal,
}

/// The summary of a watch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WatchReport {
    /// Polls made.
    pub polls: u64,
    /// Snapshots committed.
    pub commits: u64,
    /// Polls that found the configuration unchanged.
    pub unchanged: u64,
    /// Polls that failed.
    pub failed: u64,
    /// Why it ended.
    pub stopped: Stop,
    /// A change was being committed when the signal came: it was abandoned (nothing committed).
    pub abandoned_commit: bool,
}

/// Fingerprint of a capture: document path (without a leading `/`) to the BLAKE3 hash of its bytes,
/// raw exports left out.
pub type Fingerprint = BTreeMap<String, [u8; 32]>;

/// The fingerprint of captured documents.
pub fn fingerprint(docs: &BTreeMap<String, Vec<u8>>) -> Fingerprint {
    docs.iter()
        .filter(|(p, _)| !p.starts_with("raw/"))
        .map(|(p, b)| (p.clone(), *blake3::hash(b).as_bytes()))
        .collect()
}

/// The fingerprint of a stored gateway snapshot (reads its trees, and the blobs of documents too big
/// to be inlined).
///
/// # Errors
/// Errors loading trees or blobs.
pub fn stored_fingerprint(repo: &Repository, snap: &Snapshot) -> Result<Fingerprint> {
    let mut out = Fingerprint::new();
    let mut files = Vec::new();
    crate::walk::walk(repo, &snap.tree, &mut |path, node| {
        let rel = path.trim_start_matches('/');
        if rel == "raw" || rel.starts_with("raw/") {
            return Ok(false);
        }
        if node.node_type == NodeType::File {
            match &node.inline {
                Some(text) => {
                    out.insert(rel.to_string(), *blake3::hash(text.as_bytes()).as_bytes());
                }
                None => files.push(path.to_string()),
            }
        }
        Ok(true)
    })?;
    for path in files {
        let mut bytes = Vec::new();
        crate::restore::dump(repo, snap, &path, &mut bytes)?;
        out.insert(
            path.trim_start_matches('/').to_string(),
            *blake3::hash(&bytes).as_bytes(),
        );
    }
    Ok(out)
}

/// Entity documents (not the manifest) added, changed and removed from `old` to `new`.
pub fn changes(old: &Fingerprint, new: &Fingerprint) -> (usize, usize, usize) {
    let entity = |p: &&String| p.as_str() != MANIFEST;
    let added = new.keys().filter(entity).filter(|p| !old.contains_key(*p));
    let removed = old.keys().filter(entity).filter(|p| !new.contains_key(*p));
    let changed = new
        .iter()
        .filter(|(p, h)| entity(p) && old.get(*p).is_some_and(|o| o != *h));
    (added.count(), changed.count(), removed.count())
}

/// What the watch knows of the newest snapshot of its source.
struct Known {
    /// The source's snapshot path it was looked up for.
    path: String,
    /// The snapshot listing it was derived from.
    listing: BTreeSet<SnapshotId>,
    /// That snapshot's fingerprint (empty when there is none yet).
    fingerprint: Fingerprint,
}

/// Polls one gateway and commits its changes into one repository.
pub struct Watcher<'a> {
    repo: &'a Repository,
    opts: WatchOptions,
    host: String,
    known: Option<Known>,
    polls: u64,
    consecutive_failures: u64,
}

impl<'a> Watcher<'a> {
    /// A watcher of `opts.gateway` committing into `repo`.
    ///
    /// # Errors
    /// [`Error::NotAllowed`] for a key that may not add snapshots (a restore key).
    pub fn new(repo: &'a Repository, mut opts: WatchOptions) -> Result<Self> {
        repo.require_write("add snapshots")?;
        opts.tags
            .entry("BackupType".into())
            .or_insert_with(|| BACKUP_TYPE.into());
        let host = opts.host.clone().unwrap_or_else(crate::util::hostname);
        Ok(Self {
            repo,
            opts,
            host,
            known: None,
            polls: 0,
            consecutive_failures: 0,
        })
    }

    /// Brings [`Known`] up to date for the source at `path` when the snapshot listing changed.
    fn refresh(&mut self, path: &str) -> Result<()> {
        let listing: BTreeSet<SnapshotId> = self.repo.snapshot_ids()?.into_iter().collect();
        if let Some(k) = &self.known {
            if k.path == path && k.listing == listing {
                return Ok(());
            }
        }
        // Someone else may have added index files since the index was first synced.
        if self.known.is_some() {
            self.repo
                .index()?
                .sync(self.repo.backend(), self.repo.keys())?;
        }
        let fingerprint = match find_parent(
            self.repo,
            &self.host,
            std::slice::from_ref(&path.to_string()),
        )? {
            Some((id, snap)) => match stored_fingerprint(self.repo, &snap) {
                Ok(f) => {
                    tracing::debug!("newest snapshot of {path}: {}", id.short());
                    f
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot read snapshot {} of {path} ({e}); the next capture is committed",
                        id.short()
                    );
                    Fingerprint::new()
                }
            },
            None => Fingerprint::new(),
        };
        self.known = Some(Known {
            path: path.to_string(),
            listing,
            fingerprint,
        });
        Ok(())
    }

    /// One poll: capture, compare, commit when changed.
    ///
    /// # Errors
    /// Only errors that end the watch: [`Error::Interrupted`] when a signal stopped a commit (nothing
    /// was committed), [`Error::NotAllowed`]. Everything else is a [`Poll::Failed`].
    pub fn poll(&mut self) -> Result<Poll> {
        self.polls += 1;
        match self.poll_inner() {
            Ok(p) => {
                self.consecutive_failures = 0;
                Ok(p)
            }
            Err(e @ (Error::Interrupted | Error::NotAllowed { .. })) => Err(e),
            Err(e) => {
                self.consecutive_failures += 1;
                Ok(Poll::Failed {
                    consecutive: self.consecutive_failures,
                    error: e.to_string(),
                })
            }
        }
    }

    fn poll_inner(&mut self) -> Result<Poll> {
        let capture = crate::gateway::capture(&self.opts.gateway)?;
        let docs = capture.documents()?;
        let fp = fingerprint(&docs);
        let path = capture.source.path();
        self.refresh(&path)?;
        let known = self.known.as_mut().expect("refresh sets it");
        if known.fingerprint == fp {
            tracing::debug!(
                "poll {}: {} unchanged ({} documents)",
                self.polls,
                capture.source.describe(),
                fp.len()
            );
            return Ok(Poll::Unchanged);
        }
        let (added, changed, removed) = changes(&known.fingerprint, &fp);
        let r = backup(
            self.repo,
            BackupOptions {
                tags: self.opts.tags.clone(),
                host: Some(self.host.clone()),
                label: self.opts.label.clone(),
                documents: Some(docs),
                source: Some(capture.source.clone()),
                ..Default::default()
            },
            None,
            &NoProgress,
        )?;
        known.listing.insert(r.id);
        known.fingerprint = fp;
        let commit = Commit {
            poll: self.polls,
            time: r.snapshot.time.clone(),
            snapshot_id: r.id,
            added,
            changed,
            removed,
            bytes_added: r.snapshot.summary.data_added_packed,
        };
        tracing::info!(
            "{} snapshot {} of {}: {added} added, {changed} changed, {removed} removed",
            commit.time,
            r.id.short(),
            capture.source.describe()
        );
        Ok(Poll::Committed(commit))
    }

    /// Polls until `max_polls` or a signal, calling `each` after every poll.
    ///
    /// # Errors
    /// [`Error::NotAllowed`] for a key that may not write; errors `each` returns.
    pub fn run(&mut self, each: &mut dyn FnMut(&Poll) -> Result<()>) -> Result<WatchReport> {
        let mut report = WatchReport {
            polls: 0,
            commits: 0,
            unchanged: 0,
            failed: 0,
            stopped: Stop::Signal,
            abandoned_commit: false,
        };
        loop {
            if crate::signals::interrupted() {
                break;
            }
            if self.opts.max_polls.is_some_and(|m| report.polls >= m) {
                report.stopped = Stop::MaxPolls;
                break;
            }
            let started = Instant::now();
            report.polls += 1;
            let p = match self.poll() {
                Ok(p) => p,
                Err(Error::Interrupted) => {
                    report.abandoned_commit = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            match &p {
                Poll::Unchanged => report.unchanged += 1,
                Poll::Committed(_) => report.commits += 1,
                Poll::Failed { .. } => report.failed += 1,
            }
            each(&p)?;
            if self.opts.max_polls.is_some_and(|m| report.polls >= m) {
                continue;
            }
            // Wait for the next poll in short steps, so that a signal ends the watch at once.
            let next = started + self.opts.interval;
            while !crate::signals::interrupted() {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(50)));
            }
        }
        Ok(report)
    }
}

/// Parses an interval: a number with a unit `ms`, `s`, `m` or `h` (`10s`, `500ms`, `0s`).
///
/// # Errors
/// [`Error::InvalidInput`] naming the value and the accepted form.
pub fn parse_interval(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || {
        Error::InvalidInput(format!(
            "--interval {s:?}: give a number with a unit, like 10s, 500ms, 2m or 1h"
        ))
    };
    let i = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(i);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_interval("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_interval("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_interval("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "10", "s", "1.5s", "10x", "-1s"] {
            assert!(
                matches!(parse_interval(bad), Err(Error::InvalidInput(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn fingerprints_ignore_raw_exports_and_changes_count_entities() {
        let mut a = BTreeMap::new();
        a.insert("caddy/route/a.json".to_string(), b"{\"a\":1}".to_vec());
        a.insert("caddy/route/b.json".to_string(), b"{\"b\":1}".to_vec());
        a.insert(MANIFEST.to_string(), b"{}".to_vec());
        a.insert("raw/config.json".to_string(), b"{\"t\":1}".to_vec());
        let fa = fingerprint(&a);
        assert!(!fa.contains_key("raw/config.json"));
        let mut b = a.clone();
        b.insert("raw/config.json".to_string(), b"{\"t\":2}".to_vec());
        assert_eq!(fingerprint(&b), fa, "a raw export alone is no change");
        b.insert("caddy/route/a.json".to_string(), b"{\"a\":2}".to_vec());
        b.remove("caddy/route/b.json");
        b.insert("caddy/route/c.json".to_string(), b"{}".to_vec());
        b.insert(MANIFEST.to_string(), b"{\"x\":1}".to_vec());
        assert_eq!(changes(&fa, &fingerprint(&b)), (1, 1, 1));
    }
}
