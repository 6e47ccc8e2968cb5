//! Kong capture against the fake Admin API (`tests/fixtures/fake_kong.py`; Kong itself cannot run on
//! the test machines) and from decK files.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gatevault::gateway::{self, canonical, GatewayOptions};
use gatevault::Error;
use serde_json::{json, Value};
use util::{fake_kong, Repo, Runner};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateways/kong/kong.yaml")
}

fn deck() -> Value {
    canonical::parse_json_or_yaml(&std::fs::read(fixture()).unwrap()).unwrap()
}

fn admin(endpoint: &str) -> GatewayOptions {
    GatewayOptions {
        kind: "kong".into(),
        endpoint: Some(endpoint.into()),
        ..Default::default()
    }
}

fn file_opts(p: &Path) -> GatewayOptions {
    GatewayOptions {
        kind: "kong".into(),
        file: Some(p.to_path_buf()),
        ..Default::default()
    }
}

/// The entity documents of a capture (not the manifest, raw exports or decK metadata).
fn entity_docs(c: &gateway::Capture) -> BTreeMap<String, String> {
    c.documents()
        .unwrap()
        .into_iter()
        .filter(|(p, _)| p.starts_with("kong/") && p != "kong/_deck.json")
        .map(|(p, b)| (p, String::from_utf8(b).unwrap()))
        .collect()
}

#[test]
fn admin_api_and_deck_file_give_the_same_entities() {
    // A page cap of 2 makes every collection span several pages.
    let Some(kong) = fake_kong(&["--page-cap", "2"]) else {
        return;
    };
    util::kong_load(&kong.url(), &deck());
    let live = gateway::capture(&admin(&kong.url())).unwrap();
    let file = gateway::capture(&file_opts(&fixture())).unwrap();
    assert_eq!(entity_docs(&live), entity_docs(&file));
    assert_eq!(live.source.version.as_deref(), Some("3.9.0-fake"));
    assert!(live.raw.contains_key("kong-admin.json"));
    // Everything the fixture holds was found, across pages.
    let docs = entity_docs(&live);
    for p in [
        "kong/services/orders.json",
        "kong/routes/orders-post.json",
        "kong/plugins/rate-limiting@route=orders-get.json",
        "kong/plugins/rate-limiting@consumer=alice.json",
        "kong/plugins/prometheus@global.json",
        "kong/keyauth_credentials/alice@0b6f2f1c-5d7c-4f6e-9a51-3b2f8f5a0001.json",
        "kong/basicauth_credentials/bob@bob-basic.json",
        "kong/jwt_secrets/alice@iss-alice.json",
        "kong/acls/alice@team-core.json",
        "kong/consumer_groups/gold.json",
        "kong/targets/orders-upstream@10.0.0.2:8080.json",
        "kong/snis/api.example.com.json",
        "kong/vaults/env-vault.json",
    ] {
        assert!(docs.contains_key(p), "{p} missing from {:?}", docs.keys());
    }
    assert!(docs["kong/consumer_groups/gold.json"].contains("alice"));
    // Timestamps and surrogate ids are gone; identities stay.
    assert!(!docs.values().any(|d| d.contains("created_at")));
    assert!(!docs["kong/routes/orders-get.json"].contains("\"id\""));
    // Capturing again gives the same bytes, manifest included.
    let again = gateway::capture(&admin(&kong.url())).unwrap();
    assert_eq!(again.documents().unwrap(), live.documents().unwrap());
}

#[test]
fn secrets_and_personal_fields_are_marked() {
    let c = gateway::capture(&file_opts(&fixture())).unwrap();
    let by: BTreeMap<&str, &gateway::Entity> =
        c.entities.iter().map(|e| (e.path.as_str(), e)).collect();
    let k = by["kong/keyauth_credentials/alice@0b6f2f1c-5d7c-4f6e-9a51-3b2f8f5a0001.json"];
    assert_eq!(k.secrets, ["/key"]);
    assert_eq!(k.subject.as_deref(), Some("kong:consumer=alice"));
    assert_eq!(
        by["kong/basicauth_credentials/bob@bob-basic.json"].secrets,
        ["/password"]
    );
    assert_eq!(
        by["kong/jwt_secrets/alice@iss-alice.json"].secrets,
        ["/secret"]
    );
    assert_eq!(
        by["kong/plugins/rate-limiting@route=orders-get.json"].secrets,
        ["/config/redis_password"]
    );
    assert_eq!(
        by["kong/certificates/6a0c1e8a-1f3e-4c55-8d2b-2f1a9c0e0001.json"].secrets,
        ["/key"]
    );
    assert_eq!(
        by["kong/consumers/alice.json"].personal,
        ["/username", "/custom_id"]
    );
    let docs = c.documents().unwrap();
    let manifest = gateway::Manifest::parse(&docs[gateway::MANIFEST]).unwrap();
    assert_eq!(
        manifest.entities["kong/jwt_secrets/alice@iss-alice.json"].secrets,
        ["/secret"]
    );
}

