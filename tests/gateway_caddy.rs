//! Caddy capture against a real `caddy run` on loopback: the admin API on a free port, the sample
//! config of `examples/caddy/caddy.json` (on free ports, plus a basic-auth route and a `load_pem`
//! certificate) loaded through `POST /load`.
//!
//! Without caddy (or openssl, which makes the certificate) the test prints why it skips, unless
//! `GATEVAULT_REQUIRE_SERVICES=1`, which makes it fail instead.

mod util;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;

use gatevault::gateway::{self, GatewayOptions, Manifest};
use gatevault::Error;
use serde_json::{json, Value};

/// A bcrypt hash of `example-password`.
const HASH: &str = "$2a$14$ONYr17eYnLWun3vh7rSn0umSVvie9cSWZu0E5s3AWio/9tTX9W2ky";

/// A Caddy on loopback, stopped when dropped.
struct Caddy {
    _svc: util::Service,
    admin: String,
    _dir: tempfile::TempDir,
}

fn start_caddy() -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let (svc, admin) = util::caddy(dir.path());
    Caddy {
        _svc: svc,
        admin,
        _dir: dir,
    }
}

use util::http;

fn load(caddy: &Caddy, config: &Value) {
    let (status, body) = http(&caddy.admin, "POST", "/load", &config.to_string()).unwrap();
    assert_eq!(status, 200, "POST /load: {body}");
}

/// The sample config on free ports, with a basic-auth route, an id-less route and a certificate.
fn config(admin: &str, cert: &str, key: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/caddy/caddy.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    c["admin"]["listen"] = json!(admin.trim_start_matches("http://"));
    let servers = c["apps"]["http"]["servers"].as_object_mut().unwrap();
    for s in servers.values_mut() {
        s["listen"] = json!([format!("127.0.0.1:{}", util::free_port())]);
    }
    let internal = servers["internal"]["routes"].as_array_mut().unwrap();
    internal[0].as_object_mut().unwrap().remove("@id");
    internal.insert(
        1,
        json!({
            "@id": "admin-area",
            "match": [{"path": ["/admin/*"]}],
            "handle": [{
                "handler": "authentication",
                "providers": {"http_basic": {"accounts": [{"username": "alice", "password": HASH}]}}
            }]
        }),
    );
    c["apps"]["tls"] = json!({
        "certificates": {"load_pem": [{"certificate": cert, "key": key, "tags": ["api"]}]}
    });
    c
}

fn capture(endpoint: &str) -> gatevault::Result<gateway::Capture> {
    gateway::capture(&GatewayOptions {
        kind: "caddy".into(),
        endpoint: Some(endpoint.into()),
        ..Default::default()
    })
}

