//! The `files` gateway against the fixtures in `tests/fixtures/gateways/`: an Azure API Management
//! APIOps extractor tree, a Google service config and an Envoy config dump.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gatevault::gateway::{self, files, Capture, GatewayOptions, Manifest, ManifestEntry};
use gatevault::Error;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gateways")
        .join(name)
}

fn capture(path: &Path) -> gatevault::Result<Capture> {
    gateway::capture(&GatewayOptions {
        kind: "files".into(),
        file: Some(path.to_path_buf()),
        ..Default::default()
    })
}

fn entries(c: &Capture) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, ManifestEntry>) {
    let docs = c.documents().unwrap();
    let m = Manifest::parse(&docs[gateway::MANIFEST]).unwrap();
    // Every entity, listed in the manifest or derived from its path.
    let all = docs
        .keys()
        .filter_map(|p| m.entry(p).map(|e| (p.clone(), e)))
        .collect();
    (docs, all)
}

fn json_doc(docs: &BTreeMap<String, Vec<u8>>, p: &str) -> Value {
    serde_json::from_slice(&docs[p]).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn apiops_tree_gives_kinds_keys_and_marks() {
    let dir = fixture("apiops");
    let c = capture(&dir).unwrap();
    assert_eq!(c.source.kind, "files");
    assert_eq!(c.source.endpoint, format!("file:{}", dir.display()));
    let (docs, m) = entries(&c);
    let kinds: BTreeMap<&str, (&str, &str)> = m
        .iter()
        .map(|(p, e)| (p.as_str(), (e.kind.as_str(), e.key.as_str())))
        .collect();
    let expect: BTreeMap<&str, (&str, &str)> = [
        (
            "files/apis/orders-api/apiInformation.json",
            ("api", "orders-api"),
        ),
        (
            "files/apis/orders-api/specification.yaml.json",
            ("api-specification", "orders-api"),
        ),
        (
            "files/apis/orders-api/policy.xml",
            ("api-policy", "orders-api"),
        ),
        (
            "files/apis/orders-api/operations/get-order/policy.xml",
            ("operation-policy", "orders-api/get-order"),
        ),
        ("files/policy.xml", ("service-policy", "service")),
        (
            "files/namedValues/backend-url/namedValueInformation.json",
            ("named-value", "backend-url"),
        ),
        (
            "files/namedValues/db-password/namedValueInformation.json",
            ("named-value", "db-password"),
        ),
        (
            "files/namedValues/kv-secret/namedValueInformation.json",
            ("named-value", "kv-secret"),
        ),
        (
            "files/products/starter/productInformation.json",
            ("product", "starter"),
        ),
        (
            "files/products/starter/apis.json",
            ("product-apis", "starter"),
        ),
        (
            "files/backends/orders-backend/backendInformation.json",
            ("backend", "orders-backend"),
        ),
        (
            "files/loggers/appinsights/loggerInformation.json",
            ("logger", "appinsights"),
        ),
        (
            "files/gateways/onprem/gatewayInformation.json",
            ("gateway", "onprem"),
        ),
        (
            "files/subscriptions/alice-starter/subscriptionInformation.json",
            ("subscription", "alice-starter"),
        ),
    ]
    .into_iter()
    .collect();
    // The hidden extractor state is skipped.
    assert_eq!(kinds, expect);

    let sub = &m["files/subscriptions/alice-starter/subscriptionInformation.json"];
    assert_eq!(
        sub.secrets,
        vec!["/properties/primaryKey", "/properties/secondaryKey"]
    );
    assert_eq!(sub.personal, vec!["/properties/ownerId"]);
    assert_eq!(sub.subject.as_deref(), Some("apim:user=alice"));
    assert_eq!(
        m["files/backends/orders-backend/backendInformation.json"].secrets,
        vec!["/properties/credentials/header"]
    );
    assert_eq!(
        m["files/loggers/appinsights/loggerInformation.json"].secrets,
        vec!["/properties/credentials"]
    );
    assert!(
        m["files/namedValues/backend-url/namedValueInformation.json"]
            .secrets
            .is_empty()
    );

    // Secret named values exported without a value (and not in Key Vault) cannot be restored.
    assert_eq!(files::unrestorable(&c), vec!["db-password"]);

    // JSON is canonical (sorted keys); YAML becomes canonical JSON with its original kept raw;
    // XML is verbatim.
    let api = &docs["files/apis/orders-api/apiInformation.json"];
    assert_eq!(
        api,
        &gateway::canonical::to_bytes(&serde_json::from_slice(api).unwrap())
    );
    let spec = json_doc(&docs, "files/apis/orders-api/specification.yaml.json");
    assert_eq!(
        spec["paths"]["/orders/{id}"]["get"]["operationId"],
        "get-order"
    );
    let yaml = std::fs::read(dir.join("apis/orders-api/specification.yaml")).unwrap();
    assert_eq!(docs["raw/apis%2Forders-api%2Fspecification.yaml"], yaml);
    assert_eq!(
        docs["files/apis/orders-api/policy.xml"],
        std::fs::read(dir.join("apis/orders-api/policy.xml")).unwrap()
    );
}

#[test]
fn google_service_config_keeps_its_id() {
    let c = capture(&fixture("google")).unwrap();
    let (docs, m) = entries(&c);
    let p = "files/orders-service.yaml.json";
    assert_eq!(m[p].kind, "service-config");
    assert_eq!(
        m[p].key,
        "orders.endpoints.shop-demo.cloud.goog/2024-05-01r0"
    );
    let v = json_doc(&docs, p);
    assert_eq!(v["id"], "2024-05-01r0");
    assert_eq!(v["backend"]["rules"][0]["deadline"], json!(15.0));
    // A single file works as well as its folder.
    let mut one = capture(&fixture("google").join("orders-service.yaml"))
        .unwrap()
        .documents()
        .unwrap();
    let mut docs = docs;
    one.remove(gateway::MANIFEST);
    docs.remove(gateway::MANIFEST);
    assert_eq!(one, docs);
}

#[test]
fn envoy_config_dump_is_split_by_resource() {
    let c = capture(&fixture("envoy")).unwrap();
    let (docs, m) = entries(&c);
    let kinds: BTreeMap<&str, &str> = m
        .iter()
        .map(|(p, e)| (p.as_str(), e.kind.as_str()))
        .collect();
    let d = "files/config_dump";
    let expect: BTreeMap<String, &str> = [
        ("bootstrap.json", "envoy-bootstrap"),
        ("listeners/admin_probe.json", "listener"),
        ("listeners/https.json", "listener"),
        ("clusters/orders.json", "cluster"),
        ("clusters/catalog.json", "cluster"),
        ("routes/api.json", "route-config"),
        ("secrets/api-cert.json", "secret"),
        ("secrets/hmac.json", "secret"),
    ]
    .into_iter()
    .map(|(p, k)| (format!("{d}/{p}"), k))
    .collect();
    assert_eq!(
        kinds,
        expect.iter().map(|(p, k)| (p.as_str(), *k)).collect()
    );
    assert_eq!(
        m[&format!("{d}/secrets/api-cert.json")].secrets,
        vec!["/tls_certificate/private_key"]
    );
    assert_eq!(
        m[&format!("{d}/secrets/hmac.json")].secrets,
        vec!["/generic_secret/secret"]
    );
    // The resource itself, volatile fields gone.
    let https = json_doc(&docs, &format!("{d}/listeners/https.json"));
    assert_eq!(https["name"], "https");
    assert_eq!(https["address"]["socket_address"]["port_value"], 8443);
    let boot = json_doc(&docs, &format!("{d}/bootstrap.json"));
    assert_eq!(boot["node"]["id"], "edge-1");
    for (p, b) in &docs {
        let text = String::from_utf8_lossy(b);
        assert!(
            !text.contains("last_updated") && !text.contains("version_info"),
            "{p}"
        );
    }
    assert!(c.raw.is_empty());
}

#[test]
fn canonicalizing_twice_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["apiops", "google", "envoy"] {
        let docs = capture(&fixture(name)).unwrap().documents().unwrap();
        assert_eq!(capture(&fixture(name)).unwrap().documents().unwrap(), docs);
        // Capturing the captured documents (minus raw and manifest) gives them again.
        let out = tmp.path().join(name);
        for (p, b) in &docs {
            if let Some(rel) = p.strip_prefix("files/") {
                let f = out.join(rel);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(f, b).unwrap();
            }
        }
        let again = capture(&out).unwrap().documents().unwrap();
        for (p, b) in &docs {
            if let Some(rel) = p.strip_prefix("files/") {
                assert_eq!(again.get(p), Some(b), "{name}: {p} ({rel})");
            }
        }
    }
}

#[test]
fn files_errors() {
    let e = gateway::capture(&GatewayOptions {
        kind: "files".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)) && e.to_string().contains("--file"));
    let e = capture(Path::new("/nonexistent/gatevault-fixture")).unwrap_err();
    assert!(matches!(e, Error::Gateway { .. }), "{e:?}");
}
