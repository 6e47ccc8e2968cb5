//! `gatevault restore --to-gateway aws` against `moto_server` (PyPI `moto[server]`), started by each
//! test on a free loopback port and seeded by `tests/fixtures/aws/seed.py` (boto3), as
//! `tests/gateway_aws.rs` does. moto starts slowly, so each test checks several things.
//!
//! Without `moto_server` on `PATH` the tests print why they skip and pass, unless
//! `GATEVAULT_REQUIRE_SERVICES=1`, where they fail.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::{code, Repo, Runner, Service};

use gatevault::gateway::{self, Capture, GatewayOptions};
use serde_json::Value;

const REGION: &str = "us-east-1";
/// The region of the staging restore.
const STAGING_REGION: &str = "us-west-2";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aws")
        .join(name)
}

/// Runs the seed script with `args` (an action and its arguments).
fn seed(moto: &Service, args: &[&str]) {
    let out = Command::new("python3")
        .arg(fixture("seed.py"))
        .arg(moto.url())
        .args(args)
        .output()
        .expect("python3 runs (it comes with moto)");
    assert!(
        out.status.success(),
        "seed.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entities of the gateway at `endpoint` in `region`, as a restore sees them (key values too).
fn capture(endpoint: &str, region: &str) -> Capture {
    gateway::capture(&GatewayOptions {
        kind: "aws".into(),
        endpoint: Some(endpoint.into()),
        region: Some(region.into()),
        include_secret_values: true,
        ..Default::default()
    })
    .expect("capture succeeds")
}

/// Document path to value, without what a restore changes by design: deployments, the deployment a
/// stage points at, raw exports (they name the API's id) and the manifest (it lists deployments).
fn comparable(c: &Capture) -> BTreeMap<String, Value> {
    c.entities
        .iter()
        .filter(|e| e.kind != "deployment")
        .map(|e| {
            let mut v = e.value.clone();
            if e.kind == "stage" {
                if let Value::Object(m) = &mut v {
                    m.remove("deploymentId");
                }
            }
            (e.path.clone(), v)
        })
        .collect()
}

/// The value of the entity at `path`.
fn entity<'a>(c: &'a Capture, path: &str) -> &'a Value {
    &c.entities
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| {
            panic!(
                "no entity {path}; have {:?}",
                c.entities.iter().map(|e| &e.path).collect::<Vec<_>>()
            )
        })
        .value
}

/// Backs the gateway up; returns the snapshot id.
fn backup(r: &Repo, endpoint: &str) -> String {
    let s = r.run_json([
        "backup",
        "--gateway",
        "aws",
        "--endpoint",
        endpoint,
        "--region",
        REGION,
    ]);
    s["snapshot_id"].as_str().expect("snapshot id").to_string()
}

/// `restore SNAPSHOT --to-gateway aws --endpoint E --region R` plus `extra`.
fn restore(
    r: &Repo,
    want: i32,
    snapshot: &str,
    endpoint: &str,
    region: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "restore",
        snapshot,
        "--to-gateway",
        "aws",
        "--endpoint",
        endpoint,
        "--region",
        region,
    ];
    args.extend_from_slice(extra);
    r.run_code(want, &args)
}

