//! `gatevault restore --to-gateway kong` and `gatevault rollback` against a FAKE of the Kong Admin API
//! (`tests/fixtures/fake_kong.py`, started on loopback): Kong itself cannot run on the test machines.
//! The fake records every request it receives (`GET /_fake/log`) and injects faults on request.

mod util;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};
use util::{fake_kong, Repo, Runner, Service};

const ALICE_KEY_ID: &str = "0b6f2f1c-5d7c-4f6e-9a51-3b2f8f5a0001";
const ALICE_KEY_PATH: &str =
    "kong/keyauth_credentials/alice@0b6f2f1c-5d7c-4f6e-9a51-3b2f8f5a0001.json";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateways/kong/kong.yaml")
}

fn deck() -> Value {
    let text = std::fs::read(fixture()).unwrap();
    gatevault::gateway::canonical::parse_json_or_yaml(&text).unwrap()
}

/// Sends a request to the fake; panics unless it succeeds.
fn send(method: &str, url: &str, body: Option<Value>) -> Value {
    let req = ureq::request(method, url);
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match r {
        Ok(r) => r.into_json().unwrap_or(Value::Null),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Changes the gateway the way an incident would: entities deleted and modified (a secret among
/// them), strays added, a service and an upstream renamed, a group member removed.
fn wreck(base: &str) {
    send("DELETE", &format!("{base}/routes/orders-post"), None);
    let plugins = send("GET", &format!("{base}/plugins"), None);
    let prometheus = util::json_list(&plugins, "data")
        .into_iter()
        .find(|p| p["name"] == "prometheus")
        .expect("the fixture has a prometheus plugin");
    send(
        "DELETE",
        &format!("{base}/plugins/{}", prometheus["id"].as_str().unwrap()),
        None,
    );
    send(
        "PATCH",
        &format!("{base}/services/orders"),
        Some(json!({"port": 9999})),
    );
    send(
        "PATCH",
        &format!("{base}/key-auths/{ALICE_KEY_ID}"),
        Some(json!({"key": "stolen-key"})),
    );
    send(
        "POST",
        &format!("{base}/services"),
        Some(json!({"name": "stray", "host": "stray.svc"})),
    );
    send(
        "POST",
        &format!("{base}/services/stray/routes"),
        Some(json!({"name": "stray-route", "paths": ["/stray"]})),
    );
    send(
        "POST",
        &format!("{base}/consumers"),
        Some(json!({"username": "mallory"})),
    );
    send(
        "POST",
        &format!("{base}/consumers/mallory/key-auths"),
        Some(json!({"key": "mallory-key"})),
    );
    send(
        "PATCH",
        &format!("{base}/services/billing"),
        Some(json!({"name": "billing-v2"})),
    );
    send(
        "PATCH",
        &format!("{base}/upstreams/orders-upstream"),
        Some(json!({"name": "orders-up2"})),
    );
    send(
        "DELETE",
        &format!("{base}/consumer_groups/gold/consumers/alice"),
        None,
    );
}

/// The write requests the fake received since its log was last emptied: (method, path).
fn writes(kong: &Service) -> Vec<(String, String)> {
    let log = send("GET", &format!("{}/_fake/log", kong.url()), None);
    util::json_list(&log, "requests")
        .into_iter()
        .filter(|r| r["method"] != "GET")
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every request the fake received since its log was last emptied.
fn requests(kong: &Service) -> usize {
    let log = send("GET", &format!("{}/_fake/log", kong.url()), None);
    util::json_list(&log, "requests").len()
}

fn clear_log(kong: &Service) {
    send("DELETE", &format!("{}/_fake/log", kong.url()), None);
}

fn fault(kong: &Service, f: Value) {
    send("POST", &format!("{}/_fake/fault", kong.url()), Some(f));
}

fn clear_faults(kong: &Service) {
    send("DELETE", &format!("{}/_fake/fault", kong.url()), None);
}

/// `backup --gateway kong` of the fake (plus `extra`); the snapshot id.
fn backup(r: &Repo, kong: &Service, extra: &[&str]) -> String {
    let mut args = vec!["backup", "--gateway", "kong", "--endpoint"];
    let url = kong.url();
    args.push(&url);
    args.extend_from_slice(extra);
    let v = r.run_json(&args);
    v["snapshot_id"].as_str().unwrap().to_string()
}

/// The entities (`kind key`) that differ between two snapshots, raw exports left out.
fn entity_diff(r: &Repo, a: &str, b: &str) -> Vec<String> {
    let d = r.run_json(["diff", a, b]);
    d["entities"]
        .as_array()
        .unwrap_or_else(|| panic!("diff --json has no entities: {d}"))
        .iter()
        .filter(|e| e["kind"] != "raw")
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or_default(),
                e["key"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// `gatevault <command> [snapshot] --to-gateway kong --endpoint URL --report-dir DIR <extra>`.
fn run(r: &Repo, kong: &Service, command: &[&str], report_dir: &Path, extra: &[&str]) -> Output {
    let url = kong.url();
    let mut args: Vec<&str> = command.to_vec();
    args.extend([
        "--to-gateway",
        "kong",
        "--endpoint",
        &url,
        "--report-dir",
        util::s(report_dir),
    ]);
    args.extend_from_slice(extra);
    r.run(&args)
}

/// The one JSON report in `dir`.
fn report(dir: &Path) -> Value {
    let files: Vec<PathBuf> = util::read_dir_sorted(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "one JSON report in {}", dir.display());
    let md = files[0].with_extension("md");
    assert!(md.is_file(), "{} exists", md.display());
    serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap()
}

/// Snapshots tagged `BackupType=<tag>`.
fn tagged(r: &Repo, tag: &str) -> Vec<String> {
    r.snapshots()
        .iter()
        .filter(|s| s["tags"]["BackupType"] == tag)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The fixture loaded into a new fake Kong, a repository holding its snapshot, and the wreck done.
fn wrecked(extra: &[&str]) -> Option<(Service, Repo, String)> {
    let kong = fake_kong(extra)?;
    util::kong_load(&kong.url(), &deck());
    let r = Repo::init();
    let snap = backup(&r, &kong, &[]);
    wreck(&kong.url());
    clear_log(&kong);
    Some((kong, r, snap))
}

/// Kong's dependency rank of the collection a write went to, written independently of the code
/// under test (decK's order): lower is created first and deleted last.
fn rank_of(path: &str) -> u32 {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (parts[0], parts.get(2).copied()) {
        ("upstreams", Some("targets")) => 11,
        ("certificates", _) => 1,
        ("ca_certificates", _) => 2,
        ("snis", _) => 3,
        ("vaults", _) => 4,
        ("key-sets", _) => 5,
        ("keys", _) => 6,
        ("consumers", _) => 7,
        ("consumer_groups", _) => 8,
        (
            "key-auths" | "basic-auths" | "hmac-auths" | "jwts" | "oauth2" | "acls" | "mtls-auths",
            _,
        ) => 9,
        ("upstreams", _) => 10,
        ("services", _) => 12,
        ("routes", _) => 13,
        ("plugins", _) => 14,
        _ => panic!("a write to an unexpected path: {path}"),
    }
}

/// Asserts that `writes` are: deletes, children first; then creates and updates, parents first;
/// then (possibly) the deletes of parents that surviving children had to move off first.
fn assert_dependency_order(writes: &[(String, String)]) {
    let mut phase = 0;
    let mut last = u32::MAX;
    for (method, path) in writes {
        let rank = rank_of(path);
        let delete = method == "DELETE";
        let ok = match (phase, delete) {
            (0, true) | (2, true) => rank <= last,
            (0, false) => {
                phase = 1;
                true
            }
            (1, false) => rank >= last,
            (1, true) => {
                phase = 2;
                true
            }
            _ => false,
        };
        assert!(
            ok,
            "{method} {path} is out of dependency order in {writes:#?}"
        );
        last = rank;
    }
}

fn position(writes: &[(String, String)], method: &str, path: &str) -> usize {
    writes
        .iter()
        .position(|(m, p)| m == method && p == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {writes:#?}"))
}

#[test]
fn a_wrecked_kong_is_planned_restored_in_dependency_order_and_verified() {
    let Some((kong, r, snap)) = wrecked(&[]) else {
        return;
    };
    let reports = r.root().join("reports");

    // The plan: exit 2 (drift), secrets masked, nothing written.
    let out = run(&r, &kong, &["restore", &snap], &reports, &["--dry-run"]);
    util::assert_code(&out, 2);
    let plan = util::stdout(&out);
    for want in [
        "- service billing-v2",
        "+ service billing",
        "~ route billing-any",
        "- route stray-route",
        "- consumer mallory",
        "+ route orders-post",
        "+ plugin prometheus@global",
        "- upstream orders-up2",
        "+ target orders-upstream@10.0.0.1:8080",
        "~ consumer_group gold",
        "~ keyauth_credential alice@0b6f2f1c",
        "/port: 9999 -> 8080",
        "/key: \"<secret>\" -> \"<secret>\"",
    ] {
        assert!(
            plan.contains(want),
            "{want:?} missing from the plan:\n{plan}"
        );
    }
    for secret in ["alice-secret-key-1", "stolen-key", "mallory-key"] {
        assert!(!plan.contains(secret), "the plan shows a secret:\n{plan}");
    }
    // The plan is printed in the order it runs: the renamed service's old name goes after the
    // route that moves off it.
    let at = |s: &str| {
        plan.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing:\n{plan}"))
    };
    assert!(
        at("~ route billing-any") < at("- service billing-v2"),
        "{plan}"
    );
    assert!(writes(&kong).is_empty(), "a dry run wrote to the gateway");

    // The restore.
    let out = run(&r, &kong, &["restore", &snap], &reports, &[]);
    util::assert_code(&out, 0);
    let shown = util::stdout(&out) + &util::stderr(&out);
    for secret in ["alice-secret-key-1", "stolen-key", "mallory-key"] {
        assert!(
            !shown.contains(secret),
            "the restore printed a secret:\n{shown}"
        );
    }
    let w = writes(&kong);
    assert_dependency_order(&w);
    // The route moved to the restored service before the renamed one was deleted (Kong refuses to
    // delete a service that routes use; the fake does too).
    let put_billing = position(&w, "PUT", "/services/billing");
    let put_route = position(&w, "PUT", "/routes/billing-any");
    let delete_renamed = position(&w, "DELETE", "/services/billing-v2");
    assert!(
        put_billing < put_route && put_route < delete_renamed,
        "{w:#?}"
    );
    assert!(
        position(&w, "DELETE", "/routes/stray-route") < position(&w, "DELETE", "/services/stray")
    );
    assert!(
        position(&w, "DELETE", "/upstreams/orders-up2/targets/10.0.0.1:8080")
            < position(&w, "DELETE", "/upstreams/orders-up2")
    );
    assert!(
        position(&w, "PUT", "/upstreams/orders-upstream")
            < position(&w, "POST", "/upstreams/orders-upstream/targets")
    );
    assert!(w.contains(&("PUT".into(), format!("/key-auths/{ALICE_KEY_ID}"))));
    assert!(w.contains(&("POST".into(), "/consumer_groups/gold/consumers".into())));

    // The Go-Live report.
    let rep = report(&reports);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    assert_eq!(rep["verification"]["matches"], true);
    assert!(rep["applied"]["method"]
        .as_str()
        .unwrap()
        .contains("entity by entity"));
    assert!(!rep.to_string().contains("alice-secret-key-1"));

    // The gateway is the snapshot again; the rollback point was kept.
    let after = backup(&r, &kong, &[]);
    assert_eq!(entity_diff(&r, &snap, &after), Vec::<String>::new());
    assert_eq!(tagged(&r, "pre-restore").len(), 1);
}

#[test]
fn a_rejected_entity_stops_the_restore_and_resume_finishes_it() {
    let Some((kong, r, snap)) = wrecked(&[]) else {
        return;
    };
    // Kong refuses alice's key as a duplicate (its message quotes the key).
    fault(
        &kong,
        json!({"method": "PUT", "path": format!("/key-auths/{ALICE_KEY_ID}"), "unique": "key", "times": 100}),
    );
    let first = r.root().join("first");
    let out = run(&r, &kong, &["restore", &snap], &first, &[]);
    util::assert_code(&out, 1);
    let err = util::stderr(&out);
    let step = format!("update keyauth_credential alice@{ALICE_KEY_ID} ({ALICE_KEY_PATH}): HTTP 409 UNIQUE violation detected on '{{key=\"<secret>\"}}'");
    assert!(err.contains(&step), "{err}");
    assert!(
        err.contains("--resume") && err.contains("rollback"),
        "{err}"
    );
    assert!(!err.contains("alice-secret-key-1"), "{err}");
    let rep = report(&first);
    assert_eq!(rep["status"], "Failed");
    assert!(rep["error"].as_str().unwrap().contains(&step), "{rep:#}");
    assert!(!rep.to_string().contains("alice-secret-key-1"));
    // Half way: the steps before it took effect, the ones after did not.
    let applied = rep["applied"]["steps"].as_array().unwrap();
    assert!(
        applied.iter().any(|s| s == "delete service stray"),
        "{rep:#}"
    );
    assert!(!applied.iter().any(|s| s == "create route orders-post"));
    assert!(writes(&kong)
        .iter()
        .all(|(_, p)| p != "/routes/orders-post"));
    let rollback = tagged(&r, "pre-restore");
    assert_eq!(rollback.len(), 1, "the rollback point exists");

    // The cause is fixed: resume applies what is left, with the same rollback point.
    clear_faults(&kong);
    clear_log(&kong);
    let second = r.root().join("second");
    let out = run(&r, &kong, &["restore", &snap], &second, &["--resume"]);
    util::assert_code(&out, 0);
    let rep = report(&second);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    assert_eq!(rep["resumed"], true);
    assert_eq!(rep["rollback_point"], rollback[0].as_str());
    assert_eq!(tagged(&r, "pre-restore"), rollback, "no new rollback point");
    // Only what was left: the deletes done before the failure are not repeated.
    let w = writes(&kong);
    assert!(!w.iter().any(|(_, p)| p == "/services/stray"), "{w:#?}");
    assert!(w.contains(&("PUT".into(), "/routes/orders-post".into())));
    let after = backup(&r, &kong, &[]);
    assert_eq!(entity_diff(&r, &snap, &after), Vec::<String>::new());
}

#[test]
fn rollback_returns_a_half_restored_kong_to_its_pre_restore_state() {
    let Some((kong, r, snap)) = wrecked(&[]) else {
        return;
    };
    fault(
        &kong,
        json!({"method": "PUT", "path": "/routes/orders-post", "status": 400, "message": "schema violation (paths: must not be empty)", "times": 100}),
    );
    let out = run(&r, &kong, &["restore", &snap], &r.root().join("first"), &[]);
    util::assert_code(&out, 1);
    let err = util::stderr(&out);
    assert!(
        err.contains(
            "create route orders-post (kong/routes/orders-post.json): HTTP 400 schema violation"
        ),
        "{err}"
    );
    let rollback = tagged(&r, "pre-restore");
    assert_eq!(rollback.len(), 1);
    let half = backup(&r, &kong, &[]);
    assert_ne!(entity_diff(&r, &rollback[0], &half), Vec::<String>::new());

    clear_faults(&kong);
    let back = r.root().join("back");
    let out = run(&r, &kong, &["rollback"], &back, &[]);
    util::assert_code(&out, 0);
    assert_eq!(report(&back)["status"], "Success");
    let after = backup(&r, &kong, &[]);
    assert_eq!(entity_diff(&r, &rollback[0], &after), Vec::<String>::new());
    assert_ne!(entity_diff(&r, &snap, &after), Vec::<String>::new());
}

#[test]
fn a_gateway_that_goes_away_mid_restore_is_named_and_resume_finishes() {
    let Some((kong, r, snap)) = wrecked(&[]) else {
        return;
    };
    // After three writes, every write finds its connection closed without an answer.
    fault(
        &kong,
        json!({"method": "WRITE", "close": true, "after": 3, "times": 1000}),
    );
    let first = r.root().join("first");
    let out = run(&r, &kong, &["restore", &snap], &first, &[]);
    util::assert_code(&out, 1);
    let err = util::stderr(&out);
    let rep = report(&first);
    assert_eq!(rep["status"], "Failed");
    let applied: Vec<String> = rep["applied"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(applied.len(), 3, "{rep:#}");
    // The error names the step that was under way: the plan's next one.
    let planned: Vec<String> = rep["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s["op"].as_str().unwrap(),
                s["kind"].as_str().unwrap(),
                s["key"].as_str().unwrap()
            )
        })
        .collect();
    let failed = planned
        .iter()
        .find(|s| !applied.contains(s) && err.contains(&format!("{s} (kong/")))
        .unwrap_or_else(|| panic!("no planned step named in:\n{err}"));
    assert!(err.contains("did not answer"), "{err}");
    assert!(
        rep["error"].as_str().unwrap().contains(failed.as_str()),
        "{rep:#}"
    );

    // The gateway is back.
    clear_faults(&kong);
    let out = run(
        &r,
        &kong,
        &["restore", &snap],
        &r.root().join("second"),
        &["--resume"],
    );
    util::assert_code(&out, 0);
    let after = backup(&r, &kong, &[]);
    assert_eq!(entity_diff(&r, &snap, &after), Vec::<String>::new());
    assert_eq!(tagged(&r, "pre-restore").len(), 1);
}

#[test]
fn db_less_kong_is_restored_with_one_post_config() {
    let Some(kong) = fake_kong(&["--dbless"]) else {
        return;
    };
    let config = |doc: &Value| json!({"config": serde_json::to_string(doc).unwrap()});
    send(
        "POST",
        &format!("{}/config", kong.url()),
        Some(config(&deck())),
    );
    let r = Repo::init();
    let snap = backup(&r, &kong, &[]);
    // Wreck: a route gone, a port changed, a stray service.
    let mut broken = deck();
    broken["services"][0]["routes"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    broken["services"][0]["port"] = json!(9999);
    broken["services"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "stray", "host": "stray.svc"}));
    send(
        "POST",
        &format!("{}/config", kong.url()),
        Some(config(&broken)),
    );
    clear_log(&kong);

    let reports = r.root().join("reports");
    let out = run(&r, &kong, &["restore", &snap], &reports, &[]);
    util::assert_code(&out, 0);
    assert_eq!(
        writes(&kong),
        [("POST".to_string(), "/config".to_string())],
        "one atomic load"
    );
    let rep = report(&reports);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    assert!(rep["applied"]["method"]
        .as_str()
        .unwrap()
        .contains("POST /config"));
    assert_eq!(rep["applied"]["steps"].as_array().unwrap().len(), 3);
    let after = backup(&r, &kong, &[]);
    assert_eq!(entity_diff(&r, &snap, &after), Vec::<String>::new());
}

#[test]
fn restoring_into_another_workspace_shows_the_rewrite() {
    let Some(kong) = fake_kong(&[]) else {
        return;
    };
    util::kong_load(&kong.url(), &deck());
    let r = Repo::init();
    let snap = backup(&r, &kong, &[]);
    let staging = |k: &Service| {
        send(
            "POST",
            &format!("{}/workspaces", k.url()),
            Some(json!({"name": "staging"})),
        );
    };
    staging(&kong);
    clear_log(&kong);
    let staged = ["--workspace", "staging"];
    let out = run(
        &r,
        &kong,
        &["restore", &snap],
        &r.root().join("plan"),
        &[&staged[..], &["--dry-run"]].concat(),
    );
    util::assert_code(&out, 2);
    let plan = util::stdout(&out);
    for want in [
        "rewrite Kong workspace: default -> staging",
        "rewrite Kong ids kept in the snapshot",
        "+ service orders",
    ] {
        assert!(plan.contains(want), "{want:?} missing from\n{plan}");
    }
    assert!(writes(&kong).is_empty());

    // A workspace name Kong would refuse is refused before anything is read or written.
    let out = run(
        &r,
        &kong,
        &["restore", &snap],
        &r.root().join("bad"),
        &["--workspace", "staging/../default"],
    );
    util::assert_code(&out, 1);
    let err = util::stderr(&out);
    assert!(
        err.contains("workspace name \"staging/../default\" is not one Kong accepts"),
        "{err}"
    );
    assert!(writes(&kong).is_empty());

    // Into the same Kong: SNI names are unique across workspaces, so Kong refuses the copy's SNI.
    let out = run(
        &r,
        &kong,
        &["restore", &snap],
        &r.root().join("same"),
        &staged,
    );
    util::assert_code(&out, 1);
    let err = util::stderr(&out);
    assert!(
        err.contains("create sni api.example.com (kong/snis/api.example.com.json): HTTP 409 UNIQUE violation detected on '{name=\"api.example.com\"}'"),
        "{err}"
    );
    let w = writes(&kong);
    assert!(w.iter().all(|(_, p)| p.starts_with("/staging/")), "{w:#?}");

    // Into the staging workspace of another Kong, the copy is whole.
    let Some(other) = fake_kong(&[]) else {
        return;
    };
    staging(&other);
    clear_log(&other);
    let reports = r.root().join("reports");
    let out = run(&r, &other, &["restore", &snap], &reports, &staged);
    util::assert_code(&out, 0);
    let rep = report(&reports);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    assert_eq!(rep["plan"]["rewrites"][0]["to"], "staging");
    // Kong's ids are unique across workspaces: the two the snapshot keeps (the certificate's and
    // alice's key-auth's) are derived anew for the copy.
    assert_eq!(rep["plan"]["rewrites"][1]["count"], 2, "{rep:#}");
    let w = writes(&other);
    assert!(!w.is_empty());
    assert!(w.iter().all(|(_, p)| p.starts_with("/staging/")), "{w:#?}");
    assert!(!w.iter().any(|(_, p)| p.contains(ALICE_KEY_ID)), "{w:#?}");
    let copy = backup(&r, &other, &staged);
    let differ = entity_diff(&r, &snap, &copy);
    assert!(!differ.is_empty());
    assert!(
        differ
            .iter()
            .all(|e| ["certificate ", "sni ", "keyauth_credential "]
                .iter()
                .any(|k| e.starts_with(k))),
        "{differ:?}"
    );
    // The derived ids are stable: restoring again finds nothing to change.
    let out = run(
        &r,
        &other,
        &["restore", &snap],
        &r.root().join("again"),
        &[&staged[..], &["--dry-run"]].concat(),
    );
    util::assert_code(&out, 0);
}

#[test]
fn a_caddy_snapshot_is_refused_before_kong_is_touched() {
    let Some(kong) = fake_kong(&[]) else {
        return;
    };
    util::kong_load(&kong.url(), &deck());
    let r = Repo::init();
    let caddy = r.root().join("caddy.json");
    std::fs::write(
        &caddy,
        r#"{"apps": {"http": {"servers": {"srv0": {"listen": [":80"]}}}}}"#,
    )
    .unwrap();
    let v = r.run_json(["backup", "--gateway", "caddy", "--file", util::s(&caddy)]);
    let snap = v["snapshot_id"].as_str().unwrap().to_string();
    clear_log(&kong);
    let reports = r.root().join("reports");
    let out = run(&r, &kong, &["restore", &snap], &reports, &[]);
    util::assert_code(&out, 1);
    let err = util::stderr(&out);
    assert!(
        err.contains("holds a caddy gateway and cannot be restored into kong"),
        "{err}"
    );
    assert_eq!(requests(&kong), 0, "the gateway was contacted");
    assert!(tagged(&r, "pre-restore").is_empty());
}

#[test]
fn a_select_tag_snapshot_is_restored_only_with_its_tags_and_leaves_the_rest() {
    let Some(kong) = fake_kong(&[]) else {
        return;
    };
    let base = kong.url();
    util::kong_load(&base, &deck());
    let r = Repo::init();
    let snap = backup(&r, &kong, &["--select-tag", "env:prod"]);
    send(
        "PATCH",
        &format!("{base}/services/orders"),
        Some(json!({"port": 9999})),
    );
    send(
        "POST",
        &format!("{base}/services"),
        Some(json!({"name": "untagged", "host": "u.svc"})),
    );
    let reports = r.root().join("reports");
    clear_log(&kong);

    // Without the tags, the restore would delete everything the snapshot does not hold: refused.
    let out = run(&r, &kong, &["restore", &snap], &reports, &[]);
    util::assert_code(&out, 1);
    assert!(
        util::stderr(&out).contains("--select-tag env:prod"),
        "{}",
        util::describe(&out)
    );
    assert!(writes(&kong).is_empty(), "nothing written");

    // With them: the tagged service is back, the untagged ones are left alone.
    let out = run(
        &r,
        &kong,
        &["restore", &snap],
        &reports,
        &["--select-tag", "env:prod"],
    );
    util::assert_code(&out, 0);
    let orders = send("GET", &format!("{base}/services/orders"), None);
    assert_eq!(orders["port"], 8080);
    for name in ["untagged", "billing"] {
        let s = send("GET", &format!("{base}/services/{name}"), None);
        assert_eq!(s["name"], name, "{name} is still there");
    }
}
