//! `gatevault rewrite --reencrypt [--retire]`: seals everything under the current key epoch (see
//! `crate::reencrypt`), then optionally retires the old epochs (`crate::repo::rotation`).

use clap::Args;

use super::key::{print_master_change, OtherKeys};
use super::{exit, print_json, Bar, Global};
use crate::reencrypt::{reencrypt, ReencryptOptions, ReencryptReport};
use crate::repo::lock::LockGuard;
use crate::repo::rotation::MasterChange;

#[derive(Args, Debug)]
pub(crate) struct RewriteArgs {
    /// Seal every object stored under an old key epoch again under the current one.
    #[arg(long, required = true)]
    reencrypt: bool,
    /// Then retire the old epochs: drop them from the master key and rewrap the key slots (refused
    /// while anything is still sealed under them).
    #[arg(long)]
    retire: bool,
    #[command(flatten)]
    others: OtherKeys,
    /// Only count the objects under each epoch.
    #[arg(short = 'n', long, conflicts_with = "retire")]
    dry_run: bool,
}

pub(crate) fn run(g: &Global, a: RewriteArgs) -> anyhow::Result<u8> {
    let (repo, creds) = g.open_keeping_credentials()?;
    if a.others.given() && !a.retire {
        anyhow::bail!(crate::Error::InvalidInput(
            "--also-password-file, --also-key-file and --retire-other-slots go with --retire"
                .into()
        ));
    }
    if !a.dry_run {
        repo.require_admin("re-encrypt the repository")?;
    }
    let secrets = a.others.read()?;
    let others = secrets.credentials();
    // A dry run only reads: any key may run it, under a shared lock.
    let lock = LockGuard::acquire(
        repo.backend_arc(),
        repo.keys().clone(),
        !a.dry_run,
        "rewrite --reencrypt",
    )?;
    // The retirement is planned first, so that a refusal (slots nobody can rewrap) comes before
    // anything is re-encrypted.
    let plan = if a.retire {
        Some(repo.plan_master_change(
            MasterChange::Retire,
            &creds,
            &others,
            a.others.retire_other_slots,
        )?)
    } else {
        None
    };
    // After a retirement, the audit entry is sealed with the reduced key (everything, the log
    // included, was re-sealed under the current epoch first). Until then the key in use, which holds
    // every epoch, reads whatever it finds.
    let new_keys = plan.as_ref().map(|p| repo.keys_after(p));
    let report = reencrypt(
        &repo,
        &lock,
        &ReencryptOptions { dry_run: a.dry_run },
        plan,
        &Bar::new(g, "re-encrypting"),
    )?;
    if let (Some(keys), Some(_)) = (&new_keys, &report.retired) {
        super::audit::rekey(g, keys);
    }
    if g.json {
        print_json(&report)?;
    } else if !g.quiet {
        print_report(&report);
    }
    Ok(exit::OK)
}

fn print_report(r: &ReencryptReport) {
    let counts: Vec<String> = r
        .before
        .iter()
        .map(|(t, m)| {
            let per: Vec<String> = m
                .iter()
                .map(|(e, n)| format!("{n} under epoch {e}"))
                .collect();
            format!(
                "{t}: {}",
                if per.is_empty() {
                    "none".to_string()
                } else {
                    per.join(", ")
                }
            )
        })
        .collect();
    println!("before: {}", counts.join("; "));
    if r.dry_run {
        println!(
            "{} of these (packs, blobs, index files, snapshots, records, audit entries) are sealed \
             under another epoch than {}; dry run: nothing was changed",
            r.left_on_old_epochs, r.current_epoch
        );
        return;
    }
    let moved = r.prune.as_ref().map(|p| p.blobs_moved).unwrap_or(0);
    let objects: Vec<String> = r
        .objects_reencrypted
        .iter()
        .map(|(t, n)| format!("{n} {t}(s)"))
        .collect();
    println!(
        "re-encrypted under epoch {}: {} packs ({moved} blobs moved to new packs), {} index files \
         (replaced by one), {}, {} audit log entries (under their own names); {} snapshot parents \
         now name the parent's new id",
        r.current_epoch,
        r.packs_reencrypted,
        r.index_files_reencrypted,
        objects.join(", "),
        r.audit.resealed.len(),
        r.parents_remapped
    );
    if !r.audit.resumed.is_empty() || !r.audit.leftover_copies.is_empty() {
        println!(
            "finished the re-seal of {} audit log entries that an interrupted run had started",
            r.audit.resumed.len() + r.audit.leftover_copies.len()
        );
    }
    if r.left_on_old_epochs == 0 {
        println!(
            "nothing is sealed under another epoch than {}",
            r.current_epoch
        );
    } else {
        println!(
            "{} objects are still sealed under other epochs than {}",
            r.left_on_old_epochs, r.current_epoch
        );
    }
    if let Some(m) = &r.retired {
        println!(
            "old key epochs retired: the master key holds epoch{} {} only",
            if m.epochs.len() == 1 { "" } else { "s" },
            m.epochs
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        print_master_change(m);
    }
}
