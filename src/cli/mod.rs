//! The command line: global options, opening the repository, output helpers and exit codes.
//! Each subcommand lives in its own file and calls one library function.

mod audit;
mod backup;
mod cat;
mod check;
mod copy;
mod daemon;
mod diff;
mod drill;
mod dump;
mod erase;
mod export;
mod forget;
mod init;
mod jobs;
mod key;
mod log;
mod ls;
mod metrics;
mod probe;
mod profiles;
mod prune;
mod repair;
mod restore;
mod rewrite;
mod rollback;
mod snapshots;
mod stats;
mod status;
mod systemd;
mod unlock;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::error::Error;
use crate::repo::{Credentials, Repository};
use crate::select::SnapshotFilter;

/// Exit codes (documented in `docs/cli.md`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any failure not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage.
    pub const USAGE: u8 = 2;
    /// Partial: a snapshot was made but some files could not be read, or a check could not examine everything.
    pub const PARTIAL: u8 = 3;
    /// No repository at the location, or a newer format.
    pub const NO_REPOSITORY: u8 = 10;
    /// The repository is locked.
    pub const LOCKED: u8 = 11;
    /// Wrong password or key file.
    pub const WRONG_PASSWORD: u8 = 12;
    /// The role of the key in use does not allow the command.
    pub const NOT_ALLOWED: u8 = 13;
    /// Interrupted by SIGINT (SIGTERM gives 143: 128 + the signal number, see `crate::signals`).
    pub const INTERRUPTED: u8 = 130;
}

/// gatevault: encrypted, deduplicated backups of API-gateway configurations.
#[derive(Parser, Debug)]
#[command(name = "gatevault", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository location (a folder).
    #[arg(
        short = 'r',
        long = "repo",
        env = "GATEVAULT_REPOSITORY",
        global = true
    )]
    repo: Option<String>,
    /// Backend option KEY=VALUE (for example `-o s3.region=eu-west-1`); repeat for several.
    #[arg(short = 'o', long = "option", global = true)]
    options: Vec<String>,
    /// File holding the repository password (first line).
    #[arg(long, env = "GATEVAULT_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Command printing the repository password.
    #[arg(long, env = "GATEVAULT_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Key file (32 raw bytes or 64 hex digits), kept apart from the repository; `init` creates it if missing.
    #[arg(long, env = "GATEVAULT_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Folder of the local index cache (default: $XDG_CACHE_HOME/gatevault or ~/.cache/gatevault).
    #[arg(long, env = "GATEVAULT_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Use a temporary index instead of the cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Print less (no progress).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more (repeat for debug output).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Config file naming repositories and profiles (default: $XDG_CONFIG_HOME/gatevault/config.toml).
    #[arg(long, env = "GATEVAULT_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Refuse to write to a repository whose region does not match this pattern (for example `eu-*`).
    #[arg(
        long,
        env = "GATEVAULT_REQUIRE_REGION",
        global = true,
        value_name = "PATTERN"
    )]
    require_region: Option<String>,
    /// After backup, check, copy, drill, forget, prune, restore, rewrite or erase, push the run's
    /// metrics to this Prometheus Pushgateway (a failed push is only a warning).
    #[arg(long, env = "GATEVAULT_PUSHGATEWAY", global = true, value_name = "URL")]
    pushgateway: Option<String>,
    /// Figures the command notes for the push.
    #[arg(skip)]
    figures: Arc<metrics::RunFigures>,
    /// The configured repository `-r config:NAME` named: its declared region and region policies.
    #[arg(skip)]
    configured: profiles::Configured,
    /// What this command changed and which repository records it in its audit log.
    #[arg(skip)]
    audit: Arc<crate::audit::session::Session>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Back up files and folders, or standard input.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(snapshots::SnapshotsArgs),
    /// List files in a snapshot.
    Ls(ls::LsArgs),
    /// Print a repository object (config, snapshot, index, pack header, key slot, tree, blob).
    Cat(cat::CatArgs),
    /// Write one file of a snapshot to standard output.
    Dump(dump::DumpArgs),
    /// Show sizes, dedup and compression ratios.
    Stats(stats::StatsArgs),
    /// Report how many copies of each recent backup exist, on which media and sites (`--3-2-1`).
    Status(status::StatusArgs),
    /// Restore a snapshot into a folder, or a gateway snapshot into a live gateway.
    Restore(restore::RestoreArgs),
    /// Return a gateway to the rollback point taken before the last restore into it.
    Rollback(rollback::RollbackArgs),
    /// Restore a recovery point into a staging gateway or a temporary folder, probe it, record it.
    Drill(drill::DrillArgs),
    /// List past restore drills with their status and recovery time.
    Drills(drill::DrillsArgs),
    /// Send probe requests through a gateway and check the answers.
    Probe(probe::ProbeArgs),
    /// Show files added, removed and changed between two snapshots (entities, for gateway snapshots).
    Diff(diff::DiffArgs),
    /// Show when one gateway entity changed across snapshots.
    Log(log::LogArgs),
    /// Write a gateway snapshot's configuration in the gateway's own format.
    Export(export::ExportArgs),
    /// Remove snapshots by a retention policy or by id (their data stays until a prune).
    Forget(forget::ForgetArgs),
    /// Remove data no snapshot needs: delete unused packs, repack partly used ones.
    Prune(prune::PruneCmdArgs),
    /// Remove one data subject's personal data from every snapshot, physically, and prove it is gone.
    Erase(erase::EraseArgs),
    /// List past erasures (what was removed, when, by whom, and the scan's result).
    Erasures(erase::ErasuresArgs),
    /// Re-encrypt: seal everything under the current key epoch, then optionally retire the old ones.
    Rewrite(rewrite::RewriteArgs),
    /// Check the repository's structure and, optionally, re-read its data.
    Check(check::CheckArgs),
    /// Copy snapshots from another repository (--from-repo) into this one, re-encrypted.
    Copy(copy::CopyArgs),
    /// Manage key slots.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Remove stale locks.
    Unlock(unlock::UnlockArgs),
    /// Repair repository structures.
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// List the audit log (`audit verify` checks its hash chain, `audit head` prints its head).
    Audit(audit::AuditArgs),
    /// Poll a gateway and commit a snapshot each time its configuration changes.
    Watch(watch::WatchArgs),
    /// Run the jobs of the config file on their schedules (`--once`: each once, now).
    Daemon(daemon::DaemonArgs),
    /// List the runs of scheduled jobs, newest first.
    Jobs(jobs::JobsArgs),
    /// Print (or write) systemd service and timer units that run the jobs of the config file.
    Systemd(systemd::SystemdArgs),
}

