//! The scheduler of `gatevault daemon`: runs each job at the times its cron schedule names (in its
//! time zone, plus a random jitter), never two jobs on one repository at once (a job whose
//! repository is busy waits its turn), never a job while its previous run still goes (that start
//! is skipped and logged); enforces `max_duration`, watches each job's RPO, raises alerts, and on
//! SIGTERM/SIGINT stops scheduling, forwards SIGTERM to running jobs, waits up to
//! `shutdown_grace` and records how each ended.
//!
//! The scheduler is one tokio task that owns all the state; runs are tasks of their own that
//! report back on a channel, so that no lock is shared between them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::jobs::alert::{self, Alert};
use crate::jobs::config::{format_duration, AlertKind, AlertSettings, JobConfig, JobsConfig};
use crate::jobs::record::{JobRecord, JobStatus};
use crate::jobs::run::{run_job, started_record, Cut, Launcher, RunEvents};
use crate::jobs::store::RecordStore;
use crate::metrics::Metrics;
use crate::profile::Config;

/// How the daemon runs.
#[derive(Clone)]
pub struct DaemonOptions {
    /// Run each selected job once, now (in an order that respects the repository rule), then
    /// return, instead of following the schedules.
    pub once: bool,
    /// Only these jobs (all when empty).
    pub only: Vec<String>,
    /// Where run records go for `/metrics`; `None` when no metrics are served (then the
    /// repositories' figures are not gathered either).
    pub metrics: Option<Metrics>,
}

/// What happened to one job while the daemon ran.
#[derive(Default)]
struct JobState {
    /// The next scheduled start (with its jitter).
    next: Option<DateTime<Utc>>,
    /// Due and waiting for its repositories, since when.
    pending: Option<DateTime<Utc>>,
    running: bool,
    last_success: Option<DateTime<Utc>>,
    /// An RPO alert went out for the current breach.
    rpo_alerted: bool,
}

