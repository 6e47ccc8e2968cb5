//! nginx and HAProxy capture against the fixture configurations in `tests/fixtures/gateways/`:
//! every referenced file captured verbatim with its marks, clear errors for missing files, and the
//! gateways' own checkers (`nginx -t`, `haproxy -c`) run when they are installed.
//!
//! The fixtures hold fake PEM text; the checker tests replace it with a certificate made by
//! `openssl` at test time. Without nginx, HAProxy or openssl those tests print why they skip, unless
//! `GATEVAULT_REQUIRE_SERVICES=1`, which makes them fail instead.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gatevault::gateway::{self, Capture, GatewayOptions, Manifest};
use gatevault::Error;

fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gateways")
        .join(name);
    let dst = tmp.path().join(name);
    copy_dir(&src, &dst);
    (tmp, dst)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn opts(kind: &str, file: &Path, no_validate: bool) -> GatewayOptions {
    GatewayOptions {
        kind: kind.into(),
        file: Some(file.to_path_buf()),
        no_validate,
        ..Default::default()
    }
}

/// The document path of the file `rel` under `dir`.
fn doc(kind: &str, dir: &Path, rel: &str) -> String {
    format!(
        "{kind}/files/{}",
        dir.join(rel).display().to_string().trim_start_matches('/')
    )
}

fn manifest(docs: &BTreeMap<String, Vec<u8>>) -> Manifest {
    Manifest::parse(&docs[gateway::MANIFEST]).unwrap()
}

fn entity<'a>(c: &'a Capture, path: &str) -> &'a gateway::Entity {
    c.entities
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entity {path}"))
}

#[test]
fn nginx_capture_follows_includes_certificates_and_user_files() {
    let (_tmp, dir) = fixture("nginx");
    let c = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), true)).unwrap();
    assert_eq!(c.source.kind, "nginx");
    assert_eq!(
        c.source.endpoint,
        format!("file:{}", dir.join("nginx.conf").display())
    );
    let expect = [
        ("nginx.conf", "config"),
        ("mime.types", "include"),
        ("maps/tenants.map", "map"),
        ("conf.d/api.conf", "include"),
        ("conf.d/internal.conf", "include"),
        ("certs/api.crt", "certificate"),
        ("certs/api.key", "key"),
        ("certs/ca.crt", "certificate"),
        ("htpasswd", "htpasswd"),
    ];
    let docs = c.documents().unwrap();
    let m = manifest(&docs);
    assert_eq!(m.entities.len(), expect.len(), "{:?}", m.entities.keys());
    for (rel, kind) in expect {
        let p = doc("nginx", &dir, rel);
        assert_eq!(m.entry(&p).unwrap().kind, kind, "{rel}");
        assert_eq!(
            m.entry(&p).unwrap().key,
            dir.join(rel).display().to_string()
        );
        // Stored verbatim.
        assert_eq!(docs[&p], std::fs::read(dir.join(rel)).unwrap(), "{rel}");
    }
    assert_eq!(
        entity(&c, &doc("nginx", &dir, "certs/api.key")).secrets,
        vec![""]
    );
    assert!(entity(&c, &doc("nginx", &dir, "certs/api.crt"))
        .secrets
        .is_empty());
    // htpasswd: line 0 is a comment; each user line is personal (name) and secret (hash).
    let h = entity(&c, &doc("nginx", &dir, "htpasswd"));
    assert_eq!(h.secrets, vec!["/1", "/2"]);
    assert_eq!(h.personal, vec!["/1", "/2"]);
    assert!(c.raw.is_empty());
    // Capturing twice gives the same documents.
    let again = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), true)).unwrap();
    assert_eq!(again.documents().unwrap(), docs);
}

#[test]
fn nginx_missing_files_name_the_file_and_the_directive() {
    let (_tmp, dir) = fixture("nginx");
    std::fs::remove_file(dir.join("maps/tenants.map")).unwrap();
    let e = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), true)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Gateway { .. }), "{e:?}");
    assert!(
        msg.contains("maps/tenants.map") && msg.contains("`include`"),
        "{msg}"
    );
    assert!(msg.contains("nginx.conf:22"), "{msg}");

    let (_tmp, dir) = fixture("nginx");
    std::fs::remove_file(dir.join("certs/api.key")).unwrap();
    let msg = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), true))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("certs/api.key")
            && msg.contains("`ssl_certificate_key`")
            && msg.contains("api.conf:6"),
        "{msg}"
    );

    let e = gateway::capture(&opts("nginx", &dir.join("absent.conf"), true)).unwrap_err();
    assert!(
        matches!(e, Error::Gateway { .. }) && e.to_string().contains("--file"),
        "{e}"
    );
}

