//! The AWS API Gateway adapter against `moto_server` (PyPI `moto[server]`), an API Gateway emulator
//! started by each test on a free loopback port and seeded by `tests/fixtures/aws/seed.py` (boto3).
//!
//! Without `moto_server` on `PATH` the tests print why they skip and pass, unless
//! `GATEVAULT_REQUIRE_SERVICES=1`, where they fail.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Runner, Service};

use gatevault::gateway::{self, Capture, GatewayOptions};
use gatevault::Error;
use serde_json::{json, Value};

const REGION: &str = "us-east-1";
/// The account moto reports through STS.
const MOTO_ACCOUNT: &str = "123456789012";

/// Runs the seed script with `args`; returns its JSON output.
fn seed(moto: &Service, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws/seed.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(moto.url())
        .args(args)
        .output()
        .expect("python3 runs (it comes with moto)");
    assert!(
        out.status.success(),
        "seed.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("seed.py prints JSON")
}

fn options(endpoint: &str, include_secret_values: bool) -> GatewayOptions {
    GatewayOptions {
        kind: "aws".into(),
        endpoint: Some(endpoint.into()),
        region: Some(REGION.into()),
        include_secret_values,
        ..Default::default()
    }
}

fn capture(moto: &Service, include_secret_values: bool) -> Capture {
    gateway::capture(&options(&moto.url(), include_secret_values)).expect("capture succeeds")
}

/// The parsed document at `path`.
fn doc(docs: &BTreeMap<String, Vec<u8>>, path: &str) -> Value {
    let bytes = docs
        .get(path)
        .unwrap_or_else(|| panic!("no document {path}; have {:?}", docs.keys()));
    serde_json::from_slice(bytes).expect("documents are JSON")
}

/// Entity kind to sorted keys.
fn keys_by_kind(c: &Capture) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &c.entities {
        out.entry(e.kind.clone()).or_default().push(e.key.clone());
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

#[test]
fn capture_holds_every_entity_kind_under_natural_keys() {
    let Some(moto) = util::moto(&[]) else { return };
    let seeded = seed(&moto, &[]);
    let c = capture(&moto, false);

    assert_eq!(c.source.kind, "aws");
    assert_eq!(c.source.endpoint, moto.url());
    assert_eq!(
        c.source.scope.as_deref(),
        Some(format!("{MOTO_ACCOUNT}/{REGION}").as_str())
    );

    let kinds = keys_by_kind(&c);
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(kinds["rest-api"], strs(&["billing", "orders"]));
    assert_eq!(
        kinds["resource"],
        strs(&["/", "/", "/invoices", "/orders", "/orders/{id}"])
    );
    assert_eq!(
        kinds["method"],
        strs(&[
            "GET /invoices",
            "GET /orders",
            "GET /orders/{id}",
            "POST /orders"
        ])
    );
    assert_eq!(kinds["model"], strs(&["Order"]));
    assert_eq!(kinds["request-validator"], strs(&["body-only"]));
    assert_eq!(kinds["authorizer"], strs(&["jwt"]));
    assert_eq!(kinds["gateway-response"], strs(&["DEFAULT_4XX"]));
    assert_eq!(kinds["stage"], strs(&["prod", "staging", "v1"]));
    assert_eq!(kinds["deployment"].len(), 3);
    assert_eq!(kinds["usage-plan"], strs(&["gold"]));
    assert_eq!(kinds["api-key"], strs(&["alice-key", "bob-key"]));
    assert_eq!(kinds["domain-name"], strs(&["api.example.com"]));
    assert_eq!(kinds["vpc-link"], strs(&["orders-link"]));
    assert_eq!(kinds["account"], strs(&["account"]));

    let docs = c.documents().expect("documents");
    let api = "aws/rest-apis/orders";
    assert_eq!(doc(&docs, &format!("{api}/api.json"))["name"], "orders");
    let get = doc(&docs, &format!("{api}/methods/GET%20%2Forders.json"));
    assert_eq!(get["authorizer"], "jwt");
    assert_eq!(get["resourcePath"], "/orders");
    // moto keeps the connection type but drops the VPC link id, so the id-to-name replacement of
    // `connectionId` is covered by the unit tests of the adapter.
    assert_eq!(get["methodIntegration"]["connectionType"], "VPC_LINK");
    let post = doc(&docs, &format!("{api}/methods/POST%20%2Forders.json"));
    assert_eq!(post["requestValidator"], "body-only");
    assert_eq!(post["requestModels"]["application/json"], "Order");
    assert!(post["methodResponses"]["201"].is_object(), "{post}");
    assert!(
        post["methodIntegration"]["integrationResponses"]["201"].is_object(),
        "{post}"
    );
    let item = doc(&docs, &format!("{api}/resources/%2Forders%2F%7Bid%7D.json"));
    assert_eq!(item, json!({"path": "/orders/{id}", "pathPart": "{id}"}));

    let prod = doc(&docs, &format!("{api}/stages/prod.json"));
    assert_eq!(
        prod["variables"],
        json!({"backend": "orders.internal", "timeout": "29"})
    );
    assert_eq!(prod["methodSettings"]["*/*"]["metricsEnabled"], true);
    let deployment = prod["deploymentId"]
        .as_str()
        .expect("stage names its deployment");
    assert!(docs.contains_key(&format!("{api}/deployments/{deployment}.json")));

    let plan = doc(&docs, "aws/usage-plans/gold.json");
    assert_eq!(
        plan["apiStages"],
        json!([{"api": "billing", "stage": "v1"}, {"api": "orders", "stage": "prod"}])
    );
    assert_eq!(
        plan["apiKeys"],
        json!([{"name": "alice-key", "type": "API_KEY"}, {"name": "bob-key", "type": "API_KEY"}])
    );
    let domain = doc(&docs, "aws/domain-names/api.example.com.json");
    assert_eq!(
        domain["basePathMappings"],
        json!([
            {"api": "billing", "basePath": "billing", "stage": "v1"},
            {"api": "orders", "basePath": "orders", "stage": "prod"}
        ])
    );
    assert_eq!(
        doc(&docs, "aws/vpc-links/orders-link.json")["name"],
        "orders-link"
    );

    let raw: BTreeSet<&str> = c.raw.keys().map(String::as_str).collect();
    assert_eq!(
        raw,
        BTreeSet::from([
            "aws-billing@v1.swagger.json",
            "aws-orders@prod.swagger.json",
            "aws-orders@staging.swagger.json"
        ])
    );

    // No surrogate id is left in an entity (the raw exports name the API's host, which holds its id).
    let ids: Vec<&str> = seeded["ids"]
        .as_array()
        .expect("seed ids")
        .iter()
        .map(|v| v.as_str().expect("id"))
        .collect();
    for (path, bytes) in docs.iter().filter(|(p, _)| !p.starts_with("raw/")) {
        let text = String::from_utf8_lossy(bytes);
        for id in &ids {
            assert!(!text.contains(id), "{path} still holds id {id}:\n{text}");
        }
        for volatile in ["createdDate", "lastUpdatedDate"] {
            assert!(!text.contains(volatile), "{path} holds {volatile}");
        }
    }
}

#[test]
fn capturing_twice_gives_identical_documents() {
    let Some(moto) = util::moto(&[]) else { return };
    seed(&moto, &[]);
    let first = capture(&moto, false).documents().expect("documents");
    // moto's export version has a one-second resolution: make sure it changed in between.
    std::thread::sleep(Duration::from_millis(1100));
    let second = capture(&moto, false).documents().expect("documents");
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &first {
        assert!(
            second[path] == *bytes,
            "{path} differs between two captures"
        );
    }
}

#[test]
fn api_key_values_are_captured_only_on_request_and_marked_secret() {
    let Some(moto) = util::moto(&[]) else { return };
    seed(&moto, &[]);
    let path = "aws/api-keys/alice-key.json";

    let without = capture(&moto, false);
    let docs = without.documents().expect("documents");
    let key = doc(&docs, path);
    assert!(key.get("value").is_none(), "{key}");
    assert_eq!(key["customerId"], "cust-alice");
    let entity = without
        .entities
        .iter()
        .find(|e| e.path == path)
        .expect("entity");
    assert!(entity.secrets.is_empty());
    assert_eq!(entity.personal, vec!["/customerId"]);
    for (p, bytes) in &docs {
        assert!(
            !String::from_utf8_lossy(bytes).contains("secret-value"),
            "{p} holds a key value"
        );
    }

    let with = capture(&moto, true);
    let docs = with.documents().expect("documents");
    assert_eq!(doc(&docs, path)["value"], "alice-secret-value-0123456789");
    let entity = with
        .entities
        .iter()
        .find(|e| e.path == path)
        .expect("entity");
    assert_eq!(entity.secrets, vec!["/value"]);
    let manifest = doc(&docs, gateway::MANIFEST);
    assert_eq!(manifest["entities"][path]["secrets"], json!(["/value"]));
    // Usage plan membership names keys; it never copies their values.
    assert!(!String::from_utf8_lossy(&docs["aws/usage-plans/gold.json"]).contains("secret-value"));
}

#[test]
fn a_stage_variable_change_changes_only_that_stage() {
    let Some(moto) = util::moto(&[]) else { return };
    seed(&moto, &[]);
    let before = capture(&moto, false).documents().expect("documents");
    seed(&moto, &["change-stage"]);
    let after = capture(&moto, false).documents().expect("documents");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let changed: Vec<&String> = before
        .iter()
        .filter(|(p, b)| after[*p] != **b)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(changed, vec!["aws/rest-apis/orders/stages/prod.json"]);
    assert_eq!(
        doc(&after, "aws/rest-apis/orders/stages/prod.json")["variables"]["timeout"],
        "10"
    );
}

#[test]
fn an_unreachable_endpoint_is_a_gateway_error_quickly() {
    util::aws_test_env();
    let endpoint = format!("http://127.0.0.1:{}", util::free_port());
    let start = Instant::now();
    let got = gateway::capture(&options(&endpoint, false));
    let took = start.elapsed();
    match got {
        Err(Error::Gateway { gateway, reason }) => {
            eprintln!("{gateway}: {reason}");
            assert!(gateway.contains(&endpoint), "{gateway}");
            assert!(reason.contains("cannot reach the endpoint"), "{reason}");
            assert!(reason.contains("--endpoint"), "{reason}");
        }
        other => panic!("expected a gateway error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn refused_credentials_are_a_gateway_error_naming_the_credentials() {
    // With no unauthenticated actions allowed, moto checks keys as IAM would: `testing` is unknown.
    let Some(moto) = util::moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else {
        return;
    };
    match gateway::capture(&options(&moto.url(), false)) {
        Err(Error::Gateway { reason, .. }) => {
            eprintln!("reason: {reason}");
            assert!(reason.contains("credentials were refused"), "{reason}");
            assert!(reason.contains("HTTP 403"), "{reason}");
            assert!(!reason.contains("testing"), "a credential leaked: {reason}");
        }
        other => panic!("expected a gateway error, got {other:?}"),
    }
}

/// Name of the test that [`missing_credentials_are_a_gateway_error`] runs in a child process.
const NO_CREDENTIALS_CHILD: &str = "capture_without_credentials_in_a_child";

#[test]
fn missing_credentials_are_a_gateway_error() {
    util::aws_test_env();
    // The environment is process-wide: run the capture in a child test process without credentials.
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([NO_CREDENTIALS_CHILD, "--exact", "--ignored", "--nocapture"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("GATEVAULT_TEST_NO_CREDENTIALS", "1")
        .output()
        .expect("the test binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the child test did not run:\n{text}"
    );
}

#[test]
#[ignore = "run by missing_credentials_are_a_gateway_error in a child without credentials"]
fn capture_without_credentials_in_a_child() {
    assert_eq!(
        std::env::var("GATEVAULT_TEST_NO_CREDENTIALS").as_deref(),
        Ok("1"),
        "run through missing_credentials_are_a_gateway_error"
    );
    assert!(std::env::var_os("AWS_ACCESS_KEY_ID").is_none());
    // Nothing listens there; the SDK must stop before sending for want of credentials.
    let endpoint = format!("http://127.0.0.1:{}", util::free_port());
    match gateway::capture(&options(&endpoint, false)) {
        Err(Error::Gateway { reason, .. }) => {
            eprintln!("reason: {reason}");
            assert!(reason.contains("no usable AWS credentials"), "{reason}");
            assert!(reason.contains("AWS_ACCESS_KEY_ID"), "{reason}");
        }
        other => panic!("expected a gateway error, got {other:?}"),
    }
}

#[test]
fn cli_backup_of_aws_round_trips() {
    let Some(moto) = util::moto(&[]) else {
        return;
    };
    seed(&moto, &[]);
    let docs = capture(&moto, false).documents().unwrap();
    let r = util::Repo::init();
    let url = moto.url();
    let args = [
        "backup",
        "--gateway",
        "aws",
        "--endpoint",
        &url,
        "--region",
        REGION,
    ];
    let s = r.run_json(args);
    assert!(s["files_new"].as_u64().unwrap() > 10, "{s}");
    let target = r.scratch("restored");
    r.restore("latest", &target, &[]);
    for (path, bytes) in &docs {
        assert_eq!(&std::fs::read(target.join(path)).unwrap(), bytes, "{path}");
    }
    // moto's export changes on every call; the entities do not: a second backup changes nothing
    // but the raw export.
    let again = r.run_json(args);
    assert!(again["files_changed"].as_u64().unwrap() <= 1, "{again}");
    assert_eq!(again["files_new"], 0, "{again}");
    let snaps = r.snapshots();
    assert_eq!(snaps[0]["source"]["kind"], "aws");
}
