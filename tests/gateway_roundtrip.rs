//! Every adapter's round trip through the real binary: capture -> canonicalize -> backup -> restore
//! files -> the restored documents are the capture's documents, and canonicalizing them again changes
//! nothing.

mod util;

use std::path::{Path, PathBuf};

use gatevault::gateway::{self, canonical, GatewayOptions};
use serde_json::Value;
use util::{Repo, Runner};

fn example(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(p)
}

fn round_trip(kind: &str, file: &Path, extra: &[&str]) {
    let opts = GatewayOptions {
        kind: kind.into(),
        file: Some(file.to_path_buf()),
        no_validate: extra.contains(&"--no-validate"),
        ..Default::default()
    };
    let docs = gateway::capture(&opts).unwrap().documents().unwrap();
    assert!(docs.len() >= 2, "{kind}: only {:?}", docs.keys());
    let r = Repo::init();
    let mut args = vec!["backup", "--gateway", kind, "--file", util::s(file)];
    args.extend_from_slice(extra);
    r.run_ok(&args);
    let target = r.scratch("restored");
    r.restore("latest", &target, &[]);
    for (path, bytes) in &docs {
        let back =
            std::fs::read(target.join(path)).unwrap_or_else(|e| panic!("{kind}: {path}: {e}"));
        assert_eq!(&back, bytes, "{kind}: {path} differs after restore");
        if path.ends_with(".json") {
            let v: Value = serde_json::from_slice(&back).unwrap();
            if path.starts_with("raw/") {
                continue;
            }
            assert_eq!(
                canonical::to_bytes(&v),
                back,
                "{kind}: {path} is not canonical"
            );
        }
    }
    // Nothing else was restored.
    let restored = util::manifest(&target);
    let files = restored
        .values()
        .filter(|e| matches!(e, util::Entry::File { .. }))
        .count();
    assert_eq!(files, docs.len(), "{kind}: {:?}", restored.keys());
    // A second capture of the same input is unchanged: the backup adds no entity.
    let second = r.run_json(&args);
    assert_eq!(second["files_new"], 0, "{kind}: {second}");
    assert_eq!(second["files_changed"], 0, "{kind}: {second}");
}

#[test]
fn kong_deck_file_round_trips() {
    round_trip("kong", &example("kong/kong.yaml"), &[]);
}

#[test]
fn caddy_config_round_trips() {
    round_trip("caddy", &example("caddy/caddy.json"), &[]);
}

#[test]
fn nginx_config_round_trips() {
    // The example references certificates that exist only on a real server: no `nginx -t` here.
    round_trip("nginx", &example("nginx/nginx.conf"), &["--no-validate"]);
}

#[test]
fn files_folder_round_trips() {
    round_trip("files", &example("aws"), &[]);
}

#[test]
fn large_documents_round_trip_inline_and_in_blobs() {
    // Twelve ~730 KiB canonical JSON documents in one folder: the first ones fit the folder's inline budget
    // (8 MiB), the rest are stored as blobs; both kinds must come back byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = util::Rng::new(7);
    for i in 0..12 {
        let items: Vec<Value> = (0..14000)
            .map(|j| serde_json::json!({"n": j, "v": format!("{:x}", rng.next_u64())}))
            .collect();
        std::fs::write(
            dir.path().join(format!("doc{i}.json")),
            serde_json::to_vec(&items).unwrap(),
        )
        .unwrap();
    }
    round_trip("files", dir.path(), &[]);
    // Both kinds were used: all twelve in blobs would be ~1100 chunks, all inline none but trees.
    let r = Repo::init();
    let s = r.run_json([
        "backup",
        "--gateway",
        "files",
        "--file",
        util::s(dir.path()),
    ]);
    let blobs = s["blobs_added"].as_u64().unwrap();
    assert!((20..500).contains(&blobs), "{s}");
}

#[test]
fn haproxy_config_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateways/haproxy");
    round_trip("haproxy", &dir.join("haproxy.cfg"), &["--no-validate"]);
}