#[test]
fn workspaces_are_captured_apart() {
    let Some(kong) = fake_kong(&[]) else {
        return;
    };
    util::kong_send(
        "POST",
        &format!("{}/workspaces", kong.url()),
        &json!({"name": "team"}),
    );
    util::kong_send(
        "POST",
        &format!("{}/team/services", kong.url()),
        &json!({"name": "team-svc", "host": "t.svc"}),
    );
    util::kong_send(
        "POST",
        &format!("{}/services", kong.url()),
        &json!({"name": "default-svc", "host": "d.svc"}),
    );
    let mut o = admin(&kong.url());
    o.workspace = Some("team".into());
    let team = gateway::capture(&o).unwrap();
    let docs = entity_docs(&team);
    assert!(docs.contains_key("kong/services/team-svc.json"));
    assert!(!docs.contains_key("kong/services/default-svc.json"));
    assert_eq!(team.source.scope.as_deref(), Some("workspace team"));
    o.workspace = Some("nowhere".into());
    let e = gateway::capture(&o).unwrap_err().to_string();
    assert!(e.contains("nowhere"), "{e}");
    // Names and tags Kong itself refuses are refused before anything is asked, naming them.
    o.workspace = Some("team/../x".into());
    let e = gateway::capture(&o).unwrap_err().to_string();
    assert!(e.contains("workspace name \"team/../x\""), "{e}");
    o.workspace = Some("team".into());
    o.select_tags = vec!["a,b".into()];
    let e = gateway::capture(&o).unwrap_err().to_string();
    assert!(e.contains("tag \"a,b\""), "{e}");
    let mut f = file_opts(&fixture());
    f.select_tags = vec!["x; y".into(), "z".into()];
    let c = gateway::capture(&f).unwrap();
    assert_eq!(
        gatevault::gateway::kong::scope_parts(c.source.scope.as_deref()).1,
        vec!["x; y".to_string(), "z".to_string()],
        "a tag holding `; ` is recorded whole"
    );
}

#[test]
fn rate_limits_are_waited_out_and_failures_are_clear() {
    let Some(kong) = fake_kong(&[]) else {
        return;
    };
    util::kong_load(&kong.url(), &deck());
    let fault = |f: Value| util::kong_send("POST", &format!("{}/_fake/fault", kong.url()), &f);
    // One 429 with Retry-After: 1 is waited out.
    fault(json!({"path": "/routes", "status": 429, "retry_after": 1, "times": 1}));
    let c = gateway::capture(&admin(&kong.url())).unwrap();
    assert!(c
        .entities
        .iter()
        .any(|e| e.path == "kong/routes/orders-get.json"));
    // A page that keeps failing fails the capture, naming the URL; nothing partial comes back.
    fault(json!({"path": "/consumers", "status": 503, "times": 10}));
    let e = gateway::capture(&admin(&kong.url())).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Gateway { .. }) && msg.contains("/consumers") && msg.contains("503"),
        "{msg}"
    );
    util::kong_send("POST", &format!("{}/_fake/reset", kong.url()), &json!({}));
    // Malformed JSON is named as such.
    fault(json!({"path": "/services", "body": "{not json", "times": 1}));
    let msg = gateway::capture(&admin(&kong.url()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("malformed JSON"), "{msg}");
}

#[test]
fn db_less_kong_is_read_through_get_config() {
    let Some(kong) = fake_kong(&["--dbless"]) else {
        return;
    };
    util::kong_send(
        "POST",
        &format!("{}/config", kong.url()),
        &json!({"config": serde_json::to_string(&deck()).unwrap()}),
    );
    let live = gateway::capture(&admin(&kong.url())).unwrap();
    let file = gateway::capture(&file_opts(&fixture())).unwrap();
    assert_eq!(entity_docs(&live), entity_docs(&file));
    assert!(live.raw.contains_key("kong-config.yaml"));
}

