//! `gatevault check`.

use clap::Args;

use super::{exit, print_json, Bar, Global};
use crate::check::{check, ReadData, Status};

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Re-read and re-hash every blob.
    #[arg(long, conflicts_with_all = ["read_data_subset", "scrub_cycle"])]
    read_data: bool,
    /// Re-read a subset: n/m (group n of m, by pack id) or X% (random share).
    #[arg(long, conflicts_with = "scrub_cycle")]
    read_data_subset: Option<ReadData>,
    /// Re-read the share of pack data that is due so that every pack is re-read at least once per
    /// this cycle (`30d`, `2w`), tracked in the repository's check records (see docs/watch.md).
    #[arg(long, value_name = "AGE")]
    scrub_cycle: Option<String>,
    /// Plan and record the scrub as if it were this time (tests; RFC 3339).
    #[arg(long, hide = true, value_name = "TIME")]
    now: Option<String>,
    /// Seed for the random share of X% (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Do not store the result as a check record in the repository (the check then writes nothing).
    #[arg(long)]
    no_record: bool,
}

pub(crate) fn run(g: &Global, a: CheckArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let _lock = crate::repo::lock::LockGuard::acquire(
        repo.backend_arc(),
        repo.keys().clone(),
        false,
        "check",
    )?;
    let now = match &a.now {
        Some(t) => crate::select::parse_time(t)?,
        None => chrono::Utc::now(),
    };
    let scrub = match &a.scrub_cycle {
        Some(c) => {
            let cycle =
                crate::profile::parse_age(c).map_err(|e| anyhow::anyhow!("--scrub-cycle: {e}"))?;
            if cycle <= chrono::Duration::zero() {
                anyhow::bail!(crate::Error::InvalidInput(format!(
                    "--scrub-cycle {c:?}: give a cycle longer than zero, like 30d"
                )));
            }
            let created = chrono::DateTime::parse_from_rfc3339(&repo.config().created)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or(now);
            let past = crate::check::past_reads(repo.records(Some(crate::profile::CHECK_RECORD))?);
            Some((
                c.clone(),
                crate::check::plan_scrub(&past, created, now, cycle),
            ))
        }
        None => None,
    };
    let read = match (&scrub, a.read_data) {
        (Some((_, plan)), _) => crate::check::scrub_selection(&plan.read),
        (None, true) => ReadData::All,
        (None, false) => a.read_data_subset.unwrap_or(ReadData::None),
    };
    let seed = a.seed.unwrap_or_else(rand::random);
    if !g.quiet && !g.json {
        println!("checking index, packs, snapshots and trees");
        match read {
            ReadData::None => {}
            ReadData::All => println!("reading all pack data"),
            ReadData::Subset(n, m) => println!("reading pack data subset {n}/{m}"),
            ReadData::Percent(p) => println!("reading {p}% of pack data (seed {seed})"),
            ReadData::Buckets(..) => {}
        }
        if let Some((cycle, plan)) = &scrub {
            let list: Vec<String> = plan.read.iter().map(u32::to_string).collect();
            println!(
                "scrub (cycle {cycle}): reading bucket(s) {} of {} ({} due by the next run, {} by rate; {} since the previous scrub)",
                list.join(", "),
                crate::check::SCRUB_BUCKETS,
                plan.overdue,
                plan.by_rate,
                crate::profile::format_age(plan.interval)
            );
        }
    }
    let started = std::time::Instant::now();
    let r = check(&repo, read, seed, &Bar::new(g, "check"))?;
    // The record feeds `status --3-2-1`; a key that may not write (restore) still gets its verdict.
    let recorded = match (a.no_record, repo.role()) {
        (true, _) => Err("--no-record".to_string()),
        (false, crate::crypto::keyslot::Role::Restore) => {
            Err("the key in use has role restore, which may not write".to_string())
        }
        (false, _) => {
            let rec = crate::profile::CheckRecord {
                kind: crate::profile::CHECK_RECORD.into(),
                time: match &a.now {
                    Some(_) => now,
                    None => chrono::Utc::now(),
                }
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                hostname: crate::util::hostname(),
                status: r.status,
                read_data: match read {
                    ReadData::None => "none".into(),
                    ReadData::All => "all".into(),
                    ReadData::Subset(n, m) => format!("subset {n}/{m}"),
                    ReadData::Percent(p) => format!("{p}%"),
                    ReadData::Buckets(..) => "scrub".into(),
                },
                errors: r.errors.len() as u64,
                incomplete: r.incomplete.len() as u64,
                snapshots: r.snapshots as u64,
                packs: r.packs as u64,
                packs_read: r.packs_read as u64,
                duration_ms: started.elapsed().as_millis() as u64,
            };
            serde_json::to_value(&rec)
                .map_err(|e| e.to_string())
                .and_then(|mut v| {
                    if let Some((cycle, plan)) = &scrub {
                        v["scrub"] = serde_json::json!(crate::check::ScrubRecord {
                            cycle: cycle.clone(),
                            buckets: crate::check::SCRUB_BUCKETS,
                            read: plan.read.clone(),
                        });
                    }
                    repo.save_record(&v).map_err(|e| e.to_string())
                })
        }
    };
    if g.json {
        let mut j = serde_json::to_value(&r)?;
        j["record"] = match &recorded {
            Ok(id) => serde_json::json!(id),
            Err(_) => serde_json::Value::Null,
        };
        if let Some((cycle, plan)) = &scrub {
            j["scrub"] = serde_json::json!({
                "cycle": cycle, "buckets": crate::check::SCRUB_BUCKETS, "read": plan.read,
                "due": plan.overdue, "by_rate": plan.by_rate,
                "interval_secs": plan.interval.num_seconds(),
                "oldest_read": plan.oldest.to_rfc3339(),
            });
        }
        print_json(&j)?;
    } else {
        for e in &r.errors {
            println!("error: {e}");
        }
        for e in &r.incomplete {
            println!("not checked: {e}");
        }
        if !g.quiet {
            for h in &r.hints {
                println!("note: {h}");
            }
            let mut records = match r.records {
                0 => String::new(),
                n => format!(", {n} records"),
            };
            if r.audit_entries > 0 {
                records.push_str(&format!(", {} audit entries", r.audit_entries));
            }
            println!(
                "{} snapshots{records}, {} packs; {} packs read, {} blobs re-hashed, {}",
                r.snapshots,
                r.packs,
                r.packs_read,
                r.blobs_read,
                crate::util::bytes(r.bytes_read)
            );
        }
        if let (Ok(id), false) = (&recorded, g.quiet) {
            println!("result recorded in the repository (record {})", &id[..8]);
        }
        // The verdict is printed even with --quiet, and last: scripts and scrub jobs grep for it.
        println!("status: {:?}", r.status);
    }
    if let (Err(why), false) = (&recorded, a.no_record) {
        eprintln!("note: the result was not recorded: {why}");
    }
    Ok(match r.status {
        Status::Success => exit::OK,
        Status::Partial => exit::PARTIAL,
        Status::Failed => exit::FAILURE,
    })
}