#[test]
fn caddy_admin_api_capture() {
    if !util::have_all(&["caddy", "openssl"]) {
        return;
    }
    let caddy = start_caddy();
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = util::real_cert(tmp.path());
    let (cert, key) = (
        String::from_utf8(cert).unwrap(),
        String::from_utf8(key).unwrap(),
    );
    let mut cfg = config(&caddy.admin, &cert, &key);
    load(&caddy, &cfg);

    let c = capture(&caddy.admin).unwrap();
    assert_eq!(c.source.kind, "caddy");
    assert_eq!(c.source.endpoint, caddy.admin);
    let docs = c.documents().unwrap();
    let m = Manifest::parse(&docs[gateway::MANIFEST]).unwrap();
    for p in [
        "caddy/admin.json",
        "caddy/logging.json",
        "caddy/apps/http.json",
        "caddy/apps/tls.json",
        "caddy/apps/http/servers/edge.json",
        "caddy/apps/http/servers/internal.json",
        "caddy/apps/tls/certificates/api.json",
        "raw/caddy.json",
    ] {
        assert!(docs.contains_key(p), "{p} missing: {:?}", docs.keys());
    }
    // Route order is kept in the server document; one document per route.
    let edge: Value = serde_json::from_slice(&docs["caddy/apps/http/servers/edge.json"]).unwrap();
    let order = [
        "healthz",
        "deny-missing-api-key",
        "shed-bulk-exports",
        "catalog",
        "orders",
        "inventory",
        "users",
        "fallback",
    ];
    assert_eq!(edge["route_keys"], json!(order));
    assert!(edge.get("routes").is_none());
    for k in order {
        let p = format!("caddy/apps/http/servers/edge/routes/{k}.json");
        let r: Value = serde_json::from_slice(&docs[&p]).unwrap();
        assert_eq!(r["@id"], json!(k));
        assert_eq!(m.entry(&p).unwrap().kind, "route");
        assert_eq!(m.entry(&p).unwrap().key, format!("edge/{k}"));
    }
    let internal: Value =
        serde_json::from_slice(&docs["caddy/apps/http/servers/internal.json"]).unwrap();
    assert_eq!(
        internal["route_keys"],
        json!(["/reports/*", "admin-area", "internal-deny"])
    );
    assert!(docs.contains_key("caddy/apps/http/servers/internal/routes/%2Freports%2F%2A.json"));
    // Secrets and personal data are marked.
    let auth = &m
        .entry("caddy/apps/http/servers/internal/routes/admin-area.json")
        .unwrap();
    assert_eq!(
        auth.secrets,
        vec!["/handle/0/providers/http_basic/accounts/0/password"]
    );
    assert_eq!(
        auth.personal,
        vec!["/handle/0/providers/http_basic/accounts/0/username"]
    );
    assert_eq!(
        m.entry("caddy/apps/tls/certificates/api.json")
            .unwrap()
            .secrets,
        vec!["/key"]
    );
    let pem: Value = serde_json::from_slice(&docs["caddy/apps/tls/certificates/api.json"]).unwrap();
    assert_eq!(pem["key"], json!(key));
    let raw: Value = serde_json::from_slice(&docs["raw/caddy.json"]).unwrap();
    assert_eq!(
        raw["apps"]["http"]["servers"]["edge"]["routes"][0]["@id"],
        "healthz"
    );

    // Twice gives the same documents.
    assert_eq!(capture(&caddy.admin).unwrap().documents().unwrap(), docs);

    // A change to one route changes that route's document (and the raw export) only.
    cfg["apps"]["http"]["servers"]["edge"]["routes"][5]["handle"][0]["upstreams"] =
        json!([{"dial": "127.0.0.1:9302"}]);
    load(&caddy, &cfg);
    let after = capture(&caddy.admin).unwrap().documents().unwrap();
    let changed: Vec<&String> = after
        .iter()
        .filter(|(p, b)| docs.get(*p) != Some(b))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        changed,
        vec![
            "caddy/apps/http/servers/edge/routes/inventory.json",
            "raw/caddy.json"
        ]
    );
    assert_eq!(after.len(), docs.len());

    // A config file gives the same layout as the live admin API.
    let file = tmp.path().join("caddy.json");
    std::fs::write(&file, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let from_file = gateway::capture(&GatewayOptions {
        kind: "caddy".into(),
        file: Some(file.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        from_file.source.endpoint,
        format!("file:{}", file.display())
    );
    let fdocs = from_file.documents().unwrap();
    let entity_docs = |d: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        d.iter()
            .filter(|(p, _)| p.starts_with("caddy/"))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect()
    };
    assert_eq!(entity_docs(&fdocs), entity_docs(&after));
}

#[test]
fn caddy_errors_are_gateway_errors() {
    let port = util::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let e = capture(&endpoint).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Gateway { .. }), "{e:?}");
    assert!(
        msg.contains(&endpoint) && msg.contains("--endpoint"),
        "{msg}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("caddy.json");
    std::fs::write(&bad, "{not json").unwrap();
    let opts = GatewayOptions {
        kind: "caddy".into(),
        file: Some(bad.clone()),
        ..Default::default()
    };
    assert!(matches!(
        gateway::capture(&opts),
        Err(Error::Gateway { .. })
    ));
    std::fs::write(&bad, "null").unwrap();
    let c = gateway::capture(&opts).unwrap();
    assert!(c.entities.is_empty());
}

#[test]
fn caddy_refusals_are_gateway_errors() {
    // A stand-in admin API that refuses every request with 403.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let body = "{\"error\":\"client is not allowed to access from origin ''\"}";
        let _ = write!(
            s,
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let e = capture(&endpoint).unwrap_err();
    server.join().unwrap();
    let msg = e.to_string();
    assert!(matches!(e, Error::Gateway { .. }), "{e:?}");
    assert!(msg.contains("403") && msg.contains("origin"), "{msg}");
}
