//! `--pushgateway URL`: after a one-shot command, its start, end, duration, status and (for a
//! backup or a copy) bytes added are pushed to a Prometheus Pushgateway. A failing push is a warning
//! and never changes the command's exit code.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::Global;
use crate::metrics::{command_exposition, dedup_ratio, push, CommandRun};

/// The commands whose runs are pushed; the others push nothing.
pub(crate) const PUSHED: &[&str] = &[
    "backup", "check", "copy", "drill", "forget", "prune", "restore", "rewrite", "erase",
];

/// Figures a command notes while it runs, for the push at its end.
#[derive(Debug, Default)]
pub(crate) struct RunFigures(Mutex<Figures>);

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    bytes_added: Option<u64>,
    dedup_ratio: Option<f64>,
}

impl RunFigures {
    /// A backup's figures: logical bytes, plaintext bytes added, bytes stored.
    pub(crate) fn backup(&self, logical: u64, added: u64, stored: u64) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.bytes_added = Some(stored);
        f.dedup_ratio = dedup_ratio(logical, added);
    }

    /// Bytes a command added to its repository.
    pub(crate) fn bytes_added(&self, n: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).bytes_added = Some(n);
    }

    fn get(&self) -> Figures {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pushes the run of `command` when `--pushgateway` is given and the command is one of
/// [`PUSHED`]; prints a warning when the push fails.
pub(crate) fn push_run(g: &Global, command: Option<&str>, started: DateTime<Utc>, exit_code: u8) {
    let (Some(url), Some(command)) = (g.pushgateway.as_deref(), command) else {
        return;
    };
    if url.trim().is_empty() || !PUSHED.contains(&command) {
        return;
    }
    let f = g.figures.get();
    let run = CommandRun {
        command: command.to_string(),
        repository: g
            .configured
            .name
            .clone()
            .or_else(|| g.repo.clone())
            .unwrap_or_default(),
        started,
        ended: Utc::now(),
        exit_code,
        bytes_added: f.bytes_added,
        dedup_ratio: f.dedup_ratio,
    };
    let body = command_exposition(&run);
    if let Err(e) = push(url.trim(), &crate::util::hostname(), command, &body) {
        eprintln!("warning: the metrics of this {command} were not pushed: {e} (the command's result is unchanged)");
    }
}