/// Runs the jobs of `jobs` until SIGTERM/SIGINT (or, with `once`, until each ran once); returns
/// the records of the runs it made.
///
/// # Errors
/// A job named in `only` does not exist, the state folder cannot be written, the runtime or the
/// signal handlers cannot be set up.
pub fn run(
    config: Config,
    jobs: JobsConfig,
    launcher: Launcher,
    opts: DaemonOptions,
) -> Result<Vec<JobRecord>> {
    for n in &opts.only {
        if !jobs.jobs.contains_key(n) {
            return Err(Error::InvalidInput(format!(
                "config file {}: no job {n:?} (configured: {})",
                jobs.path.display(),
                if jobs.jobs.is_empty() {
                    "none; add a [jobs.NAME] table".to_string()
                } else {
                    jobs.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidInput(format!("cannot start the scheduler: {e}")))?;
    rt.block_on(Scheduler::new(config, jobs, launcher, opts)?.run())
}

struct Scheduler {
    config: Arc<Config>,
    jobs: Arc<JobsConfig>,
    launcher: Arc<Launcher>,
    opts: DaemonOptions,
    store: RecordStore,
    state: BTreeMap<String, JobState>,
    busy: BTreeSet<String>,
    started: DateTime<Utc>,
    done: Vec<JobRecord>,
}

impl Scheduler {
    fn new(
        config: Config,
        jobs: JobsConfig,
        launcher: Launcher,
        opts: DaemonOptions,
    ) -> Result<Self> {
        let store = RecordStore::new(&jobs.daemon.state_dir);
        let mut state: BTreeMap<String, JobState> = jobs
            .jobs
            .keys()
            .filter(|n| opts.only.is_empty() || opts.only.contains(n))
            .map(|n| (n.clone(), JobState::default()))
            .collect();
        // What earlier runs left: the last success of each job (for the RPO), and runs recorded
        // as started by a daemon that died before it could record their end.
        let mut earlier = store.list()?;
        for r in &mut earlier {
            if r.status == JobStatus::Started {
                r.status = JobStatus::Failed;
                r.error =
                    Some("the daemon stopped before the run ended; its end is unknown".into());
                store.write(r)?;
            }
            if let Some(s) = state.get_mut(&r.job) {
                if r.status == JobStatus::Success && s.last_success.is_none() {
                    s.last_success = r.finished.or(Some(r.started));
                }
            }
        }
        // The metrics start from the recorded history (oldest first), not from nothing.
        if let Some(m) = &opts.metrics {
            for r in earlier.iter().rev().filter(|r| state.contains_key(&r.job)) {
                m.observe_job(r);
            }
        }
        Ok(Self {
            config: Arc::new(config),
            jobs: Arc::new(jobs),
            launcher: Arc::new(launcher),
            opts,
            store,
            state,
            busy: BTreeSet::new(),
            started: Utc::now(),
            done: Vec::new(),
        })
    }

    fn job(&self, name: &str) -> &JobConfig {
        &self.jobs.jobs[name]
    }

    /// The next start of `job` after `now`: its schedule's next time plus a random jitter.
    fn next_start(&self, job: &JobConfig, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = job.schedule.next_after(now)?;
        let j = self.jobs.daemon.jitter;
        let jitter = if j.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::random::<u64>() % (j.as_millis() as u64 + 1))
        };
        Some(t + chrono::Duration::from_std(jitter).unwrap_or_default())
    }

    async fn run(mut self) -> Result<Vec<JobRecord>> {
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::InvalidInput(format!("cannot handle SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| Error::InvalidInput(format!("cannot handle SIGINT: {e}")))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(JobRecord, Option<Cut>)>();
        self.refresh_metrics();
        let now = Utc::now();
        let names: Vec<String> = self.state.keys().cloned().collect();
        for n in &names {
            let next = if self.opts.once {
                None
            } else {
                self.next_start(self.job(n), now)
            };
            let s = self.state.get_mut(n).expect("job state");
            if self.opts.once {
                s.pending = Some(now);
            }
            s.next = next;
            if let Some(t) = next {
                tracing::info!("job {n}: next run at {}", t.to_rfc3339());
            }
        }
        tracing::info!(
            "daemon started with {} job(s); records in {}",
            self.state.len(),
            self.store.dir().display()
        );
        let rpo_every = self
            .state
            .keys()
            .filter_map(|n| self.job(n).rpo)
            .map(|r| (r / 4).max(Duration::from_secs(1)))
            .min()
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        let mut next_rpo = tokio::time::Instant::now();
        let mut stopping = false;
        loop {
            if !stopping {
                self.start_ready(&done_tx, &shutdown_rx);
            }
            let running = self.state.values().any(|s| s.running);
            let pending = self.state.values().any(|s| s.pending.is_some());
            if (stopping || self.opts.once) && !running && (stopping || !pending) {
                break;
            }
            let wake = if stopping || self.opts.once {
                None
            } else {
                self.state.values().filter_map(|s| s.next).min()
            };
            let wake_at = match wake {
                Some(t) => {
                    let d = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    (tokio::time::Instant::now() + d).min(next_rpo)
                }
                None if stopping || self.opts.once => {
                    tokio::time::Instant::now() + Duration::from_secs(3600)
                }
                None => next_rpo,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {
                    if !stopping && !self.opts.once {
                        self.mark_due();
                        if tokio::time::Instant::now() >= next_rpo {
                            self.check_rpo(None);
                            next_rpo = tokio::time::Instant::now() + rpo_every;
                        }
                    }
                }
                Some((rec, cut)) = done_rx.recv() => self.finished(rec, cut, stopping),
                _ = term.recv(), if !stopping => {
                    tracing::warn!("SIGTERM: no new jobs; waiting for the running ones (up to {})", format_duration(self.jobs.daemon.shutdown_grace));
                    stopping = true;
                    let _ = shutdown_tx.send(true);
                }
                _ = int.recv(), if !stopping => {
                    tracing::warn!("SIGINT: no new jobs; waiting for the running ones (up to {})", format_duration(self.jobs.daemon.shutdown_grace));
                    stopping = true;
                    let _ = shutdown_tx.send(true);
                }
            }
        }
        tracing::info!("daemon stopped");
        Ok(self.done)
    }

    /// Marks the jobs whose time has come as pending, or skips them when their previous run
    /// still goes; computes their next start.
    fn mark_due(&mut self) {
        let now = Utc::now();
        let names: Vec<String> = self
            .state
            .iter()
            .filter(|(_, s)| s.next.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            let next = self.next_start(self.job(&n), now);
            let s = self.state.get_mut(&n).expect("job state");
            let due = s.next.take().unwrap_or(now);
            if s.running {
                tracing::warn!(
                    "job {n}: due at {} but its previous run is still going; skipped",
                    due.to_rfc3339()
                );
            } else if s.pending.is_some() {
                tracing::warn!(
                    "job {n}: due at {} but still waiting for a busy repository; skipped",
                    due.to_rfc3339()
                );
            } else {
                s.pending = Some(due);
            }
            s.next = next;
        }
    }

    /// Starts every pending job whose repositories are all free, oldest due first; a job that
    /// must wait keeps its repositories reserved from later ones, so that it is not starved.
    fn start_ready(
        &mut self,
        done_tx: &mpsc::UnboundedSender<(JobRecord, Option<Cut>)>,
        shutdown_rx: &watch::Receiver<bool>,
    ) {
        let mut pending: Vec<(DateTime<Utc>, String)> = self
            .state
            .iter()
            .filter_map(|(n, s)| s.pending.map(|t| (t, n.clone())))
            .collect();
        pending.sort();
        let mut reserved: BTreeSet<String> = BTreeSet::new();
        for (_, n) in pending {
            let job = self.job(&n).clone();
            let blocked = job
                .touches
                .iter()
                .any(|r| self.busy.contains(r) || reserved.contains(r));
            if blocked {
                tracing::debug!("job {n}: waiting for a busy repository");
                reserved.extend(job.touches.iter().cloned());
                continue;
            }
            self.busy.extend(job.touches.iter().cloned());
            let s = self.state.get_mut(&n).expect("job state");
            s.pending = None;
            s.running = true;
            let last_success = s.last_success;
            self.spawn(job, last_success, done_tx.clone(), shutdown_rx.clone());
        }
    }

    fn spawn(
        &self,
        job: JobConfig,
        last_success: Option<DateTime<Utc>>,
        done_tx: mpsc::UnboundedSender<(JobRecord, Option<Cut>)>,
        shutdown_rx: watch::Receiver<bool>,
    ) {
        let rec = started_record(&job);
        if let Err(e) = self.store.write(&rec) {
            tracing::error!("job {}: {e}", job.name);
        }
        if let Some(m) = &self.opts.metrics {
            m.observe_job(&rec);
        }
        tracing::info!(
            "job {} ({}): started, run {}",
            job.name,
            job.kind.as_str(),
            rec.id
        );
        let launcher = self.launcher.clone();
        let daemon = self.jobs.daemon.clone();
        let events = OverTime {
            alerts: self.jobs.alerts.clone(),
            max_duration: job.max_duration,
            last_success,
        };
        tokio::spawn(async move {
            let (rec, cut) = run_job(
                &launcher,
                &job,
                rec,
                daemon.kill_grace,
                daemon.shutdown_grace,
                shutdown_rx,
                &events,
            )
            .await;
            let _ = done_tx.send((rec, cut));
        });
    }

    /// A run ended: record it, free its repositories, alert if it failed.
    fn finished(&mut self, rec: JobRecord, cut: Option<Cut>, stopping: bool) {
        if let Err(e) = self.store.write(&rec) {
            tracing::error!("job {}: {e}", rec.job);
        }
        if let Some(m) = &self.opts.metrics {
            m.observe_job(&rec);
        }
        let secs = rec.duration_ms.unwrap_or(0) as f64 / 1000.0;
        match rec.status {
            JobStatus::Success => tracing::info!("job {}: Success in {secs:.1} s", rec.job),
            st => tracing::warn!(
                "job {}: {} in {secs:.1} s: {}",
                rec.job,
                st.as_str(),
                rec.error.as_deref().unwrap_or("")
            ),
        }
        let job = self.job(&rec.job).clone();
        for r in &job.touches {
            self.busy.remove(r);
        }
        let s = self.state.get_mut(&rec.job).expect("job state");
        s.running = false;
        if rec.status == JobStatus::Success {
            s.last_success = rec.finished;
            s.rpo_alerted = false;
        }
        let last_success = s.last_success;
        // A run cut at its max_duration had its alert when it went over; one stopped by our own
        // shutdown is no failure to page anyone for.
        if rec.status == JobStatus::Failed && cut.is_none() {
            raise(
                &self.jobs.alerts,
                AlertKind::Failed,
                alert_for(AlertKind::Failed, &rec, last_success),
            );
        }
        self.done.push(rec);
        if !stopping {
            self.refresh_metrics();
            if !self.opts.once {
                self.check_rpo(Some(&job.name));
            }
        }
    }

    /// Raises one RPO alert per breach: a job with an `rpo` and no success within it (counted
    /// from the daemon's start when it never succeeded).
    fn check_rpo(&mut self, only: Option<&str>) {
        let now = Utc::now();
        let started = self.started;
        for (n, s) in self.state.iter_mut() {
            if only.is_some_and(|o| o != n) {
                continue;
            }
            let Some(rpo) = self.jobs.jobs[n].rpo else {
                continue;
            };
            let since = s.last_success.unwrap_or(started);
            let age = (now - since).to_std().unwrap_or(Duration::ZERO);
            if age <= rpo || s.rpo_alerted {
                continue;
            }
            s.rpo_alerted = true;
            let job = &self.jobs.jobs[n];
            tracing::warn!(
                "job {n}: no success within its rpo {} (last: {})",
                format_duration(rpo),
                s.last_success
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into())
            );
            raise(
                &self.jobs.alerts,
                AlertKind::Rpo,
                Alert {
                    alert: AlertKind::Rpo.as_str(),
                    job: n.clone(),
                    repository: job.repository.clone(),
                    kind: job.kind.as_str().into(),
                    started: None,
                    duration_s: None,
                    error: Some(format!(
                        "no successful run within the rpo of {}",
                        format_duration(rpo)
                    )),
                    last_success: s.last_success,
                    host: crate::util::hostname(),
                    time: now,
                },
            );
        }
    }

    fn refresh_metrics(&self) {
        let Some(m) = self.opts.metrics.clone() else {
            return;
        };
        let c = self.config.clone();
        tokio::task::spawn_blocking(move || m.refresh_repositories(&c));
    }
}

/// Raises the max_duration alert the moment a run goes over.
struct OverTime {
    alerts: AlertSettings,
    max_duration: Option<Duration>,
    last_success: Option<DateTime<Utc>>,
}

impl RunEvents for OverTime {
    fn over_time(&self, rec: &JobRecord) {
        let mut a = alert_for(AlertKind::MaxDuration, rec, self.last_success);
        a.error = Some(format!(
            "ran longer than max_duration {}; stopping it",
            format_duration(self.max_duration.unwrap_or_default())
        ));
        a.duration_s = Some(
            (Utc::now() - rec.started)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64(),
        );
        raise(&self.alerts, AlertKind::MaxDuration, a);
    }
}

fn alert_for(kind: AlertKind, rec: &JobRecord, last_success: Option<DateTime<Utc>>) -> Alert {
    Alert {
        alert: kind.as_str(),
        job: rec.job.clone(),
        repository: rec.repository.clone(),
        kind: rec.kind.clone(),
        started: Some(rec.started),
        duration_s: rec.duration_ms.map(|d| d as f64 / 1000.0),
        error: rec.error.clone(),
        last_success,
        host: crate::util::hostname(),
        time: Utc::now(),
    }
}

/// Sends an alert off the scheduler; a failing hook is logged.
fn raise(settings: &AlertSettings, kind: AlertKind, a: Alert) {
    if !settings.on.contains(&kind) || (settings.command.is_none() && settings.webhook.is_none()) {
        return;
    }
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        tracing::info!("alert {} for job {}", a.alert, a.job);
        for f in alert::send(&settings, kind, &a) {
            tracing::error!("{f}");
        }
    });
}
