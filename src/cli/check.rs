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
    let r = check(&repo, read, seed, &Bar::new(g, "check"))?;
    if g.json {
        print_json(&r)?;
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
        // The verdict is printed even with --quiet: scripts and scrub jobs grep for it.
        println!("status: {:?}", r.status);
    }
    Ok(match r.status {
        Status::Success => exit::OK,
        Status::Partial => exit::PARTIAL,
        Status::Failed => exit::FAILURE,
    })
}
