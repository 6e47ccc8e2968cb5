//! Restoring a real Caddy (on loopback) from a snapshot: plan and dry run, rollback point, atomic
//! apply, verification, Go-Live report, rollback, point in time, a staging Caddy, and the faults
//! (unreachable gateway, refused config, damaged snapshot, snapshot of another kind). Also restore
//! drills: into a staging Caddy, and into temporary folders checked by `nginx -t` and `haproxy -c`.
//!
//! Without caddy the tests say why they skip, unless `GATEVAULT_REQUIRE_SERVICES=1`.

mod util;

use std::path::Path;

use serde_json::{json, Value};
use util::{code, http, Repo, Runner};

/// A bcrypt hash of `example-password`.
const HASH: &str = "$2a$14$ONYr17eYnLWun3vh7rSn0umSVvie9cSWZu0E5s3AWio/9tTX9W2ky";

/// A config with a public route, an orders route and a basic-auth protected route on `port`.
fn config(admin: &str, port: u16, public_body: &str, orders: bool, stray: bool) -> Value {
    let text = |body: &str| json!([{"handler": "static_response", "body": body}]);
    let mut routes = vec![
        json!({"@id": "public", "match": [{"path": ["/public"]}], "handle": text(public_body)}),
    ];
    if orders {
        routes.push(
            json!({"@id": "orders", "match": [{"path": ["/orders"]}], "handle": text("orders")}),
        );
    }
    routes.push(json!({
        "@id": "admin-area",
        "match": [{"path": ["/admin"]}],
        "handle": [
            {"handler": "authentication", "providers": {"http_basic": {"accounts": [{"username": "alice", "password": HASH}]}}},
            {"handler": "static_response", "body": "admin"}
        ]
    }));
    if stray {
        routes.push(
            json!({"@id": "stray", "match": [{"path": ["/stray"]}], "handle": text("stray")}),
        );
    }
    json!({
        "admin": {"listen": admin.trim_start_matches("http://")},
        "apps": {"http": {"servers": {"api": {"listen": [format!("127.0.0.1:{port}")], "routes": routes}}}}
    })
}

fn load(admin: &str, c: &Value) {
    let (status, body) = http(admin, "POST", "/load", &c.to_string()).unwrap();
    assert_eq!(status, 200, "POST /load: {body}");
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(&format!("http://127.0.0.1:{port}"), "GET", path, "").unwrap_or((0, String::new()))
}

fn live_config(admin: &str) -> String {
    http(admin, "GET", "/config/", "").unwrap().1
}

/// The one report of `prefix` in `dir`, parsed, and its Markdown.
fn report(dir: &Path, prefix: &str) -> (Value, String) {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| util::file_name(p).starts_with(prefix))
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "one .json and one .md in {found:?}");
    let json: Value = serde_json::from_slice(&std::fs::read(&found[0]).unwrap()).unwrap();
    let md = std::fs::read_to_string(&found[1]).unwrap();
    (json, md)
}

