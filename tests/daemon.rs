//! `gatevault daemon` and `gatevault jobs` end to end: real processes, real time, schedules every
//! second, polling with deadlines. A small HTTP server in the test receives the alert webhooks.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
#[allow(unused_imports)]
use util::Runner;
use util::*;

/// An HTTP server on loopback that stores the JSON body of every request it gets.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the webhook server");
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        b.lock().unwrap().push(v);
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self { url, bodies }
    }

    fn alerts(&self, kind: &str) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["alert"] == kind)
            .cloned()
            .collect()
    }
}

/// A repository plus a config file naming it (`local`) and a state folder.
struct Setup {
    repo: Repo,
    config: PathBuf,
}

impl Setup {
    /// `extra` is appended to a config with `[daemon]` (state folder in the temp dir), the
    /// repository `local` and, when `hook` is given, `[alerts]` with the webhook and a command
    /// that appends each alert to `alerts.jsonl`.
    fn new(hook: Option<&Hook>, extra: &str) -> Self {
        let repo = Repo::init();
        let config = repo.root().join("config.toml");
        let root = repo.root();
        let alerts = match hook {
            Some(h) => format!(
                "[alerts]\nwebhook = {:?}\ncommand = [\"sh\", \"-c\", {:?}]\n",
                h.url,
                format!(
                    "cat >> {}; echo >> {}",
                    s(&root.join("alerts.jsonl")),
                    s(&root.join("alerts.jsonl"))
                )
            ),
            None => String::new(),
        };
        let text = format!(
            "[daemon]\nstate_dir = {:?}\nshutdown_grace = \"30s\"\nkill_grace = \"3s\"\n\n{alerts}\n[repositories.local]\nlocation = {:?}\nkey_file = {:?}\n\n{extra}",
            s(&root.join("state")),
            s(&repo.path),
            s(repo.key.as_ref().unwrap()),
        );
        std::fs::write(&config, text).unwrap();
        Self { repo, config }
    }

    fn root(&self) -> &Path {
        self.repo.root()
    }

    /// Appends `text` to the config file.
    fn append(&self, text: &str) {
        let mut all = std::fs::read_to_string(&self.config).unwrap();
        all.push_str(text);
        std::fs::write(&self.config, all).unwrap();
    }

    /// Runs `daemon --once --job JOB`: its output and how long it took.
    fn once(&self, job: &str) -> (std::process::Output, Duration) {
        let t = Instant::now();
        let out = self
            .cmd()
            .args(["daemon", "--once", "--job", job])
            .output()
            .unwrap();
        (out, t.elapsed())
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = gatevault_std(self.root());
        c.arg("--config")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(&self.repo.cache);
        c
    }

