//! Every adapter's round trip through the real binary: capture -> canonicalize -> backup -> restore
//! files -> the restored documents are the capture's documents, and canonicalizing them again changes
//! nothing.

mod util;

use std::path::{Path, PathBuf};

use gatevault::gateway::{self, canonical, GatewayOptions};
use serde_json::Value;
use util::Repo;

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