/// Snapshot filters shared by several commands.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots with this tag (KEY=VALUE or KEY); repeat to require several.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots of this host; repeat for several.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only snapshots that include this path; repeat to require several.
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            tags: self.tags.clone(),
            hosts: self.hosts.clone(),
            paths: self.paths.clone(),
        }
    }
}

impl Global {
    fn location(&self) -> anyhow::Result<String> {
        self.repo.clone().ok_or_else(|| {
            anyhow::Error::new(Error::InvalidInput(
                "no repository given: use -r/--repo or set GATEVAULT_REPOSITORY".into(),
            ))
        })
    }

    /// The backend of the repository location, wrapped so that the audit log learns what the command
    /// writes and removes.
    fn backend(&self) -> anyhow::Result<Arc<dyn Backend>> {
        let loc = self.location()?;
        let opts = crate::backend::BackendOptions::parse(&self.options)?;
        let cache = self.cache_dir();
        let backend = crate::backend::open_cached(&loc, &opts, cache.as_deref())?;
        self.enforce_region(backend.as_ref())?;
        Ok(self.audit.wrap(backend))
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(crate::secrets::default_cache_dir)
    }

    fn progress_enabled(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }

    /// Where this repository's secrets come from.
    fn secrets(&self) -> SecretOptions<'_> {
        SecretOptions {
            password_file: self.password_file.as_deref(),
            password_command: self.password_command.as_deref(),
            key_file: self.key_file.as_deref(),
            password_env: "GATEVAULT_PASSWORD",
            what: "repository",
            missing: "no password or key file: use --key-file, --password-file, --password-command or GATEVAULT_PASSWORD (or run on a terminal to be asked)",
        }
    }

    /// Reads the password from the first source given: file, command, `GATEVAULT_PASSWORD`, prompt.
    fn password(&self, confirm: bool) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        self.secrets().password(confirm)
    }

    fn read_key_file(&self) -> anyhow::Result<Option<Zeroizing<[u8; 32]>>> {
        self.secrets().read_key_file()
    }

    fn credentials(&self) -> anyhow::Result<Credentials> {
        self.secrets().credentials()
    }

    /// Opens the repository named by the options; the first repository opened is the one whose audit
    /// log records the command.
    pub fn open(&self) -> anyhow::Result<Repository> {
        Ok(self.open_keeping_credentials()?.0)
    }

    /// Opens the repository and keeps the credentials it was opened with (commands that rewrap the
    /// key slot in use need them again, and a password typed at a prompt is asked for only once).
    pub fn open_keeping_credentials(&self) -> anyhow::Result<(Repository, Credentials)> {
        let backend = self.backend()?;
        let creds = self.credentials()?;
        let repo = Repository::open(backend, &creds, self.cache_dir())?;
        audit::attach(self, &repo);
        Ok((repo, creds))
    }
}