    /// Starts the daemon (with `args` after `daemon`); its output goes to files in the temp dir.
    fn daemon(&self, args: &[&str]) -> Daemon {
        let out = std::fs::File::create(self.root().join("daemon.out")).unwrap();
        let err = std::fs::File::create(self.root().join("daemon.err")).unwrap();
        self.cmd()
            .arg("-v")
            .arg("daemon")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map(Daemon)
            .expect("start the daemon")
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root().join("daemon.err")).unwrap_or_default()
    }

    /// `gatevault jobs --json`.
    fn records(&self) -> Vec<Value> {
        let out = self.cmd().args(["jobs", "--json"]).output().unwrap();
        assert_code(&out, code::OK);
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(a)) => a,
            _ => panic!("jobs --json is not an array\n{}", describe(&out)),
        }
    }

    /// Polls `records()` until `done` holds (deadline 60 s).
    fn wait_records(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let r = self.records();
            if done(&r) {
                return r;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{what}: not within 60 s; records: {r:#?}\ndaemon log:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alert_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.root().join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("alert command got JSON"))
            .collect()
    }
}

fn count(records: &[Value], job: &str, status: &str) -> usize {
    records
        .iter()
        .filter(|r| r["job"] == job && r["status"] == status)
        .count()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// A running daemon, killed if the test ends without stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGTERM to the daemon and waits (bounded) for it to exit; its exit code.
fn terminate(daemon: &mut Daemon, within: Duration) -> Option<i32> {
    let child = &mut daemon.0;
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if t.elapsed() > within {
            let _ = child.kill();
            panic!("the daemon did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it holds (deadline 60 s).
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jobs_run_on_schedule_are_recorded_and_never_overlap_on_a_repository() {
    let src_holder = tempfile::tempdir().unwrap();
    let src = src_holder.path().join("src");
    write_gateway_tree(&src, 7, 20);
    let setup = Setup::new(
        None,
        &format!(
            "[jobs.files]\ntype = \"backup\"\nrepository = \"local\"\npaths = [{:?}]\ntags = [\"Application=kong\"]\nschedule = \"* * * * * *\"\n\n[jobs.scrub]\ntype = \"check\"\nrepository = \"local\"\nread_data_subset = \"50%\"\nschedule = \"* * * * * *\"\n",
            s(&src)
        ),
    );
    let mut d = setup.daemon(&[]);
    let recs = setup.wait_records("two successful runs of each job", |r| {
        count(r, "files", "Success") >= 2 && count(r, "scrub", "Success") >= 2
    });
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));
    let recs_after = setup.records();
    assert!(recs_after.len() >= recs.len());
    assert_eq!(
        recs_after
            .iter()
            .filter(|r| r["status"] == "Started")
            .count(),
        0,
        "every run has its end recorded: {recs_after:#?}"
    );
    // Newest first.
    let starts: Vec<DateTime<Utc>> = recs_after.iter().map(|r| time(&r["started"])).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{starts:?}");
    // The backups: their snapshots are in the repository; the first added data, a later one of
    // the unchanged folder added (almost) nothing.
    let snaps = setup.repo.snapshot_ids();
    let mut backups: Vec<&Value> = recs_after
        .iter()
        .filter(|r| r["job"] == "files" && r["status"] == "Success")
        .collect();
    backups.reverse();
    assert_eq!(backups[0]["kind"], "backup");
    assert_eq!(backups[0]["repository"], "local");
    for b in &backups {
        let id = b["snapshot"]
            .as_str()
            .expect("a backup records its snapshot");
        assert!(snaps.iter().any(|s| s == id), "{id} not in {snaps:?}");
        assert!(b["duration_ms"].as_u64().is_some(), "{b}");
        assert_eq!(b["exit_code"], 0);
    }
    let first = backups[0]["bytes_added"].as_u64().expect("bytes_added");
    let later = backups[1]["bytes_added"].as_u64().expect("bytes_added");
    assert!(first > 10_000, "the first backup stored the tree: {first}");
    assert!(
        later < first / 10,
        "an unchanged folder adds little: {later} vs {first}"
    );
    assert!(backups[0]["dedup_ratio"].as_f64().is_some_and(|r| r > 0.0));
    let snap = setup.repo.snapshots();
    assert!(
        snap.iter().all(|s| s["tags"]["Application"] == "kong"),
        "the job's tags are on the snapshots: {snap:?}"
    );
    // Two jobs on one repository never ran at the same time.
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = recs_after
        .iter()
        .map(|r| {
            (
                time(&r["started"]),
                time(&r["finished"]),
                r["job"].as_str().unwrap(),
            )
        })
        .collect();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            assert!(
                a.1 <= b.0 || b.1 <= a.0,
                "runs overlap on repository local: {a:?} and {b:?}"
            );
        }
    }
    // The text listing names the jobs.
    let out = setup
        .cmd()
        .args(["jobs", "--job", "scrub", "--last", "1"])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    let text = stdout(&out);
    assert!(
        text.contains("scrub") && !text.contains("files ") && text.contains("1 run(s)"),
        "{text}"
    );
}

#[test]
fn a_failing_job_alerts_the_webhook_and_the_command_and_the_rpo_alert_fires_once() {
    let hook = Hook::start();
    let setup = Setup::new(Some(&hook), "");
    // A second repository entry for the same folder, opened with the wrong key.
    let wrong = setup.root().join("wrong-key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    setup.append(&format!(
        "[repositories.wrongkey]\nlocation = {:?}\nkey_file = {:?}\n\n[jobs.broken]\ntype = \"check\"\nrepository = \"wrongkey\"\nschedule = \"* * * * * *\"\nrpo = \"3s\"\n",
        s(&setup.repo.path),
        s(&wrong)
    ));
    let mut d = setup.daemon(&[]);
    wait_until("two failed alerts and an rpo alert", || {
        hook.alerts("failed").len() >= 2 && !hook.alerts("rpo").is_empty()
    });
    // Several more failures later, still one RPO alert for this breach.
    let failed_then = hook.alerts("failed").len();
    wait_until("three more failed alerts", || {
        hook.alerts("failed").len() >= failed_then + 3
    });
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));
    let rpo = hook.alerts("rpo");
    assert_eq!(rpo.len(), 1, "one alert per breach: {rpo:#?}");
    assert_eq!(rpo[0]["job"], "broken");
    assert!(rpo[0]["last_success"].is_null());
    let f = &hook.alerts("failed")[0];
    assert_eq!(f["job"], "broken");
    assert_eq!(f["repository"], "wrongkey");
    assert_eq!(f["kind"], "check");
    assert!(f["duration_s"].as_f64().is_some());
    assert!(f["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(time(&f["time"]) >= time(&f["started"]));
    let err = f["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(err.contains("key") || err.contains("password"), "{f}");
    // The command hook got the same alerts.
    let lines = setup.alert_lines();
    assert!(
        lines.iter().filter(|l| l["alert"] == "failed").count() >= 2,
        "{lines:#?}"
    );
    // The records say Failed, with the exit code of a wrong key.
    let recs = setup.records();
    assert!(count(&recs, "broken", "Failed") >= 2);
    assert!(recs.iter().all(|r| r["status"] != "Success"));
    assert_eq!(recs[0]["exit_code"], code::WRONG_PASSWORD);
}

#[test]
fn a_job_past_its_max_duration_is_alerted_stopped_and_recorded_failed() {
    let hook = Hook::start();
    // A gateway admin API that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let setup = Setup::new(
        Some(&hook),
        &format!(
            "[jobs.slow]\ntype = \"backup\"\nrepository = \"local\"\ngateway = \"caddy\"\nendpoint = {endpoint:?}\nschedule = \"0 0 1 1 *\"\nmax_duration = \"1s\"\n"
        ),
    );
    let (out, took) = setup.once("slow");
    assert_code(&out, code::FAILURE);
    assert!(
        took < Duration::from_secs(30),
        "stopped soon after its max_duration, not at the client's timeout: {took:?}"
    );
    let alerts = hook.alerts("max_duration");
    assert_eq!(alerts.len(), 1, "{:#?}", hook.bodies.lock().unwrap());
    assert_eq!(alerts[0]["job"], "slow");
    assert!(alerts[0]["duration_s"].as_f64().is_some_and(|d| d >= 1.0));
    assert!(
        hook.alerts("failed").is_empty(),
        "the max_duration alert is the one for this run"
    );
    let recs = setup.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "Failed");
    assert!(
        recs[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ran longer than max_duration 1s")),
        "{recs:#?}"
    );
    assert!(recs[0]["duration_ms"].as_u64().is_some_and(|d| d >= 1000));
    assert!(setup.repo.snapshot_ids().is_empty(), "nothing committed");
    drop(silent);
}

/// A job whose command does not stop on SIGTERM (it waits for a password command that ignores
/// SIGTERM) gets SIGKILL after `kill_grace` (past its `max_duration`) or `shutdown_grace` (when the
/// daemon stops); the record says so.
#[test]
fn a_job_ignoring_sigterm_is_killed_after_the_grace_period() {
    let setup = Setup::new(None, "");
    setup.append(&format!(
        "[repositories.stuck]\nlocation = {:?}\npassword_command = \"sh -c 'trap \\\"\\\" TERM; sleep 12; echo pw'\"\n\n\
         [jobs.stuck]\ntype = \"check\"\nrepository = \"stuck\"\nschedule = \"* * * * * *\"\nmax_duration = \"1s\"\n",
        s(&setup.repo.path)
    ));
    let check_killed = |rec: &Value, grace: &str| {
        assert_eq!(rec["status"], "Failed", "{rec:#}");
        assert_eq!(rec["exit_code"], 128 + 9, "{rec:#}");
        let err = rec["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(&format!(
                "still running {grace} after SIGTERM; killed (SIGKILL)"
            )),
            "{rec:#}"
        );
    };
    // Past max_duration (1 s): SIGTERM, then SIGKILL after kill_grace (3 s).
    let (out, took) = setup.once("stuck");
    assert_code(&out, code::FAILURE);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(12),
        "killed after max_duration + kill_grace, before the password command ends: {took:?}"
    );
    let recs = setup.records();
    assert_eq!(recs.len(), 1);
    check_killed(&recs[0], "3s");
    assert!(recs[0]["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("ran longer than max_duration 1s")));

    // The daemon stopping (shutdown_grace 2 s, max_duration out of the way).
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("shutdown_grace = \"30s\"", "shutdown_grace = \"2s\"")
        .replace("max_duration = \"1s\"", "max_duration = \"1h\"");
    std::fs::write(&setup.config, text).unwrap();
    let mut d = setup.daemon(&[]);
    setup.wait_records("a second run started", |r| r.len() == 2);
    let t = Instant::now();
    assert_eq!(terminate(&mut d, Duration::from_secs(20)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let recs = setup.records();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    check_killed(&recs[0], "2s");
    assert!(
        recs[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("stopped by the daemon's shutdown (SIGTERM)")),
        "{recs:#?}"
    );
    assert!(
        setup.daemon_log().contains("killing it"),
        "{}",
        setup.daemon_log()
    );
}

#[test]
fn sigterm_during_a_backup_stops_the_daemon_and_check_passes() {
    let src_holder = tempfile::tempdir().unwrap();
    let src = src_holder.path().join("big");
    std::fs::create_dir_all(&src).unwrap();
    // Enough incompressible data that the backup takes a while on a small machine.
    let mut rng = Rng::new(11);
    for i in 0..24 {
        std::fs::write(src.join(format!("part-{i}.bin")), rng.bytes(8 << 20)).unwrap();
    }
    let setup = Setup::new(
        None,
        &format!(
            "[jobs.big]\ntype = \"backup\"\nrepository = \"local\"\npaths = [{:?}]\nschedule = \"* * * * * *\"\n",
            s(&src)
        ),
    );
    let mut d = setup.daemon(&[]);
    // Wait for the backup to hold its lock in the repository, then stop the daemon.
    let locks = setup.repo.path.join("locks");
    wait_until("the backup took its lock", || {
        std::fs::read_dir(&locks).is_ok_and(|mut r| r.next().is_some())
    });
    let code = terminate(&mut d, Duration::from_secs(40));
    assert_eq!(code, Some(0), "{}", setup.daemon_log());
    let recs = setup.records();
    assert!(!recs.is_empty());
    assert!(
        recs.iter().all(|r| r["status"] != "Started"),
        "the run's end is recorded: {recs:#?}"
    );
    eprintln!(
        "run ended {} ({})",
        recs[0]["status"],
        recs[0]["error"].as_str().unwrap_or("")
    );
    // Whatever the backup had written, the repository is consistent.
    setup.repo.run_ok(["check", "--read-data"]);
}

#[test]
fn config_errors_name_the_job_and_the_key() {
    let setup = Setup::new(None, "");
    let base = std::fs::read_to_string(&setup.config).unwrap();
    let cases = [
        (
            "[jobs.nightly]\ntype = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"0 99 * * *\"\n",
            "jobs.nightly.schedule",
        ),
        (
            "[jobs.nightly]\ntype = \"backup\"\nrepository = \"elsewhere\"\npaths = [\"/x\"]\nschedule = \"0 3 * * *\"\n",
            "jobs.nightly.repository",
        ),
        (
            "[jobs.nightly]\ntype = \"backup\"\nrepository = \"local\"\npaths = [\"/x\"]\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Atlantis\"\n",
            "jobs.nightly.timezone",
        ),
        (
            "[jobs.nightly]\ntype = \"check\"\nrepository = \"local\"\nschedule = \"0 3 * * *\"\nkeep_daily = 7\n",
            "jobs.nightly.keep_daily",
        ),
    ];
    for (job, want) in cases {
        std::fs::write(&setup.config, format!("{base}{job}")).unwrap();
        let out = setup.cmd().args(["daemon", "--once"]).output().unwrap();
        assert_code(&out, code::FAILURE);
        let err = stderr(&out);
        assert!(
            err.contains(want) && err.contains(s(&setup.config)),
            "want {want}: {err}"
        );
    }
    // The same file still works for commands that do not run jobs.
    let out = setup
        .cmd()
        .args(["-r", "config:local", "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    // An unknown job for --job.
    std::fs::write(
        &setup.config,
        format!(
            "{base}[jobs.a]\ntype = \"check\"\nrepository = \"local\"\nschedule = \"0 3 * * *\"\n"
        ),
    )
    .unwrap();
    let (out, _) = setup.once("b");
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("no job \"b\""), "{}", stderr(&out));
}

/// One sample of the Prometheus text format: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the Prometheus text format.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => {
                let l = l.trim_end_matches('}');
                let labels = l
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').expect("label k=v");
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (head.to_string(), Vec::new()),
        };
        out.push((name, labels, value));
    }
    out
}

#[test]
fn the_test_parser_reads_prometheus_text() {
    let s = parse_metrics(
        "# HELP x y\n# TYPE gatevault_job_runs_total counter\ngatevault_job_runs_total{job_name=\"a\",kind=\"backup\",status=\"Success\"} 3\nup 1\n",
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, "gatevault_job_runs_total");
    assert!(s[0].1.contains(&("status".into(), "Success".into())));
    assert!(s[0].1.contains(&("job_name".into(), "a".into())));
    assert_eq!((s[0].2, s[1].2), (3.0, 1.0));
}

#[test]
fn daemon_metrics_are_served_over_http() {
    let src_holder = tempfile::tempdir().unwrap();
    let src = src_holder.path().join("src");
    write_gateway_tree(&src, 3, 10);
    let setup = Setup::new(
        None,
        &format!(
            "[jobs.files]\ntype = \"backup\"\nrepository = \"local\"\npaths = [{:?}]\nschedule = \"* * * * * *\"\n",
            s(&src)
        ),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut d = setup.daemon(&["--metrics-addr", &addr]);
    setup.wait_records("a successful run", |r| count(r, "files", "Success") >= 1);
    let base = format!("http://{addr}");
    wait_until("the metrics show the successful run", || {
        let Ok((200, body)) = http(&base, "GET", "/metrics", "") else {
            return false;
        };
        parse_metrics(&body).iter().any(|(n, l, v)| {
            n == "gatevault_job_last_status"
                && l.contains(&("job_name".into(), "files".into()))
                && l.contains(&("status".into(), "Success".into()))
                && *v == 1.0
        })
    });
    let (_, body) = http(&base, "GET", "/metrics", "").unwrap();
    let samples = parse_metrics(&body);
    let get = |name: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(&("job_name".into(), "files".into())))
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name} for job files in\n{body}"))
    };
    let now = Utc::now().timestamp() as f64;
    let last_success = get("gatevault_job_last_success_timestamp_seconds");
    assert!(last_success > now - 120.0 && last_success <= now + 1.0);
    assert!(get("gatevault_job_last_start_timestamp_seconds") >= last_success - 120.0);
    assert!(get("gatevault_job_last_duration_seconds") >= 0.0);
    assert!(get("gatevault_job_last_bytes_added") >= 0.0);
    assert!(get("gatevault_job_runs_total") >= 1.0);
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));

    // A restarted daemon serves the recorded history before any new run: the job is now yearly.
    let runs = count(&setup.records(), "files", "Success") as f64;
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("\"* * * * * *\"", "\"0 0 1 1 *\""),
    )
    .unwrap();
    let mut d = setup.daemon(&["--metrics-addr", &addr]);
    wait_until("the restarted daemon serves metrics", || {
        http(&base, "GET", "/metrics", "").is_ok()
    });
    let (_, body) = http(&base, "GET", "/metrics", "").unwrap();
    let again = parse_metrics(&body);
    let value = |name: &str, status: &str| {
        again
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.contains(&("job_name".into(), "files".into()))
                    && (status.is_empty() || l.contains(&("status".into(), status.into())))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name} for job files after a restart\n{body}"))
    };
    assert_eq!(value("gatevault_job_last_status", "Success"), 1.0);
    assert_eq!(value("gatevault_job_runs_total", "Success"), runs);
    assert!(value("gatevault_job_last_success_timestamp_seconds", "") >= last_success);
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));
}