fn steps(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["op"].as_str().unwrap(),
                s["key"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn caddy_restore_plan_apply_verify_rollback_and_faults() {
    if !util::have("caddy") {
        return;
    }
    let repo = Repo::init();
    let dir = tempfile::tempdir().unwrap();
    let (caddy, admin) = util::caddy(dir.path());
    let port = util::free_port();
    load(&admin, &config(&admin, port, "public v1", true, false));
    let gw = ["--to-gateway", "caddy", "--endpoint", &admin];
    let a = repo.run_json([
        "backup",
        "--gateway",
        "caddy",
        "--endpoint",
        &admin,
        "--tag",
        "Environment=prod",
    ]);
    let a = a["snapshot_id"].as_str().unwrap().to_string();

    // No drift: the dry run says so with exit 0.
    let mut args = vec!["restore", &a, "--dry-run"];
    args.extend(gw);
    let plan = repo.run_json(&args);
    assert_eq!(plan["plan"]["steps"], json!([]), "{plan}");

    // Wreck the gateway: one route changed, one gone, one added.
    load(&admin, &config(&admin, port, "broken", false, true));
    assert_eq!(
        get(port, "/orders").1,
        "",
        "Caddy answers unmatched paths empty"
    );
    let out = repo.run_code(2, &args);
    let text = util::stdout(&out);
    for want in [
        "~ route api/public",
        "+ route api/orders",
        "- route api/stray",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from the plan:\n{text}"
        );
    }
    let plan = repo.run_json_code(2, &args);
    let mut got = steps(&plan["plan"]);
    got.sort();
    assert_eq!(
        got,
        [
            "create api/orders",
            "delete api/stray",
            "update api",
            "update api/public"
        ]
    );
    assert!(
        repo.snapshot_ids().len() == 1,
        "a dry run takes no rollback point"
    );

    // A read-only key may plan but not restore (a restore stores a rollback point).
    let ro = repo.root().join("restore-key");
    repo.run_ok([
        "key",
        "add",
        "--new-key-file",
        util::s(&ro),
        "--role",
        "restore",
    ]);
    let with_ro = |extra: &[&str]| {
        let mut c = repo.cmd_no_creds();
        c.args(["--key-file", util::s(&ro), "restore", &a])
            .args(gw)
            .args(extra);
        c.output().unwrap()
    };
    util::assert_code(&with_ro(&["--dry-run"]), 2);
    let out = with_ro(&[]);
    util::assert_code(&out, 13);
    assert!(
        util::stderr(&out).contains("role restore"),
        "{}",
        util::describe(&out)
    );
    assert_eq!(get(port, "/orders").1, "", "nothing was restored");

    // Restore: applied atomically, verified, probed through Caddy's listener, reported.
    let reports = repo.root().join("reports");
    let probes = repo.root().join("probes.toml");
    let probe_file = |public: &str| {
        let text = format!(
            "[[probe]]\nname = \"public answers\"\npath = \"/public\"\n[probe.expect]\nbody_contains = \"{public}\"\n\n\
             [[probe]]\nname = \"admin needs credentials\"\npath = \"/admin\"\n[probe.expect]\nstatus = 401\n"
        );
        std::fs::write(&probes, text).unwrap();
    };
    probe_file("public v1");
    let base = format!("http://127.0.0.1:{port}");
    let mut args = vec!["restore", &a, "--report-dir", util::s(&reports)];
    args.extend(["--probes", util::s(&probes), "--probe-base-url", &base]);
    args.extend(gw);
    let out = repo.run_ok(&args);
    assert!(
        !out.contains(HASH),
        "secrets stay masked in the plan:\n{out}"
    );
    assert_eq!(get(port, "/public"), (200, "public v1".into()));
    assert_eq!(get(port, "/orders"), (200, "orders".into()));
    assert_eq!(get(port, "/stray").1, "");
    assert_eq!(get(port, "/admin").0, 401, "the protected route is back");
    let (r, md) = report(&reports, "restore-");
    assert_eq!(r["status"], "Success", "{r}");
    assert_eq!(r["integrity"]["status"], "Success");
    assert_eq!(r["verification"]["matches"], true);
    assert!(r["applied"]["method"]
        .as_str()
        .unwrap()
        .contains("If-Match"));
    let timed: Vec<&str> = r["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        timed,
        [
            "integrity",
            "plan",
            "rollback point",
            "apply",
            "verify",
            "probes"
        ]
    );
    let results = r["probes"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{r}");
    assert!(results.iter().all(|p| p["passed"] == true), "{r}");
    assert!(md.contains("## Probes"), "{md}");
    assert!(md.starts_with("# Go-Live report: Success"), "{md}");
    assert!(!md.contains(HASH));
    let rollback = r["rollback_point"].as_str().unwrap().to_string();
    let snaps = repo.snapshots();
    let rp = snaps
        .iter()
        .find(|s| s["id"] == rollback.as_str())
        .expect("the rollback point is stored");
    assert_eq!(rp["tags"]["BackupType"], "pre-restore", "{rp}");
    assert_eq!(rp["tags"]["Environment"], "prod");

    // `latest` means the newest backup, not the rollback point the restore just took.
    let mut args = vec!["restore", "latest", "--dry-run"];
    args.extend(gw);
    let plan = repo.run_json(&args);
    assert_eq!(plan["snapshot"], a.as_str(), "{plan}");

    // Rollback returns to the wrecked state.
    let mut args = vec!["rollback", "--report-dir", util::s(&reports)];
    args.extend(gw);
    repo.run_ok(&args);
    assert_eq!(get(port, "/public"), (200, "broken".into()));
    assert_eq!(get(port, "/stray"), (200, "stray".into()));

    // Point in time: the newest snapshot at or before the first one's time is that one.
    let a_time = snaps.iter().find(|s| s["id"] == a.as_str()).unwrap()["time"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec![
        "restore",
        "--at",
        &a_time,
        "--report-dir",
        util::s(&reports),
    ];
    args.extend(gw);
    repo.run_ok(&args);
    assert_eq!(get(port, "/public"), (200, "public v1".into()));

    // A probe that fails makes the restore Partial (exit 3); a broken probe file stops it before any
    // change.
    probe_file("public v2");
    let partial = repo.root().join("partial-reports");
    let mut args = vec!["restore", &a, "--report-dir", util::s(&partial)];
    args.extend(["--probes", util::s(&probes), "--probe-base-url", &base]);
    args.extend(gw);
    repo.run_code(3, &args);
    let (r, _) = report(&partial, "restore-");
    assert_eq!(r["status"], "Partial", "{r}");
    assert_eq!(r["verification"]["matches"], true);
    std::fs::write(
        &probes,
        "[[probe]]\nname = \"x\"\npath = \"/\"\nstauts = 200\n",
    )
    .unwrap();
    let n = repo.snapshot_ids().len();
    let out = repo.run_code(code::FAILURE, &args);
    assert!(
        util::stderr(&out).contains("stauts"),
        "{}",
        util::describe(&out)
    );
    assert_eq!(
        repo.snapshot_ids().len(),
        n,
        "no rollback point before a broken probe file"
    );

    // An unreachable gateway: refused before any change, with a Failed report.
    let nowhere = format!("http://127.0.0.1:{}", util::free_port());
    let bad = repo.root().join("bad-reports");
    let n = repo.snapshot_ids().len();
    let out = repo.run_code(
        code::FAILURE,
        [
            "restore",
            &a,
            "--to-gateway",
            "caddy",
            "--endpoint",
            &nowhere,
            "--report-dir",
            util::s(&bad),
        ],
    );
    assert!(
        util::stderr(&out).contains("cannot reach"),
        "{}",
        util::describe(&out)
    );
    assert_eq!(report(&bad, "restore-").0["status"], "Failed");
    assert_eq!(
        repo.snapshot_ids().len(),
        n,
        "no rollback point without a gateway"
    );

    // A snapshot of another kind is refused.
    let kong = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateways/kong/kong.yaml");
    let k = repo.run_json(["backup", "--gateway", "kong", "--file", util::s(&kong)]);
    let k = k["snapshot_id"].as_str().unwrap().to_string();
    let mut args = vec!["restore", &k];
    args.extend(gw);
    let out = repo.run_code(code::FAILURE, &args);
    assert!(
        util::stderr(&out).contains("holds a kong gateway"),
        "{}",
        util::describe(&out)
    );

    // A staging Caddy: its admin settings are kept (the plan shows the rewrite). While another
    // program holds the listener port, the staging Caddy refuses the config and keeps its own.
    drop(caddy);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let (_staging, admin2) = util::caddy(dir2.path());
    let before = live_config(&admin2);
    let gw2 = ["--to-gateway", "caddy", "--endpoint", &admin2];
    let mut args = vec!["restore", &a, "--report-dir", util::s(&bad)];
    args.extend(gw2);
    let out = repo.run_code(code::FAILURE, &args);
    assert!(
        util::stdout(&out).contains("rewrite Caddy admin settings"),
        "{}",
        util::describe(&out)
    );
    assert!(
        util::stderr(&out).contains("Caddy refused the config"),
        "{}",
        util::describe(&out)
    );
    assert_eq!(
        live_config(&admin2),
        before,
        "a refused config changes nothing"
    );
    drop(squatter);
    repo.run_ok(&args);
    assert_eq!(
        get(port, "/public"),
        (200, "public v1".into()),
        "served by the staging Caddy"
    );
    assert_eq!(
        http(&admin2, "GET", "/config/", "").unwrap().0,
        200,
        "its admin API stayed where it was"
    );

    // A damaged snapshot is refused before any change, and no rollback point is taken.
    load(&admin2, &config(&admin2, port, "staging", false, false));
    let before = live_config(&admin2);
    for p in repo.pack_files() {
        // Every 97th byte: whatever blobs the snapshot needs, each is damaged.
        let mut b = std::fs::read(&p).unwrap();
        for i in (0..b.len()).step_by(97) {
            b[i] ^= 0x40;
        }
        std::fs::write(&p, b).unwrap();
    }
    let n = repo.snapshot_ids().len();
    let dmg = repo.root().join("damaged-reports");
    let mut args = vec!["restore", &a, "--report-dir", util::s(&dmg)];
    args.extend(gw2);
    let out = repo.run_code(code::FAILURE, &args);
    assert!(
        util::stderr(&out).contains("damaged"),
        "{}",
        util::describe(&out)
    );
    let (r, _) = report(&dmg, "restore-");
    assert_eq!(r["integrity"]["status"], "Failed", "{r}");
    assert!(r["rollback_point"].is_null());
    assert_eq!(live_config(&admin2), before, "nothing changed");
    assert_eq!(repo.snapshot_ids().len(), n);
}

/// A file-based gateway config: `main` includes `/abs/conf.d/*.conf` by absolute path.
fn nginx_config(root: &Path, valid: bool) -> std::path::PathBuf {
    let conf_d = root.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    let main = root.join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "events {{}}\nhttp {{\n  include {}/*.conf;\n}}\n",
            conf_d.display()
        ),
    )
    .unwrap();
    let body = if valid {
        "return 200 ok;"
    } else {
        "no_such_directive on;"
    };
    std::fs::write(
        conf_d.join("api.conf"),
        format!(
            "server {{ listen 127.0.0.1:{}; location / {{ {body} }} }}\n",
            util::free_port()
        ),
    )
    .unwrap();
    main
}

#[test]
fn drills_pick_restore_check_and_record() {
    if !util::have_all(&["caddy", "nginx", "haproxy"]) {
        return;
    }
    let repo = Repo::init();
    let dir = tempfile::tempdir().unwrap();
    let (_caddy, admin) = util::caddy(dir.path());
    let port = util::free_port();
    for body in ["one", "two", "three"] {
        load(&admin, &config(&admin, port, body, true, false));
        repo.run_json(["backup", "--gateway", "caddy", "--endpoint", &admin]);
    }
    let reports = repo.root().join("reports");
    let drill = |extra: &[&str], want: i32| -> Value {
        let mut args = vec!["drill", "--report-dir", util::s(&reports)];
        args.extend_from_slice(extra);
        repo.run_json_code(want, &args)
    };

    // A seeded random pick is repeatable; the staging gateway ends up serving that snapshot.
    let gw = ["--to-gateway", "caddy", "--endpoint", &admin];
    let mut args = vec!["--random", "--seed", "11"];
    args.extend(gw);
    let d1 = drill(&args, code::OK);
    let d2 = drill(&args, code::OK);
    assert_eq!(d1["seed"], 11);
    assert_eq!(d1["candidates"], 3);
    assert_eq!(d1["report"]["snapshot"], d2["report"]["snapshot"]);
    assert_eq!(d1["status"], "Success");
    let picked = d1["report"]["snapshot"].as_str().unwrap();
    let ids = repo.snapshot_ids();
    let which = ids
        .iter()
        .position(|i| i == picked)
        .expect("a backed-up snapshot");
    assert_eq!(get(port, "/public").1, ["one", "two", "three"][which]);
    assert_eq!(
        repo.snapshot_ids().len(),
        3,
        "drills take no rollback point"
    );

    // File-based gateways: restored into a temporary folder and checked there, even when the
    // live files are gone.
    let ng = repo.root().join("ng");
    let main = nginx_config(&ng, true);
    repo.run_json(["backup", "--gateway", "nginx", "--file", util::s(&main)]);
    std::fs::remove_dir_all(ng.join("conf.d")).unwrap();
    let path = format!("nginx:file:{}", main.display());
    let d = drill(&["--path", &path], code::OK);
    assert_eq!(d["status"], "Success", "{d}");
    assert!(d["report"]["target"].as_str().unwrap().contains("nginx"));

    let bad = repo.root().join("bad");
    let main = nginx_config(&bad, false);
    repo.run_json([
        "backup",
        "--gateway",
        "nginx",
        "--file",
        util::s(&main),
        "--no-validate",
    ]);
    let path = format!("nginx:file:{}", main.display());
    let d = drill(&["--path", &path], code::FAILURE);
    assert_eq!(d["status"], "Failed");
    assert!(
        d["report"]["verification"]["error"]
            .as_str()
            .unwrap()
            .contains("no_such_directive"),
        "{d}"
    );

    let hp = repo.root().join("hp");
    std::fs::create_dir_all(&hp).unwrap();
    let cfg = hp.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!("defaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\nfrontend f\n  bind 127.0.0.1:{}\n  default_backend b\nbackend b\n  server s1 127.0.0.1:9\n", util::free_port()),
    )
    .unwrap();
    repo.run_json(["backup", "--gateway", "haproxy", "--file", util::s(&cfg)]);
    let path = format!("haproxy:file:{}", cfg.display());
    assert_eq!(drill(&["--path", &path], code::OK)["status"], "Success");

    // Every drill is recorded in the repository, with its status and recovery time.
    let listed = repo.run_json(["drills"]);
    let statuses: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["Success", "Success", "Success", "Failed", "Success"]
    );
    assert!(listed[0]["recovery_ms"].is_u64());
    let records = repo.objects("records");
    assert_eq!(records.len(), 5);
    repo.run_ok(["check"]);

    // A damaged record is named by `check` and skipped, with a warning, by `drills`.
    let mut b = std::fs::read(&records[0]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&records[0], b).unwrap();
    let out = repo.run_code(code::FAILURE, ["check"]);
    let name = util::file_name(&records[0]);
    assert!(
        util::stdout(&out).contains(&format!("record {name}")),
        "{}",
        util::describe(&out)
    );
    let out = repo.run_code(3, ["drills"]);
    assert!(
        util::stderr(&out).contains(&name),
        "{}",
        util::describe(&out)
    );
}