/// The one Go-Live report (JSON) in `dir`.
fn report(dir: &Path) -> Value {
    let jsons: Vec<PathBuf> = util::read_dir_sorted(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(
        jsons.len(),
        1,
        "one JSON report in {}: {jsons:?}",
        dir.display()
    );
    serde_json::from_slice(&std::fs::read(&jsons[0]).expect("report")).expect("report is JSON")
}

/// Ids of the snapshots tagged `BackupType=pre-restore`.
fn rollback_points(r: &Repo) -> Vec<String> {
    r.snapshots()
        .iter()
        .filter(|s| s["tags"]["BackupType"] == "pre-restore")
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn a_deleted_api_is_recreated_and_drift_is_repaired() {
    let Some(moto) = util::moto(&[]) else { return };
    let url = moto.url();
    seed(&moto, &[]);
    let before = capture(&url, REGION);
    let r = Repo::init();
    let snap = backup(&r, &url);
    seed(&moto, &["delete-api"]);
    assert!(
        !capture(&url, REGION)
            .entities
            .iter()
            .any(|e| e.path == "aws/rest-apis/orders/api.json"),
        "the API is gone"
    );

    // The plan: the API and everything in it will be created; nothing is changed yet.
    let out = restore(&r, 2, &snap, &url, REGION, &["--dry-run"]);
    let plan = util::stdout(&out);
    for line in [
        "+ rest-api orders",
        "+ resource /orders/{id}",
        "+ method POST /orders",
        "+ stage prod",
        "~ usage-plan gold",
        "~ domain-name api.example.com",
    ] {
        assert!(plan.contains(line), "no {line:?} in the plan:\n{plan}");
    }
    // The snapshot has no key values (backup without --include-secret-values): the target's stay.
    assert!(
        plan.contains("rewrite API key values the snapshot does not hold (the target's are kept): (none) -> (the target's) (2 places)"),
        "{plan}"
    );
    assert!(rollback_points(&r).is_empty(), "a dry run stores nothing");

    let reports = r.scratch("reports");
    let out = restore(
        &r,
        code::OK,
        &snap,
        &url,
        REGION,
        &["--report-dir", util::s(&reports)],
    );
    let text = util::stdout(&out);
    assert!(
        text.contains("verify: the gateway matches the snapshot"),
        "{text}"
    );
    let rep = report(&reports);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    assert_eq!(rep["verification"]["matches"], true, "{rep:#}");
    let points = rollback_points(&r);
    assert_eq!(points.len(), 1, "one rollback point");
    assert_eq!(rep["rollback_point"], points[0].as_str());

    let after = capture(&url, REGION);
    let get = entity(
        &after,
        "aws/rest-apis/orders/methods/GET%20%2Forders%2F%7Bid%7D.json",
    );
    assert_eq!(
        get["methodIntegration"]["uri"],
        "http://orders.internal/orders/{id}"
    );
    let post = entity(&after, "aws/rest-apis/orders/methods/POST%20%2Forders.json");
    assert_eq!(post["requestValidator"], "body-only");
    assert_eq!(post["methodIntegration"]["type"], "MOCK");
    // A new deployment exists, and every stage points at it.
    let old_deployments: Vec<&String> = before
        .entities
        .iter()
        .filter(|e| e.kind == "deployment")
        .map(|e| &e.key)
        .collect();
    let new_deployments: Vec<&String> = after
        .entities
        .iter()
        .filter(|e| e.kind == "deployment" && e.path.starts_with("aws/rest-apis/orders/"))
        .map(|e| &e.key)
        .collect();
    assert_eq!(new_deployments.len(), 1, "{new_deployments:?}");
    assert!(!old_deployments.contains(&new_deployments[0]));
    for stage in ["prod", "staging"] {
        let st = entity(&after, &format!("aws/rest-apis/orders/stages/{stage}.json"));
        assert_eq!(st["deploymentId"], new_deployments[0].as_str(), "{stage}");
    }
    // Everything else is as it was backed up.
    let (want, got) = (comparable(&before), comparable(&after));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (path, v) in &want {
        assert_eq!(&got[path], v, "{path} differs after the restore");
    }
    // A second plan finds nothing to do: the new deployment is not drift.
    restore(&r, code::OK, &snap, &url, REGION, &["--dry-run"]);

    // Drift in an integration and a stage variable is put back.
    seed(&moto, &["drift"]);
    let drifted = capture(&url, REGION);
    assert_eq!(
        entity(&drifted, "aws/rest-apis/orders/stages/prod.json")["variables"]["backend"],
        "elsewhere.internal"
    );
    let out = restore(
        &r,
        code::OK,
        &snap,
        &url,
        REGION,
        &["--report-dir", util::s(&r.scratch("reports-2"))],
    );
    let text = util::stdout(&out);
    assert!(text.contains("~ method GET /orders/{id}"), "{text}");
    assert!(text.contains("~ stage prod"), "{text}");
    let fixed = capture(&url, REGION);
    assert_eq!(
        entity(
            &fixed,
            "aws/rest-apis/orders/methods/GET%20%2Forders%2F%7Bid%7D.json"
        )["methodIntegration"]["uri"],
        "http://orders.internal/orders/{id}"
    );
    assert_eq!(
        entity(&fixed, "aws/rest-apis/orders/stages/prod.json")["variables"]["backend"],
        "orders.internal"
    );
    // The definition changed: existing stages now serve another new deployment.
    let deployments: Vec<&String> = fixed
        .entities
        .iter()
        .filter(|e| e.kind == "deployment" && e.path.starts_with("aws/rest-apis/orders/"))
        .map(|e| &e.key)
        .filter(|k| *k != new_deployments[0])
        .collect();
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    for stage in ["prod", "staging"] {
        let st = entity(&fixed, &format!("aws/rest-apis/orders/stages/{stage}.json"));
        assert_eq!(st["deploymentId"], deployments[0].as_str(), "{stage}");
    }
    assert_eq!(comparable(&fixed), want);
    assert_eq!(rollback_points(&r).len(), 2, "each restore leaves one");
}

#[test]
fn a_staging_restore_into_another_region_rewrites_the_region_in_arns() {
    let Some(moto) = util::moto(&[]) else { return };
    let url = moto.url();
    seed(&moto, &[]);
    let source = capture(&url, REGION);
    let r = Repo::init();
    let snap = backup(&r, &url);

    let reports = r.scratch("reports");
    let out = restore(
        &r,
        code::OK,
        &snap,
        &url,
        STAGING_REGION,
        &["--report-dir", util::s(&reports)],
    );
    let text = util::stdout(&out);
    assert!(
        text.contains(&format!(
            "rewrite AWS region in ARNs and service URLs: {REGION} -> {STAGING_REGION}"
        )),
        "{text}"
    );
    // The snapshot holds no key values and the staging region has no keys: new ones are chosen.
    assert!(
        text.contains("new keys get random values: hand them to their clients): (none) -> (random) (2 places)"),
        "{text}"
    );
    let rep = report(&reports);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    let rewrites = rep["plan"]["rewrites"].as_array().expect("rewrites");
    assert!(
        rewrites.iter().any(|w| w["from"] == REGION
            && w["to"] == STAGING_REGION
            && w["count"].as_u64() > Some(0)),
        "{rewrites:?}"
    );

    let staged = capture(&url, STAGING_REGION);
    assert_eq!(
        staged.source.scope.as_deref(),
        Some(format!("123456789012/{STAGING_REGION}").as_str())
    );
    let uri = entity(&staged, "aws/rest-apis/orders/authorizers/jwt.json")["authorizerUri"]
        .as_str()
        .expect("authorizer URI")
        .to_string();
    assert!(
        uri.starts_with(&format!("arn:aws:apigateway:{STAGING_REGION}:lambda:"))
            && uri.contains(&format!(
                "arn:aws:lambda:{STAGING_REGION}:123456789012:function:auth"
            )),
        "{uri}"
    );
    for e in &staged.entities {
        let text = e.value.to_string();
        assert!(
            !text.contains(REGION),
            "{} still names {REGION}: {text}",
            e.path
        );
    }
    let methods = staged
        .entities
        .iter()
        .filter(|e| e.kind == "method")
        .count();
    assert_eq!(methods, 4, "every method of both APIs is there");
    // The source region is untouched.
    assert_eq!(comparable(&capture(&url, REGION)), comparable(&source));
}

#[test]
fn a_refused_step_fails_naming_it_and_the_restore_resumes() {
    let Some(moto) = util::moto(&[]) else { return };
    if !util::have("python3") {
        return;
    }
    let url = moto.url();
    seed(&moto, &[]);
    let r = Repo::init();
    let snap = backup(&r, &url);
    seed(&moto, &["delete-api"]);

    // A proxy in front of moto refuses the first CreateDeployment as API Gateway refuses a request.
    let port = util::free_port();
    let mut c = Command::new("python3");
    c.arg(fixture("refuse.py"))
        .args([
            &port.to_string(),
            &url,
            "POST",
            "^/restapis/[^/]+/deployments$",
            "1",
        ])
        .args(["400", "BadRequestException", "refused by the test proxy"])
        .stdin(Stdio::null());
    let proxy = Service::start(c, port);
    let through = proxy.url();

    let reports = r.scratch("reports");
    let out = restore(
        &r,
        code::FAILURE,
        &snap,
        &through,
        REGION,
        &["--report-dir", util::s(&reports)],
    );
    let err = util::stderr(&out);
    let step = "create a deployment of orders (aws/rest-apis/orders/api.json): BadRequestException: refused by the test proxy (HTTP 400)";
    assert!(err.contains(step), "the error names the step:\n{err}");
    assert!(err.contains("--resume"), "and the next step:\n{err}");
    let rep = report(&reports);
    assert_eq!(rep["status"], "Failed", "{rep:#}");
    assert!(
        rep["error"].as_str().is_some_and(|e| e.contains(step)),
        "{rep:#}"
    );
    // The steps before it are journaled, and the rollback point is in place.
    let applied: Vec<&str> = rep["applied"]["steps"]
        .as_array()
        .expect("applied steps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(applied.contains(&"create rest-api orders"), "{applied:?}");
    assert!(!applied.contains(&"create stage prod"), "{applied:?}");
    let points = rollback_points(&r);
    assert_eq!(points.len(), 1, "one rollback point");
    assert_eq!(rep["rollback_point"], points[0].as_str());

    // The proxy refuses only once: the restore resumes and finishes.
    let resumed = r.scratch("reports-resumed");
    restore(
        &r,
        code::OK,
        &snap,
        &through,
        REGION,
        &["--resume", "--report-dir", util::s(&resumed)],
    );
    let rep = report(&resumed);
    assert_eq!(rep["status"], "Success", "{rep:#}");
    assert_eq!(rep["resumed"], true);
    assert_eq!(
        rep["rollback_point"],
        points[0].as_str(),
        "the first rollback point is kept"
    );
    assert_eq!(rollback_points(&r).len(), 1);
    let stage = capture(&url, REGION);
    assert!(stage
        .entities
        .iter()
        .any(|e| e.path == "aws/rest-apis/orders/stages/prod.json"));
}