#[test]
fn systemd_units_run_each_job_once_on_its_calendar() {
    let setup = Setup::new(
        None,
        "[jobs.nightly]\ntype = \"check\"\nrepository = \"local\"\nschedule = \"30 2 * * 1-5\"\ntimezone = \"Europe/Berlin\"\nmax_duration = \"20m\"\n\n[jobs.both]\ntype = \"check\"\nrepository = \"local\"\nschedule = \"0 0 1 * *\"\n",
    );
    let dir = setup.root().join("units");
    let out = setup
        .cmd()
        .args(["systemd", "--job", "nightly", "--output", s(&dir)])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    let timer = std::fs::read_to_string(dir.join("gatevault-nightly.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 02:30:00 Europe/Berlin"),
        "{timer}"
    );
    let service = std::fs::read_to_string(dir.join("gatevault-nightly.service")).unwrap();
    assert!(service.contains("TimeoutStartSec=1200s"), "{service}");
    assert!(
        service.contains(&format!(
            "\"--config\" \"{}\" \"daemon\" \"--once\" \"--job\" \"nightly\"",
            s(&setup.config)
        )),
        "{service}"
    );
    assert!(
        !dir.join("gatevault-both.timer").exists(),
        "only the job asked for"
    );

    // The command the service runs does run the job once and records it.
    let once = setup
        .cmd()
        .args(["--json", "daemon", "--once", "--job", "nightly"])
        .output()
        .unwrap();
    assert_code(&once, code::OK);
    let jobs: Value = serde_json::from_slice(
        &setup
            .cmd()
            .args(["--json", "jobs"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(jobs[0]["job"], "nightly", "{jobs}");
    assert_eq!(jobs[0]["status"], "Success", "{jobs}");

    // A schedule systemd cannot express with the same meaning is refused, naming the job.
    std::fs::write(
        &setup.config,
        std::fs::read_to_string(&setup.config)
            .unwrap()
            .replace("0 0 1 * *", "0 0 1 * 1"),
    )
    .unwrap();
    let out = setup.cmd().arg("systemd").output().unwrap();
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("\"both\"") && stderr(&out).contains("both restricted"),
        "{}",
        describe(&out)
    );
}

#[test]
fn forget_copy_and_drill_jobs_run_as_their_commands() {
    // The drill restores an nginx snapshot into a temporary folder and checks it with `nginx -t`.
    if !have("nginx") {
        return;
    }
    let offsite = Repo::init();
    let src = offsite.root().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let setup = Setup::new(
        None,
        &format!(
            "[repositories.offsite]\nlocation = {:?}\nkey_file = {:?}\n\n\
             [jobs.a-backup]\ntype = \"backup\"\nrepository = \"local\"\ngateway = \"nginx\"\nfile = {:?}\nschedule = \"@daily\"\n\n\
             [jobs.b-forget]\ntype = \"forget\"\nrepository = \"local\"\nkeep_last = 1\nprune = true\nschedule = \"@daily\"\n\n\
             [jobs.c-copy]\ntype = \"copy\"\nrepository = \"local\"\nto = [\"offsite\"]\nschedule = \"@daily\"\n\n\
             [jobs.d-drill]\ntype = \"drill\"\nrepository = \"local\"\nschedule = \"@daily\"\n",
            s(&offsite.path),
            s(offsite.key.as_ref().unwrap()),
            s(&src.join("nginx.conf"))
        ),
    );
    let once = |job: &str| assert_code(&setup.once(job).0, code::OK);
    for v in 0..2 {
        let conf = format!(
            "events {{}}\nhttp {{\n  server {{ listen 127.0.0.1:{}; location / {{ return 200 v{v}; }} }}\n}}\n",
            free_port()
        );
        std::fs::write(src.join("nginx.conf"), conf).unwrap();
        once("a-backup");
    }
    assert_eq!(setup.repo.snapshot_ids().len(), 2);
    once("b-forget");
    let kept = setup.repo.snapshot_ids();
    assert_eq!(kept.len(), 1, "keep_last = 1");
    once("c-copy");
    assert_eq!(offsite.snapshot_ids().len(), 1, "copied to offsite");
    once("c-copy");
    assert_eq!(
        offsite.snapshot_ids().len(),
        1,
        "a second copy adds nothing"
    );
    once("d-drill");
    let drills: Value = setup.repo.run_json(["drills"]);
    assert_eq!(drills.as_array().map(Vec::len), Some(1), "{drills}");
    let jobs: Value = serde_json::from_slice(
        &setup
            .cmd()
            .args(["--json", "jobs"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let runs = jobs.as_array().unwrap();
    assert_eq!(runs.len(), 6, "{jobs}");
    assert!(runs.iter().all(|r| r["status"] == "Success"), "{jobs}");
    assert!(runs
        .iter()
        .any(|r| r["job"] == "c-copy" && r["bytes_added"].as_u64().unwrap_or(0) > 0));
}

#[test]
fn a_job_due_while_its_previous_run_is_going_is_skipped() {
    // Every second, but each run hangs on a silent gateway until its max_duration (2 s) stops it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let setup = Setup::new(
        None,
        &format!(
            "[jobs.slow]\ntype = \"backup\"\nrepository = \"local\"\ngateway = \"caddy\"\nendpoint = {endpoint:?}\nschedule = \"* * * * * *\"\nmax_duration = \"2s\"\n"
        ),
    );
    let mut d = setup.daemon(&[]);
    let recs = setup.wait_records("two stopped runs", |r| count(r, "slow", "Failed") >= 2);
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));
    let log = std::fs::read_to_string(setup.root().join("daemon.err")).unwrap();
    assert!(
        log.contains("previous run is still going; skipped"),
        "{log}"
    );
    // Runs of the job never overlap, although it came due every second.
    let done: Vec<(DateTime<Utc>, DateTime<Utc>)> = recs
        .iter()
        .filter(|r| r["status"] == "Failed")
        .map(|r| (time(&r["started"]), time(&r["finished"])))
        .collect();
    for (i, a) in done.iter().enumerate() {
        for b in &done[i + 1..] {
            assert!(a.1 <= b.0 || b.1 <= a.0, "runs overlap: {a:?} and {b:?}");
        }
    }
    drop(silent);
}

#[test]
fn starts_are_jittered_within_the_bound() {
    let setup = Setup::new(
        None,
        "[jobs.tick]\ntype = \"check\"\nrepository = \"local\"\nschedule = \"*/4 * * * * *\"\n",
    );
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace(
            "shutdown_grace = \"30s\"",
            "shutdown_grace = \"30s\"\njitter = \"2s\"",
        ),
    )
    .unwrap();
    let mut d = setup.daemon(&[]);
    let recs = setup.wait_records("three runs", |r| count(r, "tick", "Success") >= 3);
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));
    // Each start lies after its scheduled time (a multiple of 4 s) by at most the jitter (plus the
    // time to start a process), and the delays are not all zero.
    let delays: Vec<f64> = recs
        .iter()
        .filter(|r| r["status"] == "Success")
        .map(|r| {
            let t = time(&r["started"]);
            (t.timestamp() % 4) as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0
        })
        .collect();
    assert!(delays.iter().all(|d| *d < 2.5), "{delays:?}");
    assert!(
        delays.iter().any(|d| *d > 0.05),
        "no jitter at all: {delays:?}"
    );
}

