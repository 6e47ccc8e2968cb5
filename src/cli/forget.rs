//! `gatevault forget`: removes snapshots by a retention policy (restic's `--keep-*` options) or by id.

use clap::{Args, ValueEnum};

use super::{exit, print_json, FilterArgs, Global};
use crate::forget::{CalendarDuration, Entry, GroupBy, Keep, Policy, Selection, TagList};

/// Named policies.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// 30 daily, 12 weekly and 12 monthly snapshots.
    Standard,
}

#[derive(Args, Debug)]
pub(crate) struct ForgetArgs {
    /// Snapshots to remove (unique id prefixes, or `latest` among the filtered ones); without them,
    /// the policy decides.
    snapshots: Vec<String>,
    /// Keep the N newest snapshots (`unlimited` or -1: all).
    #[arg(short = 'l', long, value_name = "N", value_parser = parse_keep, allow_negative_numbers = true)]
    keep_last: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest hours that have snapshots.
    #[arg(short = 'H', long, value_name = "N", value_parser = parse_keep, allow_negative_numbers = true)]
    keep_hourly: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest days that have snapshots.
    #[arg(short = 'd', long, value_name = "N", value_parser = parse_keep, allow_negative_numbers = true)]
    keep_daily: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have snapshots.
    #[arg(short = 'w', long, value_name = "N", value_parser = parse_keep, allow_negative_numbers = true)]
    keep_weekly: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest months that have snapshots.
    #[arg(short = 'm', long, value_name = "N", value_parser = parse_keep, allow_negative_numbers = true)]
    keep_monthly: Option<Keep>,
    /// Keep the newest snapshot of each of the N newest years that have snapshots.
    #[arg(short = 'y', long, value_name = "N", value_parser = parse_keep, allow_negative_numbers = true)]
    keep_yearly: Option<Keep>,
    /// Keep every snapshot newer than DURATION (e.g. 2y5m7d3h) before the group's newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within: Option<CalendarDuration>,
    /// Keep the newest snapshot of each hour within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_hourly: Option<CalendarDuration>,
    /// Keep the newest snapshot of each day within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_daily: Option<CalendarDuration>,
    /// Keep the newest snapshot of each ISO week within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_weekly: Option<CalendarDuration>,
    /// Keep the newest snapshot of each month within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_monthly: Option<CalendarDuration>,
    /// Keep the newest snapshot of each year within DURATION of the newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_yearly: Option<CalendarDuration>,
    /// Keep snapshots carrying all these tags (comma-separated KEY=VALUE or KEY; '' for untagged
    /// snapshots); repeat to keep those of any list.
    #[arg(long = "keep-tag", value_name = "TAGLIST", value_parser = parse_tag_list)]
    keep_tags: Vec<TagList>,
    /// A named policy (the --keep-* options given override its counts).
    #[arg(long, value_enum, value_name = "NAME")]
    policy: Option<Preset>,
    /// Apply the policy to each group of snapshots with the same host, paths, tags and/or source
    /// (comma-separated; '' for one group of all).
    #[arg(short = 'g', long, value_name = "FIELDS", default_value = "host,paths", value_parser = parse_group_by)]
    group_by: GroupBy,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only show what would be removed.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Prune afterwards: remove the data only the removed snapshots needed.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_args: super::prune::PruneArgs,
}

fn parse_keep(s: &str) -> Result<Keep, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn parse_duration(s: &str) -> Result<CalendarDuration, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn parse_tag_list(s: &str) -> Result<TagList, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn parse_group_by(s: &str) -> Result<GroupBy, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

impl ForgetArgs {
    fn has_policy_options(&self) -> bool {
        self.policy.is_some()
            || !self.keep_tags.is_empty()
            || [
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            ]
            .iter()
            .any(Option::is_some)
            || [
                self.keep_within,
                self.keep_within_hourly,
                self.keep_within_daily,
                self.keep_within_weekly,
                self.keep_within_monthly,
                self.keep_within_yearly,
            ]
            .iter()
            .any(Option::is_some)
    }

    fn policy(&self) -> Policy {
        let mut p = match self.policy {
            Some(Preset::Standard) => Policy::standard(),
            None => Policy::default(),
        };
        let counts = [
            (self.keep_last, &mut p.last),
            (self.keep_hourly, &mut p.hourly),
            (self.keep_daily, &mut p.daily),
            (self.keep_weekly, &mut p.weekly),
            (self.keep_monthly, &mut p.monthly),
            (self.keep_yearly, &mut p.yearly),
        ];
        for (given, rule) in counts {
            if let Some(k) = given {
                *rule = k;
            }
        }
        let durations = [
            (self.keep_within, &mut p.within),
            (self.keep_within_hourly, &mut p.within_hourly),
            (self.keep_within_daily, &mut p.within_daily),
            (self.keep_within_weekly, &mut p.within_weekly),
            (self.keep_within_monthly, &mut p.within_monthly),
            (self.keep_within_yearly, &mut p.within_yearly),
        ];
        for (given, rule) in durations {
            if let Some(d) = given {
                *rule = d;
            }
        }
        p.keep_tags = self.keep_tags.clone();
        p.group_by = self.group_by;
        p
    }
}

