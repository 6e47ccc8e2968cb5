//! `gatevault audit`, `audit verify` and `audit head`; and what the command line tells the audit log
//! about every command it runs ([`invocation`], [`finish`]).

use std::collections::HashMap;

use clap::{ArgMatches, Args, Subcommand};

use super::{exit, print_json, Global};
use crate::audit::mask::{env_secrets, mask_args, OptionInfo};
use crate::audit::session::{always_audited, Invocation, Outcome, Target};
use crate::audit::{entry_path, AuditLog, Head, HeadFile, Remembered};
use crate::format::AuditEntry;
use crate::repo::Repository;

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only the newest N entries.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Check the chain: every entry present, intact and linked to the one before, and the head this
    /// machine saw last still part of it. Exits 1 naming the first broken link.
    Verify(VerifyArgs),
    /// Print the log's head (SEQ:HASH), to keep outside the repository and give to `audit verify --head`.
    Head,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Also require this head, as `audit head` printed it (SEQ:HASH); repeat for several.
    #[arg(long = "head", value_name = "SEQ:HASH")]
    heads: Vec<Head>,
    /// Remember the chain's current head instead of the one this machine saw, if the chain itself is
    /// intact (after investigating a reported rewrite, or restoring the repository from an older copy).
    #[arg(long)]
    reset_head: bool,
}

/// The head file of `repo` in this machine's cache (none with `--no-cache`).
pub(crate) fn head_file(repo: &Repository) -> Option<HeadFile> {
    repo.cache_dir()
        .map(|d| HeadFile::in_cache(d, &repo.config().id))
}

/// Makes `repo` the repository whose audit log records this command (the first one opened).
pub(crate) fn attach(g: &Global, repo: &Repository) {
    g.audit.attach(Target {
        backend: repo.backend_arc(),
        keys: repo.keys().clone(),
        key: repo.key_id(),
        role: repo.role(),
        head_file: head_file(repo),
    });
}

/// Seals this command's audit entry with `keys` (the repository's keys after the command changed its
/// master key), so that it goes under the new current epoch and can name the hash of an entry sealed
/// under it.
pub(crate) fn rekey(g: &Global, keys: &std::sync::Arc<crate::crypto::RepoKeys>) {
    g.audit.rekey(keys.clone());
}

/// The command name (`key add`), its masked command line and whether it is always recorded, from the
/// parsed command line.
pub(crate) fn invocation(cmd: &clap::Command, matches: &ArgMatches) -> Invocation {
    let mut names = Vec::new();
    let mut options: HashMap<String, OptionInfo> = HashMap::new();
    let mut add_options = |c: &clap::Command| {
        for a in c.get_arguments() {
            let long = a
                .get_long()
                .map(str::to_string)
                .or_else(|| a.get_short().map(String::from));
            let Some(long) = long else { continue };
            let info = OptionInfo {
                long: long.clone(),
                takes_value: a.get_action().takes_values(),
            };
            if let Some(l) = a.get_long() {
                options.insert(format!("--{l}"), info.clone());
            }
            for alias in a.get_all_aliases().into_iter().flatten() {
                options.insert(format!("--{alias}"), info.clone());
            }
            if let Some(s) = a.get_short() {
                options.insert(format!("-{s}"), info.clone());
            }
        }
    };
    add_options(cmd);
    let (mut c, mut m) = (cmd, matches);
    while let Some((name, sub)) = m.subcommand() {
        names.push(name.to_string());
        match c.find_subcommand(name) {
            Some(sc) => {
                add_options(sc);
                c = sc;
            }
            None => break,
        }
        m = sub;
    }
    let flag = |id: &str| {
        m.try_get_one::<bool>(id)
            .ok()
            .flatten()
            .copied()
            .unwrap_or(false)
    };
    let to_gateway = m
        .try_get_one::<String>("to_gateway")
        .ok()
        .flatten()
        .is_some();
    let command = names.join(" ");
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut masked = mask_args(&args, &|o| options.get(o).cloned());
    masked
        .secrets
        .extend(env_secrets(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })));
    Invocation {
        always: always_audited(&command, to_gateway, flag("dry_run")),
        masked,
        command,
    }
}

/// Appends the audit entry of the command just run, when one is due; returns the exit code, turned into
/// [`exit::PARTIAL`] when a successful command's entry could not be written.
pub(crate) fn finish(g: &Global, inv: &Invocation, outcome: &Outcome) -> u8 {
    let code = outcome.exit();
    match g.audit.record(inv, outcome) {
        Ok(None) => code,
        Ok(Some(r)) => {
            if let Some(w) = r.warning {
                eprintln!("warning: {w}");
            }
            code
        }
        Err(e) => {
            eprintln!(
                "warning: `{}` ran, but its audit log entry could not be written: {e}",
                inv.command
            );
            if code == exit::OK {
                exit::PARTIAL
            } else {
                code
            }
        }
    }
}

pub(crate) fn run(g: &Global, a: AuditArgs) -> anyhow::Result<u8> {
    let repo = g.open()?;
    let log = AuditLog::new(repo.backend(), repo.keys());
    match a.command {
        None => list(g, &log, a.last),
        Some(AuditCommand::Head) => {
            let h = log.head()?;
            if g.json {
                print_json(&h)?;
            } else {
                println!("{h}");
            }
            Ok(exit::OK)
        }
        Some(AuditCommand::Verify(v)) => verify(g, &repo, &log, v),
    }
}