/// A real Prometheus scrapes the daemon with the example rules of `docs/prometheus-alerts.yml`
/// loaded: the series arrive under their own names and labels next to Prometheus's `job` label, the
/// failed-job rule fires for the failing job only, and the daemon-down rule goes pending once the
/// daemon stops.
#[test]
fn prometheus_scrapes_the_daemon_and_the_example_rules_fire() {
    if !have("prometheus") {
        return;
    }
    let src_holder = tempfile::tempdir().unwrap();
    let src = src_holder.path().join("src");
    write_gateway_tree(&src, 3, 10);
    let setup = Setup::new(
        None,
        &format!(
            "[jobs.files]\ntype = \"backup\"\nrepository = \"local\"\npaths = [{:?}]\nschedule = \"* * * * * *\"\n",
            s(&src)
        ),
    );
    let wrong = setup.root().join("wrong-key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    setup.append(&format!(
        "[repositories.wrongkey]\nlocation = {:?}\nkey_file = {:?}\n\n[jobs.broken]\ntype = \"check\"\nrepository = \"wrongkey\"\nschedule = \"*/2 * * * * *\"\n",
        s(&setup.repo.path),
        s(&wrong)
    ));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = setup.daemon(&["--metrics-addr", &addr]);

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus-alerts.yml");
    let prom_dir = setup.root().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{:?}]\nscrape_configs:\n  - job_name: gatevault\n    static_configs: [{{targets: [{addr:?}]}}]\n",
            s(&rules)
        ),
    )
    .unwrap();
    let port = free_port();
    let mut cmd = std::process::Command::new(find_tool("prometheus").unwrap());
    cmd.arg(format!("--config.file={}", s(&prom_config)))
        .arg(format!("--storage.tsdb.path={}", s(&prom_dir.join("data"))))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let prom = Service::start(cmd, port);
    wait_until("Prometheus is ready", || {
        matches!(http(&prom.url(), "GET", "/-/ready", ""), Ok((200, _)))
    });
    let api = |path: &str| -> Value {
        match http(&prom.url(), "GET", path, "") {
            Ok((200, body)) => serde_json::from_str(&body).expect("Prometheus answers JSON"),
            other => panic!("GET {path}: {other:?}"),
        }
    };
    let alerts = |name: &str| -> Vec<Value> {
        api("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    };
    wait_until("GatevaultJobFailed fires for the failing job", || {
        alerts("GatevaultJobFailed")
            .iter()
            .any(|a| a["state"] == "firing")
    });
    let failed = alerts("GatevaultJobFailed");
    assert!(
        failed.iter().all(|a| a["labels"]["job_name"] == "broken"
            && a["labels"]["job"] == "gatevault"
            && a["labels"]["repository"] == "wrongkey"
            && a["labels"]["status"] == "Failed"),
        "only the failing job, with both job labels: {failed:#?}"
    );
    assert!(failed[0]["annotations"]["summary"]
        .as_str()
        .is_some_and(|t| t.contains("broken")));
    // The successful job's series are there too, under gatevault's label names.
    wait_until("the backup job's runs are scraped", || {
        api("/api/v1/query?query=gatevault_job_runs_total")["data"]["result"]
            .as_array()
            .is_some_and(|r| {
                r.iter().any(|s| {
                    s["metric"]["job_name"] == "files"
                        && s["metric"]["status"] == "Success"
                        && s["metric"]["job"] == "gatevault"
                })
            })
    });
    assert!(alerts("GatevaultDaemonDown").is_empty());

    // The daemon stops: `up` falls to 0 and the daemon-down rule goes pending (it fires after 5m).
    assert_eq!(terminate(&mut d, Duration::from_secs(40)), Some(0));
    wait_until("GatevaultDaemonDown is pending", || {
        alerts("GatevaultDaemonDown")
            .iter()
            .any(|a| a["state"] == "pending")
    });
    drop(prom);
}
