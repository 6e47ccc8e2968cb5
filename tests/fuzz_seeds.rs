//! The seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) run as ordinary tests, and their
//! generator.
//!
//! Generated seeds are named for what their target must do with them: `accept-*` seeds must go all the
//! way down the success path (`gatevault::fuzzing::check_<target>` returns true), `reject-*` seeds must be
//! turned away. Any other file in a corpus directory (a local `cargo fuzz run` adds some) only must not
//! panic. Regenerate the seeds after a format change with
//! `cargo test --release --test fuzz_seeds -- --ignored regenerate_fuzz_seeds`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use gatevault::crypto::keyslot::{Credential, KdfParams, KeySlot, Role};
use gatevault::crypto::{Cipher, Kind};
use gatevault::format::{
    self, BlobType, IndexFile, IndexPack, Node, NodeType, PackEntry, Snapshot, Summary, Tree,
};
use gatevault::fuzzing::{self, Target, TARGETS};
use gatevault::id::{BlobId, IndexId, PackId, SnapshotId};
use gatevault::pack::{self, PackBuilder};

/// The committed seeds of one target may not exceed this many bytes in all.
const MAX_SEED_BYTES: u64 = 64 * 1024;
/// Nor may its whole corpus, seeds and what `scripts/fuzz merge` added.
const MAX_CORPUS_BYTES: u64 = 512 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> Target {
    *TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// What a target must do with a corpus file, from its name.
fn expectation(file_name: &str) -> Option<bool> {
    if file_name.starts_with("accept-") {
        Some(true)
    } else if file_name.starts_with("reject-") {
        Some(false)
    } else {
        None
    }
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`, in order.
fn fuzz_crate_bins() -> Vec<String> {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(v) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(v) = v.strip_prefix('=') {
                    names.push(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    names
}

#[test]
fn fuzz_crate_lists_every_target() {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        fuzz_crate_bins(),
        names,
        "fuzz/Cargo.toml [[bin]]s and gatevault::fuzzing::TARGETS differ"
    );
    for name in names {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let src = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(src.contains("#![no_main]"), "{name}.rs lacks #![no_main]");
        assert!(
            src.contains(&format!("gatevault::fuzzing::{name}(data)")),
            "{name}.rs does not call gatevault::fuzzing::{name}"
        );
    }
}

#[test]
fn every_seed_runs_and_meets_its_expectation() {
    let generated = seeds();
    for t in TARGETS {
        let dir = fuzz_dir().join("corpus").join(t.name);
        assert!(
            dir.is_dir(),
            "corpus directory {} is missing",
            dir.display()
        );
        let mut files: Vec<_> = fs::read_dir(&dir)
            .expect("corpus directory lists")
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let (mut accepted, mut rejected, mut seed_bytes, mut corpus_bytes) = (0, 0, 0, 0);
        let mut seed_names = BTreeSet::new();
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = fs::read(path).expect("seed reads");
            corpus_bytes += data.len() as u64;
            (t.run)(&data);
            let ok = (t.check)(&data);
            let Some(want) = expectation(&name) else {
                continue;
            };
            assert_eq!(
                ok,
                want,
                "{}: target {} should {} it",
                name,
                t.name,
                if want { "accept" } else { "reject" }
            );
            seed_bytes += data.len() as u64;
            if ok {
                accepted += 1;
            } else {
                rejected += 1;
            }
            for m in mutations(&data) {
                (t.check)(&m); // must not panic
            }
            if ok {
                tamper_checks(t, &name, &data);
            }
            seed_names.insert(name);
        }
        assert!(
            accepted + rejected >= 3,
            "{}: only {} seeds",
            t.name,
            accepted + rejected
        );
        assert!(accepted >= 1, "{}: no seed is accepted", t.name);
        assert!(rejected >= 1, "{}: no seed is rejected", t.name);
        assert!(
            seed_bytes < MAX_SEED_BYTES,
            "{}: seeds take {seed_bytes} bytes",
            t.name
        );
        assert!(
            corpus_bytes < MAX_CORPUS_BYTES,
            "{}: the corpus takes {corpus_bytes} bytes; merge fewer inputs",
            t.name
        );
        let want: BTreeSet<String> = generated[t.name].keys().cloned().collect();
        assert_eq!(
            seed_names, want,
            "{}: committed seeds differ from the generator's; run regenerate_fuzz_seeds",
            t.name
        );
    }
}

/// The generator's seeds meet the expectation their names state (so a regenerated corpus passes).
#[test]
fn generated_seeds_meet_their_names() {
    let all = seeds();
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        {
            let mut n: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
            n.sort_unstable();
            n
        },
        "the generator covers every target"
    );
    for (tname, seeds) in &all {
        let t = target(tname);
        for (name, data) in seeds {
            let want = expectation(name).unwrap_or_else(|| panic!("seed name {name}"));
            assert_eq!((t.check)(data), want, "{tname}/{name}");
        }
    }
}

/// A tiny deterministic mutational fuzzer on stable Rust: random edits of the committed seeds
/// (`accept-*` and `reject-*`; merged inputs are only replayed, above) never panic, and for the
/// authenticated targets an edited input that is accepted must be an unchanged seed.
#[test]
fn mutated_seeds_never_panic_or_forge() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n.max(1) as u64) as usize
    };
    for t in TARGETS {
        let dir = fuzz_dir().join("corpus").join(t.name);
        let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| expectation(&p.file_name().unwrap().to_string_lossy()).is_some())
            .collect();
        paths.sort();
        let seeds: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| fs::read(p).expect("seed reads"))
            .collect();
        let accepted: BTreeSet<&Vec<u8>> = seeds.iter().filter(|d| (t.check)(d)).collect();
        assert!(!accepted.is_empty(), "{}: no accepted seed", t.name);
        let mut runs = 0;
        for seed in &seeds {
            for _ in 0..300 {
                let mut m = seed.clone();
                for _ in 0..1 + next(4) {
                    let i = next(m.len() + 1);
                    match next(5) {
                        0 if i < m.len() => m[i] ^= 1 << next(8),
                        1 if i < m.len() => m[i] = [0, 0xff, b'"', b'{', b'1'][next(5)],
                        2 => m.insert(i, next(256) as u8),
                        3 if i < m.len() => {
                            m.remove(i);
                        }
                        _ => m.truncate(i),
                    }
                }
                // (key_slot checks forgery itself: an edited slot may open only to the fixed master
                // key, since its name, host and time fields are not authenticated.)
                // An edited envelope or pack opens to nothing (a pack's blobs fill its blob area, so
                // not even bytes inserted after the last blob pass): only the seeds themselves do.
                if (t.check)(&m) && matches!(t.name, "envelope" | "pack_file") {
                    assert!(
                        accepted.contains(&m),
                        "{}: an edited seed was accepted: {} bytes from a {}-byte seed, first difference at {:?}",
                        t.name,
                        m.len(),
                        seed.len(),
                        m.iter().zip(seed).position(|(a, b)| a != b)
                    );
                }
                runs += 1;
            }
        }
        assert!(runs >= 900, "{}: {runs} runs", t.name);
    }
}

/// A few cheap variations of a seed: prefixes and single flipped bytes.
fn mutations(data: &[u8]) -> Vec<Vec<u8>> {
    let n = data.len();
    let mut out = vec![data[..n / 2].to_vec(), data[..n.saturating_sub(1)].to_vec()];
    for i in [0, n / 3, n / 2, n.saturating_sub(1)] {
        if i < n {
            let mut m = data.to_vec();
            m[i] ^= 0x5a;
            out.push(m);
        }
    }
    out
}

/// Properties of accepted seeds that random damage must break.
fn tamper_checks(t: Target, name: &str, data: &[u8]) {
    match t.name {
        // Authenticated: every flipped byte (id, header, ciphertext, tag or trailer) is detected.
        "envelope" | "pack_file" => {
            for i in 0..data.len() {
                let mut m = data.to_vec();
                m[i] ^= 0x01;
                assert!(
                    !(t.check)(&m),
                    "{}/{name}: flipping byte {i} went unnoticed",
                    t.name
                );
            }
        }
        // Exact binary formats: no strict prefix parses.
        "pack_header" | "index_file" => {
            for n in 0..data.len() {
                assert!(
                    !(t.check)(&data[..n]),
                    "{}/{name}: the {n}-byte prefix parses",
                    t.name
                );
            }
        }
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------ generator

/// Writes the seeds into `fuzz/corpus/<target>/`, replacing earlier generated seeds (`accept-*`,
/// `reject-*`) and leaving other files alone.
#[test]
#[ignore = "writes fuzz/corpus; run after a format change"]
fn regenerate_fuzz_seeds() {
    for (tname, seeds) in seeds() {
        let dir = fuzz_dir().join("corpus").join(tname);
        fs::create_dir_all(&dir).expect("create corpus directory");
        for e in fs::read_dir(&dir).expect("list corpus directory") {
            let p = e.expect("corpus entry").path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            if expectation(&n).is_some() {
                fs::remove_file(&p).expect("remove old seed");
            }
        }
        for (name, data) in seeds {
            fs::write(dir.join(&name), &data).expect("write seed");
        }
        let written = fs::read_dir(&dir).expect("list corpus directory").count();
        assert!(written >= 3, "{tname}: {written} seeds written");
    }
}

type Seeds = BTreeMap<String, Vec<u8>>;

/// Every target's seeds, by target and file name.
fn seeds() -> BTreeMap<&'static str, Seeds> {
    let packs = sample_packs();
    BTreeMap::from([
        ("pack_header", pack_header_seeds(&packs)),
        ("index_file", index_file_seeds(&packs)),
        ("snapshot", snapshot_seeds()),
        ("tree", tree_seeds()),
        ("key_slot", key_slot_seeds()),
        ("envelope", envelope_seeds()),
        ("pack_file", pack_file_seeds(&packs)),
        ("canonical", canonical_seeds()),
        ("gw_kong", gw_kong_seeds()),
        ("gw_aws", gw_aws_seeds()),
        ("gw_caddy", gw_caddy_seeds()),
        ("gw_nginx", gw_nginx_seeds()),
        ("gw_files", gw_files_seeds()),
        ("gw_manifest", gw_manifest_seeds()),
    ])
}

/// A file of the repository (an example or a test fixture), for the gateway seeds.
fn repo_file(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_bytes(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&v).unwrap()
}

fn canonical_seeds() -> Seeds {
    let mut s = Seeds::new();
    put(
        &mut s,
        "accept-kong-example",
        repo_file("examples/kong/kong.yaml"),
    );
    put(
        &mut s,
        "accept-caddy-example",
        repo_file("examples/caddy/caddy.json"),
    );
    // Floats whose shortest form serde_json parses inexactly without `float_roundtrip`.
    put(
        &mut s,
        "accept-hard-floats",
        r#"{"a": 1.0715660391465826e-75, "b": -1.81996730402717e-179, "c": 0.1, "d": 123456789012345678901234567890, "e": -0.0, "f": 2.2250738585072011e-308}"#,
    );
    put(
        &mut s,
        "accept-yaml-anchors",
        r#"base: &b {password: p1, created_at: 1}
other:
  <<: *b
  secret: s
list: [*b, *b]
"a/b~c": {token: t}
"#,
    );
    put(&mut s, "accept-nul-key", "{\"\\u0000\": 1, \"\": 2}");
    put(&mut s, "reject-not-utf8", vec![0xff, 0xfe, b'{', b'}']);
    put(&mut s, "reject-unclosed", "a: [1,\n");
    put(&mut s, "reject-trailing", "{\"a\": 1} x");
    s
}

fn gw_kong_seeds() -> Seeds {
    use serde_json::json;
    let mut s = Seeds::new();
    put(
        &mut s,
        "accept-example",
        repo_file("examples/kong/kong.yaml"),
    );
    put(
        &mut s,
        "accept-fixture",
        repo_file("tests/fixtures/gateways/kong/kong.yaml"),
    );
    put(
        &mut s,
        "accept-admin-listing",
        json_bytes(json!({
            "services": [{"id": "s1", "name": "orders", "host": "o", "created_at": 1, "tags": null}],
            "routes": [{"id": "r1", "name": "get", "service": {"id": "s1"}, "methods": ["POST", "GET"]},
                       {"id": "r2", "service": {"id": "s1"}, "paths": ["/x"]}],
            "plugins": [
                {"id": "p1", "name": "key-auth", "service": {"id": "s1"}, "route": null},
                {"id": "p2", "name": "prometheus", "instance_name": "metrics"},
                {"id": "p3", "name": "rate-limiting", "consumer": {"id": "c1"}, "config": {"redis": {"password": "x"}}}
            ],
            "consumers": [{"id": "c1", "username": "alice", "custom_id": "a-1"}],
            "consumer_groups": [{"id": "g1", "name": "gold", "consumers": [{"id": "c1"}]}],
            "acls": [{"id": "a1", "group": "g", "consumer": {"id": "c1"}}],
            "keyauth_credentials": [{"id": "k1", "key": "secret-key", "consumer": {"id": "c1"}}],
            "upstreams": [{"id": "u1", "name": "up", "targets": [{"id": "t1", "target": "10.0.0.1:80"}]}],
            "next": "/services?offset=abc",
            "data": []
        })),
    );
    put(
        &mut s,
        "accept-filtered",
        json_bytes(json!({
            "_format_version": "3.0",
            "routes": [{"name": "r", "service": "ghost", "tags": ["t"], "paths": ["/r"]}],
            "keyauth_credentials": [{"id": "k1", "key": "s3cret", "consumer": "nobody"}],
            "consumer_groups": [{"name": "g", "consumers": [{"username": "absent"}]}],
            "consumers": [{"username": "bob", "basicauth_credentials": [{"password": "p"}, {"password": "q"}]}]
        })),
    );
    put(
        &mut s,
        "accept-dbless-answer",
        json_bytes(json!({"config": "_format_version: '3.0'\nservices:\n- name: a\n  host: b\n"})),
    );
    put(&mut s, "reject-not-mapping", "- a\n- b\n");
    put(
        &mut s,
        "reject-service-without-name",
        r#"{"services": [{"host": "x"}]}"#,
    );
    put(
        &mut s,
        "reject-plugin-without-name",
        "services:\n- name: a\n  plugins:\n  - config: {}\n",
    );
    put(
        &mut s,
        "reject-duplicate-service",
        "services:\n- name: a\n- name: a\n  host: b\n",
    );
    put(&mut s, "reject-not-yaml", "services: [1,\n");
    s
}

fn gw_aws_seeds() -> Seeds {
    use serde_json::json;
    let mut s = Seeds::new();
    put(
        &mut s,
        "accept-export-openapi",
        repo_file("examples/aws/orders-api-openapi.json"),
    );
    put(
        &mut s,
        "accept-export-swagger",
        json_bytes(json!({
            "swagger": "2.0",
            "info": {"title": "orders", "version": "2025-08-18T14:30:00Z"},
            "paths": {"/orders": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}}}
        })),
    );
    put(
        &mut s,
        "accept-resources-page",
        json_bytes(json!({
            "item": [
                {"id": "r0", "path": "/"},
                {"id": "r1", "parentId": "r0", "path": "/orders", "pathPart": "orders",
                 "resourceMethods": {"GET": {
                    "httpMethod": "GET", "authorizationType": "CUSTOM", "authorizerId": "a1",
                    "requestValidatorId": "v1", "authorizationScopes": ["b", "a"], "apiKeyRequired": null,
                    "methodIntegration": {"type": "HTTP_PROXY", "connectionType": "VPC_LINK",
                        "connectionId": "l1", "cacheNamespace": "r1", "cacheKeyParameters": ["b", "a"]}}}},
                {"id": "r2", "parentId": "r1", "path": "/orders/{id}", "resourceMethods": {"ANY": {}}}
            ],
            "position": null
        })),
    );
    put(
        &mut s,
        "accept-authorizers-page",
        json_bytes(json!({
            "item": [
                {"id": "a1", "name": "jwt", "type": "TOKEN", "providerARNs": null, "path": "/a"},
                {"id": "a2", "name": "jwt", "type": "REQUEST", "path": "/a"}
            ],
            "position": "next-page"
        })),
    );
    // Read as API keys, usage plans (the items also as members) and custom domain names (the
    // items also as base path mappings).
    put(
        &mut s,
        "accept-account-page",
        json_bytes(json!({
            "item": [
                {"id": "k1", "name": "partner", "value": "s3cret", "customerId": "cust-7",
                 "stageKeys": ["k2/prod", "zz/a", "k1/dev"], "enabled": true, "type": "API_KEY",
                 "createdDate": "2025-08-18T14:30:00Z",
                 "apiStages": [{"apiId": "zz", "stage": "b"}, {"apiId": "k1", "stage": "prod"}],
                 "basePath": "v1", "restApiId": "k2", "domainName": "api.example.com",
                 "domain_name": "api.example.com"},
                {"id": "k2", "name": "internal", "type": null, "basePath": "(none)",
                 "restApiId": "k9", "customerId": null, "stageKeys": null}
            ],
            "position": null
        })),
    );
    put(&mut s, "reject-not-json", "openapi: 3.0.1\n");
    put(&mut s, "reject-no-openapi", r#"{"info": {"version": "1"}}"#);
    put(&mut s, "reject-items-not-objects", r#"{"item": [1, 2]}"#);
    put(
        &mut s,
        "reject-same-name-without-id",
        r#"{"item": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/a"}]}"#,
    );
    s
}

fn gw_caddy_seeds() -> Seeds {
    use serde_json::json;
    let mut s = Seeds::new();
    put(
        &mut s,
        "accept-example",
        repo_file("examples/caddy/caddy.json"),
    );
    put(&mut s, "accept-null", "null");
    put(
        &mut s,
        "accept-slash-in-keys",
        json_bytes(json!({"apps": {"http": {"servers": {
            "a": {"routes": [{"@id": "b/c", "handle": [{"handler": "static_response", "body": "1"}]}]},
            "a/b": {"routes": [{"@id": "c", "handle": [{"handler": "static_response", "body": "2"}]},
                               {"match": [{"host": ["x.example"], "path": ["/c"]}]},
                               {"match": [{"host": ["x.example"], "path": ["/c"]}]}]}
        }}}})),
    );
    put(
        &mut s,
        "accept-odd-shapes",
        json_bytes(json!({"apps": {
            "http": {"servers": ["not", "a", "map"]},
            "tls": {"certificates": {"load_pem": "not a list"}},
            "pki": {}
        }, "admin": {"disabled": true}})),
    );
    put(
        &mut s,
        "accept-certificates",
        json_bytes(json!({"apps": {"tls": {"certificates": {
            "load_pem": [
                {"certificate": "C", "key": "K"},
                {"certificate": "C", "key": "K2"},
                {"certificate": "D", "key": "L", "tags": ["api", "v2"]}
            ],
            "automate": ["example.com"]
        }}}})),
    );
    put(&mut s, "reject-array", "[1]");
    put(&mut s, "reject-apps-not-object", r#"{"apps": 5}"#);
    put(
        &mut s,
        "reject-duplicate-route-id",
        r#"{"apps": {"http": {"servers": {"s": {"routes": [{"@id": "x"}, {"@id": "x"}]}}}}}"#,
    );
    put(
        &mut s,
        "reject-routes-not-list",
        r#"{"apps": {"http": {"servers": {"s": {"routes": 5}}}}}"#,
    );
    put(&mut s, "reject-not-json", "{");
    // The admin API's answer to `GET /config/` as the capture reads it (HTTP/1.0, whole stream).
    let answer = |head: &str, body: &[u8]| [head.as_bytes(), b"\r\n\r\n", body].concat();
    let example = repo_file("examples/caddy/caddy.json");
    put(
        &mut s,
        "accept-http-answer",
        answer(
            &format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nServer: Caddy\r\nContent-Length: {}",
                example.len()
            ),
            &example,
        ),
    );
    put(
        &mut s,
        "accept-http-answer-no-length",
        answer("HTTP/1.0 200 OK\r\nServer: Caddy", b"null"),
    );
    put(
        &mut s,
        "reject-http-body-cut-short",
        answer(
            &format!("HTTP/1.0 200 OK\r\nContent-Length: {}", example.len() + 1),
            &example,
        ),
    );
    put(
        &mut s,
        "reject-http-forbidden",
        answer(
            "HTTP/1.0 403 Forbidden\r\nContent-Length: 24",
            b"{\"error\":\"not allowed\"}\n",
        ),
    );
    put(
        &mut s,
        "reject-http-no-status",
        answer("HTTP/1.0 OK", b"{}"),
    );
    s
}

fn gw_nginx_seeds() -> Seeds {
    let mut s = Seeds::new();
    put(
        &mut s,
        "accept-example",
        repo_file("examples/nginx/nginx.conf"),
    );
    put(
        &mut s,
        "accept-example-servers",
        repo_file("examples/nginx/conf.d/api.conf"),
    );
    put(
        &mut s,
        "accept-fixture-nginx",
        repo_file("tests/fixtures/gateways/nginx/nginx.conf"),
    );
    put(
        &mut s,
        "accept-fixture-haproxy",
        repo_file("tests/fixtures/gateways/haproxy/haproxy.cfg"),
    );
    put(
        &mut s,
        "accept-quoting",
        "set $a \"x\\\ny\";\nssl_certificate_key data:secret;\nssl_certificate \"../a b.pem\";\ninclude '/etc/x/*.conf';\nmap $h $v { include m.map; }\nssl_certificate $host.pem;\nuserlist u\n user \"bob\" password x\nbind :443 crt 'c d.pem' ca-file \\\"q\\\" # c\n",
    );
    put(
        &mut s,
        "reject-no-references",
        "events {}\nhttp { server { listen 80; } }\n",
    );
    put(
        &mut s,
        "reject-comments-only",
        "# nothing here\n\n   # more\n",
    );
    s
}

fn gw_files_seeds() -> Seeds {
    let mut s = Seeds::new();
    let file = |rel: &str, fixture: &str| {
        let mut v = format!("{rel}\n").into_bytes();
        v.extend(repo_file(&format!("tests/fixtures/gateways/{fixture}")));
        v
    };
    put(
        &mut s,
        "accept-apiops-named-value",
        file(
            "namedValues/db-password/namedValueInformation.json",
            "apiops/namedValues/db-password/namedValueInformation.json",
        ),
    );
    put(
        &mut s,
        "accept-apiops-specification",
        file(
            "apis/orders-api/specification.yaml",
            "apiops/apis/orders-api/specification.yaml",
        ),
    );
    put(
        &mut s,
        "accept-envoy-dump",
        file("envoy/config_dump.json", "envoy/config_dump.json"),
    );
    put(
        &mut s,
        "accept-google-service",
        file("google/orders-service.yaml", "google/orders-service.yaml"),
    );
    put(
        &mut s,
        "reject-apiops-policy",
        file(
            "apis/orders-api/policy.xml",
            "apiops/apis/orders-api/policy.xml",
        ),
    );
    put(
        &mut s,
        "reject-private-key",
        file("certs/api.key", "nginx/certs/api.key"),
    );
    put(&mut s, "reject-broken-json", "x.json\n{\"a\": ");
    put(&mut s, "reject-hidden-path", ".git/config\n{}");
    s
}

fn gw_manifest_seeds() -> Seeds {
    use gatevault::gateway::{caddy, canonical, kong, Capture, Source, MANIFEST};
    use serde_json::json;
    let mut s = Seeds::new();
    let doc = canonical::parse_json_or_yaml(&repo_file("examples/kong/kong.yaml")).unwrap();
    let kong = Capture {
        source: Source::new("kong", "file:/srv/kong.yaml"),
        raw: BTreeMap::from([("kong.yaml".to_string(), b"x".to_vec())]),
        entities: kong::from_deck(&doc, &[]).unwrap(),
    };
    put(
        &mut s,
        "accept-kong",
        kong.documents().unwrap()[MANIFEST].clone(),
    );
    let mut scoped = kong.clone();
    scoped.source.scope = kong::scope(Some("team-a"), &["a; b".into(), "c".into()]).unwrap();
    put(
        &mut s,
        "accept-kong-scope",
        scoped.documents().unwrap()[MANIFEST].clone(),
    );
    let source = Source::new("caddy", "http://localhost:2019");
    let caddy = Capture {
        entities: caddy::entities(&source, &repo_file("examples/caddy/caddy.json")).unwrap(),
        source,
        raw: BTreeMap::new(),
    };
    put(
        &mut s,
        "accept-caddy",
        caddy.documents().unwrap()[MANIFEST].clone(),
    );
    let hand = json!({
        "version": 1,
        "source": {"kind": "nginx", "endpoint": "file:/etc/nginx/nginx.conf", "version": "1.22.1"},
        "kinds": {"files/x": "file"},
        "entities": {
            "nginx/files/etc/nginx/htpasswd": {"kind": "htpasswd", "key": "/etc/nginx/htpasswd",
                "secrets": ["/0"], "personal": ["/0"], "subject": "nginx:user=a"},
            "files/x/%00%.json": {"kind": "file", "key": "\u{0}"},
            "files/x/%00.json": {"kind": "file", "key": ""}
        },
        "raw": ["raw/a%2Fb.yaml"]
    });
    put(&mut s, "accept-hand-written", json_bytes(hand.clone()));
    let mut newer = hand.clone();
    newer["version"] = json!(2);
    put(&mut s, "reject-newer-version", json_bytes(newer));
    put(
        &mut s,
        "reject-no-source",
        r#"{"version": 1, "entities": {}}"#,
    );
    let full = json_bytes(hand);
    put(&mut s, "reject-truncated", full[..full.len() / 2].to_vec());
    s
}

fn put(s: &mut Seeds, name: &str, data: impl Into<Vec<u8>>) {
    assert!(expectation(name).is_some(), "seed name {name}");
    assert!(s.insert(name.to_string(), data.into()).is_none(), "{name}");
}

fn flip(mut data: Vec<u8>, at: usize) -> Vec<u8> {
    data[at] ^= 0x01;
    data
}

/// Small real packs made with the fixed fuzzing keys: (name, id, pack file bytes, header entries).
struct SamplePack {
    name: &'static str,
    id: PackId,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl SamplePack {
    fn blobs_len(&self) -> u64 {
        format::split_pack_trailer(&self.bytes).expect("trailer").0 as u64
    }

    /// The `pack_file` input: id, then the pack.
    fn input(&self) -> Vec<u8> {
        let mut v = self.id.0.to_vec();
        v.extend_from_slice(&self.bytes);
        v
    }
}

fn sample_packs() -> Vec<SamplePack> {
    let json = |i: u32| {
        format!(
            "{{\"service\":\"orders-{i}\",\"routes\":[{{\"path\":\"/v1/orders/{i}\",\"methods\":[\"GET\",\"POST\"],\"plugins\":[\"rate-limit\",\"jwt\"]}}]}}\n"
        )
        .repeat(3)
        .into_bytes()
    };
    let make = |name, t: BlobType, cipher, epoch, blobs: Vec<Vec<u8>>| {
        let k = fuzzing::keys_with(cipher, epoch);
        let mut b = PackBuilder::new(t);
        for d in &blobs {
            b.add(
                k.blob_id(d),
                d.len() as u32,
                pack::encode_blob(d, 3).unwrap(),
            );
        }
        let fp = b.finish(&k).expect("pack finishes");
        SamplePack {
            name,
            id: fp.id,
            bytes: fp.bytes,
            entries: fp.entries,
        }
    };
    let tree = tree_sample().encode();
    vec![
        make(
            "data",
            BlobType::Data,
            Cipher::XChaCha20Poly1305,
            1,
            vec![json(1), json(2), b"short raw blob".to_vec()],
        ),
        make(
            "tree-aes-epoch0",
            BlobType::Tree,
            Cipher::Aes256Gcm,
            0,
            vec![tree],
        ),
        make(
            "empty",
            BlobType::Data,
            Cipher::XChaCha20Poly1305,
            1,
            vec![],
        ),
    ]
}

fn pack_header_seeds(packs: &[SamplePack]) -> Seeds {
    let mut s = Seeds::new();
    let with_len = |len: u64, header: &[u8]| {
        let mut v = len.to_le_bytes().to_vec();
        v.extend_from_slice(header);
        v
    };
    for p in packs {
        let h = format::encode_pack_header(&p.entries);
        put(
            &mut s,
            &format!("accept-{}", p.name),
            with_len(p.blobs_len(), &h),
        );
    }
    let real = &packs[0];
    let h = format::encode_pack_header(&real.entries);
    put(
        &mut s,
        "reject-blob-area-too-small",
        with_len(real.blobs_len() - 1, &h),
    );
    put(
        &mut s,
        "reject-truncated",
        with_len(real.blobs_len(), &h[..h.len() - 1]),
    );
    let mut huge = h.clone();
    huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    put(
        &mut s,
        "reject-huge-count",
        with_len(real.blobs_len(), &huge),
    );
    put(
        &mut s,
        "reject-bad-magic",
        with_len(real.blobs_len(), &flip(h.clone(), 0)),
    );
    let mut overlap = real.entries.clone();
    overlap[1].offset = overlap[0].offset + 1;
    put(
        &mut s,
        "reject-overlap",
        with_len(real.blobs_len(), &format::encode_pack_header(&overlap)),
    );
    s
}

fn sample_index(packs: &[SamplePack]) -> IndexFile {
    IndexFile {
        supersedes: vec![IndexId([7; 32])],
        packs: packs
            .iter()
            .map(|p| IndexPack {
                id: p.id,
                size: p.bytes.len() as u64,
                blobs: p.entries.clone(),
            })
            .collect(),
    }
}

fn index_file_seeds(packs: &[SamplePack]) -> Seeds {
    let mut s = Seeds::new();
    let full = sample_index(packs).encode();
    put(&mut s, "accept-empty", IndexFile::default().encode());
    put(&mut s, "accept-three-packs", full.clone());
    put(&mut s, "reject-truncated", full[..full.len() - 7].to_vec());
    put(&mut s, "reject-version", flip(full.clone(), 4));
    let mut trailing = full.clone();
    trailing.push(0);
    put(&mut s, "reject-trailing-byte", trailing);
    let mut small = sample_index(packs);
    small.packs[0].size = 10;
    put(&mut s, "reject-entry-past-pack", small.encode());
    s
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        version: format::SNAPSHOT_VERSION,
        time: "2024-05-01T12:00:00Z".into(),
        tree: BlobId([0x21; 32]),
        paths: vec!["/etc/gateway".into()],
        hostname: "gw-1".into(),
        username: "ops".into(),
        tags: BTreeMap::new(),
        label: None,
        description: None,
        parent: None,
        summary: Summary::default(),
        program_version: "gatevault 0.1.0".into(),
        source: None,
        original: None,
        origin: None,
    }
}

fn snapshot_seeds() -> Seeds {
    let mut s = Seeds::new();
    let minimal = sample_snapshot();
    let full = Snapshot {
        time: "2024-05-02T08:30:15.123456789+02:00".into(),
        paths: vec!["/etc/gateway".into(), "/srv/kong/déclaratif".into()],
        tags: BTreeMap::from([
            ("env".into(), "prod".into()),
            ("nightly".into(), String::new()),
        ]),
        label: Some("v42".into()),
        description: Some("before the \"orders\" migration\n".into()),
        parent: Some(SnapshotId([0x22; 32])),
        summary: Summary {
            files_new: 3,
            files_changed: 1,
            files_unchanged: 700,
            dirs: 12,
            files_failed: 0,
            blobs_added: 5,
            data_added: 40_960,
            data_added_packed: 9_000,
            total_files: 704,
            total_bytes: 5_000_000,
            backup_start: "2024-05-02T08:30:15+02:00".into(),
            backup_end: "2024-05-02T08:30:16+02:00".into(),
        },
        ..minimal.clone()
    };
    put(&mut s, "accept-minimal", minimal.encode());
    put(&mut s, "accept-full", full.encode());
    put(
        &mut s,
        "accept-pretty",
        serde_json::to_vec_pretty(&full).unwrap(),
    );
    put(
        &mut s,
        "reject-version",
        Snapshot {
            version: 2,
            ..minimal.clone()
        }
        .encode(),
    );
    put(
        &mut s,
        "reject-time",
        Snapshot {
            time: "yesterday".into(),
            ..minimal.clone()
        }
        .encode(),
    );
    let enc = full.encode();
    put(&mut s, "reject-truncated", enc[..enc.len() / 2].to_vec());
    s
}

fn node(name: &str, node_type: NodeType) -> Node {
    Node {
        mtime_ns: 1_714_564_800_123_456_789,
        ..Node::new(name, node_type)
    }
}

fn tree_sample() -> Tree {
    let k = fuzzing::keys();
    Tree {
        version: format::TREE_VERSION,
        nodes: vec![
            Node {
                size: 123,
                inode: 77,
                device: 2049,
                content: vec![k.blob_id(b"a"), k.blob_id(b"b")],
                ..node("kong.yaml", NodeType::File)
            },
            Node {
                link_target: Some("kong.yaml".into()),
                mode: 0o777,
                ..node("latest.yaml", NodeType::Symlink)
            },
            Node {
                subtree: Some(k.blob_id(b"{\"version\":1,\"nodes\":[]}")),
                mode: 0o755,
                ..node("services", NodeType::Dir)
            },
        ],
    }
}

fn tree_seeds() -> Seeds {
    let mut s = Seeds::new();
    let t = tree_sample();
    let empty = Tree {
        version: format::TREE_VERSION,
        nodes: vec![],
    };
    put(&mut s, "accept-empty", empty.encode());
    put(&mut s, "accept-mixed", t.encode());
    let mut unsorted = t.clone();
    unsorted.nodes.reverse();
    put(&mut s, "reject-unsorted", unsorted.encode());
    let mut dotdot = t.clone();
    dotdot.nodes[0].name = "..".into();
    put(&mut s, "reject-dotdot", dotdot.encode());
    let mut dir = t.clone();
    dir.nodes[2].subtree = None;
    put(&mut s, "reject-dir-without-subtree", dir.encode());
    let enc = t.encode();
    put(&mut s, "reject-truncated", enc[..enc.len() - 1].to_vec());
    s
}

fn slot(key_file: &[u8; 32], role: Role) -> KeySlot {
    let mut s = KeySlot::wrap(
        &fuzzing::master_key(1),
        &fuzzing::REPO_ID,
        &fuzzing::SLOT_ID,
        Credential::KeyFile(key_file),
        role,
        None,
    )
    .expect("wrap");
    // Not bound into the slot: fixed, so that seeds do not name this machine.
    s.created = "2024-05-01T12:00:00+00:00".into();
    s.username = "fuzz".into();
    s.hostname = "seed-host".into();
    s
}

fn key_slot_seeds() -> Seeds {
    let mut s = Seeds::new();
    let json = |k: &KeySlot| serde_json::to_vec_pretty(k).unwrap();
    let admin = slot(&fuzzing::KEY_FILE, Role::Admin);
    put(&mut s, "accept-key-file-admin", json(&admin));
    put(
        &mut s,
        "accept-key-file-backup",
        serde_json::to_vec(&slot(&fuzzing::KEY_FILE, Role::Backup)).unwrap(),
    );
    put(
        &mut s,
        "reject-other-key-file",
        json(&slot(&[0x4c; 32], Role::Admin)),
    );
    let mut edited = admin.clone();
    edited.role = Role::Restore;
    put(&mut s, "reject-role-edited", json(&edited));
    let mut pw = KeySlot::wrap(
        &fuzzing::master_key(1),
        &fuzzing::REPO_ID,
        &fuzzing::SLOT_ID,
        Credential::Password(b"fuzz"),
        Role::Admin,
        Some(KdfParams::new(8 * 1024, 1)),
    )
    .expect("wrap with a password");
    pw.created = admin.created.clone();
    pw.username = admin.username.clone();
    pw.hostname = admin.hostname.clone();
    put(&mut s, "reject-password-slot", json(&pw));
    let mut not_b64 = admin.clone();
    not_b64.wrapped.insert(5, '!');
    put(&mut s, "reject-wrapped-not-base64", json(&not_b64));
    let enc = json(&admin);
    put(&mut s, "reject-truncated", enc[..enc.len() / 2].to_vec());
    s
}

fn envelope_seeds() -> Seeds {
    let mut s = Seeds::new();
    let plain = sample_snapshot().encode();
    let seal = |cipher, epoch, id: &[u8; 32], p: &[u8]| {
        fuzzing::keys_with(cipher, epoch).seal_object(fuzzing::ENVELOPE_KIND, id, p)
    };
    let id = fuzzing::ENVELOPE_ID;
    let x = seal(Cipher::XChaCha20Poly1305, 1, &id, &plain);
    put(&mut s, "accept-xchacha-epoch1", x.clone());
    put(
        &mut s,
        "accept-aes-epoch1",
        seal(Cipher::Aes256Gcm, 1, &id, &plain),
    );
    put(
        &mut s,
        "accept-xchacha-epoch0",
        seal(Cipher::XChaCha20Poly1305, 0, &id, &plain),
    );
    put(
        &mut s,
        "accept-empty-plaintext",
        seal(Cipher::Aes256Gcm, 0, &id, b""),
    );
    put(
        &mut s,
        "reject-other-object",
        seal(Cipher::XChaCha20Poly1305, 1, &[0x46; 32], &plain),
    );
    let other_kind = fuzzing::keys().seal_object(Kind::Index, &id, &plain);
    put(&mut s, "reject-other-kind", other_kind);
    put(&mut s, "reject-flipped", flip(x.clone(), 40));
    put(&mut s, "reject-truncated", x[..x.len() - 1].to_vec());
    let mut epoch = x.clone();
    epoch[2..6].copy_from_slice(&7u32.to_le_bytes());
    put(&mut s, "reject-unknown-epoch", epoch);
    s
}

fn pack_file_seeds(packs: &[SamplePack]) -> Seeds {
    let mut s = Seeds::new();
    for p in packs {
        put(&mut s, &format!("accept-{}", p.name), p.input());
    }
    let real = packs[0].input();
    put(&mut s, "reject-flipped-blob", flip(real.clone(), 32 + 40));
    let n = real.len();
    put(&mut s, "reject-flipped-header", flip(real.clone(), n - 20));
    put(&mut s, "reject-truncated", real[..n - 1].to_vec());
    let mut other = real.clone();
    other[..32].copy_from_slice(&[0x50; 32]);
    put(&mut s, "reject-other-pack-id", other);
    s
}