fn list(g: &Global, log: &AuditLog<'_>, last: Option<usize>) -> anyhow::Result<u8> {
    let mut entries = log.entries()?;
    if let Some(n) = last {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    let damaged = entries.iter().filter(|(_, e)| e.is_err()).count();
    if g.json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|(seq, e)| match e {
                Ok(e) => {
                    let mut j = serde_json::to_value(e).unwrap_or_default();
                    j["object"] = serde_json::json!(entry_path(*seq));
                    j
                }
                Err(err) => {
                    serde_json::json!({"seq": seq, "object": entry_path(*seq), "error": err.to_string()})
                }
            })
            .collect();
        print_json(&v)?;
    } else {
        let rows: Vec<[String; 8]> = entries.iter().map(|(seq, e)| row(*seq, e)).collect();
        let header = [
            "Seq",
            "Time",
            "User@Host",
            "Key",
            "Role",
            "Command",
            "Objects",
            "Result",
        ];
        let width = |c: usize| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..8).map(width).collect();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| match i {
                    0 => format!("{c:>w$}", w = widths[0]),
                    7 => c.clone(),
                    _ => format!("{c:<w$}", w = widths[i]),
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let head = line(&header.map(String::from));
        let rule = "-".repeat(head.chars().count().max(60));
        println!("{head}");
        println!("{rule}");
        for r in &rows {
            println!("{}", line(r));
        }
        println!("{rule}");
        println!("{} entries", rows.len());
    }
    if damaged > 0 {
        eprintln!(
            "warning: {damaged} audit entries cannot be read; run `gatevault audit verify` for the first broken link"
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

fn row(seq: u64, e: &crate::Result<AuditEntry>) -> [String; 8] {
    let e = match e {
        Ok(e) => e,
        Err(err) => {
            return [
                seq.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("DAMAGED: {err}"),
            ]
        }
    };
    let time = chrono::DateTime::parse_from_rfc3339(&e.time)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| e.time.clone());
    let mut objects = Vec::new();
    for (t, o) in &e.objects {
        if !o.added.is_empty() {
            objects.push(format!("+{} {t}", o.added.len()));
        }
        if !o.removed.is_empty() {
            objects.push(format!("-{} {t}", o.removed.len()));
        }
    }
    [
        seq.to_string(),
        time,
        format!("{}@{}", e.user, e.host),
        e.key.short(),
        e.role.clone(),
        e.command.clone(),
        objects.join(", "),
        e.result.clone(),
    ]
}

fn verify(g: &Global, repo: &Repository, log: &AuditLog<'_>, a: VerifyArgs) -> anyhow::Result<u8> {
    let file = head_file(repo);
    let mut compared: Vec<Remembered> = a.heads.iter().map(|h| Remembered::given(*h)).collect();
    if let (Some(f), false) = (&file, a.reset_head) {
        compared.extend(f.load()?);
    }
    let v = log.verify(&compared)?;
    let mut replaced = None;
    let mut remember_error = None;
    if let (true, Some(f)) = (v.is_intact(), &file) {
        let r = if a.reset_head {
            f.reset(v.head).map(|old| {
                replaced = old;
                None
            })
        } else {
            f.advance(v.head, &|seq| Ok(v.hash_of(seq)))
        };
        if let Err(e) = r {
            remember_error = Some(e.to_string());
        }
    }
    if g.json {
        let mut j = serde_json::to_value(&v)?;
        j["replaced"] = serde_json::to_value(&replaced)?;
        j["remembered_in"] =
            serde_json::json!(file.as_ref().map(|f| f.path().display().to_string()));
        print_json(&j)?;
    } else if let Some(b) = &v.broken {
        println!("audit log BROKEN at entry {} ({})", b.seq, b.object);
        println!("  {}", b.problem);
        println!("  next step: {}", b.next_step);
        println!("entries 1 to {} verified before the break", v.entries);
    } else if !g.quiet {
        println!("audit log intact: {} entries, head {}", v.entries, v.head);
        for c in &v.compared {
            match (&c.seen, c.origin.as_str()) {
                (Some(seen), "this machine") => {
                    println!("contains entry {} that this machine saw on {seen}", c.seq)
                }
                _ => println!("contains the head given with --head ({}:{})", c.seq, c.hash),
            }
        }
        if file.is_none() {
            println!("note: no cache folder (--no-cache), so no head remembered by this machine was compared");
        }
        if let Some(old) = &replaced {
            println!(
                "this machine now remembers head {} instead of seq {} with hash {} (seen {})",
                v.head,
                old.seq,
                old.hash,
                old.seen.as_deref().unwrap_or("earlier")
            );
        }
    }
    for f in &v.foreign {
        eprintln!("warning: {f} is not an audit entry name; it is not part of the chain");
    }
    if !g.json {
        for p in &v.pending {
            eprintln!(
                "note: entry {} has a copy in record {} made to re-seal it under a new key epoch: {}",
                p.seq, p.record, p.note
            );
        }
    }
    if let Some(e) = remember_error {
        eprintln!(
            "warning: the chain is intact, but this machine could not remember its head: {e}"
        );
    }
    Ok(if v.is_intact() {
        exit::OK
    } else {
        exit::FAILURE
    })
}