/// Where the secrets of one repository come from: the global options for the repository a command
/// works on, the `--from-*` options for the source of `copy`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecretOptions<'a> {
    /// File holding the password (first line).
    pub(crate) password_file: Option<&'a std::path::Path>,
    /// Command printing the password.
    pub(crate) password_command: Option<&'a str>,
    /// Key file.
    pub(crate) key_file: Option<&'a std::path::Path>,
    /// The environment variable that may hold the password itself.
    pub(crate) password_env: &'static str,
    /// How prompts and messages name the repository (`repository`, `source repository`).
    pub(crate) what: &'static str,
    /// The message when no secret is given, naming the options to use.
    pub(crate) missing: &'static str,
}

impl SecretOptions<'_> {
    /// The sources without the prompt.
    fn source(&self) -> crate::secrets::SecretSource<'_> {
        crate::secrets::SecretSource {
            password_file: self.password_file,
            password_command: self.password_command,
            key_file: self.key_file,
            password_env: Some(self.password_env),
            what: self.what,
        }
    }

    /// Reads the password from the first source given: file, command, the environment variable, a
    /// prompt on a terminal.
    pub(crate) fn password(&self, confirm: bool) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        if let Some(p) = self.source().password()? {
            return Ok(Some(p));
        }
        if self.key_file.is_some() || !std::io::stdin().is_terminal() {
            return Ok(None);
        }
        let p = Zeroizing::new(
            rpassword::prompt_password(format!("enter password for {}: ", self.what))
                .context("reading the password")?,
        );
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("enter password again: ")
                    .context("reading the password")?,
            );
            if *again != *p {
                anyhow::bail!(Error::InvalidInput("the passwords do not match".into()));
            }
        }
        Ok(Some(Zeroizing::new(p.as_bytes().to_vec())))
    }

    /// Reads the key file, if one is given.
    pub(crate) fn read_key_file(&self) -> anyhow::Result<Option<Zeroizing<[u8; 32]>>> {
        Ok(self.source().key()?)
    }

    /// The password and key file given; at least one is required.
    pub(crate) fn credentials(&self) -> anyhow::Result<Credentials> {
        let key_file = self.read_key_file()?;
        let password = self.password(false)?;
        if key_file.is_none() && password.is_none() {
            anyhow::bail!(Error::NoCredentials(self.missing.to_string()));
        }
        Ok(Credentials { password, key_file })
    }
}

/// Prints `v` as JSON on one line.
fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// A progress bar on standard error, or nothing.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(g: &Global, verb: &'static str) -> Self {
        if !g.progress_enabled() {
            return Self(None);
        }
        let pb = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{verb} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        pb.set_style(style);
        Self(Some(pb))
    }
}

impl crate::backup::Progress for Bar {
    fn start(&self, total: u64, _files: u64) {
        if let Some(p) = &self.0 {
            p.set_length(total);
        }
    }
    fn bytes(&self, n: u64) {
        if let Some(p) = &self.0 {
            p.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(p) = &self.0 {
            p.finish_and_clear();
        }
    }
}

/// Maps an error to its exit code.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<Error>() {
            return match err {
                Error::NoRepository { .. } | Error::NewerFormat { .. } => exit::NO_REPOSITORY,
                Error::Locked { .. } => exit::LOCKED,
                Error::WrongPassword | Error::KeySlotDamaged { .. } | Error::NoCredentials(_) => {
                    exit::WRONG_PASSWORD
                }
                Error::NotAllowed { .. } => exit::NOT_ALLOWED,
                Error::Interrupted => crate::signals::exit_code(),
                _ => exit::FAILURE,
            };
        }
    }
    exit::FAILURE
}

