//! The check job: structure first (index files, packs, snapshots, trees, records, the audit log's hash
//! chain), then an optional parallel re-read of pack data that decrypts, decompresses and re-hashes
//! every selected blob.
//!
//! The check reads the repository itself and never trusts the local index cache. Its final status is
//! `Success`, `Partial` (nothing damaged was found, but something could not be examined, e.g. a read
//! error) or `Failed` (damage found; every damaged object is named).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditLog, HeadFile};
use crate::backend::FileType;
use crate::backup::Progress;
use crate::error::{Error, Result};
use crate::format::{BlobType, NodeType, PackEntry};
use crate::id::{BlobId, PackId};
use crate::repo::Repository;

/// Which pack data to re-read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    None,
    /// Every pack.
    All,
    /// Group `n` of `m` (1-based), by pack id.
    Subset(u32, u32),
    /// A random share of the packs, in percent.
    Percent(f64),
    /// The scrub buckets whose bits are set, of `m` buckets by pack id (see [`plan_scrub`]).
    Buckets(u64, u32),
}

impl std::str::FromStr for ReadData {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "--read-data-subset {s:?}: use n/m (1 <= n <= m) or a percentage like 10%"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            return if v > 0.0 && v <= 100.0 {
                Ok(ReadData::Percent(v))
            } else {
                Err(bad())
            };
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(ReadData::Subset(n, m))
    }
}

/// The verdict of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Everything examined is intact.
    Success,
    /// Nothing damaged found, but not everything could be examined.
    Partial,
    /// Damage found.
    Failed,
}

/// What a check found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The verdict.
    pub status: Status,
    /// Damage, one line per damaged object (names pack, blob, snapshot or file).
    pub errors: Vec<String>,
    /// Objects that could not be examined (they make the status `Partial`).
    pub incomplete: Vec<String>,
    /// Harmless findings (unreferenced packs, leftovers of interrupted jobs).
    pub hints: Vec<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Records (restore drills) checked.
    pub records: usize,
    /// Audit log entries verified (up to the first broken link).
    pub audit_entries: u64,
    /// Packs in the index.
    pub packs: usize,
    /// Packs whose data was re-read.
    pub packs_read: usize,
    /// Blobs re-hashed.
    pub blobs_read: u64,
    /// Bytes re-read.
    pub bytes_read: u64,
}

/// The group (0-based) of pack `p` among `m` groups by pack id: the groups of `--read-data-subset
/// n/m` and the scrub buckets.
pub fn bucket_of(p: &PackId, m: u32) -> u32 {
    ((u32::from_be_bytes([p.0[0], p.0[1], p.0[2], p.0[3]]) as u64 * m as u64) >> 32) as u32
}

/// Selects the packs whose data `sel` asks for.
pub fn select_packs(packs: &[PackId], sel: ReadData, seed: u64) -> Vec<PackId> {
    match sel {
        ReadData::None => vec![],
        ReadData::All => packs.to_vec(),
        ReadData::Subset(n, m) => packs
            .iter()
            .filter(|p| bucket_of(p, m) == n - 1)
            .copied()
            .collect(),
        ReadData::Buckets(mask, m) => packs
            .iter()
            .filter(|p| mask & (1u64 << bucket_of(p, m).min(63)) != 0)
            .copied()
            .collect(),
        ReadData::Percent(pct) => {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut v = packs.to_vec();
            v.sort();
            v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let k = ((packs.len() as f64 * pct / 100.0).ceil() as usize).min(packs.len());
            v.truncate(k);
            v
        }
    }
}