pub(crate) fn run(g: &Global, a: ForgetArgs) -> anyhow::Result<u8> {
    let policy = a.policy();
    let filter = a.filter.filter();
    let selection = if a.snapshots.is_empty() {
        if policy.is_empty() {
            anyhow::bail!(crate::Error::InvalidInput(
                "no policy given: it would keep nothing, and forget refuses to remove every snapshot; \
                 give --keep-* options or --policy standard (add --dry-run to see the result first), \
                 or name the snapshots to remove"
                    .into()
            ));
        }
        Selection::Policy(&policy, &filter)
    } else {
        if a.has_policy_options() {
            anyhow::bail!(crate::Error::InvalidInput(
                "give either snapshot ids or a policy (--keep-*, --policy), not both".into()
            ));
        }
        Selection::Ids(&a.snapshots, &filter)
    };
    let repo = g.open()?;
    let report = crate::forget::forget(&repo, selection, a.dry_run, chrono::Utc::now())?;
    for e in &report.future {
        eprintln!(
            "warning: snapshot {} of host {} has time {}, in the future: it is kept and not counted by \
             the policy; check the clock of that host, or whether the snapshot is genuine",
            e.id.short(),
            e.snapshot.hostname,
            e.snapshot.time
        );
    }
    if g.json {
        let v: Vec<_> = report
            .groups
            .iter()
            .map(|gr| {
                serde_json::json!({
                    "group": gr.key,
                    "keep": gr.keep.iter().map(entry_json).collect::<Vec<_>>(),
                    "remove": gr.remove.iter().map(entry_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        // With --prune, the prune report follows on a line of its own.
        print_json(&v)?;
    } else if !g.quiet {
        print_forget(&a, &policy, &selection, &report);
    }
    if a.prune {
        return super::prune::run_with(g, &repo, &a.prune_args.options(a.dry_run));
    }
    Ok(exit::OK)
}

fn print_forget(
    a: &ForgetArgs,
    policy: &Policy,
    selection: &Selection<'_>,
    report: &crate::forget::ForgetReport,
) {
    if matches!(selection, Selection::Policy(..)) {
        println!("Applying policy: {policy}");
    }
    for gr in &report.groups {
        if let Some(k) = &gr.key {
            println!("snapshots for {k}:");
        }
        if !gr.keep.is_empty() {
            println!("keep {} snapshots:", gr.keep.len());
            print_table(&gr.keep, true);
        }
        if !gr.remove.is_empty() {
            println!("remove {} snapshots:", gr.remove.len());
            print_table(&gr.remove, false);
        }
    }
    let n: usize = report.groups.iter().map(|g| g.remove.len()).sum();
    if n == 0 {
        println!("no snapshots to remove");
    } else if a.dry_run {
        println!("would remove {n} snapshots (dry run: nothing was changed)");
    } else {
        println!(
            "removed {} snapshots{}",
            report.removed.len(),
            if a.prune {
                ""
            } else {
                "; the data only they referenced stays in the repository until a later prune removes it"
            }
        );
    }
}

fn tags(e: &Entry) -> String {
    e.snapshot
        .tags
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "short_id": e.id.short(),
        "time": e.snapshot.time,
        "hostname": e.snapshot.hostname,
        "paths": e.snapshot.paths,
        "tags": e.snapshot.tags,
        "source": e.snapshot.source,
        "reasons": e.reasons,
    })
}

/// A restic-style table: ID, time (local), host, tags, reasons (for kept snapshots), paths.
fn print_table(entries: &[Entry], with_reasons: bool) {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let time = e
                .snapshot
                .timestamp()
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_else(|_| e.snapshot.time.clone());
            let reasons: Vec<String> = e.reasons.iter().map(ToString::to_string).collect();
            [
                e.id.short(),
                time,
                e.snapshot.hostname.clone(),
                tags(e),
                reasons.join(", "),
                e.snapshot.paths.join(" "),
            ]
        })
        .collect();
    let header = ["ID", "Time", "Host", "Tags", "Reasons", "Paths"];
    let shown: Vec<usize> = (0..6).filter(|&c| c != 4 || with_reasons).collect();
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([header[c].len()])
            .max()
            .unwrap_or(0)
    };
    let line = |cells: &dyn Fn(usize) -> String| {
        let parts: Vec<String> = shown
            .iter()
            .map(|&c| {
                if c == 5 {
                    cells(c)
                } else {
                    format!("{:<w$}", cells(c), w = width(c))
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let head = line(&|c| header[c].to_string());
    let rule = "-".repeat(head.chars().count().max(40));
    println!("{head}");
    println!("{rule}");
    for r in &rows {
        println!("{}", line(&|c| r[c].clone()));
    }
    println!("{rule}");
    println!("{} snapshots\n", rows.len());
}
