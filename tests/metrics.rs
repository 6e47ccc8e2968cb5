//! Prometheus metrics end to end: the exposition parsed back (families, labels, values), the
//! `/metrics` server over real HTTP, the figures of a real repository next to an unreachable one,
//! and `--pushgateway` against a small recording HTTP server (a real Pushgateway is not needed: it
//! only stores what is PUT).

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gatevault::jobs::record::{JobRecord, JobStatus};
use gatevault::metrics::{serve, Metrics};
use gatevault::profile::Config;
use util::*;

// ------------------------------------------------------------------------- a small format parser

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A parsed exposition: family types and every sample.
#[derive(Debug, Default)]
struct Parsed {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Parsed {
    /// The value of the one sample named `name` whose labels include `want`.
    #[track_caller]
    fn get(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].2
    }

    /// Whether some sample named `name` has labels including `want`.
    fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|e| panic!("value {v:?}: {e}")),
    }
}

/// Parses the text format 0.0.4 strictly: `# HELP` and `# TYPE` once per family and before its
/// samples, the samples of a family together, label values with `\\`, `\"` and `\n` escapes, no
/// duplicate series.
fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut helped = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(helped.insert(name.clone()), "two HELP lines for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(matches!(kind, "gauge" | "counter"), "type {kind} of {name}");
            assert!(
                p.types.insert(name.into(), kind.into()).is_none(),
                "two TYPE lines for {name}"
            );
            if let Some(c) = current.replace(name.to_string()) {
                finished.insert(c);
            }
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "line {line:?}");
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample of {name} outside its family (or before its TYPE)"
        );
        assert!(!finished.contains(name), "family {name} split");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let c: Vec<char> = r.chars().collect();
            let mut i = 0;
            loop {
                if c[i] == '}' {
                    rest = &r[r.char_indices().nth(i + 1).map_or(r.len(), |(b, _)| b)..];
                    break;
                }
                let ks = i;
                while c[i] != '=' {
                    i += 1;
                }
                let key: String = c[ks..i].iter().collect();
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "label name {key:?} in {line}"
                );
                i += 1;
                assert_eq!(c[i], '"', "label value opens with a quote: {line}");
                i += 1;
                let mut value = String::new();
                loop {
                    match c[i] {
                        '\\' => {
                            i += 1;
                            match c[i] {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                e => panic!("bad escape \\{e} in {line}"),
                            }
                        }
                        '"' => break,
                        ch => value.push(ch),
                    }
                    i += 1;
                }
                i += 1;
                assert!(
                    labels.insert(key.clone(), value).is_none(),
                    "label {key} twice"
                );
                match c[i] {
                    ',' => i += 1,
                    '}' => {}
                    other => panic!("after a label value: {other:?} in {line}"),
                }
            }
        }
        let value = rest.strip_prefix(' ').expect("space before the value");
        assert!(
            seen.insert((name.to_string(), labels.clone())),
            "duplicate series {name} {labels:?}"
        );
        p.samples
            .push((name.to_string(), labels, parse_value(value)));
    }
    for n in p.types.keys() {
        assert!(helped.contains(n), "{n} has no HELP");
    }
    p
}