/// Checks the repository.
///
/// # Errors
/// Only errors that stop the check itself (listing the repository); damage goes into the report.
pub fn check(
    repo: &Repository,
    read: ReadData,
    seed: u64,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let backend = repo.backend();
    let keys = repo.keys();
    let mut r = CheckReport {
        status: Status::Success,
        errors: vec![],
        incomplete: vec![],
        hints: vec![],
        snapshots: 0,
        records: 0,
        audit_entries: 0,
        packs: 0,
        packs_read: 0,
        blobs_read: 0,
        bytes_read: 0,
    };

    // 0. Snapshots first: a backup commits its index before its snapshot, so every snapshot listed
    // now has its blobs in the index read next, even while backups (shared locks) run alongside.
    let snapshots = repo.load_all_snapshots()?;

    // 1. Index files.
    let state = crate::index::IndexState::read(backend, keys)?;
    for (id, e) in &state.unreadable {
        match e {
            Error::Io { .. } => r.incomplete.push(format!("index file {id}: {e}")),
            _ => r.errors.push(format!("index file {id}: {e}")),
        }
    }
    r.packs = state.pack_count();

    // 2. Packs exist with the indexed size.
    let stored: HashMap<PackId, u64> = backend
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|(n, s)| PackId::from_hex(&n).ok().map(|id| (id, s)))
        .collect();
    for p in state.packs() {
        let (id, size) = (p.id, p.size);
        match stored.get(&id) {
            None => r
                .errors
                .push(format!("pack {id}: missing (listed in the index)")),
            Some(s) if *s != size => r.errors.push(format!(
                "pack {id}: size {s} where the index says {size} (truncated or damaged)"
            )),
            _ => {}
        }
    }
    let unreferenced = stored.keys().filter(|p| !state.contains_pack(p)).count();
    if unreferenced > 0 {
        r.hints.push(format!("{unreferenced} pack(s) are not referenced by any index (left by an interrupted job; harmless, `gatevault prune` removes them)"));
    }

    // 3. Snapshots and trees.
    let load_tree = |id: &BlobId| state.load_tree(backend, keys, id);
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    // Snapshots this machine saw that are gone without a recorded removal (a rolled-back list).
    if let Some(d) = repo.cache_dir() {
        let listed: Vec<_> = snapshots.iter().map(|(id, _)| *id).collect();
        match crate::history::SeenSnapshots::in_cache(d, &repo.config().id).verify(
            &listed,
            |id| backend.exists(FileType::Snapshot, id),
            || crate::history::removed_snapshots(backend, keys),
        ) {
            Ok(()) => {}
            Err(e @ Error::Rollback { .. }) => r.errors.push(e.to_string()),
            Err(e) => r
                .incomplete
                .push(format!("the snapshots this machine saw: {e}")),
        }
    }
    for (sid, s) in snapshots {
        r.snapshots += 1;
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                r.errors.push(format!("snapshot {sid}: {e}"));
                continue;
            }
        };
        let mut stack = vec![(s.tree, "/".to_string())];
        while let Some((tid, path)) = stack.pop() {
            if !seen_trees.insert(tid) {
                continue;
            }
            let t = match load_tree(&tid) {
                Ok(t) => t,
                Err(e) => {
                    r.errors.push(format!(
                        "snapshot {}: tree {tid} at {path}: {e}",
                        sid.short()
                    ));
                    continue;
                }
            };
            for n in &t.nodes {
                let p = crate::walk::join(&path, &n.name);
                match n.node_type {
                    NodeType::Dir => {
                        if let Some(sub) = n.subtree {
                            stack.push((sub, p));
                        }
                    }
                    NodeType::File => {
                        for b in &n.content {
                            match state.blob(BlobType::Data, b) {
                                None => r.errors.push(format!(
                                    "snapshot {}: file {p}: data blob {b} is in no index",
                                    sid.short()
                                )),
                                Some((_, e)) => match e.base {
                                    Some(base) if !state.contains_blob(BlobType::Data, &base) => r.errors.push(format!(
                                        "snapshot {}: file {p}: data blob {b} needs base blob {base}, which is in no index",
                                        sid.short()
                                    )),
                                    _ => {}
                                },
                            }
                        }
                    }
                    NodeType::Symlink => {}
                }
            }
        }
    }

    // Records: each must decrypt and parse.
    for rec in repo.records(None)? {
        r.records += 1;
        if let Err(e) = rec {
            r.errors.push(e.to_string());
        }
    }

    // The audit log: an intact chain that still holds the head this machine saw (no log is fine).
    let remembered = match repo.cache_dir() {
        Some(d) => match HeadFile::in_cache(d, &repo.config().id).load() {
            Ok(h) => h.into_iter().collect(),
            Err(e) => {
                r.incomplete
                    .push(format!("the audit head this machine remembers: {e}"));
                vec![]
            }
        },
        None => vec![],
    };
    match AuditLog::new(backend, keys).verify(&remembered) {
        Ok(v) => {
            r.audit_entries = v.entries;
            if let Some(b) = v.broken {
                r.errors.push(b.to_string());
            } else if !v.pending.is_empty() {
                let seqs: Vec<String> = v.pending.iter().map(|p| p.seq.to_string()).collect();
                r.hints.push(format!(
                    "an interrupted `gatevault rewrite --reencrypt` left a copy of audit log entry {} in records/ (the chain verifies through it); run it again to finish",
                    seqs.join(", ")
                ));
            }
        }
        Err(e) => r.incomplete.push(format!("audit log: {e}")),
    }

    // 4. Pack data.
    let mut ids: Vec<PackId> = state
        .packs()
        .map(|p| p.id)
        .filter(|p| stored.contains_key(p))
        .collect();
    ids.sort();
    let selected = select_packs(&ids, read, seed);
    let total: u64 = selected
        .iter()
        .filter_map(|p| state.pack(p))
        .map(|p| p.size)
        .sum();
    progress.start(total, selected.len() as u64);
    let errors = Mutex::new(Vec::new());
    let incomplete = Mutex::new(Vec::new());
    let counts = Mutex::new((0u64, 0u64));
    selected.par_iter().for_each(|pid| {
        if crate::signals::interrupted() {
            return;
        }
        let Some(p) = state.pack(pid) else {
            return;
        };
        let (size, indexed): (u64, Vec<PackEntry>) = (p.size, p.entries().collect());
        let mut bytes = match backend.read(FileType::Pack, &pid.to_hex()) {
            Ok(b) => b,
            Err(e) => {
                incomplete
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("pack {pid}: {e}"));
                return;
            }
        };
        let mut errs = Vec::new();
        match crate::pack::read_header(keys, pid, &bytes) {
            Ok(header) => {
                let hset: HashSet<_> = header.iter().collect();
                for e in &indexed {
                    if !hset.contains(e) {
                        errs.push(format!(
                            "pack {pid}: blob {} listed in the index is not in the pack header",
                            e.id
                        ));
                    }
                }
            }
            Err(e) => errs.push(format!("pack {pid}: {e}")),
        }
        // Every blob the index places in this pack is re-hashed, even if the header is damaged.
        let mut n = 0;
        for e in &indexed {
            let end = e.offset as usize + e.length as usize;
            if end > bytes.len() {
                errs.push(format!(
                    "pack {pid}: blob {}: beyond the end of the pack (truncated)",
                    e.id
                ));
                continue;
            }
            let base = |b: &BlobId| state.load_base(backend, keys, e.blob_type, b);
            // Decrypted in place: index entries never overlap (the index parser refuses that).
            let env = &mut bytes[e.offset as usize..end];
            match crate::pack::open_blob_in_place(keys, pid, e, env, &base) {
                Ok(_) => n += 1,
                Err(err) => {
                    let err = crate::pack::explain_read(backend, keys, pid, e, err);
                    errs.push(format!("pack {pid}: blob {}: {err}", e.id))
                }
            }
        }
        progress.bytes(size);
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        c.0 += n;
        c.1 += bytes.len() as u64;
        drop(c);
        errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(errs);
    });
    progress.finish();
    crate::signals::check()?;
    let mut errs = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    errs.sort();
    r.errors.extend(errs);
    r.incomplete
        .extend(incomplete.into_inner().unwrap_or_else(|e| e.into_inner()));
    let (b, bytes) = counts.into_inner().unwrap_or_else(|e| e.into_inner());
    r.packs_read = selected.len();
    r.blobs_read = b;
    r.bytes_read = bytes;
    r.status = if !r.errors.is_empty() {
        Status::Failed
    } else if !r.incomplete.is_empty() {
        Status::Partial
    } else {
        Status::Success
    };
    Ok(r)
}