#[test]
fn nginx_check_runs_and_rejects_a_broken_config() {
    if !util::have_all(&["nginx", "openssl"]) {
        return;
    }
    let (tmp, dir) = fixture("nginx");
    let (cert, key) = util::real_cert(tmp.path());
    std::fs::write(dir.join("certs/api.crt"), &cert).unwrap();
    std::fs::write(dir.join("certs/ca.crt"), &cert).unwrap();
    std::fs::write(dir.join("certs/api.key"), &key).unwrap();
    let c = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), false)).unwrap();
    assert!(
        c.source
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with('1')),
        "{:?}",
        c.source
    );
    // The real key is marked secret for what it holds.
    assert_eq!(
        entity(&c, &doc("nginx", &dir, "certs/api.key")).secrets,
        vec![""]
    );

    let conf = dir.join("conf.d/internal.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("no_such_directive on;\n");
    std::fs::write(&conf, text).unwrap();
    let e = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), false)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Gateway { .. }), "{e:?}");
    assert!(
        msg.contains("no_such_directive") && msg.contains("--no-validate"),
        "{msg}"
    );
    // --no-validate backs the broken config up anyway.
    let c = gateway::capture(&opts("nginx", &dir.join("nginx.conf"), true)).unwrap();
    assert_eq!(c.entities.len(), 9);
}

#[test]
fn haproxy_capture_follows_certificates_maps_scripts_and_error_files() {
    let (_tmp, dir) = fixture("haproxy");
    let c = gateway::capture(&opts("haproxy", &dir.join("haproxy.cfg"), true)).unwrap();
    assert_eq!(c.source.kind, "haproxy");
    let expect = [
        ("haproxy.cfg", "config"),
        ("certs/site.pem", "certificate"),
        ("certs/ca.crt", "certificate"),
        ("crt-list.txt", "crt-list"),
        ("certs/other.pem", "certificate"),
        ("lua/hello.lua", "script"),
        ("errors/503.http", "errorfile"),
        ("maps/blocked.lst", "map"),
        ("maps/hosts.map", "map"),
    ];
    let docs = c.documents().unwrap();
    let m = manifest(&docs);
    assert_eq!(m.entities.len(), expect.len(), "{:?}", m.entities.keys());
    for (rel, kind) in expect {
        let p = doc("haproxy", &dir, rel);
        assert_eq!(m.entry(&p).unwrap().kind, kind, "{rel}");
        assert_eq!(docs[&p], std::fs::read(dir.join(rel)).unwrap(), "{rel}");
    }
    // PEM bundles with a private key are secret as a whole; the CA is not.
    for rel in ["certs/site.pem", "certs/other.pem"] {
        assert_eq!(
            entity(&c, &doc("haproxy", &dir, rel)).secrets,
            vec![""],
            "{rel}"
        );
    }
    assert!(entity(&c, &doc("haproxy", &dir, "certs/ca.crt"))
        .secrets
        .is_empty());
    // userlist: the user lines (not the group line) are personal and secret.
    let cfg = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
    let user_lines: Vec<String> = cfg
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("user "))
        .map(|(i, _)| format!("/{i}"))
        .collect();
    assert_eq!(user_lines.len(), 2);
    let main = entity(&c, &doc("haproxy", &dir, "haproxy.cfg"));
    assert_eq!(main.secrets, user_lines);
    assert_eq!(main.personal, user_lines);
    let again = gateway::capture(&opts("haproxy", &dir.join("haproxy.cfg"), true)).unwrap();
    assert_eq!(again.documents().unwrap(), docs);

    std::fs::remove_file(dir.join("maps/hosts.map")).unwrap();
    let msg = gateway::capture(&opts("haproxy", &dir.join("haproxy.cfg"), true))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("maps/hosts.map") && msg.contains("map_dom("),
        "{msg}"
    );
}

#[test]
fn haproxy_check_runs_and_rejects_a_broken_config() {
    if !util::have_all(&["haproxy", "openssl"]) {
        return;
    }
    let (tmp, dir) = fixture("haproxy");
    let (cert, key) = util::real_cert(tmp.path());
    let bundle = [cert.clone(), key].concat();
    std::fs::write(dir.join("certs/site.pem"), &bundle).unwrap();
    std::fs::write(dir.join("certs/other.pem"), &bundle).unwrap();
    std::fs::write(dir.join("certs/ca.crt"), &cert).unwrap();
    let c = gateway::capture(&opts("haproxy", &dir.join("haproxy.cfg"), false)).unwrap();
    assert!(
        c.source
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with('2') || v.starts_with('3')),
        "{:?}",
        c.source
    );

    let cfg = dir.join("haproxy.cfg");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("timeout client 30s", "timeout client thirty");
    std::fs::write(&cfg, text).unwrap();
    let e = gateway::capture(&opts("haproxy", &cfg, false)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Gateway { .. }), "{e:?}");
    assert!(
        msg.contains("timeout client")
            && msg.contains("haproxy.cfg:11")
            && msg.contains("--no-validate"),
        "{msg}"
    );
    assert!(gateway::capture(&opts("haproxy", &cfg, true)).is_ok());
}