#[test]
fn the_parser_refuses_what_the_format_forbids() {
    let ok = "# HELP a x\n# TYPE a gauge\na{l=\"q\\\"\\\\\\n\"} 1\n";
    assert_eq!(parse(ok).samples[0].1["l"], "q\"\\\n");
    for bad in [
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na{k=\"v\"} 1\n",
        "a 1\n",
        "# HELP a x\n# TYPE a gauge\na{l=\"\\x\"} 1\n",
    ] {
        let r = std::panic::catch_unwind(|| parse(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

// ------------------------------------------------------------------------------------ the model

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn job(id: &str, name: &str, status: JobStatus) -> JobRecord {
    let ended = status != JobStatus::Started;
    JobRecord {
        id: id.into(),
        job: name.into(),
        kind: "backup".into(),
        repository: "local \"disk\"\nA\\B".into(),
        status,
        started: t("2025-06-01T12:00:00Z"),
        finished: ended.then(|| t("2025-06-01T12:01:30Z")),
        duration_ms: ended.then_some(90_000),
        bytes_added: ended.then_some(4096),
        dedup_ratio: ended.then_some(8.0),
        snapshot: None,
        exit_code: ended.then_some(if status == JobStatus::Failed { 1 } else { 0 }),
        error: None,
    }
}

#[test]
fn observed_jobs_give_the_documented_families_labels_and_values() {
    let m = Metrics::new();
    m.observe_job(&job("1", "nightly", JobStatus::Started));
    m.observe_job(&job("1", "nightly", JobStatus::Success));
    m.observe_job(&job("2", "nightly", JobStatus::Started));
    m.observe_job(&job("2", "nightly", JobStatus::Failed));
    m.observe_job(&job("3", "hourly", JobStatus::Started));
    let p = parse(&m.render());
    let repo = "local \"disk\"\nA\\B";
    let n = [
        ("job_name", "nightly"),
        ("kind", "backup"),
        ("repository", repo),
    ];
    let h = [
        ("job_name", "hourly"),
        ("kind", "backup"),
        ("repository", repo),
    ];
    let with = |l: &[(&'static str, &'static str)], s: &'static str| {
        let mut v = l.to_vec();
        v.push(("status", s));
        v
    };
    assert_eq!(p.get("gatevault_job_running", &n), 0.0);
    assert_eq!(p.get("gatevault_job_running", &h), 1.0);
    assert_eq!(p.get("gatevault_job_last_status", &with(&n, "Failed")), 1.0);
    for s in ["Started", "Success", "Partial"] {
        assert_eq!(p.get("gatevault_job_last_status", &with(&n, s)), 0.0, "{s}");
    }
    assert_eq!(
        p.get("gatevault_job_last_status", &with(&h, "Started")),
        1.0
    );
    assert_eq!(
        p.get("gatevault_job_last_start_timestamp_seconds", &n),
        t("2025-06-01T12:00:00Z").timestamp() as f64
    );
    assert_eq!(
        p.get("gatevault_job_last_success_timestamp_seconds", &n),
        t("2025-06-01T12:01:30Z").timestamp() as f64
    );
    assert_eq!(
        p.get("gatevault_job_last_success_timestamp_seconds", &h),
        0.0
    );
    assert_eq!(p.get("gatevault_job_last_duration_seconds", &n), 90.0);
    assert_eq!(p.get("gatevault_job_last_bytes_added", &n), 4096.0);
    assert_eq!(p.get("gatevault_job_last_dedup_ratio", &n), 8.0);
    assert_eq!(p.get("gatevault_job_runs_total", &with(&n, "Success")), 1.0);
    assert_eq!(p.get("gatevault_job_runs_total", &with(&n, "Failed")), 1.0);
    assert_eq!(p.get("gatevault_job_runs_total", &with(&h, "Success")), 0.0);
    assert!(!p.has("gatevault_job_last_duration_seconds", &h));
    assert_eq!(p.types["gatevault_job_runs_total"], "counter");
    assert_eq!(p.types["gatevault_job_running"], "gauge");
    assert_eq!(
        p.get(
            "gatevault_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

// ------------------------------------------------------------------------------------ /metrics

/// A GET over a fresh connection; returns the status line, the headers and the body.
fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

#[test]
fn serve_answers_over_http_and_stops_when_dropped() {
    let m = Metrics::new();
    let server = serve("127.0.0.1:0".parse().unwrap(), m.clone()).expect("serve");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    // Observed after the server started: every scrape renders what is known now.
    m.observe_job(&job("1", "nightly", JobStatus::Started));
    let (status, headers, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let p = parse(&body);
    assert_eq!(
        p.get("gatevault_job_running", &[("job_name", "nightly")]),
        1.0,
        "{body}"
    );
    // Several scrapes at once are all answered.
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(addr, "GET", "/metrics").0))
        .collect();
    for th in threads {
        assert_eq!(th.join().unwrap(), "HTTP/1.1 200 OK");
    }
    let (status, _, body) = get(addr, "GET", "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("/metrics"), "{body}");
    assert!(get(addr, "GET", "/other").0.starts_with("HTTP/1.1 404"));
    assert!(get(addr, "DELETE", "/metrics")
        .0
        .starts_with("HTTP/1.1 405"));

    // The address in use: the error names it.
    let err = match serve(addr, Metrics::new()) {
        Ok(_) => panic!("bound {addr} twice"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()), "{err}");

    drop(server);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the server still listens after being dropped"
    );
}

// ------------------------------------------------------------------------------------ repositories

/// Sum of the sizes of every file below `dir`.
fn folder_size(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            folder_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Adds a restore drill record (an nginx snapshot drilled into a temporary folder) when nginx is
/// installed; returns whether it did.
fn add_drill(r: &Repo) -> bool {
    if !have("nginx") {
        return false;
    }
    let ng = r.root().join("nginx");
    write(
        &ng.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{\n  server {{ listen 127.0.0.1:{}; location / {{ return 200 ok; }} }}\n}}\n",
            free_port()
        ),
    );
    let main = ng.join("nginx.conf");
    r.run_json(["backup", "--gateway", "nginx", "--file", s(&main)]);
    let reports = r.root().join("reports");
    let d = r.run_json([
        "drill",
        "--path",
        &format!("nginx:file:{}", main.display()),
        "--report-dir",
        s(&reports),
    ]);
    assert_eq!(d["status"], "Success", "{d}");
    true
}

#[test]
fn refresh_reads_a_real_repository_and_reports_an_unreachable_one() {
    let r = Repo::init();
    let src = r.root().join("src");
    write(&src.join("a.json"), "{\"routes\": 1}\n".repeat(100));
    write(&src.join("b.json"), "{\"services\": 2}\n".repeat(50));
    let b1 = r.backup(&[&src], &[]);
    write(&src.join("c.json"), "{\"plugins\": 3}\n");
    let b2 = r.backup(&[&src], &[]);
    r.run_ok(["check"]);
    let drilled = add_drill(&r);
    let logical: u64 = [&b1, &b2]
        .iter()
        .map(|b| b["total_bytes_processed"].as_u64().unwrap())
        .sum();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    write(
        &config,
        format!(
            "[repositories.local]\nlocation = {:?}\nkey_file = {:?}\nmedium = \"disk\"\nsite = \"onsite\"\n\n\
             [repositories.gone]\nlocation = {:?}\nkey_file = {:?}\nmedium = \"object-store\"\nsite = \"offsite\"\n\n\
             [profiles.prod]\nprimary = \"local\"\ncopies = [\"gone\"]\n",
            s(&r.path),
            s(r.key.as_ref().unwrap()),
            s(&dir.path().join("no-such-repository")),
            s(r.key.as_ref().unwrap()),
        ),
    );
    let config = Config::load(&config).expect("config");
    let m = Metrics::new();
    let before = Utc::now().timestamp() as f64;
    m.refresh_repositories(&config);
    let p = parse(&m.render());
    let local = [
        ("repository", "local"),
        ("medium", "disk"),
        ("site", "onsite"),
    ];
    let gone = [
        ("repository", "gone"),
        ("medium", "object-store"),
        ("site", "offsite"),
    ];
    assert_eq!(p.get("gatevault_repository_up", &local), 1.0);
    assert_eq!(p.get("gatevault_repository_up", &gone), 0.0);
    for (name, labels) in [("local", &local), ("gone", &gone)] {
        let at = p.get("gatevault_refresh_timestamp_seconds", labels);
        assert!(at >= before - 1.0, "{name}: refreshed at {at}");
    }
    // Nothing but `up` and the refresh time for the unreachable one.
    assert!(!p.has("gatevault_repository_snapshots", &[("repository", "gone")]));
    assert!(!p.has("gatevault_check_last_status", &[("repository", "gone")]));

    let snapshots = 2 + drilled as u64;
    assert_eq!(
        p.get("gatevault_repository_snapshots", &local),
        snapshots as f64
    );
    let files_logical = logical as f64;
    if drilled {
        assert!(p.get("gatevault_repository_logical_bytes", &local) > files_logical);
    } else {
        assert_eq!(
            p.get("gatevault_repository_logical_bytes", &local),
            files_logical
        );
    }
    assert_eq!(
        p.get("gatevault_repository_size_bytes", &local),
        folder_size(&r.path) as f64,
        "every object of the repository, and nothing else"
    );
    assert_eq!(
        p.get("gatevault_repository_packs", &local),
        count_files(&r.path.join("data")) as f64
    );
    let first = &r.snapshots()[0];
    let paths: Vec<&str> = first["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let src_label = format!(
        "{}:{}",
        first["hostname"].as_str().unwrap(),
        paths.join(",")
    );
    assert_eq!(
        p.get(
            "gatevault_repository_source_snapshots",
            &[("repository", "local"), ("source", &src_label)]
        ),
        2.0,
        "{:?}",
        p.samples
            .iter()
            .filter(|x| x.0 == "gatevault_repository_source_snapshots")
            .collect::<Vec<_>>()
    );
    let newest = r
        .snapshots()
        .iter()
        .map(|s| t(s["time"].as_str().unwrap()).timestamp_millis())
        .max()
        .unwrap() as f64
        / 1000.0;
    assert_eq!(
        p.get(
            "gatevault_repository_last_snapshot_timestamp_seconds",
            &local
        ),
        newest
    );
    // The check just run succeeded, a moment ago.
    let mut ok = local.to_vec();
    ok.push(("status", "Success"));
    assert_eq!(p.get("gatevault_check_last_status", &ok), 1.0);
    let age = p.get("gatevault_check_age_seconds", &local);
    assert!((0.0..600.0).contains(&age), "check age {age}");
    assert!(p.get("gatevault_check_last_timestamp_seconds", &local) >= before - 600.0);
    if drilled {
        assert_eq!(p.get("gatevault_drill_last_status", &ok), 1.0);
        assert!(p.get("gatevault_drill_age_seconds", &local) >= 0.0);
    } else {
        eprintln!("no drill record: nginx is not installed");
    }
    // One copy on one medium, none offsite: the profile breaks the rule.
    let prod = [("profile", "prod")];
    assert_eq!(p.get("gatevault_321_compliant", &prod), 0.0);
    assert_eq!(p.get("gatevault_321_copies", &prod), 1.0);
    assert_eq!(p.get("gatevault_321_media", &prod), 1.0);
    assert_eq!(p.get("gatevault_321_offsite", &prod), 0.0);

    // A new snapshot shows at the next refresh.
    r.backup(&[&src], &[]);
    m.refresh_repositories(&config);
    let p = parse(&m.render());
    assert_eq!(
        p.get("gatevault_repository_snapshots", &local),
        (snapshots + 1) as f64
    );
}

/// Files below `dir`.
fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

// ------------------------------------------------------------------------------------ Pushgateway

/// What the recording server received: method, path, body.
type Requests = Arc<Mutex<Vec<(String, String, String)>>>;

/// A small HTTP server on loopback that records every request and answers `status`.
fn recording_server(status: &'static str) -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Requests = Arc::default();
    let store = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break buf.len(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + len {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let mut first = head.lines().next().unwrap_or_default().split(' ');
            let method = first.next().unwrap_or_default().to_string();
            let path = first.next().unwrap_or_default().to_string();
            let body = String::from_utf8_lossy(&buf[head_end.min(buf.len())..]).to_string();
            store.lock().unwrap().push((method, path, body));
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

#[test]
fn a_backup_pushes_its_run_and_dedup_ratio() {
    let r = Repo::init();
    let src = r.root().join("src");
    write(&src.join("a.json"), "{\"a\": 1}\n".repeat(300));
    let (url, got) = recording_server("200 OK");
    let started = Utc::now().timestamp() as f64;
    let b = r.backup(&[&src], &["--pushgateway", &url]);
    let reqs = got.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let (method, path, body) = &reqs[0];
    assert_eq!(method, "PUT");
    assert!(
        path.starts_with("/metrics/job/gatevault/instance") && path.ends_with("/command/backup"),
        "{path}"
    );
    let p = parse(body);
    let l = [("command", "backup")];
    assert_eq!(
        p.get(
            "gatevault_command_last_status",
            &[("command", "backup"), ("status", "Success")]
        ),
        1.0
    );
    assert_eq!(p.get("gatevault_command_last_exit_code", &l), 0.0);
    assert_eq!(
        p.get("gatevault_command_last_bytes_added", &l),
        b["data_added_packed"].as_u64().unwrap() as f64
    );
    let ratio = b["total_bytes_processed"].as_f64().unwrap() / b["data_added"].as_f64().unwrap();
    assert_eq!(p.get("gatevault_command_last_dedup_ratio", &l), ratio);
    let start = p.get("gatevault_command_last_start_timestamp_seconds", &l);
    let end = p.get("gatevault_command_last_end_timestamp_seconds", &l);
    assert!(start >= started - 1.0 && end >= start, "{start} {end}");
    assert!(p.get("gatevault_command_last_duration_seconds", &l) >= 0.0);
    assert_eq!(
        p.get("gatevault_command_last_status", &[("status", "Failed")]),
        0.0
    );

    // The same data again: (almost) nothing is added, the ratio grows (+Inf when nothing at all).
    let b = r.backup(&[&src], &["--pushgateway", &url]);
    let reqs = got.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    let p = parse(&reqs[1].2);
    let want = match b["data_added"].as_u64().unwrap() {
        0 => f64::INFINITY,
        n => b["total_bytes_processed"].as_f64().unwrap() / n as f64,
    };
    assert_eq!(p.get("gatevault_command_last_dedup_ratio", &l), want);
    assert!(want > ratio, "{want} {ratio}");

    // A command that is not a job pushes nothing; the environment variable works like the option.
    r.cmd()
        .env("GATEVAULT_PUSHGATEWAY", &url)
        .args(["snapshots", "-q"])
        .assert()
        .success();
    assert_eq!(got.lock().unwrap().len(), 2);
    r.cmd()
        .env("GATEVAULT_PUSHGATEWAY", &url)
        .args(["check", "-q"])
        .assert()
        .success();
    let reqs = got.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[2].1.ends_with("/command/check"), "{}", reqs[2].1);
    assert!(!reqs[2].2.contains("gatevault_command_last_bytes_added"));
}

#[test]
fn a_failed_command_is_pushed_and_a_failed_push_changes_no_exit_code() {
    let r = Repo::init();
    let src = r.root().join("src");
    write(&src.join("a.json"), "{}\n");
    let (url, got) = recording_server("200 OK");
    // No repository there: exit 10, pushed as Failed.
    let missing = r.root().join("missing");
    let out = r
        .bare()
        .args(["-r", s(&missing), "--key-file"])
        .arg(r.key.as_ref().unwrap())
        .args(["--pushgateway", &url, "backup", s(&src)])
        .output()
        .unwrap();
    assert_code(&out, code::NO_REPOSITORY);
    let reqs = got.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let p = parse(&reqs[0].2);
    assert_eq!(
        p.get("gatevault_command_last_status", &[("status", "Failed")]),
        1.0
    );
    assert_eq!(
        p.get(
            "gatevault_command_last_exit_code",
            &[("repository", s(&missing))]
        ),
        10.0
    );
    assert!(!p.has("gatevault_command_last_success_timestamp_seconds", &[]));

    // A Pushgateway that refuses the push: a warning naming the answer, exit code unchanged.
    let (refusing, got) = recording_server("400 Bad Request");
    let out = r.run(["--pushgateway", &refusing, "backup", "-q", s(&src)]);
    assert_code(&out, code::OK);
    assert_eq!(got.lock().unwrap().len(), 1);
    let err = stderr(&out);
    assert!(
        err.contains("warning: the metrics of this backup were not pushed") && err.contains("400"),
        "{err}"
    );

    // Nothing listening: a warning, exit code unchanged, for a success and for a failure.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = r.run(["--pushgateway", &dead, "check", "-q"]);
    assert_code(&out, code::OK);
    assert!(stderr(&out).contains("warning: the metrics of this check were not pushed"));
    let out = r
        .bare()
        .args(["-r", s(&missing), "--key-file"])
        .arg(r.key.as_ref().unwrap())
        .args(["--pushgateway", &dead, "check"])
        .output()
        .unwrap();
    assert_code(&out, code::NO_REPOSITORY);
    assert!(stderr(&out).contains("not pushed"), "{}", stderr(&out));

    // Not an http URL: a warning saying what to give.
    let out = r.run(["--pushgateway", "pushgateway:9091", "check", "-q"]);
    assert_code(&out, code::OK);
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
}
