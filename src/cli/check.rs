//! `gatevault check`.

use clap::Args;

use super::{exit, print_json, Bar, Global};
use crate::check::{check, ReadData, Status};

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Re-read and re-hash every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Re-read a subset: n/m (group n of m, by pack id) or X% (random share).
    #[arg(long)]
    read_data_subset: Option<ReadData>,
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
    let read = if a.read_data {
        ReadData::All
    } else {
        a.read_data_subset.unwrap_or(ReadData::None)
    };
    let seed = a.seed.unwrap_or_else(rand::random);
    if !g.quiet && !g.json {
        println!("checking index, packs, snapshots and trees");
        match read {
            ReadData::None => {}
            ReadData::All => println!("reading all pack data"),
            ReadData::Subset(n, m) => println!("reading pack data subset {n}/{m}"),
            ReadData::Percent(p) => println!("reading {p}% of pack data (seed {seed})"),
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
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                hostname: crate::util::hostname(),
                status: r.status,
                read_data: match read {
                    ReadData::None => "none".into(),
                    ReadData::All => "all".into(),
                    ReadData::Subset(n, m) => format!("subset {n}/{m}"),
                    ReadData::Percent(p) => format!("{p}%"),
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
                .and_then(|v| repo.save_record(&v).map_err(|e| e.to_string()))
        }
    };
    if g.json {
        let mut j = serde_json::to_value(&r)?;
        j["record"] = match &recorded {
            Ok(id) => serde_json::json!(id),
            Err(_) => serde_json::Value::Null,
        };
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