/// What is true of the repository after `command` stopped at a signal (the line on stderr).
fn interrupted_note(command: &Command) -> &'static str {
    match command {
        Command::Backup(_) => "nothing was committed (no snapshot); packs already written stay unreferenced until the next prune; run the backup again",
        Command::Forget(_) => "the snapshots removed so far stay removed and the others are kept; run the same forget again to finish",
        Command::Prune(_) => "the repository is consistent (check passes); run prune again to finish",
        Command::Copy(_) => "the snapshots copied so far are complete, nothing else was committed; run the same copy again to finish (it skips them)",
        Command::Check(_) => "the check did not finish and nothing was recorded",
        Command::Restore(_) => "the files being restored were removed, files already complete stay; run the restore again",
        _ => "the command stopped at a safe point; nothing was half-committed",
    }
}

/// An error and its causes as `a: b: c`, like `{:#}`, but without a cause whose text the message
/// before it already ends with (our I/O errors print their source themselves).
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if out.ends_with(&t) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&t);
    }
    out
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away (`ls | head`):
    // `println!` panics on a closed pipe, so that one panic becomes exit status 141 (128 + SIGPIPE).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("os error 32") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let usage = |e: clap::Error| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        })
    };
    let mut command = Cli::command();
    let matches = match command.try_get_matches_from_mut(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => return usage(e),
    };
    let invocation = audit::invocation(&command, &matches);
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage(e.format(&mut command)),
    };
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEVAULT_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("gatevault={level}"))
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
    let started = chrono::Utc::now();
    if let Err(e) = cli.global.resolve_configured() {
        eprintln!("error: {}", chain_text(&e));
        let code = exit_code(&e);
        metrics::push_run(&cli.global, matches.subcommand_name(), started, code);
        return ExitCode::from(code);
    }
    if let Err(e) = crate::signals::install() {
        tracing::warn!("cannot handle SIGTERM/SIGINT ({e}): a signal will end the command at once");
    }
    let stop_note = interrupted_note(&cli.command);
    let g = &cli.global;
    let result = match cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Backup(a) => backup::run(g, a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Ls(a) => ls::run(g, a),
        Command::Cat(a) => cat::run(g, a),
        Command::Dump(a) => dump::run(g, a),
        Command::Stats(a) => stats::run(g, a),
        Command::Status(a) => status::run(g, a),
        Command::Restore(a) => restore::run(g, a),
        Command::Rollback(a) => rollback::run(g, a),
        Command::Drill(a) => drill::run(g, a),
        Command::Drills(a) => drill::run_list(g, a),
        Command::Probe(a) => probe::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Log(a) => log::run(g, a),
        Command::Export(a) => export::run(g, a),
        Command::Forget(a) => forget::run(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Erase(a) => erase::run(g, a),
        Command::Erasures(a) => erase::run_list(g, a),
        Command::Rewrite(a) => rewrite::run(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Copy(a) => copy::run(g, a),
        Command::Key(a) => key::run(g, a),
        Command::Unlock(a) => unlock::run(g, a),
        Command::Repair(a) => repair::run(g, a),
        Command::Audit(a) => audit::run(g, a),
        Command::Watch(a) => watch::run(g, a),
        Command::Daemon(a) => daemon::run(g, a),
        Command::Jobs(a) => jobs::run(g, a),
        Command::Systemd(a) => systemd::run(g, a),
    };
    let code = match &result {
        Ok(code) => *code,
        Err(e)
            if e.chain()
                .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Interrupted))) =>
        {
            eprintln!("interrupted by {}: {stop_note}", crate::signals::name());
            exit_code(e)
        }
        Err(e) => {
            eprintln!("error: {}", chain_text(e));
            exit_code(e)
        }
    };
    let outcome = crate::audit::session::Outcome::of(&result, code);
    let code = audit::finish(g, &invocation, &outcome);
    metrics::push_run(g, matches.subcommand_name(), started, code);
    ExitCode::from(code)
}