#[test]
fn cli_backup_of_kong_round_trips_and_refuses_bad_tokens() {
    let Some(kong) = fake_kong(&["--token", "s3cret-token"]) else {
        return;
    };
    let r = Repo::init();
    // Without the token: a clear error, no snapshot.
    let out = r.run(["backup", "--gateway", "kong", "--endpoint", &kong.url()]);
    util::assert_code(&out, util::code::FAILURE);
    let err = util::stderr(&out);
    assert!(
        err.contains("401") && err.contains("KONG_ADMIN_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("s3cret-token"));
    assert!(r.snapshots().is_empty());
    // With it (from the environment, never the command line).
    let mut c = r.cmd();
    c.env("KONG_ADMIN_TOKEN", "s3cret-token");
    // Load through the API with the token header.
    for (path, body) in [
        ("services", json!({"name": "orders", "host": "o.svc"})),
        (
            "services/orders/routes",
            json!({"name": "orders-get", "paths": ["/o"]}),
        ),
        ("consumers", json!({"username": "alice"})),
        ("consumers/alice/key-auths", json!({"key": "alice-key"})),
    ] {
        ureq::post(&format!("{}/{path}", kong.url()))
            .set("Kong-Admin-Token", "s3cret-token")
            .send_json(body)
            .unwrap();
    }
    let out = c
        .args([
            "backup",
            "--json",
            "--gateway",
            "kong",
            "--endpoint",
            &kong.url(),
            "--tag",
            "Environment=prod",
            "--tag",
            "BackupType=full",
        ])
        .output()
        .unwrap();
    util::assert_code(&out, util::code::OK);
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["source"]["kind"], "kong");
    assert_eq!(snaps[0]["source"]["version"], "3.9.0-fake");
    assert_eq!(snaps[0]["tags"]["Environment"], "prod");
    // Restore the files, canonicalize them again: the same bytes.
    let target = r.scratch("restored");
    r.restore("latest", &target, &[]);
    let restored = std::fs::read(target.join("kong/routes/orders-get.json")).unwrap();
    let v: Value = serde_json::from_slice(&restored).unwrap();
    assert_eq!(canonical::to_bytes(&v), restored);
    assert_eq!(v["service"], "orders");
    // Entities live inline in trees: check covers them, dump and diff read them.
    assert!(r.run_ok(["check", "--read-data"]).contains("Success"));
    let dumped = r.run_ok(["dump", "latest", "kong/routes/orders-get.json"]);
    assert_eq!(dumped.as_bytes(), &restored[..]);
}

/// An independent reading of the generator's decK JSON: every entity as `kind key` to its content,
/// written from the generator's own structure (not from gatevault's splitting code).
const FLATTEN: &str = r#"
import json, sys
def flat(path):
    d = json.load(open(path)); out = {}
    def put(kind, key, v): out["%s %s" % (kind, key)] = json.dumps(v, sort_keys=True)
    for s in d.get("services", []):
        put("service", s["name"], {k: v for k, v in s.items() if k not in ("routes", "plugins", "id")})
        for p in s.get("plugins", []): put("plugin", "%s@service=%s" % (p["name"], s["name"]), p["config"])
        for r in s.get("routes", []):
            put("route", r["name"], {k: v for k, v in r.items() if k not in ("plugins", "id")})
            for p in r.get("plugins", []): put("plugin", "%s@route=%s" % (p["name"], r["name"]), p["config"])
    for c in d.get("consumers", []):
        u = c["username"]
        put("consumer", u, {k: c.get(k) for k in ("custom_id", "tags")})
        for k in c.get("keyauth_credentials", []): put("keyauth_credential", "%s@%s" % (u, k["id"]), k)
        for a in c.get("acls", []): put("acl", "%s@%s" % (u, a["group"]), a["group"])
        for j in c.get("jwt_secrets", []): put("jwt_secret", "%s@%s" % (u, j["key"]), j)
    for up in d.get("upstreams", []):
        put("upstream", up["name"], {k: v for k, v in up.items() if k not in ("targets", "id")})
        for t in up.get("targets", []): put("target", "%s@%s" % (up["name"], t["target"]), t["weight"])
    for c in d.get("certificates", []):
        put("certificate", c["id"], [c["cert"], c["key"], c.get("tags")])
        for s in c.get("snis", []): put("sni", s["name"], c["id"])
    return out
a, b = flat(sys.argv[1]), flat(sys.argv[2])
changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
print(json.dumps(changed))
"#;

#[test]
fn diff_lists_exactly_the_entities_the_generator_changed() {
    let r = Repo::init();
    let hist = r.scratch("hist");
    if !util::gen_history(
        &hist,
        60,
        6,
        5,
        &["--change-rate", "0.03", "--kong-format", "json"],
    ) {
        return;
    }
    // The same live path every time, as a user backing up one gateway would.
    let live = r.scratch("live");
    std::fs::create_dir_all(&live).unwrap();
    let live = live.join("kong.json");
    let mut ids = vec![];
    for v in 0..6 {
        std::fs::copy(hist.join(format!("v{v:04}/kong.json")), &live).unwrap();
        let s = r.run_json(["backup", "--gateway", "kong", "--file", util::s(&live)]);
        ids.push(s["snapshot_id"].as_str().unwrap().to_string());
    }
    let mut total = 0;
    for v in 1..6 {
        let want = std::process::Command::new("python3")
            .args(["-c", FLATTEN])
            .arg(hist.join(format!("v{:04}/kong.json", v - 1)))
            .arg(hist.join(format!("v{v:04}/kong.json")))
            .output()
            .unwrap();
        let want: Vec<String> = serde_json::from_slice(&want.stdout).unwrap();
        let got = r.run_json(["diff", &ids[v - 1], &ids[v]]);
        let mut got: Vec<String> = got["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] != "raw" && e["kind"] != "deck")
            .map(|e| {
                format!(
                    "{} {}",
                    e["kind"].as_str().unwrap(),
                    e["key"].as_str().unwrap()
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "version {v}");
        total += want.len();
    }
    assert!(total > 10, "the generator changed only {total} entities");
}

#[test]
fn log_and_export_follow_an_entity_and_rebuild_the_deck_file() {
    let r = Repo::init();
    let dir = r.scratch("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("kong.yaml");
    let text = std::fs::read_to_string(fixture()).unwrap();
    for version in [
        text.clone(),
        text.replace("minute: 60,", "minute: 90,"),
        text.replace("alice-secret-key-1", "alice-secret-key-2"),
    ] {
        std::fs::write(&f, version).unwrap();
        let args = [
            "backup",
            "--gateway",
            "kong",
            "--tag",
            "Environment=prod",
            "--file",
        ];
        r.run_ok(args.iter().copied().chain([util::s(&f)]));
    }
    // The plugin changed once (60 -> 90) and back once.
    let log = r.run_json([
        "log",
        "--entity",
        "kong/plugins/rate-limiting@route=orders-get",
    ]);
    let h = log["history"].as_array().unwrap();
    assert_eq!(h.len(), 3, "{log}");
    assert_eq!(h[0]["change"], "added");
    assert_eq!(h[1]["fields"][0]["pointer"], "/config/minute");
    assert_eq!(h[1]["fields"][0]["new"], 90);
    // A secret's change is shown masked unless asked for.
    let ids = r.snapshot_ids();
    let d = r.run_ok(["diff", &ids[1], &ids[2]]);
    assert!(d.contains("/key") && !d.contains("alice-secret-key"), "{d}");
    let shown = r.run_ok(["diff", "--show-secrets", &ids[1], &ids[2]]);
    assert!(shown.contains("alice-secret-key-2"), "{shown}");
    // Export writes the decK file under the conventional name; it reads back to the same entities.
    let out = r.scratch("export");
    std::fs::create_dir_all(&out).unwrap();
    r.run_ok(["export", &ids[0], "--format", "deck", "-o", util::s(&out)]);
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("kong-prod-") && name.ends_with("-full.yaml"),
        "{name}"
    );
    let again = gateway::capture(&file_opts(&files[0])).unwrap();
    let orig = gateway::capture(&file_opts(&fixture())).unwrap();
    assert_eq!(entity_docs(&again), entity_docs(&orig));
    // A second export into the same folder does not overwrite.
    util::assert_code(
        &r.run(["export", &ids[0], "--format", "deck", "-o", util::s(&out)]),
        util::code::FAILURE,
    );
}