// ---------------------------------------------------------------------------------- scrub

/// How many buckets `check --scrub-cycle` splits the packs into (by pack id, as
/// `--read-data-subset n/64`); a record made with another number is not used.
pub const SCRUB_BUCKETS: u32 = 64;

/// What a scrub stores in its check record (the `scrub` field): which buckets it read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubRecord {
    /// The cycle asked for (`30d`).
    pub cycle: String,
    /// The number of buckets ([`SCRUB_BUCKETS`]).
    pub buckets: u32,
    /// The buckets read (0-based, ascending).
    pub read: Vec<u32>,
}

/// One past check as the scrub planner sees it: when, which buckets it read, and whether it was a
/// scrub (whose times give the interval between runs).
#[derive(Clone, Debug, PartialEq)]
pub struct PastRead {
    /// When the check ended.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The buckets of [`SCRUB_BUCKETS`] it read in full.
    pub buckets: Vec<u32>,
    /// A `--scrub-cycle` run.
    pub scrub: bool,
}

/// The past reads in the repository's check records (values of
/// [`crate::repo::Repository::records`]): a scrub's buckets, `--read-data` as every bucket,
/// `--read-data-subset n/64` as bucket n-1. Checks that ended `Partial` (something could not be read)
/// and unreadable records do not count.
pub fn past_reads(records: Vec<Result<serde_json::Value>>) -> Vec<PastRead> {
    let mut out = Vec::new();
    for v in records.into_iter().flatten() {
        let Ok(c) = serde_json::from_value::<crate::profile::CheckRecord>(v.clone()) else {
            continue;
        };
        let Some(time) = c.timestamp() else { continue };
        if c.kind != crate::profile::CHECK_RECORD || c.status == Status::Partial {
            continue;
        }
        let scrub = v
            .get("scrub")
            .and_then(|s| serde_json::from_value::<ScrubRecord>(s.clone()).ok());
        let (buckets, is_scrub) = match scrub {
            Some(s) if s.buckets == SCRUB_BUCKETS => (s.read, true),
            Some(_) => continue,
            None if c.read_data == "all" => ((0..SCRUB_BUCKETS).collect(), false),
            None => match c
                .read_data
                .strip_prefix("subset ")
                .map(str::parse::<ReadData>)
            {
                Some(Ok(ReadData::Subset(n, SCRUB_BUCKETS))) => (vec![n - 1], false),
                _ => continue,
            },
        };
        out.push(PastRead {
            time,
            buckets: buckets.into_iter().filter(|b| *b < SCRUB_BUCKETS).collect(),
            scrub: is_scrub,
        });
    }
    out
}

