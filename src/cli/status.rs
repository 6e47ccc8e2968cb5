//! `gatevault status --3-2-1`: for each profile of the config file, opens every repository, counts
//! the copies of each source's recent backups by origin, and says whether the 3-2-1 rule holds.

use std::sync::Arc;

use clap::Args;

use super::{exit, print_json, Global};
use crate::audit::session::Session;
use crate::profile::{
    evaluate, last_check, origin_of, parse_age, source_of, Profile, ProfileReport,
    RepositoryContents, RepositoryState, Rule, SnapshotInfo, CHECK_RECORD,
};

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Report the 3-2-1 rule: at least 3 copies of each recent backup, on 2 media, 1 offsite, each
    /// in a repository whose last check succeeded recently. Exits 3 when it is broken.
    #[arg(long = "3-2-1")]
    three_two_one: bool,
    /// Only this profile (default: every profile of the config file); repeat for several.
    #[arg(long = "profile", value_name = "NAME")]
    profiles: Vec<String>,
    /// How many of each source's newest backups must satisfy the rule.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    last: u32,
    /// The newest check of every repository holding a copy must have succeeded within this age
    /// (7d, 36h, 2w).
    #[arg(long, value_name = "AGE", default_value = "7d")]
    max_check_age: String,
}

/// Reads one repository of a profile: its snapshots and newest check record, or the error.
fn read_repository(g: &Global, config: &crate::profile::Config, name: &str) -> RepositoryState {
    let rc = config.repositories.get(name);
    let (location, medium, site) = match rc {
        Some(r) => (r.location.clone(), r.medium, r.site),
        None => (
            String::new(),
            crate::profile::Medium::Disk,
            crate::profile::Site::Onsite,
        ),
    };
    let contents = (|| -> anyhow::Result<RepositoryContents> {
        let rc = config.repository(name)?;
        // Reading needs no region policy, and a read-only command leaves no audit entry.
        let rg = g.for_repository(rc, vec![], false, Arc::new(Session::default()));
        let repo = rg.open()?;
        let id = repo.config().id.to_hex();
        let snapshots = repo
            .snapshots()?
            .into_iter()
            .filter_map(|(sid, s)| {
                Some(SnapshotInfo {
                    id: sid,
                    time: s.timestamp().ok()?,
                    source: source_of(&s),
                    origin: origin_of(&id, &sid, &s),
                })
            })
            .collect();
        Ok(RepositoryContents {
            snapshots,
            last_check: last_check(repo.records(Some(CHECK_RECORD))?),
        })
    })()
    .map_err(|e| format!("{e:#}"));
    RepositoryState {
        name: name.to_string(),
        location,
        medium,
        site,
        contents,
    }
}

pub(crate) fn run(g: &Global, a: StatusArgs) -> anyhow::Result<u8> {
    if !a.three_two_one {
        anyhow::bail!(crate::Error::InvalidInput(
            "status reports the 3-2-1 rule: run `gatevault status --3-2-1`".into()
        ));
    }
    let rule = Rule {
        max_check_age: parse_age(&a.max_check_age)?,
        ..Rule::default()
    };
    let config = g.load_config()?;
    let profiles: Vec<Profile> = if a.profiles.is_empty() {
        config.profiles.values().cloned().collect()
    } else {
        a.profiles
            .iter()
            .map(|p| config.profile(p).cloned())
            .collect::<crate::Result<_>>()?
    };
    if profiles.is_empty() {
        anyhow::bail!(crate::Error::InvalidInput(format!(
            "config file {} names no profile: add a [profiles.NAME] table with a primary and its copies",
            config.path.display()
        )));
    }
    let now = chrono::Utc::now();
    let mut reports = Vec::new();
    for p in &profiles {
        let states: Vec<RepositoryState> = p
            .repositories()
            .map(|r| read_repository(g, &config, r))
            .collect();
        reports.push(evaluate(&p.name, &states, a.last as usize, now, &rule));
    }
    let compliant = reports.iter().all(|r| r.compliant);
    if g.json {
        print_json(&serde_json::json!({
            "compliant": compliant,
            "rule": rule,
            "last": a.last,
            "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "profiles": reports,
        }))?;
    } else {
        for r in &reports {
            print_report(r, &rule, g.quiet);
        }
    }
    Ok(if compliant { exit::OK } else { exit::PARTIAL })
}

fn print_report(r: &ProfileReport, rule: &Rule, quiet: bool) {
    println!(
        "profile {}: {} (rule: {} copies, {} media, {} offsite, checks within {})",
        r.profile,
        if r.compliant {
            "3-2-1 COMPLIANT"
        } else {
            "3-2-1 BROKEN"
        },
        rule.copies,
        rule.media,
        rule.offsite,
        crate::profile::format_age(rule.max_check_age)
    );
    if !quiet {
        for repo in &r.repositories {
            let check = match &repo.last_check {
                Some(c) => format!(
                    "last check {:?} {} ago (read data: {})",
                    c.status, c.age, c.read_data
                ),
                None => "never checked".into(),
            };
            match &repo.error {
                Some(e) => println!(
                    "  {:<12} {:<12} {:<7}  UNREACHABLE: {e}",
                    repo.name,
                    repo.medium.as_str(),
                    repo.site.as_str()
                ),
                None => println!(
                    "  {:<12} {:<12} {:<7}  {} snapshots, {check}  {}",
                    repo.name,
                    repo.medium.as_str(),
                    repo.site.as_str(),
                    repo.snapshots,
                    repo.location
                ),
            }
        }
    }
    for s in &r.sources {
        println!("  source {}", s.source);
        for v in &s.snapshots {
            println!(
                "    {}  {}  {} copies, {} media, offsite {}: {}",
                v.time,
                v.origin.snapshot.short(),
                v.copies,
                v.media,
                if v.offsite { "yes" } else { "no" },
                if v.compliant { "ok" } else { "BROKEN" }
            );
            if !quiet {
                let held: Vec<String> = v
                    .locations
                    .iter()
                    .map(|l| format!("{} {}", l.repository, l.snapshot.short()))
                    .collect();
                println!("      held by: {}", held.join(", "));
            }
            for p in &v.problems {
                println!("      problem: {p}");
            }
        }
    }
    for p in &r.problems {
        println!("  problem: {p}");
    }
}