/// Which buckets a scrub run at `now` reads, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrubPlan {
    /// The buckets to read (0-based, ascending).
    pub read: Vec<u32>,
    /// Of those, the buckets that would be older than the cycle at the next run.
    pub overdue: usize,
    /// The share the rate asks for: buckets × interval ÷ cycle, rounded up.
    pub by_rate: usize,
    /// The time since the previous scrub (zero for the first).
    pub interval: chrono::Duration,
    /// The oldest last read among the buckets read (the repository's creation for a bucket never read).
    pub oldest: chrono::DateTime<chrono::Utc>,
}

/// Plans a scrub run at `now` so that every bucket is read at least once per `cycle`.
///
/// A bucket's last read is the newest past read that covered it, or `created` (the repository's
/// creation) when none did. With `interval` the time since the previous scrub, the next run is
/// assumed to come at most `interval` later, so the run reads the buckets oldest first, as many as
///   - every bucket whose last read would be older than `cycle` at `now + interval`, and
///   - buckets × interval ÷ cycle, rounded up (the steady rate, so that reads spread evenly over the
///     cycle instead of bunching when many buckets fall due together),
///
/// and at least one.
pub fn plan_scrub(
    past: &[PastRead],
    created: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    cycle: chrono::Duration,
) -> ScrubPlan {
    let b = SCRUB_BUCKETS as usize;
    let mut last = vec![created; b];
    for r in past.iter().filter(|r| r.time <= now) {
        for &k in &r.buckets {
            last[k as usize] = last[k as usize].max(r.time);
        }
    }
    let interval = past
        .iter()
        .filter(|r| r.scrub && r.time <= now)
        .map(|r| now - r.time)
        .min()
        .unwrap_or_else(chrono::Duration::zero)
        .max(chrono::Duration::zero());
    let mut order: Vec<usize> = (0..b).collect();
    order.sort_by_key(|&k| (last[k], k));
    let next = now + interval;
    let overdue = order.iter().filter(|&&k| next - last[k] > cycle).count();
    let cycle_ms = cycle.num_milliseconds().max(1) as u128;
    let by_rate = ((b as u128 * interval.num_milliseconds().max(0) as u128).div_ceil(cycle_ms))
        .min(b as u128) as usize;
    let k = overdue.max(by_rate).clamp(1, b);
    let oldest = last[order[0]];
    let mut read: Vec<u32> = order[..k].iter().map(|&k| k as u32).collect();
    read.sort_unstable();
    ScrubPlan {
        read,
        overdue,
        by_rate,
        interval,
        oldest,
    }
}

/// The [`ReadData`] that reads `buckets` of [`SCRUB_BUCKETS`].
pub fn scrub_selection(buckets: &[u32]) -> ReadData {
    let mask = buckets
        .iter()
        .filter(|b| **b < 64)
        .fold(0u64, |m, b| m | (1u64 << b));
    ReadData::Buckets(mask, SCRUB_BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_partition_the_packs() {
        let packs: Vec<PackId> = (0..500).map(|_| PackId::random()).collect();
        let mut all: Vec<PackId> = (1..=5)
            .flat_map(|n| select_packs(&packs, ReadData::Subset(n, 5), 0))
            .collect();
        all.sort();
        let mut want = packs.clone();
        want.sort();
        assert_eq!(all, want, "the five subsets cover every pack exactly once");
        assert_eq!(select_packs(&packs, ReadData::Percent(10.0), 1).len(), 50);
        assert_eq!(
            select_packs(&packs, ReadData::Percent(10.0), 1),
            select_packs(&packs, ReadData::Percent(10.0), 1)
        );
        assert!(matches!(
            "0/3".parse::<ReadData>(),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            "4/3".parse::<ReadData>(),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!("2/3".parse::<ReadData>().unwrap(), ReadData::Subset(2, 3));
        assert_eq!(
            "12.5%".parse::<ReadData>().unwrap(),
            ReadData::Percent(12.5)
        );
    }

    #[test]
    fn scrub_buckets_select_the_subsets_of_64() {
        let packs: Vec<PackId> = (0..2000).map(|_| PackId::random()).collect();
        let sel = select_packs(&packs, scrub_selection(&[3, 40]), 0);
        let mut want: Vec<PackId> = [4, 41]
            .iter()
            .flat_map(|n| select_packs(&packs, ReadData::Subset(*n, 64), 0))
            .collect();
        want.sort();
        let mut got = sel.clone();
        got.sort();
        assert_eq!(got, want);
        assert!(!got.is_empty());
    }

    /// Daily, weekly and irregular runs: simulated over a year, no bucket ever goes unread for
    /// longer than the cycle once the history is long enough, and each run reads at least one.
    #[test]
    fn scrub_plans_keep_every_bucket_within_the_cycle() {
        use chrono::{Duration, TimeZone, Utc};
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for (cycle_days, gaps_hours) in [
            (30, vec![24]),
            (30, vec![24 * 7]),
            (7, vec![24]),
            (30, vec![6, 30, 24, 12, 48, 24]),
        ] {
            let cycle = Duration::days(cycle_days);
            let mut past: Vec<PastRead> = vec![];
            let mut last = [created; SCRUB_BUCKETS as usize];
            let mut now = created + Duration::hours(1);
            let mut read_total = 0usize;
            for i in 0..400 {
                let plan = plan_scrub(&past, created, now, cycle);
                assert!(!plan.read.is_empty(), "at least one bucket per run");
                read_total += plan.read.len();
                for b in &plan.read {
                    last[*b as usize] = now;
                }
                past.push(PastRead {
                    time: now,
                    buckets: plan.read.clone(),
                    scrub: true,
                });
                let gap = Duration::hours(gaps_hours[i % gaps_hours.len()]);
                // Runs come at least as often as the previous interval (the planner's assumption).
                let next = now + gap;
                if let Some(prev) = past.iter().rev().nth(1) {
                    if next - now > now - prev.time {
                        // An interval longer than the previous one: the rule does not promise.
                        now = next;
                        continue;
                    }
                }
                for (b, l) in last.iter().enumerate() {
                    assert!(
                        next - *l <= cycle,
                        "cycle {cycle_days}d gaps {gaps_hours:?}: bucket {b} unread for {} h at run {i}",
                        (next - *l).num_hours()
                    );
                }
                now = next;
            }
            // Not everything every time: the reads follow the rate.
            assert!(
                read_total < 400 * SCRUB_BUCKETS as usize / 2,
                "cycle {cycle_days}d: {read_total} bucket reads"
            );
        }
    }

    #[test]
    fn past_reads_come_from_scrubs_full_and_matching_subset_checks() {
        let rec = |time: &str, read_data: &str, status: &str, scrub: Option<serde_json::Value>| {
            let mut v = serde_json::json!({"type": "check", "time": time, "status": status,
                "read_data": read_data, "errors": 0, "incomplete": 0, "duration_ms": 1});
            if let Some(s) = scrub {
                v["scrub"] = s;
            }
            Ok(v)
        };
        let past = past_reads(vec![
            rec("2026-01-02T00:00:00Z", "all", "Success", None),
            rec("2026-01-03T00:00:00Z", "subset 5/64", "Failed", None),
            rec("2026-01-04T00:00:00Z", "subset 1/3", "Success", None),
            rec("2026-01-05T00:00:00Z", "all", "Partial", None),
            rec(
                "2026-01-06T00:00:00Z",
                "scrub",
                "Success",
                Some(serde_json::json!({"cycle": "30d", "buckets": 64, "read": [7, 9]})),
            ),
            rec(
                "2026-01-07T00:00:00Z",
                "scrub",
                "Success",
                Some(serde_json::json!({"cycle": "30d", "buckets": 32, "read": [1]})),
            ),
            Err(Error::integrity("record x", "damaged")),
        ]);
        assert_eq!(past.len(), 3, "{past:?}");
        assert_eq!(past[0].buckets.len(), 64);
        assert_eq!(past[1].buckets, vec![4]);
        assert_eq!((past[2].buckets.clone(), past[2].scrub), (vec![7, 9], true));
    }
}
